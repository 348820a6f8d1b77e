//! How the HTTP gateway refuses and fails, end to end over loopback against
//! the fake scheduler (`support::fake_scheduler`): the bad-input matrix on
//! every route (each a JSON error with the right status and code), scheduler
//! errors mapped to HTTP (queue full 429, unavailable or unreachable 503, an
//! unreadable answer 502), and bearer-token auth guarding every route but the
//! probes.

mod support;

use hyper::StatusCode;
use hyper::header;
use support::fake_scheduler::{Fake, Harness, Mode, start, start_gateway, test_config};
use support::http::Call;
use taskforge_services::gateway::GatewayConfig;

// ---------------------------------------------------------------------------
// An answer the gateway cannot read.

#[tokio::test]
async fn an_answer_too_large_to_read_is_502_not_400() {
    let h = start(test_config()).await;
    let huge = h.register("huge").await;
    let execution_id = h.invoke(&huge, "{}").await;
    for path in [
        format!("/jobs/{execution_id}"),
        format!("/jobs/{execution_id}?wait=30s"),
    ] {
        let message = h
            .get(&path)
            .await
            .error(StatusCode::BAD_GATEWAY, "scheduler_error");
        assert!(
            message.contains("the scheduler's answer could not be read"),
            "{path}: {message}"
        );
    }
    // The execution was triggered, so invoke still answers 202 with its id.
    let reply = h.post(&format!("/invoke/{huge}?wait=30s"), "{}").await;
    let job = reply.ok(StatusCode::ACCEPTED);
    assert!(job["execution_id"].as_str().unwrap().starts_with("e-"));
    h.assert_serving().await;
}

// ---------------------------------------------------------------------------
// Bad input on every route.

