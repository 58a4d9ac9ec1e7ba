//! The HTTP and MySQL threats over real captures (`dp/tests/captures/threats/`, README section
//! "HTTP and MySQL"; the corpus and the other benign captures), as the per-core threat stage
//! will see them: each TCP flow's bytes fed to its parser in capture order on the packet clock,
//! [`Http::awaiting_headers`] reported to [`Slowloris`] after each to-server feed,
//! [`Mysql::auth_failures`] increases to [`AuthFailures`], the timer ([`Slowloris::poll`])
//! run at every frame. Prints the detection and false-alarm rates of the two cross-session
//! detectors (`cargo nextest run -p warden-dp detect::captures_tests --no-capture`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::app::http::Http;
use crate::app::mysql::Mysql;
use crate::app::testutil::{capture, corpus};
use crate::app::{AppParser, Dir, Feed};
use crate::detect::auth_fail::{self, AuthFailures};
use crate::detect::slowloris::{self, ServerKey, Slowloris};
use crate::detect::{ThreatId, Threats};
use crate::flow::{Addr, End, FlowKey};
use crate::wire::{self, tcpflag, L4};

/// One TCP segment with payload, or a FIN/RST, in capture order.
struct Seg {
    ts_ns: u64,
    flow: usize,
    dir: Dir,
    seq: u32,
    payload: Vec<u8>,
    /// FIN or RST: the session ends.
    end: bool,
}

/// A TCP flow: its ends and the client's initial sequence numbers.
#[derive(Debug, Clone, Copy)]
struct FlowInfo {
    client: Addr,
    server: Addr,
    server_port: u16,
}

/// The TCP segments of the pcap at `path`, with their flows (client: the sender of a pure SYN,
/// else of the first frame).
fn segments(path: &Path) -> (Vec<FlowInfo>, Vec<Seg>) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut r = pcap_file::pcap::PcapReader::new(file).unwrap();
    let mut flows: Vec<(FlowInfo, End)> = Vec::new();
    let mut index: BTreeMap<(u16, [u8; 16], [u8; 16], u16, u16), usize> = BTreeMap::new();
    let mut segs = Vec::new();
    while let Some(Ok(pkt)) = r.next_packet() {
        let Ok(f) = wire::decode(&pkt.data) else { continue };
        let Some(ip) = f.ip else { continue };
        let L4::Tcp { seq, flags, .. } = ip.l4 else { continue };
        let (k, end): (FlowKey, End) = FlowKey::new(0, ip.proto, ip.src, ip.sport, ip.dst, ip.dport);
        let id = (0, k.lo.0, k.hi.0, k.lo_port, k.hi_port);
        let i = *index.entry(id).or_insert_with(|| {
            let synack = flags & (tcpflag::SYN | tcpflag::ACK) == tcpflag::SYN | tcpflag::ACK;
            let client = if synack { if end == End::Lo { End::Hi } else { End::Lo } } else { end };
            let info = if client == end {
                FlowInfo { client: ip.src, server: ip.dst, server_port: ip.dport }
            } else {
                FlowInfo { client: ip.dst, server: ip.src, server_port: ip.sport }
            };
            flows.push((info, client));
            flows.len() - 1
        });
        let dir = if end == flows[i].1 { Dir::ToServer } else { Dir::ToClient };
        let ts_ns = u64::try_from(pkt.timestamp.as_nanos()).unwrap_or(u64::MAX);
        let syn = flags & tcpflag::SYN != 0;
        let seq = if syn { seq.wrapping_add(1) } else { seq };
        let fin_rst = flags & (tcpflag::FIN | tcpflag::RST) != 0;
        if !ip.payload.is_empty() || fin_rst || syn {
            segs.push(Seg { ts_ns, flow: i, dir, seq, payload: ip.payload.to_vec(), end: fin_rst });
        }
    }
    (flows.into_iter().map(|(f, _)| f).collect(), segs)
}

/// A parser fed one flow's segments in sequence order as the stream engine feeds it:
/// retransmitted bytes skipped, unconsumed bytes presented again with the next segment.
struct Driver<P> {
    p: P,
    next: [Option<u32>; 2],
    pending: [Vec<u8>; 2],
    need: [usize; 2],
    stopped: [bool; 2],
}

