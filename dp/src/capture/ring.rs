//! The ring from a worker to the capture writer: bytes in a fixed buffer (`ringbuf`, single
//! producer, single consumer, lock-free), records of a 24-byte header and the kept bytes.
//!
//! The worker checks for room for the whole record first and then writes header and bytes;
//! the writer takes a record only once all of it is there. A record that does not fit is not
//! written (the caller counts it): the worker never waits.

use ringbuf::traits::{Consumer as _, Observer as _, Producer as _, Split as _};

use crate::inspect::DropReason;

/// Header bytes of a record.
pub const HEADER: usize = 24;

/// What a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A frame of capture `id`.
    Frame = 0,
    /// Open pre-trigger file `id`; the bytes are its name.
    Open = 1,
    /// Close pre-trigger file `id`.
    Close = 2,
}

/// A record's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// What it is.
    pub kind: Kind,
    /// Capture (or pre-trigger file) id.
    pub id: u32,
    /// Interface slot the frame was received on.
    pub slot: u16,
    /// Unix ns.
    pub ts_ns: u64,
    /// The frame's whole length (bytes).
    pub orig_len: u32,
    /// Bytes that follow the header.
    pub cap_len: u32,
    /// `Some(reason)` when Warden dropped the frame.
    pub dropped: Option<DropReason>,
}

impl Record {
    /// A frame record: `len` bytes received, at most `snaplen` kept.
    #[inline]
    pub fn frame(id: u32, slot: u16, ts_ns: u64, len: usize, snaplen: usize, dropped: Option<DropReason>) -> Record {
        Record {
            kind: Kind::Frame,
            id,
            slot,
            ts_ns,
            orig_len: len.min(u32::MAX as usize) as u32,
            cap_len: len.min(snaplen).min(u32::MAX as usize) as u32,
            dropped,
        }
    }

    fn encode(&self) -> [u8; HEADER] {
        let mut h = [0u8; HEADER];
        h[0] = self.kind as u8;
        h[1] = self.dropped.map_or(0, |r| r as u8 + 1);
        h[2..4].copy_from_slice(&self.slot.to_ne_bytes());
        h[4..8].copy_from_slice(&self.id.to_ne_bytes());
        h[8..16].copy_from_slice(&self.ts_ns.to_ne_bytes());
        h[16..20].copy_from_slice(&self.orig_len.to_ne_bytes());
        h[20..24].copy_from_slice(&self.cap_len.to_ne_bytes());
        h
    }

    fn decode(h: &[u8; HEADER]) -> Record {
        let u32_at = |i: usize| u32::from_ne_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        Record {
            kind: match h[0] {
                1 => Kind::Open,
                2 => Kind::Close,
                _ => Kind::Frame,
            },
            dropped: match h[1] {
                0 => None,
                n => DropReason::ALL.get(usize::from(n - 1)).copied(),
            },
            slot: u16::from_ne_bytes([h[2], h[3]]),
            id: u32_at(4),
            ts_ns: u64::from_ne_bytes([h[8], h[9], h[10], h[11], h[12], h[13], h[14], h[15]]),
            orig_len: u32_at(16),
            cap_len: u32_at(20),
        }
    }
}

/// The worker's end.
pub struct Producer(ringbuf::HeapProd<u8>);

/// The writer's end.
pub struct Consumer(ringbuf::HeapCons<u8>);

/// A ring of `bytes` bytes (allocated now, once).
pub fn ring(bytes: usize) -> (Producer, Consumer) {
    let (p, c) = ringbuf::HeapRb::<u8>::new(bytes.max(HEADER + 64)).split();
    (Producer(p), Consumer(c))
}

impl Producer {
    /// Writes `rec` and the first `rec.cap_len` bytes of `data`; false (nothing written)
    /// when the ring has no room for all of it.
    #[inline]
    pub fn push(&mut self, rec: &Record, data: &[u8]) -> bool {
        let n = (rec.cap_len as usize).min(data.len());
        if self.0.vacant_len() < HEADER + n {
            return false;
        }
        let mut rec = *rec;
        rec.cap_len = n as u32;
        self.0.push_slice(&rec.encode());
        self.0.push_slice(&data[..n]);
        true
    }
}

impl Consumer {
    /// Takes the next complete record, its bytes into `buf` (replaced); None when there is
    /// none yet.
    pub fn pop(&mut self, buf: &mut Vec<u8>) -> Option<Record> {
        if self.0.occupied_len() < HEADER {
            return None;
        }
        let mut h = [0u8; HEADER];
        self.0.peek_slice(&mut h);
        let rec = Record::decode(&h);
        let n = rec.cap_len as usize;
        if self.0.occupied_len() < HEADER + n {
            // The worker is between header and bytes: next time.
            return None;
        }
        self.0.skip(HEADER);
        buf.clear();
        buf.resize(n, 0);
        self.0.pop_slice(buf);
        Some(rec)
    }

    /// Bytes waiting.
    pub fn pending(&self) -> usize {
        self.0.occupied_len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_a_full_ring_refuses_whole_records() {
        let (mut p, mut c) = ring(HEADER + 64 + 40);
        let r = Record::frame(7, 3, 123, 1000, 60, Some(DropReason::Spoofed));
        assert!(p.push(&r, &[9u8; 1000]));
        assert!(!p.push(&r, &[9u8; 1000]), "no room for a second one");
        let mut buf = Vec::new();
        let got = c.pop(&mut buf).unwrap();
        assert_eq!(got, Record { cap_len: 60, ..r });
        assert_eq!(buf, [9u8; 60]);
        assert!(c.pop(&mut buf).is_none());
        let open = Record { kind: Kind::Open, id: 9, slot: 0, ts_ns: 5, orig_len: 0, cap_len: 4, dropped: None };
        assert!(p.push(&open, b"name"));
        assert_eq!(c.pop(&mut buf), Some(open));
        assert_eq!(buf, b"name");
        // Every drop reason survives the trip.
        for reason in DropReason::ALL {
            assert!(p.push(&Record::frame(1, 0, 0, 0, 0, Some(reason)), &[]));
            assert_eq!(c.pop(&mut buf).unwrap().dropped, Some(reason));
        }
    }
}
