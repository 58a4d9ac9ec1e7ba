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
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus")
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
