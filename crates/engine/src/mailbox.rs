//! A conversation's side of the offline mailbox (docs/protocol.md §22): one
//! task per conversation that talks to the mediator's mailbox for it, in
//! order. It opens and empties our own queue ([`Job::Collect`], then
//! [`Job::Remove`] once what came is stored), and leaves log messages and
//! receipts in another member's queue ([`Job::Deposit`]). What it learns comes
//! back as [`News`]; the conversation's loop feeds fetched records through its
//! log like a link's, so signatures, dedup and order are the log's.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dhke::{Identity, IdentityKey};
use tokio::sync::mpsc;
use wire::mailbox::{self, Queue};
use wire::{ClientMsg, ErrorCode, MediatorMsg, PeerMsg};

use crate::error::ClientError;
use crate::events::Event;
use crate::rendezvous::MediatorLink;

/// Jobs waiting for the task; a conversation that makes more waits.
const JOBS: usize = 256;
/// Tries of one job when the connection breaks (each on a new connection).
const TRIES: u32 = 3;
/// The wait after a failed try, doubled each time.
const RETRY: Duration = Duration::from_millis(500);
/// Requests on one connection before a new one (the mediator takes 256).
const REQUESTS_PER_LINK: u32 = 200;
/// A collect this soon after one that emptied the queue is skipped. A
/// conversation collects when it starts and again when a session begins,
/// usually milliseconds apart; what the peer left in between reaches us
/// through that session's catch-up, and the next collect clears it.
const FRESH: Duration = Duration::from_secs(2);

/// What the conversation asks of its mailbox.
#[derive(Debug)]
pub enum Job {
    /// Open our queue and fetch the oldest of what waits there; skipped
    /// within [`FRESH`] of a fetch that left nothing more.
    Collect,
    /// Remove fetched items, by id, once they are stored.
    Remove(Vec<[u8; 16]>),
    /// Leave `msg` in `recipient`'s queue; `seq` names our message it carries
    /// (none for a receipt).
    Deposit {
        recipient: IdentityKey,
        seq: Option<u64>,
        msg: Box<PeerMsg>,
    },
}

/// What the mailbox tells the conversation.
#[derive(Debug)]
pub enum News {
    /// Records from our queue, oldest first; `ids` names every item fetched
    /// (to remove once the records are stored), `dropped` counts the items
    /// that failed their seal or were no log record; `more` wait.
    Fetched {
        records: Vec<PeerMsg>,
        ids: Vec<[u8; 16]>,
        dropped: usize,
        more: bool,
    },
    /// Our message `seq` waits at the mailbox until `expires_unix`.
    Stored { seq: u64, expires_unix: u64 },
    /// The mediator had given our message `seq` out already.
    Taken { seq: u64 },
    /// Our receipt is in the peer's queue (or was taken already).
    ReceiptLeft,
    /// A job failed for good (the mediator refused, or could not be reached):
    /// a deposit of our message `seq`, of a receipt, or a collect.
    Failed {
        seq: Option<u64>,
        receipt: bool,
        why: ClientError,
    },
}

/// What a conversation keeps of its mailbox: where its jobs go, and what
/// comes back.
#[derive(Debug)]
pub struct Mailbox {
    jobs: mpsc::Sender<Job>,
    news: mpsc::Receiver<News>,
}

impl Mailbox {
    /// Starts the mailbox task of conversation `conversation` at `server`, for
    /// us (`me`), and asks it to empty our queue. The task ends with the
    /// handle.
    pub fn start(server: String, conversation: [u8; 32], me: Identity) -> Mailbox {
        let (jobs, rx) = mpsc::channel(JOBS);
        let (news_tx, news) = mpsc::channel(JOBS);
        tokio::spawn(run(server, conversation, me, rx, news_tx));
        let mailbox = Mailbox { jobs, news };
        mailbox.ask(Job::Collect);
        mailbox
    }

    /// Queues a job; a full queue drops it (the next collect or session end
    /// asks again) and says so.
    pub fn ask(&self, job: Job) -> bool {
        self.jobs.try_send(job).is_ok()
    }

    /// After a `Fetched` whose records are stored: the items go, the rest of
    /// the queue is asked for, and an error event says how many items were
    /// dropped unread, if any.
    pub fn fetched(&self, ids: Vec<[u8; 16]>, dropped: usize, more: bool) -> Option<Event> {
        if !ids.is_empty() {
            self.ask(Job::Remove(ids));
        }
        if more {
            self.ask(Job::Collect);
        }
        (dropped > 0).then(|| Event::Error {
            code: "mailbox".into(),
            text: format!(
                "{dropped} item(s) at the mailbox were not for us or damaged, and were dropped"
            ),
        })
    }
}

