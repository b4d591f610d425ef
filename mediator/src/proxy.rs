//! The PROXY protocol header (HAProxy's v1 text and v2 binary forms) that a TCP
//! load balancer sends first with `--proxy-protocol`, so the mediator sees each
//! client's own address (for `observed_addr`, the punch, and the per-address
//! limits) rather than the balancer's. Parsing is pure; [`read_header`] reads
//! exactly the header's bytes and nothing after them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt};

/// The v2 signature.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Longest v1 line, `\r\n` included (the spec's 107).
const V1_MAX: usize = 107;
/// Longest v2 address block accepted (addresses plus a few TLVs).
const V2_MAX: usize = 512;

/// A header the mediator cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// The connection did not start with a PROXY header.
    #[error("the connection did not start with a PROXY protocol header")]
    Missing,
    /// A header that breaks the spec (or is longer than we accept).
    #[error("malformed PROXY protocol header")]
    Malformed,
    /// The connection closed or failed inside the header.
    #[error("connection ended inside the PROXY protocol header")]
    Io,
}

/// What the header says. `Local` (a health check by the balancer itself, or
/// `UNKNOWN`): use the connection's own address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The client's address as the balancer saw it.
    Client(SocketAddr),
    /// No client address given.
    Local,
}

/// Parses a whole v1 line (`PROXY TCP4 SRC DST SPORT DPORT\r\n`).
pub fn parse_v1(line: &[u8]) -> Result<Source, ProxyError> {
    let text = std::str::from_utf8(line).map_err(|_| ProxyError::Malformed)?;
    let text = text.strip_suffix("\r\n").ok_or(ProxyError::Malformed)?;
    let mut words = text.split(' ');
    if words.next() != Some("PROXY") {
        return Err(ProxyError::Missing);
    }
    let family = words.next().ok_or(ProxyError::Malformed)?;
    if family == "UNKNOWN" {
        return Ok(Source::Local);
    }
    let fields: Vec<&str> = words.collect();
    let [src, _dst, sport, _dport] = fields.as_slice() else {
        return Err(ProxyError::Malformed);
    };
    let ip: IpAddr = match family {
        "TCP4" => IpAddr::V4(src.parse().map_err(|_| ProxyError::Malformed)?),
        "TCP6" => IpAddr::V6(src.parse().map_err(|_| ProxyError::Malformed)?),
        _ => return Err(ProxyError::Malformed),
    };
    let port: u16 = sport.parse().map_err(|_| ProxyError::Malformed)?;
    Ok(Source::Client(SocketAddr::new(ip, port)))
}

/// Parses a v2 header: `head` is its first 16 bytes, `body` the `len` bytes after.
pub fn parse_v2(head: &[u8; 16], body: &[u8]) -> Result<Source, ProxyError> {
    if head[..12] != V2_SIGNATURE {
        return Err(ProxyError::Missing);
    }
    let (version, command) = (head[12] >> 4, head[12] & 0x0f);
    if version != 2 || command > 1 {
        return Err(ProxyError::Malformed);
    }
    if command == 0 {
        return Ok(Source::Local);
    }
    let client = match head[13] {
        // TCP over IPv4, TCP over IPv6.
        0x11 => source_of(body, 4)?,
        0x21 => source_of(body, 16)?,
        // UNSPEC or a family we do not serve (UDP, UNIX): no usable address.
        _ => return Ok(Source::Local),
    };
    Ok(Source::Client(client))
}

/// The source address of a v2 address block: source IP, destination IP (both
/// `ip_len` bytes), source port, destination port.
fn source_of(body: &[u8], ip_len: usize) -> Result<SocketAddr, ProxyError> {
    let ip = body.get(..ip_len).ok_or(ProxyError::Malformed)?;
    let port = body
        .get(2 * ip_len..2 * ip_len + 2)
        .ok_or(ProxyError::Malformed)?;
    let ip: IpAddr = match <[u8; 4]>::try_from(ip) {
        Ok(v4) => Ipv4Addr::from(v4).into(),
        Err(_) => {
            Ipv6Addr::from(<[u8; 16]>::try_from(ip).map_err(|_| ProxyError::Malformed)?).into()
        }
    };
    Ok(SocketAddr::new(ip, u16::from_be_bytes([port[0], port[1]])))
}

