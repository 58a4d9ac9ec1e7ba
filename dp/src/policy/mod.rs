//! Policy: workloads, modes, rules and Kubernetes services, and the pure (no I/O, no threads)
//! matcher the packet path asks for a connection's verdict (and whether it is redirected by a
//! Service externalIP).
//!
//! # Model
//! A **workload** is a set of addresses (v4 and v6; optionally MACs and the interface it sits
//! behind) in one **mode**:
//! - `learn`: forward everything, report connections no rule decides as `learned`;
//! - `alert`: forward everything, report connections no rule allows as `violation`;
//! - `protect`: drop connections no rule allows, report them `denied`.
//!
//! A **rule** matches a connection (client → server) when all its conditions hold: `from`
//! matches the client address and `to` the server address (a workload id: its addresses; a
//! CIDR: addresses inside it; `any`; `external`: addresses of no workload), `ip_proto`, the
//! server port is in `ports` (a rule with ports matches TCP and UDP only), the detected app is
//! in `apps` (never `unknown`), and one of the names the server address is known by (from DNS
//! answers, given by the caller) matches `fqdn`. Among matching rules the lowest
//! `(priority, id)` is **the rule** of the connection. Rules are global: the same rule decides
//! at both ends.
//!
//! # Verdict ([`CompiledPolicy::evaluate`])
//! Policy is enforced at each end that is a workload: egress at the client's workload, ingress
//! at the server's. Neither end a workload: not enforced (`verdict: None`). Each enforcing
//! end's verdict from the rule's action and the end's mode:
//!
//! | rule \ mode | learn | alert | protect |
//! | --- | --- | --- | --- |
//! | allow | allowed | allowed | allowed |
//! | deny | violation | violation | denied |
//! | none | learned | violation | denied |
//!
//! (A deny rule in learn mode is a `violation`, not `learned`: the operator already decided
//! against that traffic, so it is reported as such rather than offered for learning, and it
//! is still forwarded.) The connection's verdict is the most severe of its ends
//! (`denied` > `violation` > `learned` > `allowed`); `mode` is the mode of the end that gave
//! it (the client's end on a tie).
//!
//! # Apps not yet known
//! With `app: None` (detection still running), rules with `apps` cannot match yet: the
//! decision is made as if they did not exist, which is exactly the final verdict should the
//! app end up `unknown` or none of theirs. This **provisional verdict** is returned with
//! `pending_app = true` when some app rule whose other conditions all match ranks before the
//! decision's rule (or there is none) and, as the rule, would give a different verdict. The
//! caller then forwards the connection (even if the provisional verdict is `denied`) until the
//! app is known, and evaluates again with `app: Some(..)` (`Some(App::Unknown)` when detection
//! gave up; app rules never match it). `pending_app` is conservative: it may be true when app
//! rules shadowed by other app rules could not in fact change the outcome; it is never false
//! when the outcome could change.
//!
//! ICMP errors about a known session are not evaluated here ([`crate::icmp`] judges them against
//! the session they quote, which keeps its verdict). IPv6 is
//! handled exactly like IPv4; an IPv4-mapped IPv6 address is an IPv6 address.
//!
//! # Services and externalIPs (`k8s_external_ip_mitm`, CVE-2020-8554)
//! A **service** (`[[service]]`: `name`, `namespace`, `external_ips`, optional `ports`, the ids
//! of the `workloads` backing it) is a Kubernetes Service with `spec.externalIPs`. Kubernetes
//! lets whoever may create a Service claim any address this way, and kube-proxy then DNATs
//! every packet to that address (and port) that a node routes or sends (from its pods, its
//! own processes or outside) to the Service's pods, whoever really owns the address: the attacker's pods get traffic meant for
//! a victim pod or for an outside host (the CVE's own example is a pod's traffic to 8.8.8.8).
//! Services do not change verdicts; [`CompiledPolicy::external_ip_mitm`] tells the threat stage
//! whether a session is such a redirection.
//!
//! What Warden can see depends on where it sits relative to kube-proxy's DNAT, which happens
//! in the node's network namespace:
//! - **Before the DNAT** (Warden between a pod and the node, the usual place for a
//!   workload's `iface`), the pod's frames still carry the address it meant: `server` is the
//!   externalIP. This is what the lookup judges:
//!   - the address is an address of a workload that does not back the service: traffic meant
//!     for that workload goes to the service's pods. Certain, whoever the client is (the
//!     owner's own traffic aside), reason `external_ip_of_workload`;
//!   - the address is no workload's, and the client is a workload that does not back the
//!     service: the workload's traffic to an outside host goes to the service's pods
//!     (NeuVector's rule: a pod reaching a Service externalIP is at risk). Reason
//!     `external_ip_unowned`. Warden cannot tell a hijacked outside address from one routed
//!     to the cluster for that Service on purpose; both are reported. Clients that are no
//!     workload (outside traffic, which is what externalIPs are for) and the service's own
//!     workloads are not.
//! - **After the DNAT** (Warden in front of the backing pod, or on a node link after
//!   routing), the destination is already the backing pod's address and the address the
//!   client meant is only in the node's conntrack: the session is indistinguishable from
//!   ordinary Service traffic, so nothing is reported there. Run Warden on the clients' side
//!   of kube-proxy to see this threat.
//!
//! A service with `ports` claims TCP and UDP to those ports only (as a rule with ports; SCTP
//! Services are not told apart); without, every protocol and port (IPVS mode also answers
//! ICMP for the address). One address may be claimed by several services (two Services
//! claiming one externalIP is itself a form of the attack): the first in file order that
//! flags the connection answers. A policy that states the conflict is accepted (the agent
//! mirroring the cluster must be able to describe the attack) and the daemon logs each such
//! claim ([`CompiledPolicy::external_ip_conflicts`]).
//!
//! # Files
//! - `model.rs`: the parsed file's types; `load.rs`: TOML in and out with line/field errors;
//! - `matcher.rs`: [`CompiledPolicy`] (the index and the externalIP table) and
//!   [`reference_evaluate`] (linear);
//! - `learn.rs`: [`learned_policy`] (a protect-mode policy from learned connections);
//! - `select.rs`: workloads selected by identity ([`Selector`]: container names, pod
//!   `namespace/name`, pod labels) and their addresses filled from discovered workloads
//!   ([`Policy::with_discovered`]).

