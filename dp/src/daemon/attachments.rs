//! The daemon's side of attachments ([`crate::attach`]): `attach`, `detach`, the policy
//! workload of each attachment, adoption at start and the once-a-second check of interfaces
//! that come and go. Runs on the control loop only.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use warden_control::{AttachInfo, AttachSpec};

use super::{edit_policy, array, Daemon};
use crate::attach::{self, plumb, resolve::Target, state::{self, Phase, State}};
use crate::config::InlinePair;
use crate::policy::{BoundAddr, Policy};

impl Daemon {
    fn attach_dir(&self) -> PathBuf {
        PathBuf::from(&self.cfg.attach.state_dir)
    }

    /// The mode of a new attachment: the request's, else `[attach] default_mode`, else the
    /// policy's default.
    fn attach_mode(&self, spec: &AttachSpec) -> Result<String, String> {
        let m = spec
            .mode
            .clone()
            .or_else(|| self.cfg.attach.default_mode.clone())
            .unwrap_or_else(|| self.policy.default_mode.as_str().to_string());
        if crate::policy::Mode::from_name(&m).is_none() {
            return Err(format!("mode {m:?} is not learn, alert or protect"));
        }
        Ok(m)
    }

    /// `attach`: resolves the target, takes its bridge port over, runs the inline pair and
    /// publishes its workload; answers once every worker enforces it.
    pub(super) fn attach(&mut self, spec: AttachSpec) -> Result<AttachInfo, String> {
        if spec.monitor {
            // Receive-only ([`crate::monitor`]): an interface as named, or the host-side
            // interface of a container, namespace or tap; the plumbing is not changed.
            if spec.kind.as_deref() == Some("iface") || (spec.kind.is_none() && super::ifindex_of(&spec.target).is_ok()) {
                let target = spec.target.clone();
                return self.start_monitor(&target, &spec);
            }
            let t = crate::attach::resolve::resolve(&spec, &self.cfg.attach.runtimes)?;
            let mut spec = spec;
            spec.name = Some(spec.name.clone().unwrap_or_else(|| t.default_name.clone()));
            return self.start_monitor(&t.host.ifname, &spec);
        }
        let t = crate::attach::resolve::resolve(&spec, &self.cfg.attach.runtimes)?;
        let name = spec.name.clone().unwrap_or_else(|| t.default_name.clone());
        self.attach_target(t, spec, name)
    }

    fn attach_target(&mut self, t: Target, spec: AttachSpec, name: String) -> Result<AttachInfo, String> {
        if !state::valid_name(&name) {
            return Err(format!("{name:?} cannot name an attachment (1 to 64 of A-Z a-z 0-9 . _ -): give one with name"));
        }
        if let Some(a) = self.attachments.iter().find(|a| a.name == name || (a.phase != Phase::Gone && a.host == t.host.ifname)) {
            return Err(format!("{} is already attached as {} (host interface {})", spec.target, a.name, a.host));
        }
        if self.pairs.iter().any(|p| p.a.name == t.host.ifname || p.b.name == t.host.ifname) {
            return Err(format!("{} is already in an inline pair", t.host.ifname));
        }
        let mode = self.attach_mode(&spec)?;
        let mut st = attach::plan(&t, &spec, &name, &mode)?;
        st.identity = discovered_identity(&st);
        if !st.ips.is_empty() {
            match attach::workload_for(&self.policy, &st) {
                Some((id, m)) => {
                    st.workload = Some(id);
                    st.mode = m;
                }
                None => {
                    if self.policy.workloads.iter().any(|w| w.id == name) {
                        return Err(format!("the policy has a workload {name:?} that owns none of {:?}: give the attachment another name", st.ips));
                    }
                    st.workload = Some(name.clone());
                    st.implicit = true;
                }
            }
        }
        let dir = self.attach_dir();
        plumb::take_over(&mut st, &|s| state::save(&dir, s))?;
        let pair = InlinePair { a: st.host.clone(), b: st.near.clone(), fail_mode: self.cfg.attach.fail_mode };
        if let Err(e) = self.add_pair(&pair) {
            return Err(self.undo_attach(&st, e));
        }
        // The workload is enforced by every worker before the bridge side comes up (and before
        // the reply): the first frame through the attachment is inspected under it.
        self.attachments.push(st.clone());
        self.register_identity(&st);
        let r = self.install(self.policy.clone(), &format!("attachment {name}"));
        if !r.ok {
            self.attachments.pop();
            self.identities.remove(&st.name);
            let _ = self.remove_pair(&st.host, Some(&st.near));
            return Err(self.undo_attach(&st, r.error.unwrap_or_default()));
        }
        if let Err(e) = plumb::connect(&st) {
            self.attachments.pop();
            self.identities.remove(&st.name);
            let _ = self.remove_pair(&st.host, Some(&st.near));
            let e = self.undo_attach(&st, e);
            let _ = self.install(self.policy.clone(), "attachment undone");
            return Err(e);
        }
        st.phase = Phase::Attached;
        if let Err(e) = state::save(&dir, &st) {
            tracing::warn!("attachment {name}: {e}");
        }
        if let Some(a) = self.attachments.iter_mut().find(|a| a.name == name) {
            *a = st.clone();
        }
        tracing::info!(
            "attached {name} ({} {}): {} off bridge {}, {} in its place, inline pair {}:{}, mode {}, workload {:?}",
            st.kind,
            st.key,
            st.host,
            st.bridge,
            st.far,
            st.host,
            st.near,
            st.mode,
            st.workload
        );
        Ok(attach::info(&st))
    }

