//! The local API (docs/api.md): the engine's commands and events as JSON, for
//! scripts, bots and the web page. One [`ApiHub`] holds the subscribers; each
//! transport ([`unix`]: a Unix socket in the profile; `crate::web`: a WebSocket
//! on loopback) runs a [`Session`] per connection. Events are the `--json`
//! events, byte for byte ([`crate::ui::event_json`]); commands become the
//! engine's typed lines ([`commands`]), so the API can do exactly what a person
//! at the terminal can. [`Fanout`] is the front-end the engine sees: the
//! terminal output and every subscriber get each event.
//!
//! Bounds: at most [`Limits::max_clients`] subscribers, each with a queue of at
//! most [`Limits::queue_bytes`] bytes of events waiting; a subscriber that lets
//! more pile up is dropped with a reason, so a slow reader never holds up the
//! engine (showing an event never waits). A message to the API is at most
//! [`Limits::max_message_bytes`].

pub mod commands;
pub mod unix;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use engine::events::{ConvItem, ConvRef, Event, Frontend, InputEvent};
use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify};

use crate::ui::{event_json, Output};
use commands::{Action, Transport};

/// The API's version, in the hello line and accepted in commands (`"api": 1`).
pub const API_VERSION: u64 = 1;

/// How long a `history` request waits for the conversation's answer before a
/// later `history` event is no longer taken for it.
const HISTORY_WAIT: Duration = Duration::from_secs(10);
/// `history` requests waiting at once, over all clients.
const MAX_PENDING_HISTORY: usize = 32;

/// The API's bounds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Subscribers at once, over both transports.
    pub max_clients: usize,
    /// Bytes of events waiting for one subscriber before it is dropped.
    pub queue_bytes: usize,
    /// The longest message a client may send (one JSON command).
    pub max_message_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_clients: 16,
            queue_bytes: 8 << 20,
            // A chat text of wire::peer::MAX_CHAT_TEXT bytes, every byte
            // escaped (`\u00XX`), fits with room for the envelope.
            max_message_bytes: 6 * wire::peer::MAX_CHAT_TEXT + 4096,
        }
    }
}

/// What a subscriber's writer takes from its queue.
#[derive(Debug)]
pub enum Outgoing {
    /// One JSON text (a line on the Unix socket, a text frame on the WebSocket).
    Text(Arc<str>),
    /// The subscriber was dropped: say why, then close.
    Close(String),
}

#[derive(Debug, Default)]
struct QueueState {
    texts: VecDeque<Arc<str>>,
    bytes: usize,
    closed: Option<String>,
}

/// One subscriber's bounded queue: pushing never waits; over the bound the
/// queue is emptied and closed with a reason.
#[derive(Debug)]
pub struct Queue {
    state: Mutex<QueueState>,
    notify: Notify,
    cap: usize,
}

impl Queue {
    fn new(cap: usize) -> Queue {
        Queue {
            state: Mutex::new(QueueState::default()),
            notify: Notify::new(),
            cap,
        }
    }

