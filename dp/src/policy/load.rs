//! Reading and writing the policy file (TOML).
//!
//! The file is read in two steps: toml (with `deny_unknown_fields` and [`toml::Spanned`]
//! values, so every value keeps its byte span) into raw string-typed tables, then a
//! validation pass that turns them into a [`Policy`] or the first [`PolicyError`], whose line
//! is computed from the offending value's byte offset. Nothing of a rejected file is used.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

use super::model::{app_from_name, known_apps, Cidr, Endpoint, Fqdn, IpProto, Mac, Mode, PortRange};
use super::{Action, Policy, Rule, Service, Workload};

/// Why a policy file was rejected: where (1-based line, the field) and what.
///
/// Display: `policy line 14, field "to": unknown workload "wbe"` (or `policy line 3: ...`
/// when no field can be named, e.g. a TOML syntax error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// 1-based line of the offending value (or of the table missing a field); 0 for errors of
    /// [`CompiledPolicy::compile`](super::CompiledPolicy::compile) on a policy built in code.
    pub line: usize,
    /// The field (`"to"`, `"ports"`, ...), or empty when none applies.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "policy line {}: {}", self.line, self.message)
        } else {
            write!(f, "policy line {}, field {:?}: {}", self.line, self.field, self.message)
        }
    }
}

impl std::error::Error for PolicyError {}

/// 1-based line of byte `offset` in `text`.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    1 + text.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    default_mode: Option<Spanned<String>>,
    #[serde(default)]
    workload: Vec<RawWorkload>,
    #[serde(default)]
    rule: Vec<RawRule>,
    #[serde(default)]
    service: Vec<RawService>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkload {
    id: Spanned<String>,
    ips: Option<Spanned<Vec<Spanned<String>>>>,
    containers: Option<Spanned<Vec<Spanned<String>>>>,
    pods: Option<Spanned<Vec<Spanned<String>>>>,
    pod_labels: Option<Spanned<std::collections::BTreeMap<String, Spanned<String>>>>,
    #[serde(default)]
    macs: Vec<Spanned<String>>,
    iface: Option<Spanned<String>>,
    mode: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    id: Spanned<i64>,
    from: Spanned<String>,
    to: Spanned<String>,
    ip_proto: Option<Spanned<String>>,
    ports: Option<Spanned<Vec<Spanned<RawPort>>>>,
    apps: Option<Spanned<Vec<Spanned<String>>>>,
    fqdn: Option<Spanned<String>>,
    action: Spanned<String>,
    priority: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: Spanned<String>,
    namespace: Option<Spanned<String>>,
    external_ips: Spanned<Vec<Spanned<String>>>,
    ports: Option<Spanned<Vec<Spanned<RawPort>>>>,
    #[serde(default)]
    workloads: Vec<Spanned<String>>,
}

/// A port entry: `"80"`, `"8000-8100"` or a bare integer `80`.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawPort {
    Int(i64),
    Str(String),
}

struct Ctx<'a> {
    text: &'a str,
}

impl Ctx<'_> {
    fn err<T>(&self, span: Range<usize>, field: &str, message: impl Into<String>) -> Result<T, PolicyError> {
        Err(PolicyError {
            line: line_of(self.text, span.start),
            field: field.to_string(),
            message: message.into(),
        })
    }
}

/// Turns a toml deserialization error into a [`PolicyError`]: the line from its span, the
/// field from the message (`unknown field`/`missing field`) or from the `key =` the span's
/// line starts with.
fn toml_error(text: &str, e: &toml::de::Error) -> PolicyError {
    // toml's messages may span lines ("invalid table header\nexpected ..."): keep one line.
    let msg = e
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(": ");
    let start = e.span().map(|s| s.start).unwrap_or(0);
    let line = line_of(text, start);
    let quoted = |prefix: &str| -> Option<String> {
        let rest = msg.strip_prefix(prefix)?;
        let rest = rest.strip_prefix('`')?;
        Some(rest[..rest.find('`')?].to_string())
    };
    let field = quoted("unknown field ")
        .or_else(|| quoted("missing field "))
        .unwrap_or_else(|| {
            // The key of the line the value is on: `key = value`.
            let line_text = text.lines().nth(line - 1).unwrap_or("");
            match line_text.split_once('=') {
                Some((k, _)) => {
                    let k = k.trim();
                    if !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
                        k.to_string()
                    } else {
                        String::new()
                    }
                }
                None => String::new(),
            }
        });
    PolicyError {
        line,
        field,
        message: msg,
    }
}

