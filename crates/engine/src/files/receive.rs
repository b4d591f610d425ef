//! The receiving side: a private `.part` file in the downloads directory and the
//! writer thread that appends each chunk, hashes everything with BLAKE3 (a resumed
//! `.part` from its first byte) and, once the sender's hash matches, moves it to
//! its final name.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

use super::{
    part_path, safe_file_name, unique_destination, write_error, FileError, PartScope, QUEUE_CHUNKS,
};

/// Bytes of an existing `.part` hashed per step while new chunks may be waiting.
const HASH_STEP: usize = 256 * 1024;
/// The `.part` is written in pieces that start and end on multiples of this
/// (the chunks themselves are 65,472 bytes): page-aligned writes of whole 64
/// KiB cost the kernel a third less than unaligned ones (measured with `dd`
/// on ext4: 0.22 against 0.33 s of system time per GiB), for one copy in
/// memory that costs far less.
const WRITE_BLOCK: usize = 64 * 1024;
/// Final names tried by the no-replace move before giving up.
const MOVE_ATTEMPTS: u32 = 16;

/// `.part` files some `IncomingFile` in this process is writing: two offers of
/// the same name must not append to the same file.
static ACTIVE_PARTS: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

/// A claim on one `.part`, released when `finish` answers or the writer thread ends.
#[derive(Debug)]
struct PartClaim(PathBuf);

impl PartClaim {
    fn take(part: &Path) -> Result<PartClaim, FileError> {
        let mut active = ACTIVE_PARTS.lock().unwrap_or_else(|p| p.into_inner());
        if !active.insert(part.to_path_buf()) {
            return Err(FileError::Busy(part.to_path_buf()));
        }
        Ok(PartClaim(part.to_path_buf()))
    }
}

impl Drop for PartClaim {
    fn drop(&mut self) {
        let mut active = ACTIVE_PARTS.lock().unwrap_or_else(|p| p.into_inner());
        active.remove(&self.0);
    }
}

enum Command {
    Chunk {
        offset: u64,
        data: Vec<u8>,
    },
    Finish {
        blake3: [u8; 32],
        reply: oneshot::Sender<Result<PathBuf, FileError>>,
    },
}

/// A file being received. Chunks go to the writer thread through a bounded
/// queue, so [`IncomingFile::write`] waits when the disk is slower than the link.
///
/// Dropping it (the link went away) lets the thread write what is queued and keeps
/// the `.part` for a resume; [`IncomingFile::cancel`] decides explicitly.
#[derive(Debug)]
pub struct IncomingFile {
    tx: Option<mpsc::Sender<Command>>,
    thread: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    failure: Arc<Mutex<Option<FileError>>>,
    name: String,
    part: PathBuf,
    size: u64,
    next_offset: u64,
}

impl IncomingFile {
    /// Prepares to receive transfer `id` from `scope`, offered as `offered_name`
    /// (made safe by [`safe_file_name`]) of `size` bytes, into `downloads_dir`
    /// (created if missing). Returns the file and the offset to put in
    /// `FileAccept`: what our `.part` for this transfer ([`part_path`]) holds when
    /// it is not longer than `size` (a resume), else 0.
    ///
    /// The `.part` is created with `O_EXCL` and mode 0600. An existing one is
    /// resumed only if it is ours: a regular file (never a symlink), with one
    /// link and no permissions for others, and still the same file once opened.
    /// Anything else at that name is left untouched and the offer refused. No
    /// other file is ever appended to or deleted. A resumed `.part` that came from
    /// a different file fails the final hash check and is deleted; the next
    /// attempt starts from 0.
    pub fn begin(
        downloads_dir: &Path,
        offered_name: &str,
        size: u64,
        scope: PartScope,
        id: u64,
    ) -> Result<(IncomingFile, u64), FileError> {
        let name = safe_file_name(offered_name)?;
        std::fs::create_dir_all(downloads_dir).map_err(|e| write_error(downloads_dir, e))?;
        let dir =
            std::fs::canonicalize(downloads_dir).map_err(|e| write_error(downloads_dir, e))?;
        let part = part_path(&dir, scope, id);
        let claim = PartClaim::take(&part)?;
        let (file, start) = match std::fs::symlink_metadata(&part) {
            Err(e) if e.kind() == ErrorKind::NotFound => (create_part(&part)?, 0),
            Err(e) => return Err(write_error(&part, e)),
            Ok(before) => {
                let file = open_own_part(&part, &before)?;
                let len = before.len();
                if len <= size {
                    (file, len)
                } else {
                    // Ours, but longer than the file now offered: start over in it.
                    file.set_len(0).map_err(|e| write_error(&part, e))?;
                    (file, 0)
                }
            }
        };
        // The same open file, not the path again: nothing swapped in meanwhile
        // can be read instead.
        let readback = if start > 0 {
            Some(file.try_clone().map_err(|e| write_error(&part, e))?)
        } else {
            None
        };
        let (tx, rx) = mpsc::channel(QUEUE_CHUNKS);
        let stop = Arc::new(AtomicBool::new(false));
        let failure = Arc::new(Mutex::new(None));
        let writer = Writer {
            rx,
            file,
            readback,
            hasher: blake3::Hasher::new(),
            hashed: 0,
            written: start,
            staged: Vec::with_capacity(WRITE_BLOCK),
            size,
            dir,
            name: name.clone(),
            part: part.clone(),
            stop: stop.clone(),
            failure: failure.clone(),
            claim: Some(claim),
        };
        let thread = std::thread::Builder::new()
            .name("file-write".into())
            .spawn(move || writer.run())
            .map_err(|e| write_error(&part, e))?;
        Ok((
            IncomingFile {
                tx: Some(tx),
                thread: Some(thread),
                stop,
                failure,
                name,
                part,
                size,
                next_offset: start,
            },
            start,
        ))
    }