    /// Puts the attachment's identity and addresses in the registry ([`crate::identity`]):
    /// records and events name it from then on, and the workloads selecting it take its
    /// addresses at the next publish (the caller's).
    fn register_identity(&self, st: &State) {
        let ips = st.ips.iter().filter_map(|a| a.split('/').next().and_then(|a| a.parse().ok())).collect();
        self.identities.set(&st.name, st.identity.clone(), ips);
    }

    /// The control loop's watch of `[attach] watch_bridges`: every veth or tap port of a
    /// watched bridge that is not attached (nor Warden's own, in an attachment's place) is
    /// attached with the default mode, those there at start and those that join later. A port
    /// whose attach fails, or that was detached on request, is not taken again while it
    /// exists (by ifindex).
    pub(super) fn watch_bridges(&mut self) {
        if self.cfg.attach.watch_bridges.is_empty() {
            return;
        }
        let links = match crate::attach::link::links(&crate::attach::link::Ns::Own) {
            Ok(l) => l,
            Err(e) => {
                crate::warn_limited!("attach watch: {e}");
                return;
            }
        };
        self.watch_refused.retain(|i| links.iter().any(|l| l.ifindex == *i));
        for l in links {
            let watched = l.master.as_ref().is_some_and(|m| self.cfg.attach.watch_bridges.contains(m));
            let ours = self.attachments.iter().any(|a| a.far == l.ifname || a.host == l.ifname || a.near == l.ifname);
            if !watched || ours || self.watch_refused.contains(&l.ifindex) {
                continue;
            }
            let kind = match l.kind.as_deref() {
                Some("tun") if l.tun_type.as_deref() == Some("tap") => "tap",
                Some("veth") => "iface",
                _ => continue,
            };
            let spec = AttachSpec { target: l.ifname.clone(), kind: Some(kind.into()), ..Default::default() };
            match self.attach(spec) {
                Ok(i) => tracing::info!(
                    "attach watch: new port {} of {} attached as {} (mode {})",
                    l.ifname,
                    l.master.as_deref().unwrap_or_default(),
                    i.name,
                    i.mode
                ),
                Err(e) => {
                    tracing::warn!("attach watch: new port {} not attached: {e}", l.ifname);
                    self.watch_refused.insert(l.ifindex);
                }
            }
        }
    }

    /// Restores the plumbing of a failed attach and removes its state; the error to return.
    fn undo_attach(&self, st: &State, e: String) -> String {
        let errs = plumb::restore(st, false);
        state::remove(&self.attach_dir(), &st.name);
        if errs.is_empty() {
            e
        } else {
            format!("{e} (undoing: {})", errs.join("; "))
        }
    }

