//! The key schedule (docs/protocol.md §5–§6, §13): room tags, the CPace generator
//! hash, the LAN key, transcript hash, salts, HKDF labels, confirm MACs,
//! commitment, SAS, resume id and keylog line.
//!
//! Every label string of the protocol appears in this file and nowhere else.

use std::fmt;

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand_core::CryptoRngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::{Group, RoomCode, SharedSecret};

type HmacSha256 = Hmac<Sha256>;

const NAMEPLATE_TAG_LABEL: &[u8] = b"p2pchat/v2/nameplate";
const TYPED_TAG_SALT: &[u8] = b"p2pchat/v2/room-tag";
const LAN_KEY_SALT: &[u8] = b"p2pchat/v2/lan-key";
const CPACE_GENERATOR_LABEL: &[u8] = b"p2pchat/v2/cpace-generator";
const TRANSCRIPT_LABEL: &[u8] = b"p2pchat/v1/transcript";
const COMMIT_LABEL: &[u8] = b"p2pchat/v1/commit";
const RESUME_ID_LABEL: &[u8] = b"p2pchat/v1/resume-id";
const IDENTITIES_LABEL: &[u8] = b"p2pchat/v2/identities";
const SIGN_HOST_LABEL: &[u8] = b"p2pchat/v2/sign host";
const SIGN_JOINER_LABEL: &[u8] = b"p2pchat/v2/sign joiner";
const FINGERPRINT_LABEL: &[u8] = b"p2pchat/v2/fingerprint";
const CONTACT_SALT: &[u8] = b"p2pchat/v2/contact";
const SECRET_ROOM_LABEL: &[u8] = b"p2pchat/v2/secret-room";
const TOKEN_CHECK_LABEL: &[u8] = b"p2pchat/v2/token-check";
const TOKEN_ROOM_LABEL: &[u8] = b"p2pchat/v2/token-room";
const CONVERSATION_SALT: &[u8] = b"p2pchat/v3/conversation";
const TOKEN_PAIR_LABEL: &[u8] = b"p2pchat/v3/token-pair";
const MAILBOX_SALT: &[u8] = b"p2pchat/v3/mailbox";
const LAN_PRESENCE_KEY_LABEL: &[u8] = b"p2pchat/v3/lan-presence-key";
const MAILBOX_READ_SALT: &[u8] = b"p2pchat/v3/mailbox-read";
/// What an author's signature of a conversation message starts with
/// (docs/protocol.md §17.1): `label || encode(body)`.
pub const GROUP_MSG_LABEL: &[u8] = b"p2pchat/v3/group-msg";
const KEY_LABEL_PREFIX: &str = "p2pchat/v1/";
const KEYLOG_PREFIX: &str = "P2PCHAT_V1";

/// What the mediator matches on instead of the room code: [`nameplate_tag`] for a
/// generated code, [`typed_room_tag`] for a typed name (docs/protocol.md §3, §13.2).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RoomTag(pub [u8; 32]);

impl RoomTag {
    /// The first four bytes in hex: all that logs may show of a tag.
    pub fn short_hex(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl fmt::Debug for RoomTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RoomTag({}…)", self.short_hex())
    }
}

/// The tag of a generated code: a function of the nameplate `n` alone, so the words
/// of the code never reach the mediator and enter only the PAKE.
/// `n` is the decimal number the mediator allocated (1..=999 999); the formula
/// takes any `u32` and writes it in decimal without leading zeros.
pub fn nameplate_tag(n: u32) -> RoomTag {
    let mut h = Sha256::new();
    h.update(NAMEPLATE_TAG_LABEL);
    h.update(n.to_string().as_bytes());
    RoomTag(h.finalize().into())
}

/// Argon2id memory cost in KiB (19 MiB), the OWASP baseline (docs/protocol.md §13.2).
pub const ARGON2_M_KIB: u32 = 19 * 1024;
/// Argon2id passes.
pub const ARGON2_T: u32 = 2;
/// Argon2id lanes.
pub const ARGON2_P: u32 = 1;

