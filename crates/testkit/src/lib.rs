//! Test helpers shared by the tests of every phip crate.
//!
//! [`PgCluster`] runs a throwaway PostgreSQL cluster (`initdb` + `pg_ctl` found on `PATH`) in a
//! temporary directory, tuned for speed rather than durability (`fsync=off`,
//! `synchronous_commit=off`, `full_page_writes=off`). Tests normally share one cluster per test
//! process ([`PgCluster::shared`]) and isolate themselves with a database each
//! ([`PgCluster::fresh_database`]).
//!
//! Rust has no global test teardown and a test process may die of `kill -9`, so every cluster
//! is stopped three ways: by `Drop` for clusters a test owns, by an `atexit` hook when the
//! process exits normally, and by a detached watchdog shell that polls the test process and
//! stops the server and deletes the directory once it is gone.
//!
//! Where no PostgreSQL binaries are installed the helpers print a loud notice and return
//! `None`, so tests skip; with `PHIP_REQUIRE_POSTGRES=1` (CI) they panic instead, so that a
//! missing installation cannot pass as green.
//!
//! [`CitusCluster`] runs a coordinator and workers of PostgreSQL with Citus the same way, with
//! the same skip-or-fail rule (`PHIP_REQUIRE_CITUS=1`).
//!
//! [`browser::Browser`] is a headless Chromium for browser tests, with the same skip-or-fail
//! rule (`PHIP_REQUIRE_BROWSER=1`).
//!
//! [`jose::flip_s`] produces the other ECDSA encoding of a JWS signature, for tests that
//! verifiers refuse it.

pub mod browser;
pub mod citus;
pub mod jose;

pub use citus::CitusCluster;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The environment variable that turns a missing PostgreSQL into a test failure.
pub const REQUIRE_ENV: &str = "PHIP_REQUIRE_POSTGRES";

/// The superuser `initdb` creates; authentication is `trust` on loopback only.
const SUPERUSER: &str = "phip";

/// A running throwaway PostgreSQL cluster.
#[derive(Debug)]
pub struct PgCluster {
    /// The temporary directory holding the data directory, socket and log.
    root: PathBuf,
    port: u16,
    bin_dir: PathBuf,
    /// `Some("postgres")` when the server runs as that system user (the caller is root).
    run_as: Option<String>,
    /// Whether `Drop` stops the cluster (owned clusters; the shared one stops at exit).
    stop_on_drop: bool,
    /// Server options after the common ones (`-c name=value …`).
    options: String,
}

static SHARED: OnceLock<Option<PgCluster>> = OnceLock::new();

/// Clusters to stop when the process exits normally (their roots and binaries).
static AT_EXIT: Mutex<Vec<(PathBuf, PathBuf, Option<String>)>> = Mutex::new(Vec::new());

static DB_COUNTER: AtomicU64 = AtomicU64::new(0);

