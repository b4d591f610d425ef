//! The peer handshake of docs/protocol.md §6 as two typestate machines with no I/O.
//!
//! Host: [`HostHandshake::new`] → (for each incoming `PeerHello`)
//! [`HostHandshake::on_peer_hello`] → [`HostConfirmSent::on_joiner_confirm`] → [`Session`].
//! Joiner: [`JoinerHandshake::new`] → (for each connection attempt)
//! [`JoinerHandshake::hello`] → [`JoinerHelloSent::on_host_confirm`] → [`Session`];
//! [`JoinerHelloSent::start`] does the first two in one step.
//! A `Session` exists only once every check has passed, so nothing can be encrypted
//! before the keys are confirmed. The caller moves the messages; nothing here does I/O.

use dhke::schedule::{Direction, Nonce, ResumeSecret, RoomTag, Sas, SessionKeys};
use dhke::{Identity, IdentityKey, KeyPair, RoomCode, Transcript, TranscriptHash};
use rand_core::CryptoRngCore;
use zeroize::Zeroizing;

use crate::peer::{PeerHandshake, Signature64};
use crate::record::{Opener, Sealer};
use crate::rendezvous::Role;

/// What both sides know when the mediator has matched them.
#[derive(Debug)]
pub struct HandshakeInput {
    /// The room code as typed (never sent): the CPace secret, mixed into the salt.
    pub room: RoomCode,
    /// Our name, as sent in our `Hello`.
    pub local_name: String,
    /// Our ephemeral key pair: [`KeyPair::generate_cpace`] for `room` and the group
    /// of our `Hello` (docs/protocol.md §13.1); any other pair is refused.
    pub local: KeyPair,
    /// The peer's name, as the mediator announced it.
    pub peer_name: String,
    /// The peer's public value, as the mediator announced it (validated here).
    pub peer_public: Vec<u8>,
    /// `k("resume")` of our previous session in this room with this peer, if any.
    pub previous: Option<ResumeSecret>,
    /// Whether to produce the `P2PCHAT_KEYLOG` line.
    pub keylog: bool,
    /// Our long-term identity, which signs the transcript (§15).
    pub identity: Identity,
    /// The identity the peer must hold (a contact met with `--to`, a token's
    /// host); `None`: anyone, judged by the caller afterwards.
    pub expect_peer: Option<IdentityKey>,
}