/// Address space reserved for Argon2id's 19 MiB of working memory: 33 MiB, over
/// the 32 MiB up to which glibc's malloc raises its mapping threshold to the
/// size of a freed mapped block (mallopt(3), `M_MMAP_THRESHOLD`). A block this
/// large is always mapped on its own and unmapped when freed, and the threshold
/// stays where it was. A 19 MiB block would raise it, so every later one would
/// come from the heap, which never shrinks: a client that opened 64 typed rooms
/// at once kept 150 to 200 MB resident. Only the first 19 MiB are ever touched.
const ARGON2_RESERVE_KIB: usize = 33 * 1024;

/// Argon2id (v1.3, m = 19 MiB, t = 2, p = 1, 32-byte output) of `secret` with a
/// fixed salt: the one memory-hard function of the protocol.
fn argon2id(secret: &[u8], salt: &[u8], out: &mut [u8; 32]) {
    use argon2::{Algorithm, Argon2, Block, Params, Version};
    // Fixed, valid parameters and salts (≥ 8 bytes); a password may be any length
    // below 4 GiB, so none of argon2's errors can come from the input.
    let params = Params::new(ARGON2_M_KIB, ARGON2_T, ARGON2_P, Some(32))
        .expect("Argon2id parameters are valid constants");
    let mut memory: Vec<Block> = Vec::with_capacity(ARGON2_RESERVE_KIB * 1024 / Block::SIZE);
    memory.resize(params.block_count(), Block::default());
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into_with_memory(secret, salt, out, &mut memory[..])
        .expect("Argon2id accepts any password below 4 GiB");
}

/// The tag of a typed room name: `Argon2id(name, salt "p2pchat/v2/room-tag")`, so a
/// mediator (or anyone who sees the tag) pays one Argon2id per guess of the name.
pub fn typed_room_tag(name: &str) -> RoomTag {
    let mut tag = RoomTag([0; 32]);
    argon2id(name.as_bytes(), TYPED_TAG_SALT, &mut tag.0);
    tag
}

/// The key of LAN announcements for a room: `Argon2id(code, salt
/// "p2pchat/v2/lan-key")` over the whole code as typed (nameplate and words alike),
/// so testing a guess against a captured announcement costs one Argon2id even for
/// a generated code whose nameplate is public (docs/protocol.md §13.5).
pub fn lan_key(code: &RoomCode) -> Key {
    // Written in place, so no copy of the key is left behind.
    let mut key = Key([0; 32]);
    argon2id(code.pake_secret(), LAN_KEY_SALT, &mut key.0);
    key
}

/// The CPace generator string hashed to `len(p) + 16` bytes (docs/protocol.md §13.1):
/// `HKDF-SHA256(salt = "p2pchat/v2/cpace-generator",
///              IKM = lp(code) || lp(room_tag) || u8(group id), info = "", L)`.
/// Only [`crate::cpace_generator`] calls this; it reduces and squares the result.
pub(crate) fn generator_hash(code: &RoomCode, tag: &RoomTag, group: Group) -> Zeroizing<Vec<u8>> {
    let mut ikm = Zeroizing::new(Vec::with_capacity(code.pake_secret().len() + 41));
    lp_into(&mut ikm, code.pake_secret());
    lp_into(&mut ikm, &tag.0);
    ikm.push(group.id());
    let hk = Hkdf::<Sha256>::new(Some(CPACE_GENERATOR_LABEL), &ikm);
    let mut okm = Zeroizing::new(vec![0u8; group.prime_len() + GENERATOR_EXTRA_BYTES]);
    // 400 bytes at most, far below HKDF-SHA256's 8160-byte limit.
    hk.expand(&[], &mut okm)
        .expect("generator hash length is within HKDF's limit");
    okm
}

/// Bytes hashed beyond len(p), so that the reduction mod p is within 2^-128 of uniform.
pub const GENERATOR_EXTRA_BYTES: usize = 16;