    /// `detach`: ends the inline pair (final records for its sessions), restores the original
    /// plumbing and settings, removes the implicit workload.
    pub(super) fn detach(&mut self, name: &str) -> Result<String, String> {
        let pos = self
            .attachments
            .iter()
            .position(|a| a.name == name)
            .or_else(|| self.attachments.iter().position(|a| a.spec.target == name || a.key == name))
            .ok_or_else(|| format!("nothing is attached as {name:?}"))?;
        let st = self.attachments.remove(pos);
        if st.phase != Phase::Gone && self.pairs.iter().any(|p| p.a.name == st.host && p.b.name == st.near) {
            let _ = self.remove_pair(&st.host, Some(&st.near));
        }
        let errs = if st.phase == Phase::Gone { plumb::remove_own(&st) } else { plumb::restore(&st, false) };
        // Detached on request: a watched bridge does not take it back while it exists.
        self.watch_refused.insert(st.host_ifindex);
        self.identities.remove(&st.name);
        if st.implicit {
            let p = self.with_attachments(self.policy.clone(), Some(&st.name))?;
            let _ = self.install_exact(p, &format!("attachment {} detached", st.name));
        } else {
            let _ = self.identities_changed();
        }
        state::remove(&self.attach_dir(), &st.name);
        let msg = if errs.is_empty() {
            format!("{} detached: {} back on {}, {} removed", st.name, st.host, st.bridge, st.far)
        } else {
            format!("{} detached with errors: {}", st.name, errs.join("; "))
        };
        tracing::info!("{msg}");
        Ok(msg)
    }

    /// `p` with the implicit workload of every live attachment (id = the attachment's name,
    /// its addresses, `iface` its host interface, its mode), and without those of gone ones
    /// and of `dropping`. An attachment whose addresses a workload of `p` owns belongs to that
    /// workload instead (its id and mode are taken).
    pub(super) fn with_attachments(&mut self, p: Policy, dropping: Option<&str>) -> Result<Policy, String> {
        if self.attachments.is_empty() && dropping.is_none() {
            return Ok(p);
        }
        let ours: Vec<String> = self
            .attachments
            .iter()
            .filter(|a| a.implicit)
            .map(|a| a.name.clone())
            .chain(dropping.map(str::to_string))
            .collect();
        // A mode set on an implicit workload (`wardenctl workload mode NAME protect`) is the
        // attachment's mode from then on.
        for a in self.attachments.iter_mut().filter(|a| a.implicit && Some(a.name.as_str()) != dropping) {
            if let Some(w) = p.workloads.iter().find(|w| w.id == a.name) {
                a.mode = w.mode.as_str().to_string();
            }
        }
        let base = edit_policy(&p, |t| {
            array(t, "workload").retain(|w| !w.get("id").and_then(|v| v.as_str()).is_some_and(|id| ours.iter().any(|o| o == id)));
            Ok(())
        })?;
        let mut add = Vec::new();
        for a in self.attachments.iter_mut().filter(|a| a.phase != Phase::Gone && !a.ips.is_empty()) {
            if a.implicit || a.workload.is_some() {
                match attach::workload_for(&base, a) {
                    Some((id, m)) => {
                        a.workload = Some(id);
                        a.mode = m;
                        a.implicit = false;
                    }
                    None => {
                        a.workload = Some(a.name.clone());
                        a.implicit = true;
                        add.push((a.name.clone(), a.ips.clone(), a.host.clone(), a.mode.clone()));
                    }
                }
            }
        }
        edit_policy(&base, |t| {
            for (id, ips, iface, mode) in &add {
                let mut w = toml::Table::new();
                w.insert("id".into(), id.clone().into());
                w.insert("ips".into(), toml::Value::Array(ips.iter().map(|s| s.clone().into()).collect()));
                w.insert("iface".into(), iface.clone().into());
                w.insert("mode".into(), mode.clone().into());
                array(t, "workload").push(toml::Value::Table(w));
            }
            Ok(())
        })
    }

