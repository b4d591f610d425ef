//! Questions before something is deleted for good: asked on the terminal, or
//! answered by a flag; with neither, the command refuses rather than guess.

use std::io::{BufRead, IsTerminal, Read, Write};

use engine::error::ClientError;

/// Longest answer read: a person types a word; more is not an answer.
const MAX_ANSWER: u64 = 256;

/// Whether a person can be asked: standard input is a terminal.
pub fn can_ask() -> bool {
    std::io::stdin().is_terminal()
}

/// Prints `question` on standard error (standard output stays for `--json`)
/// and returns the line typed, trimmed and in lower case. End of input is an
/// empty answer.
pub fn ask(question: &str) -> Result<String, ClientError> {
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "{question} ");
    let _ = err.flush();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .take(MAX_ANSWER)
        .read_line(&mut line)
        .map_err(|e| {
            ClientError::Usage(format!("cannot read the answer: {e}; nothing was changed"))
        })?;
    Ok(line.trim().to_ascii_lowercase())
}

/// Goes on only when `yes` was passed or the person types `yes` to `question`.
/// Without a terminal and without `--yes`, refuses with an error naming
/// `--yes` (`what` says what would have been deleted).
pub fn confirm(question: &str, yes: bool, what: &str) -> Result<(), ClientError> {
    if yes {
        return Ok(());
    }
    if !can_ask() {
        return Err(ClientError::Usage(format!(
            "standard input is not a terminal, so nobody can confirm forgetting {what}; \
             pass --yes to forget it without the question. Nothing was changed."
        )));
    }
    match ask(&format!("{question}\nType yes to forget it:"))?.as_str() {
        "yes" => Ok(()),
        _ => Err(ClientError::Usage(format!(
            "not confirmed (type yes to confirm); nothing was forgotten of {what}"
        ))),
    }
}
