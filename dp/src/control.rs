//! The control socket server and the report hub.
//!
//! Protocol: see the `warden-control` crate (newline-delimited JSON, one typed [`Request`] per
//! line, one [`Response`] per request). A line that does not parse, or is longer than
//! [`MAX_LINE`] bytes, gets an error response and the connection stays usable; nothing a client
//! sends can stop the daemon. Requests are executed by the control loop on the main thread
//! ([`crate::daemon`]); `subscribe` turns the connection into a report stream fed by the
//! [`Hub`]. Who may connect, with which role, how many at once and for how long is decided by
//! [`crate::access`].

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam::channel::{Receiver, RecvTimeoutError};
use warden_control::{
    check_version, ConnectionRecord, Event, Hello, Lost, Reply, ReportBatch, ReportStream, Request, Response,
    SeqEvent, Subscribed, MAX_BATCH_RECORDS, PROTOCOL_VERSION,
};

use crate::access;
use crate::daemon::{CtlMsg, Names};
use crate::record::{rfc3339, to_record};
use crate::threat::event::{Merger, ThreatHit, MERGE_INTERVAL_NS};
use crate::worker::WorkerReport;

/// (client, server, ip_proto, server_port, app) of a connection seen in learn mode.
type LearnKey = (std::net::IpAddr, std::net::IpAddr, u8, u16, String);

/// Most distinct learned connections kept.
pub const MAX_LEARNED: usize = 100_000;

/// Longest request line accepted (bytes, without the newline).
pub const MAX_LINE: usize = 64 * 1024;

/// Fewest connection records the reporter holds between two published batches
/// ([`Hub::with_pending_max`]): a record of a session not already pending beyond the bound is
/// dropped and counted as overflow, so a flood of short sessions (each ending with a final
/// record) cannot grow the reporter's memory.
pub const MAX_PENDING: usize = 65536;

/// Per-message overhead counted against the buffer bound besides the line's bytes (the
/// [`Msg`] entry and its `Arc` header), bytes.
const MSG_OVERHEAD: usize = 64;

/// Evicted messages whose cumulative counts the stream remembers, so a `lost` announced for a
/// subscriber (or a `since`) at most this many messages behind is exact (16 bytes each).
pub const MAX_GHOSTS: usize = 65536;

/// One published message of the report stream: serialized once, shared by every subscriber.
struct Msg {
    seq: u64,
    /// The whole response line, newline included.
    line: Arc<[u8]>,
    /// Cumulative (records, events) published through this message.
    cum: (u64, u64),
}

/// The report stream: one sequence of messages (batches and events) kept up to a bound in
/// bytes, read by each subscriber at its own cursor.
struct Stream {
    epoch: u64,
    msgs: VecDeque<Msg>,
    bytes: usize,
    limit: usize,
    /// Sequence number of the next message published (the first is 1).
    next_seq: u64,
    /// Cumulative (records, events) through each of the last evicted messages, oldest first;
    /// the last entry is the most recently evicted one.
    ghosts: VecDeque<(u64, u64)>,
    /// Cumulative counts before the oldest ghost.
    ghost_base: (u64, u64),
    /// Cumulative counts through the last published message.
    cum: (u64, u64),
    /// Highest sequence number any subscriber took.
    delivered_high: u64,
    /// Subscriber id → next sequence number it reads.
    subs: HashMap<u64, u64>,
    next_sub: u64,
    closed: bool,
    unread_dropped: (u64, u64),
    lost: (u64, u64),
}

impl Stream {
    fn oldest(&self) -> u64 {
        self.msgs.front().map_or(self.next_seq, |m| m.seq)
    }

    /// Cumulative (records, events) through `seq` (< oldest held), and whether that is a
    /// bound rather than exact (`seq` older than the ghosts remember).
    fn cum_evicted(&self, seq: u64) -> ((u64, u64), bool) {
        if seq == 0 {
            return ((0, 0), false);
        }
        let last_evicted = self.oldest() - 1;
        let first_ghost = last_evicted + 1 - self.ghosts.len() as u64;
        if seq >= first_ghost && seq <= last_evicted {
            return (self.ghosts[(seq - first_ghost) as usize], false);
        }
        (self.ghost_base, true)
    }

    fn push(&mut self, line: Vec<u8>, records: u64, events: u64) {
        self.cum = (self.cum.0 + records, self.cum.1 + events);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.bytes += line.len() + MSG_OVERHEAD;
        self.msgs.push_back(Msg { seq, line: line.into(), cum: self.cum });
        while self.bytes > self.limit {
            let Some(m) = self.msgs.pop_front() else { break };
            self.bytes -= m.line.len() + MSG_OVERHEAD;
            let before = self.ghosts.back().copied().unwrap_or(self.ghost_base);
            if m.seq > self.delivered_high {
                self.unread_dropped.0 += m.cum.0 - before.0;
                self.unread_dropped.1 += m.cum.1 - before.1;
            }
            self.ghosts.push_back(m.cum);
            if self.ghosts.len() > MAX_GHOSTS {
                if let Some(g) = self.ghosts.pop_front() {
                    self.ghost_base = g;
                }
            }
        }
    }

    /// The next thing subscriber `id` reads at `cursor`: a [`Lost`] when messages from its
    /// cursor on were dropped, else the next message; `None` when there is none yet.
    fn next_for(&mut self, id: u64, cursor: &mut u64) -> Option<Arc<[u8]>> {
        let oldest = self.oldest();
        if *cursor < oldest {
            let (before, approximate) = self.cum_evicted(*cursor - 1);
            let (through, _) = self.cum_evicted(oldest - 1);
            let events = through.1 - before.1;
            let lost = Lost {
                from_seq: *cursor,
                to_seq: oldest - 1,
                records: through.0 - before.0,
                events,
                batches: (oldest - *cursor).saturating_sub(events),
                reason: "buffer_full".into(),
                approximate,
            };
            self.lost.0 += lost.records;
            self.lost.1 += lost.events;
            *cursor = oldest;
            self.subs.insert(id, *cursor);
            return Some(line_of(&Response::ok(Reply::Lost(lost))).into());
        }
        let m = self.msgs.get((*cursor - oldest) as usize)?;
        let line = m.line.clone();
        self.delivered_high = self.delivered_high.max(m.seq);
        *cursor += 1;
        self.subs.insert(id, *cursor);
        Some(line)
    }
}

