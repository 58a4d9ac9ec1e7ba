//! The compiled matcher ([`CompiledPolicy`]) and the linear reference ([`reference_evaluate`]).
//!
//! # Index
//! A rule's **rank** is `(priority << 32) | id` (unique; lower wins). Rules are placed in
//! buckets by their `(from, to)` pair, in two levels of [`Side`] tables (`from` first, then
//! `to` inside each `from` entry). A side table holds an entry for `any`, one for `external`,
//! one per workload (sorted by workload index) and the CIDRs of each family as a laminar
//! interval map: the CIDRs' boundaries cut the address space into elementary intervals, each
//! pointing at its innermost CIDR, and each CIDR points at its parent, so the CIDRs containing
//! an address are found by one binary search and a walk up the chain. Looking up an address
//! visits `any`, then `external` or its workload, then every CIDR containing it.
//!
//! Inside a bucket, rules are split by protocol (tcp, udp, icmp, icmpv6, other numbers, and
//! "any protocol without ports"; a rule with `ip_proto = any` and ports goes to tcp and udp)
//! into [`PortIndex`]es: the ports' boundaries cut 0..=65535 into intervals, each with its
//! covering rules in rank order, cut after the first rule without apps or fqdn (it always
//! matches there, so nothing after it can decide or make an app pending). Lists that would
//! grow too large that way stay a plain rank-ordered list with port checks.
//!
//! Every table entry carries the minimum rank below it. `evaluate` is a branch and bound:
//! it gathers the `from` entries matching the client (at most 2 + 129) on the stack, visits
//! them by increasing minimum rank and stops at the first whose minimum is not better than the
//! best rule found so far; inside each, the same over the buckets matching the server; inside
//! a bucket, a list stops at the first rank that is not better. Workload addresses are found
//! by one hash lookup. `evaluate` allocates nothing (`dp/tests/policy_alloc.rs` checks).
//!
//! Cost: O(matching `from` entries × (log n + matching `to` entries)) in the worst case, far
//! less with pruning; independent of the number of rules that cannot match (see the "Policy
//! rule lookup" section of perf/RESULTS.md for figures).
//!
//! # ExternalIPs
//! Services' claims are flattened at compile time into one array of `(port range, service,
//! owner workload, owner backs the service)` grouped by address, with a hash map per family
//! from address to its group, and each service's backing workloads as a sorted slice.
//! [`CompiledPolicy::external_ip_mitm`] is one hash lookup (none at all without services),
//! then a scan of that address's claims (one per claimed port range per service) with a
//! binary search of the backing slice for unowned addresses; no allocation.

use std::net::IpAddr;

use arrayvec::ArrayVec;
use hashbrown::HashMap;

use super::model::{fqdn_matches, mask_v4, mask_v6, Cidr, Endpoint, IpProto, Mac, PortRange};
use super::{
    Action, Decision, Ends, ExternalIpMitm, Facts, Mode, Policy, PolicyError, PolicyVerdict, Rule, Service, ServiceIdx,
    Workload, WorkloadIdx,
};
use crate::app::{App, AppSet};

/// No rule (rank sentinel, worse than every real rank).
const NO_RANK: u64 = u64::MAX;
const NONE32: u32 = u32::MAX;

fn rank(r: &Rule) -> u64 {
    (u64::from(r.priority) << 32) | u64::from(r.id)
}

/// Bit of `app` in a rule's app mask (apps past bit 127 never match; a unit test checks that
/// every nameable app fits).
fn app_bit(app: App) -> u128 {
    1u128.checked_shl(app as u32).unwrap_or(0)
}

/// One end's verdict from the rule's action (`None`: no rule) and the end's mode.
pub(crate) fn end_verdict(action: Option<Action>, mode: Mode) -> PolicyVerdict {
    match (action, mode) {
        (Some(Action::Allow), _) => PolicyVerdict::Allowed,
        (Some(Action::Deny), Mode::Protect) | (None, Mode::Protect) => PolicyVerdict::Denied,
        (Some(Action::Deny), _) | (None, Mode::Alert) => PolicyVerdict::Violation,
        (None, Mode::Learn) => PolicyVerdict::Learned,
    }
}

/// The connection's verdict and deciding mode: most severe end, the client's on a tie.
/// At least one end must be `Some`.
fn combine(client: Option<Mode>, server: Option<Mode>, action: Option<Action>) -> (PolicyVerdict, Mode) {
    match (client, server) {
        (Some(c), Some(s)) => {
            let (vc, vs) = (end_verdict(action, c), end_verdict(action, s));
            if vs > vc {
                (vs, s)
            } else {
                (vc, c)
            }
        }
        (Some(m), None) | (None, Some(m)) => (end_verdict(action, m), m),
        (None, None) => (PolicyVerdict::Allowed, Mode::Learn),
    }
}

/// Apps a decision tracks one by one ([`Decision::allowing`]).
const APPS: usize = App::ALL.len();

/// What a scan found: the best matching rule, and the best-ranked app rules of each action
/// that could match once the app is known, overall and per app (only recorded while `app` is
/// `None`).
struct Found {
    best_rank: u64,
    best: u32,
    allow_app: u64,
    deny_app: u64,
    /// Per app (index `app as usize`): rank of the best app rule naming it.
    app_rank: [u64; APPS],
    /// Bit `app as usize` set: that best app rule allows.
    app_allow: u64,
}

impl Found {
    const fn new() -> Found {
        Found {
            best_rank: NO_RANK,
            best: NONE32,
            allow_app: NO_RANK,
            deny_app: NO_RANK,
            app_rank: [NO_RANK; APPS],
            app_allow: 0,
        }
    }

    /// Records an app rule (rank `k`, `action`) that would match if the app were `app`.
    #[inline]
    fn app_rule(&mut self, app: usize, k: u64, action: Action) {
        if let Some(slot) = self.app_rank.get_mut(app) {
            if k < *slot {
                *slot = k;
                let bit = 1u64 << (app & 63);
                match action {
                    Action::Allow => self.app_allow |= bit,
                    Action::Deny => self.app_allow &= !bit,
                }
            }
        }
    }
}

