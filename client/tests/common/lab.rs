//! The NAT lab: real NATs in Linux network namespaces, built by a test from a
//! [`Topology`] (plain data), used, and removed again when the [`Lab`] drops, even
//! if the test panicked.
//!
//! Layout, all in namespaces named `p2pl-<pid>-<n>-<role>` (unique per process and
//! lab; stale ones of dead processes are removed when the next lab is built):
//!
//! ```text
//!  pub:  bridge br0 203.0.113.1/24  ← the mediator runs here, on MEDIATOR_IP
//!         │  veth r<i> ─── wan0 (203.0.113.(10+i)) in router i
//!         │  veth p<i> ─── eth0 (203.0.113.(100+i)) in a host on the public segment
//!  r<i>: router; bridge lan0 192.168.(i+1).1/24, nftables per RouterKind,
//!        ip_forward=1; veth h<j> ─── eth0 (192.168.(i+1).(10+j)) in host j behind it
//! ```
//!
//! The nftables rules per kind are the ones DESIGN.md ("Reach across NATs") lists as
//! verified on this machine kind. The lab needs root, `ip` (iproute2) and `nft`
//! (nftables); `.ci/run` installs both. Without them building a lab panics with a
//! message that says what to install: a lab test never skips silently.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;
use std::time::Duration;

use super::{client_args, set_flag, Client, Mediator, TempDir};

/// Every lab namespace starts with this.
pub const PREFIX: &str = "p2pl-";
/// The mediator's address: br0's own address in the public namespace.
pub const MEDIATOR_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
/// The mediator's port in every lab.
pub const MEDIATOR_PORT: u16 = 7070;
/// Where [`Lab::start_mediator`]'s mediator serves `/metrics`: loopback inside
/// the public namespace, reached with [`Lab::wait_for_metrics`].
pub const METRICS_ADDR: &str = "127.0.0.1:9100";

/// What a home router does to TCP, as nftables rules in its namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouterKind {
    /// `masquerade`: port-preserving, endpoint-independent mapping,
    /// port-restricted filtering (drop unsolicited from wan0).
    HomeRouter,
    /// `masquerade to :20000-29999`: the mapped port is not the local one.
    PortRange,
    /// `masquerade random`: a fresh port per destination (symmetric NAT).
    Symmetric,
    /// masquerade plus a DMZ `dnat` of every unprivileged port to the first host.
    FullCone,
    /// masquerade with no drop rule on input: the router's own stack answers an
    /// unsolicited SYN with RST.
    RstRouter,
}

impl RouterKind {
    /// Short name, used in test output and the benchmark table.
    pub fn label(self) -> &'static str {
        match self {
            RouterKind::HomeRouter => "home",
            RouterKind::PortRange => "port-range",
            RouterKind::Symmetric => "symmetric",
            RouterKind::FullCone => "full-cone",
            RouterKind::RstRouter => "rst",
        }
    }

    /// The ruleset loaded with `nft -f -`; `dmz` is the host a full cone forwards to.
    fn ruleset(self, dmz: Ipv4Addr) -> String {
        let masquerade = match self {
            RouterKind::PortRange => {
                // Other protocols keep plain masquerade; only TCP matters here.
                "oifname \"wan0\" meta l4proto tcp masquerade to :20000-29999\n\
                 \t\toifname \"wan0\" masquerade"
            }
            RouterKind::Symmetric => "oifname \"wan0\" masquerade random",
            _ => "oifname \"wan0\" masquerade",
        };
        let prerouting = match self {
            RouterKind::FullCone => format!(
                "\tchain prerouting {{\n\
                 \t\ttype nat hook prerouting priority dstnat; policy accept;\n\
                 \t\tiifname \"wan0\" tcp dport 1024-65535 dnat to {dmz}\n\
                 \t}}\n"
            ),
            _ => String::new(),
        };
        let input = match self {
            RouterKind::RstRouter => "",
            _ => {
                "\t\tiifname \"wan0\" ct state established,related accept\n\
                 \t\tiifname \"wan0\" drop\n"
            }
        };
        let forward_dnat = match self {
            RouterKind::FullCone => "\t\tct status dnat accept\n",
            _ => "",
        };
        format!(
            "table ip nat {{\n\
             \tchain postrouting {{\n\
             \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
             \t\t{masquerade}\n\
             \t}}\n\
             {prerouting}\
             }}\n\
             table ip filter {{\n\
             \tchain input {{\n\
             \t\ttype filter hook input priority filter; policy accept;\n\
             {input}\
             \t}}\n\
             \tchain forward {{\n\
             \t\ttype filter hook forward priority filter; policy accept;\n\
             \t\tiifname \"wan0\" ct state established,related accept\n\
             {forward_dnat}\
             \t\tiifname \"wan0\" drop\n\
             \t}}\n\
             }}\n"
        )
    }
}

/// Where one host of a pairing sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spot {
    /// On the public segment itself, no NAT.
    Public,
    /// Alone behind its own router of this kind.
    Behind(RouterKind),
}

