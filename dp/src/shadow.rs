//! The shadow policy: a candidate policy evaluated beside the running one, deciding nothing.
//!
//! `wardenctl policy shadow FILE` publishes a compiled candidate through the same
//! [`crate::enforce::PolicyHandle`] as the running policy, under a generation of its own; each
//! worker picks it up once per loop. Wherever the inspector evaluates a session's real verdict
//! (first frame, app decided or changed, a new real generation) it also evaluates the candidate
//! with the same facts (addresses, protocol, server port, app, DNS names of the client, the
//! workloads known from the client's interface *as the candidate names them*), and a live
//! session whose shadow generation is older is evaluated on its next frame. The outcome is a
//! [`ShadowState`] per session (8 bytes) in the session table's side array, allocated when a
//! shadow policy loads and freed when it is cleared or promoted, so the table's entry stays
//! within its 232 bytes ([`crate::session::SessionTable::set_shadow_states`]): records and
//! events carry `shadow_verdict` / `shadow_rule_id` where the settled shadow verdict differs
//! from the real one.
//!
//! Each worker sums the differences in a [`ShadowDiff`]: every session is *compared* once,
//! when both verdicts are settled (no `apps` rule still waiting for the app), and counted in
//! at most one group of (client workload, server workload, protocol, server port, real verdict
//! and rule, shadow verdict and rule), the first time its verdicts differ. The table is
//! allocated once per shadow load ([`MAX_DIFF_GROUPS`] groups) and touched only when a session
//! is evaluated, never per frame; differing sessions beyond it are counted (`overflow`).
//! `wardenctl policy diff` merges the workers' tables ([`ShadowDiff::merge`],
//! [`ShadowDiff::to_reply`]); `warden replay --policy A --shadow B` prints the same reply.
//!
//! What the shadow does not model: exception actions and threats (they are not policy), a
//! session the running policy's exception action bypasses (no longer evaluated at all), and
//! `fqdn` rules only the candidate has (the name table stores only names some running rule
//! can use, [`crate::names`]).

use std::net::IpAddr;

use warden_control::{PolicyDiff, PolicyDiffEntry, MAX_DIFF_GROUPS};

use crate::policy::{CompiledPolicy, Decision, PolicyVerdict, WorkloadIdx};

/// A session's verdict under the shadow policy (kept per slot beside the session table while a
/// shadow policy is loaded: [`crate::session::SessionTable::shadow`]), packed in 8 bytes so the
/// table stays within 256 bytes per session with a shadow loaded: the shadow generation, and
/// one word holding the deciding rule's index in the shadow policy plus one (24 bits, 0: the
/// mode's default; the policy compiler refuses more than [`MAX_SHADOW_RULES`] rules), the
/// verdict (3 bits) and the `pending_app`, `compared` and `counted` flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShadowState {
    /// Shadow generation that decided (0: never evaluated).
    pub generation: u32,
    /// Rule index + 1 (bits 0..24), verdict (24..27), flags (27, 28, 29).
    bits: u32,
}

/// Most rules a policy may have: the shadow state keeps a rule index + 1 in 24 bits.
pub const MAX_SHADOW_RULES: usize = (1 << 24) - 2;

const RULE_MASK: u32 = (1 << 24) - 1;
const VERDICT_SHIFT: u32 = 24;
const PENDING: u32 = 1 << 27;
const COMPARED: u32 = 1 << 28;
const COUNTED: u32 = 1 << 29;

fn verdict_code(v: Option<PolicyVerdict>) -> u32 {
    match v {
        None => 0,
        Some(PolicyVerdict::Allowed) => 1,
        Some(PolicyVerdict::Learned) => 2,
        Some(PolicyVerdict::Violation) => 3,
        Some(PolicyVerdict::Denied) => 4,
    }
}

