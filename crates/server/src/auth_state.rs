//! Durable authentication state, in `<data_dir>/auth.db` (SQLite, WAL, synchronous commits):
//!
//! - the keys (`client id` + `jti`) of the client assertions accepted at `/auth/token`, until
//!   they expire (at most five minutes plus the clock-skew leeway), so that an assertion is
//!   used once even across a restart;
//! - the portal sessions signed out (`sid`), until the last of their tokens expires, so that
//!   a signed-out session's tokens stay refused across a restart.
//!
//! SQLite rather than memory or a flat file: several processes on one data directory (the
//! `phip serve` and a `phip token` run, or servers sharing the directory) see each other's
//! entries, and "insert unless present" is one atomic statement. Servers sharing one
//! PostgreSQL database but not a data directory do not share this state (see
//! docs/security.md, "Authentication").

use std::path::{Path, PathBuf};
use std::time::Duration;

use parking_lot::Mutex;
use phip_security::token::{ReplayGuard, TokenError};
use rusqlite::{params, Connection, OptionalExtension};

/// The file in the data directory.
pub const AUTH_DB_FILE: &str = "auth.db";

/// The open state database. See the [module docs](self).
pub struct AuthState {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl std::fmt::Debug for AuthState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthState")
            .field("path", &self.path)
            .finish()
    }
}

impl AuthState {
    /// Opens (creating on first use) `<data_dir>/auth.db`.
    pub fn open(data_dir: &Path) -> rusqlite::Result<Self> {
        let path = data_dir.join(AUTH_DB_FILE);
        let conn = Connection::open(&path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS used_assertion (
                 key TEXT PRIMARY KEY,
                 expires INTEGER NOT NULL
             ) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS revoked_session (
                 sid TEXT PRIMARY KEY,
                 expires INTEGER NOT NULL
             ) WITHOUT ROWID;",
        )?;
        Ok(Self {
            conn: Mutex::new(conn),
            path,
        })
    }

    /// Records that session `sid` was signed out; its tokens are refused until `expires`
    /// (seconds since the epoch: the expiry of the last token minted for it).
    pub fn revoke_session(&self, sid: &str, expires: i64, now: i64) -> rusqlite::Result<()> {
        let conn = self.conn.lock();
        conn.execute(
            "INSERT INTO revoked_session (sid, expires) VALUES (?1, ?2)
             ON CONFLICT (sid) DO UPDATE SET expires = max(expires, excluded.expires)",
            params![sid, expires],
        )?;
        conn.execute(
            "DELETE FROM revoked_session WHERE expires < ?1",
            params![now],
        )?;
        Ok(())
    }

    /// Whether session `sid` was signed out (and its tokens may still be unexpired at `now`).
    pub fn session_revoked(&self, sid: &str, now: i64) -> rusqlite::Result<bool> {
        self.conn
            .lock()
            .query_row(
                "SELECT 1 FROM revoked_session WHERE sid = ?1 AND expires >= ?2",
                params![sid, now],
                |_| Ok(()),
            )
            .optional()
            .map(|found| found.is_some())
    }

    fn record_assertion(&self, key: &str, expires: i64, now: i64) -> rusqlite::Result<bool> {
        let conn = self.conn.lock();
        // One statement: inserted, or an expired entry of the key renewed; a live entry makes
        // it change nothing, which is a replay.
        let changed = conn.execute(
            "INSERT INTO used_assertion (key, expires) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET expires = excluded.expires
             WHERE used_assertion.expires < ?3",
            params![key, expires, now],
        )?;
        if changed == 1 {
            conn.execute(
                "DELETE FROM used_assertion WHERE expires < ?1",
                params![now],
            )?;
        }
        Ok(changed == 1)
    }
}

impl ReplayGuard for AuthState {
    fn check_and_insert(&self, key: &str, expires: i64, now: i64) -> Result<(), TokenError> {
        match self.record_assertion(key, expires, now) {
            Ok(true) => Ok(()),
            Ok(false) => Err(TokenError::Replayed),
            Err(error) => {
                tracing::error!(path = %self.path.display(), %error, "the assertion replay cache is unavailable");
                Err(TokenError::ReplayCacheUnavailable(
                    "the server could not record the assertion".into(),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn assertions_are_used_once_across_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let state = AuthState::open(dir.path()).unwrap();
        state.check_and_insert("c\0j1", NOW + 300, NOW).unwrap();
        assert_eq!(
            state.check_and_insert("c\0j1", NOW + 300, NOW + 1),
            Err(TokenError::Replayed)
        );
        drop(state);
        // A restart (or another process on the same data directory) still knows it.
        let state = AuthState::open(dir.path()).unwrap();
        let other = AuthState::open(dir.path()).unwrap();
        assert_eq!(
            state.check_and_insert("c\0j1", NOW + 300, NOW + 2),
            Err(TokenError::Replayed)
        );
        other.check_and_insert("c\0j2", NOW + 300, NOW + 2).unwrap();
        assert_eq!(
            state.check_and_insert("c\0j2", NOW + 300, NOW + 3),
            Err(TokenError::Replayed)
        );
        // Expired entries go, and their key may be used again.
        state
            .check_and_insert("c\0j1", NOW + 900, NOW + 301)
            .unwrap();
        let count: i64 = state
            .conn
            .lock()
            .query_row("SELECT count(*) FROM used_assertion", [], |r| r.get(0))
            .unwrap();
        assert_eq!(count, 1, "j2 expired and was pruned");
    }

    #[test]
    fn revoked_sessions_survive_reopening_until_they_expire() {
        let dir = tempfile::tempdir().unwrap();
        let state = AuthState::open(dir.path()).unwrap();
        assert!(!state.session_revoked("s1", NOW).unwrap());
        state.revoke_session("s1", NOW + 1800, NOW).unwrap();
        drop(state);
        let state = AuthState::open(dir.path()).unwrap();
        assert!(state.session_revoked("s1", NOW + 10).unwrap());
        assert!(!state.session_revoked("s2", NOW + 10).unwrap());
        assert!(!state.session_revoked("s1", NOW + 1801).unwrap());
    }
}