use std::net::IpAddr;

use crate::app::{App, AppSet};

mod learn;
mod load;
mod matcher;
mod model;
mod select;
#[cfg(test)]
mod services_tests;
#[cfg(test)]
mod tests;

pub use learn::{learned_policy, LearnedConn};
pub use select::{check_container_glob, check_pod_glob, Selector};
pub use load::PolicyError;
pub use matcher::{reference_evaluate, reference_evaluate_ends, Bound, CompiledPolicy, IndexStats};
pub use model::{
    app_from_name, known_apps, Action, BoundAddr, Cidr, Endpoint, Fqdn, IpProto, Mac, Mode, Policy, PolicyVerdict,
    PortRange, Rule, Service, Workload,
};

/// Index of a workload in [`Policy::workloads`] (and in its [`CompiledPolicy`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkloadIdx(pub u32);

impl WorkloadIdx {
    /// As a `usize` index into `Policy::workloads`.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Index of a service in [`Policy::services`] (and in its [`CompiledPolicy`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceIdx(pub u32);

impl ServiceIdx {
    /// As a `usize` index into `Policy::services`.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// A connection to an address a Kubernetes Service claims as externalIP that is not the
/// Service's to claim: the `k8s_external_ip_mitm` threat (CVE-2020-8554), as found by
/// [`CompiledPolicy::external_ip_mitm`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExternalIpMitm {
    /// The service claiming the server address ([`CompiledPolicy::service`],
    /// [`CompiledPolicy::service_label`]).
    pub service: ServiceIdx,
    /// The workload the server address belongs to (not one backing the service); `None`
    /// when it belongs to no workload (an outside address, and the client is a workload that
    /// does not back the service).
    pub owner: Option<WorkloadIdx>,
}

impl ExternalIpMitm {
    /// The threat record's reason: `external_ip_of_workload` (the address is another
    /// workload's: certain redirection) or `external_ip_unowned` (an address of no workload,
    /// reached by a workload that is not the service's: what the Service's pods get is
    /// traffic meant for an outside host, unless the address is routed to the cluster for
    /// this Service on purpose).
    pub fn reason(&self) -> &'static str {
        match self.owner {
            Some(_) => "external_ip_of_workload",
            None => "external_ip_unowned",
        }
    }
}

