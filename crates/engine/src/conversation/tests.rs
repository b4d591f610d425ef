//! Conversation cores run against each other in memory: links are queues of
//! records between cores, the store a temporary SQLite file, no sockets; and
//! the shared conversation typed text is written through.

use dhke::Identity;
use wire::group::Summary;

use super::*;

#[test]
fn a_big_catchup_is_split_into_records_that_fit() {
    let id = Identity::generate(&mut rand::rngs::OsRng);
    let mut log = GroupLog::new([1; 32], id.public().0);
    for i in 0..40 {
        log.write(&id, "x".repeat(16 * 1024 - (i % 3)), i as u64)
            .unwrap();
    }
    let all = log.missing_for(&Summary::default(), usize::MAX);
    let parts = split_catchup(all.clone());
    assert!(parts.len() > 10, "{} parts", parts.len());
    for part in &parts {
        let bytes = wire::encode(&PeerMsg::GroupCatchup(part.clone())).unwrap();
        assert!(bytes.len() <= wire::peer::MAX_PLAINTEXT, "{}", bytes.len());
    }
    let rejoined: Vec<_> = parts.into_iter().flat_map(|p| p.msgs).collect();
    assert_eq!(rejoined, all.msgs);
    assert!(split_catchup(Catchup::default()).is_empty());
}

/// A history file in its own temporary directory, removed on drop.
struct TempStore {
    dir: std::path::PathBuf,
}

impl TempStore {
    fn new(label: &str) -> TempStore {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "p2pchat-conversation-{label}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        TempStore { dir }
    }

    fn open(&self) -> History {
        History::open(&self.dir.join("history.sqlite3")).expect("open the history")
    }
}

impl Drop for TempStore {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One member: its core, its store, and every event it showed.
struct Member {
    name: &'static str,
    identity: Identity,
    kind: Kind,
    conversation: [u8; 32],
    core: Core,
    db: History,
    store: TempStore,
    events: Vec<Event>,
}

impl Member {
    fn new(name: &'static str, seed: u8, kind: Kind, conversation: [u8; 32]) -> Member {
        let store = TempStore::new(name);
        let db = store.open();
        let identity = Identity::from_seed(&[seed; 32]);
        let (core, fx) = Core::open(
            conversation,
            kind,
            identity.clone(),
            name,
            "room",
            Some(&db),
        )
        .unwrap();
        assert!(fx.sends.is_empty());
        Member {
            name,
            identity,
            kind,
            conversation,
            core,
            db,
            store,
            events: fx.events,
        }
    }

    /// The process ends and starts again: a new core from the same store.
    fn restart(&mut self) {
        self.db = self.store.open();
        let (core, fx) = Core::open(
            self.conversation,
            self.kind,
            self.identity.clone(),
            self.name,
            "room",
            Some(&self.db),
        )
        .unwrap();
        self.core = core;
        self.events.extend(fx.events);
    }

    fn key(&self) -> IdentityKey {
        self.identity.public()
    }

    /// Texts shown as the others' messages, in screen order.
    fn received(&self) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Message { text, .. } => Some(text.clone()),
                Event::GroupMessage {
                    text, own: false, ..
                } => Some(text.clone()),
                _ => None,
            })
            .collect()
    }

    fn acks(&self) -> Vec<u64> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Ack { id } => Some(*id),
                _ => None,
            })
            .collect()
    }

    fn sent_ids(&self) -> Vec<u64> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Sent { id, .. } => Some(*id),
                _ => None,
            })
            .collect()
    }
}

/// Links between members as in-memory queues of records. A link is named on
/// each side by a serial: member `i`'s link to `j` is `100 * session + j`.
struct Net {
    members: Vec<Member>,
    /// Live links: (x, y) → x's serial for its link to y.
    up: HashMap<(usize, usize), u64>,
    /// Records in flight: (from, to, record).
    wire: std::collections::VecDeque<(usize, usize, PeerMsg)>,
    session: u64,
}

