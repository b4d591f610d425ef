//! The p2pchat fuzz harness: one function per fuzz target, each feeding arbitrary
//! bytes to one decoder or state machine that untrusted input reaches and checking
//! invariants (round trips, soundness, sanitiser guarantees), not only "no panic".
//!
//! The cargo-fuzz targets in `fuzz/` (nightly) are one-line wrappers around these
//! functions; `tests/corpus.rs` (stable, part of `cargo test --workspace`) replays
//! every input checked in under `fuzz/corpus/<target>/` through the same function.
//! A broken invariant is a panic, which libFuzzer reports as a crash.
//! Everything is deterministic (fixed keys, seeded RNGs), so a crash reproduces.

mod frame;
mod group;
mod handshake;
mod lan;
mod lan_presence;
mod messages;
mod names;
mod public;
mod record;
pub mod seeds;
mod token;

pub use frame::frame_decode;
pub use group::group_log;
pub use handshake::handshake;
pub use lan::lan_datagram;
pub use lan_presence::lan_presence;
pub use messages::{client_msg, mediator_msg, peer_handshake_msg, peer_msg};
/// The client's download-name sanitiser, compiled from its source (see `names`).
pub use names::safe_file_name;
pub use names::{file_name, terminal_text};
pub use public::public_value;
pub use record::record_open;
pub use token::token;

/// One fuzz target: its name (the file `fuzz/fuzz_targets/<name>.rs` and the
/// corpus directory `fuzz/corpus/<name>/`) and its checking function.
pub type Target = (&'static str, fn(&[u8]));

/// Every target, in the order `fuzz/run.sh` runs them.
pub const TARGETS: &[Target] = &[
    ("frame_decode", frame_decode),
    ("client_msg", client_msg),
    ("mediator_msg", mediator_msg),
    ("peer_handshake_msg", peer_handshake_msg),
    ("peer_msg", peer_msg),
    ("handshake", handshake),
    ("record_open", record_open),
    ("file_name", file_name),
    ("terminal_text", terminal_text),
    ("public_value", public_value),
    ("lan_datagram", lan_datagram),
    ("lan_presence", lan_presence),
    ("token", token),
    ("group_log", group_log),
];
