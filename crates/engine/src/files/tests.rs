//! Sender and receiver threads together, in one process: round trips, resumes,
//! lying peers, failed checks, cancels, and `.part` files no offer can aim at.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use wire::peer::MAX_FILE_CHUNK;

use super::*;

/// A scratch directory removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let path = std::env::temp_dir().join(format!(
            "p2pchat-files-{tag}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&path).unwrap();
        Scratch(std::fs::canonicalize(&path).unwrap())
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Names of the entries in `sub`, sorted.
    fn list(&self, sub: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.join(sub))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Deterministic bytes that differ per position, so a misplaced chunk shows.
fn content(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0] ^ (i >> 16) as u8)
        .collect()
}

fn hash(data: &[u8]) -> [u8; 32] {
    *blake3::hash(data).as_bytes()
}

/// The sender of every download in these tests.
fn alice() -> PartScope {
    PartScope::new("alice")
}

/// Starts receiving transfer `id` from alice.
fn begin(dl: &Path, name: &str, size: u64, id: u64) -> Result<(IncomingFile, u64), FileError> {
    IncomingFile::begin(dl, name, size, alice(), id)
}

/// What an earlier run of this client left for transfer `id` from alice: our
/// `.part`, mode 0600, holding `data`.
fn leave_part(dl: &Path, id: u64, data: &[u8]) -> PathBuf {
    let part = part_path(dl, alice(), id);
    let _ = std::fs::remove_file(&part);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    std::io::Write::write_all(&mut options.open(&part).unwrap(), data).unwrap();
    part
}

/// Pumps every chunk from `source` into `sink`; the sender's final hash.
fn pump(source: &mut ChunkSource, sink: &mut IncomingFile) -> [u8; 32] {
    loop {
        match source.blocking_next().unwrap() {
            Outgoing::Chunk { offset, data } => {
                assert!(!data.is_empty() && data.len() <= MAX_FILE_CHUNK);
                sink.blocking_write(offset, data).unwrap();
            }
            Outgoing::Finished { blake3 } => return blake3,
        }
    }
}

fn send_file(scratch: &Scratch, name: &str, data: &[u8]) -> OutgoingFile {
    let path = scratch.join(name);
    std::fs::write(&path, data).unwrap();
    OutgoingFile::open(&path).unwrap()
}

