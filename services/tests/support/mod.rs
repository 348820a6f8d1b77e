//! Helpers shared by the service tests.
#![allow(dead_code)]

pub mod cluster;
pub mod fake_scheduler;
pub mod http;
pub mod postgres;
pub mod processes;
pub mod standby;
pub mod watch;
