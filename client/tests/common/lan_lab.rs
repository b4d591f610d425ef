//! A small network-namespace LAN for LAN-mode tests: three hosts on one bridge,
//! and a router from that bridge to a second segment with one far host. Names are
//! unique per lab; `Drop` deletes every namespace (and with them the bridge and
//! the veths), even when the test panics. Needs root. [`LanTap`] records what
//! anyone on the bridge hears on the LAN port (tcpdump in the router).
//!
//! ```text
//!   lan1 10.71.1.11 ─┐
//!   lan2 10.71.1.12 ─┼─ br0 10.71.1.1 [router] wan0 10.71.2.1 ── far 10.71.2.14
//!   lan3 10.71.1.13 ─┘
//! ```

use std::process::Command as StdCommand;
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The hosts of a [`LanLab`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host {
    Lan1,
    Lan2,
    Lan3,
    Far,
    Router,
}

impl Host {
    fn suffix(self) -> &'static str {
        match self {
            Host::Lan1 => "lan1",
            Host::Lan2 => "lan2",
            Host::Lan3 => "lan3",
            Host::Far => "far",
            Host::Router => "rtr",
        }
    }

    /// The host's address on its segment.
    pub fn ip(self) -> &'static str {
        match self {
            Host::Lan1 => "10.71.1.11",
            Host::Lan2 => "10.71.1.12",
            Host::Lan3 => "10.71.1.13",
            Host::Far => "10.71.2.14",
            Host::Router => "10.71.1.1",
        }
    }
}

/// A built lab; dropping it removes it.
pub struct LanLab {
    prefix: String,
    made: Vec<String>,
}

fn run(args: &[&str]) {
    let out = StdCommand::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `ip` (Debian package iproute2): {e}"));
    assert!(
        out.status.success(),
        "`ip {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn is_root() -> bool {
    StdCommand::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl LanLab {
    /// Builds the lab. Panics (never skips) without root or iproute2.
    pub fn build() -> LanLab {
        assert!(
            is_root(),
            "LAN lab tests need root (network namespaces, veth pairs, a bridge); run the tests as root"
        );
        let prefix = format!(
            "p2pl{}x{}x{:04x}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            rand::random::<u16>()
        );
        let mut lab = LanLab {
            prefix,
            made: Vec::new(),
        };
        for host in [Host::Router, Host::Lan1, Host::Lan2, Host::Lan3, Host::Far] {
            let ns = lab.ns(host);
            run(&["netns", "add", &ns]);
            lab.made.push(ns.clone());
            run(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        let r = lab.ns(Host::Router);
        run(&[
            "-n",
            &r,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ]);
        run(&["-n", &r, "addr", "add", "10.71.1.1/24", "dev", "br0"]);
        run(&["-n", &r, "link", "set", "br0", "up"]);
        for (i, host) in [Host::Lan1, Host::Lan2, Host::Lan3].into_iter().enumerate() {
            let ns = lab.ns(host);
            let port = format!("port{i}");
            run(&[
                "-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", &port, "netns",
                &r,
            ]);
            run(&["-n", &r, "link", "set", &port, "master", "br0", "up"]);
            run(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", host.ip()),
                "dev",
                "eth0",
            ]);
            run(&["-n", &ns, "link", "set", "eth0", "up"]);
            run(&["-n", &ns, "route", "add", "default", "via", "10.71.1.1"]);
        }
        let far = lab.ns(Host::Far);
        run(&[
            "-n", &far, "link", "add", "eth0", "type", "veth", "peer", "name", "wan0", "netns", &r,
        ]);
        run(&["-n", &r, "addr", "add", "10.71.2.1/24", "dev", "wan0"]);
        run(&["-n", &r, "link", "set", "wan0", "up"]);
        run(&["-n", &far, "addr", "add", "10.71.2.14/24", "dev", "eth0"]);
        run(&["-n", &far, "link", "set", "eth0", "up"]);
        run(&["-n", &far, "route", "add", "default", "via", "10.71.2.1"]);
        let status = StdCommand::new("ip")
            .args([
                "netns",
                "exec",
                &r,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ])
            .status()
            .expect("run sysctl in the router");
        assert!(status.success(), "enable forwarding in the router");
        lab
    }

    /// The namespace name of `host`.
    pub fn ns(&self, host: Host) -> String {
        format!("{}{}", self.prefix, host.suffix())
    }

    /// `ip netns exec NS program`: a command to run inside `host`.
    pub fn command(&self, host: Host, program: &std::path::Path) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("ip");
        cmd.args(["netns", "exec", &self.ns(host)]).arg(program);
        cmd
    }
}

impl Drop for LanLab {
    fn drop(&mut self) {
        for ns in self.made.iter().rev() {
            let _ = StdCommand::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// tcpdump on the bridge (in the router's namespace), recording every UDP
/// datagram to or from the LAN port: what a stranger on that network hears,
/// broadcast and multicast alike (the bridge floods both).
pub struct LanTap(super::lab::Tap);

impl LanTap {
    /// Starts capturing UDP port `port` and returns once tcpdump listens.
    /// Panics (never skips) without tcpdump.
    pub async fn start(lab: &LanLab, port: u16) -> LanTap {
        let port = port.to_string();
        let filter = ["udp", "port", port.as_str()];
        LanTap(super::lab::Tap::start_in(&lab.ns(Host::Router), &filter, "the LAN bridge").await)
    }

    /// Stops the capture (SIGINT, so tcpdump flushes) and returns the UDP
    /// payloads it saw, in order.
    pub async fn stop(self) -> Vec<Vec<u8>> {
        udp_payloads(self.0.stop().await.bytes())
    }
}

/// The UDP payloads of the Ethernet frames (IPv4 or IPv6 without extension
/// headers) in a little-endian pcap stream.
fn udp_payloads(pcap: &[u8]) -> Vec<Vec<u8>> {
    let u32_at = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(pcap.get(at..at + 4)?.try_into().ok()?))
    };
    assert_eq!(u32_at(0), Some(0xa1b2_c3d4), "a little-endian pcap stream");
    let mut out = Vec::new();
    let mut at = 24;
    while let Some(len) = u32_at(at + 8) {
        let start = at + 16;
        let end = start + len as usize;
        let Some(frame) = pcap.get(start..end) else {
            break;
        };
        at = end;
        let udp = match frame.get(12..14) {
            Some([0x08, 0x00]) => {
                let ihl = usize::from(frame.get(14).copied().unwrap_or(0) & 0x0f) * 4;
                (frame.get(23) == Some(&17)).then_some(14 + ihl)
            }
            Some([0x86, 0xdd]) => (frame.get(20) == Some(&17)).then_some(14 + 40),
            _ => None,
        };
        // The UDP length, not the frame's end: short frames carry padding.
        let payload = udp.and_then(|u| {
            let len = usize::from(u16::from_be_bytes(
                frame.get(u + 4..u + 6)?.try_into().ok()?,
            ));
            frame.get(u + 8..u + len.max(8))
        });
        if let Some(payload) = payload {
            out.push(payload.to_vec());
        }
    }
    out
}
