//! Finite-field Diffie-Hellman with CPace, room tags and the key schedule of p2pchat
//! (docs/protocol.md §3, §5, §13).
//!
//! Flow: [`RoomCode::parse`] splits what a person typed into the tag the mediator
//! sees and the PAKE secret; [`KeyPair::generate_cpace`] makes an ephemeral CPace key
//! pair in an RFC 3526 [`Group`] on the generator [`cpace_generator`] hashes from the
//! code (§13), so only two people with the same code agree;
//! the peer's bytes pass [`validate_peer_public`] (length, range, reflection,
//! subgroup via a Jacobi symbol); [`KeyPair::agree`] gives the shared secret `Z`,
//! left-padded to the prime's length; [`Transcript::hash`] binds the handshake;
//! [`SessionKeys::derive`] runs HKDF-SHA256 once and yields every per-purpose key.
//! The confirm MACs, the commitment, the short authentication string, the room tags
//! (nameplate and Argon2id), the generator hash, the LAN key and the keylog line live
//! in [`schedule`] too, so each label and formula exists once.
//!
//! Nothing here touches a socket, a clock or a terminal: bytes in, bytes or typed
//! errors out. Randomness comes from a caller-supplied CSPRNG.

mod cpace;
mod error;
mod group;
pub mod identity;
mod jacobi;
mod keypair;
mod modp;
pub mod room;
pub mod schedule;

pub use cpace::{cpace_generator, Generator};
pub use error::Error;
pub use group::Group;
pub use identity::{Fingerprint, Identity, IdentityKey};
pub use jacobi::jacobi;
pub use keypair::{
    check_public_range, validate_peer_public, KeyPair, PeerPublic, PrivateKey, SharedSecret,
};
pub use room::{RoomCode, RoomKind};
pub use schedule::{
    commit, contact_secret, fingerprint, host_confirm_mac, host_signed_bytes, identity_transcript,
    joiner_confirm_mac, joiner_signed_bytes, keylog_line, lan_key, lan_presence_key, mailbox_queue,
    mailbox_read_seed, nameplate_tag, resume_id, secret_room_tag, token_checksum,
    token_pair_secret, token_room_secret, typed_room_tag, verify_mac, Direction, Key, MailboxQueue,
    Nonce, ResumeSecret, RoomTag, Sas, SessionKeys, Transcript, TranscriptHash,
};
