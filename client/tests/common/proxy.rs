//! A loopback TCP proxy for one connection at a time: forwards both ways,
//! records every byte, and can flip one bit in one frame on the way.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Flip one bit in the payload of the `frame_index`-th frame (0-based) that the
/// connecting side sends.
#[derive(Debug, Clone, Copy)]
pub struct FlipBit {
    pub frame_index: usize,
}

/// A running proxy; it stops with the test's runtime.
pub struct Proxy {
    pub addr: SocketAddr,
    /// Every byte seen, both directions.
    pub captured: Arc<Mutex<Vec<u8>>>,
    /// Bytes forwarded from the connecting side, all connections together.
    pub forwarded_up: Arc<std::sync::atomic::AtomicU64>,
    live: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Proxy {
    /// Listens on `listen` (use port 0 for any) and forwards each connection to `target`.
    pub async fn start(listen: SocketAddr, target: SocketAddr, flip: Option<FlipBit>) -> Proxy {
        let listener = TcpListener::bind(listen).await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let captured = Arc::new(Mutex::new(Vec::new()));
        let forwarded_up = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let live: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::new(Mutex::new(Vec::new()));
        let (sink, counter, tasks) = (captured.clone(), forwarded_up.clone(), live.clone());
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = TcpStream::connect(target).await else {
                    continue;
                };
                let (ri, wi) = inbound.into_split();
                let (ro, wo) = outbound.into_split();
                let up = tokio::spawn(forward_frames(ri, wo, sink.clone(), flip, counter.clone()));
                let down = tokio::spawn(forward_raw(ro, wi, sink.clone()));
                let mut tasks = tasks.lock().unwrap();
                tasks.push(up.abort_handle());
                tasks.push(down.abort_handle());
            }
        });
        Proxy {
            addr,
            captured,
            forwarded_up,
            live,
        }
    }

    /// Drops every connection in flight (both sockets close at once); new
    /// connections are still forwarded.
    pub fn cut(&self) {
        for task in self.live.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    pub fn bytes(&self) -> Vec<u8> {
        self.captured.lock().unwrap().clone()
    }
}

async fn forward_raw(
    mut from: impl AsyncReadExt + Unpin,
    mut to: impl AsyncWriteExt + Unpin,
    sink: Arc<Mutex<Vec<u8>>>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
                if to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown().await;
}

/// Forwards whole frames (u32 length + payload), flipping a bit if asked.
async fn forward_frames(
    mut from: impl AsyncReadExt + Unpin,
    mut to: impl AsyncWriteExt + Unpin,
    sink: Arc<Mutex<Vec<u8>>>,
    flip: Option<FlipBit>,
    counter: Arc<std::sync::atomic::AtomicU64>,
) {
    let mut index = 0usize;
    loop {
        let mut header = [0u8; 4];
        if from.read_exact(&mut header).await.is_err() {
            break;
        }
        let len = u32::from_be_bytes(header) as usize;
        assert!(len <= 128 * 1024, "test proxy saw an oversized frame");
        let mut payload = vec![0u8; len];
        if from.read_exact(&mut payload).await.is_err() {
            break;
        }
        if let Some(f) = flip {
            if f.frame_index == index && !payload.is_empty() {
                let at = payload.len() / 2;
                payload[at] ^= 0x01;
            }
        }
        index += 1;
        {
            let mut s = sink.lock().unwrap();
            s.extend_from_slice(&header);
            s.extend_from_slice(&payload);
        }
        if to.write_all(&header).await.is_err() || to.write_all(&payload).await.is_err() {
            break;
        }
        counter.fetch_add(4 + len as u64, std::sync::atomic::Ordering::Relaxed);
    }
    let _ = to.shutdown().await;
}
