//! The API's commands (docs/api.md) and the engine lines they stand for. Every
//! command becomes one or more of the lines a person could type, so the API
//! can do nothing the terminal cannot. No field can add a command of its own:
//! words (codes, contacts, tokens, member names) may hold no white space or
//! control character, a text is sent as text (one starting with `/` gets the
//! engine's `//` escape), a path or an upload id is one line, and the
//! conversation is always named by its number.

use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Value;

use super::API_VERSION;

/// Which transport a command came over: the web page may offer only files it
/// uploaded, never a path of its choosing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Unix,
    Web,
}

/// What a command asks of the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Lines for the engine, in order, with nothing between them.
    Lines(Vec<String>),
    /// The conversation list, from the API's copy (to the asker only).
    List,
    /// A page of a conversation's history: `line` asks the conversation for
    /// the newest `limit + before + 1` messages, the API keeps `limit` of them
    /// (the one more tells whether older ones are there).
    History {
        conversation: u32,
        limit: usize,
        before: usize,
        line: String,
    },
}

/// The most messages one `history` page holds.
pub const MAX_HISTORY_PAGE: u32 = 200;
/// How far back `history` pages reach (the engine's `/history` bound).
pub const MAX_HISTORY_DEPTH: u32 = 10_000;
/// The longest word (room code, contact, token, member name) or path.
const MAX_WORD: usize = 4096;

#[derive(Debug, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
enum Command {
    List,
    Switch {
        conversation: u32,
    },
    Close {
        conversation: u32,
    },
    Forget {
        conversation: u32,
    },
    Room {
        code: String,
    },
    Group {
        code: String,
    },
    New {
        #[serde(default)]
        group: bool,
    },
    Contact {
        contact: String,
    },
    Connect {
        token: String,
    },
    Token,
    Send {
        conversation: u32,
        text: String,
    },
    Verify {
        conversation: u32,
        #[serde(default)]
        confirm: bool,
        member: Option<String>,
    },
    Peers {
        conversation: u32,
    },
    Contacts,
    History {
        conversation: u32,
        limit: Option<u32>,
        before: Option<u32>,
    },
    OfferFile {
        conversation: u32,
        path: Option<String>,
        upload: Option<String>,
    },
    AcceptFile {
        conversation: u32,
        file: u64,
    },
    RejectFile {
        conversation: u32,
        file: u64,
    },
    CancelFile {
        conversation: u32,
        file: u64,
    },
    Admit {
        conversation: u32,
    },
    Deny {
        conversation: u32,
    },
    Quit,
}

/// An error for the reply: a stable code and a text.
pub type Refusal = (String, String);

fn refuse(code: &str, text: impl Into<String>) -> Refusal {
    (code.to_owned(), text.into())
}

/// A word as one argument of a typed command: no white space, no control
/// character, not empty, bounded.
fn word(what: &str, value: &str) -> Result<String, Refusal> {
    if value.is_empty()
        || value.len() > MAX_WORD
        || value.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(refuse(
            "bad_argument",
            format!("{what} must be one word of at most {MAX_WORD} bytes, without spaces or control characters"),
        ));
    }
    Ok(value.to_owned())
}

/// A chat text as the conversation must take it: as text, whatever it starts
/// with. `/msg` drops leading white space (as typing does), so the escape is
/// decided on what is left.
pub fn as_text(text: &str) -> Result<String, Refusal> {
    let text = text.trim_start();
    if text.is_empty() {
        return Err(refuse("bad_argument", "the text is empty"));
    }
    if text.len() > wire::peer::MAX_CHAT_TEXT {
        return Err(refuse(
            "too_long",
            format!(
                "messages are limited to {} bytes",
                wire::peer::MAX_CHAT_TEXT
            ),
        ));
    }
    Ok(if text.starts_with('/') {
        format!("/{text}")
    } else {
        text.to_owned()
    })
}

