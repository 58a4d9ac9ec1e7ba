//! The TLS and SSH threats through the whole pipeline: `warden replay` (the library the binary
//! runs) over the captures of `tests/captures/threats/` (README there: Zeek's traces, openssl
//! s_client / s_server recordings, crafted peers), with every address a workload in protect or
//! alert mode and the threats' actions from `[threats]`.
//!
//! Truth comes from the captures: each names the threats its TLS or SSH session must raise
//! (the parsers' unit tests check the same bytes detection by detection). Here: the session's
//! record lists them, the replay counts them and sends one merged event each, protect mode
//! blocks the session for the threats whose action is `drop` or `reset` (frames after the
//! detection dropped, counted in the record) and only reports those whose action is `alert`
//! (TLS 1.0 and 1.1 by default), `[threats.<id>] action` changes that, and alert mode drops
//! nothing. The benign captures (the corpus' TLS and SSH, Zeek's benign traces) raise none.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use warden_control::{ConnectionRecord, Event};
use warden_dp::config::Config;
use warden_dp::replay::{replay_file, ReplaySummary};

/// The threats the TLS and SSH parsers detect.
const OURS: [&str; 6] = ["ssh_v1", "tls_heartbleed", "tls_cipher_overflow", "tls_sslv2_sslv3", "tls_1_0", "tls_1_1"];

/// Each capture, the server port of its TLS/SSH session and the threats that session raises.
const CAPTURES: &[(&str, u16, &[&str])] = &[
    ("zeek-heartbleed.pcap", 443, &["tls_heartbleed"]),
    ("zeek-heartbleed-success.pcap", 443, &["tls_heartbleed"]),
    ("zeek-heartbleed-encrypted-success.pcap", 443, &["tls_1_0", "tls_heartbleed"]),
    ("zeek-heartbleed-encrypted-short.pcap", 4443, &["tls_1_0", "tls_heartbleed"]),
    ("zeek-ssl-v2.pcap", 443, &["tls_sslv2_sslv3"]),
    ("zeek-tls1_1.pcap", 443, &["tls_1_1"]),
    ("zeek-signed_certificate_timestamp_tls1_0.pcap", 443, &["tls_1_0"]),
    ("openssl-tls1.pcap", 443, &["tls_1_0"]),
    ("openssl-tls1_1.pcap", 443, &["tls_1_1"]),
    ("sslv3-hello-openssl.pcap", 443, &["tls_sslv2_sslv3"]),
    ("sslv3-session.pcap", 443, &["tls_sslv2_sslv3"]),
    ("sslv2-format-hello-openssl.pcap", 443, &["tls_sslv2_sslv3", "tls_1_0"]),
    ("sslv2-hello-openssl.pcap", 443, &["tls_sslv2_sslv3"]),
    ("heartbleed-openssl.pcap", 443, &["tls_1_1", "tls_heartbleed"]),
    ("overflow-ciphers-openssl.pcap", 443, &["tls_cipher_overflow"]),
    // The parser reports the oversized record and rejects the stream in the same feed.
    ("overflow-record-openssl.pcap", 443, &["tls_cipher_overflow"]),
    ("overflow-sslv2-openssl.pcap", 443, &["tls_sslv2_sslv3", "tls_cipher_overflow"]),
    ("zeek-ssh1-ssh2-fingerprints.pcap", 2222, &["ssh_v1"]),
    ("ssh1-compat.pcap", 22, &["ssh_v1"]),
];

/// Captures with TLS or SSH sessions that raise none of these threats.
const BENIGN: &[&str] = &[
    "../../../../corpus/tls.pcap",
    "../../../../corpus/tls12.pcap",
    "../../../../corpus/ssh.pcap",
    "zeek-heartbleed-encrypted.pcap",
    "zeek-hrr.pcap",
    "zeek-chrome-1250-tls-x25519-kyber.pcap",
    "zeek-tls13_wolfssl.pcap",
    "zeek-ecdhe.pcap",
    "zeek-dhe.pcap",
    "zeek-ecdsa-cert.pcap",
    "ssh1-server-openssh-client.pcap",
    "zeek-ssh_version_199.pcap",
    "zeek-single-conn.pcap",
    "zeek-server-pre-banner-data.pcap",
    "zeek-ssh_kex_curve25519.pcap",
];

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A directory of the test's own under the system temporary directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("warden-threats-tls-ssh-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn capture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/captures/threats").join(name)
}