impl Spot {
    pub fn label(self) -> &'static str {
        match self {
            Spot::Public => "public",
            Spot::Behind(kind) => kind.label(),
        }
    }
}

/// One piece of a topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Site {
    /// A host on the public segment.
    PublicHost,
    /// A router of `kind` with `hosts` hosts on its LAN.
    Router { kind: RouterKind, hosts: u8 },
}

/// A lab as data: its sites in order. Hosts are numbered in that order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub sites: Vec<Site>,
}

impl Topology {
    /// Two hosts, each at its own spot (host 0 at `a`, host 1 at `b`).
    pub fn pair(a: Spot, b: Spot) -> Topology {
        let site = |spot| match spot {
            Spot::Public => Site::PublicHost,
            Spot::Behind(kind) => Site::Router { kind, hosts: 1 },
        };
        Topology {
            sites: vec![site(a), site(b)],
        }
    }

    /// `hosts` hosts behind one router of `kind`.
    pub fn shared(kind: RouterKind, hosts: u8) -> Topology {
        Topology {
            sites: vec![Site::Router { kind, hosts }],
        }
    }
}

/// A machine a client runs on.
#[derive(Debug, Clone)]
pub struct Host {
    pub ns: String,
    pub addr: Ipv4Addr,
    /// Index into [`Lab::routers`], `None` on the public segment.
    pub router: Option<usize>,
}

/// A NAT router.
#[derive(Debug, Clone)]
pub struct Router {
    pub ns: String,
    pub kind: RouterKind,
    /// Its address on the public segment.
    pub wan: Ipv4Addr,
    /// Its address on its LAN.
    pub lan: Ipv4Addr,
}

/// A built lab. Dropping it kills what still runs in its namespaces and deletes them.
#[derive(Debug)]
pub struct Lab {
    /// The public segment's namespace (bridge br0), where the mediator runs.
    pub public_ns: String,
    pub routers: Vec<Router>,
    pub hosts: Vec<Host>,
    /// Every namespace made so far, in creation order (removed in reverse).
    namespaces: Vec<String>,
    base: String,
}

static NEXT_LAB: AtomicU32 = AtomicU32::new(0);
static SWEEP: Once = Once::new();

