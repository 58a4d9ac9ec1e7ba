//! The control socket server and the report hub.
//!
//! Protocol: see the `warden-control` crate (newline-delimited JSON, one typed [`Request`] per
//! line, one [`Response`] per request). A line that does not parse, or is longer than
//! [`MAX_LINE`] bytes, gets an error response and the connection stays usable; nothing a client
//! sends can stop the daemon. Requests are executed by the control loop on the main thread
//! ([`crate::daemon`]); `subscribe` turns the connection into a report stream fed by the
//! [`Hub`]. Who may connect, with which role, how many at once and for how long is decided by
//! [`crate::access`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam::channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use warden_control::{ConnectionRecord, Event, Reply, ReportBatch, Request, Response};

use crate::access;
use crate::daemon::{CtlMsg, Names};
use crate::record::{rfc3339, to_record};
use crate::worker::WorkerReport;

/// (client, server, ip_proto, server_port, app) of a connection seen in learn mode.
type LearnKey = (std::net::IpAddr, std::net::IpAddr, u8, u16, String);

/// Most distinct learned connections kept.
pub const MAX_LEARNED: usize = 100_000;

/// Longest request line accepted (bytes, without the newline).
pub const MAX_LINE: usize = 64 * 1024;
/// Sessions whose threat event was sent that the reporter remembers (oldest forgotten first;
/// a session ending is forgotten at once).
pub const MAX_ALERTED: usize = 65536;

/// Fewest connection records the reporter holds between two published batches
/// ([`Hub::with_pending_max`]): a record of a session not already pending beyond the bound is
/// dropped and counted as overflow, so a flood of short sessions (each ending with a final
/// record) cannot grow the reporter's memory.
pub const MAX_PENDING: usize = 65536;

struct Subscriber {
    tx: Sender<Reply>,
    overflow: Arc<AtomicU64>,
}

/// Report fan-out: collects workers' snapshots, emits one batch per interval to every
/// subscriber through a bounded queue; a slow subscriber's overflow is counted, never silent.
pub struct Hub {
    names: Mutex<Names>,
    learned: Mutex<std::collections::BTreeSet<LearnKey>>,
    /// Learned connections not kept because the set was full.
    pub learned_overflow: AtomicU64,
    subs: Mutex<Vec<Subscriber>>,
    overflow: AtomicU64,
    queue: usize,
    interval_s: u64,
    pending_max: usize,
}

impl Hub {
    /// A hub whose subscriber queues hold `queue` batches, publishing every `interval_s` s.
    pub fn new(queue: usize, interval_s: u64) -> Self {
        Hub {
            names: Mutex::new(HashMap::new()),
            learned: Mutex::new(std::collections::BTreeSet::new()),
            learned_overflow: AtomicU64::new(0),
            subs: Mutex::new(Vec::new()),
            overflow: AtomicU64::new(0),
            queue: queue.max(1),
            interval_s,
            pending_max: MAX_PENDING,
        }
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

    /// (subscribers, records lost (to slow subscribers, or beyond the pending bound per batch),
    /// batches queued).
    pub fn health(&self) -> (usize, u64, usize) {
        let subs = self.subs.lock().map(|s| (s.len(), s.iter().map(|x| x.tx.len()).sum())).unwrap_or((0, 0));
        (subs.0, self.overflow.load(Ordering::Relaxed), subs.1)
    }

    fn subscribe(&self) -> (Receiver<Reply>, Arc<AtomicU64>) {
        let (tx, rx) = bounded(self.queue);
        let overflow = Arc::new(AtomicU64::new(0));
        if let Ok(mut s) = self.subs.lock() {
            s.push(Subscriber { tx, overflow: overflow.clone() });
        }
        (rx, overflow)
    }

    fn publish(&self, records: &[ConnectionRecord], seq: u64) {
        let Ok(mut subs) = self.subs.lock() else { return };
        let time = rfc3339(
            SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0),
        );
        subs.retain(|s| {
            let batch = ReportBatch {
                seq,
                time: time.clone(),
                connections: records.to_vec(),
                overflow: s.overflow.load(Ordering::Relaxed),
            };
            match s.tx.try_send(Reply::Report(batch)) {
                Ok(()) => true,
                Err(TrySendError::Full(b)) => {
                    let n = match b {
                        Reply::Report(b) => b.connections.len() as u64,
                        _ => 0,
                    };
                    s.overflow.fetch_add(n, Ordering::Relaxed);
                    self.overflow.fetch_add(n, Ordering::Relaxed);
                    true
                }
                Err(TrySendError::Disconnected(_)) => false,
            }
        });
    }

