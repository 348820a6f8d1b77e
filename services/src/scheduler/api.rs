//! The client-facing gRPC API: each call becomes a command to the actor, and the
//! actor's reply becomes the response.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::Stream;
use tokio::sync::{mpsc, oneshot};
use tonic::{Request, Response, Status};

use taskforge_core::ExecutionId;
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

use super::actor::{Command, Listing, Reply, Watch};
use super::paging::Page;
use super::route::{Leading, Route};

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

    /// A page of the listing: the filed executions read, cut to the
    /// response budget, with the cursor to go on from.
    async fn page(
        &self,
        (listing, term): (Listing, Leading),
    ) -> Result<ListExecutionsResponse, Status> {
        let infos = term.history.resolve(listing.found).await?;
        let page = Page::fill(infos, usize::MAX, self.response_budget);
        let cursor = if page.more {
            page.items.last().map(|info| info.execution_id.clone())
        } else if listing.more_matches {
            listing.last_found.map(|id| id.to_string())
        } else {
            listing.scan_stopped_at.map(|id| id.to_string())
        };
        Ok(ListExecutionsResponse {
            executions: page.items,
            next_after_execution_id: cursor.unwrap_or_default(),
        })
    }
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
    /// The actor closed the watch (a terminal state, or shutdown): it holds
    /// nothing of it any more, so there is nothing to report on drop.
    ended: bool,
}

impl Stream for WatchStream {
    type Item = Result<ExecutionInfo, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(first)));
        }
        let polled = self.updates.poll_recv(cx);
        if let Poll::Ready(None) = polled {
            self.ended = true;
        }
        polled.map(|update| update.map(Ok))
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
        let listing = self
            .ask_leading(|reply| Command::ListExecutions { request, reply })
            .await?;
        Ok(Response::new(self.page(listing).await?))
    }

    async fn cancel_execution(
        &self,
        request: Request<CancelExecutionRequest>,
    ) -> Result<Response<CancelExecutionResponse>, Status> {
        let id = request.into_inner().execution_id;
        let status = self.ask(|reply| Command::Cancel { id, reply }).await?;
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
        let stats = self.ask(|reply| Command::Stats { reply }).await?;
        Ok(Response::new(stats))
    }
}
