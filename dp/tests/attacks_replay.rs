//! The attack suite on crafted captures: `warden replay --policy` (the binary) over each capture
//! of `tests/captures/attacks/` (README there: what each one is, how `make.py` made it), under
//! a protect policy and an alert policy for the workload `web`.
//!
//! Truth comes from the capture itself: every frame on web's denied port 2222 is the
//! attacker's (or web's answer to it) and must be dropped in protect mode, all counted in the
//! records' `*_dropped_*` fields, with the reason (`midstream` + `drop_flow`, or
//! `policy_denied`); every other frame is the control connection, which the policy allows and
//! which must pass untouched. Two more captures exhaust what inspection needs while the
//! verdict depends on the app (the app context pool, the stream buffer cap), with the
//! `[inspection]` limits given through `--config`. In alert mode nothing is dropped and the
//! attack shows in the records (`midstream` + `pass_flow`, or `violation`); frames spoofed
//! from web's address are also counted in the replay's summary (`spoofed`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use pcap_file::pcap::PcapReader;
use warden_control::ConnectionRecord;

const WEB_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
const EVIL_MAC: [u8; 6] = [2, 0, 0, 0, 1, 9];
const WEB: [&str; 2] = ["198.18.0.2", "2001:db8::2"];
const DENIED: u16 = 2222;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A directory of the test's own under the system temporary directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("warden-attacks-replay-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Web's policy in `mode`: TCP 443 out, HTTP on TCP 8080 in, nothing else; web sends only from
/// its MAC.
fn policy(mode: &str) -> String {
    format!(
        r#"
[[workload]]
id = "web"
ips = ["198.18.0.2", "2001:db8::2"]
macs = ["02:00:00:00:00:02"]
mode = "{mode}"

[[rule]]
id = 1
from = "web"
to = "any"
ip_proto = "tcp"
ports = ["443"]
action = "allow"

[[rule]]
id = 2
from = "any"
to = "web"
ip_proto = "tcp"
ports = ["8080"]
apps = ["http"]
action = "allow"
"#
    )
}

fn capture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/captures/attacks").join(name)
}

/// What `warden replay` printed: the records (stdout) and the summary line (stderr).
struct Replay {
    records: Vec<ConnectionRecord>,
    summary: String,
}

impl Replay {
    /// The count the summary gives for `what` (`"... 3 spoofed, ..."`).
    fn summary_count(&self, what: &str) -> u64 {
        let words: Vec<&str> = self.summary.split([' ', ',']).filter(|w| !w.is_empty()).collect();
        let i = words
            .iter()
            .position(|w| *w == what)
            .unwrap_or_else(|| panic!("no {what} in the summary: {}", self.summary));
        words[i - 1].parse().unwrap()
    }
}

/// Runs `warden replay --policy` (and `--config` when `config` is given) over `cap` with web
/// in `mode`.
fn replay(cap: &Path, mode: &str, config: Option<&str>) -> Replay {
    let dir = Scratch::new();
    let pol = dir.0.join("policy.toml");
    std::fs::write(&pol, policy(mode)).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_warden"));
    cmd.arg("replay").arg("--policy").arg(&pol);
    if let Some(text) = config {
        let cfg = dir.0.join("warden.toml");
        std::fs::write(&cfg, text).unwrap();
        cmd.arg("--config").arg(&cfg);
    }
    let out = cmd.arg(cap).env("RUST_LOG", "warn").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "warden replay {}: {stderr}", cap.display());
    let records = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let summary = stderr
        .lines()
        .find(|l| l.starts_with("replay "))
        .unwrap_or_else(|| panic!("no summary: {stderr}"))
        .to_string();
    Replay { records, summary }
}

/// One TCP frame of a capture, as far as the assertions need it.
#[derive(Debug)]
struct Frame {
    len: u64,
    /// TCP payload bytes.
    payload: u64,
    src_mac: [u8; 6],
    src: String,
    sport: u16,
    dport: u16,
}

impl Frame {
    fn attack(&self) -> bool {
        self.sport == DENIED || self.dport == DENIED
    }

    /// Claims web's address from another MAC.
    fn spoofed(&self) -> bool {
        WEB.contains(&self.src.as_str()) && self.src_mac != WEB_MAC
    }
}

