//! Mapping of PostgreSQL errors onto [`StoreError`].

use postgres::error::SqlState;

use crate::StoreError;

/// Maps a driver error. Conflicts the caller can retry (serialization failures, deadlocks,
/// lock timeouts, a server shutting down) become [`StoreError::Busy`]; a lost or refused
/// connection becomes a `Backend` error that says so.
pub(crate) fn pg(e: postgres::Error) -> StoreError {
    if let Some(code) = e.code() {
        if [
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::LOCK_NOT_AVAILABLE,
            SqlState::TOO_MANY_CONNECTIONS,
            SqlState::CANNOT_CONNECT_NOW,
        ]
        .contains(code)
        {
            return StoreError::Busy;
        }
        if matches!(*code, SqlState::ADMIN_SHUTDOWN | SqlState::CRASH_SHUTDOWN) {
            return StoreError::Unavailable(format!("the PostgreSQL server is shutting down: {e}"));
        }
        if *code == SqlState::DISK_FULL {
            return StoreError::StorageFull;
        }
        if *code == SqlState::QUERY_CANCELED {
            return StoreError::Unavailable(format!("the statement was cancelled: {e}"));
        }
        let detail = e
            .as_db_error()
            .map(|d| {
                let mut s = d.message().to_owned();
                if let Some(detail) = d.detail() {
                    s.push_str(": ");
                    s.push_str(detail);
                }
                s
            })
            .unwrap_or_else(|| e.to_string());
        return StoreError::Backend(format!("PostgreSQL error {}: {detail}", code.code()));
    }
    if e.is_closed() {
        return StoreError::Unavailable("the connection to PostgreSQL was lost".into());
    }
    StoreError::Unavailable(format!("PostgreSQL connection failed: {e}"))
}

/// Whether an error means the connection can no longer be used (a server shutting down
/// ends every session after telling it so).
pub(crate) fn is_fatal(e: &postgres::Error) -> bool {
    e.is_closed()
        || e.code()
            .is_none_or(|c| matches!(*c, SqlState::ADMIN_SHUTDOWN | SqlState::CRASH_SHUTDOWN))
}

/// A failure that is the store's own (bad stored data, misuse), not PostgreSQL's.
pub(crate) fn backend(msg: impl Into<String>) -> StoreError {
    StoreError::Backend(msg.into())
}