#[test]
fn round_trips_are_byte_identical() {
    let scratch = Scratch::new("round");
    std::fs::create_dir(scratch.join("dl")).unwrap();
    let dl = scratch.join("dl");
    for (id, len) in [0, 1, MAX_FILE_CHUNK, 64 * 1024, 5 * 1024 * 1024 + 3]
        .into_iter()
        .enumerate()
    {
        let data = content(len);
        let name = format!("f{len}.bin");
        let out = send_file(&scratch, &name, &data);
        assert_eq!((out.name(), out.size()), (name.as_str(), len as u64));
        let (mut sink, offset) = begin(&dl, out.name(), out.size(), id as u64).unwrap();
        assert_eq!(offset, 0);
        let part = part_path(&dl, alice(), id as u64);
        assert_eq!(sink.part_path(), part);
        let mut source = out.start(offset).unwrap();
        let sent = pump(&mut source, &mut sink);
        assert_eq!(sent, hash(&data), "sender hashes the whole file");
        assert!(matches!(source.blocking_next(), Err(FileError::Stopped)));
        assert_eq!(sink.received(), len as u64);
        let path = sink.blocking_finish(sent).unwrap();
        assert_eq!(path, dl.join(&name));
        assert_eq!(std::fs::read(&path).unwrap(), data, "{len} bytes");
        assert!(!part.exists());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_round_trip_with_recycled_buffers() {
    let scratch = Scratch::new("async");
    let data = content(3 * MAX_FILE_CHUNK + 100);
    let out = send_file(&scratch, "a.bin", &data);
    let dl = scratch.join("dl");
    let (mut sink, offset) = begin(&dl, "a.bin", out.size(), 1).unwrap();
    let mut source = out.start(offset).unwrap();
    let sent = loop {
        match source.next().await.unwrap() {
            Outgoing::Chunk { offset, data } => {
                // The engine would encode and seal here, then give the buffer back.
                let copy = data.clone();
                source.recycle(data);
                sink.write(offset, copy).await.unwrap();
            }
            Outgoing::Finished { blake3 } => break blake3,
        }
    };
    let path = sink.finish(sent).await.unwrap();
    assert_eq!(std::fs::read(path).unwrap(), data);
}

#[test]
fn an_existing_file_is_never_overwritten() {
    let scratch = Scratch::new("exists");
    let dl = scratch.join("dl");
    std::fs::create_dir(&dl).unwrap();
    std::fs::write(dl.join("r.txt"), b"mine").unwrap();
    let out = send_file(&scratch, "r.txt", b"theirs");
    let (mut sink, _) = begin(&dl, "r.txt", 6, 1).unwrap();
    let sent = pump(&mut out.start(0).unwrap(), &mut sink);
    let path = sink.blocking_finish(sent).unwrap();
    assert_eq!(path, dl.join("r (1).txt"));
    assert_eq!(std::fs::read(dl.join("r.txt")).unwrap(), b"mine");
    assert_eq!(std::fs::read(path).unwrap(), b"theirs");
}

#[test]
fn resume_from_an_existing_part_hashes_the_whole_file() {
    let scratch = Scratch::new("resume");
    let dl = scratch.join("dl");
    std::fs::create_dir(&dl).unwrap();
    let data = content(5 * 1024 * 1024 + 3);
    let out = send_file(&scratch, "big.bin", &data);
    // Short prefixes and one much longer than the queue (hashed between chunks).
    for have in [1, MAX_FILE_CHUNK + 17, 4 * 1024 * 1024 + 5, data.len()] {
        leave_part(&dl, 9, &data[..have]);
        let (mut sink, offset) = begin(&dl, "big.bin", out.size(), 9).unwrap();
        assert_eq!(offset, have as u64, "accept at what the .part holds");
        let mut source = out.start(offset).unwrap();
        let first = source.blocking_next().unwrap();
        if let Outgoing::Chunk { offset: at, .. } = &first {
            assert_eq!(*at, have as u64, "the sender continues where we are");
        }
        let sent = match first {
            Outgoing::Chunk { offset, data } => {
                sink.blocking_write(offset, data).unwrap();
                pump(&mut source, &mut sink)
            }
            Outgoing::Finished { blake3 } => blake3,
        };
        assert_eq!(
            sent,
            hash(&data),
            "the sender's hash covers bytes before the offset"
        );
        let path = sink.blocking_finish(sent).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), data);
        std::fs::remove_file(path).unwrap();
        assert_eq!(scratch.list("dl"), Vec::<String>::new());
    }
}

#[test]
fn a_part_longer_than_the_offer_starts_over() {
    let scratch = Scratch::new("longer");
    let dl = scratch.join("dl");
    std::fs::create_dir(&dl).unwrap();
    leave_part(&dl, 3, &[1u8; 1000]);
    let data = content(10);
    let out = send_file(&scratch, "x", &data);
    let (mut sink, offset) = begin(&dl, "x", 10, 3).unwrap();
    assert_eq!(offset, 0);
    assert_eq!(std::fs::metadata(sink.part_path()).unwrap().len(), 0);
    let sent = pump(&mut out.start(0).unwrap(), &mut sink);
    assert_eq!(
        std::fs::read(sink.blocking_finish(sent).unwrap()).unwrap(),
        data
    );
}

#[test]
fn a_resumed_part_from_another_file_fails_the_check_and_is_deleted() {
    let scratch = Scratch::new("otherpart");
    let dl = scratch.join("dl");
    std::fs::create_dir(&dl).unwrap();
    leave_part(&dl, 4, b"not the same bytes");
    let data = content(100_000);
    let out = send_file(&scratch, "y", &data);
    let (mut sink, offset) = begin(&dl, "y", out.size(), 4).unwrap();
    assert_eq!(offset, 18);
    let sent = pump(&mut out.start(offset).unwrap(), &mut sink);
    assert!(matches!(
        sink.blocking_finish(sent),
        Err(FileError::HashMismatch)
    ));
    assert_eq!(scratch.list("dl"), Vec::<String>::new());
}

#[test]
fn lying_offsets_and_sizes_are_refused_and_nothing_lands_past_the_size() {
    let scratch = Scratch::new("lies");
    let dl = scratch.join("dl");
    let (mut sink, _) = begin(&dl, "z", 100, 5).unwrap();
    sink.blocking_write(0, vec![1; 40]).unwrap();
    // A gap, a rewind, a chunk past the offered size, an overflowing offset.
    assert!(matches!(
        sink.blocking_write(50, vec![2; 10]),
        Err(FileError::OffsetMismatch {
            expected: 40,
            got: 50
        })
    ));
    assert!(matches!(
        sink.blocking_write(0, vec![2; 10]),
        Err(FileError::OffsetMismatch {
            expected: 40,
            got: 0
        })
    ));
    assert!(matches!(
        sink.blocking_write(40, vec![3; 61]),
        Err(FileError::PastEnd {
            end: 101,
            size: 100
        })
    ));
    assert!(matches!(
        sink.blocking_write(u64::MAX, vec![3; 2]),
        Err(FileError::OffsetMismatch { .. })
    ));
    assert_eq!(sink.received(), 40);
    let part = sink.cancel(true).unwrap();
    assert_eq!(std::fs::read(part).unwrap(), vec![1; 40]);
}

