//! The whole corpus through `warden replay`'s pipeline, checked against `labels.json`: every
//! flow on a file's labelled server port (for TFTP: every flow, data transfers included) gets the
//! labelled app when Warden has a parser for it, and no flow anywhere gets an app it does not
//! carry.

use std::collections::BTreeSet;
use std::path::PathBuf;

use warden_dp::app::engine::CANDIDATES;
use warden_dp::config::Config;
use warden_dp::replay::replay_file;

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../corpus")
}

#[test]
fn every_corpus_flow_is_labelled_by_content() {
    let dir = corpus();
    let labels: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("labels.json")).unwrap()).unwrap();
    let known: BTreeSet<&str> = CANDIDATES.iter().map(|c| c.app.as_str()).collect();
    let mut checked = 0;
    let mut failures = Vec::new();
    for (file, label) in labels.as_object().unwrap() {
        let protocol = label["protocol"].as_str().unwrap();
        // "sqlinjection/http" is http carrying injection payloads.
        let want = protocol.rsplit('/').next().unwrap();
        let port = label["server_port"].as_u64().unwrap() as u16;
        let (records, _) = replay_file(&dir.join(file), &Config::default()).unwrap();
        for r in &records {
            // A TFTP transfer runs on a new server port but belongs to its request: every flow
            // of the file must carry the app.
            let related = want == "tftp";
            let on_port = (r.server_port == port || related) && matches!(r.ip_proto, 6 | 17);
            // Related flows of the same file (TFTP data ports, gRPC's HTTP/2 = grpc) carry the
            // file's protocol too; anything else must carry no app at all.
            let acceptable: &[&str] = match want {
                "grpc" => &["grpc", "http2"],
                _ => &[want],
            };
            if on_port && known.contains(want) {
                checked += 1;
                if r.app != want {
                    failures.push(format!("{file}: {}:{} -> {}:{} labelled {:?}, want {want}", r.client_ip, r.client_port, r.server_ip, r.server_port, r.app));
                }
            } else if r.app != "unknown" && !acceptable.contains(&r.app.as_str()) {
                failures.push(format!("{file}: {}:{} -> {}:{} mislabelled {:?} (file is {want})", r.client_ip, r.client_port, r.server_ip, r.server_port, r.app));
            }
        }
    }
    assert!(failures.is_empty(), "{} flows wrong:\n{}", failures.len(), failures.join("\n"));
    eprintln!("{checked} labelled flows checked for {} registered apps", known.len());
}

/// Rewrites every TCP/UDP port `from` to `to` in an Ethernet frame (IPv4 or IPv6 without
/// extension headers; checksums are left as they are: Warden does not verify them).
fn remap_port(frame: &mut [u8], from: u16, to: u16) {
    if frame.len() < 14 {
        return;
    }
    let (proto, l4) = match u16::from_be_bytes([frame[12], frame[13]]) {
        0x0800 if frame.len() >= 34 => (frame[23], 14 + usize::from(frame[14] & 0x0f) * 4),
        0x86dd if frame.len() >= 54 => (frame[20], 54),
        _ => return,
    };
    if !matches!(proto, 6 | 17) || frame.len() < l4 + 4 {
        return;
    }
    for at in [l4, l4 + 2] {
        if u16::from_be_bytes([frame[at], frame[at + 1]]) == from {
            frame[at..at + 2].copy_from_slice(&to.to_be_bytes());
        }
    }
}

/// The same captures with every flow moved from its labelled server port to a port no parser
/// lists: each still gets its app, from content alone.
#[test]
fn every_corpus_flow_is_labelled_on_a_non_standard_port() {
    use pcap_file::pcap::{PcapReader, PcapWriter};
    let dir = corpus();
    let labels: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("labels.json")).unwrap()).unwrap();
    let known: BTreeSet<&str> = CANDIDATES.iter().map(|c| c.app.as_str()).collect();
    let listed: BTreeSet<u16> = CANDIDATES.iter().flat_map(|c| c.ports.iter().copied()).collect();
    let tmp = std::env::temp_dir().join(format!("warden-corpus-ports-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let (mut checked, mut failures) = (0, Vec::new());
    for (file, label) in labels.as_object().unwrap() {
        let want = label["protocol"].as_str().unwrap().rsplit('/').next().unwrap();
        let port = label["server_port"].as_u64().unwrap() as u16;
        if !known.contains(want) {
            continue;
        }
        let new_port = (41000..60000).find(|p| !listed.contains(p) && *p % 1000 == port % 1000).unwrap_or(45999);
        let mut r = PcapReader::new(std::fs::File::open(dir.join(file)).unwrap()).unwrap();
        let out = tmp.join(file);
        let mut w = PcapWriter::with_header(std::fs::File::create(&out).unwrap(), r.header()).unwrap();
        while let Some(Ok(pkt)) = r.next_packet() {
            let mut p = pkt.into_owned();
            let mut data = p.data.to_vec();
            remap_port(&mut data, port, new_port);
            p.data = data.into();
            w.write_packet(&p).unwrap();
        }
        drop(w);
        let (records, _) = replay_file(&out, &Config::default()).unwrap();
        for r in records.iter().filter(|r| r.server_port == new_port && matches!(r.ip_proto, 6 | 17)) {
            checked += 1;
            let ok = r.app == want || (want == "grpc" && r.app == "http2");
            if !ok {
                failures.push(format!("{file} on port {new_port}: {}:{} labelled {:?}, want {want}", r.client_ip, r.client_port, r.app));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
    assert!(checked > 100, "only {checked} flows checked");
    assert!(failures.is_empty(), "{} flows wrong:\n{}", failures.len(), failures.join("\n"));
    eprintln!("{checked} corpus flows labelled by content on non-standard ports");
}