/// Why a handshake stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The announced public value failed validation.
    #[error("peer public value refused: {0}")]
    BadPeerPublic(#[from] dhke::Error),
    /// `HandshakeInput::local` was not made by `KeyPair::generate_cpace` for
    /// `HandshakeInput::room`: a bug in the caller, never the peer's doing.
    #[error("our key pair was not made for this room code (KeyPair::generate_cpace)")]
    NotCpaceKeyPair,
    /// A `PeerHello` for another room or with another public value than the
    /// mediator announced: a stranger. The host rejects it and keeps waiting.
    #[error("connection is not the announced peer ({0})")]
    WrongPeer(&'static str),
    /// A message that does not belong at this step.
    #[error("unexpected handshake message: {0}")]
    Unexpected(&'static str),
    /// A confirm MAC or a commitment failed: the two sides derived different keys
    /// or someone changed the messages.
    #[error("keys differ: wrong room, or someone in the middle")]
    KeysDiffer,
    /// The peer refused us with a reason (sanitised: it goes into logs and
    /// error messages as one line).
    #[error("peer refused the connection: {0}")]
    Rejected(String),
    /// The peer's identity signature failed: it does not hold the identity key it
    /// sent, or someone changed the messages.
    #[error("the peer's identity signature is wrong: someone in the middle, or a broken client")]
    BadSignature,
    /// The peer holds another identity than the one we were told to expect.
    #[error("the peer is not who we expected: its identity is {got}, expected {expected}")]
    WrongIdentity {
        expected: dhke::Fingerprint,
        got: dhke::Fingerprint,
    },
}

/// Everything derived once the peer's public value is known.
#[derive(Clone)]
struct Agreement {
    th: TranscriptHash,
    tag: RoomTag,
    peer_public: Vec<u8>,
    fresh: SessionKeys,
    /// Keys with the previous session mixed in, and the id that names it.
    resumed: Option<(SessionKeys, [u8; 32])>,
    keylog: Option<Zeroizing<String>>,
    resumed_keylog: Option<Zeroizing<String>>,
    identity: Identity,
    expect_peer: Option<IdentityKey>,
}

/// The peer's identity key from the wire, checked to be a usable key and, when
/// one is expected, that one.
fn peer_identity(
    bytes: [u8; 32],
    expect: Option<IdentityKey>,
) -> Result<IdentityKey, HandshakeError> {
    let key = IdentityKey(bytes);
    if key.check().is_err() {
        return Err(HandshakeError::WrongPeer("not a valid identity key"));
    }
    match expect {
        Some(expected) if expected != key => Err(HandshakeError::WrongIdentity {
            expected: expected.fingerprint(),
            got: key.fingerprint(),
        }),
        _ => Ok(key),
    }
}

impl Agreement {
    fn new(input: HandshakeInput, role: Role) -> Result<Agreement, HandshakeError> {
        if !input.local.made_for(&input.room) {
            return Err(HandshakeError::NotCpaceKeyPair);
        }
        let group = input.local.group();
        let peer = dhke::validate_peer_public(group, &input.peer_public, input.local.public())?;
        let z = input.local.agree(&peer)?;
        let tag = input.room.tag();
        let (host_name, host_public, joiner_name, joiner_public) = match role {
            Role::Host => (
                input.local_name.as_str(),
                input.local.public(),
                input.peer_name.as_str(),
                peer.as_bytes(),
            ),
            Role::Joiner => (
                input.peer_name.as_str(),
                peer.as_bytes(),
                input.local_name.as_str(),
                input.local.public(),
            ),
        };
        let th = Transcript {
            room_tag: &tag,
            group,
            host_name,
            host_public,
            joiner_name,
            joiner_public,
        }
        .hash();
        let fresh = SessionKeys::derive(&th, &input.room, &z, None);
        let resumed = input.previous.as_ref().map(|prev| {
            (
                SessionKeys::derive(&th, &input.room, &z, Some(prev)),
                dhke::resume_id(prev),
            )
        });
        let keylog = input.keylog.then(|| dhke::keylog_line(&th, &z, &fresh));
        let resumed_keylog = match (&resumed, input.keylog) {
            (Some((keys, _)), true) => Some(dhke::keylog_line(&th, &z, keys)),
            _ => None,
        };
        Ok(Agreement {
            th,
            tag,
            peer_public: peer.as_bytes().to_vec(),
            fresh,
            resumed,
            keylog,
            resumed_keylog,
            identity: input.identity,
            expect_peer: input.expect_peer,
        })
    }

    fn keys(&self, resumed: bool) -> (&SessionKeys, Option<&Zeroizing<String>>) {
        match (&self.resumed, resumed) {
            (Some((keys, _)), true) => (keys, self.resumed_keylog.as_ref()),
            _ => (&self.fresh, self.keylog.as_ref()),
        }
    }
}

/// The host, waiting for the joiner's `PeerHello`. It can judge any number of
/// incoming connections; only the announced peer moves it forward.
pub struct HostHandshake {
    agreement: Agreement,
}

impl std::fmt::Debug for HostHandshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostHandshake").finish_non_exhaustive()
    }
}

impl HostHandshake {
    /// Validates the announced peer value and derives the keys.
    pub fn new(input: HandshakeInput) -> Result<HostHandshake, HandshakeError> {
        Ok(HostHandshake {
            agreement: Agreement::new(input, Role::Host)?,
        })
    }

