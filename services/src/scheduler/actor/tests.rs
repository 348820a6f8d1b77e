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

/// A memory store whose next sync fails when told to.
#[derive(Debug)]
struct FlakyStore {
    inner: MemoryStore,
    fail_next_sync: Arc<std::sync::atomic::AtomicBool>,
}

impl Store for FlakyStore {
    fn load(&mut self) -> Result<Recovered, crate::store::StoreError> {
        self.inner.load()
    }
    fn append(&mut self, record: &Record) -> Result<(), crate::store::StoreError> {
        self.inner.append(record)
    }
    fn sync(&mut self) -> Result<(), crate::store::StoreError> {
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
        inner: MemoryStore::new(),
        fail_next_sync: fail_next_sync.clone(),
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

#[test]
fn execution_ids_sort_by_the_millisecond_they_were_made_in() {
    let at = |ms: u64, random: u64| super::time_ordered_id(ms * 1_000 + 999, random);
    assert!(at(1_700_000_000_000, u64::MAX) < at(1_700_000_000_001, 0));
    assert_ne!(at(5, 1), at(5, 2), "the low bits are random");
    assert_eq!(at(5, 1 << 24), at(5, 0), "only 24 of them");
    // The shown form is still 16 hex digits.
    assert_eq!(at(1_700_000_000_000, 0xabcdef).to_string().len(), 16);
}
