//! LAN datagrams (docs/protocol.md §14) through `wire::lan::open` and a
//! [`Sieve`], checked against a model of §14.2 written from the spec: every
//! datagram is accepted or dropped for exactly the reason the table gives, the drop
//! counts agree, and whatever opens is canonical (it re-seals to the bytes it came
//! from, when as long) and opens again to the same announcement.
//!
//! The model computes the MAC itself, so it never claims "this cannot open": with a
//! fixed key libFuzzer's comparison tracing can learn a tag (see `record`), and a
//! datagram carrying the right tag must then open. The key is the §14.3 vector's
//! room, derived once per process (one Argon2id), so the spec's vector is a seed.

use std::collections::HashMap;
use std::sync::OnceLock;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use wire::lan::{
    Announcement, DropCounts, Dropped, LanKey, Opened, Sieve, HEADER_LEN, INSTANCE_LEN, MAC_LEN,
    MAGIC, MAX_ADDRS, MAX_AGE_MS, MAX_AHEAD_MS, MAX_DATAGRAM, MAX_SEEN, NONCE_LEN, VERSION,
};

use crate::handshake::code;
use crate::messages::round_trip;

/// The receiver's clock at the first event: the §14.3 vector's `sent_at_ms`.
pub(crate) const T0_MS: u64 = 1_700_000_000_000;

/// The room's key, as the client gets it, and its raw bytes for the model's MAC.
fn key() -> &'static (LanKey, [u8; 32]) {
    static KEY: OnceLock<(LanKey, [u8; 32])> = OnceLock::new();
    KEY.get_or_init(|| (wire::lan::lan_key(code()), *code().lan_key().expose()))
}

fn tag(signed: &[u8]) -> [u8; MAC_LEN] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key().1).expect("any key length");
    mac.update(signed);
    mac.finalize().into_bytes().into()
}

/// A datagram as a key holder would send it: header, `body` as given, real MAC.
pub(crate) fn sealed(nonce: [u8; NONCE_LEN], sent_at_ms: u64, body: &[u8]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.push(VERSION);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sent_at_ms.to_be_bytes());
    out.extend_from_slice(body);
    let mac = tag(&out);
    out.extend_from_slice(&mac);
    out
}

/// §14.2 read as a table, one row after another.
struct Model {
    own: [u8; INSTANCE_LEN],
    seen: HashMap<[u8; NONCE_LEN], u64>,
    counts: DropCounts,
}

impl Model {
    /// Rows 1–7: what `open` must say.
    fn open(d: &[u8], now: u64) -> Result<Opened, Dropped> {
        if d.len() < HEADER_LEN + 1 + MAC_LEN || d.len() > MAX_DATAGRAM {
            return Err(Dropped::Size);
        }
        if d[..4] != MAGIC {
            return Err(Dropped::Magic);
        }
        if d[4] != VERSION {
            return Err(Dropped::Version);
        }
        let (signed, mac) = d.split_at(d.len() - MAC_LEN);
        if tag(signed) != mac {
            return Err(Dropped::Mac);
        }
        let sent_at_ms = u64::from_be_bytes(signed[21..29].try_into().expect("8 bytes"));
        if u128::from(now) > u128::from(sent_at_ms) + u128::from(MAX_AGE_MS) {
            return Err(Dropped::Stale);
        }
        if u128::from(sent_at_ms) > u128::from(now) + u128::from(MAX_AHEAD_MS) {
            return Err(Dropped::Future);
        }
        let body = &signed[HEADER_LEN..];
        let announcement = round_trip::<Announcement>(body).ok_or(Dropped::Malformed)?;
        if announcement.addrs.len() > MAX_ADDRS || wire::validate_name(&announcement.name).is_err()
        {
            return Err(Dropped::Malformed);
        }
        Ok(Opened {
            nonce: signed[5..21].try_into().expect("16 bytes"),
            sent_at_ms,
            announcement,
        })
    }

    /// Rows 8–10 on top of what [`Model::open`] said, and the count of the reason.
    fn accept(&mut self, opened: Result<Opened, Dropped>, now: u64) -> Result<Opened, Dropped> {
        let result = opened.and_then(|opened| {
            if opened.announcement.instance == self.own {
                return Err(Dropped::Own);
            }
            if self.seen.contains_key(&opened.nonce) {
                return Err(Dropped::Repeated);
            }
            let live = self
                .seen
                .values()
                .filter(|&&sent| u128::from(sent) + u128::from(MAX_AGE_MS) >= u128::from(now))
                .count();
            if live >= MAX_SEEN {
                return Err(Dropped::Busy);
            }
            if self.seen.len() >= MAX_SEEN {
                self.seen.retain(|_, sent| {
                    u128::from(*sent) + u128::from(MAX_AGE_MS) >= u128::from(now)
                });
            }
            self.seen.insert(opened.nonce, opened.sent_at_ms);
            Ok(opened)
        });
        if let Err(why) = result {
            let c = &mut self.counts;
            let slot = match why {
                Dropped::Size => &mut c.size,
                Dropped::Magic => &mut c.magic,
                Dropped::Version => &mut c.version,
                Dropped::Mac => &mut c.mac,
                Dropped::Malformed => &mut c.malformed,
                Dropped::Stale => &mut c.stale,
                Dropped::Future => &mut c.future,
                Dropped::Repeated => &mut c.repeated,
                Dropped::Own => &mut c.own,
                Dropped::Busy => &mut c.busy,
                _ => unreachable!("the model gives no other reason"),
            };
            *slot += 1;
        }
        result
    }
}