#[test]
fn a_hash_mismatch_keeps_no_final_file_and_no_part() {
    let scratch = Scratch::new("mismatch");
    let dl = scratch.join("dl");
    let data = content(200_000);
    let out = send_file(&scratch, "m.bin", &data);
    let (mut sink, _) = begin(&dl, "m.bin", out.size(), 6).unwrap();
    let mut sent = pump(&mut out.start(0).unwrap(), &mut sink);
    sent[0] ^= 1;
    assert!(matches!(
        sink.blocking_finish(sent),
        Err(FileError::HashMismatch)
    ));
    assert_eq!(scratch.list("dl"), Vec::<String>::new());
}

#[test]
fn done_before_all_bytes_keeps_nothing() {
    let scratch = Scratch::new("short");
    let dl = scratch.join("dl");
    let (mut sink, _) = begin(&dl, "s", 10, 7).unwrap();
    sink.blocking_write(0, vec![0; 5]).unwrap();
    assert!(matches!(
        sink.blocking_finish(hash(&[0; 5])),
        Err(FileError::Incomplete { got: 5, size: 10 })
    ));
    assert_eq!(scratch.list("dl"), Vec::<String>::new());
}

/// Where the open file description of `path` in this process stands (Linux
/// `/proc/self/fdinfo`), if exactly one descriptor has it open.
fn read_position(path: &Path) -> Option<u64> {
    let path = path.canonicalize().ok()?;
    let mut found = None;
    for entry in std::fs::read_dir("/proc/self/fd").ok()?.flatten() {
        if std::fs::read_link(entry.path()).ok().as_deref() != Some(path.as_path()) {
            continue;
        }
        let info =
            std::fs::read_to_string(Path::new("/proc/self/fdinfo").join(entry.file_name())).ok()?;
        let pos = info
            .lines()
            .find_map(|l| l.strip_prefix("pos:"))
            .and_then(|p| p.trim().parse().ok())?;
        if found.replace(pos).is_some() {
            return None;
        }
    }
    found
}

/// Waits (up to 30 s) until the reader thread of `path` has read `bytes` of it.
fn wait_read(path: &Path, bytes: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pos = read_position(path);
        if pos == Some(bytes) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the reader of {} stands at {pos:?}, not {bytes}, after 30 s",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn cancel_keeps_or_deletes_the_part_as_asked() {
    let scratch = Scratch::new("cancel");
    let dl = scratch.join("dl");
    // Longer than what the queue holds past the three chunks taken below, so the
    // reader ends up blocked on the full queue.
    let chunks = 3 + QUEUE_CHUNKS + 8;
    let data = content(chunks * MAX_FILE_CHUNK);
    let out = send_file(&scratch, "c.bin", &data);
    for keep in [true, false] {
        let (mut sink, offset) = begin(&dl, "c.bin", out.size(), 8).unwrap();
        let mut source = out.start(offset).unwrap();
        for _ in 0..3 {
            if let Outgoing::Chunk { offset, data } = source.blocking_next().unwrap() {
                sink.blocking_write(offset, data).unwrap();
            }
        }
        // The reader has read the three taken, a full queue and one more chunk
        // it cannot hand over (after a resume, the part it hashes first too):
        // it is blocked on the full queue, and cancel must still end it.
        let blocked_at = offset + ((3 + QUEUE_CHUNKS + 1) * MAX_FILE_CHUNK) as u64;
        wait_read(out.path(), blocked_at);
        // `cancel` joins the reader: a reader it cannot wake hangs it. The
        // deadline only turns that hang into a failure.
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            source.cancel();
            let _ = done_tx.send(());
        });
        done_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("cancel did not end a reader blocked on a full queue");
        let received = sink.received();
        let kept = sink.cancel(keep);
        if keep {
            let part = kept.unwrap();
            let on_disk = std::fs::read(&part).unwrap();
            // Everything accepted is on disk, ready for a resume.
            assert_eq!(on_disk.len() as u64, received);
            assert_eq!(on_disk, data[..on_disk.len()]);
        } else {
            assert!(kept.is_none());
        }
    }
    // keep=true then a resume, then keep=false deleted it all.
    assert_eq!(scratch.list("dl"), Vec::<String>::new());
}

