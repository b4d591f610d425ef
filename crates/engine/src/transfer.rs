//! File transfers inside a conversation (docs/protocol.md §7 `File*`): `/send`,
//! `/accept`, `/reject`, `/cancel`, the pump task that feeds a file's chunks to
//! the link's bulk queue, and resuming after a reconnect.
//!
//! People see short local numbers (`/accept 2`); on the wire a transfer is named
//! by a random 64-bit id, so a `FileCancel` can never be mistaken for a transfer
//! in the other direction. After a reconnect every unfinished outgoing transfer
//! is offered again under the same id: the receiver resumes from what its
//! `.part` holds, or declines an id it already verified.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use rand::rngs::OsRng;
use rand::RngCore;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use wire::PeerMsg;

use crate::events::{human_bytes, Event, Events};
use crate::files::{
    ChunkSource, FileError, IncomingFile, Outgoing, OutgoingFile, PartScope, Progress,
};
use crate::peerlink::{LinkError, PeerLink};

/// Most offers waiting for `/accept` at once; more are declined, so a flood of
/// offers costs a bounded amount of memory.
pub const MAX_WAITING_OFFERS: usize = 32;
/// Most downloads running at once (each has a writer thread); more are declined.
pub const MAX_RECEIVING: usize = 8;

/// What a pump task reports back to the conversation. (How far it got is not
/// an update: the pump bumps a counter that [`Transfers::poll_progress`] reads,
/// so a fast transfer does not wake the chat loop for every chunk.)
#[derive(Debug)]
pub enum Update {
    /// Every chunk and the `FileDone` are queued.
    Finished { wire: u64, blake3: [u8; 32] },
    /// Reading the file failed.
    Failed { wire: u64, error: String },
    /// The link went away mid-transfer; it resumes after a reconnect.
    Interrupted { wire: u64 },
}

enum SendState {
    /// Offered; waiting for the peer's answer.
    Offered,
    /// The pump is running.
    Sending(JoinHandle<()>),
    /// `FileDone` queued; kept until the peer could have verified it, so a
    /// reconnect in between offers it again.
    Sent,
}

struct Sending {
    local: u64,
    file: OutgoingFile,
    state: SendState,
    progress: Progress,
    /// Bytes of the file queued for the peer, written by the pump.
    queued: Arc<AtomicU64>,
}

struct Receiving {
    local: u64,
    /// Who sends it: a reconnected session from someone else cannot resume it.
    scope: PartScope,
    name: String,
    file: IncomingFile,
    progress: Progress,
}

struct Offer {
    local: u64,
    scope: PartScope,
    name: String,
    size: u64,
}

/// Every transfer of one conversation, both directions.
pub struct Transfers {
    downloads: PathBuf,
    auto_accept: bool,
    next_local: u64,
    outgoing: BTreeMap<u64, Sending>,
    incoming: BTreeMap<u64, Receiving>,
    offers: BTreeMap<u64, Offer>,
    verified: HashSet<u64>,
    /// The current session's peer, naming its downloads' `.part` files.
    scope: PartScope,
    updates: mpsc::UnboundedSender<Update>,
}

impl std::fmt::Debug for Transfers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transfers")
            .field("outgoing", &self.outgoing.len())
            .field("incoming", &self.incoming.len())
            .field("offers", &self.offers.len())
            .finish_non_exhaustive()
    }
}

fn stopped(out: &Events, local: u64, direction: &str, name: &str, reason: impl Into<String>) {
    out.show(&Event::FileStopped {
        id: local,
        direction: direction.into(),
        name: name.into(),
        reason: reason.into(),
    });
}

/// Sends a message, ignoring a closed link: the conversation notices that on its
/// own and the transfer resumes after the reconnect.
fn tell(link: Option<&PeerLink>, msg: PeerMsg) {
    if let Some(link) = link {
        let _ = link.send(msg);
    }
}

