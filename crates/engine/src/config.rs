//! What a messenger runs with: the engine's settings as plain data, whoever
//! filled them in (the command line, the local API, a test). The binary's
//! `cli` turns its flags into a [`Config`]; the engine never sees a flag.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Default mediator port.
pub const DEFAULT_PORT: u16 = 7070;

/// The settings of a messenger and of each conversation it opens. The
/// defaults are the command line's.
#[derive(Debug, Clone)]
pub struct Config {
    /// Mediator address, `HOST[:PORT]`; none means LAN mode.
    pub server: Option<String>,
    /// A room code to open (two-party, or a group with [`Config::group_room`]).
    pub room: Option<String>,
    /// A contact (name or fingerprint) to meet at the mediator.
    pub to: Option<String>,
    /// A connection token to dial.
    pub connect: Option<String>,
    /// The profile directory (identity, default history); none: the default.
    pub profile: Option<PathBuf>,
    /// Host a connection token valid this long.
    pub token_ttl: Option<Duration>,
    /// Our name as others see it; random when none.
    pub name: Option<String>,
    /// Where to accept peers: `PORT` or `IP:PORT` (see [`parse_listen`]).
    pub listen: String,
    /// An address to advertise instead of the listener's own.
    pub advertise: Option<SocketAddr>,
    /// The file that gets one line per established session.
    pub peers_file: PathBuf,
    /// Diffie-Hellman group id (14 or 15).
    pub dh_group: u8,
    /// The room is a group room.
    pub group_room: bool,
    /// Refuse the mediator's relay.
    pub no_relay: bool,
    /// The history database; none: in the profile.
    pub history: Option<PathBuf>,
    /// Keep no history on disk.
    pub no_history: bool,
    /// The most conversations open at once.
    pub max_conversations: u16,
    /// How long a dropped conversation keeps trying to reconnect.
    pub reconnect_for: Duration,
    /// Where received files go; none: the XDG download directory.
    pub downloads: Option<PathBuf>,
    /// Accept offered files and token dialers without asking.
    pub yes: bool,
    /// Do not dial observed addresses (no hole punching).
    pub no_punch: bool,
    /// How long direct and punched paths get before the relay is tried.
    pub relay_after: Duration,
    /// How long the joiner keeps trying to reach the host.
    pub connect_timeout: Duration,
    /// LAN mode's UDP port.
    pub lan_port: u16,
    /// LAN mode: give up when nobody answered for this long.
    pub lan_timeout: Duration,
    /// LAN mode: announce only on these interfaces (empty: every one up).
    pub lan_interface: Vec<String>,
    /// The LAN instance id this conversation announces and calls under; the
    /// messenger picks one per conversation and tells its own LAN presence,
    /// which then takes the call's echo for ours. None: a fresh random one.
    pub lan_instance: Option<[u8; wire::lan::INSTANCE_LEN]>,
    /// No presence (docs/protocol.md §21, §14.4): no connection at the
    /// mediator waiting for contacts, no announcements on the LAN; contacts
    /// reach us only while a conversation with them is open.
    pub no_presence: bool,
    /// Tell peers which of their messages we have seen, and show theirs: both
    /// sides must allow it (docs/protocol.md §7.1).
    pub read_receipts: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            server: None,
            room: None,
            to: None,
            connect: None,
            profile: None,
            token_ttl: None,
            name: None,
            listen: "0".into(),
            advertise: None,
            peers_file: PathBuf::from("peers.txt"),
            dh_group: 15,
            group_room: false,
            no_relay: false,
            history: None,
            no_history: false,
            max_conversations: 64,
            reconnect_for: Duration::from_secs(600),
            downloads: None,
            yes: false,
            no_punch: false,
            relay_after: Duration::from_secs(3),
            connect_timeout: Duration::from_secs(30),
            lan_port: crate::lan::DEFAULT_LAN_PORT,
            lan_timeout: Duration::from_secs(600),
            lan_interface: Vec::new(),
            lan_instance: None,
            no_presence: false,
            read_receipts: false,
        }
    }
}

/// Splits `HOST[:PORT]` (or `[v6]:PORT`) into host and port.
pub fn split_server(server: &str) -> Result<(String, u16), String> {
    let server = server.trim();
    if server.is_empty() {
        return Err("the --server address is empty".into());
    }
    if let Ok(addr) = server.parse::<SocketAddr>() {
        return Ok((addr.ip().to_string(), addr.port()));
    }
    if let Some(rest) = server.strip_prefix('[') {
        let (host, tail) = rest
            .split_once(']')
            .ok_or_else(|| format!("`{server}`: missing `]` after an IPv6 address"))?;
        let port = match tail.strip_prefix(':') {
            Some(p) => parse_port(p, server)?,
            None if tail.is_empty() => DEFAULT_PORT,
            None => return Err(format!("`{server}`: expected `:PORT` after `]`")),
        };
        return Ok((host.to_string(), port));
    }
    match server.rsplit_once(':') {
        // A bare IPv6 address has several colons and no port.
        Some((host, _)) if host.contains(':') => Ok((server.to_string(), DEFAULT_PORT)),
        Some((host, port)) => Ok((host.to_string(), parse_port(port, server)?)),
        None => Ok((server.to_string(), DEFAULT_PORT)),
    }
}

fn parse_port(port: &str, whole: &str) -> Result<u16, String> {
    port.parse::<u16>()
        .map_err(|_| format!("`{whole}`: `{port}` is not a port number (1-65535)"))
}

/// Parses `--listen`: a bare port means every interface (dual-stack).
pub fn parse_listen(listen: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = listen.parse::<u16>() {
        return Ok(SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port)));
    }
    listen
        .parse::<SocketAddr>()
        .map_err(|_| format!("--listen `{listen}`: expected PORT or IP:PORT"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_forms() {
        assert_eq!(
            split_server("example.org").unwrap(),
            ("example.org".into(), 7070)
        );
        assert_eq!(
            split_server("example.org:99").unwrap(),
            ("example.org".into(), 99)
        );
        assert_eq!(
            split_server("127.0.0.1:5").unwrap(),
            ("127.0.0.1".into(), 5)
        );
        assert_eq!(split_server("[::1]:5").unwrap(), ("::1".into(), 5));
        assert_eq!(split_server("[::1]").unwrap(), ("::1".into(), 7070));
        assert_eq!(split_server("::1").unwrap(), ("::1".into(), 7070));
        assert!(split_server("host:notaport").is_err());
        assert!(split_server("").is_err());
    }

    #[test]
    fn listen_forms() {
        assert_eq!(parse_listen("0").unwrap().port(), 0);
        assert!(parse_listen("0").unwrap().ip().is_unspecified());
        assert_eq!(
            parse_listen("127.0.0.1:4000").unwrap(),
            "127.0.0.1:4000".parse().unwrap()
        );
        assert!(parse_listen("nope").is_err());
    }
}