/// A response as one line, newline included.
fn line_of(r: &Response) -> Vec<u8> {
    let mut line = serde_json::to_vec(r).unwrap_or_else(|_| br#"{"ok":false,"error":"internal"}"#.to_vec());
    line.push(b'\n');
    line
}

/// A subscription of the report stream ([`Hub::subscribe`]); unregistered when dropped.
pub struct Subscription<'a> {
    hub: &'a Hub,
    id: u64,
    cursor: u64,
    /// What the subscribe request is answered with.
    pub info: Subscribed,
    restarted: Option<Lost>,
}

impl Subscription<'_> {
    /// Blocks for the next line to write (a message of the stream, or a `lost` in place of
    /// messages dropped before this subscriber read them); `None` once the hub is closed and
    /// everything published was read.
    pub fn next_line(&mut self) -> Option<Arc<[u8]>> {
        if let Some(l) = self.restarted.take() {
            return Some(line_of(&Response::ok(Reply::Lost(l))).into());
        }
        let Ok(mut st) = self.hub.stream.lock() else { return None };
        loop {
            if let Some(line) = st.next_for(self.id, &mut self.cursor) {
                return Some(line);
            }
            if st.closed {
                return None;
            }
            st = match self.hub.more.wait_timeout(st, Duration::from_secs(1)) {
                Ok((g, _)) => g,
                Err(_) => return None,
            };
        }
    }
}

impl Drop for Subscription<'_> {
    fn drop(&mut self) {
        if let Ok(mut st) = self.hub.stream.lock() {
            st.subs.remove(&self.id);
        }
    }
}

/// Report fan-out: collects workers' snapshots and publishes one batch per interval (split in
/// batches of at most [`MAX_BATCH_RECORDS`] records) and every event into the report stream:
/// one sequence of serialized messages shared by all subscribers, kept up to a bound in bytes
/// whether or not anyone is subscribed; a subscriber behind what is kept gets a `lost` message
/// with the counts, and every loss is counted in `status`.
pub struct Hub {
    names: Mutex<Names>,
    learned: Mutex<std::collections::BTreeSet<LearnKey>>,
    /// Learned connections not kept because the set was full.
    pub learned_overflow: AtomicU64,
    stream: Mutex<Stream>,
    more: Condvar,
    overflow: AtomicU64,
    interval_s: u64,
    pending_max: usize,
    /// Collectors every record is also offered to ([`crate::export`]).
    export: crate::export::Exporters,
    /// Detections the published threat events stand for, by [`crate::detect::ThreatId`]
    /// (metrics, `wardenctl threats`).
    threats: [AtomicU64; crate::detect::ThreatId::ALL.len()],
    /// Threat detections the reporter's merger lost to a full queue.
    threat_overflow: AtomicU64,
    /// Discovered workloads ([`crate::identity`]): records name the ends' identities.
    identities: Arc<crate::identity::Registry>,
}

