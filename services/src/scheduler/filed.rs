//! Reading finished executions back from the history for the client API.
//!
//! The actor answers a question about a filed execution with where its
//! record is ([`Found::Filed`]); the API handler reads it here, off the
//! actor, so a slow disk delays that one answer and nothing else. With the
//! store on a real disk the reads run on tokio's blocking pool; in the
//! simulation (the store runs as a task on the simulated host) they run
//! inline, as the simulated disk belongs to the host's thread.

use std::sync::Arc;

use tonic::Status;

use taskforge_core::ExecutionId;
use taskforge_proto::common::ExecutionInfo;

use super::actor::Found;
use super::committer::StoreRunner;
use crate::store::{FinishedExecution, HistoryQuery, HistoryReader, Location, StatusCounts};

#[derive(Clone, Debug)]
pub(crate) struct History {
    reader: Arc<dyn HistoryReader>,
    runner: StoreRunner,
}

impl History {
    pub(crate) fn new(reader: Arc<dyn HistoryReader>, runner: StoreRunner) -> History {
        History { reader, runner }
    }

    /// What each found execution looks like, in order. A filed one gone
    /// since (forgotten by retention between the actor's answer and the
    /// read) is left out.
    pub(crate) async fn resolve(&self, found: Vec<Found>) -> Result<Vec<ExecutionInfo>, Status> {
        if found.iter().all(|f| matches!(f, Found::Live(_))) {
            return Ok(found.into_iter().filter_map(live).collect());
        }
        self.off_the_actor(move |reader| {
            let mut infos = Vec::with_capacity(found.len());
            for found in found {
                match found {
                    Found::Live(info) => infos.push(info),
                    Found::Filed { id, location } => {
                        infos.extend(read_one(reader, id, location)?);
                    }
                }
            }
            Ok(infos)
        })
        .await
    }

    /// Whether the store answers for the history itself (see
    /// `HistorySearch`): then the actor holds none of it.
    pub(crate) fn searchable(&self) -> bool {
        self.reader.search().is_some()
    }

    /// A page of the store's own history search; empty for a store without
    /// one (its history is in the actor's listing).
    pub(crate) async fn list(&self, query: HistoryQuery) -> Result<Vec<ExecutionInfo>, Status> {
        self.off_the_actor(move |reader| {
            let Some(search) = reader.search() else {
                return Ok(Vec::new());
            };
            let found = search.list(&query).map_err(|error| {
                tracing::error!(%error, "cannot list the history");
                Status::internal(format!("cannot list the history: {error}"))
            })?;
            Ok(found.into_iter().map(info_of).collect())
        })
        .await
    }

    /// Finished executions the store's own history holds, by status (zero
    /// for a store without a search: the actor counts those).
    pub(crate) async fn counts(&self) -> Result<StatusCounts, Status> {
        self.off_the_actor(|reader| match reader.search() {
            None => Ok(StatusCounts::default()),
            Some(search) => search.counts().map_err(|error| {
                tracing::error!(%error, "cannot count the history");
                Status::internal(format!("cannot count the history: {error}"))
            }),
        })
        .await
    }

    /// Runs a read of the history where reads belong (see the module).
    async fn off_the_actor<T: Send + 'static>(
        &self,
        read: impl FnOnce(&dyn HistoryReader) -> Result<T, Status> + Send + 'static,
    ) -> Result<T, Status> {
        let reader = Arc::clone(&self.reader);
        match self.runner {
            StoreRunner::Thread => tokio::task::spawn_blocking(move || read(&*reader))
                .await
                .map_err(|error| {
                    Status::internal(format!("reading the history failed: {error}"))
                })?,
            StoreRunner::Task => read(&*reader),
        }
    }

    /// One execution; `None` if it is gone.
    pub(crate) async fn resolve_one(&self, found: Found) -> Result<Option<ExecutionInfo>, Status> {
        Ok(self.resolve(vec![found]).await?.pop())
    }

    /// The filed state of `id`, or NOT_FOUND if it is gone.
    pub(crate) async fn read(
        &self,
        id: ExecutionId,
        location: Location,
    ) -> Result<ExecutionInfo, Status> {
        self.resolve_one(Found::Filed { id, location })
            .await?
            .ok_or_else(|| Status::not_found(format!("execution {id} not found")))
    }
}

fn live(found: Found) -> Option<ExecutionInfo> {
    match found {
        Found::Live(info) => Some(info),
        Found::Filed { .. } => None,
    }
}

fn read_one(
    reader: &dyn HistoryReader,
    id: ExecutionId,
    location: Location,
) -> Result<Option<ExecutionInfo>, Status> {
    let done = reader.read(id, location).map_err(|error| {
        tracing::error!(%id, %error, "cannot read a finished execution from the history");
        Status::internal(format!(
            "cannot read execution {id} from the history: {error}"
        ))
    })?;
    Ok(done.map(info_of))
}

/// A finished execution as the API shows it.
pub(crate) fn info_of(done: FinishedExecution) -> ExecutionInfo {
    let FinishedExecution { record, finished } = done;
    ExecutionInfo {
        execution_id: record.id.to_string(),
        function_id: record.function_id,
        status: finished.terminal.status().as_str().to_string(),
        output: finished.terminal.output().clone(),
        error: finished.terminal.error().to_string(),
        attempt: finished.attempt,
        worker_id: finished.worker_id,
        created_at_us: record.created_at_us,
        started_at_us: finished.started_at_us,
        finished_at_us: finished.finished_at_us,
        logs: finished.logs,
    }
}