    /// Every live attachment's addresses with where they may be sent from, and every
    /// attachment's near end with its bridge ([`Policy::bound`], [`Policy::uplinks`]): whatever
    /// workload owns them, an attachment's addresses come from its own side, or over its
    /// bridge from its MAC. An address two attachments report stays the first's (logged).
    pub(super) fn attachment_bindings(&self) -> (BTreeMap<IpAddr, BoundAddr>, BTreeMap<String, String>) {
        let mut bound = BTreeMap::new();
        let mut uplinks = BTreeMap::new();
        for a in self.attachments.iter().filter(|a| a.phase != Phase::Gone) {
            uplinks.insert(a.near.clone(), a.bridge.clone());
            let mac = a.inner_mac.as_deref().and_then(|m| m.parse::<crate::policy::Mac>().ok()).map(|m| m.0);
            for ip in a.ips.iter().filter_map(|s| s.parse::<IpAddr>().ok()) {
                match bound.entry(ip) {
                    Entry::Vacant(e) => {
                        e.insert(BoundAddr { iface: a.host.clone(), bridge: a.bridge.clone(), mac });
                    }
                    Entry::Occupied(e) if e.get().iface != a.host => {
                        crate::warn_limited!("{ip} is an address of two attachments: bound to {}, not {}", e.get().iface, a.host);
                    }
                    Entry::Occupied(_) => {}
                }
            }
        }
        (bound, uplinks)
    }

    /// Writes every attachment's state again (after a policy change moved a mode or
    /// workload), so a restarted Warden adopts them as they are now.
    pub(super) fn save_attachments(&self) {
        let dir = self.attach_dir();
        for a in &self.attachments {
            if let Err(e) = state::save(&dir, a) {
                crate::warn_limited!("attachment {}: {e}", a.name);
            }
        }
    }

    /// At start: every attachment a previous Warden left under the state directory is adopted
    /// (attached again: its inline pair and workload) or restored (`[attach] on_start`).
    pub(super) fn adopt_attachments(&mut self) {
        let dir = self.attach_dir();
        let (found, bad) = state::load_all(&dir);
        for b in bad {
            tracing::warn!("attach state not read: {b}");
        }
        let adopt = self.cfg.attach.on_start == "adopt";
        for st in found {
            let name = st.name.clone();
            match st.phase {
                Phase::Gone if adopt => {
                    tracing::info!("attachment {name}: waiting for its workload to return");
                    self.attachments.push(st);
                }
                Phase::Attached if adopt && crate::attach::link::exists(&st.host, st.host_ifindex) => {
                    match self.adopt(st.clone()) {
                        Ok(()) => tracing::info!("attachment {name} adopted ({} inline with {})", st.host, st.near),
                        Err(e) => {
                            let errs = plumb::restore(&st, true);
                            state::remove(&dir, &name);
                            tracing::warn!("attachment {name} not adopted, original plumbing restored: {e} {}", errs.join("; "));
                        }
                    }
                }
                Phase::Attached if adopt => {
                    let errs = plumb::remove_own(&st);
                    let mut st = st;
                    st.phase = Phase::Gone;
                    let _ = state::save(&dir, &st);
                    tracing::info!("attachment {name}: {} went away while Warden was down; waiting for it to return {}", st.host, errs.join("; "));
                    self.attachments.push(st);
                }
                _ => {
                    // Half-made, unwanted, or its interface gone: put back what exists.
                    let errs = plumb::restore(&st, true);
                    state::remove(&dir, &name);
                    tracing::info!("attachment {name} ({:?}) restored {}", st.phase, errs.join("; "));
                    if adopt && st.phase == Phase::Starting {
                        let spec = st.spec.clone();
                        if let Err(e) = crate::attach::resolve::resolve(&spec, &self.cfg.attach.runtimes)
                            .and_then(|t| self.attach_target(t, spec, name.clone()))
                        {
                            tracing::warn!("attachment {name} not made again: {e}");
                        }
                    }
                }
            }
        }
    }

