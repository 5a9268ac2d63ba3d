//! A headless Chromium for tests, driven over the Chrome DevTools Protocol.
//!
//! [`Browser::launch`] finds Chromium (`PHIP_CHROMIUM`, else `/usr/bin/chromium`,
//! `chromium-browser`, `google-chrome` on the PATH), starts it headless in a throwaway profile
//! and attaches to one page. Tests navigate, set request headers (a bearer token) or cookies,
//! evaluate JavaScript to assert on the rendered DOM, and save PNG screenshots as artifacts.
//! The process is killed and the profile deleted when the [`Browser`] is dropped.
//!
//! When no Chromium is installed, `launch` prints a loud notice — straight to the process's
//! stderr, past the test harness's output capture, so it shows in a plain `cargo test` run —
//! and returns `None` so the test can skip; unless `PHIP_REQUIRE_BROWSER=1` (CI sets it after
//! installing `chromium`), where a missing browser fails the test instead.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Set to `1` to fail, rather than skip, browser tests when Chromium is missing.
pub const REQUIRE_BROWSER_ENV: &str = "PHIP_REQUIRE_BROWSER";
/// Directory for screenshots and other test artifacts (default `<target>/artifacts`).
pub const ARTIFACTS_ENV: &str = "PHIP_ARTIFACTS";

/// How long one DevTools command or page load may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Names the Chromium binary to use instead of looking for one.
pub const CHROMIUM_ENV: &str = "PHIP_CHROMIUM";

/// The Chromium binary, if one is installed (`PHIP_CHROMIUM` if it names a file).
pub fn find_chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(CHROMIUM_ENV) {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let candidates = ["chromium", "chromium-browser", "google-chrome"];
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::iter::once(PathBuf::from("/usr/bin/chromium"))
        .chain(
            std::env::split_paths(&path)
                .flat_map(|dir| candidates.iter().map(move |c| dir.join(c))),
        )
        .find(|p| p.is_file())
}

