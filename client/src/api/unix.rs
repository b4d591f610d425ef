//! The local API on a Unix socket: `api.sock` in the profile directory, mode
//! 0600, one JSON object per line each way (docs/api.md).
//!
//! The socket is bound inside a fresh directory of mode 0700, made private
//! (0600) there, and only then renamed to its place: no moment exists in which
//! another user could connect, and no umask (a per-process setting) is touched.
//! A socket left by a run that crashed is replaced by the rename; anything else
//! at that name (a file of the person's, a live socket) makes the client
//! refuse to start. Connections from another user id are refused too (the
//! mode stops them first; the peer's credentials are checked anyway).

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use engine::error::ClientError;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::{bye, ApiHub, Lines, Outgoing, Session, Transport};

/// The socket's name in the profile directory.
pub const SOCKET_NAME: &str = "api.sock";
/// How long the last line to a dropped client may take.
const BYE_WAIT: Duration = Duration::from_secs(1);

/// The bound socket; its file is removed when this is dropped.
#[derive(Debug)]
pub struct UnixApi {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl UnixApi {
    /// Where the socket is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for UnixApi {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

fn refused(path: &Path, why: impl std::fmt::Display) -> ClientError {
    ClientError::File(format!(
        "the local API cannot start at {}: {why}",
        path.display()
    ))
}

/// Binds the socket in `profile` and serves it until the returned value is
/// dropped.
pub fn serve(profile: &Path, hub: Arc<ApiHub>, lines: Lines) -> Result<UnixApi, ClientError> {
    let path = profile.join(SOCKET_NAME);
    let (listener, owner) = bind_private(profile, &path)?;
    let task = tokio::spawn(accept_loop(listener, owner, hub, lines));
    Ok(UnixApi { path, task })
}

/// Binds `path` with mode 0600; returns the listener and our user id.
fn bind_private(profile: &Path, path: &Path) -> Result<(UnixListener, u32), ClientError> {
    // What is at the name now: nothing, a stale socket, or something to keep.
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(refused(path, e)),
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(refused(
                    path,
                    "another process serves the API there; stop it, or use another --profile",
                ));
            }
        }
        Ok(_) => {
            return Err(refused(
                path,
                "something other than a socket has that name; move it away",
            ))
        }
    }
    let staging = profile.join(format!(".api-{:016x}", rand::random::<u64>()));
    let mut dir = std::fs::DirBuilder::new();
    std::os::unix::fs::DirBuilderExt::mode(&mut dir, 0o700);
    dir.create(&staging)
        .map_err(|e| refused(path, format_args!("cannot make {}: {e}", staging.display())))?;
    let result = (|| {
        let owner = std::fs::metadata(&staging)
            .map_err(|e| refused(path, e))?
            .uid();
        let profile_meta = std::fs::metadata(profile).map_err(|e| refused(path, e))?;
        if profile_meta.uid() != owner || profile_meta.mode() & 0o022 != 0 {
            return Err(refused(
                path,
                format_args!(
                    "the profile directory {} is not private (another user owns it or may \
                     write in it); `chmod go-w` it or use another --profile",
                    profile.display()
                ),
            ));
        }
        let staged = staging.join(SOCKET_NAME);
        let listener = std::os::unix::net::UnixListener::bind(&staged)
            .map_err(|e| refused(path, format_args!("cannot bind: {e}")))?;
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| refused(path, format_args!("cannot make the socket private: {e}")))?;
        let meta = std::fs::symlink_metadata(&staged).map_err(|e| refused(path, e))?;
        if meta.mode() & 0o077 != 0 || meta.uid() != owner {
            return Err(refused(
                path,
                "the socket cannot be made private here (mode 0600); use a --profile on a file \
                 system that keeps Unix modes",
            ));
        }
        std::fs::rename(&staged, path)
            .map_err(|e| refused(path, format_args!("cannot move the socket in place: {e}")))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| refused(path, e))?;
        let listener = UnixListener::from_std(listener).map_err(|e| refused(path, e))?;
        Ok((listener, owner))
    })();
    let _ = std::fs::remove_dir_all(&staging);
    result
}

async fn accept_loop(listener: UnixListener, owner: u32, hub: Arc<ApiHub>, lines: Lines) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "local API: accept failed");
                // Out of descriptors and the like: do not spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        match stream.peer_cred() {
            Ok(cred) if cred.uid() == owner => {}
            Ok(cred) => {
                tracing::warn!(
                    uid = cred.uid(),
                    "local API: refused a connection of another user"
                );
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "local API: no peer credentials; refused");
                continue;
            }
        }
        let hub = Arc::clone(&hub);
        let lines = lines.clone();
        tokio::spawn(connection(stream, hub, lines));
    }
}

/// One client: its commands in, its events and replies out.
async fn connection(stream: UnixStream, hub: Arc<ApiHub>, lines: Lines) {
    let (read, mut write) = stream.into_split();
    let (id, queue) = match hub.subscribe() {
        Ok(sub) => sub,
        Err(reason) => {
            let _ = tokio::time::timeout(
                BYE_WAIT,
                write.write_all(format!("{}\n", bye(&reason)).as_bytes()),
            )
            .await;
            return;
        }
    };
    let limit = hub.limits().max_message_bytes;
    let session = Arc::new(Session {
        hub,
        id,
        queue: Arc::clone(&queue),
        lines,
        transport: Transport::Unix,
        uploads: None,
    });
    let reader = {
        let session = Arc::clone(&session);
        tokio::spawn(async move {
            let reason = read_commands(read, limit, &session).await;
            session.queue.close(&reason);
        })
    };
    loop {
        match queue.next().await {
            Outgoing::Text(text) => {
                let mut line = Vec::with_capacity(text.len() + 1);
                line.extend_from_slice(text.as_bytes());
                line.push(b'\n');
                if write.write_all(&line).await.is_err() {
                    break;
                }
            }
            Outgoing::Close(reason) => {
                let _ = tokio::time::timeout(
                    BYE_WAIT,
                    write.write_all(format!("{}\n", bye(&reason)).as_bytes()),
                )
                .await;
                break;
            }
        }
    }
    reader.abort();
    let _ = write.shutdown().await;
    drop(session);
}

/// Reads one command per line until the client closes or breaks a bound;
/// returns why the connection ends.
async fn read_commands(
    read: tokio::net::unix::OwnedReadHalf,
    limit: usize,
    session: &Session,
) -> String {
    let mut reader = BufReader::new(read);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let take = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
        let mut bounded = (&mut reader).take(take);
        match bounded.read_until(b'\n', &mut buf).await {
            Ok(0) => return "the client closed the connection".into(),
            Ok(_) => {}
            Err(e) => return format!("read failed: {e}"),
        }
        if buf.last() == Some(&b'\n') {
            buf.pop();
        } else if buf.len() > limit {
            return format!("a message over {limit} bytes");
        }
        let text = String::from_utf8_lossy(&buf);
        if text.trim().is_empty() {
            continue;
        }
        session.handle(&text).await;
    }
}