impl Hub {
    /// A hub keeping at most `buffer_bytes` of published messages (serialized JSON lines, plus
    /// [`MSG_OVERHEAD`] each), publishing every `interval_s` s.
    pub fn new(buffer_bytes: usize, interval_s: u64) -> Self {
        let epoch = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1);
        Hub {
            names: Mutex::new(HashMap::new()),
            learned: Mutex::new(std::collections::BTreeSet::new()),
            learned_overflow: AtomicU64::new(0),
            stream: Mutex::new(Stream {
                epoch,
                msgs: VecDeque::new(),
                bytes: 0,
                limit: buffer_bytes,
                next_seq: 1,
                ghosts: VecDeque::new(),
                ghost_base: (0, 0),
                cum: (0, 0),
                delivered_high: 0,
                subs: HashMap::new(),
                next_sub: 0,
                closed: false,
                unread_dropped: (0, 0),
                lost: (0, 0),
            }),
            more: Condvar::new(),
            overflow: AtomicU64::new(0),
            interval_s,
            pending_max: MAX_PENDING,
            export: crate::export::Exporters::default(),
            threats: Default::default(),
            threat_overflow: AtomicU64::new(0),
            identities: Arc::default(),
        }
    }

    /// Names the ends of records from `registry` (shared with the daemon, which updates it
    /// as workloads are attached and detached).
    pub fn with_identities(mut self, registry: Arc<crate::identity::Registry>) -> Self {
        self.identities = registry;
        self
    }

    /// The registry records' identities come from.
    pub fn identities(&self) -> &Arc<crate::identity::Registry> {
        &self.identities
    }

    /// The connection record of `snap` ([`to_record`]) with the interface names and the
    /// ends' identities ([`crate::identity::Registry::annotate_ends`]). Reporter thread and
    /// `list_sessions` only.
    pub fn record(&self, snap: &crate::session::SessionSnapshot) -> ConnectionRecord {
        let mut r = to_record(snap, |slot| self.name(slot));
        let s = &snap.session;
        self.identities.annotate_ends(&mut r, s.client_end().0.ip(), s.server_end().0.ip());
        r
    }

    /// The record of a threat event whose session snapshot is not at hand
    /// ([`crate::record::hit_record`]), with the ends' identities.
    fn hit_record(&self, e: &ThreatHit) -> ConnectionRecord {
        let mut r = crate::record::hit_record(e);
        self.identities.annotate_ends(&mut r, e.client.ip(), e.server.ip());
        r
    }

    /// This daemon run's epoch ([`Subscribed::epoch`]).
    pub fn epoch(&self) -> u64 {
        self.stream.lock().map(|s| s.epoch).unwrap_or(0)
    }

    /// Offers every record to `export`'s collectors too (never blocking the reporter).
    pub fn with_export(mut self, export: crate::export::Exporters) -> Self {
        self.export = export;
        self
    }

    /// The collectors records are exported to.
    pub fn export(&self) -> &crate::export::Exporters {
        &self.export
    }

    /// Holds at most `max` records between two published batches (at least [`MAX_PENDING`]);
    /// the daemon passes the session tables' total size, so every live session can be
    /// reported each interval and a flood's final records beyond it are counted, not kept.
    pub fn with_pending_max(mut self, max: usize) -> Self {
        self.pending_max = max.max(MAX_PENDING);
        self
    }

    /// The bound set by [`Self::with_pending_max`].
    pub fn pending_max(&self) -> usize {
        self.pending_max
    }

    /// Names interface slot `slot`.
    pub fn set_name(&self, slot: u16, name: &str) {
        if let Ok(mut n) = self.names.lock() {
            n.insert(slot, name.to_string());
        }
    }

    /// The name of interface slot `slot` (`"?"` when unknown).
    pub fn name(&self, slot: u16) -> String {
        self.names.lock().ok().and_then(|n| n.get(&slot).cloned()).unwrap_or_else(|| "?".into())
    }

    /// Remembers `r` when its verdict is `learned` and its app is decided (the learned policy is
    /// built from these).
    fn learn(&self, r: &ConnectionRecord) {
        if r.verdict.as_deref() != Some("learned") || (r.inspection.as_deref() == Some("active") && !r.closed) {
            return;
        }
        let (Ok(c), Ok(s)) = (r.client_ip.parse(), r.server_ip.parse()) else {
            return;
        };
        let Ok(mut set) = self.learned.lock() else { return };
        let key = (c, s, r.ip_proto, r.server_port, r.app.clone());
        if set.len() >= MAX_LEARNED && !set.contains(&key) {
            self.learned_overflow.fetch_add(1, Ordering::Relaxed);
            return;
        }
        set.insert(key);
    }

    /// The connections learned so far.
    pub fn learned(&self) -> Vec<crate::policy::LearnedConn> {
        let Ok(set) = self.learned.lock() else {
            return Vec::new();
        };
        set.iter()
            .map(|(c, s, p, port, app)| crate::policy::LearnedConn {
                client: *c,
                server: *s,
                ip_proto: *p,
                server_port: *port,
                app: crate::app::App::from_name(app).unwrap_or_default(),
            })
            .collect()
    }

    /// (subscribers, records the reporter could not hold (beyond the pending bound per
    /// interval), messages published and not yet read summed over subscribers).
    pub fn health(&self) -> (usize, u64, usize) {
        let (n, queued) = self
            .stream
            .lock()
            .map(|s| (s.subs.len(), s.subs.values().map(|c| s.next_seq.saturating_sub(*c) as usize).sum()))
            .unwrap_or((0, 0));
        (n, self.overflow.load(Ordering::Relaxed), queued)
    }

    /// The report stream's state for `status`.
    pub fn stream_status(&self) -> ReportStream {
        let Ok(s) = self.stream.lock() else { return ReportStream::default() };
        ReportStream {
            epoch: s.epoch,
            last_seq: s.next_seq - 1,
            oldest_seq: s.oldest(),
            held: s.msgs.len(),
            held_bytes: s.bytes,
            limit_bytes: s.limit,
            records: s.cum.0,
            events: s.cum.1,
            unread_dropped_records: s.unread_dropped.0,
            unread_dropped_events: s.unread_dropped.1,
            lost_records: s.lost.0,
            lost_events: s.lost.1,
        }
    }

    /// Sessions whose threat event the reporter sent, by threat kind (name, count), counted
    /// whether or not a subscriber was connected.
    pub fn threats(&self) -> Vec<(&'static str, u64)> {
        crate::detect::ThreatId::ALL
            .iter()
            .zip(&self.threats)
            .map(|(t, n)| (t.as_str(), n.load(Ordering::Relaxed)))
            .collect()
    }

    /// Merges the workers' threat events (`hits`) and publishes what comes out: an event
    /// with the record of its session when the worker sent a snapshot with it.
    fn threat_events(
        &self,
        merge: &mut Merger,
        hits: Vec<(ThreatHit, Option<crate::session::SessionSnapshot>)>,
        captures: &[(u64, Arc<str>)],
    ) {
        let now = wall_ns();
        let mut out = Vec::new();
        for (h, snap) in hits {
            merge.add(&h, now);
            merge.drain_upto(&mut out, usize::MAX);
            let events = out
                .drain(..)
                .map(|e| {
                    let same = e.session == h.session && e.first_ns == h.first_ns;
                    let mut connection = match (&snap, same) {
                        (Some(s), true) => self.record(s),
                        _ => self.hit_record(&e),
                    };
                    connection.capture_file = e
                        .session
                        .and_then(|(_, id)| captures.iter().find(|(s, _)| *s == id))
                        .map(|(_, n)| n.to_string());
                    self.threat_event(&e, connection)
                })
                .collect();
            self.publish_events(events);
        }
        self.threat_overflow.store(merge.stats.overflow, Ordering::Relaxed);
    }

    /// Publishes merged threat events whose interval is over (all pending when `all`).
    fn flush_threats(&self, merge: &mut Merger, all: bool) {
        let now = wall_ns();
        if all {
            merge.flush_all(now, true);
        } else {
            merge.flush(now);
        }
        let mut out = Vec::new();
        merge.drain_upto(&mut out, usize::MAX);
        if !out.is_empty() {
            let events = out.iter().map(|e| self.threat_event(e, self.hit_record(e))).collect();
            self.publish_events(events);
        }
        self.threat_overflow.store(merge.stats.overflow, Ordering::Relaxed);
    }

    /// The event of merged detection(s) `e`, counted by kind.
    fn threat_event(&self, e: &ThreatHit, connection: ConnectionRecord) -> Event {
        self.threats[e.id as usize].fetch_add(u64::from(e.count), Ordering::Relaxed);
        Event::Threat { threat: crate::record::threat_record(e), connection }
    }

    /// Registers a subscriber reading after `since` of run `epoch` ([`Request::Subscribe`]).
    pub fn subscribe(&self, since: Option<u64>, epoch: Option<u64>) -> Subscription<'_> {
        let mut st = match self.stream.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let last = st.next_seq - 1;
        let restarted = since.is_some_and(|s| s > last) || epoch.is_some_and(|e| e != st.epoch);
        let cursor = match since {
            None => st.next_seq,
            Some(_) if restarted => 1,
            Some(s) => s + 1,
        };
        let id = st.next_sub;
        st.next_sub += 1;
        st.subs.insert(id, cursor);
        let info = Subscribed {
            interval_s: self.interval_s,
            epoch: st.epoch,
            first_seq: cursor.max(st.oldest()),
            last_seq: last,
        };
        let restarted = restarted.then(|| Lost { reason: "restarted".into(), approximate: true, ..Default::default() });
        drop(st);
        Subscription { hub: self, id, cursor, info, restarted }
    }

    /// Publishes the records of one interval as batches of at most [`MAX_BATCH_RECORDS`] (one
    /// empty batch when there are none: subscribers see the interval pass). `dropped`: records
    /// of the interval not held (sent in the first batch).
    fn publish(&self, records: &[ConnectionRecord], dropped: u64) {
        let time = rfc3339(
            SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0),
        );
        let chunks: Vec<&[ConnectionRecord]> =
            if records.is_empty() { vec![&[]] } else { records.chunks(MAX_BATCH_RECORDS).collect() };
        let n = chunks.len();
        for (i, chunk) in chunks.into_iter().enumerate() {
            self.push(chunk.len() as u64, 0, |seq| {
                Reply::Report(ReportBatch {
                    seq,
                    time: time.clone(),
                    connections: chunk.to_vec(),
                    dropped: if i == 0 { dropped } else { 0 },
                    more: i + 1 < n,
                })
            });
        }
    }

    /// Publishes `events`, one message each.
    fn publish_events(&self, events: Vec<Event>) {
        for event in events {
            self.push(0, 1, |seq| Reply::Event(SeqEvent { seq, event }));
        }
    }

    /// Serializes the message `make(seq)` once, outside the lock (the reporter thread is the
    /// only publisher, so the sequence number read first is the one it gets), and appends it
    /// to the stream.
    fn push(&self, records: u64, events: u64, make: impl FnOnce(u64) -> Reply) {
        let Ok(seq) = self.stream.lock().map(|s| s.next_seq) else { return };
        let line = line_of(&Response::ok(make(seq)));
        let Ok(mut st) = self.stream.lock() else { return };
        debug_assert_eq!(st.next_seq, seq, "one publisher");
        st.push(line, records, events);
        drop(st);
        self.more.notify_all();
    }

    /// Ends every subscription once it has read what was published.
    fn close(&self) {
        if let Ok(mut st) = self.stream.lock() {
            st.closed = true;
        }
        self.more.notify_all();
    }

    /// The reporter thread: merges workers' snapshots (latest per session wins) and publishes a
    /// batch every `interval`, until every worker has exited (then a final batch). Before each
    /// batch, the threat events the workers sent, merged once more across workers
    /// ([`crate::threat::event`]: at most one per (threat, client, server) per 10 s).
    pub fn run_reporter(&self, rx: Receiver<WorkerReport>, interval: Duration) {
        let mut pending: Vec<ConnectionRecord> = Vec::new();
        let mut index: HashMap<(usize, u64), usize> = HashMap::new();
        let mut merge = Merger::new(THREAT_MERGE_SLOTS, THREAT_MERGE_QUEUE, MERGE_INTERVAL_NS);
        let mut next = Instant::now() + interval;
        // Records of this interval not held (beyond the pending bound).
        let mut dropped = 0u64;
        loop {
            let wait = next.saturating_duration_since(Instant::now());
            let received = rx.recv_timeout(wait);
            self.flush_threats(&mut merge, false);
            match received {
                Ok(rep) if rep.events => {
                    let file = |id: u64| rep.captures.iter().find(|(s, _)| *s == id).map(|(_, n)| n.to_string());
                    self.threat_events(&mut merge, rep.threats, &rep.captures);
                    let events = rep
                        .snaps
                        .iter()
                        .map(|s| {
                            let mut connection = self.record(s);
                            connection.capture_file = file(s.session.id);
                            if connection.exception_action.is_some() {
                                Event::Exception { connection }
                            } else if connection.verdict.as_deref() == Some("denied") {
                                Event::Denied { connection }
                            } else {
                                Event::Violation { connection }
                            }
                        })
                        .collect();
                    self.publish_events(events);
                    continue;
                }
                Ok(rep) => {
                    for s in &rep.snaps {
                        let slot = index.get(&(rep.worker, s.session.id)).copied();
                        if slot.is_none() && pending.len() >= self.pending_max {
                            self.overflow.fetch_add(1, Ordering::Relaxed);
                            dropped += 1;
                            continue;
                        }
                        let rec = self.record(s);
                        self.learn(&rec);
                        self.export.offer(rep.worker, s, &rec);
                        match slot {
                            Some(i) => pending[i] = rec,
                            None => {
                                index.insert((rep.worker, s.session.id), pending.len());
                                pending.push(rec);
                            }
                        }
                    }
                    continue;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.flush_threats(&mut merge, true);
                    self.publish(&pending, dropped);
                    pending.clear();
                    // Give subscriber connections a moment to write the final batch.
                    let deadline = Instant::now() + Duration::from_secs(2);
                    while Instant::now() < deadline && self.health().2 > 0 {
                        thread::sleep(Duration::from_millis(20));
                    }
                    self.close();
                    return;
                }
            }
            index.clear();
            self.publish(&pending, dropped);
            dropped = 0;
            // Kept, with its capacity: the reporter reuses the same memory every interval.
            pending.clear();
            next = Instant::now() + interval;
        }
    }
}