    /// The safe name the file is saved under (before any ` (N)`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The `.part` being written.
    pub fn part_path(&self) -> &Path {
        &self.part
    }

    /// The offered size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bytes accepted so far, including a resumed prefix: the next expected offset.
    pub fn received(&self) -> u64 {
        self.next_offset
    }

    /// Queues one `FileChunk`. A chunk not at the next offset, or reaching past
    /// the offered size, is refused before anything is written: the peer is lying
    /// or broken, and the transfer should be cancelled. Waits while the queue is
    /// full (backpressure from the disk).
    ///
    /// Cancel-safe: if the future is dropped before the chunk is queued, nothing
    /// was accepted and the same offset is expected next.
    pub async fn write(&mut self, offset: u64, data: Vec<u8>) -> Result<(), FileError> {
        let Some((tx, end)) = self.accept(offset, data.len())? else {
            return Ok(());
        };
        tx.send(Command::Chunk { offset, data })
            .await
            .map_err(|_| self.failure())?;
        self.next_offset = end;
        Ok(())
    }

    /// [`IncomingFile::write`] for plain threads (tests, benchmarks).
    pub fn blocking_write(&mut self, offset: u64, data: Vec<u8>) -> Result<(), FileError> {
        let Some((tx, end)) = self.accept(offset, data.len())? else {
            return Ok(());
        };
        tx.blocking_send(Command::Chunk { offset, data })
            .map_err(|_| self.failure())?;
        self.next_offset = end;
        Ok(())
    }

    /// Checks a chunk's place and size; the sender to queue it on and the offset
    /// after it, or `None` for an empty chunk (nothing to do).
    fn accept(
        &self,
        offset: u64,
        len: usize,
    ) -> Result<Option<(mpsc::Sender<Command>, u64)>, FileError> {
        if offset != self.next_offset {
            return Err(FileError::OffsetMismatch {
                expected: self.next_offset,
                got: offset,
            });
        }
        let end = offset.saturating_add(len as u64);
        if end > self.size {
            return Err(FileError::PastEnd {
                end,
                size: self.size,
            });
        }
        let Some(tx) = self.tx.clone() else {
            return Err(FileError::Stopped);
        };
        if len == 0 {
            return Ok(None);
        }
        Ok(Some((tx, end)))
    }

    /// The sender said `FileDone`: once every queued chunk is written, checks the
    /// size and the BLAKE3 hash `blake3`, and moves the `.part` to a name that
    /// replaces nothing ([`unique_destination`]). Returns the final path. On any
    /// mismatch the `.part` is deleted: a failed check keeps nothing.
    pub async fn finish(mut self, blake3: [u8; 32]) -> Result<PathBuf, FileError> {
        let (reply, answer) = oneshot::channel();
        let Some(tx) = self.tx.take() else {
            return Err(FileError::Stopped);
        };
        if tx.send(Command::Finish { blake3, reply }).await.is_err() {
            return Err(self.failure());
        }
        drop(tx);
        match answer.await {
            Ok(result) => result,
            Err(_) => Err(self.failure()),
        }
    }

    /// [`IncomingFile::finish`] for plain threads (tests, benchmarks).
    pub fn blocking_finish(mut self, blake3: [u8; 32]) -> Result<PathBuf, FileError> {
        let (reply, answer) = oneshot::channel();
        let Some(tx) = self.tx.take() else {
            return Err(FileError::Stopped);
        };
        if tx.blocking_send(Command::Finish { blake3, reply }).is_err() {
            return Err(self.failure());
        }
        drop(tx);
        match answer.blocking_recv() {
            Ok(result) => result,
            Err(_) => Err(self.failure()),
        }
    }

