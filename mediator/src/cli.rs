//! The command line: every flag, its default, and its `MEDIATOR_*` environment
//! variable, turned into a [`Config`] and a logging setup.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::config::{Config, RelaySecret};

/// How log lines look on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// p2pchat mediator: pairs two clients that name the same room, hands each the
/// other's public value and addresses, then forgets them. It never sees a room
/// name or a chat byte.
///
/// Every flag can also be set by an environment variable MEDIATOR_<FLAG>
/// (e.g. MEDIATOR_LISTEN, MEDIATOR_HELLO_TIMEOUT). Durations are written like
/// 500ms, 10s, 10m, 1h. Log verbosity follows RUST_LOG (default: info).
#[derive(Debug, Clone, Parser)]
#[command(name = "mediator", version, about, long_about)]
pub struct Args {
    /// Address and TCP port to accept clients on. `[::]:PORT` takes IPv4 and IPv6;
    /// port 0 picks a free port. The first stdout line is `listening on ADDR`.
    #[arg(
        long,
        env = "MEDIATOR_LISTEN",
        default_value = "[::]:7070",
        value_name = "ADDR"
    )]
    pub listen: SocketAddr,

    /// A client must send its Hello within this time of connecting (one deadline
    /// for the whole message, so a slow trickle is cut too).
    #[arg(long, env = "MEDIATOR_HELLO_TIMEOUT", default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub hello_timeout: Duration,

    /// A waiting room expires after this long without a peer (Error Timeout).
    #[arg(long, env = "MEDIATOR_ROOM_TTL", default_value = "10m", value_parser = parse_duration, value_name = "DURATION")]
    pub room_ttl: Duration,

    /// A waiting client that sends no Ping for this long is dropped (Error Timeout).
    #[arg(long, env = "MEDIATOR_IDLE_TIMEOUT", default_value = "90s", value_parser = parse_duration, value_name = "DURATION")]
    pub idle_timeout: Duration,

    /// Most contacts one running messenger may wait for on one connection
    /// (presence); more are refused (Error PresenceLimit).
    #[arg(long, env = "MEDIATOR_PRESENCE_MAX_TAGS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=65_536), value_name = "N")]
    pub presence_max_tags: u32,

    /// Most waiting contacts of all presence connections together (about 100
    /// bytes each); more are refused (Error PresenceLimit).
    #[arg(long, env = "MEDIATOR_PRESENCE_MAX_TOTAL", default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..), value_name = "N")]
    pub presence_max_total: u64,

    /// The offline mailbox's SQLite file (sealed items waiting for contacts who
    /// are offline; made if missing, with its -wal and -shm beside it). A
    /// relative path is taken from the working directory; `:memory:` keeps the
    /// mailbox in memory, lost at exit. Not used with --redis (the mailbox is
    /// then in Redis).
    #[arg(
        long,
        env = "MEDIATOR_MAILBOX_DB",
        default_value = "mailbox.sqlite3",
        value_name = "PATH"
    )]
    pub mailbox_db: PathBuf,

    /// How long the mailbox keeps an item (then it is deleted, delivered or not).
    #[arg(long, env = "MEDIATOR_MAILBOX_TTL", default_value = "7d", value_parser = parse_duration, value_name = "DURATION")]
    pub mailbox_ttl: Duration,

    /// Most items one mailbox queue (one recipient in one conversation) holds;
    /// more are refused (Error MailboxFull).
    #[arg(long, env = "MEDIATOR_MAILBOX_QUEUE_ITEMS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000), value_name = "N")]
    pub mailbox_queue_items: u64,

    /// Most sealed bytes one mailbox queue holds; suffixes K, M, G (binary).
    #[arg(long, env = "MEDIATOR_MAILBOX_QUEUE_BYTES", default_value = "4M", value_parser = parse_bytes, value_name = "BYTES")]
    pub mailbox_queue_bytes: u64,

    /// Most bytes one IPv4 address or IPv6 /64 may add to the mailbox per hour
    /// (counted by each instance in memory); suffixes K, M, G (binary).
    #[arg(long, env = "MEDIATOR_MAILBOX_SOURCE_BYTES", default_value = "16M", value_parser = parse_bytes, value_name = "BYTES")]
    pub mailbox_source_bytes: u64,

    /// Most bytes the whole mailbox store holds (sealed items, plus 64 per item
    /// and per remembered id, 128 per queue); suffixes K, M, G (binary).
    #[arg(long, env = "MEDIATOR_MAILBOX_MAX_BYTES", default_value = "1G", value_parser = parse_bytes, value_name = "BYTES")]
    pub mailbox_max_bytes: u64,

    /// Most rooms waiting at once; a Hello that would open another is refused
    /// (Error TooManyConnections).
    #[arg(long, env = "MEDIATOR_MAX_ROOMS", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..), value_name = "N")]
    pub max_rooms: u64,

    /// Most members of one group room (client --group); one more is refused
    /// (Error RoomFull).
    #[arg(long, env = "MEDIATOR_MAX_MEMBERS", default_value_t = 16, value_parser = clap::value_parser!(u32).range(2..=1024), value_name = "N")]
    pub max_members: u32,

    /// Most members of one group room from one IPv4 address or IPv6 /64, so a
    /// stranger without the code cannot fill a room from one host (Error
    /// RoomFull, naming this cap). Members behind one NAT share it.
    #[arg(long, env = "MEDIATOR_MAX_MEMBERS_PER_IP", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1024), value_name = "N")]
    pub max_members_per_ip: u32,

    /// A group room stays open this long after its last member left, so members
    /// who come back find it (and its generated code stays theirs).
    #[arg(long, env = "MEDIATOR_GROUP_TTL", default_value = "10m", value_parser = parse_duration, value_name = "DURATION")]
    pub group_ttl: Duration,

    /// Most client connections open at once; more are refused politely. Keep it
    /// below the open-file limit (LimitNOFILE / ulimit -n).
    #[arg(long, env = "MEDIATOR_MAX_CONNECTIONS", default_value_t = 200_000, value_parser = clap::value_parser!(u64).range(1..), value_name = "N")]
    pub max_connections: u64,

    /// Most connections open at once from one IPv4 address or one IPv6 /64.
    #[arg(long, env = "MEDIATOR_PER_IP_CONNECTIONS", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    pub per_ip_connections: u32,

    /// Hellos one IPv4 address or IPv6 /64 may send per minute (a token bucket
    /// of this size, refilled evenly).
    #[arg(long, env = "MEDIATOR_PER_IP_HELLOS_PER_MIN", default_value_t = 120, value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    pub per_ip_hellos_per_min: u32,

    /// Most connections open at once from one IPv6 /56, all its /64s together
    /// (a /56 is what a home or small office gets).
    #[arg(long = "per-56-connections", env = "MEDIATOR_PER_56_CONNECTIONS", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    pub per_56_connections: u32,

    /// Most connections open at once from one IPv6 /48, all its /64s together
    /// (a /48 is what a site gets).
    #[arg(long = "per-48-connections", env = "MEDIATOR_PER_48_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    pub per_48_connections: u32,

    /// Hellos one IPv6 /56 may send per minute, all its /64s together (a bucket
    /// on top of each /64's, so spreading over /64s does not multiply the rate).
    #[arg(long = "per-56-hellos-per-min", env = "MEDIATOR_PER_56_HELLOS_PER_MIN", default_value_t = 480, value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    pub per_56_hellos_per_min: u32,

    /// Hellos one IPv6 /48 may send per minute, all its /64s together.
    #[arg(long = "per-48-hellos-per-min", env = "MEDIATOR_PER_48_HELLOS_PER_MIN", default_value_t = 1920, value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    pub per_48_hellos_per_min: u32,

    /// Serve Prometheus metrics at http://ADDR/metrics (off unless given). Bind it
    /// to a private address: the counters are not secret, but not for everyone.
    #[arg(long, env = "MEDIATOR_METRICS", value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,

    /// Log line format on stderr.
    #[arg(long, env = "MEDIATOR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, value_name = "FORMAT")]
    pub log_format: LogFormat,

    /// Relay chat between two clients that cannot reach each other directly
    /// (ciphertext only): on or off.
    #[arg(long, env = "MEDIATOR_RELAY", value_enum, default_value_t = Switch::On, value_name = "on|off")]
    pub relay: Switch,

    /// Bytes one relay session may carry (both directions); suffixes K, M, G (binary).
    #[arg(long, env = "MEDIATOR_RELAY_MAX_BYTES", default_value = "2G", value_parser = parse_bytes, value_name = "BYTES")]
    pub relay_max_bytes: u64,

    /// Bytes per second one relay session may carry; suffixes K, M, G (binary).
    #[arg(long, env = "MEDIATOR_RELAY_RATE", default_value = "8M", value_parser = parse_bytes, value_name = "BYTES")]
    pub relay_rate: u64,

    /// Relay sessions at once; more are refused (the clients say so).
    #[arg(long, env = "MEDIATOR_RELAY_MAX_SESSIONS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..), value_name = "N")]
    pub relay_max_sessions: u64,

    /// A relay session silent this long in both directions is ended.
    #[arg(long, env = "MEDIATOR_RELAY_IDLE", default_value = "120s", value_parser = parse_duration, value_name = "DURATION")]
    pub relay_idle: Duration,

    /// Share rooms with every mediator using this Redis (redis://[:PASSWORD@]HOST:PORT/[DB]),
    /// so two clients that reach different instances still meet. Needs Redis 6 or
    /// later (RESP3). Without it, rooms live in this process only.
    #[arg(long, env = "MEDIATOR_REDIS", value_name = "URL")]
    pub redis: Option<String>,

    /// HOST:PORT at which clients reach this very instance (not the load balancer):
    /// Matched names it as the relay for pairs this instance completes. Needed with
    /// --redis (unless --relay off); default there: --listen, if it names one address.
    #[arg(long, env = "MEDIATOR_PUBLIC_ADDR", value_name = "HOST:PORT")]
    pub public_addr: Option<String>,

    /// Relay token key, 64 hex digits (openssl rand -hex 32); every instance sharing
    /// a Redis must have the same. Default: with --redis, the key agreed in Redis;
    /// without, a random one per start.
    #[arg(
        long,
        env = "MEDIATOR_RELAY_SECRET",
        value_name = "HEX",
        hide_env_values = true
    )]
    pub relay_secret: Option<RelaySecret>,

    /// Expect a PROXY protocol header (v1 or v2, e.g. HAProxy's send-proxy-v2) at
    /// the start of every connection, and take the client's address from it. Only
    /// for a port that nothing but the load balancer can reach.
    #[arg(long, env = "MEDIATOR_PROXY_PROTOCOL")]
    pub proxy_protocol: bool,

    /// Check the configuration (flags and MEDIATOR_* variables), print it, and
    /// exit without listening.
    #[arg(long, env = "MEDIATOR_CHECK_CONFIG")]
    pub check_config: bool,
}

