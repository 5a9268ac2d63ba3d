//! Space held back so that the audit trail can keep recording when the disk fills up.
//!
//! The audit log shares its disk with the clinical store. When that disk is full the store
//! refuses writes cleanly, but reads must go on being served — and every read must be
//! recorded, or it may not be served at all. So the log keeps a file of zeros beside it; the
//! first append that finds the disk full deletes the file and retries into the space it
//! freed, and the log enters an *emergency*: the server then refuses every write before it
//! reaches the store (see `AuditLog::storage_emergency`), so the freed space is spent on audit
//! records of reads only. The emergency ends when the reserve can be written again.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

/// File name of the reserve in the data directory.
pub const RESERVE_FILE: &str = "audit.reserve";

/// Default size of the reserve: room for tens of thousands of audit records.
pub const DEFAULT_RESERVE_BYTES: u64 = 8 * 1024 * 1024;

/// The reserve file and whether it has been spent.
pub(crate) struct Reserve {
    path: PathBuf,
    bytes: u64,
    spent: AtomicBool,
    /// Serialises refills, so concurrent requests don't write the file twice.
    refill: Mutex<()>,
}

impl Reserve {
    pub(crate) fn new(data_dir: &Path, bytes: u64) -> Self {
        Self {
            path: data_dir.join(RESERVE_FILE),
            bytes,
            spent: AtomicBool::new(false),
            refill: Mutex::new(()),
        }
    }

    /// Whether the reserve is configured at all.
    pub(crate) fn enabled(&self) -> bool {
        self.bytes > 0
    }

    /// Makes sure the reserve file exists at full size, written (not sparse, which would hold
    /// nothing back) and synced. On failure the partial file is removed.
    pub(crate) fn fill(&self) -> std::io::Result<()> {
        if !self.enabled() {
            return Ok(());
        }
        let _one_at_a_time = self.refill.lock();
        if std::fs::metadata(&self.path).is_ok_and(|m| m.len() == self.bytes) {
            return Ok(());
        }
        let result = (|| {
            let mut file = std::fs::File::create(&self.path)?;
            let chunk = vec![0u8; 1024 * 1024];
            let mut left = self.bytes;
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                file.write_all(&chunk[..n])?;
                left -= n as u64;
            }
            file.sync_all()
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&self.path);
        }
        result
    }

    /// Frees the reserve's space for the audit log and enters the emergency. Returns whether
    /// there was anything to free.
    pub(crate) fn release(&self) -> bool {
        let _one_at_a_time = self.refill.lock();
        let freed = std::fs::remove_file(&self.path).is_ok();
        if freed {
            self.spent.store(true, Ordering::SeqCst);
            tracing::error!(
                path = %self.path.display(),
                "the disk is full: released the audit reserve; writes are refused until space is freed, reads go on"
            );
        }
        freed
    }

    /// Whether the reserve has been spent (a cheap check, no refill attempt).
    pub(crate) fn spent(&self) -> bool {
        self.spent.load(Ordering::SeqCst)
    }

    /// Whether the emergency is on. Each call during an emergency tries to refill the reserve
    /// and ends the emergency when that succeeds.
    pub(crate) fn emergency(&self) -> bool {
        if !self.spent.load(Ordering::SeqCst) {
            return false;
        }
        match self.fill() {
            Ok(()) => {
                self.spent.store(false, Ordering::SeqCst);
                tracing::warn!("disk space is back: the audit reserve is refilled, writes resume");
                false
            }
            Err(_) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_written_released_and_refilled() {
        let dir = tempfile::tempdir().unwrap();
        let reserve = Reserve::new(dir.path(), 64 * 1024);
        let path = dir.path().join(RESERVE_FILE);
        reserve.fill().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 64 * 1024);
        assert!(!reserve.emergency());

        assert!(reserve.release());
        assert!(!path.exists());
        assert!(reserve.spent());
        assert!(!reserve.release(), "nothing left to release");

        // Space is available here, so the first check ends the emergency.
        assert!(!reserve.emergency());
        assert!(!reserve.spent());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 64 * 1024);
    }

    #[test]
    fn a_disabled_reserve_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let reserve = Reserve::new(dir.path(), 0);
        reserve.fill().unwrap();
        assert!(!dir.path().join(RESERVE_FILE).exists());
        assert!(!reserve.release());
    }
}
