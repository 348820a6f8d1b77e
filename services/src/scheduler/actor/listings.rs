//! What the actor answers about its state: executions, functions, workers
//! and counters, as clients may see them (a terminal state not yet durable
//! shows as the state before it).

use std::cell::Cell;
use std::ops::Bound;

use super::*;

/// What the actor finds for one page of a listing (see
/// [`Actor::list_executions`]); the API reads the filed executions and
/// makes the page.
#[derive(Debug)]
pub(crate) struct Listing {
    pub(crate) found: Vec<Found>,
    /// More executions match beyond `found`.
    pub(crate) more_matches: bool,
    /// The last of `found`: where the next page starts, even if retention
    /// forgets some of `found` before they are read.
    pub(crate) last_found: Option<ExecutionId>,
    /// The scan reached its bound here, with executions left beyond it.
    pub(crate) scan_stopped_at: Option<ExecutionId>,
    /// The most a page may show.
    pub(crate) limit: usize,
}

/// Most executions one listing looks at (see `list_executions`).
const SCAN_LIMIT: usize = 4096;

impl Actor {
    pub(super) fn list_functions(&self, request: &ListFunctionsRequest) -> ListFunctionsResponse {
        let limit = match request.limit as usize {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let from = match request.after_function_id.as_str() {
            "" => Bound::Unbounded,
            after => Bound::Excluded(after),
        };
        let candidates = self
            .functions
            .range::<str, _>((from, Bound::Unbounded))
            .map(|(_, function)| function.proto.clone());
        let page = Page::fill(candidates, limit, self.options.response_budget());
        let next_after_function_id = match (page.more, page.items.last()) {
            (true, Some(last)) => last.function_id.clone(),
            _ => String::new(),
        };
        ListFunctionsResponse {
            functions: page.items,
            next_after_function_id,
        }
    }

    /// The execution as clients may see it now, or where to read it.
    pub(super) fn find(&self, id: ExecutionId) -> Option<Found> {
        match self.listed.get(&id) {
            Some(Some(location)) => Some(Found::Filed {
                id,
                location: *location,
            }),
            Some(None) => self.info(id).map(Found::Live),
            // Not held: if the store keeps the history, it may be there.
            None if self.history_in_store => Some(Found::Filed {
                id,
                location: Location::default(),
            }),
            None => None,
        }
    }

    /// The status clients may see of execution `id`, which the core has in
    /// `status`: a terminal state only once the actor has carried it out
    /// (the core ends executions mid-turn; their outputs come at the turn's
    /// end) and its record is durable.
    pub(super) fn shown_status(&self, id: ExecutionId, status: ExecStatus) -> ExecStatus {
        if !status.is_terminal() {
            return status;
        }
        match self.meta.get(&id) {
            Some(meta) if meta.terminal.is_none() || self.unpublished.contains_key(&id) => {
                meta.shown
            }
            _ => status,
        }
    }

    /// A live execution (not filed yet) as clients may see it now.
    pub(super) fn info(&self, id: ExecutionId) -> Option<ExecutionInfo> {
        let view = self.core.execution(id)?;
        let meta = self.meta.get(&id)?;
        let mut info = ExecutionInfo {
            execution_id: id.to_string(),
            function_id: view.function.to_string(),
            status: view.status.as_str().to_string(),
            attempt: view.attempt,
            worker_id: meta.worker_id.as_deref().unwrap_or_default().to_string(),
            created_at_us: meta.created_at_us,
            started_at_us: meta.started_at_us,
            ..Default::default()
        };
        let shown = self.shown_status(id, view.status);
        info.status = shown.as_str().to_string();
        if let (true, Some(terminal)) = (shown.is_terminal(), &meta.terminal) {
            info.output = terminal.output().clone();
            info.error = terminal.error().to_string();
            info.finished_at_us = meta.finished_at_us;
            info.logs = meta.logs.as_deref().unwrap_or_default().to_string();
        }
        Some(info)
    }

    /// The executions a page of the listing may show, in id order: up to
    /// `limit` matches, the live ones filled in, the filed ones to be read
    /// by the caller (which also cuts the page to the message limit).
    pub(super) fn list_executions(
        &self,
        request: &ListExecutionsRequest,
    ) -> Result<Listing, Status> {
        let status = match request.status.as_str() {
            "" => None,
            text => Some(ExecStatus::parse(text).ok_or_else(|| {
                Status::invalid_argument(format!(
                    "status {text:?} is not one of PENDING, RUNNING, COMPLETED, FAILED, TIMED_OUT, CANCELLED"
                ))
            })?),
        };
        let after = match request.after_execution_id.as_str() {
            "" => None,
            text => Some(ExecutionId::parse(text).ok_or_else(|| {
                Status::invalid_argument(format!(
                    "after_execution_id {text:?} is not an execution id"
                ))
            })?),
        };
        let limit = match request.limit as usize {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        // Walk the id index from the cursor, looking at no more than
        // SCAN_LIMIT executions: a filter that matches little ends the page
        // early (with a cursor) instead of holding the actor.
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        let last_scanned = Cell::new(None);
        let mut matches = self
            .listed
            .range((from, Bound::Unbounded))
            .take(SCAN_LIMIT)
            .inspect(|&(&id, _)| last_scanned.set(Some(id)))
            .filter(|&(&id, _)| {
                let Some(view) = self.core.execution(id) else {
                    return false;
                };
                let shown = self.shown_status(id, view.status);
                (request.function_id.is_empty() || **view.function == *request.function_id)
                    && status.is_none_or(|wanted| shown == wanted)
            })
            .filter_map(|(&id, _)| Some((id, self.find(id)?)));
        let mut last_found = None;
        let found: Vec<Found> = matches
            .by_ref()
            .take(limit)
            .map(|(id, found)| {
                last_found = Some(id);
                found
            })
            .collect();
        let more_matches = matches.next().is_some();
        // Where the scan stopped at its bound with executions left beyond it.
        let scan_stopped_at = last_scanned.get().filter(|&last| {
            !more_matches
                && self
                    .listed
                    .range((Bound::Excluded(last), Bound::Unbounded))
                    .next()
                    .is_some()
        });
        Ok(Listing {
            found,
            more_matches,
            last_found,
            scan_stopped_at,
            limit,
        })
    }

    pub(super) fn list_workers(&self) -> Vec<WorkerInfo> {
        self.core
            .workers()
            .map(|worker| WorkerInfo {
                worker_id: worker.id.to_string(),
                pool_size: worker.pool_size,
                in_flight: worker.in_flight,
                reported_running: worker.reported_running,
                draining: worker.draining,
                runtimes: self
                    .sessions
                    .get(&worker.session)
                    .map(|session| session.runtimes.clone())
                    .unwrap_or_default(),
                quarantined: worker.quarantined,
                timeouts_in_a_row: worker.timeouts_in_a_row,
                connected_at_us: self.wall_of(worker.connected_at),
                last_heartbeat_at_us: self.wall_of(worker.last_heard),
            })
            .collect()
    }

    pub(super) fn stats(&self) -> ClusterStats {
        let stats = self.core.stats();
        // Executions finished but not yet durable still count where clients see them.
        let (mut pending, mut running) = (stats.pending as u64, stats.running as u64);
        let (mut completed, mut failed, mut timed_out, mut cancelled) = (
            stats.completed as u64,
            stats.failed as u64,
            stats.timed_out as u64,
            stats.cancelled as u64,
        );
        for (id, shown) in &self.unpublished {
            if let Some(view) = self.core.execution(*id) {
                match view.status {
                    ExecStatus::Completed => completed -= 1,
                    ExecStatus::Failed => failed -= 1,
                    ExecStatus::TimedOut => timed_out -= 1,
                    ExecStatus::Cancelled => cancelled -= 1,
                    ExecStatus::Pending | ExecStatus::Running => continue,
                }
                match shown {
                    ExecStatus::Running => running += 1,
                    _ => pending += 1,
                }
            }
        }
        ClusterStats {
            workers: stats.workers as u32,
            capacity: stats.capacity as u32,
            in_flight: stats.in_flight as u32,
            queued: stats.pending as u32,
            pending,
            running,
            completed,
            failed,
            timed_out,
            cancelled,
            queue_limit: stats.queue_limit as u32,
            watchers: self.watchers.len() as u64,
            quarantined_workers: stats.quarantined as u32,
            queued_by_runtime: self
                .core
                .queued_by_runtime()
                .map(|(runtime, count)| (runtime.to_string(), count as u32))
                .collect(),
            accepted_by_runtime: self
                .accepted_by_runtime
                .iter()
                .map(|(runtime, &count)| (runtime.clone(), count))
                .collect(),
        }
    }
}
