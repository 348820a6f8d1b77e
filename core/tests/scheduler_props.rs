//! Property tests: the scheduler driven by random interleavings of workers
//! connecting (each running some runtimes, or all), draining, leaving, going
//! silent and reconnecting under the same id; submits in either of two
//! runtimes; results that are late, duplicated, from a stale attempt or from the
//! wrong worker; cancels; workers coming back listing attempts they still hold
//! (their own, stale ones, others' and unknown ones), to be adopted or aborted;
//! and clock advances. After every step the harness checks the scheduler
//! against a shadow it keeps from the scheduler's outputs alone.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;
use support::*;
use taskforge_core::scheduler::{
    AbortReason, Backoff, Capabilities, ConnectError, Output, ResultDisposition, Retention,
    Scheduler, SchedulerConfig, SubmitError,
};
use taskforge_core::{ExecutionId, Instant, Outcome, Policy, SessionId, Status, Terminal};

#[derive(Clone, Debug)]
enum Op {
    Connect {
        name: u8,
        pool: u32,
        runs: Runs,
    },
    /// Connects listing as held the attempts of these dispatches (indexes
    /// into every dispatch so far; `true`: the next attempt instead, as if
    /// its dispatch's record had been lost), and one unknown to the
    /// scheduler.
    Return {
        name: u8,
        pool: u32,
        held: Vec<(usize, bool)>,
        unknown: bool,
    },
    Disconnect {
        pick: usize,
    },
    Drain {
        pick: usize,
    },
    Heartbeat {
        pick: usize,
    },
    Submit {
        runtime: &'static str,
        max_attempts: u32,
        timeout_ms: u64,
        start_within_ms: Option<u64>,
    },
    Result {
        pick: usize,
        twist: Twist,
        verdict: Verdict,
    },
    Cancel {
        pick: usize,
    },
    Advance {
        ms: u64,
        heartbeats: bool,
    },
}

/// The runtimes executions are submitted in.
const RUNTIMES: [&str; 2] = ["a", "b"];

/// What a connecting worker announces it runs.
#[derive(Clone, Copy, Debug)]
enum Runs {
    /// Announced nothing: runs everything.
    Any,
    A,
    B,
    Both,
}

impl Runs {
    fn capabilities(self) -> Capabilities {
        match self {
            Runs::Any => Capabilities::Any,
            Runs::A => Capabilities::only(["a"]),
            Runs::B => Capabilities::only(["b"]),
            Runs::Both => Capabilities::only(RUNTIMES),
        }
    }
}

fn runs() -> impl Strategy<Value = Runs> {
    prop_oneof![
        Just(Runs::Any),
        Just(Runs::A),
        Just(Runs::B),
        Just(Runs::Both),
    ]
}

/// What a worker says of an attempt it finished.
#[derive(Clone, Copy, Debug)]
enum Verdict {
    Succeeded,
    Failed,
    TimedOut,
}

fn verdict() -> impl Strategy<Value = Verdict> {
    prop_oneof![
        4 => Just(Verdict::Succeeded),
        1 => Just(Verdict::Failed),
        1 => Just(Verdict::TimedOut),
    ]
}

/// How a reported result departs from the dispatch it answers.
#[derive(Clone, Copy, Debug)]
enum Twist {
    AsSent,
    WrongSession,
    OlderAttempt,
    NewerAttempt,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0u8..4, 1u32..4, runs()).prop_map(|(name, pool, runs)| Op::Connect { name, pool, runs }),
        2 => (
            0u8..4,
            1u32..4,
            proptest::collection::vec((any::<usize>(), proptest::bool::weighted(0.2)), 0..4),
            any::<bool>(),
        )
            .prop_map(|(name, pool, held, unknown)| Op::Return { name, pool, held, unknown }),
        1 => any::<usize>().prop_map(|pick| Op::Disconnect { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Drain { pick }),
        2 => any::<usize>().prop_map(|pick| Op::Heartbeat { pick }),
        6 => (
            proptest::sample::select(&RUNTIMES[..]),
            1u32..4,
            100u64..5000,
            proptest::option::of(0u64..8000),
        )
            .prop_map(|(runtime, max_attempts, timeout_ms, start_within_ms)| Op::Submit {
                runtime,
                max_attempts,
                timeout_ms,
                start_within_ms,
            }
        ),
        6 => (any::<usize>(), twist(), verdict())
            .prop_map(|(pick, twist, verdict)| Op::Result { pick, twist, verdict }),
        1 => any::<usize>().prop_map(|pick| Op::Cancel { pick }),
        3 => (0u64..2500, any::<bool>()).prop_map(|(ms, heartbeats)| Op::Advance { ms, heartbeats }),
    ]
}