fn valid_workload_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 64 {
        return Err("workload ids are 1 to 64 characters".into());
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err(format!("bad workload id {id:?}: use letters, digits, '_', '-' and '.'"));
    }
    if id == "any" || id == "external" {
        return Err(format!(
            "{id:?} is reserved (it means every address / every non-workload address)"
        ));
    }
    if id.parse::<IpAddr>().is_ok() {
        return Err(format!("workload id {id:?} reads as an address"));
    }
    Ok(())
}

fn valid_iface(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 15 {
        return Err(format!("bad interface name {name:?}: 1 to 15 characters"));
    }
    if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || !b.is_ascii_graphic())
    {
        return Err(format!("bad interface name {name:?}"));
    }
    Ok(())
}

/// A Kubernetes object name of the DNS label kind: 1 to 63 lowercase letters, digits and
/// `-`, starting and ending with a letter or digit; `first_letter` (DNS-1035, Service names)
/// also needs a letter first.
fn valid_k8s_label(what: &str, s: &str, first_letter: bool) -> Result<(), String> {
    let b = s.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
        && (!first_letter || b[0].is_ascii_lowercase());
    if ok {
        return Ok(());
    }
    let first = if first_letter { "a letter" } else { "a letter or digit" };
    Err(format!(
        "bad {what} {s:?}: 1 to 63 lowercase letters, digits and '-', starting with {first} and ending with a letter or digit"
    ))
}

/// Why `a` cannot be a Service externalIP (Kubernetes' `ValidateNonSpecialIP`: unspecified,
/// loopback, link-local and multicast addresses are refused), or `None`.
fn special_ip(a: IpAddr) -> Option<&'static str> {
    match a {
        IpAddr::V4(v) if v.is_unspecified() || v.is_broadcast() => Some("unspecified or broadcast"),
        IpAddr::V4(v) if v.is_loopback() => Some("loopback"),
        IpAddr::V4(v) if v.is_link_local() => Some("link-local"),
        IpAddr::V4(v) if v.is_multicast() => Some("multicast"),
        IpAddr::V6(v) if v.is_unspecified() => Some("unspecified"),
        IpAddr::V6(v) if v.is_loopback() => Some("loopback"),
        IpAddr::V6(v) if v.segments()[0] & 0xffc0 == 0xfe80 => Some("link-local"),
        IpAddr::V6(v) if v.is_multicast() => Some("multicast"),
        _ => None,
    }
}

/// A `ports` list (of a rule or a service): non-empty; `"80"`, `"8000-8100"` or integers.
fn parse_ports(ctx: &Ctx<'_>, list: &Spanned<Vec<Spanned<RawPort>>>) -> Result<Vec<PortRange>, PolicyError> {
    if list.get_ref().is_empty() {
        return ctx.err(list.span(), "ports", "empty port list (leave ports out to match every port)");
    }
    let mut out = Vec::new();
    for p in list.get_ref() {
        let parsed = match p.get_ref() {
            RawPort::Int(n) => match u16::try_from(*n) {
                Ok(n) => Ok(PortRange { lo: n, hi: n }),
                Err(_) => Err(format!("bad port {n}: ports are 0..=65535")),
            },
            RawPort::Str(s) => s.parse::<PortRange>(),
        };
        match parsed {
            Ok(pr) => out.push(pr),
            Err(m) => return ctx.err(p.span(), "ports", m),
        }
    }
    Ok(out)
}