#[test]
fn a_dropped_link_keeps_the_part_for_a_resume() {
    let scratch = Scratch::new("drop");
    let dl = scratch.join("dl");
    let data = content(500_000);
    let out = send_file(&scratch, "d.bin", &data);
    let (mut sink, _) = begin(&dl, "d.bin", out.size(), 10).unwrap();
    let mut source = out.start(0).unwrap();
    for _ in 0..2 {
        if let Outgoing::Chunk { offset, data } = source.blocking_next().unwrap() {
            sink.blocking_write(offset, data).unwrap();
        }
    }
    drop(source);
    drop(sink);
    // The writer thread drains its queue and lets go of the `.part` (nothing
    // tells when: polled, with a deadline that only keeps a hang from lasting).
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut sink, offset) = loop {
        match begin(&dl, "d.bin", out.size(), 10) {
            Ok(pair) => break pair,
            Err(FileError::Busy(_)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("the dropped transfer's .part, 30 s later: {e}"),
        }
    };
    assert_eq!(offset, 2 * MAX_FILE_CHUNK as u64);
    let sent = pump(&mut out.start(offset).unwrap(), &mut sink);
    assert_eq!(
        std::fs::read(sink.blocking_finish(sent).unwrap()).unwrap(),
        data
    );
}

#[test]
fn one_part_has_one_writer() {
    let scratch = Scratch::new("busy");
    let dl = scratch.join("dl");
    let (first, _) = begin(&dl, "b", 10, 11).unwrap();
    assert!(matches!(begin(&dl, "b", 10, 11), Err(FileError::Busy(_))));
    // The same transfer is the same `.part`, whatever name it is offered under.
    assert!(matches!(
        begin(&dl, "../x/other", 10, 11),
        Err(FileError::Busy(_))
    ));
    // The same name from another transfer, or the same id from another peer, is
    // another `.part`.
    let (same_name, _) = begin(&dl, "b", 10, 12).unwrap();
    let (same_id, _) = IncomingFile::begin(&dl, "b", 10, PartScope::new("mallory"), 11).unwrap();
    assert_ne!(same_id.part_path(), first.part_path());
    same_name.cancel(false);
    same_id.cancel(false);
    first.cancel(false);
    let (second, _) = begin(&dl, "b", 10, 11).unwrap();
    second.cancel(false);
}

#[test]
fn offered_paths_cannot_leave_the_downloads_directory() {
    let scratch = Scratch::new("escape");
    let dl = scratch.join("deep/dl");
    for (id, offered) in [
        "../../x",
        "/etc/x",
        "a/x",
        "a\\x",
        "x\u{0}",
        "\u{202E}x",
        "x\n",
    ]
    .into_iter()
    .enumerate()
    {
        let (mut sink, _) = begin(&dl, offered, 1, id as u64).unwrap();
        assert_eq!(sink.part_path().parent(), Some(dl.as_path()), "{offered:?}");
        sink.blocking_write(0, vec![7]).unwrap();
        let path = sink.blocking_finish(hash(&[7])).unwrap();
        assert_eq!(path.parent(), Some(dl.as_path()), "{offered:?}");
    }
    let mut names = scratch.list("deep/dl");
    names.sort();
    assert_eq!(
        names,
        ["x", "x (1)", "x (2)", "x (3)", "x (4)", "x_", "x_ (1)"]
    );
    assert_eq!(scratch.list("deep"), ["dl"]);
    for refused in ["..", ".", "", "a/..", "\u{200B}"] {
        assert!(matches!(
            begin(&dl, refused, 1, 99),
            Err(FileError::Name(_))
        ));
    }
}

