//! Where a call goes: to the actor of the term this scheduler leads, or
//! back to the caller with the address of the scheduler that leads.
//!
//! A scheduler on the embedded store always leads ([`Route::fixed`]). One of
//! several on a shared database leads only while it holds the lease; the
//! rest are standbys, and their answer to every call is UNAVAILABLE with
//! "not the leader" and, when they know it, the leader's address in the
//! `taskforge-leader` metadata, which clients follow
//! ([`crate::net::LeaderChannel`]).

use tokio::sync::{mpsc, watch};
use tonic::Status;

use super::actor::Command;
use super::filed::History;

/// The metadata key of the leader's address in a standby's answer.
pub const LEADER_HEADER: &str = "taskforge-leader";

/// What a scheduler is doing now.
#[derive(Clone, Debug)]
pub(crate) enum Term {
    /// Leading: calls go to this actor.
    Leading(Leading),
    /// Not leading; `leader` is where the current leader says it is, if known.
    Standby { leader: Option<String> },
}

#[derive(Clone, Debug)]
pub(crate) struct Leading {
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) history: History,
}

#[derive(Clone, Debug)]
pub(crate) enum Route {
    Fixed(Leading),
    Elected(watch::Receiver<Term>),
}

impl Route {
    /// The term's actor, or the answer a standby gives.
    pub(crate) fn leading(&self) -> Result<Leading, Status> {
        match self {
            Route::Fixed(leading) => Ok(leading.clone()),
            Route::Elected(term) => match &*term.borrow() {
                Term::Leading(leading) => Ok(leading.clone()),
                Term::Standby { leader } => Err(not_the_leader(leader.as_deref())),
            },
        }
    }
}

/// UNAVAILABLE, naming the leader when known.
pub(crate) fn not_the_leader(leader: Option<&str>) -> Status {
    let Some(leader) = leader else {
        return Status::unavailable("not the leader; no scheduler leads right now");
    };
    let mut status = Status::unavailable(format!("not the leader; the leader is {leader}"));
    if let Ok(value) = leader.parse() {
        status.metadata_mut().insert(LEADER_HEADER, value);
    }
    status
}
