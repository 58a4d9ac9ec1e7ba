//! The pre-trigger ring: the last frames of each flow, kept in case an event needs them.
//!
//! Each worker keeps, for up to `pretrigger_sessions` flows (by canonical 5-tuple and pair),
//! the last `pretrigger_frames` frames of each, cut at `pretrigger_snaplen` bytes, in one
//! buffer allocated at start (`sessions × frames × snaplen` bytes) with a table of fixed
//! capacity: nothing is allocated per frame. When the worker sees a session denied or a
//! threat fire ([`Pretrigger::trigger`], once per worker loop, after the frame that caused it
//! was kept), the flow's kept frames go into the capture ring as a new pcapng file named
//! after the event, followed by its next `pretrigger_after` frames; the file ends then, or
//! when the flow has been quiet for [`QUIET_NS`].
//!
//! **Bounded against floods.** Memory never grows. A new flow takes a free entry, else one
//! found in a bounded scan (8 entries from a rotating cursor) whose flow is one-way (only its
//! first sender spoke: a spoofed or unanswered flood) or idle for [`IDLE_NS`]; two-way flows
//! and flows writing a file are never evicted. With none such the new flow is not kept
//! (`not_kept`): a flood of new flows churns only its own kind and cannot push out what
//! established sessions kept. Inspection never depends on any of it. Files are limited per
//! worker by a token bucket ([`FILES_PER_S`], burst [`FILES_BURST`]) and in total by
//! `pretrigger_max_files`; events beyond get no file (`files_refused`), so a flood of denials
//! cannot fill the disk (the writer also keeps every file within `[capture] max_disk_bytes`).

use std::sync::Arc;

use super::bpf::Program;
use super::ring::{Kind, Producer, Record};
use crate::flow::FlowKey;
use crate::inspect::DropReason;

/// A flow writing a file whose frames stopped this long ago ends its file (ns).
pub const QUIET_NS: u64 = 5_000_000_000;
/// A kept flow idle this long may be evicted by a new one (ns).
pub const IDLE_NS: u64 = 30_000_000_000;
/// Pre-trigger files a worker may start per second (token bucket rate).
pub const FILES_PER_S: u64 = 10;
/// The bucket's burst.
pub const FILES_BURST: u64 = 20;
/// Entries looked at to find one to evict.
const SCAN: usize = 8;

/// Counters of a worker's pre-trigger ring.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Flows kept (entries taken).
    pub flows: u64,
    /// Flows evicted (one-way or idle) for a new one.
    pub evicted: u64,
    /// New flows not kept: every entry looked at was two-way and busy, or writing.
    pub not_kept: u64,
    /// Files started.
    pub files: u64,
    /// Events that got no file: rate or file limit.
    pub files_refused: u64,
}

/// What [`Pretrigger::frame`] did with the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Nothing went into the ring (the frame was only kept, or not at all).
    Nothing,
    /// A frame copy went into the ring (a flow writing its file).
    Copied,
    /// A copy found no room (counted).
    Lost,
}

#[derive(Debug, Clone, Copy, Default)]
struct Kept {
    ts_ns: u64,
    orig_len: u32,
    cap_len: u16,
    slot: u16,
    /// 0 forwarded, else `DropReason as u8 + 1`.
    dropped: u8,
}

#[derive(Debug, Clone)]
struct Entry {
    key: Option<FlowKey>,
    /// The canonical end that sent the flow's first frame kept.
    first: crate::flow::End,
    two_way: bool,
    last_ns: u64,
    /// Next position in the entry's frames, and how many are kept.
    head: u16,
    count: u16,
    /// Writing: (file id, name, frames still to write after the event).
    file: Option<(u32, Arc<str>, u32)>,
    /// A file was written for this flow (one per flow).
    done: Option<Arc<str>>,
}

/// A worker's pre-trigger ring (see the module doc).
pub struct Pretrigger {
    frames: usize,
    after: u32,
    snaplen: usize,
    program: Option<Program>,
    map: hashbrown::HashMap<FlowKey, u32>,
    entries: Vec<Entry>,
    free: Vec<u32>,
    kept: Vec<Kept>,
    store: Vec<u8>,
    cursor: usize,
    /// Entries writing a file (scanned by the timer).
    writing: Vec<u32>,
    seq: u32,
    tokens: u64,
    refill_ns: u64,
    max_files: usize,
    files_total: Arc<std::sync::atomic::AtomicUsize>,
    stats: Stats,
}

