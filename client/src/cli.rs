//! The command line: flags, their environment variables, and the exit codes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use engine::config::Config;
use engine::error::EXIT_CODES_HELP;

/// p2pchat: end-to-end encrypted chat over a direct connection.
///
/// On one local network both people run `client --room ROOM`: the clients find
/// each other by UDP (LAN mode, no server). Across the internet both run
/// `client --server HOST --room ROOM`; the mediator at HOST introduces them and
/// steps aside. Without --room a fresh room code is printed, with the command
/// the other side should run. Compare the six-digit code both screens show: if
/// it matches, nobody is in the middle.
#[derive(Debug, Clone, Parser)]
#[command(name = "client", version, after_help = EXIT_CODES_HELP, args_conflicts_with_subcommands = true)]
pub struct Args {
    /// Something other than chatting (past conversations).
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Mediator address, HOST or HOST:PORT (default port 7070). Without it the
    /// client looks for the peer on the local network (LAN mode).
    #[arg(long, env = "P2PCHAT_SERVER", value_name = "HOST[:PORT]")]
    pub server: Option<String>,

    /// Room code shared with the other person; omit it to get a fresh one.
    #[arg(long, env = "P2PCHAT_ROOM", conflicts_with_all = ["to", "connect"])]
    pub room: Option<String>,

    /// Meet a contact (its name or fingerprint, see `client contacts`) with no
    /// room code, at the mediator or, without --server, on the local network:
    /// the room comes from both identity keys.
    #[arg(long, env = "P2PCHAT_TO", value_name = "NAME|FINGERPRINT")]
    pub to: Option<String>,

    /// Dial a connection token from `client token`: its addresses, then the
    /// mediator it names (which wins over --server for meeting its holder).
    #[arg(long, value_name = "TOKEN", conflicts_with = "to")]
    pub connect: Option<String>,

    /// The profile directory: identity key, and the default history and contacts
    /// database. Default: p2pchat in the XDG data directory (~/.local/share).
    #[arg(long, env = "P2PCHAT_PROFILE", value_name = "DIR")]
    pub profile: Option<PathBuf>,

    /// Set by `client token`: print a connection token valid this long and wait
    /// for people who dial it.
    #[arg(skip)]
    pub token_ttl: Option<Duration>,

    /// Your name as the other side sees it (1-32 characters); random if omitted.
    #[arg(long, env = "P2PCHAT_NAME")]
    pub name: Option<String>,

