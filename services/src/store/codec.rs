//! The line format of the JSON Lines store.
//!
//! One record per line: a JSON object whose `"type"` says which record it is
//! (`function`, `function_deleted`, `accepted`, `started`, `finished`,
//! `evicted`). The files are
//! meant to be read by people with `grep`, `jq` and `tail -f`, so:
//! - bytes (a payload, an output, a function's code) are written as a JSON
//!   string when they are valid UTF-8 (`"payload": "{\"a\":1}"`), and only
//!   otherwise as base64 under the same name with `_b64` appended
//!   (`"payload_b64": "/w=="`);
//! - execution ids are the 16 hex digits they are shown as everywhere else;
//! - durations are whole milliseconds in fields ending in `_ms`, timestamps
//!   microseconds in fields ending in `_us`;
//! - terminal states use the API's spellings (`COMPLETED`, `FAILED`, `CANCELLED`);
//! - long fields come last, so the start of a line says what it is about.
//!
//! Unknown fields are ignored when reading, so a newer writer can add optional
//! fields without breaking an older reader.
//!
//! The history's segments hold one more kind of line, `done`: a finished
//! execution whole (its acceptance without the payload, and its end), so that
//! one read at its location answers everything about it.

use std::borrow::Cow;
use std::io;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use taskforge_core::{ExecutionId, Policy, Status, Terminal};

use super::{
    ExecutionRecord, FinishedExecution, FinishedRecord, FunctionRecord, IdempotencyKey, Record,
};

/// Appends `record` to `out` as one line, newline included. On error `out` may
/// hold part of a line; the caller truncates it back.
pub(crate) fn encode(record: &Record, out: &mut Vec<u8>) -> serde_json::Result<()> {
    serde_json::to_writer(&mut *out, &Line::from(record))?;
    out.push(b'\n');
    Ok(())
}

/// The length of `record`'s line, newline included, counted without building
/// the line.
pub(crate) fn encoded_len(record: &Record) -> serde_json::Result<u64> {
    let mut counter = ByteCounter(0);
    serde_json::to_writer(&mut counter, &Line::from(record))?;
    Ok(counter.0 + 1)
}

/// A writer that keeps only the number of bytes written to it.
struct ByteCounter(u64);

impl io::Write for ByteCounter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0 += bytes.len() as u64;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Reads one line (without its newline). The error says what is wrong with it,
/// for a message that also names the file and line.
pub(crate) fn decode(line: &[u8]) -> Result<Record, String> {
    let line: Line<'static> = serde_json::from_slice(line).map_err(describe)?;
    line.into_record()
}

/// Appends a finished execution to `out` as one `done` line, newline
/// included.
pub(crate) fn encode_done(done: &FinishedExecution, out: &mut Vec<u8>) -> serde_json::Result<()> {
    let record = &done.record;
    let finished = &done.finished;
    let end = WireEnd::new(&finished.terminal);
    let line = DoneLine {
        kind: Cow::Borrowed(DONE),
        id: HexId(record.id),
        function_id: Cow::Borrowed(&record.function_id),
        status: Cow::Borrowed(finished.terminal.status().as_str()),
        attempt: finished.attempt,
        worker_id: Cow::Borrowed(&finished.worker_id),
        created_at_us: record.created_at_us,
        started_at_us: finished.started_at_us,
        finished_at_us: finished.finished_at_us,
        policy: WirePolicy::new(&record.policy),
        idempotency_key: record
            .idempotency
            .as_ref()
            .map(|claim| Cow::Borrowed(claim.key.as_str())),
        request_digest: record
            .idempotency
            .as_ref()
            .map(|claim| Cow::Owned(format!("{:016x}", claim.digest))),
        error: end.error,
        output: end.output.text,
        output_b64: end.output.base64,
        logs: (!finished.logs.is_empty()).then_some(Cow::Borrowed(finished.logs.as_str())),
    };
    serde_json::to_writer(&mut *out, &line)?;
    out.push(b'\n');
    Ok(())
}

