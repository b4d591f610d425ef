//! The full-screen terminal interface. One thread owns the terminal (raw mode,
//! alternate screen): it reads the keys, gives the editing ones to the line
//! editor ([`Editor`], here) and the rest to the screen ([`on_key`]), hands
//! typed lines (and the switches Alt-N, Ctrl-N and Ctrl-P ask for) to the
//! engine as [`InputEvent`]s, draws [`screen::Screen`] with the line being
//! typed, takes [`Event`]s and the conversation list from
//! [`crate::ui::Output`] over a channel, and writes the bell and the
//! notifications the screen asks for. The terminal is put back on every way
//! out: [`Tui::shutdown`], drop, a failing terminal, and panics (a hook
//! restores it before the message).

pub mod screen;

use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc as std_mpsc, Mutex, Once};
use std::thread::JoinHandle;
use std::time::Duration;

use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{
    self, DisableBracketedPaste, EnableBracketedPaste, KeyCode, KeyEvent, KeyEventKind,
    KeyModifiers,
};
use ratatui::crossterm::terminal::{self, EnterAlternateScreen, LeaveAlternateScreen};
use ratatui::crossterm::{cursor, execute};
use ratatui::Terminal;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::mpsc::Sender;

use engine::events::InputEvent;
use engine::events::{ConvItem, ConvRef, Event};
use screen::Screen;

/// How long the UI thread waits for a key before looking at new events.
const TICK: Duration = Duration::from_millis(50);
/// Lines typed that the engine has not taken yet (it asks for input late, or
/// is busy); beyond this, more typing is refused with a note.
const OUTBOX: usize = 256;
/// Log output held back while the screen is ours, printed after.
const HELD_LOG: usize = 64 * 1024;

/// Whether the terminal is in raw mode on the alternate screen right now.
static ACTIVE: AtomicBool = AtomicBool::new(false);
static PANIC_HOOK: Once = Once::new();
static HELD: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// What a key press asks of the UI thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing beyond a redraw.
    None,
    /// Hand this line to the engine.
    Send(String),
    /// Ask the engine to bring conversation N to the front (`/switch N`);
    /// the screen follows once the engine's list says so.
    Switch(u32),
    /// Ctrl-C, or Ctrl-D on an empty line: leave.
    Quit,
}

/// One key press. Ctrl-C leaves whatever is open; a key that closes the help
/// does nothing else; the line editor takes the editing keys (Enter gives the
/// line to send), the screen the rest.
pub fn on_key(screen: &mut Screen, editor: &mut Editor, key: KeyEvent) -> Action {
    if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
        return Action::Quit;
    }
    if screen.key_pressed() {
        return Action::None;
    }
    match editor.key(key) {
        Some(Edit::Submit(line)) => {
            screen.live();
            Action::Send(line)
        }
        Some(Edit::ToEnd) => {
            screen.live();
            Action::None
        }
        Some(Edit::Full) => {
            screen.line_full();
            Action::None
        }
        Some(Edit::Edited) => Action::None,
        None => screen.key(key),
    }
}

// The line editor: the keys that edit the line being typed, a bounded
// single-line buffer with a cursor, and the recall of lines already sent
// (Up/Down). Enter hands the finished line back as `Edit::Submit`; the keys
// that are not the editor's (switching, paging, quitting) are the screen's.

/// How many sent lines Up/Down can bring back.
const RECALL_DEPTH: usize = 500;

/// What an editing key did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// The line or its cursor changed (or had nowhere to go).
    Edited,
    /// End: the cursor went to the end of the line, and the screen goes back
    /// to the newest messages too.
    ToEnd,
    /// The key would have grown the line past its bound: nothing changed.
    Full,
    /// Enter on a line with text: the line, taken out of the editor.
    Submit(String),
}

/// The line being typed and the lines sent before it, driven by keys.
#[derive(Debug, Clone)]
pub struct Editor {
    line: InputLine,
    recall: Recall,
}

impl Editor {
    /// An empty editor whose line holds at most `max_bytes`.
    pub fn new(max_bytes: usize) -> Editor {
        Editor {
            line: InputLine::new(max_bytes),
            recall: Recall::default(),
        }
    }