fn lp_into(out: &mut Vec<u8>, bytes: &[u8]) {
    // Every input is bounded far below 4 GiB (room codes are ≤ 64 characters).
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Everything the transcript hash `th` binds, in wire order.
#[derive(Debug, Clone, Copy)]
pub struct Transcript<'a> {
    pub room_tag: &'a RoomTag,
    pub group: Group,
    pub host_name: &'a str,
    pub host_public: &'a [u8],
    pub joiner_name: &'a str,
    pub joiner_public: &'a [u8],
}

/// `th`, the SHA-256 transcript hash.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TranscriptHash(pub [u8; 32]);

impl fmt::Debug for TranscriptHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TranscriptHash({})", hex::encode(self.0))
    }
}

impl Transcript<'_> {
    /// `th = SHA-256("p2pchat/v1/transcript" || lp(tag) || u8(group) || lp(host_name)
    /// || lp(host_public) || lp(joiner_name) || lp(joiner_public))`, lp = u32_be length prefix.
    pub fn hash(&self) -> TranscriptHash {
        fn lp(h: &mut Sha256, bytes: &[u8]) {
            // Every field is bounded far below 4 GiB by the frame limits.
            let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
            h.update(len.to_be_bytes());
            h.update(bytes);
        }
        let mut h = Sha256::new();
        h.update(TRANSCRIPT_LABEL);
        lp(&mut h, &self.room_tag.0);
        h.update([self.group.id()]);
        lp(&mut h, self.host_name.as_bytes());
        lp(&mut h, self.host_public);
        lp(&mut h, self.joiner_name.as_bytes());
        lp(&mut h, self.joiner_public);
        TranscriptHash(h.finalize().into())
    }
}

/// A 32-byte symmetric key. Zeroized on drop; `Debug` never shows it.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Key([u8; 32]);

impl Key {
    /// The raw key, for the cipher and MAC constructors that need it.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    /// A key from raw bytes (tests, benches).
    pub fn from_bytes(bytes: [u8; 32]) -> Key {
        Key(bytes)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

/// The previous session's `k("resume")`, kept to bind a reconnect to the old keys.
#[derive(Clone, Debug)]
pub struct ResumeSecret(Key);

/// Which way a record travels; each direction has its own keys and counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    HostToJoiner,
    JoinerToHost,
}

/// The HKDF-Expand labels, in the order of docs/protocol.md §5.
#[derive(Debug, Clone, Copy)]
enum Label {
    HostToJoinerEnc,
    HostToJoinerMac,
    JoinerToHostEnc,
    JoinerToHostMac,
    ConfirmHost,
    ConfirmJoiner,
    Sas,
    Resume,
}

impl Label {
    fn as_str(self) -> &'static str {
        match self {
            Label::HostToJoinerEnc => "host->joiner enc",
            Label::HostToJoinerMac => "host->joiner mac",
            Label::JoinerToHostEnc => "joiner->host enc",
            Label::JoinerToHostMac => "joiner->host mac",
            Label::ConfirmHost => "confirm host",
            Label::ConfirmJoiner => "confirm joiner",
            Label::Sas => "sas",
            Label::Resume => "resume",
        }
    }
}

/// Every key of one session, derived from one HKDF-Extract.
#[derive(Clone)]
pub struct SessionKeys {
    host_to_joiner_enc: Key,
    host_to_joiner_mac: Key,
    joiner_to_host_enc: Key,
    joiner_to_host_mac: Key,
    confirm_host: Key,
    confirm_joiner: Key,
    sas: Key,
    resume: Key,
}

impl fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKeys(<redacted>)")
    }
}

