//! A scheduler that leads only while it holds the lease: one of several
//! sharing a PostgreSQL database, any of which may take over when the
//! leader dies.
//!
//! The process serves gRPC from the start. While it is a standby, every call
//! is answered "not the leader" (see `route.rs`). The lease's rules are the
//! sans-IO [`Lease`]; this drives it with the database's answers. When the
//! lease says this scheduler leads a term, it loads the store, fenced by the
//! term's epoch, on a thread of its own (the lease keeps being renewed
//! meanwhile) and routes calls to the new actor. When the term ends (the
//! lease expired, another term began, or a write was fenced) calls go back
//! to the standby answer, and the actor is shut down: its worker streams and
//! watches end, and workers reconnect to whoever leads. Nothing of the term
//! is kept; the next term loads the database again.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tonic::transport::server::Connected;

use taskforge_core::Instant;
use taskforge_core::lease::{Lease, LeaseConfig, LeaseEvent, LeaseRequest, RequestId};

use super::route::{Route, Term};
use super::{SchedulerError, SchedulerOptions, SchedulerService, actor, serve_routes};
use crate::clock::WallClock;
use crate::store::{Fence, LeaseAnswer, LeaseDb, PostgresStore, StoreError};

/// One scheduler of several on a database.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub options: SchedulerOptions,
    pub database_url: String,
    /// Where clients and workers reach this scheduler; standbys name it to
    /// them while it leads.
    pub advertise: String,
    /// Names this scheduler in the lease row (for operators).
    pub holder: String,
    pub lease: LeaseConfig,
}

/// A term being led: its actor and how to stop it.
struct Led {
    epoch: u64,
    commands: mpsc::Sender<actor::Command>,
    actor: JoinHandle<()>,
}

/// The state a term's start loads, off the lease's task.
type Loading = JoinHandle<Result<SchedulerService, SchedulerError>>;

impl Candidate {
    /// Serves on `incoming` until `shutdown` resolves, leading whenever the
    /// lease is this scheduler's.
    pub async fn serve<S, IO, E>(
        self,
        clock: WallClock,
        incoming: S,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), SchedulerError>
    where
        S: Stream<Item = Result<IO, E>> + Send + 'static,
        IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let url = self.database_url.clone();
        run_blocking(move || crate::store::migrate_postgres(&url)).await?;
        let db = LeaseDb::open(&self.database_url).map_err(|source| {
            SchedulerError::Load(StoreError::Database {
                op: "parse the address of",
                source,
            })
        })?;
        let server = super::server_builder(&self.options)?;
        let (terms, route) = watch::channel(Term::Standby { leader: None });
        let (stopped, mut stop) = watch::channel(false);
        let options = self.options.clone();
        let serving = tokio::spawn(async move {
            serve_routes(
                server,
                &options,
                Route::Elected(route),
                incoming,
                async move {
                    let _ = stop.wait_for(|stopped| *stopped).await;
                },
            )
            .await
        });

        let mut driver = Driver {
            candidate: self,
            clock,
            origin: tokio::time::Instant::now(),
            terms,
            fenced: Arc::new(watch::channel(0).0),
            led: None,
            loading: None,
            leader: None,
            abandoned: None,
        };
        driver.run(db, shutdown).await;
        if let Some((epoch, actor)) = driver.step_down("the scheduler is stopping").await {
            // Its last commits first, then the lease, for a standby to
            // take over at once.
            let _ = actor.await;
            release(&driver.candidate.database_url, epoch).await;
        }
        let _ = stopped.send(true);
        serving
            .await
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic.into_panic()))
    }
}

struct Driver {
    candidate: Candidate,
    clock: WallClock,
    origin: tokio::time::Instant,
    terms: watch::Sender<Term>,
    /// The epoch of the last store whose write was refused for it (a
    /// term's store may report long after the term ended: the lease acts
    /// only on its current term's epoch).
    fenced: Arc<watch::Sender<u64>>,
    led: Option<Led>,
    /// The store of the term `.0`, loading.
    loading: Option<(u64, Loading)>,
    /// The leader's address, as the lease row last said.
    leader: Option<String>,
    /// A term whose store failed to load, left to lapse.
    abandoned: Option<u64>,
}