fn parse_service(ctx: &Ctx<'_>, s: &RawService, ids: &HashMap<String, usize>) -> Result<Service, PolicyError> {
    let name = s.name.get_ref();
    if let Err(m) = valid_k8s_label("service name", name, true) {
        return ctx.err(s.name.span(), "name", m);
    }
    let namespace = match &s.namespace {
        Some(ns) => {
            if let Err(m) = valid_k8s_label("namespace", ns.get_ref(), false) {
                return ctx.err(ns.span(), "namespace", m);
            }
            ns.get_ref().clone()
        }
        None => "default".to_string(),
    };
    if s.external_ips.get_ref().is_empty() {
        return ctx.err(
            s.external_ips.span(),
            "external_ips",
            "a service needs at least one external address (leave out services without externalIPs)",
        );
    }
    let mut external_ips: Vec<IpAddr> = Vec::new();
    for ip in s.external_ips.get_ref() {
        let a: IpAddr = match ip.get_ref().parse() {
            Ok(a) => a,
            Err(_) => {
                let why = if ip.get_ref().contains('/') { " (an address, not a CIDR)" } else { "" };
                return ctx.err(
                    ip.span(),
                    "external_ips",
                    format!("bad address {:?}: not IPv4 or IPv6{why}", ip.get_ref()),
                );
            }
        };
        if let Some(why) = special_ip(a) {
            return ctx.err(
                ip.span(),
                "external_ips",
                format!("address {a} is {why}: not an external address"),
            );
        }
        if external_ips.contains(&a) {
            return ctx.err(ip.span(), "external_ips", format!("duplicate address {a}"));
        }
        external_ips.push(a);
    }
    let ports = match &s.ports {
        None => None,
        Some(list) => Some(parse_ports(ctx, list)?),
    };
    let mut workloads: Vec<String> = Vec::new();
    for w in &s.workloads {
        let id = w.get_ref();
        if !ids.contains_key(id) {
            return ctx.err(w.span(), "workloads", format!("unknown workload {id:?}"));
        }
        if workloads.contains(id) {
            return ctx.err(w.span(), "workloads", format!("duplicate workload {id:?}"));
        }
        workloads.push(id.clone());
    }
    Ok(Service {
        name: name.clone(),
        namespace,
        external_ips,
        ports,
        workloads,
    })
}

/// A workload's `containers`, `pods` and `pod_labels` ([`super::select`]): lists non-empty,
/// globs that compile, pods as `namespace/name`, label keys non-empty.
fn parse_selector(ctx: &Ctx<'_>, w: &RawWorkload) -> Result<super::Selector, PolicyError> {
    let mut s = super::Selector::default();
    let lists = [
        (&w.containers, "containers", &mut s.containers, super::check_container_glob as fn(&str) -> Result<(), String>),
        (&w.pods, "pods", &mut s.pods, super::check_pod_glob),
    ];
    for (list, field, out, check) in lists {
        let Some(list) = list else { continue };
        if list.get_ref().is_empty() {
            return ctx.err(list.span(), field, format!("empty {field} list (leave {field} out to select nothing by it)"));
        }
        for p in list.get_ref() {
            if let Err(m) = check(p.get_ref()) {
                return ctx.err(p.span(), field, m);
            }
            if !out.contains(p.get_ref()) {
                out.push(p.get_ref().clone());
            }
        }
    }
    if let Some(labels) = &w.pod_labels {
        if labels.get_ref().is_empty() {
            return ctx.err(labels.span(), "pod_labels", "empty pod_labels table (leave it out to select nothing by it)");
        }
        for (k, v) in labels.get_ref() {
            if k.is_empty() || k.len() > 317 {
                return ctx.err(v.span(), "pod_labels", format!("bad label key {k:?}: 1 to 317 characters"));
            }
            s.pod_labels.insert(k.clone(), v.get_ref().clone());
        }
    }
    Ok(s)
}

fn parse_mode(ctx: &Ctx<'_>, v: &Spanned<String>, field: &str) -> Result<Mode, PolicyError> {
    match Mode::from_name(v.get_ref()) {
        Some(m) => Ok(m),
        None => ctx.err(
            v.span(),
            field,
            format!("unknown mode {:?} (expected learn, alert or protect)", v.get_ref()),
        ),
    }
}

fn parse_endpoint(
    ctx: &Ctx<'_>,
    v: &Spanned<String>,
    field: &str,
    ids: &HashMap<String, usize>,
) -> Result<Endpoint, PolicyError> {
    let s = v.get_ref().as_str();
    match s {
        "any" => return Ok(Endpoint::Any),
        "external" => return Ok(Endpoint::External),
        _ => {}
    }
    if s.contains('/') || s.parse::<IpAddr>().is_ok() {
        return match s.parse::<Cidr>() {
            Ok(c) => Ok(Endpoint::Cidr(c)),
            Err(m) => ctx.err(v.span(), field, m),
        };
    }
    if ids.contains_key(s) {
        return Ok(Endpoint::Workload(s.to_string()));
    }
    if s.bytes().all(|b| b.is_ascii_hexdigit() || b == b'.' || b == b':') && s.bytes().any(|b| b == b'.' || b == b':') {
        return ctx.err(v.span(), field, format!("bad CIDR {s:?}: not an IPv4 or IPv6 address"));
    }
    ctx.err(
        v.span(),
        field,
        format!("unknown workload {s:?} (expected a workload id, a CIDR, \"any\" or \"external\")"),
    )
}

fn family_of(e: &Endpoint) -> Option<bool> {
    match e {
        Endpoint::Cidr(c) => Some(c.addr.is_ipv4()),
        _ => None,
    }
}