/// Builds the decision from the ends' workloads and what the scan found (shared by the
/// compiled matcher and the reference, so both decide alike by construction of this step).
fn decide(
    cw: Option<(WorkloadIdx, Mode)>,
    sw: Option<(WorkloadIdx, Mode)>,
    found: &Found,
    rule: Option<(&Rule, u32)>,
) -> Decision {
    if cw.is_none() && sw.is_none() {
        return Decision::NOT_ENFORCED;
    }
    let (cm, sm) = (cw.map(|w| w.1), sw.map(|w| w.1));
    let action = rule.map(|(r, _)| r.action);
    let (verdict, mode) = combine(cm, sm, action);
    let changes = |a: Action| combine(cm, sm, Some(a)).0 != verdict;
    let pending = (found.allow_app < found.best_rank && changes(Action::Allow))
        || (found.deny_app < found.best_rank && changes(Action::Deny));
    let denied = |a: Option<Action>| combine(cm, sm, a).0 == PolicyVerdict::Denied;
    let allowing = if !pending {
        // No app rule can change the verdict: every app gets this one.
        if verdict == PolicyVerdict::Denied {
            AppSet::EMPTY
        } else {
            AppSet::ALL
        }
    } else {
        // Each app: its best app rule if it ranks before the rule, else the rule (unknown: the
        // rule, app rules never match it).
        let mut set = if denied(action) { AppSet::EMPTY } else { AppSet::EMPTY.with(App::Unknown) };
        for (i, app) in App::ALL.iter().enumerate().skip(1) {
            let a = if found.app_rank[i] < found.best_rank {
                Some(if found.app_allow & (1 << i) != 0 { Action::Allow } else { Action::Deny })
            } else {
                action
            };
            if !denied(a) {
                set = set.with(*app);
            }
        }
        set
    };
    Decision {
        verdict: Some(verdict),
        rule_id: rule.map(|(r, _)| r.id),
        rule_index: rule.map(|(_, i)| i),
        client_workload: cw.map(|w| w.0),
        server_workload: sw.map(|w| w.0),
        mode: Some(mode),
        pending_app: pending,
        allowing,
    }
}

/// How a rule's non-address conditions relate to the facts.
enum Cond {
    /// Does not match.
    No,
    /// Matches.
    Yes,
    /// Would match if the app were one of its apps (app still unknown).
    NeedApp,
}

/// The reference check of every condition but `from`/`to`.
fn rule_conditions(r: &Rule, f: &Facts<'_>) -> Cond {
    if !r.ip_proto.matches(f.ip_proto) {
        return Cond::No;
    }
    if let Some(ports) = &r.ports {
        if !(f.ip_proto == 6 || f.ip_proto == 17) || !ports.iter().any(|p| p.contains(f.server_port)) {
            return Cond::No;
        }
    }
    if let Some(q) = &r.fqdn {
        if !f.server_names.iter().any(|n| q.matches(n)) {
            return Cond::No;
        }
    }
    match (&r.apps, f.app) {
        (None, _) => Cond::Yes,
        (Some(_), None) => Cond::NeedApp,
        (Some(_), Some(App::Unknown)) => Cond::No,
        (Some(apps), Some(a)) => {
            if apps.contains(&a) {
                Cond::Yes
            } else {
                Cond::No
            }
        }
    }
}

/// A deliberately simple linear matcher with the same semantics as
/// [`CompiledPolicy::evaluate`] (see the module docs of `policy`), for tests and comparison:
/// O(workloads + rules) per call, and it allocates nothing either. `p` must be a validated
/// policy (from [`Policy::from_toml`] or built alike; unknown workload ids in rules never
/// match).
pub fn reference_evaluate(p: &Policy, f: &Facts<'_>) -> Decision {
    reference_evaluate_ends(p, f, Ends::default())
}

/// [`reference_evaluate`] with ends whose workload is known from their interface
/// (as [`CompiledPolicy::evaluate_ends`]).
pub fn reference_evaluate_ends(p: &Policy, f: &Facts<'_>, ends: Ends) -> Decision {
    let owner = |ip: IpAddr, known: Option<WorkloadIdx>| {
        known
            .map(|w| w.index())
            .or_else(|| p.workloads.iter().position(|w| w.ips.contains(&ip)))
            .filter(|&i| i < p.workloads.len())
            .map(|i| (WorkloadIdx(i as u32), p.workloads[i].mode))
    };
    let (cw, sw) = (owner(f.client, ends.client), owner(f.server, ends.server));
    if cw.is_none() && sw.is_none() {
        return Decision::NOT_ENFORCED;
    }
    let end_matches = |e: &Endpoint, ip: IpAddr, w: Option<(WorkloadIdx, Mode)>| match e {
        Endpoint::Any => true,
        Endpoint::External => w.is_none(),
        Endpoint::Workload(id) => w.is_some_and(|(i, _)| p.workloads[i.index()].id == *id),
        Endpoint::Cidr(c) => c.contains(ip),
    };
    let mut found = Found::new();
    for (i, r) in p.rules.iter().enumerate() {
        if !end_matches(&r.from, f.client, cw) || !end_matches(&r.to, f.server, sw) {
            continue;
        }
        let k = rank(r);
        match rule_conditions(r, f) {
            Cond::No => {}
            Cond::Yes => {
                if k < found.best_rank {
                    found.best_rank = k;
                    found.best = i as u32;
                }
            }
            Cond::NeedApp => {
                match r.action {
                    Action::Allow => found.allow_app = found.allow_app.min(k),
                    Action::Deny => found.deny_app = found.deny_app.min(k),
                }
                for a in r.apps.iter().flatten().filter(|a| **a != App::Unknown) {
                    found.app_rule(*a as usize, k, r.action);
                }
            }
        }
    }
    let rule = (found.best != NONE32).then(|| (&p.rules[found.best as usize], found.best));
    decide(cw, sw, &found, rule)
}

// ---------------------------------------------------------------------------------------
// Compiled form.

/// A rule as the scan needs it.
#[derive(Debug, Clone)]
struct CRule {
    rank: u64,
    /// Index in `rules`.
    index: u32,
    action: Action,
    /// App mask; 0 = no app condition.
    apps: u128,
    /// Index in `fqdns`, or NONE32.
    fqdn: u32,
    /// `ports[ports_off..ports_off + ports_len]`; `ports_len == 0`: every port.
    ports_off: u32,
    ports_len: u32,
}

impl CRule {
    fn plain(&self) -> bool {
        self.apps == 0 && self.fqdn == NONE32
    }
}

/// Rules of one bucket and protocol, by server port.
#[derive(Debug)]
enum PortIndex {
    /// Rank-ordered rule list; ports are checked per rule.
    Linear(Box<[u32]>),
    /// Elementary port intervals: `starts[i]..starts[i+1]` (the last one to 65535) has the
    /// rules `entries[offs[i]..offs[i+1]]` (rank order, cut after the first plain rule); ports
    /// need no check.
    Intervals {
        starts: Box<[u16]>,
        offs: Box<[u32]>,
        entries: Box<[u32]>,
    },
}

/// Lists at most this long stay linear (scanning a few rules beats a binary search).
const LINEAR_MAX: usize = 8;

