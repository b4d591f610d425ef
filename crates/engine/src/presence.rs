//! Presence (docs/protocol.md §21): while a messenger runs with a mediator,
//! one connection there waits under the `--to` tag of every contact, so a
//! contact who opens a conversation with us (`--to`, `/to`) rings it and the
//! messenger goes to meet them with nothing typed on this side. The mediator
//! learns which tags wait together and from where (the spec says so);
//! `--no-presence` keeps the connection closed. With no mediator the same
//! contacts are announced on the local network instead ([`lan_contacts`],
//! [`crate::lan::presence`], §14.4).

use std::collections::HashMap;
use std::time::Duration;

use dhke::{Identity, RoomCode};
use tokio::sync::mpsc;
use zeroize::Zeroizing;

use crate::error::ClientError;
use crate::events::{Event, Events};
use crate::history::History;
use crate::rendezvous::MediatorLink;

/// The first wait before reconnecting a lost presence connection; it doubles
/// up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// A contact as presence names it to the messenger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ringing {
    /// What `/to` takes for it: its name when no other contact uses that
    /// name, else its fingerprint.
    pub target: String,
    pub fingerprint: String,
    /// The name it used last (from the network: sanitise before showing).
    pub name: String,
}

/// The `--to` room tag of every contact in `store` (docs/protocol.md §15.3:
/// the tag of the pair's static secret), with the contact it belongs to.
pub fn contact_tags(
    identity: &Identity,
    store: &History,
) -> Result<HashMap<[u8; 32], Ringing>, ClientError> {
    Ok(pair_secrets(identity, store)?
        .into_iter()
        .map(|(secret, ringing)| (RoomCode::from_secret("contact", &secret).tag().0, ringing))
        .collect())
}

/// What LAN presence (docs/protocol.md §14.4) announces and listens for: the
/// presence key of every contact in `store`, the most recently seen first, at
/// most [`crate::lan::MAX_PRESENCE_CONTACTS`].
pub fn lan_contacts(
    identity: &Identity,
    store: &History,
) -> Result<Vec<crate::lan::LanContact>, ClientError> {
    Ok(pair_secrets(identity, store)?
        .into_iter()
        .take(crate::lan::MAX_PRESENCE_CONTACTS)
        .map(|(secret, ringing)| crate::lan::LanContact {
            key: wire::lan::presence_key(&secret),
            ringing,
        })
        .collect())
}

/// A contact's pair secret (§15.3) and how presence names the contact.
type PairSecret = (Zeroizing<[u8; 32]>, Ringing);

/// Every contact in `store` (in its order: the most recently seen first) with
/// the pair's static secret and how presence names it.
fn pair_secrets(identity: &Identity, store: &History) -> Result<Vec<PairSecret>, ClientError> {
    let contacts = store.contacts()?;
    let mut names: HashMap<&str, usize> = HashMap::new();
    for c in &contacts {
        *names.entry(c.name.as_str()).or_default() += 1;
    }
    let mut out = Vec::new();
    for contact in &contacts {
        let Some(key) = contact.key() else { continue };
        // Our own key, or one that makes no shared secret, has no pair secret.
        let Ok(secret) = identity.contact_secret(&key) else {
            continue;
        };
        let unique = names.get(contact.name.as_str()) == Some(&1);
        out.push((
            secret,
            Ringing {
                target: if unique {
                    contact.name.clone()
                } else {
                    contact.fingerprint.clone()
                },
                fingerprint: contact.fingerprint.clone(),
                name: contact.name.clone(),
            },
        ));
    }
    Ok(out)
}

/// Keeps the presence connection to `server` up, waiting under every tag of
/// `contacts`, and passes each ring's contact to `rings`; returns when
/// nobody listens any more, or when the mediator refuses our tags for good.
pub async fn run(
    server: String,
    contacts: HashMap<[u8; 32], Ringing>,
    rings: mpsc::Sender<Ringing>,
    events: Events,
) {
    let tags: Vec<[u8; 32]> = contacts.keys().copied().collect();
    let mut backoff = FIRST_BACKOFF;
    let mut said_lost = false;
    loop {
        let why = match MediatorLink::wait_for_contacts(&server, &tags).await {
            Ok((mut link, mut alive)) => {
                backoff = FIRST_BACKOFF;
                if said_lost {
                    said_lost = false;
                    events.show(&Event::Info {
                        text: "Contacts can reach you again (presence).".into(),
                    });
                }
                tracing::debug!(tags = tags.len(), "presence: waiting for contacts");
                loop {
                    match link.next_ring(&mut alive).await {
                        Ok(tag) => {
                            // A ring for a tag we did not send is the mediator's
                            // mistake: nothing to meet.
                            let Some(contact) = contacts.get(&tag) else {
                                continue;
                            };
                            if rings.send(contact.clone()).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => break e,
                    }
                }
            }
            Err(e) => e,
        };
        if let ClientError::MediatorRefused {
            code: wire::ErrorCode::PresenceLimit,
            ..
        } = why
        {
            events.show(&Event::Info {
                text: format!("Presence is off: {why}"),
            });
            return;
        }
        if rings.is_closed() {
            return;
        }
        if !said_lost {
            said_lost = true;
            events.show(&Event::Info {
                text: format!(
                    "Contacts cannot reach you until the mediator is back ({why}); retrying."
                ),
            });
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
