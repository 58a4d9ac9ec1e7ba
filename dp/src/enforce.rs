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
//! - a new policy (apply, workload or mode change) is published with a new generation; each
//!   worker picks it up once per loop, and a session is evaluated again on its next frame when
//!   its generation is older, so allowed traffic flows on untouched and newly denied traffic
//!   stops.
//!
//! Nothing here allocates or locks per frame: the policy is read through the worker's own
//! `Arc`, swapped only when the generation counter moves.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};

use crate::policy::{CompiledPolicy, Decision, Mode, PolicyVerdict, WorkloadIdx};

/// The policy shared by the control thread (writer) and the workers (readers).
pub struct PolicyHandle {
    current: RwLock<Arc<CompiledPolicy>>,
    generation: AtomicU32,
    /// Generation each worker has loaded (index = worker), so a writer can wait until every
    /// worker enforces what it published.
    loaded: Vec<AtomicU32>,
}

impl PolicyHandle {
    /// A handle publishing `policy` as generation 1, for `workers` readers.
    pub fn new(policy: CompiledPolicy, workers: usize) -> Self {
        PolicyHandle {
            current: RwLock::new(Arc::new(policy)),
            generation: AtomicU32::new(1),
            loaded: (0..workers.max(1)).map(|_| AtomicU32::new(0)).collect(),
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
        let until = std::time::Instant::now() + timeout;
        loop {
            if self
                .loaded
                .iter()
                .all(|l| l.load(Ordering::Acquire).wrapping_sub(g) < u32::MAX / 2)
            {
                return true;
            }
            if std::time::Instant::now() >= until {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
    }
}

/// A session's policy state (plain data, part of [`crate::session::Session`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PolicyState {
    /// The latest decision's verdict (None: not enforced, neither end is a workload).
    pub verdict: Option<PolicyVerdict>,
    /// The deciding rule's id (None: the mode's default).
    pub rule_id: Option<u32>,
    /// The client's and the server's workload.
    pub workloads: [Option<WorkloadIdx>; 2],
    /// The deciding end's mode.
    pub mode: Option<Mode>,
    /// Generation of the policy that decided (0: never evaluated).
    pub generation: u32,
    /// The outcome may change once the app is known.
    pub pending_app: bool,
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
}

impl PolicyState {
    /// Applies a decision made under generation `g`.
    pub fn apply(&mut self, d: &Decision, g: u32) {
        if self.generation != g {
            self.counted = false;
        }
        self.verdict = d.verdict;
        self.rule_id = d.rule_id;
        self.workloads = [d.client_workload, d.server_workload];
        self.mode = d.mode;
        self.generation = g;
        self.pending_app = d.pending_app;
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
}

impl PolicyView {
    /// The view of `s` under `p` (workload indices are resolved only when `s` was decided by
    /// the generation `p` belongs to, `generation`).
    pub fn of(s: &PolicyState, p: &CompiledPolicy, generation: u32) -> Option<PolicyView> {
        s.verdict?;
        let name = |w: Option<WorkloadIdx>| {
            w.filter(|_| s.generation == generation)
                .map(|w| p.workload_id(w).to_string())
        };
        Some(PolicyView {
            verdict: s.verdict,
            rule_id: s.rule_id,
            workloads: [name(s.workloads[0]), name(s.workloads[1])],
            mode: s.mode,
            exception: s.exception,
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
