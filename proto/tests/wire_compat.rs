//! Wire compatibility with the seed (v1) contracts.
//!
//! A v1 client or worker was built from the seed `.proto` files, which knew
//! only the seed fields. These tests play that peer with a tiny hand-rolled
//! protobuf encoder and decoder that work purely by field number and wire type
//! (no generated types, no prost encoding helpers), so they check the bytes on
//! the wire, not our own code against itself:
//!
//! - seed bytes, built by hand, decode into our types with every field right
//!   and every extension at its default;
//! - our types with the seed fields set encode to exactly the seed's field
//!   numbers, wire types and values;
//! - our types with extension fields set still read correctly by a seed-only
//!   reader, which skips the fields it does not know;
//! - the gRPC paths are the seed's, both on the generated server (hand-framed
//!   seed requests reach the right method) and on the generated client.
//!
//! Everything runs in memory and every future is immediately ready, so the
//! tests are deterministic and need no runtime.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::{self, Future};
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame};
use prost::Message;
use taskforge_proto::common::{self, ExecutionInfo, Outcome};
use taskforge_proto::scheduler::scheduler_service_client::SchedulerServiceClient;
use taskforge_proto::scheduler::scheduler_service_server::{
    self, SchedulerService, SchedulerServiceServer,
};
use taskforge_proto::scheduler::{self as sched};
use taskforge_proto::worker::worker_service_client::WorkerServiceClient;
use taskforge_proto::worker::worker_service_server::{self, WorkerService, WorkerServiceServer};
use taskforge_proto::worker::{self, scheduler_message, worker_message};
use tonic::codegen::http;
use tonic::codegen::tokio_stream;
use tonic::server::NamedService;
use tonic::{Request, Response, Status, Streaming};

// ---------------------------------------------------------------------------
// Hand-rolled protobuf encoding
// ---------------------------------------------------------------------------

const VARINT: u8 = 0;
const I64: u8 = 1;
const LEN: u8 = 2;
const I32: u8 = 5;

/// Builds one message's bytes field by field, the way any protobuf encoder
/// lays them out: a key (`field_number << 3 | wire_type`) as a varint, then
/// the value.
#[derive(Debug, Default)]
struct Enc(Vec<u8>);

impl Enc {
    fn new() -> Self {
        Self::default()
    }

    fn raw_varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v & 0x7f) as u8 | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn key(&mut self, field: u32, wire_type: u8) {
        self.raw_varint((u64::from(field) << 3) | u64::from(wire_type));
    }

    /// `uint32`, `uint64` and enums.
    fn uint(mut self, field: u32, v: u64) -> Self {
        self.key(field, VARINT);
        self.raw_varint(v);
        self
    }

    /// `int32`: sign-extended to 64 bits, so a negative value takes 10 bytes.
    fn int32(self, field: u32, v: i32) -> Self {
        self.uint(field, i64::from(v) as u64)
    }

    fn bool(self, field: u32, v: bool) -> Self {
        self.uint(field, u64::from(v))
    }

    fn fixed64(mut self, field: u32, v: u64) -> Self {
        self.key(field, I64);
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    fn fixed32(mut self, field: u32, v: u32) -> Self {
        self.key(field, I32);
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// `bytes`, and (below) strings and sub-messages: length-delimited.
    fn bytes(mut self, field: u32, v: &[u8]) -> Self {
        self.key(field, LEN);
        self.raw_varint(v.len() as u64);
        self.0.extend_from_slice(v);
        self
    }

    fn string(self, field: u32, v: &str) -> Self {
        self.bytes(field, v.as_bytes())
    }

    fn msg(self, field: u32, m: Enc) -> Self {
        self.bytes(field, &m.0)
    }

    fn done(self) -> Vec<u8> {
        self.0
    }
}

// ---------------------------------------------------------------------------
// Hand-rolled protobuf decoding
// ---------------------------------------------------------------------------

/// One field's value as it is on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Val {
    Varint(u64),
    I64(u64),
    Len(Vec<u8>),
    I32(u32),
}

fn s(v: &str) -> Val {
    Val::Len(v.as_bytes().to_vec())
}

fn b(v: &[u8]) -> Val {
    Val::Len(v.to_vec())
}

fn u(v: u64) -> Val {
    Val::Varint(v)
}

fn read_varint(buf: &[u8], pos: &mut usize) -> u64 {
    let mut v = 0u64;
    for i in 0..10 {
        let byte = *buf.get(*pos).expect("truncated varint");
        *pos += 1;
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return v;
        }
    }
    panic!("varint longer than 10 bytes");
}

fn take<'a>(buf: &'a [u8], pos: &mut usize, n: usize) -> &'a [u8] {
    let out = buf.get(*pos..*pos + n).expect("truncated field");
    *pos += n;
    out
}

/// Every field of a message, in wire order.
fn fields(buf: &[u8]) -> Vec<(u32, Val)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let key = read_varint(buf, &mut pos);
        let field = u32::try_from(key >> 3).expect("field number out of range");
        assert_ne!(field, 0, "field number 0 is invalid");
        let val = match (key & 7) as u8 {
            VARINT => Val::Varint(read_varint(buf, &mut pos)),
            I64 => Val::I64(u64::from_le_bytes(
                take(buf, &mut pos, 8).try_into().unwrap(),
            )),
            LEN => {
                let n = usize::try_from(read_varint(buf, &mut pos)).unwrap();
                Val::Len(take(buf, &mut pos, n).to_vec())
            }
            I32 => Val::I32(u32::from_le_bytes(
                take(buf, &mut pos, 4).try_into().unwrap(),
            )),
            other => panic!("unexpected wire type {other} (groups are not proto3)"),
        };
        out.push((field, val));
    }
    out
}

fn wire_type(val: &Val) -> u8 {
    match val {
        Val::Varint(_) => VARINT,
        Val::I64(_) => I64,
        Val::Len(_) => LEN,
        Val::I32(_) => I32,
    }
}

/// What a seed peer makes of a message: the fields its schema knows (checked
/// for the wire type it expects), and the numbers of those it skipped.
#[derive(Debug)]
struct SeedRead {
    known: Vec<(u32, Val)>,
    skipped: Vec<u32>,
}