impl Net {
    fn new(members: Vec<Member>) -> Net {
        Net {
            members,
            up: HashMap::new(),
            wire: Default::default(),
            session: 0,
        }
    }

    fn serial(&self, to: usize) -> u64 {
        100 * self.session + to as u64
    }

    /// Does what member `i`'s core asked.
    fn apply(&mut self, i: usize, fx: Effects) {
        self.members[i].events.extend(fx.events);
        for (to, msg) in fx.sends {
            let targets: Vec<usize> = self
                .up
                .iter()
                .filter(|((from, _), _)| *from == i)
                .filter(|((_, j), _)| match &to {
                    To::Link(s) => *s % 100 == *j as u64,
                    To::AllBut(except) => except.map_or(true, |s| s % 100 != *j as u64),
                })
                .map(|((_, j), _)| *j)
                .collect();
            for j in targets {
                self.wire.push_back((i, j, msg.clone()));
            }
        }
    }

    /// A new session between `a` and `b`: both sides swap summaries.
    fn link(&mut self, a: usize, b: usize) {
        self.session += 1;
        for (x, y) in [(a, b), (b, a)] {
            self.up.insert((x, y), self.serial(y));
        }
        for (x, y) in [(a, b), (b, a)] {
            let serial = self.up[&(x, y)];
            let (key, name) = (self.members[y].key(), self.members[y].name);
            let fx = self.members[x].core.link_up(serial, key, name);
            self.apply(x, fx);
        }
    }

    /// The link between `a` and `b` is cut: what was in flight on it is lost.
    fn cut(&mut self, a: usize, b: usize) {
        self.wire
            .retain(|(f, t, _)| !((*f == a && *t == b) || (*f == b && *t == a)));
        for (x, y) in [(a, b), (b, a)] {
            if let Some(serial) = self.up.remove(&(x, y)) {
                self.members[x].core.link_down(serial);
            }
        }
    }

    /// Delivers up to `n` records; returns how many were delivered.
    fn pump_n(&mut self, n: usize) -> usize {
        for done in 0..n {
            let Some((from, to, msg)) = self.wire.pop_front() else {
                return done;
            };
            // The receiver's name for the link it came on.
            let Some(serial) = self.up.get(&(to, from)).copied() else {
                continue;
            };
            let m = &mut self.members[to];
            let fx = m
                .core
                .on_peer(serial, msg, 0, Some(&m.db))
                .unwrap_or_else(|why| panic!("{} cut a link off: {why}", m.name));
            self.apply(to, fx);
        }
        n
    }

    /// Delivers until nothing is in flight (bounded: an endless exchange fails).
    fn pump(&mut self) {
        let n = self.pump_n(100_000);
        assert!(n < 100_000, "the cores never went quiet");
    }

    fn write(&mut self, i: usize, text: &str) {
        let linked = self.up.keys().any(|(f, _)| *f == i);
        let m = &mut self.members[i];
        let fx = m.core.write(text.to_owned(), linked, Some(&m.db));
        self.apply(i, fx);
    }
}

fn texts(prefix: &str, range: std::ops::RangeInclusive<u32>) -> Vec<String> {
    range.map(|i| format!("{prefix} {i}")).collect()
}

const PAIR: [u8; 32] = [7; 32];

fn pair() -> Net {
    Net::new(vec![
        Member::new("alice", 1, Kind::Pair, PAIR),
        Member::new("bob", 2, Kind::Pair, PAIR),
    ])
}

