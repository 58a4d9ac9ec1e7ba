//! The parsed policy file: workloads, rules and their value types.
//!
//! Every type here is plain data, validated by [`Policy::from_toml`](super::Policy::from_toml)
//! (see `load.rs`). Values serialize (to TOML and JSON alike) in the file's own spelling:
//! addresses, CIDRs, ports, apps and protocols as strings, so `to_toml` output reads back and a
//! policy shown as JSON looks like the file.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize, Serializer};

use crate::app::App;

/// What Warden does with a workload's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Forward everything; connections no rule decides are reported `learned`.
    #[default]
    Learn,
    /// Forward everything; connections no rule allows are reported `violation`.
    Alert,
    /// Drop connections no rule allows; they are reported `denied`.
    Protect,
}

impl Mode {
    /// File and record spelling: `"learn"`, `"alert"`, `"protect"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Learn => "learn",
            Mode::Alert => "alert",
            Mode::Protect => "protect",
        }
    }

    /// Parses the file spelling (exact, lowercase). `None` for anything else.
    pub fn from_name(s: &str) -> Option<Mode> {
        match s {
            "learn" => Some(Mode::Learn),
            "alert" => Some(Mode::Alert),
            "protect" => Some(Mode::Protect),
            _ => None,
        }
    }
}

/// A rule's action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Matching connections are allowed.
    Allow,
    /// Matching connections are not allowed (reported, and dropped in protect mode).
    Deny,
}

impl Action {
    /// File spelling: `"allow"` or `"deny"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
        }
    }
}

/// A policy decision for one connection, in increasing severity:
/// `Allowed` < `Learned` < `Violation` < `Denied` (the derived `Ord` follows this order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyVerdict {
    /// An allow rule matched.
    Allowed,
    /// Learn mode, no rule matched: forwarded, reported for learning.
    Learned,
    /// Forwarded but not allowed (alert mode, or a deny rule in learn mode).
    Violation,
    /// Dropped (protect mode, no allow rule).
    Denied,
}

impl PolicyVerdict {
    /// Record spelling: `"learned"`, `"allowed"`, `"violation"`, `"denied"`.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyVerdict::Learned => "learned",
            PolicyVerdict::Allowed => "allowed",
            PolicyVerdict::Violation => "violation",
            PolicyVerdict::Denied => "denied",
        }
    }

    /// True if the connection is to be dropped (only `Denied`).
    pub fn drops(self) -> bool {
        self == PolicyVerdict::Denied
    }
}

/// An Ethernet MAC address; written `02:00:00:00:00:02` (six hex pairs, `:`-separated, either
/// case; shown lowercase).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

impl FromStr for Mac {
    type Err = String;
    fn from_str(s: &str) -> Result<Mac, String> {
        let mut out = [0u8; 6];
        let mut n = 0;
        for part in s.split(':') {
            if n == 6 || part.len() != 2 {
                return Err(format!(
                    "bad MAC address {s:?}: expected six hex pairs like 02:00:00:00:00:02"
                ));
            }
            out[n] = u8::from_str_radix(part, 16)
                .map_err(|_| format!("bad MAC address {s:?}: expected six hex pairs like 02:00:00:00:00:02"))?;
            n += 1;
        }
        if n != 6 {
            return Err(format!(
                "bad MAC address {s:?}: expected six hex pairs like 02:00:00:00:00:02"
            ));
        }
        Ok(Mac(out))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// An IPv4 or IPv6 prefix: `addr/len`, host bits zero (checked when parsed). Written
/// `198.18.0.0/15` or `2001:db8::/32`; a bare address is its host prefix (/32 or /128) and
/// is shown with the length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    /// Network address (host bits zero).
    pub addr: IpAddr,
    /// Prefix length: 0..=32 for IPv4, 0..=128 for IPv6.
    pub len: u8,
}

impl Cidr {
    /// The host prefix of `addr` (/32 or /128).
    pub fn host(addr: IpAddr) -> Cidr {
        Cidr {
            addr,
            len: if addr.is_ipv4() { 32 } else { 128 },
        }
    }

    /// True if `ip` is inside this prefix (never across address families).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => mask_v4(u32::from(a), self.len) == u32::from(n),
            (IpAddr::V6(n), IpAddr::V6(a)) => mask_v6(u128::from(a), self.len) == u128::from(n),
            _ => false,
        }
    }
}

/// `a` with all but the first `len` bits cleared (`len` 0..=32).
pub(crate) fn mask_v4(a: u32, len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        a & (u32::MAX << (32 - u32::from(len.min(32))))
    }
}

