//! LAN presence datagrams (docs/protocol.md §14.4) through
//! `wire::lan::open_presence` and a [`PresenceSieve`], checked against a model of
//! the receiving table written from the spec: every datagram is accepted or
//! dropped for exactly the reason the table gives, the drop counts agree, the
//! contacts recognised (each once per sender id) are the ones whose tags it
//! carries, and whatever opens is canonical (it seals again to the same bytes).
//!
//! The model computes the tags itself from the spec's formulas. The receiver's
//! contacts are the §14.4 vector's two secrets, so the spec's vector is a seed.

use std::collections::HashMap;

use crate::lan::{take, take_u16};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use wire::lan::{
    DropCounts, Dropped, Presence, PresenceSieve, Recognised, MAX_PRESENCE_DATAGRAM,
    MAX_PRESENCE_TAGS, MAX_SEEN, PRESENCE_EPOCH_MS, PRESENCE_EPOCH_SLACK, PRESENCE_HEADER_LEN,
    PRESENCE_ID_LEN, PRESENCE_MAGIC, PRESENCE_RATE, PRESENCE_TAG_LEN, PRESENCE_VERSION,
};

/// The receiver's clock at the first event: the §14.4 vector's time.
const T0_MS: u64 = 1_700_000_000_000;
/// The receiver's contacts' pair secrets (the vector's), in the sieve's order.
const SECRETS: [[u8; 32]; 2] = [[0x41; 32], [0x42; 32]];

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// §14.4's tag of the contact with pair secret `secret`.
fn tag(secret: &[u8; 32], id: &[u8], epoch: u32) -> [u8; PRESENCE_TAG_LEN] {
    let key = hmac(secret, &[b"p2pchat/v3/lan-presence-key"]);
    let full = hmac(
        &key,
        &[b"p2pchat/v3/lan-presence-tag", id, &epoch.to_be_bytes()],
    );
    full[..PRESENCE_TAG_LEN].try_into().expect("16 bytes")
}

fn epoch_of(ms: u64) -> u32 {
    u32::try_from(ms / PRESENCE_EPOCH_MS).unwrap_or(u32::MAX)
}

/// §14.4's receiving table, row after row.
struct Model {
    own: [u8; PRESENCE_ID_LEN],
    evaluated: HashMap<[u8; 32], u32>,
    recognised: HashMap<([u8; PRESENCE_ID_LEN], usize), u32>,
    budget: u32,
    refilled_ms: u64,
    counts: DropCounts,
}

impl Model {
    /// Rows 1–6: what `open_presence` must say.
    fn open(d: &[u8], now: u64) -> Result<Presence, Dropped> {
        if d.len() < PRESENCE_HEADER_LEN + PRESENCE_TAG_LEN || d.len() > MAX_PRESENCE_DATAGRAM {
            return Err(Dropped::Size);
        }
        if d[..4] != PRESENCE_MAGIC {
            return Err(Dropped::Magic);
        }
        if d[4] != PRESENCE_VERSION {
            return Err(Dropped::Version);
        }
        let n = usize::from(d[25]);
        if n == 0 || d.len() != PRESENCE_HEADER_LEN + n * PRESENCE_TAG_LEN {
            return Err(Dropped::Malformed);
        }
        let epoch = u32::from_be_bytes(d[21..25].try_into().expect("4 bytes"));
        let ours = u64::from(epoch_of(now));
        if u64::from(epoch) + u64::from(PRESENCE_EPOCH_SLACK) < ours {
            return Err(Dropped::Stale);
        }
        if u64::from(epoch) > ours + u64::from(PRESENCE_EPOCH_SLACK) {
            return Err(Dropped::Future);
        }
        Ok(Presence {
            id: d[5..21].try_into().expect("16 bytes"),
            epoch,
            tags: d[26..]
                .chunks(PRESENCE_TAG_LEN)
                .map(|c| c.try_into().expect("16 bytes"))
                .collect(),
        })
    }