/// Keys the reporter merges threat events of at once (across workers).
const THREAT_MERGE_SLOTS: usize = 4096;
/// Threat events the reporter's merger queues before publishing (it publishes after every
/// report it takes, so this is never reached in practice; beyond it events are counted lost).
const THREAT_MERGE_QUEUE: usize = 65_536;

/// Wall clock, Unix ns (the workers' packet clock on the live path).
fn wall_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// Creates the socket at `path`: its directory created or checked ([`access::check_dir`]),
/// the socket mode 0600 (root only), or 0666 when `open` (other users are listed in
/// `[control]`; each connection's peer credentials decide, [`access`]). A stale socket file is
/// replaced; a live one (another Warden answering) is an error.
///
/// # Errors
/// A message naming the path.
pub fn bind(path: &Path, open: bool) -> Result<UnixListener, String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        access::check_dir(dir)?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(format!("{}: another Warden is already running", path.display()));
        }
        std::fs::remove_file(path).map_err(|e| format!("remove stale {}: {e}", path.display()))?;
    }
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let l = UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let l = l.map_err(|e| format!("bind {}: {e}", path.display()))?;
    let mode = if open { 0o666 } else { 0o600 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {}: {e}", path.display()))?;
    Ok(l)
}

/// Accepts connections forever, one thread each, admitted by `gate` (peer credentials, roles,
/// the connection cap with its admin reserve).
pub fn serve(listener: UnixListener, ctl: mpsc::Sender<CtlMsg>, hub: Arc<Hub>, gate: Arc<access::Gate>) {
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let admitted = access::peer(&stream)
            .map_err(|e| format!("cannot read peer credentials: {e}"))
            .and_then(|p| gate.admit(p, &access::groups(&p)));
        let slot = match admitted {
            Ok(s) => s,
            Err(msg) => {
                let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
                let _ = write_response(&mut stream, &Response::err(msg));
                continue;
            }
        };
        let timeout = Duration::from_secs(gate.config().read_timeout.max(1));
        let (ctl, hub) = (ctl.clone(), hub.clone());
        let spawned = thread::Builder::new().name("warden-conn".into()).spawn(move || {
            connection(stream, &ctl, &hub, &slot, timeout);
            drop(slot);
        });
        if spawned.is_err() {
            tracing::warn!("could not start a control connection thread");
        }
    }
}

