//! The per-network limits (docs/protocol.md §4): connections and `Hello`s counted
//! per IPv6 /56 and /48 on top of each /64, so one network cannot fill the global
//! caps by taking a fresh /64 per connection. Loopback gives a test one /64
//! (`::1`), so the arithmetic runs on the limits module with synthetic addresses,
//! and one end-to-end refusal shows the server applies it and names the limit.

mod common;

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use common::{hello, start_on, Client};
use mediator::limits::{AddrKey, AddrLimits, Refused, Scope};
use mediator::Config;
use wire::ErrorCode;

/// The /64 `2001:db8:<site>:<subnet>::/64`, as the key of one of its hosts.
fn net64(site: u16, subnet: u16) -> AddrKey {
    AddrKey::of(IpAddr::V6(Ipv6Addr::new(
        0x2001, 0xdb8, site, subnet, 0x1234, 0, 0, 1,
    )))
}

fn default_limits() -> AddrLimits {
    AddrLimits::new(Config::default().limit_caps())
}

#[test]
fn defaults_are_256_per_56_and_1024_per_48_and_validate() {
    let c = Config::default();
    assert_eq!(c.per_ip_connections, 64);
    assert_eq!(c.per_56_connections, 256);
    assert_eq!(c.per_48_connections, 1024);
    assert_eq!(c.per_56_hellos_per_min, 480);
    assert_eq!(c.per_48_hellos_per_min, 1920);
    assert!(c.validate().is_ok());
    let zero = Config {
        per_48_connections: 0,
        ..Config::default()
    };
    assert!(zero.validate().is_err());
}

#[test]
fn one_56_is_capped_however_many_of_its_64s_are_used() {
    let limits = default_limits();
    // 256 /64s of 2001:db8:1:100::/56, one connection each, fill its cap.
    for subnet in 0x100..0x200 {
        limits.connect(net64(1, subnet)).unwrap();
    }
    assert_eq!(limits.open_in(net64(1, 0x100), Scope::Net56), 256);
    // The next /64 of that /56, unused so far, is refused by the /56 limit.
    assert_eq!(
        limits.connect(net64(1, 0x1ff)),
        Err(Refused::Connections(Scope::Net56))
    );
    // A neighbouring /56 of the same /48 still gets in.
    limits.connect(net64(1, 0x200)).unwrap();
    // Closing one connection frees one slot of the /56.
    limits.disconnect(net64(1, 0x150));
    limits.connect(net64(1, 0x1ff)).unwrap();
}

#[test]
fn one_48_is_capped_however_many_of_its_56s_are_used() {
    let limits = default_limits();
    // 256 /56s of 2001:db8:2::/48 with 4 connections each (each in its own /64):
    // below every /64 and /56 cap, together the /48's 1024.
    for fifty_six in 0..256u16 {
        for host in 0..4u16 {
            limits.connect(net64(2, (fifty_six << 8) | host)).unwrap();
        }
    }
    assert_eq!(limits.open_in(net64(2, 0), Scope::Net48), 1024);
    assert_eq!(
        limits.connect(net64(2, 0x00ff)),
        Err(Refused::Connections(Scope::Net48))
    );
    // Another /48 is another site.
    limits.connect(net64(3, 0)).unwrap();
    limits.disconnect(net64(2, 0x1000));
    limits.connect(net64(2, 0x00ff)).unwrap();
}

#[test]
fn a_refused_connection_is_counted_nowhere() {
    let config = Config {
        per_56_connections: 2,
        ..Config::default()
    };
    let limits = AddrLimits::new(config.limit_caps());
    limits.connect(net64(4, 1)).unwrap();
    limits.connect(net64(4, 2)).unwrap();
    for _ in 0..10 {
        assert_eq!(
            limits.connect(net64(4, 3)),
            Err(Refused::Connections(Scope::Net56))
        );
    }
    assert_eq!(limits.open_in(net64(4, 3), Scope::Address), 0);
    assert_eq!(limits.open_in(net64(4, 3), Scope::Net56), 2);
    assert_eq!(limits.open_in(net64(4, 3), Scope::Net48), 2);
    // Disconnects bring every count back to zero and the entries go away.
    limits.disconnect(net64(4, 1));
    limits.disconnect(net64(4, 2));
    assert_eq!(limits.open_in(net64(4, 1), Scope::Net48), 0);
    assert_eq!(limits.tracked(), 0);
}

