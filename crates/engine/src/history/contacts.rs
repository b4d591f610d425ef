//! Contacts in the history database (docs/protocol.md §15): the identity keys we
//! have met, the names each used, when, from where, and whether the person
//! compared the security code with them.

use dhke::IdentityKey;
use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use super::{from_db, to_db, History};
use crate::error::ClientError;

/// At most this many names are remembered per contact (a peer may rename itself
/// every session; the oldest names stay).
const MAX_NAMES: i64 = 32;

/// One contact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Contact {
    /// The name it used last.
    pub name: String,
    /// Every name it used, in the order first seen.
    pub names: Vec<String>,
    /// 64 hex digits of the Ed25519 key.
    pub identity: String,
    /// The fingerprint people compare (`client id` on their side).
    pub fingerprint: String,
    pub verified: bool,
    /// A token holder let it in by `/accept` before (§16.3): its token lets
    /// it in again without asking.
    pub token_admitted: bool,
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    pub last_addr: String,
}

impl Contact {
    /// The identity key (always valid: only keys from a verified handshake are stored).
    pub fn key(&self) -> Option<IdentityKey> {
        IdentityKey::from_hex(&self.identity)
    }
}

/// What a name or fingerprint typed by the person matches.
#[derive(Debug)]
pub enum ContactMatch {
    None,
    One(Contact),
    /// Several contacts answer to it (names are not unique).
    Many(Vec<Contact>),
}

impl History {
    fn contact_fail(&self, what: &str, e: &rusqlite::Error) -> ClientError {
        self.fail(what, e)
    }

    /// Records a session with `key` under `name` from `addr`: a new contact, or
    /// the existing one with its last name, time and address updated.
    pub fn contact_seen(
        &self,
        key: &IdentityKey,
        name: &str,
        addr: &str,
        now_ms: u64,
    ) -> Result<Contact, ClientError> {
        let identity = key.to_hex();
        let write = || -> rusqlite::Result<()> {
            let conn = self.conn();
            let tx = conn.unchecked_transaction()?;
            tx.execute(
                "INSERT INTO contacts (identity, name, first_seen_ms, last_seen_ms, last_addr)
                 VALUES (?1, ?2, ?3, ?3, ?4)
                 ON CONFLICT (identity) DO UPDATE
                 SET name = ?2, last_seen_ms = ?3, last_addr = ?4",
                params![identity, name, to_db(now_ms), addr],
            )?;
            tx.execute(
                "INSERT OR IGNORE INTO contact_names (contact_id, name)
                 SELECT id, ?2 FROM contacts WHERE identity = ?1
                   AND (SELECT count(*) FROM contact_names n WHERE n.contact_id = contacts.id) < ?3",
                params![identity, name, MAX_NAMES],
            )?;
            tx.commit()
        };
        write().map_err(|e| self.contact_fail("record the contact", &e))?;
        self.contact_by_key(key)?
            .ok_or_else(|| ClientError::Internal(anyhow::anyhow!("contact vanished after insert")))
    }

    /// The contact with this identity key, if any.
    pub fn contact_by_key(&self, key: &IdentityKey) -> Result<Option<Contact>, ClientError> {
        let found = self
            .conn()
            .query_row(
                "SELECT id FROM contacts WHERE identity = ?1",
                params![key.to_hex()],
                |row| row.get::<_, i64>(0),
            )
            .optional()
            .map_err(|e| self.contact_fail("read the contacts", &e))?;
        match found {
            Some(id) => Ok(self.load_contacts(Some(id))?.pop()),
            None => Ok(None),
        }
    }

    /// Marks the contact with `key` verified (the person compared the code).
    pub fn set_contact_verified(
        &self,
        key: &IdentityKey,
        verified: bool,
    ) -> Result<(), ClientError> {
        self.conn()
            .execute(
                "UPDATE contacts SET verified = ?2 WHERE identity = ?1",
                params![key.to_hex(), verified],
            )
            .map_err(|e| self.contact_fail("record the verification", &e))?;
        Ok(())
    }

    /// Marks the contact with `key` as let in through our token by the person.
    pub fn set_contact_token_admitted(&self, key: &IdentityKey) -> Result<(), ClientError> {
        self.conn()
            .execute(
                "UPDATE contacts SET token_admitted = 1 WHERE identity = ?1",
                params![key.to_hex()],
            )
            .map_err(|e| self.contact_fail("record the admission", &e))?;
        Ok(())
    }