/// Reads `buf` knowing only `schema` (field number, wire type), as a decoder
/// generated from the seed `.proto` does: unknown fields are skipped.
fn read_seed(buf: &[u8], schema: &[(u32, u8)]) -> SeedRead {
    let mut read = SeedRead {
        known: Vec::new(),
        skipped: Vec::new(),
    };
    for (field, val) in fields(buf) {
        match schema.iter().find(|(f, _)| *f == field) {
            Some(&(_, expected)) => {
                assert_eq!(
                    wire_type(&val),
                    expected,
                    "seed field {field} has the wrong wire type"
                );
                read.known.push((field, val));
            }
            None => read.skipped.push(field),
        }
    }
    read
}

fn len_field(read: &SeedRead, field: u32) -> &[u8] {
    match read.known.iter().find(|(f, _)| *f == field) {
        Some((_, Val::Len(v))) => v,
        other => panic!("expected length-delimited field {field}, got {other:?}"),
    }
}

/// The seed contracts' schemas, as (field number, wire type).
mod seed {
    use super::{LEN, VARINT};

    pub const FUNCTION: &[(u32, u8)] = &[(1, LEN), (2, LEN), (3, LEN), (4, LEN)];
    pub const EXECUTION_REQUEST: &[(u32, u8)] = &[(1, LEN), (2, LEN), (3, LEN)];
    pub const EXECUTION_RESULT: &[(u32, u8)] = &[(1, LEN), (2, VARINT), (3, LEN), (4, LEN)];
    pub const REGISTER_FUNCTION_REQUEST: &[(u32, u8)] = &[(1, LEN), (2, LEN), (3, LEN)];
    pub const REGISTER_FUNCTION_RESPONSE: &[(u32, u8)] = &[(1, LEN)];
    pub const TRIGGER_EXECUTION_REQUEST: &[(u32, u8)] = &[(1, LEN), (2, LEN)];
    pub const TRIGGER_EXECUTION_RESPONSE: &[(u32, u8)] = &[(1, LEN), (2, LEN)];
    pub const GET_EXECUTION_STATUS_REQUEST: &[(u32, u8)] = &[(1, LEN)];
    pub const GET_EXECUTION_STATUS_RESPONSE: &[(u32, u8)] = &[(1, LEN), (2, LEN), (3, LEN)];
    /// The `message` oneof: hello, result, heartbeat.
    pub const WORKER_MESSAGE: &[(u32, u8)] = &[(1, LEN), (2, LEN), (3, LEN)];
    pub const WORKER_HELLO: &[(u32, u8)] = &[(1, LEN)];
    pub const WORKER_HEARTBEAT: &[(u32, u8)] = &[(1, LEN), (2, VARINT)];
    /// The `message` oneof: execute.
    pub const SCHEDULER_MESSAGE: &[(u32, u8)] = &[(1, LEN)];
}

/// The three-way check for a message without seed sub-messages:
///
/// 1. `seed_bytes` (hand-encoded seed fields) decode to `ours_seed`;
/// 2. `ours_seed` encodes to exactly `seed_fields`;
/// 3. `ours_extended` (the same seed values plus extensions) reads, for a seed
///    peer knowing only `schema`, as `seed_fields`, with exactly the
///    `extensions` skipped.
fn check<M>(
    seed_bytes: Vec<u8>,
    ours_seed: &M,
    seed_fields: &[(u32, Val)],
    ours_extended: &M,
    schema: &[(u32, u8)],
    extensions: &[u32],
) where
    M: Message + Default + PartialEq + std::fmt::Debug,
{
    assert_eq!(
        &M::decode(&seed_bytes[..]).unwrap(),
        ours_seed,
        "seed -> us"
    );
    assert_eq!(
        fields(&ours_seed.encode_to_vec()),
        seed_fields,
        "us -> seed"
    );

    let extended = ours_extended.encode_to_vec();
    let read = read_seed(&extended, schema);
    assert_eq!(read.known, seed_fields, "extended us -> seed: seed fields");
    assert_eq!(read.skipped, extensions, "extended us -> seed: skipped");
    assert_eq!(&M::decode(&extended[..]).unwrap(), ours_extended);
}

// ---------------------------------------------------------------------------
// Sample values
// ---------------------------------------------------------------------------

const CODE: &[u8] = b"def main(x):\n    return x\n\x00\xff";
const PAYLOAD: &[u8] = b"\x01\x02\x03payload\xfe";
const OUTPUT: &[u8] = b"\x00output\x80";

fn seed_function() -> common::Function {
    common::Function {
        function_id: "fn-1".into(),
        name: "echo".into(),
        language: "python".into(),
        code: Bytes::from_static(CODE),
        timeout_ms: 0,
        max_attempts: 0,
        max_memory_bytes: 0,
    }
}

fn seed_execution_request() -> common::ExecutionRequest {
    common::ExecutionRequest {
        execution_id: "ex-1".into(),
        function_id: "fn-1".into(),
        payload: Bytes::from_static(PAYLOAD),
        attempt: 0,
        timeout_ms: 0,
        function: None,
    }
}

fn seed_execution_request_bytes() -> Enc {
    Enc::new()
        .string(1, "ex-1")
        .string(2, "fn-1")
        .bytes(3, PAYLOAD)
}

fn seed_execution_request_fields() -> Vec<(u32, Val)> {
    vec![(1, s("ex-1")), (2, s("fn-1")), (3, b(PAYLOAD))]
}

fn extended_execution_request() -> common::ExecutionRequest {
    common::ExecutionRequest {
        attempt: 3,
        timeout_ms: 30_000,
        function: Some(common::Function {
            timeout_ms: 30_000,
            max_attempts: 5,
            ..seed_function()
        }),
        ..seed_execution_request()
    }
}

fn seed_execution_result() -> common::ExecutionResult {
    common::ExecutionResult {
        execution_id: "ex-1".into(),
        success: true,
        output: Bytes::from_static(OUTPUT),
        error: "warning: slow".into(),
        attempt: 0,
        started_at_us: 0,
        finished_at_us: 0,
        outcome: Outcome::Unspecified as i32,
        logs: String::new(),
    }
}

fn seed_execution_result_bytes() -> Enc {
    Enc::new()
        .string(1, "ex-1")
        .bool(2, true)
        .bytes(3, OUTPUT)
        .string(4, "warning: slow")
}