impl PortIndex {
    /// `list`: rule indices (into `crules`) in rank order.
    fn build(list: Vec<u32>, crules: &[CRule], ports: &[PortRange]) -> PortIndex {
        if list.len() <= LINEAR_MAX {
            return PortIndex::Linear(list.into_boxed_slice());
        }
        let ranges = |r: &CRule| -> &[PortRange] { &ports[r.ports_off as usize..(r.ports_off + r.ports_len) as usize] };
        const ALL: [PortRange; 1] = [PortRange { lo: 0, hi: u16::MAX }];
        let mut cuts: Vec<u16> = vec![0];
        for &i in &list {
            for p in ranges(&crules[i as usize]) {
                cuts.push(p.lo);
                if p.hi < u16::MAX {
                    cuts.push(p.hi + 1);
                }
            }
        }
        cuts.sort_unstable();
        cuts.dedup();
        let m = cuts.len();
        // next[j]: first interval >= j that has no plain rule yet (union-find with path halving).
        let mut next: Vec<u32> = (0..=m as u32).collect();
        fn find(next: &mut [u32], mut j: u32) -> u32 {
            while next[j as usize] != j {
                let up = next[next[j as usize] as usize];
                next[j as usize] = up;
                j = up;
            }
            j
        }
        let mut per: Vec<Vec<u32>> = vec![Vec::new(); m];
        let budget = 16 * list.len() + 1024;
        let mut total = 0usize;
        for &i in &list {
            let r = &crules[i as usize];
            let rs = if r.ports_len == 0 { &ALL[..] } else { ranges(r) };
            for p in rs {
                let a = cuts.partition_point(|&c| c < p.lo) as u32; // cuts[a] == p.lo
                let b = cuts.partition_point(|&c| c <= p.hi) as u32; // intervals a..b
                let mut j = find(&mut next, a);
                while j < b {
                    per[j as usize].push(i);
                    total += 1;
                    if r.plain() {
                        next[j as usize] = j + 1;
                    }
                    j = find(&mut next, j + 1);
                }
            }
            if total > budget {
                return PortIndex::Linear(list.into_boxed_slice());
            }
        }
        let mut offs = Vec::with_capacity(m + 1);
        let mut entries = Vec::with_capacity(total);
        for l in &per {
            offs.push(entries.len() as u32);
            entries.extend_from_slice(l);
        }
        offs.push(entries.len() as u32);
        PortIndex::Intervals {
            starts: cuts.into_boxed_slice(),
            offs: offs.into_boxed_slice(),
            entries: entries.into_boxed_slice(),
        }
    }
}

/// Protocol key of a bucket list: the protocol number, or [`ANY_PROTO`] for rules of any
/// protocol without ports.
const ANY_PROTO: u16 = 256;

/// Most side-table entries one address can match: `any`, `external` or its workload, and one
/// CIDR per prefix length (0..=128 for IPv6).
const MAX_MATCHING: usize = 2 + 129;

/// The rules of one `(from, to)` pair.
#[derive(Debug)]
struct Bucket {
    min_rank: u64,
    /// (protocol key, rank of its first rule, rules), sorted by key.
    lists: Box<[(u16, u64, PortIndex)]>,
}

/// CIDRs of one family as a laminar interval map (see the module docs).
#[derive(Debug)]
struct Prefixes<T> {
    /// Elementary interval starts, ascending.
    starts: Box<[u128]>,
    /// Innermost CIDR (node index) of each interval, or NONE32.
    inner: Box<[u32]>,
    /// (parent node or NONE32, value).
    nodes: Box<[(u32, T)]>,
}

impl<T> Prefixes<T> {
    /// `items`: (first, last address as u128, value); keys must be distinct CIDRs.
    fn build(mut items: Vec<(u128, u128, T)>) -> Prefixes<T> {
        // Containing CIDRs first: start ascending, then larger (later last) first.
        items.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        let mut starts: Vec<u128> = Vec::new();
        let mut inner: Vec<u32> = Vec::new();
        let mut parents: Vec<u32> = Vec::with_capacity(items.len());
        let mut ends: Vec<u128> = Vec::with_capacity(items.len());
        fn push(starts: &mut Vec<u128>, inner: &mut Vec<u32>, at: u128, node: u32) {
            if starts.last() == Some(&at) {
                if let Some(last) = inner.last_mut() {
                    *last = node;
                }
            } else {
                starts.push(at);
                inner.push(node);
            }
        }
        let mut stack: Vec<u32> = Vec::new();
        for (n, it) in items.iter().enumerate() {
            while let Some(&top) = stack.last() {
                if ends[top as usize] >= it.0 {
                    break;
                }
                stack.pop();
                // ends[top] < it.0 <= u128::MAX, so +1 cannot overflow.
                push(
                    &mut starts,
                    &mut inner,
                    ends[top as usize] + 1,
                    stack.last().copied().unwrap_or(NONE32),
                );
            }
            parents.push(stack.last().copied().unwrap_or(NONE32));
            ends.push(it.1);
            push(&mut starts, &mut inner, it.0, n as u32);
            stack.push(n as u32);
        }
        while let Some(top) = stack.pop() {
            if ends[top as usize] != u128::MAX {
                push(
                    &mut starts,
                    &mut inner,
                    ends[top as usize] + 1,
                    stack.last().copied().unwrap_or(NONE32),
                );
            }
        }
        let nodes: Vec<(u32, T)> = items.into_iter().zip(parents).map(|((_, _, v), p)| (p, v)).collect();
        Prefixes {
            starts: starts.into_boxed_slice(),
            inner: inner.into_boxed_slice(),
            nodes: nodes.into_boxed_slice(),
        }
    }

    /// Calls `f` with the value of every CIDR containing `a`, innermost first.
    #[inline]
    fn visit<'s>(&'s self, a: u128, f: &mut impl FnMut(&'s T)) {
        let i = self.starts.partition_point(|&s| s <= a);
        if i == 0 {
            return;
        }
        let mut n = self.inner[i - 1];
        while n != NONE32 {
            let (parent, v) = &self.nodes[n as usize];
            f(v);
            n = *parent;
        }
    }
}

/// One side's table (see the module docs).
#[derive(Debug)]
struct Side<T> {
    any: Option<T>,
    external: Option<T>,
    /// (workload index, value), sorted by index.
    workloads: Box<[(u32, T)]>,
    v4: Prefixes<T>,
    v6: Prefixes<T>,
}

impl<T> Side<T> {
    /// Calls `f` for every entry matching address `ip` whose workload is `w`.
    #[inline]
    fn visit<'s>(&'s self, ip: IpAddr, w: Option<WorkloadIdx>, f: &mut impl FnMut(&'s T)) {
        if let Some(v) = &self.any {
            f(v);
        }
        match w {
            None => {
                if let Some(v) = &self.external {
                    f(v);
                }
            }
            Some(w) => {
                if let Ok(i) = self.workloads.binary_search_by_key(&w.0, |e| e.0) {
                    f(&self.workloads[i].1);
                }
            }
        }
        match ip {
            IpAddr::V4(a) => self.v4.visit(u128::from(u32::from(a)), f),
            IpAddr::V6(a) => self.v6.visit(u128::from(a), f),
        }
    }
}