impl PgCluster {
    /// The cluster shared by all tests of this process, started on first use. `None` (after a
    /// loud notice on stderr) when PostgreSQL is not installed, unless `PHIP_REQUIRE_POSTGRES=1`,
    /// in which case this panics. Also panics if the binaries exist but the cluster fails to
    /// start, since that is a broken environment rather than a missing one.
    pub fn shared() -> Option<&'static PgCluster> {
        SHARED
            .get_or_init(|| {
                let bin_dir = find_binaries()?;
                match PgCluster::start_in(bin_dir, false, String::new()) {
                    Ok(c) => Some(c),
                    Err(e) => panic!("cannot start the shared PostgreSQL test cluster: {e}"),
                }
            })
            .as_ref()
    }

    /// A cluster of the caller's own, stopped and deleted when dropped (for tests that stop
    /// and restart the server). `None` when PostgreSQL is not installed, as for
    /// [`PgCluster::shared`].
    pub fn start_owned() -> Option<PgCluster> {
        let bin_dir = find_binaries()?;
        match PgCluster::start_in(bin_dir, true, String::new()) {
            Ok(c) => Some(c),
            Err(e) => panic!("cannot start a PostgreSQL test cluster: {e}"),
        }
    }

    fn start_in(
        bin_dir: PathBuf,
        stop_on_drop: bool,
        options: String,
    ) -> Result<PgCluster, String> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let root_user = unsafe { libc::geteuid() } == 0;
        let run_as = root_user.then(|| "postgres".to_owned());
        let root = make_root(run_as.as_deref())?;
        let mut cluster = PgCluster {
            root,
            port: 0,
            bin_dir,
            run_as,
            stop_on_drop,
            options,
        };
        // From here on the directory exists: make sure it goes away whatever happens.
        cluster.spawn_watchdog()?;
        AT_EXIT
            .lock()
            .map_err(|_| "at-exit registry poisoned".to_owned())?
            .push((
                cluster.root.clone(),
                cluster.bin_dir.clone(),
                cluster.run_as.clone(),
            ));
        register_atexit();
        cluster.initdb()?;
        // A free port can be taken by someone else between probing and binding; retry.
        let mut last_err = String::new();
        for _ in 0..5 {
            cluster.port = free_port()?;
            match cluster.start_server() {
                Ok(()) => return Ok(cluster),
                Err(e) => last_err = e,
            }
        }
        Err(last_err)
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The temporary directory of the cluster (data directory `data/`, log `postgres.log`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A connection URL for the given database.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{SUPERUSER}@127.0.0.1:{}/{database}?connect_timeout=10",
            self.port
        )
    }

    /// Creates a new, uniquely named, empty database and returns its connection URL.
    ///
    /// Panics when the cluster does not answer: there is no test to run without it.
    pub fn fresh_database(&self) -> String {
        let n = DB_COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("phip_test_{}_{n}", std::process::id());
        let mut client = postgres::Client::connect(&self.url("postgres"), postgres::NoTls)
            .unwrap_or_else(|e| panic!("cannot connect to the test cluster: {e}"));
        // Identifiers cannot be bound; the name is our own.
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("cannot create database {name}: {e}"));
        self.url(&name)
    }

    /// Creates a new, empty database whose tables and indexes live in `location` (through a
    /// tablespace there), and returns its connection URL. The write-ahead log and the catalogs
    /// stay in the cluster's own data directory, as on a server whose data volume is separate
    /// from its WAL volume: when `location` is a small file system that fills up, writes fail
    /// with `disk_full` rather than PostgreSQL stopping for want of WAL space.
    ///
    /// `location` must be an empty directory; it is given to the cluster's system user.
    pub fn fresh_database_in(&self, location: &Path) -> Result<String, String> {
        if let Some(user) = &self.run_as {
            chown(location, user)?;
        }
        let path = location
            .to_str()
            .filter(|p| !p.contains('\''))
            .ok_or_else(|| format!("unusable tablespace path {}", location.display()))?;
        let n = DB_COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("phip_test_{}_{n}", std::process::id());
        let mut client = postgres::Client::connect(&self.url("postgres"), postgres::NoTls)
            .map_err(|e| format!("cannot connect to the test cluster: {e}"))?;
        // Identifiers and LOCATION cannot be bound; the name is ours, the path was checked.
        client
            .batch_execute(&format!("CREATE TABLESPACE {name}_space LOCATION '{path}'"))
            .map_err(|e| format!("cannot create a tablespace in {path}: {e}"))?;
        client
            .batch_execute(&format!("CREATE DATABASE {name} TABLESPACE {name}_space"))
            .map_err(|e| format!("cannot create database {name}: {e}"))?;
        Ok(self.url(&name))
    }

    /// Starts the server (again) on the cluster's port and waits until it accepts connections.
    pub fn start_server(&self) -> Result<(), String> {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} \
             -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
             -c max_connections=300 -c shared_buffers=128MB {}",
            self.port,
            self.root.display(),
            self.options
        );
        let log = self.root.join("postgres.log");
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.root.join("data"))
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "-o", &opts, "start"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run pg_ctl: {e}"))?;
        if !out.status.success() {
            let log_text = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(format!(
                "pg_ctl start failed: {}{}\n{log_text}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    }

    /// Stops the server, keeping the data directory, so that a test can observe a store while
    /// the database is down and then call [`PgCluster::start_server`]. A fast shutdown: every
    /// session is cut off as by a crash, but commits acknowledged under this cluster's
    /// `synchronous_commit=off` are still written out first.
    pub fn stop_server(&self) -> Result<(), String> {
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.root.join("data"))
            .args(["-w", "-m", "fast", "stop"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run pg_ctl: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "pg_ctl stop failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    }

    fn initdb(&self) -> Result<(), String> {
        let out = self
            .command("initdb")
            .arg("-D")
            .arg(self.root.join("data"))
            .args([
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
            ])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    }

    /// A command running a PostgreSQL binary as the cluster's user.
    fn command(&self, program: &str) -> Command {
        command_as(&self.bin_dir, self.run_as.as_deref(), program)
    }

    /// A shell, in its own process group (so a terminal's Ctrl-C does not kill it with the
    /// tests), that waits for this process to end and then removes the cluster.
    fn spawn_watchdog(&self) -> Result<(), String> {
        use std::os::unix::process::CommandExt;
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf '{root}'",
            pid = std::process::id(),
            stop = shell_stop_command(&self.bin_dir, self.run_as.as_deref(), &self.root),
            root = self.root.display(),
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start the cluster watchdog: {e}"))?;
        Ok(())
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.stop_on_drop {
            teardown(&self.root, &self.bin_dir, self.run_as.as_deref());
            if let Ok(mut list) = AT_EXIT.lock() {
                list.retain(|(r, _, _)| r != &self.root);
            }
        }
    }
}

/// Stops a cluster and deletes its directory; errors are ignored (it may already be gone).
fn teardown(root: &Path, bin_dir: &Path, run_as: Option<&str>) {
    let data = root.join("data");
    if data.join("postmaster.pid").exists() {
        let _ = command_as(bin_dir, run_as, "pg_ctl")
            .arg("-D")
            .arg(&data)
            .args(["-w", "-m", "immediate", "stop"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    let _ = std::fs::remove_dir_all(root);
}

extern "C" fn stop_all_at_exit() {
    let list = match AT_EXIT.lock() {
        Ok(mut l) => std::mem::take(&mut *l),
        Err(_) => return,
    };
    for (root, bin_dir, run_as) in list {
        teardown(&root, &bin_dir, run_as.as_deref());
    }
}

fn register_atexit() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: registers a plain extern "C" function; it only touches a Mutex-guarded
        // static and spawns processes, both fine while the process is exiting normally.
        unsafe {
            libc::atexit(stop_all_at_exit);
        }
    });
}

fn command_as(bin_dir: &Path, run_as: Option<&str>, program: &str) -> Command {
    let exe = bin_dir.join(program);
    match run_as {
        Some(user) => {
            let mut c = Command::new("runuser");
            c.args(["-u", user, "--"]).arg(exe);
            c
        }
        None => Command::new(exe),
    }
}

fn shell_stop_command(bin_dir: &Path, run_as: Option<&str>, root: &Path) -> String {
    let pg_ctl = bin_dir.join("pg_ctl");
    let base = format!(
        "'{}' -D '{}' -m immediate stop",
        pg_ctl.display(),
        root.join("data").display()
    );
    match run_as {
        Some(user) => format!("runuser -u {user} -- {base}"),
        None => base,
    }
}

/// The directory holding `initdb`, `pg_ctl` and `postgres`, or `None` after a loud notice
/// (a panic when PostgreSQL is required).
fn find_binaries() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path).find(|dir| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|b| dir.join(b).is_file())
    });
    if found.is_none() {
        let msg = "SKIPPING PostgreSQL tests: initdb not found on PATH";
        if std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1") {
            panic!("{msg}, but {REQUIRE_ENV}=1 requires them");
        }
        loud_notice(&[
            msg,
            &format!(
                "(install PostgreSQL server binaries, or set {REQUIRE_ENV}=1 to fail instead)"
            ),
        ]);
    }
    found
}

