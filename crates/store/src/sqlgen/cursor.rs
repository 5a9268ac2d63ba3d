//! Opaque paging cursors: base64url-encoded JSON tagged with what they page, so that a cursor of
//! one kind is refused by another. Same format as the SQLite backend's own cursors, which can
//! move here (they are dialect-neutral).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::SqlArg;
use crate::{StoreError, StoreResult};

/// Encodes a cursor payload.
pub(crate) fn encode<T: Serialize>(kind: &str, payload: &T) -> String {
    // Serializing plain data (numbers, strings, vectors) cannot fail.
    let json = serde_json::to_vec(&(kind, payload)).unwrap_or_default();
    URL_SAFE_NO_PAD.encode(json)
}

/// Decodes a cursor payload of the given kind.
pub(crate) fn decode<T: DeserializeOwned>(kind: &str, cursor: &str) -> StoreResult<T> {
    let bytes = URL_SAFE_NO_PAD
        .decode(cursor.trim_end_matches('='))
        .map_err(|_| StoreError::InvalidCursor)?;
    let (k, payload): (String, T) =
        serde_json::from_slice(&bytes).map_err(|_| StoreError::InvalidCursor)?;
    if k != kind {
        return Err(StoreError::InvalidCursor);
    }
    Ok(payload)
}

/// One sort value of a search row, as kept in a keyset cursor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum KeyValue {
    /// No value (sorts last).
    #[serde(rename = "n")]
    Null,
    /// An integer (dates, `_lastUpdated`).
    #[serde(rename = "i")]
    Int(i64),
    /// A real (numbers, quantities).
    #[serde(rename = "r")]
    Real(f64),
    /// Text (strings, tokens, ids).
    #[serde(rename = "t")]
    Text(String),
}

impl KeyValue {
    /// The value as a bound argument (`None` for no value).
    pub(crate) fn to_arg(&self) -> Option<SqlArg> {
        match self {
            KeyValue::Null => None,
            KeyValue::Int(i) => Some(SqlArg::Int(*i)),
            KeyValue::Real(r) => Some(SqlArg::Real(*r)),
            KeyValue::Text(t) => Some(SqlArg::Text(t.clone())),
        }
    }
}