fn seed_execution_result_fields() -> Vec<(u32, Val)> {
    vec![
        (1, s("ex-1")),
        (2, u(1)),
        (3, b(OUTPUT)),
        (4, s("warning: slow")),
    ]
}

fn extended_execution_result() -> common::ExecutionResult {
    common::ExecutionResult {
        attempt: 3,
        started_at_us: 1_700_000_000_000_000,
        finished_at_us: 1_700_000_000_250_000,
        outcome: Outcome::Succeeded as i32,
        logs: "printed\n".into(),
        ..seed_execution_result()
    }
}

fn sample_info() -> ExecutionInfo {
    ExecutionInfo {
        execution_id: "ex-1".into(),
        function_id: "fn-1".into(),
        status: "COMPLETED".into(),
        output: Bytes::from_static(OUTPUT),
        error: String::new(),
        attempt: 2,
        worker_id: "w-1".into(),
        created_at_us: 1,
        started_at_us: 2,
        finished_at_us: 3,
        logs: String::new(),
    }
}

// ---------------------------------------------------------------------------
// Messages: package common
// ---------------------------------------------------------------------------

#[test]
fn function() {
    check(
        Enc::new()
            .string(1, "fn-1")
            .string(2, "echo")
            .string(3, "python")
            .bytes(4, CODE)
            .done(),
        &seed_function(),
        &[
            (1, s("fn-1")),
            (2, s("echo")),
            (3, s("python")),
            (4, b(CODE)),
        ],
        &common::Function {
            timeout_ms: 5_000,
            max_attempts: 4,
            max_memory_bytes: 1 << 20,
            ..seed_function()
        },
        seed::FUNCTION,
        &[5, 6, 7],
    );
}

#[test]
fn execution_request() {
    check(
        seed_execution_request_bytes().done(),
        &seed_execution_request(),
        &seed_execution_request_fields(),
        &extended_execution_request(),
        seed::EXECUTION_REQUEST,
        &[4, 5, 6],
    );
}

#[test]
fn execution_result() {
    check(
        seed_execution_result_bytes().done(),
        &seed_execution_result(),
        &seed_execution_result_fields(),
        &extended_execution_result(),
        seed::EXECUTION_RESULT,
        &[5, 6, 7, 8, 9],
    );
}

#[test]
fn execution_result_failure() {
    // `success = false` is the default, so it is absent on the wire.
    let ours = common::ExecutionResult {
        success: false,
        output: Bytes::new(),
        error: "boom".into(),
        ..seed_execution_result()
    };
    check(
        Enc::new().string(1, "ex-1").string(4, "boom").done(),
        &ours,
        &[(1, s("ex-1")), (4, s("boom"))],
        &common::ExecutionResult {
            attempt: 1,
            outcome: Outcome::TimedOut as i32,
            ..ours.clone()
        },
        seed::EXECUTION_RESULT,
        &[5, 8],
    );
    // A seed worker that sends `success = false` explicitly.
    let explicit = Enc::new()
        .string(1, "ex-1")
        .bool(2, false)
        .string(4, "boom")
        .done();
    assert_eq!(
        common::ExecutionResult::decode(&explicit[..]).unwrap(),
        ours
    );
}

#[test]
fn outcome_enum_values() {
    for (outcome, n) in [
        (Outcome::Unspecified, 0),
        (Outcome::Succeeded, 1),
        (Outcome::Failed, 2),
        (Outcome::TimedOut, 3),
        (Outcome::Cancelled, 4),
    ] {
        assert_eq!(outcome as i32, n);
        let bytes = Enc::new().uint(8, n as u64).done();
        let decoded = common::ExecutionResult::decode(&bytes[..]).unwrap();
        assert_eq!(decoded.outcome(), outcome);
    }
}

// ---------------------------------------------------------------------------
// Messages: package scheduler
// ---------------------------------------------------------------------------

#[test]
fn register_function_request() {
    let ours = sched::RegisterFunctionRequest {
        name: "echo".into(),
        language: "python".into(),
        code: Bytes::from_static(CODE),
        timeout_ms: 0,
        max_attempts: 0,
        max_memory_bytes: 0,
    };
    check(
        Enc::new()
            .string(1, "echo")
            .string(2, "python")
            .bytes(3, CODE)
            .done(),
        &ours,
        &[(1, s("echo")), (2, s("python")), (3, b(CODE))],
        &sched::RegisterFunctionRequest {
            timeout_ms: 60_000,
            max_attempts: 2,
            max_memory_bytes: 8 << 20,
            ..ours.clone()
        },
        seed::REGISTER_FUNCTION_REQUEST,
        &[4, 5, 6],
    );
}

#[test]
fn register_function_response() {
    let ours = sched::RegisterFunctionResponse {
        function_id: "fn-1".into(),
    };
    check(
        Enc::new().string(1, "fn-1").done(),
        &ours,
        &[(1, s("fn-1"))],
        &ours,
        seed::REGISTER_FUNCTION_RESPONSE,
        &[],
    );
}

#[test]
fn trigger_execution_request() {
    let ours = sched::TriggerExecutionRequest {
        function_id: "fn-1".into(),
        payload: Bytes::from_static(PAYLOAD),
        timeout_ms: 0,
        max_attempts: 0,
        schedule_to_start_timeout_ms: 0,
        idempotency_key: String::new(),
    };
    check(
        Enc::new().string(1, "fn-1").bytes(2, PAYLOAD).done(),
        &ours,
        &[(1, s("fn-1")), (2, b(PAYLOAD))],
        &sched::TriggerExecutionRequest {
            timeout_ms: 1_000,
            max_attempts: 3,
            schedule_to_start_timeout_ms: 10_000,
            idempotency_key: "retry-1".into(),
            ..ours.clone()
        },
        seed::TRIGGER_EXECUTION_REQUEST,
        &[3, 4, 5, 6],
    );
}

#[test]
fn trigger_execution_response() {
    let ours = sched::TriggerExecutionResponse {
        execution_id: "ex-1".into(),
        status: "ACCEPTED".into(),
    };
    check(
        Enc::new().string(1, "ex-1").string(2, "ACCEPTED").done(),
        &ours,
        &[(1, s("ex-1")), (2, s("ACCEPTED"))],
        &ours,
        seed::TRIGGER_EXECUTION_RESPONSE,
        &[],
    );
}