/// A lease request on its way to the database.
type Asking = JoinHandle<(LeaseDb, Option<LeaseAnswer>)>;

impl Driver {
    fn now(&self) -> Instant {
        Instant::from_elapsed(self.origin.elapsed())
    }

    async fn run(&mut self, db: LeaseDb, shutdown: impl Future<Output = ()>) {
        let mut lease = Lease::new(self.now(), self.candidate.lease);
        // The connection travels with the request that uses it.
        let mut idle = Some(db);
        let mut asking: Option<(RequestId, Asking)> = None;
        let mut fenced = self.fenced.subscribe();
        tokio::pin!(shutdown);
        loop {
            while let Some(event) = lease.poll_event() {
                self.on_event(event).await;
            }
            if asking.is_none()
                && let Some(request) = lease.poll_request(self.now())
            {
                match (request, idle.take()) {
                    // A term that could not load is let lapse: not renewed,
                    // it ends, and the next acquisition loads afresh.
                    (LeaseRequest::Renew { epoch, .. }, db) if self.abandoned == Some(epoch) => {
                        idle = db;
                        lease.failed(self.now(), request.id());
                    }
                    (_, Some(db)) => asking = Some((request.id(), self.ask(db, request))),
                    (_, None) => lease.failed(self.now(), request.id()),
                }
            }
            let wake = self.origin + lease.poll_timeout().elapsed().min(FAR);
            tokio::select! {
                () = &mut shutdown => break,
                (db, answer) = settle(asking.as_mut().map(|(_, task)| task)) => {
                    let Some((request, _)) = asking.take() else { continue };
                    idle = Some(db);
                    let now = self.now();
                    match answer {
                        Some(LeaseAnswer::Granted { epoch }) => lease.granted(now, request, epoch),
                        Some(LeaseAnswer::Refused { epoch, leader }) => {
                            self.leader = (!leader.is_empty()).then_some(leader);
                            self.show_standby_leader();
                            lease.refused(now, request, epoch);
                        }
                        None => lease.failed(now, request),
                    }
                }
                Ok(()) = fenced.changed() => {
                    let epoch = *fenced.borrow_and_update();
                    lease.fenced(self.now(), epoch);
                }
                loaded = settle(self.loading.as_mut().map(|(_, task)| task)) => {
                    let Some((epoch, _)) = self.loading.take() else { continue };
                    self.loaded(&lease, epoch, loaded);
                }
                () = tokio::time::sleep_until(wake) => lease.handle_timeout(self.now()),
            }
        }
    }

    /// Sends `request` on a task of its own, timed out after the renewal
    /// interval (an answer later than that is worth nothing to the lease).
    fn ask(&self, mut db: LeaseDb, request: LeaseRequest) -> Asking {
        let candidate = self.candidate.clone();
        let duration = candidate.lease.duration;
        let patience = candidate.lease.renew_every;
        tokio::spawn(async move {
            let answer = tokio::time::timeout(patience, async {
                match request {
                    LeaseRequest::Acquire { .. } => {
                        db.acquire(&candidate.holder, &candidate.advertise, duration)
                            .await
                    }
                    LeaseRequest::Renew { epoch, .. } => db.renew(epoch, duration).await,
                }
            })
            .await;
            match answer {
                Ok(Ok(answer)) => (db, Some(answer)),
                Ok(Err(error)) => {
                    tracing::warn!(%error, "a lease request failed");
                    (db, None)
                }
                Err(_) => {
                    tracing::warn!("a lease request got no answer in time");
                    db.reset();
                    (db, None)
                }
            }
        })
    }