    /// The line as typed so far, with its cursor.
    pub fn line(&self) -> &InputLine {
        &self.line
    }

    /// The engine's input bound (known once it asks for input).
    pub fn set_max_bytes(&mut self, max_bytes: usize) {
        self.line.set_max_bytes(max_bytes);
    }

    /// Handles `key` if it edits the line; `None` for the keys that are not
    /// the editor's: Ctrl-C, Ctrl-D on an empty line, Ctrl-N and Ctrl-P,
    /// Alt-digits, paging, and anything else with Ctrl or Alt.
    pub fn key(&mut self, key: KeyEvent) -> Option<Edit> {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let alt = key.modifiers.contains(KeyModifiers::ALT);
        let line = &mut self.line;
        match key.code {
            KeyCode::Char('d') if ctrl && !line.text().is_empty() => line.delete(),
            KeyCode::Char('u') if ctrl => line.clear(),
            KeyCode::Char('w') if ctrl => line.delete_word(),
            KeyCode::Char('a') if ctrl => line.home(),
            KeyCode::Char('e') if ctrl => line.end(),
            KeyCode::Char('h') if ctrl => line.backspace(),
            KeyCode::Char(_) if ctrl || alt => return None,
            KeyCode::Char(c) => {
                if !line.insert(c) {
                    return Some(Edit::Full);
                }
            }
            KeyCode::Enter => {
                let text = line.take();
                if !text.is_empty() {
                    self.recall.push(&text);
                    return Some(Edit::Submit(text));
                }
            }
            KeyCode::Backspace => line.backspace(),
            KeyCode::Delete => line.delete(),
            KeyCode::Left => line.left(),
            KeyCode::Right => line.right(),
            KeyCode::Home => line.home(),
            KeyCode::End => {
                line.end();
                return Some(Edit::ToEnd);
            }
            KeyCode::Up => {
                if let Some(older) = self.recall.older(line.text()) {
                    let older = older.to_string();
                    self.line.set(&older);
                }
            }
            KeyCode::Down => {
                if let Some(newer) = self.recall.newer() {
                    let newer = newer.to_string();
                    self.line.set(&newer);
                }
            }
            _ => return None,
        }
        Some(Edit::Edited)
    }

    /// Pasted text goes into the line (as one line).
    pub fn paste(&mut self, text: &str) -> Edit {
        if self.line.insert_str(text) {
            Edit::Edited
        } else {
            Edit::Full
        }
    }
}

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

/// What [`crate::ui::Output`] sends the UI thread.
enum ToUi {
    Show(Option<ConvRef>, Box<Event>),
    /// The conversation list changed.
    List(Option<u32>, Vec<ConvItem>),
    /// The engine wants typed lines on this channel from now on.
    Input {
        sender: Sender<InputEvent>,
        max_bytes: usize,
    },
    Shutdown,
}

/// A running terminal interface. Dropping it restores the terminal.
pub struct Tui {
    to_ui: std_mpsc::Sender<ToUi>,
    thread: Option<JoinHandle<Option<String>>>,
}

impl std::fmt::Debug for Tui {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tui")
            .field("running", &self.thread.is_some())
            .finish()
    }
}

impl Tui {
    /// Takes over the terminal and starts the UI thread; `notify`: also ask
    /// the terminal for desktop notifications (`--notify`). On error the
    /// terminal is left as it was found.
    pub fn start(max_bytes: usize, notify: bool) -> std::io::Result<Tui> {
        install_panic_hook();
        enter()?;
        let terminal = match Terminal::new(CrosstermBackend::new(std::io::stdout())) {
            Ok(t) => t,
            Err(e) => {
                restore();
                return Err(e);
            }
        };
        let (to_ui, from_output) = std_mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("tui".into())
            .spawn(move || run(terminal, from_output, max_bytes, notify));
        match spawned {
            Ok(thread) => Ok(Tui {
                to_ui,
                thread: Some(thread),
            }),
            Err(e) => {
                restore();
                Err(e)
            }
        }
    }