/// Reads a `done` line (without its newline) back whole.
pub(crate) fn decode_done(line: &[u8]) -> Result<FinishedExecution, String> {
    let line: DoneLine<'_> = serde_json::from_slice(line).map_err(describe)?;
    if line.kind != DONE {
        return Err(format!("a {:?} line where a done line belongs", line.kind));
    }
    let terminal = terminal_of(
        &line.status,
        line.error,
        WireBytes {
            text: line.output,
            base64: line.output_b64,
        },
    )?;
    Ok(FinishedExecution {
        record: ExecutionRecord {
            id: line.id.0,
            function_id: line.function_id.into_owned(),
            payload: Bytes::new(),
            policy: line.policy.into_policy(),
            created_at_us: line.created_at_us,
            idempotency: idempotency_of(line.idempotency_key, line.request_digest)?,
        },
        finished: FinishedRecord {
            terminal,
            attempt: line.attempt,
            worker_id: line.worker_id.into_owned(),
            started_at_us: line.started_at_us,
            finished_at_us: line.finished_at_us,
            logs: line.logs.map(Cow::into_owned).unwrap_or_default(),
        },
    })
}

/// What a start needs of a `done` line, read without copying its long
/// fields (output, error, logs are skipped over).
#[derive(Debug)]
pub(crate) struct DoneSummary<'a> {
    pub(crate) id: ExecutionId,
    pub(crate) function_id: Cow<'a, str>,
    pub(crate) status: Status,
    pub(crate) attempt: u32,
    pub(crate) created_at_us: u64,
    pub(crate) finished_at_us: u64,
    pub(crate) idempotency: Option<IdempotencyKey>,
}

pub(crate) fn decode_done_summary(line: &[u8]) -> Result<DoneSummary<'_>, String> {
    let head: DoneHead<'_> = serde_json::from_slice(line).map_err(describe)?;
    if head.kind != DONE {
        return Err(format!("a {:?} line where a done line belongs", head.kind));
    }
    let status = Status::parse(&head.status)
        .filter(|status| status.is_terminal())
        .ok_or_else(|| not_terminal(&head.status))?;
    Ok(DoneSummary {
        id: head.id.0,
        function_id: head.function_id,
        status,
        attempt: head.attempt,
        created_at_us: head.created_at_us,
        finished_at_us: head.finished_at_us,
        idempotency: idempotency_of(head.idempotency_key, head.request_digest)?,
    })
}

const DONE: &str = "done";

/// A finished execution as a history segment holds it. Borrows when writing;
/// borrows what it can when reading.
#[derive(Serialize, Deserialize)]
struct DoneLine<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    id: HexId,
    #[serde(borrow)]
    function_id: Cow<'a, str>,
    #[serde(borrow)]
    status: Cow<'a, str>,
    attempt: u32,
    #[serde(borrow)]
    worker_id: Cow<'a, str>,
    created_at_us: u64,
    started_at_us: u64,
    finished_at_us: u64,
    policy: WirePolicy,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    idempotency_key: Option<Cow<'a, str>>,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    request_digest: Option<Cow<'a, str>>,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    error: Option<Cow<'a, str>>,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    output: Option<Cow<'a, str>>,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    output_b64: Option<Cow<'a, str>>,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    logs: Option<Cow<'a, str>>,
}

/// The leading fields of a [`DoneLine`]; the rest is skipped.
#[derive(Deserialize)]
struct DoneHead<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    id: HexId,
    #[serde(borrow)]
    function_id: Cow<'a, str>,
    #[serde(borrow)]
    status: Cow<'a, str>,
    attempt: u32,
    created_at_us: u64,
    finished_at_us: u64,
    #[serde(default, borrow)]
    idempotency_key: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    request_digest: Option<Cow<'a, str>>,
}

/// The end of an execution as fields of a line.
struct WireEnd<'a> {
    error: Option<Cow<'a, str>>,
    output: WireBytes<'a>,
}

