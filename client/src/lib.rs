//! The p2pchat client: meets a peer through a mediator, connects directly,
//! confirms keys and chats end-to-end encrypted.
//!
//! Flow ([`app::run`]): flags ([`cli`]) → listener bound on the run's one port
//! ([`ports`]) → mediator link and `Hello` from that port ([`rendezvous`]) →
//! match → both sides race every path ([`connect`]: the joiner's dials, punch
//! dials at the mediator's `PunchNow`, the listeners, the relay after a delay),
//! with the roles the mediator gave for the `wire` handshake → the
//! session is recorded ([`records`]: `peers.txt`, keylog) → [`chat`] over a
//! [`peerlink::PeerLink`], shown through [`ui`]. Failures carry an exit code
//! ([`exit`]). Without a mediator, [`lan`] finds the peer on the local network
//! and yields the same match.

pub mod app;
pub mod chat;
pub mod cli;
pub mod connect;
pub mod conversation;
pub mod events;
pub mod exit;
pub mod files;
pub mod group;
pub mod history;
pub mod identity;
pub mod input;
pub mod lan;
pub mod messenger;
pub mod peerlink;
pub mod ports;
pub mod private;
pub mod records;
pub mod rendezvous;
pub mod roomcode;
pub mod token;
pub mod transfer;
pub mod tui;
pub mod ui;