impl ShadowState {
    /// Applies shadow decision `d` made under shadow generation `g` (the comparison flags
    /// start over with a new generation). A rule index beyond [`MAX_SHADOW_RULES`] (refused
    /// when the policy compiles) is kept as the mode's default.
    pub fn apply(&mut self, d: &Decision, g: u32) {
        let mut flags = self.bits & (COMPARED | COUNTED);
        if self.generation != g {
            flags = 0;
        }
        let rule = d.rule_index.filter(|&i| (i as usize) <= MAX_SHADOW_RULES).map_or(0, |i| i + 1);
        let pending = if d.pending_app { PENDING } else { 0 };
        self.bits = rule | (verdict_code(d.verdict) << VERDICT_SHIFT) | pending | flags;
        self.generation = g;
    }

    /// The shadow decision's verdict (provisional while [`Self::pending_app`]).
    pub fn verdict(&self) -> Option<PolicyVerdict> {
        match (self.bits >> VERDICT_SHIFT) & 7 {
            1 => Some(PolicyVerdict::Allowed),
            2 => Some(PolicyVerdict::Learned),
            3 => Some(PolicyVerdict::Violation),
            4 => Some(PolicyVerdict::Denied),
            _ => None,
        }
    }

    /// Index of the deciding rule in the shadow policy (`None`: the mode's default).
    pub fn rule_index(&self) -> Option<u32> {
        (self.bits & RULE_MASK).checked_sub(1)
    }

    /// An `apps` rule of the shadow could still change its verdict.
    pub fn pending_app(&self) -> bool {
        self.bits & PENDING != 0
    }

    /// The session was compared (both verdicts settled) under this shadow generation.
    pub fn compared(&self) -> bool {
        self.bits & COMPARED != 0
    }

    /// The session was counted as differing under this shadow generation.
    pub fn counted(&self) -> bool {
        self.bits & COUNTED != 0
    }

    /// Marks the session compared (`compared`) and counted (`counted`) under its generation.
    pub fn mark(&mut self, compared: bool, counted: bool) {
        self.bits |= if compared { COMPARED } else { 0 } | if counted { COUNTED } else { 0 };
    }

    /// The shadow verdict and the deciding rule's id (looked up in `shadow`, the policy of
    /// generation `g`) when shadow generation `g` decided this session, its verdict is settled
    /// and differs from the real verdict `real` (settled: `real_pending` false). `None`
    /// otherwise, and without a shadow policy.
    pub fn differing(
        &self,
        shadow: Option<&CompiledPolicy>,
        g: u32,
        real: Option<PolicyVerdict>,
        real_pending: bool,
    ) -> Option<(Option<PolicyVerdict>, Option<u32>)> {
        let shadow = shadow?;
        let verdict = self.verdict();
        (g != 0 && self.generation == g && !self.pending_app() && !real_pending && verdict != real)
            .then(|| (verdict, self.rule_index().and_then(|i| shadow.rule_id_at(i as usize))))
    }
}

/// One group of [`ShadowDiff`]: what both policies said about the sessions in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DiffKey {
    /// Client workload in the shadow policy.
    pub client: Option<WorkloadIdx>,
    /// Server workload in the shadow policy.
    pub server: Option<WorkloadIdx>,
    /// IP protocol number.
    pub ip_proto: u8,
    /// Server port (0 without ports).
    pub server_port: u16,
    /// Real verdict and rule.
    pub verdict: Option<PolicyVerdict>,
    /// See `verdict`.
    pub rule_id: Option<u32>,
    /// Shadow verdict and rule.
    pub shadow_verdict: Option<PolicyVerdict>,
    /// See `shadow_verdict`.
    pub shadow_rule_id: Option<u32>,
}

/// Sessions of one [`DiffKey`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiffGroup {
    /// Sessions counted.
    pub sessions: u64,
    /// Client and server address of the first one.
    pub example: (IpAddr, IpAddr),
}

