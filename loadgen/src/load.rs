//! Load shapes: a closed loop of C clients, or an open loop at a fixed rate.
//!
//! **Closed loop** (`--concurrency C`): C tasks, each sending its next request
//! as soon as its last one ended. It finds the throughput the system saturates
//! at, but its latencies are only those a patient client sees: while the
//! system stalls, the clients stall with it and send nothing, so the requests
//! that *would* have queued up are never measured ("coordinated omission").
//!
//! **Open loop** (`--rate R`): request `k` is due at `start + k/R`, whatever
//! happened to the others, and its latencies are measured from that intended
//! time, not from when it actually left (as in wrk2). A request held up by a
//! stall — the dispatcher was late, no connection or in-flight permit was free
//! — is charged for the wait. At most `max_in_flight` requests are out at once;
//! past that the dispatcher waits, and the wait shows up in the latencies. So
//! that the load generator's own lateness stays out of the figures, a thread of
//! its own paces the schedule with `nanosleep` (tokio's timer rounds every
//! deadline up to the next millisecond).
//!
//! Both shapes share the phases: a warm-up whose requests are not measured,
//! then the measurement window, closed either after `--duration` or after
//! `--count` measured requests; then every request still out is followed to its
//! end (no request is abandoned, so issued = completed + errors).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::measure::Recorder;
use crate::target::Observation;

/// How requests are sent.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Shape {
    /// `concurrency` clients, each sending when its last request ended.
    Closed { concurrency: usize },
    /// `rate` requests per second on a fixed schedule, at most `max_in_flight`
    /// out at once.
    Open { rate: f64, max_in_flight: usize },
}

/// When the measurement window closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// This long after the warm-up.
    After(Duration),
    /// After this many measured requests have been sent.
    Count(u64),
}

/// A load shape and its phases.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Plan {
    pub shape: Shape,
    pub warmup: Duration,
    pub stop: Stop,
}

impl Plan {
    /// The measurement window of a run starting at `start`: its opening, and
    /// its planned closing if it has one (not with [`Stop::Count`]).
    pub fn window(&self, start: Instant) -> (Instant, Option<Instant>) {
        let from = start + self.warmup;
        let until = match self.stop {
            Stop::After(duration) => Some(from + duration),
            Stop::Count(_) => None,
        };
        (from, until)
    }
}

/// One request of the load: what it does and what it saw.
pub trait Operation: Send + Sync + 'static {
    /// Sends request number `seq` (on connection `lane`) and follows it to its end.
    fn call(&self, lane: usize, seq: u64) -> impl Future<Output = Observation> + Send;
}

/// The intended send time of request `k` at `rate` per second, from the start.
pub fn intended_offset(k: u64, rate: f64) -> Duration {
    Duration::from_nanos((k as f64 * 1e9 / rate).round() as u64)
}

/// A request the phases allow: its number, and whether it is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket {
    pub seq: u64,
    pub measured: bool,
}

/// Hands out tickets by the phases: warm-up, then measured until the window
/// closes (by time or by count), then none.
#[derive(Debug)]
struct Tickets {
    from: Instant,
    until: Option<Instant>,
    /// Measured tickets left, with [`Stop::Count`].
    remaining: Option<AtomicU64>,
    next_seq: AtomicU64,
}

impl Tickets {
    fn new(plan: &Plan, start: Instant) -> Tickets {
        let (from, until) = plan.window(start);
        Tickets {
            from,
            until,
            remaining: match plan.stop {
                Stop::Count(n) => Some(AtomicU64::new(n)),
                Stop::After(_) => None,
            },
            next_seq: AtomicU64::new(0),
        }
    }

    /// The ticket of a request to be sent at `at`, if one may be.
    fn take(&self, at: Instant) -> Option<Ticket> {
        let measured = at >= self.from;
        if measured {
            if self.until.is_some_and(|until| at >= until) {
                return None;
            }
            if let Some(remaining) = &self.remaining {
                remaining
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                    .ok()?;
            }
        }
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        Some(Ticket { seq, measured })
    }
}

/// Runs `plan` from `start` (which must be the recorder's window origin),
/// recording every request, and returns when the last one has ended.
pub async fn drive<O: Operation>(
    operation: Arc<O>,
    plan: Plan,
    start: Instant,
    recorder: Arc<Recorder>,
) {
    drive_paced(operation, plan, start, recorder, Pacing::Thread).await;
}

/// [`drive`], with the open loop kept to time by `pacing`.
pub async fn drive_paced<O: Operation>(
    operation: Arc<O>,
    plan: Plan,
    start: Instant,
    recorder: Arc<Recorder>,
    pacing: Pacing,
) {
    let tickets = Arc::new(Tickets::new(&plan, start));
    match plan.shape {
        Shape::Closed { concurrency } => closed(operation, tickets, recorder, concurrency).await,
        Shape::Open {
            rate,
            max_in_flight,
        } => {
            let shape = (rate, max_in_flight);
            open(operation, tickets, recorder, start, shape, pacing).await;
        }
    }
}