fn twist() -> impl Strategy<Value = Twist> {
    prop_oneof![
        6 => Just(Twist::AsSent),
        1 => Just(Twist::WrongSession),
        1 => Just(Twist::OlderAttempt),
        1 => Just(Twist::NewerAttempt),
    ]
}

fn config() -> impl Strategy<Value = SchedulerConfig> {
    (
        (0u32..3, 1usize..40, 0u64..400, 1usize..60),
        (1u32..4, 0u64..2000),
    )
        .prop_map(
            |((prefetch, queue_limit, backoff_ms, max_count), (quarantine_after, takeover_ms))| {
                SchedulerConfig {
                    heartbeat_timeout: Duration::from_secs(3),
                    queue_limit,
                    prefetch,
                    retry_backoff: Backoff {
                        initial: Duration::from_millis(backoff_ms),
                        max: Duration::from_millis(backoff_ms * 4),
                    },
                    timeout_grace: Duration::from_millis(500),
                    retention: Retention {
                        max_age: Duration::from_secs(30),
                        max_count,
                    },
                    quarantine_after,
                    takeover_after: Duration::from_millis(takeover_ms),
                    // Nothing is restored here: adoption on reconnect only.
                    adoption_window: Duration::from_secs(3),
                }
            },
        )
}

/// A live session as the harness sees it from the outputs.
#[derive(Debug)]
struct ShadowWorker {
    name: u8,
    capabilities: Capabilities,
    capacity: u32,
    /// Attempts it came back holding (adopted or refused): these may take
    /// it over capacity, dispatches never do.
    brought: u32,
    draining: bool,
    quarantined: bool,
    in_flight: BTreeSet<(ExecutionId, u32)>,
}

impl ShadowWorker {
    fn free(&self) -> u32 {
        if self.draining || self.quarantined {
            0
        } else {
            self.capacity.saturating_sub(self.in_flight.len() as u32)
        }
    }

    /// Could take an execution of `runtime` now.
    fn takes(&self, runtime: &str) -> bool {
        self.capabilities.runs(runtime) && self.free() > 0
    }
}

struct Harness {
    s: Scheduler,
    prefetch: u32,
    now: Instant,
    next_session: u64,
    next_execution: u64,
    /// Every session ever opened, live or not, to pick stale ones too.
    sessions: Vec<SessionId>,
    live: BTreeMap<SessionId, ShadowWorker>,
    /// Every dispatch ever made, to answer (or misanswer) later.
    sent: Vec<(SessionId, ExecutionId, u32)>,
    policies: BTreeMap<ExecutionId, Policy>,
    runtimes: BTreeMap<ExecutionId, &'static str>,
    /// Pending executions that are not running, with when their retry may
    /// start (none for one never dispatched): ready once that has passed.
    waiting: BTreeMap<ExecutionId, Option<Instant>>,
    /// Executions put back in line after a lost attempt: they queue ahead of
    /// everything submitted.
    requeued: BTreeSet<ExecutionId>,
    /// The latest attempt number of each execution.
    starts: BTreeMap<ExecutionId, u32>,
    /// The highest attempt number a worker was found holding and not
    /// allowed to keep: never given out again.
    taken: BTreeMap<ExecutionId, u32>,
    terminal: BTreeMap<ExecutionId, Terminal>,
    evicted: BTreeSet<ExecutionId>,
    /// Executions whose last attempt was lost while its session lives on (a
    /// scheduler-side timeout): their retry should go to another session.
    avoid: BTreeMap<ExecutionId, SessionId>,
    /// Lost attempts whose session still holds the slot until it answers.
    lingering: BTreeSet<(ExecutionId, u32)>,
    /// Attempts a returning worker listed that were not adopted: aborted,
    /// they hold a slot on that session until it answers.
    refused: BTreeSet<(SessionId, ExecutionId, u32)>,
}

