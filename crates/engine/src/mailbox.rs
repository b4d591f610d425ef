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

/// What the conversation asks of its mailbox.
#[derive(Debug)]
pub enum Job {
    /// Open our queue and fetch the oldest of what waits there.
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
    while let Some(job) = jobs.recv().await {
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
