//! Every way a run can fail, what to tell the person, and the distinct exit code.

use wire::ErrorCode;

/// The exit codes, as listed in `--help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0   chat ended normally (/quit, end of input, Ctrl-C, or the peer said bye)
  1   unexpected internal error
  2   bad command line
  3   mediator unreachable (not running, wrong host or port, firewall)
  4   mediator refused the request (bad name, version, group mismatch, busy)
  5   nobody joined the room in time (check the room code)
  6   peer unreachable on every address
  7   keys differ: wrong room, or someone in the middle
  8   listening port unavailable (in use, or not allowed)
  9   integrity failure: a record was altered on the way
  10  connection to the peer lost
  11  file error (peers file, keylog)
  12  no direct path to the peer, and the relay is refused (--no-relay, --relay off)
  13  possible attack: someone tried many keys against our room (start again with a new code)
  14  LAN mode (no --server) found nobody in the room before --lan-timeout
  15  the peer is not the identity expected (--to contact, --connect token host)
  16  the connection token has expired (ask for a new one)
  17  the token's holder denied the connection";

/// A failure with a message for people and an exit code for scripts.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot reach the mediator at {addr}: {reason}. Is `mediator` running there? Is the port open?")]
    MediatorUnreachable { addr: String, reason: String },
    #[error("{text}")]
    MediatorRefused { code: ErrorCode, text: String },
    #[error("{0}")]
    WaitTimeout(String),
    #[error("{0}")]
    PeerUnreachable(String),
    #[error("keys differ: wrong room, or someone in the middle. Check the room code with the other person and try again.")]
    KeysDiffer,
    #[error("{0}")]
    ListenFailed(String),
    #[error(
        "integrity failure: a record from the peer was altered on the way; the session was closed"
    )]
    Integrity,
    #[error("{0}")]
    ConnectionLost(String),
    #[error("{0}")]
    File(String),
    #[error("{0}")]
    NoPath(String),
    #[error("possible attack: someone is trying many keys against this room ({0} key attempts in one match, or failed attempts over this run). The session was ended; agree on a new room code over another channel and start again.")]
    PossibleAttack(u32),
    #[error("{0}")]
    RelayEnded(String),
    /// LAN mode found nobody in the room before `--lan-timeout`.
    #[error("{0}")]
    LanTimeout(String),
    /// The peer proved another identity than the one expected, or none.
    #[error("{0}")]
    WrongIdentity(String),
    /// A connection token past its expiry.
    #[error("{0}")]
    TokenExpired(String),
    /// The token's holder said no.
    #[error("{0}")]
    Denied(String),
    #[error("{0:#}")]
    Internal(#[from] anyhow::Error),
}

impl ClientError {
    /// The process exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Internal(_) => 1,
            ClientError::Usage(_) => 2,
            ClientError::MediatorUnreachable { .. } => 3,
            ClientError::MediatorRefused { .. } => 4,
            ClientError::WaitTimeout(_) => 5,
            ClientError::PeerUnreachable(_) => 6,
            ClientError::KeysDiffer => 7,
            ClientError::ListenFailed(_) => 8,
            ClientError::Integrity => 9,
            ClientError::ConnectionLost(_) => 10,
            ClientError::File(_) => 11,
            ClientError::NoPath(_) => 12,
            ClientError::PossibleAttack(_) => 13,
            ClientError::RelayEnded(_) => 10,
            ClientError::LanTimeout(_) => 14,
            ClientError::WrongIdentity(_) => 15,
            ClientError::TokenExpired(_) => 16,
            ClientError::Denied(_) => 17,
        }
    }

    /// A short stable code for `--json` `error` events.
    pub fn code(&self) -> &'static str {
        match self {
            ClientError::Internal(_) => "internal",
            ClientError::Usage(_) => "usage",
            ClientError::MediatorUnreachable { .. } => "mediator_unreachable",
            ClientError::MediatorRefused { code, .. } => code.as_str(),
            ClientError::WaitTimeout(_) => "timeout",
            ClientError::PeerUnreachable(_) => "peer_unreachable",
            ClientError::KeysDiffer => "keys_differ",
            ClientError::ListenFailed(_) => "listen_failed",
            ClientError::Integrity => "integrity",
            ClientError::ConnectionLost(_) => "connection_lost",
            ClientError::File(_) => "file",
            ClientError::NoPath(_) => "no_path",
            ClientError::PossibleAttack(_) => "possible_attack",
            ClientError::RelayEnded(_) => "relay_ended",
            ClientError::LanTimeout(_) => "lan_timeout",
            ClientError::WrongIdentity(_) => "wrong_identity",
            ClientError::TokenExpired(_) => "token_expired",
            ClientError::Denied(_) => "denied",
        }
    }

    /// What a mediator `Error` means for the person, and what to do next.
    pub fn from_mediator(code: ErrorCode, message: &str, room: &str) -> ClientError {
        let advice = match code {
            ErrorCode::BadVersion => "the mediator speaks another protocol version; update the client or the mediator",
            ErrorCode::Malformed => "the mediator could not read our request; update the client or the mediator",
            ErrorCode::RoomFull => "that group room is full; ask its members, or pick a new room code",
            ErrorCode::GroupMismatch => "the other person uses another --dh-group; both must use the same (default 15)",
            ErrorCode::BadName => "choose a --name of 1-32 printable characters",
            ErrorCode::BadPublic => "the mediator refused our key; update the client",
            ErrorCode::Timeout => {
                return ClientError::WaitTimeout(format!(
                    "nobody joined room `{room}` before the mediator gave up ({message}). Check the room code with the other person, then both run the command again."
                ))
            }
            ErrorCode::TooManyConnections => "the mediator is busy; try again in a minute",
            ErrorCode::ShuttingDown => "the mediator is restarting; try again in a moment",
            ErrorCode::RelayRefused => "the mediator's relay refused us; try again",
            ErrorCode::RelayLimit => "the mediator's relay ended the session at one of its caps",
            ErrorCode::NoNameplate => "the mediator has no free room numbers; try again in a minute",
            ErrorCode::RoomKind => "a group room needs --group on every member, a two-party room on neither; or use another mediator",
            ErrorCode::MailboxFull => "the mediator's mailbox holds all it may for this conversation or your network; the message waits here until the other side is online",
            ErrorCode::MailboxAuth => "the mediator refused our mailbox key or our clock; check this machine's clock (the mediator allows 5 minutes either way)",
            ErrorCode::MailboxReplay => "the mediator had already given that message to its recipient",
            ErrorCode::PresenceLimit => "the mediator waits for fewer contacts than you have; contacts past its cap reach you only while you run --to them",
        };
        ClientError::MediatorRefused {
            code,
            text: format!("mediator refused: {message} ({}): {advice}", code.as_str()),
        }
    }
}
