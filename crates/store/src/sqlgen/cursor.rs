//! Opaque paging cursors: base64url-encoded JSON tagged with what they page, so that a cursor of
//! one kind is refused by another. Shared by both backends (the format is dialect-neutral).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{Position, SqlArg};
use crate::{StoreError, StoreResult};

/// The kind of a search cursor (a keyset [`Position`]).
pub(crate) const SEARCH: &str = "s";
/// The kind of a history cursor (the last version's sequence number).
pub(crate) const HISTORY: &str = "h";
/// The kind of a patient compartment cursor (the last resource's rid).
pub(crate) const COMPARTMENT: &str = "c";

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

/// Drops the extra row a history or compartment page fetches (`LIMIT count + 1`) to learn
/// whether more follow; if there were more, returns the cursor of `kind` after the last kept
/// row, whose key `key` gives.
pub(crate) fn next_after<T>(
    rows: &mut Vec<T>,
    count: usize,
    kind: &str,
    key: impl Fn(&T) -> i64,
) -> Option<String> {
    if rows.len() > count {
        rows.truncate(count);
        rows.last().map(|r| encode(kind, &key(r)))
    } else {
        None
    }
}

/// The search cursor of a row: its sort values and its rid.
pub(crate) fn encode_position(keys: &[KeyValue], rid: i64) -> String {
    encode(SEARCH, &(keys, rid))
}

/// Decodes a search cursor into a position with one value per sort key (`nkeys`).
pub(crate) fn decode_position(cursor: &str, nkeys: usize) -> StoreResult<Position> {
    let (keys, rid): (Vec<KeyValue>, i64) = decode(SEARCH, cursor)?;
    if keys.len() != nkeys {
        return Err(StoreError::InvalidCursor);
    }
    Ok((keys.iter().map(KeyValue::to_arg).collect(), rid))
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