/// A yes/no setting spelled `on` or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    On,
    Off,
}

/// `--mailbox-db` naming no file: the mailbox in memory.
const MEMORY: &str = ":memory:";

/// Parses `1048576`, `64K`, `8M`, `2G` (binary multiples); zero is refused.
fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => text.split_at(i),
        None => (text, ""),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}`: expected a number of bytes like 1048576, 64K, 8M or 2G"))?;
    let mult: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        other => return Err(format!("`{other}`: unknown unit; use K, M or G")),
    };
    match n.checked_mul(mult) {
        Some(0) => Err("must be greater than zero".to_owned()),
        Some(v) => Ok(v),
        None => Err(format!("`{text}` is too large")),
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if d.is_zero() {
        return Err("must be greater than zero".to_owned());
    }
    Ok(d)
}

impl Args {
    /// The server configuration these flags describe.
    pub fn config(&self) -> Config {
        Config {
            hello_timeout: self.hello_timeout,
            room_ttl: self.room_ttl,
            idle_timeout: self.idle_timeout,
            max_rooms: usize::try_from(self.max_rooms).unwrap_or(usize::MAX),
            max_members: usize::try_from(self.max_members).unwrap_or(usize::MAX),
            max_members_per_ip: usize::try_from(self.max_members_per_ip).unwrap_or(usize::MAX),
            group_ttl: self.group_ttl,
            max_connections: usize::try_from(self.max_connections).unwrap_or(usize::MAX),
            per_ip_connections: self.per_ip_connections,
            per_ip_hellos_per_min: self.per_ip_hellos_per_min,
            per_56_connections: self.per_56_connections,
            per_48_connections: self.per_48_connections,
            per_56_hellos_per_min: self.per_56_hellos_per_min,
            per_48_hellos_per_min: self.per_48_hellos_per_min,
            relay: self.relay == Switch::On,
            relay_max_bytes: self.relay_max_bytes,
            relay_rate: self.relay_rate,
            relay_max_sessions: usize::try_from(self.relay_max_sessions).unwrap_or(usize::MAX),
            relay_idle: self.relay_idle,
            public_addr: self.public_addr.clone(),
            redis: self.redis.clone(),
            relay_secret: self.relay_secret.clone(),
            proxy_protocol: self.proxy_protocol,
            presence_max_tags: usize::try_from(self.presence_max_tags).unwrap_or(usize::MAX),
            presence_max_total: usize::try_from(self.presence_max_total).unwrap_or(usize::MAX),
            mailbox_db: self.mailbox_file().map(PathBuf::from),
            mailbox_ttl: self.mailbox_ttl,
            mailbox_queue_items: self.mailbox_queue_items,
            mailbox_queue_bytes: self.mailbox_queue_bytes,
            mailbox_source_bytes: self.mailbox_source_bytes,
            mailbox_max_bytes: self.mailbox_max_bytes,
            ..Config::default()
        }
    }

    /// The mailbox file, or `None` for `--mailbox-db :memory:`.
    fn mailbox_file(&self) -> Option<&std::path::Path> {
        (self.mailbox_db.as_os_str() != MEMORY).then_some(self.mailbox_db.as_path())
    }

    /// [`Args::config`] for a server listening on `local`: with `--redis` and no
    /// `--public-addr`, a specific listen address (not `[::]` or `0.0.0.0`) is
    /// taken as this instance's public address.
    pub fn config_listening_on(&self, local: SocketAddr) -> Config {
        let mut config = self.config();
        if config.redis.is_some()
            && config.public_addr.is_none()
            && !local.ip().is_unspecified()
            && local.port() != 0
        {
            config.public_addr = Some(local.to_string());
        }
        config
    }

    /// A human-readable summary for `--check-config`.
    pub fn summary(&self) -> String {
        let d = |d: Duration| humantime::format_duration(d).to_string();
        let redis = self.redis.as_deref().map_or_else(
            || "off (rooms in this process)".to_owned(),
            |url| format!("{} (shared rooms)", crate::rooms::redis_place(url)),
        );
        let public = self.public_addr.as_deref().unwrap_or("-");
        let secret = if self.relay_secret.is_some() {
            "set"
        } else {
            "-"
        };
        let metrics = self
            .metrics
            .map_or_else(|| "off".to_owned(), |a| format!("http://{a}/metrics"));
        let mailbox = match (&self.redis, self.mailbox_file()) {
            (Some(url), _) => format!("redis {} (shared)", crate::rooms::redis_place(url)),
            (None, None) => "memory (lost at exit)".to_owned(),
            (None, Some(path)) => format!("sqlite {}", path.display()),
        };
        format!(
            "listen {}\nhello-timeout {}\nroom-ttl {}\nidle-timeout {}\nmax-rooms {}\n\
             max-members {}\nmax-members-per-ip {}\ngroup-ttl {}\nmax-connections {}\nper-ip-connections {}\nper-ip-hellos-per-min {}\n\
             per-56-connections {}\nper-48-connections {}\nper-56-hellos-per-min {}\n\
             per-48-hellos-per-min {}\nrelay {:?}\nrelay-max-bytes {}\nrelay-rate {}/s\n\
             relay-max-sessions {}\nrelay-idle {}\nmetrics {metrics}\nlog-format {:?}\n\
             redis {redis}\npublic-addr {public}\nrelay-secret {secret}\nproxy-protocol {}\n\
             presence-max-tags {}\npresence-max-total {}\nmailbox {mailbox}\nmailbox-ttl {}\n\
             mailbox-queue-items {}\nmailbox-queue-bytes {}\nmailbox-source-bytes {}/h\n\
             mailbox-max-bytes {}",
            self.listen,
            d(self.hello_timeout),
            d(self.room_ttl),
            d(self.idle_timeout),
            self.max_rooms,
            self.max_members,
            self.max_members_per_ip,
            d(self.group_ttl),
            self.max_connections,
            self.per_ip_connections,
            self.per_ip_hellos_per_min,
            self.per_56_connections,
            self.per_48_connections,
            self.per_56_hellos_per_min,
            self.per_48_hellos_per_min,
            self.relay,
            self.relay_max_bytes,
            self.relay_rate,
            self.relay_max_sessions,
            d(self.relay_idle),
            self.log_format,
            self.proxy_protocol,
            self.presence_max_tags,
            self.presence_max_total,
            d(self.mailbox_ttl),
            self.mailbox_queue_items,
            self.mailbox_queue_bytes,
            self.mailbox_source_bytes,
            self.mailbox_max_bytes,
        )
    }
}

/// Installs the global tracing subscriber: stderr, `RUST_LOG` filter (default
/// `info`), text or JSON.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn defaults_match_config_default() {
        let args = Args::try_parse_from(["mediator"]).unwrap();
        let c = args.config();
        let d = Config::default();
        assert_eq!(c.hello_timeout, d.hello_timeout);
        assert_eq!(c.room_ttl, d.room_ttl);
        assert_eq!(c.idle_timeout, d.idle_timeout);
        assert_eq!(c.max_rooms, d.max_rooms);
        assert_eq!(c.max_members, d.max_members);
        assert_eq!(c.max_members_per_ip, d.max_members_per_ip);
        assert_eq!(c.max_connections, d.max_connections);
        assert_eq!(c.per_ip_connections, d.per_ip_connections);
        assert_eq!(c.per_ip_hellos_per_min, d.per_ip_hellos_per_min);
        assert_eq!(c.per_56_connections, d.per_56_connections);
        assert_eq!(c.per_48_connections, d.per_48_connections);
        assert_eq!(c.per_56_hellos_per_min, d.per_56_hellos_per_min);
        assert_eq!(c.per_48_hellos_per_min, d.per_48_hellos_per_min);
        assert_eq!(c.relay, d.relay);
        assert_eq!(c.relay_max_bytes, d.relay_max_bytes);
        assert_eq!(c.relay_rate, d.relay_rate);
        assert_eq!(c.relay_max_sessions, d.relay_max_sessions);
        assert_eq!(c.relay_idle, d.relay_idle);
        assert_eq!(c.mailbox_ttl, d.mailbox_ttl);
        assert_eq!(c.mailbox_queue_items, d.mailbox_queue_items);
        assert_eq!(c.mailbox_queue_bytes, d.mailbox_queue_bytes);
        assert_eq!(c.mailbox_source_bytes, d.mailbox_source_bytes);
        assert_eq!(c.mailbox_max_bytes, d.mailbox_max_bytes);
        // The binary keeps its mailbox in a file; the library default, in memory.
        assert_eq!(c.mailbox_db, Some(PathBuf::from("mailbox.sqlite3")));
        assert_eq!(d.mailbox_db, None);
        assert_eq!(args.listen, "[::]:7070".parse().unwrap());
    }

    #[test]
    fn durations_and_zero() {
        let args = Args::try_parse_from(["mediator", "--hello-timeout", "2s", "--room-ttl", "1h"])
            .unwrap();
        assert_eq!(args.hello_timeout, Duration::from_secs(2));
        assert_eq!(args.room_ttl, Duration::from_secs(3600));
        assert!(Args::try_parse_from(["mediator", "--idle-timeout", "0s"]).is_err());
        assert!(Args::try_parse_from(["mediator", "--max-rooms", "0"]).is_err());
        assert!(Args::try_parse_from(["mediator", "--log-format", "xml"]).is_err());
    }

    #[test]
    fn mailbox_flags() {
        let args = Args::try_parse_from([
            "mediator",
            "--mailbox-db",
            ":memory:",
            "--mailbox-ttl",
            "2h",
            "--mailbox-queue-bytes",
            "64K",
            "--mailbox-max-bytes",
            "2G",
        ])
        .unwrap();
        let c = args.config();
        assert_eq!(c.mailbox_db, None);
        assert_eq!(c.mailbox_ttl, Duration::from_secs(7200));
        assert_eq!(c.mailbox_queue_bytes, 64 * 1024);
        assert_eq!(c.mailbox_max_bytes, 2 << 30);
        assert!(args.summary().contains("\nmailbox memory (lost at exit)\n"));
        let file = Args::try_parse_from(["mediator", "--mailbox-db", "/var/lib/m/box.db"]).unwrap();
        assert!(file
            .summary()
            .contains("\nmailbox sqlite /var/lib/m/box.db\n"));
        assert!(Args::try_parse_from(["mediator", "--mailbox-queue-items", "0"]).is_err());
        assert!(Args::try_parse_from(["mediator", "--mailbox-ttl", "0s"]).is_err());
    }

    #[test]
    fn relay_flags() {
        let args = Args::try_parse_from([
            "mediator",
            "--relay",
            "off",
            "--relay-max-bytes",
            "64K",
            "--relay-rate",
            "1M",
        ])
        .unwrap();
        let c = args.config();
        assert!(!c.relay);
        assert_eq!(c.relay_max_bytes, 64 * 1024);
        assert_eq!(c.relay_rate, 1024 * 1024);
        assert_eq!(parse_bytes("2G").unwrap(), 2 << 30);
        assert_eq!(parse_bytes("100").unwrap(), 100);
        assert!(parse_bytes("0").is_err());
        assert!(parse_bytes("5T").is_err());
        assert!(parse_bytes("lots").is_err());
        assert!(Args::try_parse_from(["mediator", "--relay", "maybe"]).is_err());
    }
}