    fn state(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `text`; false when the queue is (now) closed.
    fn push(&self, text: Arc<str>) -> bool {
        let mut state = self.state();
        if state.closed.is_some() {
            return false;
        }
        if state.bytes.saturating_add(text.len()) > self.cap {
            state.texts.clear();
            state.bytes = 0;
            state.closed = Some(format!(
                "too slow: more than {} bytes of events were waiting for this client",
                self.cap
            ));
            drop(state);
            self.notify.notify_one();
            return false;
        }
        state.bytes += text.len();
        state.texts.push_back(text);
        drop(state);
        self.notify.notify_one();
        true
    }

    /// Closes the queue with `reason` (what is queued is still delivered first).
    pub fn close(&self, reason: &str) {
        let mut state = self.state();
        if state.closed.is_none() {
            state.closed = Some(reason.to_owned());
        }
        drop(state);
        self.notify.notify_one();
    }

    /// The next text, or the reason the queue closed. One reader per queue.
    pub async fn next(&self) -> Outgoing {
        loop {
            {
                let mut state = self.state();
                if let Some(text) = state.texts.pop_front() {
                    state.bytes -= text.len();
                    return Outgoing::Text(text);
                }
                if let Some(reason) = &state.closed {
                    return Outgoing::Close(reason.clone());
                }
            }
            // `notify_one` keeps a permit when nobody waits: no wake-up is lost.
            self.notify.notified().await;
        }
    }

    /// Bytes waiting now (benches and tests).
    pub fn waiting_bytes(&self) -> usize {
        self.state().bytes
    }
}

/// A `history` request waiting for its conversation's answer.
#[derive(Debug)]
struct PendingHistory {
    conversation: u32,
    client: u64,
    limit: usize,
    before: usize,
    reply: Value,
    since: Instant,
}

/// The subscribers and what a new one is told first.
#[derive(Debug)]
pub struct ApiHub {
    limits: Limits,
    next_id: AtomicU64,
    clients: Mutex<BTreeMap<u64, Arc<Queue>>>,
    /// The last conversation list, as its `conversations` event.
    list: Mutex<Option<Arc<str>>>,
    history: Mutex<VecDeque<PendingHistory>>,
}

impl ApiHub {
    pub fn new(limits: Limits) -> ApiHub {
        ApiHub {
            limits,
            next_id: AtomicU64::new(1),
            clients: Mutex::new(BTreeMap::new()),
            list: Mutex::new(None),
            history: Mutex::new(VecDeque::new()),
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    fn clients(&self) -> MutexGuard<'_, BTreeMap<u64, Arc<Queue>>> {
        self.clients.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new subscriber, its queue already holding the hello and the
    /// conversation list; `Err` with the reason when there are too many.
    pub fn subscribe(&self) -> Result<(u64, Arc<Queue>), String> {
        let queue = Arc::new(Queue::new(self.limits.queue_bytes));
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let hello = json!({
            "api": API_VERSION,
            "event": "hello",
            "client": concat!("p2pchat ", env!("CARGO_PKG_VERSION")),
            "max_message_bytes": self.limits.max_message_bytes,
            "queue_bytes": self.limits.queue_bytes,
        });
        // Under the subscribers' lock, which every broadcast takes: no event
        // comes before the hello and the list.
        let mut clients = self.clients();
        if clients.len() >= self.limits.max_clients {
            return Err(format!(
                "too many API clients: at most {} at once",
                self.limits.max_clients
            ));
        }
        queue.push(hello.to_string().into());
        let list = self
            .list
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(list) = list {
            queue.push(list);
        }
        clients.insert(id, Arc::clone(&queue));
        Ok((id, queue))
    }

    /// Forgets a subscriber (its connection ended).
    pub fn unsubscribe(&self, id: u64) {
        self.clients().remove(&id);
    }

    /// Subscribers now.
    pub fn client_count(&self) -> usize {
        self.clients().len()
    }

    /// Sends `text` to every subscriber; drops those too slow to keep up.
    pub fn broadcast(&self, text: &Arc<str>) {
        self.clients()
            .retain(|_, queue| queue.push(Arc::clone(text)));
    }

    /// Sends `text` to subscriber `id` only.
    fn send_to(&self, id: u64, text: Arc<str>) {
        let mut clients = self.clients();
        if let Some(queue) = clients.get(&id) {
            if !queue.push(text) {
                clients.remove(&id);
            }
        }
    }

    /// Shows one engine event to every subscriber, or to the one whose
    /// `history` request it answers (true then: nobody else is to see it).
    pub fn publish(&self, conv: Option<&ConvRef>, event: &Event) -> bool {
        if let (Event::History { lines }, Some(conv)) = (event, conv) {
            if let Some(pending) = self.take_history(conv.number) {
                let end = lines.len().saturating_sub(pending.before);
                let start = end.saturating_sub(pending.limit);
                let page = Event::History {
                    lines: lines[start..end].to_vec(),
                };
                if let Some(text) = event_json(Some(conv), &page) {
                    // The page's place: `before` as asked, `more` when older
                    // messages were there.
                    let mut value: Value = serde_json::from_str(&text).unwrap_or_default();
                    value["before"] = json!(pending.before);
                    value["more"] = json!(start > 0);
                    value["reply"] = pending.reply;
                    self.send_to(pending.client, value.to_string().into());
                }
                return true;
            }
        }
        if let Some(text) = event_json(conv, event) {
            self.broadcast(&text.into());
        }
        false
    }

    /// Takes the oldest `history` request for conversation `number`.
    fn take_history(&self, number: u32) -> Option<PendingHistory> {
        let mut pending = self.history.lock().unwrap_or_else(PoisonError::into_inner);
        pending.retain(|p| p.since.elapsed() < HISTORY_WAIT);
        let at = pending.iter().position(|p| p.conversation == number)?;
        pending.remove(at)
    }

    fn expect_history(&self, request: PendingHistory) {
        let mut pending = self.history.lock().unwrap_or_else(PoisonError::into_inner);
        if pending.len() >= MAX_PENDING_HISTORY {
            pending.pop_front();
        }
        pending.push_back(request);
    }

    /// The conversation list changed: every subscriber gets it, and new ones
    /// get the last one.
    pub fn list_changed(&self, front: Option<u32>, items: &[ConvItem]) {
        let event = Event::Conversations {
            front,
            items: items.to_vec(),
        };
        let Some(text) = event_json(None, &event) else {
            return;
        };
        let text: Arc<str> = text.into();
        *self.list.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&text));
        self.broadcast(&text);
    }

