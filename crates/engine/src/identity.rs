//! The profile and its long-term identity (docs/protocol.md §15): `identity.key` in
//! the profile directory, created 0600 on first run; a key file that group or others
//! may read, or that is not a p2pchat identity, is refused and left as it is.

use std::io::Write;
use std::path::{Path, PathBuf};

use dhke::Identity;
use rand::rngs::OsRng;
use zeroize::Zeroizing;

use crate::error::ClientError;
use crate::private;

/// The identity file's name inside the profile directory.
pub const FILE_NAME: &str = "identity.key";
/// The first line of an identity file.
const HEADER: &str = "p2pchat identity v1";
/// Anything longer is not an identity file (the real one is 85 bytes).
const MAX_FILE: u64 = 4096;

/// The profile directory: `--profile` (or `P2PCHAT_PROFILE`), else `p2pchat` in
/// the XDG data directory.
pub fn profile_dir(flag: Option<&Path>) -> Result<PathBuf, ClientError> {
    match flag {
        Some(dir) => Ok(dir.to_path_buf()),
        None => dirs::data_dir().map(|d| d.join("p2pchat")).ok_or_else(|| {
            ClientError::Usage(
                "no data directory (is $HOME set?); pass --profile DIR for the identity and contacts"
                    .into(),
            )
        }),
    }
}

/// Most clients that may run at once on one profile (the first in the profile
/// itself, the others in `instance-N` inside it).
const MAX_INSTANCES: u32 = 16;

/// A profile this process holds: the directory, and the lock that says so
/// (released when the process ends, however it ends).
#[derive(Debug)]
pub struct ProfileClaim {
    pub dir: PathBuf,
    /// `Some(base)` when `base` was in use by another client and this one moved
    /// to an instance directory inside it.
    pub moved_from: Option<PathBuf>,
    _lock: Option<std::fs::File>,
}

/// Claims `dir` for this process. Two clients on one profile would share one
/// identity key, and a conversation's log tells its authors apart by key (two
/// authors with one key look like one that equivocates): so a second client
/// started on a profile in use gets `instance-2` inside it (its own identity,
/// contacts and history), a third `instance-3`, and so on. The quick start's
/// two terminals on one machine thus talk as two people.
pub fn claim_profile(dir: &Path) -> Result<ProfileClaim, ClientError> {
    for n in 1..=MAX_INSTANCES {
        let candidate = if n == 1 {
            dir.to_path_buf()
        } else {
            dir.join(format!("instance-{n}"))
        };
        if let Err(e) = crate::private::create_dir_all(&candidate) {
            return Err(ClientError::File(format!(
                "profile {}: cannot create it: {e}. Pass --profile DIR with a directory you can write.",
                candidate.display()
            )));
        }
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(candidate.join(".lock"));
        // A profile we cannot lock (a read-only one) is used unguarded.
        let unguarded = |candidate: PathBuf, e: &dyn std::fmt::Display| {
            tracing::warn!("cannot lock the profile {}: {e}", candidate.display());
            Ok(ProfileClaim {
                dir: candidate,
                moved_from: None,
                _lock: None,
            })
        };
        let lock = match lock {
            Ok(file) => file,
            Err(e) => return unguarded(candidate, &e),
        };
        match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {
                return Ok(ProfileClaim {
                    moved_from: (n > 1).then(|| dir.to_path_buf()),
                    dir: candidate,
                    _lock: Some(lock),
                })
            }
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => continue,
            Err(e) => return unguarded(candidate, &e),
        }
    }
    Err(ClientError::Usage(format!(
        "{MAX_INSTANCES} clients already run on the profile {}: quit one, or pass --profile DIR",
        dir.display()
    )))
}

/// The identity in `dir`, created there (and `dir` with mode 0700) if there is
/// none yet. Returns whether it was just created.
pub fn load_or_create(dir: &Path) -> Result<(Identity, bool), ClientError> {
    let path = dir.join(FILE_NAME);
    match std::fs::symlink_metadata(&path) {
        Ok(_) => load(&path).map(|id| (id, false)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            create(dir, &path).map(|id| (id, true))
        }
        Err(e) => Err(refused(&path, &format!("cannot read it: {e}"))),
    }
}

fn refused(path: &Path, why: &str) -> ClientError {
    ClientError::File(format!(
        "identity file {}: {why}. It was left untouched.",
        path.display()
    ))
}

