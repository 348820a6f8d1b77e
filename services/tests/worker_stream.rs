//! The worker against a fake scheduler, over a real loopback gRPC stream.
//!
//! The fake serves `WorkerService`: it records every message the worker sends
//! (as events, in order) and lets the test send `Execute`/`Cancel` or end the
//! stream. Tests wait only for events, never for time; what they assert follows
//! from the protocol and the pool's rules, not from how fast anything ran. (The
//! only timing used is a generous per-event limit that turns a hang into a
//! failure.)

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use taskforge_proto::common::{ExecutionRequest, ExecutionResult, Function, Outcome};
use taskforge_proto::worker::scheduler_message;
use taskforge_proto::worker::worker_message::Message;
use taskforge_proto::worker::worker_service_server::{WorkerService, WorkerServiceServer};
use taskforge_proto::worker::{
    CancelRequest, ForgetFunction, SchedulerMessage, WorkerHeartbeat, WorkerHello, WorkerMessage,
};
use taskforge_services::worker::{
    self, TaskEvent, TaskObserver, WallClock, WorkerConfig, WorkerError,
};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::{TcpListenerStream, UnboundedReceiverStream};
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Response, Status, Streaming};

/// Turns a hang into a failure; never reached by a passing test.
const EVENT_LIMIT: Duration = Duration::from_secs(20);
/// Long enough never to end during a test.
const HOUR_MS: &str = "3600000";
const EPOCH_US: u64 = 1_700_000_000_000_000;

type ToWorker = mpsc::UnboundedSender<Result<SchedulerMessage, Status>>;

#[derive(Debug)]
enum Event {
    /// The worker opened stream number `session`.
    Opened { session: usize, to_worker: ToWorker },
    /// The worker sent this on stream `session`.
    Message { session: usize, message: Message },
    /// The worker's side of stream `session` ended (closed or reset).
    Closed { session: usize },
    /// The worker dialed while the fake was refusing streams.
    Refused,
}

#[derive(Debug)]
struct FakeScheduler {
    events: mpsc::UnboundedSender<Event>,
    sessions: AtomicUsize,
    /// While set, every new stream is refused as by an unreachable scheduler.
    refusing: Arc<AtomicBool>,
}

#[tonic::async_trait]
impl WorkerService for FakeScheduler {
    type WorkerStreamStream = UnboundedReceiverStream<Result<SchedulerMessage, Status>>;

    async fn worker_stream(
        &self,
        request: Request<Streaming<WorkerMessage>>,
    ) -> Result<Response<Self::WorkerStreamStream>, Status> {
        if self.refusing.load(Ordering::SeqCst) {
            let _ = self.events.send(Event::Refused);
            return Err(Status::unavailable(
                "the fake scheduler is refusing streams",
            ));
        }
        let session = self.sessions.fetch_add(1, Ordering::SeqCst);
        let (to_worker, outgoing) = mpsc::unbounded_channel();
        let _ = self.events.send(Event::Opened { session, to_worker });
        let events = self.events.clone();
        let mut incoming = request.into_inner();
        tokio::spawn(async move {
            while let Ok(Some(message)) = incoming.message().await {
                if let Some(message) = message.message {
                    let _ = events.send(Event::Message { session, message });
                }
            }
            let _ = events.send(Event::Closed { session });
        });
        Ok(Response::new(UnboundedReceiverStream::new(outgoing)))
    }
}

fn config(pool_size: u32) -> WorkerConfig {
    WorkerConfig {
        heartbeat_interval: Duration::from_millis(50),
        reconnect_initial: Duration::from_millis(10),
        reconnect_max: Duration::from_millis(50),
        seed: 7,
        ..WorkerConfig::new("w-test", pool_size)
    }
}

/// A clock for result stamps that follows tokio's clock.
fn test_clock() -> WallClock {
    let origin = tokio::time::Instant::now();
    Arc::new(move || EPOCH_US + origin.elapsed().as_micros() as u64)
}

fn id(n: u64) -> String {
    format!("{n:016x}")
}

