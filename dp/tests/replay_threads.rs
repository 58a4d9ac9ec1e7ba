//! `warden replay --threads N` gives what one pipeline gives: the same records (content and
//! order), counters and threat detections, on every capture kept for tests (public traces,
//! threats, attacks, evasion forms, tunnels) and on a mixed capture built from the corpus
//! (every corpus flow in several passes over many address pairs, as `perf/replay/mkpcap.py`
//! builds the benchmark's), with 2 and 3 pipelines.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use warden_control::Event;
use warden_dp::config::Config;
use warden_dp::replay::{replay_file_threads, ReplaySummary};

fn dir(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn captures(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            captures(&p, out);
        } else if p.extension().is_some_and(|e| e == "pcap" || e == "pcapng") {
            out.push(p);
        }
    }
}

/// Records as JSON, the summary, detections per threat.
type Outcome = (Vec<String>, ReplaySummary, BTreeMap<String, u64>);

/// What must not depend on the number of pipelines: the records as JSON, the summary without
/// its timings and thread figures, and the threat detections carried by the events (their
/// counts per threat: events are merged per pipeline, as per worker inline).
fn outcome(path: &Path, cfg: &Config, threads: usize) -> Result<Outcome, String> {
    let (records, mut sum) = replay_file_threads(path, cfg, threads).map_err(|e| e.to_string())?;
    assert_eq!(sum.threads, threads);
    assert_eq!(sum.thread_cpu_s.len(), threads);
    let mut counts = BTreeMap::new();
    for e in std::mem::take(&mut sum.threat_events) {
        if let Event::Threat { threat, .. } = e {
            *counts.entry(threat.id).or_insert(0) += u64::from(threat.count);
        }
    }
    sum.seconds = 0.0;
    sum.cpu_s = 0.0;
    sum.threads = 0;
    sum.thread_cpu_s.clear();
    let lines = records.iter().map(|r| serde_json::to_string(r).unwrap()).collect();
    Ok((lines, sum, counts))
}

/// Threats whose per-core detector keys its state by something that spans host pairs (the
/// destination of a flood, the server of slow heads, the source of sessions): with the flows
/// of those pairs split over pipelines (or workers), each sees part of them.
const SPANNING: [&str; 4] = ["tcp_syn_flood", "icmp_flood", "http_slowloris", "ip_src_session_limit"];

/// `o` without the detections of [`SPANNING`] threats.
fn without_spanning(mut o: Outcome) -> Outcome {
    o.1.threats.retain(|t| !SPANNING.contains(&t.0));
    o.2.retain(|k, _| !SPANNING.contains(&k.as_str()));
    o
}

#[test]
fn every_test_capture_gives_the_same_with_more_pipelines() {
    let mut files = Vec::new();
    captures(&dir("tests/captures"), &mut files);
    assert!(files.len() > 300, "{}", files.len());
    // The largest of these captures holds fewer than 6 000 frames, so neither the session
    // table nor the app context pool fills (a full one decides by what each pipeline holds);
    // smaller ones are quicker to set up 1 200 times.
    assert!(files.iter().all(|f| std::fs::metadata(f).unwrap().len() < 400_000));
    let mut cfg = Config::default();
    cfg.sessions.max = 8192;
    cfg.inspection.max_sessions = 8192;
    let (mut flows, mut spanning) = (0, Vec::new());
    for f in &files {
        let one = outcome(f, &cfg, 1);
        let two = outcome(f, &cfg, 2);
        match (one, two) {
            (Ok(one), Ok(two)) => {
                flows += one.0.len();
                assert!(one.0 == two.0, "{}: records differ", f.display());
                if one != two {
                    // Only the detections of threats that span host pairs may differ.
                    assert_eq!(without_spanning(one), without_spanning(two), "{}", f.display());
                    spanning.push(f.file_name().unwrap().to_string_lossy().into_owned());
                }
            }
            (one, two) => assert_eq!(one.map(|_| ()), two.map(|_| ()), "{}", f.display()),
        }
    }
    assert!(flows > 1000, "{flows}");
    // The spoofed SYN flood to one server from random sources, and nothing else.
    assert_eq!(spanning, ["syn-flood-spoofed.pcap"]);
}

/// A pcap of the corpus captures in `passes` passes, each re-addressed into its own pair of
/// 198.18.0.0/15 addresses (client 198.18.0.k, server 198.19.0.k; IPv4 header checksum
/// fixed) and two hours later than the one before, as `perf/replay/mkpcap.py` writes it.
fn mixed_corpus(passes: u8) -> Vec<u8> {
    let mut packets: Vec<(u32, u32, Vec<u8>)> = Vec::new();
    let mut files = Vec::new();
    captures(&dir("../corpus"), &mut files);
    for f in files {
        let mut r = pcap_file::pcap::PcapReader::new(std::fs::File::open(&f).unwrap()).unwrap();
        if r.header().datalink != pcap_file::DataLink::ETHERNET {
            continue;
        }
        let nano = r.header().ts_resolution == pcap_file::TsResolution::NanoSecond;
        while let Some(Ok(p)) = r.next_raw_packet() {
            let usec = if nano { p.ts_frac / 1000 } else { p.ts_frac };
            packets.push((p.ts_sec, usec, p.data.to_vec()));
        }
    }
    let base = packets.iter().map(|p| p.0).min().unwrap();
    let mut out = Vec::new();
    for w in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 65535, 1] {
        out.extend_from_slice(&w.to_le_bytes());
    }
    for k in 0..passes {
        for (sec, usec, pkt) in &packets {
            let mut p = pkt.clone();
            if p.len() >= 34 && p[12..14] == [0x08, 0x00] {
                let ihl = usize::from(p[14] & 0x0f) * 4;
                if ihl >= 20 && p.len() >= 14 + ihl {
                    for at in [26, 30] {
                        if p[at..at + 2] == [198, 18] {
                            let second = if p[at + 3] != 2 { 18 } else { 19 };
                            p[at + 1..at + 4].copy_from_slice(&[second, 0, k]);
                        }
                    }
                    p[24..26].copy_from_slice(&[0, 0]);
                    let mut s: u32 = p[14..14 + ihl].chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum();
                    while s >> 16 != 0 {
                        s = (s & 0xffff) + (s >> 16);
                    }
                    p[24..26].copy_from_slice(&(!(s as u16)).to_be_bytes());
                }
            }
            let ts = sec - base + 1_700_000_000 + u32::from(k) * 7200;
            for w in [ts, *usec, p.len() as u32, p.len() as u32] {
                out.extend_from_slice(&w.to_le_bytes());
            }
            out.extend_from_slice(&p);
        }
    }
    out
}

#[test]
fn a_mixed_corpus_capture_gives_the_same_with_more_pipelines() {
    let path = std::env::temp_dir().join(format!("warden-replay-threads-{}.pcap", std::process::id()));
    std::fs::write(&path, mixed_corpus(6)).unwrap();
    let cfg = Config::default();
    let one = outcome(&path, &cfg, 1);
    let more = [2, 3].map(|n| outcome(&path, &cfg, n));
    std::fs::remove_file(&path).ok();
    let (lines, sum, counts) = one.unwrap();
    assert!(lines.len() > 1000 && sum.frames > 50_000, "{} records, {sum:?}", lines.len());
    assert!(counts.get("sql_injection").is_some_and(|n| *n > 0), "{counts:?}");
    for m in more {
        let (l, s, c) = m.unwrap();
        assert_eq!(s, sum);
        assert_eq!(c, counts);
        assert!(l == lines, "records differ");
    }
}