/// Where test artifacts go: `PHIP_ARTIFACTS`, else `artifacts/` in the target directory of the
/// running test binary. Created if missing.
pub fn artifacts_dir() -> PathBuf {
    let dir = std::env::var_os(ARTIFACTS_ENV)
        .map(PathBuf::from)
        .or_else(|| {
            // target/<profile>/deps/<test binary>
            let exe = std::env::current_exe().ok()?;
            Some(exe.parent()?.parent()?.parent()?.join("artifacts"))
        })
        .unwrap_or_else(|| std::env::temp_dir().join("phip-artifacts"));
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// A headless Chromium with one attached page.
pub struct Browser {
    child: Child,
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    session: String,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts Chromium with a `width`×`height` viewport; `None` (after a notice) when Chromium
    /// is missing and `PHIP_REQUIRE_BROWSER` is not `1`.
    ///
    /// # Panics
    /// When Chromium is required but missing, or cannot be started or attached to.
    pub async fn launch(width: u32, height: u32) -> Option<Browser> {
        let Some(binary) = find_chromium() else {
            let missing = match std::env::var_os(CHROMIUM_ENV) {
                Some(p) => format!("{CHROMIUM_ENV}={} is not a file", Path::new(&p).display()),
                None => "Chromium not found".to_owned(),
            };
            if std::env::var(REQUIRE_BROWSER_ENV).as_deref() == Ok("1") {
                panic!("{REQUIRE_BROWSER_ENV}=1 but {missing} (apt-get install chromium)");
            }
            crate::loud_notice(&[
                &format!(
                    "SKIPPING browser test {}: {missing}",
                    std::thread::current().name().unwrap_or("(unnamed)")
                ),
                &format!(
                    "(install it: apt-get install chromium fonts-wqy-microhei; or set PHIP_CHROMIUM; \
                     {REQUIRE_BROWSER_ENV}=1 fails instead)"
                ),
            ]);
            return None;
        };
        Some(Self::start(&binary, width, height).await)
    }

    async fn start(binary: &Path, width: u32, height: u32) -> Browser {
        let profile = tempfile::tempdir().expect("profile dir");
        let child = Command::new(binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                "--remote-debugging-port=0",
                &format!("--window-size={width},{height}"),
                &format!("--user-data-dir={}", profile.path().display()),
                "about:blank",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        // With port 0 Chromium picks a free port and writes it, with the browser target's
        // path, to DevToolsActivePort in the profile.
        let port_file = profile.path().join("DevToolsActivePort");
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        let endpoint = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                    break format!("ws://127.0.0.1:{port}{path}");
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "Chromium did not open its DevTools port"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let (ws, _) = tokio_tungstenite::connect_async(endpoint.as_str())
            .await
            .expect("connect to DevTools");
        let mut browser = Browser {
            child,
            ws,
            session: String::new(),
            next_id: 0,
            _profile: profile,
        };
        let target = browser
            .call(None, "Target.createTarget", json!({"url": "about:blank"}))
            .await;
        let target_id = target["targetId"].as_str().expect("targetId").to_owned();
        let attached = browser
            .call(
                None,
                "Target.attachToTarget",
                json!({"targetId": target_id, "flatten": true}),
            )
            .await;
        browser.session = attached["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_owned();
        for method in ["Page.enable", "Network.enable", "Runtime.enable"] {
            browser.command(method, json!({})).await;
        }
        browser
            .command(
                "Emulation.setDeviceMetricsOverride",
                json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
            )
            .await;
        browser
    }

    /// Sends a DevTools command (to the page unless `session` is `None` for the browser) and
    /// returns its result, skipping events.
    async fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            message["sessionId"] = json!(s);
        }
        self.ws
            .send(Message::text(message.to_string()))
            .await
            .expect("send to DevTools");
        let wait = async {
            while let Some(frame) = self.ws.next().await {
                let Ok(Message::Text(text)) = frame else {
                    continue;
                };
                let Ok(reply) = serde_json::from_str::<Value>(text.as_str()) else {
                    continue;
                };
                if reply["id"].as_u64() == Some(id) {
                    if let Some(error) = reply.get("error") {
                        panic!("DevTools {method} failed: {error}");
                    }
                    return reply["result"].clone();
                }
            }
            panic!("DevTools connection closed during {method}");
        };
        tokio::time::timeout(TIMEOUT, wait)
            .await
            .unwrap_or_else(|_| panic!("DevTools {method} timed out"))
    }

    /// Sends a command to the page.
    pub async fn command(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.call(Some(&session), method, params).await
    }

    /// Sends these headers with every request the page makes (e.g. `Authorization`).
    pub async fn set_headers(&mut self, headers: &[(&str, &str)]) {
        let map: serde_json::Map<String, Value> = headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect();
        self.command("Network.setExtraHTTPHeaders", json!({"headers": map}))
            .await;
    }

    /// Sets a cookie for `url`.
    pub async fn set_cookie(&mut self, url: &str, name: &str, value: &str) {
        self.command(
            "Network.setCookie",
            json!({"url": url, "name": name, "value": value, "httpOnly": true}),
        )
        .await;
    }

    /// Navigates to `url` and waits until the document has loaded.
    pub async fn goto(&mut self, url: &str) {
        let nav = self.command("Page.navigate", json!({"url": url})).await;
        if let Some(error) = nav.get("errorText") {
            panic!("navigation to {url} failed: {error}");
        }
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            if self.eval("document.readyState").await == "complete" {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{url} did not finish loading"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Evaluates a JavaScript expression in the page and returns its value (JSON).
    pub async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .command(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true}),
            )
            .await;
        if let Some(exception) = result.get("exceptionDetails") {
            panic!("script {expression:?} threw: {exception}");
        }
        result["result"]["value"].clone()
    }

    /// The text content of the first element matching a CSS selector (`None` if none).
    pub async fn text(&mut self, selector: &str) -> Option<String> {
        let script = format!(
            "(() => {{ const e = document.querySelector({}); return e ? e.textContent : null; }})()",
            json!(selector)
        );
        self.eval(&script).await.as_str().map(str::to_owned)
    }

    /// How many elements match a CSS selector.
    pub async fn count(&mut self, selector: &str) -> u64 {
        let script = format!("document.querySelectorAll({}).length", json!(selector));
        self.eval(&script).await.as_u64().unwrap_or(0)
    }

    /// Saves a PNG of the whole page to `path` and returns its size in bytes.
    pub async fn screenshot(&mut self, path: &Path) -> usize {
        let shot = self
            .command(
                "Page.captureScreenshot",
                json!({"format": "png", "captureBeyondViewport": true}),
            )
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("screenshot data"))
            .expect("screenshot base64");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("artifact dir");
        }
        std::fs::write(path, &png).expect("write screenshot");
        png.len()
    }
}

impl Browser {
    /// Asks Chromium to close and waits (up to 5 s) for it to exit, so its helper processes
    /// go with it; dropping the browser kills it instead.
    pub async fn close(mut self) {
        self.next_id += 1;
        let message = json!({"id": self.next_id, "method": "Browser.close", "params": {}});
        let _ = self.ws.send(Message::text(message.to_string())).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // kill_on_drop also covers a panic before this point; reap here when we can.
        let _ = self.child.start_kill();
        let _ = self.child.try_wait();
    }
}
