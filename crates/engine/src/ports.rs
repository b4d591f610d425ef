//! One local port for everything (docs/protocol.md §12.1): the listener, the
//! mediator connection and every dial to the peer share it (SO_REUSEADDR and
//! SO_REUSEPORT on each socket), so the NAT mapping the mediator observed for our
//! mediator connection is the one the peer dials, and our own dials leave from
//! the port the peer expects.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// The address every socket of this run binds to.
#[derive(Debug, Clone, Copy)]
pub struct LocalPort {
    bound: SocketAddr,
}

/// Accept queue of the listener: a few peers and strangers, never thousands.
const BACKLOG: i32 = 64;

fn configure(socket: &Socket) -> io::Result<()> {
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nodelay(true)?;
    socket.set_nonblocking(true)
}

fn new_socket(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        // Dual-stack: IPv4 peers reach `[::]:PORT` too, and our dials to IPv4
        // addresses leave from the same port as v4-mapped addresses.
        socket.set_only_v6(false)?;
    }
    configure(&socket)?;
    Ok(socket)
}

impl LocalPort {
    /// Binds the run's listener at `addr` (port 0: any free port). A wildcard
    /// IPv6 address on a host without IPv6 falls back to `0.0.0.0`.
    pub fn listen(addr: SocketAddr) -> io::Result<(LocalPort, TcpListener)> {
        match LocalPort::listen_exactly(addr) {
            // EAFNOSUPPORT (97): no IPv6 in this kernel or namespace.
            Err(e)
                if addr.ip() == Ipv6Addr::UNSPECIFIED
                    && (e.raw_os_error() == Some(97)
                        || e.kind() == io::ErrorKind::AddrNotAvailable) =>
            {
                LocalPort::listen_exactly(SocketAddr::new(
                    Ipv4Addr::UNSPECIFIED.into(),
                    addr.port(),
                ))
                .map_err(|_| e)
            }
            other => other,
        }
    }

    fn listen_exactly(addr: SocketAddr) -> io::Result<(LocalPort, TcpListener)> {
        let socket = new_socket(addr)?;
        socket.bind(&addr.into())?;
        socket.listen(BACKLOG)?;
        let listener = TcpListener::from_std(socket.into())?;
        let bound = listener.local_addr()?;
        Ok((LocalPort { bound }, listener))
    }

    /// The listener's address (its port is the run's port).
    pub fn addr(&self) -> SocketAddr {
        self.bound
    }

    /// Where a socket bound to our port must point to reach `dest`, or `None` when
    /// our port cannot reach that address family (an IPv4-only bind and an IPv6
    /// peer, or the reverse): then the caller dials from any port.
    fn route(&self, dest: SocketAddr) -> Option<SocketAddr> {
        let dest_v4 = match dest.ip() {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(v6) => v6.to_ipv4_mapped(),
        };
        match (self.bound.ip(), dest_v4) {
            (IpAddr::V6(ip), Some(v4)) if ip.is_unspecified() => Some(SocketAddr::new(
                IpAddr::V6(v4.to_ipv6_mapped()),
                dest.port(),
            )),
            (IpAddr::V6(_), None) => Some(dest),
            (IpAddr::V4(_), Some(v4)) => Some(SocketAddr::new(IpAddr::V4(v4), dest.port())),
            _ => None,
        }
    }

    /// Opens a TCP connection to `dest` from our port, within `within`. Falls back
    /// to an ephemeral port only when our bind cannot reach `dest`'s family.
    /// EADDRNOTAVAIL means a connection with this exact 4-tuple exists already
    /// (our listener accepted the peer's SYN): the caller stops dialing.
    pub async fn connect(&self, dest: SocketAddr, within: Duration) -> io::Result<TcpStream> {
        let socket = match self.route(dest) {
            Some(target) => {
                let socket = new_socket(self.bound)?;
                socket.bind(&self.bound.into())?;
                return timed(
                    within,
                    TcpSocket::from_std_stream(socket.into()).connect(target),
                )
                .await;
            }
            None => match dest {
                SocketAddr::V4(_) => TcpSocket::new_v4()?,
                SocketAddr::V6(_) => TcpSocket::new_v6()?,
            },
        };
        socket.set_nodelay(true)?;
        timed(within, socket.connect(dest)).await
    }
}

async fn timed(
    within: Duration,
    connect: impl std::future::Future<Output = io::Result<TcpStream>>,
) -> io::Result<TcpStream> {
    match tokio::time::timeout(within, connect).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "no answer")),
    }
}

/// Addresses as people write them: an IPv4-mapped IPv6 address is shown as IPv4.
pub fn unmap(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => addr,
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn listener_and_dials_share_one_port() {
        let (port, listener) = LocalPort::listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let (other, other_listener) = LocalPort::listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let out = port
            .connect(other.addr(), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(out.local_addr().unwrap(), port.addr());
        let (_, from) = other_listener.accept().await.unwrap();
        assert_eq!(from, port.addr());
        // The listener on the shared port still accepts.
        let _in = TcpStream::connect(port.addr()).await.unwrap();
        assert!(listener.accept().await.is_ok());
    }

    #[tokio::test]
    async fn a_second_dial_to_the_same_peer_is_address_not_available() {
        let (port, _listener) = LocalPort::listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let (other, other_listener) = LocalPort::listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let _first = port
            .connect(other.addr(), Duration::from_secs(5))
            .await
            .unwrap();
        let _accepted = other_listener.accept().await.unwrap();
        let second = port.connect(other.addr(), Duration::from_secs(5)).await;
        assert_eq!(
            second.err().map(|e| e.kind()),
            Some(io::ErrorKind::AddrNotAvailable)
        );
    }

    #[test]
    fn mapped_addresses_are_shown_as_ipv4() {
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:5000".parse().unwrap();
        assert_eq!(unmap(mapped).to_string(), "127.0.0.1:5000");
        let v6: SocketAddr = "[2001:db8::1]:5".parse().unwrap();
        assert_eq!(unmap(v6), v6);
    }
}