/// The next thing `mailbox` reports; never without one (a conversation's
/// loop selects on it either way).
pub async fn news(mailbox: &mut Option<Mailbox>) -> Option<News> {
    match mailbox {
        Some(m) => m.news.recv().await,
        None => std::future::pending().await,
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Our own queue's keys and read key in one conversation.
struct Own {
    queue: Queue,
    read: Identity,
}

async fn run(
    server: String,
    conversation: [u8; 32],
    me: Identity,
    mut jobs: mpsc::Receiver<Job>,
    news: mpsc::Sender<News>,
) {
    let queue = Queue::of(&conversation, &me.public());
    let own = Own {
        read: mailbox::read_key(&me, &queue.id()),
        queue,
    };
    let mut link: Option<(MediatorLink, u32)> = None;
    let mut opened = false;
    let mut emptied: Option<tokio::time::Instant> = None;
    while let Some(job) = jobs.recv().await {
        if matches!(job, Job::Collect) && emptied.is_some_and(|at| at.elapsed() < FRESH) {
            continue;
        }
        let (seq, receipt) = match &job {
            Job::Deposit { seq, .. } => (*seq, seq.is_none()),
            _ => (None, false),
        };
        let mut tries = 0;
        let done = loop {
            tries += 1;
            match step(&server, &conversation, &own, &job, &mut link, &mut opened).await {
                Ok(done) => break Some(done),
                // A refusal is the mediator's answer: trying again changes nothing.
                Err(why @ ClientError::MediatorRefused { .. }) => {
                    break Some(Done::News(News::Failed { seq, receipt, why }))
                }
                Err(why) if tries >= TRIES => {
                    break Some(Done::News(News::Failed { seq, receipt, why }))
                }
                Err(_) => {
                    link = None;
                    tokio::time::sleep(RETRY * 2u32.pow(tries - 1)).await;
                }
            }
        };
        if let Some(Done::News(n)) = done {
            if let News::Fetched { more, .. } = &n {
                emptied = (!more).then(tokio::time::Instant::now);
            }
            if news.send(n).await.is_err() {
                return;
            }
        }
    }
}

/// What one job came to.
enum Done {
    News(News),
    Quiet,
}

/// One job on the current link (a new one when there is none or it has
/// served its share of requests).
async fn step(
    server: &str,
    conversation: &[u8; 32],
    own: &Own,
    job: &Job,
    link: &mut Option<(MediatorLink, u32)>,
    opened: &mut bool,
) -> Result<Done, ClientError> {
    if link
        .as_ref()
        .map_or(true, |(_, used)| *used >= REQUESTS_PER_LINK)
    {
        *link = Some((MediatorLink::for_mailbox(server).await?, 0));
        *opened = false;
    }
    let (conn, used) = link.as_mut().expect("a link was just made");
    match job {
        Job::Collect => {
            if !*opened {
                *used += 1;
                conn.mailbox_request(&open_request(own)).await?;
                *opened = true;
            }
            *used += 1;
            let at = now_unix();
            let id = own.queue.id();
            let fetch = ClientMsg::MailboxFetch {
                queue: id,
                at,
                sig: mailbox::sign(&own.read, &mailbox::fetch_signed(&id, at)),
            };
            match conn.mailbox_request(&fetch).await? {
                MediatorMsg::MailboxItems { items, more } => {
                    let mut records = Vec::new();
                    let ids: Vec<[u8; 16]> = items.iter().map(|item| item.id).collect();
                    for item in items {
                        let record = own
                            .queue
                            .open(&item.sealed)
                            .ok()
                            .and_then(|plain| wire::decode::<PeerMsg>(&plain).ok());
                        // Not ours to read, or not a log record: removed with
                        // the rest, never shown.
                        if let Some(r @ (PeerMsg::Group(_) | PeerMsg::GroupCatchup(_))) = record {
                            records.push(r);
                        }
                    }
                    let dropped = ids.len() - records.len();
                    Ok(Done::News(News::Fetched {
                        records,
                        ids,
                        dropped,
                        more,
                    }))
                }
                other => Err(unexpected(&other)),
            }
        }
        Job::Remove(ids) => {
            for chunk in ids.chunks(mailbox::MAX_REMOVE) {
                *used += 1;
                let at = now_unix();
                let id = own.queue.id();
                let remove = ClientMsg::MailboxRemove {
                    queue: id,
                    at,
                    ids: chunk.to_vec(),
                    sig: mailbox::sign(&own.read, &mailbox::remove_signed(&id, at, chunk)),
                };
                match conn.mailbox_request(&remove).await? {
                    MediatorMsg::MailboxRemoved { .. } => {}
                    other => return Err(unexpected(&other)),
                }
            }
            Ok(Done::Quiet)
        }
        Job::Deposit {
            recipient,
            seq,
            msg,
        } => {
            let queue = Queue::of(conversation, recipient);
            let plain = wire::encode(msg.as_ref()).map_err(|e| ClientError::Internal(e.into()))?;
            let sealed = match queue.seal(&plain) {
                Ok(sealed) => sealed,
                Err(e) => {
                    return Ok(Done::News(News::Failed {
                        seq: *seq,
                        receipt: seq.is_none(),
                        why: ClientError::Usage(format!(
                            "{e}: it waits for the other side to be online"
                        )),
                    }))
                }
            };
            let add_key = queue.add_key();
            let at = now_unix();
            let add = ClientMsg::MailboxAdd {
                queue: queue.id(),
                add_key: add_key.public().0,
                at,
                sig: mailbox::sign(&add_key, &mailbox::add_signed(&queue.id(), at, &sealed)),
                item: sealed,
            };
            *used += 1;
            match (conn.mailbox_request(&add).await, seq) {
                (Ok(MediatorMsg::MailboxStored { expires_unix, .. }), Some(seq)) => {
                    Ok(Done::News(News::Stored {
                        seq: *seq,
                        expires_unix,
                    }))
                }
                (Ok(MediatorMsg::MailboxStored { .. }), None) => Ok(Done::News(News::ReceiptLeft)),
                (Ok(other), _) => Err(unexpected(&other)),
                (
                    Err(ClientError::MediatorRefused {
                        code: ErrorCode::MailboxReplay,
                        ..
                    }),
                    Some(seq),
                ) => Ok(Done::News(News::Taken { seq: *seq })),
                (
                    Err(ClientError::MediatorRefused {
                        code: ErrorCode::MailboxReplay,
                        ..
                    }),
                    None,
                ) => Ok(Done::News(News::ReceiptLeft)),
                (Err(e), _) => Err(e),
            }
        }
    }
}

fn open_request(own: &Own) -> ClientMsg {
    let at = now_unix();
    let queue = own.queue.id();
    let add_key = own.queue.add_key().public().0;
    let read_key = own.read.public().0;
    ClientMsg::MailboxOpen {
        queue,
        add_key,
        read_key,
        at,
        sig: mailbox::sign(
            &own.read,
            &mailbox::open_signed(&queue, &add_key, &read_key, at),
        ),
    }
}

fn unexpected(msg: &MediatorMsg) -> ClientError {
    ClientError::Internal(anyhow::anyhow!(
        "the mediator answered a mailbox request with {msg:?}"
    ))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use futures::{SinkExt, StreamExt};
    use rand::rngs::OsRng;
    use tokio::net::TcpListener;
    use tokio_util::codec::Framed;
    use wire::{FrameCodec, Link};

    use super::*;

    /// A mediator's mailbox side reduced to its answers, on loopback: the
    /// first fetch says more wait, every later one that the queue is empty.
    /// Counts the fetches.
    async fn scripted_mediator() -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let fetches = Arc::new(AtomicUsize::new(0));
        let counted = fetches.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let mut framed = Framed::new(stream, FrameCodec::new(Link::Mediator));
                while let Some(Ok(frame)) = framed.next().await {
                    let answer = match wire::decode::<ClientMsg>(&frame).unwrap() {
                        ClientMsg::MailboxOpen { .. } => MediatorMsg::MailboxOpened { items: 0 },
                        ClientMsg::MailboxFetch { .. } => MediatorMsg::MailboxItems {
                            items: Vec::new(),
                            more: counted.fetch_add(1, Ordering::SeqCst) == 0,
                        },
                        ClientMsg::MailboxAdd { .. } => MediatorMsg::MailboxStored {
                            id: [0; 16],
                            expires_unix: 1,
                        },
                        other => panic!("not a mailbox request: {other:?}"),
                    };
                    let bytes = wire::encode(&answer).unwrap();
                    framed.send(bytes.as_slice()).await.unwrap();
                }
            }
        });
        (addr, fetches)
    }

    async fn next(mailbox: &mut Mailbox) -> News {
        tokio::time::timeout(Duration::from_secs(10), mailbox.news.recv())
            .await
            .expect("the mailbox task answers")
            .expect("the mailbox task runs")
    }

    #[tokio::test]
    async fn a_collect_right_after_an_emptying_fetch_is_skipped_but_not_one_after_more() {
        let (server, fetches) = scripted_mediator().await;
        let me = Identity::generate(&mut OsRng);
        let mut mailbox = Mailbox::start(server, [7; 32], me);
        // The start's collect: more wait, so the follow-up is not skipped.
        match next(&mut mailbox).await {
            News::Fetched { more: true, .. } => {}
            other => panic!("expected a fetch with more, got {other:?}"),
        }
        assert!(mailbox.fetched(Vec::new(), 0, true).is_none());
        match next(&mut mailbox).await {
            News::Fetched { more: false, .. } => {}
            other => panic!("expected the emptying fetch, got {other:?}"),
        }
        // A session begins at once: its collect would fetch the same again.
        assert!(mailbox.ask(Job::Collect));
        // A deposit behind it tells when the task has passed the collect.
        let peer = Identity::generate(&mut OsRng).public();
        assert!(mailbox.ask(Job::Deposit {
            recipient: peer,
            seq: Some(1),
            msg: Box::new(PeerMsg::Ping { nonce: 1 }),
        }));
        match next(&mut mailbox).await {
            News::Stored { seq: 1, .. } => {}
            other => panic!("expected the deposit, got {other:?}"),
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
    }
}
