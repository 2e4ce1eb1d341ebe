//! A small WebDriver client (W3C protocol over HTTP, through `ureq`) driving Debian's
//! `chromedriver` and headless `chromium`: the few commands the dashboard test needs.
//! A crate (fantoccini, thirtyfour) would bring an async stack and a long build for
//! about a dozen JSON requests.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The key of an element reference in W3C WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Where chromium and chromedriver are: `XCORE_TEST_CHROMIUM` and
/// `XCORE_TEST_CHROMEDRIVER`, else Debian's paths. An error names what is missing and how
/// to install it.
pub fn browser_paths() -> Result<(PathBuf, PathBuf), String> {
    let pick = |var: &str, default: &str| {
        std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| PathBuf::from(default))
    };
    let chromium = pick("XCORE_TEST_CHROMIUM", "/usr/bin/chromium");
    let driver = pick("XCORE_TEST_CHROMEDRIVER", "/usr/bin/chromedriver");
    let missing: Vec<String> =
        [&chromium, &driver].iter().filter(|p| !p.is_file()).map(|p| p.display().to_string()).collect();
    if missing.is_empty() {
        Ok((chromium, driver))
    } else {
        Err(format!(
            "the dashboard's browser test needs chromium and chromedriver; missing: {} \
             (install them with `apt-get install -y chromium chromium-driver`, as .ci/run does, \
             or point XCORE_TEST_CHROMIUM / XCORE_TEST_CHROMEDRIVER at them)",
            missing.join(", ")
        ))
    }
}

/// A running chromedriver, stopped on drop.
pub struct Driver {
    child: Child,
    base: String,
    agent: ureq::Agent,
    chromium: PathBuf,
}

impl Driver {
    /// Starts chromedriver on a free port and waits until it answers `/status`.
    pub fn start(chromium: PathBuf, chromedriver: PathBuf) -> Driver {
        let port = super::common::free_port();
        let child = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", chromedriver.display()));
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let driver = Driver { child, base: format!("http://127.0.0.1:{port}"), agent, chromium };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(v) = driver.request("GET", "/status", None) {
                if v["ready"] == true {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not come up on port {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
        driver
    }

    /// One command: its `value`, or the WebDriver error as text.
    fn request(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        let resp = match method {
            "GET" => self.agent.get(&url).call(),
            "DELETE" => self.agent.delete(&url).call(),
            _ => self.agent.post(&url).send_json(body.unwrap_or_else(|| json!({}))),
        };
        let mut resp = resp.map_err(|e| format!("{method} {path}: {e}"))?;
        let status = resp.status().as_u16();
        let v: Value = resp
            .body_mut()
            .with_config()
            .limit(64 * 1024 * 1024)
            .read_json()
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let value = v.get("value").cloned().unwrap_or(Value::Null);
        if status >= 400 || value.get("error").is_some_and(|e| e.is_string()) {
            return Err(format!("{method} {path}: {status} {}: {}", value["error"], value["message"]));
        }
        Ok(value)
    }

    /// A new headless browser session with its window at `width` x `height`.
    pub fn session(&self, width: u32, height: u32) -> Session<'_> {
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": self.chromium.to_string_lossy(),
                // --no-sandbox: CI runs as root, where chromium's own sandbox cannot start.
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--no-first-run", "--disable-extensions", format!("--window-size={width},{height}")]
            },
            "goog:loggingPrefs": { "browser": "ALL" }
        }}});
        let v = self.request("POST", "/session", Some(caps)).unwrap_or_else(|e| panic!("new session: {e}"));
        let id = v["sessionId"].as_str().expect("a session id").to_string();
        Session { driver: self, id, logs: std::cell::RefCell::new(Vec::new()) }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One browser session, closed on drop.
pub struct Session<'a> {
    driver: &'a Driver,
    id: String,
    /// Browser log entries read so far (reading empties the browser's buffer).
    logs: std::cell::RefCell<Vec<Value>>,
}