    async fn on_event(&mut self, event: LeaseEvent) {
        match event {
            LeaseEvent::BecameLeader { epoch } => {
                tracing::info!(epoch, "leading: loading the store");
                self.leader = Some(self.candidate.advertise.clone());
                self.loading = Some((epoch, self.load(epoch)));
            }
            LeaseEvent::SteppedDown { epoch, reason } => {
                tracing::warn!(epoch, %reason, "stepped down");
                self.leader = None;
                if let Some((epoch, actor)) = self.step_down(&reason.to_string()).await {
                    tokio::spawn(async move {
                        let _ = actor.await;
                        tracing::debug!(epoch, "the term's actor ended");
                    });
                }
            }
        }
    }

    /// Loads the store for the term `epoch`, fenced by it.
    fn load(&self, epoch: u64) -> Loading {
        let fenced = self.fenced.clone();
        let retention = self.candidate.options.core.retention;
        let store = PostgresStore::open(&self.candidate.database_url).map(|store| {
            store
                .fenced_by(Fence {
                    epoch,
                    on_fenced: Box::new(move || {
                        fenced.send_replace(epoch);
                    }),
                })
                .retaining(retention)
        });
        let options = self.candidate.options.clone();
        let clock = self.clock.clone();
        tokio::task::spawn_blocking(move || {
            SchedulerService::load_on_own_thread(options, Box::new(store?), clock)
        })
    }

    fn loaded(
        &mut self,
        lease: &Lease,
        epoch: u64,
        loaded: Result<SchedulerService, SchedulerError>,
    ) {
        let still_leading = lease.writable_epoch(self.now()) == Some(epoch);
        match loaded {
            Ok(service) if still_leading => {
                let (leading, actor) = service.start();
                self.led = Some(Led {
                    epoch,
                    commands: leading.commands.clone(),
                    actor,
                });
                self.terms.send_replace(Term::Leading(leading));
                tracing::info!(epoch, "leading: serving");
            }
            // The term ended while it loaded: what it loaded goes unused.
            Ok(_) => {}
            Err(error) => {
                // Serving without the state would lose work; give the term
                // up and let the lease lapse (another scheduler, or this
                // one later, tries again).
                tracing::error!(%error, epoch, "could not load the store; letting the lease lapse");
                self.abandoned = Some(epoch);
            }
        }
    }

    /// Ends the current term, if any: standby answers from now on, the
    /// actor told to shut down. Returns the term's epoch and its actor,
    /// which ends once its last stream and call are gone.
    async fn step_down(&mut self, why: &str) -> Option<(u64, JoinHandle<()>)> {
        self.loading = None;
        let led = self.led.take();
        self.show_standby_leader();
        let led = led?;
        tracing::info!(epoch = led.epoch, why, "ending the term");
        let _ = led.commands.send(actor::Command::Shutdown).await;
        Some((led.epoch, led.actor))
    }

    fn show_standby_leader(&self) {
        if self.led.is_none() {
            self.terms.send_replace(Term::Standby {
                leader: self.leader.clone(),
            });
        }
    }
}

/// The outcome of `task`, or never when there is none.
async fn settle<T>(task: Option<&mut JoinHandle<T>>) -> T {
    match task {
        Some(task) => task
            .await
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic.into_panic())),
        None => std::future::pending().await,
    }
}

/// Ends the term `epoch` in the database, so a standby takes over at once
/// rather than when the lease expires. Best effort: it expires anyway.
async fn release(database_url: &str, epoch: u64) {
    let released = match LeaseDb::open(database_url) {
        Ok(mut db) => db.release(epoch).await,
        Err(error) => Err(error),
    };
    if let Err(error) = released {
        tracing::warn!(%error, epoch, "could not release the lease; it will expire");
    }
}

/// Further than any lease deadline; keeps instant arithmetic from overflow.
const FAR: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

async fn run_blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, SchedulerError> {
    // The database client must not run on tokio's threads: a thread of
    // its own, awaited from a blocking-pool task.
    let joined = tokio::task::spawn_blocking(move || {
        std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("taskforge-migrate".into())
                .spawn_scoped(scope, work)
                .map_err(SchedulerError::Committer)?
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                .map_err(SchedulerError::Load)
        })
    })
    .await;
    joined.unwrap_or_else(|panic| std::panic::resume_unwind(panic.into_panic()))
}