impl SessionKeys {
    /// `salt = SHA-256(th || room_code [|| prev_k("resume")])`, `PRK = HKDF-Extract(salt, Z)`,
    /// `k(L) = HKDF-Expand(PRK, "p2pchat/v1/" || L, 32)` for every label.
    pub fn derive(
        th: &TranscriptHash,
        room: &RoomCode,
        z: &SharedSecret,
        previous: Option<&ResumeSecret>,
    ) -> SessionKeys {
        let mut salt = Sha256::new();
        salt.update(th.0);
        salt.update(room.pake_secret());
        if let Some(prev) = previous {
            salt.update(prev.0.expose());
        }
        let salt: [u8; 32] = salt.finalize().into();
        let hk = Hkdf::<Sha256>::new(Some(&salt), z.as_bytes());
        let expand = |label: Label| {
            let mut info = Zeroizing::new(String::with_capacity(32));
            info.push_str(KEY_LABEL_PREFIX);
            info.push_str(label.as_str());
            let mut okm = [0u8; 32];
            // 32 bytes is far below HKDF-SHA256's 255 * 32 output limit.
            hk.expand(info.as_bytes(), &mut okm)
                .expect("32-byte HKDF output is always valid");
            let key = Key(okm);
            okm.zeroize();
            key
        };
        SessionKeys {
            host_to_joiner_enc: expand(Label::HostToJoinerEnc),
            host_to_joiner_mac: expand(Label::HostToJoinerMac),
            joiner_to_host_enc: expand(Label::JoinerToHostEnc),
            joiner_to_host_mac: expand(Label::JoinerToHostMac),
            confirm_host: expand(Label::ConfirmHost),
            confirm_joiner: expand(Label::ConfirmJoiner),
            sas: expand(Label::Sas),
            resume: expand(Label::Resume),
        }
    }

    /// The encryption key for records travelling in `dir`.
    pub fn enc(&self, dir: Direction) -> &Key {
        match dir {
            Direction::HostToJoiner => &self.host_to_joiner_enc,
            Direction::JoinerToHost => &self.joiner_to_host_enc,
        }
    }

    /// The MAC key for records travelling in `dir`.
    pub fn mac(&self, dir: Direction) -> &Key {
        match dir {
            Direction::HostToJoiner => &self.host_to_joiner_mac,
            Direction::JoinerToHost => &self.joiner_to_host_mac,
        }
    }

    /// `k("resume")`, to carry into the next session in the same room.
    pub fn resume_secret(&self) -> ResumeSecret {
        ResumeSecret(self.resume.clone())
    }

    /// `sas = u32_be(HMAC(k("sas"), thi || nH || nJ)[..4]) mod 10^6`, with `thi`
    /// the [`identity_transcript`], so equal codes mean equal identity keys too.
    pub fn sas(&self, thi: &TranscriptHash, host_nonce: &Nonce, joiner_nonce: &Nonce) -> Sas {
        let tag = hmac(&self.sas, &[&thi.0, &host_nonce.0, &joiner_nonce.0]);
        let value = u32::from_be_bytes([tag[0], tag[1], tag[2], tag[3]]) % 1_000_000;
        Sas(value)
    }
}

fn hmac(key: &Key, parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key.expose()).expect("HMAC takes any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// A 32-byte handshake nonce (`nH` or `nJ`), fresh from the OS RNG each session.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Nonce(pub [u8; 32]);

impl Nonce {
    /// A fresh random nonce.
    pub fn random(rng: &mut impl CryptoRngCore) -> Nonce {
        let mut n = [0u8; 32];
        rng.fill_bytes(&mut n);
        Nonce(n)
    }
}

/// `commit = SHA-256("p2pchat/v1/commit" || nJ)`.
pub fn commit(joiner_nonce: &Nonce) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(COMMIT_LABEL);
    h.update(joiner_nonce.0);
    h.finalize().into()
}

/// `HMAC(k("confirm host"), th || commit || nH || u8(resumed))`.
pub fn host_confirm_mac(
    keys: &SessionKeys,
    th: &TranscriptHash,
    commit: &[u8; 32],
    host_nonce: &Nonce,
    resumed: bool,
) -> [u8; 32] {
    hmac(
        &keys.confirm_host,
        &[&th.0, commit, &host_nonce.0, &[u8::from(resumed)]],
    )
}

/// `HMAC(k("confirm joiner"), th || commit || nH || u8(resumed) || nJ)`.
pub fn joiner_confirm_mac(
    keys: &SessionKeys,
    th: &TranscriptHash,
    commit: &[u8; 32],
    host_nonce: &Nonce,
    resumed: bool,
    joiner_nonce: &Nonce,
) -> [u8; 32] {
    hmac(
        &keys.confirm_joiner,
        &[
            &th.0,
            commit,
            &host_nonce.0,
            &[u8::from(resumed)],
            &joiner_nonce.0,
        ],
    )
}