/// A rule side as a table key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Any,
    External,
    Workload(u32),
    V4(u128, u128),
    V6(u128, u128),
}

fn key_of(e: &Endpoint, ids: &std::collections::HashMap<&str, u32>) -> Option<Key> {
    Some(match e {
        Endpoint::Any => Key::Any,
        Endpoint::External => Key::External,
        Endpoint::Workload(id) => Key::Workload(*ids.get(id.as_str())?),
        Endpoint::Cidr(Cidr {
            addr: IpAddr::V4(a),
            len,
        }) => {
            let lo = u128::from(mask_v4(u32::from(*a), *len));
            let size = u128::from(u32::MAX.checked_shr(u32::from(*len)).unwrap_or(0));
            Key::V4(lo, lo + size)
        }
        Endpoint::Cidr(Cidr {
            addr: IpAddr::V6(a),
            len,
        }) => {
            let lo = mask_v6(u128::from(*a), *len);
            let size = u128::MAX.checked_shr(u32::from(*len)).unwrap_or(0);
            Key::V6(lo, lo + size)
        }
    })
}

fn side_build<V, T>(map: std::collections::HashMap<Key, V>, mut make: impl FnMut(V) -> T) -> Side<T> {
    let mut any = None;
    let mut external = None;
    let mut workloads = Vec::new();
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for (k, v) in map {
        let t = make(v);
        match k {
            Key::Any => any = Some(t),
            Key::External => external = Some(t),
            Key::Workload(w) => workloads.push((w, t)),
            Key::V4(lo, hi) => v4.push((lo, hi, t)),
            Key::V6(lo, hi) => v6.push((lo, hi, t)),
        }
    }
    workloads.sort_unstable_by_key(|e| e.0);
    Side {
        any,
        external,
        workloads: workloads.into_boxed_slice(),
        v4: Prefixes::build(v4),
        v6: Prefixes::build(v6),
    }
}

/// One (address, port range) a service claims, as [`CompiledPolicy::external_ip_mitm`] needs
/// it (owner and backing facts resolved when the policy is compiled).
#[derive(Debug, Clone, Copy)]
struct Claim {
    /// Claimed server ports `lo..=hi` (0..=65535 when the service lists none).
    lo: u16,
    hi: u16,
    /// The service lists ports: only TCP and UDP connections match.
    ported: bool,
    /// Index of the service in `Policy::services`.
    service: u32,
    /// The workload the address belongs to, or NONE32.
    owner: u32,
    /// The owner is one of the service's backing workloads.
    owner_backs: bool,
}

/// The services' externalIPs: address -> its claims (file order of the services).
#[derive(Debug, Default)]
struct ExternalIps {
    /// Address -> `claims[off..off + len]`.
    v4: HashMap<u32, (u32, u32)>,
    v6: HashMap<u128, (u32, u32)>,
    claims: Box<[Claim]>,
    /// Backing workload indices of service `s`, sorted:
    /// `backing[backing_off[s]..backing_off[s + 1]]`.
    backing: Box<[u32]>,
    backing_off: Box<[u32]>,
    /// `namespace/name` of each service (evidence for threat records, without formatting).
    labels: Box<[String]>,
}

impl ExternalIps {
    fn build(p: &Policy, ids: &std::collections::HashMap<&str, u32>, owner_of: impl Fn(IpAddr) -> Option<u32>) -> Result<ExternalIps, PolicyError> {
        let mut backing = Vec::new();
        let mut backing_off = vec![0u32];
        let mut seen = std::collections::HashSet::new();
        // (address key, family v6, claim), then grouped per address.
        let mut claims: Vec<(u128, bool, Claim)> = Vec::new();
        const EVERY: [PortRange; 1] = [PortRange { lo: 0, hi: u16::MAX }];
        for (si, svc) in p.services.iter().enumerate() {
            let err = |field: &str, message: String| PolicyError {
                line: 0,
                field: field.into(),
                message: format!("service {}/{}: {message}", svc.namespace, svc.name),
            };
            if !seen.insert((svc.namespace.as_str(), svc.name.as_str())) {
                return Err(err("name", "duplicate service".into()));
            }
            let start = backing.len();
            for id in &svc.workloads {
                let w = *ids.get(id.as_str()).ok_or_else(|| err("workloads", format!("unknown workload {id:?}")))?;
                backing.push(w);
            }
            backing[start..].sort_unstable();
            let mine = &backing[start..];
            if mine.windows(2).any(|w| w[0] == w[1]) {
                return Err(err("workloads", "a workload is listed twice".into()));
            }
            let (ports, ported) = match &svc.ports {
                Some(list) if !list.is_empty() => (&list[..], true),
                Some(_) => return Err(err("ports", "empty port list".into())),
                None => (&EVERY[..], false),
            };
            if svc.external_ips.is_empty() {
                return Err(err("external_ips", "no address".into()));
            }
            for (i, &ip) in svc.external_ips.iter().enumerate() {
                if svc.external_ips[..i].contains(&ip) {
                    return Err(err("external_ips", format!("duplicate address {ip}")));
                }
                let owner = owner_of(ip);
                let owner_backs = owner.is_some_and(|o| mine.binary_search(&o).is_ok());
                let (key, v6) = match ip {
                    IpAddr::V4(a) => (u128::from(u32::from(a)), false),
                    IpAddr::V6(a) => (u128::from(a), true),
                };
                for pr in ports {
                    claims.push((
                        key,
                        v6,
                        Claim {
                            lo: pr.lo,
                            hi: pr.hi,
                            ported,
                            service: si as u32,
                            owner: owner.unwrap_or(NONE32),
                            owner_backs,
                        },
                    ));
                }
            }
            backing_off.push(backing.len() as u32);
        }
        // Stable: claims of one address stay in file order of their services.
        claims.sort_by_key(|c| (c.1, c.0));
        let mut v4 = HashMap::new();
        let mut v6 = HashMap::new();
        let mut i = 0;
        while i < claims.len() {
            let (key, fam) = (claims[i].0, claims[i].1);
            let n = claims[i..].iter().take_while(|c| c.0 == key && c.1 == fam).count();
            let span = (i as u32, n as u32);
            if fam {
                v6.insert(key, span);
            } else {
                v4.insert(key as u32, span);
            }
            i += n;
        }
        Ok(ExternalIps {
            v4,
            v6,
            claims: claims.into_iter().map(|c| c.2).collect(),
            backing: backing.into_boxed_slice(),
            backing_off: backing_off.into_boxed_slice(),
            labels: p.services.iter().map(|s| format!("{}/{}", s.namespace, s.name)).collect(),
        })
    }

