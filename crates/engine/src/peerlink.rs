//! A live encrypted peer connection as two tasks: the writer seals outgoing
//! [`PeerMsg`]s in order, the reader opens incoming records and hands them over.
//! The [`wire::Sealer`] and [`wire::Opener`] each live in exactly one task.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures::StreamExt;
use rand::rngs::OsRng;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::codec::{Framed, FramedParts};
use wire::frame::HEADER_LEN;
use wire::record::{Encrypted, Slot, IV_LEN};
use wire::{FrameCodec, Link, Opener, PeerMsg, RecordError, Sealer};

use crate::connect::{Connected, Path};

/// How long a write may wait for the peer to read before the link is declared dead.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long closing waits for queued messages to leave.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// Messages queued towards the writer, and their encoded bytes. `send` never
/// waits (a chat loop that waited on a peer that waits on us would deadlock); a
/// full queue means the peer stopped reading, and the link is declared dead.
/// The byte bound is what keeps a peer that stops reading from costing us
/// memory: 16 Ki items of up to 64 KiB each would be a gigabyte.
const OUT_QUEUE: usize = 16 * 1024;
const OUT_BYTES: usize = 4 * 1024 * 1024;
/// Opened messages waiting for the chat loop; the reader pauses when it is full.
/// Small: during a transfer these are mostly 64 KiB chunks, and a chat message
/// that arrives after them waits for all of them.
const IN_QUEUE: usize = 8;
/// File chunks queued towards the writer: two batches deep, so the writer finds
/// a whole batch waiting whenever it is the slower end. Chat messages are
/// queued separately and always taken first, so they never wait behind these.
const BULK_QUEUE: usize = 2 * BULK_BATCH;
/// Most file chunks encrypted together: the record layer runs this many CBC
/// chains side by side, which makes encrypting a chunk several times cheaper
/// than alone (`Sealer::encrypt_slots`). They are tagged and written one by
/// one, so a chat message never waits behind more than one chunk.
const BULK_BATCH: usize = 8;
/// Initial capacity of the reader's buffer (it grows if a frame needs more).
const READ_BUFFER: usize = 256 * 1024;
/// Most bytes of control and chat messages one write gathers (a little more:
/// the record that crosses it is kept whole).
const BATCH_BYTES: usize = 256 * 1024;
/// The kernel's send buffer towards a near peer (see [`bound_kernel_buffers`];
/// Linux doubles it for bookkeeping).
const SEND_BUFFER: usize = 128 * 1024;
/// The kernel's receive buffer from a near peer (doubled likewise).
const RECV_BUFFER: usize = 512 * 1024;

/// Why the link stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// A record failed its integrity check: tampering or corruption.
    #[error("integrity failure")]
    Integrity,
    /// The peer closed the connection without saying goodbye.
    #[error("the connection was closed")]
    Closed,
    /// A frame or message that does not follow the protocol.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// A transport error.
    #[error("{0}")]
    Io(String),
    /// The mediator's relay ended the session at one of its caps (its words).
    #[error("{0}")]
    RelayEnded(String),
}

/// A message queued towards the writer, with its encoded size.
type Queued = (PeerMsg, usize);

/// The sending side of a link's control queue, bounded in items and bytes;
/// cheap to clone (the group mesh holds one per member).
#[derive(Debug, Clone)]
pub struct LinkSender {
    tx: mpsc::Sender<Queued>,
    queued: Arc<AtomicUsize>,
}

impl LinkSender {
    /// Queues a message for the peer without waiting; an error when the peer
    /// has stopped reading (the queue is full in items or bytes) or the link
    /// has closed.
    pub fn send(&self, msg: PeerMsg) -> Result<(), LinkError> {
        let size = wire::encoded_len(&msg).map_err(|e| LinkError::Protocol(e.to_string()))?;
        let before = self.queued.fetch_add(size, Ordering::Relaxed);
        if before.saturating_add(size) > OUT_BYTES {
            self.queued.fetch_sub(size, Ordering::Relaxed);
            return Err(LinkError::Io(format!(
                "the peer stopped reading ({before} bytes wait to be sent)"
            )));
        }
        self.tx.try_send((msg, size)).map_err(|e| {
            self.queued.fetch_sub(size, Ordering::Relaxed);
            match e {
                mpsc::error::TrySendError::Full(_) => {
                    LinkError::Io("the peer stopped reading".into())
                }
                mpsc::error::TrySendError::Closed(_) => LinkError::Closed,
            }
        })
    }

