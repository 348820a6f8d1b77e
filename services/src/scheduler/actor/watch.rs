//! Following executions: a watch gets the current state, then every change
//! until a terminal one.

use super::*;

/// A watch as the API hands it out: the execution it follows (so the stream
/// can report its own end) and the updates. A finished execution already
/// filed in the history has no updates to come: its one state is read from
/// `filed` by the API.
#[derive(Debug)]
pub(crate) struct Watch {
    pub(crate) id: ExecutionId,
    pub(crate) updates: mpsc::UnboundedReceiver<ExecutionInfo>,
    pub(crate) filed: Option<Location>,
}

impl Actor {
    pub(super) fn watch(&mut self, id: &str) -> Result<Watch, Status> {
        let id = parse_execution_id(id)?;
        self.follow(id)
    }

    /// A watch on `id`: its current state, then every change until a terminal one.
    pub(super) fn follow(&mut self, id: ExecutionId) -> Result<Watch, Status> {
        let info = match self.find(id) {
            None => return Err(Status::not_found(format!("execution {id} not found"))),
            Some(Found::Filed { id, location }) => {
                // The sender goes now: the stream ends after the filed state.
                let (_, updates) = mpsc::unbounded_channel();
                return Ok(Watch {
                    id,
                    updates,
                    filed: Some(location),
                });
            }
            Some(Found::Live(info)) => info,
        };
        let terminal = ExecStatus::parse(&info.status).is_some_and(ExecStatus::is_terminal);
        let (sender, updates) = mpsc::unbounded_channel();
        if !terminal && !self.shutting_down {
            self.watchers.add(id, sender.clone())?;
        }
        let _ = sender.send(info);
        Ok(Watch {
            id,
            updates,
            filed: None,
        })
    }

    /// Sends the execution's current state to its watchers; a terminal state
    /// ends their streams.
    pub(super) fn notify(&mut self, id: ExecutionId) {
        if !self.watchers.is_watched(id) {
            return;
        }
        let Some(info) = self.info(id) else {
            self.watchers.remove(id);
            return;
        };
        let terminal = ExecStatus::parse(&info.status).is_some_and(ExecStatus::is_terminal);
        self.watchers.send(id, &info, terminal);
    }
}
