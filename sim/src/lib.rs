//! Deterministic simulation of TaskForge's real services.
//!
//! The real scheduler, workers and gateway — the code the `taskforge` binary
//! runs — on [turmoil](https://docs.rs/turmoil) hosts: a simulated network
//! that can be partitioned, held and slowed down, a simulated disk that
//! forgets what was not synced when its host crashes, and a clock that only
//! moves when the simulation says so. Clients submit a workload and record
//! what they see; a fault schedule crashes, bounces, partitions and holds;
//! an oracle checks the failure semantics against the trace of it all.
//!
//! Everything random comes from one u64 seed, so a seed is a run: the same
//! seed gives the same trace, hash for hash, every time.
//!
//! - [`seed`]: deriving every random stream from the seed;
//! - [`net`], [`fs`]: the services' network and filesystem seams on turmoil;
//! - [`cluster`]: the scheduler, workers and gateway on their hosts;
//! - [`workload`]: what clients ask for, and the right answers;
//! - [`client`], [`http_client`]: the client hosts (gRPC to the scheduler,
//!   HTTP to the gateway);
//! - [`rogue`]: hosts that speak the worker protocol by hand and misbehave
//!   (a black hole that never answers, an impostor claiming a live id);
//! - [`faults`]: fault schedules and the driver that applies them;
//! - [`trace`]: the ordered record of a run, and its hash;
//! - [`oracle`]: the invariants every run must keep;
//! - [`scenario`]: what each scenario makes of a seed;
//! - [`run`]: running seeds, reporting failures, reproducing them.

pub mod client;
pub mod cluster;
pub mod faults;
pub mod fs;
pub mod http_client;
pub mod net;
pub mod oracle;
pub mod rogue;
pub mod run;
pub mod scenario;
pub mod seed;
pub mod trace;
pub mod workload;

pub use run::{Outcome, check, run};
pub use scenario::Scenario;
pub use seed::Seed;
