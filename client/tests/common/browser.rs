//! A real headless Chromium for the web page's tests, driven over WebDriver
//! (chromedriver, through the `fantoccini` crate): Debian's `chromium` and
//! `chromium-driver`, which `.ci/run` installs. A missing driver or browser is
//! a loud failure, never a skipped test.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client as Browser, ClientBuilder, Locator};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::WAIT;

/// A running chromedriver on loopback, killed on drop.
pub struct Driver {
    url: String,
    _child: Child,
}

impl Driver {
    pub async fn start() -> Driver {
        let port = super::free_port();
        let mut child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start chromedriver ({e}): install Debian's chromium and \
                     chromium-driver (.ci/run does)"
                )
            });
        let lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        super::await_line(lines, "started successfully", "chromedriver").await;
        Driver {
            url: format!("http://127.0.0.1:{port}"),
            _child: child,
        }
    }

    /// A new headless browser (its own profile, cookies and all).
    pub async fn browser(&self) -> Browser {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium_binary(),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1100,850",
                         "--no-first-run", "--no-default-browser-check"],
            }),
        );
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("chromedriver could not start a Chromium: {e}"))
    }
}

fn chromium_binary() -> String {
    for path in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if Path::new(path).exists() {
            return path.into();
        }
    }
    panic!("no chromium at /usr/bin/chromium: install Debian's chromium (.ci/run does)");
}

/// Evaluates `expr` (a JavaScript expression) in the page.
pub async fn eval(b: &Browser, expr: &str) -> Value {
    b.execute(&format!("return ({expr});"), vec![])
        .await
        .unwrap_or_else(|e| panic!("script `{expr}` failed: {e}"))
}

/// Waits until `expr` is truthy in the page and returns its value; fails
/// after [`WAIT`] naming `what`.
pub async fn wait_for(b: &Browser, what: &str, expr: &str) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let v = eval(b, expr).await;
        let truthy = match &v {
            Value::Null => false,
            Value::Bool(t) => *t,
            Value::String(s) => !s.is_empty(),
            Value::Number(n) => n.as_f64() != Some(0.0),
            _ => true,
        };
        if truthy {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the page did not show {what} within {WAIT:?} (`{expr}` was {v})"
        );
        // The DOM has no event a WebDriver client can await: poll it.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Clicks the element `css` names.
pub async fn click(b: &Browser, css: &str) {
    b.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no `{css}` on the page: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("cannot click `{css}`: {e}"));
}

/// Types `text` into the element `css` names.
pub async fn type_into(b: &Browser, css: &str, text: &str) {
    b.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no `{css}` on the page: {e}"))
        .send_keys(text)
        .await
        .unwrap_or_else(|e| panic!("cannot type into `{css}`: {e}"));
}

/// Writes a screenshot of each page into `dir` (made if missing); returns
/// the paths written.
pub async fn screenshots(dir: &Path, pages: &[(&str, &Browser)]) -> Vec<PathBuf> {
    let _ = std::fs::create_dir_all(dir);
    let mut written = Vec::new();
    for (name, b) in pages {
        if let Ok(png) = b.screenshot().await {
            let path = dir.join(format!("{name}.png"));
            if std::fs::write(&path, png).is_ok() {
                written.push(path);
            }
        }
    }
    written
}
