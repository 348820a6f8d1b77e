//! What the worker and a sandbox's bootstrap say to each other.
//!
//! To the launcher: one JSON line of [`RequestLimits`] (it applies them),
//! then, passed on to the interpreter: `<code length>\n`, the code, and the
//! event. Back, on the log pipe: whatever the function printed, then
//! [`LOGS_END`]; on the result pipe: `ok <length>\n<JSON>` or
//! `error <length>\n<JSON with message and trace>`. Both are complete before
//! the interpreter exits, so the worker answers without waiting for the
//! sandbox's teardown (a millisecond or more: the kernel unmounts its tree
//! and reaps its PID namespace); dropping the sandbox then finishes it off.

use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::Ran;
use super::pool::Warm;
use crate::sandbox::{RequestLimits, exit_status_text, launcher};

/// How much of what a function printed is kept, from the end.
pub(super) const LOG_TAIL_BYTES: usize = 16 << 10;

/// What the bootstraps print last on the log pipe (a function that prints
/// it too only cuts its own log short).
pub(super) const LOGS_END: &[u8] = b"\0taskforge:end-of-logs\0";

/// Room for an error report beyond the output limit (message and trace).
const ERROR_ROOM: usize = 64 << 10;

pub(super) fn request(limits: &RequestLimits, code: &[u8], payload: &[u8]) -> Vec<u8> {
    let header = serde_json::to_string(limits).expect("limits are plain data");
    let length = code.len().to_string();
    let mut request =
        Vec::with_capacity(header.len() + length.len() + code.len() + payload.len() + 2);
    request.extend_from_slice(header.as_bytes());
    request.push(b'\n');
    request.extend_from_slice(length.as_bytes());
    request.push(b'\n');
    request.extend_from_slice(code);
    request.extend_from_slice(payload);
    request
}

/// Sends the request, then collects the result and the log tail. Only if
/// the interpreter ended without a result does it wait for the sandbox's
/// exit, which says why.
pub(super) async fn exchange(warm: &mut Warm, request: Vec<u8>, max_output_bytes: usize) -> Ran {
    let stdin = warm.sandbox.stdin.take();
    let stderr = warm.sandbox.stderr.take();
    let send = async move {
        if let Some(mut stdin) = stdin {
            // A sandbox that died early shows it in its exit and logs.
            let _ = stdin.write_all(&request).await;
        }
    };
    let frame = read_frame(&mut warm.results, max_output_bytes + ERROR_ROOM);
    let logs = async move {
        match stderr {
            Some(stderr) => tail(stderr, LOG_TAIL_BYTES).await,
            None => String::new(),
        }
    };
    let ((), frame, logs) = tokio::join!(send, frame, logs);
    let result = match frame {
        Ok(Frame::Report { ok, body }) => outcome(ok, body, max_output_bytes),
        Ok(Frame::TooLarge(length)) => Err(format!(
            "the output is {length} bytes; the limit is {max_output_bytes}"
        )),
        Ok(Frame::Missing) | Err(_) => match warm.sandbox.wait().await {
            Ok(status) => Err(no_result(status)),
            Err(error) => Err(format!("lost the sandbox: {error}")),
        },
    };
    Ran { result, logs }
}

/// What came on the result pipe.
#[derive(Debug, PartialEq, Eq)]
enum Frame {
    Report {
        ok: bool,
        body: Bytes,
    },
    /// A report longer than anything the worker would accept.
    TooLarge(usize),
    /// Nothing, or not a report: the interpreter died, or the function wrote
    /// on the result pipe itself.
    Missing,
}

async fn read_frame(
    reader: &mut (impl tokio::io::AsyncBufRead + Unpin),
    room: usize,
) -> std::io::Result<Frame> {
    let mut header = String::new();
    (&mut *reader).take(64).read_line(&mut header).await?;
    let parsed = header
        .strip_suffix('\n')
        .and_then(|line| line.split_once(' '))
        .and_then(|(kind, length)| Some((kind, length.parse::<usize>().ok()?)));
    let (ok, length) = match parsed {
        Some(("ok", length)) => (true, length),
        Some(("error", length)) => (false, length),
        _ => return Ok(Frame::Missing),
    };
    if length > room {
        return Ok(Frame::TooLarge(length));
    }
    let mut body = vec![0; length];
    match reader.read_exact(&mut body).await {
        Ok(_) => Ok(Frame::Report {
            ok,
            body: Bytes::from(body),
        }),
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => Ok(Frame::Missing),
        Err(error) => Err(error),
    }
}