impl Harness {
    fn new(config: SchedulerConfig) -> Harness {
        Harness {
            prefetch: config.prefetch,
            s: Scheduler::new(config),
            now: Instant::ZERO,
            next_session: 1,
            next_execution: 1,
            sessions: Vec::new(),
            live: BTreeMap::new(),
            sent: Vec::new(),
            policies: BTreeMap::new(),
            runtimes: BTreeMap::new(),
            waiting: BTreeMap::new(),
            requeued: BTreeSet::new(),
            starts: BTreeMap::new(),
            taken: BTreeMap::new(),
            terminal: BTreeMap::new(),
            evicted: BTreeSet::new(),
            avoid: BTreeMap::new(),
            lingering: BTreeSet::new(),
            refused: BTreeSet::new(),
        }
    }

    fn pick_session(&self, pick: usize) -> Option<SessionId> {
        (!self.sessions.is_empty()).then(|| self.sessions[pick % self.sessions.len()])
    }

    /// Waiting and not backing off: in its runtime's queue.
    fn ready(&self) -> impl Iterator<Item = ExecutionId> + '_ {
        self.waiting
            .iter()
            .filter(|(_, retry_at)| retry_at.is_none_or(|at| at <= self.now))
            .map(|(&id, _)| id)
    }

    /// Some live worker could take an execution of `runtime` now.
    fn has_room_for(&self, runtime: &str) -> bool {
        self.live.values().any(|w| w.takes(runtime))
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::Connect { name, pool, runs } => self.connect(name, pool, runs, &[])?,
            Op::Return {
                name,
                pool,
                ref held,
                unknown,
            } => {
                let mut holding: Vec<_> = held
                    .iter()
                    .filter(|_| !self.sent.is_empty())
                    .map(|&(pick, newer)| {
                        let (_, execution, attempt) = self.sent[pick % self.sent.len()];
                        (execution, attempt + u32::from(newer))
                    })
                    .collect();
                if unknown {
                    holding.push((ExecutionId(1_000_000), 1));
                }
                // A worker holds one attempt of an execution at most.
                let mut seen = BTreeSet::new();
                holding.retain(|&(execution, _)| seen.insert(execution));
                self.connect(name, pool, Runs::Any, &holding)?;
            }
            Op::Disconnect { pick } => {
                if let Some(session) = self.pick_session(pick) {
                    let known = self.s.worker_disconnected(self.now, session);
                    prop_assert_eq!(known, self.live.contains_key(&session));
                    self.absorb()?;
                    prop_assert!(!self.live.contains_key(&session));
                }
            }
            Op::Drain { pick } => {
                if let Some(session) = self.pick_session(pick) {
                    let known = self.s.worker_draining(self.now, session);
                    prop_assert_eq!(known, self.live.contains_key(&session));
                    if let Some(w) = self.live.get_mut(&session) {
                        w.draining = true;
                    }
                    self.absorb()?;
                }
            }
            Op::Heartbeat { pick } => {
                if let Some(session) = self.pick_session(pick) {
                    let known = self.s.heartbeat(self.now, session, 0);
                    prop_assert_eq!(known, self.live.contains_key(&session));
                }
            }
            Op::Submit {
                runtime,
                max_attempts,
                timeout_ms,
                start_within_ms,
            } => {
                let id = self.next_execution;
                self.next_execution += 1;
                let policy = Policy {
                    max_attempts,
                    timeout: Duration::from_millis(timeout_ms),
                    schedule_to_start: start_within_ms.map(Duration::from_millis),
                };
                let pending_before = self.s.stats().pending;
                match self.s.submit(self.now, submission_in(runtime, id, policy)) {
                    Ok(()) => {
                        prop_assert!(pending_before < self.s.config().queue_limit);
                        self.policies.insert(ExecutionId(id), policy);
                        self.runtimes.insert(ExecutionId(id), runtime);
                        self.waiting.insert(ExecutionId(id), None);
                    }
                    Err(SubmitError::QueueFull { limit }) => {
                        prop_assert!(pending_before >= limit);
                        prop_assert!(self.s.execution(ExecutionId(id)).is_none());
                    }
                    Err(other) => return Err(TestCaseError::fail(other.to_string())),
                }
                self.absorb()?;
            }
            Op::Result {
                pick,
                twist,
                verdict,
            } => {
                if self.sent.is_empty() {
                    return Ok(());
                }
                let (mut session, execution, mut attempt) = self.sent[pick % self.sent.len()];
                match twist {
                    Twist::AsSent => {}
                    Twist::WrongSession => {
                        session = self.pick_session(pick / 7).unwrap_or(session);
                    }
                    Twist::OlderAttempt => attempt = attempt.saturating_sub(1),
                    Twist::NewerAttempt => attempt += 1,
                }
                self.report(session, execution, attempt, verdict)?;
            }
            Op::Cancel { pick } => {
                if self.policies.is_empty() {
                    return Ok(());
                }
                let id = ExecutionId(1 + (pick as u64 % self.policies.len() as u64));
                let before = self.s.execution(id).map(|v| v.status);
                match self.s.cancel(self.now, id) {
                    Ok(status) => {
                        prop_assert_eq!(Some(status), before);
                        prop_assert!(!status.is_terminal());
                    }
                    Err(_) => prop_assert!(before.is_none_or(Status::is_terminal)),
                }
                self.absorb()?;
            }
            Op::Advance { ms, heartbeats } => {
                self.advance(Duration::from_millis(ms), heartbeats)?;
            }
        }
        self.check()
    }

    /// Connects worker `w{name}` as a new session, holding `holding`.
    fn connect(
        &mut self,
        name: u8,
        pool: u32,
        runs: Runs,
        holding: &[(ExecutionId, u32)],
    ) -> Result<(), TestCaseError> {
        let session = SessionId(self.next_session);
        self.next_session += 1;
        self.sessions.push(session);
        let id = worker(&format!("w{name}"));
        let takeover_after = self.s.config().takeover_after;
        let holder = self
            .s
            .workers()
            .find(|view| *view.id == id)
            .map(|view| (view.session, view.last_heard));
        let capabilities = runs.capabilities();
        let expected = self.adoptable(name, holding);
        match self.s.worker_connected_holding(
            self.now,
            session,
            id,
            pool,
            capabilities.clone(),
            holding,
        ) {
            Ok(()) => {
                if let Some((_, last_heard)) = holder {
                    prop_assert!(
                        last_heard + takeover_after <= self.now,
                        "a live id was taken over"
                    );
                }
            }
            Err(ConnectError::IdInUse { session: old, .. }) => {
                let (held_by, last_heard) = holder.expect("refused for a free id");
                prop_assert_eq!(old, held_by);
                prop_assert!(last_heard + takeover_after > self.now);
                return Ok(());
            }
            Err(other) => return Err(TestCaseError::fail(other.to_string())),
        }
        // In the shadow before the outputs are read, so dispatches to
        // it are checked like any other; a replaced session is
        // reported lost before any dispatch.
        self.live.insert(
            session,
            ShadowWorker {
                name,
                capabilities,
                capacity: pool + self.prefetch,
                brought: 0,
                draining: false,
                quarantined: false,
                in_flight: BTreeSet::new(),
            },
        );
        let outputs = drain(&mut self.s);
        self.check_adoption(session, holding, &expected, &outputs)?;
        self.absorb_outputs(outputs)
    }

    /// Which of `holding` worker `w{name}` may keep, by the shadow: the
    /// latest attempt of an unfinished execution that waits for its retry
    /// (lost, not timed out by the scheduler), or that runs on the worker's
    /// own session about to be replaced.
    fn adoptable(&self, name: u8, holding: &[(ExecutionId, u32)]) -> BTreeSet<(ExecutionId, u32)> {
        holding
            .iter()
            .copied()
            .filter(|&(execution, attempt)| {
                let Some(policy) = self.policies.get(&execution) else {
                    return false;
                };
                let latest = self.starts.get(&execution).copied().unwrap_or(0);
                let taken = self.taken.get(&execution).copied().unwrap_or(0).max(latest);
                let known = attempt == latest && attempt > 0;
                // Newer than any number given out: its record was lost.
                let unrecorded = attempt > taken && attempt <= policy.max_attempts;
                if self.terminal.contains_key(&execution) || !(known || unrecorded) {
                    return false;
                }
                let waiting =
                    self.waiting.contains_key(&execution) && !self.avoid.contains_key(&execution);
                let on_own_session = self.s.execution(execution).is_some_and(|view| {
                    view.status == Status::Running
                        && view
                            .session
                            .is_some_and(|s| self.live.get(&s).is_some_and(|w| w.name == name))
                });
                // On its own old session, which this connection replaces: a
                // known attempt moves over; a newer one is adopted once the
                // old session's loss has put the execution back in line.
                waiting || on_own_session
            })
            .collect()
    }

    /// Every attempt listed got exactly one answer: adopted if the shadow
    /// says it may be kept (and it was not refused a connection), else
    /// aborted.
    fn check_adoption(
        &self,
        session: SessionId,
        holding: &[(ExecutionId, u32)],
        expected: &BTreeSet<(ExecutionId, u32)>,
        outputs: &[Output],
    ) -> Result<(), TestCaseError> {
        let mut answered = BTreeMap::new();
        for output in outputs {
            let (to, key, adopted) = match *output {
                Output::Adopted {
                    session,
                    execution,
                    attempt,
                } => (session, (execution, attempt), true),
                Output::Abort {
                    session,
                    execution,
                    attempt,
                    reason: AbortReason::NotAdopted,
                } => (session, (execution, attempt), false),
                _ => continue,
            };
            prop_assert_eq!(to, session, "answered on another session");
            prop_assert!(
                answered.insert(key, adopted).is_none(),
                "{key:?} answered twice"
            );
        }
        let listed: BTreeSet<_> = holding.iter().copied().collect();
        prop_assert_eq!(answered.keys().copied().collect::<BTreeSet<_>>(), listed);
        for (key, adopted) in answered {
            prop_assert_eq!(adopted, expected.contains(&key), "adoption of {:?}", key);
        }
        Ok(())
    }

    fn report(
        &mut self,
        session: SessionId,
        execution: ExecutionId,
        attempt: u32,
        verdict: Verdict,
    ) -> Result<(), TestCaseError> {
        let outcome = match verdict {
            Verdict::Succeeded => Outcome::Success(Bytes::from(format!("out-{}", execution.0))),
            Verdict::Failed => Outcome::Failure {
                error: "function failed".into(),
                output: Bytes::new(),
            },
            Verdict::TimedOut => Outcome::TimedOut {
                error: "timed out after 1s".into(),
            },
        };
        let held = self
            .live
            .get(&session)
            .is_some_and(|w| w.in_flight.contains(&(execution, attempt)));
        let was_running = self.s.execution(execution).is_some_and(|v| {
            v.status == Status::Running && v.session == Some(session) && v.attempt == attempt
        });
        let disposition = self
            .s
            .result(self.now, session, execution, attempt, outcome);
        // The shadow alone decides whether the report matched something in flight.
        match disposition {
            ResultDisposition::Stale => {
                prop_assert!(!held, "{:?} was in flight", (session, execution, attempt))
            }
            ResultDisposition::Accepted => prop_assert!(held && was_running),
            ResultDisposition::Released => prop_assert!(held && !was_running),
        }
        if held {
            self.live
                .get_mut(&session)
                .unwrap()
                .in_flight
                .remove(&(execution, attempt));
            // A refused copy answering leaves the session the attempt was
            // dispatched to still holding it.
            if !self.refused.remove(&(session, execution, attempt)) {
                self.lingering.remove(&(execution, attempt));
            }
        }
        self.absorb()
    }

    /// Moves time forward, stopping at every deadline on the way as a real
    /// caller would.
    fn advance(&mut self, by: Duration, heartbeats: bool) -> Result<(), TestCaseError> {
        let target = self.now + by;
        while let Some(at) = self.s.poll_timeout() {
            if at > target {
                break;
            }
            prop_assert!(
                at >= self.now,
                "deadline {at:?} in the past of {:?}",
                self.now
            );
            self.now = at;
            self.s.handle_timeout(at);
            self.absorb()?;
        }
        self.now = target;
        if heartbeats {
            let live: Vec<_> = self.live.keys().copied().collect();
            for session in live {
                prop_assert!(self.s.heartbeat(self.now, session, 0));
            }
        }
        self.s.handle_timeout(self.now);
        self.absorb()?;
        if let Some(next) = self.s.poll_timeout() {
            prop_assert!(
                next > self.now,
                "a deadline is still due after handle_timeout"
            );
        }
        Ok(())
    }

    /// Applies the scheduler's outputs to the shadow, checking each.
    fn absorb(&mut self) -> Result<(), TestCaseError> {
        let outputs = drain(&mut self.s);
        self.absorb_outputs(outputs)
    }

    fn absorb_outputs(&mut self, outputs: Vec<Output>) -> Result<(), TestCaseError> {
        for output in outputs {
            match output {
                Output::Adopted {
                    session,
                    execution,
                    attempt,
                } => {
                    prop_assert!(!self.terminal.contains_key(&execution));
                    let latest = self.starts.entry(execution).or_default();
                    prop_assert!(attempt >= *latest, "adopted an old attempt");
                    *latest = attempt;
                    // Moved over from the worker's own old session, if it
                    // ran there.
                    let name = self.live[&session].name;
                    for (&s, w) in self.live.iter_mut() {
                        if s != session && w.name == name {
                            w.in_flight.remove(&(execution, attempt));
                        }
                    }
                    self.waiting.remove(&execution);
                    self.avoid.remove(&execution);
                    let w = self.live.get_mut(&session).unwrap();
                    prop_assert!(w.in_flight.insert((execution, attempt)));
                    w.brought += 1;
                }
                Output::Abort {
                    session,
                    execution,
                    attempt,
                    reason: AbortReason::NotAdopted,
                } => {
                    let w = self.live.get_mut(&session).unwrap();
                    prop_assert!(w.in_flight.insert((execution, attempt)));
                    w.brought += 1;
                    self.refused.insert((session, execution, attempt));
                    let live = self.policies.get(&execution).is_some_and(|policy| {
                        attempt <= policy.max_attempts && !self.terminal.contains_key(&execution)
                    });
                    if live {
                        let taken = self.taken.entry(execution).or_default();
                        *taken = (*taken).max(attempt);
                    }
                }
                Output::Dispatch(d) => {
                    let taken = self.taken.get(&d.execution).copied().unwrap_or(0);
                    let starts = self.starts.entry(d.execution).or_default();
                    *starts = (*starts).max(taken) + 1;
                    prop_assert_eq!(
                        d.attempt,
                        *starts,
                        "attempt numbers count up, skipping taken ones"
                    );
                    prop_assert!(d.attempt <= self.policies[&d.execution].max_attempts);
                    prop_assert!(
                        self.ready().any(|id| id == d.execution),
                        "dispatched while not in line"
                    );
                    self.check_dispatch(d.session, d.execution)?;
                    self.waiting.remove(&d.execution);
                    self.sent.push((d.session, d.execution, d.attempt));
                    self.live
                        .get_mut(&d.session)
                        .unwrap()
                        .in_flight
                        .insert((d.execution, d.attempt));
                }
                Output::Abort {
                    session,
                    execution,
                    attempt,
                    ..
                } => {
                    let w = self.live.get(&session);
                    prop_assert!(w.is_some_and(|w| w.in_flight.contains(&(execution, attempt))));
                }
                Output::Requeued {
                    execution,
                    lost_attempt,
                    retry_at,
                } => {
                    prop_assert!(!self.terminal.contains_key(&execution));
                    self.waiting.insert(execution, Some(retry_at));
                    self.requeued.insert(execution);
                    let holder = self
                        .live
                        .iter()
                        .find(|(s, w)| {
                            w.in_flight.contains(&(execution, lost_attempt))
                                && !self.refused.contains(&(**s, execution, lost_attempt))
                        })
                        .map(|(s, _)| *s);
                    if let Some(session) = holder {
                        self.avoid.insert(execution, session);
                        self.lingering.insert((execution, lost_attempt));
                    }
                }
                Output::Quarantined { session, .. } => {
                    let w = self.live.get_mut(&session);
                    prop_assert!(w.as_ref().is_some_and(|w| !w.quarantined));
                    w.unwrap().quarantined = true;
                }
                Output::QuarantineLifted { session, .. } => {
                    let w = self.live.get_mut(&session);
                    prop_assert!(
                        w.as_ref()
                            .is_some_and(|w| w.quarantined && w.in_flight.is_empty()),
                        "quarantine lifted while work is unanswered"
                    );
                    w.unwrap().quarantined = false;
                }
                Output::Finished {
                    execution,
                    terminal,
                } => {
                    prop_assert!(
                        !self.terminal.contains_key(&execution),
                        "{execution:?} finished twice"
                    );
                    self.terminal.insert(execution, terminal);
                    self.waiting.remove(&execution);
                }
                Output::WorkerLost { session, .. } => {
                    prop_assert!(self.live.remove(&session).is_some());
                }
                Output::Evicted { execution } => {
                    prop_assert!(self.terminal.contains_key(&execution), "evicted while live");
                    self.evicted.insert(execution);
                }
            }
        }
        Ok(())
    }

    /// A dispatch of `execution` to `session`, against the shadow as it was
    /// just before it.
    fn check_dispatch(
        &mut self,
        session: SessionId,
        execution: ExecutionId,
    ) -> Result<(), TestCaseError> {
        let runtime = self.runtimes[&execution];
        let avoid = self.avoid.remove(&execution);
        let Some(w) = self.live.get(&session) else {
            return Err(TestCaseError::fail(format!(
                "dispatch to {session}, which is not connected"
            )));
        };
        prop_assert!(
            w.capabilities.runs(runtime),
            "{execution:?} in {runtime} went to a worker that does not run it"
        );
        prop_assert!(
            w.free() > 0,
            "dispatch to a full, draining or quarantined worker"
        );
        // Among the workers that run the runtime: away from the session its
        // last attempt timed out on, unless no other has room; then the most
        // free slots, ties to the older session.
        let others_free = self
            .live
            .iter()
            .any(|(s, w)| Some(*s) != avoid && w.takes(runtime));
        let eligible = |s: &SessionId, w: &ShadowWorker| {
            w.takes(runtime) && (!others_free || Some(*s) != avoid)
        };
        let best = self
            .live
            .iter()
            .filter(|(s, w)| eligible(s, w))
            .map(|(_, w)| w.free())
            .max()
            .unwrap();
        prop_assert_eq!(w.free(), best, "not the least-loaded capable worker");
        let first_best = self
            .live
            .iter()
            .find(|(s, w)| eligible(s, w) && w.free() == best)
            .map(|(s, _)| *s);
        prop_assert_eq!(first_best, Some(session), "tie not broken by session");
        // Readiness order, across runtimes too: an execution that never lost
        // an attempt goes only when nothing that a worker could take now was
        // ready before it (a retry, or an earlier submission).
        if !self.requeued.contains(&execution) {
            for other in self.ready().filter(|&id| id != execution) {
                if !self.has_room_for(self.runtimes[&other]) {
                    continue;
                }
                prop_assert!(
                    !self.requeued.contains(&other) && other > execution,
                    "{execution:?} started before {other:?}, which was ready first"
                );
            }
        }
        Ok(())
    }

    /// Invariants that hold between any two steps.
    fn check(&self) -> Result<(), TestCaseError> {
        let mut counted = [0usize; Status::ALL.len()];
        for (&id, policy) in &self.policies {
            let Some(view) = self.s.execution(id) else {
                prop_assert!(self.evicted.contains(&id), "{id:?} vanished");
                continue;
            };
            counted[view.status as usize] += 1;
            prop_assert!(view.attempt <= policy.max_attempts);
            // Not counting attempts a returning worker was refused.
            let holders: Vec<_> = self
                .live
                .iter()
                .filter(|(s, w)| {
                    w.in_flight.contains(&(id, view.attempt))
                        && !self.refused.contains(&(**s, id, view.attempt))
                })
                .map(|(s, _)| *s)
                .collect();
            match view.status {
                Status::Pending => {
                    // Only a timed-out attempt (or one a returning worker
                    // was refused) may still hold a slot.
                    let only_lingering = self.live.iter().all(|(&s, w)| {
                        w.in_flight.iter().all(|e| {
                            e.0 != id
                                || self.lingering.contains(e)
                                || self.refused.contains(&(s, e.0, e.1))
                        })
                    });
                    prop_assert!(only_lingering);
                }
                Status::Running => {
                    prop_assert_eq!(holders.len(), 1);
                    prop_assert_eq!(view.session, Some(holders[0]));
                }
                _ => {
                    prop_assert!(holders.len() <= 1);
                    prop_assert_eq!(
                        Some(view.status),
                        self.terminal.get(&id).map(Terminal::status),
                        "terminal changed"
                    );
                }
            }
        }
        let stats = self.s.stats();
        prop_assert_eq!(
            [
                stats.pending,
                stats.running,
                stats.completed,
                stats.failed,
                stats.timed_out,
                stats.cancelled
            ],
            counted
        );
        prop_assert_eq!(stats.workers, self.live.len());
        for view in self.s.workers() {
            let w = &self.live[&view.session];
            prop_assert_eq!(view.capabilities, &w.capabilities);
            prop_assert_eq!(view.in_flight as usize, w.in_flight.len());
            prop_assert!(view.in_flight <= w.capacity.max(w.brought), "over capacity");
            prop_assert_eq!(view.draining, w.draining);
            prop_assert_eq!(view.quarantined, w.quarantined);
        }
        // No head-of-line blocking: nothing ready waits while a worker that
        // runs it has room.
        let mut queued = BTreeMap::<&str, usize>::new();
        for id in self.ready() {
            let runtime = self.runtimes[&id];
            prop_assert!(
                !self.has_room_for(runtime),
                "{id:?} in {runtime} waits while a worker that runs it has room"
            );
            *queued.entry(runtime).or_default() += 1;
        }
        let counted: Vec<_> = self.s.queued_by_runtime().collect();
        prop_assert_eq!(counted, queued.into_iter().collect::<Vec<_>>());
        Ok(())
    }

    /// Faults stop: a healthy worker joins, every worker answers what it holds
    /// and keeps heartbeating, and time moves on. Everything must end.
    fn heal(&mut self) -> Result<(), TestCaseError> {
        // It runs everything: whatever waits has somewhere to go.
        self.apply(&Op::Connect {
            name: 9,
            pool: 4,
            runs: Runs::Any,
        })?;
        for _ in 0..400 {
            let held: Vec<_> = self
                .live
                .iter()
                .flat_map(|(s, w)| w.in_flight.iter().map(|&(e, a)| (*s, e, a)))
                .collect();
            for (session, execution, attempt) in held {
                self.report(session, execution, attempt, Verdict::Succeeded)?;
            }
            self.advance(Duration::from_millis(250), true)?;
            self.check()?;
            let unfinished = self
                .policies
                .keys()
                .filter(|id| {
                    self.s
                        .execution(**id)
                        .is_some_and(|v| !v.status.is_terminal())
                })
                .count();
            if unfinished == 0 {
                return Ok(());
            }
        }
        Err(TestCaseError::fail(
            "executions still unfinished after faults healed",
        ))
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn scheduler_keeps_its_invariants(config in config(), ops in proptest::collection::vec(op(), 1..200)) {
        let mut h = Harness::new(config);
        for op in &ops {
            h.apply(op)?;
        }
        h.heal()?;
    }
}
