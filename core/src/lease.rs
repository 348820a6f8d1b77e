//! Leadership among schedulers sharing one store: a lease with an epoch.
//!
//! Any number of schedulers may point at one database; one leads. The lease
//! lives in the store as a row (epoch, holder, expiry on the store's clock),
//! and the store grants it atomically: an `Acquire` succeeds only when the
//! lease has expired (the new term gets the next epoch), a `Renew` only while
//! the caller still holds its epoch. The epoch is a fencing token: every
//! write the leader commits checks it, so a deposed leader (paused,
//! partitioned, slow) can never commit again once a newer term began.
//!
//! This machine decides, on one scheduler, when to ask for the lease, when
//! to renew it, and — the part fencing alone cannot give — until when it may
//! act as leader at all. A grant lasts `duration` from the moment the store
//! made it, and the store made it after the request left, so the request's
//! send time plus `duration` is a bound the grant cannot outlive; the leader
//! stops acting `margin` before it (clock-rate error, scheduling delay).
//! Nothing here reads a clock: time comes in with every call, as elsewhere
//! in the core.
//!
//! Inputs: [`Lease::granted`], [`Lease::refused`], [`Lease::failed`] (what the
//! store answered to the request [`Lease::poll_request`] handed out, matched
//! by [`RequestId`]), [`Lease::fenced`] (a write was refused for a stale epoch)
//! and [`Lease::handle_timeout`]. Outputs: requests to send, and
//! [`LeaseEvent`]s. [`Lease::writable_epoch`] says whether this scheduler may
//! act as leader now, and with which epoch its writes must be fenced.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use crate::time::Instant;

/// Timings of the lease; see the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseConfig {
    /// How long a grant lasts on the store's clock: a dead leader is
    /// replaced this long after its last renewal, at most.
    pub duration: Duration,
    /// How often the leader renews; well inside `duration`, so that a
    /// renewal or two may fail without losing the lease.
    pub renew_every: Duration,
    /// How often a scheduler that does not lead asks whether the lease
    /// expired (and after a request that got no answer).
    pub retry_every: Duration,
    /// The leader stops acting this long before its grant could expire.
    pub margin: Duration,
}

impl Default for LeaseConfig {
    /// A dead leader replaced within 5 s: the lease lasts 4 s, standbys ask
    /// every 500 ms, the leader renews every second.
    fn default() -> Self {
        LeaseConfig {
            duration: Duration::from_secs(4),
            renew_every: Duration::from_secs(1),
            retry_every: Duration::from_millis(500),
            margin: Duration::from_millis(500),
        }
    }
}

/// Tells the answer to one request from the answers to earlier ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// What to ask the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseRequest {
    /// Take the lease if it expired, as a new term (the next epoch).
    Acquire { request: RequestId },
    /// Extend the term of `epoch`, if it is still the store's.
    Renew { request: RequestId, epoch: u64 },
}

impl LeaseRequest {
    pub fn id(&self) -> RequestId {
        match *self {
            LeaseRequest::Acquire { request } | LeaseRequest::Renew { request, .. } => request,
        }
    }
}

/// A change of role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseEvent {
    /// This scheduler leads, for the term `epoch`: restore the state from
    /// the store and serve.
    BecameLeader { epoch: u64 },
    /// It no longer leads: stop acting (and drop what the term held).
    SteppedDown { epoch: u64, reason: StepDown },
}

/// Why a leader stepped down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepDown {
    /// No renewal got through before the grant could expire.
    Expired,
    /// The store said another term began.
    Deposed { by_epoch: u64 },
    /// A write was refused for a stale epoch.
    Fenced,
}

impl fmt::Display for StepDown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StepDown::Expired => f.write_str("the lease could not be renewed in time"),
            StepDown::Deposed { by_epoch } => write!(f, "term {by_epoch} began elsewhere"),
            StepDown::Fenced => f.write_str("a write was refused for a stale epoch"),
        }
    }
}

/// Where this scheduler stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Standby,
    /// Leads the term `epoch` until `acts_until`.
    Leader {
        epoch: u64,
        acts_until: Instant,
    },
}

#[derive(Clone, Copy, Debug)]
struct Outstanding {
    request: LeaseRequest,
    sent_at: Instant,
}

/// The lease, as one scheduler sees it. See the module documentation.
#[derive(Debug)]
pub struct Lease {
    config: LeaseConfig,
    role: Role,
    /// At most one request is out at a time; its answer, or its loss, comes
    /// before the next.
    outstanding: Option<Outstanding>,
    /// When to send the next request.
    next_request: Instant,
    next_id: u64,
    /// The newest epoch heard of: a grant of an older one is impossible
    /// from a correct store, and is refused here too.
    newest_epoch: u64,
    events: VecDeque<LeaseEvent>,
}

