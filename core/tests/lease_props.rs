//! The lease's rules, checked over random histories: three schedulers, one
//! store holding the lease row, a network that delays and loses answers, and
//! schedulers that pause (as a stopped or swapped-out process does).
//!
//! After every step: no two schedulers may act as leader at the same instant;
//! no epoch is led by two schedulers; writes commit only in the store's
//! current term, so their epochs never go back. After the history, a healed
//! network elects a leader.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use proptest::prelude::*;
use taskforge_core::Instant;
use taskforge_core::lease::{Lease, LeaseConfig, LeaseEvent, LeaseRequest, RequestId};

const NODES: usize = 3;

fn config() -> LeaseConfig {
    LeaseConfig {
        duration: Duration::from_millis(400),
        renew_every: Duration::from_millis(100),
        retry_every: Duration::from_millis(50),
        margin: Duration::from_millis(40),
    }
}

#[derive(Clone, Debug)]
enum Op {
    /// Time passes, a millisecond at a time.
    Advance { ms: u64 },
    /// Requests and answers take this long each way from now on.
    Delay { ms: u64 },
    /// The node does nothing for a while; answers wait for it.
    Pause { node: usize, ms: u64 },
    /// The next answer to the node is lost.
    Lose { node: usize },
    /// The node writes, if it may act as leader.
    Write { node: usize },
}

fn arb_op() -> impl Strategy<Value = Op> {
    let node = || 0..NODES;
    prop_oneof![
        6 => (1u64..120).prop_map(|ms| Op::Advance { ms }),
        2 => (0u64..150).prop_map(|ms| Op::Delay { ms }),
        2 => (node(), 1u64..900).prop_map(|(node, ms)| Op::Pause { node, ms }),
        1 => node().prop_map(|node| Op::Lose { node }),
        4 => node().prop_map(|node| Op::Write { node }),
    ]
}

/// What travels: a lease request to the store, its answer back, a write.
#[derive(Clone, Debug)]
enum Message {
    ToStore {
        node: usize,
        request: LeaseRequest,
    },
    Write {
        node: usize,
        epoch: u64,
    },
    Granted {
        node: usize,
        request: RequestId,
        epoch: u64,
    },
    Refused {
        node: usize,
        request: RequestId,
        epoch: u64,
    },
    Lost {
        node: usize,
        request: RequestId,
    },
    WriteRefused {
        node: usize,
        epoch: u64,
    },
}

/// The lease row, with the store's own clock (the test's).
#[derive(Debug, Default)]
struct Store {
    epoch: u64,
    holder: Option<usize>,
    expires_at: Instant,
    /// Epochs of committed writes, in commit order.
    commits: Vec<u64>,
}

struct World {
    now: Instant,
    delay: Duration,
    leases: Vec<Lease>,
    paused_until: Vec<Instant>,
    lose_next: Vec<bool>,
    /// Messages by delivery time (then by order sent).
    in_flight: BTreeMap<(Instant, u64), Message>,
    sent: u64,
    store: Store,
    /// Who led each epoch.
    leaders: BTreeMap<u64, usize>,
}

impl World {
    fn new() -> World {
        World {
            now: Instant::ZERO,
            delay: Duration::from_millis(5),
            leases: (0..NODES)
                .map(|_| Lease::new(Instant::ZERO, config()))
                .collect(),
            paused_until: vec![Instant::ZERO; NODES],
            lose_next: vec![false; NODES],
            in_flight: BTreeMap::new(),
            sent: 0,
            store: Store::default(),
            leaders: BTreeMap::new(),
        }
    }

    fn send(&mut self, message: Message) {
        self.sent += 1;
        self.in_flight
            .insert((self.now + self.delay, self.sent), message);
    }

    fn running(&self, node: usize) -> bool {
        self.now >= self.paused_until[node]
    }

    /// The store applies what reaches it, atomically.
    fn at_store(&mut self, message: Message) {
        let now = self.now;
        let store = &mut self.store;
        match message {
            Message::ToStore { node, request } => {
                let granted = match request {
                    LeaseRequest::Acquire { .. } if now >= store.expires_at => {
                        store.epoch += 1;
                        true
                    }
                    LeaseRequest::Renew { epoch, .. } => {
                        epoch == store.epoch && store.holder == Some(node)
                    }
                    LeaseRequest::Acquire { .. } => false,
                };
                let (request, epoch) = (request.id(), store.epoch);
                let answer = if granted {
                    store.holder = Some(node);
                    store.expires_at = now + config().duration;
                    Message::Granted {
                        node,
                        request,
                        epoch,
                    }
                } else {
                    Message::Refused {
                        node,
                        request,
                        epoch,
                    }
                };
                let answer = match std::mem::take(&mut self.lose_next[node]) {
                    true => Message::Lost { node, request },
                    false => answer,
                };
                self.send(answer);
            }
            Message::Write { node, epoch } => {
                if epoch == store.epoch {
                    store.commits.push(epoch);
                } else {
                    self.send(Message::WriteRefused { node, epoch });
                }
            }
            other => unreachable!("{other:?} is not for the store"),
        }
    }