impl Session<'_> {
    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        self.driver.request(method, &format!("/session/{}{path}", self.id), body)
    }

    fn must(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.cmd(method, path, body).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Opens `url`.
    pub fn goto(&self, url: &str) {
        self.must("POST", "/url", Some(json!({ "url": url })));
    }

    /// Resizes the window.
    pub fn resize(&self, width: u32, height: u32) {
        self.must("POST", "/window/rect", Some(json!({ "width": width, "height": height })));
    }

    /// The element matching `css`, if there is one now.
    pub fn find(&self, css: &str) -> Option<String> {
        let v = self.cmd("POST", "/element", Some(json!({ "using": "css selector", "value": css }))).ok()?;
        v[ELEMENT].as_str().map(str::to_string)
    }

    /// Waits up to `within` for `f` to give a value; panics naming `what`, with the page's
    /// text, otherwise.
    pub fn wait<T>(&self, what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + within;
        loop {
            if let Some(v) = f() {
                return v;
            }
            if Instant::now() > deadline {
                let text = self.script("return document.body ? document.body.innerText : ''", json!([]));
                panic!(
                    "waited {within:?} for {what}; the page shows:\n{}",
                    text.as_str().unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for the element matching `css`.
    pub fn element(&self, css: &str) -> String {
        self.wait(&format!("an element {css}"), Duration::from_secs(15), || self.find(css))
    }

    /// The visible text of the element matching `css`, if there is one now.
    pub fn text(&self, css: &str) -> Option<String> {
        let id = self.find(css)?;
        self.cmd("GET", &format!("/element/{id}/text"), None).ok()?.as_str().map(str::to_string)
    }

    /// Waits until the element matching `css` shows a text containing `part`; returns it.
    pub fn wait_text(&self, css: &str, part: &str) -> String {
        self.wait(&format!("{css} to show {part:?}"), Duration::from_secs(20), || {
            self.text(css).filter(|t| t.contains(part))
        })
    }

    /// Runs `cmd` on the element matching `css` (waiting for it), finding it again when
    /// the page redrew it in between (a refresh replaces table rows).
    fn on_element(&self, css: &str, cmd: &str, body: Value) {
        for _ in 0..5 {
            let id = self.element(css);
            match self.cmd("POST", &format!("/element/{id}/{cmd}"), Some(body.clone())) {
                Ok(_) => return,
                Err(e) if e.contains("stale element") => continue,
                Err(e) => panic!("{e}"),
            }
        }
        panic!("{css} was redrawn under every {cmd} of five");
    }

    /// Clicks the element matching `css` (waiting for it).
    pub fn click(&self, css: &str) {
        self.on_element(css, "click", json!({}));
    }

    /// Types `text` into the element matching `css`.
    pub fn type_into(&self, css: &str, text: &str) {
        self.on_element(css, "clear", json!({}));
        self.on_element(css, "value", json!({ "text": text }));
    }

    /// Sends keys (WebDriver key codes: `\u{E007}` Enter, `\u{E00C}` Escape) to the
    /// element matching `css`, which gets the focus.
    pub fn keys(&self, css: &str, keys: &str) {
        self.on_element(css, "value", json!({ "text": keys }));
    }

    /// Runs `script` (a function body) with `args` and returns its value.
    pub fn script(&self, script: &str, args: Value) -> Value {
        self.must("POST", "/execute/sync", Some(json!({ "script": script, "args": args })))
    }

    /// The window's screenshot as PNG bytes.
    pub fn screenshot(&self) -> Vec<u8> {
        use base64::Engine as _;
        let b64 = self.must("GET", "/screenshot", None);
        base64::engine::general_purpose::STANDARD.decode(b64.as_str().expect("base64")).expect("PNG bytes")
    }

    /// Every browser log entry so far (`level`, `source`, `message`), read through
    /// chromedriver's log endpoint.
    pub fn browser_log(&self) -> Vec<Value> {
        let fresh = self.cmd("POST", "/se/log", Some(json!({ "type": "browser" }))).unwrap_or_else(|e| {
            panic!("reading the browser log (chromedriver's /se/log): {e}");
        });
        self.logs.borrow_mut().extend(fresh.as_array().cloned().unwrap_or_default());
        self.logs.borrow().clone()
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        let _ = self.cmd("DELETE", "", None);
    }
}

/// Reads server-sent events from a response body, one `(event, data)` at a time.
pub struct SseReader<R: std::io::Read> {
    lines: BufReader<R>,
}

impl<R: std::io::Read> SseReader<R> {
    pub fn new(body: R) -> Self {
        SseReader { lines: BufReader::new(body) }
    }

    /// The next event (comments skipped); `None` at the end of the stream.
    pub fn next_event(&mut self) -> Option<(String, Value)> {
        let (mut event, mut data) = (String::from("message"), String::new());
        loop {
            let mut line = String::new();
            if self.lines.read_line(&mut line).ok()? == 0 {
                return None;
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                if data.is_empty() {
                    continue;
                }
                return Some((event, serde_json::from_str(&data).expect("data is JSON")));
            }
            if let Some(v) = line.strip_prefix("event: ") {
                event = v.to_string();
            } else if let Some(v) = line.strip_prefix("data: ") {
                data.push_str(v);
            }
        }
    }
}
