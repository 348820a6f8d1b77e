//! What the worker and a sandbox's bootstrap say to each other.
//!
//! To the launcher: one JSON line of [`RequestLimits`] (it applies them),
//! then, passed on to the interpreter: `<code length>\n`, the code, and the
//! event. Back, on the result pipe: `ok\n<JSON>` or `error\n<JSON with
//! message and trace>`; on the log pipe, whatever the function printed.

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::Ran;
use super::pool::Warm;
use crate::sandbox::{RequestLimits, exit_status_text, launcher};

/// How much of what a function printed is kept, from the end.
pub(super) const LOG_TAIL_BYTES: usize = 16 << 10;

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

/// Sends the request, collects the result and the log tail, and waits until
/// the sandbox is gone.
pub(super) async fn exchange(warm: &mut Warm, request: Vec<u8>, max_output_bytes: usize) -> Ran {
    let stdin = warm.sandbox.stdin.take();
    let stderr = warm.sandbox.stderr.take();
    let send = async move {
        if let Some(mut stdin) = stdin {
            // A sandbox that died early shows it in its exit and logs.
            let _ = stdin.write_all(&request).await;
        }
    };
    // "ok\n" or "error\n", and room for an error's message and trace.
    let room = max_output_bytes + (16 << 10);
    let results = read_at_most(&mut warm.results, room);
    let logs = async move {
        match stderr {
            Some(stderr) => tail(stderr, LOG_TAIL_BYTES).await,
            None => String::new(),
        }
    };
    let ((), results, logs) = tokio::join!(send, results, logs);
    let status = warm.sandbox.wait().await;
    let result = match (results, status) {
        (Ok(results), _) if results.len() > room => Err(format!(
            "the output is over {max_output_bytes} bytes, the limit"
        )),
        (Ok(results), Ok(status)) => outcome(results.freeze(), status, max_output_bytes),
        (Err(error), _) | (_, Err(error)) => Err(format!("lost the sandbox: {error}")),
    };
    Ran { result, logs }
}

/// What the bootstrap reported, or why there is no report.
fn outcome(
    results: Bytes,
    status: std::process::ExitStatus,
    max_output_bytes: usize,
) -> Result<Bytes, String> {
    if let Some(output) = results.strip_prefix(b"ok\n") {
        if output.len() > max_output_bytes {
            return Err(format!(
                "the output is {} bytes; the limit is {max_output_bytes}",
                output.len()
            ));
        }
        return match serde_json::from_slice::<serde::de::IgnoredAny>(output) {
            Ok(_) => Ok(results.slice(3..)),
            Err(_) => Err("the function's result is not valid JSON".to_string()),
        };
    }
    if let Some(report) = results.strip_prefix(b"error\n") {
        #[derive(serde::Deserialize)]
        struct Failure {
            message: String,
            #[serde(default)]
            trace: String,
        }
        return Err(match serde_json::from_slice::<Failure>(report) {
            Ok(failure) if failure.trace.is_empty() => failure.message,
            Ok(failure) => format!("{}\n{}", failure.message, failure.trace.trim_end()),
            Err(_) => "the function's error report is not valid JSON".to_string(),
        });
    }
    if status.code() == Some(launcher::SETUP_FAILED) {
        return Err("the sandbox failed (see the logs)".to_string());
    }
    Err(format!(
        "the function's process ended without a result: {}",
        exit_status_text(status)
    ))
}

/// Reads to EOF, keeping at most `limit + 1` bytes (one more tells "over").
async fn read_at_most(
    reader: &mut (impl AsyncRead + Unpin),
    limit: usize,
) -> std::io::Result<BytesMut> {
    let mut buffer = Vec::new();
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut buffer)
        .await?;
    Ok(BytesMut::from(&buffer[..]))
}

/// Reads to EOF, keeping the last `keep` bytes, as text.
async fn tail(mut reader: impl AsyncRead + Unpin, keep: usize) -> String {
    let mut kept: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 8192];
    loop {
        match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                kept.extend_from_slice(&chunk[..n]);
                if kept.len() > 2 * keep {
                    kept.drain(..kept.len() - keep);
                }
            }
        }
    }
    if kept.len() > keep {
        kept.drain(..kept.len() - keep);
    }
    String::from_utf8_lossy(&kept).into_owned()
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

    #[test]
    fn reports_become_outputs_and_errors() {
        let ok = outcome(Bytes::from_static(b"ok\n{\"a\":1}"), exit(0), 100);
        assert_eq!(ok, Ok(Bytes::from_static(b"{\"a\":1}")));
        let failed = outcome(
            Bytes::from_static(b"error\n{\"message\":\"ValueError: no\",\"trace\":\"line 3\\n\"}"),
            exit(0),
            100,
        );
        assert_eq!(failed, Err("ValueError: no\nline 3".to_string()));
        let large = outcome(Bytes::from_static(b"ok\n\"0123456789\""), exit(0), 5);
        assert!(large.unwrap_err().contains("the limit is 5"));
        let garbage = outcome(Bytes::from_static(b"ok\n{nope"), exit(0), 100);
        assert!(garbage.unwrap_err().contains("not valid JSON"));
        let killed = outcome(Bytes::new(), std::process::ExitStatus::from_raw(9), 100);
        assert!(killed.unwrap_err().contains("killed by SIGKILL"));
        let cpu = outcome(Bytes::new(), exit(128 + 24), 100);
        assert!(cpu.unwrap_err().contains("CPU time limit"));
    }

    #[tokio::test]
    async fn the_log_tail_keeps_the_end() {
        let text = "x".repeat(50_000) + "the end";
        let kept = tail(text.as_bytes(), 100).await;
        assert_eq!(kept.len(), 100);
        assert!(kept.ends_with("the end"));
    }
}
