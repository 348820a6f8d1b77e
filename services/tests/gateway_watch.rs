//! Waiting on the HTTP gateway, end to end over loopback against the fake
//! scheduler (`support::fake_scheduler`): `?wait=` on invoke and on
//! `GET /jobs/{id}` rides on the scheduler's watch stream (never polling),
//! answers 202 with the current state when it runs out, is capped at
//! `max_wait`, refuses bad values with 400, and turns a refused watch into a
//! 429 rather than a hang or a 5xx.

mod support;

use std::time::Duration;

use hyper::StatusCode;
use hyper::header;
use serde_json::{Value, json};
use support::fake_scheduler::{Mode, WATCH_REFUSAL, WatchRefusal, start, test_config};
use taskforge_services::gateway::GatewayConfig;

// ---------------------------------------------------------------------------
// ?wait=

#[tokio::test]
async fn invoke_with_wait_answers_the_finished_job() {
    let h = start(test_config()).await;
    let echo = h.register("echo").await;
    let fail = h.register("fail").await;

    let reply = h
        .post(&format!("/invoke/{echo}?wait=30s"), r#"{"x": [1, 2]}"#)
        .await;
    let job = reply.ok(StatusCode::OK);
    assert_eq!(job["status"], "COMPLETED");
    assert_eq!(job["output"], json!({"x": [1, 2]}));
    assert!(job["execution_id"].as_str().unwrap().starts_with("e-"));

    let job = h
        .post(&format!("/invoke/{fail}?wait=30s"), "{}")
        .await
        .ok(StatusCode::OK);
    assert_eq!(job["status"], "FAILED");
    assert_eq!(job["error"], "boom");
    assert_eq!(job["output"], Value::Null);

    // Waiting rides on the watch stream: the status RPC was never called.
    assert_eq!(h.fake.state().status_calls, 0);

    // Both end-to-end latencies were observed (2 ms each, from the timestamps).
    let metrics = h.get("/metrics").await.text();
    for line in [
        "taskforge_gateway_execution_latency_seconds_count{status=\"COMPLETED\"} 1",
        "taskforge_gateway_execution_latency_seconds_count{status=\"FAILED\"} 1",
        "taskforge_gateway_execution_latency_seconds_sum{status=\"COMPLETED\"} 0.002",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
}

#[tokio::test]
async fn invoke_with_a_wait_that_runs_out_answers_202_with_the_current_state() {
    let h = start(test_config()).await;
    let hang = h.register("hang").await;
    let reply = h.post(&format!("/invoke/{hang}?wait=20ms"), "1").await;
    let job = reply.ok(StatusCode::ACCEPTED);
    assert_eq!(job["status"], "PENDING");
    let execution_id = job["execution_id"].as_str().unwrap();
    assert_eq!(
        reply.headers[header::LOCATION],
        format!("/jobs/{execution_id}")
    );
    assert_eq!(job["finished_at_us"], Value::Null);
}

#[tokio::test]
async fn get_job_with_wait_long_polls_until_terminal() {
    let h = start(test_config()).await;
    let echo = h.register("echo").await;
    let hang = h.register("hang").await;
    let done = h.invoke(&echo, r#""hi""#).await;
    let stuck = h.invoke(&hang, "{}").await;

    // The watch sends PENDING and RUNNING before COMPLETED.
    let job = h
        .get(&format!("/jobs/{done}?wait=30s"))
        .await
        .ok(StatusCode::OK);
    assert_eq!(job["status"], "COMPLETED");
    assert_eq!(job["output"], "hi");

    let job = h
        .get(&format!("/jobs/{stuck}?wait=10ms"))
        .await
        .ok(StatusCode::OK);
    assert_eq!(job["status"], "PENDING");
    assert_eq!(job["execution_id"], stuck);

    // `0s` answers at once with the current state.
    let job = h
        .get(&format!("/jobs/{stuck}?wait=0s"))
        .await
        .ok(StatusCode::OK);
    assert_eq!(job["status"], "PENDING");

    assert_eq!(h.fake.state().status_calls, 0);
}

#[tokio::test]
async fn waits_are_capped_at_max_wait() {
    let h = start(GatewayConfig {
        max_wait: Duration::from_millis(20),
        ..test_config()
    })
    .await;
    let hang = h.register("hang").await;
    let stuck = h.invoke(&hang, "{}").await;
    // An hour, capped to 20 ms: answers with the current state.
    let job = h
        .get(&format!("/jobs/{stuck}?wait=1h"))
        .await
        .ok(StatusCode::OK);
    assert_eq!(job["status"], "PENDING");
    let reply = h.post(&format!("/invoke/{hang}?wait=1h"), "{}").await;
    assert_eq!(reply.ok(StatusCode::ACCEPTED)["status"], "PENDING");
}

#[tokio::test]
async fn bad_wait_values_are_400() {
    let h = start(test_config()).await;
    let echo = h.register("echo").await;
    let done = h.invoke(&echo, "{}").await;
    for wait in ["soon", "500", "5d", "-1s", ""] {
        let message = h
            .get(&format!("/jobs/{done}?wait={wait}"))
            .await
            .error(StatusCode::BAD_REQUEST, "invalid_parameter");
        assert!(message.contains("`wait`"), "{message}");
        let message = h
            .post(&format!("/invoke/{echo}?wait={wait}"), "{}")
            .await
            .error(StatusCode::BAD_REQUEST, "invalid_parameter");
        assert!(message.contains("`wait`"), "{message}");
    }
    // Nothing was triggered by the refused invokes.
    assert_eq!(h.fake.state().triggers.len(), 1);
}

#[tokio::test]
async fn a_refused_watch_is_429_not_a_hang_or_5xx() {
    let h = start(test_config()).await;
    let echo = h.register("echo").await;
    let hang = h.register("hang").await;
    let done = h.invoke(&echo, "{}").await;
    let stuck = h.invoke(&hang, "{}").await;

    for refusal in [WatchRefusal::AtCall, WatchRefusal::InStream] {
        h.fake.state().watch_refusal = Some(refusal);
        for id in [&done, &stuck] {
            let reply = h.get(&format!("/jobs/{id}?wait=30s")).await;
            let message = reply.error(StatusCode::TOO_MANY_REQUESTS, "too_many_watches");
            assert_eq!(message, WATCH_REFUSAL, "{refusal:?}");
            assert_eq!(reply.headers[header::RETRY_AFTER], "1");
        }

        // Invoke: the trigger went through, so the answer is the 202 that
        // says where to look, with the first state the scheduler sent (it
        // sends that one even when no watch is free), never an error that
        // would invite a second trigger.
        let triggers = h.fake.state().triggers.len();
        let reply = h.post(&format!("/invoke/{echo}?wait=30s"), "{}").await;
        let job = reply.ok(StatusCode::ACCEPTED);
        assert_eq!(job["status"], "PENDING", "{refusal:?}");
        let execution_id = job["execution_id"].as_str().unwrap();
        assert_eq!(
            reply.headers[header::LOCATION],
            format!("/jobs/{execution_id}")
        );
        assert_eq!(h.fake.state().triggers.len(), triggers + 1);
        // Reading without a wait needs no watch.
        let job = h
            .get(&format!("/jobs/{execution_id}"))
            .await
            .ok(StatusCode::OK);
        assert_eq!(job["status"], "COMPLETED");
    }

    // A trigger refused as RESOURCE_EXHAUSTED (queue full) is 429 on invoke,
    // wait or not: nothing was started.
    h.fake.set_mode(Mode::QueueFull);
    for path in [
        format!("/invoke/{echo}"),
        format!("/invoke/{echo}?wait=30s"),
    ] {
        let message = h
            .post(&path, "{}")
            .await
            .error(StatusCode::TOO_MANY_REQUESTS, "queue_full");
        assert!(message.contains("queue full"), "{path}: {message}");
    }
}
