//! The web interface (`client web`): a page served from assets inside the
//! binary on 127.0.0.1, speaking the local API (crate::api) over a WebSocket.
//!
//! Guarded like a server on the internet (docs/api.md, "The web page"):
//! - it listens on 127.0.0.1 only, on a free port;
//! - every request needs the secret: the first load carries it in the address
//!   (`/?secret=…`), which answers with an HttpOnly, SameSite=Strict cookie
//!   holding a second secret (the page then drops the first from the address
//!   bar); every later request carries the cookie;
//! - `Host` must be `127.0.0.1:PORT` exactly (a DNS-rebinding page has its own
//!   name there);
//! - `Origin`, when sent, must be this page's; the WebSocket and every request
//!   that is not a GET must carry it (cross-site WebSocket hijacking, CSRF);
//! - a strict Content-Security-Policy: scripts and styles from this origin
//!   only, no inline script, no framing;
//! - the secret is never logged (requests are not logged at all), and the page
//!   renders every text with `textContent`, never as HTML.
//!
//! Anything refused gets a bare 403 and changes nothing.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use engine::error::ClientError;
use futures::{SinkExt, StreamExt};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rand::RngCore;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::api::commands::Transport;
use crate::api::{ApiHub, Lines, Outgoing, Session};

const INDEX_HTML: &str = include_str!("web/index.html");
const APP_JS: &str = include_str!("web/app.js");
const STYLE_CSS: &str = include_str!("web/style.css");

/// HTTP connections served at once (the page needs a handful).
const MAX_CONNECTIONS: usize = 32;
/// A request head must arrive within this.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// A plain HTTP connection (not a WebSocket) lasts at most this.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(600);
/// Longest request head.
const MAX_HEAD: usize = 16 * 1024;
/// The largest file the page may upload to offer.
pub const MAX_UPLOAD: u64 = 1 << 30;
/// Uploads kept at once in one run.
const MAX_UPLOADS: usize = 256;

/// The files the page uploaded to offer, by id; removed when the client ends.
#[derive(Debug)]
pub struct Uploads {
    dir: PathBuf,
    files: Mutex<HashMap<String, PathBuf>>,
}

impl Uploads {
    /// The file of upload `id`.
    pub fn path(&self, id: &str) -> Option<PathBuf> {
        self.files
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
    }
}