impl Pretrigger {
    /// A ring for `sessions` flows of `frames` frames of at most `snaplen` bytes, the next
    /// `after` frames written after an event, frames selected by `program` (None: all), at
    /// most `max_files` files over all workers (counted in `files_total`, shared).
    pub fn new(
        sessions: usize,
        frames: usize,
        snaplen: usize,
        after: usize,
        program: Option<Program>,
        max_files: usize,
        files_total: Arc<std::sync::atomic::AtomicUsize>,
    ) -> Pretrigger {
        let sessions = sessions.max(1);
        let frames = frames.clamp(1, 256);
        let empty = Entry {
            key: None,
            first: crate::flow::End::Lo,
            two_way: false,
            last_ns: 0,
            head: 0,
            count: 0,
            file: None,
            done: None,
        };
        Pretrigger {
            frames,
            after: after.min(u32::MAX as usize) as u32,
            snaplen: snaplen.clamp(64, 65_535),
            program,
            map: hashbrown::HashMap::with_capacity(sessions),
            entries: vec![empty; sessions],
            free: (0..sessions as u32).rev().collect(),
            kept: vec![Kept::default(); sessions * frames],
            store: vec![0; sessions * frames * snaplen.clamp(64, 65_535)],
            cursor: 0,
            writing: Vec::with_capacity(sessions),
            seq: 0,
            tokens: FILES_BURST,
            refill_ns: 0,
            max_files,
            files_total,
            stats: Stats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Selects the frames kept from now on (None: all).
    pub fn set_program(&mut self, program: Option<Program>) {
        self.program = program;
    }

    /// Keeps a frame of pair `zone` received on `slot` (and writes it when its flow is
    /// writing a file). No allocation.
    pub fn frame(&mut self, zone: u16, slot: u16, now_ns: u64, data: &[u8], dropped: Option<DropReason>, ring: &mut Producer) -> Pushed {
        if self.program.as_ref().is_some_and(|p| !p.matches(data)) {
            return Pushed::Nothing;
        }
        let Ok(f) = crate::wire::decode(data) else { return Pushed::Nothing };
        let Some((key, end)) = crate::inspect::flow_of(&f, zone) else { return Pushed::Nothing };
        let e = match self.map.get(&key) {
            Some(&e) => e,
            None => match self.take(key, end, now_ns) {
                Some(e) => e,
                None => return Pushed::Nothing,
            },
        };
        let ent = &mut self.entries[e as usize];
        ent.two_way |= end != ent.first;
        ent.last_ns = now_ns;
        let dropped_b = dropped.map_or(0, |r| r as u8 + 1);
        if let Some((id, _, left)) = ent.file.as_mut() {
            let rec = Record::frame(*id, slot, now_ns, data.len(), self.snaplen, dropped);
            *left = left.saturating_sub(1);
            let pushed = if ring.push(&rec, data) { Pushed::Copied } else { Pushed::Lost };
            if *left == 0 {
                let id = *id;
                self.close(e, id, now_ns, ring);
            }
            return pushed;
        }
        // Keep it: the entry's frames are a ring of `frames` slots.
        let i = e as usize * self.frames + usize::from(ent.head);
        let n = data.len().min(self.snaplen);
        self.store[i * self.snaplen..i * self.snaplen + n].copy_from_slice(&data[..n]);
        self.kept[i] = Kept { ts_ns: now_ns, orig_len: data.len().min(u32::MAX as usize) as u32, cap_len: n as u16, slot, dropped: dropped_b };
        ent.head = ((usize::from(ent.head) + 1) % self.frames) as u16;
        ent.count = (usize::from(ent.count) + 1).min(self.frames) as u16;
        Pushed::Nothing
    }

    /// An entry for a new flow: a free one, or one evicted (one-way, or idle) within a
    /// bounded scan; None (counted) when there is none.
    fn take(&mut self, key: FlowKey, end: crate::flow::End, now_ns: u64) -> Option<u32> {
        let e = match self.free.pop() {
            Some(e) => e,
            None => {
                let n = self.entries.len();
                let found = (0..SCAN.min(n)).map(|k| (self.cursor + k) % n).find(|&i| {
                    let x = &self.entries[i];
                    x.file.is_none() && (!x.two_way || now_ns.saturating_sub(x.last_ns) >= IDLE_NS)
                });
                self.cursor = (self.cursor + SCAN) % n;
                let Some(i) = found else {
                    self.stats.not_kept += 1;
                    return None;
                };
                if let Some(old) = self.entries[i].key.take() {
                    self.map.remove(&old);
                }
                self.stats.evicted += 1;
                i as u32
            }
        };
        self.entries[e as usize] = Entry { key: Some(key), first: end, two_way: false, last_ns: now_ns, head: 0, count: 0, file: None, done: None };
        self.map.insert(key, e);
        self.stats.flows += 1;
        Some(e)
    }

    /// Writes the kept frames of `key`'s flow as a new file named after `what` and the
    /// session (see the module doc); returns the file name (the existing one when the flow
    /// was triggered before), None when nothing is kept of it, the file limits refuse, or the
    /// ring has no room for the file's start.
    pub fn trigger(&mut self, worker: u32, key: FlowKey, session_id: u64, what: &str, now_ns: u64, ring: &mut Producer) -> Option<Arc<str>> {
        let e = *self.map.get(&key)?;
        let ent = &self.entries[e as usize];
        if let Some(name) = ent.file.as_ref().map(|f| f.1.clone()).or_else(|| ent.done.clone()) {
            return Some(name);
        }
        if ent.count == 0 {
            return None;
        }
        // Files: a token bucket per worker, a total over all workers.
        let refill = now_ns.saturating_sub(self.refill_ns) / (1_000_000_000 / FILES_PER_S);
        if refill > 0 {
            self.tokens = (self.tokens + refill).min(FILES_BURST);
            self.refill_ns = now_ns;
        }
        let total = self.files_total.load(std::sync::atomic::Ordering::Relaxed);
        if self.tokens == 0 || total >= self.max_files {
            self.stats.files_refused += 1;
            return None;
        }
        self.seq = self.seq.wrapping_add(1);
        let id = 0x8000_0000 | ((worker & 0x7f) << 24) | (self.seq & 0x00ff_ffff);
        let name: Arc<str> = file_name(what, now_ns, worker, session_id).into();
        let open = Record { kind: Kind::Open, id, slot: 0, ts_ns: now_ns, orig_len: 0, cap_len: name.len() as u32, dropped: None };
        if !ring.push(&open, name.as_bytes()) {
            self.stats.files_refused += 1;
            return None;
        }
        self.tokens -= 1;
        self.files_total.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.stats.files += 1;
        let ent = &self.entries[e as usize];
        let (count, head) = (usize::from(ent.count), usize::from(ent.head));
        for k in 0..count {
            let j = (head + self.frames - count + k) % self.frames;
            let i = e as usize * self.frames + j;
            let m = self.kept[i];
            let dropped = match m.dropped {
                0 => None,
                d => DropReason::ALL.get(usize::from(d - 1)).copied(),
            };
            let rec = Record::frame(id, m.slot, m.ts_ns, m.orig_len as usize, usize::from(m.cap_len), dropped);
            let bytes = &self.store[i * self.snaplen..i * self.snaplen + usize::from(m.cap_len)];
            // A copy the ring refuses is missing from the file (the writer's frame count says so).
            let _ = ring.push(&rec, bytes);
        }
        let ent = &mut self.entries[e as usize];
        ent.count = 0;
        ent.file = Some((id, name.clone(), self.after));
        self.writing.push(e);
        if self.after == 0 {
            self.close(e, id, now_ns, ring);
        }
        Some(name)
    }

    /// Ends the file of entry `e`.
    fn close(&mut self, e: u32, id: u32, now_ns: u64, ring: &mut Producer) {
        let close = Record { kind: Kind::Close, id, slot: 0, ts_ns: now_ns, orig_len: 0, cap_len: 0, dropped: None };
        if !ring.push(&close, &[]) {
            // No room: the timer tries again.
            return;
        }
        let ent = &mut self.entries[e as usize];
        ent.done = ent.file.take().map(|f| f.1);
        self.writing.retain(|&w| w != e);
    }

    /// Ends the files of flows quiet for [`QUIET_NS`].
    pub fn tick(&mut self, now_ns: u64, ring: &mut Producer) {
        let mut i = 0;
        while i < self.writing.len() {
            let e = self.writing[i];
            let ent = &self.entries[e as usize];
            match &ent.file {
                Some((id, _, left)) if *left == 0 || now_ns.saturating_sub(ent.last_ns) >= QUIET_NS => {
                    let before = self.writing.len();
                    self.close(e, *id, now_ns, ring);
                    if self.writing.len() == before {
                        i += 1;
                    }
                }
                Some(_) => i += 1,
                None => {
                    self.writing.swap_remove(i);
                }
            }
        }
    }
}

/// `<what>-<UTC yyyymmddThhmmss>-w<worker>-s<session>.pcapng`: only letters, digits, `-`,
/// `_` and `.` (the event kind is sanitised).
pub fn file_name(what: &str, now_ns: u64, worker: u32, session_id: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(now_ns);
    let stamp: String = humantime::format_rfc3339_seconds(t).to_string().chars().filter(|c| c.is_ascii_digit() || *c == 'T').collect();
    let what: String = what.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).take(64).collect();
    format!("{what}-{stamp}-w{worker}-s{session_id}.pcapng")
}

#[cfg(test)]
mod tests {
    use super::super::ring::{self, Consumer};
    use super::*;
    use crate::wire::tcpflag::*;

