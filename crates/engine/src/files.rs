//! File transfer core (issue 6, docs/protocol.md §7 `File*`): safe download names,
//! a reader thread that reads and hashes the file being sent, a writer thread that
//! appends, hashes and verifies the file being received, and a progress tracker.
//!
//! Nothing here touches the network or the record layer. The chat engine owns the
//! protocol: it sends `FileOffer` with [`OutgoingFile::name`] and
//! [`OutgoingFile::size`]; on `FileAccept { offset }` it calls
//! [`OutgoingFile::start`] and turns every [`Outgoing::Chunk`] of the returned
//! [`ChunkSource`] into a `FileChunk`, then [`Outgoing::Finished`] into `FileDone`.
//! The receiver calls [`IncomingFile::begin`] (which picks the `.part` and the
//! resume offset for `FileAccept`), [`IncomingFile::write`] for each `FileChunk`,
//! and [`IncomingFile::finish`] on `FileDone`.
//!
//! Threading: reading + BLAKE3 on the sending side and writing + BLAKE3 on the
//! receiving side each run on their own OS thread, so the task that seals or opens
//! records (the bottleneck: AES-256-CBC + HMAC-SHA256) never waits for the disk or
//! the hash. Between them and the async engine sit bounded channels a few chunks
//! deep: memory stays bounded and a slow disk or a slow peer pushes back.

mod name;
mod progress;
mod receive;
mod send;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use name::{
    part_path, safe_file_name, unique_destination, FileNameError, PartScope, MAX_NAME_BYTES,
};
pub use progress::{Progress, ProgressReport, PROGRESS_EVERY};
pub use receive::IncomingFile;
pub use send::{ChunkSource, Outgoing, OutgoingFile};

/// Chunks queued between a file thread and the engine: 1 MiB, enough to ride out
/// a scheduling hiccup on a busy 2-core machine (4 measured the same when idle),
/// small enough to bound memory per transfer.
pub const QUEUE_CHUNKS: usize = 16;

/// Where received files go when `--downloads` is not given: the XDG download
/// directory, else the working directory.
pub fn default_downloads_dir() -> PathBuf {
    dirs::download_dir()
        .or_else(|| std::env::current_dir().ok())
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Why a transfer could not start, go on or finish. Messages name the file and
/// say what the person can do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// The offered name cannot be used at all.
    #[error(transparent)]
    Name(#[from] FileNameError),
    /// `/send` of a directory, device, socket...
    #[error("{0} is not a regular file")]
    NotAFile(PathBuf),
    /// The file to send could not be opened or inspected.
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Reading the file being sent failed.
    #[error("reading {path} failed: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file being sent got shorter than the size we offered.
    #[error("{path} changed while being sent: it ends at {got} bytes, {size} were offered")]
    Changed { path: PathBuf, size: u64, got: u64 },
    /// The peer asked to resume past the end of the file.
    #[error("the peer asked to resume at byte {offset} of a {size}-byte file")]
    BadResume { offset: u64, size: u64 },
    /// The disk (or the quota) is full; the `.part` stays for a resume.
    #[error("disk full while writing {0}; the partial file is kept, free space and resume")]
    DiskFull(PathBuf),
    /// No permission to create or write in the downloads directory.
    #[error("permission denied writing {0}; choose another directory with --downloads")]
    PermissionDenied(PathBuf),
    /// Any other write failure; the `.part` stays for a resume.
    #[error("writing {path} failed: {source}; the partial file is kept")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Another transfer is already writing this `.part`.
    #[error("{0} is already being received")]
    Busy(PathBuf),
    /// Something we did not create is where the `.part` goes (a directory, a
    /// symlink, a file with other links or permissions...); it is left alone.
    #[error("{0} exists and is not a partial download of ours; move it away and try again")]
    PartInTheWay(PathBuf),
    /// The peer sent a chunk at the wrong place: a lie or a bug; the session's
    /// transfer must stop.
    #[error("the peer sent data at byte {got}, expected byte {expected}")]
    OffsetMismatch { expected: u64, got: u64 },
    /// The peer sent more than it offered; nothing past the offered size is written.
    #[error("the peer sent data up to byte {end} of a file it offered as {size} bytes")]
    PastEnd { end: u64, size: u64 },
    /// The peer said done before sending everything; nothing was kept.
    #[error("the transfer ended at {got} of {size} bytes; nothing was kept")]
    Incomplete { got: u64, size: u64 },
    /// The BLAKE3 hash of what arrived differs from the sender's; nothing was kept.
    #[error("the received file does not match the sender's BLAKE3 hash; nothing was kept")]
    HashMismatch,
    /// Renaming the verified `.part` to its final name failed.
    #[error("cannot move {part} to {dest}: {source}; the verified data stays in {part}")]
    Rename {
        part: PathBuf,
        dest: PathBuf,
        source: std::io::Error,
    },
    /// The file thread stopped (cancelled, or it died).
    #[error("the transfer was stopped")]
    Stopped,
}

/// Classifies a write-side I/O error: disk full and permission denied get their
/// own clear messages.
fn write_error(path: &std::path::Path, source: std::io::Error) -> FileError {
    if source.kind() == std::io::ErrorKind::PermissionDenied {
        return FileError::PermissionDenied(path.to_path_buf());
    }
    if is_disk_full(&source) {
        return FileError::DiskFull(path.to_path_buf());
    }
    FileError::Write {
        path: path.to_path_buf(),
        source,
    }
}

/// `ErrorKind::StorageFull`/`QuotaExceeded` are newer than our MSRV (1.80), so
/// look at the OS error: ENOSPC is 28 on every Unix we build for; EDQUOT is 122
/// on Linux.
fn is_disk_full(e: &std::io::Error) -> bool {
    match e.raw_os_error() {
        #[cfg(unix)]
        Some(28) => true,
        #[cfg(target_os = "linux")]
        Some(122) => true,
        #[cfg(windows)]
        Some(39 | 112) => true, // ERROR_HANDLE_DISK_FULL, ERROR_DISK_FULL
        _ => false,
    }
}