impl Drop for Uploads {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What every request handler shares.
struct Web {
    /// `127.0.0.1:PORT`: the only `Host` served.
    host: String,
    /// `http://127.0.0.1:PORT`: the only `Origin` accepted.
    origin: String,
    /// The secret in the printed address (wiped on drop, never printed).
    secret: zeroize::Zeroizing<String>,
    /// The cookie's secret (wiped on drop, never printed).
    session: zeroize::Zeroizing<String>,
    cookie_name: String,
    csp: String,
    hub: Arc<ApiHub>,
    lines: Lines,
    uploads: Arc<Uploads>,
}

/// Leaves out both secrets.
impl std::fmt::Debug for Web {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Web")
            .field("host", &self.host)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

/// The running web interface; stops when dropped.
pub struct WebServer {
    addr: SocketAddr,
    /// The address to open, with the secret (wiped on drop, never printed by Debug).
    url: zeroize::Zeroizing<String>,
    task: tokio::task::JoinHandle<()>,
    _uploads: Arc<Uploads>,
}

impl std::fmt::Debug for WebServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl WebServer {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address to open, secret included: show it to the person only.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for WebServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The page `--open` hands to the browser; removed when dropped.
#[derive(Debug)]
pub struct Opener(PathBuf);

impl Drop for Opener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Opens the web interface in the desktop's browser. The address is not put
/// on xdg-open's command line, where every local user could read it (`ps`):
/// a page of mode 0600 in the profile redirects to it, and that page's path
/// is what the browser gets.
pub fn open_in_browser(profile: &Path, server: &WebServer) -> std::io::Result<Opener> {
    let path = profile.join(format!("web-open-{}.html", server.addr.port()));
    let _ = std::fs::remove_file(&path);
    let mut file = std::fs::OpenOptions::new();
    file.write(true).create_new(true);
    std::os::unix::fs::OpenOptionsExt::mode(&mut file, 0o600);
    let page = format!(
        "<!doctype html><meta charset=\"utf-8\"><meta name=\"referrer\" content=\"no-referrer\">\
         <meta http-equiv=\"refresh\" content=\"0;url={url}\"><title>p2pchat</title>\
         <a href=\"{url}\">Open p2pchat</a>\n",
        url = server.url.as_str()
    );
    std::io::Write::write_all(&mut file.open(&path)?, page.as_bytes())?;
    let opener = Opener(path);
    let mut child = std::process::Command::new("xdg-open")
        .arg(&opener.0)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    // Reaped on a thread of its own: a browser started by it may run long.
    std::thread::spawn(move || child.wait());
    Ok(opener)
}

/// A random secret as hex.
fn secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Compares two secrets in time that does not depend on where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Starts the web interface on 127.0.0.1 (`port` 0: a free one), keeping
/// uploads in `profile`.
pub async fn serve(
    port: u16,
    profile: &Path,
    hub: Arc<ApiHub>,
    lines: Lines,
) -> Result<WebServer, ClientError> {
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
        .await
        .map_err(|e| {
            ClientError::ListenFailed(format!(
                "the web interface cannot listen on 127.0.0.1:{port}: {e}"
            ))
        })?;
    let addr = listener
        .local_addr()
        .map_err(|e| ClientError::ListenFailed(format!("the web interface's address: {e}")))?;
    let dir = profile.join(format!("web-uploads-{}", addr.port()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut builder = std::fs::DirBuilder::new();
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(&dir).map_err(|e| {
        ClientError::File(format!(
            "the web interface cannot make {}: {e}",
            dir.display()
        ))
    })?;
    let uploads = Arc::new(Uploads {
        dir,
        files: Mutex::new(HashMap::new()),
    });
    let host = addr.to_string();
    let origin = format!("http://{host}");
    let web = Arc::new(Web {
        csp: format!(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self' ws://{host}; object-src 'none'; base-uri 'none'; \
             form-action 'none'; frame-ancestors 'none'"
        ),
        cookie_name: format!("p2pchat_{}", addr.port()),
        host,
        origin,
        secret: zeroize::Zeroizing::new(secret()),
        session: zeroize::Zeroizing::new(secret()),
        hub,
        lines,
        uploads: Arc::clone(&uploads),
    });
    let url = format!("http://{}/?secret={}", web.host, web.secret.as_str());
    let routes = Router::new()
        .route("/", get(index))
        .route("/app.js", get(app_js))
        .route("/style.css", get(style_css))
        .route("/api/ws", get(websocket))
        .route("/api/upload", post(upload))
        .fallback(|| async { StatusCode::NOT_FOUND })
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&web),
            guard,
        ))
        .with_state(web);
    let task = tokio::spawn(accept_loop(listener, routes));
    Ok(WebServer {
        addr,
        url: zeroize::Zeroizing::new(url),
        task,
        _uploads: uploads,
    })
}

async fn accept_loop(listener: TcpListener, routes: Router) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.max_buf_size(MAX_HEAD)
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT);
    loop {
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "web interface: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Bound to 127.0.0.1, so every peer is local; say so if not.
        if !peer.ip().is_loopback() {
            continue;
        }
        let connection = http
            .serve_connection(
                TokioIo::new(stream),
                TowerToHyperService::new(routes.clone()),
            )
            .with_upgrades();
        tokio::spawn(async move {
            let _permit = permit;
            // An upgraded connection (the WebSocket) leaves this future when
            // it upgrades, and runs on as its own task.
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, connection).await;
        });
    }
}

/// The value of cookie `name` in the request, if any.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The `secret` parameter of the query, if any.
fn query_secret(query: Option<&str>) -> Option<&str> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == "secret")
        .map(|(_, v)| v)
}

