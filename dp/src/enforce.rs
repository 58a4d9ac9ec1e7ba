//! Policy enforcement on the packet path: the shared, atomically swapped policy, each session's
//! verdict state, and the per-core hit counters. The DNS names `fqdn` rules match through are
//! [`crate::names`].
//!
//! The policy itself (model, file format, matcher) is [`crate::policy`]; this module applies
//! its [`Decision`]s to sessions:
//! - a new session is evaluated on its first frame (L3/L4, app not yet known); in protect mode a
//!   denied session gets no app context and every frame of it is dropped (counted);
//! - a session whose outcome depends on its app (`pending_app`) is forwarded until detection
//!   decides (or gives up: the app is then `unknown`, which no app rule allows), then evaluated
//!   again; if it is now denied, the frame that completed detection is dropped and answered with
//!   TCP resets to both ends ([`crate::rst`]), UDP frames are dropped;
//! - its bytes are forwarded only while they can still be an app the decision would forward
//!   ([`Decision::allowing`], [`Engine::may_become`]): once none can, whatever other candidates
//!   think, [`settle_pending_app`] decides the app `unknown` at once and the frame that made it
//!   impossible is dropped with the session;
//! - the policy follows the app: a session is evaluated again whenever its app changes (a
//!   parser rejected the stream and detection ran again, an h2c upgrade, an echo), so an
//!   HTTP connection that starts carrying Redis commands where only HTTP is allowed is reset;
//! - a new policy (apply, workload or mode change) is published with a new generation; each
//!   worker picks it up once per loop, and a session is evaluated again on its next frame when
//!   its generation is older, so allowed traffic flows on untouched and newly denied traffic
//!   stops.
//!
//! Nothing here allocates or locks per frame: the policy is read through the worker's own
//! `Arc`, swapped only when the generation counter moves.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};

use crate::app::engine::Engine;
use crate::app::{App, AppSet};
use crate::policy::{CompiledPolicy, Decision, Mode, PolicyVerdict, WorkloadIdx};

/// The policy shared by the control thread (writer) and the workers (readers), and the shadow
/// policy beside it ([`crate::shadow`]), each with a generation of its own.
pub struct PolicyHandle {
    current: RwLock<Arc<CompiledPolicy>>,
    generation: AtomicU32,
    /// Generation each worker has loaded (index = worker), so a writer can wait until every
    /// worker enforces what it published.
    loaded: Vec<AtomicU32>,
    /// The shadow policy (None: none loaded).
    shadow: RwLock<Option<Arc<CompiledPolicy>>>,
    /// Changes on every shadow load or clear (0: never loaded).
    shadow_generation: AtomicU32,
    /// Shadow generation each worker has loaded.
    shadow_loaded: Vec<AtomicU32>,
}