impl<P: AppParser + Default> Driver<P> {
    fn new() -> Self {
        Driver { p: P::default(), next: [None; 2], pending: [Vec::new(), Vec::new()], need: [0; 2], stopped: [false; 2] }
    }

    fn push(&mut self, dir: Dir, seq: u32, payload: &[u8]) {
        let d = dir as usize;
        let next = *self.next[d].get_or_insert(seq);
        if payload.is_empty() {
            return;
        }
        // Skip what was already delivered (retransmissions); a hole is taken as is (veth
        // captures lose nothing).
        let skip = next.wrapping_sub(seq) as usize;
        let fresh = if skip < payload.len() && (next.wrapping_sub(seq) as i32) >= 0 { &payload[skip..] } else if (next.wrapping_sub(seq) as i32) < 0 { payload } else { &[][..] };
        if fresh.is_empty() {
            return;
        }
        self.next[d] = Some(seq.wrapping_add(payload.len() as u32));
        if self.stopped[d] {
            return;
        }
        self.pending[d].extend_from_slice(fresh);
        if self.pending[d].len() < self.need[d] {
            return;
        }
        match self.p.feed(dir, &self.pending[d]) {
            Feed::Consumed(n) => {
                self.pending[d].drain(..n.min(self.pending[d].len()));
                self.need[d] = 0;
            }
            Feed::Need { consumed, at_least } => {
                self.pending[d].drain(..consumed.min(self.pending[d].len()));
                self.need[d] = at_least;
            }
            Feed::Done | Feed::Invalid { .. } => self.stopped[d] = true,
        }
    }
}

/// Kinds the HTTP and MySQL parsers record for this issue.
const KINDS: [ThreatId; 3] = [ThreatId::HttpNegativeBodyLength, ThreatId::HttpRequestSmuggling, ThreatId::ApacheStrutsRce];

/// What one capture gave.
#[derive(Debug, Default)]
struct Outcome {
    /// Per flow: the parser's threats.
    threats: Vec<Threats>,
    /// HTTP sessions whose head was ever open; of those, the ones ever `offending` (slow at a
    /// server under attack) and ever slow.
    http_sessions: usize,
    offending: usize,
    /// Slowloris findings (time, finding).
    slowloris: Vec<(u64, slowloris::Finding)>,
    /// First to-server byte of the capture (ns).
    start_ns: u64,
    /// MySQL sessions with an authentication failure, and those at whose failure the client was
    /// (already or newly) reported.
    mysql_failed_sessions: usize,
    mysql_flagged_sessions: usize,
    auth: Vec<(u64, auth_fail::Finding)>,
    flows: usize,
    http_flows: usize,
    /// The longest time a request head stayed open (ns), and its bytes.
    longest_open: (u64, u32),
    /// Per HTTP session whose head was open: the longest time it stayed open (ns).
    open_ns: BTreeMap<usize, u64>,
}

/// The worker's timer period emulated between frames (ns).
const TICK_NS: u64 = 250_000_000;

fn is_http_port(p: u16) -> bool {
    matches!(p, 80 | 8080 | 8000 | 8081)
}