#[tokio::test]
async fn bad_input_gets_json_errors_on_every_route() {
    let h = start(test_config()).await;
    let echo = h.register("echo").await;
    let hang = h.register("hang").await;
    let done = h.invoke(&echo, "{}").await;
    let invoke = format!("/invoke/{echo}");
    let oversized = format!("\"{}\"", "x".repeat(20 * 1024));

    // (call, status, code, a word the message must contain)
    let cases: Vec<(Call, StatusCode, &str, &str)> = vec![
        // POST /functions
        (
            Call::new("POST", "/functions").json(r#"{"name": "#),
            StatusCode::BAD_REQUEST,
            "malformed_json",
            "JSON",
        ),
        (
            Call::new("POST", "/functions")
                .json(r#"{"name": 5, "language": "builtin", "code": "echo"}"#),
            StatusCode::BAD_REQUEST,
            "invalid_field",
            "`name`",
        ),
        (
            Call::new("POST", "/functions").json(r#"{"name": "a", "language": "builtin"}"#),
            StatusCode::BAD_REQUEST,
            "invalid_field",
            "`code`",
        ),
        (
            Call::new("POST", "/functions").json(
                r#"{"name": "a", "language": "wasm", "code": "(module)", "code_base64": "AGFzbQ=="}"#,
            ),
            StatusCode::BAD_REQUEST,
            "invalid_field",
            "not both",
        ),
        (
            Call::new("POST", "/functions")
                .json(r#"{"name": "a", "language": "wasm", "code_base64": "not base64!"}"#),
            StatusCode::BAD_REQUEST,
            "invalid_field",
            "`code_base64` is not base64",
        ),
        (
            Call::new("POST", "/functions")
                .json(r#"{"name": "a", "language": "wasm", "code_base64": 7}"#),
            StatusCode::BAD_REQUEST,
            "invalid_field",
            "`code_base64`",
        ),
        (
            Call::new("POST", "/functions")
                .json(r#"{"name": "a", "language": ["builtin"], "code": "echo"}"#),
            StatusCode::BAD_REQUEST,
            "invalid_field",
            "`language`",
        ),
        (
            Call::new("POST", "/functions").json(
                r#"{"name": "a", "language": "builtin", "code": "echo", "timeout_ms": "10"}"#,
            ),
            StatusCode::BAD_REQUEST,
            "invalid_field",
            "`timeout_ms`",
        ),
        (
            Call::new("POST", "/functions").json(
                r#"{"name": "a", "language": "builtin", "code": "echo", "max_attempts": -1}"#,
            ),
            StatusCode::BAD_REQUEST,
            "invalid_field",
            "`max_attempts`",
        ),
        (
            Call::new("POST", "/functions").json("[1, 2]"),
            StatusCode::BAD_REQUEST,
            "invalid_field",
            "object",
        ),
        (
            Call::new("POST", "/functions"),
            StatusCode::BAD_REQUEST,
            "invalid_field",
            "empty",
        ),
        (
            Call::new("POST", "/functions")
                .header("content-type", "text/plain")
                .raw(r#"{"name": "a"}"#),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "application/json",
        ),
        (
            Call::new("POST", "/functions").raw(r#"{"name": "a"}"#),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "application/json",
        ),
        (
            Call::new("POST", "/functions").json(oversized.clone()),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "16384",
        ),
        (
            Call::new("POST", "/functions")
                .json(r#"{"name": "a", "language": "cobol", "code": "echo"}"#),
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            "unsupported language \"cobol\"",
        ),
        (
            Call::new("PUT", "/functions"),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "PUT",
        ),
        // GET /functions/{id}
        (
            Call::new("GET", "/functions/f-nope"),
            StatusCode::NOT_FOUND,
            "not_found",
            "f-nope",
        ),
        (
            Call::new("PUT", "/functions/f-0001"),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "PUT",
        ),
        // DELETE /functions/{id}
        (
            Call::new("DELETE", "/functions/f-nope"),
            StatusCode::NOT_FOUND,
            "not_found",
            "f-nope",
        ),
        (
            Call::new("DELETE", "/functions/%FF"),
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            "path",
        ),
        // GET /functions
        (
            Call::new("GET", "/functions?limit=0"),
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            "`limit`",
        ),
        (
            Call::new("GET", "/functions?limit=1001"),
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            "`limit`",
        ),
        (
            Call::new("GET", "/functions?limit=ten"),
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            "`limit`",
        ),
        (
            Call::new("GET", "/functions?limit=-1&after=f-0001"),
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            "`limit`",
        ),
        // POST /invoke/{id}
        (
            Call::new("POST", &invoke).json("{\"a\": }"),
            StatusCode::BAD_REQUEST,
            "malformed_json",
            "JSON",
        ),
        (
            Call::new("POST", &invoke)
                .header("content-type", "text/plain")
                .raw("hello"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "text/plain",
        ),
        (
            Call::new("POST", &invoke).json(oversized.clone()),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "limit",
        ),
        (
            Call::new("POST", "/invoke/f-nope").json("{}"),
            StatusCode::NOT_FOUND,
            "not_found",
            "f-nope",
        ),
        (
            Call::new("POST", format!("{invoke}?timeout_ms=abc")).json("{}"),
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            "`timeout_ms`",
        ),
        (
            Call::new("POST", format!("{invoke}?max_attempts=-1")).json("{}"),
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            "`max_attempts`",
        ),
        (
            Call::new("POST", format!("{invoke}?max_attempts=99999999999")).json("{}"),
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            "`max_attempts`",
        ),
        (
            Call::new("POST", &invoke)
                .header("idempotency-key", "")
                .json("{}"),
            StatusCode::BAD_REQUEST,
            "invalid_header",
            "`Idempotency-Key`",
        ),
        (
            Call::new("POST", &invoke)
                .header("idempotency-key", "k".repeat(129))
                .json("{}"),
            StatusCode::BAD_REQUEST,
            "invalid_header",
            "`Idempotency-Key`",
        ),
        (
            Call::new("POST", &invoke)
                .header("idempotency-key", "two words")
                .json("{}"),
            StatusCode::BAD_REQUEST,
            "invalid_header",
            "`Idempotency-Key`",
        ),
        (
            Call::new("POST", &invoke)
                .header("idempotency-key", "k\u{e9}y")
                .json("{}"),
            StatusCode::BAD_REQUEST,
            "invalid_header",
            "`Idempotency-Key`",
        ),
        (
            Call::new("POST", &invoke)
                .header("idempotency-key", "a")
                .header("idempotency-key", "b")
                .json("{}"),
            StatusCode::BAD_REQUEST,
            "invalid_header",
            "`Idempotency-Key`",
        ),
        (
            Call::new("GET", &invoke),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "GET",
        ),
        // GET /jobs/{id}
        (
            Call::new("GET", "/jobs/e-nope"),
            StatusCode::NOT_FOUND,
            "not_found",
            "e-nope",
        ),
        (
            Call::new("GET", "/jobs/seed-nope"),
            StatusCode::NOT_FOUND,
            "not_found",
            "seed-nope",
        ),
        (
            Call::new("GET", "/jobs/e-nope?wait=1s"),
            StatusCode::NOT_FOUND,
            "not_found",
            "e-nope",
        ),
        (
            Call::new("GET", "/jobs/%FF"),
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            "path",
        ),
        (
            Call::new("DELETE", format!("/jobs/{done}")),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "DELETE",
        ),
        // GET /jobs
        (
            Call::new("GET", "/jobs?status=DONE"),
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            "`status`",
        ),
        (
            Call::new("GET", "/jobs?limit=0"),
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            "`limit`",
        ),
        (
            Call::new("GET", "/jobs?limit=many"),
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            "`limit`",
        ),
        (
            Call::new("POST", "/jobs").json("{}"),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "POST",
        ),
        // POST /jobs/{id}/cancel
        (
            Call::new("POST", "/jobs/e-nope/cancel"),
            StatusCode::NOT_FOUND,
            "not_found",
            "e-nope",
        ),
        (
            Call::new("POST", format!("/jobs/{done}/cancel")),
            StatusCode::CONFLICT,
            "failed_precondition",
            "finished",
        ),
        (
            Call::new("GET", format!("/jobs/{done}/cancel")),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "GET",
        ),
        // Cluster routes and unknown routes.
        (
            Call::new("POST", "/health"),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "POST",
        ),
        (
            Call::new("POST", "/ready"),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "POST",
        ),
        (
            Call::new("DELETE", "/workers"),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "DELETE",
        ),
        (
            Call::new("POST", "/stats"),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "POST",
        ),
        (
            Call::new("POST", "/metrics"),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "POST",
        ),
        (
            Call::new("GET", "/nope"),
            StatusCode::NOT_FOUND,
            "not_found",
            "/nope",
        ),
        (
            Call::new("GET", "/"),
            StatusCode::NOT_FOUND,
            "not_found",
            "no route",
        ),
        (
            Call::new("GET", "/jobs/"),
            StatusCode::NOT_FOUND,
            "not_found",
            "no route",
        ),
    ];
    for (call, status, code, needle) in cases {
        let what = format!("{} {}", call.method, call.path);
        let reply = call.send(h.gateway).await;
        let message = reply.error(status, code);
        assert!(
            message.contains(needle),
            "{what}: {message:?} lacks {needle:?}"
        );
        if status == StatusCode::METHOD_NOT_ALLOWED {
            assert!(
                reply.headers.contains_key(header::ALLOW),
                "{what}: no Allow"
            );
        }
    }

    // Still serving, and nothing stray reached the scheduler.
    h.assert_serving().await;
    assert_eq!(h.fake.state().triggers.len(), 1);
    let hang_run = h.invoke(&hang, "{}").await;
    let job = h.get(&format!("/jobs/{hang_run}")).await.ok(StatusCode::OK);
    assert_eq!(job["status"], "PENDING");
}

// ---------------------------------------------------------------------------
// Scheduler refusals and failures.

#[tokio::test]
async fn queue_full_is_429_then_recovers() {
    let h = start(test_config()).await;
    let echo = h.register("echo").await;
    h.fake.set_mode(Mode::QueueFull);
    let reply = h.post(&format!("/invoke/{echo}"), "{}").await;
    let message = reply.error(StatusCode::TOO_MANY_REQUESTS, "queue_full");
    assert!(message.contains("queue full"), "{message}");
    assert_eq!(reply.headers[header::RETRY_AFTER], "1");
    let reply = h.post(&format!("/invoke/{echo}?wait=1s"), "{}").await;
    reply.error(StatusCode::TOO_MANY_REQUESTS, "queue_full");

    h.fake.set_mode(Mode::Normal);
    h.invoke(&echo, "{}").await;
}

#[tokio::test]
async fn scheduler_answering_unavailable_is_503() {
    let h = start(test_config()).await;
    let echo = h.register("echo").await;
    let done = h.invoke(&echo, "{}").await;
    h.fake.set_mode(Mode::Down);
    assert_unavailable(&h, &echo, &done).await;
    h.fake.set_mode(Mode::Normal);
    h.invoke(&echo, "{}").await;
}

#[tokio::test]
async fn unreachable_scheduler_is_503() {
    // A port that is bound but not listening: connections are refused, and
    // no other test can take the port while `socket` lives.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let dead = socket.local_addr().unwrap();
    let h = Harness {
        gateway: start_gateway(dead, test_config()).await,
        scheduler: dead,
        fake: Fake::default(),
    };
    assert_unavailable(&h, "f-0001", "e-0001").await;
}

/// Every route that needs the scheduler answers 503; the gateway itself stays
/// healthy and keeps answering.
async fn assert_unavailable(h: &Harness, function_id: &str, execution_id: &str) {
    let body = r#"{"name": "a", "language": "builtin", "code": "echo"}"#;
    let calls = [
        Call::new("POST", "/functions").json(body),
        Call::new("GET", "/functions"),
        Call::new("GET", "/functions/f-0001"),
        Call::new("DELETE", "/functions/f-0001"),
        Call::new("POST", "/invoke/f-0001").json("{}"),
        Call::new("GET", "/jobs"),
        Call::new("POST", "/jobs/e-0001/cancel"),
        Call::new("GET", "/workers"),
        Call::new("GET", "/stats"),
    ];
    for call in calls {
        let what = format!("{} {}", call.method, call.path);
        let message = call
            .send(h.gateway)
            .await
            .error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
        assert!(message.contains("unavailable"), "{what}: {message}");
    }
    h.post(&format!("/invoke/{function_id}?wait=1s"), "{}")
        .await
        .error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    h.get(&format!("/jobs/{execution_id}"))
        .await
        .error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    h.get(&format!("/jobs/{execution_id}?wait=1s"))
        .await
        .error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    h.get("/ready")
        .await
        .error(StatusCode::SERVICE_UNAVAILABLE, "not_ready");
    let metrics = h.get("/metrics").await;
    assert_eq!(metrics.status, StatusCode::OK);
    let text = metrics.text();
    assert!(
        text.lines().any(|l| l == "taskforge_scheduler_up 0"),
        "{text}"
    );
    assert!(!text.contains("taskforge_queue_depth"), "{text}");
    h.assert_serving().await;
}

// ---------------------------------------------------------------------------
// Auth.

#[tokio::test]
async fn bearer_token_guards_every_route_but_the_probes() {
    let h = start(GatewayConfig {
        api_token: Some("s3cret".into()),
        ..test_config()
    })
    .await;
    // Probes need no token.
    h.assert_serving().await;
    h.get("/ready").await.ok(StatusCode::OK);

    let body = r#"{"name": "a", "language": "builtin", "code": "echo"}"#;
    let refused = [
        (None, "missing"),
        (Some("Bearer nope"), "wrong"),
        (Some("Bearer s3cre"), "wrong"),
        (Some("Basic s3cret"), "Bearer"),
        (Some("s3cret"), "Bearer"),
    ];
    for (authorization, needle) in refused {
        for (method, path) in [
            ("POST", "/functions"),
            ("GET", "/functions"),
            ("GET", "/jobs/e-0001"),
            ("GET", "/metrics"),
            ("GET", "/nope"),
        ] {
            let mut call = Call::new(method, path).json(body);
            if let Some(value) = authorization {
                call = call.header("authorization", value);
            }
            let reply = call.send(h.gateway).await;
            let message = reply.error(StatusCode::UNAUTHORIZED, "unauthorized");
            assert!(message.contains(needle), "{method} {path}: {message}");
            assert!(reply.headers.contains_key(header::WWW_AUTHENTICATE));
        }
    }
    assert!(h.fake.state().functions.is_empty());

    let reply = Call::new("POST", "/functions")
        .json(body)
        .header("authorization", "Bearer s3cret")
        .send(h.gateway)
        .await;
    reply.ok(StatusCode::OK);
    Call::new("GET", "/nope")
        .header("authorization", "Bearer s3cret")
        .send(h.gateway)
        .await
        .error(StatusCode::NOT_FOUND, "not_found");
}