/// `thi = SHA-256("p2pchat/v2/identities" || th || idH || idJ)`: the transcript with
/// both identity keys (32 bytes each) bound in. The confirm MACs, the signatures
/// and the SAS use `thi`; the keys come from `th` (the joiner learns `idH` only in
/// `HostConfirm`).
pub fn identity_transcript(
    th: &TranscriptHash,
    host_identity: &[u8; 32],
    joiner_identity: &[u8; 32],
) -> TranscriptHash {
    let mut h = Sha256::new();
    h.update(IDENTITIES_LABEL);
    h.update(th.0);
    h.update(host_identity);
    h.update(joiner_identity);
    TranscriptHash(h.finalize().into())
}

/// What the host signs in `HostConfirm`:
/// `"p2pchat/v2/sign host" || thi || commit || nH || u8(resumed)`.
pub fn host_signed_bytes(
    thi: &TranscriptHash,
    commit: &[u8; 32],
    host_nonce: &Nonce,
    resumed: bool,
) -> Vec<u8> {
    [
        SIGN_HOST_LABEL,
        &thi.0,
        commit,
        &host_nonce.0,
        &[u8::from(resumed)],
    ]
    .concat()
}

/// What the joiner signs in `JoinerConfirm`:
/// `"p2pchat/v2/sign joiner" || thi || commit || nH || u8(resumed) || nJ`.
pub fn joiner_signed_bytes(
    thi: &TranscriptHash,
    commit: &[u8; 32],
    host_nonce: &Nonce,
    resumed: bool,
    joiner_nonce: &Nonce,
) -> Vec<u8> {
    [
        SIGN_JOINER_LABEL,
        &thi.0,
        commit,
        &host_nonce.0,
        &[u8::from(resumed)],
        &joiner_nonce.0,
    ]
    .concat()
}

/// `SHA-256("p2pchat/v2/fingerprint" || identity key)[..16]`: what people read
/// out and type to name an identity.
pub fn fingerprint(identity: &[u8; 32]) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(FINGERPRINT_LABEL);
    h.update(identity);
    let full: [u8; 32] = h.finalize().into();
    let mut out = [0u8; 16];
    out.copy_from_slice(&full[..16]);
    out
}

/// The secret two contacts share without meeting:
/// `HKDF-SHA256(salt = "p2pchat/v2/contact", IKM = X25519 shared value,
/// info = min(idA, idB) || max(idA, idB), L = 32)`. Order-independent.
pub fn contact_secret(shared: &[u8; 32], a: &[u8; 32], b: &[u8; 32]) -> Zeroizing<[u8; 32]> {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let info = [lo.as_slice(), hi.as_slice()].concat();
    let mut out = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(Some(CONTACT_SALT), shared)
        .expand(&info, out.as_mut())
        .expect("32 bytes is a valid HKDF-SHA256 length");
    out
}

/// The tag of a room whose code is a 32-byte secret (two contacts, a connection
/// token): `SHA-256("p2pchat/v2/secret-room" || secret)`. The secret has full
/// entropy, so no memory-hard KDF is needed.
pub fn secret_room_tag(secret: &[u8; 32]) -> RoomTag {
    let mut h = Sha256::new();
    h.update(SECRET_ROOM_LABEL);
    h.update(secret);
    RoomTag(h.finalize().into())
}

/// The typo check of a connection token: `SHA-256("p2pchat/v2/token-check" ||
/// body)[..4]`.
pub fn token_checksum(body: &[u8]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(TOKEN_CHECK_LABEL);
    h.update(body);
    let full: [u8; 32] = h.finalize().into();
    [full[0], full[1], full[2], full[3]]
}

/// The room secret of a connection token: `SHA-256("p2pchat/v2/token-room" ||
/// token secret)`, the code of the token's CPace handshake and, through
/// [`secret_room_tag`], its tag.
pub fn token_room_secret(secret: &[u8; 16]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(TOKEN_ROOM_LABEL);
    h.update(secret);
    h.finalize().into()
}

