//! The gateway's one error shape: every failure, whether it is bad input, an
//! unknown route or a scheduler refusal, answers
//! `{"error":{"code":"...","message":"..."}}` with a fitting HTTP status.
//!
//! | status | code | when |
//! |---|---|---|
//! | 400 | `malformed_json` | the body is not JSON |
//! | 400 | `invalid_field` | a body field is missing or has the wrong type (the message names it) |
//! | 400 | `invalid_parameter` | a bad path or query parameter (the message names it) |
//! | 400 | `invalid_header` | a bad request header, e.g. `Idempotency-Key` (the message names it) |
//! | 400 | `invalid_argument` | the scheduler refused the request (its message is passed on) |
//! | 401 | `unauthorized` | missing or wrong bearer token |
//! | 404 | `not_found` | unknown id or route |
//! | 405 | `method_not_allowed` | known route, wrong method (`Allow` lists the right ones) |
//! | 409 | `failed_precondition` / `already_exists` | e.g. cancelling a finished execution |
//! | 413 | `payload_too_large` | body over the limit |
//! | 415 | `unsupported_media_type` | a body that is not `application/json` |
//! | 429 | `queue_full` | the scheduler's queue is full (`Retry-After: 1`) |
//! | 429 | `too_many_watches` | a `?wait=` the scheduler refused: it has too many open watches (`Retry-After: 1`) |
//! | 501 | `not_implemented` | the scheduler lacks the RPC (e.g. a seed scheduler) |
//! | 502 | `scheduler_error` | the scheduler failed in another way, or its answer could not be read |
//! | 503 | `unavailable` / `not_ready` | the scheduler cannot be reached |
//! | 504 | `deadline_exceeded` | the scheduler did not answer in time |

use axum::Json;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use tonic::Code;

/// An HTTP error answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn malformed_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "malformed_json", message)
    }

    pub fn invalid_field(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_field", message)
    }

    pub fn invalid_parameter(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_parameter", message)
    }

    pub fn invalid_header(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_header", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            message,
        )
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    }

    pub fn deadline_exceeded(message: impl Into<String>) -> Self {
        Self::new(StatusCode::GATEWAY_TIMEOUT, "deadline_exceeded", message)
    }

    pub fn too_many_watches(message: impl Into<String>) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "too_many_watches", message)
    }

    pub fn scheduler_error(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, "scheduler_error", message)
    }

    /// Maps a scheduler's gRPC status to the HTTP error a client can act on.
    pub fn from_status(status: &tonic::Status) -> Self {
        let message = status.message();
        let or = |default: &str| {
            if message.is_empty() {
                default.to_string()
            } else {
                message.to_string()
            }
        };
        match status.code() {
            Code::InvalidArgument => Self::new(
                StatusCode::BAD_REQUEST,
                "invalid_argument",
                or("the scheduler refused the request as invalid"),
            ),
            Code::NotFound => Self::not_found(or("not found")),
            Code::AlreadyExists => {
                Self::new(StatusCode::CONFLICT, "already_exists", or("already exists"))
            }
            Code::FailedPrecondition | Code::Aborted => Self::new(
                StatusCode::CONFLICT,
                "failed_precondition",
                or("the request conflicts with the current state"),
            ),
            Code::ResourceExhausted => Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "queue_full",
                or("the scheduler's queue is full; retry later"),
            ),
            Code::Unavailable | Code::Cancelled => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("the scheduler is unavailable: {}", or("no answer")),
            ),
            Code::DeadlineExceeded => {
                Self::deadline_exceeded(or("the scheduler did not answer in time"))
            }
            Code::Unimplemented => Self::new(
                StatusCode::NOT_IMPLEMENTED,
                "not_implemented",
                format!(
                    "the scheduler does not support this request: {}",
                    or("unimplemented")
                ),
            ),
            // Our scheduler never refuses a request with OUT_OF_RANGE; tonic
            // uses it on this side when the answer is larger than the client
            // may decode. Nothing the HTTP client sent is wrong, so not a 400.
            Code::OutOfRange => Self::scheduler_error(format!(
                "the scheduler's answer could not be read: {}",
                or("no details")
            )),
            Code::Ok
            | Code::Unknown
            | Code::Internal
            | Code::DataLoss
            | Code::Unauthenticated
            | Code::PermissionDenied => Self::scheduler_error(format!(
                "the scheduler failed ({:?}): {}",
                status.code(),
                or("no details")
            )),
        }
    }

    /// A body that could not be read: too large, or broken off.
    pub fn from_body_rejection(rejection: &BytesRejection, limit: usize) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::payload_too_large(limit)
        } else {
            Self::new(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                format!(
                    "the request body could not be read: {}",
                    rejection.body_text()
                ),
            )
        }
    }

    pub fn from_path_rejection(rejection: &PathRejection) -> Self {
        Self::invalid_parameter(format!("invalid path: {}", rejection.body_text()))
    }

    pub fn from_query_rejection(rejection: &QueryRejection) -> Self {
        Self::invalid_parameter(rejection.body_text())
    }
}

impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        Self::from_status(&status)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": { "code": self.code, "message": self.message }
        });
        let mut response = (self.status, Json(body)).into_response();
        let headers = response.headers_mut();
        match self.status {
            StatusCode::UNAUTHORIZED => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"taskforge\""),
                );
            }
            StatusCode::TOO_MANY_REQUESTS => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

/// The fallback for a path no route matches.
pub(crate) async fn route_not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!("no route for {method} {}", uri.path()))
}

/// The fallback for a known path with the wrong method. axum adds the `Allow`
/// header to this answer.
pub(crate) async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(code: Code, message: &str) -> ApiError {
        ApiError::from_status(&tonic::Status::new(code, message))
    }

    #[test]
    fn scheduler_statuses_map_to_http() {
        let cases = [
            (
                Code::InvalidArgument,
                StatusCode::BAD_REQUEST,
                "invalid_argument",
            ),
            (Code::OutOfRange, StatusCode::BAD_GATEWAY, "scheduler_error"),
            (Code::NotFound, StatusCode::NOT_FOUND, "not_found"),
            (Code::AlreadyExists, StatusCode::CONFLICT, "already_exists"),
            (
                Code::FailedPrecondition,
                StatusCode::CONFLICT,
                "failed_precondition",
            ),
            (Code::Aborted, StatusCode::CONFLICT, "failed_precondition"),
            (
                Code::ResourceExhausted,
                StatusCode::TOO_MANY_REQUESTS,
                "queue_full",
            ),
            (
                Code::Unavailable,
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
            ),
            (
                Code::Cancelled,
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
            ),
            (
                Code::DeadlineExceeded,
                StatusCode::GATEWAY_TIMEOUT,
                "deadline_exceeded",
            ),
            (
                Code::Unimplemented,
                StatusCode::NOT_IMPLEMENTED,
                "not_implemented",
            ),
            (Code::Internal, StatusCode::BAD_GATEWAY, "scheduler_error"),
            (Code::Unknown, StatusCode::BAD_GATEWAY, "scheduler_error"),
            (Code::DataLoss, StatusCode::BAD_GATEWAY, "scheduler_error"),
            (
                Code::Unauthenticated,
                StatusCode::BAD_GATEWAY,
                "scheduler_error",
            ),
            (
                Code::PermissionDenied,
                StatusCode::BAD_GATEWAY,
                "scheduler_error",
            ),
        ];
        for (code, status, api_code) in cases {
            let error = map(code, "detail");
            assert_eq!(error.status, status, "{code:?}");
            assert_eq!(error.code, api_code, "{code:?}");
            assert!(
                error.message.contains("detail"),
                "{code:?}: {}",
                error.message
            );
        }
    }

    #[test]
    fn invalid_argument_passes_the_schedulers_message_through() {
        let error = map(
            Code::InvalidArgument,
            "unsupported language \"cobol\"; supported: builtin",
        );
        assert_eq!(
            error.message,
            "unsupported language \"cobol\"; supported: builtin"
        );
    }

    #[test]
    fn an_answer_too_large_to_decode_is_a_scheduler_error() {
        // What tonic's decoder says when the answer exceeds the client's limit.
        let error = map(
            Code::OutOfRange,
            "Error, decoded message length too large: found 5242885 bytes, the limit is: 4194304 bytes",
        );
        assert_eq!(error.status, StatusCode::BAD_GATEWAY);
        assert_eq!(error.code, "scheduler_error");
        assert!(
            error
                .message
                .starts_with("the scheduler's answer could not be read: "),
            "{}",
            error.message
        );
        assert!(error.message.contains("too large"), "{}", error.message);
    }

    #[test]
    fn empty_messages_get_a_default() {
        let error = map(Code::ResourceExhausted, "");
        assert_eq!(error.message, "the scheduler's queue is full; retry later");
        let error = map(Code::NotFound, "");
        assert_eq!(error.message, "not found");
    }

    #[tokio::test]
    async fn responses_have_the_json_error_shape() {
        use http_body_util::BodyExt;

        let response = map(Code::ResourceExhausted, "queue full (1000)").into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"error": {"code": "queue_full", "message": "queue full (1000)"}})
        );

        let response = ApiError::unauthorized("no token").into_response();
        assert!(response.headers().contains_key(header::WWW_AUTHENTICATE));
    }
}