    /// Bytes queued and not yet handed to the kernel.
    pub fn queued_bytes(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// A sender whose queue (`items` deep) the test reads itself.
    #[cfg(test)]
    pub(crate) fn channel(items: usize) -> (LinkSender, mpsc::Receiver<(PeerMsg, usize)>) {
        let (tx, rx) = mpsc::channel(items);
        let queued = Arc::new(AtomicUsize::new(0));
        (LinkSender { tx, queued }, rx)
    }
}

/// The running link.
#[derive(Debug)]
pub struct PeerLink {
    tx: LinkSender,
    bulk: mpsc::Sender<PeerMsg>,
    rx: mpsc::Receiver<Result<PeerMsg, LinkError>>,
    writer: JoinHandle<Result<(), LinkError>>,
    reader: JoinHandle<()>,
}

impl PeerLink {
    /// Starts the reader and writer tasks on a confirmed connection.
    pub fn start(conn: Connected) -> PeerLink {
        let (sealer, opener) = conn.session.split();
        let parts = conn.framed.into_parts();
        if conn.addr.ip().is_loopback() || matches!(conn.path, Path::Lan) {
            bound_kernel_buffers(&parts.io);
        }
        let (read_half, write_half) = parts.io.into_split();
        // A large buffer lets one read take in several records during a transfer.
        // The codec stays the handshake's: a relayed one also reads the relay's end notice.
        // Bytes the handshake reader already pulled in belong to the first
        // records. They go in through `from_parts`, which marks them readable:
        // a reader whose buffer was filled by hand would wait for the socket
        // first, and records that came with the handshake's last message would
        // sit unread until the peer sent something more.
        let mut read_buf = BytesMut::with_capacity(READ_BUFFER.max(parts.read_buf.len()));
        read_buf.extend_from_slice(&parts.read_buf);
        let mut read_parts = FramedParts::new::<&[u8]>(read_half, parts.codec);
        read_parts.read_buf = read_buf;
        let framed = Framed::from_parts(read_parts);
        let (out_tx, out_rx) = mpsc::channel(OUT_QUEUE);
        let (bulk_tx, bulk_rx) = mpsc::channel(BULK_QUEUE);
        let (in_tx, in_rx) = mpsc::channel(IN_QUEUE);
        let queued = Arc::new(AtomicUsize::new(0));
        let tx = LinkSender {
            tx: out_tx,
            queued: queued.clone(),
        };
        PeerLink {
            tx,
            bulk: bulk_tx,
            rx: in_rx,
            writer: tokio::spawn(write_loop(write_half, sealer, out_rx, bulk_rx, queued)),
            reader: tokio::spawn(read_loop(framed, opener, in_tx)),
        }
    }

    /// Queues a message for the peer without waiting ([`LinkSender::send`]).
    pub fn send(&self, msg: PeerMsg) -> Result<(), LinkError> {
        self.tx.send(msg)
    }

    /// A handle that queues messages for the peer from elsewhere.
    pub fn sender(&self) -> LinkSender {
        self.tx.clone()
    }

    /// A sender for bulk data (file chunks): it waits while the link is busy, and
    /// the writer serves it only when no chat or control message is waiting.
    pub fn bulk_sender(&self) -> mpsc::Sender<PeerMsg> {
        self.bulk.clone()
    }

    /// The next message from the peer; `None` once the reader has stopped.
    pub async fn recv(&mut self) -> Option<Result<PeerMsg, LinkError>> {
        self.rx.recv().await
    }