impl<'a> WireEnd<'a> {
    fn new(terminal: &'a Terminal) -> WireEnd<'a> {
        let (error, output) = match terminal {
            Terminal::Completed { output } => (None, Some(WireBytes::new(output))),
            Terminal::Failed { error, output } => (
                Some(Cow::Borrowed(error.as_str())),
                Some(WireBytes::new(output)),
            ),
            Terminal::TimedOut { error } => (Some(Cow::Borrowed(error.as_str())), None),
            Terminal::Cancelled => (None, None),
        };
        WireEnd {
            error,
            output: output.unwrap_or(WireBytes {
                text: None,
                base64: None,
            }),
        }
    }
}

fn not_terminal(status: &str) -> String {
    format!(
        "status {status:?} is not a terminal state \
         (expected COMPLETED, FAILED, TIMED_OUT or CANCELLED)"
    )
}

fn terminal_of(
    status: &str,
    error: Option<Cow<'_, str>>,
    output: WireBytes<'_>,
) -> Result<Terminal, String> {
    let output = output.into_bytes("output")?;
    Ok(match Status::parse(status) {
        Some(Status::Completed) => Terminal::Completed { output },
        Some(Status::Failed) => Terminal::Failed {
            error: error.map(Cow::into_owned).unwrap_or_default(),
            output,
        },
        Some(Status::TimedOut) => Terminal::TimedOut {
            error: error.map(Cow::into_owned).unwrap_or_default(),
        },
        Some(Status::Cancelled) => Terminal::Cancelled,
        _ => return Err(not_terminal(status)),
    })
}

fn idempotency_of(
    key: Option<Cow<'_, str>>,
    digest: Option<Cow<'_, str>>,
) -> Result<Option<IdempotencyKey>, String> {
    match (key, digest) {
        (None, None) => Ok(None),
        (Some(key), Some(digest)) => Ok(Some(IdempotencyKey {
            key: key.into_owned(),
            digest: u64::from_str_radix(&digest, 16)
                .map_err(|_| format!("request_digest {digest:?} is not 16 hex digits"))?,
        })),
        _ => Err("idempotency_key and request_digest come together or not at all".to_string()),
    }
}

/// serde_json locates errors by line and column; a log line is always line 1 of
/// its own parse, so only the column is worth reporting.
fn describe(err: serde_json::Error) -> String {
    let full = err.to_string();
    let suffix = format!(" at line {} column {}", err.line(), err.column());
    match full.strip_suffix(&suffix) {
        Some(message) => format!("{message} (at column {})", err.column()),
        None => full,
    }
}

/// A record as it appears in a file. Borrows from the record when writing;
/// owns everything when reading.
#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Line<'a> {
    Function {
        function_id: Cow<'a, str>,
        name: Cow<'a, str>,
        language: Cow<'a, str>,
        timeout_ms: u64,
        max_attempts: u32,
        #[serde(default, skip_serializing_if = "is_zero")]
        max_memory_bytes: u64,
        created_at_us: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<Cow<'a, str>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code_b64: Option<Cow<'a, str>>,
    },
    FunctionDeleted {
        function_id: Cow<'a, str>,
    },
    Accepted {
        id: HexId,
        function_id: Cow<'a, str>,
        policy: WirePolicy,
        created_at_us: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        idempotency_key: Option<Cow<'a, str>>,
        /// 16 hex digits; present with `idempotency_key`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request_digest: Option<Cow<'a, str>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        payload: Option<Cow<'a, str>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        payload_b64: Option<Cow<'a, str>>,
    },
    Started {
        id: HexId,
        attempt: u32,
        worker_id: Cow<'a, str>,
        started_at_us: u64,
    },
    Finished {
        id: HexId,
        status: Cow<'a, str>,
        attempt: u32,
        worker_id: Cow<'a, str>,
        started_at_us: u64,
        finished_at_us: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<Cow<'a, str>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output: Option<Cow<'a, str>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output_b64: Option<Cow<'a, str>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        logs: Option<Cow<'a, str>>,
    },
    Evicted {
        id: HexId,
    },
}

#[derive(Serialize, Deserialize)]
struct WirePolicy {
    max_attempts: u32,
    timeout_ms: u64,
    /// `null`: waits for a start indefinitely.
    schedule_to_start_ms: Option<u64>,
}

impl WirePolicy {
    fn new(policy: &Policy) -> WirePolicy {
        WirePolicy {
            max_attempts: policy.max_attempts,
            timeout_ms: millis(policy.timeout),
            schedule_to_start_ms: policy.schedule_to_start.map(millis),
        }
    }

    fn into_policy(self) -> Policy {
        Policy {
            max_attempts: self.max_attempts,
            timeout: Duration::from_millis(self.timeout_ms),
            schedule_to_start: self.schedule_to_start_ms.map(Duration::from_millis),
        }
    }
}

/// An execution id in its 16-hex-digit form.
struct HexId(ExecutionId);

impl Serialize for HexId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for HexId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Cow::<str>::deserialize(deserializer)?;
        ExecutionId::parse(&text).map(HexId).ok_or_else(|| {
            D::Error::custom(format_args!(
                "invalid execution id {text:?}: expected 16 hex digits"
            ))
        })
    }
}

