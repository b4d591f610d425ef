//! The p2pchat messenger engine: one profile (identity, contacts, the store)
//! and any number of conversations, driven by the person's lines and commands
//! and reporting [`events::Event`]s to a [`events::Frontend`]. No terminal code:
//! the full-screen interface, plain lines and `--json` live in the `client`
//! binary and drive this library.
//!
//! [`messenger::run`] is the entry point. Each conversation is a task of its own
//! ([`app::run`]): a port ([`ports`]), a mediator link and `Hello`
//! ([`rendezvous`]) or LAN discovery ([`lan`]) or a token ([`token`]), the race
//! over every path ([`connect`]), the session recorded ([`records`]), then the
//! conversation itself over [`peerlink::PeerLink`]s: two-party ([`chat`]) or a
//! group mesh ([`group`]), both on one log model ([`conversation`]), with files
//! ([`transfer`], [`files`]) and history ([`history`]). With a mediator, one
//! connection waits for every contact ([`presence`]). Failures are
//! [`error::ClientError`]s, each with the exit code a binary should use.

pub mod app;
pub mod chat;
pub mod config;
pub mod connect;
pub mod conversation;
pub mod error;
pub mod events;
pub mod files;
pub mod group;
pub mod history;
pub mod identity;
pub mod lan;
pub mod mailbox;
pub mod messenger;
pub mod peerlink;
pub mod ports;
pub mod presence;
pub mod private;
pub mod records;
pub mod rendezvous;
pub mod roomcode;
pub mod token;
pub mod transfer;
