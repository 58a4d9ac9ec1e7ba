//! Policy workloads selected by identity (issue 12): `[[workload]]` with `containers`
//! (container name globs), `pods` (`namespace/name` globs) and `pod_labels` (every label
//! equal) instead of, or besides, `ips`. The daemon fills such a workload's addresses from
//! the discovered workloads ([`crate::identity::Registry`]) whenever either changes
//! ([`Policy::with_discovered`]) and publishes the result as any policy change; the source
//! policy (what `policy show` prints and runtime edits change) keeps only what was written.
//!
//! Matching: a workload selects an identity when each selector it has matches (`containers`
//! and `pods` and `pod_labels`); within a list one pattern is enough. Globs are
//! `glob::Pattern`s (`*`, `?`, `[...]`); in `pods` a `*` does not cross the `/` between
//! namespace and name. A discovered workload belongs to the first selecting workload in file
//! order; an address already written in some workload's `ips` stays that workload's.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Serialize;
use warden_control::Identity;

use super::{Policy, Workload};
use crate::identity::Discovered;

/// Which discovered workloads a policy workload selects (all empty: none, an address-only
/// workload).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Selector {
    /// Container name globs (`web-*`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<String>,
    /// Pod `namespace/name` globs (`shop/cart-*`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pods: Vec<String>,
    /// Pod labels that must all be present with these values.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_labels: BTreeMap<String, String>,
}

const PATH_GLOB: glob::MatchOptions =
    glob::MatchOptions { case_sensitive: true, require_literal_separator: true, require_literal_leading_dot: false };

/// Checks one `containers` pattern.
///
/// # Errors
/// Why it is not a glob (the `glob` crate's message), or empty.
pub fn check_container_glob(p: &str) -> Result<(), String> {
    if p.is_empty() {
        return Err("empty container name pattern".into());
    }
    glob::Pattern::new(p).map(|_| ()).map_err(|e| format!("bad pattern {p:?}: {e}"))
}

/// Checks one `pods` pattern: `namespace/name`, each part a non-empty glob.
///
/// # Errors
/// No `/`, more than one, an empty part, or a bad glob.
pub fn check_pod_glob(p: &str) -> Result<(), String> {
    match p.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            glob::Pattern::new(p).map(|_| ()).map_err(|e| format!("bad pattern {p:?}: {e}"))
        }
        _ => Err(format!("bad pod pattern {p:?}: namespace/name, as \"shop/cart-*\"")),
    }
}

fn glob_matches(pattern: &str, text: &str, opts: glob::MatchOptions) -> bool {
    glob::Pattern::new(pattern).is_ok_and(|p| p.matches_with(text, opts))
}

impl Selector {
    /// True when it selects nothing (no selector written).
    pub fn is_empty(&self) -> bool {
        self.containers.is_empty() && self.pods.is_empty() && self.pod_labels.is_empty()
    }

    /// True when `id` is selected (module docs). An empty selector selects nothing.
    pub fn matches(&self, id: &Identity) -> bool {
        if self.is_empty() {
            return false;
        }
        let containers = self.containers.is_empty()
            || id.container_name.as_deref().is_some_and(|n| {
                self.containers.iter().any(|p| glob_matches(p, n, glob::MatchOptions::new()))
            });
        let pods = self.pods.is_empty()
            || match (&id.pod_namespace, &id.pod_name) {
                (Some(ns), Some(name)) => {
                    let full = format!("{ns}/{name}");
                    self.pods.iter().any(|p| glob_matches(p, &full, PATH_GLOB))
                }
                _ => false,
            };
        let labels = self.pod_labels.iter().all(|(k, v)| id.pod_labels.get(k) == Some(v));
        containers && pods && labels
    }
}

impl Policy {
    /// The first workload (file order) whose selector selects `id`.
    pub fn selecting(&self, id: &Identity) -> Option<&Workload> {
        self.workloads.iter().find(|w| w.select.matches(id))
    }