/// The output of an `ok` report, or the error of an `error` report.
fn outcome(ok: bool, body: Bytes, max_output_bytes: usize) -> Result<Bytes, String> {
    if ok {
        if body.len() > max_output_bytes {
            return Err(format!(
                "the output is {} bytes; the limit is {max_output_bytes}",
                body.len()
            ));
        }
        return match serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
            Ok(_) => Ok(body),
            Err(_) => Err("the function's result is not valid JSON".to_string()),
        };
    }
    #[derive(serde::Deserialize)]
    struct Failure {
        message: String,
        #[serde(default)]
        trace: String,
    }
    Err(match serde_json::from_slice::<Failure>(&body) {
        Ok(failure) if failure.trace.is_empty() => failure.message,
        Ok(failure) => format!("{}\n{}", failure.message, failure.trace.trim_end()),
        Err(_) => "the function's error report is not valid JSON".to_string(),
    })
}

/// Why there is no result, from how the sandbox ended.
fn no_result(status: std::process::ExitStatus) -> String {
    if status.code() == Some(launcher::SETUP_FAILED) {
        return "the sandbox failed (see the logs)".to_string();
    }
    format!(
        "the function's process ended without a result: {}",
        exit_status_text(status)
    )
}

/// Reads until [`LOGS_END`] or EOF, keeping the last `keep` bytes, as text.
async fn tail(mut reader: impl AsyncRead + Unpin, keep: usize) -> String {
    let mut kept: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 8192];
    loop {
        match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                // Where the marker may start: it can span two reads.
                let from = kept.len().saturating_sub(LOGS_END.len());
                kept.extend_from_slice(&chunk[..n]);
                if let Some(at) = find(&kept[from..], LOGS_END) {
                    kept.truncate(from + at);
                    break;
                }
                if kept.len() > 2 * keep + LOGS_END.len() {
                    kept.drain(..kept.len() - keep - LOGS_END.len());
                }
            }
        }
    }
    if kept.len() > keep {
        kept.drain(..kept.len() - keep);
    }
    String::from_utf8_lossy(&kept).into_owned()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn exit(code: i32) -> std::process::ExitStatus {
        std::process::ExitStatus::from_raw(code << 8)
    }

    #[test]
    fn a_request_is_limits_then_length_code_and_event() {
        let limits = RequestLimits {
            cpu_seconds: Some(3),
            address_space_bytes: None,
        };
        let request = request(&limits, b"code", b"{}");
        assert_eq!(
            request,
            b"{\"cpu_seconds\":3,\"address_space_bytes\":null}\n4\ncode{}"
        );
    }

    async fn frame(bytes: &'static [u8], room: usize) -> Frame {
        read_frame(&mut tokio::io::BufReader::new(bytes), room)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn reports_are_framed_by_their_length() {
        let ok = frame(b"ok 7\n{\"a\":1}trailing", 100).await;
        assert_eq!(
            ok,
            Frame::Report {
                ok: true,
                body: Bytes::from_static(b"{\"a\":1}")
            }
        );
        assert_eq!(
            frame(b"error 2\n{}", 100).await,
            Frame::Report {
                ok: false,
                body: Bytes::from_static(b"{}")
            }
        );
        assert_eq!(frame(b"ok 5000\n", 100).await, Frame::TooLarge(5000));
        assert_eq!(frame(b"ok 7\n{}", 100).await, Frame::Missing, "cut short");
        assert_eq!(frame(b"", 100).await, Frame::Missing);
        assert_eq!(frame(b"hello\n", 100).await, Frame::Missing);
    }

    #[test]
    fn reports_become_outputs_and_errors() {
        let ok = outcome(true, Bytes::from_static(b"{\"a\":1}"), 100);
        assert_eq!(ok, Ok(Bytes::from_static(b"{\"a\":1}")));
        let failed = outcome(
            false,
            Bytes::from_static(b"{\"message\":\"ValueError: no\",\"trace\":\"line 3\\n\"}"),
            100,
        );
        assert_eq!(failed, Err("ValueError: no\nline 3".to_string()));
        let large = outcome(true, Bytes::from_static(b"\"0123456789\""), 5);
        assert!(large.unwrap_err().contains("the limit is 5"));
        let garbage = outcome(true, Bytes::from_static(b"{nope"), 100);
        assert!(garbage.unwrap_err().contains("not valid JSON"));
        let killed = no_result(std::process::ExitStatus::from_raw(9));
        assert!(killed.contains("killed by SIGKILL"));
        let cpu = no_result(exit(128 + 24));
        assert!(cpu.contains("CPU time limit"));
    }

    #[tokio::test]
    async fn the_log_ends_at_the_marker() {
        let mut printed = b"hello\n".to_vec();
        printed.extend_from_slice(LOGS_END);
        printed.extend_from_slice(b"a child's late line\n");
        assert_eq!(tail(&printed[..], 100).await, "hello\n");
    }

    #[tokio::test]
    async fn the_log_tail_keeps_the_end() {
        let text = "x".repeat(50_000) + "the end";
        let kept = tail(text.as_bytes(), 100).await;
        assert_eq!(kept.len(), 100);
        assert!(kept.ends_with("the end"));
    }
}