impl Lab {
    /// Builds `topology`. Panics, saying what is missing, if the machine cannot
    /// host a lab (not root, no `ip` or `nft`).
    pub fn build(topology: &Topology) -> Lab {
        preflight();
        SWEEP.call_once(remove_stale_namespaces);
        let base = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            NEXT_LAB.fetch_add(1, Ordering::Relaxed)
        );
        let mut lab = Lab {
            public_ns: format!("{base}-pub"),
            routers: Vec::new(),
            hosts: Vec::new(),
            namespaces: Vec::new(),
            base,
        };
        let public = lab.public_ns.clone();
        lab.add_namespace(&public);
        ip_batch(
            &public,
            &[
                "link add br0 type bridge".into(),
                format!("addr add {MEDIATOR_IP}/24 dev br0"),
                "link set br0 up".into(),
            ],
        );
        let mut public_hosts = 0u8;
        for site in &topology.sites {
            match *site {
                Site::PublicHost => {
                    let i = public_hosts;
                    public_hosts += 1;
                    let ns = format!("{}-p{i}", lab.base);
                    let addr = Ipv4Addr::new(203, 0, 113, 100 + i);
                    lab.add_namespace(&ns);
                    ip_batch(
                        &public,
                        &[
                            format!("link add p{i} type veth peer name eth0 netns {ns}"),
                            format!("link set p{i} master br0 up"),
                        ],
                    );
                    ip_batch(
                        &ns,
                        &[
                            format!("addr add {addr}/24 dev eth0"),
                            "link set eth0 up".into(),
                        ],
                    );
                    lab.hosts.push(Host {
                        ns,
                        addr,
                        router: None,
                    });
                }
                Site::Router { kind, hosts } => lab.add_router(kind, hosts),
            }
        }
        lab
    }

    fn add_router(&mut self, kind: RouterKind, hosts: u8) {
        let i = self.routers.len() as u8;
        let ns = format!("{}-r{i}", self.base);
        let wan = Ipv4Addr::new(203, 0, 113, 10 + i);
        let lan = Ipv4Addr::new(192, 168, i + 1, 1);
        self.add_namespace(&ns);
        ip_batch(
            &self.public_ns,
            &[
                format!("link add r{i} type veth peer name wan0 netns {ns}"),
                format!("link set r{i} master br0 up"),
            ],
        );
        ip_batch(
            &ns,
            &[
                format!("addr add {wan}/24 dev wan0"),
                "link set wan0 up".into(),
                "link add lan0 type bridge".into(),
                format!("addr add {lan}/24 dev lan0"),
                "link set lan0 up".into(),
            ],
        );
        let first_host = Ipv4Addr::new(192, 168, i + 1, 10);
        // One shell in the router: forwarding on, then the ruleset from stdin.
        run(
            Command::new("ip")
                .args(["netns", "exec", &ns, "sh", "-c"])
                .arg("echo 1 > /proc/sys/net/ipv4/ip_forward && nft -f -"),
            Some(&kind.ruleset(first_host)),
        );
        for j in 0..hosts {
            let host_ns = format!("{}-r{i}h{j}", self.base);
            let addr = Ipv4Addr::new(192, 168, i + 1, 10 + j);
            self.add_namespace(&host_ns);
            ip_batch(
                &ns,
                &[
                    format!("link add h{j} type veth peer name eth0 netns {host_ns}"),
                    format!("link set h{j} master lan0 up"),
                ],
            );
            ip_batch(
                &host_ns,
                &[
                    format!("addr add {addr}/24 dev eth0"),
                    "link set eth0 up".into(),
                    format!("route add default via {lan}"),
                ],
            );
            self.hosts.push(Host {
                ns: host_ns,
                addr,
                router: Some(i as usize),
            });
        }
        self.routers.push(Router { ns, kind, wan, lan });
    }

    /// Creates a namespace and records it for removal before anything can fail.
    fn add_namespace(&mut self, ns: &str) {
        run(Command::new("ip").args(["netns", "add", ns]), None);
        self.namespaces.push(ns.to_string());
        ip_batch(ns, &["link set lo up".into()]);
    }

    /// The mediator's `--server` argument.
    pub fn server(&self) -> String {
        format!("{MEDIATOR_IP}:{MEDIATOR_PORT}")
    }

    /// Starts the real mediator on the public segment, its metrics on
    /// [`METRICS_ADDR`] there.
    pub async fn start_mediator(&self, extra: &[&str]) -> Mediator {
        let mut flags = vec!["--metrics", METRICS_ADDR];
        flags.extend_from_slice(extra);
        Mediator::start_in(
            Some(&self.public_ns),
            &format!("{MEDIATOR_IP}:{MEDIATOR_PORT}"),
            &flags,
        )
        .await
    }

    /// Waits until the metrics page of [`Lab::start_mediator`]'s mediator has
    /// every line of `lines` (see [`super::wait_for_metrics`]).
    pub async fn wait_for_metrics(&self, lines: &[String]) {
        super::wait_for_metrics_in(Some(&self.public_ns), METRICS_ADDR, lines).await
    }

    /// The usual test-client flags (see [`client_args`]) for a lab host: room
    /// `room`, listening on every interface of its namespace, downloads in `dir`.
    pub fn client_args(
        &self,
        name: &str,
        room: &str,
        dir: &TempDir,
        extra: &[&str],
    ) -> Vec<String> {
        let mut args = client_args(&self.server(), name, dir, &["--room", room]);
        set_flag(&mut args, "--listen", "0.0.0.0:0");
        set_flag(
            &mut args,
            "--downloads",
            &dir.join(&format!("downloads-{name}")).display().to_string(),
        );
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    /// Starts the real client on host `host` with exactly `args`.
    pub fn start_client(&self, host: usize, name: &str, args: &[String]) -> Client {
        Client::start_in(Some(&self.hosts[host].ns), name, args, &[])
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            kill_everything_in(ns);
            let _ = run_bounded(Command::new("ip").args(["netns", "delete", ns]), None);
        }
    }
}