fn forbidden(web: &Web) -> Response {
    let mut response = (StatusCode::FORBIDDEN, "forbidden\n").into_response();
    security_headers(web, response.headers_mut());
    // A refused client keeps no connection slot.
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

fn security_headers(web: &Web, headers: &mut HeaderMap) {
    let mut set = |name: header::HeaderName, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    set(header::CONTENT_SECURITY_POLICY, &web.csp);
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(header::REFERRER_POLICY, "no-referrer");
    set(header::X_FRAME_OPTIONS, "DENY");
    set(header::CACHE_CONTROL, "no-store");
    set(
        header::HeaderName::from_static("cross-origin-opener-policy"),
        "same-origin",
    );
    set(
        header::HeaderName::from_static("cross-origin-resource-policy"),
        "same-origin",
    );
}

/// The guard in front of every route (see the module's documentation).
async fn guard(State(web): State<Arc<Web>>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let host_ok = headers
        .get(header::HOST)
        .is_some_and(|h| h.as_bytes() == web.host.as_bytes());
    if !host_ok {
        return forbidden(&web);
    }
    let upgrade = headers.contains_key(header::UPGRADE);
    let changes = upgrade || !(request.method() == Method::GET || request.method() == Method::HEAD);
    match headers.get(header::ORIGIN) {
        Some(origin) if origin.as_bytes() != web.origin.as_bytes() => return forbidden(&web),
        None if changes => return forbidden(&web),
        _ => {}
    }
    let by_cookie = cookie(headers, &web.cookie_name)
        .is_some_and(|c| same_secret(c.as_bytes(), web.session.as_bytes()));
    let by_secret = !by_cookie
        && request.method() == Method::GET
        && request.uri().path() == "/"
        && query_secret(request.uri().query())
            .is_some_and(|s| same_secret(s.as_bytes(), web.secret.as_bytes()));
    if !by_cookie && !by_secret {
        return forbidden(&web);
    }
    let mut response = next.run(request).await;
    security_headers(&web, response.headers_mut());
    if by_secret {
        let cookie = format!(
            "{}={}; HttpOnly; SameSite=Strict; Path=/",
            web.cookie_name,
            web.session.as_str()
        );
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().insert(header::SET_COOKIE, value);
        }
    }
    response
}

async fn index() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        INDEX_HTML,
    )
        .into_response()
}

async fn app_js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        APP_JS,
    )
        .into_response()
}

async fn style_css() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        STYLE_CSS,
    )
        .into_response()
}

async fn websocket(State(web): State<Arc<Web>>, upgrade: WebSocketUpgrade) -> Response {
    let limit = web.hub.limits().max_message_bytes;
    upgrade
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| ws_session(socket, web))
}

/// WebSocket close code for a client the API dropped (RFC 6455: policy).
const CLOSE_POLICY: u16 = 1008;
/// WebSocket close code for "too many clients, try later" (RFC 6455).
const CLOSE_TRY_LATER: u16 = 1013;

/// A close frame with `reason` cut to what a frame may carry (123 bytes).
fn close_frame(code: u16, reason: &str) -> Message {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    Message::Close(Some(CloseFrame {
        code,
        reason: reason[..end].to_owned().into(),
    }))
}

