//! Hosts that speak the worker protocol by hand, and misbehave on purpose.
//!
//! The real workers run the services' own worker code, which always answers.
//! These hosts drive `WorkerStream` with the generated client directly, to
//! press on what the scheduler must survive from a worker it cannot trust:
//!
//! - the **black hole** takes work and never answers. It says hello with many
//!   slots (so the scheduler sends it more than anyone), heartbeats every
//!   [`HEARTBEAT_INTERVAL`] — it looks alive, so only the attempts' own
//!   deadlines can tell — accepts every execute, define and cancel, and never
//!   sends a result. Whatever it was given must finish elsewhere, and it must
//!   be quarantined;
//! - the **impostor** keeps opening streams under a live worker's id. Each must
//!   be refused while the real worker is heard from; were one taken, the real
//!   worker's session would be lost as replaced.
//!
//! Both run on their host's runtime only (no threads), and record what they
//! send and get in the trace as [`Event::Rogue`].

use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::{self, Stream};
use taskforge_core::ExecutionId;
use taskforge_proto::worker::scheduler_message::Message as ToWorker;
use taskforge_proto::worker::worker_message::Message as FromWorker;
use taskforge_proto::worker::worker_service_client::WorkerServiceClient;
use taskforge_proto::worker::{SchedulerMessage, WorkerHeartbeat, WorkerHello, WorkerMessage};
use tokio::sync::oneshot;
use tokio::time::timeout;
use tonic::transport::Channel;

use crate::client::{Retry, now, sleep_until};
use crate::cluster::{self, HEARTBEAT_INTERVAL, ONLY_BUILTIN, RuntimeSet, SCHEDULER, worker_host};
use crate::net::{self, SCHEDULER_PORT};
use crate::scenario::Rogues;
use crate::trace::{Event, Recorder};

/// The black hole's host name, which is also its worker id.
pub const BLACK_HOLE: &str = "black-hole";
/// More slots than any real worker has, so that it gets work first.
pub const BLACK_HOLE_POOL_SIZE: u32 = 64;

/// The impostor's host name.
pub const IMPOSTOR: &str = "impostor";
/// The real worker whose id the impostor takes.
pub const IMPOSTOR_POSES_AS: usize = 1;
/// The pool size the impostor announces: no real worker has it, so the trace
/// tells its sessions (if any were ever taken) from the real worker's.
pub const IMPOSTOR_POOL_SIZE: u32 = 32;

/// What the rogues announce they run.
pub const RUNTIMES: RuntimeSet = ONLY_BUILTIN;

/// How long a rogue waits for the scheduler to take or refuse its hello.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(1);

/// Which rogue host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rogue {
    BlackHole,
    Impostor,
}

impl Rogue {
    pub fn host(self) -> &'static str {
        match self {
            Rogue::BlackHole => BLACK_HOLE,
            Rogue::Impostor => IMPOSTOR,
        }
    }
}

impl fmt::Display for Rogue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.host())
    }
}

/// What a rogue host did or was given.
#[derive(Clone, Debug)]
pub enum RogueEvent {
    /// The scheduler took its hello: the stream is open.
    Connected,
    /// The scheduler refused its hello.
    Refused { code: tonic::Code },
    /// The scheduler did not answer the hello in time.
    Unanswered,
    /// Its stream ended or failed.
    Disconnected,
    /// It was sent this attempt (and will never answer for it).
    Took {
        execution: ExecutionId,
        attempt: u32,
    },
    /// It was told to stop this attempt.
    Cancelled {
        execution: ExecutionId,
        attempt: u32,
    },
    /// It was sent a function's definition.
    Defined { function_id: String },
    /// It was told to forget a function.
    Forgot { function_id: String },
    /// A message it could not read (an execution id that does not parse).
    Garbled { what: String },
}