/// Takes `n` bytes (fewer at the end of the input).
pub(crate) fn take<'a>(rest: &mut &'a [u8], n: usize) -> &'a [u8] {
    let (head, tail) = rest.split_at(n.min(rest.len()));
    *rest = tail;
    head
}

/// Takes a little-endian u16 (zeros past the end of the input).
pub(crate) fn take_u16(rest: &mut &[u8]) -> u16 {
    let b = take(rest, 2);
    u16::from_le_bytes([
        b.first().copied().unwrap_or(0),
        b.get(1).copied().unwrap_or(0),
    ])
}

/// `own | event*`, our instance id being 16 × `own`. Each event is `op` (the
/// receiver's clock first moves on by `op >> 2` seconds) and then by `op & 3`:
/// 0 `u16_le(n) | n bytes`, a datagram as given; 1 `nonce | i16_le(age) |
/// u16_le(n) | body`, a key holder's datagram with nonce 16 × `nonce`, sent
/// `4·age` ms before now, and a real MAC; 2 `i`, datagram `i` (mod count) again;
/// 3 `u16_le(ms)`, the clock moves on by `ms`.
pub fn lan_datagram(data: &[u8]) {
    run(data);
}

/// [`lan_datagram`], returning the sieve's counts and how many it accepted.
fn run(data: &[u8]) -> (DropCounts, usize) {
    let mut accepted = 0;
    let Some((&own, mut rest)) = data.split_first() else {
        return (DropCounts::default(), accepted);
    };
    let (key, _) = key();
    let own = [own; INSTANCE_LEN];
    let mut sieve = Sieve::new(key.clone(), own);
    let mut model = Model {
        own,
        seen: HashMap::new(),
        counts: DropCounts::default(),
    };
    let mut now = T0_MS;
    let mut sent: Vec<Vec<u8>> = Vec::new();
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        now += u64::from(op >> 2) * 1000;
        let datagram = match op & 3 {
            0 => {
                let n = take_u16(&mut rest);
                take(&mut rest, usize::from(n)).to_vec()
            }
            1 => {
                let nonce = [take(&mut rest, 1).first().copied().unwrap_or(0); NONCE_LEN];
                let age = take_u16(&mut rest) as i16;
                let n = take_u16(&mut rest);
                let sent_at = now.saturating_add_signed(-4 * i64::from(age));
                sealed(nonce, sent_at, take(&mut rest, usize::from(n)))
            }
            2 if !sent.is_empty() => {
                let i = take(&mut rest, 1).first().copied().unwrap_or(0);
                sent[usize::from(i) % sent.len()].clone()
            }
            2 => continue,
            _ => {
                now += u64::from(take_u16(&mut rest));
                continue;
            }
        };
        let opened = Model::open(&datagram, now);
        assert_eq!(wire::lan::open(key, &datagram, now), opened);
        let expected = model.accept(opened, now);
        let got = sieve.accept(&datagram, now);
        assert_eq!(got, expected, "the sieve departs from §14.2");
        assert_eq!(sieve.counts(), model.counts, "drop counts differ");
        if let Ok(opened) = &got {
            accepted += 1;
            let _ = format!("{opened:?}");
            // Canonical: re-sealing what opened gives the datagram back when the
            // body re-encodes as long (round_trip checked it is never longer).
            let again = wire::lan::seal(key, &opened.announcement, opened.nonce, opened.sent_at_ms)
                .expect("what opened seals again");
            assert!(again.len() <= datagram.len());
            if again.len() == datagram.len() {
                assert_eq!(again, datagram);
            }
            assert_eq!(
                wire::lan::open(key, &again, now).as_ref(),
                Ok(opened),
                "a re-sealed announcement opens differently"
            );
        }
        sent.push(datagram);
    }
    (sieve.counts(), accepted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed(i: usize) -> Vec<u8> {
        crate::seeds::seeds("lan_datagram").swap_remove(i).1
    }

    #[test]
    fn the_spec_vector_opens_once_then_repeats() {
        let (counts, accepted) = run(&seed(0));
        assert_eq!((accepted, counts.repeated, counts.total()), (1, 1, 1));
    }

    #[test]
    fn the_seed_rows_reach_every_drop_reason_but_busy() {
        let (c, accepted) = run(&seed(1));
        assert_eq!(accepted, 1);
        let each = [
            c.size,
            c.magic,
            c.version,
            c.mac,
            c.malformed,
            c.stale,
            c.future,
            c.repeated,
            c.own,
        ];
        assert!(each.iter().all(|&n| n > 0), "{c}");
    }
}
