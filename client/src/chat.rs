//! The chat session: typed lines become `Chat` messages, incoming messages are
//! shown and acknowledged, pings measure the round trip and notice a dead peer,
//! and `/commands` answer locally.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use wire::peer::MAX_CHAT_TEXT;
use wire::PeerMsg;

use crate::exit::ClientError;
use crate::input::InputEvent;
use crate::peerlink::{LinkError, PeerLink};
use crate::ui::{Event, Output, HELP};

/// How often we ping the peer.
const PING_EVERY: Duration = Duration::from_secs(15);
/// Silence after which the peer counts as gone.
const PEER_SILENT: Duration = Duration::from_secs(45);
/// Most of our messages awaiting an ack; beyond that, typing waits.
const MAX_UNACKED: usize = 10_000;

/// Who we are talking to, for `/peers` and `/verify`.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub name: String,
    pub addr: SocketAddr,
    pub path: String,
    pub sas: String,
}

/// How a session ended without an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// We left (/quit, end of input, Ctrl-C).
    Quit,
    /// The peer said goodbye.
    PeerLeft(String),
}

/// Runs the session until someone leaves or the link fails.
pub async fn run(
    mut link: PeerLink,
    peer: &PeerInfo,
    out: &Output,
    input: &mut mpsc::Receiver<InputEvent>,
) -> Result<Ending, ClientError> {
    let mut state = Chat {
        next_id: 1,
        unacked: BTreeMap::new(),
        ping: None,
        ping_nonce: 0,
        rtt: None,
        last_heard: Instant::now(),
        input_open: true,
    };
    let mut ticker = tokio::time::interval(PING_EVERY);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);

    let result = loop {
        tokio::select! {
            event = input.recv(), if state.input_open && state.unacked.len() < MAX_UNACKED => {
                match event {
                    Some(InputEvent::Line(line)) => {
                        match state.on_line(&line, &link, peer, out).await {
                            Ok(Some(ending)) => break Ok(ending),
                            Ok(None) => {}
                            Err(e) => break Err(e),
                        }
                    }
                    Some(InputEvent::TooLong { limit }) => out.show(&Event::Error {
                        code: "too_long".into(),
                        text: format!("that line is over {limit} bytes and was not sent"),
                    }),
                    Some(InputEvent::Eof) | None => break Ok(Ending::Quit),
                }
            }
            incoming = link.recv() => match incoming {
                Some(Ok(msg)) => {
                    state.last_heard = Instant::now();
                    match state.on_peer(msg, &link, peer, out).await {
                        Ok(Some(ending)) => break Ok(ending),
                        Ok(None) => {}
                        Err(e) => break Err(e),
                    }
                }
                Some(Err(e)) => break Err(link_failure(e, peer)),
                None => break Err(link_failure(LinkError::Closed, peer)),
            },
            _ = ticker.tick() => {
                if state.last_heard.elapsed() > PEER_SILENT {
                    break Err(ClientError::ConnectionLost(format!(
                        "{} has been silent for {} s and counts as unreachable",
                        wire::sanitize_for_terminal(&peer.name),
                        PEER_SILENT.as_secs()
                    )));
                }
                state.ping_nonce += 1;
                state.ping = Some((state.ping_nonce, Instant::now()));
                if let Err(e) = link.send(PeerMsg::Ping { nonce: state.ping_nonce }).await {
                    break Err(link_failure(e, peer));
                }
            }
            _ = &mut ctrl_c => break Ok(Ending::Quit),
        }
    };
    match &result {
        Ok(Ending::Quit) => {
            link.close(Some("quit".into())).await;
            out.show(&Event::Disconnected {
                reason: "you left".into(),
            });
        }
        Ok(Ending::PeerLeft(_)) | Err(_) => link.close(None).await,
    }
    result
}