fn write_response(w: &mut impl Write, r: &Response) -> std::io::Result<()> {
    w.write_all(&line_of(r))
}

/// Reads one line of at most [`MAX_LINE`] bytes. `Ok(None)` at end of stream; `Err(())` for an
/// over-long line (the rest of it is skipped).
fn read_line(r: &mut impl BufRead, buf: &mut Vec<u8>) -> std::io::Result<Option<Result<(), ()>>> {
    buf.clear();
    let n = r.by_ref().take(MAX_LINE as u64 + 1).read_until(b'\n', buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        return Ok(Some(Ok(())));
    }
    if buf.len() <= MAX_LINE {
        // Last line without a newline.
        return Ok(Some(Ok(())));
    }
    // Skip to the end of the over-long line.
    let mut sink = Vec::new();
    loop {
        sink.clear();
        let n = r.by_ref().take(MAX_LINE as u64).read_until(b'\n', &mut sink)?;
        if n == 0 || sink.last() == Some(&b'\n') {
            break;
        }
    }
    Ok(Some(Err(())))
}

fn connection(stream: UnixStream, ctl: &mpsc::Sender<CtlMsg>, hub: &Hub, slot: &access::Slot, timeout: Duration) {
    let Ok(read_half) = stream.try_clone() else { return };
    let mut reader = BufReader::new(access::Deadline::new(read_half, timeout));
    let mut writer = stream;
    let _ = writer.set_write_timeout(Some(Duration::from_secs(30)));
    let mut buf = Vec::new();
    loop {
        reader.get_mut().arm();
        let line = match read_line(&mut reader, &mut buf) {
            Ok(None) => return,
            Err(e) => {
                if e.kind() == std::io::ErrorKind::TimedOut || e.kind() == std::io::ErrorKind::WouldBlock {
                    let msg = format!("no complete request within {} s: closing the connection", timeout.as_secs());
                    let _ = write_response(&mut writer, &Response::err(msg));
                }
                return;
            }
            Ok(Some(Err(()))) => {
                let msg = format!("request line longer than {MAX_LINE} bytes");
                if write_response(&mut writer, &Response::err(msg)).is_err() {
                    return;
                }
                continue;
            }
            Ok(Some(Ok(()))) => &buf,
        };
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let req: Request = match serde_json::from_slice(line) {
            Ok(r) => r,
            Err(e) => {
                if write_response(&mut writer, &Response::err(format!("invalid request: {e}"))).is_err() {
                    return;
                }
                continue;
            }
        };
        if slot.role == access::Role::Read && req.needs_admin() {
            let msg = format!(
                "permission denied: {} needs the admin role; {} is read-only (warden.toml [control] admin_uids, admin_gids)",
                req.name(),
                slot.peer
            );
            if write_response(&mut writer, &Response::err(msg)).is_err() {
                return;
            }
            continue;
        }
        if let Request::Subscribe { since, epoch } = req {
            stream_reports(&mut writer, hub, since, epoch);
            return;
        }
        if let Request::CaptureStart { spec } = &req {
            if spec.stream {
                stream_capture(&mut writer, ctl, spec.clone());
                return;
            }
        }
        if let Request::Hello { version, .. } = &req {
            let resp = match check_version(PROTOCOL_VERSION, version, "client") {
                Ok(()) => Response::ok(Reply::Hello(Hello {
                    version: PROTOCOL_VERSION.into(),
                    server: format!("warden {}", env!("CARGO_PKG_VERSION")),
                    epoch: hub.epoch(),
                })),
                Err(e) => Response::err(e),
            };
            if write_response(&mut writer, &resp).is_err() {
                return;
            }
            continue;
        }
        let (tx, rx) = mpsc::channel();
        if ctl.send(CtlMsg::Request(req, tx)).is_err() {
            let _ = write_response(&mut writer, &Response::err("warden is stopping"));
            return;
        }
        let resp = rx.recv().unwrap_or_else(|_| Response::err("warden is stopping"));
        if write_response(&mut writer, &resp).is_err() {
            return;
        }
    }
}