/// Runs every HTTP (server port 80, 8080, 8000, 8081) and MySQL (3306) flow of `path` through
/// its parser and the two detectors.
fn run(path: &Path, slow_cfg: slowloris::Config, auth_cfg: auth_fail::Config) -> Outcome {
    let (flows, segs) = segments(path);
    let mut http: BTreeMap<usize, Driver<Http>> = BTreeMap::new();
    let mut mysql: BTreeMap<usize, Driver<Mysql>> = BTreeMap::new();
    let mut slow = Slowloris::new(slow_cfg);
    let mut auth = AuthFailures::new(auth_cfg);
    let mut out = Outcome { start_ns: segs.first().map_or(0, |s| s.ts_ns), ..Outcome::default() };
    let mut opened: BTreeMap<usize, bool> = BTreeMap::new(); // flow -> ever offending
    let mut failures: BTreeMap<usize, u32> = BTreeMap::new();
    let mut failed_flagged: BTreeMap<usize, bool> = BTreeMap::new();
    let mut tick = out.start_ns;
    let mut open_since: BTreeMap<usize, u64> = BTreeMap::new();
    let mut reported: std::collections::HashMap<auth_fail::Key, bool> = std::collections::HashMap::new();
    for s in &segs {
        // The timer between frames, as the worker runs it.
        while tick + TICK_NS <= s.ts_ns {
            tick += TICK_NS;
            while let Some(fd) = slow.poll(tick) {
                out.slowloris.push((tick, fd));
            }
            for (flow, ever) in opened.iter_mut() {
                *ever |= slow.offending(*flow as u64);
            }
        }
        let f = flows[s.flow];
        let server = ServerKey { zone: 0, addr: f.server, port: f.server_port };
        if is_http_port(f.server_port) {
            let drv = http.entry(s.flow).or_insert_with(Driver::new);
            drv.push(s.dir, s.seq, &s.payload);
            if s.dir == Dir::ToServer && !s.payload.is_empty() {
                let open = drv.p.awaiting_headers();
                if let Some(fd) = slow.observe(server, s.flow as u64, open.then(|| drv.p.head_bytes()), s.ts_ns) {
                    out.slowloris.push((s.ts_ns, fd));
                }
                if open {
                    opened.entry(s.flow).or_insert(false);
                    let t0 = *open_since.entry(s.flow).or_insert(s.ts_ns);
                    out.longest_open = out.longest_open.max((s.ts_ns - t0, drv.p.head_bytes()));
                    let o = out.open_ns.entry(s.flow).or_default();
                    *o = (*o).max(s.ts_ns - t0);
                } else if let Some(t0) = open_since.remove(&s.flow) {
                    out.longest_open = out.longest_open.max((s.ts_ns - t0, 0));
                    let o = out.open_ns.entry(s.flow).or_default();
                    *o = (*o).max(s.ts_ns - t0);
                }
            }
            if s.end {
                slow.end(s.flow as u64);
            }
        } else if f.server_port == 3306 {
            let drv = mysql.entry(s.flow).or_insert_with(Driver::new);
            drv.push(s.dir, s.seq, &s.payload);
            let n = drv.p.auth_failures();
            let before = failures.insert(s.flow, n).unwrap_or(0);
            if n > before {
                let key = auth_fail::Key { zone: 0, client: f.client, server: f.server, port: f.server_port };
                if let Some(fd) = auth.failed(key, n - before, s.ts_ns) {
                    out.auth.push((s.ts_ns, fd));
                    reported.insert(key, true);
                }
                failed_flagged.insert(s.flow, reported.contains_key(&key));
            }
        }
        if let Some(fd) = slow.poll(s.ts_ns) {
            out.slowloris.push((s.ts_ns, fd));
        }
        for (flow, ever) in opened.iter_mut() {
            *ever |= slow.offending(*flow as u64);
        }
    }
    // The timer runs on after the last frame: 10 s more, once a second.
    let last = segs.last().map_or(0, |s| s.ts_ns);
    for t in 1..=10u64 {
        for _ in 0..(slow_cfg.max_tracked / slow_cfg.poll_budget.max(1) + 1) {
            if let Some(fd) = slow.poll(last + t * 1_000_000_000) {
                out.slowloris.push((last + t * 1_000_000_000, fd));
            }
        }
        for (flow, ever) in opened.iter_mut() {
            *ever |= slow.offending(*flow as u64);
        }
    }
    out.flows = http.len() + mysql.len();
    out.http_flows = http.len();
    out.threats = http.values().map(|d| d.p.threats().copied().unwrap_or_default()).chain(mysql.values().map(|d| d.p.threats().copied().unwrap_or_default())).collect();
    out.http_sessions = opened.len();
    out.offending = opened.values().filter(|&&o| o).count();
    out.mysql_failed_sessions = failed_flagged.len();
    out.mysql_flagged_sessions = failed_flagged.values().filter(|&&f| f).count();
    out.auth = out.auth.clone();
    out
}

fn threat_capture(name: &str) -> PathBuf {
    capture(&format!("threats/{name}"))
}

/// The HTTP and MySQL captures that are benign: the corpus' (by `labels.json`), the other
/// repository captures of real clients, and the benign recordings of this directory.
fn benign_captures() -> Vec<PathBuf> {
    let labels: serde_json::Value = serde_json::from_slice(&std::fs::read(corpus("labels.json")).unwrap()).unwrap();
    let mut out: Vec<PathBuf> = labels
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, v)| {
            let p = v["protocol"].as_str().unwrap_or_default();
            p.rsplit('/').next().is_some_and(|p| p == "http" || p == "mysql")
        })
        .map(|(name, _)| corpus(name))
        .collect();
    for c in ["http-then-resp.pcap", "linktypes/ethernet.pcap"] {
        out.push(capture(c));
    }
    for c in ["http-benign.pcap", "http-slow-link.pcap", "mysql-benign.pcap"] {
        out.push(threat_capture(c));
    }
    out
}

