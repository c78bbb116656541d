//! A real browser for the page's tests: headless Chromium driven by
//! chromedriver over WebDriver (the W3C protocol: JSON over HTTP, spoken
//! here with `ureq`). Without Chromium the test prints SKIPPED, and
//! fails under CI's strict mode (see [`super::skip`]).

use serde_json::{Value, json};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The browser and the driver it runs under; both end on drop.
pub struct Browser {
    driver: Child,
    agent: ureq::Agent,
    session: String,
    _profile: tempfile::TempDir,
}

/// The chromium binary and its driver, if installed.
fn tools() -> Option<(&'static str, &'static str)> {
    let chromium = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|p| super::have_tool(p))?;
    super::have_tool("chromedriver").then_some((chromium, "chromedriver"))
}

impl Browser {
    /// Starts headless Chromium with a phone-sized window; `None` (after
    /// saying SKIPPED) when it is not installed.
    pub fn start() -> Option<Browser> {
        let Some((chromium, driver)) = tools() else {
            super::skip(
                "the page's browser tests need chromium and chromedriver (Debian: apt-get install chromium chromium-driver)",
            );
            return None;
        };
        let port = super::web::free_port();
        let driver = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let profile = tempfile::tempdir().unwrap();
        let path = which(chromium);
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": path,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu",
                    "--disable-dev-shm-usage", "--window-size=390,844",
                    "--lang=zh-CN", "--no-first-run",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        }}});
        let base = format!("http://127.0.0.1:{port}");
        let mut response = agent
            .post(format!("{base}/session"))
            .send_json(&capabilities)
            .expect("chromedriver answers");
        let answer: Value = response.body_mut().read_json().unwrap();
        let session = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {answer}"))
            .to_string();
        Some(Browser {
            driver,
            agent,
            session: format!("{base}/session/{session}"),
            _profile: profile,
        })
    }

    fn command(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.session);
        let mut response = match method {
            "GET" => self.agent.get(&url).call(),
            "DELETE" => self.agent.delete(&url).call(),
            _ => self.agent.post(&url).send_json(&body),
        }
        .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let answer: Value = response.body_mut().read_json().unwrap();
        if let Some(error) = answer["value"].get("error") {
            panic!(
                "WebDriver {method} {path}: {error}: {}",
                answer["value"]["message"]
            );
        }
        answer["value"].clone()
    }

    pub fn goto(&self, url: &str) {
        self.command("POST", "/url", json!({ "url": url }));
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page.
    pub fn run(&self, script: &str, args: Value) -> Value {
        self.command(
            "POST",
            "/execute/sync",
            json!({ "script": script, "args": args }),
        )
    }

    /// The element matching a CSS selector (WebDriver's reference to it).
    pub fn find(&self, css: &str) -> Value {
        self.command(
            "POST",
            "/element",
            json!({ "using": "css selector", "value": css }),
        )
    }

    pub fn click(&self, css: &str) {
        let id = element_id(&self.find(css));
        self.command("POST", &format!("/element/{id}/click"), json!({}));
    }

    /// Types into the element as a person does: focus, then the text as
    /// an input method commits it (any script, emoji included, which
    /// key-by-key sending cannot), then `keys` as key presses.
    pub fn type_text(&self, css: &str, text: &str, keys: &str) {
        self.click(css);
        self.command(
            "POST",
            "/goog/cdp/execute",
            json!({ "cmd": "Input.insertText", "params": { "text": text } }),
        );
        if !keys.is_empty() {
            let id = element_id(&self.find(css));
            self.command(
                "POST",
                &format!("/element/{id}/value"),
                json!({ "text": keys }),
            );
        }
    }

    /// The text of every element matching `css`, in order.
    pub fn texts(&self, css: &str) -> Vec<String> {
        let value = self.run(
            "return Array.from(document.querySelectorAll(arguments[0]), e => e.textContent);",
            json!([css]),
        );
        value
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    }

    /// Waits until `done` holds, up to `timeout`, failing with `what`.
    pub fn wait(&self, what: &str, timeout: Duration, mut done: impl FnMut(&Browser) -> bool) {
        let deadline = Instant::now() + timeout;
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; the page shows: {:?}",
                self.texts("body")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Makes the page's clock run in time zone `zone` (an IANA name), as a
    /// phone set to it would.
    pub fn set_time_zone(&self, zone: &str) {
        self.command(
            "POST",
            "/goog/cdp/execute",
            json!({ "cmd": "Emulation.setTimezoneOverride", "params": { "timezoneId": zone } }),
        );
    }

    /// Accepts the page's `confirm()` dialog.
    pub fn accept_dialog(&self) {
        self.command("POST", "/alert/accept", json!({}));
    }

    /// A PNG of the window.
    pub fn screenshot(&self) -> Vec<u8> {
        use base64::Engine;
        let data = self.command("GET", "/screenshot", json!({}));
        base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap())
            .unwrap()
    }
}

fn element_id(element: &Value) -> String {
    element
        .as_object()
        .and_then(|o| o.values().next())
        .and_then(Value::as_str)
        .expect("an element reference")
        .to_string()
}

fn which(program: &str) -> String {
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(program))
                .find(|p| p.is_file())
        })
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| program.to_string())
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.agent.delete(&self.session).call();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
