//! The two files a session may append to: `peers.txt` (one line per established
//! session, docs/protocol.md §8) and the `P2PCHAT_KEYLOG` file (§9).

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path as FsPath;

use crate::exit::ClientError;

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
/// concurrent writers never interleave within a line. `mode` applies on creation.
fn append_line(path: &FsPath, line: &str, private: bool) -> std::io::Result<()> {
    let mut options = OpenOptions::new();
    options.append(true).create(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(path)?;
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
    append_line(path, &line.render(), false).map_err(|e| {
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

/// Appends one keylog line (created with mode 0600).
pub fn append_keylog(path: &FsPath, line: &str) -> Result<(), ClientError> {
    let mut text = zeroize::Zeroizing::new(String::with_capacity(line.len() + 1));
    text.push_str(line);
    text.push('\n');
    append_line(path, &text, true)
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
        append_line(&path, "one\n", false).unwrap();
        append_line(&path, "two\n", false).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one\ntwo\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
