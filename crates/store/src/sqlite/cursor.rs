//! Opaque paging cursors: base64url-encoded JSON, tagged with what they page so that a cursor
//! of one kind is refused by another.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

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
    pub(crate) fn from_sql(v: rusqlite::types::ValueRef<'_>) -> KeyValue {
        use rusqlite::types::ValueRef;
        match v {
            ValueRef::Null => KeyValue::Null,
            ValueRef::Integer(i) => KeyValue::Int(i),
            ValueRef::Real(r) => KeyValue::Real(r),
            ValueRef::Text(t) | ValueRef::Blob(t) => {
                KeyValue::Text(String::from_utf8_lossy(t).into_owned())
            }
        }
    }

    pub(crate) fn to_sql(&self) -> rusqlite::types::Value {
        use rusqlite::types::Value;
        match self {
            KeyValue::Null => Value::Null,
            KeyValue::Int(i) => Value::Integer(*i),
            KeyValue::Real(r) => Value::Real(*r),
            KeyValue::Text(t) => Value::Text(t.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_kind_check() {
        let keys = vec![
            KeyValue::Int(5),
            KeyValue::Null,
            KeyValue::Real(1.5),
            KeyValue::Text("a\"b".into()),
        ];
        let c = encode("s", &(keys.clone(), 42_i64));
        let (back, rid): (Vec<KeyValue>, i64) = decode("s", &c).unwrap();
        assert_eq!(back, keys);
        assert_eq!(rid, 42);
        assert!(decode::<(Vec<KeyValue>, i64)>("h", &c).is_err());
        assert!(decode::<i64>("h", "!!!").is_err());
    }
}