    /// Stops the transfer and joins the thread. With `keep_part` the chunks already
    /// accepted are written first (at most [`QUEUE_CHUNKS`] writes, milliseconds),
    /// so the kept `.part` holds exactly [`IncomingFile::received`] bytes for a
    /// later resume; without, the thread stops at once and the `.part` is deleted.
    /// Returns the kept `.part`, if any.
    pub fn cancel(mut self, keep_part: bool) -> Option<PathBuf> {
        if !keep_part {
            self.stop.store(true, Ordering::Relaxed);
        }
        self.tx = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if keep_part && self.part.exists() {
            return Some(self.part.clone());
        }
        if !keep_part {
            let _ = std::fs::remove_file(&self.part);
        }
        None
    }

    /// Why the writer thread stopped, once it has.
    fn failure(&self) -> FileError {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or(FileError::Stopped)
    }
}

struct Writer {
    rx: mpsc::Receiver<Command>,
    file: File,
    /// A second handle on the `.part` for hashing a resumed prefix.
    readback: Option<File>,
    hasher: blake3::Hasher,
    /// Bytes hashed so far: trails `written` only while a resumed prefix is hashed.
    hashed: u64,
    /// Bytes in the `.part`.
    written: u64,
    /// Bytes after `written`, waiting for the next [`WRITE_BLOCK`] boundary.
    /// Only used while nothing waits to be hashed, so they are always hashed.
    staged: Vec<u8>,
    size: u64,
    dir: PathBuf,
    name: String,
    part: PathBuf,
    stop: Arc<AtomicBool>,
    failure: Arc<Mutex<Option<FileError>>>,
    /// Released as soon as the `.part` is gone (moved or deleted), before the
    /// answer to `finish`, so the same name can be received again at once.
    claim: Option<PartClaim>,
}

impl Writer {
    fn run(mut self) {
        if let Err(e) = self.serve() {
            *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
        }
    }

    /// Writes chunks until `Finish`, a closed channel, a stop or an error. While a
    /// resumed prefix is not hashed yet, it is hashed a step at a time between
    /// chunks, so the link never waits for the whole prefix. Bounded: each pass
    /// consumes a command or hashes at least one byte (or fails).
    fn serve(&mut self) -> Result<(), FileError> {
        let mut step = Vec::new();
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            let command = if self.hashed < self.written {
                match self.rx.try_recv() {
                    Ok(command) => Some(command),
                    Err(mpsc::error::TryRecvError::Empty) => {
                        self.hash_backlog_step(&mut step)?;
                        continue;
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => None,
                }
            } else {
                self.rx.blocking_recv()
            };
            match command {
                // The engine went away (link lost): keep the `.part`, with every
                // accepted byte, for a resume.
                None => return self.flush(),
                Some(Command::Chunk { offset, data }) => self.append(offset, &data)?,
                Some(Command::Finish { blake3, reply }) => {
                    let result = self.verify_and_move(blake3, &mut step);
                    self.claim = None;
                    let _ = reply.send(result);
                    return Ok(());
                }
            }
        }
    }

    /// Bytes accepted: in the `.part` or staged.
    fn accepted(&self) -> u64 {
        self.written + self.staged.len() as u64
    }

    fn append(&mut self, offset: u64, data: &[u8]) -> Result<(), FileError> {
        // The front end checked already; checked again where the bytes land.
        let end = offset.saturating_add(data.len() as u64);
        if offset != self.accepted() {
            return Err(FileError::OffsetMismatch {
                expected: self.accepted(),
                got: offset,
            });
        }
        if end > self.size {
            return Err(FileError::PastEnd {
                end,
                size: self.size,
            });
        }
        if self.hashed < self.written {
            // A resumed prefix is still being hashed from the file: this
            // chunk is hashed from there too, after it (nothing is staged now).
            self.file
                .write_all(data)
                .map_err(|e| write_error(&self.part, e))?;
            self.written = end;
            return Ok(());
        }
        self.hasher.update(data);
        self.hashed = end;
        // Bounded: every pass stages at least one byte.
        let mut rest = data;
        while !rest.is_empty() {
            let to_boundary = WRITE_BLOCK - (self.accepted() % WRITE_BLOCK as u64) as usize;
            let (now, later) = rest.split_at(to_boundary.min(rest.len()));
            self.staged.extend_from_slice(now);
            rest = later;
            if self.accepted() % WRITE_BLOCK as u64 == 0 {
                self.flush()?;
            }
        }
        Ok(())
    }

    /// Writes what is staged.
    fn flush(&mut self) -> Result<(), FileError> {
        if self.staged.is_empty() {
            return Ok(());
        }
        self.file
            .write_all(&self.staged)
            .map_err(|e| write_error(&self.part, e))?;
        self.written += self.staged.len() as u64;
        self.staged.clear();
        Ok(())
    }

