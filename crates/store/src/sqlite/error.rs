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
            rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::DiskFull => {
                StoreError::StorageFull
            }
            rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::OperationInterrupted => {
                StoreError::Unavailable("the query exceeded the store's time limit".into())
            }
            _ => StoreError::Backend(e.to_string()),
        }
    }
}

/// A failure that is the store's own (bad stored data, misuse), not SQLite's.
pub(crate) fn backend(msg: impl Into<String>) -> StoreError {
    StoreError::Backend(msg.into())
}