/// A streamed capture ([`Request::CaptureStart`] with `stream`): the capture's description,
/// its pcapng bytes as `capture_data` lines (base64), then `capture_end`. A write that fails
/// (the client went away) drops the receiver, which ends the capture (`client_gone`).
fn stream_capture(writer: &mut UnixStream, ctl: &mpsc::Sender<CtlMsg>, spec: warden_control::CaptureSpec) {
    use base64::Engine as _;
    let (tx, rx) = mpsc::channel();
    if ctl.send(CtlMsg::CaptureStream(spec, tx)).is_err() {
        let _ = write_response(writer, &Response::err("warden is stopping"));
        return;
    }
    let (info, data) = match rx.recv() {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => {
            let _ = write_response(writer, &Response::err(e));
            return;
        }
        Err(_) => {
            let _ = write_response(writer, &Response::err("warden is stopping"));
            return;
        }
    };
    let id = info.id.unwrap_or(0);
    if write_response(writer, &Response::ok(Reply::Capture(info.clone()))).is_err() {
        return;
    }
    while let Ok(m) = data.recv() {
        let bytes = match m {
            crate::capture::writer::StreamMsg::Data(b) => b,
            crate::capture::writer::StreamMsg::End => break,
        };
        let chunk = warden_control::CaptureData { id, data: base64::engine::general_purpose::STANDARD.encode(bytes) };
        if write_response(writer, &Response::ok(Reply::CaptureData(chunk))).is_err() {
            return;
        }
    }
    // The final counts: the capture's entry as `capture_list` shows it.
    let mut end = info;
    let (tx, rx) = mpsc::channel();
    if ctl.send(CtlMsg::Request(Request::CaptureList {}, tx)).is_ok() {
        if let Ok(Response { reply: Some(Reply::Captures(list)), .. }) = rx.recv_timeout(Duration::from_secs(5)) {
            if let Some(c) = list.into_iter().find(|c| c.id == Some(id)) {
                end = c;
            }
        }
    }
    let _ = write_response(writer, &Response::ok(Reply::CaptureEnd(end)));
}

