//! `token`: arbitrary text as a pasted connection token (docs/protocol.md §16).
//! `Token::parse` never panics; a token it accepts encodes back to a text that
//! parses to the same token, and that text is the canonical one (lowercase, no
//! spaces).

use wire::token::Token;

/// The harness function of the `token` target.
pub fn token(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(parsed) = Token::parse(text) else {
        return;
    };
    let canonical = parsed.encode();
    assert_eq!(
        Token::parse(&canonical).expect("own encoding parses"),
        parsed
    );
    let squeezed: String = text
        .chars()
        .filter(|c| !c.is_whitespace())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    assert_eq!(squeezed, canonical, "one text per token");
}
