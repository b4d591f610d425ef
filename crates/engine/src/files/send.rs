//! The sending side: a file opened for `/send`, and the reader thread that reads
//! it in `FileChunk`-sized pieces and hashes all of it (BLAKE3) while the engine
//! seals.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::mpsc;
use wire::peer::MAX_FILE_CHUNK;

use super::{safe_file_name, FileError, QUEUE_CHUNKS};

/// Spent chunk buffers kept for reuse.
const SPARE_BUFFERS: usize = 8;

/// A file chosen for sending: checked to be a regular file, with the size and the
/// base name that go into the `FileOffer`.
#[derive(Debug, Clone)]
pub struct OutgoingFile {
    path: PathBuf,
    name: String,
    size: u64,
}

impl OutgoingFile {
    /// Checks `path` (symlinks followed) is a readable regular file.
    pub fn open(path: impl AsRef<Path>) -> Result<OutgoingFile, FileError> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|source| FileError::Open {
            path: path.clone(),
            source,
        })?;
        let meta = file.metadata().map_err(|source| FileError::Open {
            path: path.clone(),
            source,
        })?;
        if !meta.is_file() {
            return Err(FileError::NotAFile(path));
        }
        let base = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let name = safe_file_name(&base)?;
        Ok(OutgoingFile {
            path,
            name,
            size: meta.len(),
        })
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The base name to offer (already what [`safe_file_name`] would keep).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The size to offer, fixed when the file was opened.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Starts the reader thread for a peer that accepted at `offset` (0, or what it
    /// already has). Bytes before `offset` are read and hashed but not sent, so the
    /// final hash covers the whole file. Call again after a reconnect; each call
    /// reopens the file.
    pub fn start(&self, offset: u64) -> Result<ChunkSource, FileError> {
        if offset > self.size {
            return Err(FileError::BadResume {
                offset,
                size: self.size,
            });
        }
        let file = File::open(&self.path).map_err(|source| FileError::Open {
            path: self.path.clone(),
            source,
        })?;
        let (tx, rx) = mpsc::channel(QUEUE_CHUNKS);
        let (spare_tx, spare_rx) = std::sync::mpsc::sync_channel(SPARE_BUFFERS);
        let stop = Arc::new(AtomicBool::new(false));
        let reader = Reader {
            file,
            path: self.path.clone(),
            size: self.size,
            offset,
            tx,
            spare: spare_rx,
            stop: stop.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("file-read".into())
            .spawn(move || reader.run())
            .map_err(|source| FileError::Read {
                path: self.path.clone(),
                source,
            })?;
        Ok(ChunkSource {
            rx,
            spare: spare_tx,
            stop,
            thread: Some(thread),
            finished: false,
        })
    }
}

/// What the reader thread hands over, in order: chunks, then the hash.
#[derive(Debug)]
pub enum Outgoing {
    /// `data` (1..=[`MAX_FILE_CHUNK`] bytes) belongs at `offset`.
    Chunk { offset: u64, data: Vec<u8> },
    /// Every chunk was handed over; the BLAKE3 hash of the whole file, for
    /// `FileDone`.
    Finished { blake3: [u8; 32] },
}

/// The running reader thread of one transfer. Dropping it stops the thread
/// promptly (within one chunk read); nothing is joined on drop, so dropping is
/// safe in async code.
#[derive(Debug)]
pub struct ChunkSource {
    rx: mpsc::Receiver<Result<Outgoing, FileError>>,
    spare: std::sync::mpsc::SyncSender<Vec<u8>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    finished: bool,
}

impl ChunkSource {
    /// The next chunk or the final hash. After `Finished` or an error every call
    /// returns [`FileError::Stopped`].
    pub async fn next(&mut self) -> Result<Outgoing, FileError> {
        let item = self.rx.recv().await;
        self.settle(item)
    }

    /// [`ChunkSource::next`] for plain threads (tests, benchmarks). Panics if
    /// called from async code, like every tokio `blocking_` call.
    pub fn blocking_next(&mut self) -> Result<Outgoing, FileError> {
        let item = self.rx.blocking_recv();
        self.settle(item)
    }

    fn settle(&mut self, item: Option<Result<Outgoing, FileError>>) -> Result<Outgoing, FileError> {
        if self.finished {
            return Err(FileError::Stopped);
        }
        match item {
            Some(Ok(chunk @ Outgoing::Chunk { .. })) => Ok(chunk),
            Some(done) => {
                self.finished = true;
                done
            }
            None => {
                self.finished = true;
                Err(FileError::Stopped)
            }
        }
    }

    /// Hands a spent chunk buffer back for the reader to refill, sparing the
    /// allocator a 64 KiB allocation per chunk. Optional; extra buffers are freed.
    pub fn recycle(&self, mut buf: Vec<u8>) {
        if buf.capacity() >= MAX_FILE_CHUNK {
            buf.clear();
            let _ = self.spare.try_send(buf);
        }
    }

    /// Stops the reader and waits for its thread to end (at most one chunk read).
    pub fn cancel(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.rx.close();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for ChunkSource {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

struct Reader {
    file: File,
    path: PathBuf,
    size: u64,
    offset: u64,
    tx: mpsc::Sender<Result<Outgoing, FileError>>,
    spare: std::sync::mpsc::Receiver<Vec<u8>>,
    stop: Arc<AtomicBool>,
}

impl Reader {
    fn run(mut self) {
        let result = self.read_all();
        // A closed channel means the engine is gone: nobody to tell.
        let _ = match result {
            Ok(Some(blake3)) => self.tx.blocking_send(Ok(Outgoing::Finished { blake3 })),
            Ok(None) => Ok(()),
            Err(e) => self.tx.blocking_send(Err(e)),
        };
    }

    /// Reads and hashes the file; `Ok(None)` when stopped early.
    fn read_all(&mut self) -> Result<Option<[u8; 32]>, FileError> {
        let mut hasher = blake3::Hasher::new();
        let mut pos = 0u64;
        let mut scratch = vec![0u8; MAX_FILE_CHUNK];
        // Bounded: each pass moves `pos` forward or returns.
        while pos < self.offset {
            if self.stop.load(Ordering::Relaxed) {
                return Ok(None);
            }
            let want = chunk_len(self.offset - pos);
            self.fill(&mut scratch[..want], pos)?;
            hasher.update(&scratch[..want]);
            pos += want as u64;
        }
        drop(scratch);
        while pos < self.size {
            if self.stop.load(Ordering::Relaxed) || self.tx.is_closed() {
                return Ok(None);
            }
            let want = chunk_len(self.size - pos);
            let mut buf = self
                .spare
                .try_recv()
                .unwrap_or_else(|_| Vec::with_capacity(MAX_FILE_CHUNK));
            self.fill_vec(&mut buf, want, pos)?;
            hasher.update(&buf);
            if self
                .tx
                .blocking_send(Ok(Outgoing::Chunk {
                    offset: pos,
                    data: buf,
                }))
                .is_err()
            {
                return Ok(None);
            }
            pos += want as u64;
        }
        Ok(Some(*hasher.finalize().as_bytes()))
    }

    /// Replaces `buf`'s contents with the next `want` bytes of the file (at
    /// `pos`). Reads into the spare capacity, so a recycled buffer is not zeroed
    /// first; `read_to_end` retries interrupted reads.
    fn fill_vec(&mut self, buf: &mut Vec<u8>, want: usize, pos: u64) -> Result<(), FileError> {
        buf.clear();
        (&mut self.file)
            .take(want as u64)
            .read_to_end(buf)
            .map_err(|source| FileError::Read {
                path: self.path.clone(),
                source,
            })?;
        if buf.len() < want {
            return Err(FileError::Changed {
                path: self.path.clone(),
                size: self.size,
                got: pos + buf.len() as u64,
            });
        }
        Ok(())
    }

    /// Fills `buf` completely from the file, which is positioned at `pos`.
    fn fill(&mut self, buf: &mut [u8], pos: u64) -> Result<(), FileError> {
        let mut filled = 0;
        // Bounded: every pass fills more or returns (EOF or an error); EINTR
        // retries are the only exception and the kernel ends those.
        while filled < buf.len() {
            match self.file.read(&mut buf[filled..]) {
                Ok(0) => {
                    return Err(FileError::Changed {
                        path: self.path.clone(),
                        size: self.size,
                        got: pos + filled as u64,
                    })
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(FileError::Read {
                        path: self.path.clone(),
                        source,
                    })
                }
            }
        }
        Ok(())
    }
}

/// The next chunk's length with `left` bytes to go.
fn chunk_len(left: u64) -> usize {
    usize::try_from(left).map_or(MAX_FILE_CHUNK, |l| l.min(MAX_FILE_CHUNK))
}