async fn ws_session(socket: WebSocket, web: Arc<Web>) {
    let (mut tx, mut rx) = socket.split();
    let (id, queue) = match web.hub.subscribe() {
        Ok(sub) => sub,
        Err(reason) => {
            let _ = tx.send(close_frame(CLOSE_TRY_LATER, &reason)).await;
            return;
        }
    };
    let session = Arc::new(Session {
        hub: Arc::clone(&web.hub),
        id,
        queue: Arc::clone(&queue),
        lines: web.lines.clone(),
        transport: Transport::Web,
        uploads: Some(Arc::clone(&web.uploads)),
    });
    let reader = {
        let session = Arc::clone(&session);
        tokio::spawn(async move {
            let reason = loop {
                match rx.next().await {
                    Some(Ok(Message::Text(text))) => session.handle(text.as_str()).await,
                    Some(Ok(Message::Binary(_))) => session.reply(
                        &Value::Null,
                        Some(("bad_json", "commands are text frames of JSON")),
                    ),
                    Some(Ok(Message::Close(_))) | None => {
                        break "the client closed the connection".to_string()
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => break format!("{e}"),
                }
            };
            session.queue.close(&reason);
        })
    };
    loop {
        match queue.next().await {
            Outgoing::Text(text) => {
                if tx.send(Message::Text(text.as_ref().into())).await.is_err() {
                    break;
                }
            }
            Outgoing::Close(reason) => {
                let _ = tokio::time::timeout(
                    Duration::from_secs(1),
                    tx.send(close_frame(CLOSE_POLICY, &reason)),
                )
                .await;
                break;
            }
        }
    }
    reader.abort();
    drop(session);
}

/// `POST /api/upload?name=NAME`: the body is a file the page will offer.
/// Only `application/octet-stream` (a cross-site form cannot send that
/// without the browser asking first).
async fn upload(
    State(web): State<Arc<Web>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let octets = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes() == b"application/octet-stream");
    if !octets {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the file as application/octet-stream\n",
        )
            .into_response();
    }
    let given = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == "name")
        .map(|(_, v)| percent_decoded(v))
        .unwrap_or_default();
    let name = file_name(&given);
    let id = secret()[..16].to_owned();
    {
        let files = web
            .uploads
            .files
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if files.len() >= MAX_UPLOADS {
            return (
                StatusCode::INSUFFICIENT_STORAGE,
                "too many uploads in this run\n",
            )
                .into_response();
        }
    }
    let dir = web.uploads.dir.join(&id);
    let path = dir.join(&name);
    match store(&dir, &path, body).await {
        Ok(size) => {
            web.uploads
                .files
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(id.clone(), path);
            (
                [(header::CONTENT_TYPE, "application/json")],
                json!({"upload": id, "name": name, "size": size}).to_string(),
            )
                .into_response()
        }
        Err((status, why)) => {
            let _ = tokio::fs::remove_dir_all(&dir).await;
            (status, format!("{why}\n")).into_response()
        }
    }
}

/// Writes the body to `path` (in a new private directory), up to [`MAX_UPLOAD`].
async fn store(dir: &Path, path: &Path, body: Body) -> Result<u64, (StatusCode, String)> {
    let failed = |e: std::io::Error| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    let mut builder = tokio::fs::DirBuilder::new();
    builder.mode(0o700);
    builder.create(dir).await.map_err(failed)?;
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .await
        .map_err(failed)?;
    let mut stream = body.into_data_stream();
    let mut size: u64 = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
        size = size.saturating_add(chunk.len() as u64);
        if size > MAX_UPLOAD {
            return Err((
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("files are limited to {MAX_UPLOAD} bytes here"),
            ));
        }
        file.write_all(&chunk).await.map_err(failed)?;
    }
    file.flush().await.map_err(failed)?;
    Ok(size)
}

/// `%XX` escapes (as `encodeURIComponent` makes them) decoded; bytes that are
/// not UTF-8 become U+FFFD.
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A file name to keep an upload under: its last part, without control
/// characters or path separators, not hidden, at most 200 bytes.
fn file_name(given: &str) -> String {
    let last = given.rsplit(['/', '\\']).next().unwrap_or("");
    let mut name: String = last
        .chars()
        .filter(|c| !c.is_control())
        .collect::<String>()
        .trim()
        .trim_start_matches('.')
        .to_owned();
    while name.len() > 200 {
        name.pop();
    }
    if name.is_empty() {
        "upload".into()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_names_stay_in_their_directory() {
        assert_eq!(file_name("../../etc/passwd"), "passwd");
        assert_eq!(file_name("..\\x.txt"), "x.txt");
        assert_eq!(file_name(".."), "upload");
        assert_eq!(file_name(".bashrc"), "bashrc");
        assert_eq!(file_name("a\nb.txt"), "ab.txt");
        assert_eq!(file_name(""), "upload");
        assert_eq!(file_name(&"é".repeat(150)).len(), 200);
        assert_eq!(percent_decoded("a%20b%2F..%zz+c"), "a b/..%zz c");
    }

    #[test]
    fn cookies_and_query_are_read_exactly() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; p2pchat_80=abc; b=2"),
        );
        assert_eq!(cookie(&h, "p2pchat_80"), Some("abc"));
        assert_eq!(cookie(&h, "p2pchat_8"), None);
        assert_eq!(query_secret(Some("x=1&secret=ff")), Some("ff"));
        assert_eq!(query_secret(Some("nosecret=ff")), None);
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"ab"));
    }
}
