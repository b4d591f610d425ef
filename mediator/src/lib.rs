//! The p2pchat mediator (rendezvous server), docs/protocol.md §4.
//!
//! Flow: [`bind`] makes the listening socket (dual-stack, big backlog); [`run`]
//! accepts connections until its shutdown future completes. Each connection must
//! send a `Hello` within the hello timeout; it is checked (version, name, group,
//! public value range, address count) and offered to the [`rooms::RoomTable`]. The
//! first client of a room waits (answering `Ping`s) as the host; the second is the
//! joiner: both get `Matched` with the other's details and the room is forgotten.
//! Both then stay connected while the mediator times their hole punch (`PunchPing`
//! for the round trip, `PunchNow` to both at once, §12); if no direct path works,
//! they come back with the relay token from `Matched` and [`relay`] splices them.
//! Once its session stands, each client reports the path it took (`SessionPath`),
//! counted in [`metrics`] with nothing else kept, and the mediator closes.
//! A connection may open with `Presence` instead: it then waits under its
//! contacts' tags and is rung when one opens a room under one ([`presence`]),
//! or with a mailbox request: it then leaves, fetches or removes sealed items
//! in a queue kept by a [`mailbox::MailboxTable`] (SQLite or Redis, §22).
//! Any refusal is one `Error{code, message}` and then close. Per-address and global
//! limits, timeouts and metrics sit around that. Logs carry at most an 8-hex prefix
//! of a room tag, never a name or a public value, and client addresses only at
//! debug level.

pub mod cli;
mod config;
mod connection;
mod group_member;
pub mod groups;
pub mod limits;
pub mod mailbox;
pub mod metrics;
pub mod nameplates;
mod presence;
pub mod proxy;
mod relay;
pub mod rooms;
mod server;

pub use config::{Config, ConfigError, RelaySecret};
pub use server::{bind, run, run_with_metrics, LISTEN_BACKLOG};