    /// The last conversation list, or an empty one.
    fn current_list(&self) -> Arc<str> {
        self.list
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or_else(|| {
                json!({"event": "conversations", "front": null, "items": []})
                    .to_string()
                    .into()
            })
    }
}

/// The front-end the engine sees when the API is on: the terminal (or
/// `--json`) output and every API subscriber.
#[derive(Debug)]
pub struct Fanout {
    pub out: Arc<Output>,
    pub hub: Arc<ApiHub>,
}

impl Frontend for Fanout {
    fn show(&self, conv: Option<&ConvRef>, event: &Event) {
        // A page of history asked for through the API is that client's alone.
        if !self.hub.publish(conv, event) {
            self.out.show_in(conv, event);
        }
    }

    fn named(&self, number: u32, id: &[u8; 32], label: &str) {
        self.out.named(number, id, label);
    }

    fn conversations(&self, front: Option<u32>, items: &[ConvItem]) {
        self.out.conversations(front, items);
        self.hub.list_changed(front, items);
    }
}

/// The engine's typed-line input, shared by the terminal and the API clients.
/// A command that takes several lines (`close`: switch, then close) sends them
/// under one lock, so no other line comes between.
#[derive(Debug, Clone)]
pub struct Lines {
    sender: Arc<tokio::sync::Mutex<mpsc::Sender<InputEvent>>>,
}

/// Lines waiting for the engine; beyond this, senders wait.
const INPUT_QUEUE: usize = 64;

impl Lines {
    /// The shared input and the engine's end of it. The terminal's lines
    /// (`terminal`) are forwarded as they come; with `keep_running`, its end
    /// of input does not end the client (a service has no standard input):
    /// `/quit`, Ctrl-C or the API's `quit` do.
    pub fn new(
        mut terminal: mpsc::Receiver<InputEvent>,
        keep_running: bool,
    ) -> (Lines, mpsc::Receiver<InputEvent>) {
        let (tx, rx) = mpsc::channel(INPUT_QUEUE);
        let lines = Lines {
            sender: Arc::new(tokio::sync::Mutex::new(tx)),
        };
        let forward = lines.clone();
        tokio::spawn(async move {
            while let Some(event) = terminal.recv().await {
                if keep_running && event == InputEvent::Eof {
                    return;
                }
                if !forward.send(std::slice::from_ref(&event)).await {
                    return;
                }
            }
        });
        (lines, rx)
    }

    /// Hands `events` to the engine in order, with nothing between them;
    /// false when the engine has stopped reading.
    pub async fn send(&self, events: &[InputEvent]) -> bool {
        let sender = self.sender.lock().await;
        for event in events {
            if sender.send(event.clone()).await.is_err() {
                return false;
            }
        }
        true
    }
}

/// One client's connection, whatever the transport: reads its commands,
/// answers each, and hands the engine the lines they stand for.
#[derive(Debug)]
pub struct Session {
    pub hub: Arc<ApiHub>,
    pub id: u64,
    pub queue: Arc<Queue>,
    pub lines: Lines,
    pub transport: Transport,
    /// The web page's uploaded files, by id (none on the Unix socket).
    pub uploads: Option<Arc<crate::web::Uploads>>,
}

impl Session {
    /// Handles one message from the client; the reply goes to its queue.
    pub async fn handle(&self, text: &str) {
        let parsed = serde_json::from_str::<Value>(text)
            .map_err(|e| ("bad_json".to_string(), format!("not a JSON object: {e}")));
        let (reply_id, action) = match parsed {
            Ok(value) => {
                let reply_id = value.get("id").cloned().unwrap_or(Value::Null);
                let uploads = self.uploads.as_deref();
                let action = commands::parse(value, self.transport, &|id| {
                    uploads.and_then(|u| u.path(id))
                });
                (reply_id, action)
            }
            Err(e) => (Value::Null, Err(e)),
        };
        match action {
            Err((code, text)) => self.reply(&reply_id, Some((&code, &text))),
            Ok(Action::List) => {
                self.reply(&reply_id, None);
                self.hub.send_to(self.id, self.hub.current_list());
            }
            Ok(Action::History {
                conversation,
                limit,
                before,
                line,
            }) => {
                self.hub.expect_history(PendingHistory {
                    conversation,
                    client: self.id,
                    limit,
                    before,
                    reply: reply_id.clone(),
                    since: Instant::now(),
                });
                self.engine(&reply_id, &[line]).await;
            }
            Ok(Action::Lines(lines)) => self.engine(&reply_id, &lines).await,
        }
    }