#[test]
fn benign_captures_raise_none_of_these_threats() {
    let mut flows = 0;
    for path in benign_captures() {
        let o = run(&path, slowloris::Config::default(), auth_fail::Config::default());
        for t in &o.threats {
            for k in KINDS {
                assert!(!t.kinds.contains(k), "{}: {k:?} {:?}", path.display(), t.first);
            }
        }
        assert!(o.slowloris.is_empty(), "{}: {:?}", path.display(), o.slowloris);
        assert!(o.auth.is_empty(), "{}: {:?}", path.display(), o.auth);
        flows += o.flows;
    }
    assert!(flows > 700, "{flows}");
}

/// `http_client.py smuggling`, in its order: the form each connection must be recorded as.
const SMUGGLING_FORMS: &[(ThreatId, &str)] = &[
    (ThreatId::HttpRequestSmuggling, "content_length_with_transfer_encoding"),
    (ThreatId::HttpRequestSmuggling, "content_length_with_transfer_encoding"),
    (ThreatId::HttpRequestSmuggling, "content_length_conflict"),
    (ThreatId::HttpRequestSmuggling, "content_length_list_conflict"),
    (ThreatId::HttpNegativeBodyLength, "negative_content_length"),
    (ThreatId::HttpNegativeBodyLength, "signed_content_length"),
    (ThreatId::HttpNegativeBodyLength, "overflowing_content_length"),
    (ThreatId::HttpRequestSmuggling, "transfer_encoding_obfuscated"),
    (ThreatId::HttpRequestSmuggling, "transfer_encoding_not_chunked"),
    (ThreatId::HttpRequestSmuggling, "transfer_encoding_repeated"),
    (ThreatId::HttpRequestSmuggling, "spaced_framing_field_name"),
    (ThreatId::HttpRequestSmuggling, "folded_framing_field"),
    (ThreatId::HttpRequestSmuggling, "folded_framing_field"),
    (ThreatId::HttpRequestSmuggling, "underscore_framing_field_name"),
    (ThreatId::HttpRequestSmuggling, "transfer_encoding_in_http10"),
    (ThreatId::HttpRequestSmuggling, "chunk_size_invalid"),
    (ThreatId::HttpRequestSmuggling, "bare_lf_in_chunked"),
    (ThreatId::HttpRequestSmuggling, "chunk_missing_crlf"),
    (ThreatId::HttpRequestSmuggling, "chunk_size_overflow"),
    (ThreatId::HttpRequestSmuggling, "framing_field_in_trailer"),
];

/// `http_client.py struts`, in its order.
const STRUTS_FORMS: &[&str] = &[
    "ognl_member_access",
    "ognl_expression",
    "ognl_member_access",
    "ognl_probe",
    "ognl_member_access",
    "ognl_member_access",
    "xstream_gadget",
];

#[test]
fn recorded_smuggling_and_struts_attacks_are_found_with_their_form() {
    for (name, forms) in [
        ("http-smuggling.pcap", SMUGGLING_FORMS.to_vec()),
        ("http-struts.pcap", STRUTS_FORMS.iter().map(|r| (ThreatId::ApacheStrutsRce, *r)).collect()),
    ] {
        let o = run(&threat_capture(name), slowloris::Config::default(), auth_fail::Config::default());
        assert_eq!(o.threats.len(), forms.len(), "{name}: one connection per form");
        for (i, (t, (id, reason))) in o.threats.iter().zip(forms).enumerate() {
            let first = t.first.unwrap_or_else(|| panic!("{name} #{i}: nothing recorded"));
            assert_eq!((first.id, first.dir, first.reason), (id, Dir::ToServer, reason), "{name} #{i}: {first:?}");
            assert!(!first.evidence.is_empty());
        }
        assert!(o.slowloris.is_empty() && o.auth.is_empty());
    }
}

