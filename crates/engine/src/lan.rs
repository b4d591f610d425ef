//! LAN mode (docs/protocol.md §14): with no mediator, find the peer by UDP on the
//! local network. We listen on one fixed port (shared with other clients on this
//! host through SO_REUSEADDR/SO_REUSEPORT), announce ourselves with backoff to
//! every interface's broadcast address, 255.255.255.255 and link-local multicast
//! (IPv4 and IPv6), and turn the first fresh announcement of our room into the
//! same [`Matched`] the mediator would hand out. A messenger with no mediator
//! also runs [`presence`] (§14.4) on the same port: one tag per contact, so
//! contacts on the network find each other with no code.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::time::Duration;

use dhke::{Group, RoomCode};
use rand::rngs::OsRng;
use rand::{Rng, RngCore};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use wire::lan::{Announcement, DropCounts, Sieve, INSTANCE_LEN, MAX_ADDRS, MAX_DATAGRAM};
use wire::Role;

use crate::error::ClientError;
use crate::events::{Event, Events};
use crate::history::now_ms;
use crate::presence::Ringing;
use crate::rendezvous::Matched;

/// The UDP port clients announce and listen on unless `--lan-port` says otherwise.
pub const DEFAULT_LAN_PORT: u16 = 7071;
/// IPv4 group: administratively scoped (RFC 2365), sent with TTL 1 so no router
/// forwards it.
pub const MULTICAST_V4: Ipv4Addr = Ipv4Addr::new(239, 255, 70, 71);
/// IPv6 group: link-local scope (`ff02::/16`), hop limit 1.
pub const MULTICAST_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0x7071, 0x7071);

/// Announce every 0.5 s for the first 5 s, then double the gap up to 5 s.
const FAST_EVERY: Duration = Duration::from_millis(500);
const FAST_FOR: Duration = Duration::from_secs(5);
const SLOW_CAP: Duration = Duration::from_secs(5);
/// Never two announcement rounds closer than this, whatever triggers them.
const MIN_GAP: Duration = Duration::from_millis(200);
/// Most interfaces we announce on (a host with more is unusual; the rest wait).
const MAX_INTERFACES: usize = 16;
/// Most other members of the room we keep track of at once; more are ignored.
pub const MAX_CANDIDATES: usize = 16;
/// Longest wait for room in the socket's send buffer.
const SEND_WAIT: Duration = Duration::from_millis(250);
/// How often the drop counters go to the debug log while they change.
const LOG_EVERY: Duration = Duration::from_secs(2);

/// LAN mode settings, fixed for the run.
#[derive(Debug, Clone)]
pub struct LanConfig {
    /// UDP port to announce and listen on.
    pub port: u16,
    /// Give up after this long without finding the peer.
    pub timeout: Duration,
    /// Only these interfaces (by name); empty means every interface that is up.
    pub interfaces: Vec<String>,
    /// Our instance id for the whole run (roles stay the same across reconnects).
    pub instance: [u8; INSTANCE_LEN],
}

impl LanConfig {
    /// Settings with a fresh random instance id.
    pub fn new(port: u16, timeout: Duration, interfaces: Vec<String>) -> LanConfig {
        let mut instance = [0u8; INSTANCE_LEN];
        OsRng.fill_bytes(&mut instance);
        LanConfig {
            port,
            timeout,
            interfaces,
            instance,
        }
    }
}

/// What we tell the room about ourselves.
#[derive(Debug, Clone, Copy)]
pub struct Us<'a> {
    pub name: &'a str,
    pub group: Group,
    pub public: &'a [u8],
    /// The TCP listener's own address.
    pub listen: SocketAddr,
    /// `--advertise`, if given: announced instead of our interface addresses.
    pub advertise: Option<SocketAddr>,
}

/// An interface we announce on.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Interface {
    name: String,
    index: Option<u32>,
    loopback: bool,
    /// IPv4 address and where its broadcasts go.
    v4: Vec<(Ipv4Addr, Ipv4Addr)>,
    /// Non-link-local IPv6 addresses (announced as TCP candidates).
    v6: Vec<Ipv6Addr>,
}

/// The interfaces that are up (and named in `only`, if it is not empty).
fn interfaces(only: &[String]) -> Vec<Interface> {
    let found = match if_addrs::get_if_addrs() {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list network interfaces");
            return Vec::new();
        }
    };
    let mut out: Vec<Interface> = Vec::new();
    for iface in found {
        if !only.is_empty() && !only.contains(&iface.name) {
            continue;
        }
        // Loopback reports no oper state on some kernels; it is always usable.
        if !iface.is_oper_up() && !iface.is_loopback() {
            continue;
        }
        let pos = match out.iter().position(|i| i.name == iface.name) {
            Some(pos) => pos,
            None if out.len() >= MAX_INTERFACES => continue,
            None => {
                out.push(Interface {
                    name: iface.name.clone(),
                    index: iface.index,
                    loopback: iface.is_loopback(),
                    v4: Vec::new(),
                    v6: Vec::new(),
                });
                out.len() - 1
            }
        };
        let entry = &mut out[pos];
        match &iface.addr {
            if_addrs::IfAddr::V4(a) => {
                // Loopback has no broadcast flag, but 127.255.255.255 is a local
                // broadcast route: it reaches every process on the port.
                let broadcast = a
                    .broadcast
                    .unwrap_or_else(|| Ipv4Addr::from(u32::from(a.ip) | !u32::from(a.netmask)));
                entry.v4.push((a.ip, broadcast));
            }
            if_addrs::IfAddr::V6(a) => {
                if !a.ip.is_loopback() || iface.is_loopback() {
                    entry.v6.push(a.ip);
                }
            }
        }
    }
    out
}