/// `a` with all but the first `len` bits cleared (`len` 0..=128).
pub(crate) fn mask_v6(a: u128, len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        a & (u128::MAX << (128 - u32::from(len.min(128))))
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Cidr, String> {
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("bad CIDR {s:?}: {a:?} is not an IPv4 or IPv6 address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match l {
            None => max,
            Some(l) => match l.parse::<u8>() {
                Ok(n) if n <= max && !l.starts_with('+') && (l == "0" || !l.starts_with('0')) => n,
                _ => return Err(format!("bad CIDR {s:?}: prefix length must be 0..={max}")),
            },
        };
        let net = Cidr { addr, len };
        let masked = match addr {
            IpAddr::V4(v) => IpAddr::V4(mask_v4(u32::from(v), len).into()),
            IpAddr::V6(v) => IpAddr::V6(mask_v6(u128::from(v), len).into()),
        };
        if masked != addr {
            return Err(format!(
                "bad CIDR {s:?}: host bits are set (the network is {masked}/{len})"
            ));
        }
        Ok(net)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// One end of a rule (`from` = the client, `to` = the server).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `"any"`: every address.
    Any,
    /// `"external"`: every address that belongs to no workload of the policy.
    External,
    /// A workload id: exactly that workload's addresses.
    Workload(String),
    /// A prefix: every address inside it, workload or not.
    Cidr(Cidr),
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Any => f.write_str("any"),
            Endpoint::External => f.write_str("external"),
            Endpoint::Workload(w) => f.write_str(w),
            Endpoint::Cidr(c) => c.fmt(f),
        }
    }
}

/// A rule's IP protocol. Written `"tcp"`, `"udp"`, `"icmp"`, `"icmpv6"`, `"any"`, or a
/// protocol number `"0"`..`"255"` for others (6, 17, 1 and 58 read as their names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum IpProto {
    /// Every protocol.
    #[default]
    Any,
    /// TCP (6).
    Tcp,
    /// UDP (17).
    Udp,
    /// ICMP (1).
    Icmp,
    /// ICMPv6 (58).
    Icmpv6,
    /// Any other protocol number (never 1, 6, 17 or 58).
    Other(u8),
}

impl IpProto {
    /// The protocol of IP protocol number `n` (`Tcp` for 6, ...).
    pub fn from_number(n: u8) -> IpProto {
        match n {
            6 => IpProto::Tcp,
            17 => IpProto::Udp,
            1 => IpProto::Icmp,
            58 => IpProto::Icmpv6,
            n => IpProto::Other(n),
        }
    }

    /// The IP protocol number, `None` for `Any`.
    pub fn number(self) -> Option<u8> {
        match self {
            IpProto::Any => None,
            IpProto::Tcp => Some(6),
            IpProto::Udp => Some(17),
            IpProto::Icmp => Some(1),
            IpProto::Icmpv6 => Some(58),
            IpProto::Other(n) => Some(n),
        }
    }

    /// True if a connection of IP protocol number `n` has this protocol.
    pub fn matches(self, n: u8) -> bool {
        self.number().is_none_or(|p| p == n)
    }
}

impl FromStr for IpProto {
    type Err = String;
    fn from_str(s: &str) -> Result<IpProto, String> {
        Ok(match s {
            "any" => IpProto::Any,
            "tcp" => IpProto::Tcp,
            "udp" => IpProto::Udp,
            "icmp" => IpProto::Icmp,
            "icmpv6" => IpProto::Icmpv6,
            _ => match s.parse::<u8>() {
                Ok(n) if !s.starts_with('+') => IpProto::from_number(n),
                _ => {
                    return Err(format!(
                        "unknown ip_proto {s:?} (expected tcp, udp, icmp, icmpv6, any or a number 0..=255)"
                    ))
                }
            },
        })
    }
}

impl fmt::Display for IpProto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpProto::Any => f.write_str("any"),
            IpProto::Tcp => f.write_str("tcp"),
            IpProto::Udp => f.write_str("udp"),
            IpProto::Icmp => f.write_str("icmp"),
            IpProto::Icmpv6 => f.write_str("icmpv6"),
            IpProto::Other(n) => write!(f, "{n}"),
        }
    }
}

/// An inclusive range of server ports, `lo <= hi`. Written `"80"` (lo = hi) or `"8000-8100"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    /// First port.
    pub lo: u16,
    /// Last port (inclusive).
    pub hi: u16,
}

impl PortRange {
    /// True if `port` is inside.
    pub fn contains(&self, port: u16) -> bool {
        self.lo <= port && port <= self.hi
    }
}