struct Chat {
    next_id: u64,
    unacked: BTreeMap<u64, Instant>,
    ping: Option<(u64, Instant)>,
    ping_nonce: u64,
    rtt: Option<Duration>,
    last_heard: Instant,
    input_open: bool,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn link_failure(e: LinkError, peer: &PeerInfo) -> ClientError {
    let name = wire::sanitize_for_terminal(&peer.name);
    match e {
        LinkError::Integrity => ClientError::Integrity,
        LinkError::Closed => ClientError::ConnectionLost(format!(
            "the connection to {name} closed without a goodbye"
        )),
        LinkError::Protocol(why) => ClientError::ConnectionLost(format!(
            "{name} broke the protocol ({why}); session closed"
        )),
        LinkError::Io(why) => {
            ClientError::ConnectionLost(format!("lost the connection to {name}: {why}"))
        }
    }
}

impl Chat {
    async fn on_line(
        &mut self,
        line: &str,
        link: &PeerLink,
        peer: &PeerInfo,
        out: &Output,
    ) -> Result<Option<Ending>, ClientError> {
        let text = if let Some(escaped) = line.strip_prefix("//") {
            format!("/{escaped}")
        } else if let Some(command) = line.strip_prefix('/') {
            return Ok(self.on_command(command.trim(), peer, out));
        } else {
            line.to_string()
        };
        if text.is_empty() {
            return Ok(None);
        }
        if text.len() > MAX_CHAT_TEXT {
            out.show(&Event::Error {
                code: "too_long".into(),
                text: format!("messages are limited to {MAX_CHAT_TEXT} bytes; not sent"),
            });
            return Ok(None);
        }
        let id = self.next_id;
        self.next_id += 1;
        link.send(PeerMsg::Chat {
            id,
            sent_at_ms: now_ms(),
            text: text.clone(),
        })
        .await
        .map_err(|e| link_failure(e, peer))?;
        self.unacked.insert(id, Instant::now());
        out.show(&Event::Sent {
            id,
            text,
            pending: false,
        });
        Ok(None)
    }

    fn on_command(&mut self, command: &str, peer: &PeerInfo, out: &Output) -> Option<Ending> {
        let name = command.split_whitespace().next().unwrap_or("");
        match name {
            "quit" | "exit" => return Some(Ending::Quit),
            "help" => out.show(&Event::Info { text: HELP.into() }),
            "peers" => out.show(&Event::Peer {
                name: peer.name.clone(),
                addr: peer.addr.to_string(),
                path: peer.path.clone(),
                sas: peer.sas.clone(),
                rtt_ms: self.rtt.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            }),
            "verify" => out.show(&Event::Verify {
                sas: peer.sas.clone(),
                peer: peer.name.clone(),
                verified: false,
            }),
            other => out.show(&Event::Error {
                code: "unknown_command".into(),
                text: format!(
                    "unknown command /{}; /help lists the commands (start a message with // to send a /)",
                    wire::sanitize_for_terminal(other)
                ),
            }),
        }
        None
    }

    async fn on_peer(
        &mut self,
        msg: PeerMsg,
        link: &PeerLink,
        peer: &PeerInfo,
        out: &Output,
    ) -> Result<Option<Ending>, ClientError> {
        match msg {
            PeerMsg::Chat {
                id,
                sent_at_ms,
                text,
            } => {
                link.send(PeerMsg::Ack { id })
                    .await
                    .map_err(|e| link_failure(e, peer))?;
                out.show(&Event::Message {
                    from: peer.name.clone(),
                    text,
                    id,
                    sent_at_ms,
                });
            }
            PeerMsg::Ack { id } => {
                if self.unacked.remove(&id).is_some() {
                    out.show(&Event::Ack { id });
                }
            }
            PeerMsg::Ping { nonce } => {
                link.send(PeerMsg::Pong { nonce })
                    .await
                    .map_err(|e| link_failure(e, peer))?;
            }
            PeerMsg::Pong { nonce } => {
                if let Some((sent, at)) = self.ping {
                    if sent == nonce {
                        self.rtt = Some(at.elapsed());
                        self.ping = None;
                    }
                }
            }
            PeerMsg::Bye { reason } => {
                let reason = format!(
                    "{} left ({})",
                    peer.name,
                    if reason.is_empty() {
                        "no reason given"
                    } else {
                        &reason
                    }
                );
                out.show(&Event::Disconnected {
                    reason: reason.clone(),
                });
                return Ok(Some(Ending::PeerLeft(reason)));
            }
            PeerMsg::FileOffer { id, .. } => {
                link.send(PeerMsg::FileReject { id })
                    .await
                    .map_err(|e| link_failure(e, peer))?;
                out.show(&Event::Info {
                    text: format!(
                        "{} offered a file; this client cannot receive files yet, so it was declined",
                        wire::sanitize_for_terminal(&peer.name)
                    ),
                });
            }
            PeerMsg::FileAccept { .. }
            | PeerMsg::FileReject { .. }
            | PeerMsg::FileChunk { .. }
            | PeerMsg::FileDone { .. }
            | PeerMsg::FileCancel { .. } => {}
        }
        Ok(None)
    }
}