/// The addresses our announcement lists: `--advertise`; else the listener's own
/// address if it is bound to one; else every announced interface's addresses.
fn our_addrs(us: &Us<'_>, ifaces: &[Interface]) -> Vec<SocketAddr> {
    if let Some(addr) = us.advertise {
        return vec![addr];
    }
    if !us.listen.ip().is_unspecified() {
        return vec![us.listen];
    }
    let port = us.listen.port();
    let only_loopback = ifaces.iter().all(|i| i.loopback);
    let mut out: Vec<SocketAddr> = Vec::new();
    for iface in ifaces.iter().filter(|i| only_loopback || !i.loopback) {
        for (ip, _) in &iface.v4 {
            out.push(SocketAddr::new(IpAddr::V4(*ip), port));
        }
        if us.listen.is_ipv6() {
            for ip in &iface.v6 {
                out.push(SocketAddr::new(IpAddr::V6(*ip), port));
            }
        }
    }
    out.dedup();
    out.truncate(MAX_ADDRS);
    out
}

/// A socket on the LAN port. With exactly one interface named, it also hears
/// only that interface (SO_BINDTODEVICE, best effort: it may need privileges),
/// so `--lan-interface lo` takes nothing from the network.
fn udp_socket(domain: Domain, port: u16, only: &[String]) -> std::io::Result<Socket> {
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if let [name] = only {
        if let Err(e) = socket.bind_device(Some(name.as_bytes())) {
            tracing::debug!(iface = %name, error = %e, "cannot bind the LAN socket to its interface");
        }
    }
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    let addr: SocketAddr = if domain == Domain::IPV6 {
        socket.set_only_v6(true)?;
        socket.set_multicast_loop_v6(true)?;
        socket.set_multicast_hops_v6(1)?;
        SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))
    } else {
        socket.set_broadcast(true)?;
        socket.set_multicast_loop_v4(true)?;
        socket.set_multicast_ttl_v4(1)?;
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))
    };
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// One send, bounded in time (a full socket buffer must not stall a round).
async fn send(socket: &UdpSocket, datagram: &[u8], to: SocketAddr) -> std::io::Result<usize> {
    match tokio::time::timeout(SEND_WAIT, socket.send_to(datagram, to)).await {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "send buffer full",
        )),
    }
}

/// Sends `datagram` to every destination of §14 (each interface's broadcast,
/// 255.255.255.255 without an interface list, the multicast groups per
/// interface); returns how many sends went out and how many failed.
async fn send_everywhere(
    v4: &UdpSocket,
    v6: Option<&UdpSocket>,
    port: u16,
    only: &[String],
    datagram: &[u8],
) -> (u32, u32) {
    let ifaces = interfaces(only);
    let mut sent = 0u32;
    let mut failed = 0u32;
    let mut count = |r: std::io::Result<usize>| match r {
        Ok(_) => sent += 1,
        Err(e) => {
            failed += 1;
            tracing::trace!(error = %e, "LAN datagram not sent");
        }
    };
    let sock4 = socket2::SockRef::from(v4);
    for iface in &ifaces {
        for (_, broadcast) in &iface.v4 {
            count(send(v4, datagram, (*broadcast, port).into()).await);
        }
    }
    // The limited broadcast leaves by the default route's interface; with an
    // interface list it could leave by one not on the list.
    if only.is_empty() {
        count(send(v4, datagram, (Ipv4Addr::BROADCAST, port).into()).await);
    }
    for iface in ifaces.iter().filter(|i| !i.loopback) {
        for (ip, _) in &iface.v4 {
            if sock4.set_multicast_if_v4(ip).is_ok() {
                count(send(v4, datagram, (MULTICAST_V4, port).into()).await);
            }
        }
    }
    if let Some(v6) = v6 {
        let sock = socket2::SockRef::from(v6);
        for iface in ifaces.iter().filter(|i| !i.loopback) {
            let Some(index) = iface.index else { continue };
            if sock.set_multicast_if_v6(index).is_ok() {
                let to = SocketAddrV6::new(MULTICAST_V6, port, 0, index);
                count(send(v6, datagram, to.into()).await);
            }
        }
    }
    (sent, failed)
}