    /// True if workload `w` backs service `s`.
    #[inline]
    fn backs(&self, s: u32, w: u32) -> bool {
        let (a, b) = (self.backing_off[s as usize] as usize, self.backing_off[s as usize + 1] as usize);
        self.backing[a..b].binary_search(&w).is_ok()
    }
}

/// A policy compiled for evaluation. Immutable, `Send + Sync`: build it once per policy
/// version and share it read-only (e.g. `Arc` swapped by the control thread).
#[derive(Debug)]
pub struct CompiledPolicy {
    policy: Policy,
    crules: Box<[CRule]>,
    ports: Box<[PortRange]>,
    /// (name, wildcard) of each fqdn condition.
    fqdns: Box<[(String, bool)]>,
    /// Indices of the rules with an fqdn condition.
    fqdn_rules: Box<[u32]>,
    index: Side<(u64, Side<Bucket>)>,
    /// Address -> workload index.
    wl_v4: HashMap<u32, u32>,
    wl_v6: HashMap<u128, u32>,
    wl_mac: HashMap<Mac, u32>,
    /// The services' externalIPs ([`CompiledPolicy::external_ip_mitm`]).
    ext: ExternalIps,
    /// Address -> where it may be sent from ([`Policy::bound`]).
    bound: HashMap<IpAddr, Bound>,
    /// Attachment near end -> its bridge's index ([`Policy::uplinks`]; equal indices, equal
    /// bridges).
    uplinks: HashMap<Box<str>, u32>,
}

/// A [`super::model::BoundAddr`] as compiled: the bridge as an index into the policy's
/// distinct uplink bridges ([`CompiledPolicy::uplink_bridge`]; `u32::MAX`: none of them).
#[derive(Debug, Clone)]
pub struct Bound {
    /// The attachment's host interface.
    pub iface: Box<str>,
    /// Its bridge.
    pub bridge: u32,
    /// The MAC the workload sends from, if known.
    pub mac: Option<[u8; 6]>,
}

impl CompiledPolicy {
    /// A policy with no workloads and no rules: every connection is not enforced
    /// (`verdict: None`).
    pub fn empty() -> CompiledPolicy {
        match CompiledPolicy::compile(&Policy::default()) {
            Ok(c) => c,
            Err(_) => unreachable!("the empty policy compiles"),
        }
    }

    /// Compiles a validated policy (from [`Policy::from_toml`], or built in code with the same
    /// rules). Errors, for policies built in code: a rule naming an unknown workload, a
    /// workload address or MAC in two workloads, duplicate workload or rule ids, CIDRs with
    /// host bits set, a service naming an unknown workload (or one twice), a duplicate
    /// service, a service without addresses, with an address twice or an empty port list
    /// (line 0, field and message as from_toml would say).
    pub fn compile(p: &Policy) -> Result<CompiledPolicy, PolicyError> {
        let err = |field: &str, message: String| PolicyError {
            line: 0,
            field: field.into(),
            message,
        };
        if p.rules.len() > crate::shadow::MAX_SHADOW_RULES {
            return Err(err("rule", format!("{} rules: at most {} are supported", p.rules.len(), crate::shadow::MAX_SHADOW_RULES)));
        }
        let mut ids: std::collections::HashMap<&str, u32> = std::collections::HashMap::new();
        let mut wl_v4 = Vec::new();
        let mut wl_v6 = Vec::new();
        let mut wl_mac = HashMap::new();
        for (i, w) in p.workloads.iter().enumerate() {
            let i = i as u32;
            if ids.insert(w.id.as_str(), i).is_some() {
                return Err(err("id", format!("duplicate workload id {:?}", w.id)));
            }
            for ip in &w.ips {
                match ip {
                    IpAddr::V4(a) => wl_v4.push((u32::from(*a), i)),
                    IpAddr::V6(a) => wl_v6.push((u128::from(*a), i)),
                }
            }
            for m in &w.macs {
                if wl_mac.insert(*m, i).is_some() {
                    return Err(err("macs", format!("MAC {m} in two workloads")));
                }
            }
        }
        wl_v4.sort_unstable();
        wl_v6.sort_unstable();
        if wl_v4.windows(2).any(|w| w[0].0 == w[1].0) || wl_v6.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(err("ips", "an address is in two workloads".into()));
        }