/// The TCP frames of `cap` (Ethernet, IPv4 without options or IPv6 without extension headers,
/// as `make.py` writes them).
fn frames(cap: &Path) -> Vec<Frame> {
    let mut r = PcapReader::new(std::fs::File::open(cap).unwrap()).unwrap();
    let mut v = Vec::new();
    while let Some(p) = r.next_packet() {
        let d = p.unwrap().data;
        let (src, l4) = match u16::from_be_bytes([d[12], d[13]]) {
            0x0800 => {
                assert_eq!(d[23], 6, "not TCP");
                let ihl = usize::from(d[14] & 0x0f) * 4;
                (std::net::Ipv4Addr::new(d[26], d[27], d[28], d[29]).to_string(), 14 + ihl)
            }
            0x86dd => {
                assert_eq!(d[20], 6, "not TCP");
                let a: [u8; 16] = d[22..38].try_into().unwrap();
                (std::net::Ipv6Addr::from(a).to_string(), 54)
            }
            t => panic!("ethertype {t:#x}"),
        };
        let data_off = l4 + usize::from(d[l4 + 12] >> 4) * 4;
        v.push(Frame {
            len: d.len() as u64,
            payload: (d.len() - data_off) as u64,
            src_mac: d[6..12].try_into().unwrap(),
            src,
            sport: u16::from_be_bytes([d[l4], d[l4 + 1]]),
            dport: u16::from_be_bytes([d[l4 + 2], d[l4 + 3]]),
        });
    }
    assert!(v.iter().any(|f| f.src_mac == EVIL_MAC), "{}: no attacker frame", cap.display());
    v
}

fn attack_record(r: &ConnectionRecord) -> bool {
    r.client_port == DENIED || r.server_port == DENIED
}

/// Protect mode: every frame of the attack is dropped and accounted for in the records with
/// its reason; the spoofed ones belong to no session and are counted as spoofed; the control
/// passes untouched. Returns the attack's inspection reasons in record order.
fn check_protect(name: &str) -> Vec<String> {
    let cap = capture(name);
    let frames = frames(&cap);
    let r = replay(&cap, "protect", None);
    let ctx = format!("{name} (protect): {:#?}", r.records);
    let attack: Vec<&ConnectionRecord> = r.records.iter().filter(|r| attack_record(r)).collect();
    assert!(!attack.is_empty(), "no record of the attack: {ctx}");
    for a in &attack {
        assert_eq!(a.verdict.as_deref(), Some("denied"), "{ctx}");
        assert_eq!(a.server_workload.as_deref().or(a.client_workload.as_deref()), Some("web"), "{ctx}");
        // Nothing of it went anywhere, in either direction.
        assert_eq!((a.packets_dropped_to_server, a.packets_dropped_to_client), (a.packets_to_server, a.packets_to_client), "{ctx}");
        assert_eq!((a.bytes_dropped_to_server, a.bytes_dropped_to_client), (a.bytes_to_server, a.bytes_to_client), "{ctx}");
        match a.inspection_reason.as_deref() {
            Some("midstream") => {
                assert_eq!(a.exception_action.as_deref(), Some("drop_flow"), "{ctx}");
                assert_eq!(a.inspection.as_deref(), Some("bypassed"), "{ctx}");
            }
            Some("policy_denied") => {
                assert_eq!(a.exception_action, None, "{ctx}");
                assert_eq!(a.inspection.as_deref(), Some("none"), "{ctx}");
                // Decided the right way round: the attacker is the client of port 2222.
                assert_eq!(a.server_port, DENIED, "{ctx}");
                assert!(!WEB.contains(&a.client_ip.as_str()), "{ctx}");
            }
            other => panic!("reason {other:?}: {ctx}"),
        }
    }
    // Every frame of the attack is in exactly one record and dropped there, bytes included,
    // except the spoofed ones, which open nothing and are counted apart.
    let (spoofed, counted): (Vec<&Frame>, Vec<&Frame>) = frames.iter().filter(|f| f.attack()).partition(|f| f.spoofed());
    let dropped: u64 = attack.iter().map(|a| a.packets_dropped_to_server + a.packets_dropped_to_client).sum();
    let dropped_bytes: u64 = attack.iter().map(|a| a.bytes_dropped_to_server + a.bytes_dropped_to_client).sum();
    assert_eq!(dropped, counted.len() as u64, "{ctx}");
    assert_eq!(dropped_bytes, counted.iter().map(|f| f.len).sum::<u64>(), "{ctx}");
    assert_eq!(r.summary_count("spoofed"), spoofed.len() as u64, "{}", r.summary);
    // The attacker's own frames among them, in the direction each record says it sent them.
    let from_evil: u64 = attack
        .iter()
        .map(|a| if WEB.contains(&a.client_ip.as_str()) { a.packets_dropped_to_client } else { a.packets_dropped_to_server })
        .sum();
    let evil_frames = counted.iter().filter(|f| f.src_mac == EVIL_MAC).count() as u64;
    assert_eq!(from_evil, evil_frames, "{ctx}");
    check_control(name, &frames, &r.records);
    attack.iter().map(|a| a.inspection_reason.clone().unwrap()).collect()
}

