//! Export of connection records to collectors outside the host: IPFIX (RFC 7011) over UDP or
//! TCP (`[[export.ipfix]]` in `warden.toml`), one exporter thread per collector.
//!
//! The reporter ([`crate::control::Hub::run_reporter`]) offers every session snapshot it turns
//! into a record ([`Exporters::offer`]); the offer never blocks: each collector has a bounded
//! queue (`queue` records) and a full queue drops the update, counted as `dropped_queue_full`.
//! The exporter thread decides what to send (see [`Tracker`]): a final record when a session
//! ends, and for a live session one record per `active_timeout` (flowEndReason 2), each with
//! the bytes and frames since that session's previous record (delta counts), so a collector
//! that sums a session's records gets the totals of the socket's final record.
//!
//! **Templates** (RFC 7011 §8): sent first on every transport session; over UDP again every
//! `template_interval` seconds (§8.1 asks for periodic resends on unreliable transports); over
//! TCP once per connection (a lost connection is reopened with backoff, 1 s doubling to 30 s,
//! and the sequence number starts again at 0). Counters per collector appear in `status`
//! (`export`).

pub mod ipfix;

use std::collections::HashMap;
use std::io::Write;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam::channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use serde::Deserialize;
use warden_control::{ConnectionRecord, ExportStatus};

use crate::session::{EndReason, SessionSnapshot};
use ipfix::{end_reason, Encoder, FlowRecord};

/// `[export]`: collectors connection records are sent to.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExportConfig {
    /// `[[export.ipfix]]`: IPFIX collectors.
    #[serde(default)]
    pub ipfix: Vec<IpfixCollector>,
}

/// Transport of an IPFIX collector (RFC 7011 §10).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// UDP (§10.3): templates resent periodically.
    #[default]
    Udp,
    /// TCP (§10.4): templates once per connection, reconnect with backoff.
    Tcp,
}

impl Transport {
    fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

/// One `[[export.ipfix]]` entry.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IpfixCollector {
    /// Collector address and port (`"198.18.0.9:4739"`; 4739 is IPFIX's port).
    pub collector: SocketAddr,
    /// `udp` (default) or `tcp`.
    #[serde(default)]
    pub transport: Transport,
    /// Observation domain id in every message header (default 0).
    #[serde(default)]
    pub observation_domain: u32,
    /// UDP: seconds between template resends (default 60; RFC 7011 §8.1).
    #[serde(default = "default_template_interval")]
    pub template_interval: u64,
    /// Seconds after which a live session gets an interim record (default 60).
    #[serde(default = "default_active_timeout")]
    pub active_timeout: u64,
    /// Updates queued between the reporter and this collector's thread (default 8192).
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// Largest message in bytes (default 1400 for UDP, so one datagram fits a 1500-byte MTU;
    /// TCP uses the same bound).
    #[serde(default = "default_max_message")]
    pub max_message: usize,
}

fn default_template_interval() -> u64 {
    60
}
fn default_active_timeout() -> u64 {
    60
}
fn default_queue() -> usize {
    8192
}
fn default_max_message() -> usize {
    1400
}

/// An update of one session for the exporter threads: totals so far and whether it ended.
#[derive(Debug, Clone)]
pub struct Update {
    /// (worker, session id): unique among live sessions.
    pub key: (usize, u64),
    /// The record with the session's totals (`end_reason` set when `ended`).
    pub rec: FlowRecord,
    /// Whether this is the session's final record.
    pub ended: bool,
}

/// Counters of one collector, shared between its thread and `status`.
#[derive(Debug, Default)]
struct Counters {
    records_sent: AtomicU64,
    messages_sent: AtomicU64,
    templates_sent: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_send: AtomicU64,
    send_errors: AtomicU64,
    connects: AtomicU64,
    connected: AtomicBool,
}

struct Collector {
    cfg: IpfixCollector,
    tx: Sender<Update>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<thread::JoinHandle<()>>>,
}

/// The exporter threads of every configured collector (none: offers cost nothing).
#[derive(Default)]
pub struct Exporters {
    collectors: Vec<Collector>,
}

