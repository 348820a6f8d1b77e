//! Human-friendly durations (`250us`, `500ms`, `2s`, `1.5s`, `1m`, `1h`), for command-line
//! flags and `?wait=` parameters alike.

use std::time::Duration;

/// Why a duration could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("it is empty")]
    Empty,
    #[error("it has no unit (use us, ms, s, m or h, e.g. `500ms`)")]
    MissingUnit,
    #[error("unknown unit {0:?} (use us, ms, s, m or h)")]
    UnknownUnit(String),
    #[error("it does not start with a non-negative number")]
    NoNumber,
    #[error("{0:?} is not a number")]
    BadNumber(String),
    #[error("it is too long")]
    TooLong,
}

/// Parses a non-negative decimal number followed by a unit: `us`, `ms`, `s`, `m`, `h`.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return Err(DurationError::NoNumber);
    }
    if number.starts_with('.') || number.ends_with('.') {
        return Err(DurationError::BadNumber(number.to_string()));
    }
    let value: f64 = number
        .parse()
        .map_err(|_| DurationError::BadNumber(number.to_string()))?;
    let unit_seconds = match unit {
        "" => return Err(DurationError::MissingUnit),
        "us" => 1e-6,
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        other => return Err(DurationError::UnknownUnit(other.to_string())),
    };
    Duration::try_from_secs_f64(value * unit_seconds).map_err(|_| DurationError::TooLong)
}