    /// Hands the UI thread the conversation list.
    pub fn conversations(&self, front: Option<u32>, items: &[ConvItem]) {
        let _ = self.to_ui.send(ToUi::List(front, items.to_vec()));
    }

    /// Passes an event to the screen. False if the UI is gone (it failed or
    /// shut down), so the caller can show the event another way.
    pub fn show(&self, conv: Option<&ConvRef>, event: &Event) -> bool {
        self.to_ui
            .send(ToUi::Show(conv.cloned(), Box::new(event.clone())))
            .is_ok()
    }

    /// A fresh channel of typed lines, each at most `max_bytes`. `None` if the UI is gone.
    pub fn input(&self, max_bytes: usize) -> Option<tokio::sync::mpsc::Receiver<InputEvent>> {
        let (sender, receiver) = tokio::sync::mpsc::channel(64);
        self.to_ui
            .send(ToUi::Input { sender, max_bytes })
            .ok()
            .map(|()| receiver)
    }

    /// Stops the UI thread and restores the terminal; then prints the log lines
    /// held back meanwhile. Returns the line that said why the session ended.
    pub fn shutdown(mut self) -> Option<String> {
        self.stop()
    }

    fn stop(&mut self) -> Option<String> {
        let _ = self.to_ui.send(ToUi::Shutdown);
        let farewell = self.thread.take().and_then(|t| t.join().ok()).flatten();
        // Whatever happened in the thread, the terminal is ours to put back.
        restore();
        flush_held_log();
        farewell
    }
}

impl Drop for Tui {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.stop();
        }
    }
}

/// Raw mode, alternate screen, bracketed paste (so a pasted block is one line,
/// not several sends).
fn enter() -> std::io::Result<()> {
    terminal::enable_raw_mode()?;
    ACTIVE.store(true, Ordering::SeqCst);
    if let Err(e) = execute!(
        std::io::stdout(),
        EnterAlternateScreen,
        EnableBracketedPaste
    ) {
        restore();
        return Err(e);
    }
    Ok(())
}

/// Puts the terminal back as it was (cooked mode, main screen, cursor shown).
/// Safe to call more than once and from the panic hook.
pub fn restore() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        let mut out = std::io::stdout();
        let _ = execute!(
            out,
            DisableBracketedPaste,
            LeaveAlternateScreen,
            cursor::Show
        );
        let _ = terminal::disable_raw_mode();
        let _ = out.flush();
    }
}

/// Whether the interface currently owns the terminal.
pub fn active() -> bool {
    ACTIVE.load(Ordering::SeqCst)
}

fn install_panic_hook() {
    PANIC_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // Restore first so the message lands on a sane, visible screen.
            restore();
            flush_held_log();
            previous(info);
        }));
    });
}

/// A log writer for `tracing`: stderr, except while the interface owns the
/// terminal, when lines are held (bounded) and printed after it is restored.
/// Log fields carry peer words (a reason, an address, a name), so every line
/// passes the terminal filter on its way out, as events do.
#[derive(Debug, Default, Clone, Copy)]
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if active() {
            if let Ok(mut held) = HELD.lock() {
                let room = HELD_LOG.saturating_sub(held.len());
                held.extend_from_slice(&buf[..buf.len().min(room)]);
            }
        } else {
            std::io::stderr().write_all(&safe_log(buf))?;
        }
        // All of `buf` was taken (the filter may print fewer bytes).
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if active() {
            Ok(())
        } else {
            std::io::stderr().flush()
        }
    }
}

fn flush_held_log() {
    let held = match HELD.lock() {
        Ok(mut held) => std::mem::take(&mut *held),
        Err(_) => return,
    };
    if !held.is_empty() {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(&safe_log(&held));
        if held.len() >= HELD_LOG {
            let _ = writeln!(err, "(further log lines were dropped)");
        }
        let _ = err.flush();
    }
}

