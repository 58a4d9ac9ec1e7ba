//! Text renderings shared by `wardenctl` and `warden` (so both print one answer the same way).

use crate::PolicyDiff;

/// `wardenctl policy diff` as lines: a summary line, then one aligned row per group
/// (`CHANGE CLIENT SERVER PROTO/PORT VERDICT(RULE) SHADOW(RULE) SESSIONS EXAMPLE`), workloads
/// shown as `-` when an end is none, rules as `default` for a mode's default.
pub fn policy_diff(d: &PolicyDiff) -> Vec<String> {
    let mut out = vec![format!(
        "{} session(s) compared, {} differ{}",
        d.compared,
        d.differing,
        if d.overflow > 0 { format!(" ({} in no group: the per-worker table was full)", d.overflow) } else { String::new() }
    )];
    let rule = |r: Option<u32>| r.map_or_else(|| "default".to_string(), |r| r.to_string());
    let mut rows: Vec<Vec<String>> = vec![["CHANGE", "CLIENT", "SERVER", "PROTO/PORT", "VERDICT", "SHADOW", "SESSIONS", "EXAMPLE"]
        .iter()
        .map(|s| s.to_string())
        .collect()];
    for e in &d.entries {
        rows.push(vec![
            e.change.clone(),
            e.client_workload.clone().unwrap_or_else(|| "-".into()),
            e.server_workload.clone().unwrap_or_else(|| "-".into()),
            format!("{}/{}", proto_name(e.ip_proto), e.server_port),
            format!("{}({})", e.verdict.as_deref().unwrap_or("none"), rule(e.rule_id)),
            format!("{}({})", e.shadow_verdict.as_deref().unwrap_or("none"), rule(e.shadow_rule_id)),
            e.sessions.to_string(),
            format!("{} -> {}", e.example_client, e.example_server),
        ]);
    }
    let mut width = vec![0usize; 8];
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    for r in rows {
        let cells: Vec<String> = r.iter().zip(&width).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push(cells.join("  ").trim_end().to_string());
    }
    out
}

/// `tcp`, `udp`, `icmp`, `icmpv6`, or the protocol number.
pub fn proto_name(p: u8) -> String {
    match p {
        6 => "tcp".into(),
        17 => "udp".into(),
        1 => "icmp".into(),
        58 => "icmpv6".into(),
        n => n.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PolicyDiffEntry;

    #[test]
    fn a_diff_renders_one_aligned_row_per_group() {
        let d = PolicyDiff {
            compared: 7,
            differing: 2,
            overflow: 0,
            entries: vec![PolicyDiffEntry {
                change: "deny".into(),
                client_workload: None,
                server_workload: Some("web".into()),
                ip_proto: 6,
                server_port: 8080,
                verdict: Some("allowed".into()),
                rule_id: Some(2),
                shadow_verdict: Some("denied".into()),
                shadow_rule_id: None,
                sessions: 2,
                example_client: "198.18.0.1".into(),
                example_server: "198.18.0.2".into(),
            }],
        };
        let lines = policy_diff(&d);
        assert_eq!(lines[0], "7 session(s) compared, 2 differ");
        assert!(lines[1].starts_with("CHANGE  CLIENT  SERVER  PROTO/PORT"), "{}", lines[1]);
        assert_eq!(
            lines[2].split_whitespace().collect::<Vec<_>>(),
            ["deny", "-", "web", "tcp/8080", "allowed(2)", "denied(default)", "2", "198.18.0.1", "->", "198.18.0.2"]
        );
    }
}