impl FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<PortRange, String> {
        let port = |p: &str| -> Result<u16, String> {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("bad port range {s:?}: expected \"80\" or \"8000-8100\""));
            }
            p.parse::<u16>()
                .map_err(|_| format!("bad port range {s:?}: ports are 0..=65535"))
        };
        let (lo, hi) = match s.split_once('-') {
            Some((a, b)) => (port(a)?, port(b)?),
            None => {
                let p = port(s)?;
                (p, p)
            }
        };
        if lo > hi {
            return Err(format!("bad port range {s:?}: first port is above the last"));
        }
        Ok(PortRange { lo, hi })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

/// A DNS name pattern matched against the names the server address is known by. Stored
/// lowercase without a trailing dot. `*.example.test` (wildcard) matches names with one or
/// more labels before `.example.test` (`x.example.test`, `y.x.example.test`) but not
/// `example.test` itself; anything else matches exactly. Matching ignores ASCII case and one
/// trailing dot on the candidate name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Fqdn {
    /// The name (for a wildcard, the part after `*.`).
    pub name: String,
    /// True for `*.name`.
    pub wildcard: bool,
}

impl Fqdn {
    /// True if `candidate` (a DNS name as learned, any case, optional trailing dot) matches.
    pub fn matches(&self, candidate: &str) -> bool {
        fqdn_matches(&self.name, self.wildcard, candidate)
    }
}

/// See [`Fqdn::matches`]; `name` must be lowercase without a trailing dot.
pub(crate) fn fqdn_matches(name: &str, wildcard: bool, candidate: &str) -> bool {
    let c = candidate.strip_suffix('.').unwrap_or(candidate).as_bytes();
    let n = name.as_bytes();
    if !wildcard {
        return c.eq_ignore_ascii_case(n);
    }
    // c = <one or more labels> "." name
    if c.len() < n.len() + 2 {
        return false;
    }
    let split = c.len() - n.len();
    c[split - 1] == b'.' && c[split..].eq_ignore_ascii_case(n) && c[split - 2] != b'.'
}

impl FromStr for Fqdn {
    type Err = String;
    fn from_str(s: &str) -> Result<Fqdn, String> {
        let lower = s.to_ascii_lowercase();
        let t = lower.strip_suffix('.').unwrap_or(&lower);
        let (wildcard, name) = match t.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, t),
        };
        let bad = |why: &str| Err(format!("bad fqdn {s:?}: {why}"));
        if name.is_empty() {
            return bad("empty name");
        }
        if name.len() > 253 {
            return bad("longer than 253 characters");
        }
        for label in name.split('.') {
            if label.is_empty() || label.len() > 63 {
                return bad("labels are 1 to 63 characters");
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return bad("labels are letters, digits, '-' and '_' (a wildcard is only a leading \"*.\")");
            }
        }
        Ok(Fqdn {
            name: name.to_string(),
            wildcard,
        })
    }
}

impl fmt::Display for Fqdn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wildcard {
            write!(f, "*.{}", self.name)
        } else {
            f.write_str(&self.name)
        }
    }
}

/// Apps from detection that rules may name: the apps of every registered parser
/// (`app::engine::CANDIDATES`) plus the ones parsers refine to (`grpc` from `http2`). Never
/// `unknown` (an app rule never allows an unknown app) and never the test-only `template`.
pub fn known_apps() -> impl Iterator<Item = App> {
    const REFINED: &[App] = &[App::Grpc];
    crate::app::engine::CANDIDATES
        .iter()
        .map(|c| c.app)
        .chain(REFINED.iter().copied())
        .filter(|a| !matches!(a, App::Unknown | App::Template))
}

/// The app named `name` (an [`App::as_str`] value) if rules may name it ([`known_apps`]).
pub fn app_from_name(name: &str) -> Option<App> {
    known_apps().find(|a| a.as_str() == name)
}

/// A workload: a set of addresses Warden enforces policy for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Workload {
    /// Unique id, used by rules' `from`/`to`: letters, digits, `_`, `-`, `.`; not `any`,
    /// `external`, nor anything that reads as an address.
    pub id: String,
    /// Its addresses (each belongs to one workload only; at least one unless `select` says
    /// which discovered workloads' addresses it takes, [`super::select`]).
    pub ips: Vec<IpAddr>,
    /// Its MAC addresses (may be empty; each belongs to one workload only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub macs: Vec<Mac>,
    /// The interface it sits behind, if said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iface: Option<String>,
    /// Its mode (the file's `default_mode` when the workload does not say).
    pub mode: Mode,
    /// The discovered workloads (containers, pods) whose addresses it takes
    /// ([`super::select`]); the file's `containers`, `pods`, `pod_labels`.
    #[serde(flatten)]
    pub select: super::Selector,
}

