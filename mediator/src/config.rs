//! The mediator's tunables: timeouts, limits, relay caps and the mailbox's
//! store and caps, with the defaults of docs/protocol.md §4, §12 and §22.3.

use std::path::PathBuf;
use std::time::Duration;

/// Everything [`crate::run`] needs to know besides its listener.
///
/// `Config::default()` is what the binary runs with when no flag is given, but
/// for the mailbox's file: the default here keeps the mailbox in memory
/// (`mailbox_db: None`), the binary's `--mailbox-db` default is a file.
#[derive(Debug, Clone)]
pub struct Config {
    /// A `Hello` must have arrived this long after accept (one deadline for the
    /// whole message, not per read, so a byte-a-second sender is cut too).
    pub hello_timeout: Duration,
    /// A waiting room expires this long after it opened (`Error{Timeout}`).
    pub room_ttl: Duration,
    /// A waiting client that sends no `Ping` for this long is dropped (`Error{Timeout}`).
    pub idle_timeout: Duration,
    /// Most rooms waiting at once; a `Hello` that would open one more gets
    /// `Error{TooManyConnections}`.
    pub max_rooms: usize,
    /// Most members of one group room (§19); one more gets `Error{RoomFull}`.
    pub max_members: usize,
    /// Most members of one group room from one IPv4 address or one IPv6 /64
    /// (§19.1), so a stranger without the code cannot fill a room from one
    /// host; one more gets `Error{RoomFull}` naming this cap.
    pub max_members_per_ip: usize,
    /// A group room stays open this long after its last member left.
    pub group_ttl: Duration,
    /// Most client connections open at once; further connects are refused.
    pub max_connections: usize,
    /// Most connections open at once from one IPv4 address or one IPv6 /64.
    pub per_ip_connections: u32,
    /// `Hello`s one address may send per minute (token bucket of this size,
    /// refilled evenly over a minute).
    pub per_ip_hellos_per_min: u32,
    /// Most connections open at once from all the /64s of one IPv6 /56 together.
    pub per_56_connections: u32,
    /// Most connections open at once from all the /64s of one IPv6 /48 together.
    pub per_48_connections: u32,
    /// `Hello`s per minute from one IPv6 /56 (a bucket of its own, on top of the
    /// /64's), so spreading over /64s does not multiply the rate.
    pub per_56_hellos_per_min: u32,
    /// `Hello`s per minute from one IPv6 /48.
    pub per_48_hellos_per_min: u32,
    /// Whether `Matched` offers a relay (docs/protocol.md §12.3).
    pub relay: bool,
    /// Bytes (both directions, frame headers included) one relay session may carry.
    pub relay_max_bytes: u64,
    /// Bytes per second one relay session may carry, both directions together.
    pub relay_rate: u64,
    /// Relay sessions open (or waiting for their second side) at once.
    pub relay_max_sessions: usize,
    /// A relay session with no byte in either direction for this long is ended.
    pub relay_idle: Duration,
    /// How long after `Matched` a relay token is good for.
    pub relay_token_ttl: Duration,
    /// How long a matched client may keep its mediator connection for the punch.
    pub punch_hold: Duration,
    /// `HOST:PORT` at which clients reach this very instance (not a load balancer
    /// in front of several), sent as the relay server in `Matched`. `None`: the
    /// offer names no server, meaning "the mediator you are talking to".
    pub public_addr: Option<String>,
    /// A Redis URL: share the room table with every mediator using the same Redis
    /// (docs/protocol.md §18). `None`: rooms live in this process only.
    pub redis: Option<String>,
    /// The relay token key. Mediators sharing a Redis must share it; `None`: a
    /// random one, or with `redis` the one agreed in Redis.
    pub relay_secret: Option<RelaySecret>,
    /// Every connection starts with a PROXY protocol header (v1 or v2) from a
    /// load balancer, giving the client's own address. Only the balancer may
    /// reach the port then: anyone else could claim any address.
    pub proxy_protocol: bool,
    /// Most tags one presence connection waits under (docs/protocol.md §21).
    pub presence_max_tags: usize,
    /// Most tag registrations of all presence connections together.
    pub presence_max_total: usize,
    /// The mailbox's SQLite file (docs/protocol.md §22.3), made if missing;
    /// `None`: an SQLite store in memory, lost at exit (tests, embedding).
    /// Not used with `redis`: the mailbox then lives in Redis.
    pub mailbox_db: Option<PathBuf>,
    /// How long a mailbox item is kept (and a removed item's id remembered).
    pub mailbox_ttl: Duration,
    /// Most items one mailbox queue holds.
    pub mailbox_queue_items: u64,
    /// Most sealed bytes one mailbox queue holds.
    pub mailbox_queue_bytes: u64,
    /// Most bytes one IPv4 address or IPv6 /64 may add to the mailbox per hour
    /// (counted by each mediator in its memory, never stored).
    pub mailbox_source_bytes: u64,
    /// Most bytes the whole mailbox store holds, as its cap counts them
    /// (sealed items, and a fixed cost per item, remembered id and queue).
    pub mailbox_max_bytes: u64,
}