/// Our two sockets on the LAN port (the IPv6 one if the host has IPv6), in the
/// multicast groups on every announced interface.
fn lan_sockets(config: &LanConfig) -> std::io::Result<(UdpSocket, Option<UdpSocket>)> {
    let port = config.port;
    let v4 = udp_socket(Domain::IPV4, port, &config.interfaces)?;
    let v4 = UdpSocket::from_std(v4.into())?;
    let v6 = match udp_socket(Domain::IPV6, port, &config.interfaces) {
        Ok(s) => UdpSocket::from_std(s.into()).ok(),
        Err(e) => {
            tracing::debug!(error = %e, "no IPv6 LAN socket");
            None
        }
    };
    let ifaces = interfaces(&config.interfaces);
    if ifaces.is_empty() {
        tracing::warn!("no network interface to announce on");
    }
    for iface in ifaces.iter().filter(|i| !i.loopback) {
        for (ip, _) in &iface.v4 {
            if let Err(e) = v4.join_multicast_v4(MULTICAST_V4, *ip) {
                tracing::debug!(iface = %iface.name, error = %e, "cannot join the IPv4 group");
            }
        }
        if let (Some(v6), Some(index)) = (&v6, iface.index) {
            if let Err(e) = v6.join_multicast_v6(&MULTICAST_V6, index) {
                tracing::debug!(iface = %iface.name, error = %e, "cannot join the IPv6 group");
            }
        }
    }
    Ok((v4, v6))
}

/// Our two sockets on the LAN port and what we send on them.
#[derive(Debug)]
struct Announcer {
    v4: UdpSocket,
    v6: Option<UdpSocket>,
    port: u16,
    only: Vec<String>,
    key: wire::lan::LanKey,
    us: Announcement,
    /// A contact's conversation also calls the contact (§14.4): its presence
    /// tag under our instance id, so its messenger rings and meets us.
    call: Option<wire::lan::PresenceKey>,
    schedule: Schedule,
    last: Option<Instant>,
    rounds: u64,
}

/// When the next announcement round is due.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    started: Instant,
    next: Instant,
}

impl Schedule {
    fn new(now: Instant) -> Schedule {
        Schedule {
            started: now,
            next: now,
        }
    }

    /// After a round at `now`: 0.5 s apart for the first 5 s, then 1, 2, 4, 5,
    /// 5 … s, each ±10 %.
    fn after_round(&mut self, now: Instant) {
        let gap = if now < self.started + FAST_FOR {
            FAST_EVERY
        } else {
            let slow = (now - (self.started + FAST_FOR)).as_secs_f64();
            // Doubling from 1 s: the gap is 2^n s once 2^n - 1 s of slow rounds passed.
            let n = (slow + 1.0).log2().floor().clamp(0.0, 8.0);
            Duration::from_secs_f64(2f64.powf(n)).min(SLOW_CAP)
        };
        self.next = now + gap.mul_f64(OsRng.gen_range(0.9..=1.1));
    }
}

impl Announcer {
    /// One announcement round: a fresh nonce and time, sent to every destination.
    async fn announce(&mut self) {
        let now = Instant::now();
        if let Some(last) = self.last.filter(|last| now < *last + MIN_GAP) {
            self.schedule.next = self.schedule.next.max(last + MIN_GAP);
            return;
        }
        self.last = Some(now);
        self.rounds += 1;
        let mut nonce = [0u8; wire::lan::NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let datagram = match wire::lan::seal(&self.key, &self.us, nonce, now_ms()) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "cannot build the LAN announcement");
                return;
            }
        };
        let (sent, failed) =
            send_everywhere(&self.v4, self.v6.as_ref(), self.port, &self.only, &datagram).await;
        tracing::trace!(round = self.rounds, sent, failed, "LAN announcement sent");
        if let Some(key) = &self.call {
            let id = self.us.instance;
            let epoch = wire::lan::presence_epoch(now_ms());
            let call = wire::lan::Presence {
                id,
                epoch,
                tags: vec![wire::lan::presence_tag(key, &id, epoch)],
            };
            match wire::lan::seal_presence(&call) {
                Ok(d) => {
                    send_everywhere(&self.v4, self.v6.as_ref(), self.port, &self.only, &d).await;
                }
                Err(e) => tracing::warn!(error = %e, "cannot build the LAN call"),
            }
        }
        self.schedule.after_round(now);
    }
}

/// A member of our room that announced itself.
#[derive(Debug, Clone)]
pub struct Found {
    pub announcement: Announcement,
    /// Where the announcement came from (the peer's address on our network).
    pub from: SocketAddr,
}

