//! The input line: a bounded single-line editor with a cursor, and the recall
//! of lines already sent (Up/Down), both free of any terminal I/O.

use std::collections::VecDeque;

/// How many sent lines Up/Down can bring back.
const RECALL_DEPTH: usize = 500;

/// The line being typed. `cursor` is a byte offset that always sits on a char
/// boundary; the text never grows past `max_bytes`.
#[derive(Debug, Clone)]
pub struct InputLine {
    text: String,
    cursor: usize,
    max_bytes: usize,
}

impl InputLine {
    /// An empty line holding at most `max_bytes` bytes of UTF-8.
    pub fn new(max_bytes: usize) -> InputLine {
        InputLine {
            text: String::new(),
            cursor: 0,
            max_bytes,
        }
    }

    /// The text typed so far.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Byte offset of the cursor in [`InputLine::text`].
    pub fn cursor(&self) -> usize {
        self.cursor
    }

    /// Changes the bound; text already longer is cut at a char boundary.
    pub fn set_max_bytes(&mut self, max_bytes: usize) {
        self.max_bytes = max_bytes;
        if self.text.len() > max_bytes {
            let cut = floor_boundary(&self.text, max_bytes);
            self.text.truncate(cut);
            self.cursor = self.cursor.min(cut);
        }
    }

    /// Inserts at the cursor. Returns false (and changes nothing) if the line
    /// would grow past its bound.
    pub fn insert(&mut self, c: char) -> bool {
        if self.text.len() + c.len_utf8() > self.max_bytes {
            return false;
        }
        self.text.insert(self.cursor, c);
        self.cursor += c.len_utf8();
        true
    }

    /// Inserts pasted text, newlines and tabs turned into spaces (a message is one
    /// line), up to the bound. Returns false if some of it did not fit.
    pub fn insert_str(&mut self, pasted: &str) -> bool {
        for c in pasted.chars() {
            let c = if c.is_control() { ' ' } else { c };
            if !self.insert(c) {
                return false;
            }
        }
        true
    }

    pub fn left(&mut self) {
        if let Some(c) = self.text[..self.cursor].chars().next_back() {
            self.cursor -= c.len_utf8();
        }
    }

    pub fn right(&mut self) {
        if let Some(c) = self.text[self.cursor..].chars().next() {
            self.cursor += c.len_utf8();
        }
    }

    pub fn home(&mut self) {
        self.cursor = 0;
    }

    pub fn end(&mut self) {
        self.cursor = self.text.len();
    }

    /// Deletes the character before the cursor.
    pub fn backspace(&mut self) {
        if let Some(c) = self.text[..self.cursor].chars().next_back() {
            self.cursor -= c.len_utf8();
            self.text.remove(self.cursor);
        }
    }

    /// Deletes the character under the cursor.
    pub fn delete(&mut self) {
        if self.cursor < self.text.len() {
            self.text.remove(self.cursor);
        }
    }

    /// Ctrl-U: the whole line goes.
    pub fn clear(&mut self) {
        self.text.clear();
        self.cursor = 0;
    }

    /// Ctrl-W: deletes the word before the cursor and the spaces after it, as
    /// shells do.
    pub fn delete_word(&mut self) {
        let before = &self.text[..self.cursor];
        let trimmed = before.trim_end_matches(char::is_whitespace);
        let start = trimmed.rfind(char::is_whitespace).map_or(0, |i| {
            i + trimmed[i..].chars().next().map_or(1, char::len_utf8)
        });
        self.text.replace_range(start..self.cursor, "");
        self.cursor = start;
    }

    /// Replaces the whole line (recall), cursor at the end.
    pub fn set(&mut self, text: &str) {
        self.text.clear();
        self.cursor = 0;
        self.insert_str(text);
    }

    /// Takes the line out (Enter), leaving it empty.
    pub fn take(&mut self) -> String {
        self.cursor = 0;
        std::mem::take(&mut self.text)
    }
}