    /// Where to accept the peer: a PORT (all interfaces) or IP:PORT. 0 picks a free port.
    #[arg(
        long,
        env = "P2PCHAT_LISTEN",
        value_name = "PORT|IP:PORT",
        default_value = "0"
    )]
    pub listen: String,

    /// Address to advertise to the peer instead of the listener's own, e.g. a
    /// router's forwarded public address.
    #[arg(long, env = "P2PCHAT_ADVERTISE", value_name = "IP:PORT")]
    pub advertise: Option<SocketAddr>,

    /// File that gets one line per established session.
    #[arg(long, env = "P2PCHAT_PEERS_FILE", default_value = "peers.txt")]
    pub peers_file: PathBuf,

    /// Diffie-Hellman group: 15 (3072-bit, default) or 14 (2048-bit, for slow devices).
    #[arg(long, env = "P2PCHAT_DH_GROUP", default_value = "15", value_parser = clap::value_parser!(u8).range(14..=15))]
    pub dh_group: u8,

    /// A group room: everyone who joins with the same code (up to the mediator's
    /// member cap, 16 by default) chats together; each pair links directly.
    #[arg(
        long = "group",
        env = "P2PCHAT_GROUP_ROOM",
        requires = "server",
        conflicts_with_all = ["to", "connect"]
    )]
    pub group_room: bool,

    /// Do not wait for your contacts: no connection at the mediator that waits
    /// for them, and with no --server no presence announcements on the local
    /// network. They reach you only while you have a conversation with them
    /// open.
    #[arg(long, env = "P2PCHAT_NO_PRESENCE")]
    pub no_presence: bool,

    /// Read receipts in two-party conversations: tell the other side which of
    /// its messages you have seen, and see which of yours it has. Both sides
    /// must turn this on; otherwise neither sees anything.
    #[arg(long, env = "P2PCHAT_READ_RECEIPTS")]
    pub read_receipts: bool,

    /// Refuse to have chat relayed through the mediator.
    #[arg(long, env = "P2PCHAT_NO_RELAY")]
    pub no_relay: bool,

    /// Print one JSON object per line (events for scripts) instead of text.
    #[arg(long, env = "P2PCHAT_JSON")]
    pub json: bool,

    /// Plain line mode even on a terminal (no full-screen interface).
    #[arg(long, env = "P2PCHAT_PLAIN")]
    pub plain: bool,

    /// Full-screen interface: besides the bell, ask the terminal for a desktop
    /// notification (OSC 9 and OSC 777) when a message arrives in a
    /// conversation not in front. It names the conversation and the sender,
    /// never the text.
    #[arg(long, env = "P2PCHAT_NOTIFY")]
    pub notify: bool,

    /// Chat history and contacts database (SQLite). Default: history.sqlite3 in
    /// the profile directory.
    #[arg(
        long,
        env = "P2PCHAT_HISTORY",
        value_name = "PATH",
        conflicts_with = "no_history"
    )]
    pub history: Option<PathBuf>,

    /// Keep no history on disk.
    #[arg(long, env = "P2PCHAT_NO_HISTORY")]
    pub no_history: bool,

    /// The most conversations open at once in this client (each holds a port,
    /// its links and a window of its log).
    #[arg(long, env = "P2PCHAT_MAX_CONVERSATIONS", default_value = "64", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub max_conversations: u16,

    /// After the connection drops, keep trying to reconnect for this long.
    #[arg(long, env = "P2PCHAT_RECONNECT_FOR", default_value = "10m", value_parser = humantime::parse_duration)]
    pub reconnect_for: Duration,

    /// Where received files go. Default: the XDG download directory, else the
    /// working directory.
    #[arg(long, env = "P2PCHAT_DOWNLOADS", value_name = "DIR")]
    pub downloads: Option<PathBuf>,

    /// Accept every file the peer offers, and (with `client token`) everyone who
    /// dials the token, without asking.
    #[arg(long, env = "P2PCHAT_YES")]
    pub yes: bool,

    /// Do not dial the peer's observed address (no hole punching): only its
    /// announced addresses and the relay. For tests and diagnosis.
    #[arg(long, env = "P2PCHAT_NO_PUNCH", hide = true)]
    pub no_punch: bool,

    /// How long to try direct and punched paths before falling back to the
    /// mediator's relay (when neither side passed --no-relay).
    #[arg(long, env = "P2PCHAT_RELAY_AFTER", default_value = "3s", value_parser = humantime::parse_duration)]
    pub relay_after: Duration,

    /// How long the joiner keeps trying to reach the host (and the host waits for it).
    #[arg(long, env = "P2PCHAT_CONNECT_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,

    /// LAN mode (no --server): the UDP port to announce and listen on; both
    /// sides must use the same.
    #[arg(long, env = "P2PCHAT_LAN_PORT", default_value_t = engine::lan::DEFAULT_LAN_PORT, value_parser = clap::value_parser!(u16).range(1..))]
    pub lan_port: u16,

    /// LAN mode: give up (exit code 14) when nobody in the room answered for this long.
    #[arg(long, env = "P2PCHAT_LAN_TIMEOUT", default_value = "10m", value_parser = humantime::parse_duration)]
    pub lan_timeout: Duration,

    /// LAN mode: announce only on these interfaces (comma-separated names, e.g.
    /// `lo` for two clients on one machine); default every interface that is up.
    #[arg(
        long,
        env = "P2PCHAT_LAN_INTERFACE",
        value_name = "NAME",
        value_delimiter = ','
    )]
    pub lan_interface: Vec<String>,

    /// Serve the web interface on 127.0.0.1 (as `client web` does): prints
    /// an address holding a secret to open in a browser.
    #[arg(long, env = "P2PCHAT_WEB")]
    pub web: bool,

    /// Open the web interface in the desktop's browser (xdg-open); implies --web.
    #[arg(long)]
    pub open: bool,

    /// The web interface's port on 127.0.0.1; 0 picks a free one.
    #[arg(
        long,
        env = "P2PCHAT_WEB_PORT",
        value_name = "PORT",
        default_value = "0"
    )]
    pub web_port: u16,

    /// Serve the local API (docs/api.md) on a Unix socket in the profile
    /// directory, `api.sock`, for scripts and bots.
    #[arg(long, env = "P2PCHAT_API")]
    pub api: bool,

    /// The most local API clients at once (the web page counts as one per tab).
    #[arg(long, env = "P2PCHAT_API_MAX_CLIENTS", default_value = "16", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub api_max_clients: u16,

    /// Bytes of events that may wait for one API client before it is dropped
    /// as too slow.
    #[arg(
        long,
        env = "P2PCHAT_API_QUEUE_BYTES",
        default_value = "8388608",
        hide = true
    )]
    pub api_queue_bytes: usize,

    /// Output style of diagnostics on stderr.
    #[arg(long, env = "P2PCHAT_LOG", default_value = "warn", hide = true)]
    pub log: String,
}