/// The control connections (every frame off port 2222): allowed by a rule, nothing dropped,
/// no exception, every frame accounted for.
fn check_control(name: &str, frames: &[Frame], records: &[ConnectionRecord]) {
    let ctx = format!("{name}: {records:#?}");
    let control: Vec<&ConnectionRecord> = records.iter().filter(|r| !attack_record(r)).collect();
    assert!(!control.is_empty(), "no control record: {ctx}");
    for c in &control {
        assert_eq!(c.verdict.as_deref(), Some("allowed"), "{ctx}");
        assert!(matches!(c.rule_id, Some(1 | 2)), "{ctx}");
        assert_eq!((c.packets_dropped_to_server, c.packets_dropped_to_client), (0, 0), "{ctx}");
        assert_eq!((c.bytes_dropped_to_server, c.bytes_dropped_to_client), (0, 0), "{ctx}");
        assert_eq!((c.exception_action.as_deref(), c.inspection_reason.as_deref()), (None, None), "{ctx}");
        assert!(c.packets_to_server > 0 && c.packets_to_client > 0, "{ctx}");
    }
    let seen: u64 = control.iter().map(|c| c.packets_to_server + c.packets_to_client).sum();
    assert_eq!(seen, frames.iter().filter(|f| !f.attack()).count() as u64, "{ctx}");
}

/// Alert mode: every frame forwarded (none dropped, all accounted for), and the attack
/// reported: returns the attack's records for the caller's own check.
fn check_alert(name: &str) -> (Vec<ConnectionRecord>, Replay) {
    let cap = capture(name);
    let frames = frames(&cap);
    let r = replay(&cap, "alert", None);
    let ctx = format!("{name} (alert): {:#?}", r.records);
    for x in &r.records {
        assert_eq!((x.packets_dropped_to_server, x.packets_dropped_to_client), (0, 0), "{ctx}");
        assert_eq!((x.bytes_dropped_to_server, x.bytes_dropped_to_client), (0, 0), "{ctx}");
    }
    // Every frame in a record, except spoofed ones: forwarded, but they belong to no session.
    let seen: u64 = r.records.iter().map(|x| x.packets_to_server + x.packets_to_client).sum();
    assert_eq!(seen, frames.iter().filter(|f| !f.spoofed()).count() as u64, "{ctx}");
    check_control(name, &frames, &r.records);
    let attack = r.records.iter().filter(|x| attack_record(x)).cloned().collect();
    (attack, r)
}

/// In alert mode the attack is visible in a record: picked up mid-stream and passed
/// (`pass_flow`: inspected mid-stream), or a `violation`.
fn reported(attack: &[ConnectionRecord]) -> bool {
    attack.iter().any(|a| {
        (a.midstream && a.exception_action.as_deref() == Some("pass_flow") && a.inspection.as_deref() != Some("bypassed"))
            || a.verdict.as_deref() == Some("violation")
    })
}

fn each_family(name: &str, f: impl Fn(&str)) {
    f(&format!("{name}.pcap"));
    f(&format!("{name}-v6.pcap"));
}

#[test]
fn synack_first_cannot_make_the_workload_the_client() {
    each_family("synack-first", |cap| {
        // The SYN|ACK and what followed it on that session, then the attacker's real handshake
        // as a new session decided the right way round.
        assert_eq!(check_protect(cap), ["midstream", "policy_denied"], "{cap}");
        let (attack, r) = check_alert(cap);
        assert!(reported(&attack), "{cap}: {attack:#?}");
        assert_eq!(r.summary_count("spoofed"), 0);
    });
}

#[test]
fn a_bare_ack_first_is_midstream() {
    each_family("bare-ack", |cap| {
        assert_eq!(check_protect(cap), ["midstream", "policy_denied"], "{cap}");
        let (attack, _) = check_alert(cap);
        assert!(reported(&attack), "{cap}: {attack:#?}");
    });
}

