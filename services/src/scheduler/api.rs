//! The client-facing gRPC API: each call becomes a command to the actor, and the
//! actor's reply becomes the response.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures_util::Stream;
use tokio::sync::{mpsc, oneshot};
use tonic::{Request, Response, Status};

use taskforge_core::{ExecutionId, Status as ExecStatus};
use taskforge_proto::common::{ExecutionInfo, Function};
use taskforge_proto::scheduler::scheduler_service_server::SchedulerService;
use taskforge_proto::scheduler::{
    CancelExecutionRequest, CancelExecutionResponse, ClusterStats, DeleteFunctionRequest,
    DeleteFunctionResponse, GetClusterStatsRequest, GetExecutionStatusRequest,
    GetExecutionStatusResponse, GetFunctionRequest, ListExecutionsRequest, ListExecutionsResponse,
    ListFunctionsRequest, ListFunctionsResponse, ListWorkersRequest, ListWorkersResponse,
    RegisterFunctionRequest, RegisterFunctionResponse, TriggerExecutionRequest,
    TriggerExecutionResponse, WatchExecutionRequest,
};

use super::actor::{Command, Found, Listing, Reply, Watch};
use super::paging::Page;
use super::route::{Leading, Route};
use crate::store::{HistoryQuery, Location};

/// Sends commands to the actor and awaits its replies; reads what the actor
/// says is in the history.
#[derive(Clone, Debug)]
pub(crate) struct Api {
    route: Route,
    /// What one response may carry (see `paging.rs`).
    response_budget: usize,
}

fn gone() -> Status {
    Status::unavailable("the scheduler is shutting down")
}

impl Api {
    pub(crate) fn new(route: Route, response_budget: usize) -> Api {
        Api {
            route,
            response_budget,
        }
    }

    async fn ask<T>(&self, command: impl FnOnce(Reply<T>) -> Command) -> Result<T, Status> {
        self.ask_leading(command).await.map(|(answer, _)| answer)
    }

    /// [`ask`](Self::ask), also returning the term that answered, whose
    /// history holds what the answer says is filed.
    async fn ask_leading<T>(
        &self,
        command: impl FnOnce(Reply<T>) -> Command,
    ) -> Result<(T, Leading), Status> {
        let leading = self.route.leading()?;
        let (reply, answer) = oneshot::channel();
        leading
            .commands
            .send(command(reply))
            .await
            .map_err(|_| gone())?;
        let answer = answer.await.map_err(|_| gone())??;
        Ok((answer, leading))
    }
}

type InfoStream = Pin<Box<dyn Stream<Item = Result<ExecutionInfo, Status>> + Send>>;

impl Api {
    async fn stream(&self, (watch, term): (Watch, Leading)) -> Result<WatchStream, Status> {
        let first = match watch.filed {
            Some(location) => Some(term.history.read(watch.id, location).await?),
            None => None,
        };
        Ok(WatchStream {
            id: watch.id,
            first,
            updates: watch.updates,
            commands: term.commands,
            // A filed execution's watch holds nothing in the actor: there
            // is nothing to report when it is dropped.
            ended: watch.filed.is_some(),
        })
    }

    /// A page of the listing: the filed executions read (and, where the
    /// store answers for its history, its matches merged in), cut to the
    /// response budget, with the cursor to go on from.
    async fn page(
        &self,
        request: &ListExecutionsRequest,
        (listing, term): (Listing, Leading),
    ) -> Result<ListExecutionsResponse, Status> {
        let limit = listing.limit;
        let mut infos = term.history.resolve(listing.found).await?;
        // Where what the actor scanned ends: nothing beyond it is known.
        let mut bound = if listing.more_matches {
            listing.last_found
        } else {
            listing.scan_stopped_at
        };
        if term.history.searchable() {
            let query = HistoryQuery {
                after: ExecutionId::parse(&request.after_execution_id),
                status: ExecStatus::parse(&request.status).filter(|s| s.is_terminal()),
                function_id: (!request.function_id.is_empty()).then(|| request.function_id.clone()),
                limit,
            };
            // PENDING and RUNNING executions are all live, none filed.
            let wanted = request.status.is_empty() || query.status.is_some();
            let filed = match wanted {
                true => term.history.list(query).await?,
                false => Vec::new(),
            };
            if filed.len() == limit {
                // The history may hold more beyond its last.
                let last = filed
                    .last()
                    .and_then(|info| ExecutionId::parse(&info.execution_id));
                bound = match (bound, last) {
                    (Some(scanned), Some(last)) => Some(scanned.min(last)),
                    (scanned, last) => scanned.or(last),
                };
            }
            infos = merge_by_id(infos, filed);
        }
        if let Some(bound) = bound {
            infos.retain(|info| {
                ExecutionId::parse(&info.execution_id).is_some_and(|id| id <= bound)
            });
        }
        let cut = infos.len() > limit;
        infos.truncate(limit);
        let page = Page::fill(infos, usize::MAX, self.response_budget);
        let cursor = if page.more || cut {
            page.items.last().map(|info| info.execution_id.clone())
        } else {
            bound.map(|id| id.to_string())
        };
        Ok(ListExecutionsResponse {
            executions: page.items,
            next_after_execution_id: cursor.unwrap_or_default(),
        })
    }
}

