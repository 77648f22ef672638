//! JSON in and out, with serde: a request body read into a type, a value
//! sent as a response, and KV values and a room's stored values kept as
//! JSON.
//!
//! ```ignore
//! use serde::{Deserialize, Serialize};
//! use spike_sdk::json::Json;
//!
//! #[derive(Deserialize)]
//! struct NewNote { text: String }
//! #[derive(Serialize)]
//! struct Saved { id: u64 }
//!
//! router.post("/notes", |req, _| -> Result<Json<Saved>, HttpError> {
//!     let note: NewNote = req.json(64 * 1024)?;
//!     let id = Namespace::open("notes")?.increment("next", 1)? as u64;
//!     Namespace::open("notes")?.set_json(&id.to_string(), &note.text, &SetOptions::default())?;
//!     Ok(Json(Saved { id }))
//! })
//! ```

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::http::{BodyError, Request, Response};
use crate::kv::{Namespace, SetOptions};
use crate::router::{HttpError, IntoResponse};

/// A value answered as `200` JSON. For another status, use
/// [`Response::json_of`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Json<T>(pub T);

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        Response::json_of(200, &self.0)
    }
}

impl Response {
    /// An `application/json` response with `value` serialized, ending in
    /// a newline as the host's own answers do. A value that cannot be
    /// serialized (a map with non-string keys, say) is a bug in the plugin
    /// and answers 500.
    pub fn json_of<T: Serialize + ?Sized>(status: u16, value: &T) -> Response {
        match serde_json::to_string(value) {
            Ok(text) => Response::json(status, text + "\n"),
            Err(e) => Response::error(500, "internal", &format!("the answer is not JSON: {e}")),
        }
    }
}

impl Request {
    /// The body, parsed as JSON into `T`: 413 `too_large` if it is longer
    /// than `limit` bytes, 400 `bad_json` (saying where and why) if it does
    /// not parse or does not fit `T`, 400 `bad_body` if it did not arrive
    /// whole. The content type is not checked: clients often leave it out.
    pub fn json<T: DeserializeOwned>(&self, limit: usize) -> Result<T, HttpError> {
        let bytes = self.body_bytes(limit).map_err(|e| match e {
            BodyError::TooLarge => {
                HttpError::new(413, "too_large", format!("the body is over {limit} bytes"))
            }
            BodyError::Stream(e) => HttpError::new(
                400,
                "bad_body",
                format!("the body did not arrive whole: {e}"),
            ),
        })?;
        parse(&bytes)
    }
}

/// `bytes` parsed as JSON into `T`, or 400 `bad_json` saying where and why.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, HttpError> {
    serde_json::from_slice(bytes)
        .map_err(|e| HttpError::new(400, "bad_json", format!("the JSON body: {e}")))
}

impl Namespace {
    /// The value under `key`, parsed as JSON; `None` if there is none. A
    /// stored value that does not parse as `T` fails with `internal` (the
    /// plugin stored something else there).
    pub fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, crate::Error> {
        let Some(bytes) = self.get(key)? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            crate::Error::Internal(format!(
                "the value under '{key}' is not the JSON expected: {e}"
            ))
        })
    }

    /// Stores `value` as JSON under `key`.
    pub fn set_json<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        options: &SetOptions,
    ) -> Result<(), crate::Error> {
        self.set(key, &to_stored(value)?, options)
    }
}

/// The room's stored value under `key` (`rooms::get`), parsed as JSON;
/// for room handlers. A value that does not parse as `T` fails with
/// `internal`.
pub fn room_get<T: DeserializeOwned>(key: &str) -> Result<Option<T>, crate::Error> {
    let Some(bytes) = crate::rooms::get(key)? else {
        return Ok(None);
    };
    from_stored(key, &bytes).map(Some)
}

/// Stores `value` as JSON under `key` in the room's storage
/// (`rooms::set`).
pub fn room_set<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<(), crate::Error> {
    crate::rooms::set(key, &to_stored(value)?)
}

fn from_stored<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, crate::Error> {
    serde_json::from_slice(bytes).map_err(|e| {
        crate::Error::Internal(format!(
            "the value under '{key}' is not the JSON expected: {e}"
        ))
    })
}

fn to_stored<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, crate::Error> {
    serde_json::to_vec(value)
        .map_err(|e| crate::Error::InvalidInput(format!("the value is not JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Note {
        text: String,
    }

    #[test]
    fn parse_says_where_and_why() {
        assert_eq!(
            parse::<Note>(br#"{"text":"hi"}"#),
            Ok(Note { text: "hi".into() })
        );
        let e = parse::<Note>(br#"{"text":1}"#).unwrap_err();
        assert_eq!((e.status, e.code.as_str()), (400, "bad_json"));
        assert!(e.message.contains("line 1 column"), "{}", e.message);
        let e = parse::<Note>(b"{").unwrap_err();
        assert!(e.message.contains("EOF"), "{}", e.message);
    }
}