/// Log output as a terminal may show it: each line through
/// [`wire::sanitize_for_terminal`], the line breaks between them kept (a log
/// writer is handed whole lines; one cut short by the hold bound ends in U+FFFD).
fn safe_log(buf: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(buf);
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let (body, end) = match line.strip_suffix('\n') {
            Some(body) => (body, "\n"),
            None => (line, ""),
        };
        out.push_str(&wire::sanitize_for_terminal(body));
        out.push_str(end);
    }
    out.into_bytes()
}

/// Where typed lines go: the engine's channel once it asked, with a queue in
/// front so a busy engine never freezes the screen.
struct Outbox {
    sender: Option<Sender<InputEvent>>,
    queue: VecDeque<InputEvent>,
    quit_sent: bool,
}

impl Outbox {
    /// Moves queued lines into the engine's channel as far as it takes them.
    fn pump(&mut self) {
        let Some(sender) = &self.sender else { return };
        while let Some(next) = self.queue.pop_front() {
            match sender.try_send(next) {
                Ok(()) => {}
                Err(TrySendError::Full(back)) => {
                    self.queue.push_front(back);
                    return;
                }
                Err(TrySendError::Closed(_)) => {
                    self.sender = None;
                    self.queue.clear();
                    return;
                }
            }
        }
    }

    fn push(&mut self, event: InputEvent) -> bool {
        if self.queue.len() >= OUTBOX {
            return false;
        }
        self.queue.push_back(event);
        self.pump();
        true
    }

    /// Whether someone reads what we send.
    fn listened(&self) -> bool {
        self.sender.as_ref().is_some_and(|s| !s.is_closed())
    }
}

type Term = Terminal<CrosstermBackend<std::io::Stdout>>;

/// The UI thread: draw, take events, read keys, until shut down or the
/// terminal fails. Returns the farewell line.
fn run(
    mut terminal: Term,
    from_output: std_mpsc::Receiver<ToUi>,
    max_bytes: usize,
    notify: bool,
) -> Option<String> {
    let mut screen = Screen::new();
    let mut editor = Editor::new(max_bytes);
    screen.set_notify(notify);
    let mut outbox = Outbox {
        sender: None,
        queue: VecDeque::new(),
        quit_sent: false,
    };
    let result = ui_loop(
        &mut terminal,
        &mut screen,
        &mut editor,
        &from_output,
        &mut outbox,
    );
    restore();
    if let Err(e) = result {
        tracing::error!(error = %e, "the terminal interface failed; leaving");
    }
    // However the loop ended, the engine must not wait for input that never comes.
    if !outbox.quit_sent {
        outbox.queue.clear();
        if let Some(sender) = &outbox.sender {
            let _ = sender.try_send(InputEvent::Eof);
        }
    }
    screen.farewell().map(str::to_string)
}