/// A 32-byte relay token key (`--relay-secret`). `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct RelaySecret(pub [u8; 32]);

impl std::fmt::Debug for RelaySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RelaySecret(..)")
    }
}

impl std::str::FromStr for RelaySecret {
    type Err = String;

    /// 64 hex digits, as `openssl rand -hex 32` prints them.
    fn from_str(text: &str) -> Result<RelaySecret, String> {
        let mut secret = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut secret).map_err(|_| {
            "expected 64 hex digits (make one with `openssl rand -hex 32`)".to_owned()
        })?;
        Ok(RelaySecret(secret))
    }
}

impl Default for Config {
    fn default() -> Config {
        Config {
            hello_timeout: Duration::from_secs(10),
            room_ttl: Duration::from_secs(10 * 60),
            idle_timeout: Duration::from_secs(90),
            max_rooms: 100_000,
            max_members: 16,
            // A household or office behind one NAT is a few members; a stranger
            // needs four hosts to fill a room of 16.
            max_members_per_ip: 4,
            group_ttl: Duration::from_secs(10 * 60),
            max_connections: 200_000,
            per_ip_connections: 64,
            per_ip_hellos_per_min: 120,
            // A /56 (a home or small office) and a /48 (a site) get 4 and 16
            // times what one /64 gets: a campus with many hosts fits, while one
            // /48 holds at most 1024 of the 200 000 connections.
            per_56_connections: 256,
            per_48_connections: 1024,
            per_56_hellos_per_min: 480,
            per_48_hellos_per_min: 1920,
            relay: true,
            relay_max_bytes: 2 * 1024 * 1024 * 1024,
            relay_rate: 8 * 1024 * 1024,
            relay_max_sessions: 1000,
            relay_idle: Duration::from_secs(120),
            relay_token_ttl: Duration::from_secs(60),
            punch_hold: Duration::from_secs(60),
            public_addr: None,
            redis: None,
            relay_secret: None,
            proxy_protocol: false,
            // A person with more contacts than this opens a second connection.
            presence_max_tags: 1024,
            // About 100 bytes each: 100 MB at most, whatever the clients do.
            presence_max_total: 1_000_000,
            mailbox_db: None,
            mailbox_ttl: Duration::from_secs(7 * 24 * 3600),
            mailbox_queue_items: 1000,
            mailbox_queue_bytes: 4 << 20,
            mailbox_source_bytes: 16 << 20,
            mailbox_max_bytes: 1 << 30,
        }
    }
}