#[test]
fn data_without_a_handshake_is_midstream() {
    each_family("data-first", |cap| {
        assert_eq!(check_protect(cap), ["midstream"], "{cap}");
        let (attack, _) = check_alert(cap);
        assert!(reported(&attack), "{cap}: {attack:#?}");
    });
}

#[test]
fn an_ack_after_a_denied_syn_does_not_revive_the_flow() {
    each_family("ack-after-denied-syn", |cap| {
        // The denied SYN ended after its linger; the late ACK opens a mid-stream session that
        // is dropped, not web's "connection to 443".
        assert_eq!(check_protect(cap), ["policy_denied", "midstream"], "{cap}");
        let (attack, _) = check_alert(cap);
        assert!(reported(&attack), "{cap}: {attack:#?}");
    });
}

#[test]
fn a_syn_spoofed_from_the_workloads_address_opens_nothing() {
    each_family("spoofed-syn", |cap| {
        // Only the attacker's own handshake is left, denied as it should be.
        assert_eq!(check_protect(cap), ["policy_denied"], "{cap}");
        // Alert forwards it and counts it, but it opens nothing there either: the attacker's
        // handshake is its own session, a violation, not web's "connection to 443".
        let (attack, r) = check_alert(cap);
        assert_eq!(r.summary_count("spoofed"), 1, "{}", r.summary);
        assert!(reported(&attack), "{cap}: {attack:#?}");
        assert!(attack.iter().all(|a| a.server_port == DENIED && !WEB.contains(&a.client_ip.as_str())), "{cap}: {attack:#?}");
    });
}

/// `[sessions] midstream` from the config file reaches replay: alert mode configured to drop
/// mid-stream sessions drops them (and only them), and says so.
#[test]
fn the_midstream_policy_of_the_config_file_applies() {
    let cap = capture("bare-ack.pcap");
    let frames = frames(&cap);
    let r = replay(&cap, "alert", Some("[sessions]\nmidstream = { alert = \"drop_flow\" }\n"));
    let ctx = format!("{:#?}", r.records);
    let mid = r
        .records
        .iter()
        .find(|x| x.inspection_reason.as_deref() == Some("midstream"))
        .unwrap_or_else(|| panic!("no midstream record: {ctx}"));
    assert_eq!((mid.exception_action.as_deref(), mid.verdict.as_deref()), (Some("drop_flow"), Some("denied")), "{ctx}");
    assert_eq!(mid.packets_dropped_to_server + mid.packets_dropped_to_client, mid.packets_to_server + mid.packets_to_client);
    assert!(mid.packets_dropped_to_server + mid.packets_dropped_to_client > 0, "{ctx}");
    // The real handshake after it is a violation in alert mode: reported, forwarded.
    let real = r
        .records
        .iter()
        .find(|x| attack_record(x) && x.inspection_reason.as_deref() != Some("midstream"))
        .unwrap_or_else(|| panic!("no record of the handshake: {ctx}"));
    assert_eq!((real.verdict.as_deref(), real.packets_dropped_to_server), (Some("violation"), 0), "{ctx}");
    check_control("bare-ack.pcap", &frames, &r.records);
}

/// The attacker's session (from its port 2222) to the allowed port, or panics.
fn from_attackers_port<'a>(records: &'a [ConnectionRecord], ctx: &str) -> &'a ConnectionRecord {
    let v: Vec<&ConnectionRecord> = records.iter().filter(|r| r.client_port == DENIED).collect();
    assert_eq!(v.len(), 1, "{ctx}");
    assert_eq!(v[0].server_port, 8080, "{ctx}");
    v[0]
}