    fn frame(sport: u16, to_server: bool) -> Vec<u8> {
        let mut f = crate::wire::tests::tcp4(&[], if to_server { SYN } else { SYN | ACK }, b"");
        f[34..36].copy_from_slice(&sport.to_be_bytes());
        if !to_server {
            crate::wire::tests::reverse4(&mut f);
        }
        crate::wire::tests::fix_checksums(&mut f);
        f
    }

    fn key(sport: u16) -> FlowKey {
        let f = frame(sport, true);
        crate::inspect::flow_of(&crate::wire::decode(&f).unwrap(), 0).unwrap().0
    }

    fn drain(c: &mut Consumer) -> Vec<(Kind, u32, u64, usize)> {
        let mut buf = Vec::new();
        let mut v = Vec::new();
        while let Some(r) = c.pop(&mut buf) {
            v.push((r.kind, r.id, r.ts_ns, buf.len()));
        }
        v
    }

    /// The last N frames go out on the event, then the next M, then the file ends; the same
    /// flow triggered again names the same file.
    #[test]
    fn kept_frames_then_the_next_ones() {
        let (mut p, mut c) = ring::ring(1 << 16);
        let mut pre = Pretrigger::new(4, 3, 64, 2, None, 100, Arc::default());
        for t in 1..=5 {
            pre.frame(0, 0, t, &frame(40000, t % 2 == 1), None, &mut p);
        }
        assert!(drain(&mut c).is_empty(), "only kept");
        let name = pre.trigger(2, key(40000), 77, "threat-sql_injection", 5_000_000_000, &mut p).unwrap();
        assert!(name.starts_with("threat-sql_injection-") && name.ends_with("-w2-s77.pcapng"), "{name}");
        let got = drain(&mut c);
        assert_eq!(got.iter().map(|g| (g.0, g.2)).collect::<Vec<_>>(), [(Kind::Open, 5_000_000_000), (Kind::Frame, 3), (Kind::Frame, 4), (Kind::Frame, 5)]);
        assert_eq!(got[1].3, 54, "whole 54-byte frames (snaplen 64)");
        assert_eq!(pre.trigger(2, key(40000), 77, "denied", 6, &mut p).as_deref(), Some(&*name));
        for t in 6..=9 {
            pre.frame(0, 0, t, &frame(40000, true), None, &mut p);
        }
        let got = drain(&mut c);
        assert_eq!(got.iter().map(|g| (g.0, g.2)).collect::<Vec<_>>(), [(Kind::Frame, 6), (Kind::Frame, 7), (Kind::Close, 7)]);
        assert_eq!(pre.trigger(2, key(40000), 77, "denied", 10, &mut p).as_deref(), Some(&*name), "one file per flow");
        assert!(drain(&mut c).is_empty());
        assert!(pre.trigger(2, key(40001), 78, "denied", 10, &mut p).is_none(), "nothing kept of that flow");
    }