    /// Runs the inline pair of an attachment whose plumbing is in place (left by a killed
    /// Warden) and publishes its workload.
    fn adopt(&mut self, st: State) -> Result<(), String> {
        if nix::net::if_::if_nametoindex(st.near.as_str()).is_err() {
            return Err(format!("{} is gone", st.near));
        }
        let pair = InlinePair { a: st.host.clone(), b: st.near.clone(), fail_mode: self.cfg.attach.fail_mode };
        self.add_pair(&pair)?;
        self.attachments.push(st.clone());
        self.register_identity(&st);
        let r = self.install(self.policy.clone(), &format!("attachment {} adopted", st.name));
        if !r.ok {
            self.attachments.pop();
            self.identities.remove(&st.name);
            let _ = self.remove_pair(&st.host, Some(&st.near));
            return Err(r.error.unwrap_or_default());
        }
        plumb::connect(&st)
    }

    /// The control loop's check: detaches attachments whose interface went away and attaches
    /// again those whose workload returned ([`crate::attach::watch`]).
    pub(super) fn check_attachments(&mut self) {
        let dir = self.attach_dir();
        let gone: Vec<usize> = (0..self.attachments.len()).filter(|&i| attach::watch::gone(&self.attachments[i])).collect();
        for i in gone {
            let st = self.attachments[i].clone();
            let _ = self.remove_pair(&st.host, Some(&st.near));
            let errs = plumb::remove_own(&st);
            self.attachments[i].phase = Phase::Gone;
            if let Err(e) = state::save(&dir, &self.attachments[i]) {
                tracing::warn!("attachment {}: {e}", st.name);
            }
            self.identities.remove(&st.name);
            if st.implicit {
                match self.with_attachments(self.policy.clone(), Some(&st.name)) {
                    Ok(p) => {
                        let _ = self.install_exact(p, &format!("attachment {} gone", st.name));
                    }
                    Err(e) => tracing::warn!("attachment {}: workload not removed: {e}", st.name),
                }
            } else {
                let _ = self.identities_changed();
            }
            tracing::info!("attachment {}: {} went away; detached, waiting for it to return {}", st.name, st.host, errs.join("; "));
        }
        let back: Vec<(usize, Target)> = self
            .attachments
            .iter()
            .enumerate()
            .filter_map(|(i, a)| attach::watch::returned(a, &self.cfg.attach.runtimes).map(|t| (i, t)))
            .collect();
        for (i, t) in back.into_iter().rev() {
            let old = self.attachments.remove(i);
            match self.attach_target(t, old.spec.clone(), old.name.clone()) {
                Ok(info) => tracing::info!("attachment {} returned: attached again on {}", info.name, info.host_iface),
                Err(e) => {
                    crate::warn_limited!("attachment {} returned but was not attached again: {e}", old.name);
                    let _ = state::save(&dir, &old);
                    self.attachments.insert(i, old);
                }
            }
        }
    }
}

/// Who is behind attachment `st`: what discovery finds (its namespace → processes → cgroup →
/// runtime metadata; libvirt's domain XML or the holder's cgroup for a tap), completed with what
/// the runtime said when the target was resolved, and the host interface.
fn discovered_identity(st: &State) -> warden_control::Identity {
    let mut id = match (&st.netns, st.kind.as_str()) {
        (Some(ns), _) => crate::identity::discover_netns(ns),
        (None, "tap") => crate::identity::discover_tap(&st.host),
        _ => warden_control::Identity::default(),
    };
    let r = &st.identity;
    for (mine, theirs) in [
        (&mut id.container_id, &r.container_id),
        (&mut id.container_name, &r.container_name),
        (&mut id.runtime, &r.runtime),
        (&mut id.pod_name, &r.pod_name),
        (&mut id.pod_namespace, &r.pod_namespace),
        (&mut id.pod_uid, &r.pod_uid),
        (&mut id.vm_name, &r.vm_name),
    ] {
        if mine.is_none() {
            mine.clone_from(theirs);
        }
    }
    if id.pod_labels.is_empty() {
        id.pod_labels.clone_from(&r.pod_labels);
    }
    id.host_iface = Some(st.host.clone());
    id
}