/// The code of a two-party conversation met through a connection token
/// (docs/protocol.md §7.1, v3): `SHA-256("p2pchat/v3/token-pair" || token room
/// secret || min(idA, idB) || max(idA, idB))`. A holder admits several dialers
/// with one token; each pair gets its own conversation (its own log and
/// history), so what was written to one dialer never reaches another.
/// Order-independent.
pub fn token_pair_secret(room_secret: &[u8; 32], a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let mut h = Sha256::new();
    h.update(TOKEN_PAIR_LABEL);
    h.update(room_secret);
    h.update(lo);
    h.update(hi);
    h.finalize().into()
}

/// The id of the conversation a room code opens (docs/protocol.md §17.1, v3):
/// `HKDF-SHA256(salt = "p2pchat/v3/conversation", IKM = the whole code (its
/// PAKE secret: the UTF-8 text as typed, or the 32 bytes of a contact or token
/// room), info = "code" or "secret", L = 32)`. It binds a log, its signatures
/// and its stored history to the whole secret, never to the tag the mediator
/// sees: two generated codes with one nameplate have one tag and two ids.
pub fn conversation_id(code: &RoomCode) -> [u8; 32] {
    let info: &[u8] = match code.kind() {
        crate::RoomKind::Secret => b"secret",
        crate::RoomKind::Nameplate(_) | crate::RoomKind::Typed => b"code",
    };
    let mut out = [0u8; 32];
    Hkdf::<Sha256>::new(Some(CONVERSATION_SALT), code.pake_secret())
        .expand(info, &mut out)
        .expect("32 bytes is a valid HKDF-SHA256 length");
    out
}

/// The key two contacts derive their LAN presence tags with (docs/protocol.md
/// §14.4): `HMAC-SHA256(key = contact secret, "p2pchat/v3/lan-presence-key")`,
/// the secret being the pair's static secret of §15.3. Full entropy, so no
/// slow KDF; the mediator's `--to` tag is a hash of the same secret under
/// another label, so it tells nothing about this key.
pub fn lan_presence_key(contact_secret: &[u8; 32]) -> Key {
    Key(hmac(&Key(*contact_secret), &[LAN_PRESENCE_KEY_LABEL]))
}

/// The keys of one member's mailbox queue in one conversation (docs/protocol.md
/// §22.1). Everyone who holds the conversation's id (its members) can derive
/// them for any member; the mediator, which never learns the id, cannot.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MailboxQueue {
    /// The queue's name at the mediator: unlinkable to the conversation, the
    /// member and the member's other queues.
    pub id: [u8; 32],
    /// The Ed25519 seed whose key may add to the queue.
    pub add_seed: [u8; 32],
    /// AES-256 key of the sealed items.
    pub seal_key: Key,
    /// HMAC-SHA256 key of the sealed items.
    pub mac_key: Key,
}

impl fmt::Debug for MailboxQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MailboxQueue")
            .field("id", &format_args!("{:02x}{:02x}…", self.id[0], self.id[1]))
            .finish_non_exhaustive()
    }
}

/// `member`'s mailbox queue in conversation `conversation`:
/// `q = HKDF-SHA256(salt = "p2pchat/v3/mailbox", IKM = conversation id,
/// info = "queue" || member key)`, then from `q` (as the IKM, no salt) the id
/// (`info = "id"`), the add key's seed (`"add"`), the seal key (`"seal"`) and
/// the MAC key (`"mac"`), 32 bytes each.
pub fn mailbox_queue(conversation: &[u8; 32], member: &[u8; 32]) -> MailboxQueue {
    let mut q = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(Some(MAILBOX_SALT), conversation)
        .expand(&[b"queue".as_slice(), member].concat(), q.as_mut())
        .expect("32 bytes is a valid HKDF-SHA256 length");
    let hk = Hkdf::<Sha256>::from_prk(q.as_ref()).expect("32 bytes is a valid PRK");
    let part = |info: &[u8]| {
        let mut out = [0u8; 32];
        hk.expand(info, &mut out)
            .expect("32 bytes is a valid HKDF-SHA256 length");
        out
    };
    MailboxQueue {
        id: part(b"id"),
        add_seed: part(b"add"),
        seal_key: Key(part(b"seal")),
        mac_key: Key(part(b"mac")),
    }
}