fn stream_reports(writer: &mut UnixStream, hub: &Hub, since: Option<u64>, epoch: Option<u64>) {
    let mut sub = hub.subscribe(since, epoch);
    if write_response(writer, &Response::ok(Reply::Subscribed(sub.info.clone()))).is_err() {
        return;
    }
    while let Some(line) = sub.next_line() {
        if writer.write_all(&line).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_refused_and_skipped() {
        let mut input = vec![b'x'; MAX_LINE + 10];
        input.push(b'\n');
        input.extend_from_slice(b"{\"cmd\":\"status\"}\n");
        let mut r = BufReader::new(&input[..]);
        let mut buf = Vec::new();
        assert_eq!(read_line(&mut r, &mut buf).unwrap(), Some(Err(())));
        assert_eq!(read_line(&mut r, &mut buf).unwrap(), Some(Ok(())));
        assert_eq!(buf, b"{\"cmd\":\"status\"}");
        assert_eq!(read_line(&mut r, &mut buf).unwrap(), None);
    }

    /// The next line of `sub` as a parsed reply (the hub is never closed in these tests, so a
    /// line must be there).
    fn next_reply(sub: &mut Subscription<'_>) -> Reply {
        let line = sub.next_line().expect("a line");
        let r: Response = serde_json::from_slice(&line).unwrap();
        r.reply.unwrap()
    }

    fn rec(port: u16) -> ConnectionRecord {
        ConnectionRecord { client_ip: "198.18.0.1".into(), client_port: port, ..Default::default() }
    }

    /// Bytes one batch of `rec(p)` records takes in the stream.
    fn batch_bytes(hub: &Hub, n: usize) -> usize {
        let before = hub.stream_status().held_bytes;
        hub.publish(&vec![rec(1); n], 0);
        hub.stream_status().held_bytes - before
    }

    #[test]
    fn a_subscriber_resumes_after_since_in_order() {
        let hub = Hub::new(1 << 20, 5);
        // Published while nobody is subscribed: kept.
        hub.publish(&[rec(1), rec(2)], 0);
        hub.publish_events(vec![Event::Denied { connection: rec(3) }]);
        hub.publish(&[rec(4)], 0);
        let mut all = hub.subscribe(Some(0), None);
        assert_eq!(all.info.first_seq, 1);
        assert_eq!(all.info.last_seq, 3);
        let seqs: Vec<u64> = (0..3)
            .map(|_| match next_reply(&mut all) {
                Reply::Report(b) => b.seq,
                Reply::Event(e) => e.seq,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(seqs, [1, 2, 3]);
        // Resuming after 2: only 3, then what comes next.
        let mut resumed = hub.subscribe(Some(2), Some(hub.epoch()));
        assert_eq!(resumed.info.first_seq, 3);
        assert!(matches!(next_reply(&mut resumed), Reply::Report(b) if b.seq == 3 && b.connections[0].client_port == 4));
        // No since: from now on.
        let mut live = hub.subscribe(None, None);
        assert_eq!(live.info.first_seq, 4);
        hub.publish(&[rec(5)], 0);
        assert!(matches!(next_reply(&mut live), Reply::Report(b) if b.seq == 4));
        assert!(matches!(next_reply(&mut resumed), Reply::Report(b) if b.seq == 4));
        assert_eq!(hub.health(), (3, 0, 1), "`all` has not read seq 4");
        let st = hub.stream_status();
        assert_eq!((st.last_seq, st.oldest_seq, st.held, st.records, st.events), (4, 1, 4, 4, 1));
        drop(all);
        assert_eq!(hub.health().0, 2);
    }

    #[test]
    fn the_stream_is_bounded_in_bytes_and_losses_are_announced() {
        let one = batch_bytes(&Hub::new(1 << 20, 5), 3);
        let ev = {
            let h = Hub::new(1 << 20, 5);
            h.publish_events(vec![Event::Violation { connection: rec(9) }]);
            h.stream_status().held_bytes
        };
        assert!(ev < one);
        // Room for four batches of three records, not for four and the event.
        let hub = Hub::new(one * 4 + ev - 1, 5);
        for _ in 0..10 {
            hub.publish(&[rec(1), rec(2), rec(3)], 0);
        }
        hub.publish_events(vec![Event::Violation { connection: rec(9) }]);
        let st = hub.stream_status();
        assert!(st.held_bytes <= st.limit_bytes, "{st:?}");
        // The event is smaller than a batch: it pushed out one batch.
        assert_eq!(st.oldest_seq, 8);
        assert_eq!(st.last_seq, 11);
        assert_eq!((st.unread_dropped_records, st.unread_dropped_events), (21, 0));
        // A subscriber that last saw seq 2 lost 3..=7: five batches of three records.
        let mut sub = hub.subscribe(Some(2), None);
        assert_eq!(sub.info.first_seq, 8);
        let Reply::Lost(l) = next_reply(&mut sub) else { panic!("no lost") };
        assert_eq!(
            l,
            Lost { from_seq: 3, to_seq: 7, records: 15, events: 0, batches: 5, reason: "buffer_full".into(), approximate: false }
        );
        let seqs: Vec<u64> = (0..4)
            .map(|_| match next_reply(&mut sub) {
                Reply::Report(b) => b.seq,
                Reply::Event(e) => e.seq,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(seqs, [8, 9, 10, 11]);
        assert_eq!((hub.stream_status().lost_records, hub.stream_status().lost_events), (15, 0));

        // A slow subscriber: it read nothing while events and batches went past the bound.
        let mut slow = hub.subscribe(None, None);
        hub.publish_events(vec![Event::Denied { connection: rec(1) }, Event::Denied { connection: rec(2) }]);
        for _ in 0..6 {
            hub.publish(&[rec(1), rec(2), rec(3)], 0);
        }
        let Reply::Lost(l) = next_reply(&mut slow) else { panic!("no lost") };
        assert_eq!((l.from_seq, l.to_seq, l.records, l.events, l.batches), (12, 15, 6, 2, 2));
        assert!(matches!(next_reply(&mut slow), Reply::Report(b) if b.seq == 16));
        // Those were read by nobody before they were dropped: counted as unread too.
        assert_eq!(hub.stream_status().unread_dropped_events, 2);
    }

    #[test]
    fn a_since_of_another_run_is_announced() {
        let hub = Hub::new(1 << 20, 5);
        hub.publish(&[rec(1)], 0);
        let mut sub = hub.subscribe(Some(7), Some(hub.epoch() + 1));
        assert_eq!(sub.info.first_seq, 1);
        assert!(matches!(next_reply(&mut sub), Reply::Lost(l) if l.reason == "restarted"));
        assert!(matches!(next_reply(&mut sub), Reply::Report(b) if b.seq == 1));
        // Beyond the last published number with no epoch: also another run.
        let mut sub = hub.subscribe(Some(100), None);
        assert!(matches!(next_reply(&mut sub), Reply::Lost(l) if l.reason == "restarted"));
    }

    /// A `since` older than the remembered counts gets counts that are lower bounds, marked.
    #[test]
    fn lost_counts_older_than_the_ghosts_are_marked_approximate() {
        let hub = Hub::new(4096, 5);
        for _ in 0..(MAX_GHOSTS + 100) {
            hub.publish_events(vec![Event::Denied { connection: rec(1) }]);
        }
        let st = hub.stream_status();
        let mut sub = hub.subscribe(Some(1), None);
        let Reply::Lost(l) = next_reply(&mut sub) else { panic!("no lost") };
        assert!(l.approximate);
        assert_eq!((l.from_seq, l.to_seq), (2, st.oldest_seq - 1));
        assert_eq!(l.events, MAX_GHOSTS as u64);
        assert!(l.events < st.oldest_seq - 2, "a lower bound");
        // From the start of the run: exact (nothing was published before seq 1).
        let mut sub = hub.subscribe(Some(0), None);
        let Reply::Lost(l) = next_reply(&mut sub) else { panic!("no lost") };
        assert_eq!((l.events, l.approximate), (st.oldest_seq - 1, false));
        // Within the ghosts: exact.
        let mut sub = hub.subscribe(Some(st.oldest_seq - 11), None);
        let Reply::Lost(l) = next_reply(&mut sub) else { panic!("no lost") };
        assert_eq!((l.events, l.approximate), (10, false));
    }

    /// An interval with more records than a batch holds goes out as several batches, all but
    /// the last marked `more`; each message is serialized once and shared (same bytes).
    #[test]
    fn large_intervals_are_split_and_shared() {
        let hub = Hub::new(64 << 20, 5);
        let mut a = hub.subscribe(None, None);
        let mut b = hub.subscribe(None, None);
        let recs: Vec<ConnectionRecord> = (0..(MAX_BATCH_RECORDS as u16 * 2 + 1)).map(rec).collect();
        hub.publish(&recs, 4);
        let mut got = Vec::new();
        for i in 0..3 {
            let (la, lb) = (a.next_line().unwrap(), b.next_line().unwrap());
            assert!(Arc::ptr_eq(&la, &lb), "one copy for every subscriber");
            let r: Response = serde_json::from_slice(&la).unwrap();
            let Some(Reply::Report(batch)) = r.reply else { panic!("not a report") };
            assert_eq!(batch.more, i < 2);
            assert_eq!(batch.dropped, if i == 0 { 4 } else { 0 });
            got.extend(batch.connections.iter().map(|c| c.client_port));
        }
        assert_eq!(got, (0..(MAX_BATCH_RECORDS as u16 * 2 + 1)).collect::<Vec<_>>());
    }

    /// A flood of short sessions sends more final records in one interval than the reporter
    /// holds: it keeps [`MAX_PENDING`], still updates those, and counts the rest.
    #[test]
    fn pending_records_are_bounded() {
        use crate::session::{SessionTable, Timeouts};
        let mut t = SessionTable::new(1, Timeouts::default());
        let k = crate::flow::FlowKey::new(0, 6, crate::flow::Addr::v4([198, 18, 0, 1]), 1, crate::flow::Addr::v4([198, 18, 0, 2]), 80);
        t.track(&k.0, k.1, 60, Some(crate::tcpseq::Segment::flags(0x02)), 1, 1).unwrap();
        let base = t.snapshot(1).remove(0);
        let hub = Arc::new(Hub::new(256 << 20, 3600));
        let mut sub = hub.subscribe(None, None);
        let (tx, rx) = crossbeam::channel::bounded(8);
        let reporter = {
            let hub = hub.clone();
            thread::spawn(move || hub.run_reporter(rx, Duration::from_secs(3600)))
        };
        let extra = 10;
        let ids: Vec<u64> = (1..=(MAX_PENDING + extra) as u64).collect();
        for chunk in ids.chunks(4096) {
            let snaps = chunk.iter().map(|&id| {
                let mut s = base.clone();
                s.session.id = id;
                s
            });
            tx.send(WorkerReport { worker: 0, snaps: snaps.collect(), events: false, threats: Vec::new(), captures: Vec::new() }).unwrap();
        }
        // A later snapshot of a pending session replaces its record (not counted as lost).
        let mut again = base.clone();
        again.session.id = 1;
        again.session.packets = [7, 0];
        tx.send(WorkerReport { worker: 0, snaps: vec![again], events: false, threats: Vec::new(), captures: Vec::new() }).unwrap();
        drop(tx);
        let mut conns = Vec::new();
        loop {
            let Reply::Report(b) = next_reply(&mut sub) else { panic!("not a report") };
            if b.seq == 1 {
                assert_eq!(b.dropped, extra as u64);
            }
            conns.extend(b.connections);
            if !b.more {
                break;
            }
        }
        reporter.join().unwrap();
        assert_eq!(conns.len(), MAX_PENDING);
        assert_eq!(conns.iter().filter(|c| c.packets_to_server == 7).count(), 1);
        assert_eq!(hub.health().1, extra as u64);
    }

    /// Records and events built by the reporter name the ends whose addresses are discovered
    /// workloads' ([`crate::identity::Registry`]), and only those.
    #[test]
    fn records_and_events_carry_identities() {
        use crate::flow::{Addr, FlowKey};
        use crate::session::{SessionTable, Timeouts};
        use warden_control::Identity;
        let mut t = SessionTable::new(4, Timeouts::default());
        let session = |t: &mut SessionTable, c: u8, s: u8| {
            let k = FlowKey::new(0, 6, Addr::v4([198, 18, 0, c]), 40000, Addr::v4([198, 18, 0, s]), 80);
            t.track(&k.0, k.1, 60, Some(crate::tcpseq::Segment::flags(0x02)), 1, 1).unwrap();
        };
        session(&mut t, 1, 2);
        session(&mut t, 3, 4);
        let mut snaps = t.snapshot(2);
        snaps.sort_by_key(|s| s.session.client_end().0.ip());
        let registry = Arc::new(crate::identity::Registry::new());
        let web = Identity {
            container_id: Some("ab".repeat(32)),
            container_name: Some("web-1".into()),
            runtime: Some("podman".into()),
            host_iface: Some("veth1".into()),
            ..Identity::default()
        };
        let db = Identity { pod_name: Some("db-0".into()), pod_namespace: Some("shop".into()), ..Identity::default() };
        registry.set("web-1", web.clone(), vec!["198.18.0.1".parse().unwrap()]);
        registry.set("db", db.clone(), vec!["198.18.0.2".parse().unwrap()]);
        let hub = Arc::new(Hub::new(1 << 20, 3600).with_identities(registry.clone()));
        let mut sub = hub.subscribe(None, None);
        let (tx, rx) = crossbeam::channel::bounded(8);
        let reporter = {
            let hub = hub.clone();
            thread::spawn(move || hub.run_reporter(rx, Duration::from_secs(3600)))
        };
        let report = |snaps: Vec<crate::session::SessionSnapshot>, events: bool| WorkerReport {
            worker: 0,
            snaps,
            events,
            threats: Vec::new(),
            captures: Vec::new(),
        };
        tx.send(report(vec![snaps[0].clone()], true)).unwrap();
        let Reply::Event(e) = next_reply(&mut sub) else { panic!("not an event") };
        let c = e.event.connection();
        assert_eq!((c.client_identity.as_ref(), c.server_identity.as_ref()), (Some(&web), Some(&db)));
        tx.send(report(snaps.clone(), false)).unwrap();
        drop(tx);
        let Reply::Report(b) = next_reply(&mut sub) else { panic!("not a report") };
        reporter.join().unwrap();
        let by_client = |ip: &str| b.connections.iter().find(|c| c.client_ip == ip).expect(ip);
        assert_eq!(by_client("198.18.0.1").client_identity, Some(web));
        assert_eq!(by_client("198.18.0.1").server_identity, Some(db));
        assert_eq!((by_client("198.18.0.3").client_identity.as_ref(), by_client("198.18.0.3").server_identity.as_ref()), (None, None));
        // The JSON names the identity fields; a workload that is gone is no longer named.
        let line = serde_json::to_string(by_client("198.18.0.1")).unwrap();
        assert!(line.contains(r#""client_identity":{"container_id""#) && line.contains(r#""container_name":"web-1""#), "{line}");
        registry.remove("web-1");
        assert_eq!(hub.record(&snaps[0]).client_identity, None);
        assert!(hub.record(&snaps[0]).server_identity.is_some());
    }
}
