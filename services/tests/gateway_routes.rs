//! The HTTP gateway's routes doing their job, end to end over loopback
//! against the fake scheduler (`support::fake_scheduler`): registering,
//! fetching, listing (paged) and deleting functions; invoking, with options
//! and idempotency keys; reading, listing and cancelling jobs and decoding
//! their output; workers, stats, readiness and the metrics exposition; and
//! `serve` stopping on shutdown.

mod support;

use hyper::StatusCode;
use hyper::header;
use serde_json::{Value, json};
use support::fake_scheduler::{StatusShape, start, test_config};
use support::http::Call;
use taskforge_proto::scheduler::WorkerInfo;
use taskforge_services::auth::{self, Credentials};
use taskforge_services::gateway;
use tokio::net::TcpListener;
use tonic::transport::Endpoint;

// ---------------------------------------------------------------------------
// The seed's flow.

#[tokio::test]
async fn seed_flow_register_invoke_get_job() {
    let h = start(test_config()).await;
    h.assert_serving().await;

    let function_id = h.register("echo").await;
    let payload = r#"{"name": "Ada", "a": 2, "b": 3, "big": 12345678901234567890123}"#;
    let execution_id = h.invoke(&function_id, payload).await;
    // The payload reaches the scheduler byte for byte.
    assert_eq!(h.fake.state().triggers[0].payload, payload.as_bytes());

    let job = h
        .get(&format!("/jobs/{execution_id}"))
        .await
        .ok(StatusCode::OK);
    assert_eq!(job["execution_id"], execution_id);
    assert_eq!(job["status"], "COMPLETED");
    assert_eq!(job["output"]["name"], "Ada");
    assert_eq!(job["output"]["a"], 2);
    assert_eq!(job["error"], Value::Null);
    assert_eq!(job["function_id"], function_id);
    assert_eq!(job["attempt"], 1);
    assert_eq!(job["worker_id"], "w-1");
    assert_eq!(job["created_at_us"], 1_000_000);
    assert_eq!(job["finished_at_us"], 1_002_000);
    assert!(job.get("output_encoding").is_none());
}

#[tokio::test]
async fn empty_invoke_body_is_the_null_payload() {
    let h = start(test_config()).await;
    let function_id = h.register("echo").await;
    let reply = Call::new("POST", format!("/invoke/{function_id}"))
        .send(h.gateway)
        .await;
    let execution_id = reply.ok(StatusCode::OK)["execution_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(h.fake.state().triggers[0].payload, "null".as_bytes());
    let job = h
        .get(&format!("/jobs/{execution_id}"))
        .await
        .ok(StatusCode::OK);
    assert_eq!(job["output"], Value::Null);
}

#[tokio::test]
async fn invoke_options_and_function_options_reach_the_scheduler() {
    let h = start(test_config()).await;
    let body = r#"{"name":"slow","language":"builtin","code":"echo","timeout_ms":2500,
        "max_attempts":5,"max_memory_bytes":8388608}"#;
    let function_id = h.post("/functions", body).await.ok(StatusCode::OK)["function_id"]
        .as_str()
        .unwrap()
        .to_string();
    let function = h
        .get(&format!("/functions/{function_id}"))
        .await
        .ok(StatusCode::OK);
    assert_eq!(
        function,
        json!({"function_id": function_id, "name": "slow", "language": "builtin",
               "code": "echo", "timeout_ms": 2500, "max_attempts": 5,
               "max_memory_bytes": 8388608})
    );

    h.post(
        &format!("/invoke/{function_id}?timeout_ms=100&max_attempts=2"),
        "{}",
    )
    .await
    .ok(StatusCode::OK);
    let state = h.fake.state();
    assert_eq!(state.triggers[0].timeout_ms, 100);
    assert_eq!(state.triggers[0].max_attempts, 2);
}

// ---------------------------------------------------------------------------
// Output decoding.

#[tokio::test]
async fn outputs_are_decoded_as_json_text_or_base64() {
    let h = start(test_config()).await;
    let echo = h.register("echo").await;
    let text = h.register("text").await;
    let binary = h.register("binary").await;

    let job = h
        .post(
            &format!("/invoke/{echo}?wait=30s"),
            r#"{"message":"Hello Ada","sum":5}"#,
        )
        .await
        .ok(StatusCode::OK);
    assert_eq!(job["output"], json!({"message": "Hello Ada", "sum": 5}));
    assert!(job.get("output_encoding").is_none());

    let job = h
        .post(&format!("/invoke/{text}?wait=30s"), "{}")
        .await
        .ok(StatusCode::OK);
    assert_eq!(job["output"], "hello, world");
    assert!(job.get("output_encoding").is_none());

    let execution_id = h.invoke(&binary, "{}").await;
    let job = h
        .get(&format!("/jobs/{execution_id}"))
        .await
        .ok(StatusCode::OK);
    assert_eq!(job["output"], "//4AAQ==");
    assert_eq!(job["output_encoding"], "base64");
}