impl Found {
    /// What the mediator would have said: the smaller instance id hosts; no
    /// relay. `ours` is what we announced (our address "as seen" is the first).
    pub fn matched(&self, our_instance: &[u8; INSTANCE_LEN], ours: &[SocketAddr]) -> Matched {
        let ann = &self.announcement;
        let role = if our_instance < &ann.instance {
            Role::Host
        } else {
            Role::Joiner
        };
        let mut local_addrs = ann.addrs.clone();
        if let SocketAddr::V6(from) = self.from {
            if from.scope_id() != 0 {
                // A link-local source needs its zone, which SocketAddr::new (used
                // for the observed address) drops: offer it with the zone too.
                local_addrs.insert(
                    0,
                    SocketAddr::V6(SocketAddrV6::new(
                        *from.ip(),
                        ann.listen_port,
                        0,
                        from.scope_id(),
                    )),
                );
                local_addrs.truncate(MAX_ADDRS);
            }
        }
        Matched {
            role,
            peer_name: ann.name.clone(),
            public: ann.public.clone(),
            observed_addr: self.from,
            listen_port: ann.listen_port,
            local_addrs,
            your_addr: ours
                .first()
                .copied()
                .unwrap_or(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))),
            relay: wire::RelayOffer::Off,
        }
    }
}

/// Listening and announcing on the LAN port for one room.
#[derive(Debug)]
pub struct Discovery {
    announcer: Announcer,
    sieve: Sieve,
    group: u8,
    heard: HashMap<[u8; INSTANCE_LEN], u64>,
    crowded: u64,
    other_group: u64,
    warned_group: bool,
    logged: Option<(Instant, DropCounts)>,
}

impl Discovery {
    /// Binds the LAN port and prepares our announcement for the room typed as
    /// `room`.
    pub fn bind(config: &LanConfig, room: &str, us: Us<'_>) -> Result<Discovery, ClientError> {
        Discovery::bind_code(config, &RoomCode::parse(room), us)
    }

    /// [`Discovery::bind`] for a room code already parsed (a contact's room is
    /// no typed text).
    pub fn bind_code(
        config: &LanConfig,
        code: &RoomCode,
        us: Us<'_>,
    ) -> Result<Discovery, ClientError> {
        let port = config.port;
        let (v4, v6) = lan_sockets(config).map_err(|e| {
            ClientError::ListenFailed(format!(
                "cannot listen on UDP port {port} for LAN discovery: {e}; pick another with --lan-port (both sides must use the same), or meet through a mediator with --server"
            ))
        })?;
        let ifaces = interfaces(&config.interfaces);
        let key = wire::lan::lan_key(code);
        let announcement = Announcement {
            instance: config.instance,
            name: us.name.to_string(),
            group: us.group.id(),
            public: us.public.to_vec(),
            listen_port: us.advertise.map_or(us.listen.port(), |a| a.port()),
            addrs: our_addrs(&us, &ifaces),
        };
        let now = Instant::now();
        Ok(Discovery {
            announcer: Announcer {
                v4,
                v6,
                port,
                only: config.interfaces.clone(),
                key: key.clone(),
                us: announcement,
                call: None,
                schedule: Schedule::new(now),
                last: None,
                rounds: 0,
            },
            sieve: Sieve::new(key, config.instance),
            group: us.group.id(),
            heard: HashMap::new(),
            crowded: 0,
            other_group: 0,
            warned_group: false,
            logged: None,
        })
    }

    /// Also call the contact whose presence key is `key` (docs/protocol.md
    /// §14.4) every round: for a contact's conversation.
    pub fn calling(mut self, key: wire::lan::PresenceKey) -> Discovery {
        self.announcer.call = Some(key);
        self
    }

    /// The addresses our announcement lists.
    pub fn our_addrs(&self) -> &[SocketAddr] {
        &self.announcer.us.addrs
    }

    /// Drops so far, by reason.
    pub fn counts(&self) -> DropCounts {
        self.sieve.counts()
    }

    /// Members of our room ignored because [`MAX_CANDIDATES`] were already known.
    pub fn crowded(&self) -> u64 {
        self.crowded
    }

    /// Announcements of our room with another DH group.
    pub fn other_group(&self) -> u64 {
        self.other_group
    }

