//! TaskForge's wire contracts: the protobuf messages and gRPC services that
//! clients, the scheduler and workers speak, generated at build time from
//! `proto/*.proto` with [prost] and [tonic] (via protox, so building needs no
//! `protoc`).
//!
//! One module per protobuf package:
//!
//! - [`common`]: messages shared by both services (`Function`,
//!   `ExecutionRequest`, `ExecutionResult`, `ExecutionInfo`).
//! - [`scheduler`]: the client-facing `SchedulerService`
//!   ([`scheduler::scheduler_service_server`] and
//!   [`scheduler::scheduler_service_client`]).
//! - [`worker`]: the scheduler <-> worker stream `WorkerService`
//!   ([`worker::worker_service_server`] and
//!   [`worker::worker_service_client`]).
//!
//! The seed (v1) contracts are kept wire-compatible: their packages, services,
//! methods, messages, field names and field numbers are unchanged, and every
//! extension uses a new field number whose zero value means "the default".
//! `tests/wire_compat.rs` checks this against hand-encoded seed bytes.
//!
//! Every protobuf `bytes` field is a [`bytes::Bytes`], so payloads are not
//! copied when decoding. The clients have no `connect()` helper (that needs
//! tonic's `transport` feature): build a channel and call `new()`.

/// Messages shared by the scheduler and worker services (protobuf package
/// `common`).
pub mod common {
    tonic::include_proto!("common");
}

/// The client-facing scheduler API (protobuf package `scheduler`).
pub mod scheduler {
    tonic::include_proto!("scheduler");
}

/// The scheduler <-> worker protocol (protobuf package `worker`).
pub mod worker {
    tonic::include_proto!("worker");
}
