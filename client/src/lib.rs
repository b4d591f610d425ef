//! The p2pchat client: meets a peer through a mediator, connects directly,
//! confirms keys and chats end-to-end encrypted.
//!
//! Flow ([`app::run`]): flags ([`cli`]) → listener bound → mediator link and
//! `Hello` ([`rendezvous`]) → match → the host accepts and the joiner races the
//! candidate addresses ([`connect`]), both running the `wire` handshake → the
//! session is recorded ([`records`]: `peers.txt`, keylog) → [`chat`] over a
//! [`peerlink::PeerLink`], shown through [`ui`]. Failures carry an exit code
//! ([`exit`]).

pub mod app;
pub mod chat;
pub mod cli;
pub mod connect;
pub mod exit;
pub mod files;
pub mod history;
pub mod input;
pub mod peerlink;
pub mod private;
pub mod records;
pub mod rendezvous;
pub mod roomcode;
pub mod transfer;
pub mod tui;
pub mod ui;