    /// Judges a `PeerHello`. On success returns the next state and the
    /// `HostConfirm` to send; on [`HandshakeError::WrongPeer`] send
    /// [`PeerHandshake::Reject`], drop that connection and keep waiting.
    pub fn on_peer_hello(
        &self,
        msg: PeerHandshake,
        rng: &mut impl CryptoRngCore,
    ) -> Result<(HostConfirmSent, PeerHandshake), HandshakeError> {
        let PeerHandshake::PeerHello {
            room,
            public,
            commit,
            resume,
            identity,
        } = msg
        else {
            return Err(HandshakeError::WrongPeer("first message is not PeerHello"));
        };
        let a = &self.agreement;
        if room != a.tag.0 {
            return Err(HandshakeError::WrongPeer("different room"));
        }
        if public != a.peer_public {
            return Err(HandshakeError::WrongPeer("different public value"));
        }
        let joiner_identity = peer_identity(identity, a.expect_peer)?;
        let own_identity = a.identity.public();
        let thi = dhke::identity_transcript(&a.th, &own_identity.0, &joiner_identity.0);
        let resumed = match (&a.resumed, resume) {
            (Some((_, id)), Some(offered)) => dhke::verify_mac(id, &offered),
            _ => false,
        };
        let (keys, keylog) = a.keys(resumed);
        let host_nonce = Nonce::random(rng);
        let mac = dhke::host_confirm_mac(keys, &thi, &commit, &host_nonce, resumed);
        let signature = a.identity.sign(&dhke::host_signed_bytes(
            &thi,
            &commit,
            &host_nonce,
            resumed,
        ));
        let next = HostConfirmSent {
            keys: keys.clone(),
            thi,
            commit,
            host_nonce,
            resumed,
            keylog: keylog.cloned(),
            joiner_identity,
        };
        let reply = PeerHandshake::HostConfirm {
            nonce: host_nonce.0,
            mac,
            resumed,
            identity: own_identity.0,
            signature: Signature64(signature),
        };
        Ok((next, reply))
    }
}

/// The host after sending `HostConfirm`, waiting for `JoinerConfirm`.
pub struct HostConfirmSent {
    keys: SessionKeys,
    /// The identity transcript `thi` (§15.2).
    thi: TranscriptHash,
    commit: [u8; 32],
    host_nonce: Nonce,
    resumed: bool,
    keylog: Option<Zeroizing<String>>,
    joiner_identity: IdentityKey,
}

impl std::fmt::Debug for HostConfirmSent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostConfirmSent").finish_non_exhaustive()
    }
}

impl HostConfirmSent {
    /// The joiner's identity key, from its `PeerHello` (not yet proven).
    pub fn joiner_identity(&self) -> IdentityKey {
        self.joiner_identity
    }

    /// Checks the revealed `nJ` against the commitment, the joiner's MAC and its
    /// signature.
    pub fn on_joiner_confirm(self, msg: PeerHandshake) -> Result<Session, HandshakeError> {
        let (nonce, mac, signature) = match msg {
            PeerHandshake::JoinerConfirm {
                nonce,
                mac,
                signature,
            } => (Nonce(nonce), mac, signature),
            PeerHandshake::Reject { reason } => return Err(rejected(&reason)),
            _ => return Err(HandshakeError::Unexpected("expected JoinerConfirm")),
        };
        let expected = dhke::joiner_confirm_mac(
            &self.keys,
            &self.thi,
            &self.commit,
            &self.host_nonce,
            self.resumed,
            &nonce,
        );
        let commit_ok = dhke::verify_mac(&self.commit, &dhke::commit(&nonce));
        let mac_ok = dhke::verify_mac(&expected, &mac);
        if !(commit_ok && mac_ok) {
            return Err(HandshakeError::KeysDiffer);
        }
        let signed = dhke::joiner_signed_bytes(
            &self.thi,
            &self.commit,
            &self.host_nonce,
            self.resumed,
            &nonce,
        );
        self.joiner_identity
            .verify(&signed, &signature.0)
            .map_err(|_| HandshakeError::BadSignature)?;
        Ok(Session::new(
            Role::Host,
            &self.keys,
            &self.host_nonce,
            &nonce,
            self.resumed,
            self.thi,
            self.keylog,
            self.joiner_identity,
        ))
    }
}