// ---------------------------------------------------------------------------
// Beyond the seed.

#[tokio::test]
async fn listing_inspection_and_cancellation() {
    let h = start(test_config()).await;
    let echo = h.register("echo").await;
    let hang = h.register("hang").await;
    let e1 = h.invoke(&echo, "1").await;
    let e2 = h.invoke(&echo, "2").await;
    let stuck = h.invoke(&hang, "3").await;

    let functions = h.get("/functions").await.ok(StatusCode::OK);
    let names: Vec<&str> = functions["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["echo-fn", "hang-fn"]);
    assert_eq!(functions["next_after"], Value::Null);
    let function = h
        .get(&format!("/functions/{hang}"))
        .await
        .ok(StatusCode::OK);
    assert_eq!(function["code"], "hang");
    assert_eq!(function["timeout_ms"], Value::Null);

    // Filtered and paged.
    let page = h
        .get(&format!(
            "/jobs?status=completed&function_id={echo}&limit=1"
        ))
        .await
        .ok(StatusCode::OK);
    assert_eq!(page["executions"].as_array().unwrap().len(), 1);
    assert_eq!(page["executions"][0]["execution_id"], e1);
    assert_eq!(page["next_after"], e1);
    let page = h
        .get(&format!("/jobs?status=COMPLETED&limit=1&after={e1}"))
        .await
        .ok(StatusCode::OK);
    assert_eq!(page["executions"][0]["execution_id"], e2);
    assert_eq!(page["executions"][0]["output"], 2);
    assert_eq!(page["next_after"], Value::Null);
    let page = h.get("/jobs?status=PENDING").await.ok(StatusCode::OK);
    assert_eq!(page["executions"][0]["execution_id"], stuck);

    // Cancel a pending execution; cancelling it again conflicts.
    let reply = Call::new("POST", format!("/jobs/{stuck}/cancel"))
        .send(h.gateway)
        .await;
    assert_eq!(
        reply.ok(StatusCode::OK),
        json!({"execution_id": stuck, "status": "CANCELLED"})
    );
    let message = Call::new("POST", format!("/jobs/{stuck}/cancel"))
        .send(h.gateway)
        .await
        .error(StatusCode::CONFLICT, "failed_precondition");
    assert!(message.contains("already finished"), "{message}");

    let workers = h.get("/workers").await.ok(StatusCode::OK);
    assert_eq!(
        workers["workers"][0],
        json!({"worker_id": "w-1", "pool_size": 4, "in_flight": 3, "reported_running": 2,
               "draining": false, "quarantined": false, "timeouts_in_a_row": 0,
               "runtimes": null, "connected_at_us": 5, "last_heartbeat_at_us": 6})
    );
    assert_eq!(workers["workers"][1]["draining"], true);
    assert_eq!(workers["workers"][1]["quarantined"], true);
    assert_eq!(workers["workers"][1]["timeouts_in_a_row"], 3);
    assert_eq!(workers["workers"][1]["last_heartbeat_at_us"], Value::Null);
    assert_eq!(
        workers["workers"][1]["runtimes"],
        json!(["builtin", "wasm"])
    );

    let stats = json!({"workers": 2, "capacity": 12, "in_flight": 3, "queued": 5,
        "queued_by_runtime": {"builtin": 5}, "queue_limit": 100, "quarantined_workers": 1,
        "watchers": 7, "executions": {"pending": 5, "running": 3, "completed": 40,
        "failed": 2, "timed_out": 4, "cancelled": 1}});
    assert_eq!(h.get("/stats").await.ok(StatusCode::OK), stats);
    assert_eq!(
        h.get("/ready").await.ok(StatusCode::OK),
        json!({"status": "ready", "stats": stats})
    );
}

#[tokio::test]
async fn metrics_expose_cluster_and_gateway_series() {
    let h = start(test_config()).await;
    h.get("/health").await;
    h.get("/jobs/e-missing").await;
    let reply = h.get("/metrics").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        reply.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = reply.text();
    for line in [
        "taskforge_scheduler_up 1",
        "taskforge_workers 2",
        "taskforge_capacity_slots 12",
        "taskforge_in_flight 3",
        "taskforge_queue_depth 5",
        "taskforge_queue_limit 100",
        "taskforge_executions{state=\"COMPLETED\"} 40",
        "taskforge_executions{state=\"PENDING\"} 5",
        "taskforge_worker_pool_size{worker=\"w-1\"} 4",
        "taskforge_worker_pool_size{worker=\"w-2\"} 8",
        "taskforge_worker_in_flight{worker=\"w-1\"} 3",
        "taskforge_worker_reported_running{worker=\"w-1\"} 2",
        "taskforge_worker_draining{worker=\"w-2\"} 1",
        "taskforge_worker_quarantined{worker=\"w-1\"} 0",
        "taskforge_worker_quarantined{worker=\"w-2\"} 1",
        "taskforge_quarantined_workers 1",
        "taskforge_watchers 7",
        "taskforge_queue_depth_by_runtime{runtime=\"builtin\"} 5",
        "taskforge_executions_accepted_by_runtime{runtime=\"builtin\"} 45",
        "taskforge_executions_accepted_by_runtime{runtime=\"wasm\"} 6",
        "taskforge_worker_ids_rejected 0",
        "taskforge_gateway_http_request_duration_seconds_count{method=\"GET\",route=\"/health\",status=\"2xx\"} 1",
        "taskforge_gateway_http_request_duration_seconds_count{method=\"GET\",route=\"/jobs/{execution_id}\",status=\"4xx\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
    }
    assert_valid_exposition(&text);
}

#[tokio::test]
async fn delete_function_is_204_then_404_and_409_while_executions_live() {
    let h = start(test_config()).await;
    let echo = h.register("echo").await;
    let hang = h.register("hang").await;
    h.invoke(&echo, "{}").await;
    let stuck = h.invoke(&hang, "{}").await;

    // Finished executions do not hold a function.
    let reply = Call::new("DELETE", format!("/functions/{echo}"))
        .send(h.gateway)
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert!(reply.body.is_empty(), "{:?}", reply.body);
    assert!(!reply.headers.contains_key(header::CONTENT_TYPE));
    h.get(&format!("/functions/{echo}"))
        .await
        .error(StatusCode::NOT_FOUND, "not_found");
    let message = Call::new("DELETE", format!("/functions/{echo}"))
        .send(h.gateway)
        .await
        .error(StatusCode::NOT_FOUND, "not_found");
    assert!(message.contains(&echo), "{message}");

    // A pending execution does: 409 with the scheduler's reason.
    let message = Call::new("DELETE", format!("/functions/{hang}"))
        .send(h.gateway)
        .await
        .error(StatusCode::CONFLICT, "failed_precondition");
    assert!(message.contains("still pending or running"), "{message}");
    assert!(h.fake.state().functions.contains_key(&hang));

    Call::new("POST", format!("/jobs/{stuck}/cancel"))
        .send(h.gateway)
        .await
        .ok(StatusCode::OK);
    let reply = Call::new("DELETE", format!("/functions/{hang}"))
        .send(h.gateway)
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert!(h.fake.state().functions.is_empty());
}

#[tokio::test]
async fn function_listing_pages_by_limit_and_cursor() {
    let h = start(test_config()).await;
    let ids = [
        h.register("echo").await,
        h.register("text").await,
        h.register("fail").await,
    ];
    let page_ids = |page: &Value| -> Vec<String> {
        page["functions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["function_id"].as_str().unwrap().to_string())
            .collect()
    };

    let page = h.get("/functions?limit=2").await.ok(StatusCode::OK);
    assert_eq!(page_ids(&page), ids[..2]);
    assert_eq!(page["next_after"], ids[1]);
    let page = h
        .get(&format!("/functions?limit=2&after={}", ids[1]))
        .await
        .ok(StatusCode::OK);
    assert_eq!(page_ids(&page), ids[2..]);
    assert_eq!(page["next_after"], Value::Null);

    // Parameters reach the scheduler as given; absent ones are its defaults.
    h.get("/functions").await.ok(StatusCode::OK);
    {
        let state = h.fake.state();
        let sent: Vec<(u32, &str)> = state
            .function_lists
            .iter()
            .map(|r| (r.limit, r.after_function_id.as_str()))
            .collect();
        assert_eq!(sent, [(2, ""), (2, ids[1].as_str()), (0, "")]);
    }

    // A page the scheduler ends early (by size) is shorter than the limit
    // and still has its cursor; following it reaches every function.
    h.fake.state().page_bound = Some(1);
    let mut seen = Vec::new();
    let mut url = "/functions?limit=10".to_string();
    loop {
        let page = h.get(&url).await.ok(StatusCode::OK);
        let got = page_ids(&page);
        assert_eq!(got.len(), 1, "{page}");
        seen.extend(got);
        match page["next_after"].as_str() {
            Some(next) => url = format!("/functions?limit=10&after={next}"),
            None => break,
        }
    }
    assert_eq!(seen, ids);
}

#[tokio::test]
async fn job_listing_passes_short_and_empty_pages_with_their_cursor() {
    let h = start(test_config()).await;
    let echo = h.register("echo").await;
    let hang = h.register("hang").await;
    let first = h.invoke(&echo, "1").await;
    let stuck = h.invoke(&hang, "2").await;
    let last = h.invoke(&echo, "3").await;

    // The scheduler looks at one execution per page: the page after the
    // first holds no COMPLETED one, but the listing is not over.
    h.fake.state().page_bound = Some(1);
    let page = h
        .get("/jobs?status=COMPLETED&limit=10")
        .await
        .ok(StatusCode::OK);
    assert_eq!(page["executions"][0]["execution_id"], first);
    assert_eq!(page["next_after"], first);
    let page = h
        .get(&format!("/jobs?status=COMPLETED&limit=10&after={first}"))
        .await
        .ok(StatusCode::OK);
    assert_eq!(page, json!({"executions": [], "next_after": stuck}));
    let page = h
        .get(&format!("/jobs?status=COMPLETED&limit=10&after={stuck}"))
        .await
        .ok(StatusCode::OK);
    assert_eq!(page["executions"][0]["execution_id"], last);
    assert_eq!(page["next_after"], Value::Null);
}

#[tokio::test]
async fn job_output_and_error_come_from_the_top_level_status_fields() {
    let h = start(test_config()).await;
    let echo = h.register("echo").await;
    let fail = h.register("fail").await;
    let done = h.invoke(&echo, r#"{"sum": 5}"#).await;
    let failed = h.invoke(&fail, "{}").await;

    // Today's scheduler: `info` has no output or error, the top level has.
    let job = h.get(&format!("/jobs/{done}")).await.ok(StatusCode::OK);
    assert_eq!(job["output"], json!({"sum": 5}));
    assert_eq!(job["attempt"], 1);
    assert_eq!(job["worker_id"], "w-1");
    let job = h.get(&format!("/jobs/{failed}")).await.ok(StatusCode::OK);
    assert_eq!(job["status"], "FAILED");
    assert_eq!(job["error"], "boom");

    // A scheduler that fills only `info`: its copies are used.
    h.fake.state().status_shape = StatusShape::InfoOnly;
    let job = h.get(&format!("/jobs/{done}")).await.ok(StatusCode::OK);
    assert_eq!(job["output"], json!({"sum": 5}));
    let job = h.get(&format!("/jobs/{failed}")).await.ok(StatusCode::OK);
    assert_eq!(job["error"], "boom");
}

#[tokio::test]
async fn idempotency_key_reaches_the_scheduler_and_conflicts_are_409() {
    let h = start(test_config()).await;
    let echo = h.register("echo").await;
    let text = h.register("text").await;
    let key = "order-42:attempt_1.x";
    let keyed = |function_id: &str, payload: &str| {
        Call::new("POST", format!("/invoke/{function_id}"))
            .header("idempotency-key", key)
            .json(payload.to_string())
    };

    let first = keyed(&echo, r#"{"n": 1}"#).send(h.gateway).await;
    let first = first.ok(StatusCode::OK)["execution_id"].clone();
    // A retry gets the same execution.
    let again = keyed(&echo, r#"{"n": 1}"#).send(h.gateway).await;
    assert_eq!(again.ok(StatusCode::OK)["execution_id"], first);
    // The longest key allowed passes; no header is no key.
    let longest = "K".repeat(128);
    Call::new("POST", format!("/invoke/{echo}"))
        .header("idempotency-key", longest.clone())
        .json("{}")
        .send(h.gateway)
        .await
        .ok(StatusCode::OK);
    h.invoke(&echo, "{}").await;
    {
        let state = h.fake.state();
        let sent: Vec<&str> = state
            .triggers
            .iter()
            .map(|t| t.idempotency_key.as_str())
            .collect();
        assert_eq!(sent, [key, key, longest.as_str(), ""]);
    }

    // The key reused for another payload, or another function: 409.
    for (function_id, payload) in [(&echo, r#"{"n": 2}"#), (&text, r#"{"n": 1}"#)] {
        let message = keyed(function_id, payload)
            .send(h.gateway)
            .await
            .error(StatusCode::CONFLICT, "already_exists");
        assert!(message.contains("another function or payload"), "{message}");
    }
    // With ?wait= too: the refusal comes before any watch.
    let reply = Call::new("POST", format!("/invoke/{text}?wait=1s"))
        .header("idempotency-key", key)
        .json("{}")
        .send(h.gateway)
        .await;
    reply.error(StatusCode::CONFLICT, "already_exists");
    assert_eq!(h.fake.state().triggers.len(), 4);
}

#[tokio::test]
async fn metrics_never_turn_a_worker_id_into_injected_lines() {
    let h = start(test_config()).await;
    let evil = "evil\"} 1\ntaskforge_injected_total 1337";
    h.fake.state().extra_workers = vec![
        WorkerInfo {
            worker_id: evil.into(),
            pool_size: 1,
            ..WorkerInfo::default()
        },
        WorkerInfo {
            worker_id: "w-3\n".into(),
            pool_size: 1,
            ..WorkerInfo::default()
        },
        WorkerInfo {
            worker_id: "host-7.rack:2".into(),
            pool_size: 16,
            ..WorkerInfo::default()
        },
    ];
    let reply = h.get("/metrics").await;
    assert_eq!(reply.status, StatusCode::OK);
    let text = reply.text();
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("taskforge_injected_total")),
        "{text}"
    );
    assert!(!text.contains("evil"), "{text}");
    for line in [
        "taskforge_worker_pool_size{worker=\"host-7.rack:2\"} 16",
        "taskforge_worker_pool_size{worker=\"w-1\"} 4",
        "taskforge_worker_ids_rejected 2",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
    }
    assert_valid_exposition(&text);

    // The JSON listing shows the id as it is (JSON escapes it).
    let workers = h.get("/workers").await.ok(StatusCode::OK);
    assert_eq!(workers["workers"][2]["worker_id"], evil);
}

/// Checks an OpenMetrics exposition line by line: comments are `# HELP`,
/// `# TYPE` or `# UNIT`; every sample is `taskforge_<name>{label="value",...}
/// <number>` with label values free of quotes, backslashes and line breaks;
/// it ends with a single `# EOF`.
fn assert_valid_exposition(text: &str) {
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert_eq!(text.matches("# EOF").count(), 1, "{text}");
    let is_name = |name: &str| {
        !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
    };
    for line in text.lines() {
        if line == "# EOF" {
            continue;
        }
        if let Some(comment) = line.strip_prefix("# ") {
            let (kind, rest) = comment.split_once(' ').unwrap_or((comment, ""));
            assert!(
                ["HELP", "TYPE", "UNIT"].contains(&kind),
                "bad comment {line:?}"
            );
            let metric = rest.split(' ').next().unwrap_or("");
            assert!(
                metric.starts_with("taskforge_") && is_name(metric),
                "bad comment {line:?}"
            );
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value in {line:?}"));
        assert!(value.parse::<f64>().is_ok(), "bad value in {line:?}");
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => (
                name,
                labels
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels in {line:?}")),
            ),
            None => (series, ""),
        };
        assert!(
            name.starts_with("taskforge_") && is_name(name),
            "bad name in {line:?}"
        );
        let mut rest = labels;
        while !rest.is_empty() {
            let (key, after) = rest
                .split_once("=\"")
                .unwrap_or_else(|| panic!("bad label in {line:?}"));
            assert!(is_name(key), "bad label name in {line:?}");
            let (value, after) = after
                .split_once('"')
                .unwrap_or_else(|| panic!("unclosed label value in {line:?}"));
            assert!(!value.contains('\\'), "escape in {line:?}");
            rest = after.strip_prefix(',').unwrap_or(after);
            assert!(
                rest.is_empty() || after.starts_with(','),
                "junk after a label in {line:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Serving.

#[tokio::test]
async fn serve_stops_on_shutdown() {
    let h = start(test_config()).await;
    let channel = Endpoint::from_shared(format!("http://{}", h.scheduler))
        .unwrap()
        .connect_lazy();
    let router = gateway::router(
        auth::scheduler_client(channel, Credentials::none()),
        test_config(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(gateway::serve(listener, router, async {
        let _ = stopped.await;
    }));
    let reply = Call::new("GET", "/health").send(addr).await;
    assert_eq!(reply.ok(StatusCode::OK), json!({"status": "ok"}));
    stop.send(()).unwrap();
    // Stops accepting, closes the idle keep-alive connection, and returns.
    server.await.unwrap().unwrap();
}