impl Policy {
    /// Reads a policy file. The whole file is validated: TOML syntax, unknown keys, types,
    /// modes, workload ids (unique, not `any`/`external`/an address), addresses and MACs
    /// (each in one workload only; at least one address unless the workload has a selector:
    /// `containers` and `pods` non-empty lists of globs, pods as `namespace/name`,
    /// `pod_labels` a non-empty table), interface names, rule ids (unique, 0..=u32::MAX), `from`/
    /// `to` (known workload, CIDR with host bits zero, `any`, `external`; two CIDRs of
    /// different families never match and are rejected), `ip_proto`, `ports` (non-empty;
    /// `"80"`, `"8000-8100"` or integers; only with tcp, udp or any), `apps` (non-empty, known
    /// app names, not `unknown`), `fqdn`, `action` and `priority` (0..=u32::MAX); services:
    /// `name` (DNS-1035 label) and `namespace` (DNS-1123 label, default `default`) unique
    /// together, `external_ips` (non-empty, unicast addresses, each once in a service; one
    /// address may be claimed by several services), `ports` (as a rule's), `workloads`
    /// (known workload ids, each once).
    ///
    /// Errors: the first problem found, as a [`PolicyError`] naming its line and field.
    pub fn from_toml(text: &str) -> Result<Policy, PolicyError> {
        let raw: RawPolicy = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
        let ctx = Ctx { text };
        let default_mode = match &raw.default_mode {
            Some(m) => parse_mode(&ctx, m, "default_mode")?,
            None => Mode::Learn,
        };

        let mut ids: HashMap<String, usize> = HashMap::new();
        let mut ip_owner: HashMap<IpAddr, String> = HashMap::new();
        let mut mac_owner: HashMap<Mac, String> = HashMap::new();
        let mut workloads = Vec::with_capacity(raw.workload.len());
        for w in &raw.workload {
            let id = w.id.get_ref();
            if let Err(m) = valid_workload_id(id) {
                return ctx.err(w.id.span(), "id", m);
            }
            if ids.insert(id.clone(), workloads.len()).is_some() {
                return ctx.err(w.id.span(), "id", format!("duplicate workload id {id:?}"));
            }
            let select = parse_selector(&ctx, w)?;
            let no_ips: Vec<Spanned<String>> = Vec::new();
            let listed = w.ips.as_ref().map_or(&no_ips, |l| l.get_ref());
            if listed.is_empty() && select.is_empty() {
                let span = w.ips.as_ref().map_or_else(|| w.id.span(), |l| l.span());
                return ctx.err(
                    span,
                    "ips",
                    "a workload needs at least one address, or a selector (containers, pods, pod_labels)",
                );
            }
            let mut ips = Vec::new();
            for ip in listed {
                let a: IpAddr = match ip.get_ref().parse() {
                    Ok(a) => a,
                    Err(_) => {
                        return ctx.err(
                            ip.span(),
                            "ips",
                            format!("bad address {:?}: not IPv4 or IPv6", ip.get_ref()),
                        )
                    }
                };
                if let Some(other) = ip_owner.insert(a, id.clone()) {
                    return ctx.err(
                        ip.span(),
                        "ips",
                        format!("address {a} already belongs to workload {other:?}"),
                    );
                }
                ips.push(a);
            }
            let mut macs = Vec::new();
            for m in &w.macs {
                let mac: Mac = match m.get_ref().parse() {
                    Ok(mac) => mac,
                    Err(e) => return ctx.err(m.span(), "macs", e),
                };
                if let Some(other) = mac_owner.insert(mac, id.clone()) {
                    return ctx.err(
                        m.span(),
                        "macs",
                        format!("MAC {mac} already belongs to workload {other:?}"),
                    );
                }
                macs.push(mac);
            }
            let iface = match &w.iface {
                Some(i) => {
                    if let Err(m) = valid_iface(i.get_ref()) {
                        return ctx.err(i.span(), "iface", m);
                    }
                    Some(i.get_ref().clone())
                }
                None => None,
            };
            let mode = match &w.mode {
                Some(m) => parse_mode(&ctx, m, "mode")?,
                None => default_mode,
            };
            workloads.push(Workload {
                id: id.clone(),
                ips,
                macs,
                iface,
                mode,
                select,
            });
        }

        let mut rule_ids = HashSet::new();
        let mut rules = Vec::with_capacity(raw.rule.len());
        for r in &raw.rule {
            let id = match u32::try_from(*r.id.get_ref()) {
                Ok(id) => id,
                Err(_) => {
                    return ctx.err(
                        r.id.span(),
                        "id",
                        format!("rule id {} is not in 0..=4294967295", r.id.get_ref()),
                    )
                }
            };
            if !rule_ids.insert(id) {
                return ctx.err(r.id.span(), "id", format!("duplicate rule id {id}"));
            }
            let from = parse_endpoint(&ctx, &r.from, "from", &ids)?;
            let to = parse_endpoint(&ctx, &r.to, "to", &ids)?;
            if let (Some(a), Some(b)) = (family_of(&from), family_of(&to)) {
                if a != b {
                    return ctx.err(
                        r.to.span(),
                        "to",
                        "from and to are CIDRs of different address families (never matches)",
                    );
                }
            }
            let ip_proto = match &r.ip_proto {
                Some(p) => match p.get_ref().parse::<IpProto>() {
                    Ok(p) => p,
                    Err(m) => return ctx.err(p.span(), "ip_proto", m),
                },
                None => IpProto::Any,
            };
            let ports = match &r.ports {
                None => None,
                Some(list) => {
                    if !list.get_ref().is_empty() && !matches!(ip_proto, IpProto::Tcp | IpProto::Udp | IpProto::Any) {
                        return ctx.err(
                            list.span(),
                            "ports",
                            format!("ports need ip_proto tcp, udp or any, not {ip_proto}"),
                        );
                    }
                    Some(parse_ports(&ctx, list)?)
                }
            };
            let apps = match &r.apps {
                None => None,
                Some(list) => {
                    if list.get_ref().is_empty() {
                        return ctx.err(
                            list.span(),
                            "apps",
                            "empty app list (leave apps out to match every app)",
                        );
                    }
                    let mut out = Vec::new();
                    for a in list.get_ref() {
                        match app_from_name(a.get_ref()) {
                            Some(app) => {
                                if !out.contains(&app) {
                                    out.push(app)
                                }
                            }
                            None => {
                                let names: Vec<&str> = known_apps().map(|a| a.as_str()).collect();
                                let why = if a.get_ref() == "unknown" {
                                    "\"unknown\" cannot be required (leave apps out to match undetected apps)"
                                        .to_string()
                                } else {
                                    format!("unknown app {:?} (known: {})", a.get_ref(), names.join(", "))
                                };
                                return ctx.err(a.span(), "apps", why);
                            }
                        }
                    }
                    Some(out)
                }
            };
            let fqdn = match &r.fqdn {
                None => None,
                Some(f) => match f.get_ref().parse::<Fqdn>() {
                    Ok(f) => Some(f),
                    Err(m) => return ctx.err(f.span(), "fqdn", m),
                },
            };
            let action = match r.action.get_ref().as_str() {
                "allow" => Action::Allow,
                "deny" => Action::Deny,
                other => {
                    return ctx.err(
                        r.action.span(),
                        "action",
                        format!("unknown action {other:?} (expected allow or deny)"),
                    )
                }
            };
            let priority = match &r.priority {
                None => id,
                Some(p) => match u32::try_from(*p.get_ref()) {
                    Ok(p) => p,
                    Err(_) => {
                        return ctx.err(
                            p.span(),
                            "priority",
                            format!("priority {} is not in 0..=4294967295", p.get_ref()),
                        )
                    }
                },
            };
            rules.push(Rule {
                id,
                from,
                to,
                ip_proto,
                ports,
                apps,
                fqdn,
                action,
                priority,
            });
        }
        let mut services: Vec<Service> = Vec::with_capacity(raw.service.len());
        for s in &raw.service {
            let svc = parse_service(&ctx, s, &ids)?;
            if services.iter().any(|o| o.name == svc.name && o.namespace == svc.namespace) {
                return ctx.err(
                    s.name.span(),
                    "name",
                    format!("duplicate service {}/{}", svc.namespace, svc.name),
                );
            }
            services.push(svc);
        }
        Ok(Policy {
            default_mode,
            workloads,
            rules,
            services,
            bound: Default::default(),
            uplinks: Default::default(),
        })
    }

    /// The policy as a TOML file that [`Policy::from_toml`] reads back to an equal `Policy`
    /// (every workload's mode and every rule's priority written out).
    pub fn to_toml(&self) -> String {
        // Serialization of these plain types cannot fail (no maps with non-string keys, no
        // values after tables that toml cannot reorder).
        toml::to_string(self).unwrap_or_else(|e| format!("# policy could not be written: {e}\n"))
    }
}