    /// Sends `Bye` (if given), waits briefly for queued messages to leave, and
    /// closes both directions.
    pub async fn close(self, bye: Option<String>) {
        if let Some(reason) = bye {
            let _ = self.tx.send(PeerMsg::Bye { reason });
        }
        drop(self.tx);
        drop(self.bulk);
        let mut writer = self.writer;
        if tokio::time::timeout(FLUSH_TIMEOUT, &mut writer)
            .await
            .is_err()
        {
            writer.abort();
        }
        self.reader.abort();
    }
}

/// Records wait in the kernel's buffers in order, so a chat record sealed during
/// a transfer waits behind everything buffered at both ends. Left to
/// autotuning those grow to megabytes each (measured on loopback: up to 2 MB
/// unsent at the sender and 4 MB unread at the receiver, whichever end the
/// scheduler starves), tens of milliseconds at loopback speed. Towards a peer on
/// the same host or LAN the round trip is far below a millisecond, so a few
/// hundred KiB carry any rate the cipher reaches; towards anyone else the
/// buffers must hold a bandwidth-delay product, so they stay autotuned there
/// (bounding only the unsent part, with `TCP_NOTSENT_LOWAT`, needs socket2 0.6).
fn bound_kernel_buffers(stream: &tokio::net::TcpStream) {
    let socket = socket2::SockRef::from(stream);
    for (what, result) in [
        ("send", socket.set_send_buffer_size(SEND_BUFFER)),
        ("receive", socket.set_recv_buffer_size(RECV_BUFFER)),
    ] {
        if let Err(e) = result {
            // Only chat latency during transfers suffers; the link works as is.
            tracing::debug!(error = %e, "could not bound the socket's {what} buffer");
        }
    }
}

/// Which queue a message came from (and, for the control queue, the bytes it
/// was charged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Queue {
    Control(usize),
    Bulk,
}

/// The next message to send: control and chat first, then bulk; waits for
/// either. `None` when the control queue has closed (the link is closing).
async fn next_message(
    rx: &mut mpsc::Receiver<Queued>,
    bulk: &mut mpsc::Receiver<PeerMsg>,
) -> Option<(PeerMsg, Queue)> {
    tokio::select! {
        biased;
        msg = rx.recv() => msg.map(|(m, size)| (m, Queue::Control(size))),
        Some(msg) = bulk.recv() => Some((msg, Queue::Bulk)),
    }
}

/// Encodes `msg` at the end of `out` behind a frame header and room for the
/// IV (the message is encoded right where it is encrypted: one copy of a
/// chunk's bytes, not two), makes room for padding and tag, and writes the
/// header, whose length is known by then.
fn lay_out(msg: &PeerMsg, out: &mut Vec<u8>) -> Result<Slot, LinkError> {
    let protocol = |e: &dyn std::fmt::Display| LinkError::Protocol(e.to_string());
    let start = out.len();
    out.resize(start + HEADER_LEN + IV_LEN, 0);
    wire::encode_into(msg, out).map_err(|e| protocol(&e))?;
    let slot = wire::record::slot(out, start + HEADER_LEN).map_err(|e| protocol(&e))?;
    let header = Link::Peer
        .header(slot.end() - slot.start())
        .map_err(|e| protocol(&e))?;
    out[start..start + HEADER_LEN].copy_from_slice(&header);
    Ok(slot)
}

/// Hands `bytes` to the kernel, within [`WRITE_TIMEOUT`].
async fn write_out(half: &mut OwnedWriteHalf, bytes: &[u8]) -> Result<(), LinkError> {
    match tokio::time::timeout(WRITE_TIMEOUT, half.write_all(bytes)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(LinkError::Io(e.to_string())),
        Err(_) => Err(LinkError::Io("the peer stopped reading".into())),
    }
}