#[test]
fn sender_refuses_what_it_cannot_send() {
    let scratch = Scratch::new("sendchecks");
    assert!(matches!(
        OutgoingFile::open(scratch.join("missing")),
        Err(FileError::Open { .. })
    ));
    std::fs::create_dir(scratch.join("dir")).unwrap();
    assert!(matches!(
        OutgoingFile::open(scratch.join("dir")),
        Err(FileError::NotAFile(_))
    ));
    let out = send_file(&scratch, "f", &content(10));
    assert!(matches!(
        out.start(11),
        Err(FileError::BadResume {
            offset: 11,
            size: 10
        })
    ));
    // The file shrinks after the offer: a clear error, not a short transfer.
    let out = send_file(&scratch, "g", &content(300_000));
    std::fs::write(out.path(), content(1000)).unwrap();
    let mut source = out.start(0).unwrap();
    let mut error = None;
    for _ in 0..10 {
        match source.blocking_next() {
            Ok(Outgoing::Chunk { .. }) => {}
            Ok(Outgoing::Finished { .. }) => panic!("a short file must not finish"),
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    assert!(
        matches!(
            error,
            Some(FileError::Changed {
                got: 1000,
                size: 300_000,
                ..
            })
        ),
        "{error:?}"
    );
}

#[cfg(unix)]
#[test]
fn permission_denied_is_a_clear_error() {
    use std::os::unix::fs::PermissionsExt;
    let scratch = Scratch::new("perm");
    let dl = scratch.join("ro");
    std::fs::create_dir(&dl).unwrap();
    std::fs::set_permissions(&dl, std::fs::Permissions::from_mode(0o500)).unwrap();
    // Root ignores directory permissions; then there is nothing to check.
    if std::fs::write(dl.join("probe"), b"").is_ok() {
        return;
    }
    let err = begin(&dl, "p", 1, 1).unwrap_err();
    assert!(matches!(err, FileError::PermissionDenied(_)), "{err:?}");
    assert!(err.to_string().contains("permission denied"), "{err}");
    std::fs::set_permissions(&dl, std::fs::Permissions::from_mode(0o700)).unwrap();
}

#[cfg(unix)]
#[test]
fn error_messages_say_what_to_do() {
    let e = write_error(
        Path::new("/d/x.part"),
        std::io::Error::from_raw_os_error(28),
    );
    assert_eq!(
        e.to_string(),
        "disk full while writing /d/x.part; the partial file is kept, free space and resume"
    );
}

#[test]
fn part_files_are_private_and_named_by_sender_and_id_not_by_the_offer() {
    let scratch = Scratch::new("private");
    let dl = scratch.join("dl");
    let (sink, _) = begin(&dl, "report.pdf", 10, 0xAB).unwrap();
    let name = sink
        .part_path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        name.starts_with(".p2pchat-") && name.ends_with("-00000000000000ab.part"),
        "{name}"
    );
    assert!(!name.contains("report"), "{name}");
    assert_eq!(name.len(), ".p2pchat-".len() + 16 + 1 + 16 + ".part".len());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::symlink_metadata(sink.part_path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
    // Another peer, or another id, is another name.
    assert_ne!(
        part_path(&dl, PartScope::new("alice"), 1),
        part_path(&dl, PartScope::new("bob"), 1)
    );
    assert_ne!(part_path(&dl, alice(), 1), part_path(&dl, alice(), 2));
    sink.cancel(false);
    assert_eq!(scratch.list("dl"), Vec::<String>::new());
}

#[test]
fn a_hostile_offer_aimed_at_an_existing_part_or_file_leaves_it_untouched() {
    let scratch = Scratch::new("aimed");
    let dl = scratch.join("dl");
    std::fs::create_dir(&dl).unwrap();
    // Someone's files that v1 would have resumed into (`x.part`, shorter than the
    // offer), deleted (`y.part`, longer than the offer), or that an offer names.
    std::fs::write(dl.join("x.part"), b"precious half").unwrap();
    std::fs::write(dl.join("y.part"), vec![9u8; 5000]).unwrap();
    std::fs::write(dl.join("x"), b"precious").unwrap();
    for (id, offered) in ["x", "x.part", "y", "y.part"].into_iter().enumerate() {
        let data = content(100);
        let (mut sink, offset) = begin(&dl, offered, 100, 100 + id as u64).unwrap();
        assert_eq!(offset, 0, "{offered}: nothing of theirs is resumed");
        sink.blocking_write(0, data.clone()).unwrap();
        let path = sink.blocking_finish(hash(&data)).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), data);
    }
    assert_eq!(std::fs::read(dl.join("x.part")).unwrap(), b"precious half");
    assert_eq!(std::fs::read(dl.join("y.part")).unwrap(), vec![9u8; 5000]);
    assert_eq!(std::fs::read(dl.join("x")).unwrap(), b"precious");
    assert_eq!(
        scratch.list("dl"),
        [
            "x",
            "x (1)",
            "x (1).part",
            "x.part",
            "y",
            "y (1).part",
            "y.part"
        ]
    );
    // A failed check deletes only our own `.part`.
    let (mut sink, _) = begin(&dl, "x.part", 3, 200).unwrap();
    sink.blocking_write(0, vec![1, 2, 3]).unwrap();
    assert!(matches!(
        sink.blocking_finish([0; 32]),
        Err(FileError::HashMismatch)
    ));
    assert_eq!(std::fs::read(dl.join("x.part")).unwrap(), b"precious half");
}

