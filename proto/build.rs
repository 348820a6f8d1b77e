//! Compiles `proto/*.proto` into Rust with protox (a pure-Rust protobuf
//! compiler, so no `protoc` is needed) and tonic-prost-build.

use std::io;

const PROTOS: [&str; 3] = [
    "proto/common.proto",
    "proto/scheduler.proto",
    "proto/worker.proto",
];
const INCLUDES: [&str; 1] = ["proto"];

fn main() -> io::Result<()> {
    for path in PROTOS {
        println!("cargo:rerun-if-changed={path}");
    }
    println!("cargo:rerun-if-changed=build.rs");

    let fds = protox::compile(PROTOS, INCLUDES).map_err(io::Error::other)?;

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // No `connect()` helper on the clients: it needs tonic's `transport`
        // feature. Callers build a `Channel` themselves and use `new()`.
        .build_transport(false)
        // Every `bytes` field (payloads, outputs, code) is a zero-copy
        // `bytes::Bytes` instead of a `Vec<u8>`.
        .bytes(".")
        .compile_fds(fds)
}