/// A rule. A connection matches when every condition holds; among matching rules the lowest
/// `(priority, id)` wins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    /// Unique id (reported with the connections it decides).
    pub id: u32,
    /// Client side.
    pub from: Endpoint,
    /// Server side.
    pub to: Endpoint,
    /// IP protocol (default any).
    pub ip_proto: IpProto,
    /// Server ports (`None` = all). A rule with ports matches TCP and UDP connections only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<PortRange>>,
    /// Apps from detection (`None` = any, detected or not). A rule with apps matches only once
    /// the app is known and is one of them; never `unknown`.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "ser_apps")]
    pub apps: Option<Vec<App>>,
    /// DNS name the server must be known by (`None` = any server name, or none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fqdn: Option<Fqdn>,
    /// Allow or deny.
    pub action: Action,
    /// Lower wins; ties go to the lower id. The rule id when the file does not say.
    pub priority: u32,
}

/// A Kubernetes Service that claims addresses through `spec.externalIPs` (the file's
/// `[[service]]` table), for the `k8s_external_ip_mitm` threat (CVE-2020-8554): kube-proxy
/// sends traffic to these addresses (and ports) to the Service's pods, whoever owns the
/// address. See the `policy` module docs ("Services and externalIPs").
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Service {
    /// The Service's name (a DNS-1035 label: 1 to 63 lowercase letters, digits and `-`,
    /// starting with a letter, ending with a letter or digit).
    pub name: String,
    /// Its namespace (a DNS-1123 label; `default` when the file does not say). Unique with
    /// `name`.
    pub namespace: String,
    /// The addresses it claims (`spec.externalIPs`): at least one, unicast (not unspecified,
    /// loopback, link-local or multicast, as Kubernetes' own validation), each once.
    pub external_ips: Vec<IpAddr>,
    /// The Service's ports (`None` = every port and protocol). With ports, only TCP and UDP
    /// connections to one of them are redirected (as a rule with ports).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<PortRange>>,
    /// Ids of the workloads backing it (its endpoints' pods), each once; may be empty (its
    /// pods are no workloads of this policy).
    pub workloads: Vec<String>,
}

/// The whole policy file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Policy {
    /// Mode of workloads that do not say (default learn). Already applied to
    /// [`Workload::mode`]; kept so the file reads back the same.
    pub default_mode: Mode,
    /// Workloads, in file order ([`WorkloadIdx`](super::WorkloadIdx) `i` is `workloads[i]`).
    #[serde(rename = "workload", skip_serializing_if = "Vec::is_empty")]
    pub workloads: Vec<Workload>,
    /// Rules, in file order (the rule index of a decision indexes this).
    #[serde(rename = "rule", skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    /// Kubernetes Services with externalIPs, in file order
    /// ([`ServiceIdx`](super::ServiceIdx) `i` is `services[i]`).
    #[serde(rename = "service", skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<Service>,
    /// Attachments' addresses and where they may be sent from ([`BoundAddr`]), whichever
    /// workload owns them: the attachment's implicit one, one that lists them in `ips` or one
    /// that selects it by identity. Filled by the daemon whenever it publishes a policy; never
    /// read from or written to a policy file. [`crate::origin::Origins::spoofed`] checks them.
    #[serde(skip)]
    pub bound: std::collections::BTreeMap<IpAddr, BoundAddr>,
    /// Warden's interfaces that face a bridge (each attachment's near end, whose frames come
    /// over the bridge), interface name -> bridge name. Filled with [`Policy::bound`].
    #[serde(skip)]
    pub uplinks: std::collections::BTreeMap<String, String>,
}

/// Where an attachment's address may be sent from ([`Policy::bound`]): the attachment's host
/// interface (the workload's side of Warden's pair), or, having passed that check, over its
/// bridge into another attachment's near end, from the MAC the workload sends from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BoundAddr {
    /// The attachment's host interface.
    pub iface: String,
    /// The bridge it is attached to.
    pub bridge: String,
    /// The MAC of the workload's own interface (`None` when not known, as for a VM's tap:
    /// then any frame over the bridge may claim the address).
    pub mac: Option<[u8; 6]>,
}

fn ser_display<T: fmt::Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

macro_rules! display_serialize {
    ($($t:ty),*) => {$(
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                ser_display(self, s)
            }
        }
    )*};
}
display_serialize!(Mac, Cidr, Endpoint, IpProto, PortRange, Fqdn);

fn ser_apps<S: Serializer>(apps: &Option<Vec<App>>, s: S) -> Result<S::Ok, S::Error> {
    let names: Option<Vec<&str>> = apps.as_ref().map(|v| v.iter().map(|a| a.as_str()).collect());
    names.serialize(s)
}
