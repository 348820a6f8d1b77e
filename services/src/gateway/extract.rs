//! Request extractors that fail with the gateway's JSON errors instead of
//! axum's plain-text rejections, and the field checks the handlers share.
//!
//! - [`JsonBody`]: the raw body, checked to be JSON. An empty body is `None`
//!   whatever its content type (the handler decides what that means); a
//!   non-empty one must be `application/json` (or `application/*+json`) — no
//!   content type at all is refused too — else 415; bad JSON is 400; over the
//!   limit is 413.
//! - [`IdPath`]: the one path parameter of a route.
//! - [`Params`]: query parameters. Their fields are `Option<String>` and are
//!   checked by the handler with [`parse_int_param`], so a message can name the
//!   parameter.

use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::header;
use axum::http::request::Parts;
use bytes::Bytes;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde_json::{Map, Value};

use super::AppState;
use super::error::ApiError;

/// A request body that is valid JSON (`None` when the body is empty).
#[derive(Debug)]
pub(crate) struct JsonBody(pub Option<Bytes>);

impl FromRequest<AppState> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
        let limit = state.config().body_limit;
        let body = Bytes::from_request(req, state)
            .await
            .map_err(|rejection| ApiError::from_body_rejection(&rejection, limit))?;
        if body.is_empty() {
            return Ok(JsonBody(None));
        }
        match content_type.as_deref() {
            Some(value) if is_json_content_type(value) => {}
            Some(value) => {
                return Err(ApiError::unsupported_media_type(format!(
                    "expected Content-Type: application/json, got {value:?}"
                )));
            }
            None => {
                return Err(ApiError::unsupported_media_type(
                    "expected Content-Type: application/json, got none",
                ));
            }
        }
        // Checks the syntax without building a value.
        serde_json::from_slice::<IgnoredAny>(&body)
            .map_err(|e| ApiError::malformed_json(format!("the body is not valid JSON: {e}")))?;
        Ok(JsonBody(Some(body)))
    }
}

/// `application/json`, `application/<anything>+json`, with any parameters.
fn is_json_content_type(value: &str) -> bool {
    let essence = value.split(';').next().unwrap_or("").trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (subtype.eq_ignore_ascii_case("json")
            || subtype
                .get(subtype.len().saturating_sub(5)..)
                .is_some_and(|tail| tail.eq_ignore_ascii_case("+json")))
}

/// The single path parameter of a route (an id).
#[derive(Debug)]
pub(crate) struct IdPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for IdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| ApiError::from_path_rejection(&rejection))?;
        Ok(IdPath(id))
    }
}

/// Query parameters, deserialized into `T`.
#[derive(Debug)]
pub(crate) struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Query(params) = Query::<T>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| ApiError::from_query_rejection(&rejection))?;
        Ok(Params(params))
    }
}

/// An integer query parameter, if given.
pub(crate) fn parse_int_param<T: std::str::FromStr>(
    name: &str,
    value: Option<&str>,
) -> Result<Option<T>, ApiError> {
    value
        .map(|raw| {
            raw.parse::<T>().map_err(|_| {
                ApiError::invalid_parameter(format!(
                    "query parameter `{name}` must be a non-negative integer in range, got {raw:?}"
                ))
            })
        })
        .transpose()
}

/// A body that must be a JSON object.
pub(crate) fn json_object(body: Option<&[u8]>) -> Result<Map<String, Value>, ApiError> {
    let Some(body) = body else {
        return Err(ApiError::invalid_field(
            "the request body is empty; expected a JSON object",
        ));
    };
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(ApiError::invalid_field(format!(
            "the request body must be a JSON object, got {}",
            crate::functions::json_kind(&other)
        ))),
        Err(e) => Err(ApiError::malformed_json(format!(
            "the body is not valid JSON: {e}"
        ))),
    }
}

/// A required string field of a JSON object.
pub(crate) fn required_string(map: &Map<String, Value>, field: &str) -> Result<String, ApiError> {
    match map.get(field) {
        None | Some(Value::Null) => Err(ApiError::invalid_field(format!(
            "missing field `{field}` (a string)"
        ))),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(ApiError::invalid_field(format!(
            "field `{field}` must be a string, got {}",
            crate::functions::json_kind(other)
        ))),
    }
}

/// An optional non-negative integer field of a JSON object (absent or `null`
/// is `None`) that must fit in `T`.
pub(crate) fn optional_int<T: TryFrom<u64>>(
    map: &Map<String, Value>,
    field: &str,
) -> Result<Option<T>, ApiError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| T::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| {
                ApiError::invalid_field(format!(
                    "field `{field}` must be a non-negative integer in range, got {n}"
                ))
            }),
        Some(other) => Err(ApiError::invalid_field(format!(
            "field `{field}` must be a non-negative integer, got {}",
            crate::functions::json_kind(other)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    #[test]
    fn json_content_types() {
        for ok in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
            "application/problem+json",
        ] {
            assert!(is_json_content_type(ok), "{ok}");
        }
        for bad in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "json",
            "",
            "application/jsonx",
        ] {
            assert!(!is_json_content_type(bad), "{bad}");
        }
    }

    #[test]
    fn field_checks_name_the_field() {
        let map = json_object(Some(
            br#"{"name": 5, "timeout_ms": -1, "max_attempts": "3", "big": 5000000000}"#,
        ))
        .unwrap();
        let error = required_string(&map, "name").unwrap_err();
        assert_eq!(error.status, StatusCode::BAD_REQUEST);
        assert!(error.message.contains("`name`"), "{}", error.message);
        assert!(
            required_string(&map, "code")
                .unwrap_err()
                .message
                .contains("missing field `code`")
        );
        assert!(
            optional_int::<u64>(&map, "timeout_ms")
                .unwrap_err()
                .message
                .contains("`timeout_ms`")
        );
        assert!(
            optional_int::<u32>(&map, "max_attempts")
                .unwrap_err()
                .message
                .contains("`max_attempts`")
        );
        assert!(optional_int::<u32>(&map, "big").is_err());
        assert_eq!(
            optional_int::<u64>(&map, "big").unwrap(),
            Some(5_000_000_000)
        );
        assert_eq!(optional_int::<u32>(&map, "absent").unwrap(), None);
    }

    #[test]
    fn bodies_must_be_objects() {
        assert_eq!(json_object(None).unwrap_err().code, "invalid_field");
        assert_eq!(json_object(Some(b"[1]")).unwrap_err().code, "invalid_field");
        assert_eq!(json_object(Some(b"{")).unwrap_err().code, "malformed_json");
    }

    #[test]
    fn int_params() {
        assert_eq!(
            parse_int_param::<u32>("limit", Some("10")).unwrap(),
            Some(10)
        );
        assert_eq!(parse_int_param::<u32>("limit", None).unwrap(), None);
        let error = parse_int_param::<u32>("limit", Some("ten")).unwrap_err();
        assert!(error.message.contains("`limit`"));
        assert!(parse_int_param::<u32>("limit", Some("-1")).is_err());
    }
}