impl Exporters {
    /// Starts one thread per collector of `cfg`.
    ///
    /// # Errors
    /// A thread could not be spawned.
    pub fn start(cfg: &ExportConfig) -> std::io::Result<Self> {
        let mut collectors = Vec::new();
        for c in &cfg.ipfix {
            let (tx, rx) = bounded(c.queue.max(1));
            let counters = Arc::new(Counters::default());
            let stop = Arc::new(AtomicBool::new(false));
            let run = Runner {
                cfg: c.clone(),
                rx,
                counters: counters.clone(),
                stop: stop.clone(),
                tracker: Tracker::new(Duration::from_secs(c.active_timeout.max(1)), 1 << 20),
                enc: Encoder::new(c.observation_domain, c.max_message),
            };
            let h = thread::Builder::new().name("warden-ipfix".into()).spawn(move || run.run())?;
            tracing::info!(collector = %c.collector, transport = c.transport.as_str(), "IPFIX export");
            collectors.push(Collector { cfg: c.clone(), tx, counters, stop, thread: Mutex::new(Some(h)) });
        }
        Ok(Exporters { collectors })
    }

    /// Whether any collector is configured.
    pub fn is_empty(&self) -> bool {
        self.collectors.is_empty()
    }

    /// Offers the snapshot `snap` of worker `worker` (with its record `rec`, for the strings)
    /// to every collector without blocking; a full queue counts the update as dropped.
    pub fn offer(&self, worker: usize, snap: &SessionSnapshot, rec: &ConnectionRecord) {
        if self.collectors.is_empty() {
            return;
        }
        let up = Update { key: (worker, snap.session.id), rec: flow_record(snap, rec), ended: snap.ended.is_some() };
        for c in &self.collectors {
            match c.tx.try_send(up.clone()) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                    c.counters.dropped_queue_full.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Counters of every collector, for `status`.
    pub fn status(&self) -> Vec<ExportStatus> {
        self.collectors
            .iter()
            .map(|c| {
                let n = &c.counters;
                ExportStatus {
                    collector: c.cfg.collector.to_string(),
                    transport: c.cfg.transport.as_str().into(),
                    connected: n.connected.load(Ordering::Relaxed),
                    queued: c.tx.len(),
                    records_sent: n.records_sent.load(Ordering::Relaxed),
                    messages_sent: n.messages_sent.load(Ordering::Relaxed),
                    templates_sent: n.templates_sent.load(Ordering::Relaxed),
                    dropped_queue_full: n.dropped_queue_full.load(Ordering::Relaxed),
                    dropped_send: n.dropped_send.load(Ordering::Relaxed),
                    send_errors: n.send_errors.load(Ordering::Relaxed),
                    connects: n.connects.load(Ordering::Relaxed),
                }
            })
            .collect()
    }

    /// Sends what is queued and stops every thread (at shutdown, after the reporter's last
    /// batch). Waits at most about 3 s per collector.
    pub fn stop(&self) {
        for c in &self.collectors {
            c.stop.store(true, Ordering::Relaxed);
        }
        for c in &self.collectors {
            if let Some(h) = c.thread.lock().ok().and_then(|mut t| t.take()) {
                let _ = h.join();
            }
        }
    }
}

/// The IPFIX record (session totals) of `snap`; strings from its connection record `rec`.
pub fn flow_record(snap: &SessionSnapshot, rec: &ConnectionRecord) -> FlowRecord {
    let s = &snap.session;
    let ((c, cp), (sv, sp)) = (s.client_end(), s.server_end());
    FlowRecord {
        client: c.ip(),
        server: sv.ip(),
        client_port: cp,
        server_port: sp,
        proto: s.key.proto,
        octets: s.bytes[0],
        packets: s.packets[0],
        reverse_octets: s.bytes[1],
        reverse_packets: s.packets[1],
        start_ms: s.first_ns / 1_000_000,
        end_ms: s.last_ns / 1_000_000,
        end_reason: match snap.ended {
            None => end_reason::ACTIVE_TIMEOUT,
            Some(EndReason::Idle) => end_reason::IDLE_TIMEOUT,
            Some(EndReason::Fin | EndReason::Rst) => end_reason::END_OF_FLOW,
            Some(EndReason::Evicted) => end_reason::LACK_OF_RESOURCES,
            Some(EndReason::Shutdown | EndReason::Reused) => end_reason::FORCED_END,
        },
        app: rec.app.clone(),
        verdict: rec.verdict.clone().unwrap_or_default(),
        rule_id: rec.rule_id.unwrap_or(ipfix::NO_RULE),
        client_workload: rec.client_workload.clone().unwrap_or_default(),
        server_workload: rec.server_workload.clone().unwrap_or_default(),
        threats: rec.threats.iter().map(|t| t.id.as_str()).collect::<Vec<_>>().join(","),
    }
}

/// What was last exported of each live session, so records carry delta counts and live
/// sessions are exported once per active timeout. Bounded by `max` entries: when full, entries
/// not refreshed for ten active timeouts (sessions whose final update was dropped) are
/// forgotten; a session that finds no room is exported only when it ends (its record then
/// carries all its counts, so nothing is counted twice or lost, only less often).
#[derive(Debug)]
pub struct Tracker {
    active: Duration,
    max: usize,
    /// key → (counts sent: octets, packets, reverse octets, reverse packets; when).
    sent: HashMap<(usize, u64), ([u64; 4], Instant)>,
}

impl Tracker {
    /// A tracker exporting live sessions every `active`, remembering at most `max` sessions.
    pub fn new(active: Duration, max: usize) -> Self {
        Tracker { active, max, sent: HashMap::new() }
    }

    /// The record to export for `up` at `now`, with delta counts, or `None` (a live session
    /// whose active timeout has not passed).
    pub fn record(&mut self, up: Update, now: Instant) -> Option<FlowRecord> {
        let mut rec = up.rec;
        let totals = [rec.octets, rec.packets, rec.reverse_octets, rec.reverse_packets];
        let prev = if up.ended {
            self.sent.remove(&up.key).map(|p| p.0)
        } else {
            match self.sent.get_mut(&up.key) {
                Some((counts, at)) => {
                    if now.duration_since(*at) < self.active {
                        return None;
                    }
                    let prev = *counts;
                    *counts = totals;
                    *at = now;
                    Some(prev)
                }
                None => {
                    let age_ms = rec.end_ms.saturating_sub(rec.start_ms);
                    if age_ms < self.active.as_millis() as u64 {
                        return None;
                    }
                    if self.sent.len() >= self.max {
                        let stale = self.active * 10;
                        self.sent.retain(|_, (_, at)| now.duration_since(*at) < stale);
                        if self.sent.len() >= self.max {
                            return None;
                        }
                    }
                    self.sent.insert(up.key, (totals, now));
                    None
                }
            }
        };
        if let Some(p) = prev {
            rec.octets = rec.octets.saturating_sub(p[0]);
            rec.packets = rec.packets.saturating_sub(p[1]);
            rec.reverse_octets = rec.reverse_octets.saturating_sub(p[2]);
            rec.reverse_packets = rec.reverse_packets.saturating_sub(p[3]);
        }
        Some(rec)
    }

    /// Sessions remembered.
    pub fn len(&self) -> usize {
        self.sent.len()
    }

    /// Whether no session is remembered.
    pub fn is_empty(&self) -> bool {
        self.sent.is_empty()
    }
}

enum Conn {
    Udp(UdpSocket),
    Tcp(TcpStream),
}

struct Runner {
    cfg: IpfixCollector,
    rx: Receiver<Update>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    tracker: Tracker,
    enc: Encoder,
}

fn unix_s() -> u32 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as u32).unwrap_or(0)
}