#[test]
fn every_message_arrives_exactly_once_in_order_across_a_cut() {
    let mut net = pair();
    net.link(0, 1);
    net.pump();
    for t in texts("before", 1..=10) {
        net.write(0, &t);
    }
    // Some records reach bob, the rest (messages and receipts) are lost.
    net.pump_n(4);
    net.cut(0, 1);
    assert!(!net.members[1].received().is_empty());
    assert!(net.members[1].received().len() < 10);
    for t in texts("offline", 1..=5) {
        net.write(0, &t);
    }
    net.link(0, 1);
    net.pump();
    let mut want = texts("before", 1..=10);
    want.extend(texts("offline", 1..=5));
    assert_eq!(net.members[1].received(), want);
    // Every message acked once, by its seq, as `sent` numbered it.
    let ids: Vec<u64> = (1..=15).collect();
    assert_eq!(net.members[0].sent_ids(), ids);
    assert_eq!(net.members[0].acks(), ids);
    assert_eq!(net.members[0].core.unacked(), 0);
    // A second reconnect brings nothing again.
    net.cut(0, 1);
    net.link(0, 1);
    net.pump();
    assert_eq!(net.members[1].received().len(), 15);
    assert_eq!(net.members[0].acks().len(), 15);
}

#[test]
fn messages_typed_before_any_session_go_out_when_one_comes_up() {
    let mut net = pair();
    for t in texts("early", 1..=3) {
        net.write(1, &t);
    }
    let pending: Vec<bool> = net.members[1]
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Sent { pending, .. } => Some(*pending),
            _ => None,
        })
        .collect();
    assert_eq!(pending, [true, true, true]);
    assert!(net.members[0].received().is_empty());
    net.link(0, 1);
    net.pump();
    assert_eq!(net.members[0].received(), texts("early", 1..=3));
    assert_eq!(net.members[1].acks(), [1, 2, 3]);
}

#[test]
fn a_restarted_side_catches_up_once_and_continues_its_numbers() {
    let mut net = pair();
    net.link(0, 1);
    net.write(0, "a1");
    net.write(1, "b1");
    net.write(1, "b2");
    net.pump();
    // Bob's process dies (nothing in flight is kept) and alice writes meanwhile.
    net.cut(0, 1);
    net.write(0, "a2");
    net.write(0, "a3");
    net.members[1].restart();
    // What bob had is back from his store (shown as history, not as new).
    let restored = net.members[1]
        .events
        .iter()
        .any(|e| matches!(e, Event::History { lines } if lines.iter().any(|l| l.text == "a1")));
    assert!(restored, "the stored window is shown again");
    net.link(0, 1);
    net.pump();
    assert_eq!(net.members[1].received(), ["a1", "a2", "a3"]);
    // Bob's counter continues: his next message is number 3, shown once.
    net.write(1, "b3");
    net.pump();
    assert_eq!(*net.members[1].sent_ids().last().unwrap(), 3);
    assert_eq!(net.members[0].received(), ["b1", "b2", "b3"]);
    assert_eq!(net.members[1].acks(), [1, 2, 3]);
    // Alice restarts too: nothing is shown twice, no ack repeats.
    net.cut(0, 1);
    net.members[0].restart();
    net.link(0, 1);
    net.pump();
    assert_eq!(net.members[0].received(), ["b1", "b2", "b3"]);
    assert_eq!(net.members[0].acks(), [1, 2, 3]);
    assert_eq!(net.members[0].core.unacked(), 0);
}

#[test]
fn a_message_of_another_conversation_is_refused_and_blames_the_link() {
    let mut net = pair();
    net.link(0, 1);
    net.pump();
    // Bob's identity, but a log of another conversation.
    let (mut other, _) = Core::open(
        [8; 32],
        Kind::Pair,
        net.members[1].identity.clone(),
        "bob",
        "room",
        None,
    )
    .unwrap();
    let fx = other.write("elsewhere".into(), true, None);
    let (_, msg) = fx.sends.into_iter().next().unwrap();
    let serial = net.up[&(0, 1)];
    let alice = &mut net.members[0];
    let err = alice
        .core
        .on_peer(serial, msg, 0, Some(&alice.db))
        .unwrap_err();
    assert_eq!(err, GroupError::OtherConversation.to_string());
    assert!(alice.received().is_empty());
    assert!(alice
        .db
        .conversation_lines(&[8; 32], 10)
        .unwrap()
        .is_empty());
}