    /// A node takes what reached it; false if it is paused (the message waits).
    fn at_node(&mut self, message: &Message) -> bool {
        let node = match *message {
            Message::Granted { node, .. }
            | Message::Refused { node, .. }
            | Message::Lost { node, .. }
            | Message::WriteRefused { node, .. } => node,
            _ => unreachable!(),
        };
        if !self.running(node) {
            return false;
        }
        let now = self.now;
        let lease = &mut self.leases[node];
        match *message {
            Message::Granted { request, epoch, .. } => lease.granted(now, request, epoch),
            Message::Refused { request, epoch, .. } => lease.refused(now, request, epoch),
            Message::Lost { request, .. } => lease.failed(now, request),
            Message::WriteRefused { epoch, .. } => lease.fenced(now, epoch),
            _ => unreachable!(),
        }
        true
    }

    /// Runs the world to `until`, a millisecond at a time, checking as it goes.
    fn run_until(&mut self, until: Instant) -> Result<(), TestCaseError> {
        while self.now < until {
            self.now = self.now + Duration::from_millis(1);
            let due: Vec<_> = self
                .in_flight
                .range(..=(self.now, u64::MAX))
                .map(|(key, _)| *key)
                .collect();
            for key in due {
                let message = self.in_flight[&key].clone();
                let delivered = match message {
                    Message::ToStore { .. } | Message::Write { .. } => {
                        self.at_store(message);
                        true
                    }
                    _ => self.at_node(&message),
                };
                if delivered {
                    self.in_flight.remove(&key);
                }
            }
            for node in 0..NODES {
                if !self.running(node) {
                    continue;
                }
                let now = self.now;
                if let Some(request) = self.leases[node].poll_request(now) {
                    self.send(Message::ToStore { node, request });
                }
                while let Some(event) = self.leases[node].poll_event() {
                    if let LeaseEvent::BecameLeader { epoch } = event {
                        let first = *self.leaders.entry(epoch).or_insert(node);
                        prop_assert_eq!(first, node, "epoch {} led twice", epoch);
                    }
                }
            }
            self.check()?;
        }
        Ok(())
    }

    /// At most one scheduler may act as leader at any instant — a paused
    /// one included, as it would act the moment it resumed.
    fn check(&self) -> Result<(), TestCaseError> {
        let acting: Vec<(usize, u64)> = (0..NODES)
            .filter_map(|node| {
                self.leases[node]
                    .writable_epoch(self.now)
                    .map(|epoch| (node, epoch))
            })
            .collect();
        prop_assert!(
            acting.len() <= 1,
            "two leaders at {:?}: {:?}",
            self.now,
            acting
        );
        let commits = &self.store.commits;
        prop_assert!(
            commits.windows(2).all(|pair| pair[0] <= pair[1]),
            "a write of an older term committed after a newer one: {:?}",
            commits
        );
        Ok(())
    }

    fn apply(&mut self, op: Op) -> Result<(), TestCaseError> {
        match op {
            Op::Advance { ms } => self.run_until(self.now + Duration::from_millis(ms))?,
            Op::Delay { ms } => self.delay = Duration::from_millis(ms),
            Op::Pause { node, ms } => {
                self.paused_until[node] = self.now + Duration::from_millis(ms);
            }
            Op::Lose { node } => self.lose_next[node] = true,
            Op::Write { node } => {
                if self.running(node) {
                    if let Some(epoch) = self.leases[node].writable_epoch(self.now) {
                        self.send(Message::Write { node, epoch });
                    }
                }
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn one_leader_at_a_time_and_stale_terms_never_write(
        ops in proptest::collection::vec(arb_op(), 1..120),
    ) {
        let mut world = World::new();
        for op in ops {
            world.apply(op)?;
        }
        // Heal: everyone runs, nothing is lost, answers are quick.
        world.delay = Duration::from_millis(5);
        world.lose_next = vec![false; NODES];
        let healed = world.now + Duration::from_millis(900);
        world.paused_until = vec![world.now; NODES];
        world.run_until(healed + Duration::from_millis(2_000))?;
        let leading: BTreeSet<usize> = (0..NODES)
            .filter(|&node| world.leases[node].writable_epoch(world.now).is_some())
            .collect();
        prop_assert_eq!(leading.len(), 1, "no leader after healing");
    }
}
