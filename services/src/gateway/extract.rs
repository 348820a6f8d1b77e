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
//!   checked by the handler with [`parse_int_param`] (or [`page_limit`]), so a
//!   message can name the parameter.
//! - [`idempotency_key`]: the `Idempotency-Key` header of a trigger.

use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
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

/// Most items one listing page (`GET /jobs`, `GET /functions`) may ask for.
/// The scheduler caps its pages at the same number, so a larger limit would
/// only look honoured.
pub(crate) const MAX_PAGE_LIMIT: u32 = 1000;

/// The `limit` query parameter of a listing: 1 to [`MAX_PAGE_LIMIT`]. Absent
/// is 0, which the scheduler reads as "its default page size".
pub(crate) fn page_limit(raw: Option<&str>) -> Result<u32, ApiError> {
    match parse_int_param::<u32>("limit", raw)? {
        None => Ok(0),
        Some(limit) if (1..=MAX_PAGE_LIMIT).contains(&limit) => Ok(limit),
        Some(limit) => Err(ApiError::invalid_parameter(format!(
            "query parameter `limit` must be between 1 and {MAX_PAGE_LIMIT}, got {limit}"
        ))),
    }
}

/// The header that makes a retried `POST /invoke` safe.
pub(crate) const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Longest idempotency key the scheduler accepts, in bytes.
pub(crate) const MAX_IDEMPOTENCY_KEY_BYTES: usize = 128;

/// The `Idempotency-Key` header: `""` (no key, as the scheduler reads it) when
/// absent. When present it must be given once and be 1 to 128 bytes of
/// visible ASCII (0x21 to 0x7E): keys are compared byte for byte, and spaces,
/// control or non-ASCII bytes are what proxies and HTTP libraries trim or
/// re-encode, so two retries of one request could otherwise carry different
/// keys.
pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<String, ApiError> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else {
        return Ok(String::new());
    };
    let extra = values.count();
    if extra > 0 {
        return Err(ApiError::invalid_header(format!(
            "the `Idempotency-Key` header is given {} times; give it once",
            extra + 1
        )));
    }
    let bytes = value.as_bytes();
    if bytes.is_empty() {
        return Err(ApiError::invalid_header(format!(
            "the `Idempotency-Key` header is empty; it must be 1 to {MAX_IDEMPOTENCY_KEY_BYTES} bytes"
        )));
    }
    if bytes.len() > MAX_IDEMPOTENCY_KEY_BYTES {
        return Err(ApiError::invalid_header(format!(
            "the `Idempotency-Key` header is {} bytes long; at most {MAX_IDEMPOTENCY_KEY_BYTES} are allowed",
            bytes.len()
        )));
    }
    if let Some(position) = bytes.iter().position(|b| !(0x21..=0x7e).contains(b)) {
        return Err(ApiError::invalid_header(format!(
            "the `Idempotency-Key` header may hold only visible ASCII characters (0x21 to 0x7E); \
             byte {} is 0x{:02X}",
            position + 1,
            bytes[position]
        )));
    }
    // Visible ASCII is UTF-8.
    Ok(String::from_utf8_lossy(bytes).into_owned())
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

/// A function's code: `code` as text (a built-in's name, WAT, source), or
/// `code_base64` for binary (a `.wasm` module) — exactly one of the two.
pub(crate) fn function_code(map: &Map<String, Value>) -> Result<Vec<u8>, ApiError> {
    let present = |field: &str| !matches!(map.get(field), None | Some(Value::Null));
    match (present("code"), present("code_base64")) {
        (true, false) => required_string(map, "code").map(String::into_bytes),
        (false, true) => {
            let encoded = required_string(map, "code_base64")?;
            BASE64.decode(encoded.trim()).map_err(|error| {
                ApiError::invalid_field(format!("field `code_base64` is not base64: {error}"))
            })
        }
        (true, true) => Err(ApiError::invalid_field(
            "give either `code` (text) or `code_base64` (binary), not both",
        )),
        (false, false) => Err(ApiError::invalid_field(
            "missing field `code` (text, e.g. WAT or a built-in's name) or `code_base64` \
             (binary, e.g. a .wasm module)",
        )),
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

    #[test]
    fn page_limits() {
        assert_eq!(page_limit(None).unwrap(), 0);
        assert_eq!(page_limit(Some("1")).unwrap(), 1);
        assert_eq!(page_limit(Some("1000")).unwrap(), MAX_PAGE_LIMIT);
        for bad in ["0", "1001", "-1", "x", "", "99999999999"] {
            let error = page_limit(Some(bad)).unwrap_err();
            assert_eq!(error.code, "invalid_parameter", "{bad:?}");
            assert!(
                error.message.contains("`limit`"),
                "{bad:?}: {}",
                error.message
            );
        }
    }

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(
                IDEMPOTENCY_KEY,
                axum::http::HeaderValue::from_bytes(value).unwrap(),
            );
        }
        headers
    }

    #[test]
    fn idempotency_keys() {
        assert_eq!(idempotency_key(&headers(&[])).unwrap(), "");
        assert_eq!(
            idempotency_key(&headers(&[b"order-42:retry_1"])).unwrap(),
            "order-42:retry_1"
        );
        let longest = "k".repeat(MAX_IDEMPOTENCY_KEY_BYTES);
        assert_eq!(
            idempotency_key(&headers(&[longest.as_bytes()])).unwrap(),
            longest
        );
        let too_long = "k".repeat(MAX_IDEMPOTENCY_KEY_BYTES + 1);
        let refused: [&[&[u8]]; 6] = [
            &[b""],
            &[too_long.as_bytes()],
            &[b"two words"],
            &[b"tab\tkey"],
            &["k\u{e9}y".as_bytes()],
            &[b"a", b"b"],
        ];
        for bad in refused {
            let error = idempotency_key(&headers(bad)).unwrap_err();
            assert_eq!(error.status, StatusCode::BAD_REQUEST);
            assert_eq!(error.code, "invalid_header");
            assert!(
                error.message.contains("`Idempotency-Key`"),
                "{}",
                error.message
            );
        }
    }
}