/// Reads one command. `upload` finds the file of a web page's upload id.
pub fn parse(
    mut value: Value,
    transport: Transport,
    upload: &dyn Fn(&str) -> Option<PathBuf>,
) -> Result<Action, Refusal> {
    let Some(object) = value.as_object_mut() else {
        return Err(refuse("bad_json", "a command is a JSON object"));
    };
    object.remove("id");
    match object.remove("api") {
        None => {}
        Some(v) if v.as_u64() == Some(API_VERSION) => {}
        Some(v) => {
            return Err(refuse(
                "unsupported_api",
                format!("this client speaks API version {API_VERSION}, not {v}"),
            ))
        }
    }
    // serde's `deny_unknown_fields` lets fields through to a variant that
    // has none: those are checked here.
    let bare = ["list", "token", "contacts", "quit"];
    if object.len() > 1
        && bare
            .iter()
            .any(|c| object.get("cmd") == Some(&Value::from(*c)))
    {
        return Err(refuse("bad_command", "this command takes no fields"));
    }
    let command: Command =
        serde_json::from_value(value).map_err(|e| refuse("bad_command", e.to_string()))?;
    let lines = |lines: Vec<String>| Ok(Action::Lines(lines));
    // A conversation's own command, typed into conversation `n`.
    let to = |n: u32, line: String| format!("/msg {n} {line}");
    match command {
        Command::List => Ok(Action::List),
        Command::Switch { conversation } => lines(vec![format!("/switch {conversation}")]),
        // The engine closes the conversation in front: bring it there first.
        Command::Close { conversation } => {
            lines(vec![format!("/switch {conversation}"), "/close".into()])
        }
        Command::Forget { conversation } => lines(vec![
            format!("/switch {conversation}"),
            "/forget yes".into(),
        ]),
        Command::Room { code } => lines(vec![format!("/room {}", word("code", &code)?)]),
        Command::Group { code } => lines(vec![format!("/group {}", word("code", &code)?)]),
        Command::New { group: false } => lines(vec!["/new".into()]),
        Command::New { group: true } => lines(vec!["/new group".into()]),
        Command::Contact { contact } => lines(vec![format!("/to {}", word("contact", &contact)?)]),
        Command::Connect { token } => lines(vec![format!("/connect {}", word("token", &token)?)]),
        Command::Token => lines(vec!["/token".into()]),
        Command::Send { conversation, text } => lines(vec![to(conversation, as_text(&text)?)]),
        Command::Verify {
            conversation,
            confirm,
            member,
        } => {
            let mut line = "/verify".to_string();
            if let Some(member) = member {
                line.push(' ');
                line.push_str(&word("member", &member)?);
            }
            if confirm {
                line.push_str(" yes");
            }
            lines(vec![to(conversation, line)])
        }
        Command::Peers { conversation } => lines(vec![to(conversation, "/peers".into())]),
        // The messenger's `/peers`: the front conversation's peers, then
        // every contact and whether it is online.
        Command::Contacts => lines(vec!["/peers".into()]),
        Command::History {
            conversation,
            limit,
            before,
        } => {
            let limit = limit.unwrap_or(20);
            let before = before.unwrap_or(0);
            if limit == 0 || limit > MAX_HISTORY_PAGE {
                return Err(refuse(
                    "bad_argument",
                    format!("limit is 1 to {MAX_HISTORY_PAGE}"),
                ));
            }
            // One more than the page, to know whether older ones are there.
            let depth = limit.saturating_add(before).saturating_add(1);
            if depth > MAX_HISTORY_DEPTH {
                return Err(refuse(
                    "bad_argument",
                    format!("history reaches back {MAX_HISTORY_DEPTH} messages at most"),
                ));
            }
            Ok(Action::History {
                conversation,
                limit: limit as usize,
                before: before as usize,
                line: to(conversation, format!("/history {depth}")),
            })
        }
        Command::OfferFile {
            conversation,
            path,
            upload: upload_id,
        } => {
            let path = match (path, upload_id, transport) {
                (Some(_), _, Transport::Web) => {
                    return Err(refuse(
                        "bad_argument",
                        "the web page offers uploaded files only: give `upload`, not `path`",
                    ))
                }
                (Some(path), None, Transport::Unix) => path,
                (None, Some(id), _) => upload(&id)
                    .ok_or_else(|| refuse("bad_argument", "no such upload"))?
                    .display()
                    .to_string(),
                _ => return Err(refuse("bad_argument", "give `path` or `upload`")),
            };
            if path.trim().is_empty() || path.len() > MAX_WORD || path.chars().any(char::is_control)
            {
                return Err(refuse(
                    "bad_argument",
                    "a path is one line of at most 4096 bytes",
                ));
            }
            lines(vec![to(conversation, format!("/send {path}"))])
        }
        Command::AcceptFile { conversation, file } => {
            lines(vec![to(conversation, format!("/accept {file}"))])
        }
        Command::RejectFile { conversation, file } => {
            lines(vec![to(conversation, format!("/reject {file}"))])
        }
        Command::CancelFile { conversation, file } => {
            lines(vec![to(conversation, format!("/cancel {file}"))])
        }
        Command::Admit { conversation } => lines(vec![to(conversation, "/accept".into())]),
        Command::Deny { conversation } => lines(vec![to(conversation, "/deny".into())]),
        Command::Quit => lines(vec!["/quit".into()]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::messenger::{parse as typed, Command as Typed};
    use serde_json::json;

    fn lines(v: Value) -> Vec<String> {
        match parse(v, Transport::Unix, &|_| None) {
            Ok(Action::Lines(lines)) => lines,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn commands_become_typed_lines() {
        assert_eq!(
            lines(json!({"cmd": "send", "conversation": 2, "text": "hi", "id": 1, "api": 1})),
            ["/msg 2 hi"]
        );
        assert_eq!(
            lines(json!({"cmd": "close", "conversation": 3})),
            ["/switch 3", "/close"]
        );
        assert_eq!(
            lines(json!({"cmd": "verify", "conversation": 1, "confirm": true})),
            ["/msg 1 /verify yes"]
        );
        assert_eq!(
            lines(json!({"cmd": "accept_file", "conversation": 1, "file": 4})),
            ["/msg 1 /accept 4"]
        );
        assert_eq!(lines(json!({"cmd": "new", "group": true})), ["/new group"]);
        assert!(matches!(
            parse(json!({"cmd": "list", "api": 2}), Transport::Unix, &|_| None),
            Err((code, _)) if code == "unsupported_api"
        ));
        assert!(parse(json!({"cmd": "nope"}), Transport::Unix, &|_| None).is_err());
        assert!(
            parse(json!({"cmd": "list", "extra": 1}), Transport::Unix, &|_| {
                None
            })
            .is_err()
        );
        assert!(parse(
            json!({"cmd": "switch", "conversation": 1, "extra": 1}),
            Transport::Unix,
            &|_| None
        )
        .is_err());
    }

    /// Whatever a text holds, the engine reads the line as a message for
    /// conversation 2 with that text (less leading white space), never as
    /// a command of the messenger or of the conversation.
    #[test]
    fn no_text_becomes_a_command() {
        for text in [
            "/quit",
            "  /quit",
            "\n/close",
            "//x",
            "/send /etc/passwd",
            "hi\n/quit",
            "/msg 1 /quit",
        ] {
            let [line] = &lines(json!({"cmd": "send", "conversation": 2, "text": text}))[..] else {
                panic!()
            };
            let Typed::Msg { to, text: sent } = typed(line) else {
                panic!("{line:?} is not /msg")
            };
            assert_eq!(to, "2");
            // What the conversation does with the line (chat.rs on_line):
            // `//` is the escape for a text starting with `/`.
            let shown = match sent.strip_prefix("//") {
                Some(rest) => format!("/{rest}"),
                None => {
                    assert!(!sent.starts_with('/'), "{text:?} became command {sent:?}");
                    sent.clone()
                }
            };
            assert_eq!(shown, text.trim_start(), "{text:?}");
        }
    }

    #[test]
    fn words_cannot_carry_a_second_command() {
        for bad in ["a b", "x\n/quit", "", "a\tb"] {
            assert!(
                parse(
                    json!({"cmd": "room", "code": bad}),
                    Transport::Unix,
                    &|_| None
                )
                .is_err(),
                "{bad:?}"
            );
        }
        assert!(parse(
            json!({"cmd": "offer_file", "conversation": 1, "path": "a\n/quit"}),
            Transport::Unix,
            &|_| None
        )
        .is_err());
    }

    #[test]
    fn the_page_offers_only_its_uploads() {
        let path = json!({"cmd": "offer_file", "conversation": 1, "path": "/etc/passwd"});
        assert!(parse(path.clone(), Transport::Web, &|_| None).is_err());
        assert!(parse(path, Transport::Unix, &|_| None).is_ok());
        let upload = json!({"cmd": "offer_file", "conversation": 1, "upload": "u1"});
        assert_eq!(
            parse(upload.clone(), Transport::Web, &|id| (id == "u1")
                .then(|| PathBuf::from("/p/uploads/u1/a.txt"))),
            Ok(Action::Lines(vec![
                "/msg 1 /send /p/uploads/u1/a.txt".into()
            ]))
        );
        assert!(parse(upload, Transport::Web, &|_| None).is_err());
    }

    #[test]
    fn history_pages_are_bounded() {
        let h = |limit: u32, before: u32| {
            parse(
                json!({"cmd": "history", "conversation": 1, "limit": limit, "before": before}),
                Transport::Unix,
                &|_| None,
            )
        };
        assert_eq!(
            h(20, 40),
            Ok(Action::History {
                conversation: 1,
                limit: 20,
                before: 40,
                line: "/msg 1 /history 61".into()
            })
        );
        assert!(h(0, 0).is_err());
        assert!(h(201, 0).is_err());
        assert!(h(200, 9_799).is_ok());
        assert!(h(200, 9_900).is_err());
    }
}