#[cfg(unix)]
#[test]
fn a_symlink_named_like_our_part_file_is_not_followed() {
    let scratch = Scratch::new("symlink");
    let dl = scratch.join("dl");
    std::fs::create_dir(&dl).unwrap();
    let victim = scratch.join("victim");
    std::fs::write(&victim, b"do not touch").unwrap();
    let part = part_path(&dl, alice(), 42);
    std::os::unix::fs::symlink(&victim, &part).unwrap();
    // Shorter than the offer (would be resumed) or longer (would be truncated).
    for size in [1000, 3] {
        let err = begin(&dl, "v", size, 42).unwrap_err();
        assert!(matches!(err, FileError::PartInTheWay(_)), "{err:?}");
    }
    assert_eq!(std::fs::read(&victim).unwrap(), b"do not touch");
    assert!(std::fs::symlink_metadata(&part)
        .unwrap()
        .file_type()
        .is_symlink());
    // A dangling one is not created through either.
    std::fs::remove_file(&part).unwrap();
    let target = scratch.join("created-through-the-link");
    std::os::unix::fs::symlink(&target, &part).unwrap();
    assert!(matches!(
        begin(&dl, "v", 10, 42),
        Err(FileError::PartInTheWay(_))
    ));
    assert!(!target.exists());
}

#[cfg(unix)]
#[test]
fn a_part_with_other_links_or_loose_permissions_is_not_ours() {
    use std::os::unix::fs::PermissionsExt;
    let scratch = Scratch::new("notours");
    let dl = scratch.join("dl");
    std::fs::create_dir(&dl).unwrap();
    // A hard link to someone's file at our name.
    let victim = scratch.join("victim");
    std::fs::write(&victim, b"do not touch").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::hard_link(&victim, part_path(&dl, alice(), 1)).unwrap();
    let err = begin(&dl, "v", 100, 1).unwrap_err();
    assert!(matches!(err, FileError::PartInTheWay(_)), "{err:?}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"do not touch");
    // A file readable by others was not made by us.
    let loose = part_path(&dl, alice(), 2);
    std::fs::write(&loose, b"planted").unwrap();
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(matches!(
        begin(&dl, "v", 100, 2),
        Err(FileError::PartInTheWay(_))
    ));
    assert_eq!(std::fs::read(&loose).unwrap(), b"planted");
    // A directory neither.
    std::fs::create_dir(part_path(&dl, alice(), 3)).unwrap();
    assert!(matches!(
        begin(&dl, "v", 100, 3),
        Err(FileError::PartInTheWay(_))
    ));
}

#[test]
fn the_part_is_written_in_whole_aligned_blocks() {
    let scratch = Scratch::new("aligned");
    let dl = scratch.join("dl");
    let data = content(3 * MAX_FILE_CHUNK);
    let out = send_file(&scratch, "a.bin", &data);
    let (mut sink, _) = begin(&dl, "a.bin", out.size(), 11).unwrap();
    let mut source = out.start(0).unwrap();
    for _ in 0..2 {
        if let Outgoing::Chunk { offset, data } = source.blocking_next().unwrap() {
            sink.blocking_write(offset, data).unwrap();
        }
    }
    // Two chunks are 130,944 bytes: the writer writes the first 64 KiB block
    // and keeps the rest for the next boundary; never a chunk as it came.
    // Polled: nothing tells when the thread got there (the deadline only turns
    // a hang into a failure).
    let part = sink.part_path().to_path_buf();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let len = std::fs::metadata(&part).map_or(0, |m| m.len());
        assert!(
            len == 0 || len == 65536,
            "the .part holds {len} bytes, not a whole 64 KiB block"
        );
        if len == 65536 {
            break;
        }
        assert!(Instant::now() < deadline, "nothing written after 30 s");
        std::thread::sleep(Duration::from_millis(1));
    }
    // When the link goes away, everything accepted is written for a resume.
    let received = sink.received();
    let kept = sink.cancel(true).unwrap();
    assert_eq!(std::fs::read(&kept).unwrap(), data[..received as usize]);
}