impl fmt::Display for RogueEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RogueEvent::Connected => write!(f, "connected"),
            RogueEvent::Refused { code } => write!(f, "refused: {code:?}"),
            RogueEvent::Unanswered => write!(f, "hello unanswered"),
            RogueEvent::Disconnected => write!(f, "stream ended"),
            RogueEvent::Took { execution, attempt } => {
                write!(f, "took {execution}/{attempt}")
            }
            RogueEvent::Cancelled { execution, attempt } => {
                write!(f, "cancel {execution}/{attempt}")
            }
            RogueEvent::Defined { function_id } => write!(f, "define {function_id}"),
            RogueEvent::Forgot { function_id } => write!(f, "forget {function_id}"),
            RogueEvent::Garbled { what } => write!(f, "garbled {what}"),
        }
    }
}

/// When the impostor tries its luck.
#[derive(Clone, Debug)]
pub struct ImpostorPlan {
    pub from: Duration,
    pub until: Duration,
    pub every: Duration,
}

fn record(recorder: &Recorder, rogue: Rogue, event: RogueEvent) {
    recorder.record(Event::Rogue { rogue, event });
}

fn hello(worker_id: &str, pool_size: u32) -> WorkerMessage {
    WorkerMessage {
        message: Some(FromWorker::Hello(WorkerHello {
            worker_id: worker_id.to_string(),
            pool_size,
            caches_functions: true,
            runtimes: RUNTIMES.iter().map(|name| name.to_string()).collect(),
            holding: vec![],
        })),
    }
}

/// What the black hole holds on its current stream: what it took and was not
/// told to stop. Shared between the reader and the heartbeats.
type Held = Arc<Mutex<BTreeSet<(ExecutionId, u32)>>>;

fn held_count(held: &Held) -> i32 {
    let held = held.lock().unwrap_or_else(PoisonError::into_inner);
    i32::try_from(held.len()).unwrap_or(i32::MAX)
}

/// The black hole's side of one stream: its hello, then a heartbeat every
/// [`HEARTBEAT_INTERVAL`] reporting what it holds, until `closed` fires.
fn black_hole_outbound(
    held: Held,
    closed: oneshot::Receiver<()>,
) -> impl Stream<Item = WorkerMessage> + Send + 'static {
    let heartbeats = stream::unfold(held, |held| async move {
        tokio::time::sleep(HEARTBEAT_INTERVAL).await;
        let heartbeat = WorkerMessage {
            message: Some(FromWorker::Heartbeat(WorkerHeartbeat {
                worker_id: BLACK_HOLE.to_string(),
                running_tasks: held_count(&held),
                queued_tasks: 0,
            })),
        };
        Some((heartbeat, held))
    });
    stream::once(async { hello(BLACK_HOLE, BLACK_HOLE_POOL_SIZE) })
        .chain(heartbeats)
        .take_until(closed)
}

/// Runs the black hole: connected whenever it can be, answering for nothing.
pub async fn black_hole(recorder: Recorder) -> turmoil::Result {
    let channel = net::channel(SCHEDULER, SCHEDULER_PORT, &cluster::channel_config());
    let mut redial = Retry::new();
    loop {
        if black_hole_session(&channel, &recorder).await {
            // Like a worker: a stream that opened starts the backoff over.
            redial = Retry::new();
        }
        redial.wait().await;
    }
}

/// One stream of the black hole, until it ends; whether it opened.
async fn black_hole_session(channel: &Channel, recorder: &Recorder) -> bool {
    let held = Held::default();
    // Dropped when this stream is over, which ends the heartbeats with it.
    let (_close, closed) = oneshot::channel::<()>();
    let mut client = WorkerServiceClient::new(channel.clone());
    let opening = client.worker_stream(black_hole_outbound(Arc::clone(&held), closed));
    let mut inbound = match timeout(HANDSHAKE_TIMEOUT, opening).await {
        Ok(Ok(response)) => response.into_inner(),
        Ok(Err(status)) => {
            let code = status.code();
            record(recorder, Rogue::BlackHole, RogueEvent::Refused { code });
            return false;
        }
        Err(_) => {
            record(recorder, Rogue::BlackHole, RogueEvent::Unanswered);
            return false;
        }
    };
    record(recorder, Rogue::BlackHole, RogueEvent::Connected);
    // No read timeout: the channel's keepalive ends a wedged connection.
    while let Ok(Some(message)) = inbound.message().await {
        if let Some(event) = swallow(message, &held) {
            record(recorder, Rogue::BlackHole, event);
        }
    }
    record(recorder, Rogue::BlackHole, RogueEvent::Disconnected);
    true
}