async fn closed<O: Operation>(
    operation: Arc<O>,
    tickets: Arc<Tickets>,
    recorder: Arc<Recorder>,
    concurrency: usize,
) {
    let mut clients = JoinSet::new();
    for lane in 0..concurrency.max(1) {
        let (operation, tickets, recorder) = (operation.clone(), tickets.clone(), recorder.clone());
        clients.spawn(async move {
            loop {
                let sent = Instant::now();
                let Some(ticket) = tickets.take(sent) else {
                    break;
                };
                if ticket.measured {
                    recorder.issued();
                }
                let observation = operation.call(lane, ticket.seq).await;
                recorder.record(sent, ticket.measured, &observation);
            }
        });
    }
    while let Some(ended) = clients.join_next().await {
        propagate_panic(ended);
    }
}

/// How an open loop keeps to its schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pacing {
    /// A thread of its own that sleeps to each send time (`nanosleep`: tens of
    /// microseconds late at worst). The runtime's timer rounds up to the next
    /// millisecond, which would add up to a millisecond of the load
    /// generator's own lateness to every latency.
    Thread,
    /// The runtime's timer: coarse, but it follows a paused test clock.
    Timer,
}

/// Decides when each request of an open loop is due.
#[derive(Debug)]
struct Pacer {
    tickets: Arc<Tickets>,
    start: Instant,
    rate: f64,
}

/// Request `k`, due at `intended`.
type Due = (u64, Instant, Ticket);

impl Pacer {
    fn next(&self, k: u64) -> Option<(Instant, Ticket)> {
        let intended = self.start + intended_offset(k, self.rate);
        self.tickets.take(intended).map(|ticket| (intended, ticket))
    }

    /// Hands over each request when it is due, sleeping the thread between.
    /// Requests that are already due go at once, so a late wake-up catches up
    /// in one burst instead of drifting.
    fn run_on_thread(self, due: mpsc::UnboundedSender<Due>) {
        for k in 0u64.. {
            let Some((intended, ticket)) = self.next(k) else {
                break;
            };
            let now = Instant::now();
            if intended > now {
                std::thread::sleep(intended - now);
            }
            if due.send((k, intended, ticket)).is_err() {
                break;
            }
        }
    }

    /// The same on the runtime's timer.
    async fn run_on_timer(self, due: mpsc::UnboundedSender<Due>) {
        for k in 0u64.. {
            let Some((intended, ticket)) = self.next(k) else {
                break;
            };
            if intended > Instant::now() {
                tokio::time::sleep_until(intended).await;
            }
            if due.send((k, intended, ticket)).is_err() {
                break;
            }
        }
    }
}

async fn open<O: Operation>(
    operation: Arc<O>,
    tickets: Arc<Tickets>,
    recorder: Arc<Recorder>,
    start: Instant,
    (rate, max_in_flight): (f64, usize),
    pacing: Pacing,
) {
    let (due, mut requests_due) = mpsc::unbounded_channel();
    let pacer = Pacer {
        tickets,
        start,
        rate,
    };
    match pacing {
        Pacing::Thread => {
            std::thread::Builder::new()
                .name("loadgen-pacer".into())
                .spawn(move || pacer.run_on_thread(due))
                .expect("a thread for the pacer");
        }
        Pacing::Timer => {
            tokio::spawn(pacer.run_on_timer(due));
        }
    }

    let permits = Arc::new(Semaphore::new(
        max_in_flight.clamp(1, Semaphore::MAX_PERMITS),
    ));
    let mut requests = JoinSet::new();
    while let Some((k, intended, ticket)) = requests_due.recv().await {
        // Waiting here for a permit delays the request past its due time;
        // its latency still counts from `intended`.
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        if ticket.measured {
            recorder.issued();
        }
        let (operation, recorder) = (operation.clone(), recorder.clone());
        requests.spawn(async move {
            let observation = operation.call(k as usize, ticket.seq).await;
            recorder.record(intended, ticket.measured, &observation);
            drop(permit);
        });
        while let Some(ended) = requests.try_join_next() {
            propagate_panic(ended);
        }
    }
    while let Some(ended) = requests.join_next().await {
        propagate_panic(ended);
    }
}