    /// Every contact, most recently seen first.
    pub fn contacts(&self) -> Result<Vec<Contact>, ClientError> {
        self.load_contacts(None)
    }

    fn load_contacts(&self, only: Option<i64>) -> Result<Vec<Contact>, ClientError> {
        let read = || -> rusqlite::Result<Vec<Contact>> {
            let conn = self.conn();
            let mut stmt = conn.prepare(
                "SELECT id, identity, name, verified, first_seen_ms, last_seen_ms, last_addr,
                        token_admitted
                 FROM contacts WHERE ?1 IS NULL OR id = ?1
                 ORDER BY last_seen_ms DESC, id DESC",
            )?;
            let rows = stmt
                .query_map(params![only], |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, bool>(3)?,
                        row.get::<_, i64>(4)?,
                        row.get::<_, i64>(5)?,
                        row.get::<_, String>(6)?,
                        row.get::<_, bool>(7)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut names = conn
                .prepare("SELECT name FROM contact_names WHERE contact_id = ?1 ORDER BY rowid")?;
            let mut out = Vec::with_capacity(rows.len());
            for (id, identity, name, verified, first, last, addr, token_admitted) in rows {
                let seen = names
                    .query_map(params![id], |row| row.get::<_, String>(0))?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                let fingerprint = IdentityKey::from_hex(&identity)
                    .map(|k| k.fingerprint().to_string())
                    .unwrap_or_default();
                out.push(Contact {
                    name,
                    names: seen,
                    identity,
                    fingerprint,
                    verified,
                    token_admitted,
                    first_seen_ms: from_db(first),
                    last_seen_ms: from_db(last),
                    last_addr: addr,
                });
            }
            Ok(out)
        };
        read().map_err(|e| self.contact_fail("read the contacts", &e))
    }

    /// Verified contacts other than `key` that used `name`, or a name that looks
    /// like it (the same [`wire::text::name_skeleton`]: `Bob`, Cyrillic `Воb`,
    /// `bob.` and `b`+zero-width+`ob` all look like `bob`): a peer now using it
    /// under another key may be impersonating them. Skeletons are computed here,
    /// not stored, so names stored before this check (or under older Unicode
    /// data) are compared by today's rules.
    pub fn verified_others_named(
        &self,
        name: &str,
        key: &IdentityKey,
    ) -> Result<Vec<Contact>, ClientError> {
        let wanted = wire::text::name_skeleton(name);
        let looks_alike = |n: &String| wire::text::name_skeleton(n) == wanted;
        Ok(self
            .contacts()?
            .into_iter()
            .filter(|c| c.verified && c.identity != key.to_hex())
            .filter(|c| looks_alike(&c.name) || c.names.iter().any(looks_alike))
            .collect())
    }

    /// The contacts `typed` names: its last name, or its fingerprint (or a prefix
    /// of at least 8 hex digits of it).
    pub fn find_contact(&self, typed: &str) -> Result<ContactMatch, ClientError> {
        let all = self.contacts()?;
        let by_fp: Vec<Contact> = all
            .iter()
            .filter(|c| c.key().is_some_and(|k| k.fingerprint().matches(typed)))
            .cloned()
            .collect();
        let found = if by_fp.is_empty() {
            all.into_iter().filter(|c| c.name == typed).collect()
        } else {
            by_fp
        };
        Ok(match found.len() {
            0 => ContactMatch::None,
            1 => ContactMatch::One(found.into_iter().next().expect("one")),
            _ => ContactMatch::Many(found),
        })
    }

    /// Forgets a contact (its chats stay in the history; see
    /// [`History::forget_conversations`] to forget them in one go).
    pub fn remove_contact(&self, contact: &Contact) -> Result<(), ClientError> {
        self.conn()
            .execute(
                "DELETE FROM contacts WHERE identity = ?1",
                params![contact.identity],
            )
            .map_err(|e| self.contact_fail("remove the contact", &e))?;
        Ok(())
    }
}

/// The id of the conversation this profile and contact `c` have with `--to`
/// (its room is the pair's secret, docs/protocol.md §15.3). None when the
/// profile has no identity yet (it cannot have that conversation then).
pub fn pair_conversation(
    profile: Option<&std::path::Path>,
    c: &Contact,
) -> Result<Option<[u8; 32]>, ClientError> {
    let Ok(dir) = crate::identity::profile_dir(profile) else {
        return Ok(None);
    };
    let path = dir.join(crate::identity::FILE_NAME);
    if matches!(std::fs::symlink_metadata(&path), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
    {
        return Ok(None);
    }
    let me = crate::identity::load(&path)?;
    let Some(key) = c.key() else {
        return Ok(None);
    };
    let Ok(secret) = me.contact_secret(&key) else {
        return Ok(None);
    };
    Ok(Some(
        dhke::RoomCode::from_secret("contact", &secret).conversation(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhke::Identity;

    fn db(tag: &str) -> (History, std::path::PathBuf) {
        let path = std::env::temp_dir().join(format!(
            "p2pchat-contacts-{tag}-{}.sqlite3",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&path);
        (History::open(&path).unwrap(), path)
    }

    #[test]
    fn contacts_remember_names_verification_and_are_found_by_name_or_fingerprint() {
        let (h, path) = db("basic");
        let bob = Identity::from_seed(&[2; 32]).public();
        let eve = Identity::from_seed(&[5; 32]).public();
        let c = h.contact_seen(&bob, "bob", "127.0.0.1:1", 10).unwrap();
        assert!(!c.verified);
        h.set_contact_verified(&bob, true).unwrap();
        let c = h.contact_seen(&bob, "robert", "127.0.0.1:2", 20).unwrap();
        assert!(c.verified);
        assert_eq!(c.names, ["bob", "robert"]);
        assert_eq!((c.first_seen_ms, c.last_seen_ms), (10, 20));
        assert_eq!(c.last_addr, "127.0.0.1:2");
        // Eve now says she is bob: bob (verified, used that name) is named.
        let others = h.verified_others_named("bob", &eve).unwrap();
        assert_eq!(others.len(), 1);
        assert!(h.verified_others_named("bob", &bob).unwrap().is_empty());
        assert!(matches!(
            h.find_contact("robert").unwrap(),
            ContactMatch::One(_)
        ));
        let fp = bob.fingerprint().to_string();
        assert!(matches!(
            h.find_contact(&fp[..9]).unwrap(),
            ContactMatch::One(_)
        ));
        assert!(matches!(
            h.find_contact("nobody").unwrap(),
            ContactMatch::None
        ));
        h.remove_contact(&c).unwrap();
        assert!(h.contacts().unwrap().is_empty());
        drop(h);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn names_that_look_like_a_verified_contacts_name_are_caught() {
        let (h, path) = db("confusable");
        let bob = Identity::from_seed(&[2; 32]).public();
        let eve = Identity::from_seed(&[5; 32]).public();
        h.contact_seen(&bob, "bob", "127.0.0.1:1", 10).unwrap();
        h.set_contact_verified(&bob, true).unwrap();
        for lookalike in [
            "Bob",
            "\u{412}\u{43e}b", // Cyrillic capital VE and small O: "Воb"
            "bob.",
            "bob\u{3164}", // HANGUL FILLER
            "bob\u{2028}", // LINE SEPARATOR
            "b\u{200B}ob", // ZERO WIDTH SPACE
            "bo\u{200D}b", // ZERO WIDTH JOINER
            "\u{FEFF}bob", // ZERO WIDTH NO-BREAK SPACE
        ] {
            let others = h.verified_others_named(lookalike, &eve).unwrap();
            assert_eq!(others.len(), 1, "{lookalike:?} slipped past the check");
            assert!(h.verified_others_named(lookalike, &bob).unwrap().is_empty());
        }
        assert!(h.verified_others_named("rob", &eve).unwrap().is_empty());
        assert!(h.verified_others_named("bobby", &eve).unwrap().is_empty());
        drop(h);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn names_per_contact_are_bounded() {
        let (h, path) = db("bound");
        let bob = Identity::from_seed(&[2; 32]).public();
        for i in 0..100 {
            h.contact_seen(&bob, &format!("name{i}"), "", i).unwrap();
        }
        let c = h.contact_by_key(&bob).unwrap().unwrap();
        assert_eq!(c.names.len(), MAX_NAMES as usize);
        assert_eq!(c.name, "name99");
        drop(h);
        let _ = std::fs::remove_file(&path);
    }
}