fn request(
    n: u64,
    attempt: u32,
    handler: &str,
    payload: &str,
    timeout_ms: u64,
) -> ExecutionRequest {
    ExecutionRequest {
        execution_id: id(n),
        function_id: format!("fn-{handler}"),
        payload: Bytes::copy_from_slice(payload.as_bytes()),
        attempt,
        timeout_ms,
        function: Some(Function {
            function_id: format!("fn-{handler}"),
            name: handler.to_string(),
            language: "builtin".to_string(),
            code: Bytes::copy_from_slice(handler.as_bytes()),
            ..Function::default()
        }),
    }
}

struct Harness {
    events: mpsc::UnboundedReceiver<Event>,
    /// The current session's number and sender.
    session: Option<(usize, ToWorker)>,
    heartbeats: Vec<WorkerHeartbeat>,
    shutdown: Option<oneshot::Sender<()>>,
    worker: JoinHandle<Result<(), WorkerError>>,
    refusing: Arc<AtomicBool>,
}

impl Harness {
    async fn start(config: WorkerConfig) -> Harness {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (events_tx, events) = mpsc::unbounded_channel();
        let refusing = Arc::new(AtomicBool::new(false));
        let fake = FakeScheduler {
            events: events_tx,
            sessions: AtomicUsize::new(0),
            refusing: Arc::clone(&refusing),
        };
        tokio::spawn(async move {
            Server::builder()
                .add_service(WorkerServiceServer::new(fake))
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
        let channel = Endpoint::from_shared(format!("http://{address}"))
            .unwrap()
            .connect_lazy();
        Harness {
            refusing,
            ..Harness::with_channel(config, channel, events)
        }
    }

    fn with_channel(
        config: WorkerConfig,
        channel: Channel,
        events: mpsc::UnboundedReceiver<Event>,
    ) -> Harness {
        let (shutdown, signal) = oneshot::channel::<()>();
        let worker = tokio::spawn(worker::run(config, channel, test_clock(), async move {
            let _ = signal.await;
        }));
        Harness {
            events,
            session: None,
            heartbeats: Vec::new(),
            shutdown: Some(shutdown),
            worker,
            refusing: Arc::new(AtomicBool::new(false)),
        }
    }

    async fn next(&mut self) -> Event {
        tokio::time::timeout(EVENT_LIMIT, self.events.recv())
            .await
            .expect("no event from the worker in time")
            .expect("the fake scheduler stopped")
    }

    /// Waits for a new session and its hello. Leftovers of the previous
    /// session (messages in flight, its close) are skipped.
    async fn hello(&mut self) -> WorkerHello {
        let previous = self.current();
        loop {
            match self.next().await {
                Event::Opened { session, to_worker } => {
                    self.session = Some((session, to_worker));
                }
                Event::Message {
                    session,
                    message: Message::Hello(hello),
                } if Some(session) == self.current() && self.current() != previous => {
                    return hello;
                }
                Event::Message { session, .. } | Event::Closed { session }
                    if Some(session) == previous => {}
                Event::Refused => {}
                other => panic!("expected a new session and its hello, got {other:?}"),
            }
        }
    }

    fn current(&self) -> Option<usize> {
        self.session.as_ref().map(|(session, _)| *session)
    }

    /// The next message on the current session other than a heartbeat
    /// (heartbeats are recorded).
    async fn message(&mut self) -> Message {
        loop {
            match self.next().await {
                Event::Message {
                    session,
                    message: Message::Heartbeat(heartbeat),
                } if Some(session) == self.current() => self.heartbeats.push(heartbeat),
                Event::Message { session, message } if Some(session) == self.current() => {
                    return message;
                }
                other => panic!("expected a message on the current session, got {other:?}"),
            }
        }
    }

    async fn result(&mut self) -> ExecutionResult {
        match self.message().await {
            Message::Result(result) => result,
            other => panic!("expected a result, got {other:?}"),
        }
    }

    /// Waits for a heartbeat of the current session that satisfies `wanted`,
    /// failing on any other message.
    async fn heartbeat_where(
        &mut self,
        wanted: impl Fn(&WorkerHeartbeat) -> bool,
    ) -> WorkerHeartbeat {
        loop {
            match self.next().await {
                Event::Message {
                    session,
                    message: Message::Heartbeat(heartbeat),
                } if Some(session) == self.current() => {
                    self.heartbeats.push(heartbeat.clone());
                    if wanted(&heartbeat) {
                        return heartbeat;
                    }
                }
                other => panic!("expected a heartbeat, got {other:?}"),
            }
        }
    }

    /// Waits for the current session's stream to end from the worker's side.
    async fn closed(&mut self) {
        loop {
            match self.next().await {
                Event::Closed { session } if Some(session) == self.current() => return,
                Event::Message {
                    session,
                    message: Message::Heartbeat(heartbeat),
                } if Some(session) == self.current() => self.heartbeats.push(heartbeat),
                other => panic!("expected the stream to close, got {other:?}"),
            }
        }
    }

    fn send(&self, message: scheduler_message::Message) {
        let (_, to_worker) = self.session.as_ref().expect("no session");
        to_worker
            .send(Ok(SchedulerMessage {
                message: Some(message),
            }))
            .expect("the session's stream is gone");
    }

    fn execute(&self, request: ExecutionRequest) {
        self.send(scheduler_message::Message::Execute(request));
    }

    fn cancel(&self, n: u64, attempt: u32) {
        self.send(scheduler_message::Message::Cancel(CancelRequest {
            execution_id: id(n),
            attempt,
        }));
    }

    /// Ends the scheduler's side of the current stream (dropping its sender).
    fn end_stream(&mut self) {
        self.session = self.session.take().map(|(session, _)| {
            let (closed, _) = mpsc::unbounded_channel();
            (session, closed)
        });
    }

    /// Refuses (`true`) or accepts new streams from now on.
    fn refuse_streams(&self, refuse: bool) {
        self.refusing.store(refuse, Ordering::SeqCst);
    }

    fn shut_down(&mut self) {
        let _ = self.shutdown.take().expect("shut down twice").send(());
    }

    async fn finished(self) -> Result<(), WorkerError> {
        tokio::time::timeout(EVENT_LIMIT, self.worker)
            .await
            .expect("the worker did not return in time")
            .expect("the worker panicked")
    }
}

fn assert_result(result: &ExecutionResult, n: u64, attempt: u32, outcome: Outcome) {
    assert_eq!(result.execution_id, id(n), "{result:?}");
    assert_eq!(result.attempt, attempt, "{result:?}");
    assert_eq!(result.outcome, outcome as i32, "{result:?}");
    assert_eq!(result.success, outcome == Outcome::Succeeded, "{result:?}");
    assert!(result.finished_at_us >= EPOCH_US, "{result:?}");
}

#[tokio::test]
async fn hello_names_the_worker_and_heartbeats_follow() {
    let mut harness = Harness::start(config(3)).await;
    let hello = harness.hello().await;
    assert_eq!(hello.worker_id, "w-test");
    assert_eq!(hello.pool_size, 3);
    for _ in 0..2 {
        let heartbeat = harness.heartbeat_where(|_| true).await;
        assert_eq!(heartbeat.worker_id, "w-test");
        assert_eq!((heartbeat.running_tasks, heartbeat.queued_tasks), (0, 0));
    }
}

#[tokio::test]
async fn builtins_run_and_results_echo_the_attempt() {
    let mut harness = Harness::start(config(4)).await;
    harness.hello().await;
    harness.execute(request(1, 3, "echo", "\"hi\"", 0));
    harness.execute(request(
        2,
        1,
        "sum_and_greet",
        r#"{"name":"Ada","a":2,"b":3}"#,
        0,
    ));
    harness.execute(request(3, 5, "fail", "\"on purpose\"", 0));
    let mut results = BTreeMap::new();
    for _ in 0..3 {
        let result = harness.result().await;
        results.insert(result.execution_id.clone(), result);
    }

    let echo = &results[&id(1)];
    assert_result(echo, 1, 3, Outcome::Succeeded);
    assert_eq!(echo.output, Bytes::from_static(b"\"hi\""));
    assert_eq!(echo.error, "");
    assert!(echo.started_at_us >= EPOCH_US && echo.started_at_us <= echo.finished_at_us);

    let greet = &results[&id(2)];
    assert_result(greet, 2, 1, Outcome::Succeeded);
    assert_eq!(
        greet.output,
        Bytes::from_static(br#"{"message":"Hello Ada","sum":5}"#)
    );

    let fail = &results[&id(3)];
    assert_result(fail, 3, 5, Outcome::Failed);
    assert_eq!(fail.error, "on purpose");
}

#[tokio::test]
async fn at_most_pool_size_sleeps_run_at_once() {
    let mut harness = Harness::start(config(2)).await;
    harness.hello().await;
    for n in 1..=5 {
        harness.execute(request(n, 1, "sleep", "60", 0));
    }
    let mut results = BTreeMap::new();
    for _ in 0..5 {
        let result = harness.result().await;
        results.insert(result.execution_id.clone(), result);
    }
    for n in 1..=5 {
        assert_result(&results[&id(n)], n, 1, Outcome::Succeeded);
    }

    // Replay the stamps: never more than two running at once (an attempt that
    // ends at the instant another starts does not overlap it).
    let mut edges: Vec<(u64, i32)> = results
        .values()
        .flat_map(|r| [(r.started_at_us, 1), (r.finished_at_us, -1)])
        .collect();
    edges.sort_by_key(|&(at, delta)| (at, delta));
    let mut running = 0;
    for (_, delta) in edges {
        running += delta;
        assert!(
            running <= 2,
            "more than the pool size ran at once: {results:?}"
        );
    }
    // The extras waited for a slot: each of 3, 4, 5 started only after an
    // earlier execution (taken first, in order) had finished.
    let started = |n: u64| results[&id(n)].started_at_us;
    let finished = |n: u64| results[&id(n)].finished_at_us;
    assert!(started(3) >= finished(1).min(finished(2)));
    assert!(started(4) >= finished(1).max(finished(2)).min(finished(3)));
    assert!(started(5) >= finished(3).min(finished(4)));
    for heartbeat in &harness.heartbeats {
        assert!(heartbeat.running_tasks <= 2, "{heartbeat:?}");
        assert!(
            heartbeat.running_tasks + heartbeat.queued_tasks <= 5,
            "{heartbeat:?}"
        );
    }
}

#[tokio::test]
async fn cancel_stops_exactly_the_running_attempt() {
    let mut harness = Harness::start(config(2)).await;
    harness.hello().await;
    harness.execute(request(10, 2, "sleep", HOUR_MS, 0));
    harness.execute(request(11, 1, "sleep", HOUR_MS, 0));
    harness.heartbeat_where(|h| h.running_tasks == 2).await;

    harness.cancel(10, 1); // not the attempt it runs: ignored
    harness.cancel(12, 1); // not held at all: ignored
    harness.cancel(10, 2);
    let cancelled = harness.result().await;
    assert_result(&cancelled, 10, 2, Outcome::Cancelled);
    assert_eq!(cancelled.error, "cancelled");
    assert!(cancelled.started_at_us >= EPOCH_US);

    // Nothing else was reported: the next result is a new echo's, and 11 is
    // still running.
    harness.execute(request(13, 1, "echo", "1", 0));
    assert_result(&harness.result().await, 13, 1, Outcome::Succeeded);
    let heartbeat = harness.heartbeat_where(|_| true).await;
    assert_eq!((heartbeat.running_tasks, heartbeat.queued_tasks), (1, 0));

    harness.cancel(11, 1);
    assert_result(&harness.result().await, 11, 1, Outcome::Cancelled);
}

#[tokio::test]
async fn a_task_past_its_timeout_is_reported_timed_out() {
    let mut harness = Harness::start(config(1)).await;
    harness.hello().await;
    harness.execute(request(20, 4, "sleep", HOUR_MS, 100));
    let result = harness.result().await;
    assert_result(&result, 20, 4, Outcome::TimedOut);
    assert_eq!(result.error, "timed out after 100ms");
    assert!(
        result.finished_at_us - result.started_at_us >= 100_000,
        "{result:?}"
    );

    // The slot is free again.
    harness.execute(request(21, 1, "echo", "1", 0));
    assert_result(&harness.result().await, 21, 1, Outcome::Succeeded);
}

#[tokio::test]
async fn definitions_are_sent_once_and_used_until_forgotten() {
    let mut harness = Harness::start(config(1)).await;
    let hello = harness.hello().await;
    assert!(hello.caches_functions, "{hello:?}");

    let definition = request(40, 1, "echo", "1", 0).function.unwrap();
    harness.send(scheduler_message::Message::Define(definition.clone()));
    for n in [40, 41] {
        let mut bare = request(n, 1, "echo", "\"hi\"", 0);
        bare.function = None;
        harness.execute(bare);
        let result = harness.result().await;
        assert_result(&result, n, 1, Outcome::Succeeded);
        assert_eq!(result.output, Bytes::from_static(b"\"hi\""));
    }

    harness.send(scheduler_message::Message::Forget(ForgetFunction {
        function_id: definition.function_id.clone(),
    }));
    let mut bare = request(42, 1, "echo", "1", 0);
    bare.function = None;
    harness.execute(bare);
    let result = harness.result().await;
    assert_result(&result, 42, 1, Outcome::Failed);
    assert!(
        result.error.contains("was not defined on this stream"),
        "{}",
        result.error
    );

    // Definitions live as long as the stream: a new stream starts empty.
    harness.send(scheduler_message::Message::Define(definition));
    harness.end_stream();
    harness.hello().await;
    let mut bare = request(43, 1, "echo", "1", 0);
    bare.function = None;
    harness.execute(bare);
    assert_result(&harness.result().await, 43, 1, Outcome::Failed);
}

#[tokio::test]
async fn requests_that_cannot_run_get_a_failed_result() {
    let mut harness = Harness::start(config(1)).await;
    harness.hello().await;

    let mut bad_id = request(0, 2, "echo", "1", 0);
    bad_id.execution_id = "not-an-id".to_string();
    let mut no_function = request(31, 1, "echo", "1", 0);
    no_function.function = None;
    let mut python = request(32, 1, "echo", "1", 0);
    python.function.as_mut().unwrap().language = "python".to_string();
    let cases = [
        (bad_id, "invalid execution id \"not-an-id\""),
        (no_function, "was not defined on this stream"),
        (python, "does not run \"python\""),
        (
            request(33, 1, "nope", "1", 0),
            "unknown builtin handler \"nope\"",
        ),
        (
            request(34, 1, "echo", "1", u64::MAX),
            "beyond the worker's limit",
        ),
        (
            request(35, 1, "sleep", "\"soon\"", 0),
            "sleep: got a string",
        ),
    ];
    for (request, expected) in cases {
        let execution_id = request.execution_id.clone();
        let attempt = request.attempt;
        harness.execute(request);
        let result = harness.result().await;
        assert_eq!(result.execution_id, execution_id);
        assert_eq!(result.attempt, attempt);
        assert_eq!(result.outcome, Outcome::Failed as i32);
        assert!(!result.success);
        assert!(result.error.contains(expected), "{}", result.error);
    }

    // Still serving; a zero timeout means the default, not "already late".
    harness.execute(request(36, 1, "sleep", "1", 0));
    assert_result(&harness.result().await, 36, 1, Outcome::Succeeded);
}

#[tokio::test]
async fn work_goes_on_across_a_lost_stream_and_the_next_hello_lists_it() {
    let (tasks_tx, mut tasks) = mpsc::unbounded_channel();
    let config = WorkerConfig {
        observer: Some(TaskObserver::new(move |event| {
            let _ = tasks_tx.send(event);
        })),
        ..config(2)
    };
    let mut harness = Harness::start(config).await;
    harness.hello().await;
    harness.execute(request(40, 1, "sleep", HOUR_MS, 0));
    harness.execute(request(41, 3, "sleep", "50", 0));
    harness.heartbeat_where(|h| h.running_tasks == 2).await;

    // The scheduler ends the stream and cannot be reached for a while: the
    // tasks run on, and 41 ends with nobody to tell.
    harness.refuse_streams(true);
    harness.end_stream();
    let ended = TaskEvent::Ended {
        execution: taskforge_core::ExecutionId::parse(&id(41)).unwrap(),
        attempt: 3,
    };
    loop {
        let event = tokio::time::timeout(EVENT_LIMIT, tasks.recv()).await;
        if event.expect("41 did not end in time") == Some(ended) {
            break;
        }
    }

    // Reachable again: the hello lists both attempts, 41's result follows
    // it, and 40 still runs.
    harness.refuse_streams(false);
    let hello = harness.hello().await;
    assert_eq!((hello.worker_id.as_str(), hello.pool_size), ("w-test", 2));
    let held: BTreeMap<String, u32> = hello
        .holding
        .iter()
        .map(|held| (held.execution_id.clone(), held.attempt))
        .collect();
    assert_eq!(held, BTreeMap::from([(id(40), 1), (id(41), 3)]));
    assert_result(&harness.result().await, 41, 3, Outcome::Succeeded);
    let heartbeat = harness.heartbeat_where(|_| true).await;
    assert_eq!((heartbeat.running_tasks, heartbeat.queued_tasks), (1, 0));

    // This scheduler does not want 40 (it cancels what it does not adopt).
    harness.cancel(40, 1);
    assert_result(&harness.result().await, 40, 1, Outcome::Cancelled);

    // The stream fails with an error status: the worker is back, holding
    // nothing, and serving.
    let (_, to_worker) = harness.session.as_ref().unwrap();
    to_worker
        .send(Err(Status::unavailable("going away")))
        .unwrap();
    let hello = harness.hello().await;
    assert_eq!(hello.holding, []);
    harness.execute(request(42, 1, "echo", "2", 0));
    assert_result(&harness.result().await, 42, 1, Outcome::Succeeded);
}

#[tokio::test]
async fn shutdown_drains_running_and_queued_work_then_closes() {
    let mut harness = Harness::start(config(1)).await;
    harness.hello().await;
    harness.execute(request(50, 1, "sleep", "100", 0));
    harness.execute(request(51, 1, "echo", "\"queued\"", 0));
    harness
        .heartbeat_where(|h| (h.running_tasks, h.queued_tasks) == (1, 1))
        .await;

    harness.shut_down();
    assert!(matches!(harness.message().await, Message::Draining(_)));
    assert_result(&harness.result().await, 50, 1, Outcome::Succeeded);
    let queued = harness.result().await;
    assert_result(&queued, 51, 1, Outcome::Succeeded);
    assert_eq!(queued.output, Bytes::from_static(b"\"queued\""));

    // Then the worker ends its side; once the scheduler ends its own, the
    // worker returns without dialing again.
    harness.closed().await;
    harness.end_stream();
    let mut events = std::mem::replace(&mut harness.events, mpsc::unbounded_channel().1);
    harness.finished().await.expect("a clean shutdown");
    while let Ok(event) = events.try_recv() {
        assert!(
            !matches!(event, Event::Opened { .. }),
            "dialed again after shutdown"
        );
    }
}

#[tokio::test]
async fn drain_timeout_abandons_unfinished_work() {
    let config = WorkerConfig {
        drain_timeout: Duration::from_millis(100),
        ..config(1)
    };
    let mut harness = Harness::start(config).await;
    harness.hello().await;
    harness.execute(request(60, 1, "sleep", HOUR_MS, 0));
    harness.heartbeat_where(|h| h.running_tasks == 1).await;

    harness.shut_down();
    assert!(matches!(harness.message().await, Message::Draining(_)));
    // No result for 60: the stream just closes, and the scheduler re-queues it.
    harness.closed().await;
    harness.end_stream();
    harness.finished().await.expect("a clean shutdown");
}

#[tokio::test]
async fn shutdown_while_the_scheduler_is_unreachable() {
    // A port nobody listens on: every dial fails, and the worker keeps trying.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let channel = Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect_lazy();
    let (_events_tx, events) = mpsc::unbounded_channel();
    let mut harness = Harness::with_channel(config(1), channel, events);
    harness.shut_down();
    harness.finished().await.expect("a clean shutdown");
}
