//! What a person typed as the room, split into what the mediator may see (the room
//! tag) and what only the two clients know (the PAKE secret): docs/protocol.md §13.

use std::fmt;
use std::sync::OnceLock;

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::schedule::{self, Key, RoomTag};

/// Largest nameplate a mediator hands out: six decimal digits.
pub const NAMEPLATE_MAX: u32 = 999_999;
/// Words after the nameplate in a generated code (`7-velvet-harbor-maple-otter`).
pub const NAMEPLATE_CODE_WORDS: usize = 4;

/// Which of the two forms a room code has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomKind {
    /// `N-word-word-word-word`: N (1..=999 999, decimal, no leading zero) is a
    /// nameplate the mediator allocated; the tag depends on N alone and the whole
    /// code is the PAKE secret.
    Nameplate(u32),
    /// Anything else: a name people chose. The tag is Argon2id of the name and the
    /// name is the PAKE secret.
    Typed,
    /// Not typed: a 32-byte secret (two contacts' [`crate::schedule::contact_secret`],
    /// a connection token's secret). The tag is [`schedule::secret_room_tag`] and
    /// the secret is the PAKE secret.
    Secret,
}

/// A room code as typed. It never leaves the client: zeroized on drop, redacted in
/// `Debug`. [`RoomCode::parse`] is the one place that decides the form; the tag
/// (an Argon2id evaluation for a typed name) is computed once and kept.
#[derive(Clone)]
pub struct RoomCode {
    /// What was typed, or for [`RoomKind::Secret`] a label to show.
    text: Zeroizing<String>,
    kind: RoomKind,
    /// The secret of a [`RoomKind::Secret`] code.
    secret: Zeroizing<[u8; 32]>,
    tag: OnceLock<RoomTag>,
}

impl RoomCode {
    /// Classifies what the person typed. Nothing is normalised: both sides must
    /// type the same bytes. Validation of what may be typed lives in the client.
    pub fn parse(text: &str) -> RoomCode {
        RoomCode {
            kind: match nameplate_of(text) {
                Some(n) => RoomKind::Nameplate(n),
                None => RoomKind::Typed,
            },
            text: Zeroizing::new(text.to_owned()),
            secret: Zeroizing::new([0; 32]),
            tag: OnceLock::new(),
        }
    }

    /// A room whose code is `secret` (docs/protocol.md §15); `label` is what the
    /// screen and `peers.txt` show in its place (e.g. `contact alice`).
    pub fn from_secret(label: &str, secret: &[u8; 32]) -> RoomCode {
        RoomCode {
            kind: RoomKind::Secret,
            text: Zeroizing::new(label.to_owned()),
            secret: Zeroizing::new(*secret),
            tag: OnceLock::new(),
        }
    }

    /// The form of this code.
    pub fn kind(&self) -> RoomKind {
        self.kind
    }

    /// The nameplate, for a generated code.
    pub fn nameplate(&self) -> Option<u32> {
        match self.kind {
            RoomKind::Nameplate(n) => Some(n),
            RoomKind::Typed | RoomKind::Secret => None,
        }
    }

    /// The code exactly as typed, or a secret room's label (for `peers.txt` and
    /// the screen; never a log).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The PAKE secret: the whole code as typed, UTF-8 (docs/protocol.md §13.1),
    /// or the 32 bytes of a secret room.
    pub fn pake_secret(&self) -> &[u8] {
        match self.kind {
            RoomKind::Secret => self.secret.as_slice(),
            _ => self.text.as_bytes(),
        }
    }

    /// What the mediator matches on: [`schedule::nameplate_tag`] of the nameplate,
    /// or [`schedule::typed_room_tag`] of a typed name (one Argon2id, done once).
    pub fn tag(&self) -> RoomTag {
        *self.tag.get_or_init(|| match self.kind {
            RoomKind::Nameplate(n) => schedule::nameplate_tag(n),
            RoomKind::Typed => schedule::typed_room_tag(&self.text),
            RoomKind::Secret => schedule::secret_room_tag(&self.secret),
        })
    }