/// The two ways a bytes field can be written: exactly one is `Some`.
struct WireBytes<'a> {
    text: Option<Cow<'a, str>>,
    base64: Option<Cow<'a, str>>,
}

impl<'a> WireBytes<'a> {
    fn new(bytes: &'a [u8]) -> WireBytes<'a> {
        match std::str::from_utf8(bytes) {
            Ok(text) => WireBytes {
                text: Some(Cow::Borrowed(text)),
                base64: None,
            },
            Err(_) => WireBytes {
                text: None,
                base64: Some(Cow::Owned(BASE64.encode(bytes))),
            },
        }
    }

    /// Reads the field `name` back. A missing field is empty, not an error: an
    /// empty value carries nothing that could be lost.
    fn into_bytes(self, name: &str) -> Result<Bytes, String> {
        match (self.text, self.base64) {
            (Some(_), Some(_)) => Err(format!("both {name} and {name}_b64 are set")),
            (Some(text), None) => Ok(Bytes::from(text.into_owned())),
            (None, Some(encoded)) => BASE64
                .decode(encoded.as_bytes())
                .map(Bytes::from)
                .map_err(|err| format!("{name}_b64 is not valid base64: {err}")),
            (None, None) => Ok(Bytes::new()),
        }
    }
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl<'a> From<&'a Record> for Line<'a> {
    fn from(record: &'a Record) -> Line<'a> {
        match record {
            Record::Function(function) => {
                let code = WireBytes::new(&function.code);
                Line::Function {
                    function_id: Cow::Borrowed(&function.function_id),
                    name: Cow::Borrowed(&function.name),
                    language: Cow::Borrowed(&function.language),
                    timeout_ms: function.timeout_ms,
                    max_attempts: function.max_attempts,
                    max_memory_bytes: function.max_memory_bytes,
                    created_at_us: function.created_at_us,
                    code: code.text,
                    code_b64: code.base64,
                }
            }
            Record::FunctionDeleted { function_id } => Line::FunctionDeleted {
                function_id: Cow::Borrowed(function_id),
            },
            Record::Accepted(execution) => {
                let payload = WireBytes::new(&execution.payload);
                Line::Accepted {
                    id: HexId(execution.id),
                    function_id: Cow::Borrowed(&execution.function_id),
                    policy: WirePolicy::new(&execution.policy),
                    created_at_us: execution.created_at_us,
                    idempotency_key: execution
                        .idempotency
                        .as_ref()
                        .map(|claim| Cow::Borrowed(claim.key.as_str())),
                    request_digest: execution
                        .idempotency
                        .as_ref()
                        .map(|claim| Cow::Owned(format!("{:016x}", claim.digest))),
                    payload: payload.text,
                    payload_b64: payload.base64,
                }
            }
            Record::Started {
                id,
                attempt,
                worker_id,
                started_at_us,
            } => Line::Started {
                id: HexId(*id),
                attempt: *attempt,
                worker_id: Cow::Borrowed(worker_id),
                started_at_us: *started_at_us,
            },
            Record::Finished { id, finished } => {
                let WireEnd { error, output } = WireEnd::new(&finished.terminal);
                Line::Finished {
                    id: HexId(*id),
                    status: Cow::Borrowed(finished.terminal.status().as_str()),
                    attempt: finished.attempt,
                    worker_id: Cow::Borrowed(&finished.worker_id),
                    started_at_us: finished.started_at_us,
                    finished_at_us: finished.finished_at_us,
                    error,
                    output: output.text,
                    output_b64: output.base64,
                    logs: (!finished.logs.is_empty())
                        .then_some(Cow::Borrowed(finished.logs.as_str())),
                }
            }
            Record::Evicted { id, .. } => Line::Evicted { id: HexId(*id) },
        }
    }
}

impl Line<'_> {
    fn into_record(self) -> Result<Record, String> {
        Ok(match self {
            Line::Function {
                function_id,
                name,
                language,
                timeout_ms,
                max_attempts,
                max_memory_bytes,
                created_at_us,
                code,
                code_b64,
            } => Record::Function(FunctionRecord {
                max_memory_bytes,
                function_id: function_id.into_owned(),
                name: name.into_owned(),
                language: language.into_owned(),
                code: WireBytes {
                    text: code,
                    base64: code_b64,
                }
                .into_bytes("code")?,
                timeout_ms,
                max_attempts,
                created_at_us,
            }),
            Line::Accepted {
                id,
                function_id,
                policy,
                created_at_us,
                idempotency_key,
                request_digest,
                payload,
                payload_b64,
            } => Record::Accepted(ExecutionRecord {
                idempotency: idempotency_of(idempotency_key, request_digest)?,
                id: id.0,
                function_id: function_id.into_owned(),
                payload: WireBytes {
                    text: payload,
                    base64: payload_b64,
                }
                .into_bytes("payload")?,
                policy: policy.into_policy(),
                created_at_us,
            }),
            Line::Started {
                id,
                attempt,
                worker_id,
                started_at_us,
            } => Record::Started {
                id: id.0,
                attempt,
                worker_id: worker_id.into_owned(),
                started_at_us,
            },
            Line::Finished {
                id,
                status,
                attempt,
                worker_id,
                started_at_us,
                finished_at_us,
                error,
                output,
                output_b64,
                logs,
            } => {
                let output = WireBytes {
                    text: output,
                    base64: output_b64,
                };
                let terminal = terminal_of(&status, error, output)?;
                Record::Finished {
                    id: id.0,
                    finished: FinishedRecord {
                        terminal,
                        attempt,
                        worker_id: worker_id.into_owned(),
                        started_at_us,
                        finished_at_us,
                        logs: logs.map(Cow::into_owned).unwrap_or_default(),
                    },
                }
            }
            Line::Evicted { id } => Record::Evicted {
                id: id.0,
                filed: None,
            },
            Line::FunctionDeleted { function_id } => Record::FunctionDeleted {
                function_id: function_id.into_owned(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(record: &Record) -> String {
        let mut out = Vec::new();
        encode(record, &mut out).expect("records always encode");
        String::from_utf8(out).expect("lines are UTF-8")
    }

    fn finished(terminal: Terminal) -> Record {
        Record::Finished {
            id: ExecutionId(0xff),
            finished: FinishedRecord {
                terminal,
                attempt: 1,
                worker_id: "worker-1".into(),
                started_at_us: 1_700_000_000_100_000,
                finished_at_us: 1_700_000_000_200_000,
                logs: String::new(),
            },
        }
    }

    /// Pins the format: these lines are what files on disk hold, so a change
    /// here is a change of file format.
    #[test]
    fn every_record_kind_has_a_readable_line() {
        let function = Record::Function(FunctionRecord {
            max_memory_bytes: 0,
            function_id: "fn-1".into(),
            name: "greet".into(),
            language: "builtin".into(),
            code: Bytes::from_static(b"sum_and_greet"),
            timeout_ms: 0,
            max_attempts: 0,
            created_at_us: 1_700_000_000_000_000,
        });
        let accepted = Record::Accepted(ExecutionRecord {
            idempotency: None,
            id: ExecutionId(0xff),
            function_id: "fn-1".into(),
            payload: Bytes::from_static(br#"{"name":"Ada","a":1,"b":2}"#),
            policy: Policy {
                max_attempts: 3,
                timeout: Duration::from_secs(300),
                schedule_to_start: Some(Duration::from_secs(600)),
            },
            created_at_us: 1_700_000_000_000_000,
        });
        let started = Record::Started {
            id: ExecutionId(0xff),
            attempt: 1,
            worker_id: "worker-1".into(),
            started_at_us: 1_700_000_000_100_000,
        };
        let cases = [
            (
                function,
                r#"{"type":"function","function_id":"fn-1","name":"greet","language":"builtin","timeout_ms":0,"max_attempts":0,"created_at_us":1700000000000000,"code":"sum_and_greet"}"#,
            ),
            (
                accepted,
                r#"{"type":"accepted","id":"00000000000000ff","function_id":"fn-1","policy":{"max_attempts":3,"timeout_ms":300000,"schedule_to_start_ms":600000},"created_at_us":1700000000000000,"payload":"{\"name\":\"Ada\",\"a\":1,\"b\":2}"}"#,
            ),
            (
                started,
                r#"{"type":"started","id":"00000000000000ff","attempt":1,"worker_id":"worker-1","started_at_us":1700000000100000}"#,
            ),
            (
                finished(Terminal::Completed {
                    output: Bytes::from_static(b"hi"),
                }),
                r#"{"type":"finished","id":"00000000000000ff","status":"COMPLETED","attempt":1,"worker_id":"worker-1","started_at_us":1700000000100000,"finished_at_us":1700000000200000,"output":"hi"}"#,
            ),
            (
                finished(Terminal::Failed {
                    error: "boom".into(),
                    output: Bytes::from_static(&[0xff, 0x00]),
                }),
                r#"{"type":"finished","id":"00000000000000ff","status":"FAILED","attempt":1,"worker_id":"worker-1","started_at_us":1700000000100000,"finished_at_us":1700000000200000,"error":"boom","output_b64":"/wA="}"#,
            ),
            (
                finished(Terminal::Cancelled),
                r#"{"type":"finished","id":"00000000000000ff","status":"CANCELLED","attempt":1,"worker_id":"worker-1","started_at_us":1700000000100000,"finished_at_us":1700000000200000}"#,
            ),
            (
                Record::Evicted {
                    id: ExecutionId(0xff),
                    filed: None,
                },
                r#"{"type":"evicted","id":"00000000000000ff"}"#,
            ),
        ];
        for (record, expected) in cases {
            let written = line(&record);
            assert_eq!(written, format!("{expected}\n"));
            assert_eq!(encoded_len(&record).ok(), Some(written.len() as u64));
            assert_eq!(decode(expected.as_bytes()), Ok(record));
        }
    }

    #[test]
    fn bytes_that_are_not_utf8_round_trip_as_base64() {
        let record = Record::Accepted(ExecutionRecord {
            idempotency: None,
            id: ExecutionId(u64::MAX),
            function_id: "f".into(),
            payload: Bytes::from_static(&[0xc3, 0x28, 0x00, 0xff]),
            policy: Policy {
                schedule_to_start: None,
                ..Policy::default()
            },
            created_at_us: 0,
        });
        let written = line(&record);
        assert!(written.contains(r#""payload_b64":"wygA/w==""#), "{written}");
        assert!(
            written.contains(r#""schedule_to_start_ms":null"#),
            "{written}"
        );
        assert_eq!(decode(written.trim_end().as_bytes()), Ok(record));
    }

    #[test]
    fn missing_bytes_fields_read_as_empty_and_unknown_fields_are_ignored() {
        let record = decode(
            br#"{"type":"finished","id":"0000000000000001","status":"FAILED","attempt":2,"worker_id":"w","started_at_us":1,"finished_at_us":2,"from_the_future":true}"#,
        );
        let Ok(Record::Finished { finished, .. }) = record else {
            panic!("expected a finished record, got {record:?}");
        };
        assert_eq!(
            finished.terminal,
            Terminal::Failed {
                error: String::new(),
                output: Bytes::new()
            }
        );
    }

    #[test]
    fn bad_lines_are_rejected_with_a_reason() {
        let cases: [(&[u8], &str); 7] = [
            (br#"{"type":"exploded","id":"0000000000000001"}"#, "unknown variant `exploded`"),
            (br#"{"type":"evicted","id":"xyz"}"#, "invalid execution id \"xyz\""),
            (br#"{"type":"evicted"}"#, "missing field `id`"),
            (
                br#"{"type":"finished","id":"0000000000000001","status":"RUNNING","attempt":1,"worker_id":"w","started_at_us":1,"finished_at_us":2}"#,
                "status \"RUNNING\" is not a terminal state",
            ),
            (
                br#"{"type":"accepted","id":"0000000000000001","function_id":"f","policy":{"max_attempts":1,"timeout_ms":1},"created_at_us":0,"payload":"a","payload_b64":"YQ=="}"#,
                "both payload and payload_b64 are set",
            ),
            (
                br#"{"type":"function","function_id":"f","name":"n","language":"l","timeout_ms":0,"max_attempts":0,"created_at_us":0,"code_b64":"!!"}"#,
                "code_b64 is not valid base64",
            ),
            (br#"{"type":"evicted","id":"00000000000"#, "EOF while parsing a string (at column"),
        ];
        for (input, expected) in cases {
            match decode(input) {
                Ok(record) => panic!("decoded {record:?} from a bad line"),
                Err(reason) => assert!(reason.contains(expected), "{reason:?} lacks {expected:?}"),
            }
        }
    }
}
