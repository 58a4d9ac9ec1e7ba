//! `warden replay` (the binary) over captures of other link types than Ethernet
//! (`tests/captures/linktypes/`, README there): records on stdout, the summary on stderr with
//! the skipped frames by reason, and a non-zero exit with the link type named when nothing in
//! the file can be read. The records themselves are compared with the Ethernet original in
//! `replay.rs`'s unit tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use warden_control::ConnectionRecord;

fn capture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/captures/linktypes").join(name)
}

fn replay(file: &Path) -> (Output, Vec<ConnectionRecord>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_warden")).arg("replay").arg(file).env("RUST_LOG", "warn").output().unwrap();
    let records = String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    (out, records, stderr)
}

#[test]
fn raw_ip_and_loopback_captures_give_records() {
    let (_, orig, _) = replay(&capture("ethernet.pcap"));
    for file in ["raw.pcap", "null-le.pcap", "loop.pcap", "sll2.pcap"] {
        let (out, recs, stderr) = replay(&capture(file));
        assert!(out.status.success(), "{file}: {stderr}");
        assert_eq!(recs.len(), orig.len(), "{file}: {stderr}");
        let apps = |v: &[ConnectionRecord]| v.iter().map(|r| (r.client_port, r.app.clone())).collect::<Vec<_>>();
        assert_eq!(apps(&recs), apps(&orig), "{file}");
        assert!(stderr.contains(" 0 skipped,"), "{file}: {stderr}");
        assert!(!stderr.contains("frames skipped"), "{file}: {stderr}");
    }
}

#[test]
fn skipped_frames_are_summed_up_by_reason_and_interface() {
    let (out, recs, stderr) = replay(&capture("interfaces.pcapng"));
    assert!(out.status.success(), "{stderr}");
    assert_eq!(recs.len(), 9, "{stderr}");
    assert!(stderr.contains(" 2 skipped,"), "{stderr}");
    assert!(
        stderr.contains(
            "interfaces.pcapng: 2 frames skipped (2 link type); unsupported interface 2 \"usb0\" (link type 147, USER0): 2 frames"
        ),
        "{stderr}"
    );
}

#[test]
fn an_unsupported_link_type_fails_with_its_name() {
    // A pcap header (little-endian, microseconds) of link type 147 and one frame.
    let mut bytes = Vec::new();
    for w in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 65535, 147, 1, 0, 4, 4] {
        bytes.extend_from_slice(&w.to_le_bytes());
    }
    bytes.extend_from_slice(b"\x45\0\0\x14");
    let path = std::env::temp_dir().join(format!("warden-linktype147-{}.pcap", std::process::id()));
    std::fs::write(&path, bytes).unwrap();
    let (out, recs, stderr) = replay(&path);
    std::fs::remove_file(&path).ok();
    assert!(!out.status.success());
    assert!(recs.is_empty());
    assert!(stderr.contains("link type 147 (USER0) is not supported; warden replay reads Ethernet (1)"), "{stderr}");
}
