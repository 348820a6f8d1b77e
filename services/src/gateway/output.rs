//! Decoding execution output (and function code) bytes for JSON answers, as
//! the seed gateway did: bytes that are valid JSON are returned as that JSON
//! value, otherwise valid UTF-8 is returned as a JSON string, and anything
//! else as a base64 string flagged with `"output_encoding":"base64"`.
//!
//! Empty output is `null` (an execution that has not finished has none).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

/// How decoded bytes are represented in the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// The value is the bytes themselves (JSON, or a string of UTF-8 text).
    Plain,
    /// The value is a base64 string of the bytes.
    Base64,
}

impl Encoding {
    /// The value of the `*_encoding` field, or `None` when it is left out.
    pub fn label(self) -> Option<&'static str> {
        match self {
            Encoding::Plain => None,
            Encoding::Base64 => Some("base64"),
        }
    }
}

/// Output bytes as a JSON value: JSON, else text, else base64.
pub(crate) fn decode_output(bytes: &[u8]) -> (Value, Encoding) {
    if bytes.is_empty() {
        return (Value::Null, Encoding::Plain);
    }
    if let Ok(value) = serde_json::from_slice::<Value>(bytes) {
        return (value, Encoding::Plain);
    }
    decode_text(bytes)
}

/// Bytes that are meant as text (function code): UTF-8 as a string, else
/// base64.
pub(crate) fn decode_text(bytes: &[u8]) -> (Value, Encoding) {
    match std::str::from_utf8(bytes) {
        Ok(text) => (Value::String(text.to_string()), Encoding::Plain),
        Err(_) => (Value::String(STANDARD.encode(bytes)), Encoding::Base64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_output_is_returned_as_json() {
        assert_eq!(
            decode_output(br#"{"message":"Hello Ada","sum":5}"#),
            (json!({"message": "Hello Ada", "sum": 5}), Encoding::Plain)
        );
        assert_eq!(decode_output(b"42"), (json!(42), Encoding::Plain));
        assert_eq!(
            decode_output(b" [1, 2] \n"),
            (json!([1, 2]), Encoding::Plain)
        );
        assert_eq!(
            decode_output(b"\"quoted\""),
            (json!("quoted"), Encoding::Plain)
        );
        assert_eq!(decode_output(b"null"), (Value::Null, Encoding::Plain));
    }

    #[test]
    fn text_output_is_a_string() {
        assert_eq!(
            decode_output(b"hello, world"),
            (json!("hello, world"), Encoding::Plain)
        );
        assert_eq!(
            decode_output(b"{not json"),
            (json!("{not json"), Encoding::Plain)
        );
        assert_eq!(
            decode_output("héllo ✓".as_bytes()),
            (json!("héllo ✓"), Encoding::Plain)
        );
    }

    #[test]
    fn binary_output_is_base64() {
        let (value, encoding) = decode_output(&[0xff, 0xfe, 0x00, 0x01]);
        assert_eq!(value, json!("//4AAQ=="));
        assert_eq!(encoding, Encoding::Base64);
        assert_eq!(encoding.label(), Some("base64"));
        assert_eq!(Encoding::Plain.label(), None);
    }

    #[test]
    fn empty_output_is_null() {
        assert_eq!(decode_output(b""), (Value::Null, Encoding::Plain));
    }

    #[test]
    fn code_is_text_or_base64() {
        assert_eq!(decode_text(b"42"), (json!("42"), Encoding::Plain));
        assert_eq!(decode_text(&[0x80]).1, Encoding::Base64);
    }
}