#[test]
fn get_execution_status_request() {
    let ours = sched::GetExecutionStatusRequest {
        execution_id: "ex-1".into(),
    };
    check(
        Enc::new().string(1, "ex-1").done(),
        &ours,
        &[(1, s("ex-1"))],
        &ours,
        seed::GET_EXECUTION_STATUS_REQUEST,
        &[],
    );
}

#[test]
fn get_execution_status_response() {
    let ours = sched::GetExecutionStatusResponse {
        status: "FAILED".into(),
        output: Bytes::from_static(OUTPUT),
        error: "exit 1".into(),
        info: None,
    };
    check(
        Enc::new()
            .string(1, "FAILED")
            .bytes(2, OUTPUT)
            .string(3, "exit 1")
            .done(),
        &ours,
        &[(1, s("FAILED")), (2, b(OUTPUT)), (3, s("exit 1"))],
        &sched::GetExecutionStatusResponse {
            info: Some(sample_info()),
            ..ours.clone()
        },
        seed::GET_EXECUTION_STATUS_RESPONSE,
        &[4],
    );
}

// ---------------------------------------------------------------------------
// Messages: package worker
// ---------------------------------------------------------------------------

#[test]
fn worker_hello() {
    let ours = worker::WorkerHello {
        worker_id: "w-1".into(),
        pool_size: 0,
        caches_functions: false,
        runtimes: vec![],
        holding: vec![],
    };
    check(
        Enc::new().string(1, "w-1").done(),
        &ours,
        &[(1, s("w-1"))],
        &worker::WorkerHello {
            pool_size: 16,
            caches_functions: true,
            runtimes: vec!["wasm".into()],
            holding: vec![worker::HeldAttempt {
                execution_id: "e-1".into(),
                attempt: 2,
            }],
            ..ours.clone()
        },
        seed::WORKER_HELLO,
        &[2, 3, 4, 5],
    );
}

#[test]
fn worker_heartbeat() {
    let ours = worker::WorkerHeartbeat {
        worker_id: "w-1".into(),
        running_tasks: 7,
        queued_tasks: 0,
    };
    check(
        Enc::new().string(1, "w-1").int32(2, 7).done(),
        &ours,
        &[(1, s("w-1")), (2, u(7))],
        &worker::WorkerHeartbeat {
            queued_tasks: 2,
            ..ours.clone()
        },
        seed::WORKER_HEARTBEAT,
        &[3],
    );
}

#[test]
fn worker_heartbeat_negative_running_tasks_is_a_sign_extended_int32() {
    for n in [-1, -3, i32::MIN] {
        // Seed -> us: a negative int32 is a 10-byte varint of the value
        // sign-extended to 64 bits.
        let seed_bytes = Enc::new().string(1, "w-1").int32(2, n).done();
        assert_eq!(seed_bytes.len(), 5 + 1 + 10);
        let decoded = worker::WorkerHeartbeat::decode(&seed_bytes[..]).unwrap();
        assert_eq!(decoded.running_tasks, n);

        // Us -> seed: the same 10-byte encoding, read back as an int32.
        let ours = worker::WorkerHeartbeat {
            worker_id: "w-1".into(),
            running_tasks: n,
            queued_tasks: 0,
        };
        let encoded = ours.encode_to_vec();
        assert_eq!(encoded, seed_bytes);
        let read = read_seed(&encoded, seed::WORKER_HEARTBEAT);
        assert_eq!(read.known, [(1, s("w-1")), (2, u(i64::from(n) as u64))]);
        let Val::Varint(raw) = read.known[1].1 else {
            unreachable!()
        };
        assert_eq!(raw as i32, n, "a seed int32 decoder truncates to 32 bits");
    }
}

#[test]
fn worker_message_hello() {
    let inner = Enc::new().string(1, "w-1");
    let seed_bytes = Enc::new().msg(1, inner).done();
    let ours = worker::WorkerMessage {
        message: Some(worker_message::Message::Hello(worker::WorkerHello {
            worker_id: "w-1".into(),
            pool_size: 0,
            caches_functions: false,
            runtimes: vec![],
            holding: vec![],
        })),
    };
    assert_eq!(
        worker::WorkerMessage::decode(&seed_bytes[..]).unwrap(),
        ours
    );

    let read = read_seed(&ours.encode_to_vec(), seed::WORKER_MESSAGE);
    assert!(read.skipped.is_empty());
    assert_eq!(read.known.len(), 1);
    let hello = read_seed(len_field(&read, 1), seed::WORKER_HELLO);
    assert_eq!(hello.known, [(1, s("w-1"))]);
    assert!(hello.skipped.is_empty());

    // With the pool size extension, a seed scheduler still sees the hello.
    let extended = worker::WorkerMessage {
        message: Some(worker_message::Message::Hello(worker::WorkerHello {
            worker_id: "w-1".into(),
            pool_size: 8,
            caches_functions: false,
            runtimes: vec![],
            holding: vec![],
        })),
    };
    let read = read_seed(&extended.encode_to_vec(), seed::WORKER_MESSAGE);
    let hello = read_seed(len_field(&read, 1), seed::WORKER_HELLO);
    assert_eq!(hello.known, [(1, s("w-1"))]);
    assert_eq!(hello.skipped, [2]);
}

#[test]
fn worker_message_result() {
    let seed_bytes = Enc::new().msg(2, seed_execution_result_bytes()).done();
    let ours = worker::WorkerMessage {
        message: Some(worker_message::Message::Result(seed_execution_result())),
    };
    assert_eq!(
        worker::WorkerMessage::decode(&seed_bytes[..]).unwrap(),
        ours
    );

    let read = read_seed(&ours.encode_to_vec(), seed::WORKER_MESSAGE);
    assert_eq!(read.known.len(), 1);
    let result = read_seed(len_field(&read, 2), seed::EXECUTION_RESULT);
    assert_eq!(result.known, seed_execution_result_fields());
    assert!(result.skipped.is_empty());

    let extended = worker::WorkerMessage {
        message: Some(worker_message::Message::Result(extended_execution_result())),
    };
    let read = read_seed(&extended.encode_to_vec(), seed::WORKER_MESSAGE);
    assert!(read.skipped.is_empty());
    let result = read_seed(len_field(&read, 2), seed::EXECUTION_RESULT);
    assert_eq!(result.known, seed_execution_result_fields());
    assert_eq!(result.skipped, [5, 6, 7, 8, 9]);
}

