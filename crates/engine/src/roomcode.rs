//! Room codes people can read aloud (`482-velvet-harbor-maple-otter`: a nameplate
//! and four words, docs/protocol.md §13.2), friendly default names, and the one
//! check of what a typed room name may contain.

use rand::seq::SliceRandom;
use rand::Rng;

/// 256 short, distinct words: each carries 8 bits.
const WORDS_TEXT: &str = include_str!("roomcode/words.txt");
const WORDS_IN_CODE: usize = 4;
/// Longest room name accepted, in characters.
pub const MAX_ROOM_CHARS: usize = 64;

fn words() -> Vec<&'static str> {
    WORDS_TEXT.lines().filter(|w| !w.is_empty()).collect()
}

/// The room code for a nameplate the mediator allocated: `N-w-w-w-w` with four
/// words from the 256-word list (32 bits from `rng`). It parses as
/// [`dhke::RoomKind::Nameplate`]`(N)`: the mediator matches on N alone and the
/// words enter only the PAKE.
pub fn code_for_nameplate(nameplate: u32, rng: &mut impl Rng) -> String {
    let list = words();
    let mut code = nameplate.to_string();
    for _ in 0..WORDS_IN_CODE {
        code.push('-');
        code.push_str(list.choose(rng).copied().unwrap_or("room"));
    }
    code
}

/// A fresh room code without asking the mediator: a random nameplate below 1000
/// (which another room may hold at the same time) and four words. Prefer
/// [`code_for_nameplate`] with a nameplate from `Allocate`.
pub fn generate(rng: &mut impl Rng) -> String {
    let nameplate = rng.gen_range(1..1000u32);
    code_for_nameplate(nameplate, rng)
}

/// Bits of entropy in the secret part of a generated code (the words: the
/// nameplate is public). With the PAKE a guess costs an online attempt (§13).
pub fn entropy_bits() -> f64 {
    WORDS_IN_CODE as f64 * (words().len() as f64).log2()
}

/// A random friendly name such as `amber-otter`.
pub fn friendly_name(rng: &mut impl Rng) -> String {
    let list = words();
    let first = list.choose(rng).copied().unwrap_or("quiet");
    let second = list.choose(rng).copied().unwrap_or("otter");
    format!("{first}-{second}")
}

/// A room name is 1–64 characters with no whitespace or control characters, so
/// it can be read aloud, typed again, and written to one `peers.txt` field.
pub fn check_room(name: &str) -> Result<(), String> {
    let chars = name.chars().count();
    if chars == 0 {
        return Err("the room name is empty".into());
    }
    if chars > MAX_ROOM_CHARS {
        return Err(format!(
            "the room name is {chars} characters long (at most {MAX_ROOM_CHARS})"
        ));
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the room name may not contain spaces or control characters".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_has_256_distinct_words() {
        let list = words();
        assert_eq!(list.len(), 256);
        let mut sorted = list.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 256);
        assert!(list
            .iter()
            .all(|w| w.chars().all(|c| c.is_ascii_lowercase())));
    }

    #[test]
    fn codes_have_enough_entropy_and_are_valid_rooms() {
        assert!(entropy_bits() >= 32.0, "{}", entropy_bits());
        let mut rng = rand::thread_rng();
        for _ in 0..100 {
            let code = generate(&mut rng);
            assert_eq!(code.split('-').count(), 1 + WORDS_IN_CODE);
            check_room(&code).unwrap();
            assert!(dhke::RoomCode::parse(&code).nameplate().is_some(), "{code}");
            wire::validate_name(&friendly_name(&mut rng)).unwrap();
        }
    }

    #[test]
    fn codes_for_nameplates_parse_as_nameplate_codes() {
        let mut rng = rand::thread_rng();
        for n in [1, 7, 482, 65_536, dhke::room::NAMEPLATE_MAX] {
            let code = code_for_nameplate(n, &mut rng);
            check_room(&code).unwrap();
            let parsed = dhke::RoomCode::parse(&code);
            assert_eq!(parsed.kind(), dhke::RoomKind::Nameplate(n), "{code}");
            assert_eq!(parsed.tag(), dhke::nameplate_tag(n));
        }
    }

    #[test]
    fn room_names() {
        assert!(check_room("7-velvet-harbor").is_ok());
        assert!(check_room("").is_err());
        assert!(check_room("a b").is_err());
        assert!(check_room("a\tb").is_err());
        assert!(check_room(&"x".repeat(65)).is_err());
    }
}
