//! The actor driven turn by turn on paused time: what only shows under a
//! busy inbox or a failing store.

use super::*;
use crate::store::MemoryStore;

fn actor(options: SchedulerOptions) -> (Actor, mpsc::Sender<Command>) {
    actor_on(options, Box::new(MemoryStore::new()))
}

fn actor_on(
    options: SchedulerOptions,
    mut store: Box<dyn Store>,
) -> (Actor, mpsc::Sender<Command>) {
    let recovered = store.load().unwrap();
    let (commands, inbox) = mpsc::channel(2 * COMMANDS_PER_TURN);
    let clock: WallClock = Arc::new(|| 1_000_000);
    let actor = Actor::new(options, store, clock, inbox, recovered).unwrap();
    (actor, commands)
}

/// Sends the command `make` builds and runs turns until its answer.
async fn ask<T>(
    actor: &mut Actor,
    commands: &mpsc::Sender<Command>,
    make: impl FnOnce(Reply<T>) -> Command,
) -> Result<T, Status> {
    let (reply, answer) = oneshot::channel();
    commands.send(make(reply)).await.unwrap();
    settle(actor, answer).await
}

/// A worker with one slot joins; what the scheduler sends it arrives on the
/// returned receiver.
async fn join(
    actor: &mut Actor,
    commands: &mpsc::Sender<Command>,
    worker_id: &str,
) -> mpsc::UnboundedReceiver<Result<SchedulerMessage, Status>> {
    let (outbox, to_worker) = mpsc::unbounded_channel();
    let (reply, joined) = oneshot::channel();
    let hello = WorkerHello {
        worker_id: worker_id.into(),
        pool_size: 1,
        caches_functions: true,
        runtimes: vec!["builtin".into()],
        holding: vec![],
    };
    commands
        .send(Command::WorkerJoined {
            hello,
            outbox,
            reply,
        })
        .await
        .unwrap();
    settle(actor, joined).await.unwrap();
    to_worker
}

/// A scheduler flooded with requests still declares a silent worker lost
/// on time: deadlines do not wait for the inbox to go quiet.
#[tokio::test(start_paused = true)]
async fn a_busy_inbox_does_not_delay_deadlines() {
    let mut options = SchedulerOptions::default();
    options.core.heartbeat_timeout = Duration::from_secs(1);
    options.store_runner = super::super::StoreRunner::Task;
    let (mut actor, commands) = actor(options);

    let _to_worker = join(&mut actor, &commands, "silent").await;
    assert_eq!(actor.core.stats().workers, 1);

    // The worker says nothing past its heartbeat timeout while the inbox
    // fills with requests: the turn that takes them must also act on
    // the deadline.
    tokio::time::advance(Duration::from_secs(2)).await;
    let mut answers = Vec::new();
    for _ in 0..COMMANDS_PER_TURN {
        let (reply, answer) = oneshot::channel();
        commands.try_send(Command::Stats { reply }).unwrap();
        answers.push(answer);
    }
    assert!(actor.turn().await);
    assert_eq!(actor.core.stats().workers, 0, "the silent worker is lost");
    for answer in answers {
        assert!(answer.await.unwrap().is_ok());
    }
}

/// A memory store that counts its syncs, and whose next sync fails when
/// told to.
#[derive(Debug, Default)]
struct FlakyStore {
    inner: MemoryStore,
    fail_next_sync: Arc<std::sync::atomic::AtomicBool>,
    syncs: Arc<std::sync::atomic::AtomicUsize>,
}

impl Store for FlakyStore {
    fn load(&mut self) -> Result<Recovered, crate::store::StoreError> {
        self.inner.load()
    }
    fn append(&mut self, record: &Record) -> Result<(), crate::store::StoreError> {
        self.inner.append(record)
    }
    fn sync(&mut self) -> Result<(), crate::store::StoreError> {
        self.syncs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if self
            .fail_next_sync
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            return Err(crate::store::StoreError::Io {
                op: "sync",
                path: "flaky".into(),
                source: std::io::Error::other("the disk is full"),
            });
        }
        self.inner.sync()
    }
    fn take_filed(&mut self) -> Vec<(ExecutionId, crate::store::Location)> {
        self.inner.take_filed()
    }
    fn history(&self) -> Arc<dyn crate::store::HistoryReader> {
        self.inner.history()
    }
    fn wants_compaction(&self) -> bool {
        false
    }
    fn compact(&mut self) -> Result<(), crate::store::StoreError> {
        self.inner.compact()
    }
}

