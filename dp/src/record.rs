//! Turning session snapshots into connection records (the text form subscribers, `list_sessions`
//! and `warden replay` print). Runs on the control thread or at the end of a replay, never on the
//! packet path.

use std::time::{Duration, UNIX_EPOCH};

use warden_control::ConnectionRecord;

use crate::app::engine::{BypassReason, Inspection};
use crate::app::App;
use crate::session::SessionSnapshot;
use crate::wire::ipproto;

/// Formats Unix nanoseconds as RFC 3339 UTC with microseconds (`2026-11-22T10:00:00.123456Z`).
pub fn rfc3339(unix_ns: u64) -> String {
    humantime::format_rfc3339_micros(UNIX_EPOCH + Duration::from_nanos(unix_ns)).to_string()
}

/// Builds the record of `snap`; `iface_name` maps an interface slot to its name.
pub fn to_record(snap: &SessionSnapshot, iface_name: impl Fn(u16) -> String) -> ConnectionRecord {
    let s = &snap.session;
    let k = &s.key;
    let ((client_ip, client_port), (server_ip, server_port)) = (s.client_end(), s.server_end());
    let mut r = ConnectionRecord {
        client_ip: client_ip.text(),
        client_port,
        server_ip: server_ip.text(),
        server_port,
        ip_proto: k.proto,
        app: snap.app.as_ref().map(|a| a.app).unwrap_or_default().as_str().to_string(),
        bytes_to_server: s.bytes[0],
        bytes_to_client: s.bytes[1],
        packets_to_server: s.packets[0],
        packets_to_client: s.packets[1],
        packets_dropped_to_server: s.dropped_packets[0],
        packets_dropped_to_client: s.dropped_packets[1],
        bytes_dropped_to_server: s.dropped_bytes[0],
        bytes_dropped_to_client: s.dropped_bytes[1],
        first_seen: rfc3339(s.first_ns),
        last_seen: rfc3339(s.last_ns),
        state: s.state.as_str().to_string(),
        midstream: s.midstream,
        iface: iface_name(s.client_iface),
        closed: snap.ended.is_some(),
        end_reason: snap.ended.map(|r| r.as_str().to_string()),
        icmp_errors: (s.icmp.errors > 0).then_some(s.icmp.errors),
        icmp_errors_rejected: (s.icmp.rejected > 0).then_some(s.icmp.rejected),
        anomalies: crate::normalize::names(s.anomalies).map(String::from).collect(),
        anomalous_frames: (s.anomalous_frames > 0).then_some(s.anomalous_frames),
        tunnel: s.tunnel.map(|t| {
            let client = s.client as usize;
            warden_control::TunnelRecord {
                kind: t.kind.as_str().into(),
                id: t.id,
                outer_client: t.outer[client].to_string(),
                outer_server: t.outer[1 - client].to_string(),
            }
        }),
        tunnel_carrier: s.carrier.map(|k| k.as_str().into()),
        fast_path: s.fast.offloads > 0,
        fast_path_frames: (s.fast.frames > 0).then_some(u64::from(s.fast.frames)),
        ..policy_fields(snap, app_fields(snap))
    };
    session_threats(snap, &mut r);
    r
}

/// Adds the threats the stage raised for the session that its parser's list does not have
/// (frame, handshake and timed threats), and the threat that blocked it.
fn session_threats(snap: &SessionSnapshot, r: &mut ConnectionRecord) {
    let s = &snap.session;
    for id in s.threats.iter() {
        if r.threats.iter().any(|t| t.id == id.as_str()) {
            continue;
        }
        let reason = match s.first_threat {
            Some((first, reason)) if first == id => reason,
            _ => "",
        };
        r.threats.push(warden_control::ThreatRecord {
            id: id.as_str().into(),
            reason: reason.into(),
            count: 1,
            ..Default::default()
        });
    }
    if let Some((id, action)) = s.policy.threat_block {
        r.threat_block = Some(id.as_str().into());
        r.threat_action = Some(action.as_str().into());
    }
}

fn policy_fields(snap: &SessionSnapshot, mut r: ConnectionRecord) -> ConnectionRecord {
    if let Some(p) = &snap.policy {
        r.verdict = p.verdict.map(|v| v.as_str().to_string());
        r.rule_id = p.rule_id;
        if let Some((verdict, rule)) = p.shadow {
            // `none` for a session the shadow does not enforce (the field is only present
            // where the verdicts differ).
            r.shadow_verdict = Some(verdict.map_or("none", |v| v.as_str()).to_string());
            r.shadow_rule_id = rule;
        }
        r.client_workload = p.workloads[0].clone();
        r.server_workload = p.workloads[1].clone();
        r.mode = p.mode.map(|m| m.as_str().to_string());
    }
    // An exception (mid-stream pickup, a pool or cap hit) is why inspection stopped, except
    // for a mid-stream pickup passed on and inspected mid-stream (`pass_flow`).
    if let Some(e) = snap.session.policy.exception {
        if !(e.inspects() && snap.app.is_some()) {
            r.inspection = Some("bypassed".into());
            r.inspection_reason = Some(e.reason.as_str().into());
        }
        r.exception_action = e.action.map(|a| a.as_str().to_string());
    }
    r
}