        let mut crules = Vec::with_capacity(p.rules.len());
        let mut ports = Vec::new();
        let mut fqdns: Vec<(String, bool)> = Vec::new();
        let mut fqdn_ix: std::collections::HashMap<(String, bool), u32> = std::collections::HashMap::new();
        let mut rule_ids = std::collections::HashSet::new();
        // from key -> to key -> rule indices
        type Level2 = std::collections::HashMap<Key, Vec<u32>>;
        let mut table: std::collections::HashMap<Key, Level2> = std::collections::HashMap::new();
        for (i, r) in p.rules.iter().enumerate() {
            if !rule_ids.insert(r.id) {
                return Err(err("id", format!("duplicate rule id {}", r.id)));
            }
            for (field, e) in [("from", &r.from), ("to", &r.to)] {
                if let Endpoint::Cidr(c) = e {
                    if Cidr::host(c.addr).len < c.len || !c.contains(c.addr) {
                        return Err(err(field, format!("bad CIDR {c} in rule {}", r.id)));
                    }
                }
            }
            let from = key_of(&r.from, &ids).ok_or_else(|| err("from", format!("unknown workload {}", r.from)))?;
            let to = key_of(&r.to, &ids).ok_or_else(|| err("to", format!("unknown workload {}", r.to)))?;
            let fqdn = match &r.fqdn {
                None => NONE32,
                Some(q) => {
                    let key = (q.name.to_ascii_lowercase(), q.wildcard);
                    let next = fqdns.len() as u32;
                    *fqdn_ix.entry(key.clone()).or_insert_with(|| {
                        fqdns.push(key);
                        next
                    })
                }
            };
            let apps = match &r.apps {
                None => 0,
                // An empty mask would read as "no condition"; a rule whose apps are all
                // unmatchable (unknown) gets the unknown bit, which never matches.
                Some(list) => list.iter().fold(0u128, |m, a| m | app_bit(*a)) | app_bit(App::Unknown),
            };
            let (ports_off, ports_len) = match &r.ports {
                None => (ports.len() as u32, 0),
                Some(list) => {
                    let off = ports.len() as u32;
                    ports.extend_from_slice(list);
                    (off, list.len() as u32)
                }
            };
            crules.push(CRule {
                rank: rank(r),
                index: i as u32,
                action: r.action,
                apps,
                fqdn,
                ports_off,
                ports_len,
            });
            table.entry(from).or_default().entry(to).or_default().push(i as u32);
        }
        let index = side_build(table, |level2: Level2| {
            let side = side_build(level2, |list: Vec<u32>| build_bucket(list, p, &crules, &ports));
            let mut min = NO_RANK;
            side_min(&side, &mut min);
            (min, side)
        });
        let fqdn_rules = crules.iter().filter(|r| r.fqdn != NONE32).map(|r| r.index).collect();
        let owner_of = |ip: IpAddr| -> Option<u32> {
            match ip {
                IpAddr::V4(a) => wl_v4.binary_search_by_key(&u32::from(a), |e| e.0).ok().map(|i| wl_v4[i].1),
                IpAddr::V6(a) => wl_v6.binary_search_by_key(&u128::from(a), |e| e.0).ok().map(|i| wl_v6[i].1),
            }
        };
        let ext = ExternalIps::build(p, &ids, owner_of)?;
        // The attachments' bridges, numbered once.
        let mut bridges: HashMap<&str, u32> = HashMap::new();
        for b in p.uplinks.values() {
            let n = bridges.len() as u32;
            bridges.entry(b.as_str()).or_insert(n);
        }
        Ok(CompiledPolicy {
            policy: p.clone(),
            crules: crules.into_boxed_slice(),
            ports: ports.into_boxed_slice(),
            fqdns: fqdns.into_boxed_slice(),
            fqdn_rules,
            index,
            wl_v4: wl_v4.into_iter().collect(),
            wl_v6: wl_v6.into_iter().collect(),
            wl_mac,
            ext,
            bound: p
                .bound
                .iter()
                .map(|(ip, b)| {
                    let bridge = bridges.get(b.bridge.as_str()).copied().unwrap_or(u32::MAX);
                    (*ip, Bound { iface: b.iface.as_str().into(), bridge, mac: b.mac })
                })
                .collect(),
            uplinks: p.uplinks.iter().map(|(near, bridge)| (near.as_str().into(), bridges[bridge.as_str()])).collect(),
        })
    }

    /// The policy this was compiled from.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The rules, in file order; [`Decision::rule_index`] indexes this.
    pub fn rules(&self) -> &[Rule] {
        &self.policy.rules
    }

    /// Id of the rule at index `i` of [`Self::rules`] (`None` when there is no such rule).
    pub fn rule_id_at(&self, i: usize) -> Option<u32> {
        self.policy.rules.get(i).map(|r| r.id)
    }

    /// The workloads, in file order; [`WorkloadIdx`] indexes this.
    pub fn workloads(&self) -> &[Workload] {
        &self.policy.workloads
    }

    /// Id of workload `idx`. Panics if `idx` is not from this policy.
    pub fn workload_id(&self, idx: WorkloadIdx) -> &str {
        &self.policy.workloads[idx.index()].id
    }

    /// Mode of workload `idx`. Panics if `idx` is not from this policy.
    pub fn workload_mode(&self, idx: WorkloadIdx) -> Mode {
        self.policy.workloads[idx.index()].mode
    }

    /// The workload with id `id`, if any (linear; not for the packet path).
    pub fn workload_by_id(&self, id: &str) -> Option<WorkloadIdx> {
        self.policy
            .workloads
            .iter()
            .position(|w| w.id == id)
            .map(|i| WorkloadIdx(i as u32))
    }

    /// The workload address `ip` belongs to, if any (one hash lookup).
    #[inline]
    pub fn workload_of(&self, ip: IpAddr) -> Option<WorkloadIdx> {
        match ip {
            IpAddr::V4(a) => self.wl_v4.get(&u32::from(a)).map(|&i| WorkloadIdx(i)),
            IpAddr::V6(a) => self.wl_v6.get(&u128::from(a)).map(|&i| WorkloadIdx(i)),
        }
    }

    /// The workload whose `iface` is the interface named `name`, or else the workload owning
    /// the addresses bound to it ([`Policy::bound`]: an attachment taken by a workload that
    /// lists or selects it), if any (a linear scan: call it when a policy or an interface is
    /// set, not per frame).
    pub fn workload_of_iface(&self, name: &str) -> Option<WorkloadIdx> {
        self.policy
            .workloads
            .iter()
            .position(|w| w.iface.as_deref() == Some(name))
            .map(|i| WorkloadIdx(i as u32))
            .or_else(|| self.policy.bound.iter().filter(|(_, b)| b.iface == name).find_map(|(ip, _)| self.workload_of(*ip)))
    }

    /// Where `ip` may be sent from ([`Policy::bound`]), if it is an attachment's. No lookup
    /// when nothing is bound (no attachments).
    #[inline]
    pub fn bound(&self, ip: IpAddr) -> Option<&Bound> {
        if self.bound.is_empty() {
            return None;
        }
        self.bound.get(&ip)
    }

    /// The bridge the interface named `name` faces, when it is an attachment's near end
    /// ([`Policy::uplinks`]): an index comparable with [`Bound::bridge`]. One hash lookup.
    pub fn uplink_bridge(&self, name: &str) -> Option<u32> {
        self.uplinks.get(name).copied()
    }

    /// True when some rule has an `fqdn` condition (only then do server names matter).
    #[inline]
    pub fn has_fqdn(&self) -> bool {
        !self.fqdn_rules.is_empty()
    }

    /// True when a rule with an `fqdn` condition could use `name` as a name of `server` for a
    /// connection from `client`: its `from` matches `client`, its `to` matches `server` and its
    /// pattern matches `name`. Used to store only DNS names this policy can need; linear in the
    /// rules with `fqdn` (called per DNS answer, not per frame).
    pub fn fqdn_wanted(&self, client: IpAddr, server: IpAddr, name: &str) -> bool {
        let ends = [(client, self.workload_of(client)), (server, self.workload_of(server))];
        let end_matches = |e: &Endpoint, (ip, w): (IpAddr, Option<WorkloadIdx>)| match e {
            Endpoint::Any => true,
            Endpoint::External => w.is_none(),
            Endpoint::Workload(id) => w.is_some_and(|w| self.workload_id(w) == id),
            Endpoint::Cidr(c) => c.contains(ip),
        };
        self.fqdn_rules.iter().any(|&i| {
            let r = &self.policy.rules[i as usize];
            r.fqdn.as_ref().is_some_and(|q| q.matches(name))
                && end_matches(&r.from, ends[0])
                && end_matches(&r.to, ends[1])
        })
    }

    /// The workload MAC `mac` (6 bytes) belongs to, if any.
    pub fn workload_of_mac(&self, mac: [u8; 6]) -> Option<WorkloadIdx> {
        self.wl_mac.get(&Mac(mac)).map(|&i| WorkloadIdx(i))
    }

    /// The decision for a connection (semantics: the `policy` module docs). Allocates
    /// nothing; cost grows with the number of table entries matching the two addresses and
    /// the rules ranked before the deciding one in their port intervals, not with the number
    /// of rules.
    pub fn evaluate(&self, f: &Facts<'_>) -> Decision {
        self.evaluate_ends(f, Ends::default())
    }

    /// [`Self::evaluate`] where an end's workload may be known from the interface its frames
    /// were seen on (`ends`, which wins over the address lookup).
    pub fn evaluate_ends(&self, f: &Facts<'_>, ends: Ends) -> Decision {
        let valid = |w: Option<WorkloadIdx>| w.filter(|w| w.index() < self.policy.workloads.len());
        let cw = valid(ends.client).or_else(|| self.workload_of(f.client));
        let sw = valid(ends.server).or_else(|| self.workload_of(f.server));
        if cw.is_none() && sw.is_none() {
            return Decision::NOT_ENFORCED;
        }
        let mut found = Found::new();
        let proto_key = u16::from(f.ip_proto);
        let ported = f.ip_proto == 6 || f.ip_proto == 17;
        // Branch and bound: gather the entries matching the client (at most any, external or
        // the workload, and one per prefix length), visit them by increasing minimum rank and
        // stop at the first that cannot beat the best rule found; the same for the server's
        // buckets inside each. The arrays live on the stack; should one ever fill up, the
        // rest are visited unsorted (same result, less pruning).
        let mut froms: ArrayVec<&(u64, Side<Bucket>), MAX_MATCHING> = ArrayVec::new();
        self.index.visit(f.client, cw, &mut |e: &(u64, Side<Bucket>)| {
            if let Err(full) = froms.try_push(e) {
                self.visit_to(full.element(), f, sw, proto_key, ported, &mut found);
            }
        });
        froms.sort_unstable_by_key(|e| e.0);
        for &e in froms.iter() {
            if e.0 >= found.best_rank {
                break;
            }
            self.visit_to(e, f, sw, proto_key, ported, &mut found);
        }
        let rule = (found.best != NONE32).then(|| {
            let c = &self.crules[found.best as usize];
            (&self.policy.rules[c.index as usize], c.index)
        });
        let mode = |w: Option<WorkloadIdx>| w.map(|w| (w, self.workload_mode(w)));
        decide(mode(cw), mode(sw), &found, rule)
    }

    /// The server side of one `from` entry, buckets by increasing minimum rank.
    #[inline]
    fn visit_to(
        &self,
        e: &(u64, Side<Bucket>),
        f: &Facts<'_>,
        sw: Option<WorkloadIdx>,
        proto_key: u16,
        ported: bool,
        found: &mut Found,
    ) {
        if e.0 >= found.best_rank {
            return;
        }
        let mut buckets: ArrayVec<&Bucket, MAX_MATCHING> = ArrayVec::new();
        e.1.visit(f.server, sw, &mut |b: &Bucket| {
            if let Err(full) = buckets.try_push(b) {
                self.scan_bucket(full.element(), f, proto_key, ported, found);
            }
        });
        buckets.sort_unstable_by_key(|b| b.min_rank);
        for &b in buckets.iter() {
            if b.min_rank >= found.best_rank {
                break;
            }
            self.scan_bucket(b, f, proto_key, ported, found);
        }
    }

    #[inline]
    fn scan_bucket(&self, b: &Bucket, f: &Facts<'_>, proto_key: u16, ported: bool, found: &mut Found) {
        if b.min_rank >= found.best_rank {
            return;
        }
        for (k, first, list) in b.lists.iter() {
            if (*k == proto_key || *k == ANY_PROTO) && *first < found.best_rank {
                self.scan(list, f, ported, found);
            }
        }
    }

    #[inline]
    fn scan(&self, list: &PortIndex, f: &Facts<'_>, ported: bool, found: &mut Found) {
        match list {
            PortIndex::Linear(l) => {
                for &i in l.iter() {
                    let r = &self.crules[i as usize];
                    if r.rank >= found.best_rank {
                        break;
                    }
                    if r.ports_len != 0 {
                        let ps = &self.ports[r.ports_off as usize..(r.ports_off + r.ports_len) as usize];
                        if !ported || !ps.iter().any(|p| p.contains(f.server_port)) {
                            continue;
                        }
                    }
                    if self.take(r, i, f, found) {
                        break;
                    }
                }
            }
            PortIndex::Intervals { starts, offs, entries } => {
                // Interval lists of tcp/udp keys are port-specific; other keys have one
                // interval (no rule there has ports).
                let port = if ported { f.server_port } else { 0 };
                let j = starts.partition_point(|&s| s <= port).saturating_sub(1);
                let (a, b) = (offs[j] as usize, offs[j + 1] as usize);
                for &i in &entries[a..b] {
                    let r = &self.crules[i as usize];
                    if r.rank >= found.best_rank {
                        break;
                    }
                    if self.take(r, i, f, found) {
                        break;
                    }
                }
            }
        }
    }

    /// Checks a rule's app and fqdn conditions (address, protocol and port already match);
    /// records it as best (returns true: stop the list) or as an app candidate.
    #[inline]
    fn take(&self, r: &CRule, i: u32, f: &Facts<'_>, found: &mut Found) -> bool {
        if r.fqdn != NONE32 {
            let (name, wild) = &self.fqdns[r.fqdn as usize];
            if !f.server_names.iter().any(|n| fqdn_matches(name, *wild, n)) {
                return false;
            }
        }
        if r.apps != 0 {
            match f.app {
                None => {
                    let slot = match r.action {
                        Action::Allow => &mut found.allow_app,
                        Action::Deny => &mut found.deny_app,
                    };
                    *slot = (*slot).min(r.rank);
                    let mut m = r.apps & !app_bit(App::Unknown);
                    while m != 0 {
                        found.app_rule(m.trailing_zeros() as usize, r.rank, r.action);
                        m &= m - 1;
                    }
                    return false;
                }
                Some(a) => {
                    if a == App::Unknown || r.apps & app_bit(a) == 0 {
                        return false;
                    }
                }
            }
        }
        found.best_rank = r.rank;
        found.best = i;
        true
    }

    /// The services, in file order; [`ServiceIdx`] indexes this.
    pub fn services(&self) -> &[Service] {
        &self.policy.services
    }

    /// Service `idx`. Panics if `idx` is not from this policy.
    pub fn service(&self, idx: ServiceIdx) -> &Service {
        &self.policy.services[idx.index()]
    }

    /// `namespace/name` of service `idx` (kept from compilation: no formatting on the packet
    /// path, e.g. as a threat record's evidence). Panics if `idx` is not from this policy.
    pub fn service_label(&self, idx: ServiceIdx) -> &str {
        &self.ext.labels[idx.index()]
    }

    /// The `k8s_external_ip_mitm` check (CVE-2020-8554; semantics in the `policy` module docs,
    /// "Services and externalIPs") for a connection from `client` (the session's client
    /// workload as decided, [`Decision::client_workload`]; `None`: not a workload) to `server`
    /// (address), IP protocol `ip_proto` (6 TCP, 17 UDP, ...) and `server_port` (TCP/UDP; any
    /// value for other protocols). `Some` when a service claims `server` (and the port, if it
    /// lists ports: TCP and UDP only) and either
    /// - `server` is an address of a workload that does not back the service (the Service
    ///   redirects traffic meant for that workload: [`ExternalIpMitm::owner`] is it), unless
    ///   the client is that workload itself; or
    /// - `server` is an address of no workload and the client is a workload that does not
    ///   back the service (a workload's traffic to an outside address goes to the Service's
    ///   pods instead: `owner` is `None`).
    ///
    /// Among several services claiming the address and port, the first in file order that
    /// answers `Some`. One hash lookup, then the address's claims (a few); allocates nothing.
    #[inline]
    pub fn external_ip_mitm(
        &self,
        client: Option<WorkloadIdx>,
        server: IpAddr,
        ip_proto: u8,
        server_port: u16,
    ) -> Option<ExternalIpMitm> {
        let ext = &self.ext;
        if ext.claims.is_empty() {
            return None;
        }
        let &(off, len) = match server {
            IpAddr::V4(a) => ext.v4.get(&u32::from(a))?,
            IpAddr::V6(a) => ext.v6.get(&u128::from(a))?,
        };
        let ported = ip_proto == 6 || ip_proto == 17;
        let client = client.map(|w| w.0);
        let claims = ext.claims.get(off as usize..(off + len) as usize)?;
        for c in claims {
            if c.ported && !(ported && c.lo <= server_port && server_port <= c.hi) {
                continue;
            }
            let hit = if c.owner != NONE32 {
                !c.owner_backs && client != Some(c.owner)
            } else {
                client.is_some_and(|w| !ext.backs(c.service, w))
            };
            if hit {
                return Some(ExternalIpMitm {
                    service: ServiceIdx(c.service),
                    owner: (c.owner != NONE32).then_some(WorkloadIdx(c.owner)),
                });
            }
        }
        None
    }

    /// Every externalIP a service claims that is an address of a workload not backing it, as
    /// `(service, address, owner)` in file order: the policy itself describes the
    /// CVE-2020-8554 redirection (the daemon logs these when a policy is installed). Not for
    /// the packet path.
    pub fn external_ip_conflicts(&self) -> Vec<(ServiceIdx, IpAddr, WorkloadIdx)> {
        let mut out = Vec::new();
        for (si, svc) in self.policy.services.iter().enumerate() {
            for &ip in &svc.external_ips {
                if let Some(owner) = self.workload_of(ip) {
                    if !self.ext.backs(si as u32, owner.0) {
                        out.push((ServiceIdx(si as u32), ip, owner));
                    }
                }
            }
        }
        out
    }

    /// Number of bucket lists and index entries (for tests and the benchmark's notes).
    pub fn index_stats(&self) -> IndexStats {
        let mut s = IndexStats::default();
        let count_side = |side: &Side<Bucket>, s: &mut IndexStats| {
            side_for_each(side, &mut |b: &Bucket| {
                s.buckets += 1;
                for (_, _, l) in b.lists.iter() {
                    match l {
                        PortIndex::Linear(l) => {
                            s.linear_lists += 1;
                            s.entries += l.len();
                        }
                        PortIndex::Intervals { entries, starts, .. } => {
                            s.interval_lists += 1;
                            s.intervals += starts.len();
                            s.entries += entries.len();
                        }
                    }
                }
            });
        };
        side_for_each(&self.index, &mut |(_, side): &(u64, Side<Bucket>)| {
            s.from_entries += 1;
            count_side(side, &mut s);
        });
        s
    }
}

