//! Optional bearer-token auth. When the gateway has an `api_token`, every
//! request except `GET /health` and `GET /ready` (probes must work without
//! secrets) needs `Authorization: Bearer <token>`; the token is compared in
//! constant time. Unknown routes are checked too, so without a token a client
//! learns nothing about which routes exist.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::ApiError;
use super::paths;

/// Middleware: refuses the request with 401 unless it carries the token.
pub(crate) async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let Some(expected) = state.config().api_token.as_deref() else {
        return next.run(request).await;
    };
    let path = request.uri().path();
    if path == paths::HEALTH || path == paths::READY {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|value| value.as_bytes());
    match check(presented, expected) {
        Ok(()) => next.run(request).await,
        Err(error) => error.into_response(),
    }
}

/// Checks an `Authorization` header value against the expected token.
fn check(presented: Option<&[u8]>, expected: &str) -> Result<(), ApiError> {
    let Some(value) = presented else {
        return Err(ApiError::unauthorized(
            "missing `Authorization: Bearer <token>` header",
        ));
    };
    let token = value
        .get(..7)
        .filter(|scheme| scheme.eq_ignore_ascii_case(b"bearer "))
        .map(|_| value[7..].trim_ascii())
        .ok_or_else(|| {
            ApiError::unauthorized("the `Authorization` header must be `Bearer <token>`")
        })?;
    if bool::from(token.ct_eq(expected.as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::unauthorized("wrong bearer token"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        assert!(check(Some(b"Bearer s3cret"), "s3cret").is_ok());
        assert!(check(Some(b"bearer s3cret"), "s3cret").is_ok());
        assert!(check(Some(b"Bearer  s3cret "), "s3cret").is_ok());
        assert!(
            check(None, "s3cret")
                .unwrap_err()
                .message
                .contains("missing")
        );
        assert!(check(Some(b"Basic s3cret"), "s3cret").is_err());
        assert!(check(Some(b"Bearer"), "s3cret").is_err());
        assert!(
            check(Some(b"Bearer wrong"), "s3cret")
                .unwrap_err()
                .message
                .contains("wrong")
        );
        assert!(check(Some(b"Bearer s3cre"), "s3cret").is_err());
        assert!(check(Some(b"Bearer "), "s3cret").is_err());
    }
}