#[test]
fn the_narrowest_full_limit_is_the_one_named() {
    let config = Config {
        per_ip_connections: 2,
        per_56_connections: 2,
        ..Config::default()
    };
    let limits = AddrLimits::new(config.limit_caps());
    limits.connect(net64(5, 1)).unwrap();
    limits.connect(net64(5, 1)).unwrap();
    // The /64 and its /56 are both full: the /64 is reported.
    assert_eq!(
        limits.connect(net64(5, 1)),
        Err(Refused::Connections(Scope::Address))
    );
    assert_eq!(
        limits.connect(net64(5, 2)),
        Err(Refused::Connections(Scope::Net56))
    );
}

#[test]
fn ipv4_addresses_have_no_network_aggregate() {
    let limits = default_limits();
    // 300 addresses of one /24, 64 connections each: 19 200, far past any /56
    // or /48 cap, all admitted.
    for host in 0..300u32 {
        let ip = IpAddr::V4((0x0a00_0000 + host).into());
        for _ in 0..64 {
            limits.connect(AddrKey::of(ip)).unwrap();
        }
    }
}

#[test]
fn refusals_say_which_limit_and_count_under_their_own_label() {
    let cases = [
        (
            Refused::Connections(Scope::Address),
            "per_ip_connections",
            "your address",
        ),
        (
            Refused::Connections(Scope::Net56),
            "per_56_connections",
            "IPv6 /56",
        ),
        (
            Refused::Connections(Scope::Net48),
            "per_48_connections",
            "IPv6 /48",
        ),
        (
            Refused::Hellos(Scope::Address),
            "per_ip_hellos",
            "your address",
        ),
        (Refused::Hellos(Scope::Net56), "per_56_hellos", "IPv6 /56"),
        (Refused::Hellos(Scope::Net48), "per_48_hellos", "IPv6 /48"),
    ];
    for (refused, label, text) in cases {
        assert_eq!(refused.limit().as_str(), label);
        assert!(refused.message().contains(text), "{}", refused.message());
    }
}

