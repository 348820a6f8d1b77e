//! The worker side of the scheduler: one long-lived bidirectional stream per
//! worker connection.
//!
//! The first message must be a hello. The connection then becomes a session in
//! the core; a reader task forwards every later message to the actor, and tells
//! it when the stream ends. Messages towards the worker (executions, cancels)
//! arrive from the actor on an unbounded channel: the actor never waits on a
//! slow worker, and the core bounds what is in flight on each one.

use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use taskforge_proto::worker::worker_message::Message;
use taskforge_proto::worker::worker_service_server::WorkerService;
use taskforge_proto::worker::{SchedulerMessage, WorkerMessage};

use super::actor::Command;
use super::route::Route;

/// Longest worker id accepted in a hello.
const MAX_WORKER_ID: usize = 128;

/// Worker ids end up in logs, listings and metric labels: only characters
/// that need no escaping anywhere are accepted.
fn check_worker_id(id: &str) -> Result<(), Status> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-');
    if id.is_empty() || id.len() > MAX_WORKER_ID {
        return Err(Status::invalid_argument(format!(
            "worker_id must be 1 to {MAX_WORKER_ID} bytes"
        )));
    }
    if let Some(bad) = id.chars().find(|&c| !allowed(c)) {
        return Err(Status::invalid_argument(format!(
            "worker_id {:?} contains {bad:?}; only letters, digits and . _ : - are allowed",
            id.escape_debug().to_string()
        )));
    }
    Ok(())
}

#[derive(Clone, Debug)]
pub(crate) struct WorkerStreams {
    route: Route,
}

impl WorkerStreams {
    pub(crate) fn new(route: Route) -> WorkerStreams {
        WorkerStreams { route }
    }
}

pub(crate) type Outbox = mpsc::UnboundedSender<Result<SchedulerMessage, Status>>;

#[tonic::async_trait]
impl WorkerService for WorkerStreams {
    type WorkerStreamStream = UnboundedReceiverStream<Result<SchedulerMessage, Status>>;

    async fn worker_stream(
        &self,
        request: Request<Streaming<WorkerMessage>>,
    ) -> Result<Response<Self::WorkerStreamStream>, Status> {
        // A standby sends the worker on before it says anything.
        let commands = self.route.leading()?.commands;
        let mut inbound = request.into_inner();
        let hello = match inbound.message().await? {
            Some(WorkerMessage {
                message: Some(Message::Hello(hello)),
            }) => hello,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message on a worker stream must be a hello",
                ));
            }
        };
        check_worker_id(&hello.worker_id)?;
        let (outbox, messages) = mpsc::unbounded_channel();
        let (reply, session) = oneshot::channel();
        let gone = || Status::unavailable("the scheduler is shutting down");
        commands
            .send(Command::WorkerJoined {
                hello,
                outbox,
                reply,
            })
            .await
            .map_err(|_| gone())?;
        let session = session.await.map_err(|_| gone())??;

        tokio::spawn(async move {
            loop {
                match inbound.message().await {
                    Ok(Some(WorkerMessage {
                        message: Some(message),
                    })) => {
                        let command = Command::FromWorker { session, message };
                        if commands.send(command).await.is_err() {
                            return;
                        }
                    }
                    // An empty message carries nothing; skip it.
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
            let _ = commands.send(Command::WorkerLeft { session }).await;
        });
        Ok(Response::new(UnboundedReceiverStream::new(messages)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_ids_are_restricted_to_label_safe_characters() {
        for good in [
            "worker-1",
            "host.example:7",
            "a_b",
            &"w".repeat(MAX_WORKER_ID),
        ] {
            assert!(check_worker_id(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "evil\"} 1\ntaskforge_injected_total 1337",
            "with space",
            "tab\t",
            "é",
            &"w".repeat(MAX_WORKER_ID + 1),
        ] {
            let error = check_worker_id(bad).unwrap_err();
            assert_eq!(error.code(), tonic::Code::InvalidArgument, "{bad:?}");
        }
    }
}