/// Per-core sums of what the shadow policy would change (see the module doc).
#[derive(Debug, Clone, Default)]
pub struct ShadowDiff {
    /// Shadow generation these sums belong to (0: none loaded).
    pub generation: u32,
    /// Sessions compared (both verdicts settled, at least one enforced).
    pub compared: u64,
    /// Differing sessions that found no room in `groups`.
    pub overflow: u64,
    /// The groups (capacity [`MAX_DIFF_GROUPS`], reserved by [`Self::reset`]).
    pub groups: hashbrown::HashMap<DiffKey, DiffGroup>,
}

impl ShadowDiff {
    /// Starts over for shadow generation `g`; reserves the table when `loaded` (a shadow is
    /// loaded), frees it otherwise.
    pub fn reset(&mut self, g: u32, loaded: bool) {
        self.generation = g;
        self.compared = 0;
        self.overflow = 0;
        if loaded {
            self.groups.clear();
            self.groups.reserve(MAX_DIFF_GROUPS);
        } else {
            self.groups = hashbrown::HashMap::new();
        }
    }

    /// Counts a session compared for the `first` time, and in group `key` when its verdicts
    /// newly differ, with its addresses. Never allocates: beyond [`MAX_DIFF_GROUPS`] groups a
    /// new group is counted in `overflow`.
    pub fn count(&mut self, first: bool, key: Option<DiffKey>, client: IpAddr, server: IpAddr) {
        self.compared += u64::from(first);
        let Some(key) = key else { return };
        if let Some(g) = self.groups.get_mut(&key) {
            g.sessions += 1;
        } else if self.groups.len() < MAX_DIFF_GROUPS {
            self.groups.insert(key, DiffGroup { sessions: 1, example: (client, server) });
        } else {
            self.overflow += 1;
        }
    }

    /// Adds another worker's sums (same generation; others are ignored) into `self`
    /// (control thread: allocates freely).
    pub fn merge(&mut self, o: &ShadowDiff) {
        if o.generation != self.generation {
            return;
        }
        self.compared += o.compared;
        self.overflow += o.overflow;
        for (k, g) in &o.groups {
            self.groups
                .entry(*k)
                .and_modify(|x| x.sessions += g.sessions)
                .or_insert(*g);
        }
    }

    /// The protocol's view of these sums, workloads named by `shadow` (the policy of this
    /// generation): newly denied groups first, then newly allowed, then other changes, most
    /// sessions first.
    pub fn to_reply(&self, shadow: &CompiledPolicy) -> PolicyDiff {
        let name = |w: Option<WorkloadIdx>| {
            w.filter(|w| w.index() < shadow.workloads().len()).map(|w| shadow.workload_id(w).to_string())
        };
        let mut entries: Vec<(u8, PolicyDiffEntry)> = self
            .groups
            .iter()
            .map(|(k, g)| {
                let (rank, change) = change_of(k.verdict, k.shadow_verdict);
                (
                    rank,
                    PolicyDiffEntry {
                        change: change.into(),
                        client_workload: name(k.client),
                        server_workload: name(k.server),
                        ip_proto: k.ip_proto,
                        server_port: k.server_port,
                        verdict: k.verdict.map(|v| v.as_str().into()),
                        rule_id: k.rule_id,
                        shadow_verdict: k.shadow_verdict.map(|v| v.as_str().into()),
                        shadow_rule_id: k.shadow_rule_id,
                        sessions: g.sessions,
                        example_client: g.example.0.to_string(),
                        example_server: g.example.1.to_string(),
                    },
                )
            })
            .collect();
        entries.sort_by(|a, b| {
            (a.0, std::cmp::Reverse(a.1.sessions), &a.1.client_workload, &a.1.server_workload, a.1.server_port).cmp(&(
                b.0,
                std::cmp::Reverse(b.1.sessions),
                &b.1.client_workload,
                &b.1.server_workload,
                b.1.server_port,
            ))
        });
        let differing = self.groups.values().map(|g| g.sessions).sum::<u64>() + self.overflow;
        PolicyDiff {
            compared: self.compared,
            differing,
            overflow: self.overflow,
            entries: entries.into_iter().map(|(_, e)| e).collect(),
        }
    }
}

