//! Files only their owner should read (the history database, `peers.txt`, the
//! keylog): created with mode 0600 and any directory made for them 0700, and a
//! warning, once per file and run, for one that already exists with looser modes
//! (the history database, which holds the verified marks, is refused instead:
//! `History::open`).
//!
//! Every mode is given to the `open`/`mkdir` call that creates the file, so there
//! is no moment in which the file exists with the default (umask) mode. A
//! restrictive umask around the open would do the same for SQLite's own files,
//! but the umask is per process: another thread creating a download or a `.part`
//! file at that moment would get it too, and setting it needs `unsafe` (libc),
//! which this workspace forbids. SQLite needs no umask anyway: its unix VFS
//! creates `-wal` and `-shm` with the database file's own mode (`findCreateFileMode`
//! and `robust_open` in `sqlite3.c`), so a database created 0600 gets 0600 journals.
//!
//! An existing file with looser modes is reported, not changed. The person may
//! have made it so on purpose (a peers log shared with a group, a backup job
//! that reads it), the file system may not keep Unix modes at all (a chmod there
//! fails or lies), and a tool that quietly rewrites the permissions of a file it
//! did not create is a surprise. The warning names the file and the command that
//! fixes it; the decision stays with the person.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// The mode of files we create.
pub const FILE_MODE: u32 = 0o600;
/// The mode of directories we create.
pub const DIR_MODE: u32 = 0o700;

/// Creates `dir` and any missing parents, each new one with mode 0700 (less what
/// the umask removes). Directories that exist are left as they are.
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(DIR_MODE);
    }
    builder.create(dir)
}

/// Opening options that create a missing file with mode 0600.
fn private_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(FILE_MODE);
    }
    options
}

/// Creates `path` empty with mode 0600 if it does not exist; an existing file
/// keeps its bytes and its mode.
pub fn create_file(path: &Path) -> io::Result<()> {
    private_options().write(true).open(path).map(drop)
}

/// Creates `path` with mode 0600 for writing; fails if it exists.
pub fn create_new(path: &Path) -> io::Result<File> {
    let mut options = private_options();
    options.create_new(true).write(true);
    options.open(path)
}

/// Opens `path` for appending, creating it with mode 0600 if missing.
pub fn open_append(path: &Path) -> io::Result<File> {
    private_options().append(true).open(path)
}

/// The permission bits of `meta` if group or others may read or write it.
pub fn loose_mode(meta: &std::fs::Metadata) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        (mode & 0o077 != 0).then_some(mode)
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        None
    }
}

/// Warns (once per path and run) that `path`, a `what`, is open to others;
/// `meta` is its metadata (`File::metadata` on an open file judges exactly the
/// file being written).
pub fn warn_if_loose_meta(path: &Path, meta: &std::fs::Metadata, what: &str) {
    let Some(mode) = loose_mode(meta) else {
        return;
    };
    if !first_warning(path) {
        return;
    }
    tracing::warn!(
        "{} ({what}) can be read or changed by other users (mode {mode:03o}); p2pchat \
         leaves existing files as they are: run `chmod 600 {}` to make it private",
        path.display(),
        path.display(),
    );
}

/// Whether `path` has not been warned about yet in this run (and records it).
fn first_warning(path: &Path) -> bool {
    static WARNED: OnceLock<Mutex<HashSet<PathBuf>>> = OnceLock::new();
    let mut warned = WARNED
        .get_or_init(|| Mutex::new(HashSet::new()))
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    warned.insert(path.to_path_buf())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn scratch(label: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "p2pchat-private-{label}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn new_directories_are_0700_and_new_files_0600() {
        let root = scratch("new");
        let nested = root.join("a").join("b");
        create_dir_all(&nested).unwrap();
        assert_eq!(mode(&root), DIR_MODE);
        assert_eq!(mode(&root.join("a")), DIR_MODE);
        assert_eq!(mode(&nested), DIR_MODE);
        let file = nested.join("f");
        create_file(&file).unwrap();
        assert_eq!(mode(&file), FILE_MODE);
        let appended = nested.join("g");
        drop(open_append(&appended).unwrap());
        assert_eq!(mode(&appended), FILE_MODE);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn an_existing_loose_file_keeps_its_mode_and_bytes_and_is_reported_once() {
        let root = scratch("loose");
        std::fs::create_dir_all(&root).unwrap();
        let file = root.join("shared");
        std::fs::write(&file, b"mine").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        create_file(&file).unwrap();
        drop(open_append(&file).unwrap());
        assert_eq!(mode(&file), 0o644);
        assert_eq!(std::fs::read(&file).unwrap(), b"mine");
        assert_eq!(loose_mode(&std::fs::metadata(&file).unwrap()), Some(0o644));
        assert!(first_warning(&file));
        assert!(!first_warning(&file), "a second warning for the same file");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn an_existing_directory_is_left_as_it_was() {
        let root = scratch("dir");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
        create_dir_all(&root.join("sub")).unwrap();
        assert_eq!(mode(&root), 0o755);
        assert_eq!(mode(&root.join("sub")), DIR_MODE);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