impl Runner {
    fn open(&self) -> std::io::Result<Conn> {
        match self.cfg.transport {
            Transport::Udp => {
                let any: SocketAddr =
                    if self.cfg.collector.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
                let s = UdpSocket::bind(any)?;
                s.connect(self.cfg.collector)?;
                Ok(Conn::Udp(s))
            }
            Transport::Tcp => {
                let s = TcpStream::connect_timeout(&self.cfg.collector, Duration::from_secs(2))?;
                s.set_write_timeout(Some(Duration::from_secs(5)))?;
                s.set_nodelay(true)?;
                Ok(Conn::Tcp(s))
            }
        }
    }

    /// Sends the message being built; its records are counted sent or dropped.
    fn flush(&mut self, conn: &mut Option<Conn>) {
        if self.enc.is_empty() {
            return;
        }
        let records = u64::from(self.enc.pending());
        let msg = self.enc.finish(unix_s());
        let res = match conn.as_mut() {
            Some(Conn::Udp(s)) => s.send(&msg).map(|_| ()),
            Some(Conn::Tcp(s)) => s.write_all(&msg),
            None => Err(std::io::ErrorKind::NotConnected.into()),
        };
        match res {
            Ok(()) => {
                self.counters.messages_sent.fetch_add(1, Ordering::Relaxed);
                self.counters.records_sent.fetch_add(records, Ordering::Relaxed);
            }
            Err(e) => {
                self.counters.send_errors.fetch_add(1, Ordering::Relaxed);
                self.counters.dropped_send.fetch_add(records, Ordering::Relaxed);
                tracing::debug!(collector = %self.cfg.collector, "IPFIX send: {e}");
                if self.cfg.transport == Transport::Tcp {
                    *conn = None;
                    self.counters.connected.store(false, Ordering::Relaxed);
                }
            }
        }
    }