/// How a session's verdict changes from `real` to `shadow`, with its sort rank: `deny` (the
/// shadow denies what the running policy forwards), `allow` (the shadow allows or learns what
/// the running policy denies or reports as a violation), else `change`.
pub fn change_of(real: Option<PolicyVerdict>, shadow: Option<PolicyVerdict>) -> (u8, &'static str) {
    use PolicyVerdict::*;
    match (real, shadow) {
        (r, Some(Denied)) if r != Some(Denied) => (0, "deny"),
        (Some(Denied | Violation), Some(Allowed | Learned) | None) => (1, "allow"),
        _ => (2, "change"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{CompiledPolicy, Policy};

    /// A decision by the rule at `rule_index` (its id is not read: the state keeps the index).
    fn decision(verdict: Option<PolicyVerdict>, rule_index: Option<u32>, pending_app: bool) -> Decision {
        Decision { verdict, rule_index, pending_app, ..Decision::NOT_ENFORCED }
    }

    #[test]
    fn differing_needs_both_settled_and_the_current_generation() {
        let text = "[[workload]]\nid = \"w\"\nips = [\"198.18.0.1\"]\n\n\
                    [[rule]]\nid = 7\nfrom = \"any\"\nto = \"w\"\naction = \"allow\"\n\n\
                    [[rule]]\nid = 4\nfrom = \"w\"\nto = \"any\"\naction = \"deny\"\n";
        let shadow = CompiledPolicy::compile(&Policy::from_toml(text).unwrap()).unwrap();
        let sp = Some(&shadow);
        let mut s = ShadowState::default();
        assert_eq!(std::mem::size_of::<ShadowState>(), 8);
        assert_eq!(s.differing(sp, 1, Some(PolicyVerdict::Allowed), false), None, "never evaluated");
        s.apply(&decision(Some(PolicyVerdict::Denied), None, true), 1);
        assert_eq!(s.differing(sp, 1, Some(PolicyVerdict::Allowed), false), None, "shadow pending");
        s.apply(&decision(Some(PolicyVerdict::Denied), Some(1), false), 1);
        assert_eq!(s.differing(sp, 1, Some(PolicyVerdict::Allowed), true), None, "real pending");
        assert_eq!(s.differing(sp, 1, Some(PolicyVerdict::Allowed), false), Some((Some(PolicyVerdict::Denied), Some(4))));
        assert_eq!(s.differing(None, 1, Some(PolicyVerdict::Allowed), false), None, "no shadow policy");
        assert_eq!(s.differing(sp, 1, Some(PolicyVerdict::Denied), false), None, "same verdict");
        assert_eq!(s.differing(sp, 2, Some(PolicyVerdict::Allowed), false), None, "older shadow");
        s.apply(&decision(None, None, false), 1);
        assert_eq!(s.differing(sp, 1, Some(PolicyVerdict::Allowed), false), Some((None, None)), "not enforced, default");
        s.mark(true, true);
        s.apply(&decision(Some(PolicyVerdict::Learned), Some(0), false), 1);
        assert!(s.compared() && s.counted(), "the same shadow keeps its flags");
        assert_eq!((s.verdict(), s.rule_index(), s.pending_app()), (Some(PolicyVerdict::Learned), Some(0), false));
        s.apply(&decision(Some(PolicyVerdict::Denied), Some(1), false), 2);
        assert!(!s.compared() && !s.counted(), "a new shadow compares again");
        // Every verdict and the largest rule index survive the packing.
        for v in [None, Some(PolicyVerdict::Allowed), Some(PolicyVerdict::Learned), Some(PolicyVerdict::Violation), Some(PolicyVerdict::Denied)] {
            for (rule, pending) in [(None, true), (Some(0), false), (Some(MAX_SHADOW_RULES as u32), true)] {
                s.apply(&decision(v, rule, pending), 9);
                assert_eq!((s.verdict(), s.rule_index(), s.pending_app(), s.generation), (v, rule, pending, 9));
            }
        }
    }

    #[test]
    fn changes_are_classified_by_what_would_be_blocked() {
        use PolicyVerdict::*;
        assert_eq!(change_of(Some(Allowed), Some(Denied)).1, "deny");
        assert_eq!(change_of(Some(Violation), Some(Denied)).1, "deny");
        assert_eq!(change_of(None, Some(Denied)).1, "deny");
        assert_eq!(change_of(Some(Denied), Some(Allowed)).1, "allow");
        assert_eq!(change_of(Some(Violation), Some(Allowed)).1, "allow");
        assert_eq!(change_of(Some(Denied), None).1, "allow");
        assert_eq!(change_of(Some(Allowed), Some(Violation)).1, "change");
        assert_eq!(change_of(Some(Learned), Some(Allowed)).1, "change");
    }

    /// Groups count sessions, keep their first example, merge across workers of the same
    /// generation only, and stop growing at the bound (counted).
    #[test]
    fn the_diff_table_is_bounded_and_merges() {
        let p = CompiledPolicy::compile(
            &Policy::from_toml("[[workload]]\nid = \"web\"\nips = [\"198.18.0.2\"]\nmode = \"protect\"\n").unwrap(),
        )
        .unwrap();
        let key = |port: u16| DiffKey {
            client: None,
            server: Some(WorkloadIdx(0)),
            ip_proto: 6,
            server_port: port,
            verdict: Some(PolicyVerdict::Allowed),
            rule_id: Some(1),
            shadow_verdict: Some(PolicyVerdict::Denied),
            shadow_rule_id: None,
        };
        let (a, b, c): (IpAddr, IpAddr, IpAddr) =
            ("198.18.0.1".parse().unwrap(), "198.18.0.2".parse().unwrap(), "198.18.0.3".parse().unwrap());
        let mut w0 = ShadowDiff::default();
        w0.reset(3, true);
        w0.count(true, Some(key(80)), a, b);
        w0.count(true, Some(key(80)), c, b);
        w0.count(true, None, a, b);
        w0.count(false, None, a, b);
        let mut w1 = ShadowDiff::default();
        w1.reset(3, true);
        w1.count(true, Some(key(80)), c, b);
        w1.count(true, Some(key(443)), c, b);
        let mut stale = ShadowDiff::default();
        stale.reset(2, true);
        stale.count(true, Some(key(22)), a, b);
        let mut all = ShadowDiff { generation: 3, ..Default::default() };
        for w in [&w0, &w1, &stale] {
            all.merge(w);
        }
        let r = all.to_reply(&p);
        assert_eq!((r.compared, r.differing, r.overflow, r.entries.len()), (5, 4, 0, 2));
        let e = &r.entries[0];
        assert_eq!((e.change.as_str(), e.server_workload.as_deref(), e.server_port, e.sessions), ("deny", Some("web"), 80, 3));
        assert_eq!((e.example_client.as_str(), e.example_server.as_str()), ("198.18.0.1", "198.18.0.2"));
        assert_eq!((e.verdict.as_deref(), e.rule_id, e.shadow_verdict.as_deref(), e.shadow_rule_id), (Some("allowed"), Some(1), Some("denied"), None));
        assert_eq!((r.entries[1].server_port, r.entries[1].sessions), (443, 1));
        // The bound: one more group than fits is counted, not kept, and nothing reallocates.
        let mut full = ShadowDiff::default();
        full.reset(1, true);
        let cap = full.groups.capacity();
        for port in 0..=MAX_DIFF_GROUPS as u16 {
            full.count(true, Some(key(port)), a, b);
        }
        assert_eq!((full.groups.len(), full.overflow, full.groups.capacity()), (MAX_DIFF_GROUPS, 1, cap));
        assert_eq!(full.to_reply(&p).differing, MAX_DIFF_GROUPS as u64 + 1);
    }

    /// Through a whole inspector: an alert-mode workload whose running policy allows ports 80
    /// and 8080, a candidate (protect) allowing only 80. Exactly the 8080 session differs, in
    /// its record and in the diff; promoting the candidate blocks it and keeps 80 flowing.
    mod inspector {
        use std::sync::Arc;

        use crate::inspect::{DropReason, FrameMeta, Inspector, MalformedPolicy, Verdict};
        use crate::policy::{CompiledPolicy, Policy};
        use crate::session::Timeouts;
        use crate::wire::tcpflag::*;

        fn compiled(text: &str) -> Arc<CompiledPolicy> {
            Arc::new(CompiledPolicy::compile(&Policy::from_toml(text).unwrap()).unwrap())
        }

        const ACTIVE: &str = "[[workload]]\nid = \"srv\"\nips = [\"198.18.0.2\"]\nmode = \"alert\"\n\
            [[rule]]\nid = 1\nfrom = \"any\"\nto = \"srv\"\nip_proto = \"tcp\"\nports = [\"80\"]\naction = \"allow\"\n\
            [[rule]]\nid = 2\nfrom = \"any\"\nto = \"srv\"\nip_proto = \"tcp\"\nports = [\"8080\"]\naction = \"allow\"\n";
        const CANDIDATE: &str = "[[workload]]\nid = \"srv\"\nips = [\"198.18.0.2\"]\nmode = \"protect\"\n\
            [[rule]]\nid = 1\nfrom = \"any\"\nto = \"srv\"\nip_proto = \"tcp\"\nports = [\"80\"]\naction = \"allow\"\n";

        /// A frame of the session 198.18.0.1:40000 -> 198.18.0.2:`port` (`to_server`) or back.
        fn frame(port: u16, to_server: bool, flags: u8, seq: u32, ack: u32, payload: &[u8]) -> Vec<u8> {
            let mut f = crate::wire::tests::tcp4(&[], flags, payload);
            f[36..38].copy_from_slice(&port.to_be_bytes());
            if !to_server {
                crate::wire::tests::reverse4(&mut f);
            }
            f[38..42].copy_from_slice(&seq.to_be_bytes());
            f[42..46].copy_from_slice(&ack.to_be_bytes());
            crate::wire::tests::fix_checksums(&mut f);
            f
        }

        /// The handshake and one request of a session to `port`; the verdicts.
        fn connect(i: &mut Inspector, port: u16, t: &mut u64) -> Vec<Verdict> {
            let mut v = Vec::new();
            for (to_server, flags, seq, ack, payload) in [
                (true, SYN, 1000, 0, &b""[..]),
                (false, SYN | ACK, 5000, 1001, &b""[..]),
                (true, ACK, 1001, 5001, &b""[..]),
                (true, ACK | PSH, 1001, 5001, &b"GET / HTTP/1.0\r\n\r\n"[..]),
            ] {
                *t += 1_000_000;
                v.push(i.process(&frame(port, to_server, flags, seq, ack, payload), FrameMeta::new(0, u16::from(!to_server), *t)));
            }
            v
        }

        fn records(i: &mut Inspector) -> Vec<warden_control::ConnectionRecord> {
            let mut v: Vec<_> = i.snapshot(16).iter().map(|s| crate::record::to_record(s, |_| String::new())).collect();
            v.sort_by_key(|r| r.server_port);
            v
        }

        #[test]
        fn the_candidate_shows_exactly_the_flow_it_would_deny_and_promoting_blocks_it() {
            let mut i = Inspector::new(64, Timeouts::default(), MalformedPolicy::Drop);
            i.set_policy(compiled(ACTIVE), 1);
            let candidate = compiled(CANDIDATE);
            i.set_shadow(Some(candidate.clone()), 1);
            let mut t = 1_000_000_000;
            for port in [80, 8080] {
                assert!(connect(&mut i, port, &mut t).iter().all(|v| *v == Verdict::Forward), "the shadow decides nothing");
            }
            let r = records(&mut i);
            assert_eq!((r[0].server_port, r[0].verdict.as_deref(), r[0].shadow_verdict.as_deref()), (80, Some("allowed"), None));
            assert_eq!(
                (r[1].server_port, r[1].verdict.as_deref(), r[1].rule_id, r[1].shadow_verdict.as_deref(), r[1].shadow_rule_id),
                (8080, Some("allowed"), Some(2), Some("denied"), None)
            );
            let d = i.shadow_diff.to_reply(&candidate);
            assert_eq!((d.compared, d.differing, d.entries.len()), (2, 1, 1));
            let e = &d.entries[0];
            assert_eq!(
                (e.change.as_str(), e.server_workload.as_deref(), e.server_port, e.sessions, e.rule_id, e.shadow_rule_id),
                ("deny", Some("srv"), 8080, 1, Some(2), None)
            );
            assert_eq!((e.example_client.as_str(), e.example_server.as_str()), ("198.18.0.1", "198.18.0.2"));
            // More frames of the same sessions count nothing again.
            connect(&mut i, 8080, &mut t);
            assert_eq!(i.shadow_diff.to_reply(&candidate).differing, 1);
            // Promote: the candidate enforced, the shadow gone.
            i.set_policy(candidate, 2);
            i.set_shadow(None, 2);
            t += 1_000_000;
            let v = i.process(&frame(8080, true, ACK | PSH, 1019, 5001, b"GET /2 HTTP/1.0\r\n\r\n"), FrameMeta::new(0, 0, t));
            assert_eq!(v, Verdict::Reset, "the live 8080 session is now denied");
            let v = i.process(&frame(80, true, ACK | PSH, 1019, 5001, b"GET /2 HTTP/1.0\r\n\r\n"), FrameMeta::new(0, 0, t + 1));
            assert_eq!(v, Verdict::Forward);
            let mut fresh = Inspector::new(64, Timeouts::default(), MalformedPolicy::Drop);
            fresh.set_policy(compiled(CANDIDATE), 1);
            assert_eq!(connect(&mut fresh, 8080, &mut t)[0], Verdict::Drop(DropReason::PolicyDenied));
            assert!(records(&mut i).iter().all(|r| r.shadow_verdict.is_none()), "no shadow, no shadow fields");
        }

        /// A candidate whose verdict needs the app is compared only once the app is known.
        #[test]
        fn an_app_rule_of_the_candidate_waits_for_the_app() {
            let mut i = Inspector::new(64, Timeouts::default(), MalformedPolicy::Drop);
            i.set_policy(compiled(ACTIVE), 1);
            let candidate = compiled(&CANDIDATE.replace("ports = [\"80\"]\n", "ports = [\"80\"]\napps = [\"redis\"]\n"));
            i.set_shadow(Some(candidate.clone()), 1);
            let mut t = 1_000_000_000;
            let v = connect(&mut i, 80, &mut t);
            assert!(v.iter().all(|v| *v == Verdict::Forward));
            let d = i.shadow_diff.to_reply(&candidate);
            assert_eq!((d.compared, d.differing), (1, 1), "decided once HTTP was detected");
            assert_eq!((d.entries[0].server_port, d.entries[0].shadow_verdict.as_deref()), (80, Some("denied")));
            let r = records(&mut i);
            assert_eq!((r[0].app.as_str(), r[0].shadow_verdict.as_deref()), ("http", Some("denied")));
        }

        /// Loading a shadow while sessions live: they are compared on their next frame.
        #[test]
        fn live_sessions_are_compared_on_their_next_frame() {
            let mut i = Inspector::new(64, Timeouts::default(), MalformedPolicy::Drop);
            i.set_policy(compiled(ACTIVE), 1);
            let mut t = 1_000_000_000;
            connect(&mut i, 8080, &mut t);
            let candidate = compiled(CANDIDATE);
            i.set_shadow(Some(candidate.clone()), 1);
            assert_eq!(i.shadow_diff.to_reply(&candidate).compared, 0);
            t += 1_000_000;
            i.process(&frame(8080, false, ACK, 5001, 1019, b""), FrameMeta::new(0, 1, t));
            assert_eq!(i.shadow_diff.to_reply(&candidate).differing, 1);
        }
    }
}
