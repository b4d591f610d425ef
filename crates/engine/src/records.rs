//! The two files a session may append to: `peers.txt` (one line per established
//! session, docs/protocol.md §8) and the `P2PCHAT_KEYLOG` file (§9).

use std::io::Write;
use std::path::Path as FsPath;

use crate::error::ClientError;
use crate::private;

/// One `peers.txt` line, tab-separated, ending in a newline.
#[derive(Debug, Clone)]
pub struct PeerLine<'a> {
    pub at: chrono::DateTime<chrono::Utc>,
    pub peer_name: &'a str,
    pub peer_addr: std::net::SocketAddr,
    pub room: &'a str,
    pub path: &'a str,
    pub sas: &'a str,
}

impl PeerLine<'_> {
    /// `<UTC RFC 3339>\t<name>\t<ip:port>\t<room>\t<path>\t<SAS>\n`. Free-text fields
    /// go through the terminal filter, which turns tabs and newlines into spaces
    /// and drops other control characters, so a line is always one record.
    pub fn render(&self) -> String {
        let field = |s: &str| wire::sanitize_for_terminal(s).into_owned();
        format!(
            "{}\t{}\t{}\t{}\t{}\t{}\n",
            self.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            field(self.peer_name),
            self.peer_addr,
            field(self.room),
            self.path,
            self.sas,
        )
    }
}

/// Appends `line` to `path` with one `write` on an `O_APPEND` descriptor, so
/// concurrent writers never interleave within a line. A new file gets mode 0600
/// (both files tell who talked to whom, the keylog even what); an existing one
/// with looser modes is reported once and left as it is ([`crate::private`]).
fn append_line(path: &FsPath, line: &str, what: &str) -> std::io::Result<()> {
    let mut file = private::open_append(path)?;
    if let Ok(meta) = file.metadata() {
        private::warn_if_loose_meta(path, &meta, what);
    }
    let written = file.write(line.as_bytes())?;
    if written != line.len() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::WriteZero,
            format!("short write ({written} of {} bytes)", line.len()),
        ));
    }
    Ok(())
}

/// Appends one session line to the peers file.
pub fn append_peer(path: &FsPath, line: &PeerLine<'_>) -> Result<(), ClientError> {
    append_line(path, &line.render(), "peers file").map_err(|e| {
        ClientError::File(format!(
            "cannot append to the peers file {}: {e}. Choose another with --peers-file.",
            path.display()
        ))
    })
}

/// The keylog file named by `P2PCHAT_KEYLOG`, if set and non-empty.
pub fn keylog_path() -> Option<std::path::PathBuf> {
    std::env::var_os("P2PCHAT_KEYLOG")
        .filter(|v| !v.is_empty())
        .map(Into::into)
}

/// Appends one keylog line.
pub fn append_keylog(path: &FsPath, line: &str) -> Result<(), ClientError> {
    let mut text = zeroize::Zeroizing::new(String::with_capacity(line.len() + 1));
    text.push_str(line);
    text.push('\n');
    append_line(path, &text, "keylog")
        .map_err(|e| ClientError::File(format!("cannot write the keylog {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_line_is_one_record() {
        let line = PeerLine {
            at: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            peer_name: "bob\tthe\nbuilder",
            peer_addr: "127.0.0.1:4000".parse().unwrap(),
            room: "7-velvet-harbor",
            path: "direct",
            sas: "482 093",
        }
        .render();
        assert_eq!(
            line,
            "2023-11-14T22:13:20Z\tbob the builder\t127.0.0.1:4000\t7-velvet-harbor\tdirect\t482 093\n"
        );
    }

    #[test]
    fn appends_whole_lines() {
        let dir = std::env::temp_dir().join(format!("p2pchat-records-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("peers.txt");
        let _ = std::fs::remove_file(&path);
        append_line(&path, "one\n", "peers file").unwrap();
        append_line(&path, "two\n", "peers file").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one\ntwo\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn peers_file_and_keylog_are_created_readable_by_the_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("p2pchat-records-mode-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let peers = dir.join("peers.txt");
        let keylog = dir.join("keylog");
        let _ = std::fs::remove_file(&peers);
        let _ = std::fs::remove_file(&keylog);
        let line = PeerLine {
            at: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            peer_name: "bob",
            peer_addr: "127.0.0.1:4000".parse().unwrap(),
            room: "7-velvet-harbor",
            path: "direct",
            sas: "482 093",
        };
        append_peer(&peers, &line).unwrap();
        append_keylog(&keylog, "P2PCHAT_V1 00").unwrap();
        for file in [&peers, &keylog] {
            let mode = std::fs::metadata(file).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", file.display());
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn an_existing_shared_peers_file_is_appended_to_and_keeps_its_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir =
            std::env::temp_dir().join(format!("p2pchat-records-loose-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let peers = dir.join("peers.txt");
        std::fs::write(&peers, "old\n").unwrap();
        std::fs::set_permissions(&peers, std::fs::Permissions::from_mode(0o640)).unwrap();
        append_line(&peers, "new\n", "peers file").unwrap();
        assert_eq!(std::fs::read_to_string(&peers).unwrap(), "old\nnew\n");
        let mode = std::fs::metadata(&peers).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