#[test]
fn worker_message_heartbeat() {
    let inner = Enc::new().string(1, "w-1").int32(2, -2);
    let seed_bytes = Enc::new().msg(3, inner).done();
    let ours = worker::WorkerMessage {
        message: Some(worker_message::Message::Heartbeat(
            worker::WorkerHeartbeat {
                worker_id: "w-1".into(),
                running_tasks: -2,
                queued_tasks: 0,
            },
        )),
    };
    assert_eq!(
        worker::WorkerMessage::decode(&seed_bytes[..]).unwrap(),
        ours
    );

    let read = read_seed(&ours.encode_to_vec(), seed::WORKER_MESSAGE);
    assert_eq!(read.known.len(), 1);
    let hb = read_seed(len_field(&read, 3), seed::WORKER_HEARTBEAT);
    assert_eq!(hb.known, [(1, s("w-1")), (2, u(-2i64 as u64))]);
    assert!(hb.skipped.is_empty());
}

#[test]
fn worker_message_draining_is_skipped_by_a_seed_scheduler() {
    let ours = worker::WorkerMessage {
        message: Some(worker_message::Message::Draining(worker::WorkerDraining {})),
    };
    let encoded = ours.encode_to_vec();
    // An empty sub-message in field 4.
    assert_eq!(fields(&encoded), [(4, b(b""))]);
    let read = read_seed(&encoded, seed::WORKER_MESSAGE);
    assert!(read.known.is_empty());
    assert_eq!(read.skipped, [4]);
}

#[test]
fn scheduler_message_execute() {
    let seed_bytes = Enc::new().msg(1, seed_execution_request_bytes()).done();
    let ours = worker::SchedulerMessage {
        message: Some(scheduler_message::Message::Execute(seed_execution_request())),
    };
    assert_eq!(
        worker::SchedulerMessage::decode(&seed_bytes[..]).unwrap(),
        ours
    );

    let read = read_seed(&ours.encode_to_vec(), seed::SCHEDULER_MESSAGE);
    assert_eq!(read.known.len(), 1);
    let req = read_seed(len_field(&read, 1), seed::EXECUTION_REQUEST);
    assert_eq!(req.known, seed_execution_request_fields());
    assert!(req.skipped.is_empty());

    // Attempt, timeout and the full function definition: a seed worker skips
    // them and still gets its execution.
    let extended = worker::SchedulerMessage {
        message: Some(scheduler_message::Message::Execute(
            extended_execution_request(),
        )),
    };
    let read = read_seed(&extended.encode_to_vec(), seed::SCHEDULER_MESSAGE);
    assert!(read.skipped.is_empty());
    let req = read_seed(len_field(&read, 1), seed::EXECUTION_REQUEST);
    assert_eq!(req.known, seed_execution_request_fields());
    assert_eq!(req.skipped, [4, 5, 6]);
}

#[test]
fn scheduler_message_cancel_is_skipped_by_a_seed_worker() {
    let ours = worker::SchedulerMessage {
        message: Some(scheduler_message::Message::Cancel(worker::CancelRequest {
            execution_id: "ex-1".into(),
            attempt: 2,
        })),
    };
    let encoded = ours.encode_to_vec();
    let read = read_seed(&encoded, seed::SCHEDULER_MESSAGE);
    assert!(read.known.is_empty());
    assert_eq!(read.skipped, [2]);
    let Some((2, Val::Len(cancel))) = fields(&encoded).pop() else {
        panic!("cancel is not field 2")
    };
    assert_eq!(fields(&cancel), [(1, s("ex-1")), (2, u(2))]);
}

// ---------------------------------------------------------------------------
// Decoding: unknown fields and zero-copy payloads
// ---------------------------------------------------------------------------

#[test]
fn fields_from_a_newer_peer_are_skipped() {
    // Fields we do not know, of every wire type, around the seed fields.
    let bytes = Enc::new()
        .uint(100, 42)
        .string(1, "ex-1")
        .fixed64(101, u64::MAX)
        .bool(2, true)
        .bytes(102, b"whatever")
        .bytes(3, OUTPUT)
        .fixed32(103, 7)
        .msg(104, Enc::new().string(1, "nested"))
        .string(4, "warning: slow")
        .done();
    assert_eq!(
        common::ExecutionResult::decode(&bytes[..]).unwrap(),
        seed_execution_result()
    );
}

#[test]
fn bytes_fields_are_zero_copy() {
    let buf = Bytes::from(Enc::new().msg(1, seed_execution_request_bytes()).done());
    let msg = worker::SchedulerMessage::decode(buf.clone()).unwrap();
    let Some(scheduler_message::Message::Execute(req)) = msg.message else {
        panic!("not an execute");
    };
    let payload: &Bytes = &req.payload;
    assert_eq!(payload, PAYLOAD);
    let range = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
    assert!(
        range.contains(&(payload.as_ptr() as usize)),
        "the payload was copied out of the input buffer"
    );
}

// ---------------------------------------------------------------------------
// gRPC: in-memory plumbing
// ---------------------------------------------------------------------------

/// Drives an in-memory future to completion. Everything in these tests is
/// immediately ready, so no waker is ever needed.
fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..1_000 {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
    }
    panic!("an in-memory future did not complete");
}

/// A gRPC length-prefixed message: uncompressed flag, big-endian length.
fn grpc_frame(msg: &[u8]) -> Bytes {
    let mut out = vec![0u8];
    out.extend_from_slice(&u32::try_from(msg.len()).unwrap().to_be_bytes());
    out.extend_from_slice(msg);
    out.into()
}

/// Splits a gRPC body into its messages.
fn grpc_messages(mut data: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while !data.is_empty() {
        assert!(data.len() >= 5, "truncated gRPC frame header");
        assert_eq!(data[0], 0, "compressed gRPC frame");
        let len = u32::from_be_bytes(data[1..5].try_into().unwrap()) as usize;
        out.push(data[5..5 + len].to_vec());
        data = &data[5 + len..];
    }
    out
}