/// Two listings in id order as one, in id order; an execution in both
/// (filed between the two reads) once.
fn merge_by_id(a: Vec<ExecutionInfo>, b: Vec<ExecutionInfo>) -> Vec<ExecutionInfo> {
    let key = |info: &ExecutionInfo| ExecutionId::parse(&info.execution_id);
    let mut merged: Vec<ExecutionInfo> = a.into_iter().chain(b).collect();
    merged.sort_by_key(key);
    merged.dedup_by_key(|info| key(info));
    merged
}

/// A watch's updates as a response stream. When the stream is dropped (the
/// client went away, or it ended) it tells the actor, so the dead watch is
/// dropped at once instead of at the execution's next change.
#[derive(Debug)]
struct WatchStream {
    id: ExecutionId,
    /// Sent before the updates (a filed execution's state, read from disk).
    first: Option<ExecutionInfo>,
    updates: mpsc::UnboundedReceiver<ExecutionInfo>,
    commands: mpsc::Sender<Command>,
    /// The watch is over: a terminal state was sent (the actor lets go of a
    /// watch at its terminal state) or the actor closed it (shutdown). The
    /// actor holds nothing of it any more: there is nothing to report on drop.
    ended: bool,
}

fn is_terminal(info: &ExecutionInfo) -> bool {
    ExecStatus::parse(&info.status).is_some_and(ExecStatus::is_terminal)
}

impl Stream for WatchStream {
    type Item = Result<ExecutionInfo, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let next = match self.first.take() {
            Some(first) => Some(first),
            None if self.ended => None,
            None => ready!(self.updates.poll_recv(cx)),
        };
        // The stream ends right after a terminal state, without waiting for
        // the actor to let go of its sender: the trailers then follow the
        // last message in the same write. A client that reads the last
        // message and drops the stream before its trailers arrive makes
        // hyper's client reset an "old stream" on their arrival, and 1,024
        // of those end its connection (GOAWAY too_many_internal_resets).
        match &next {
            Some(info) if is_terminal(info) => self.ended = true,
            Some(_) => {}
            None => self.ended = true,
        }
        Poll::Ready(next.map(Ok))
    }
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        self.updates.close();
        // Best effort: with the actor's inbox full, the next watch of this
        // execution (or the sweep at the watch limit) finds it instead.
        let _ = self.commands.try_send(Command::Unwatched { id: self.id });
    }
}

#[tonic::async_trait]
impl SchedulerService for Api {
    async fn register_function(
        &self,
        request: Request<RegisterFunctionRequest>,
    ) -> Result<Response<RegisterFunctionResponse>, Status> {
        let request = request.into_inner();
        let function_id = self
            .ask(|reply| Command::Register { request, reply })
            .await?;
        Ok(Response::new(RegisterFunctionResponse { function_id }))
    }

    async fn trigger_execution(
        &self,
        request: Request<TriggerExecutionRequest>,
    ) -> Result<Response<TriggerExecutionResponse>, Status> {
        let request = request.into_inner();
        let execution_id = self
            .ask(|reply| Command::Trigger { request, reply })
            .await?;
        Ok(Response::new(TriggerExecutionResponse {
            execution_id,
            status: "ACCEPTED".to_string(),
        }))
    }

    async fn get_execution_status(
        &self,
        request: Request<GetExecutionStatusRequest>,
    ) -> Result<Response<GetExecutionStatusResponse>, Status> {
        let id = request.into_inner().execution_id;
        let (found, term) = self
            .ask_leading(|reply| Command::Status { id, reply })
            .await?;
        let info = match found {
            Some(found) => term.history.resolve_one(found).await?,
            None => None,
        };
        // The seed answers an unknown id with a NOT_FOUND status string, not an
        // error: its clients rely on that.
        Ok(Response::new(match info {
            // The output goes once, in the seed's field: carried twice, a
            // large output would push the response past the message limit.
            Some(mut info) => GetExecutionStatusResponse {
                status: info.status.clone(),
                output: std::mem::take(&mut info.output),
                error: std::mem::take(&mut info.error),
                info: Some(info),
            },
            None => GetExecutionStatusResponse {
                status: "NOT_FOUND".to_string(),
                ..Default::default()
            },
        }))
    }

