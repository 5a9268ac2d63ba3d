//! Skipped browser tests say so loudly: the notice reaches the terminal of a plain `cargo test`
//! run, past the harness's output capture (which shows `eprintln!` output only for failures),
//! and `PHIP_REQUIRE_BROWSER=1` turns the skip into a failure.
//!
//! Each check runs this test binary again as a child, so that the environment it needs
//! (no Chromium) does not leak into other tests.

use std::process::{Command, Output};

use phip_testkit::browser::{Browser, CHROMIUM_ENV, REQUIRE_BROWSER_ENV};

/// Set in the child run: only then does the `child_*` test do anything.
const CHILD_ENV: &str = "PHIP_TESTKIT_SKIP_CHILD";

/// Runs the test `name` of this binary in a child process, output captured as usual.
fn run_child(name: &str, require: bool) -> Output {
    let mut command = Command::new(std::env::current_exe().expect("test binary"));
    command
        .args(["--exact", name, "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .env(CHROMIUM_ENV, "/nonexistent/chromium-for-the-skip-test")
        .env_remove(REQUIRE_BROWSER_ENV);
    if require {
        command.env(REQUIRE_BROWSER_ENV, "1");
    }
    command.output().expect("run the test binary")
}

#[tokio::test]
async fn child_launches_a_browser() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    assert!(Browser::launch(800, 600).await.is_none());
}

#[test]
fn a_skipped_browser_test_is_announced_on_stderr() {
    let output = run_child("child_launches_a_browser", false);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("SKIPPING browser test child_launches_a_browser")
            && stderr.contains("chromium-for-the-skip-test is not a file"),
        "the notice must reach stderr past the capture: {stderr}"
    );
}

#[test]
fn a_required_browser_fails_instead_of_skipping() {
    let output = run_child("child_launches_a_browser", true);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{stdout}");
    assert!(stdout.contains("PHIP_REQUIRE_BROWSER=1 but"), "{stdout}");
}