/// Commands other than chatting.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Show past conversations from the history database.
    History(HistoryArgs),
    /// Print this profile's identity fingerprint (created on first use).
    Id(IdArgs),
    /// List the contacts met so far, or remove one.
    Contacts(ContactsArgs),
    /// Print a connection token and wait for people who dial it with `--connect`.
    /// Chat flags (--name, --listen, --json, --yes, …) may follow.
    Token(TokenArgs),
    /// The messenger with its web interface on 127.0.0.1 (`--web`): prints an
    /// address to open (`--open` opens it). Chat flags may follow.
    Web(WebArgs),
}

/// `client web [--open] [chat flags…]`.
#[derive(Debug, Clone, clap::Args)]
pub struct WebArgs {
    /// Chat flags, as for a normal run (--open, --web-port, --api, …).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "FLAGS"
    )]
    pub rest: Vec<String>,
}

/// `client id [--profile DIR] [--json]`.
#[derive(Debug, Clone, clap::Args)]
pub struct IdArgs {
    #[arg(long, env = "P2PCHAT_PROFILE", value_name = "DIR")]
    pub profile: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

/// `client contacts [remove|forget NAME [--with-conversations|--keep-conversations]] [--json]`.
#[derive(Debug, Clone, clap::Args)]
pub struct ContactsArgs {
    #[command(subcommand)]
    pub action: Option<ContactsAction>,
    #[arg(long, global = true)]
    pub json: bool,
    #[arg(long, env = "P2PCHAT_PROFILE", value_name = "DIR", global = true)]
    pub profile: Option<PathBuf>,
    /// History database holding the contacts (default: in the profile).
    #[arg(long, env = "P2PCHAT_HISTORY", value_name = "PATH", global = true)]
    pub history: Option<PathBuf>,
}

/// What `client contacts` does besides listing.
#[derive(Debug, Clone, Subcommand)]
pub enum ContactsAction {
    /// Forget a contact (by name or fingerprint). Asks on a terminal whether to
    /// forget its conversations too; the flags answer without a terminal.
    #[command(alias = "forget")]
    Remove {
        name: String,
        /// Forget its conversations too (its two-party chats and the `--to` one).
        #[arg(long, conflicts_with = "keep_conversations")]
        with_conversations: bool,
        /// Keep its conversations in the history.
        #[arg(long)]
        keep_conversations: bool,
    },
}

/// `client token [--ttl 24h] [chat flags…]`.
#[derive(Debug, Clone, clap::Args)]
pub struct TokenArgs {
    /// How long the token stays valid.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    /// Chat flags, as for a normal run.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "FLAGS"
    )]
    pub rest: Vec<String>,
}