/// The joiner with its keys derived, before any connection. The agreement (a
/// modpow and the key schedule) happens once; each connection attempt gets its
/// own `PeerHello` with a fresh nonce and commitment.
pub struct JoinerHandshake {
    agreement: Agreement,
    local_public: Vec<u8>,
}

impl std::fmt::Debug for JoinerHandshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinerHandshake").finish_non_exhaustive()
    }
}

impl JoinerHandshake {
    /// Validates the announced host value and derives the keys.
    pub fn new(input: HandshakeInput) -> Result<JoinerHandshake, HandshakeError> {
        let local_public = input.local.public().to_vec();
        Ok(JoinerHandshake {
            agreement: Agreement::new(input, Role::Joiner)?,
            local_public,
        })
    }

    /// Commits to a fresh `nJ` and returns the state for one connection attempt
    /// and the `PeerHello` to send on it.
    pub fn hello(&self, rng: &mut impl CryptoRngCore) -> (JoinerHelloSent, PeerHandshake) {
        let agreement = self.agreement.clone();
        let joiner_nonce = Nonce::random(rng);
        let commit = dhke::commit(&joiner_nonce);
        let resume = agreement.resumed.as_ref().map(|(_, id)| *id);
        let hello = PeerHandshake::PeerHello {
            room: agreement.tag.0,
            public: self.local_public.clone(),
            commit,
            resume,
            identity: agreement.identity.public().0,
        };
        let state = JoinerHelloSent {
            offered_resume: resume.is_some(),
            agreement,
            joiner_nonce,
            commit,
        };
        (state, hello)
    }
}

/// The joiner after sending `PeerHello`, waiting for `HostConfirm`.
pub struct JoinerHelloSent {
    agreement: Agreement,
    joiner_nonce: Nonce,
    commit: [u8; 32],
    offered_resume: bool,
}

impl std::fmt::Debug for JoinerHelloSent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinerHelloSent").finish_non_exhaustive()
    }
}

impl JoinerHelloSent {
    /// [`JoinerHandshake::new`] then [`JoinerHandshake::hello`]: for a joiner
    /// that makes a single attempt.
    pub fn start(
        input: HandshakeInput,
        rng: &mut impl CryptoRngCore,
    ) -> Result<(JoinerHelloSent, PeerHandshake), HandshakeError> {
        Ok(JoinerHandshake::new(input)?.hello(rng))
    }

    /// Whether this joiner offered to resume a previous session.
    pub fn offered_resume(&self) -> bool {
        self.offered_resume
    }

    /// Checks the host's MAC and returns the session and the `JoinerConfirm` to send.
    pub fn on_host_confirm(
        self,
        msg: PeerHandshake,
    ) -> Result<(Session, PeerHandshake), HandshakeError> {
        let (host_nonce, mac, resumed, identity, signature) = match msg {
            PeerHandshake::HostConfirm {
                nonce,
                mac,
                resumed,
                identity,
                signature,
            } => (Nonce(nonce), mac, resumed, identity, signature),
            PeerHandshake::Reject { reason } => return Err(rejected(&reason)),
            _ => return Err(HandshakeError::Unexpected("expected HostConfirm")),
        };
        if resumed && !self.offered_resume {
            return Err(HandshakeError::Unexpected(
                "host resumed a session that was not offered",
            ));
        }
        let a = &self.agreement;
        let host_identity = match peer_identity(identity, a.expect_peer) {
            Ok(key) => key,
            Err(HandshakeError::WrongPeer(_)) => return Err(HandshakeError::BadSignature),
            Err(e) => return Err(e),
        };
        let own_identity = a.identity.public();
        let thi = dhke::identity_transcript(&a.th, &host_identity.0, &own_identity.0);
        let (keys, keylog) = a.keys(resumed);
        let expected = dhke::host_confirm_mac(keys, &thi, &self.commit, &host_nonce, resumed);
        if !dhke::verify_mac(&expected, &mac) {
            return Err(HandshakeError::KeysDiffer);
        }
        host_identity
            .verify(
                &dhke::host_signed_bytes(&thi, &self.commit, &host_nonce, resumed),
                &signature.0,
            )
            .map_err(|_| HandshakeError::BadSignature)?;
        let reply_mac = dhke::joiner_confirm_mac(
            keys,
            &thi,
            &self.commit,
            &host_nonce,
            resumed,
            &self.joiner_nonce,
        );
        let signature = a.identity.sign(&dhke::joiner_signed_bytes(
            &thi,
            &self.commit,
            &host_nonce,
            resumed,
            &self.joiner_nonce,
        ));
        let session = Session::new(
            Role::Joiner,
            keys,
            &host_nonce,
            &self.joiner_nonce,
            resumed,
            thi,
            keylog.cloned(),
            host_identity,
        );
        let reply = PeerHandshake::JoinerConfirm {
            nonce: self.joiner_nonce.0,
            mac: reply_mac,
            signature: Signature64(signature),
        };
        Ok((session, reply))
    }
}