    async fn engine(&self, reply_id: &Value, lines: &[String]) {
        let events: Vec<InputEvent> = lines.iter().cloned().map(InputEvent::Line).collect();
        if self.lines.send(&events).await {
            self.reply(reply_id, None);
        } else {
            self.reply(
                reply_id,
                Some(("stopped", "the messenger has stopped reading commands")),
            );
        }
    }

    /// Queues the answer to one command.
    pub fn reply(&self, reply_id: &Value, error: Option<(&str, &str)>) {
        let value = match error {
            None => json!({"reply": reply_id, "ok": true}),
            Some((code, text)) => {
                json!({"reply": reply_id, "ok": false, "error": {"code": code, "text": text}})
            }
        };
        self.hub.send_to(self.id, value.to_string().into());
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.hub.unsubscribe(self.id);
    }
}

/// The last line a dropped client gets: `{"api":1,"event":"bye","reason":…}`.
pub fn bye(reason: &str) -> String {
    json!({"api": API_VERSION, "event": "bye", "reason": reason}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(text: &str) -> Event {
        Event::Message {
            from: "bob".into(),
            text: text.into(),
            id: 1,
            sent_at_ms: 0,
        }
    }

    #[tokio::test]
    async fn a_slow_subscriber_is_dropped_and_the_others_keep_theirs() {
        let hub = ApiHub::new(Limits {
            max_clients: 4,
            queue_bytes: 4096,
            max_message_bytes: 1024,
        });
        let (_, slow) = hub.subscribe().unwrap();
        let (_, quick) = hub.subscribe().unwrap();
        let big = "x".repeat(500);
        for _ in 0..20 {
            hub.publish(None, &message(&big));
            // The quick one reads as it goes.
            while quick.waiting_bytes() > 0 {
                let Outgoing::Text(_) = quick.next().await else {
                    panic!("the quick subscriber was dropped")
                };
            }
        }
        assert_eq!(hub.client_count(), 1, "the slow one is gone");
        match slow.next().await {
            Outgoing::Close(reason) => assert!(reason.contains("too slow"), "{reason}"),
            Outgoing::Text(t) => panic!("a dropped queue still held {t}"),
        }
    }

    #[test]
    fn no_more_subscribers_than_the_bound() {
        let hub = ApiHub::new(Limits {
            max_clients: 2,
            ..Limits::default()
        });
        let _a = hub.subscribe().unwrap();
        let (b, _) = hub.subscribe().unwrap();
        assert!(hub.subscribe().unwrap_err().contains("at most 2"));
        hub.unsubscribe(b);
        assert!(hub.subscribe().is_ok());
    }

    #[tokio::test]
    async fn a_history_page_goes_to_its_requester_only() {
        let hub = ApiHub::new(Limits::default());
        let (asker, asker_q) = hub.subscribe().unwrap();
        let (_, other_q) = hub.subscribe().unwrap();
        for q in [&asker_q, &other_q] {
            let Outgoing::Text(hello) = q.next().await else {
                panic!()
            };
            assert!(hello.contains("\"hello\""));
        }
        hub.expect_history(PendingHistory {
            conversation: 2,
            client: asker,
            limit: 2,
            before: 1,
            reply: json!(7),
            since: Instant::now(),
        });
        let line = |t: &str| engine::events::HistoryLine {
            at_ms: 0,
            from: "bob".into(),
            text: t.into(),
            outgoing: false,
            acked: true,
        };
        let conv = ConvRef {
            number: 2,
            id: String::new(),
            label: "r".into(),
        };
        let event = Event::History {
            lines: vec![line("a"), line("b"), line("c"), line("d")],
        };
        assert!(hub.publish(Some(&conv), &event));
        let Outgoing::Text(page) = asker_q.next().await else {
            panic!()
        };
        let page: Value = serde_json::from_str(&page).unwrap();
        let texts: Vec<&str> = page["lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["text"].as_str().unwrap())
            .collect();
        assert_eq!(texts, ["b", "c"]);
        assert_eq!(page["more"], true);
        assert_eq!(page["reply"], 7);
        assert_eq!(other_q.waiting_bytes(), 0);
        // No request waits now: the next history is everybody's.
        assert!(!hub.publish(Some(&conv), &event));
    }
}