/// Seals and sends, in order: control and chat messages as soon as they are
/// queued, several to a write; file chunks a batch of up to [`BULK_BATCH`] at
/// a time, encrypted together (their CBC chains side by side) and then tagged
/// and written one by one, so a chat message that arrives meanwhile is sealed
/// and sent before the rest of the batch: it waits behind one chunk, never a
/// batch. (The tag carries the sequence number, the ciphertext does not.)
async fn write_loop(
    mut half: OwnedWriteHalf,
    mut sealer: Sealer,
    mut rx: mpsc::Receiver<Queued>,
    mut bulk: mpsc::Receiver<PeerMsg>,
    queued: Arc<AtomicUsize>,
) -> Result<(), LinkError> {
    let protocol = |e: RecordError| LinkError::Protocol(e.to_string());
    let mut out = Vec::with_capacity(BATCH_BYTES + wire::frame::PEER_FRAME_MAX);
    let mut slots: Vec<Slot> = Vec::with_capacity(BATCH_BYTES / 1024);
    let mut chunks = Vec::with_capacity(BULK_BATCH * wire::frame::PEER_FRAME_MAX);
    let mut encrypted: VecDeque<Encrypted> = VecDeque::with_capacity(BULK_BATCH);
    loop {
        // With encrypted chunks waiting, only control messages already queued
        // go first; with none, wait for either kind (control first).
        let next = if encrypted.is_empty() {
            next_message(&mut rx, &mut bulk).await
        } else {
            match rx.try_recv() {
                Ok((msg, size)) => Some((msg, Queue::Control(size))),
                Err(mpsc::error::TryRecvError::Empty) => None,
                // Closing: the chunks not sent go again after a reconnect.
                Err(mpsc::error::TryRecvError::Disconnected) => break,
            }
        };
        match next {
            Some((msg, Queue::Control(size))) => {
                out.clear();
                slots.clear();
                slots.push(lay_out(&msg, &mut out)?);
                let mut charged = size;
                // Every control message already queued, up to BATCH_BYTES.
                while out.len() < BATCH_BYTES {
                    let Ok((msg, size)) = rx.try_recv() else {
                        break;
                    };
                    slots.push(lay_out(&msg, &mut out)?);
                    charged += size;
                }
                sealer
                    .seal_slots(&mut out, &slots, &mut OsRng)
                    .map_err(protocol)?;
                let written = write_out(&mut half, &out).await;
                // Handed to the kernel (or failed): no longer ours to hold.
                queued.fetch_sub(charged, Ordering::Relaxed);
                written?;
                continue;
            }
            Some((msg, Queue::Bulk)) => {
                // A new batch: this chunk and those already queued behind it.
                chunks.clear();
                slots.clear();
                slots.push(lay_out(&msg, &mut chunks)?);
                while slots.len() < BULK_BATCH {
                    let Ok(msg) = bulk.try_recv() else {
                        break;
                    };
                    slots.push(lay_out(&msg, &mut chunks)?);
                }
                sealer.encrypt_slots(&mut chunks, &slots, &mut OsRng, &mut encrypted);
            }
            None if encrypted.is_empty() => break,
            None => {}
        }
        if let Some(record) = encrypted.pop_front() {
            let frame = record.start() - HEADER_LEN..record.end();
            sealer.tag(&mut chunks, record).map_err(protocol)?;
            write_out(&mut half, &chunks[frame]).await?;
        }
    }
    let _ = half.shutdown().await;
    Ok(())
}

async fn read_loop(
    mut framed: Framed<OwnedReadHalf, FrameCodec>,
    mut opener: Opener,
    tx: mpsc::Sender<Result<PeerMsg, LinkError>>,
) {
    loop {
        let result = match framed.next().await {
            None => Err(LinkError::Closed),
            Some(Err(wire::FrameError::Io(e))) => Err(LinkError::Io(e.to_string())),
            Some(Err(wire::FrameError::RelayEnded { message, .. })) => Err(LinkError::RelayEnded(
                wire::sanitize_for_terminal(&message).into_owned(),
            )),
            Some(Err(e)) => Err(LinkError::Protocol(e.to_string())),
            Some(Ok(mut frame)) => open(&mut opener, &mut frame),
        };
        let stop = result.is_err();
        if tx.send(result).await.is_err() || stop {
            return;
        }
    }
}

fn open(opener: &mut Opener, frame: &mut BytesMut) -> Result<PeerMsg, LinkError> {
    let plaintext = opener.open(frame).map_err(|e| match e {
        RecordError::Integrity => LinkError::Integrity,
        other => LinkError::Protocol(other.to_string()),
    })?;
    let msg: PeerMsg = wire::decode(plaintext).map_err(|e| LinkError::Protocol(e.to_string()))?;
    // The receiver enforces the field limits too: a peer that breaks them is
    // not an honest client, whatever the rest of the message says.
    msg.check_limits()
        .map_err(|e| LinkError::Protocol(e.to_string()))?;
    Ok(msg)
}
