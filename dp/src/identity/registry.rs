//! The discovered workloads: one entry per attachment (its identity and addresses), looked up
//! by address where records are built. Written by the control loop (attach, detach), read by
//! the reporter thread, `list_sessions` and `ListWorkloads`; never on the packet path.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use warden_control::{ConnectionRecord, Identity};

/// One discovered workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    /// The attachment it was found behind (its name).
    pub attachment: String,
    /// Who it is.
    pub identity: Identity,
    /// Its addresses (IPv4-mapped IPv6 addresses stored as IPv4).
    pub ips: Vec<IpAddr>,
}

#[derive(Default)]
struct Inner {
    by_attachment: BTreeMap<String, Arc<Discovered>>,
    /// Address → the entry owning it: the first attachment in name order that lists it.
    by_ip: HashMap<IpAddr, Arc<Discovered>>,
}

/// Discovered workloads by attachment and by address. Shared (`Arc`) between the daemon, the
/// report hub and whoever attaches; every method takes `&self`.
#[derive(Default)]
pub struct Registry {
    inner: RwLock<Inner>,
    /// Bumped on every change ([`Registry::generation`]).
    generation: AtomicU64,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("workloads", &self.list().len()).finish()
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn write(&self, f: impl FnOnce(&mut BTreeMap<String, Arc<Discovered>>)) {
        let mut g = match self.inner.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        f(&mut g.by_attachment);
        let mut by_ip: HashMap<IpAddr, Arc<Discovered>> = HashMap::new();
        for d in g.by_attachment.values() {
            for ip in &d.ips {
                if let Some(owner) = by_ip.get(ip) {
                    tracing::warn!(
                        "identity: {ip} is an address of attachments {:?} and {:?}; records name the first",
                        owner.attachment,
                        d.attachment
                    );
                    continue;
                }
                by_ip.insert(*ip, d.clone());
            }
        }
        g.by_ip = by_ip;
        drop(g);
        self.generation.fetch_add(1, Ordering::Release);
    }

    fn read<T>(&self, f: impl FnOnce(&Inner) -> T) -> T {
        match self.inner.read() {
            Ok(g) => f(&g),
            Err(p) => f(&p.into_inner()),
        }
    }

    /// Sets (adds or replaces) what was discovered behind `attachment`: its identity and
    /// addresses (duplicates dropped).
    pub fn set(&self, attachment: &str, identity: Identity, ips: Vec<IpAddr>) {
        let mut uniq: Vec<IpAddr> = Vec::with_capacity(ips.len());
        for ip in ips.into_iter().map(canonical) {
            if !uniq.contains(&ip) {
                uniq.push(ip);
            }
        }
        let d = Arc::new(Discovered { attachment: attachment.to_string(), identity, ips: uniq });
        self.write(|m| {
            m.insert(attachment.to_string(), d);
        });
    }

    /// Forgets `attachment`; false when it was not there.
    pub fn remove(&self, attachment: &str) -> bool {
        let mut had = false;
        if self.read(|i| i.by_attachment.contains_key(attachment)) {
            self.write(|m| had = m.remove(attachment).is_some());
        }
        had
    }

    /// The identity of the workload that owns `ip`.
    pub fn lookup(&self, ip: IpAddr) -> Option<Identity> {
        self.read(|i| i.by_ip.get(&canonical(ip)).map(|d| d.identity.clone()))
    }

    /// Every discovered workload, in attachment name order.
    pub fn list(&self) -> Vec<Discovered> {
        self.read(|i| i.by_attachment.values().map(|d| (**d).clone()).collect())
    }

