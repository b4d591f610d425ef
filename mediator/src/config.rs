//! The mediator's tunables: timeouts, limits and relay caps, with the defaults of
//! docs/protocol.md §4 and §12.

use std::time::Duration;

/// Everything [`crate::run`] needs to know besides its listener.
///
/// `Config::default()` is what the binary runs with when no flag is given.
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
    /// Most client connections open at once; further connects are refused.
    pub max_connections: usize,
    /// Most connections open at once from one IPv4 address or one IPv6 /64.
    pub per_ip_connections: u32,
    /// `Hello`s one address may send per minute (token bucket of this size,
    /// refilled evenly over a minute).
    pub per_ip_hellos_per_min: u32,
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
}

impl Default for Config {
    fn default() -> Config {
        Config {
            hello_timeout: Duration::from_secs(10),
            room_ttl: Duration::from_secs(10 * 60),
            idle_timeout: Duration::from_secs(90),
            max_rooms: 100_000,
            max_connections: 200_000,
            per_ip_connections: 64,
            per_ip_hellos_per_min: 120,
            relay: true,
            relay_max_bytes: 2 * 1024 * 1024 * 1024,
            relay_rate: 8 * 1024 * 1024,
            relay_max_sessions: 1000,
            relay_idle: Duration::from_secs(120),
            relay_token_ttl: Duration::from_secs(60),
            punch_hold: Duration::from_secs(60),
        }
    }
}

impl Config {
    /// Refuses settings that would make the server useless (a zero timeout or limit).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let durations = [
            ("hello-timeout", self.hello_timeout),
            ("room-ttl", self.room_ttl),
            ("idle-timeout", self.idle_timeout),
            ("relay-idle", self.relay_idle),
            ("relay-token-ttl", self.relay_token_ttl),
            ("punch-hold", self.punch_hold),
        ];
        for (name, value) in durations {
            if value.is_zero() {
                return Err(ConfigError::Zero(name));
            }
        }
        let counts = [
            ("max-rooms", self.max_rooms),
            ("max-connections", self.max_connections),
            ("per-ip-connections", self.per_ip_connections as usize),
            ("per-ip-hellos-per-min", self.per_ip_hellos_per_min as usize),
            ("relay-max-sessions", self.relay_max_sessions),
            (
                "relay-max-bytes",
                usize::try_from(self.relay_max_bytes).unwrap_or(usize::MAX),
            ),
            (
                "relay-rate",
                usize::try_from(self.relay_rate).unwrap_or(usize::MAX),
            ),
        ];
        for (name, value) in counts {
            if value == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        Ok(())
    }
}

/// A setting [`Config::validate`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A timeout or limit of zero.
    #[error("--{0} must be greater than zero")]
    Zero(&'static str),
}
