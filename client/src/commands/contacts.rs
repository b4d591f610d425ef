//! `client contacts [remove NAME] [--json]`: lists the contacts of the history
//! database, or forgets one (and, when the person says so, its conversations).

use engine::error::ClientError;
use engine::history::{Contact, ContactMatch, History};

use super::confirm;
use crate::cli::{ContactsAction, ContactsArgs};

/// `client contacts [remove NAME] [--json]`.
pub fn run(args: &ContactsArgs) -> Result<(), ClientError> {
    let path = History::path_for(args.history.as_deref(), args.profile.as_deref())?;
    if matches!(std::fs::metadata(&path), Err(e) if e.kind() == std::io::ErrorKind::NotFound) {
        if !args.json {
            println!("no contacts yet (no history at {})", path.display());
        }
        return Ok(());
    }
    let db = History::open(&path)?;
    if let Some(ContactsAction::Remove {
        name,
        with_conversations,
        keep_conversations,
    }) = &args.action
    {
        let c = match db.find_contact(name)? {
            ContactMatch::One(c) => c,
            ContactMatch::None => {
                return Err(ClientError::Usage(format!(
                    "no contact named {}; `client contacts` lists them",
                    wire::sanitize_for_terminal(name)
                )))
            }
            ContactMatch::Many(_) => {
                return Err(ClientError::Usage(format!(
                    "several contacts are named {}; remove one by its fingerprint",
                    wire::sanitize_for_terminal(name)
                )))
            }
        };
        let answer = match (with_conversations, keep_conversations) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        };
        return forget_contact(args, &db, &c, answer);
    }
    for c in db.contacts()? {
        if args.json {
            if let Ok(line) = serde_json::to_string(&c) {
                println!("{line}");
            }
        } else {
            println!(
                "{}  {}  {}  last seen {} from {}",
                wire::sanitize_for_terminal(&c.name),
                c.fingerprint,
                if c.verified {
                    "verified"
                } else {
                    "not verified"
                },
                chrono::DateTime::from_timestamp_millis(i64::try_from(c.last_seen_ms).unwrap_or(0))
                    .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
                    .unwrap_or_default(),
                // Written from a socket address, but read back from a file.
                wire::sanitize_for_terminal(&c.last_addr)
            );
        }
    }
    Ok(())
}

/// `client contacts remove NAME`: forgets the contact, and its conversations
/// when `with_conversations` says so or the person answers yes. Without a
/// terminal the flag is required when there are conversations to decide on.
fn forget_contact(
    args: &ContactsArgs,
    db: &History,
    c: &Contact,
    with_conversations: Option<bool>,
) -> Result<(), ClientError> {
    let shown = format!(
        "{} ({})",
        wire::sanitize_for_terminal(&c.name),
        c.fingerprint
    );
    let conversations = db.contact_conversations(
        &c.identity,
        engine::history::pair_conversation(args.profile.as_deref(), c)?.as_ref(),
    )?;
    let messages: u64 = conversations.iter().map(|c| c.messages).sum();
    let forget_them = match with_conversations {
        _ if conversations.is_empty() => false,
        Some(answer) => answer,
        None if !confirm::can_ask() => {
            return Err(ClientError::Usage(format!(
                "{shown} has {} conversations ({messages} messages) in the history and standard                  input is not a terminal, so nobody can say whether to forget them too: pass                  --with-conversations or --keep-conversations. Nothing was changed.",
                conversations.len()
            )))
        }
        None => {
            let question = format!(
                "Forgetting {shown}. Forget its {} conversations ({messages} messages) \
                 too?\nType yes or no:",
                conversations.len()
            );
            match confirm::ask(&question)?.as_str() {
                "yes" | "y" => true,
                "no" | "n" => false,
                _ => {
                    return Err(ClientError::Usage(
                        "answer yes or no (or pass --with-conversations or \
                         --keep-conversations); nothing was changed"
                            .into(),
                    ))
                }
            }
        }
    };
    if forget_them {
        let keys: Vec<_> = conversations.iter().map(|c| c.key).collect();
        let forgotten = db.forget_conversations(&keys, Some(&c.identity))?;
        println!(
            "removed {shown} and its {} conversations ({} messages)",
            conversations.len(),
            forgotten.messages
        );
    } else {
        db.remove_contact(c)?;
        if conversations.is_empty() {
            println!("removed {shown}");
        } else {
            println!(
                "removed {shown}; its {} conversations stay in the history",
                conversations.len()
            );
        }
    }
    Ok(())
}
