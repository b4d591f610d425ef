//! The full-screen terminal interface. One thread owns the terminal (raw mode,
//! alternate screen): it draws [`screen::Screen`], takes [`Event`]s and the
//! conversation list from [`crate::ui::Output`] over a channel, writes the bell
//! and notifications the screen asks for, and hands typed lines (and the
//! switches Alt-N, Ctrl-N and Ctrl-P ask for) to the engine as [`InputEvent`]s. The terminal is put back on every way out: [`Tui::shutdown`],
//! drop, a failing terminal, and panics (a hook restores it before the message).

pub mod editor;
pub mod screen;

use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc as std_mpsc, Mutex, Once};
use std::thread::JoinHandle;
use std::time::Duration;

use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{self, DisableBracketedPaste, EnableBracketedPaste, KeyEventKind};
use ratatui::crossterm::terminal::{self, EnterAlternateScreen, LeaveAlternateScreen};
use ratatui::crossterm::{cursor, execute};
use ratatui::Terminal;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::mpsc::Sender;

use engine::events::InputEvent;
use engine::events::{ConvItem, ConvRef, Event};
use screen::{Action, Screen};

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
    let mut screen = Screen::new(max_bytes);
    screen.set_notify(notify);
    let mut outbox = Outbox {
        sender: None,
        queue: VecDeque::new(),
        quit_sent: false,
    };
    let result = ui_loop(&mut terminal, &mut screen, &from_output, &mut outbox);
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
                    screen.set_max_bytes(max_bytes);
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
            terminal.draw(|frame| screen.render(frame))?;
            dirty = false;
        }
        if !event::poll(TICK)? {
            continue;
        }
        dirty = true;
        match event::read()? {
            event::Event::Key(key) if key.kind != KeyEventKind::Release => {
                match screen.key(key) {
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
            event::Event::Paste(text) => screen.paste(&text),
            event::Event::Resize(..) => terminal.autoresize()?,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
