//! Mapping of SQLite errors onto [`StoreError`].

use rusqlite::ErrorCode;

use crate::StoreError;

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match &e {
            rusqlite::Error::SqliteFailure(f, _)
                if matches!(f.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) =>
            {
                StoreError::Busy
            }
            _ => StoreError::Backend(e.to_string()),
        }
    }
}

/// A failure that is the store's own (bad stored data, misuse), not SQLite's.
pub(crate) fn backend(msg: impl Into<String>) -> StoreError {
    StoreError::Backend(msg.into())
}