/// A confirmed session: the record keys for both directions, the SAS, and what the
/// next session in this room needs to resume.
pub struct Session {
    role: Role,
    sealer: Sealer,
    opener: Opener,
    sas: Sas,
    resumed: bool,
    resume_secret: ResumeSecret,
    transcript: TranscriptHash,
    keylog: Option<Zeroizing<String>>,
    peer_identity: IdentityKey,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("role", &self.role)
            .field("sas", &self.sas)
            .field("resumed", &self.resumed)
            .finish_non_exhaustive()
    }
}

impl Session {
    #[allow(clippy::too_many_arguments)]
    fn new(
        role: Role,
        keys: &SessionKeys,
        host_nonce: &Nonce,
        joiner_nonce: &Nonce,
        resumed: bool,
        transcript: TranscriptHash,
        keylog: Option<Zeroizing<String>>,
        peer_identity: IdentityKey,
    ) -> Session {
        let (send, recv) = match role {
            Role::Host => (Direction::HostToJoiner, Direction::JoinerToHost),
            Role::Joiner => (Direction::JoinerToHost, Direction::HostToJoiner),
        };
        Session {
            role,
            sealer: Sealer::new(keys.enc(send), keys.mac(send)),
            opener: Opener::new(keys.enc(recv), keys.mac(recv)),
            sas: keys.sas(&transcript, host_nonce, joiner_nonce),
            resumed,
            resume_secret: keys.resume_secret(),
            transcript,
            keylog,
            peer_identity,
        }
    }

    /// Which side we played.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The short authentication string to show and compare.
    pub fn sas(&self) -> Sas {
        self.sas
    }

    /// Whether the previous session's key was mixed in (continuity kept).
    pub fn resumed(&self) -> bool {
        self.resumed
    }

    /// `k("resume")` of this session, for the next one in the same room.
    pub fn resume_secret(&self) -> &ResumeSecret {
        &self.resume_secret
    }

    /// The peer's identity key, proven by its signature of this session.
    pub fn peer_identity(&self) -> IdentityKey {
        self.peer_identity
    }

    /// The identity transcript hash `thi` this session is bound to.
    pub fn transcript(&self) -> &TranscriptHash {
        &self.transcript
    }

    /// The keylog line, when the input asked for one.
    pub fn keylog_line(&self) -> Option<&str> {
        self.keylog.as_ref().map(|s| s.as_str())
    }

    /// Splits into the sending and receiving halves, for separate tasks.
    pub fn split(self) -> (Sealer, Opener) {
        (self.sealer, self.opener)
    }

    /// The sending half.
    pub fn sealer(&mut self) -> &mut Sealer {
        &mut self.sealer
    }

    /// The receiving half.
    pub fn opener(&mut self) -> &mut Opener {
        &mut self.opener
    }
}

/// A peer's `Reject`, its reason made safe to print (a peer cannot start a
/// fake line in a log or move the cursor).
fn rejected(reason: &str) -> HandshakeError {
    HandshakeError::Rejected(crate::sanitize_for_terminal(reason).into_owned())
}