/// Waits (up to `timeout`) until every entry of `loaded` is `g` or later; false on timeout.
fn wait_all(loaded: &[AtomicU32], g: u32, timeout: std::time::Duration) -> bool {
    let until = std::time::Instant::now() + timeout;
    loop {
        if loaded.iter().all(|l| l.load(Ordering::Acquire).wrapping_sub(g) < u32::MAX / 2) {
            return true;
        }
        if std::time::Instant::now() >= until {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
}

impl PolicyHandle {
    /// A handle publishing `policy` as generation 1, for `workers` readers.
    pub fn new(policy: CompiledPolicy, workers: usize) -> Self {
        PolicyHandle {
            current: RwLock::new(Arc::new(policy)),
            generation: AtomicU32::new(1),
            loaded: (0..workers.max(1)).map(|_| AtomicU32::new(0)).collect(),
            shadow: RwLock::new(None),
            shadow_generation: AtomicU32::new(0),
            shadow_loaded: (0..workers.max(1)).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    /// The current generation (changes on every publish).
    #[inline]
    pub fn generation(&self) -> u32 {
        self.generation.load(Ordering::Acquire)
    }

    /// The current policy and its generation.
    pub fn load(&self) -> (Arc<CompiledPolicy>, u32) {
        let p = self.current.read().unwrap_or_else(|e| e.into_inner());
        (p.clone(), self.generation.load(Ordering::Acquire))
    }

    /// Publishes `policy`; returns its generation.
    pub fn publish(&self, policy: CompiledPolicy) -> u32 {
        let mut cur = self.current.write().unwrap_or_else(|e| e.into_inner());
        *cur = Arc::new(policy);
        self.generation.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Worker `w` now enforces generation `g`.
    pub fn mark_loaded(&self, w: usize, g: u32) {
        if let Some(l) = self.loaded.get(w) {
            l.store(g, Ordering::Release);
        }
    }

    /// Waits (up to `timeout`) until every worker enforces generation `g` or later; false on
    /// timeout.
    pub fn wait_loaded(&self, g: u32, timeout: std::time::Duration) -> bool {
        wait_all(&self.loaded, g, timeout)
    }

    /// The current shadow generation (changes on every shadow load or clear; 0: never).
    #[inline]
    pub fn shadow_generation(&self) -> u32 {
        self.shadow_generation.load(Ordering::Acquire)
    }

    /// The shadow policy (None: none loaded) and its generation.
    pub fn load_shadow(&self) -> (Option<Arc<CompiledPolicy>>, u32) {
        let p = self.shadow.read().unwrap_or_else(|e| e.into_inner());
        (p.clone(), self.shadow_generation.load(Ordering::Acquire))
    }

    /// Publishes `policy` as the shadow (None: drops it); returns its shadow generation.
    pub fn publish_shadow(&self, policy: Option<CompiledPolicy>) -> u32 {
        let mut cur = self.shadow.write().unwrap_or_else(|e| e.into_inner());
        *cur = policy.map(Arc::new);
        self.shadow_generation.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Makes the shadow policy the current one and drops the shadow, in one step for every
    /// writer (both locks held while the current policy is swapped); returns the new
    /// (generation, shadow generation), or None when no shadow is loaded.
    pub fn promote(&self) -> Option<(u32, u32)> {
        let mut shadow = self.shadow.write().unwrap_or_else(|e| e.into_inner());
        let candidate = shadow.take()?;
        let mut cur = self.current.write().unwrap_or_else(|e| e.into_inner());
        *cur = candidate;
        let g = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        let sg = self.shadow_generation.fetch_add(1, Ordering::AcqRel) + 1;
        Some((g, sg))
    }

    /// Worker `w` now evaluates shadow generation `g`.
    pub fn mark_shadow_loaded(&self, w: usize, g: u32) {
        if let Some(l) = self.shadow_loaded.get(w) {
            l.store(g, Ordering::Release);
        }
    }

    /// Waits (up to `timeout`) until every worker evaluates shadow generation `g` or later;
    /// false on timeout.
    pub fn wait_shadow_loaded(&self, g: u32, timeout: std::time::Duration) -> bool {
        wait_all(&self.shadow_loaded, g, timeout)
    }
}

/// A session's policy state (plain data, part of [`crate::session::Session`]; 40 bytes: the
/// rule id and the workloads are kept without `Option`'s padding, read them through
/// [`PolicyState::rule_id`] and [`PolicyState::workloads`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyState {
    /// The latest decision's verdict (None: not enforced, neither end is a workload).
    pub verdict: Option<PolicyVerdict>,
    /// The deciding rule's id, when `ruled`.
    rule: u32,
    /// A rule decided (else the mode's default).
    ruled: bool,
    /// The client's and the server's workload index ([`NO_WORKLOAD`]: none).
    ends: [u32; 2],
    /// The deciding end's mode.
    pub mode: Option<Mode>,
    /// Generation of the policy that decided (0: never evaluated).
    pub generation: u32,
    /// The outcome may change once the app is known.
    pub pending_app: bool,
    /// While `pending_app`: the apps whose detection would not deny ([`Decision::allowing`]).
    pub allowing: AppSet,
    /// The app the latest decision was made with (`None`: not known yet); a different app
    /// makes the session be evaluated again.
    pub app: Option<App>,
    /// Frames of this session are dropped.
    pub blocked: bool,
    /// Resets were sent (once per session).
    pub reset_sent: bool,
    /// A frame of the session was forwarded (a session blocked later is reset at both ends).
    pub forwarded: bool,
    /// A violation/denied event was queued (once per verdict change).
    pub evented: Option<PolicyVerdict>,
    /// The hit counter was incremented for the current generation.
    pub counted: bool,
    /// The verdict depended on the app at some point (an `apps` rule could decide it): losing
    /// inspection is then an exception ([`crate::exception`]).
    pub app_dependent: bool,
    /// The exception applied to the session, if any.
    pub exception: Option<crate::exception::Exception>,
    /// An exception event was queued.
    pub exception_evented: bool,
    /// A threat whose action blocks the session in protect mode ([`crate::threat`]): its
    /// frames are dropped from then on (reset at both ends once for `reset`), whatever the
    /// policy decides on re-evaluation.
    pub threat_block: Option<(crate::detect::ThreatId, crate::detect::Action)>,
}

/// [`PolicyState`]'s stored workload index of no workload.
const NO_WORKLOAD: u32 = u32::MAX;

impl Default for PolicyState {
    fn default() -> Self {
        PolicyState {
            verdict: None,
            rule: 0,
            ruled: false,
            ends: [NO_WORKLOAD; 2],
            mode: None,
            generation: 0,
            pending_app: false,
            allowing: AppSet::default(),
            app: None,
            blocked: false,
            reset_sent: false,
            forwarded: false,
            evented: None,
            counted: false,
            app_dependent: false,
            exception: None,
            exception_evented: false,
            threat_block: None,
        }
    }
}

impl PolicyState {
    /// The deciding rule's id (None: the mode's default).
    #[inline]
    pub fn rule_id(&self) -> Option<u32> {
        self.ruled.then_some(self.rule)
    }

    /// The client's and the server's workload.
    #[inline]
    pub fn workloads(&self) -> [Option<WorkloadIdx>; 2] {
        self.ends.map(|w| (w != NO_WORKLOAD).then_some(WorkloadIdx(w)))
    }

    /// Sets the client's and the server's workload (an index past `u32::MAX - 1` reads as
    /// none: no policy has that many workloads).
    pub fn set_workloads(&mut self, w: [Option<WorkloadIdx>; 2]) {
        self.ends = w.map(|w| w.map_or(NO_WORKLOAD, |w| w.0));
    }

    /// Applies a decision made under generation `g`.
    pub fn apply(&mut self, d: &Decision, g: u32) {
        if self.generation != g {
            self.counted = false;
        }
        self.verdict = d.verdict;
        self.rule = d.rule_id.unwrap_or(0);
        self.ruled = d.rule_id.is_some();
        self.set_workloads([d.client_workload, d.server_workload]);
        self.mode = d.mode;
        self.generation = g;
        self.pending_app = d.pending_app;
        self.allowing = d.allowing;
        self.app_dependent |= d.pending_app;
        self.blocked = d.verdict == Some(PolicyVerdict::Denied) && !d.pending_app;
    }

    /// Applies exception action `action` (taken for `reason`): `drop_flow` blocks the session
    /// with verdict `denied`; `pass_flow` and `bypass` forward it (a pending app decision is
    /// settled as it stands: no app will come). Returns true when the session is now blocked.
    pub fn except(
        &mut self,
        reason: crate::exception::ExceptionReason,
        action: Option<crate::exception::ExceptionAction>,
    ) -> bool {
        use crate::exception::{Exception, ExceptionAction};
        if self.exception.is_none() {
            self.exception = Some(Exception { reason, action });
        }
        match action {
            Some(ExceptionAction::DropFlow) => {
                self.verdict = Some(PolicyVerdict::Denied);
                self.pending_app = false;
                self.blocked = true;
            }
            // The app will never be known: the provisional verdict stays, and an exception
            // that passes the flow overrides its denial.
            Some(ExceptionAction::PassFlow | ExceptionAction::Bypass) if self.pending_app => {
                self.pending_app = false;
                self.blocked = false;
            }
            Some(ExceptionAction::PassFlow | ExceptionAction::Bypass) => {}
            None => {}
        }
        self.blocked
    }

    /// True when the session is no longer evaluated (exception action `bypass`).
    pub fn bypassed(&self) -> bool {
        matches!(
            self.exception,
            Some(crate::exception::Exception { action: Some(crate::exception::ExceptionAction::Bypass), .. })
        )
    }
}

/// Keeps a pending session's bytes to those of an allowed app: when the session's verdict hangs
/// on its app (`pending_app`), the provisional verdict denies (`unknown` is not in
/// `allowing`), and the bytes seen so far can no longer be detected as any app in `allowing`,
/// the engine decides app context `ctx` as `unknown` now ([`Engine::decide_unknown`]), whatever
/// other candidates think. True when it did: evaluate the session again (it is denied).
/// `session_packets`: the session's packets so far. O(candidates), only while pending.
pub fn settle_pending_app(ps: &PolicyState, engine: &mut Engine, ctx: u32, session_packets: u32) -> bool {
    if !ps.pending_app || ps.allowing.contains(App::Unknown) || ctx == crate::session::NO_APP {
        return false;
    }
    if engine.ctx(ctx).decided || engine.may_become(ctx, ps.allowing) {
        return false;
    }
    engine.decide_unknown(ctx, session_packets);
    true
}

/// The `k8s_external_ip_mitm` check (CVE-2020-8554) of a session just evaluated: `facts` and
/// `d` are the facts and the decision of that evaluation ([`CompiledPolicy::evaluate_ends`]),
/// so the client workload is the one the policy decided with (known from its interface when
/// the workload has `iface`). `Some` when the server address (and port) is an externalIP a
/// Kubernetes Service claims that is another workload's address, or no workload's and the
/// client is a workload not backing the service ([`CompiledPolicy::external_ip_mitm`]).
/// Call it where the session is (re)evaluated (first frame, new policy generation), not per
/// frame; one hash lookup, no allocation.
#[inline]
pub fn external_ip_mitm(
    policy: &CompiledPolicy,
    facts: &crate::policy::Facts<'_>,
    d: &Decision,
) -> Option<crate::policy::ExternalIpMitm> {
    policy.external_ip_mitm(d.client_workload, facts.server, facts.ip_proto, facts.server_port)
}

/// What a report needs of a session's policy state (names resolved while the policy that
/// decided is at hand).
#[derive(Debug, Clone, Default)]
pub struct PolicyView {
    /// Verdict.
    pub verdict: Option<PolicyVerdict>,
    /// Deciding rule.
    pub rule_id: Option<u32>,
    /// Client and server workload ids.
    pub workloads: [Option<String>; 2],
    /// Deciding mode.
    pub mode: Option<Mode>,
    /// The exception applied, if any.
    pub exception: Option<crate::exception::Exception>,
    /// The shadow policy's verdict and rule, when they differ from the settled real verdict
    /// ([`crate::shadow::ShadowState::differing`]).
    pub shadow: Option<(Option<PolicyVerdict>, Option<u32>)>,
}

impl PolicyView {
    /// The view of `s` under `p` (workload indices are resolved only when `s` was decided by
    /// the generation `p` belongs to, `generation`), with the shadow verdict of shadow
    /// generation `shadow_generation` (policy `shadow_policy`) where it differs. None when neither policy enforces
    /// the session.
    pub fn of(
        s: &PolicyState,
        shadow: &crate::shadow::ShadowState,
        p: &CompiledPolicy,
        generation: u32,
        shadow_policy: Option<&CompiledPolicy>,
        shadow_generation: u32,
    ) -> Option<PolicyView> {
        let shadow = shadow.differing(shadow_policy, shadow_generation, s.verdict, s.pending_app);
        if s.verdict.is_none() && shadow.is_none() {
            return None;
        }
        let name = |w: Option<WorkloadIdx>| {
            w.filter(|_| s.generation == generation)
                .map(|w| p.workload_id(w).to_string())
        };
        Some(PolicyView {
            verdict: s.verdict,
            rule_id: s.rule_id(),
            workloads: s.workloads().map(name),
            mode: s.mode,
            exception: s.exception,
            shadow,
        })
    }
}

/// Per-core hit counters: sessions decided by each rule (by rule index) and by each mode's
/// default (`[learn, alert, protect]`), for the current policy.
#[derive(Debug, Clone, Default)]
pub struct Hits {
    /// By rule index.
    pub rules: Vec<u64>,
    /// By mode default.
    pub defaults: [u64; 3],
    /// Generation these counters belong to.
    pub generation: u32,
}

impl Hits {
    /// Counts a final decision.
    pub fn count(&mut self, d: &Decision) {
        match d.rule_index {
            Some(i) => {
                if let Some(c) = self.rules.get_mut(i as usize) {
                    *c += 1;
                }
            }
            None => {
                if let Some(m) = d.mode {
                    self.defaults[m as usize] += 1;
                }
            }
        }
    }

    /// Resets for a policy with `rules` rules.
    pub fn reset(&mut self, rules: usize, generation: u32) {
        self.rules.clear();
        self.rules.resize(rules, 0);
        self.defaults = [0; 3];
        self.generation = generation;
    }
}

/// App rules on the packet path, through a whole [`crate::inspect::Inspector`]: crafted TCP
/// frames (a real handshake, then payload) and corpus bytes.
#[cfg(test)]
mod app_rule_tests {
    use std::sync::Arc;

    use crate::app::engine::UnknownReason;
    use crate::app::App;
    use crate::inspect::{DropReason, FrameMeta, Inspector, MalformedPolicy, Verdict};
    use crate::policy::{CompiledPolicy, Policy, PolicyVerdict};
    use crate::session::{SessionSnapshot, Timeouts};
    use crate::wire::tcpflag::*;

    /// `apps` allowed to the workload 198.18.0.2 on TCP port 80, in `mode`.
    fn policy(mode: &str, apps: &str) -> Arc<CompiledPolicy> {
        let text = format!(
            "[[workload]]\nid = \"srv\"\nips = [\"198.18.0.2\"]\nmode = \"{mode}\"\n\
             [[rule]]\nid = 20\nfrom = \"any\"\nto = \"srv\"\nip_proto = \"tcp\"\nports = [\"80\"]\napps = [{apps}]\naction = \"allow\"\n"
        );
        Arc::new(CompiledPolicy::compile(&Policy::from_toml(&text).unwrap()).unwrap())
    }

    /// One TCP session 198.18.0.1:40000 -> 198.18.0.2:80 through an inspector.
    struct Conn {
        i: Inspector,
        next: [u32; 2],
        n: u64,
    }

    impl Conn {
        /// A session past its handshake under `p`.
        fn open(p: Arc<CompiledPolicy>) -> Conn {
            let mut i = Inspector::new(64, Timeouts::default(), MalformedPolicy::Drop);
            i.set_policy(p, 1);
            let mut c = Conn { i, next: [1000, 5000], n: 0 };
            assert_eq!(c.frame(true, SYN, b""), Verdict::Forward);
            assert_eq!(c.frame(false, SYN | ACK, b""), Verdict::Forward);
            assert_eq!(c.frame(true, ACK, b""), Verdict::Forward);
            c
        }

        /// A frame from the client (`to_server`) or the server with the next sequence number.
        fn frame(&mut self, to_server: bool, flags: u8, payload: &[u8]) -> Verdict {
            let mut f = crate::wire::tests::tcp4(&[], flags, payload);
            if !to_server {
                crate::wire::tests::reverse4(&mut f);
            }
            let d = usize::from(!to_server);
            f[38..42].copy_from_slice(&self.next[d].to_be_bytes());
            if flags & ACK != 0 {
                f[42..46].copy_from_slice(&self.next[1 - d].to_be_bytes());
            }
            crate::wire::tests::fix_checksums(&mut f);
            self.next[d] = self.next[d].wrapping_add(payload.len() as u32 + u32::from(flags & SYN != 0));
            self.n += 1;
            self.i.process(&f, FrameMeta::new(0, u16::from(!to_server), self.n * 1000))
        }

        fn snapshot(&mut self) -> SessionSnapshot {
            let mut v = self.i.snapshot(4);
            assert_eq!(v.len(), 1);
            v.remove(0)
        }
    }

    const GET: &[u8] = b"GET / HTTP/1.0\r\n\r\n";
    const OK: &[u8] = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi";
    const PING: &[u8] = b"*1\r\n$4\r\nPING\r\n";

    /// HTTP, then RESP on the same connection where only `http` is allowed: protect mode resets
    /// it on the first RESP frame (not forwarded) and drops what follows; the record says the
    /// app was HTTP before.
    #[test]
    fn http_then_resp_is_reset_in_protect_mode() {
        let mut c = Conn::open(policy("protect", "\"http\""));
        assert_eq!(c.frame(true, ACK | PSH, GET), Verdict::Forward);
        assert_eq!(c.frame(false, ACK | PSH, OK), Verdict::Forward);
        let s = c.snapshot();
        assert_eq!((s.app.as_ref().unwrap().app, s.policy.as_ref().unwrap().verdict), (App::Http, Some(PolicyVerdict::Allowed)));
        assert_eq!(c.frame(true, ACK | PSH, PING), Verdict::Reset, "the RESP frame is not forwarded");
        assert_eq!(c.frame(true, ACK | PSH, PING), Verdict::Drop(DropReason::PolicyDenied));
        assert_eq!(c.frame(false, ACK | PSH, b"+PONG\r\n"), Verdict::Drop(DropReason::PolicyDenied));
        let s = c.snapshot();
        let r = crate::record::to_record(&s, |_| String::new());
        assert_eq!((r.app.as_str(), r.previous_app.as_deref(), r.app_changes), ("redis", Some("http"), Some(1)));
        assert_eq!((r.verdict.as_deref(), r.rule_id), (Some("denied"), None));
        assert_eq!(c.i.stats.policy_resets, 1);
        let mut ev = Vec::new();
        c.i.drain_events(&mut ev);
        assert_eq!(ev.len(), 1, "one denied event");
        // RESP inside the first request's segment: the same, on that segment.
        let mut c = Conn::open(policy("protect", "\"http\""));
        assert_eq!(c.frame(true, ACK | PSH, &[GET, PING].concat()), Verdict::Reset);
    }

    /// Requests as servers accept them (an HTTP/0.9 request, empty lines before the request
    /// line, tabs between its parts) meet the `apps` rules as HTTP and carry their SQL
    /// injection into the record: allowed where `http` is allowed (the frame itself is reset
    /// by `sql_injection`'s action), reset where it is not.
    #[test]
    fn lenient_request_forms_meet_app_rules_and_the_sqli_check() {
        let sqli = "/item?id=1%27%20OR%20%271%27%3D%271";
        for req in [format!("GET {sqli}\r\n"), format!("\r\n\r\nGET {sqli} HTTP/1.1\r\nHost: x\r\n\r\n"), format!("GET\t{sqli}\tHTTP/1.0\r\n\r\n")] {
            let mut c = Conn::open(policy("protect", "\"http\""));
            assert_eq!(c.frame(true, ACK | PSH, req.as_bytes()), Verdict::Reset, "{req:?}");
            let r = crate::record::to_record(&c.snapshot(), |_| String::new());
            assert_eq!((r.app.as_str(), r.verdict.as_deref()), ("http", Some("allowed")), "{req:?}");
            assert_eq!((r.threat_block.as_deref(), r.threat_action.as_deref()), (Some("sql_injection"), Some("reset")));
            assert_eq!(r.l7.as_ref().and_then(|l| l["path"].as_str()), Some(sqli));
            assert_eq!(r.threats.first().map(|t| (t.id.as_str(), t.evidence.as_str())), Some(("sql_injection", "1' OR '1'='1")), "{req:?}");
            let mut c = Conn::open(policy("protect", "\"redis\""));
            assert_eq!(c.frame(true, ACK | PSH, req.as_bytes()), Verdict::Reset, "{req:?}");
        }
    }

    /// Alert mode: the same connection is forwarded whole and reported a violation once the
    /// app changed (event and record).
    #[test]
    fn http_then_resp_is_a_violation_in_alert_mode() {
        let mut c = Conn::open(policy("alert", "\"http\""));
        for (to_server, bytes) in [(true, GET), (false, OK), (true, PING), (false, &b"+PONG\r\n"[..])] {
            assert_eq!(c.frame(to_server, ACK | PSH, bytes), Verdict::Forward);
        }
        let mut ev = Vec::new();
        c.i.drain_events(&mut ev);
        assert_eq!(ev.len(), 1);
        let r = crate::record::to_record(&ev[0], |_| String::new());
        assert_eq!((r.verdict.as_deref(), r.app.as_str(), r.previous_app.as_deref()), (Some("violation"), "redis", Some("http")));
        let r = crate::record::to_record(&c.snapshot(), |_| String::new());
        assert_eq!((r.verdict.as_deref(), r.app.as_str()), (Some("violation"), "redis"));
    }

    /// The hole trick: after HTTP, nine segments beyond a hole make the stream skip it (its
    /// out-of-order limit), and the hole, sent last, would pass as a retransmission. The gap
    /// loses the parser's framing, so protect mode applies the exception policy (`drop_flow`:
    /// reset) on the ninth segment and drops the hole; alert mode passes the flow and says so.
    #[test]
    fn a_hole_the_parser_cannot_frame_across_is_an_exception() {
        for (mode, cut) in [("protect", true), ("alert", false)] {
            let mut c = Conn::open(policy(mode, "\"http\""));
            assert_eq!(c.frame(true, ACK | PSH, GET), Verdict::Forward);
            assert_eq!(c.frame(false, ACK | PSH, OK), Verdict::Forward);
            let hole = c.next[0];
            c.next[0] = hole.wrapping_add(PING.len() as u32);
            let mut verdicts = Vec::new();
            for _ in 0..9 {
                verdicts.push(c.frame(true, ACK | PSH, PING));
            }
            let end = c.next[0];
            c.next[0] = hole;
            let late = c.frame(true, ACK | PSH, PING);
            c.next[0] = end;
            let r = crate::record::to_record(&c.snapshot(), |_| String::new());
            assert_eq!((r.inspection.as_deref(), r.inspection_reason.as_deref()), (Some("bypassed"), Some("out_of_order_limit")), "{mode}");
            if cut {
                assert!(verdicts[..8].iter().all(|v| *v == Verdict::Forward), "{verdicts:?}");
                assert_eq!(verdicts[8], Verdict::Reset, "the segment that made the gap");
                assert_eq!(late, Verdict::Drop(DropReason::PolicyDenied), "the hole");
                assert_eq!((r.verdict.as_deref(), r.exception_action.as_deref()), (Some("denied"), Some("drop_flow")));
            } else {
                assert!(verdicts.iter().chain([&late]).all(|v| *v == Verdict::Forward), "{verdicts:?}");
                assert_eq!(r.exception_action.as_deref(), Some("pass_flow"));
            }
        }
    }

    /// Control: bytes that remain a prefix of an allowed app's first message are forwarded
    /// while detection runs, in any segmentation; HTTP then more HTTP stays allowed.
    #[test]
    fn prefixes_of_an_allowed_app_are_forwarded() {
        let req = b"GET /index.html HTTP/1.1\r\nHost: 198.18.0.2\r\n\r\n";
        for cut in [1, 2, 5, 14, 20, req.len() - 1] {
            let mut c = Conn::open(policy("protect", "\"http\""));
            assert_eq!(c.frame(true, ACK | PSH, &req[..cut]), Verdict::Forward, "cut {cut}");
            let s = c.snapshot();
            assert!(s.session.policy.pending_app || s.app.as_ref().unwrap().app == App::Http, "cut {cut}");
            assert_eq!(c.frame(true, ACK | PSH, &req[cut..]), Verdict::Forward);
            assert_eq!(c.frame(false, ACK | PSH, OK), Verdict::Forward);
            assert_eq!(c.frame(true, ACK | PSH, req), Verdict::Forward, "a second request");
            let p = c.snapshot().policy.unwrap();
            assert_eq!((p.verdict, p.rule_id), (Some(PolicyVerdict::Allowed), Some(20)));
        }
        // Redis allowed: a RESP prefix is forwarded until Redis is detected.
        let mut c = Conn::open(policy("protect", "\"redis\""));
        assert_eq!(c.frame(true, ACK | PSH, &PING[..10]), Verdict::Forward);
        assert_eq!(c.frame(true, ACK | PSH, &PING[10..]), Verdict::Forward);
        assert_eq!(c.snapshot().policy.unwrap().verdict, Some(PolicyVerdict::Allowed));
    }

    /// Bytes that only a candidate the rule does not allow still waits for (a partial RESP
    /// command where only HTTP is allowed) are dropped at once, whatever Redis thinks: the app
    /// is decided `unknown` and the session reset on that frame.
    #[test]
    fn a_prefix_of_only_other_apps_is_dropped_at_once() {
        let mut c = Conn::open(policy("protect", "\"http\""));
        assert_eq!(c.frame(true, ACK | PSH, &PING[..10]), Verdict::Reset);
        let s = c.snapshot();
        let a = s.app.as_ref().unwrap();
        assert_eq!((a.app, a.unknown_reason), (App::Unknown, Some(UnknownReason::NoAllowedApp)));
        let r = crate::record::to_record(&s, |_| String::new());
        assert_eq!((r.verdict.as_deref(), r.app_unknown_reason.as_deref()), (Some("denied"), Some("no_allowed_app")));
        assert_eq!(c.frame(true, ACK | PSH, &PING[10..]), Verdict::Drop(DropReason::PolicyDenied));
        // Real client bytes: the first command of each corpus Redis flow, cut before Redis can
        // tell (its probe still waits), over an http-only rule: dropped on that first frame.
        let mut cut_flows = 0;
        for f in crate::app::testutil::corpus_flows("redis.pcap") {
            let b = &f.to_server;
            let Some(cut) = (1..b.len().min(64)).find(|&k| {
                <crate::app::redis::Redis as crate::app::AppParser>::probe(crate::session::Dir::ToServer, &b[..k])
                    == crate::app::Probe::NeedMore
                    && <crate::app::http::Http as crate::app::AppParser>::probe(crate::session::Dir::ToServer, &b[..k])
                        == crate::app::Probe::NoMatch
            }) else {
                continue;
            };
            let mut c = Conn::open(policy("protect", "\"http\""));
            assert_eq!(c.frame(true, ACK | PSH, &b[..cut]), Verdict::Reset, "{:?}", String::from_utf8_lossy(&b[..cut]));
            // Control: the same bytes where Redis is allowed are forwarded.
            let mut c = Conn::open(policy("protect", "\"redis\""));
            assert_eq!(c.frame(true, ACK | PSH, &b[..cut]), Verdict::Forward);
            cut_flows += 1;
        }
        assert!(cut_flows > 0);
        // Where the rule's app and unknown traffic are both forwarded anyway (alert mode),
        // detection runs its course.
        let mut c = Conn::open(policy("alert", "\"http\""));
        assert_eq!(c.frame(true, ACK | PSH, &PING[..10]), Verdict::Forward);
        assert_eq!(c.frame(true, ACK | PSH, &PING[10..]), Verdict::Forward);
        assert_eq!(c.snapshot().app.unwrap().app, App::Redis);
    }

    /// The externalIP check takes the client workload the evaluation decided with: one known
    /// from its interface counts even when it sends from an address the policy does not list.
    #[test]
    fn external_ip_mitm_uses_the_decided_client() {
        let p = Policy::from_toml(
            "[[workload]]\nid = \"cli\"\nips = [\"198.18.0.1\"]\niface = \"veth-c\"\n\
             [[workload]]\nid = \"db\"\nips = [\"198.18.0.3\", \"2001:db8::3\"]\n\
             [[service]]\nname = \"evil\"\nexternal_ips = [\"198.18.0.3\", \"198.19.8.8\", \"2001:db8::3\"]\nports = [443]\n",
        )
        .unwrap();
        let c = CompiledPolicy::compile(&p).unwrap();
        let cli = c.workload_by_id("cli");
        let check = |client: &str, server: &str, port: u16, ends: crate::policy::Ends| {
            let f = crate::policy::Facts {
                client: client.parse().unwrap(),
                server: server.parse().unwrap(),
                ip_proto: 6,
                server_port: port,
                app: None,
                server_names: &[],
                client_names: &[],
            };
            let d = c.evaluate_ends(&f, ends);
            super::external_ip_mitm(&c, &f, &d).map(|m| (c.service_label(m.service), m.owner.map(|w| c.workload_id(w))))
        };
        let by_iface = crate::policy::Ends { client: cli, server: None };
        let none = crate::policy::Ends::default();
        // db's address: redirected whoever sends.
        assert_eq!(check("198.18.0.1", "198.18.0.3", 443, none), Some(("default/evil", Some("db"))));
        assert_eq!(check("198.18.9.9", "198.18.0.3", 443, none), Some(("default/evil", Some("db"))));
        assert_eq!(check("2001:db8::1", "2001:db8::3", 443, none), Some(("default/evil", Some("db"))));
        assert_eq!(check("198.18.0.1", "198.18.0.3", 80, none), None);
        // An outside address: only a workload's traffic, here cli's by address or interface.
        assert_eq!(check("198.18.0.1", "198.19.8.8", 443, none), Some(("default/evil", None)));
        assert_eq!(check("198.18.9.9", "198.19.8.8", 443, none), None);
        assert_eq!(check("198.18.9.9", "198.19.8.8", 443, by_iface), Some(("default/evil", None)));
    }
}