    /// Announces (on schedule) and listens until a member of our room with our
    /// group announces itself, or `deadline`. `on_other_group` hears once about
    /// a member with another group.
    pub async fn next_peer(
        &mut self,
        deadline: Instant,
        mut on_other_group: impl FnMut(u8),
    ) -> Option<Found> {
        let mut buf4 = vec![0u8; MAX_DATAGRAM + 1];
        let mut buf6 = vec![0u8; MAX_DATAGRAM + 1];
        // Bounded by the deadline: each pass reads one datagram or sends one round.
        loop {
            self.log_counts(false);
            let received = tokio::select! {
                () = tokio::time::sleep_until(deadline) => {
                    self.log_counts(true);
                    return None;
                }
                () = tokio::time::sleep_until(self.announcer.schedule.next) => {
                    self.announcer.announce().await;
                    continue;
                }
                r = self.announcer.v4.recv_from(&mut buf4) => r.map(|(n, from)| (&buf4[..n], from)),
                r = recv_opt(self.announcer.v6.as_ref(), &mut buf6) => r.map(|(n, from)| (&buf6[..n], from)),
            };
            let (datagram, from) = match received {
                Ok(pair) => pair,
                Err(e) => {
                    // ICMP errors from our own sends surface here on some systems.
                    tracing::trace!(error = %e, "LAN receive error");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let Ok(opened) = self.sieve.accept(datagram, now_ms()) else {
                continue;
            };
            let ann = opened.announcement;
            let known = self.heard.contains_key(&ann.instance);
            if !known && self.heard.len() >= MAX_CANDIDATES {
                let now = now_ms();
                self.heard
                    .retain(|_, at| at.saturating_add(wire::lan::MAX_AGE_MS) >= now);
                if self.heard.len() >= MAX_CANDIDATES {
                    self.crowded += 1;
                    continue;
                }
            }
            self.heard.insert(ann.instance, opened.sent_at_ms);
            if ann.group != self.group {
                self.other_group += 1;
                if !self.warned_group {
                    self.warned_group = true;
                    on_other_group(ann.group);
                }
                continue;
            }
            self.log_counts(true);
            return Some(Found {
                announcement: ann,
                from,
            });
        }
    }

    fn log_counts(&mut self, force: bool) {
        let counts = self.sieve.counts();
        let now = Instant::now();
        let due = match self.logged {
            None => counts.total() > 0,
            Some((at, last)) => last != counts && (force || now >= at + LOG_EVERY),
        };
        if due || (force && self.logged.is_none()) {
            tracing::debug!(
                dropped = counts.total(),
                unreadable = counts.unreadable(),
                crowded = self.crowded,
                other_group = self.other_group,
                "LAN datagrams dropped: {counts}"
            );
            self.logged = Some((now, counts));
        }
    }

    /// Keeps announcing in the background (the peer may not have heard us yet)
    /// until the returned guard is dropped; one round goes out at once.
    pub fn keep_announcing(self) -> Announcing {
        let mut announcer = self.announcer;
        announcer.last = None;
        let task = tokio::spawn(async move {
            loop {
                announcer.announce().await;
                tokio::time::sleep_until(announcer.schedule.next.max(Instant::now() + MIN_GAP))
                    .await;
            }
        });
        Announcing { task }
    }
}

async fn recv_opt(
    socket: Option<&UdpSocket>,
    buf: &mut [u8],
) -> std::io::Result<(usize, SocketAddr)> {
    match socket {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

/// Announcing continues while this lives (through the connection attempt).
#[derive(Debug)]
pub struct Announcing {
    task: JoinHandle<()>,
}

impl Drop for Announcing {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Finds the peer on the LAN: the same [`Matched`] a mediator would give, the
/// addresses we announced, and the guard that keeps announcing until the
/// connection stands.
pub async fn discover(
    config: &LanConfig,
    room: &RoomCode,
    call: Option<wire::lan::PresenceKey>,
    us: Us<'_>,
    on_waiting: impl FnOnce(),
    on_other_group: impl FnMut(u8),
) -> Result<(Matched, Vec<SocketAddr>, Announcing), ClientError> {
    let mut discovery = Discovery::bind_code(config, room, us)?;
    if let Some(key) = call {
        discovery = discovery.calling(key);
    }
    on_waiting();
    let deadline = Instant::now() + config.timeout;
    match discovery.next_peer(deadline, on_other_group).await {
        Some(found) => {
            let ours = discovery.our_addrs().to_vec();
            let matched = found.matched(&config.instance, &ours);
            Ok((matched, ours, discovery.keep_announcing()))
        }
        None => Err(timed_out(config, room)),
    }
}

/// [`discover`], telling the person what happens on `out`.
pub async fn find_peer(
    config: &LanConfig,
    room: &RoomCode,
    call: Option<wire::lan::PresenceKey>,
    us: Us<'_>,
    out: &Events,
) -> Result<(Matched, Vec<SocketAddr>, Announcing), ClientError> {
    let listen = us.listen.to_string();
    let on_waiting = || {
        out.show(&Event::Info {
            text: format!(
                "No --server: looking for the other person on the local network (UDP port {}).",
                config.port
            ),
        });
        out.show(&Event::Waiting {
            listen,
            expires_in_secs: u32::try_from(config.timeout.as_secs()).unwrap_or(u32::MAX),
        });
    };
    let on_other_group = |group: u8| {
        out.show(&Event::Info {
            text: format!(
                "someone in this room on the local network uses --dh-group {group}; both sides must use the same"
            ),
        })
    };
    discover(config, room, call, us, on_waiting, on_other_group).await
}

/// The clear message for finding nobody, with the likely causes.
fn timed_out(config: &LanConfig, room: &RoomCode) -> ClientError {
    if room.kind() == dhke::RoomKind::Secret {
        // A contact's room: nothing was typed, the contact was simply not there.
        return ClientError::LanTimeout(format!(
            "{} did not answer on the local network within {} (LAN mode, UDP port {}): \
             they may not be running, or be on a different network (LAN mode reaches only \
             this network segment; across networks both run with --server HOST), or a \
             firewall blocks UDP port {}, or the Wi-Fi isolates clients from each other.",
            wire::sanitize_for_terminal(room.as_str()),
            humantime::format_duration(config.timeout),
            config.port,
            config.port,
        ));
    }
    let room = room.as_str();
    ClientError::LanTimeout(format!(
        "nobody in room `{room}` answered on the local network within {} (LAN mode, UDP port {}). \
         Likely causes: the other person is on a different network (LAN mode reaches only this \
         network segment; to meet across networks both run with --server HOST and a mediator), \
         a firewall blocks UDP port {} (allow it, or both pick another with --lan-port), or the \
         Wi-Fi isolates clients from each other (guest networks often do). Also check that both \
         typed the same room code and that both clocks are right to within 10 seconds.",
        humantime::format_duration(config.timeout),
        config.port,
        config.port,
    ))
}

/// Most contacts LAN presence announces and listens for (the most recently
/// seen first), as a mediator holds for one presence connection by default.
pub const MAX_PRESENCE_CONTACTS: usize = 1024;

/// One contact as LAN presence knows it.
#[derive(Debug, Clone)]
pub struct LanContact {
    pub key: wire::lan::PresenceKey,
    pub ringing: Ringing,
}

/// LAN presence (docs/protocol.md §14.4): while the messenger runs with no
/// mediator, announce one tag per contact (batched, on LAN mode's schedule)
/// and listen for our contacts' tags; each contact found under a new sender id
/// goes to `rings` (the messenger opens its conversation) and gets an answer
/// at once, so it finds us without waiting for our next round. Returns when
/// nobody listens for rings any more. `own_calls` brings the instance ids our
/// own conversations call under: their echoes are ours, not a contact's call.
pub async fn presence(
    config: LanConfig,
    contacts: Vec<LanContact>,
    mut own_calls: mpsc::Receiver<[u8; INSTANCE_LEN]>,
    rings: mpsc::Sender<Ringing>,
    events: Events,
) {
    if contacts.is_empty() {
        return;
    }
    let (v4, v6) = match lan_sockets(&config) {
        Ok(sockets) => sockets,
        Err(e) => {
            events.show(&Event::Info {
                text: format!(
                    "Contacts on the local network cannot find you: cannot listen on UDP port {} \
                     ({e}); pick another with --lan-port (both sides must use the same).",
                    config.port
                ),
            });
            return;
        }
    };
    let (keys, ringing): (Vec<_>, Vec<_>) = contacts
        .into_iter()
        .take(MAX_PRESENCE_CONTACTS)
        .map(|c| (c.key, c.ringing))
        .unzip();
    let mut run = PresenceRun {
        v4,
        v6,
        port: config.port,
        only: config.interfaces,
        sieve: wire::lan::PresenceSieve::new(keys.clone()),
        keys,
        id: config.instance,
        schedule: Schedule::new(Instant::now()),
        last: None,
        cursor: 0,
        answers: std::collections::BTreeSet::new(),
    };
    run.sieve.own(run.id);
    tracing::debug!(contacts = run.keys.len(), "LAN presence: announcing");
    let mut buf4 = vec![0u8; MAX_DATAGRAM + 1];
    let mut buf6 = vec![0u8; MAX_DATAGRAM + 1];
    let far = Instant::now() + Duration::from_secs(365 * 24 * 3600);
    // Contacts found and not yet handed to the messenger (its queue is short,
    // and one datagram may name many).
    let mut ring_next: std::collections::VecDeque<usize> = std::collections::VecDeque::new();
    // Bounded by the messenger: it ends when the ring receiver is dropped.
    loop {
        let answer_at = (!run.answers.is_empty())
            .then(|| run.last.map_or_else(Instant::now, |last| last + MIN_GAP));
        let received = tokio::select! {
            () = rings.closed() => return,
            permit = rings.reserve(), if !ring_next.is_empty() => {
                let Ok(permit) = permit else { return };
                if let Some(who) = ring_next.pop_front().and_then(|c| ringing.get(c)) {
                    permit.send(who.clone());
                }
                continue;
            }
            () = tokio::time::sleep_until(run.schedule.next) => {
                run.announce().await;
                continue;
            }
            () = tokio::time::sleep_until(answer_at.unwrap_or(far)), if answer_at.is_some() => {
                run.answer().await;
                continue;
            }
            Some(id) = own_calls.recv() => {
                run.sieve.own_call(id);
                continue;
            }
            r = run.v4.recv_from(&mut buf4) => r.map(|(n, _)| &buf4[..n]),
            r = recv_opt(run.v6.as_ref(), &mut buf6) => r.map(|(n, _)| &buf6[..n]),
        };
        let datagram = match received {
            Ok(d) => d,
            Err(e) => {
                tracing::trace!(error = %e, "LAN receive error");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        // A call's id is sent before the call goes out: one that waits here
        // belongs to this datagram's sender if it is our echo.
        while let Ok(id) = own_calls.try_recv() {
            run.sieve.own_call(id);
        }
        let Ok(found) = run.sieve.accept(datagram, now_ms()) else {
            continue;
        };
        for contact in found.fresh {
            run.answers.insert(contact);
            // At most one waiting ring per contact: bounded by the contact list.
            if !ring_next.contains(&contact) {
                ring_next.push_back(contact);
            }
        }
    }
}

/// The contacts (indexes) of the round that starts at `cursor` among `len`,
/// and where the next round starts.
fn next_batch(cursor: usize, len: usize) -> (Vec<usize>, usize) {
    if len == 0 {
        return (Vec::new(), 0);
    }
    let n = len.min(wire::lan::MAX_PRESENCE_TAGS);
    let batch = (0..n).map(|i| (cursor + i) % len).collect();
    (batch, (cursor + n) % len)
}

/// LAN presence's sockets, schedule and what it announces.
struct PresenceRun {
    v4: UdpSocket,
    v6: Option<UdpSocket>,
    port: u16,
    only: Vec<String>,
    keys: Vec<wire::lan::PresenceKey>,
    sieve: wire::lan::PresenceSieve,
    /// Our sender id: random, for the whole run, so each contact rings once
    /// per run of ours (a contact that closed our conversation is not called
    /// back every epoch); the tags still change every epoch.
    id: [u8; wire::lan::PRESENCE_ID_LEN],
    schedule: Schedule,
    last: Option<Instant>,
    /// The first contact of the next round's batch.
    cursor: usize,
    /// Contacts that just found us under a new id, to answer.
    answers: std::collections::BTreeSet<usize>,
}

impl PresenceRun {
    /// One round: the next batch of at most [`wire::lan::MAX_PRESENCE_TAGS`]
    /// contacts' tags, in one datagram, on LAN mode's schedule; a big contact
    /// list takes several rounds to go round.
    async fn announce(&mut self) {
        let now = Instant::now();
        if let Some(last) = self.last.filter(|last| now < *last + MIN_GAP) {
            self.schedule.next = self.schedule.next.max(last + MIN_GAP);
            return;
        }
        let (batch, cursor) = next_batch(self.cursor, self.keys.len());
        self.cursor = cursor;
        self.send(&batch).await;
        self.schedule.after_round(now);
    }

    /// Answers the contacts that just found us, in one datagram.
    async fn answer(&mut self) {
        let batch: Vec<usize> = self
            .answers
            .iter()
            .copied()
            .take(wire::lan::MAX_PRESENCE_TAGS)
            .collect();
        for contact in &batch {
            self.answers.remove(contact);
        }
        self.send(&batch).await;
    }

    async fn send(&mut self, contacts: &[usize]) {
        self.last = Some(Instant::now());
        let (id, epoch) = (self.id, wire::lan::presence_epoch(now_ms()));
        let tags = contacts
            .iter()
            .filter_map(|&c| self.keys.get(c))
            .map(|key| wire::lan::presence_tag(key, &id, epoch))
            .collect();
        let presence = wire::lan::Presence { id, epoch, tags };
        let datagram = match wire::lan::seal_presence(&presence) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "cannot build the LAN presence announcement");
                return;
            }
        };
        let (sent, failed) =
            send_everywhere(&self.v4, self.v6.as_ref(), self.port, &self.only, &datagram).await;
        tracing::trace!(
            tags = presence.tags.len(),
            sent,
            failed,
            "LAN presence sent"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(instance: u8, from: &str) -> Found {
        Found {
            announcement: Announcement {
                instance: [instance; INSTANCE_LEN],
                name: "bob".into(),
                group: 14,
                public: vec![2; 256],
                listen_port: 4000,
                addrs: vec!["10.0.0.2:4000".parse().unwrap()],
            },
            from: from.parse().unwrap(),
        }
    }

    #[test]
    fn the_smaller_instance_id_hosts_on_both_sides() {
        let theirs = found(5, "10.0.0.2:7071");
        assert_eq!(theirs.matched(&[4; INSTANCE_LEN], &[]).role, Role::Host);
        assert_eq!(theirs.matched(&[6; INSTANCE_LEN], &[]).role, Role::Joiner);
    }

    #[test]
    fn matched_dials_the_source_address_at_the_listen_port_first() {
        let m = found(5, "10.0.0.9:7071").matched(&[6; INSTANCE_LEN], &[]);
        let c = crate::connect::candidates(&m, false);
        assert_eq!(c[0].addr, "10.0.0.9:4000".parse().unwrap());
        assert_eq!(c[1].addr, "10.0.0.2:4000".parse().unwrap());
    }

    #[test]
    fn a_link_local_source_keeps_its_zone() {
        let f = found(5, "[fe80::1%3]:7071");
        let m = f.matched(&[6; INSTANCE_LEN], &[]);
        match m.local_addrs[0] {
            SocketAddr::V6(a) => {
                assert_eq!(a.scope_id(), 3);
                assert_eq!(a.port(), 4000);
            }
            other => panic!("expected a zoned IPv6 address first, got {other}"),
        }
    }

    /// Shows nothing: what presence rings is what these tests check.
    struct Quiet;

    impl crate::events::Frontend for Quiet {
        fn show(&self, _conv: Option<&crate::events::ConvRef>, _event: &Event) {}
    }

    fn contact(secret: u8, name: &str) -> LanContact {
        LanContact {
            key: wire::lan::presence_key(&[secret; 32]),
            ringing: Ringing {
                target: name.into(),
                fingerprint: name.into(),
                name: name.into(),
            },
        }
    }

    /// A presence datagram under `id` carrying `contact`'s tag, as a
    /// conversation's call (§14.4).
    fn call(contact: &LanContact, id: [u8; INSTANCE_LEN]) -> Vec<u8> {
        let epoch = wire::lan::presence_epoch(now_ms());
        wire::lan::seal_presence(&wire::lan::Presence {
            id,
            epoch,
            tags: vec![wire::lan::presence_tag(&contact.key, &id, epoch)],
        })
        .unwrap()
    }

    #[tokio::test]
    async fn the_echo_of_our_own_conversations_call_does_not_ring_a_contacts_call_does() {
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .unwrap()
            .port();
        let (ann, bob) = (contact(1, "ann"), contact(2, "bob"));
        let (echo, real) = (
            call(&ann, [0x31; INSTANCE_LEN]),
            call(&bob, [0x32; INSTANCE_LEN]),
        );
        let (calls, own_calls) = mpsc::channel(4);
        let (rings_tx, mut rings) = mpsc::channel(4);
        let config = LanConfig::new(port, Duration::from_secs(30), vec!["lo".into()]);
        let events = Events::new(std::sync::Arc::new(Quiet));
        let contacts = vec![contact(1, "ann"), contact(2, "bob")];
        tokio::spawn(presence(config, contacts, own_calls, rings_tx, events));
        // Our conversation with ann calls under 0x31: presence hears of it first.
        calls.send([0x31; INSTANCE_LEN]).await.unwrap();
        let to = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        // Until presence listens, datagrams are lost: send the pair until a
        // ring comes. One socket reads them in order, so had the echo rung,
        // ann's ring would come first.
        let ring = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                to.send_to(&echo, ("127.0.0.1", port)).unwrap();
                to.send_to(&real, ("127.0.0.1", port)).unwrap();
                if let Ok(ring) =
                    tokio::time::timeout(Duration::from_millis(100), rings.recv()).await
                {
                    break ring.expect("presence runs");
                }
            }
        })
        .await
        .expect("bob's call rings within 20 s");
        assert_eq!(ring.name, "bob");
        to.send_to(&echo, ("127.0.0.1", port)).unwrap();
        let more = tokio::time::timeout(Duration::from_millis(300), rings.recv()).await;
        assert!(more.is_err(), "a second ring: {more:?}");
    }

    #[test]
    fn backoff_is_fast_then_doubles_to_the_cap() {
        let mut gaps = Vec::new();
        let start = Instant::now();
        let mut at = start;
        let mut s = Schedule::new(start);
        while at < start + Duration::from_secs(40) {
            s.after_round(at);
            let gap = s.next - at;
            gaps.push(gap);
            at = s.next;
        }
        assert!(
            gaps.iter().all(|g| *g >= FAST_EVERY.mul_f64(0.9)),
            "never faster than 0.45 s"
        );
        assert!(
            gaps.iter().all(|g| *g <= SLOW_CAP.mul_f64(1.1)),
            "never slower than 5.5 s"
        );
        let fast = gaps
            .iter()
            .take_while(|g| **g < Duration::from_millis(700))
            .count();
        assert!(
            (9..=12).contains(&fast),
            "about ten rounds in the first 5 s: {gaps:?}"
        );
        assert!(gaps.last().unwrap() >= &SLOW_CAP.mul_f64(0.9), "{gaps:?}");
        // 40 s of announcing is a bounded number of rounds.
        assert!(gaps.len() < 25, "{} rounds", gaps.len());
    }
    #[test]
    fn a_thousand_contacts_go_round_in_sixteen_datagrams_of_at_most_64_tags() {
        let len = 1000;
        let mut cursor = 0;
        let mut seen = vec![0u32; len];
        for _ in 0..16 {
            let (batch, next) = next_batch(cursor, len);
            assert!(batch.len() <= wire::lan::MAX_PRESENCE_TAGS);
            let presence = wire::lan::Presence {
                id: [0; wire::lan::PRESENCE_ID_LEN],
                epoch: 0,
                tags: vec![[0; wire::lan::PRESENCE_TAG_LEN]; batch.len()],
            };
            let datagram = wire::lan::seal_presence(&presence).unwrap();
            assert!(datagram.len() <= MAX_DATAGRAM);
            for c in batch {
                seen[c] += 1;
            }
            cursor = next;
        }
        assert!(seen.iter().all(|&n| n >= 1), "every contact announced");
        assert!(seen.iter().all(|&n| n <= 2));
        // A few contacts: all of them every round.
        assert_eq!(next_batch(0, 3), (vec![0, 1, 2], 0));
        assert_eq!(next_batch(0, 0), (vec![], 0));
    }
}