impl Lease {
    /// A standby that asks for the lease at once.
    pub fn new(now: Instant, config: LeaseConfig) -> Lease {
        Lease {
            config,
            role: Role::Standby,
            outstanding: None,
            next_request: now,
            next_id: 1,
            newest_epoch: 0,
            events: VecDeque::new(),
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// The epoch to fence writes with, while this scheduler may act as
    /// leader at `now`; `None` otherwise.
    pub fn writable_epoch(&self, now: Instant) -> Option<u64> {
        match self.role {
            Role::Leader { epoch, acts_until } if now < acts_until => Some(epoch),
            _ => None,
        }
    }

    /// The next request to send, if one is due; the store's answer comes back
    /// through [`granted`](Self::granted), [`refused`](Self::refused) or
    /// [`failed`](Self::failed).
    pub fn poll_request(&mut self, now: Instant) -> Option<LeaseRequest> {
        self.handle_timeout(now);
        if self.outstanding.is_some() || now < self.next_request {
            return None;
        }
        let id = RequestId(self.next_id);
        self.next_id += 1;
        let request = match self.role {
            Role::Leader { epoch, .. } => LeaseRequest::Renew { request: id, epoch },
            Role::Standby => LeaseRequest::Acquire { request: id },
        };
        self.outstanding = Some(Outstanding {
            request,
            sent_at: now,
        });
        Some(request)
    }

    /// The store granted `request`, for the term `epoch`.
    pub fn granted(&mut self, now: Instant, request: RequestId, epoch: u64) {
        let Some(sent) = self.answer(request) else {
            return;
        };
        if epoch < self.newest_epoch {
            // Older than a term already heard of: not a grant to act on.
            self.retry(now);
            return;
        }
        let acts_until = sent.sent_at + self.config.duration.saturating_sub(self.config.margin);
        if now >= acts_until {
            // It arrived too late to act on: ask again at once.
            self.newest_epoch = epoch;
            self.step_down(StepDown::Expired);
            self.next_request = now;
            return;
        }
        match (sent.request, self.role) {
            (LeaseRequest::Renew { epoch: held, .. }, Role::Leader { epoch: leading, .. })
                if held == epoch && leading == epoch =>
            {
                self.role = Role::Leader { epoch, acts_until };
            }
            (LeaseRequest::Acquire { .. }, Role::Standby) => {
                self.role = Role::Leader { epoch, acts_until };
                self.events.push_back(LeaseEvent::BecameLeader { epoch });
            }
            // An answer that does not fit the role (a renewal granted after
            // this scheduler stepped down): acting on it could overlap a
            // newer term. Let the lease lapse and start over.
            _ => {
                self.newest_epoch = self.newest_epoch.max(epoch);
                self.retry(now);
                return;
            }
        }
        self.newest_epoch = epoch;
        self.next_request = sent.sent_at + self.config.renew_every;
    }

    /// The store refused `request`: the lease is held, in the term `epoch`.
    pub fn refused(&mut self, now: Instant, request: RequestId, epoch: u64) {
        if self.answer(request).is_none() {
            return;
        }
        self.newest_epoch = self.newest_epoch.max(epoch);
        if let Role::Leader { .. } = self.role {
            self.step_down(StepDown::Deposed { by_epoch: epoch });
        }
        self.retry(now);
    }

    /// `request` got no answer (the store is unreachable, or the answer was
    /// lost): whatever it did, it is over. A leader keeps acting until its
    /// grant could expire, renewing meanwhile.
    pub fn failed(&mut self, now: Instant, request: RequestId) {
        if self.answer(request).is_some() {
            self.retry(now);
        }
    }

    /// A write fenced with `epoch` was refused: a newer term began. The
    /// leader of `epoch` steps down at once.
    pub fn fenced(&mut self, now: Instant, epoch: u64) {
        if let Role::Leader { epoch: leading, .. } = self.role {
            if leading == epoch {
                self.newest_epoch = self.newest_epoch.max(epoch + 1);
                self.step_down(StepDown::Fenced);
                self.retry(now);
            }
        }
    }

    /// Steps down if the grant could have expired by `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Role::Leader { acts_until, .. } = self.role {
            if now >= acts_until {
                self.step_down(StepDown::Expired);
            }
        }
    }

    /// When to call [`poll_request`](Self::poll_request) or
    /// [`handle_timeout`](Self::handle_timeout) next.
    pub fn poll_timeout(&self) -> Instant {
        let request = match self.outstanding {
            Some(_) => None,
            None => Some(self.next_request),
        };
        let expiry = match self.role {
            Role::Leader { acts_until, .. } => Some(acts_until),
            Role::Standby => None,
        };
        match (request, expiry) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            // A request is out: its answer or loss wakes the caller, and a
            // standby has nothing else to wait for.
            (None, None) => Instant::from_nanos(u64::MAX),
        }
    }

    pub fn poll_event(&mut self) -> Option<LeaseEvent> {
        self.events.pop_front()
    }

    /// Takes the outstanding request if `request` is it.
    fn answer(&mut self, request: RequestId) -> Option<Outstanding> {
        match self.outstanding {
            Some(sent) if sent.request.id() == request => self.outstanding.take(),
            _ => None,
        }
    }

    fn retry(&mut self, now: Instant) {
        self.next_request = now + self.config.retry_every;
    }

    fn step_down(&mut self, reason: StepDown) {
        if let Role::Leader { epoch, .. } = self.role {
            self.role = Role::Standby;
            self.events
                .push_back(LeaseEvent::SteppedDown { epoch, reason });
        }
    }
}