    /// Hashes up to [`HASH_STEP`] bytes of the `.part` that were written before
    /// they could be hashed from memory.
    fn hash_backlog_step(&mut self, buf: &mut Vec<u8>) -> Result<(), FileError> {
        let Some(readback) = self.readback.as_mut() else {
            // Nothing to read back with: only possible if begin() skipped it.
            return Err(FileError::Stopped);
        };
        let want =
            usize::try_from(self.written - self.hashed).map_or(HASH_STEP, |l| l.min(HASH_STEP));
        buf.resize(want, 0);
        readback
            .seek(SeekFrom::Start(self.hashed))
            .map_err(|e| write_error(&self.part, e))?;
        let n = loop {
            match readback.read(buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(write_error(&self.part, e)),
            }
        };
        if n == 0 {
            return Err(write_error(
                &self.part,
                std::io::Error::new(ErrorKind::UnexpectedEof, "the partial file shrank"),
            ));
        }
        self.hasher.update(&buf[..n]);
        self.hashed += n as u64;
        Ok(())
    }

    fn verify_and_move(
        &mut self,
        blake3: [u8; 32],
        step: &mut Vec<u8>,
    ) -> Result<PathBuf, FileError> {
        self.flush()?;
        // Bounded by the backlog size over HASH_STEP.
        while self.hashed < self.written {
            if self.stop.load(Ordering::Relaxed) {
                return Err(FileError::Stopped);
            }
            self.hash_backlog_step(step)?;
        }
        if self.written != self.size {
            let _ = std::fs::remove_file(&self.part);
            return Err(FileError::Incomplete {
                got: self.written,
                size: self.size,
            });
        }
        let actual: [u8; 32] = *self.hasher.finalize().as_bytes();
        if actual != blake3 {
            let _ = std::fs::remove_file(&self.part);
            return Err(FileError::HashMismatch);
        }
        self.file.flush().map_err(|e| write_error(&self.part, e))?;
        move_without_replacing(&self.part, &self.dir, &self.name)
    }
}

/// A new `.part`: `O_CREAT | O_EXCL` (never follows or reuses anything planted at
/// the name), readable and writable by us only.
fn create_part(part: &Path) -> Result<File, FileError> {
    let mut options = OpenOptions::new();
    options.append(true).read(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(part).map_err(|e| write_error(part, e))
}

/// Opens an existing `.part` for appending, only if it is one we made: `before`
/// (its `symlink_metadata`) says a regular file, not a symlink; on Unix it has
/// one link and no permissions for group or others (we create it 0600), and the
/// opened file is the same inode, so nothing was swapped in between the look and
/// the open. Anything else is [`FileError::PartInTheWay`] and is not touched.
fn open_own_part(part: &Path, before: &std::fs::Metadata) -> Result<File, FileError> {
    if !before.file_type().is_file() {
        return Err(FileError::PartInTheWay(part.to_path_buf()));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if before.nlink() != 1 || before.mode() & 0o077 != 0 {
            return Err(FileError::PartInTheWay(part.to_path_buf()));
        }
    }
    let file = OpenOptions::new()
        .append(true)
        .read(true)
        .open(part)
        .map_err(|e| write_error(part, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let opened = file.metadata().map_err(|e| write_error(part, e))?;
        if opened.dev() != before.dev() || opened.ino() != before.ino() || !opened.is_file() {
            return Err(FileError::PartInTheWay(part.to_path_buf()));
        }
    }
    Ok(file)
}

/// Gives the verified `.part` its final name without ever replacing a file: a hard
/// link fails if the name is taken (then the next ` (N)` is tried), and the `.part`
/// name is removed after. Where hard links are unsupported, a rename to a name
/// that was free a moment ago.
///
/// No fsync before the move, like rsync, scp and croc: a crash right after may
/// leave the file short on some filesystems, and the cost would be writing the
/// whole file out at disk speed before saying done.
fn move_without_replacing(part: &Path, dir: &Path, name: &str) -> Result<PathBuf, FileError> {
    let mut last_error = None;
    for _ in 0..MOVE_ATTEMPTS {
        let dest = unique_destination(dir, name);
        match std::fs::hard_link(part, &dest) {
            Ok(()) => {
                let _ = std::fs::remove_file(part);
                return Ok(dest);
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => {
                last_error = Some(e);
                break;
            }
        }
    }
    let dest = unique_destination(dir, name);
    let source = match last_error {
        // Every candidate was taken between the check and the link.
        None => std::io::Error::new(ErrorKind::AlreadyExists, "every candidate name is taken"),
        Some(_) => match std::fs::rename(part, &dest) {
            Ok(()) => return Ok(dest),
            Err(e) => e,
        },
    };
    Err(FileError::Rename {
        part: part.to_path_buf(),
        dest,
        source,
    })
}