    fn send_templates(&mut self, conn: &mut Option<Conn>) {
        self.flush(conn);
        self.enc.add_templates();
        self.counters.templates_sent.fetch_add(1, Ordering::Relaxed);
        self.flush_templates(conn);
    }

    /// Sends a message holding only templates (no records to count).
    fn flush_templates(&mut self, conn: &mut Option<Conn>) {
        let msg = self.enc.finish(unix_s());
        let ok = match conn.as_mut() {
            Some(Conn::Udp(s)) => s.send(&msg).is_ok(),
            Some(Conn::Tcp(s)) => s.write_all(&msg).is_ok(),
            None => false,
        };
        if ok {
            self.counters.messages_sent.fetch_add(1, Ordering::Relaxed);
        } else {
            self.counters.send_errors.fetch_add(1, Ordering::Relaxed);
            if self.cfg.transport == Transport::Tcp {
                *conn = None;
                self.counters.connected.store(false, Ordering::Relaxed);
            }
        }
    }

    fn run(mut self) {
        let mut conn: Option<Conn> = None;
        let mut backoff = Duration::from_secs(1);
        let mut next_connect = Instant::now();
        let mut last_templates = Instant::now();
        let template_every = Duration::from_secs(self.cfg.template_interval.max(1));
        loop {
            let stopping = self.stop.load(Ordering::Relaxed);
            if conn.is_none() && Instant::now() >= next_connect {
                match self.open() {
                    Ok(c) => {
                        conn = Some(c);
                        self.counters.connects.fetch_add(1, Ordering::Relaxed);
                        self.counters.connected.store(true, Ordering::Relaxed);
                        backoff = Duration::from_secs(1);
                        self.enc.restart();
                        self.send_templates(&mut conn);
                        last_templates = Instant::now();
                    }
                    Err(e) => {
                        self.counters.send_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(collector = %self.cfg.collector, "IPFIX collector unreachable: {e}; retry in {backoff:?}");
                        next_connect = Instant::now() + backoff;
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                }
            }
            if conn.is_none() {
                // Not consuming: the queue fills and offers are counted as dropped.
                if stopping {
                    let left = self.rx.len() as u64;
                    self.counters.dropped_send.fetch_add(left, Ordering::Relaxed);
                    return;
                }
                thread::sleep(Duration::from_millis(100));
                continue;
            }
            if self.cfg.transport == Transport::Udp && last_templates.elapsed() >= template_every {
                self.send_templates(&mut conn);
                last_templates = Instant::now();
            }
            let first = match self.rx.recv_timeout(Duration::from_millis(200)) {
                Ok(u) => Some(u),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let now = Instant::now();
            let mut next = first;
            while let Some(up) = next {
                if let Some(rec) = self.tracker.record(up, now) {
                    if !self.enc.push(&rec) {
                        self.flush(&mut conn);
                        self.enc.push(&rec);
                    }
                }
                next = self.rx.try_recv().ok();
            }
            self.flush(&mut conn);
            if stopping && self.rx.is_empty() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests;
