//! Tunnels in the public capture set (`captures/public/`, README there): every flow tshark
//! decodes inside a tunnel must come out of `warden replay` with a `tunnel` object of the
//! innermost tunnel tshark names, and every flow tshark sees outside any tunnel (plain, VLAN,
//! MPLS, PPPoE) without one. The truth is tshark's protocol path of each flow
//! (`labels.json`, `tunnel`: e.g. `ip/gre/erspan`, `vlan/ipv6/gtp-u`), written by
//! `perf/public/label.py`; flows listed in `misses.tsv` (Warden cannot see them yet, with the
//! reason) are left out here, as in `public_captures.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use warden_dp::config::Config;
use warden_dp::replay::replay_file;

fn set_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/captures/public")
}

/// The record `tunnel.type` Warden must give a flow whose tshark path is `path` and whose
/// inner addresses are IPv6 or not (`None`: no tunnel object).
fn expected(path: &str, inner_v6: bool) -> Option<&'static str> {
    let tokens: Vec<&str> = path.split('/').filter(|t| !t.is_empty()).collect();
    // The innermost token that is a tunnel (an IP layer counts when something encapsulates
    // the flow's own IP packet in it: tshark lists the outer IP layers only).
    let at = tokens.iter().rposition(|t| matches!(*t, "vxlan" | "geneve" | "gtp-u" | "erspan" | "gre" | "ip" | "ipv6"))?;
    Some(match tokens[at] {
        "vxlan" => "vxlan",
        "geneve" => "geneve",
        "gtp-u" => "gtpu",
        "erspan" => "erspan",
        "gre" => "gre",
        "ip" if inner_v6 => "6in4",
        "ip" => "ipip",
        _ if inner_v6 => "ip6ip6",
        _ => "4in6",
    })
}

#[test]
fn every_tunnelled_flow_reports_its_tunnel_and_no_other_flow_does() {
    let labels: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(set_dir().join("labels.json")).unwrap()).unwrap();
    let misses: BTreeSet<(String, String)> = std::fs::read_to_string(set_dir().join("misses.tsv"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[0].to_string(), f[1].to_string())
        })
        .collect();
    let mut failures = Vec::new();
    let mut checked: BTreeMap<&'static str, usize> = BTreeMap::new();
    for (cap, flows) in labels["captures"].as_object().unwrap() {
        let flows = flows.as_array().unwrap();
        let paths: Vec<&str> = flows.iter().map(|f| f["tunnel"].as_str().unwrap_or("")).collect();
        if paths.iter().all(|p| p.is_empty()) {
            continue;
        }
        let (records, _) = match replay_file(&set_dir().join(cap), &Config::default()) {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{cap}: {e}"));
                continue;
            }
        };
        for (f, path) in flows.iter().zip(&paths) {
            let id = f["flow"].as_str().unwrap();
            let vlan = f["vlan"].as_str().unwrap_or("");
            let full_id = if vlan.is_empty() { id.to_string() } else { format!("{id} vlan {vlan}") };
            if misses.contains(&(cap.clone(), full_id.clone())) || misses.contains(&(cap.clone(), id.to_string())) {
                continue;
            }
            let (client, cport) = (f["client"].as_str().unwrap(), f["client_port"].as_u64().unwrap() as u16);
            let (server, sport) = (f["server"].as_str().unwrap(), f["server_port"].as_u64().unwrap() as u16);
            let proto = match f["proto"].as_str().unwrap() {
                "tcp" => 6,
                _ => 17,
            };
            let same = |a: &str, b: &str| a.parse::<std::net::IpAddr>().ok() == b.parse::<std::net::IpAddr>().ok();
            let found: Vec<_> = records
                .iter()
                .filter(|r| r.ip_proto == proto && r.tunnel_carrier.is_none())
                .filter(|r| {
                    (same(&r.client_ip, client) && r.client_port == cport && same(&r.server_ip, server) && r.server_port == sport)
                        || (same(&r.client_ip, server) && r.client_port == sport && same(&r.server_ip, client) && r.server_port == cport)
                })
                .collect();
            let want = expected(path, client.contains(':'));
            if found.is_empty() {
                // A flow of no app Warden parses may have no session (public_captures.rs takes
                // that: e.g. the mirrored NBNS datagrams with bad checksums of
                // zeek-gretap-keyed, dropped as the receiving host would).
                if f["label"].as_str() != Some("none") {
                    failures.push(format!("{cap} | {full_id} ({path}): no session"));
                }
                continue;
            }
            for r in found {
                let got = r.tunnel.as_ref().map(|t| t.kind.as_str());
                if got != want {
                    failures.push(format!("{cap} | {full_id} ({path}): tunnel {got:?}, tshark's path says {want:?}"));
                }
            }
            *checked.entry(want.unwrap_or("none")).or_default() += 1;
        }
    }
    eprintln!("tunnelled flows checked by tunnel type: {checked:?}");
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
    for kind in ["vxlan", "geneve", "gtpu", "erspan", "gre", "ipip", "6in4", "4in6", "ip6ip6", "none"] {
        assert!(checked.get(kind).copied().unwrap_or(0) > 0, "no {kind} flow checked: {checked:?}");
    }
}