/// Replays `cap` with every server of the capture a workload in `mode` (the servers are found
/// by a first replay without policy), all TCP allowed, and `threats` appended to the
/// configuration (`[threats.<id>]` tables).
fn replay(cap: &Path, mode: &str, threats: &str) -> (Vec<ConnectionRecord>, ReplaySummary) {
    let dir = Scratch::new();
    let cfg_path = dir.0.join("plain.toml");
    std::fs::write(&cfg_path, "").unwrap();
    let (plain, _) = replay_file(cap, &Config::load(&cfg_path).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", cap.display()));
    let servers: BTreeSet<&str> = plain.iter().filter(|r| r.ip_proto == 6).map(|r| r.server_ip.as_str()).collect();
    let ips: Vec<String> = servers.iter().map(|s| format!("{s:?}")).collect();
    let pol = dir.0.join("policy.toml");
    std::fs::write(
        &pol,
        format!(
            "[[workload]]\nid = \"servers\"\nips = [{}]\nmode = \"{mode}\"\n\n\
             [[rule]]\nid = 1\nfrom = \"any\"\nto = \"any\"\nip_proto = \"tcp\"\naction = \"allow\"\n",
            ips.join(", ")
        ),
    )
    .unwrap();
    let cfg_path = dir.0.join("warden.toml");
    std::fs::write(&cfg_path, format!("[policy]\nfile = {:?}\n\n{threats}", pol.display().to_string())).unwrap();
    let cfg = Config::load(&cfg_path).unwrap_or_else(|e| panic!("{e}"));
    replay_file(cap, &cfg).unwrap_or_else(|e| panic!("{}: {e}", cap.display()))
}

/// The record of the TLS/SSH session on `port` (the one with most frames).
fn session(records: &[ConnectionRecord], port: u16, what: &str) -> ConnectionRecord {
    records
        .iter()
        .filter(|r| r.server_port == port && r.ip_proto == 6)
        .max_by_key(|r| r.packets_to_server + r.packets_to_client)
        .unwrap_or_else(|| panic!("{what}: no session on port {port}: {records:#?}"))
        .clone()
}

fn ours(r: &ConnectionRecord) -> BTreeSet<String> {
    r.threats.iter().map(|t| t.id.clone()).filter(|id| OURS.contains(&id.as_str())).collect()
}

fn dropped(r: &ConnectionRecord) -> u64 {
    r.packets_dropped_to_server + r.packets_dropped_to_client
}

/// The default action of each of these threats in protect mode.
fn blocks_by_default(id: &str) -> bool {
    !matches!(id, "tls_1_0" | "tls_1_1")
}

#[test]
fn protect_mode_blocks_what_the_default_actions_block() {
    for (file, port, want) in CAPTURES {
        let (records, sum) = replay(&capture(file), "protect", "");
        let r = session(&records, *port, file);
        let want: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
        assert_eq!(ours(&r), want, "{file}: {:?}", r.threats);
        for t in r.threats.iter().filter(|t| want.contains(&t.id)) {
            assert!(!t.reason.is_empty(), "{file}: {t:?}");
        }
        // Counted, and one merged event per threat of the session, with the direction that
        // carried it, the parser's reason and the offending frame; the first detection of the
        // session also with the parser's evidence (a parser keeps evidence for its first only).
        let mut evidence = 0;
        for id in &want {
            let hits = sum.threats.iter().find(|t| t.0 == id.as_str()).map_or(0, |t| t.1);
            assert!(hits >= 1, "{file}: {id} not counted: {:?}", sum.threats);
            let events: Vec<_> = sum
                .threat_events
                .iter()
                .filter_map(|e| match e {
                    Event::Threat { threat, .. } if threat.id == *id => Some(threat),
                    _ => None,
                })
                .collect();
            assert_eq!(events.len(), 1, "{file}: events of {id}");
            let t = events[0];
            assert!(t.dir == "to_server" || t.dir == "to_client", "{file}: {t:?}");
            assert!(!t.reason.is_empty() && t.frame_len.unwrap_or(0) > 0, "{file}: {t:?}");
            evidence += usize::from(!t.evidence.is_empty());
        }
        assert!(evidence >= 1, "{file}: no evidence");
        let blocking: Vec<&String> = want.iter().filter(|id| blocks_by_default(id)).collect();
        match blocking.first() {
            // The first blocking threat detected blocks the session; what came after it
            // (at least the peer's answer or the closing handshake) is dropped.
            Some(_) => {
                let block = r.threat_block.clone().unwrap_or_else(|| panic!("{file}: not blocked: {r:#?}"));
                assert!(blocking.contains(&&block), "{file}: blocked by {block}");
                assert!(dropped(&r) > 0, "{file}: nothing dropped after {block}");
            }
            None => {
                assert_eq!(r.threat_block, None, "{file}");
                assert_eq!(dropped(&r), 0, "{file}");
            }
        }
    }
}

#[test]
fn alert_mode_reports_and_drops_nothing() {
    for (file, port, want) in CAPTURES {
        let (records, sum) = replay(&capture(file), "alert", "");
        let r = session(&records, *port, file);
        assert_eq!(ours(&r), want.iter().map(|s| s.to_string()).collect(), "{file}");
        assert_eq!((r.threat_block.as_deref(), dropped(&r)), (None, 0), "{file}");
        assert!(sum.threats.iter().all(|t| t.2 == 0), "{file}: {:?}", sum.threats);
    }
}

#[test]
fn threat_actions_from_the_configuration() {
    // TLS 1.0 is only reported by default; `drop` cuts the openssl -tls1 session after the
    // ServerHello (the client's key exchange, the application data and the server's answer).
    let (records, _) = replay(&capture("openssl-tls1.pcap"), "protect", "[threats.tls_1_0]\naction = \"drop\"\n");
    let r = session(&records, 443, "tls1 drop");
    assert_eq!((r.threat_block.as_deref(), r.threat_action.as_deref()), (Some("tls_1_0"), Some("drop")));
    assert!(r.packets_dropped_to_server >= 2 && r.packets_dropped_to_client >= 1, "{r:#?}");
    // Switched off: not counted, no event, not blocked (the record still lists what the
    // parser saw, as for every parser's threats).
    let (records, sum) = replay(&capture("heartbleed-openssl.pcap"), "protect", "[threats.tls_heartbleed]\naction = \"off\"\n");
    let r = session(&records, 443, "heartbleed off");
    assert_eq!((r.threat_block.as_deref(), dropped(&r)), (None, 0));
    assert!(sum.threats.iter().all(|t| t.0 != "tls_heartbleed"), "{:?}", sum.threats);
    assert!(sum.threat_events.iter().all(|e| !matches!(e, Event::Threat { threat, .. } if threat.id == "tls_heartbleed")));
    assert!(sum.threats.iter().any(|t| t.0 == "tls_1_1"), "{:?}", sum.threats);
    // Alert instead of reset: reported, nothing dropped.
    let (records, _) = replay(&capture("ssh1-compat.pcap"), "protect", "[threats.ssh_v1]\naction = \"alert\"\n");
    let r = session(&records, 22, "ssh_v1 alert");
    assert_eq!(ours(&r), ["ssh_v1".to_string()].into_iter().collect());
    assert_eq!((r.threat_block.as_deref(), dropped(&r)), (None, 0));
}

#[test]
fn benign_tls_and_ssh_raise_none_of_them() {
    for file in BENIGN {
        let (records, sum) = replay(&capture(file), "protect", "");
        let apps: BTreeSet<&str> = records.iter().map(|r| r.app.as_str()).collect();
        assert!(apps.contains("tls") || apps.contains("ssh"), "{file}: apps {apps:?}");
        for r in &records {
            assert!(ours(r).is_empty(), "{file}: {:?}", r.threats);
        }
        assert!(sum.threats.iter().all(|t| !OURS.contains(&t.0)), "{file}: {:?}", sum.threats);
    }
}