#[tokio::test(start_paused = true)]
async fn hellos_spread_over_64s_share_their_56_and_48_buckets() {
    let limits = default_limits();
    // One connection in each of 256 /64s of one /56; the /64 buckets (120 each)
    // hold 30 720 Hellos together, the /56 bucket 480.
    for subnet in 0..256u16 {
        limits.connect(net64(6, subnet)).unwrap();
    }
    let mut admitted = 0;
    let refused = loop {
        match limits.hello(net64(6, admitted % 256)) {
            Ok(()) => admitted += 1,
            Err(refused) => break refused,
        }
        assert!(admitted <= 480, "the /56 bucket did not hold");
    };
    assert_eq!(admitted, 480);
    assert_eq!(refused, Refused::Hellos(Scope::Net56));

    // Other /56s of the same /48 have their own /56 buckets, but the /48 has
    // only 1920 − 480 = 1440 left.
    for fifty_six in 1..=4u16 {
        limits.connect(net64(6, fifty_six << 8)).unwrap();
    }
    let mut more = 0u16;
    let refused = loop {
        let fifty_six = 1 + (more % 4);
        match limits.hello(net64(6, fifty_six << 8)) {
            Ok(()) => more += 1,
            Err(refused) => break refused,
        }
        assert!(more <= 1440, "the /48 bucket did not hold");
    };
    // Each of those /56s has one /64, whose own bucket (120) runs out first:
    // 4 × 120 = 480 < 1440. Spread wider (144 /64s) to reach the /48's limit.
    assert_eq!(more, 480);
    assert_eq!(refused, Refused::Hellos(Scope::Address));
    for fifty_six in 5..=40u16 {
        for host in 0..4u16 {
            limits.connect(net64(6, (fifty_six << 8) | host)).unwrap();
        }
    }
    let mut wide = 0u32;
    let refused = loop {
        let n = wide as u16;
        let key = net64(6, ((5 + (n / 4) % 36) << 8) | (n % 4));
        match limits.hello(key) {
            Ok(()) => wide += 1,
            Err(refused) => break refused,
        }
        assert!(wide <= 1920);
    };
    // 480 + 480 were taken from the /48 already.
    assert_eq!(wide, 1920 - 960);
    assert_eq!(refused, Refused::Hellos(Scope::Net48));

    // A minute later every bucket is full again.
    tokio::time::advance(std::time::Duration::from_secs(61)).await;
    limits.hello(net64(6, 0)).unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_refused_hello_takes_no_token() {
    let config = Config {
        per_ip_hellos_per_min: 1,
        per_48_hellos_per_min: 3,
        ..Config::default()
    };
    let limits = AddrLimits::new(config.limit_caps());
    for subnet in 1..=4 {
        limits.connect(net64(7, subnet)).unwrap();
    }
    limits.hello(net64(7, 1)).unwrap();
    // Refused by its /64; had these taken tokens from the /48, it would be empty.
    for _ in 0..50 {
        assert_eq!(
            limits.hello(net64(7, 1)),
            Err(Refused::Hellos(Scope::Address))
        );
    }
    limits.hello(net64(7, 2)).unwrap();
    limits.hello(net64(7, 3)).unwrap();
    assert_eq!(
        limits.hello(net64(7, 4)),
        Err(Refused::Hellos(Scope::Net48))
    );
}

/// A mediator on `[::1]`. A host without an IPv6 loopback fails the test, saying
/// so: these are the only tests of the per-network limits through the server.
async fn start_v6(config: Config) -> common::Server {
    if let Err(e) = std::net::TcpListener::bind("[::1]:0") {
        panic!(
            "cannot bind [::1]:0 ({e}): the IPv6 limit tests need an IPv6 loopback \
             (is `lo` up, with net.ipv6.conf.lo.disable_ipv6=0?)"
        );
    }
    start_on("[::1]:0".parse().unwrap(), config).await
}

#[tokio::test]
async fn ipv6_connections_past_the_56_limit_are_refused_with_a_message_naming_it() {
    let config = Config {
        per_ip_connections: 1000,
        per_56_connections: 3,
        ..common::config()
    };
    let server = start_v6(config).await;
    let addr: SocketAddr = server.addr;
    let mut open = Vec::new();
    for n in 0..3 {
        let mut c = Client::connect(addr).await;
        // Served: so admitted and counted before the fourth arrives.
        c.send(&hello(900 + n, "host")).await;
        c.expect_waiting().await;
        open.push(c);
    }
    let mut extra = Client::connect(addr).await;
    let message = extra.expect_error(ErrorCode::TooManyConnections).await;
    assert!(message.contains("/56"), "{message}");
}

#[tokio::test]
async fn ipv6_hellos_past_the_48_bucket_are_refused_with_a_message_naming_it() {
    let config = Config {
        per_48_hellos_per_min: 2,
        ..common::config()
    };
    let server = start_v6(config).await;
    for n in 0..2 {
        let mut c = Client::connect(server.addr).await;
        c.send(&hello(910 + n, "host")).await;
        c.expect_waiting().await;
        drop(c);
    }
    let mut c = Client::connect(server.addr).await;
    c.send(&hello(920, "host")).await;
    let message = c.expect_error(ErrorCode::TooManyConnections).await;
    assert!(
        message.contains("Hellos") && message.contains("/48"),
        "{message}"
    );
}

/// docs/protocol.md §19.1: a group room takes at most `max_members_per_ip`
/// members from one source (IPv4 address or IPv6 /64), so a stranger without
/// the code cannot fill it to `RoomFull` from one host. Loopback sources
/// 127.0.0.2 and 127.0.0.3 stand for two hosts.
#[tokio::test]
async fn a_group_room_takes_a_capped_number_of_members_from_one_address() {
    use std::net::Ipv4Addr;
    let server = common::start(Config {
        max_members_per_ip: 2,
        ..common::config()
    })
    .await;
    let two = Ipv4Addr::new(127, 0, 0, 2);
    let mut ann = Client::connect_from(two, server.addr).await;
    ann.join_group(40, "ann").await.unwrap();
    let mut ben = Client::connect_from(two, server.addr).await;
    ben.join_group(40, "ben").await.unwrap();
    let mut cat = Client::connect_from(two, server.addr).await;
    let (code, message) = cat.join_group(40, "cat").await.unwrap_err();
    assert_eq!(code, ErrorCode::RoomFull, "{message}");
    assert!(
        message.contains("2 members from your address"),
        "the refusal says which cap: {message}"
    );
    // Another host still gets in, and another room is another count.
    let mut dan = Client::connect_from(Ipv4Addr::new(127, 0, 0, 3), server.addr).await;
    dan.join_group(40, "dan").await.unwrap();
    let mut eve = Client::connect_from(two, server.addr).await;
    eve.join_group(41, "eve").await.unwrap();
    // When one of 127.0.0.2's members leaves, its place is free again: ann
    // hears ben and dan arrive, then ben leave.
    drop(ben);
    let mut heard = Vec::new();
    while !matches!(heard.last(), Some(wire::MediatorMsg::MemberLeft { .. })) {
        heard.push(ann.recv().await.expect("ann is still in the room"));
    }
    let mut fay = Client::connect_from(two, server.addr).await;
    fay.join_group(40, "fay").await.unwrap();
}

#[test]
fn the_members_per_address_cap_defaults_to_4_and_is_never_zero() {
    assert_eq!(Config::default().max_members_per_ip, 4);
    let zero = Config {
        max_members_per_ip: 0,
        ..Config::default()
    };
    assert!(zero.validate().is_err());
}