#[test]
fn three_members_catch_up_through_each_other_after_a_restart() {
    let group = [9u8; 32];
    let mut net = Net::new(vec![
        Member::new("ann", 1, Kind::Group, group),
        Member::new("ben", 2, Kind::Group, group),
        Member::new("cat", 3, Kind::Group, group),
    ]);
    net.link(0, 1);
    net.link(1, 2);
    net.link(0, 2);
    net.pump();
    net.write(0, "ann 1");
    net.pump();
    // Cat goes away; ann and ben go on.
    net.cut(0, 2);
    net.cut(1, 2);
    net.write(0, "ann 2");
    net.write(1, "ben 1");
    net.pump();
    // Ann leaves too; cat restarts and meets only ben, who holds ann's messages.
    net.cut(0, 1);
    net.members[2].restart();
    net.link(1, 2);
    net.pump();
    // Each once, in the shared order (ann 2 and ben 1 are concurrent: the
    // order every member computes alike puts them as ben stored them).
    let shared: Vec<String> = net.members[1]
        .db
        .conversation_lines(&group, 10)
        .unwrap()
        .into_iter()
        .map(|l| l.text)
        .collect();
    assert_eq!(shared.len(), 3);
    assert_eq!(net.members[2].received(), shared);
    // Ack: another member holds it. Ann's first was acked before she left.
    assert_eq!(net.members[0].acks(), [1, 2]);
    assert_eq!(net.members[1].acks(), [1]);
    net.write(2, "cat 1");
    net.link(0, 1);
    net.pump();
    assert_eq!(net.members[0].received(), ["ben 1", "cat 1"]);
}

/// docs/protocol.md §7.1: a receipt's bytes.
#[test]
fn receipt_vector() {
    let mut core = Member::new("alice", 1, Kind::Pair, PAIR).core;
    core.link_up(5, Identity::from_seed(&[2; 32]).public(), "bob");
    let mut fx = Effects::default();
    core.receipt(5, &mut fx);
    assert_eq!(fx.sends.len(), 1);
    let theirs = PeerMsg::GroupCatchup(Catchup {
        have: vec![([0xAA; 32], 1)],
        ..Catchup::default()
    });
    let mut want = vec![0x0F, 0x01];
    want.extend([0xAA; 32]);
    want.extend([0x01, 0x00, 0x00, 0x00]);
    assert_eq!(wire::encode(&theirs).unwrap(), want);
    // Ours has the same shape: only `have`.
    let PeerMsg::GroupCatchup(c) = &fx.sends[0].1 else {
        panic!("a receipt is a catch-up")
    };
    assert!(c.floor.is_empty() && c.msgs.is_empty() && !c.more);
}

/// A mailbox between two members in memory: what one leaves, sealed for the
/// other's queue as docs/protocol.md §22 says, the other opens.
fn through_mailbox(to: &Member, records: Vec<PeerMsg>) -> Vec<PeerMsg> {
    let queue = wire::mailbox::Queue::of(&to.conversation, &to.key());
    records
        .iter()
        .map(|r| queue.seal(&wire::encode(r).unwrap()).unwrap())
        .map(|sealed| wire::decode(&queue.open(&sealed).unwrap()).unwrap())
        .collect()
}