impl Config {
    /// Refuses settings that would make the server useless (a zero timeout or limit).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let durations = [
            ("hello-timeout", self.hello_timeout),
            ("room-ttl", self.room_ttl),
            ("group-ttl", self.group_ttl),
            ("idle-timeout", self.idle_timeout),
            ("relay-idle", self.relay_idle),
            ("relay-token-ttl", self.relay_token_ttl),
            ("punch-hold", self.punch_hold),
            ("mailbox-ttl", self.mailbox_ttl),
        ];
        for (name, value) in durations {
            if value.is_zero() {
                return Err(ConfigError::Zero(name));
            }
        }
        let counts = [
            ("max-rooms", self.max_rooms),
            ("max-members", self.max_members),
            ("max-members-per-ip", self.max_members_per_ip),
            ("max-connections", self.max_connections),
            ("per-ip-connections", self.per_ip_connections as usize),
            ("per-ip-hellos-per-min", self.per_ip_hellos_per_min as usize),
            ("per-56-connections", self.per_56_connections as usize),
            ("per-48-connections", self.per_48_connections as usize),
            ("per-56-hellos-per-min", self.per_56_hellos_per_min as usize),
            ("per-48-hellos-per-min", self.per_48_hellos_per_min as usize),
            ("relay-max-sessions", self.relay_max_sessions),
            (
                "relay-max-bytes",
                usize::try_from(self.relay_max_bytes).unwrap_or(usize::MAX),
            ),
            (
                "relay-rate",
                usize::try_from(self.relay_rate).unwrap_or(usize::MAX),
            ),
            ("mailbox-queue-items", saturate(self.mailbox_queue_items)),
            ("mailbox-queue-bytes", saturate(self.mailbox_queue_bytes)),
            ("mailbox-source-bytes", saturate(self.mailbox_source_bytes)),
            ("mailbox-max-bytes", saturate(self.mailbox_max_bytes)),
        ];
        for (name, value) in counts {
            if value == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        if let Some(addr) = &self.public_addr {
            let port = addr.rsplit_once(':').and_then(|(host, port)| {
                (!host.is_empty() && addr.len() <= MAX_PUBLIC_ADDR)
                    .then(|| port.parse::<u16>().ok())?
            });
            if !matches!(port, Some(p) if p != 0) {
                return Err(ConfigError::PublicAddr(addr.clone()));
            }
        }
        if self.mailbox_ttl < Duration::from_secs(1) {
            return Err(ConfigError::MailboxTtl);
        }
        if self.redis.is_some() && self.relay && self.public_addr.is_none() {
            return Err(ConfigError::RedisNeedsPublicAddr);
        }
        Ok(())
    }

    /// The group room caps these settings describe.
    pub fn group_caps(&self) -> crate::groups::GroupCaps {
        crate::groups::GroupCaps {
            max_members: self.max_members,
            per_source: self.max_members_per_ip,
            ttl: self.group_ttl,
        }
    }

    /// The per-address and per-network caps these settings describe.
    pub fn limit_caps(&self) -> crate::limits::LimitCaps {
        use crate::limits::{Caps, LimitCaps};
        LimitCaps {
            address: Caps {
                connections: self.per_ip_connections,
                hellos_per_min: self.per_ip_hellos_per_min,
            },
            net56: Caps {
                connections: self.per_56_connections,
                hellos_per_min: self.per_56_hellos_per_min,
            },
            net48: Caps {
                connections: self.per_48_connections,
                hellos_per_min: self.per_48_hellos_per_min,
            },
        }
    }
}

/// A setting [`Config::validate`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A timeout or limit of zero.
    #[error("--{0} must be greater than zero")]
    Zero(&'static str),
    /// `--public-addr` is not `HOST:PORT`.
    #[error("--public-addr `{0}` must be HOST:PORT (at most 253 characters, port 1-65535)")]
    PublicAddr(String),
    /// The mailbox counts time in whole seconds.
    #[error("--mailbox-ttl must be at least 1s")]
    MailboxTtl,
    /// Shared rooms with a relay need each instance's own address.
    #[error(
        "--redis with the relay on needs --public-addr HOST:PORT: the address of this \
         instance itself (not of the load balancer), so a client matched through another \
         instance can reach the relay that serves its pair (or pass --relay off)"
    )]
    RedisNeedsPublicAddr,
}

fn saturate(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// Longest `--public-addr`: a DNS name (253) is the most it needs.
const MAX_PUBLIC_ADDR: usize = 253;