/// The largest char boundary of `s` at or below `at`.
fn floor_boundary(s: &str, at: usize) -> usize {
    let mut at = at.min(s.len());
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// Lines sent earlier, walked with Up/Down. Walking away from the line being
/// typed keeps it as a draft that Down past the newest entry brings back.
#[derive(Debug, Clone, Default)]
pub struct Recall {
    sent: VecDeque<String>,
    /// Index into `sent` while walking; `None` at the draft.
    at: Option<usize>,
    draft: String,
}

impl Recall {
    /// Remembers a sent line (not an empty one, nor a repeat of the last).
    pub fn push(&mut self, line: &str) {
        self.at = None;
        self.draft.clear();
        if line.trim().is_empty() || self.sent.back().is_some_and(|last| last == line) {
            return;
        }
        if self.sent.len() == RECALL_DEPTH {
            self.sent.pop_front();
        }
        self.sent.push_back(line.to_string());
    }

    /// One step back in time; `current` is what the input line holds now.
    /// Returns the line to show, or `None` when there is nothing older.
    pub fn older(&mut self, current: &str) -> Option<&str> {
        let next = match self.at {
            None if self.sent.is_empty() => return None,
            None => {
                self.draft = current.to_string();
                self.sent.len() - 1
            }
            Some(0) => return None,
            Some(i) => i - 1,
        };
        self.at = Some(next);
        self.sent.get(next).map(String::as_str)
    }

    /// One step forward; past the newest entry the draft comes back.
    pub fn newer(&mut self) -> Option<&str> {
        let i = self.at?;
        if i + 1 < self.sent.len() {
            self.at = Some(i + 1);
            self.sent.get(i + 1).map(String::as_str)
        } else {
            self.at = None;
            Some(&self.draft)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str, cursor: usize) -> InputLine {
        let mut l = InputLine::new(64);
        l.set(text);
        l.cursor = cursor;
        l
    }

    #[test]
    fn editing_moves_and_deletes_by_character() {
        let mut l = InputLine::new(64);
        for c in "héllo".chars() {
            assert!(l.insert(c));
        }
        assert_eq!((l.text(), l.cursor()), ("héllo", 6));
        l.left();
        l.left();
        l.left();
        l.left();
        assert_eq!(l.cursor(), 1);
        l.right();
        assert_eq!(l.cursor(), 3, "é is two bytes");
        l.backspace();
        assert_eq!((l.text(), l.cursor()), ("hllo", 1));
        l.delete();
        assert_eq!((l.text(), l.cursor()), ("hlo", 1));
        l.home();
        l.insert('>');
        assert_eq!(l.text(), ">hlo");
        l.end();
        l.right();
        l.delete();
        assert_eq!((l.text(), l.cursor()), (">hlo", 4));
        l.home();
        l.left();
        l.backspace();
        assert_eq!((l.text(), l.cursor()), (">hlo", 0));
        l.clear();
        assert_eq!((l.text(), l.cursor()), ("", 0));
    }

    #[test]
    fn ctrl_w_deletes_the_word_before_the_cursor() {
        let mut l = line("say hello  world", 16);
        l.delete_word();
        assert_eq!((l.text(), l.cursor()), ("say hello  ", 11));
        l.delete_word();
        assert_eq!((l.text(), l.cursor()), ("say ", 4));
        let mut l = line("one twö three", 8);
        l.delete_word();
        assert_eq!((l.text(), l.cursor()), ("one  three", 4));
        let mut l = line("   ", 3);
        l.delete_word();
        assert_eq!((l.text(), l.cursor()), ("", 0));
    }

    #[test]
    fn the_line_never_grows_past_its_bound() {
        let mut l = InputLine::new(5);
        assert!(l.insert_str("abcd"));
        assert!(!l.insert('é'), "two more bytes do not fit");
        assert!(l.insert('e'));
        assert!(!l.insert('f'));
        assert_eq!(l.text(), "abcde");
        let mut l = InputLine::new(8);
        assert!(!l.insert_str("line one\nline two"));
        assert_eq!(l.text(), "line one");
        let mut l = InputLine::new(8);
        assert!(l.insert_str("a\tb\r\nc"));
        assert_eq!(l.text(), "a b  c");
        l.set_max_bytes(2);
        assert_eq!((l.text(), l.cursor()), ("a ", 2));
        assert_eq!(l.take(), "a ");
        assert_eq!((l.text(), l.cursor()), ("", 0));
    }

    #[test]
    fn recall_walks_back_and_returns_to_the_draft() {
        let mut r = Recall::default();
        assert_eq!(r.older("draft"), None);
        r.push("first");
        r.push("second");
        r.push("second");
        r.push("  ");
        assert_eq!(r.older("draft"), Some("second"));
        assert_eq!(r.older("second"), Some("first"));
        assert_eq!(r.older("first"), None, "nothing older");
        assert_eq!(r.newer(), Some("second"));
        assert_eq!(r.newer(), Some("draft"));
        assert_eq!(r.newer(), None, "already at the draft");
        r.push("third");
        assert_eq!(r.older(""), Some("third"));
        assert_eq!(r.newer(), Some(""));
    }

    #[test]
    fn recall_is_bounded() {
        let mut r = Recall::default();
        for i in 0..RECALL_DEPTH + 10 {
            r.push(&format!("line {i}"));
        }
        let mut oldest = String::new();
        while let Some(l) = r.older("") {
            oldest = l.to_string();
        }
        assert_eq!(oldest, "line 10");
    }
}