/// Prints a framed notice about skipped tests to the process's stderr directly: `eprintln!`
/// would be captured by the test harness and shown only for failing tests, and a skip must be
/// seen in a plain `cargo test` run.
pub fn loud_notice(lines: &[&str]) {
    use std::io::Write as _;
    let rule = "=".repeat(72);
    let mut text = format!("\n{rule}\n");
    for line in lines {
        text.push_str(line);
        text.push('\n');
    }
    text.push_str(&rule);
    text.push_str("\n\n");
    // Best effort: a notice that cannot be written must not fail the test run.
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// A new temporary directory, owned by `run_as` when given.
fn make_root(run_as: Option<&str>) -> Result<PathBuf, String> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let root = std::env::temp_dir().join(format!(
        "phip-pg-{}-{}-{nanos}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir(&root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
    if let Some(user) = run_as {
        chown(&root, user)?;
    }
    Ok(root)
}

/// Gives `path` to the system user `user`.
fn chown(path: &Path, user: &str) -> Result<(), String> {
    let (uid, gid) = user_ids(user)?;
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| "path contains NUL".to_owned())?;
    // SAFETY: c_path is a valid NUL-terminated path.
    if unsafe { libc::chown(c_path.as_ptr(), uid, gid) } != 0 {
        return Err(format!(
            "cannot give {} to {user}: {}",
            path.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

fn user_ids(user: &str) -> Result<(libc::uid_t, libc::gid_t), String> {
    let name = std::ffi::CString::new(user).map_err(|_| "bad user name".to_owned())?;
    // SAFETY: getpwnam returns NULL or a pointer to a static passwd record, read at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return Err(format!(
            "running as root, but there is no `{user}` system user to run PostgreSQL as"
        ));
    }
    // SAFETY: pw is non-null and points to a valid passwd record.
    Ok(unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// Waits until `f` returns true or the timeout passes; returns whether it did.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// `len` letters and digits that no compressor can shrink (xorshift64 from `seed`): filler
/// that really takes its size on disk and in a database index entry.
pub fn incompressible(len: usize, seed: u64) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(ALPHABET[(state % ALPHABET.len() as u64) as usize])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_cluster_serves_fresh_databases() {
        let Some(cluster) = PgCluster::shared() else {
            return;
        };
        let a = cluster.fresh_database();
        let b = cluster.fresh_database();
        assert_ne!(a, b);
        let mut client = postgres::Client::connect(&a, postgres::NoTls).unwrap();
        let one: i32 = client.query_one("SELECT 1", &[]).unwrap().get(0);
        assert_eq!(one, 1);
        let fsync: String = client.query_one("SHOW fsync", &[]).unwrap().get(0);
        assert_eq!(fsync, "off");
    }

    #[test]
    fn owned_cluster_restarts_and_is_removed_on_drop() {
        let Some(cluster) = PgCluster::start_owned() else {
            return;
        };
        let url = cluster.fresh_database();
        let root = cluster.root().to_owned();
        cluster.stop_server().unwrap();
        assert!(postgres::Client::connect(&url, postgres::NoTls).is_err());
        cluster.start_server().unwrap();
        assert!(postgres::Client::connect(&url, postgres::NoTls).is_ok());
        drop(cluster);
        assert!(!root.exists());
    }
}