/// Panics with what to install if this machine cannot build a lab.
fn preflight() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|uids| uids.split_whitespace().nth(1))
        == Some("0");
    assert!(
        root,
        "the NAT lab tests need root (network namespaces, veth, nftables): run them as root, \
         e.g. through .ci/run"
    );
    require_tool("the NAT lab tests", "ip", &["-V"], "iproute2");
    require_tool("the NAT lab tests", "nft", &["--version"], "nftables");
}

/// Removes lab namespaces left by test processes that are gone (killed mid-test).
fn remove_stale_namespaces() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next() else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new(&format!("/proc/{pid}")).exists() {
            kill_everything_in(&name);
            let _ = run_bounded(Command::new("ip").args(["netns", "delete", &name]), None);
        }
    }
}

/// Kills, by pid, the processes still running in a lab namespace: only ever
/// ones a lab test started there.
fn kill_everything_in(ns: &str) {
    let Ok(out) = Command::new("ip")
        .args(["netns", "pids", ns])
        .stderr(Stdio::null())
        .output()
    else {
        return;
    };
    for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        if pid.parse::<u32>().is_ok() {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
    }
}

/// Runs `ip -n NS -batch -` with `lines` (one process for many steps).
fn ip_batch(ns: &str, lines: &[String]) {
    let mut script = lines.join("\n");
    script.push('\n');
    run(
        Command::new("ip").args(["-n", ns, "-batch", "-"]),
        Some(&script),
    );
}

/// Runs a setup command to completion, panicking with its output if it fails.
fn run(cmd: &mut Command, stdin: Option<&str>) {
    let shown = format!("{cmd:?}");
    if let Err(e) = run_bounded(cmd, stdin) {
        panic!(
            "lab: {shown} {e}{}",
            stdin
                .map(|s| format!("\ninput was:\n{s}"))
                .unwrap_or_default()
        );
    }
}

/// Runs `cmd` with `stdin`, waiting at most [`SETUP_STEP`]: setup commands finish
/// in milliseconds, and a stuck one must not hang the test. std has no wait with
/// a timeout, hence the short poll.
fn run_bounded(cmd: &mut Command, stdin: Option<&str>) -> Result<(), String> {
    use std::io::Write;
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start: {e}"))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(|e| format!("took no input: {e}"))?;
    }
    let deadline = std::time::Instant::now() + SETUP_STEP;
    while child.try_wait().map_err(|e| e.to_string())?.is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("did not finish within {SETUP_STEP:?}"));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Bound on one setup command.
const SETUP_STEP: Duration = Duration::from_secs(20);

/// A packet capture (tcpdump) on the public segment's bridge: everything between
/// the routers and the mediator, both legs of a relayed stream included.
pub struct Tap {
    child: tokio::process::Child,
    pcap: tokio::task::JoinHandle<Vec<u8>>,
}

