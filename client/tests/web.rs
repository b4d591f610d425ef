//! The web interface end to end: two messengers, each with its page in a real
//! headless Chromium; and the guard in front of the page (secret, cookie,
//! Host, Origin, CSP), with raw HTTP requests.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;

use common::api::{socket_path, ApiClient};
use common::browser::{click, eval, screenshots, type_into, wait_for, Driver};
use common::{client_args, Client, Mediator, TempDir};
use futures::FutureExt;
use serde_json::{json, Value};

/// Waits for the client's `Web interface: URL …` line; returns the URL.
async fn web_url(c: &mut Client) -> String {
    loop {
        let info = c.expect("info").await;
        let text = info["text"].as_str().unwrap_or("");
        if let Some(rest) = text.strip_prefix("Web interface: ") {
            return rest.split_whitespace().next().unwrap_or("").to_string();
        }
    }
}

/// A JavaScript string literal of `s`.
fn js(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// The texts of the messages the page shows now, as a JSON array expression.
const MESSAGES: &str =
    "[...document.querySelectorAll('#messages li.msg .text')].map(e => e.textContent)";

/// Waits until the page shows a message with exactly `text`.
async fn wait_message(b: &fantoccini::Client, who: &str, text: &str) {
    wait_for(
        b,
        &format!("{who}: the message {text:?}"),
        &format!("{MESSAGES}.includes({})", js(text)),
    )
    .await;
}

#[tokio::test]
async fn two_pages_open_join_chat_verify_send_a_file_count_unread_and_show_html_as_text() {
    let dir = TempDir::new("web-e2e");
    let med = Mediator::start(&[]).await;
    let downloads = dir.join("downloads-bob");
    std::fs::create_dir_all(&downloads).unwrap();
    let alice_args = client_args(&med.server_arg(), "alice", &dir, &["--web"]);
    let mut bob_args = vec!["web".to_string()];
    bob_args.extend(client_args(
        &med.server_arg(),
        "bob",
        &dir,
        &["--downloads", downloads.to_str().unwrap()],
    ));
    let mut alice = Client::start("alice", &alice_args);
    let mut bob = Client::start("bob", &bob_args);
    let alice_url = web_url(&mut alice).await;
    let bob_url = web_url(&mut bob).await;
    let driver = Driver::start().await;
    let pa = driver.browser().await;
    let pb = driver.browser().await;
    let shots = std::env::temp_dir().join(format!("p2pchat-web-screens-{}", std::process::id()));

    let steps = AssertUnwindSafe(async {
        for (page, url, who) in [(&pa, &alice_url, "alice"), (&pb, &bob_url, "bob")] {
            page.goto(url).await.expect("load the page");
            wait_for(
                page,
                &format!("{who}: connected"),
                "document.getElementById('status').textContent.startsWith('connected to')",
            )
            .await;
            // The secret left the address bar; the cookie carries the session.
            let at = page.current_url().await.unwrap();
            assert_eq!(at.query(), None, "{who}: the secret is still in {at}");
        }

        // Alice makes a room in her page; bob joins it with the code.
        click(&pa, "#new-room").await;
        let code = wait_for(
            &pa,
            "alice: the new room's code",
            "[...document.querySelectorAll('.room-code')].map(e => e.textContent).pop()",
        )
        .await;
        let code = code.as_str().unwrap().to_string();
        type_into(&pb, "#join-code", &code).await;
        click(&pb, "#join-room").await;
        let sas_a = wait_for(&pa, "alice: a security code", "document.getElementById('sas').textContent.match(/^\\d/) && document.getElementById('sas').textContent").await;
        let sas_b = wait_for(&pb, "bob: a security code", "document.getElementById('sas').textContent.match(/^\\d/) && document.getElementById('sas').textContent").await;
        assert_eq!(sas_a, sas_b, "both pages show the same code");

        // Chat both ways, with the keyboard (Enter sends).
        type_into(&pa, "#text", "hello bob\u{E007}").await;
        wait_message(&pb, "bob", "hello bob").await;
        type_into(&pb, "#text", "hi alice\u{E007}").await;
        wait_message(&pa, "alice", "hi alice").await;

        // Compare and verify the code.
        click(&pa, "#verify").await;
        wait_for(&pa, "alice: verified", "document.getElementById('verified-mark').textContent === 'verified'").await;
        click(&pb, "#verify").await;
        wait_for(&pb, "bob: verified", "document.getElementById('verified-mark').textContent === 'verified'").await;

        // A file: alice chooses it, bob accepts, both see it through.
        let file = dir.join("photo.bin");
        let body: Vec<u8> = (0..600_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&file, &body).unwrap();
        type_into(&pa, "#file", file.to_str().unwrap()).await;
        wait_for(&pb, "bob: the offer", "document.querySelector('li.transfer[data-direction=receive] button.accept')").await;
        click(&pb, "li.transfer[data-direction=receive] button.accept").await;
        wait_for(&pb, "bob: the file done", "(document.querySelector('li.transfer[data-direction=receive] .state') || {}).textContent?.startsWith('done')").await;
        let bar = eval(&pb, "(() => { const p = document.querySelector('li.transfer[data-direction=receive] progress'); return [p.value, p.max]; })()").await;
        assert_eq!(bar, json!([600_000, 600_000]), "bob's progress bar is full");
        wait_for(&pa, "alice: the file sent", "(document.querySelector('li.transfer[data-direction=send] .state') || {}).textContent?.startsWith('done')").await;
        let got = std::fs::read(downloads.join("photo.bin")).expect("bob has the file");
        assert!(got == body, "the file arrived intact");

        // A peer's HTML is text: shown as typed, no element made of it.
        let html = "<img src=x onerror=\"document.title='pwned'\"><b>bold</b>";
        type_into(&pb, "#text", &format!("{html}\u{E007}")).await;
        wait_message(&pa, "alice", html).await;
        let images = eval(&pa, "document.querySelectorAll('#messages img, #messages b').length").await;
        assert_eq!(images, json!(0), "the peer's markup made elements");
        assert_eq!(eval(&pa, "document.title").await, json!("p2pchat"));

        // A message in a conversation not in front raises its unread count.
        // Notifications allowed (headless Chromium shows none: the page's
        // calls are recorded instead), it also gets one.
        eval(&pa, "(() => { window.shown = []; window.Notification = class { constructor(title, o) { window.shown.push([title, o.body]); } }; window.Notification.permission = 'granted'; return true; })()").await;
        click(&pa, "button.conv[data-number='1']").await;
        wait_for(&pa, "alice: conversation 1 in front", "document.querySelector(\"button.conv[data-number='1']\").getAttribute('aria-current') === 'true'").await;
        type_into(&pb, "#text", "behind your back\u{E007}").await;
        let unread = wait_for(&pa, "alice: an unread count on conversation 2", "(() => { const u = document.querySelector(\"button.conv[data-number='2'] .unread\"); return !u.hidden && u.textContent; })()").await;
        assert_eq!(unread, json!("1"));
        // It names the number and the sender: not the text, nor the label,
        // which is the room code (the password of the key exchange).
        let shown = wait_for(&pa, "alice: a notification", "window.shown.length > 0 && window.shown").await;
        assert_eq!(shown, json!([["p2pchat: conversation 2", "New message from bob"]]));
        assert!(!shown.to_string().contains(&code), "{shown}");
        // Back in front, it is read.
        click(&pa, "button.conv[data-number='2']").await;
        wait_for(&pa, "alice: conversation 2 read", "document.querySelector(\"button.conv[data-number='2'] .unread\").hidden").await;
        wait_message(&pa, "alice", "behind your back").await;
    })
    .catch_unwind()
    .await;
    if let Err(panic) = steps {
        let written = screenshots(&shots, &[("alice", &pa), ("bob", &pb)]).await;
        eprintln!("screenshots of the pages: {written:?}");
        std::panic::resume_unwind(panic);
    }
    // The engine saw the same: bob's verify, the file's progress.
    let verified = loop {
        let v = alice.expect("verify").await;
        if v["verified"] == true {
            break v;
        }
    };
    assert_eq!(verified["conversation"]["number"], 2, "{verified}");
    let done = bob.expect("file_done").await;
    assert_eq!(done["direction"], "receive", "{done}");
    assert!(
        bob.seen.iter().any(|e| e["event"] == "progress"),
        "bob's client reported progress: {:?}",
        bob.seen
    );
    let _ = pa.close().await;
    let _ = pb.close().await;
}

/// A request the guard must refuse: what it is, method, target, headers.
type Refused = (
    &'static str,
    &'static str,
    String,
    Vec<(&'static str, String)>,
);

/// Borrowed header pairs.
fn with<'a>(headers: &'a [(&'a str, String)]) -> Vec<(&'a str, &'a str)> {
    headers.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// One raw HTTP/1.1 request to `port` on 127.0.0.1; returns the status and
/// the head of the answer.
fn request(
    port: u16,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the web interface");
    s.set_read_timeout(Some(common::WAIT)).unwrap();
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !headers.iter().any(|(k, _)| *k == "Connection") {
        head.push_str("Connection: close\r\n");
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut answer = Vec::new();
    // Read one answer (a WebSocket's 101 stays open).
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                answer.extend_from_slice(&buf[..n]);
                if let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&answer[..end]).to_ascii_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if answer.len() >= end + 4 + length {
                        break;
                    }
                }
            }
            Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

#[tokio::test]
async fn the_page_refuses_requests_without_the_secret_or_from_elsewhere_and_changes_nothing() {
    let dir = TempDir::new("web-guard");
    let med = Mediator::start(&[]).await;
    let args = client_args(
        &med.server_arg(),
        "alice",
        &dir,
        &["--web", "--api", "--log", "debug"],
    );
    let mut alice = Client::start("alice", &args);
    let url = web_url(&mut alice).await;
    let rest = url.strip_prefix("http://127.0.0.1:").unwrap();
    let (port, target) = rest.split_once('/').unwrap();
    let port: u16 = port.parse().unwrap();
    let target = format!("/{target}");
    let secret = target.strip_prefix("/?secret=").unwrap().to_string();
    let host = format!("127.0.0.1:{port}");
    let origin = format!("http://{host}");
    let h = host.as_str();

    // The first load with the secret: the page, the cookie, the policy.
    let (status, head) = request(port, "GET", &target, &[("Host", h)], b"");
    assert_eq!(status, 200, "{head}");
    let lower = head.to_ascii_lowercase();
    let cookie_line = lower
        .lines()
        .find(|l| l.starts_with("set-cookie:"))
        .expect("a cookie")
        .to_string();
    assert!(
        cookie_line.contains("httponly") && cookie_line.contains("samesite=strict"),
        "{cookie_line}"
    );
    let csp = lower
        .lines()
        .find(|l| l.starts_with("content-security-policy:"))
        .expect("a CSP")
        .to_string();
    assert!(
        csp.contains("default-src 'self'")
            && csp.contains("script-src 'self'")
            && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(
        !head.contains("<script>") && head.contains("<script src=\"/app.js\""),
        "no inline script"
    );
    let session = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().split(';').next().unwrap().to_string())
        .unwrap();
    let c = session.as_str();
    assert!(
        !c.contains(&secret),
        "the cookie is not the address's secret"
    );

    // With the cookie the page and its script load.
    assert_eq!(
        request(port, "GET", "/app.js", &[("Host", h), ("Cookie", c)], b"").0,
        200
    );

    let ws = |extra: &[(&'static str, String)]| {
        let mut headers: Vec<(&str, String)> = vec![
            ("Upgrade", "websocket".into()),
            ("Connection", "Upgrade".into()),
            ("Sec-WebSocket-Version", "13".into()),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==".into()),
        ];
        headers.extend(extra.iter().cloned());
        headers
    };
    let refused: Vec<Refused> = vec![
        ("no secret", "GET", "/".into(), vec![("Host", host.clone())]),
        (
            "a wrong secret",
            "GET",
            format!("/?secret={}", "0".repeat(64)),
            vec![("Host", host.clone())],
        ),
        (
            "the script without the cookie",
            "GET",
            "/app.js".into(),
            vec![("Host", host.clone())],
        ),
        (
            "a foreign Host",
            "GET",
            target.clone(),
            vec![("Host", format!("evil.example:{port}"))],
        ),
        (
            "a foreign Host with the cookie",
            "GET",
            "/".into(),
            vec![
                ("Host", format!("evil.example:{port}")),
                ("Cookie", session.clone()),
            ],
        ),
        (
            "a foreign Origin",
            "GET",
            target.clone(),
            vec![
                ("Host", host.clone()),
                ("Origin", "http://evil.example".into()),
            ],
        ),
        (
            "a WebSocket from a foreign Origin",
            "GET",
            "/api/ws".into(),
            ws(&[
                ("Host", host.clone()),
                ("Cookie", session.clone()),
                ("Origin", "http://evil.example".into()),
            ]),
        ),
        (
            "a WebSocket with no Origin",
            "GET",
            "/api/ws".into(),
            ws(&[("Host", host.clone()), ("Cookie", session.clone())]),
        ),
        (
            "a WebSocket with no cookie",
            "GET",
            "/api/ws".into(),
            ws(&[("Host", host.clone()), ("Origin", origin.clone())]),
        ),
        (
            "an upload from a foreign Origin",
            "POST",
            "/api/upload?name=x.txt".into(),
            vec![
                ("Host", host.clone()),
                ("Cookie", session.clone()),
                ("Origin", "http://evil.example".into()),
                ("Content-Type", "application/octet-stream".into()),
            ],
        ),
        (
            "an upload with no Origin",
            "POST",
            "/api/upload?name=x.txt".into(),
            vec![
                ("Host", host.clone()),
                ("Cookie", session.clone()),
                ("Content-Type", "application/octet-stream".into()),
            ],
        ),
        (
            "an upload with no cookie",
            "POST",
            "/api/upload?name=x.txt".into(),
            vec![
                ("Host", host.clone()),
                ("Origin", origin.clone()),
                ("Content-Type", "application/octet-stream".into()),
            ],
        ),
    ];
    for (what, method, target, headers) in &refused {
        let (status, head) = request(port, method, target, &with(headers), b"hello");
        assert_eq!(status, 403, "{what}: {head}");
        assert!(!head.contains("<html"), "{what}: no page with a 403");
    }
    // The same WebSocket and upload, done right, pass the guard.
    let (status, head) = request(
        port,
        "GET",
        "/api/ws",
        &with(&ws(&[
            ("Host", host.clone()),
            ("Cookie", session.clone()),
            ("Origin", origin.clone()),
        ])),
        b"",
    );
    assert_eq!(status, 101, "{head}");

    // Nothing changed: one conversation, no upload kept.
    let uploads = dir
        .join("profile-alice")
        .join(format!("web-uploads-{port}"));
    let kept: Vec<PathBuf> = std::fs::read_dir(&uploads)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(kept.is_empty(), "refused uploads left {kept:?}");
    let mut api = ApiClient::connect(&socket_path(&dir.join("profile-alice"))).await;
    api.ok(json!({"cmd": "list"})).await;
    // (The list the API had before the fresh room opened may come first.)
    let list: Value = api
        .expect_where("the list with the fresh room", |v| {
            v["event"] == "conversations" && !v["front"].is_null()
        })
        .await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1), "{list}");

    // The secrets are in no log line (debug level on).
    api.ok(json!({"cmd": "quit"})).await;
    assert_eq!(alice.exit_code().await, 0);
    let log = alice.stderr();
    assert!(!log.is_empty(), "debug logging produced nothing to check");
    assert!(!log.contains(&secret), "the secret is in the log");
    let cookie_value = c.split_once('=').unwrap().1;
    assert!(!log.contains(cookie_value), "the cookie is in the log");
}