/// Detection and false-alarm rates of `http_slowloris` and `mysql_access_denied` on the
/// recordings and the benign captures (printed; the numbers in the report come from
/// here).
#[test]
fn slowloris_and_auth_failure_rates() {
    let slow_cfg = slowloris::Config::default();
    let auth_cfg = auth_fail::Config::default();
    // Slowloris: slowhttptest -H, 40 connections.
    let o = run(&threat_capture("http-slowloris.pcap"), slow_cfg, auth_cfg);
    let (t, f) = o.slowloris.first().copied().expect("slowhttptest found");
    assert_eq!(f.server.port, 80);
    let detect_s = (t - o.start_ns) as f64 / 1e9;
    eprintln!(
        "http_slowloris positive (slowhttptest -H -c 40 -i 10): {} sessions with open heads, {} offending ({:.1}%), \
first finding {detect_s:.1} s after the first frame ({} slow / {} open at that server), {} findings",
        o.http_sessions,
        o.offending,
        100.0 * o.offending as f64 / o.http_sessions.max(1) as f64,
        f.slow_sessions,
        f.open_sessions,
        o.slowloris.len()
    );
    assert!(o.offending * 10 >= o.http_sessions * 9, "{} of {}", o.offending, o.http_sessions);
    assert!(detect_s <= 8.0, "{detect_s}");
    // Benign.
    let mut sessions = 0;
    let mut over = [0usize; 2]; // heads open at least 3 s (NeuVector's limit), 5 s
    let mut time_only = (0usize, 0usize); // offending, findings without the rate test
    let mut longest = (0, 0);
    let mut http_flows = 0;
    let mut offending = 0;
    let mut findings = 0;
    let mut captures = 0;
    let mut failed = 0;
    let mut flagged = 0;
    let mut auth_findings = 0;
    for path in benign_captures() {
        let o = run(&path, slow_cfg, auth_cfg);
        sessions += o.http_sessions;
        http_flows += o.http_flows;
        longest = longest.max(o.longest_open);
        over[0] += o.open_ns.values().filter(|&&t| t >= 3_000_000_000).count();
        over[1] += o.open_ns.values().filter(|&&t| t >= slow_cfg.min_open_ns).count();
        let t = run(&path, slowloris::Config { max_rate: u32::MAX, ..slow_cfg }, auth_cfg);
        time_only.0 += t.offending;
        time_only.1 += t.slowloris.len();
        offending += o.offending;
        findings += o.slowloris.len();
        failed += o.mysql_failed_sessions;
        flagged += o.mysql_flagged_sessions;
        auth_findings += o.auth.len();
        captures += 1;
    }
    eprintln!(
        "http_slowloris benign ({captures} captures incl. 12 large heads over a 64 kbit/s link): {http_flows} HTTP sessions, \
{sessions} with a head open after a segment (longest {:.1} s), {offending} offending ({:.2}%), {findings} findings",
        longest.0 as f64 / 1e9,
        100.0 * offending as f64 / sessions.max(1) as f64
    );
    assert!(longest.0 >= slow_cfg.min_open_ns, "the slow link keeps heads open past the time threshold: {longest:?}");
    eprintln!(
        "http_slowloris benign: {} heads open >= 3 s (NeuVector resets each), {} >= 5 s; without the rate test: {} offending, {} findings",
        over[0], over[1], time_only.0, time_only.1
    );
    assert_eq!((offending, findings), (0, 0));
    // MySQL: a wrong-password loop of 20 logins.
    let o = run(&threat_capture("mysql-access-denied.pcap"), slow_cfg, auth_cfg);
    let (_, f) = o.auth.first().copied().expect("the loop is found");
    eprintln!(
        "mysql_access_denied positive (20 wrong passwords): {} failed sessions, {} flagged ({:.1}%), \
first finding at failure {} ({} in window), {} findings",
        o.mysql_failed_sessions,
        o.mysql_flagged_sessions,
        100.0 * o.mysql_flagged_sessions as f64 / o.mysql_failed_sessions.max(1) as f64,
        f.total,
        f.in_window,
        o.auth.len()
    );
    assert_eq!((o.mysql_failed_sessions, f.total), (20, auth_cfg.threshold));
    assert_eq!(o.mysql_flagged_sessions, 20 - auth_cfg.threshold as usize + 1);
    eprintln!(
        "mysql_access_denied benign (corpus failed login, two typos then work): {failed} failed sessions, {flagged} flagged, {auth_findings} findings"
    );
    assert!(failed >= 3);
    assert_eq!((flagged, auth_findings), (0, 0));
}
