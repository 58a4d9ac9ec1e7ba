//! Learn mode's output: a protect-mode policy that allows the connections seen.

use std::collections::HashSet;
use std::net::IpAddr;

use super::model::{app_from_name, Cidr, Endpoint, IpProto, PortRange};
use super::{Action, CompiledPolicy, Facts, Mode, Policy, PolicyVerdict, Rule};
use crate::app::App;

/// A connection seen while learning (typically one reported `learned`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LearnedConn {
    /// Client address.
    pub client: IpAddr,
    /// Server address.
    pub server: IpAddr,
    /// IP protocol number.
    pub ip_proto: u8,
    /// Server port (used for TCP and UDP only).
    pub server_port: u16,
    /// Detected app (`Unknown` if detection did not name one).
    pub app: App,
}

/// The policy that allows exactly the traffic seen, in protect mode.
///
/// The result has `base`'s workloads (every one switched to protect, and `default_mode =
/// "protect"`), `base`'s services and rules unchanged, then one allow rule per distinct
/// `(from, to, ip_proto, port, app)` seen, in order of first sighting, with ids (and so
/// priorities) counting up from the base's highest rule id + 1:
/// - `from`/`to`: the workload id when the address is a workload's, else the address itself
///   as a host CIDR (/32 or /128): learning never widens to `external` or a network (edit
///   the file to generalise);
/// - `ip_proto`: `tcp`, `udp`, `icmp`, `icmpv6` or the protocol number; `ports = ["P"]` for
///   TCP and UDP only;
/// - `apps = [app]` when the app is known; an `unknown` app gives a rule without apps, which
///   also covers every app on that (from, to, ip_proto, port), so app rules for the same
///   tuple are then left out.
///
/// Connections neither end of which is a workload (not enforced) and connections the base
/// already allows (an allow rule decides them) add no rule. A base deny rule ranked before
/// the new rules keeps denying what it matches. Ids past u32::MAX are not issued (the rest is
/// dropped; not a practical limit).
pub fn learned_policy(base: &Policy, seen: &[LearnedConn]) -> Policy {
    let compiled = CompiledPolicy::compile(base).ok();
    let mut out = base.clone();
    out.default_mode = Mode::Protect;
    for w in &mut out.workloads {
        w.mode = Mode::Protect;
    }
    let is_workload = |ip: IpAddr| base.workloads.iter().position(|w| w.ips.contains(&ip));
    let endpoint = |ip: IpAddr| match is_workload(ip) {
        Some(i) => Endpoint::Workload(base.workloads[i].id.clone()),
        None => Endpoint::Cidr(Cidr::host(ip)),
    };
    // (from, to, proto, port or None) tuples learned with an unknown app.
    type Tuple = (Endpoint, Endpoint, IpProto, Option<u16>);
    let mut any_app: HashSet<Tuple> = HashSet::new();
    let mut kept: Vec<(Tuple, App)> = Vec::new();
    let mut dedup: HashSet<(Tuple, App)> = HashSet::new();
    for c in seen {
        if is_workload(c.client).is_none() && is_workload(c.server).is_none() {
            continue;
        }
        if let Some(cp) = &compiled {
            let f = Facts {
                client: c.client,
                server: c.server,
                ip_proto: c.ip_proto,
                server_port: c.server_port,
                app: Some(c.app),
                server_names: &[],
                client_names: &[],
            };
            if cp.evaluate(&f).verdict == Some(PolicyVerdict::Allowed) {
                continue;
            }
        }
        // An app rules cannot name (e.g. a test-only one) is learned as unknown.
        let app = if app_from_name(c.app.as_str()).is_some() {
            c.app
        } else {
            App::Unknown
        };
        let proto = IpProto::from_number(c.ip_proto);
        let port = matches!(proto, IpProto::Tcp | IpProto::Udp).then_some(c.server_port);
        let t: Tuple = (endpoint(c.client), endpoint(c.server), proto, port);
        if app == App::Unknown {
            any_app.insert(t.clone());
        }
        if dedup.insert((t.clone(), app)) {
            kept.push((t, app));
        }
    }
    let mut next = base.rules.iter().map(|r| u64::from(r.id) + 1).max().unwrap_or(1);
    for ((from, to, ip_proto, port), app) in kept {
        let t = (from, to, ip_proto, port);
        if app != App::Unknown && any_app.contains(&t) {
            continue;
        }
        let Ok(id) = u32::try_from(next) else { break };
        next += 1;
        let (from, to, ip_proto, port) = t;
        out.rules.push(Rule {
            id,
            from,
            to,
            ip_proto,
            ports: port.map(|p| vec![PortRange { lo: p, hi: p }]),
            apps: (app != App::Unknown).then(|| vec![app]),
            fqdn: None,
            action: Action::Allow,
            priority: id,
        });
    }
    out
}