/// Every app context taken (`[inspection] max_sessions = 4`: the control and three idle
/// handshakes hold them), a Redis connection to the HTTP-only port cannot be inspected: in
/// protect mode it is dropped whole (`inspection_pool_full`, `drop_flow`); in alert mode
/// forwarded and reported (`pass_flow`). With a pool to spare the same connection is inspected
/// and denied as Redis: only the exhausted pool made it an exception.
#[test]
fn an_exhausted_app_pool_does_not_let_an_undecided_session_through() {
    each_family("pool-full", |cap| {
        let path = capture(cap);
        let frames = frames(&path);
        let small = Some("[inspection]\nmax_sessions = 4\n");
        let attack_frames: Vec<&Frame> = frames.iter().filter(|f| f.attack()).collect();

        let r = replay(&path, "protect", small);
        let ctx = format!("{cap} (protect): {:#?}", r.records);
        let a = from_attackers_port(&r.records, &ctx);
        assert_eq!((a.inspection_reason.as_deref(), a.exception_action.as_deref()), (Some("inspection_pool_full"), Some("drop_flow")), "{ctx}");
        assert_eq!(a.verdict.as_deref(), Some("denied"), "{ctx}");
        assert_eq!(a.packets_dropped_to_server + a.packets_dropped_to_client, attack_frames.len() as u64, "{ctx}");
        assert_eq!(a.bytes_dropped_to_server + a.bytes_dropped_to_client, attack_frames.iter().map(|f| f.len).sum::<u64>(), "{ctx}");
        for x in r.records.iter().filter(|x| x.client_port != DENIED) {
            assert_eq!((x.packets_dropped_to_server, x.packets_dropped_to_client, x.exception_action.as_deref()), (0, 0, None), "{ctx}");
        }
        let control = r.records.iter().find(|x| x.client_port == 40001).unwrap();
        assert_eq!((control.verdict.as_deref(), control.app.as_str(), control.rule_id), (Some("allowed"), "http", Some(2)), "{ctx}");

        let r = replay(&path, "alert", small);
        let ctx = format!("{cap} (alert): {:#?}", r.records);
        let a = from_attackers_port(&r.records, &ctx);
        assert_eq!((a.inspection_reason.as_deref(), a.exception_action.as_deref()), (Some("inspection_pool_full"), Some("pass_flow")), "{ctx}");
        assert!(r.records.iter().all(|x| x.packets_dropped_to_server + x.packets_dropped_to_client == 0), "{ctx}");

        let r = replay(&path, "protect", None);
        let ctx = format!("{cap} (protect, default pool): {:#?}", r.records);
        let a = from_attackers_port(&r.records, &ctx);
        assert_eq!((a.app.as_str(), a.verdict.as_deref(), a.exception_action.as_deref()), ("redis", Some("denied"), None), "{ctx}");
        assert!(a.packets_dropped_to_server >= 1, "{ctx}");
    });
}

/// An HTTP request line that never ends keeps detection waiting while the stream buffer grows
/// past `[inspection] stream_session_cap` (4096 bytes): in protect mode the session is dropped
/// from the segment that crossed the cap on (`stream_session_cap`, `drop_flow`; the Redis
/// commands after it never pass), in alert mode forwarded and reported.
#[test]
fn a_stream_cap_reached_before_detection_does_not_let_the_session_through() {
    const CAP: u64 = 4096;
    let config = Some("[inspection]\nstream_session_cap = 4096\ndetect_bytes = 4096\n");
    each_family("stream-cap", |cap| {
        let path = capture(cap);
        let frames = frames(&path);
        // The attacker's frames from the one whose payload took the buffered bytes past the
        // cap (nothing of the endless line is consumed) to the end.
        let mut held = 0;
        let past_cap: Vec<&Frame> = frames
            .iter()
            .filter(|f| f.attack())
            .filter(|f| {
                held += f.payload;
                held > CAP
            })
            .collect();
        assert!(past_cap.len() >= 2, "the capture does not cross the cap");

        let r = replay(&path, "protect", config);
        let ctx = format!("{cap} (protect): {:#?}", r.records);
        let a = from_attackers_port(&r.records, &ctx);
        assert_eq!((a.inspection_reason.as_deref(), a.exception_action.as_deref()), (Some("stream_session_cap"), Some("drop_flow")), "{ctx}");
        assert_eq!(a.verdict.as_deref(), Some("denied"), "{ctx}");
        assert_eq!(a.packets_dropped_to_server, past_cap.len() as u64, "{ctx}");
        assert_eq!(a.bytes_dropped_to_server, past_cap.iter().map(|f| f.len).sum::<u64>(), "{ctx}");
        check_control(cap, &frames, &r.records);

        let r = replay(&path, "alert", config);
        let ctx = format!("{cap} (alert): {:#?}", r.records);
        let a = from_attackers_port(&r.records, &ctx);
        assert_eq!((a.inspection_reason.as_deref(), a.exception_action.as_deref()), (Some("stream_session_cap"), Some("pass_flow")), "{ctx}");
        assert!(r.records.iter().all(|x| x.packets_dropped_to_server + x.packets_dropped_to_client == 0), "{ctx}");
    });
}