    /// This policy with the addresses of the `discovered` workloads added to the workloads
    /// that select them (module docs), and one line per address left out because another
    /// workload lists it. Workloads without a selector are unchanged.
    pub fn with_discovered(&self, discovered: &[Discovered]) -> (Policy, Vec<String>) {
        let mut p = self.clone();
        let mut notes = Vec::new();
        if !p.workloads.iter().any(|w| !w.select.is_empty()) {
            return (p, notes);
        }
        let mut owner: std::collections::HashMap<IpAddr, usize> = std::collections::HashMap::new();
        for (i, w) in p.workloads.iter().enumerate() {
            for ip in &w.ips {
                owner.insert(*ip, i);
            }
        }
        for d in discovered {
            let Some(i) = p.workloads.iter().position(|w| w.select.matches(&d.identity)) else { continue };
            for ip in &d.ips {
                match owner.get(ip) {
                    Some(&o) if o == i => {}
                    Some(&o) => notes.push(format!(
                        "{ip} of {:?} (selected by workload {:?}) stays workload {:?}'s",
                        d.attachment, p.workloads[i].id, p.workloads[o].id
                    )),
                    None => {
                        owner.insert(*ip, i);
                        p.workloads[i].ips.push(*ip);
                    }
                }
            }
        }
        (p, notes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::CompiledPolicy;

    fn who(container: &str, pod: Option<(&str, &str)>, labels: &[(&str, &str)]) -> Identity {
        Identity {
            container_name: Some(container.into()),
            pod_namespace: pod.map(|p| p.0.into()),
            pod_name: pod.map(|p| p.1.into()),
            pod_labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Identity::default()
        }
    }

    fn found(attachment: &str, id: Identity, ips: &[&str]) -> Discovered {
        Discovered { attachment: attachment.into(), identity: id, ips: ips.iter().map(|s| s.parse().unwrap()).collect() }
    }

    const FILE: &str = r#"
default_mode = "protect"

[[workload]]
id = "web"
containers = ["web-*", "frontend"]

[[workload]]
id = "cart"
pods = ["shop/cart-*"]
pod_labels = { app = "cart" }
mode = "alert"

[[workload]]
id = "db"
ips = ["198.18.5.9"]
containers = ["db"]

[[workload]]
id = "static"
ips = ["198.18.5.1"]

[[rule]]
id = 1
from = "web"
to = "cart"
ports = [8080]
action = "allow"
"#;

    #[test]
    fn selectors_match() {
        let p = Policy::from_toml(FILE).unwrap();
        let web = &p.workloads[0].select;
        assert!(web.matches(&who("web-1", None, &[])));
        assert!(web.matches(&who("frontend", None, &[])));
        assert!(!web.matches(&who("frontend-2", None, &[])));
        assert!(!web.matches(&Identity::default()), "no name, no match");
        let cart = &p.workloads[1].select;
        assert!(cart.matches(&who("c", Some(("shop", "cart-7d9f8")), &[("app", "cart"), ("tier", "x")])));
        assert!(!cart.matches(&who("c", Some(("shop", "cart-7d9f8")), &[("app", "web")])), "label differs");
        assert!(!cart.matches(&who("c", Some(("shop", "cart-7d9f8")), &[])), "label missing");
        assert!(!cart.matches(&who("c", Some(("other", "cart-1")), &[("app", "cart")])), "namespace");
        // `*` does not cross the namespace separator.
        let any_ns = Selector { pods: vec!["*".into()], ..Selector::default() };
        assert!(!any_ns.matches(&who("c", Some(("shop", "cart")), &[])));
        let star = Selector { pods: vec!["*/*".into()], ..Selector::default() };
        assert!(star.matches(&who("c", Some(("shop", "cart")), &[])));
        assert!(!Selector::default().matches(&who("web-1", None, &[])));
        assert_eq!(p.selecting(&who("web-1", None, &[])).map(|w| w.id.as_str()), Some("web"));
        assert_eq!(p.selecting(&who("api", None, &[])), None);
    }

    #[test]
    fn fill_from_discovered() {
        let p = Policy::from_toml(FILE).unwrap();
        assert!(p.workloads[0].ips.is_empty());
        let d = vec![
            found("c1", who("web-1", None, &[]), &["198.18.5.2", "2001:db8::2"]),
            found("c2", who("web-2", None, &[]), &["198.18.5.3"]),
            found("p1", who("cart", Some(("shop", "cart-1")), &[("app", "cart")]), &["198.18.5.4"]),
            found("x", who("api", None, &[]), &["198.18.5.5"]),
            // Claims an address written in "static": it stays there.
            found("c3", who("frontend", None, &[]), &["198.18.5.1", "198.18.5.6"]),
            // Selected by "db", which also has a written address.
            found("d", who("db", None, &[]), &["198.18.5.10"]),
        ];
        let (f, notes) = p.with_discovered(&d);
        let ips = |id: &str| -> Vec<String> {
            f.workloads.iter().find(|w| w.id == id).unwrap().ips.iter().map(ToString::to_string).collect()
        };
        assert_eq!(ips("web"), ["198.18.5.2", "2001:db8::2", "198.18.5.3", "198.18.5.6"]);
        assert_eq!(ips("cart"), ["198.18.5.4"]);
        assert_eq!(ips("db"), ["198.18.5.9", "198.18.5.10"]);
        assert_eq!(ips("static"), ["198.18.5.1"]);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("198.18.5.1") && notes[0].contains("static"), "{notes:?}");
        // The filled policy compiles and decides by the discovered addresses.
        let c = CompiledPolicy::compile(&f).unwrap();
        let w = |ip: &str| c.workload_of(ip.parse().unwrap()).map(|i| c.workload_id(i).to_string());
        assert_eq!(w("198.18.5.3").as_deref(), Some("web"));
        assert_eq!(w("198.18.5.4").as_deref(), Some("cart"));
        assert_eq!(w("198.18.5.5"), None);
        // The source is unchanged, and nothing discovered leaves selected workloads empty
        // (they match no address, and compile).
        assert!(p.workloads[0].ips.is_empty());
        let (empty, _) = p.with_discovered(&[]);
        assert_eq!(empty, p);
        CompiledPolicy::compile(&empty).unwrap();
    }

    #[test]
    fn selectors_round_trip_through_toml() {
        let p = Policy::from_toml(FILE).unwrap();
        let again = Policy::from_toml(&p.to_toml()).unwrap();
        assert_eq!(again, p);
        assert_eq!(again.workloads[1].select.pod_labels.get("app").map(String::as_str), Some("cart"));
    }

    #[test]
    fn errors_name_line_and_field() {
        let cases: &[(&str, usize, &str, &str)] = &[
            ("[[workload]]\nid = \"a\"\n", 2, "ips", "at least one address"),
            ("[[workload]]\nid = \"a\"\nips = []\n", 3, "ips", "at least one address"),
            ("[[workload]]\nid = \"a\"\ncontainers = []\n", 3, "containers", "empty"),
            ("[[workload]]\nid = \"a\"\ncontainers = [\"web-[\"]\n", 3, "containers", "bad pattern"),
            ("[[workload]]\nid = \"a\"\ncontainers = [\"\"]\n", 3, "containers", "empty"),
            ("[[workload]]\nid = \"a\"\npods = [\"cart-*\"]\n", 3, "pods", "namespace/name"),
            ("[[workload]]\nid = \"a\"\npods = [\"a/b/c\"]\n", 3, "pods", "namespace/name"),
            ("[[workload]]\nid = \"a\"\npod_labels = {}\n", 3, "pod_labels", "empty"),
            ("[[workload]]\nid = \"a\"\npod_labels = { \"\" = \"x\" }\n", 3, "pod_labels", "label"),
            ("[[workload]]\nid = \"a\"\ncontainers = \"web\"\n", 3, "containers", ""),
        ];
        for (text, line, field, what) in cases {
            let e = Policy::from_toml(text).expect_err(text);
            assert_eq!((e.line, e.field.as_str()), (*line, *field), "{text}: {e}");
            assert!(e.message.contains(what), "{text}: {e}");
        }
    }
}