fn ui_loop(
    terminal: &mut Term,
    screen: &mut Screen,
    editor: &mut Editor,
    from_output: &std_mpsc::Receiver<ToUi>,
    outbox: &mut Outbox,
) -> std::io::Result<()> {
    let mut dirty = true;
    loop {
        loop {
            match from_output.try_recv() {
                Ok(ToUi::Show(conv, event)) => {
                    let now = chrono::Local::now().format("%H:%M").to_string();
                    screen.apply_in(conv.as_ref(), &event, &now);
                    dirty = true;
                }
                Ok(ToUi::List(front, items)) => {
                    screen.set_list(front, items);
                    dirty = true;
                }
                Ok(ToUi::Input { sender, max_bytes }) => {
                    editor.set_max_bytes(max_bytes);
                    outbox.sender = Some(sender);
                }
                Ok(ToUi::Shutdown) | Err(std_mpsc::TryRecvError::Disconnected) => return Ok(()),
                Err(std_mpsc::TryRecvError::Empty) => break,
            }
        }
        outbox.pump();
        if !active() {
            // A panic elsewhere restored the terminal: stop drawing on it.
            return Ok(());
        }
        let alerts = screen.take_alerts();
        if !alerts.is_empty() {
            // Bell and OSC sequences move no cursor; written before the frame
            // that shows why, so the terminal has them once it shows it.
            let out = terminal.backend_mut();
            out.write_all(&alerts)?;
            out.flush()?;
        }
        if dirty {
            terminal.draw(|frame| screen.render(frame, editor.line()))?;
            dirty = false;
        }
        if !event::poll(TICK)? {
            continue;
        }
        dirty = true;
        match event::read()? {
            event::Event::Key(key) if key.kind != KeyEventKind::Release => {
                match on_key(screen, editor, key) {
                    Action::None => {}
                    Action::Send(line) => {
                        if !outbox.push(InputEvent::Line(line)) {
                            screen.apply(
                                &Event::Error {
                                    code: "busy".into(),
                                    text: "too many lines are waiting to be sent; that one was dropped".into(),
                                },
                                &chrono::Local::now().format("%H:%M").to_string(),
                            );
                        }
                    }
                    // The engine owns which conversation is in front: it is
                    // asked, and the screen follows its list update.
                    Action::Switch(number) => {
                        if outbox.push(InputEvent::Line(format!("/switch {number}"))) {
                            screen.switch_sent();
                        }
                    }
                    Action::Quit => {
                        if outbox.quit_sent || !outbox.listened() {
                            // Nobody is there to say goodbye (the engine is not
                            // reading yet, or a second Ctrl-C): leave now.
                            restore();
                            flush_held_log();
                            std::process::exit(130);
                        }
                        outbox.queue.clear();
                        // `/quit` leaves at once; end of input (Ctrl-D) would
                        // first wait for queued messages to be delivered.
                        outbox.quit_sent = outbox.push(InputEvent::Line("/quit".into()));
                        screen.apply(
                            &Event::Info {
                                text: "Leaving… (Ctrl-C again quits at once)".into(),
                            },
                            &chrono::Local::now().format("%H:%M").to_string(),
                        );
                    }
                }
            }
            event::Event::Paste(text) => {
                screen.key_pressed();
                if editor.paste(&text) == Edit::Full {
                    screen.line_full();
                }
            }
            event::Event::Resize(..) => terminal.autoresize()?,
            _ => {}
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

    fn outbox() -> Outbox {
        Outbox {
            sender: None,
            queue: VecDeque::new(),
            quit_sent: false,
        }
    }

    #[test]
    fn the_output_can_be_shared_between_tasks() {
        fn shareable<T: Send + Sync>() {}
        shareable::<crate::ui::Output>();
    }

    #[test]
    fn lines_typed_before_the_engine_listens_wait_for_it() {
        let mut out = outbox();
        assert!(out.push(InputEvent::Line("early".into())));
        assert!(!out.listened());
        let (sender, mut receiver) = tokio::sync::mpsc::channel(1);
        out.sender = Some(sender);
        assert!(out.listened());
        out.pump();
        assert!(out.push(InputEvent::Line("second".into())));
        assert_eq!(out.queue.len(), 1, "the channel is full; the line waits");
        assert_eq!(
            receiver.try_recv().ok(),
            Some(InputEvent::Line("early".into()))
        );
        out.pump();
        assert_eq!(
            receiver.try_recv().ok(),
            Some(InputEvent::Line("second".into()))
        );
        drop(receiver);
        assert!(!out.listened());
        out.push(InputEvent::Eof);
        assert!(out.sender.is_none() && out.queue.is_empty());
    }

    #[test]
    fn log_lines_lose_a_peers_escapes_and_keep_their_own_breaks() {
        let line = "WARN reason=\u{1b}]0;owned\u{7}go\u{1b}[2J away\r\u{202e}\nnext line\n";
        assert_eq!(
            String::from_utf8(safe_log(line.as_bytes())).unwrap(),
            "WARN reason=go away \nnext line\n"
        );
        assert_eq!(safe_log(b"no break"), b"no break");
        assert_eq!(
            safe_log(b"bad \xff utf-8\n"),
            "bad \u{fffd} utf-8\n".as_bytes()
        );
    }

    #[test]
    fn the_outbox_is_bounded() {
        let mut out = outbox();
        for _ in 0..OUTBOX {
            assert!(out.push(InputEvent::Line("x".into())));
        }
        assert!(!out.push(InputEvent::Line("one too many".into())));
    }
}