    /// The id of the conversation this code opens, [`schedule::conversation_id`].
    pub fn conversation(&self) -> [u8; 32] {
        schedule::conversation_id(self)
    }

    /// The LAN announcement key, [`schedule::lan_key`]: one Argon2id per call.
    pub fn lan_key(&self) -> Key {
        schedule::lan_key(self)
    }

    /// Whether two codes are the same text, compared in constant time (the length
    /// may show).
    pub fn same_as(&self, other: &RoomCode) -> bool {
        self.pake_secret().ct_eq(other.pake_secret()).into()
    }
}

impl fmt::Debug for RoomCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            // The nameplate is public: the mediator allocated it.
            RoomKind::Nameplate(n) => write!(f, "RoomCode(nameplate {n}, <redacted>)"),
            RoomKind::Typed => f.write_str("RoomCode(typed, <redacted>)"),
            RoomKind::Secret => write!(f, "RoomCode(secret, {:?})", self.text.as_str()),
        }
    }
}

/// `Some(N)` iff `text` is `N-w-w-w-w`: N decimal in 1..=999 999 without a leading
/// zero, then exactly four words of ASCII lowercase letters, single `-` between.
fn nameplate_of(text: &str) -> Option<u32> {
    let mut parts = text.split('-');
    let number = parts.next()?;
    let digits_ok = !number.is_empty()
        && number.len() <= 6
        && !number.starts_with('0')
        && number.bytes().all(|b| b.is_ascii_digit());
    if !digits_ok {
        return None;
    }
    let mut words = 0;
    for word in parts {
        if word.is_empty() || !word.bytes().all(|b| b.is_ascii_lowercase()) {
            return None;
        }
        words += 1;
    }
    if words != NAMEPLATE_CODE_WORDS {
        return None;
    }
    let n: u32 = number.parse().ok()?;
    (1..=NAMEPLATE_MAX).contains(&n).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let cases = [
            ("7-velvet-harbor-maple-otter", RoomKind::Nameplate(7)),
            ("999999-a-b-c-d", RoomKind::Nameplate(999_999)),
            ("1-a-b-c-d", RoomKind::Nameplate(1)),
            ("7-velvet-harbor", RoomKind::Typed),
            ("0-velvet-harbor-maple-otter", RoomKind::Typed),
            ("07-velvet-harbor-maple-otter", RoomKind::Typed),
            ("1000000-velvet-harbor-maple-otter", RoomKind::Typed),
            ("7-velvet-harbor-maple-otter-fox", RoomKind::Typed),
            ("7-Velvet-harbor-maple-otter", RoomKind::Typed),
            ("7-velvet--maple-otter", RoomKind::Typed),
            ("7-velvet-harbor-maple-otter-", RoomKind::Typed),
            ("+7-velvet-harbor-maple-otter", RoomKind::Typed),
            ("velvet-harbor-maple-otter", RoomKind::Typed),
            ("", RoomKind::Typed),
        ];
        for (text, kind) in cases {
            assert_eq!(RoomCode::parse(text).kind(), kind, "{text}");
        }
    }

    #[test]
    fn the_words_never_enter_the_tag() {
        let a = RoomCode::parse("42-velvet-harbor-maple-otter");
        let b = RoomCode::parse("42-amber-quiet-river-stone");
        assert_eq!(a.tag(), b.tag());
        assert_eq!(a.tag(), schedule::nameplate_tag(42));
        assert_ne!(a.tag(), schedule::nameplate_tag(43));
        // ... but they are the PAKE secret.
        assert!(!a.same_as(&b));
        assert!(a.same_as(&a.clone()));
    }

    #[test]
    fn debug_is_redacted() {
        let code = RoomCode::parse("42-velvet-harbor-maple-otter");
        let text = format!("{code:?}");
        assert!(!text.contains("velvet"), "{text}");
        assert!(text.contains("42"), "{text}");
        let typed = RoomCode::parse("our-secret-room");
        assert!(!format!("{typed:?}").contains("secret"));
    }
}