/// Runs turns until `answer` arrives.
async fn settle<T>(actor: &mut Actor, mut answer: oneshot::Receiver<T>) -> T {
    loop {
        match answer.try_recv() {
            Ok(value) => return value,
            Err(oneshot::error::TryRecvError::Empty) => assert!(actor.turn().await),
            Err(oneshot::error::TryRecvError::Closed) => panic!("no answer"),
        }
    }
}

/// A trigger answered UNAVAILABLE because its record never became
/// durable must not run on: it is aborted and failed, and a retry with
/// the same idempotency key makes a new execution.
#[tokio::test(start_paused = true)]
async fn an_acceptance_that_never_became_durable_is_not_run() {
    let fail_next_sync = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let store = FlakyStore {
        fail_next_sync: fail_next_sync.clone(),
        ..FlakyStore::default()
    };
    let options = SchedulerOptions {
        store_runner: super::super::StoreRunner::Task,
        ..SchedulerOptions::default()
    };
    let (mut actor, commands) = actor_on(options, Box::new(store));

    let mut to_worker = join(&mut actor, &commands, "w").await;
    let (reply, registered) = oneshot::channel();
    let request = RegisterFunctionRequest {
        name: "sleep".into(),
        language: "builtin".into(),
        code: Bytes::from_static(b"sleep"),
        ..Default::default()
    };
    commands
        .send(Command::Register { request, reply })
        .await
        .unwrap();
    let function_id = settle(&mut actor, registered).await.unwrap();
    let trigger = || TriggerExecutionRequest {
        function_id: function_id.clone(),
        payload: Bytes::from_static(b"60000"),
        idempotency_key: "once".into(),
        ..Default::default()
    };

    fail_next_sync.store(true, std::sync::atomic::Ordering::SeqCst);
    let refused = ask(&mut actor, &commands, |reply| Command::Trigger {
        request: trigger(),
        reply,
    })
    .await
    .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable);

    // It was dispatched at once (dispatch overlaps the sync), then aborted.
    let mut sent = Vec::new();
    while let Ok(Ok(message)) = to_worker.try_recv() {
        sent.push(message.message.unwrap());
    }
    let [
        scheduler_message::Message::Define(_),
        scheduler_message::Message::Execute(execute),
        scheduler_message::Message::Cancel(cancel),
    ] = &sent[..]
    else {
        panic!("expected define, execute, cancel; got {sent:?}");
    };
    assert_eq!(cancel.execution_id, execute.execution_id);
    let first = ExecutionId::parse(&execute.execution_id).unwrap();
    let view = actor.core.execution(first).unwrap();
    assert_eq!(view.status, ExecStatus::Failed);
    let terminal = actor
        .meta
        .get(&first)
        .and_then(|meta| meta.terminal.as_ref());
    assert!(
        terminal.is_some_and(|t| t.error().starts_with("not run: the store failed")),
        "{terminal:?}"
    );

    // The retry with the same key is a new execution, and is accepted.
    let second = ask(&mut actor, &commands, |reply| Command::Trigger {
        request: trigger(),
        reply,
    })
    .await
    .unwrap();
    assert_ne!(second, first.to_string());
}

/// An actor on a store that counts syncs, with a clock that follows tokio's
/// (paused) time, a one-slot worker and a registered builtin function.
struct Delayed {
    actor: Actor,
    commands: mpsc::Sender<Command>,
    to_worker: mpsc::UnboundedReceiver<Result<SchedulerMessage, Status>>,
    syncs: Arc<std::sync::atomic::AtomicUsize>,
    function_id: String,
}

impl Delayed {
    async fn start(commit_delay: Duration, code: &'static [u8]) -> Delayed {
        let syncs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut store: Box<dyn Store> = Box::new(FlakyStore {
            syncs: syncs.clone(),
            ..FlakyStore::default()
        });
        let options = SchedulerOptions {
            store_runner: super::super::StoreRunner::Task,
            core: taskforge_core::scheduler::SchedulerConfig {
                prefetch: 0,
                ..Default::default()
            },
            commit_delay,
            ..SchedulerOptions::default()
        };
        let recovered = store.load().unwrap();
        let (commands, inbox) = mpsc::channel(2 * COMMANDS_PER_TURN);
        let origin = tokio::time::Instant::now();
        let clock: WallClock = Arc::new(move || 1_000_000 + origin.elapsed().as_micros() as u64);
        let mut actor = Actor::new(options, store, clock, inbox, recovered).unwrap();
        let mut to_worker = join(&mut actor, &commands, "w").await;
        let request = RegisterFunctionRequest {
            name: "f".into(),
            language: "builtin".into(),
            code: Bytes::from_static(code),
            ..Default::default()
        };
        let function_id = ask(&mut actor, &commands, |reply| Command::Register {
            request,
            reply,
        })
        .await
        .unwrap();
        let _define = to_worker.try_recv();
        Delayed {
            actor,
            commands,
            to_worker,
            syncs,
            function_id,
        }
    }

