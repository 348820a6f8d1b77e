//! The sans-IO heart of TaskForge: the scheduler and worker-pool state machines.
//!
//! Nothing here does I/O, reads a clock, spawns a task or draws a random number.
//! Callers feed inputs with the current time, drain outputs, and ask when the next
//! deadline falls; the services do that over real sockets, the simulation over a
//! simulated network, and the tests by hand. Same inputs, same outputs.
//!
//! - [`scheduler::Scheduler`]: who runs what, when something is late, what happens
//!   after a failure.
//! - [`pool::WorkerPool`]: a worker's slots, local queue, cancellation and timeouts.

mod deadlines;
pub mod execution;
pub mod ids;
pub mod lease;
pub mod pool;
pub mod scheduler;
pub mod time;

pub use execution::{Outcome, Policy, Status, Submission, Terminal};
pub use ids::{ExecutionId, SessionId, WorkerId};
pub use scheduler::Capabilities;
pub use time::Instant;