impl Transfers {
    /// Transfers saving into `downloads`; `auto_accept` takes every offer.
    /// Returns the receiver of pump updates, which the chat loop polls.
    pub fn new(
        downloads: PathBuf,
        auto_accept: bool,
    ) -> (Transfers, mpsc::UnboundedReceiver<Update>) {
        let (updates, rx) = mpsc::unbounded_channel();
        (
            Transfers {
                downloads,
                auto_accept,
                next_local: 1,
                outgoing: BTreeMap::new(),
                incoming: BTreeMap::new(),
                offers: BTreeMap::new(),
                verified: HashSet::new(),
                scope: PartScope::new(""),
                updates,
            },
            rx,
        )
    }

    fn local_id(&mut self) -> u64 {
        let id = self.next_local;
        self.next_local += 1;
        id
    }

    /// `/send PATH`: offers a file now, or on connect when offline.
    pub fn send(&mut self, path: &str, link: Option<&PeerLink>, out: &Events) {
        let path = path.trim();
        if path.is_empty() {
            out.show(&Event::Error {
                code: "usage".into(),
                text: "usage: /send PATH".into(),
            });
            return;
        }
        let file = match OutgoingFile::open(path) {
            Ok(file) => file,
            Err(e) => {
                out.show(&Event::Error {
                    code: "file".into(),
                    text: e.to_string(),
                });
                return;
            }
        };
        let wire = OsRng.next_u64();
        let local = self.local_id();
        tell(
            link,
            PeerMsg::FileOffer {
                id: wire,
                name: file.name().to_string(),
                size: file.size(),
            },
        );
        out.show(&Event::Info {
            text: format!(
                "Offering {} ({}) as transfer {local}{}.",
                wire::sanitize_for_terminal(file.name()),
                human_bytes(file.size()),
                if link.is_some() {
                    "; waiting for the peer to accept"
                } else {
                    "; it goes out once connected"
                }
            ),
        });
        let progress = Progress::new(file.size(), 0, Instant::now());
        self.outgoing.insert(
            wire,
            Sending {
                local,
                file,
                state: SendState::Offered,
                progress,
                queued: Arc::new(AtomicU64::new(0)),
            },
        );
    }

    /// Removes the waiting offer people know as `local`, or says there is none.
    fn take_offer(&mut self, local: u64, out: &Events) -> Option<(u64, Offer)> {
        let wire = self
            .offers
            .iter()
            .find(|(_, o)| o.local == local)
            .map(|(w, _)| *w);
        let taken = wire.and_then(|w| self.offers.remove(&w).map(|o| (w, o)));
        if taken.is_none() {
            out.show(&Event::Error {
                code: "usage".into(),
                text: format!("no file offer {local} is waiting"),
            });
        }
        taken
    }

    /// `/accept N`.
    pub fn accept(&mut self, local: u64, link: Option<&PeerLink>, out: &Events) {
        if self.incoming.len() >= MAX_RECEIVING {
            out.show(&Event::Error {
                code: "busy".into(),
                text: format!(
                    "{MAX_RECEIVING} downloads are already running; /accept {local} again once one ends"
                ),
            });
            return;
        }
        if let Some((wire, offer)) = self.take_offer(local, out) {
            self.begin_receiving(wire, offer, link, out);
        }
    }

    /// `/reject N`.
    pub fn reject(&mut self, local: u64, link: Option<&PeerLink>, out: &Events) {
        if let Some((wire, offer)) = self.take_offer(local, out) {
            tell(link, PeerMsg::FileReject { id: wire });
            stopped(out, offer.local, "receive", &offer.name, "you declined it");
        }
    }

    /// `/cancel N`: either direction. A cancelled download leaves no `.part`.
    pub fn cancel(&mut self, local: u64, link: Option<&PeerLink>, out: &Events) {
        if let Some(wire) = self
            .outgoing
            .iter()
            .find(|(_, s)| s.local == local)
            .map(|(w, _)| *w)
        {
            if let Some(sending) = self.outgoing.remove(&wire) {
                if let SendState::Sending(task) = &sending.state {
                    task.abort();
                }
                tell(link, PeerMsg::FileCancel { id: wire });
                stopped(out, local, "send", sending.file.name(), "you cancelled it");
            }
        } else if let Some(wire) = self
            .incoming
            .iter()
            .find(|(_, r)| r.local == local)
            .map(|(w, _)| *w)
        {
            if let Some(receiving) = self.incoming.remove(&wire) {
                tell(link, PeerMsg::FileCancel { id: wire });
                let name = receiving.name.clone();
                receiving.file.cancel(false);
                stopped(out, local, "receive", &name, "you cancelled it");
            }
        } else if self.offers.values().any(|o| o.local == local) {
            self.reject(local, link, out);
        } else {
            out.show(&Event::Error {
                code: "usage".into(),
                text: format!("no transfer {local}"),
            });
        }
    }