    /// Sends `events` to every subscriber (a full queue loses the event and counts it as one
    /// overflowed record).
    fn publish_events(&self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        let Ok(subs) = self.subs.lock() else { return };
        for s in subs.iter() {
            for e in &events {
                if let Err(TrySendError::Full(_)) = s.tx.try_send(Reply::Event(e.clone())) {
                    s.overflow.fetch_add(1, Ordering::Relaxed);
                    self.overflow.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// The reporter thread: merges workers' snapshots (latest per session wins) and publishes a
    /// batch every `interval`, until every worker has exited (then a final batch). Before each
    /// batch, a threat event for every session in it whose record has a threat and that had no
    /// event yet ([`Alerted`]).
    pub fn run_reporter(&self, rx: Receiver<WorkerReport>, interval: Duration) {
        let mut pending: Vec<ConnectionRecord> = Vec::new();
        let mut index: HashMap<(usize, u64), usize> = HashMap::new();
        let mut alerted = Alerted::default();
        let mut next = Instant::now() + interval;
        let mut seq = 0u64;
        loop {
            let wait = next.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(rep) if rep.events => {
                    let events = rep
                        .snaps
                        .iter()
                        .map(|s| {
                            let connection = to_record(s, |slot| self.name(slot));
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
                            continue;
                        }
                        let rec = to_record(s, |slot| self.name(slot));
                        self.learn(&rec);
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
                    seq += 1;
                    self.publish_events(alerted.events(&index, &pending));
                    self.publish(&pending, seq);
                    pending.clear();
                    // Give subscriber connections a moment to write the final batch.
                    let deadline = Instant::now() + Duration::from_secs(2);
                    while Instant::now() < deadline && self.health().2 > 0 {
                        thread::sleep(Duration::from_millis(20));
                    }
                    if let Ok(mut s) = self.subs.lock() {
                        s.clear();
                    }
                    return;
                }
            }
            seq += 1;
            self.publish_events(alerted.events(&index, &pending));
            index.clear();
            self.publish(&pending, seq);
            // Kept, with its capacity: the reporter reuses the same memory every interval.
            pending.clear();
            next = Instant::now() + interval;
        }
    }
}

/// Sessions (worker, session id) whose threat event was sent, bounded by [`MAX_ALERTED`].
#[derive(Default)]
struct Alerted {
    set: HashSet<(usize, u64)>,
    order: VecDeque<(usize, u64)>,
}

impl Alerted {
    /// Threat events for the records of this cycle (`index` maps a session to its record in
    /// `records`) whose session had none yet; forgets ended sessions.
    fn events(&mut self, index: &HashMap<(usize, u64), usize>, records: &[ConnectionRecord]) -> Vec<Event> {
        let mut out = Vec::new();
        for (&key, &i) in index {
            let Some(rec) = records.get(i) else { continue };
            if let Some(t) = rec.threats.first() {
                if self.set.insert(key) {
                    out.push(Event::Threat { threat: t.clone(), connection: rec.clone() });
                    self.order.push_back(key);
                    while self.order.len() > MAX_ALERTED {
                        if let Some(old) = self.order.pop_front() {
                            self.set.remove(&old);
                        }
                    }
                }
            }
            if rec.closed && self.set.remove(&key) {
                self.order.retain(|k| *k != key);
            }
        }
        out
    }
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
    let mut line = serde_json::to_vec(r).unwrap_or_else(|_| br#"{"ok":false,"error":"internal"}"#.to_vec());
    line.push(b'\n');
    w.write_all(&line)
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
        if let Request::Subscribe {} = req {
            stream_reports(&mut writer, hub);
            return;
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

fn stream_reports(writer: &mut UnixStream, hub: &Hub) {
    let (batches, _overflow) = hub.subscribe();
    let interval_s = hub.interval_s;
    if write_response(writer, &Response::ok(Reply::Subscribed { interval_s })).is_err() {
        return;
    }
    while let Ok(msg) = batches.recv() {
        if write_response(writer, &Response::ok(msg)).is_err() {
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

    #[test]
    fn slow_subscriber_overflow_is_counted() {
        let hub = Hub::new(1, 5);
        let (rx, overflow) = hub.subscribe();
        let rec = ConnectionRecord::default();
        hub.publish(std::slice::from_ref(&rec), 1);
        hub.publish(&[rec.clone(), rec], 2);
        assert_eq!(overflow.load(Ordering::Relaxed), 2);
        assert_eq!(hub.health(), (1, 2, 1));
        assert!(matches!(rx.recv().unwrap(), Reply::Report(b) if b.seq == 1));
        drop(rx);
        hub.publish(&[], 3);
        assert_eq!(hub.health().0, 0);
    }

    #[test]
    fn a_sessions_first_threat_is_one_event() {
        let threat = warden_control::ThreatRecord {
            id: "sql_injection".into(),
            dir: "to_server".into(),
            reason: "libinjection".into(),
            evidence: "1' OR '1'='1".into(),
            count: 1,
        };
        let clean = ConnectionRecord { client_port: 1, ..Default::default() };
        let hit = ConnectionRecord { client_port: 2, threats: vec![threat.clone()], ..Default::default() };
        let index: HashMap<(usize, u64), usize> = [((0, 1), 0), ((0, 2), 1)].into_iter().collect();
        let mut a = Alerted::default();
        let ev = a.events(&index, &[clean.clone(), hit.clone()]);
        assert_eq!(ev, vec![Event::Threat { threat: threat.clone(), connection: hit.clone() }]);
        // The next cycle's record of the same session: no second event.
        assert!(a.events(&index, &[clean.clone(), hit.clone()]).is_empty());
        // Its final record makes the reporter forget it.
        let closed = ConnectionRecord { closed: true, ..hit.clone() };
        assert!(a.events(&index, &[clean, closed]).is_empty());
        assert!(a.set.is_empty() && a.order.is_empty());
        // Bounded.
        let mut b = Alerted::default();
        for i in 0..(MAX_ALERTED as u64 + 10) {
            let one: HashMap<(usize, u64), usize> = [((1, i), 0)].into_iter().collect();
            assert_eq!(b.events(&one, std::slice::from_ref(&hit)).len(), 1);
        }
        assert_eq!(b.set.len(), MAX_ALERTED);
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
        let hub = Arc::new(Hub::new(4, 3600));
        let (sub, _) = hub.subscribe();
        let (tx, rx) = bounded(8);
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
            tx.send(WorkerReport { worker: 0, snaps: snaps.collect(), events: false }).unwrap();
        }
        // A later snapshot of a pending session replaces its record (not counted as lost).
        let mut again = base.clone();
        again.session.id = 1;
        again.session.packets = [7, 0];
        tx.send(WorkerReport { worker: 0, snaps: vec![again], events: false }).unwrap();
        drop(tx);
        let Reply::Report(b) = sub.recv().unwrap() else { panic!("not a report") };
        reporter.join().unwrap();
        assert_eq!(b.connections.len(), MAX_PENDING);
        assert_eq!(b.connections.iter().filter(|c| c.packets_to_server == 7).count(), 1);
        assert_eq!(hub.health().1, extra as u64);
    }
}