/// Workloads the caller knows an end belongs to from where its frames were seen (the
/// interface of a workload's side of its inline pair): they win over the address lookup, so
/// traffic on a workload's interface is that workload's whatever addresses it carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ends {
    /// The client's workload, known from its interface.
    pub client: Option<WorkloadIdx>,
    /// The server's workload, known from its interface.
    pub server: Option<WorkloadIdx>,
}

/// What the caller knows about a connection (one evaluation).
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// Client (initiator) address.
    pub client: IpAddr,
    /// Server (responder) address.
    pub server: IpAddr,
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6, ...).
    pub ip_proto: u8,
    /// Server port (TCP/UDP; anything, e.g. 0, for other protocols: only rules with `ports`
    /// look at it, and they match TCP and UDP only).
    pub server_port: u16,
    /// Detected app; `None` while detection is still running ([`Decision::pending_app`]).
    pub app: Option<App>,
    /// DNS names the client learned for the server address (any case, optional trailing
    /// dot; may be empty; see [`crate::names`]). Matched against rules' `fqdn`.
    pub server_names: &'a [&'a str],
    /// DNS names learned for the client address. No rule condition uses them yet (reserved
    /// for client-name rules); they do not change the decision.
    pub client_names: &'a [&'a str],
}

/// The outcome of [`CompiledPolicy::evaluate`] (and [`reference_evaluate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// The connection's verdict; `None` when neither end is a workload (not enforced: forward,
    /// report without a verdict). Provisional while `pending_app`.
    pub verdict: Option<PolicyVerdict>,
    /// Id of the rule that decided (`None`: no rule matched, the mode's default applied).
    pub rule_id: Option<u32>,
    /// Index of that rule in [`CompiledPolicy::rules`] (for O(1) hit counter arrays).
    pub rule_index: Option<u32>,
    /// The client's workload, if any (egress enforcement).
    pub client_workload: Option<WorkloadIdx>,
    /// The server's workload, if any (ingress enforcement).
    pub server_workload: Option<WorkloadIdx>,
    /// Mode of the end that gave the verdict (`None` when not enforced).
    pub mode: Option<Mode>,
    /// True while `app` is `None` and an app rule could still change the verdict once the app
    /// is known: forward, and evaluate again when it is.
    pub pending_app: bool,
    /// The apps whose detection would leave the connection not denied: `a` is in the set
    /// exactly when the evaluation of the same facts with `app: Some(a)` is not `Denied`
    /// ([`App::Unknown`] included, for detection giving up). Read while `pending_app`: the
    /// caller forwards the pending bytes only while one of these apps can still be detected
    /// from them (with `unknown` in the set the provisional verdict itself forwards).
    pub allowing: AppSet,
}

impl Decision {
    /// The decision for a connection neither end of which is a workload.
    pub const NOT_ENFORCED: Decision = Decision {
        verdict: None,
        rule_id: None,
        rule_index: None,
        client_workload: None,
        server_workload: None,
        mode: None,
        pending_app: false,
        allowing: AppSet::ALL,
    };

    /// True if the connection is to be dropped now: verdict `Denied` and not pending an app.
    pub fn drops(&self) -> bool {
        self.verdict == Some(PolicyVerdict::Denied) && !self.pending_app
    }
}