/// The Ed25519 seed whose key alone may read and remove the items of queue
/// `queue`: `HKDF-SHA256(salt = "p2pchat/v3/mailbox-read", IKM = the member's
/// identity seed, info = queue id, L = 32)`. Only the member can derive it,
/// and its public key names nothing the mediator could link to the member's
/// identity or other queues.
pub fn mailbox_read_seed(identity_seed: &[u8; 32], queue: &[u8; 32]) -> Zeroizing<[u8; 32]> {
    let mut out = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(Some(MAILBOX_READ_SALT), identity_seed)
        .expand(queue, out.as_mut())
        .expect("32 bytes is a valid HKDF-SHA256 length");
    out
}

/// Compares two MACs (or any secret-derived 32-byte values) in constant time.
pub fn verify_mac(expected: &[u8; 32], received: &[u8; 32]) -> bool {
    expected.ct_eq(received).into()
}

/// `HMAC(prev_k("resume"), "p2pchat/v1/resume-id")`: names a previous session
/// without revealing its key.
pub fn resume_id(previous: &ResumeSecret) -> [u8; 32] {
    hmac(&previous.0, &[RESUME_ID_LABEL])
}

/// The six-digit short authentication string both screens show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sas(u32);

impl Sas {
    /// The number, 0..10^6.
    pub fn value(self) -> u32 {
        self.0
    }
}

impl fmt::Display for Sas {
    /// Two groups of three digits: `482 093`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:03} {:03}", self.0 / 1000, self.0 % 1000)
    }
}

/// `P2PCHAT_V1 <th> <Z> <k(h->j enc)> <k(h->j mac)> <k(j->h enc)> <k(j->h mac)>`, hex,
/// for the `P2PCHAT_KEYLOG` debugging file.
pub fn keylog_line(th: &TranscriptHash, z: &SharedSecret, keys: &SessionKeys) -> Zeroizing<String> {
    Zeroizing::new(format!(
        "{KEYLOG_PREFIX} {} {} {} {} {} {}",
        hex::encode(th.0),
        hex::encode(z.as_bytes()),
        hex::encode(keys.host_to_joiner_enc.expose()),
        hex::encode(keys.host_to_joiner_mac.expose()),
        hex::encode(keys.joiner_to_host_enc.expose()),
        hex::encode(keys.joiner_to_host_mac.expose()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sas_formats_as_two_groups() {
        assert_eq!(Sas(482_093).to_string(), "482 093");
        assert_eq!(Sas(7).to_string(), "000 007");
    }

    /// docs/protocol.md §7.1 (v3): a token pair's code and its conversation id,
    /// computed independently (Python hashlib/hmac).
    #[test]
    fn token_pair_vector() {
        let (secret, a, b) = ([0x11; 32], [0x01; 32], [0x02; 32]);
        let pair = token_pair_secret(&secret, &a, &b);
        assert_eq!(
            hex::encode(pair),
            "bf3d1f6451e7cf3b293f1fa01bc3dc5c5ea89e8a4c0d964c55a0a0dd5a21eee3"
        );
        assert_eq!(
            pair,
            token_pair_secret(&secret, &b, &a),
            "order-independent"
        );
        assert_eq!(
            hex::encode(RoomCode::from_secret("token", &pair).conversation()),
            "742a138dcdb13619f82d45a82c404f74953f236a6bd5cd30764eba0392370a3b"
        );
    }

    #[test]
    fn key_debug_is_redacted() {
        let k = Key([0x42; 32]);
        assert_eq!(format!("{k:?}"), "Key(<redacted>)");
        let room = RoomCode::parse("7-velvet-harbor");
        assert!(!format!("{room:?}").contains("velvet"));
    }
}