/// Reads one header (v1 or v2) and not a byte more. The caller bounds the time.
pub async fn read_header<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Source, ProxyError> {
    let mut head = [0u8; 16];
    stream
        .read_exact(&mut head[..5])
        .await
        .map_err(|_| ProxyError::Io)?;
    if &head[..5] == b"PROXY" {
        // v1: byte by byte up to the line end, so nothing after it is consumed.
        let mut line = head[..5].to_vec();
        while !line.ends_with(b"\r\n") {
            if line.len() >= V1_MAX {
                return Err(ProxyError::Malformed);
            }
            let byte = stream.read_u8().await.map_err(|_| ProxyError::Io)?;
            line.push(byte);
        }
        return parse_v1(&line);
    }
    if head[..5] != V2_SIGNATURE[..5] {
        return Err(ProxyError::Missing);
    }
    stream
        .read_exact(&mut head[5..])
        .await
        .map_err(|_| ProxyError::Io)?;
    let len = usize::from(u16::from_be_bytes([head[14], head[15]]));
    if len > V2_MAX {
        return Err(ProxyError::Malformed);
    }
    let mut body = vec![0u8; len];
    stream
        .read_exact(&mut body)
        .await
        .map_err(|_| ProxyError::Io)?;
    parse_v2(&head, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A v2 PROXY header for `src` (to an arbitrary destination), as HAProxy's
    /// `send-proxy-v2` writes it.
    fn v2_header(src: SocketAddr) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(0x21);
        match src {
            SocketAddr::V4(v4) => {
                out.push(0x11);
                out.extend_from_slice(&12u16.to_be_bytes());
                out.extend_from_slice(&v4.ip().octets());
                out.extend_from_slice(&[10, 0, 0, 1]);
                out.extend_from_slice(&v4.port().to_be_bytes());
                out.extend_from_slice(&7070u16.to_be_bytes());
            }
            SocketAddr::V6(v6) => {
                out.push(0x21);
                out.extend_from_slice(&36u16.to_be_bytes());
                out.extend_from_slice(&v6.ip().octets());
                out.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
                out.extend_from_slice(&v6.port().to_be_bytes());
                out.extend_from_slice(&7070u16.to_be_bytes());
            }
        }
        out
    }

    #[tokio::test]
    async fn v2_and_v1_give_the_client_address_and_consume_only_the_header() {
        let src: SocketAddr = "203.0.113.9:5555".parse().unwrap();
        let mut bytes = v2_header(src);
        bytes.extend_from_slice(b"next");
        let mut reader = &bytes[..];
        assert_eq!(read_header(&mut reader).await, Ok(Source::Client(src)));
        assert_eq!(reader, b"next");

        let v6: SocketAddr = "[2001:db8::7]:40000".parse().unwrap();
        let bytes = v2_header(v6);
        assert_eq!(read_header(&mut &bytes[..]).await, Ok(Source::Client(v6)));

        let line = b"PROXY TCP4 198.51.100.4 10.0.0.1 6000 7070\r\nrest";
        let mut reader = &line[..];
        let want = Source::Client("198.51.100.4:6000".parse().unwrap());
        assert_eq!(read_header(&mut reader).await, Ok(want));
        assert_eq!(reader, b"rest");
        let unknown = b"PROXY UNKNOWN\r\n";
        assert_eq!(read_header(&mut &unknown[..]).await, Ok(Source::Local));
    }

    #[tokio::test]
    async fn anything_else_is_refused() {
        let hello = [0u8, 0, 1, 200, 0, 2, 3, 4];
        assert_eq!(read_header(&mut &hello[..]).await, Err(ProxyError::Missing));
        let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 200]].concat();
        assert_eq!(
            read_header(&mut &long[..]).await,
            Err(ProxyError::Malformed)
        );
        let bad = b"PROXY TCP4 300.1.1.1 10.0.0.1 1 2\r\n";
        assert_eq!(read_header(&mut &bad[..]).await, Err(ProxyError::Malformed));
        let mut big = v2_header("192.0.2.1:1".parse().unwrap());
        big[14..16].copy_from_slice(&4000u16.to_be_bytes());
        assert_eq!(read_header(&mut &big[..]).await, Err(ProxyError::Malformed));
        let cut = &v2_header("192.0.2.1:1".parse().unwrap())[..20];
        assert_eq!(read_header(&mut &cut[..]).await, Err(ProxyError::Io));
        let mut local = v2_header("192.0.2.1:1".parse().unwrap());
        local[12] = 0x20;
        assert_eq!(read_header(&mut &local[..]).await, Ok(Source::Local));
    }
}