    /// Sends a trigger and runs the one turn that takes it: the execution
    /// is accepted and dispatched, its batch handed to the committer, and
    /// the committer has had its chance to start on it.
    async fn trigger(&mut self) -> (oneshot::Receiver<Result<String, Status>>, ExecutionRequest) {
        let (reply, answer) = oneshot::channel();
        let request = TriggerExecutionRequest {
            function_id: self.function_id.clone(),
            ..Default::default()
        };
        self.commands
            .send(Command::Trigger { request, reply })
            .await
            .unwrap();
        assert!(self.actor.turn().await);
        let execute = loop {
            match self.to_worker.try_recv() {
                Ok(Ok(SchedulerMessage {
                    message: Some(scheduler_message::Message::Execute(execute)),
                })) => break execute,
                Ok(_) => continue,
                Err(error) => panic!("nothing dispatched: {error:?}"),
            }
        };
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        (answer, execute)
    }

    /// The worker reports `execute` done; turns run until the actor has
    /// taken the result (a commit report may come first).
    async fn answer(&mut self, execute: &ExecutionRequest) {
        let id = ExecutionId::parse(&execute.execution_id).unwrap();
        let result = taskforge_proto::common::ExecutionResult {
            execution_id: execute.execution_id.clone(),
            success: true,
            attempt: execute.attempt,
            ..Default::default()
        };
        let message = FromWorker::Result(result);
        self.commands
            .send(Command::FromWorker {
                session: SessionId(1),
                message,
            })
            .await
            .unwrap();
        while self.actor.meta[&id].terminal.is_none() {
            assert!(self.actor.turn().await);
        }
    }

    fn syncs(&self) -> usize {
        self.syncs.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A quick execution's acceptance waits (up to the commit delay) for its
/// result, and one sync makes both durable; with no delay they take two.
#[tokio::test(start_paused = true)]
async fn a_quick_execution_is_accepted_and_finished_by_one_sync() {
    for (delay, syncs) in [(Duration::from_micros(250), 1), (Duration::ZERO, 2)] {
        let mut d = Delayed::start(delay, b"echo").await;
        let before = d.syncs();
        let started = tokio::time::Instant::now();
        let (answer, execute) = d.trigger().await;
        d.answer(&execute).await;
        let id = settle(&mut d.actor, answer).await.unwrap();
        let id = ExecutionId::parse(&id).unwrap();
        // The terminal state is published once durable.
        while d.actor.unpublished.contains_key(&id) {
            assert!(d.actor.turn().await);
        }
        assert_eq!(d.syncs() - before, syncs, "commit delay {delay:?}");
        assert_eq!(
            started.elapsed(),
            Duration::ZERO,
            "no one waited for a timer"
        );
    }
}

/// A result that does not come holds the acceptance for the delay and no
/// longer; a function measured slower than the delay is not held at all.
#[tokio::test(start_paused = true)]
async fn the_commit_delay_bounds_the_wait_and_skips_slow_functions() {
    let delay = Duration::from_micros(250);
    let mut d = Delayed::start(delay, b"sleep").await;

    // Unmeasured, so held; the result comes 10 ms later. (tokio's timers
    // count whole milliseconds: the simulation's committer waits for one.)
    let started = tokio::time::Instant::now();
    let (answer, execute) = d.trigger().await;
    settle(&mut d.actor, answer).await.unwrap();
    let held = started.elapsed();
    assert!(
        delay <= held && held <= Duration::from_millis(1),
        "held for {held:?}"
    );
    tokio::time::advance(Duration::from_millis(10)).await;
    d.answer(&execute).await;

    // Now measured at ~10 ms: answered at the first sync.
    let started = tokio::time::Instant::now();
    let before = d.syncs();
    let (answer, _execute) = d.trigger().await;
    settle(&mut d.actor, answer).await.unwrap();
    assert_eq!(started.elapsed(), Duration::ZERO, "not held");
    assert!(d.syncs() > before);
}

#[test]
fn execution_ids_sort_by_the_millisecond_they_were_made_in() {
    let at = |ms: u64, random: u64| super::time_ordered_id(ms * 1_000 + 999, random);
    assert!(at(1_700_000_000_000, u64::MAX) < at(1_700_000_000_001, 0));
    assert_ne!(at(5, 1), at(5, 2), "the low bits are random");
    assert_eq!(at(5, 1 << 24), at(5, 0), "only 24 of them");
    // The shown form is still 16 hex digits.
    assert_eq!(at(1_700_000_000_000, 0xabcdef).to_string().len(), 16);
}
