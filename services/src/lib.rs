//! TaskForge's real services around the sans-IO core.
//!
//! - [`scheduler`]: the gRPC scheduler. One task owns the core
//!   [`Scheduler`](taskforge_core::scheduler::Scheduler); gRPC handlers talk to it
//!   over channels, and its outputs go out on worker streams, to watchers and to
//!   the store.
//! - [`worker`]: dials the scheduler, runs the core
//!   [`WorkerPool`](taskforge_core::pool::WorkerPool), and executes the built-in
//!   [`functions`] as tasks.
//! - [`gateway`]: the HTTP/JSON API, mapped onto the scheduler's gRPC API.
//! - [`store`]: durable records (JSON Lines with group commit) behind a trait.
//! - [`net`]: the network seams: every service takes its listener or connector
//!   from the caller, so the binaries pass real sockets and the simulation passes
//!   simulated ones.

pub mod auth;
pub mod client;
pub mod clock;
pub mod cluster;
pub mod duration;
pub mod functions;
pub mod gateway;
pub mod languages;
pub mod net;
pub mod runtime;
pub mod sandbox;
pub mod scheduler;
pub mod store;
pub mod tls;
pub mod worker;
