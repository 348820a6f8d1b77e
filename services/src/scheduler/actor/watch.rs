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

/// What a watch asked for beyond the scheduler's watch caps gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AtTheCaps {
    /// RESOURCE_EXHAUSTED: the caller may retry later.
    Refuse,
    /// The current state, and the stream ends after it: for the watch of an
    /// execution just triggered (`TriggerAndWatchExecution`), whose caller
    /// must learn the id of what it started even when it cannot follow it.
    CurrentStateOnly,
}

impl Actor {
    pub(super) fn watch(&mut self, id: &str) -> Result<Watch, Status> {
        let id = parse_execution_id(id)?;
        self.follow(id, AtTheCaps::Refuse)
    }

    /// A watch on `id`: its current state, then every change until a terminal
    /// one. At the watch caps, `at_the_caps` says what happens.
    pub(super) fn follow(
        &mut self,
        id: ExecutionId,
        at_the_caps: AtTheCaps,
    ) -> Result<Watch, Status> {
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
            match (self.watchers.add(id, sender.clone()), at_the_caps) {
                (Ok(()), _) => {}
                (Err(refused), AtTheCaps::Refuse) => return Err(refused),
                // The stream carries the current state and ends after it.
                (Err(_), AtTheCaps::CurrentStateOnly) => {}
            }
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