/// `client history [--room R] [--peer NAME] [--limit N] [--json]`, or one of
/// its actions (`list`, `show ID`, `forget ID`).
#[derive(Debug, Clone, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct HistoryArgs {
    #[command(subcommand)]
    pub action: Option<HistoryAction>,
    /// Only chats in this room.
    #[arg(long)]
    pub room: Option<String>,
    /// Only chats with this peer name.
    #[arg(long)]
    pub peer: Option<String>,
    /// At most this many chats, newest first.
    #[arg(long, default_value = "20")]
    pub limit: u32,
    /// One JSON object per chat, with its messages.
    #[arg(long, global = true)]
    pub json: bool,
    /// History database to read (default as for chatting).
    #[arg(long, env = "P2PCHAT_HISTORY", value_name = "PATH", global = true)]
    pub history: Option<PathBuf>,
    /// The profile whose history to read.
    #[arg(long, env = "P2PCHAT_PROFILE", value_name = "DIR", global = true)]
    pub profile: Option<PathBuf>,
}

/// What `client history` does besides listing chats.
#[derive(Debug, Clone, Subcommand)]
pub enum HistoryAction {
    /// Every conversation (two-party and group), most recently active first,
    /// each with the id to type for `show` and `forget`.
    List,
    /// One conversation's messages.
    Show {
        /// The conversation's id from `client history list` (4 or more hex digits).
        id: String,
    },
    /// Delete a conversation: its messages and everything stored about it.
    /// Asks for `yes` on a terminal.
    Forget {
        /// The conversation's id from `client history list` (4 or more hex digits).
        id: String,
        /// Do not ask (needed when standard input is not a terminal).
        #[arg(long)]
        yes: bool,
    },
}

/// How events are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputMode {
    /// Plain lines on stdout.
    Line,
    /// One JSON object per line.
    Json,
    /// The full-screen terminal interface.
    Tui,
}

impl Args {
    /// The output mode the flags ask for: JSON if asked, the terminal interface
    /// when stdout and stdin are terminals (unless --plain), else plain lines.
    pub fn output(&self) -> OutputMode {
        use std::io::IsTerminal;
        if self.json {
            OutputMode::Json
        } else if !self.plain && std::io::stdout().is_terminal() && std::io::stdin().is_terminal() {
            OutputMode::Tui
        } else {
            OutputMode::Line
        }
    }
}

impl Args {
    /// The engine's settings from the flags.
    pub fn config(&self) -> Config {
        Config {
            server: self.server.clone(),
            room: self.room.clone(),
            to: self.to.clone(),
            connect: self.connect.clone(),
            profile: self.profile.clone(),
            token_ttl: self.token_ttl,
            name: self.name.clone(),
            listen: self.listen.clone(),
            advertise: self.advertise,
            peers_file: self.peers_file.clone(),
            dh_group: self.dh_group,
            group_room: self.group_room,
            no_relay: self.no_relay,
            history: self.history.clone(),
            no_history: self.no_history,
            max_conversations: self.max_conversations,
            reconnect_for: self.reconnect_for,
            downloads: self.downloads.clone(),
            yes: self.yes,
            no_punch: self.no_punch,
            relay_after: self.relay_after,
            connect_timeout: self.connect_timeout,
            lan_port: self.lan_port,
            lan_timeout: self.lan_timeout,
            lan_interface: self.lan_interface.clone(),
            // The messenger picks one per conversation.
            lan_instance: None,
            no_presence: self.no_presence,
            read_receipts: self.read_receipts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The engine's defaults are the command line's, so a front-end that
    /// builds a `Config` itself behaves like `client` with no flags.
    #[test]
    fn the_engines_defaults_are_the_command_lines() {
        let from_flags = Args::parse_from(["client"]).config();
        let default = Config::default();
        assert_eq!(format!("{from_flags:?}"), format!("{default:?}"));
    }
}