    fn begin_receiving(&mut self, wire: u64, offer: Offer, link: Option<&PeerLink>, out: &Events) {
        if self.incoming.len() >= MAX_RECEIVING {
            tell(link, PeerMsg::FileReject { id: wire });
            stopped(
                out,
                offer.local,
                "receive",
                &offer.name,
                format!("declined: {MAX_RECEIVING} downloads are already running"),
            );
            return;
        }
        // Creating the part file is a few system calls: done in place (the
        // conversation runs on the messenger's thread, where tokio cannot hand
        // its other tasks away for a blocking section).
        let begun =
            IncomingFile::begin(&self.downloads, &offer.name, offer.size, offer.scope, wire);
        match begun {
            Ok((file, offset)) => {
                tell(link, PeerMsg::FileAccept { id: wire, offset });
                if offset > 0 {
                    out.show(&Event::Info {
                        text: format!(
                            "Resuming {} at {} of {}.",
                            wire::sanitize_for_terminal(file.name()),
                            human_bytes(offset),
                            human_bytes(offer.size)
                        ),
                    });
                }
                let name = file.name().to_string();
                self.incoming.insert(
                    wire,
                    Receiving {
                        local: offer.local,
                        scope: offer.scope,
                        name,
                        file,
                        progress: Progress::new(offer.size, offset, Instant::now()),
                    },
                );
            }
            Err(e) => {
                tell(link, PeerMsg::FileReject { id: wire });
                stopped(out, offer.local, "receive", &offer.name, e.to_string());
            }
        }
    }

    /// A fresh session with `peer`: offer again everything not known to be
    /// received.
    pub fn on_connected(&mut self, link: &PeerLink, peer: &str) {
        self.scope = PartScope::new(peer);
        for (&wire, sending) in &mut self.outgoing {
            if let SendState::Sending(task) = &sending.state {
                task.abort();
            }
            sending.state = SendState::Offered;
            tell(
                Some(link),
                PeerMsg::FileOffer {
                    id: wire,
                    name: sending.file.name().to_string(),
                    size: sending.file.size(),
                },
            );
        }
    }