fn propagate_panic(ended: Result<(), tokio::task::JoinError>) {
    if let Err(error) = ended {
        if error.is_panic() {
            std::panic::resume_unwind(error.into_panic());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::Clock;
    use crate::target::Stamps;

    #[test]
    fn the_schedule_is_fixed_by_the_rate() {
        assert_eq!(intended_offset(0, 1000.0), Duration::ZERO);
        assert_eq!(intended_offset(3, 1000.0), Duration::from_millis(3));
        assert_eq!(intended_offset(1, 3.0), Duration::from_nanos(333_333_333));
        assert_eq!(intended_offset(3, 3.0), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn tickets_follow_the_phases() {
        let start = Instant::now();
        let ms = Duration::from_millis;
        let plan = Plan {
            shape: Shape::Closed { concurrency: 1 },
            warmup: ms(10),
            stop: Stop::After(ms(20)),
        };
        let tickets = Tickets::new(&plan, start);
        let take = |at: u64| tickets.take(start + ms(at)).map(|t| t.measured);
        assert_eq!(take(0), Some(false));
        assert_eq!(take(9), Some(false));
        assert_eq!(take(10), Some(true));
        assert_eq!(take(29), Some(true));
        assert_eq!(take(30), None);

        let counted = Plan {
            stop: Stop::Count(2),
            ..plan
        };
        let tickets = Tickets::new(&counted, start);
        let take = |at: u64| tickets.take(start + ms(at)).map(|t| (t.seq, t.measured));
        assert_eq!(take(0), Some((0, false)));
        assert_eq!(take(10), Some((1, true)));
        assert_eq!(take(500), Some((2, true)));
        assert_eq!(take(501), None);
    }

    /// A server that answers at once.
    #[derive(Debug, Default)]
    struct Immediate {
        seen: std::sync::Mutex<Vec<u64>>,
    }

    impl Operation for Immediate {
        async fn call(&self, _lane: usize, seq: u64) -> Observation {
            self.seen.lock().unwrap().push(seq);
            Observation::failed(
                Some(Instant::now()),
                crate::target::Failure::new(
                    crate::target::FailureKind::Trigger,
                    "nothing behind it",
                ),
            )
        }
    }

    #[tokio::test]
    async fn the_pacing_thread_sends_every_request_once_in_order() {
        let clock = Clock::now();
        let plan = Plan {
            shape: Shape::Open {
                rate: 5000.0,
                max_in_flight: 1,
            },
            warmup: Duration::ZERO,
            stop: Stop::Count(50),
        };
        let (from, until) = plan.window(clock.origin());
        let recorder = Arc::new(Recorder::new(clock, from, until, Duration::from_secs(1)));
        let server = Arc::new(Immediate::default());
        drive(server.clone(), plan, clock.origin(), recorder.clone()).await;
        let m = Arc::into_inner(recorder).unwrap().finish();
        assert_eq!((m.issued, m.errors), (50, 50));
        assert_eq!(*server.seen.lock().unwrap(), (0..50).collect::<Vec<u64>>());
    }

    /// A server that serves one request at a time, 1 ms each, and stalls
    /// 100 ms on the first.
    #[derive(Debug, Default)]
    struct StallingServer {
        served: tokio::sync::Mutex<u64>,
    }

    impl Operation for StallingServer {
        async fn call(&self, _lane: usize, _seq: u64) -> Observation {
            let mut served = self.served.lock().await;
            if *served == 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
            *served += 1;
            Observation {
                accepted: Some(Instant::now()),
                done: Instant::now(),
                status: Some("COMPLETED".into()),
                stamps: Some(Stamps::default()),
                failure: None,
            }
        }
    }

    async fn run(shape: Shape) -> crate::measure::Measurements {
        let clock = Clock::now();
        let plan = Plan {
            shape,
            warmup: Duration::ZERO,
            stop: Stop::After(Duration::from_millis(400)),
        };
        let (from, until) = plan.window(clock.origin());
        let recorder = Arc::new(Recorder::new(
            clock,
            from,
            until,
            Duration::from_millis(100),
        ));
        let server = Arc::new(StallingServer::default());
        drive_paced(
            server,
            plan,
            clock.origin(),
            recorder.clone(),
            Pacing::Timer,
        )
        .await;
        Arc::into_inner(recorder).unwrap().finish()
    }

    /// The coordinated-omission correction: the same 100 ms stall, seen by an
    /// open loop and by a closed loop. The open loop had ~50 requests due
    /// during the stall and charges each its wait (from its intended send
    /// time); the closed loop sent nothing during the stall and sees it once.
    #[tokio::test(start_paused = true)]
    async fn an_open_loop_charges_requests_for_a_stall_a_closed_loop_hides() {
        let open = run(Shape::Open {
            rate: 500.0,
            max_in_flight: 1000,
        })
        .await;
        // 200 requests due, one every 2 ms. Request j (due at 2j ms) is served
        // at (101 + j) ms until the backlog is gone at j = 100: its latency is
        // 101 − j ms. The other 100 take 1 ms.
        assert_eq!((open.issued, open.completed), (200, 200));
        let e2e = &open.latencies.e2e;
        assert!(e2e.max() >= 100_000, "max {}", e2e.max());
        let p75 = e2e.value_at_quantile(0.75);
        assert!((45_000..=56_000).contains(&p75), "open-loop p75 {p75} µs");
        let over_50ms = e2e.len() - e2e.count_between(0, 50_000);
        assert!((45..=55).contains(&over_50ms), "{over_50ms} over 50 ms");

        let closed = run(Shape::Closed { concurrency: 1 }).await;
        let e2e = &closed.latencies.e2e;
        assert!(e2e.max() >= 100_000, "max {}", e2e.max());
        assert!(
            e2e.value_at_quantile(0.75) <= 1_100,
            "closed-loop p75 hides the stall"
        );
        let over_50ms = e2e.len() - e2e.count_between(0, 50_000);
        assert_eq!(over_50ms, 1, "the closed loop sees the stall once");
    }
}