#[test]
fn messages_left_at_the_mailbox_arrive_once_in_order_and_the_receipt_comes_back() {
    let mut net = pair();
    // Alice writes while bob is away, restarts in between.
    for t in texts("offline", 1..=2) {
        net.write(0, &t);
    }
    net.members[0].restart();
    net.write(0, "offline 3");
    let left: Vec<PeerMsg> = net.members[0]
        .core
        .unacked_own()
        .into_iter()
        .map(PeerMsg::Group)
        .collect();
    assert_eq!(left.len(), 3, "the restart kept what bob does not hold");

    // Bob fetches them twice (a crash between storing and removing).
    let fetched = through_mailbox(&net.members[1], left);
    let bob = &mut net.members[1];
    let fx = bob.core.from_mailbox(fetched.clone(), Some(&bob.db));
    let receipts: Vec<PeerMsg> = fx
        .sends
        .iter()
        .filter(|(to, _)| *to == To::Link(MAILBOX))
        .map(|(_, m)| m.clone())
        .filter(|m| matches!(m, PeerMsg::GroupCatchup(_)))
        .collect();
    bob.events.extend(fx.events);
    let again = bob.core.from_mailbox(fetched, Some(&bob.db));
    bob.events.extend(again.events);
    assert_eq!(bob.received(), texts("offline", 1..=3));

    // His receipt, left in alice's queue, acks all three.
    let receipt = receipts.last().cloned().expect("a receipt for the author");
    let back = through_mailbox(&net.members[0], vec![receipt]);
    let alice = &mut net.members[0];
    let fx = alice.core.from_mailbox(back, Some(&alice.db));
    alice.events.extend(fx.events);
    assert_eq!(alice.acks(), [1, 2, 3]);
    assert!(alice.core.unacked_own().is_empty());
}

#[test]
fn a_record_of_another_conversation_from_the_mailbox_is_refused_and_shown() {
    let mut net = pair();
    let mut stranger = Member::new("mallory", 9, Kind::Pair, [8; 32]);
    let fx = stranger
        .core
        .write("elsewhere".into(), false, Some(&stranger.db));
    stranger.events.extend(fx.events);
    let msg = stranger.core.unacked_own().remove(0);
    let bob = &mut net.members[1];
    let fx = bob
        .core
        .from_mailbox(vec![PeerMsg::Group(msg)], Some(&bob.db));
    assert!(fx
        .events
        .iter()
        .any(|e| matches!(e, Event::Error { code, .. } if code == "mailbox")));
    bob.events.extend(fx.events);
    assert!(bob.received().is_empty());
}

/// Every event a [`Shared`] conversation showed.
#[derive(Default)]
struct Shown(std::sync::Mutex<Vec<Event>>);

impl crate::events::Frontend for Shown {
    fn show(&self, _conv: Option<&crate::events::ConvRef>, event: &Event) {
        self.0.lock().unwrap().push(event.clone());
    }
}

impl Shown {
    fn errors(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                Event::Error { code, .. } => Some(code.clone()),
                _ => None,
            })
            .collect()
    }
}

/// A conversation as the messenger and its task share it, with its store.
fn shared(name: &'static str, seed: u8, kind: Kind) -> (Shared, std::sync::Arc<Shown>, TempStore) {
    let store = TempStore::new(name);
    let db = store.open();
    let identity = Identity::from_seed(&[seed; 32]);
    let (core, _) = Core::open([7; 32], kind, identity, name, "room", Some(&db)).unwrap();
    let shown = std::sync::Arc::new(Shown::default());
    let shared = Shared::new(Events::new(shown.clone()));
    shared.set_store(Some(db));
    shared.state().core = Some(core);
    shared.set_ready();
    (shared, shown, store)
}

/// The texts of the log messages queued on a link.
fn queued_texts(rx: &mut tokio::sync::mpsc::Receiver<(PeerMsg, usize)>) -> Vec<String> {
    let mut texts = Vec::new();
    while let Ok((msg, _)) = rx.try_recv() {
        if let PeerMsg::Group(m) = msg {
            texts.push(m.body.text);
        }
    }
    texts
}