    /// A quiet flow's file ends at the timer.
    #[test]
    fn a_quiet_flow_ends_its_file() {
        let (mut p, mut c) = ring::ring(1 << 16);
        let mut pre = Pretrigger::new(4, 3, 64, 100, None, 100, Arc::default());
        pre.frame(0, 0, 1, &frame(40000, true), None, &mut p);
        pre.trigger(0, key(40000), 1, "denied", 1, &mut p).unwrap();
        pre.tick(2, &mut p);
        assert_eq!(drain(&mut c).last().unwrap().0, Kind::Frame);
        pre.tick(1 + QUIET_NS, &mut p);
        assert_eq!(drain(&mut c), [(Kind::Close, 0x8000_0001, 1 + QUIET_NS, 0)]);
    }

    /// A flood of one-way flows (spoofed SYNs) churns only one-way entries: two-way flows
    /// keep their frames; with every entry two-way and busy new flows are not kept (counted).
    #[test]
    fn a_flood_cannot_push_out_two_way_flows() {
        let (mut p, _c) = ring::ring(1 << 16);
        let mut pre = Pretrigger::new(4, 2, 64, 2, None, 100, Arc::default());
        for port in [1000, 1001] {
            pre.frame(0, 0, 1, &frame(port, true), None, &mut p);
            pre.frame(0, 1, 2, &frame(port, false), None, &mut p);
        }
        for port in 2000..2400 {
            pre.frame(0, 0, 3, &frame(port, true), None, &mut p);
        }
        assert!(pre.stats().evicted >= 398, "{:?}", pre.stats());
        for port in [1000, 1001] {
            assert!(pre.trigger(0, key(port), 1, "denied", 4, &mut p).is_some(), "two-way flow {port} kept");
        }
        // Every entry two-way: new flows are refused, counted.
        let mut pre = Pretrigger::new(2, 2, 64, 2, None, 100, Arc::default());
        for port in [1000, 1001] {
            pre.frame(0, 0, 1, &frame(port, true), None, &mut p);
            pre.frame(0, 1, 2, &frame(port, false), None, &mut p);
        }
        for port in 2000..2010 {
            pre.frame(0, 0, 3, &frame(port, true), None, &mut p);
        }
        assert_eq!(pre.stats().not_kept, 10);
        // Idle two-way flows make room again.
        pre.frame(0, 0, 3 + IDLE_NS, &frame(3000, true), None, &mut p);
        assert_eq!(pre.stats().evicted, 1);
    }