    /// True when nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.read(|i| i.by_attachment.is_empty())
    }

    /// A number that changes whenever the registry does (starts at 0).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Sets `r.client_identity` / `r.server_identity` from the ends' addresses (`client`,
    /// `server`), leaving fields already set alone. One read lock; none when empty.
    pub fn annotate_ends(&self, r: &mut ConnectionRecord, client: IpAddr, server: IpAddr) {
        self.read(|i| {
            if i.by_ip.is_empty() {
                return;
            }
            if r.client_identity.is_none() {
                r.client_identity = i.by_ip.get(&canonical(client)).map(|d| d.identity.clone());
            }
            if r.server_identity.is_none() {
                r.server_identity = i.by_ip.get(&canonical(server)).map(|d| d.identity.clone());
            }
        });
    }

    /// [`Self::annotate_ends`] with the record's own address text (records whose session
    /// snapshot is not at hand); addresses that do not parse are skipped.
    pub fn annotate(&self, r: &mut ConnectionRecord) {
        if self.is_empty() {
            return;
        }
        let unspecified = IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED);
        let c = r.client_ip.parse().unwrap_or(unspecified);
        let s = r.server_ip.parse().unwrap_or(unspecified);
        self.annotate_ends(r, c, s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn who(name: &str) -> Identity {
        Identity { container_name: Some(name.into()), runtime: Some("podman".into()), ..Identity::default() }
    }

    #[test]
    fn set_lookup_replace_remove() {
        let r = Registry::new();
        let g0 = r.generation();
        r.set("web", who("web"), vec![ip("198.18.1.2"), ip("2001:db8::2"), ip("198.18.1.2")]);
        assert!(r.generation() > g0);
        assert_eq!(r.list()[0].ips, vec![ip("198.18.1.2"), ip("2001:db8::2")], "duplicates dropped");
        assert_eq!(r.lookup(ip("198.18.1.2")), Some(who("web")));
        assert_eq!(r.lookup(ip("::ffff:198.18.1.2")), Some(who("web")), "mapped address");
        assert_eq!(r.lookup(ip("2001:db8::2")), Some(who("web")));
        assert_eq!(r.lookup(ip("198.18.1.3")), None);
        // Replacing an attachment drops its old addresses.
        r.set("web", who("web2"), vec![ip("198.18.1.3")]);
        assert_eq!(r.lookup(ip("198.18.1.2")), None);
        assert_eq!(r.lookup(ip("198.18.1.3")), Some(who("web2")));
        r.set("db", who("db"), vec![ip("198.18.1.9")]);
        assert_eq!(r.list().iter().map(|d| d.attachment.as_str()).collect::<Vec<_>>(), ["db", "web"]);
        let g = r.generation();
        assert!(r.remove("web"));
        assert!(!r.remove("web"));
        assert_eq!(r.generation(), g + 1, "a remove of nothing changes nothing");
        assert_eq!(r.lookup(ip("198.18.1.3")), None);
        assert_eq!(r.lookup(ip("198.18.1.9")), Some(who("db")));
    }

    #[test]
    fn shared_address_goes_to_the_first_attachment() {
        let r = Registry::new();
        r.set("b", who("b"), vec![ip("198.18.1.2")]);
        r.set("a", who("a"), vec![ip("198.18.1.2")]);
        assert_eq!(r.lookup(ip("198.18.1.2")), Some(who("a")));
        r.remove("a");
        assert_eq!(r.lookup(ip("198.18.1.2")), Some(who("b")));
    }

    #[test]
    fn records_gain_identities() {
        let r = Registry::new();
        let mut rec = ConnectionRecord { client_ip: "198.18.1.2".into(), server_ip: "198.18.1.9".into(), ..Default::default() };
        r.annotate(&mut rec);
        assert_eq!((rec.client_identity.as_ref(), rec.server_identity.as_ref()), (None, None));
        r.set("web", who("web"), vec![ip("198.18.1.2")]);
        r.annotate(&mut rec);
        assert_eq!(rec.client_identity, Some(who("web")));
        assert_eq!(rec.server_identity, None);
        r.set("db", who("db"), vec![ip("198.18.1.9")]);
        r.annotate(&mut rec);
        assert_eq!(rec.server_identity, Some(who("db")));
        let mut bad = ConnectionRecord { client_ip: "nonsense".into(), ..Default::default() };
        r.annotate(&mut bad);
        assert_eq!(bad.client_identity, None);
    }
}