fn app_fields(snap: &SessionSnapshot) -> ConnectionRecord {
    let mut r = ConnectionRecord::default();
    let inspected = matches!(snap.session.key.proto, ipproto::TCP | ipproto::UDP);
    let Some(a) = &snap.app else {
        if inspected {
            // No app context: denied on its first frame (never inspected), or none was free.
            let denied = snap.session.policy.blocked && snap.session.policy.exception.is_none();
            let (what, why) = if denied {
                ("none", "policy_denied")
            } else {
                ("bypassed", BypassReason::PoolFull.as_str())
            };
            r.inspection = Some(what.into());
            r.inspection_reason = Some(why.into());
        }
        return r;
    };
    r.app = a.app.as_str().to_string();
    if a.app != App::Unknown {
        r.app_detected_after = Some(a.detected_after);
    }
    if let Some(t) = a.state.threats() {
        let dir = |d: crate::session::Dir| match d {
            crate::session::Dir::ToServer => "to_server",
            crate::session::Dir::ToClient => "to_client",
        };
        if let Some(first) = t.first {
            r.threats.push(warden_control::ThreatRecord {
                id: first.id.as_str().into(),
                dir: dir(first.dir).into(),
                reason: first.reason.into(),
                evidence: first.evidence.to_string(),
                count: t.count,
                ..Default::default()
            });
        }
        for (id, d, reason) in t.others.iter().flatten() {
            r.threats.push(warden_control::ThreatRecord {
                id: id.as_str().into(),
                dir: dir(*d).into(),
                reason: (*reason).into(),
                evidence: String::new(),
                count: 1,
                ..Default::default()
            });
        }
    }
    let mut l7 = serde_json::Map::new();
    a.state.l7(&mut l7);
    if !l7.is_empty() {
        r.l7 = Some(l7);
    }
    r.inspection = Some(
        match a.inspection {
            Inspection::Active => "active",
            Inspection::Done => "done",
            Inspection::Bypassed(_) => "bypassed",
        }
        .into(),
    );
    if let Inspection::Bypassed(why) = a.inspection {
        r.inspection_reason = Some(why.as_str().into());
    }
    if a.overlaps_differ > 0 {
        r.tcp_overlap_conflicts = Some(a.overlaps_differ);
    }
    r.tcp_unverified_bytes = (a.unverified > 0).then_some(a.unverified);
    r.tcp_urgent_bytes = (a.urgent_bytes > 0).then_some(a.urgent_bytes);
    if a.changes > 0 {
        r.previous_app = Some(a.previous.as_str().to_string());
        r.app_changes = Some(u32::from(a.changes));
    }
    if a.app == App::Unknown {
        r.app_unknown_reason = a.unknown_reason.map(|u| u.as_str().to_string());
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{Addr, FlowKey};
    use crate::session::{EndReason, SessionTable, Timeouts};

    #[test]
    fn client_is_reported_first_whatever_the_key_order() {
        let mut t = SessionTable::new(4, Timeouts::default());
        // Client 198.18.0.9:40000 sorts above server 198.18.0.2:80.
        let (k, client_end) =
            FlowKey::new(0, 6, Addr::v4([198, 18, 0, 9]), 40000, Addr::v4([198, 18, 0, 2]), 80);
        assert_eq!(client_end, crate::flow::End::Hi);
        t.track(&k, client_end, 74, Some(crate::tcpseq::Segment::flags(0x02)), 3, 1_700_000_000_000_000_000).unwrap();
        let snap = t.snapshot(10)[0].clone();
        let r = to_record(&snap, |slot| format!("if{slot}"));
        assert_eq!((r.client_ip.as_str(), r.client_port), ("198.18.0.9", 40000));
        assert_eq!((r.server_ip.as_str(), r.server_port), ("198.18.0.2", 80));
        assert_eq!((r.packets_to_server, r.bytes_to_server), (1, 74));
        assert_eq!(r.iface, "if3");
        assert_eq!(r.first_seen, "2023-11-14T22:13:20.000000Z");
        assert!(!r.closed);
        let ended = SessionSnapshot { ended: Some(EndReason::Rst), ..snap.clone() };
        let r = to_record(&ended, |_| String::new());
        assert!(r.closed);
        assert_eq!(r.end_reason.as_deref(), Some("rst"));
    }
}

/// The record of a threat event whose session snapshot is not at hand (a flood, a frame
/// check, a merged event sent when its interval ended): the 5-tuple and times.
pub fn hit_record(e: &crate::threat::event::ThreatHit) -> ConnectionRecord {
    ConnectionRecord {
        client_ip: e.client.to_string(),
        client_port: e.client_port,
        server_ip: e.server.to_string(),
        server_port: e.server_port,
        ip_proto: e.proto,
        app: crate::app::App::Unknown.as_str().into(),
        first_seen: rfc3339(e.first_ns),
        last_seen: rfc3339(e.last_ns),
        ..Default::default()
    }
}

/// The `threat` of a threat event: the detection(s) `e` stands for, with severity, action and
/// the offending frame's first bytes in base64.
pub fn threat_record(e: &crate::threat::event::ThreatHit) -> warden_control::ThreatRecord {
    use base64::Engine as _;
    warden_control::ThreatRecord {
        id: e.id.as_str().into(),
        dir: match e.dir {
            Some(crate::session::Dir::ToServer) => "to_server".into(),
            Some(crate::session::Dir::ToClient) => "to_client".into(),
            None => String::new(),
        },
        reason: e.reason.into(),
        evidence: e.evidence.to_string(),
        count: e.count,
        severity: Some(e.id.severity().as_str().into()),
        action: Some(e.action.as_str().into()),
        frame: (e.frame_len > 0).then(|| base64::engine::general_purpose::STANDARD.encode(e.frame())),
        frame_len: (e.frame_total > 0).then_some(e.frame_total),
    }
}