    type WatchExecutionStream = InfoStream;

    async fn watch_execution(
        &self,
        request: Request<WatchExecutionRequest>,
    ) -> Result<Response<InfoStream>, Status> {
        let id = request.into_inner().execution_id;
        let watch = self
            .ask_leading(|reply| Command::Watch { id, reply })
            .await?;
        Ok(Response::new(Box::pin(self.stream(watch).await?)))
    }

    type TriggerAndWatchExecutionStream = InfoStream;

    async fn trigger_and_watch_execution(
        &self,
        request: Request<TriggerExecutionRequest>,
    ) -> Result<Response<InfoStream>, Status> {
        let request = request.into_inner();
        let watch = self
            .ask_leading(|reply| Command::TriggerAndWatch { request, reply })
            .await?;
        Ok(Response::new(Box::pin(self.stream(watch).await?)))
    }

    async fn list_functions(
        &self,
        request: Request<ListFunctionsRequest>,
    ) -> Result<Response<ListFunctionsResponse>, Status> {
        let request = request.into_inner();
        let page = self
            .ask(|reply| Command::ListFunctions { request, reply })
            .await?;
        Ok(Response::new(page))
    }

    async fn delete_function(
        &self,
        request: Request<DeleteFunctionRequest>,
    ) -> Result<Response<DeleteFunctionResponse>, Status> {
        let id = request.into_inner().function_id;
        self.ask(|reply| Command::DeleteFunction { id, reply })
            .await?;
        Ok(Response::new(DeleteFunctionResponse {}))
    }

    async fn get_function(
        &self,
        request: Request<GetFunctionRequest>,
    ) -> Result<Response<Function>, Status> {
        let id = request.into_inner().function_id;
        let function = self.ask(|reply| Command::GetFunction { id, reply }).await?;
        Ok(Response::new(function))
    }

    async fn list_executions(
        &self,
        request: Request<ListExecutionsRequest>,
    ) -> Result<Response<ListExecutionsResponse>, Status> {
        let request = request.into_inner();
        let asked = request.clone();
        let listing = self
            .ask_leading(|reply| Command::ListExecutions {
                request: asked,
                reply,
            })
            .await?;
        Ok(Response::new(self.page(&request, listing).await?))
    }

    async fn cancel_execution(
        &self,
        request: Request<CancelExecutionRequest>,
    ) -> Result<Response<CancelExecutionResponse>, Status> {
        let id = request.into_inner().execution_id;
        let asked = id.clone();
        let leading = self.route.leading()?;
        let status = match self.ask(|reply| Command::Cancel { id: asked, reply }).await {
            // Not held: in a history the store answers for, it may have
            // finished long ago.
            Err(status)
                if status.code() == tonic::Code::NotFound && leading.history.searchable() =>
            {
                let filed = match ExecutionId::parse(&id) {
                    Some(parsed) => {
                        leading
                            .history
                            .resolve_one(Found::Filed {
                                id: parsed,
                                location: Location::default(),
                            })
                            .await?
                    }
                    None => None,
                };
                return Err(match filed {
                    Some(info) => Status::failed_precondition(format!(
                        "execution {id} already finished as {}",
                        info.status
                    )),
                    None => status,
                });
            }
            answer => answer?,
        };
        Ok(Response::new(CancelExecutionResponse { status }))
    }

    async fn list_workers(
        &self,
        _request: Request<ListWorkersRequest>,
    ) -> Result<Response<ListWorkersResponse>, Status> {
        let workers = self.ask(|reply| Command::ListWorkers { reply }).await?;
        Ok(Response::new(ListWorkersResponse { workers }))
    }

    async fn get_cluster_stats(
        &self,
        _request: Request<GetClusterStatsRequest>,
    ) -> Result<Response<ClusterStats>, Status> {
        let (mut stats, term) = self.ask_leading(|reply| Command::Stats { reply }).await?;
        // The history the store answers for is not in the actor's counts.
        let filed = term.history.counts().await?;
        stats.completed += filed.completed;
        stats.failed += filed.failed;
        stats.timed_out += filed.timed_out;
        stats.cancelled += filed.cancelled;
        Ok(Response::new(stats))
    }
}