    /// Files are rate-limited per worker and bounded in total; refusals are counted.
    #[test]
    fn files_are_bounded() {
        let (mut p, _c) = ring::ring(1 << 20);
        let total = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut pre = Pretrigger::new(64, 1, 64, 0, None, 1000, total.clone());
        for port in 0..40u16 {
            pre.frame(0, 0, 1, &frame(5000 + port, true), None, &mut p);
        }
        let made = (0..40u16).filter(|&port| pre.trigger(0, key(5000 + port), u64::from(port), "denied", 1, &mut p).is_some()).count();
        assert_eq!(made as u64, FILES_BURST, "the burst, then refused until tokens come back");
        assert_eq!(pre.stats().files_refused, 40 - FILES_BURST);
        let mut pre = Pretrigger::new(64, 1, 64, 0, None, 3, total.clone());
        pre.frame(0, 0, 1, &frame(6000, true), None, &mut p);
        assert!(pre.trigger(0, key(6000), 1, "denied", 1, &mut p).is_none(), "the total is reached");
    }

    #[test]
    fn file_names_stay_in_their_directory() {
        let n = file_name("threat-../../etc/x", 1_764_756_900_000_000_000, 1, 9);
        assert!(!n.contains('/') && !n.contains(".."), "{n}");
        assert_eq!(n, "threat-______etc_x-20251203T101500-w1-s9.pcapng");
    }
}
