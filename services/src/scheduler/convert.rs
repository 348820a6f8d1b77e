//! Translations between the wire's messages and the core's values.

use std::time::Duration;

use bytes::Bytes;
use taskforge_core::{ExecutionId, Policy};
use tonic::Status;

/// Upper bounds on what a caller may ask for, so a typo cannot pin a slot for
/// a year or retry forever.
pub(crate) const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
pub(crate) const MAX_ATTEMPTS: u32 = 100;

pub(crate) fn parse_execution_id(text: &str) -> Result<ExecutionId, Status> {
    ExecutionId::parse(text).ok_or_else(|| {
        if text.is_empty() {
            Status::invalid_argument("execution_id is required")
        } else {
            Status::not_found(format!("execution {text:?} not found"))
        }
    })
}

/// Resolves a policy: the invocation's overrides, else the function's, else the
/// defaults. Zero means "not set" at every level, as on the wire.
pub(crate) fn resolve_policy(
    defaults: &Policy,
    function: (u64, u32),
    invocation: (u64, u32, u64),
) -> Result<Policy, Status> {
    let (fn_timeout_ms, fn_attempts) = function;
    let (timeout_ms, attempts, start_ms) = invocation;
    let pick = |a: u64, b: u64| if a != 0 { a } else { b };
    let timeout = match pick(timeout_ms, fn_timeout_ms) {
        0 => defaults.timeout,
        ms => Duration::from_millis(ms),
    };
    let max_attempts = match if attempts != 0 { attempts } else { fn_attempts } {
        0 => defaults.max_attempts,
        n => n,
    };
    let schedule_to_start = match start_ms {
        0 => defaults.schedule_to_start,
        ms => Some(Duration::from_millis(ms)),
    };
    if timeout > MAX_TIMEOUT {
        return Err(Status::invalid_argument(format!(
            "timeout_ms {} is over the limit of {} (24 h)",
            timeout.as_millis(),
            MAX_TIMEOUT.as_millis()
        )));
    }
    if max_attempts > MAX_ATTEMPTS {
        return Err(Status::invalid_argument(format!(
            "max_attempts {max_attempts} is over the limit of {MAX_ATTEMPTS}"
        )));
    }
    Ok(Policy {
        max_attempts,
        timeout,
        schedule_to_start,
    })
}

/// Checks a blob against a size limit, naming it in the error.
pub(crate) fn check_size(what: &str, bytes: &Bytes, limit: usize) -> Result<(), Status> {
    if bytes.len() > limit {
        return Err(Status::invalid_argument(format!(
            "{what} is {} bytes; the limit is {limit}",
            bytes.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invocation_overrides_function_overrides_defaults() {
        let defaults = Policy::default();
        let p = resolve_policy(&defaults, (0, 0), (0, 0, 0)).unwrap();
        assert_eq!(p, defaults);
        let p = resolve_policy(&defaults, (2000, 5), (0, 0, 0)).unwrap();
        assert_eq!((p.timeout, p.max_attempts), (Duration::from_secs(2), 5));
        let p = resolve_policy(&defaults, (2000, 5), (100, 1, 50)).unwrap();
        assert_eq!(
            (p.timeout, p.max_attempts, p.schedule_to_start),
            (
                Duration::from_millis(100),
                1,
                Some(Duration::from_millis(50))
            )
        );
        assert!(resolve_policy(&defaults, (0, 0), (0, 1000, 0)).is_err());
        assert!(resolve_policy(&defaults, (u64::MAX, 0), (0, 0, 0)).is_err());
    }

    #[test]
    fn execution_ids_are_validated() {
        assert_eq!(
            parse_execution_id("").unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            parse_execution_id("nope").unwrap_err().code(),
            tonic::Code::NotFound
        );
        assert!(parse_execution_id("00000000000000ff").is_ok());
    }
}