    /// Handles one `File*` message from the peer.
    pub async fn on_peer(
        &mut self,
        msg: PeerMsg,
        link: &PeerLink,
        peer: &str,
        out: &Events,
    ) -> Result<(), LinkError> {
        match msg {
            PeerMsg::FileOffer { id, name, size } => self.on_offer(id, name, size, link, peer, out),
            PeerMsg::FileAccept { id, offset } => self.on_accept(id, offset, link, out),
            PeerMsg::FileReject { id } => {
                if let Some(sending) = self.outgoing.remove(&id) {
                    if !matches!(sending.state, SendState::Sent) {
                        stopped(
                            out,
                            sending.local,
                            "send",
                            sending.file.name(),
                            "the peer declined it",
                        );
                    }
                }
            }
            PeerMsg::FileChunk { id, offset, data } => {
                let Some(receiving) = self.incoming.get_mut(&id) else {
                    // Chunks of a transfer we cancelled may still be in flight.
                    return Ok(());
                };
                let len = data.len() as u64;
                if let Err(e) = receiving.file.write(offset, data).await {
                    self.fail_incoming(id, e, link, out);
                    return Ok(());
                }
                receiving.progress.advance(len);
                if let Some(report) = receiving.progress.poll(Instant::now()) {
                    out.show(&report.event(receiving.local, "receive", &receiving.name));
                }
            }
            PeerMsg::FileDone { id, blake3 } => {
                let Some(receiving) = self.incoming.remove(&id) else {
                    return Ok(());
                };
                let Receiving {
                    local,
                    name,
                    file,
                    progress,
                    ..
                } = receiving;
                out.show(
                    &progress
                        .report(Instant::now())
                        .event(local, "receive", &name),
                );
                match file.finish(blake3).await {
                    Ok(path) => {
                        self.verified.insert(id);
                        out.show(&Event::FileDone {
                            id: local,
                            direction: "receive".into(),
                            name,
                            path: Some(path.display().to_string()),
                            blake3: hex::encode(blake3),
                        });
                    }
                    Err(e) => {
                        link.send(PeerMsg::FileCancel { id })?;
                        stopped(out, local, "receive", &name, e.to_string());
                    }
                }
            }
            PeerMsg::FileCancel { id } => {
                if let Some(sending) = self.outgoing.remove(&id) {
                    if let SendState::Sending(task) = &sending.state {
                        task.abort();
                    }
                    stopped(
                        out,
                        sending.local,
                        "send",
                        sending.file.name(),
                        "the peer cancelled it",
                    );
                } else if let Some(receiving) = self.incoming.remove(&id) {
                    let name = receiving.name.clone();
                    receiving.file.cancel(false);
                    stopped(
                        out,
                        receiving.local,
                        "receive",
                        &name,
                        "the sender cancelled it",
                    );
                } else if let Some(offer) = self.offers.remove(&id) {
                    stopped(
                        out,
                        offer.local,
                        "receive",
                        &offer.name,
                        "the sender withdrew the offer",
                    );
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn on_offer(
        &mut self,
        wire: u64,
        name: String,
        size: u64,
        link: &PeerLink,
        peer: &str,
        out: &Events,
    ) {
        if self.verified.contains(&wire) {
            // Offered again after a reconnect, but we already have it.
            tell(Some(link), PeerMsg::FileReject { id: wire });
            return;
        }
        if let Some(receiving) = self.incoming.get(&wire) {
            if receiving.scope != self.scope {
                // Someone else offering a running download's id: not theirs.
                tell(Some(link), PeerMsg::FileReject { id: wire });
                return;
            }
            // The same transfer after a reconnect: go on from what we have.
            let offset = receiving.file.received();
            tell(Some(link), PeerMsg::FileAccept { id: wire, offset });
            out.show(&Event::Info {
                text: format!(
                    "Resuming {} at {} of {}.",
                    wire::sanitize_for_terminal(&receiving.name),
                    human_bytes(offset),
                    human_bytes(receiving.file.size())
                ),
            });
            return;
        }
        if self.offers.contains_key(&wire) {
            return;
        }
        let busy = if self.auto_accept {
            self.incoming.len() >= MAX_RECEIVING
        } else {
            self.offers.len() >= MAX_WAITING_OFFERS
        };
        if busy {
            tell(Some(link), PeerMsg::FileReject { id: wire });
            out.show(&Event::Error {
                code: "busy".into(),
                text: format!(
                    "{} offered another file while {} are waiting or running; it was declined (ask them to send it later)",
                    wire::sanitize_for_terminal(peer),
                    if self.auto_accept { MAX_RECEIVING } else { MAX_WAITING_OFFERS }
                ),
            });
            return;
        }
        let local = self.local_id();
        let offer = Offer {
            local,
            scope: self.scope,
            name,
            size,
        };
        if self.auto_accept {
            out.show(&Event::FileOffer {
                id: local,
                from: peer.to_string(),
                name: offer.name.clone(),
                size,
            });
            self.begin_receiving(wire, offer, Some(link), out);
        } else {
            out.show(&Event::FileOffer {
                id: local,
                from: peer.to_string(),
                name: offer.name.clone(),
                size,
            });
            self.offers.insert(wire, offer);
        }
    }

    fn on_accept(&mut self, wire: u64, offset: u64, link: &PeerLink, out: &Events) {
        let Some(sending) = self.outgoing.get_mut(&wire) else {
            return;
        };
        if let SendState::Sending(task) = &sending.state {
            task.abort();
        }
        match sending.file.start(offset) {
            Ok(source) => {
                sending.progress = Progress::new(sending.file.size(), offset, Instant::now());
                sending.queued.store(offset, Ordering::Relaxed);
                let task = tokio::spawn(pump(
                    wire,
                    source,
                    link.bulk_sender(),
                    self.updates.clone(),
                    Arc::clone(&sending.queued),
                ));
                sending.state = SendState::Sending(task);
            }
            Err(e) => {
                let local = sending.local;
                let name = sending.file.name().to_string();
                self.outgoing.remove(&wire);
                tell(Some(link), PeerMsg::FileCancel { id: wire });
                stopped(out, local, "send", &name, e.to_string());
            }
        }
    }

    fn fail_incoming(&mut self, wire: u64, error: FileError, link: &PeerLink, out: &Events) {
        if let Some(receiving) = self.incoming.remove(&wire) {
            tell(Some(link), PeerMsg::FileCancel { id: wire });
            // A broken peer's data is not worth keeping; a full disk's is.
            let keep = matches!(
                error,
                FileError::DiskFull(_) | FileError::PermissionDenied(_)
            );
            let name = receiving.name.clone();
            receiving.file.cancel(keep);
            stopped(out, receiving.local, "receive", &name, error.to_string());
        }
    }

    /// Whether any outgoing transfer is running (the chat loop then polls progress).
    pub fn sending(&self) -> bool {
        self.outgoing
            .values()
            .any(|s| matches!(s.state, SendState::Sending(_)))
    }

    /// Reports how far each running outgoing transfer is, when a report is due.
    pub fn poll_progress(&mut self, out: &Events) {
        let now = Instant::now();
        for sending in self.outgoing.values_mut() {
            if !matches!(sending.state, SendState::Sending(_)) {
                continue;
            }
            let queued = sending.queued.load(Ordering::Relaxed);
            let reported = sending.progress.bytes();
            sending.progress.advance(queued.saturating_sub(reported));
            if let Some(report) = sending.progress.poll(now) {
                out.show(&report.event(sending.local, "send", sending.file.name()));
            }
        }
    }

    /// Handles a pump's report.
    pub fn on_update(&mut self, update: Update, link: Option<&PeerLink>, out: &Events) {
        match update {
            Update::Finished { wire, blake3 } => {
                if let Some(sending) = self.outgoing.get_mut(&wire) {
                    sending.state = SendState::Sent;
                    let queued = sending.queued.load(Ordering::Relaxed);
                    let reported = sending.progress.bytes();
                    sending.progress.advance(queued.saturating_sub(reported));
                    out.show(&sending.progress.report(Instant::now()).event(
                        sending.local,
                        "send",
                        sending.file.name(),
                    ));
                    out.show(&Event::FileDone {
                        id: sending.local,
                        direction: "send".into(),
                        name: sending.file.name().to_string(),
                        path: None,
                        blake3: hex::encode(blake3),
                    });
                }
            }
            Update::Failed { wire, error } => {
                if let Some(sending) = self.outgoing.remove(&wire) {
                    tell(link, PeerMsg::FileCancel { id: wire });
                    stopped(out, sending.local, "send", sending.file.name(), error);
                }
            }
            Update::Interrupted { wire } => {
                if let Some(sending) = self.outgoing.get_mut(&wire) {
                    sending.state = SendState::Offered;
                }
            }
        }
    }
}

/// Moves one file's chunks from its reader thread to the link's bulk queue,
/// recording in `queued` how far it got.
async fn pump(
    wire: u64,
    mut source: ChunkSource,
    bulk: mpsc::Sender<PeerMsg>,
    updates: mpsc::UnboundedSender<Update>,
    queued: Arc<AtomicU64>,
) {
    loop {
        match source.next().await {
            Ok(Outgoing::Chunk { offset, data }) => {
                let end = offset + data.len() as u64;
                let chunk = PeerMsg::FileChunk {
                    id: wire,
                    offset,
                    data,
                };
                if bulk.send(chunk).await.is_err() {
                    let _ = updates.send(Update::Interrupted { wire });
                    return;
                }
                queued.store(end, Ordering::Relaxed);
            }
            Ok(Outgoing::Finished { blake3 }) => {
                if bulk
                    .send(PeerMsg::FileDone { id: wire, blake3 })
                    .await
                    .is_err()
                {
                    let _ = updates.send(Update::Interrupted { wire });
                } else {
                    let _ = updates.send(Update::Finished { wire, blake3 });
                }
                return;
            }
            Err(e) => {
                let _ = updates.send(Update::Failed {
                    wire,
                    error: e.to_string(),
                });
                return;
            }
        }
    }
}