#[tokio::test]
async fn typed_text_goes_from_the_shared_conversation_to_every_link_and_the_store() {
    let (alice, shown, store) = shared("say", 1, Kind::Group);
    let (one, mut rx_one) = LinkSender::channel(16);
    let (two, mut rx_two) = LinkSender::channel(16);
    alice.link_up(1, one);
    alice.link_up(2, two);
    alice.say("hello").await;
    alice.say("//starts with a slash").await;
    alice.say("").await;
    alice.link_down(2);
    alice.say("only one link now").await;
    assert_eq!(
        queued_texts(&mut rx_one),
        ["hello", "/starts with a slash", "only one link now"]
    );
    assert_eq!(queued_texts(&mut rx_two), ["hello", "/starts with a slash"]);
    // Each write is left for the task (the mailbox, for a member away).
    assert_eq!(alice.take_written().len(), 3);
    assert!(alice.take_written().is_empty());
    // Shown as our group messages, and on disk: a restart restores them.
    let own: Vec<String> = shown
        .0
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            Event::GroupMessage {
                text, own: true, ..
            } => Some(text.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(own, ["hello", "/starts with a slash", "only one link now"]);
    let db = store.open();
    let identity = Identity::from_seed(&[1; 32]);
    let (core, _) = Core::open([7; 32], Kind::Group, identity, "say", "room", Some(&db)).unwrap();
    assert_eq!(core.own_last(), 3);
    // Too long: refused with a word, nothing queued.
    alice.say(&"x".repeat(MAX_CHAT_TEXT + 1)).await;
    assert_eq!(shown.errors(), ["too_long"]);
    assert!(queued_texts(&mut rx_one).is_empty());
}

#[tokio::test]
async fn typing_waits_while_too_many_are_unconfirmed_and_goes_on_once_they_are_held() {
    let (alice, shown, _store) = shared("wait", 1, Kind::Pair);
    let mut bob = Member::new("bob", 2, Kind::Pair, [7; 32]);
    for i in 0..MAX_UNACKED {
        alice.say(&format!("m{i}")).await;
    }
    assert!(!alice.state().accepts());
    let more = alice.say("one more");
    tokio::pin!(more);
    assert!(futures::poll!(more.as_mut()).is_pending(), "typing waits");
    // Bob gets them all over a link, and his receipt says he holds them.
    let alice_key = Identity::from_seed(&[1; 32]).public();
    let _ = bob.core.link_up(1, alice_key, "alice");
    let _ = alice
        .state()
        .core
        .as_mut()
        .unwrap()
        .link_up(1, bob.key(), "bob");
    let mut receipt = None;
    for msg in alice.take_written() {
        let fx = bob.core.on_peer(1, msg, 0, Some(&bob.db)).unwrap();
        bob.events.extend(fx.events);
        receipt = fx
            .sends
            .into_iter()
            .map(|(_, m)| m)
            .rfind(|m| matches!(m, PeerMsg::GroupCatchup(_)))
            .or(receipt);
    }
    assert_eq!(bob.received().len() as u64, MAX_UNACKED);
    let fx = {
        let mut state = alice.state();
        let core = state.core.as_mut().unwrap();
        core.on_peer(1, receipt.expect("a receipt"), 0, None)
            .unwrap()
    };
    assert!(fx.events.iter().any(|e| matches!(e, Event::Ack { .. })));
    assert!(futures::poll!(more.as_mut()).is_ready(), "room again");
    let sent = shown
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|e| matches!(e, Event::Sent { .. }))
        .count() as u64;
    assert_eq!(sent, MAX_UNACKED + 1);
}

#[tokio::test]
async fn a_conversation_that_ended_lets_waiting_typists_go_and_refuses_more() {
    let (alice, shown, _store) = shared("closed", 1, Kind::Pair);
    for i in 0..MAX_UNACKED {
        alice.say(&format!("m{i}")).await;
    }
    let waiting = alice.say("waiting");
    tokio::pin!(waiting);
    assert!(futures::poll!(waiting.as_mut()).is_pending());
    drop(alice.closing());
    assert!(futures::poll!(waiting.as_mut()).is_ready());
    alice.say("late").await;
    assert_eq!(shown.errors(), ["not_sent", "not_sent"]);
}

#[test]
fn a_line_is_a_command_unless_it_starts_with_two_slashes() {
    assert_eq!(command("/send a.txt"), Some("send a.txt"));
    assert_eq!(command("/quit"), Some("quit"));
    assert_eq!(command("//not a command"), None);
    assert_eq!(command("hello /there"), None);
}