/// Sizes of a compiled index (see [`CompiledPolicy::index_stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IndexStats {
    /// Distinct `from` keys.
    pub from_entries: usize,
    /// Distinct `(from, to)` pairs.
    pub buckets: usize,
    /// Per-protocol lists kept as plain rank-ordered lists.
    pub linear_lists: usize,
    /// Per-protocol lists indexed by port interval.
    pub interval_lists: usize,
    /// Port intervals in all interval lists.
    pub intervals: usize,
    /// Rule references in all lists.
    pub entries: usize,
}

fn side_for_each<T>(s: &Side<T>, f: &mut impl FnMut(&T)) {
    s.any.iter().chain(s.external.iter()).for_each(&mut *f);
    s.workloads.iter().for_each(|e| f(&e.1));
    s.v4.nodes.iter().chain(s.v6.nodes.iter()).for_each(|n| f(&n.1));
}

fn side_min(s: &Side<Bucket>, min: &mut u64) {
    side_for_each(s, &mut |b: &Bucket| *min = (*min).min(b.min_rank));
}

fn build_bucket(mut list: Vec<u32>, p: &Policy, crules: &[CRule], ports: &[PortRange]) -> Bucket {
    list.sort_unstable_by_key(|&i| crules[i as usize].rank);
    let mut by_key: std::collections::BTreeMap<u16, Vec<u32>> = std::collections::BTreeMap::new();
    for &i in &list {
        let r = &p.rules[crules[i as usize].index as usize];
        let has_ports = r.ports.is_some();
        if has_ports && !matches!(r.ip_proto, IpProto::Any | IpProto::Tcp | IpProto::Udp) {
            continue; // ports never match other protocols (from_toml rejects such rules)
        }
        match (r.ip_proto, has_ports) {
            (IpProto::Any, false) => by_key.entry(ANY_PROTO).or_default().push(i),
            (IpProto::Any, true) => {
                by_key.entry(6).or_default().push(i);
                by_key.entry(17).or_default().push(i);
            }
            (proto, _) => {
                if let Some(n) = proto.number() {
                    by_key.entry(u16::from(n)).or_default().push(i)
                }
            }
        }
    }
    let min_rank = list.first().map_or(NO_RANK, |&i| crules[i as usize].rank);
    let lists: Vec<(u16, u64, PortIndex)> = by_key
        .into_iter()
        .map(|(k, l)| {
            let first = l.first().map_or(NO_RANK, |&i| crules[i as usize].rank);
            (k, first, PortIndex::build(l, crules, ports))
        })
        .collect();
    Bucket {
        min_rank,
        lists: lists.into_boxed_slice(),
    }
}