/// An in-memory HTTP body: data frames, then optional trailers.
#[derive(Debug)]
struct TestBody {
    data: VecDeque<Bytes>,
    trailers: Option<http::HeaderMap>,
}

impl TestBody {
    fn grpc(messages: &[Vec<u8>], trailers: Option<http::HeaderMap>) -> Self {
        Self {
            data: messages.iter().map(|m| grpc_frame(m)).collect(),
            trailers,
        }
    }
}

impl HttpBody for TestBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(data) = self.data.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_empty() && self.trailers.is_none()
    }
}

fn ok_trailers() -> http::HeaderMap {
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    trailers
}

/// Reads a whole body: its gRPC messages and its trailers.
fn read_body<B>(body: B) -> (Vec<Vec<u8>>, Option<http::HeaderMap>)
where
    B: HttpBody<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let mut body = pin!(body);
    let mut data = Vec::new();
    let mut trailers = None;
    block_on(future::poll_fn(|cx| {
        loop {
            match body.as_mut().poll_frame(cx) {
                Poll::Ready(Some(frame)) => match frame.unwrap().into_data() {
                    Ok(chunk) => data.extend_from_slice(&chunk),
                    Err(frame) => trailers = frame.into_trailers().ok(),
                },
                Poll::Ready(None) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
    }));
    (grpc_messages(&data), trailers)
}

/// Sends a seed client's request (hand-encoded messages) to one of our
/// generated servers; returns the response's messages and its grpc-status.
fn call_server<S>(server: &mut S, path: &str, messages: &[Vec<u8>]) -> (Vec<Vec<u8>>, String)
where
    S: tonic::codegen::Service<
            http::Request<TestBody>,
            Response = http::Response<tonic::body::Body>,
            Error = Infallible,
        >,
{
    let req = http::Request::builder()
        .method("POST")
        .uri(format!("http://scheduler.test{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(TestBody::grpc(messages, None))
        .unwrap();
    let Ok(resp) = block_on(server.call(req));
    let (parts, body) = resp.into_parts();
    if let Some(status) = parts.headers.get("grpc-status") {
        // A trailers-only response: an error before any message.
        return (Vec::new(), status.to_str().unwrap().to_owned());
    }
    let (out, trailers) = read_body(body);
    let trailers = trailers.expect("no trailers");
    let status = trailers["grpc-status"].to_str().unwrap().to_owned();
    (out, status)
}

// ---------------------------------------------------------------------------
// gRPC: service names and paths
// ---------------------------------------------------------------------------

#[test]
fn service_names_are_the_seeds() {
    assert_eq!(
        scheduler_service_server::SERVICE_NAME,
        "scheduler.SchedulerService"
    );
    assert_eq!(
        <SchedulerServiceServer<TestScheduler> as NamedService>::NAME,
        "scheduler.SchedulerService"
    );
    assert_eq!(worker_service_server::SERVICE_NAME, "worker.WorkerService");
    assert_eq!(
        <WorkerServiceServer<TestWorker> as NamedService>::NAME,
        "worker.WorkerService"
    );
}

/// Our scheduler, as far as these tests need one: the seed RPCs answer from
/// what they were sent; the rest are not called.
#[derive(Debug)]
struct TestScheduler;

fn not_called<T>() -> Result<T, Status> {
    Err(Status::unimplemented("not used in this test"))
}

#[tonic::async_trait]
impl SchedulerService for TestScheduler {
    async fn register_function(
        &self,
        request: Request<sched::RegisterFunctionRequest>,
    ) -> Result<Response<sched::RegisterFunctionResponse>, Status> {
        let r = request.into_inner();
        Ok(Response::new(sched::RegisterFunctionResponse {
            function_id: format!("{}/{}/{}", r.name, r.language, r.code.len()),
        }))
    }

    async fn trigger_execution(
        &self,
        request: Request<sched::TriggerExecutionRequest>,
    ) -> Result<Response<sched::TriggerExecutionResponse>, Status> {
        let r = request.into_inner();
        assert_eq!(r.payload, PAYLOAD);
        Ok(Response::new(sched::TriggerExecutionResponse {
            execution_id: format!("ex-of-{}", r.function_id),
            status: "ACCEPTED".into(),
        }))
    }

    async fn get_execution_status(
        &self,
        request: Request<sched::GetExecutionStatusRequest>,
    ) -> Result<Response<sched::GetExecutionStatusResponse>, Status> {
        let r = request.into_inner();
        // With the `info` extension set: a seed client skips it.
        Ok(Response::new(sched::GetExecutionStatusResponse {
            status: "COMPLETED".into(),
            output: Bytes::from_static(OUTPUT),
            error: format!("none for {}", r.execution_id),
            info: Some(sample_info()),
        }))
    }

    type TriggerAndWatchExecutionStream = tokio_stream::Empty<Result<ExecutionInfo, Status>>;

    async fn trigger_and_watch_execution(
        &self,
        _: Request<sched::TriggerExecutionRequest>,
    ) -> Result<Response<Self::TriggerAndWatchExecutionStream>, Status> {
        not_called()
    }

    type WatchExecutionStream = tokio_stream::Empty<Result<ExecutionInfo, Status>>;

    async fn watch_execution(
        &self,
        _: Request<sched::WatchExecutionRequest>,
    ) -> Result<Response<Self::WatchExecutionStream>, Status> {
        not_called()
    }

    async fn list_functions(
        &self,
        _: Request<sched::ListFunctionsRequest>,
    ) -> Result<Response<sched::ListFunctionsResponse>, Status> {
        not_called()
    }

    async fn get_function(
        &self,
        _: Request<sched::GetFunctionRequest>,
    ) -> Result<Response<common::Function>, Status> {
        not_called()
    }

    async fn delete_function(
        &self,
        _: Request<sched::DeleteFunctionRequest>,
    ) -> Result<Response<sched::DeleteFunctionResponse>, Status> {
        not_called()
    }

    async fn list_executions(
        &self,
        _: Request<sched::ListExecutionsRequest>,
    ) -> Result<Response<sched::ListExecutionsResponse>, Status> {
        not_called()
    }

    async fn cancel_execution(
        &self,
        _: Request<sched::CancelExecutionRequest>,
    ) -> Result<Response<sched::CancelExecutionResponse>, Status> {
        not_called()
    }

    async fn list_workers(
        &self,
        _: Request<sched::ListWorkersRequest>,
    ) -> Result<Response<sched::ListWorkersResponse>, Status> {
        not_called()
    }

    async fn get_cluster_stats(
        &self,
        _: Request<sched::GetClusterStatsRequest>,
    ) -> Result<Response<sched::ClusterStats>, Status> {
        not_called()
    }
}

#[test]
fn seed_client_reaches_our_scheduler_server() {
    let mut server = SchedulerServiceServer::new(TestScheduler);

    let (out, status) = call_server(
        &mut server,
        "/scheduler.SchedulerService/RegisterFunction",
        &[Enc::new()
            .string(1, "echo")
            .string(2, "python")
            .bytes(3, CODE)
            .done()],
    );
    assert_eq!(status, "0");
    assert_eq!(out.len(), 1);
    let read = read_seed(&out[0], seed::REGISTER_FUNCTION_RESPONSE);
    assert_eq!(read.known, [(1, s(&format!("echo/python/{}", CODE.len())))]);

    let (out, status) = call_server(
        &mut server,
        "/scheduler.SchedulerService/TriggerExecution",
        &[Enc::new().string(1, "fn-1").bytes(2, PAYLOAD).done()],
    );
    assert_eq!(status, "0");
    assert_eq!(out.len(), 1);
    let read = read_seed(&out[0], seed::TRIGGER_EXECUTION_RESPONSE);
    assert_eq!(read.known, [(1, s("ex-of-fn-1")), (2, s("ACCEPTED"))]);

    let (out, status) = call_server(
        &mut server,
        "/scheduler.SchedulerService/GetExecutionStatus",
        &[Enc::new().string(1, "ex-1").done()],
    );
    assert_eq!(status, "0");
    assert_eq!(out.len(), 1);
    let read = read_seed(&out[0], seed::GET_EXECUTION_STATUS_RESPONSE);
    assert_eq!(
        read.known,
        [(1, s("COMPLETED")), (2, b(OUTPUT)), (3, s("none for ex-1"))]
    );
    assert_eq!(read.skipped, [4]);

    // The control: a path the server does not have is UNIMPLEMENTED (12).
    let (out, status) = call_server(
        &mut server,
        "/scheduler.SchedulerService/NoSuchMethod",
        &[Vec::new()],
    );
    assert!(out.is_empty());
    assert_eq!(status, "12");
}

/// Our scheduler's end of the worker stream, as far as these tests need it:
/// records what the worker sent, then sends it one execution.
#[derive(Debug, Default)]
struct TestWorker {
    received: Arc<Mutex<Vec<worker::WorkerMessage>>>,
}

#[tonic::async_trait]
impl WorkerService for TestWorker {
    type WorkerStreamStream =
        tokio_stream::Iter<std::vec::IntoIter<Result<worker::SchedulerMessage, Status>>>;

    async fn worker_stream(
        &self,
        request: Request<Streaming<worker::WorkerMessage>>,
    ) -> Result<Response<Self::WorkerStreamStream>, Status> {
        let mut stream = request.into_inner();
        while let Some(msg) = stream.message().await? {
            self.received.lock().unwrap().push(msg);
        }
        let execute = worker::SchedulerMessage {
            message: Some(scheduler_message::Message::Execute(
                extended_execution_request(),
            )),
        };
        Ok(Response::new(tokio_stream::iter(vec![Ok(execute)])))
    }
}

#[test]
fn seed_worker_reaches_our_worker_stream_server() {
    let received = Arc::default();
    let mut server = WorkerServiceServer::new(TestWorker {
        received: Arc::clone(&received),
    });
    let hello = Enc::new().msg(1, Enc::new().string(1, "w-1")).done();
    let result = Enc::new().msg(2, seed_execution_result_bytes()).done();
    let heartbeat = Enc::new()
        .msg(3, Enc::new().string(1, "w-1").int32(2, 1))
        .done();

    let (out, status) = call_server(
        &mut server,
        "/worker.WorkerService/WorkerStream",
        &[hello, result, heartbeat],
    );
    assert_eq!(status, "0");

    assert_eq!(
        *received.lock().unwrap(),
        [
            worker::WorkerMessage {
                message: Some(worker_message::Message::Hello(worker::WorkerHello {
                    worker_id: "w-1".into(),
                    pool_size: 0,
                    caches_functions: false,
                    runtimes: vec![],
                    holding: vec![],
                })),
            },
            worker::WorkerMessage {
                message: Some(worker_message::Message::Result(seed_execution_result())),
            },
            worker::WorkerMessage {
                message: Some(worker_message::Message::Heartbeat(
                    worker::WorkerHeartbeat {
                        worker_id: "w-1".into(),
                        running_tasks: 1,
                        queued_tasks: 0,
                    }
                )),
            },
        ]
    );

    assert_eq!(out.len(), 1);
    let read = read_seed(&out[0], seed::SCHEDULER_MESSAGE);
    assert!(read.skipped.is_empty());
    let req = read_seed(len_field(&read, 1), seed::EXECUTION_REQUEST);
    assert_eq!(req.known, seed_execution_request_fields());
    assert_eq!(req.skipped, [4, 5, 6]);
}

/// One call a [`SeedServer`] received: its path and its request messages.
type Call = (String, Vec<Vec<u8>>);

/// A seed server, for our generated clients: records each call's path and
/// request messages, and answers with hand-encoded messages.
#[derive(Debug, Clone)]
struct SeedServer {
    calls: Arc<Mutex<Vec<Call>>>,
    reply: Vec<Vec<u8>>,
}

impl SeedServer {
    fn new(reply: Vec<Vec<u8>>) -> Self {
        Self {
            calls: Arc::default(),
            reply,
        }
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

impl tonic::codegen::Service<http::Request<tonic::body::Body>> for SeedServer {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let path = req.uri().path().to_owned();
        let (messages, _) = read_body(req.into_body());
        self.calls.lock().unwrap().push((path, messages));
        let body = TestBody::grpc(&self.reply, Some(ok_trailers()));
        let resp = http::Response::builder()
            .header("content-type", "application/grpc")
            .body(tonic::body::Body::new(body))
            .unwrap();
        future::ready(Ok(resp))
    }
}

#[test]
fn our_scheduler_client_talks_to_a_seed_server() {
    let server = SeedServer::new(vec![Enc::new().string(1, "fn-9").done()]);
    let mut client = SchedulerServiceClient::new(server.clone());
    let resp = block_on(client.register_function(sched::RegisterFunctionRequest {
        name: "echo".into(),
        language: "python".into(),
        code: Bytes::from_static(CODE),
        timeout_ms: 0,
        max_attempts: 0,
        max_memory_bytes: 0,
    }))
    .unwrap();
    assert_eq!(resp.into_inner().function_id, "fn-9");

    let server2 = SeedServer::new(vec![
        Enc::new().string(1, "ex-9").string(2, "ACCEPTED").done(),
    ]);
    let mut client = SchedulerServiceClient::new(server2.clone());
    let resp = block_on(client.trigger_execution(sched::TriggerExecutionRequest {
        function_id: "fn-9".into(),
        payload: Bytes::from_static(PAYLOAD),
        timeout_ms: 0,
        max_attempts: 0,
        schedule_to_start_timeout_ms: 0,
        idempotency_key: String::new(),
    }))
    .unwrap()
    .into_inner();
    assert_eq!(
        (resp.execution_id.as_str(), resp.status.as_str()),
        ("ex-9", "ACCEPTED")
    );

    let server3 = SeedServer::new(vec![
        Enc::new()
            .string(1, "RUNNING")
            .bytes(2, b"")
            .string(3, "")
            .done(),
    ]);
    let mut client = SchedulerServiceClient::new(server3.clone());
    let resp = block_on(
        client.get_execution_status(sched::GetExecutionStatusRequest {
            execution_id: "ex-9".into(),
        }),
    )
    .unwrap()
    .into_inner();
    assert_eq!(
        resp,
        sched::GetExecutionStatusResponse {
            status: "RUNNING".into(),
            output: Bytes::new(),
            error: String::new(),
            info: None,
        }
    );

    assert_eq!(
        server.calls(),
        [(
            "/scheduler.SchedulerService/RegisterFunction".to_owned(),
            vec![
                Enc::new()
                    .string(1, "echo")
                    .string(2, "python")
                    .bytes(3, CODE)
                    .done()
            ]
        )]
    );
    assert_eq!(
        server2.calls(),
        [(
            "/scheduler.SchedulerService/TriggerExecution".to_owned(),
            vec![Enc::new().string(1, "fn-9").bytes(2, PAYLOAD).done()]
        )]
    );
    assert_eq!(
        server3.calls(),
        [(
            "/scheduler.SchedulerService/GetExecutionStatus".to_owned(),
            vec![Enc::new().string(1, "ex-9").done()]
        )]
    );
}

#[test]
fn extension_rpc_paths() {
    // Not seed RPCs, but their paths are contract too.
    let server = SeedServer::new(Vec::new());
    let mut client = SchedulerServiceClient::new(server.clone());
    let _ = block_on(client.watch_execution(sched::WatchExecutionRequest::default()));
    let _ = block_on(client.list_functions(sched::ListFunctionsRequest::default()));
    let _ = block_on(client.get_function(sched::GetFunctionRequest::default()));
    let _ = block_on(client.list_executions(sched::ListExecutionsRequest::default()));
    let _ = block_on(client.cancel_execution(sched::CancelExecutionRequest::default()));
    let _ = block_on(client.list_workers(sched::ListWorkersRequest::default()));
    let _ = block_on(client.get_cluster_stats(sched::GetClusterStatsRequest::default()));
    let paths: Vec<String> = server.calls().into_iter().map(|(p, _)| p).collect();
    assert_eq!(
        paths,
        [
            "/scheduler.SchedulerService/WatchExecution",
            "/scheduler.SchedulerService/ListFunctions",
            "/scheduler.SchedulerService/GetFunction",
            "/scheduler.SchedulerService/ListExecutions",
            "/scheduler.SchedulerService/CancelExecution",
            "/scheduler.SchedulerService/ListWorkers",
            "/scheduler.SchedulerService/GetClusterStats",
        ]
    );
}

#[test]
fn our_worker_client_talks_to_a_seed_scheduler() {
    let execute = Enc::new().msg(1, seed_execution_request_bytes()).done();
    let server = SeedServer::new(vec![execute]);
    let mut client = WorkerServiceClient::new(server.clone());

    let outbound = vec![
        worker::WorkerMessage {
            message: Some(worker_message::Message::Hello(worker::WorkerHello {
                worker_id: "w-1".into(),
                pool_size: 4,
                caches_functions: false,
                runtimes: vec![],
                holding: vec![],
            })),
        },
        worker::WorkerMessage {
            message: Some(worker_message::Message::Result(extended_execution_result())),
        },
    ];
    let resp = block_on(client.worker_stream(tokio_stream::iter(outbound))).unwrap();
    let mut inbound = resp.into_inner();
    assert_eq!(
        block_on(inbound.message()).unwrap(),
        Some(worker::SchedulerMessage {
            message: Some(scheduler_message::Message::Execute(seed_execution_request())),
        })
    );
    assert_eq!(block_on(inbound.message()).unwrap(), None);

    let calls = server.calls();
    assert_eq!(calls.len(), 1);
    let (path, sent) = &calls[0];
    assert_eq!(path, "/worker.WorkerService/WorkerStream");
    assert_eq!(sent.len(), 2);

    let hello = read_seed(&sent[0], seed::WORKER_MESSAGE);
    let hello = read_seed(len_field(&hello, 1), seed::WORKER_HELLO);
    assert_eq!(hello.known, [(1, s("w-1"))]);
    assert_eq!(hello.skipped, [2]);

    let result = read_seed(&sent[1], seed::WORKER_MESSAGE);
    let result = read_seed(len_field(&result, 2), seed::EXECUTION_RESULT);
    assert_eq!(result.known, seed_execution_result_fields());
    assert_eq!(result.skipped, [5, 6, 7, 8, 9]);
}