/// Reads an existing identity file, refusing loose modes and foreign content.
pub fn load(path: &Path) -> Result<Identity, ClientError> {
    let meta =
        std::fs::metadata(path).map_err(|e| refused(path, &format!("cannot read it: {e}")))?;
    if !meta.is_file() {
        return Err(refused(path, "it is not a regular file"));
    }
    if let Some(mode) = private::loose_mode(&meta) {
        return Err(refused(
            path,
            &format!(
                "group or others may read it (mode {mode:04o}), so the key may no longer be \
                 secret. If only you could ever read it, run `chmod 600 {}`; otherwise move it \
                 away to make a new identity (your contacts will then see a new key)",
                path.display()
            ),
        ));
    }
    if meta.len() > MAX_FILE {
        return Err(refused(path, "it is too large to be a p2pchat identity"));
    }
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|e| refused(path, &format!("cannot read it: {e}")))?,
    );
    parse(&text).ok_or_else(|| {
        refused(
            path,
            "it is not a p2pchat identity (damaged, or another program's file). Restore it \
             from a backup, or move it away to make a new identity (your contacts will then \
             see a new key)",
        )
    })
}

/// `HEADER`, a newline, 64 hex digits of the Ed25519 seed, a newline.
fn parse(text: &str) -> Option<Identity> {
    let mut lines = text.lines();
    if lines.next()? != HEADER {
        return None;
    }
    let mut seed = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(lines.next()?.trim(), seed.as_mut()).ok()?;
    if lines.any(|l| !l.trim().is_empty()) {
        return None;
    }
    Some(Identity::from_seed(&seed))
}

fn render(identity: &Identity) -> Zeroizing<String> {
    Zeroizing::new(format!("{HEADER}\n{}\n", hex::encode(*identity.seed())))
}

/// Writes a new identity: to a temporary file (0600, created exclusively), synced,
/// then hard-linked to its name, which fails if another run made one meanwhile.
/// The name never holds a partial key.
fn create(dir: &Path, path: &Path) -> Result<Identity, ClientError> {
    let fail = |what: &str, e: std::io::Error| {
        ClientError::File(format!(
            "cannot create the identity file {}: {what}: {e}. Pass --profile DIR with a \
             directory you can write.",
            path.display()
        ))
    };
    private::create_dir_all(dir).map_err(|e| fail("cannot create its directory", e))?;
    let identity = Identity::generate(&mut OsRng);
    let tmp = dir.join(format!("{FILE_NAME}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut file = private::create_new(&tmp)?;
        file.write_all(render(&identity).as_bytes())?;
        file.sync_all()?;
        std::fs::hard_link(&tmp, path)
    })();
    let _ = std::fs::remove_file(&tmp);
    match written {
        Ok(()) => Ok(identity),
        // Another run created it first: use that one.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => load(path),
        Err(e) => Err(fail("cannot write it", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn temp(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("p2pchat-id-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_second_client_on_a_profile_in_use_gets_an_instance_of_its_own() {
        let dir = temp("claim");
        let first = claim_profile(&dir).unwrap();
        assert_eq!(first.dir, dir);
        assert!(first.moved_from.is_none());
        let second = claim_profile(&dir).unwrap();
        assert_eq!(second.dir, dir.join("instance-2"));
        assert_eq!(second.moved_from.as_deref(), Some(dir.as_path()));
        let (a, _) = load_or_create(&first.dir).unwrap();
        let (b, _) = load_or_create(&second.dir).unwrap();
        assert_ne!(a.public(), b.public(), "two clients, two identities");
        // Released when the first ends: the next client gets the profile itself.
        drop(first);
        assert_eq!(claim_profile(&dir).unwrap().dir, dir);
        drop(second);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn created_once_with_mode_0600_then_loaded() {
        let dir = temp("create");
        let (a, created) = load_or_create(&dir).unwrap();
        assert!(created);
        let meta = std::fs::metadata(dir.join(FILE_NAME)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let (b, created) = load_or_create(&dir).unwrap();
        assert!(!created);
        assert_eq!(a.public(), b.public());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_readable_or_corrupt_key_file_is_refused_and_left_untouched() {
        let dir = temp("refuse");
        load_or_create(&dir).unwrap();
        let path = dir.join(FILE_NAME);
        let before = std::fs::read(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_or_create(&dir).unwrap_err().to_string();
        assert!(
            err.contains("mode 0644") && err.contains("chmod 600"),
            "{err}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), before);
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o644
        );

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, b"p2pchat identity v1\nnot hex\n").unwrap();
        let err = load_or_create(&dir).unwrap_err();
        assert_eq!(err.exit_code(), 11);
        assert!(err.to_string().contains("not a p2pchat identity"), "{err}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"p2pchat identity v1\nnot hex\n"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_file_format_round_trips() {
        let id = Identity::from_seed(&[9; 32]);
        let text = render(&id);
        assert_eq!(text.len(), HEADER.len() + 1 + 64 + 1);
        assert_eq!(parse(&text).unwrap().public(), id.public());
        assert!(parse("p2pchat identity v2\n00\n").is_none());
        assert!(parse(&format!("{}extra\n", text.as_str())).is_none());
    }
}