/// Fails loudly, naming the Debian package, when `tool` does not run.
fn require_tool(who: &str, tool: &str, args: &[&str], package: &str) {
    let found = Command::new(tool)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        found,
        "{who} cannot run without `{tool}`: apt-get install {package} (.ci/run installs it)"
    );
}

impl Tap {
    /// Starts capturing TCP on the public segment and returns once tcpdump
    /// says it listens.
    pub async fn start(lab: &Lab) -> Tap {
        Tap::start_in(&lab.public_ns, &["tcp"], "the public segment").await
    }

    /// Starts tcpdump on the bridge `br0` of namespace `ns` with capture
    /// filter `filter` (`what` names the place in messages); returns once it
    /// listens. Panics (never skips) without tcpdump.
    pub async fn start_in(ns: &str, filter: &[&str], what: &str) -> Tap {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
        require_tool(
            &format!("the tap on {what}"),
            "tcpdump",
            &["--version"],
            "tcpdump",
        );
        let mut child = super::command_in(Some(ns), Path::new("tcpdump"))
            .args(["-i", "br0", "-U", "--immediate-mode", "-s", "0", "-w", "-"])
            .args(filter)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start tcpdump");
        let mut stdout = child.stdout.take().expect("piped stdout");
        let pcap = tokio::spawn(async move {
            let mut bytes = Vec::new();
            let _ = stdout.read_to_end(&mut bytes).await;
            bytes
        });
        let stderr = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
        super::await_line(stderr, "listening on", &format!("tcpdump on {what}")).await;
        Tap { child, pcap }
    }

    /// Stops the capture (SIGINT, so tcpdump flushes) and returns what it saw.
    pub async fn stop(mut self) -> Capture {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill")
                .args(["-INT", &pid.to_string()])
                .status();
        }
        if tokio::time::timeout(super::WAIT, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
        let bytes = tokio::time::timeout(super::WAIT, self.pcap)
            .await
            .expect("capture output ends once tcpdump exits")
            .expect("capture reader");
        Capture { pcap: bytes }
    }
}

/// A pcap file as tcpdump wrote it (Ethernet frames).
pub struct Capture {
    pcap: Vec<u8>,
}

impl Capture {
    /// The pcap stream as tcpdump wrote it.
    pub fn bytes(&self) -> &[u8] {
        &self.pcap
    }

    /// Whether `needle` occurs anywhere in the capture, headers or payload.
    pub fn contains(&self, needle: &[u8]) -> bool {
        !needle.is_empty() && self.pcap.windows(needle.len()).any(|w| w == needle)
    }

    /// TCP payload bytes of IPv4 segments from or to `port`.
    pub fn tcp_payload_bytes(&self, port: u16) -> u64 {
        let p = &self.pcap;
        let u32_at = |at: usize| -> Option<u32> {
            Some(u32::from_le_bytes(p.get(at..at + 4)?.try_into().ok()?))
        };
        assert_eq!(u32_at(0), Some(0xa1b2_c3d4), "a little-endian pcap stream");
        let mut total = 0u64;
        let mut at = 24;
        while let Some(len) = u32_at(at + 8) {
            let start = at + 16;
            let end = start + len as usize;
            let Some(frame) = p.get(start..end) else {
                break;
            };
            total += ipv4_tcp_payload(frame, port);
            at = end;
        }
        total
    }
}

/// Payload length of an Ethernet/IPv4/TCP frame from or to `port`, else 0.
fn ipv4_tcp_payload(frame: &[u8], port: u16) -> u64 {
    let be16 = |at: usize| {
        frame
            .get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
    };
    if be16(12) != Some(0x0800) || frame.get(23) != Some(&6) {
        return 0;
    }
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    let tcp = 14 + ihl;
    let (Some(total), Some(src), Some(dst), Some(off)) =
        (be16(16), be16(tcp), be16(tcp + 2), frame.get(tcp + 12))
    else {
        return 0;
    };
    if src != port && dst != port {
        return 0;
    }
    let header = ihl + usize::from(off >> 4) * 4;
    u64::from(total).saturating_sub(header as u64)
}