/// Takes in one message from the scheduler, and does nothing about it.
fn swallow(message: SchedulerMessage, held: &Held) -> Option<RogueEvent> {
    let mut held = held.lock().unwrap_or_else(PoisonError::into_inner);
    let event = match message.message? {
        ToWorker::Execute(request) => match ExecutionId::parse(&request.execution_id) {
            Some(execution) => {
                held.insert((execution, request.attempt));
                RogueEvent::Took {
                    execution,
                    attempt: request.attempt,
                }
            }
            None => RogueEvent::Garbled {
                what: format!("execute {:?}", request.execution_id),
            },
        },
        ToWorker::Cancel(cancel) => match ExecutionId::parse(&cancel.execution_id) {
            Some(execution) => {
                held.remove(&(execution, cancel.attempt));
                RogueEvent::Cancelled {
                    execution,
                    attempt: cancel.attempt,
                }
            }
            None => RogueEvent::Garbled {
                what: format!("cancel {:?}", cancel.execution_id),
            },
        },
        ToWorker::Define(function) => RogueEvent::Defined {
            function_id: function.function_id,
        },
        ToWorker::Forget(forget) => RogueEvent::Forgot {
            function_id: forget.function_id,
        },
    };
    Some(event)
}

/// Runs the impostor: every `plan.every` from `plan.from` until `plan.until`,
/// it says hello as `worker-1` on a fresh stream. It came for the id, not for
/// work: a stream the scheduler takes is hung up at once.
pub async fn impostor(plan: ImpostorPlan, recorder: Recorder) -> turmoil::Result {
    let channel = net::channel(SCHEDULER, SCHEDULER_PORT, &cluster::channel_config());
    let worker_id = worker_host(IMPOSTOR_POSES_AS);
    sleep_until(plan.from).await;
    while now() < plan.until {
        // The stream stays open (no end after the hello) until dropped, as a
        // second process holding it would.
        let hello = hello(&worker_id, IMPOSTOR_POOL_SIZE);
        let outbound = stream::once(async move { hello }).chain(stream::pending());
        let mut client = WorkerServiceClient::new(channel.clone());
        let event = match timeout(HANDSHAKE_TIMEOUT, client.worker_stream(outbound)).await {
            Ok(Ok(_taken)) => RogueEvent::Connected,
            Ok(Err(status)) => RogueEvent::Refused {
                code: status.code(),
            },
            Err(_) => RogueEvent::Unanswered,
        };
        record(&recorder, Rogue::Impostor, event);
        tokio::time::sleep(plan.every).await;
    }
    // A host's software must not end.
    std::future::pending().await
}

/// Registers the rogue hosts `rogues` asks for on `sim`.
pub fn install(sim: &mut turmoil::Sim<'_>, rogues: &Rogues, recorder: &Recorder) {
    if rogues.black_hole {
        let recorder = recorder.clone();
        sim.host(BLACK_HOLE, move || black_hole(recorder.clone()));
    }
    if let Some(plan) = &rogues.impostor {
        let (plan, recorder) = (plan.clone(), recorder.clone());
        sim.host(IMPOSTOR, move || impostor(plan.clone(), recorder.clone()));
    }
}

/// The hosts `rogues` adds.
pub fn hosts(rogues: &Rogues) -> Vec<String> {
    let mut hosts = Vec::new();
    if rogues.black_hole {
        hosts.push(BLACK_HOLE.to_string());
    }
    if rogues.impostor.is_some() {
        hosts.push(IMPOSTOR.to_string());
    }
    hosts
}