    /// Rows 7–10 and the rings, on top of what [`Model::open`] said.
    fn accept(&mut self, d: &[u8], now: u64) -> Result<Recognised, Dropped> {
        let result = Model::open(d, now).and_then(|p| self.judge(d, p, now));
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

    fn judge(&mut self, d: &[u8], p: Presence, now: u64) -> Result<Recognised, Dropped> {
        if p.id == self.own {
            return Err(Dropped::Own);
        }
        let digest: [u8; 32] = Sha256::digest(d).into();
        if self.evaluated.contains_key(&digest) {
            return Err(Dropped::Repeated);
        }
        // A bucket of 20 whole evaluations, refilled at 20 a second.
        let earned = now.saturating_sub(self.refilled_ms) * u64::from(PRESENCE_RATE) / 1000;
        if earned > 0 {
            self.budget = (u64::from(self.budget) + earned).min(u64::from(PRESENCE_RATE)) as u32;
            self.refilled_ms = now;
        }
        if self.budget == 0 {
            return Err(Dropped::Busy);
        }
        let ours = u64::from(epoch_of(now));
        let live = |e: &u32| u64::from(*e) + u64::from(PRESENCE_EPOCH_SLACK) >= ours;
        if self.evaluated.len() >= MAX_SEEN {
            self.evaluated.retain(|_, e| live(e));
            if self.evaluated.len() >= MAX_SEEN {
                return Err(Dropped::Busy);
            }
        }
        self.budget -= 1;
        self.evaluated.insert(digest, p.epoch);
        let found: Vec<usize> = (0..SECRETS.len())
            .filter(|&c| p.tags.contains(&tag(&SECRETS[c], &p.id, p.epoch)))
            .collect();
        if found.is_empty() {
            return Err(Dropped::Mac);
        }
        if self.recognised.len() + found.len() > MAX_SEEN {
            self.recognised.retain(|_, e| live(e));
            if self.recognised.len() + found.len() > MAX_SEEN {
                self.recognised.clear();
            }
        }
        let fresh = found
            .into_iter()
            .filter(|&c| self.recognised.insert((p.id, c), p.epoch).is_none())
            .collect();
        Ok(Recognised {
            id: p.id,
            epoch: p.epoch,
            fresh,
        })
    }
}

fn take_u8(rest: &mut &[u8]) -> u8 {
    take(rest, 1).first().copied().unwrap_or(0)
}

/// `own | event*`, our id being 16 × `own`. Each event is `op` (the receiver's
/// clock first moves on by `op >> 2` seconds) and then by `op & 3`: 0
/// `u16_le(n) | n bytes`, a datagram as given; 1 `id | i8(epochs) | mask |
/// extra`, a datagram from sender id 16 × `id` dated `epochs` epochs from ours,
/// with the real tag of the receiver's contact 0 if `mask` bit 0, of contact 1
/// if bit 1, and `extra` (≤ 64) tags that are 16 × their index; 2 `i`, datagram
/// `i` (mod count) again; 3 `u16_le(ms)`, the clock moves on by `ms`.
pub fn lan_presence(data: &[u8]) {
    run(data);
}

/// [`lan_presence`], returning the sieve's counts and the contacts rung.
fn run(data: &[u8]) -> (DropCounts, usize) {
    let mut rung = 0;
    let Some((&own, mut rest)) = data.split_first() else {
        return (DropCounts::default(), rung);
    };
    let own = [own; PRESENCE_ID_LEN];
    let keys = SECRETS.iter().map(wire::lan::presence_key).collect();
    let mut sieve = PresenceSieve::new(keys);
    sieve.own(own);
    let mut model = Model {
        own,
        evaluated: HashMap::new(),
        recognised: HashMap::new(),
        budget: PRESENCE_RATE,
        refilled_ms: 0,
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
                let id = [take_u8(&mut rest); PRESENCE_ID_LEN];
                let shift = i64::from(take_u8(&mut rest) as i8);
                let epoch =
                    u32::try_from((i64::from(epoch_of(now)) + shift).max(0)).unwrap_or(u32::MAX);
                let mask = take_u8(&mut rest);
                let extra = usize::from(take_u8(&mut rest)).min(MAX_PRESENCE_TAGS);
                let mut tags: Vec<[u8; PRESENCE_TAG_LEN]> = (0..extra)
                    .map(|i| [u8::try_from(i).expect("≤ 64"); PRESENCE_TAG_LEN])
                    .collect();
                for (c, secret) in SECRETS.iter().enumerate() {
                    if mask & (1 << c) != 0 {
                        tags.insert(0, tag(secret, &id, epoch));
                    }
                }
                tags.truncate(MAX_PRESENCE_TAGS);
                match wire::lan::seal_presence(&Presence { id, epoch, tags }) {
                    Ok(d) => d,
                    Err(_) => continue,
                }
            }
            2 if !sent.is_empty() => {
                let i = take_u8(&mut rest);
                sent[usize::from(i) % sent.len()].clone()
            }
            2 => continue,
            _ => {
                now += u64::from(take_u16(&mut rest));
                continue;
            }
        };
        let opened = wire::lan::open_presence(&datagram, now);
        assert_eq!(
            opened,
            Model::open(&datagram, now),
            "open departs from §14.4"
        );
        if let Ok(p) = &opened {
            let again = wire::lan::seal_presence(p).expect("what opened seals again");
            assert_eq!(again, datagram, "an opened presence is not canonical");
        }
        let expected = model.accept(&datagram, now);
        let got = sieve.accept(&datagram, now);
        assert_eq!(got, expected, "the sieve departs from §14.4");
        assert_eq!(sieve.counts(), model.counts, "drop counts differ");
        if let Ok(found) = &got {
            rung += found.fresh.len();
        }
        sent.push(datagram);
    }
    (sieve.counts(), rung)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed(i: usize) -> Vec<u8> {
        crate::seeds::seeds("lan_presence").swap_remove(i).1
    }

    #[test]
    fn the_spec_vector_rings_both_contacts_once_then_repeats() {
        let (counts, rung) = run(&seed(0));
        assert_eq!((rung, counts.repeated, counts.total()), (2, 1, 1));
    }

    #[test]
    fn the_seed_rows_reach_every_drop_reason() {
        let (c, rung) = run(&seed(1));
        assert!(rung >= 1);
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
            c.busy,
        ];
        assert!(each.iter().all(|&n| n > 0), "{c}");
    }
}
