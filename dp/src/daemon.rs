//! `warden run`: start-up, inline pairs, XDP attach/detach and shutdown.
//!
//! Threads:
//! - the **main thread** is the control loop: it owns the XDP program and the pair table and
//!   executes every request (from socket connections) and the shutdown, one at a time;
//! - one **worker** per configured worker count, pinned to a core ([`crate::worker`]);
//! - the **acceptor** and one thread per control connection ([`crate::control`]);
//! - the **reporter**, which turns workers' session snapshots into report batches for
//!   subscribers every report interval;
//! - a **signal** thread waiting for SIGINT/SIGTERM (blocked in every other thread).
//!
//! Adding a pair binds the XSKs first, registers them in the XSKMAP, configures both interfaces
//! in the program's maps, and only then attaches the program, so no frame ever takes the
//! uninspected path while Warden runs. Stopping detaches the program from every interface it
//! attached to, so nothing is left behind.
//!
//! **Failure.** A worker or the reporter that panics (or a worker thread that ends without being
//! told to) takes the whole process down with exit status [`EXIT_THREAD_FAILED`], after logging
//! the thread, the panic message and its location: the XDP program stays attached (netlink), the
//! kernel removes the dead process's sockets from the XSKMAP, so every pair falls to its fail
//! mode (`fail_open` forwards in the kernel, `fail_closed` drops) until the service manager
//! starts Warden again (`conf/warden.service`: `Restart=on-failure`). A queue is never left
//! uninspected by a process that looks alive.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam::channel::bounded;
use nix::sys::signal::{SigSet, Signal};
use warden_control::{
    Counters, DefragCounters, DnsNames, FailMode, InterfaceCounters, InterfaceInfo, RelatedFlows, Reply, Request, Response,
    SessionCursor, SessionPage, Status, WorkerCounters, WorkerTime, LIST_SCAN_SLOTS,
};
use warden_xdp::{AttachMode, XdpProgram};

use crate::config::{Config, InlinePair, XdpMode};

mod attachments;
use crate::control::{self, Hub};
use crate::enforce::PolicyHandle;
use crate::expect::ExpectTable;
use crate::names::NameTable;
use crate::inspect::{DropReason, Inspector};
use crate::policy::{learned_policy, CompiledPolicy, Policy};
use crate::wire::Malformed;
use crate::worker::{self, Command, IfCounters, Worker, WorkerConfig, WorkerLink, WorkerStats};
use crate::xsk::SideSpec;

/// Exit status of the process when a worker or the reporter panicked or ended unexpectedly
/// (`EX_SOFTWARE` of sysexits.h).
pub const EXIT_THREAD_FAILED: i32 = 70;

/// Reads the configuration again for a SIGHUP reload (the file and the same command-line
/// overrides as at start).
pub type Reloader = Arc<dyn Fn() -> Result<Config, String> + Send + Sync>;

/// Options of `warden run` that are not configuration.
#[derive(Clone, Default)]
pub struct RunOptions {
    /// Honour test-hook requests ([`Request::TestKillWorker`], [`Request::TestStallWorker`]);
    /// set by the hidden `--test-hooks` flag, for end-to-end tests only.
    pub test_hooks: bool,
    /// How SIGHUP re-reads the configuration; without it SIGHUP re-reads only the policy file
    /// the running configuration names.
    pub reload: Option<Reloader>,
}

/// Logs every panic with its thread, message and location (once, through `tracing`, so it
/// reaches the journal like every other log line), with a backtrace when `RUST_BACKTRACE` asks
/// for one.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let thread = thread::current();
        let name = thread.name().unwrap_or("unnamed");
        let msg = panic_message(info.payload());
        let location = info.location().map(|l| l.to_string()).unwrap_or_else(|| "unknown".into());
        let bt = std::backtrace::Backtrace::capture();
        if bt.status() == std::backtrace::BacktraceStatus::Captured {
            tracing::error!("thread {name} panicked at {location}: {msg}\n{bt}");
        } else {
            tracing::error!("thread {name} panicked at {location}: {msg}");
        }
    }));
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(non-string panic payload)")
}

/// Spawns a thread Warden cannot run without (a worker, the reporter): if `body` panics, the
/// process exits with [`EXIT_THREAD_FAILED`] (the panic hook has logged the message and
/// location), so the pairs fall to their fail mode and the service manager restarts Warden.
fn spawn_vital(name: String, body: impl FnOnce() + Send + 'static) -> std::io::Result<thread::JoinHandle<()>> {
    thread::Builder::new().name(name.clone()).spawn(move || {
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).is_err() {
            tracing::error!(
                "thread {name} panicked: exiting with status {EXIT_THREAD_FAILED}; every inline pair falls to its fail mode until warden is restarted"
            );
            std::process::exit(EXIT_THREAD_FAILED);
        }
    })
}

/// A message to the control loop.
pub enum CtlMsg {
    /// A request from a control connection, with the channel for its response.
    Request(Request, mpsc::Sender<Response>),
    /// SIGINT or SIGTERM arrived.
    Shutdown(Signal),
    /// A metrics scrape ([`crate::metrics`]): answer with a snapshot of the counters.
    Metrics(mpsc::Sender<Box<crate::metrics::Snapshot>>),
    /// SIGHUP arrived: reload the configuration's policy file and access lists.
    Reload,
    /// A streamed capture (`capture_start` with `stream`) from a control connection: the
    /// answer is its description and the receiver of its pcapng bytes, or the error.
    CaptureStream(
        warden_control::CaptureSpec,
        mpsc::Sender<Result<(warden_control::CaptureInfo, crossbeam::channel::Receiver<crate::capture::writer::StreamMsg>), String>>,
    ),
}

#[derive(Debug, Clone)]
struct Iface {
    name: String,
    ifindex: u32,
    slot: u16,
    queues: u32,
}

#[derive(Debug, Clone)]
struct Pair {
    zone: u16,
    a: Iface,
    b: Iface,
    fail: FailMode,
    workers: Vec<usize>,
    /// Queue groups (one UMEM each): queue `q` of either interface is in group `q % groups`,
    /// served by worker `(zone + group) % workers`.
    groups: u32,
    /// (slot, queue) of every XSK registered in the XSKMAP.
    xsks: Vec<(u16, u32)>,
}

/// A monitored interface (monitor mode, [`crate::monitor`]).
#[derive(Debug, Clone)]
struct Monitor {
    /// Attachment name ([`Request::Detach`] takes it): the interface unless the request named it.
    name: String,
    iface: String,
    ifindex: u32,
    zone: u16,
    /// Slots of frames received on the interface and of frames sent out of it.
    slots: [u16; 2],
    /// Workers serving it (each holds one socket of its fanout group), in flow-ownership order.
    workers: Vec<usize>,
    /// The mode the attach request asked for (`protect` is reported as `alert`).
    mode: String,
}

/// Name of the slot of frames sent out of monitored interface `iface` (frames received on it
/// have the interface's own name, so a policy workload with `iface` is what is behind it).
fn monitor_out_name(iface: &str) -> String {
    format!("{iface}>out")
}

struct Daemon {
    cfg: Config,
    xdp: XdpProgram,
    pairs: Vec<Pair>,
    /// Monitored interfaces ([`crate::monitor`]).
    monitors: Vec<Monitor>,
    next_zone: u16,
    workers: Vec<WorkerLink>,
    hub: Arc<Hub>,
    started: Instant,
    /// The running policy (source form) and its published, compiled form.
    policy: Policy,
    /// The running policy as published: `policy` with the addresses of the discovered
    /// workloads its selectors take ([`Policy::with_discovered`]).
    enforced: Policy,
    /// Discovered workloads ([`crate::identity`]), shared with the reporter (records) and
    /// updated by the attach stage ([`Daemon::identities_changed`]).
    identities: Arc<crate::identity::Registry>,
    /// The registry generation `enforced` was filled from.
    identities_seen: u64,
    policy_handle: Arc<PolicyHandle>,
    /// The shadow policy (source form), published beside the running one ([`crate::shadow`]).
    shadow: Option<Policy>,
    expectations: Arc<ExpectTable>,
    test_hooks: bool,
    names: Arc<NameTable>,
    /// The workers' report queue, for its depth (metrics); the reporter owns the other end.
    report_queue: crossbeam::channel::Receiver<worker::WorkerReport>,
    /// Interface slots the XDP fast path is on for ([`crate::fastpath`]), shared with the
    /// workers.
    fast_slots: Arc<crate::fastpath::FastSlots>,
    /// Captures on demand and the capture writer ([`crate::capture`]).
    captures: crate::capture::manager::Manager,
    /// Attachments ([`crate::attach`]), in the order they were made.
    attachments: Vec<crate::attach::state::State>,
    /// Ports of watched bridges (`[attach] watch_bridges`) whose attach failed, by ifindex: not
    /// tried again while they exist.
    watch_refused: std::collections::HashSet<u32>,
}

/// Loads the policy `cfg` names (`[policy] file`, `default_mode`); an empty policy when none.
///
/// # Errors
/// The file cannot be read, or does not parse or compile (the message names line and field).
pub fn load_policy(cfg: &Config) -> Result<Policy, String> {
    let origin = cfg.policy.file.as_deref().unwrap_or("policy");
    let text = match &cfg.policy.file {
        Some(f) => std::fs::read_to_string(f).map_err(|e| format!("policy {f}: {e}"))?,
        None => String::new(),
    };
    let mut p = Policy::from_toml(&text).map_err(|e| format!("{origin}: {e}"))?;
    if let Some(m) = &cfg.policy.default_mode {
        if crate::policy::Mode::from_name(m).is_none() {
            return Err(format!("policy.default_mode: {m:?} is not learn, alert or protect"));
        }
        // The file's own default_mode wins; otherwise workloads without a mode get this one.
        let mut t: toml::Table = toml::from_str(&text).map_err(|e| format!("{origin}: {e}"))?;
        if !t.contains_key("default_mode") {
            t.insert("default_mode".into(), m.clone().into());
            let text = toml::to_string(&t).map_err(|e| format!("internal: {e}"))?;
            p = Policy::from_toml(&text).map_err(|e| format!("{origin}: {e}"))?;
        }
    }
    CompiledPolicy::compile(&p).map_err(|e| format!("{origin}: {e}"))?;
    Ok(p)
}

/// Applies `edit` to the policy's TOML form and reads it back, so runtime edits (workloads,
/// services, modes) get the same validation as a policy file.
fn edit_policy(p: &Policy, edit: impl FnOnce(&mut toml::Table) -> Result<(), String>) -> Result<Policy, String> {
    let mut t: toml::Table = toml::from_str(&p.to_toml()).map_err(|e| format!("internal: {e}"))?;
    edit(&mut t)?;
    let text = toml::to_string(&t).map_err(|e| format!("internal: {e}"))?;
    Policy::from_toml(&text).map_err(|e| e.to_string())
}

fn array<'a>(t: &'a mut toml::Table, key: &str) -> &'a mut Vec<toml::Value> {
    let v = t
        .entry(key.to_string())
        .or_insert_with(|| toml::Value::Array(Vec::new()));
    if !v.is_array() {
        *v = toml::Value::Array(Vec::new());
    }
    match v {
        toml::Value::Array(a) => a,
        _ => unreachable!("just made an array"),
    }
}

/// Namespace of a service that does not say (as Kubernetes).
const DEFAULT_NAMESPACE: &str = "default";

/// `namespace/name` of a service as a request names it.
fn service_label(namespace: Option<&str>, name: &str) -> String {
    format!("{}/{name}", namespace.unwrap_or(DEFAULT_NAMESPACE))
}

/// True when the `[[service]]` table `v` is service `namespace`/`name`.
fn is_service(v: &toml::Value, namespace: &str, name: &str) -> bool {
    v.get("name").and_then(|n| n.as_str()) == Some(name)
        && v.get("namespace").and_then(|n| n.as_str()).unwrap_or(DEFAULT_NAMESPACE) == namespace
}

/// Adds `spec` to the policy table `t` as a `[[service]]` table, replacing the service of the
/// same namespace and name (validated when the table is read back).
fn set_service(t: &mut toml::Table, spec: &warden_control::ServiceSpec) {
    let strings = |v: &[String]| toml::Value::Array(v.iter().map(|s| s.clone().into()).collect());
    let ns = spec.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE);
    let mut s = toml::Table::new();
    s.insert("name".into(), spec.name.clone().into());
    s.insert("namespace".into(), ns.into());
    s.insert("external_ips".into(), strings(&spec.external_ips));
    if !spec.ports.is_empty() {
        s.insert("ports".into(), strings(&spec.ports));
    }
    s.insert("workloads".into(), strings(&spec.workloads));
    let list = array(t, "service");
    list.retain(|x| !is_service(x, ns, &spec.name));
    list.push(toml::Value::Table(s));
}

fn names_workload(rule: &toml::Value, id: &str) -> bool {
    ["from", "to"]
        .iter()
        .any(|k| rule.get(k).and_then(|v| v.as_str()) == Some(id))
}

fn ifindex_of(name: &str) -> Result<u32, String> {
    nix::net::if_::if_nametoindex(name).map_err(|e| format!("interface {name}: {e}"))
}

/// The interface's rx queue count as the kernel uses it now (`real_num_rx_queues`, which
/// `ethtool -L` changes), at least 1.
fn rx_queues(name: &str) -> u32 {
    std::fs::read_dir(format!("/sys/class/net/{name}/queues"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
                .count() as u32
        })
        .unwrap_or(1)
        .max(1)
}

/// The rx queues of an interface with `queues` queues that Warden can bind (the XSKMAP has
/// room for [`warden_xdp::MAX_QUEUES`] per interface; frames on higher ones are dropped while
/// Warden runs, counted as `xdp_unbound`).
fn bindable(queues: u32) -> std::ops::Range<u32> {
    0..queues.min(warden_xdp::MAX_QUEUES)
}

fn warn_unbindable(i: &Iface) {
    if i.queues > warden_xdp::MAX_QUEUES {
        tracing::warn!(
            "{} has {} rx queues; Warden binds {}: frames on the others are dropped (xdp_unbound) while it runs (reduce them with ethtool -L)",
            i.name,
            i.queues,
            warden_xdp::MAX_QUEUES
        );
    }
}

/// The worker that serves queue group `group` of pair `zone` among `workers`.
/// Most [`Command::Sessions`] steps one `list_sessions` page takes (each bounded by
/// [`LIST_SCAN_SLOTS`] slots and the page size): a page of a sparse table ends short after
/// about a million slots rather than walking everything in one request.
const LIST_STEPS: usize = 16;

fn group_worker(zone: u16, group: u32, workers: usize) -> usize {
    (zone as usize + group as usize) % workers.max(1)
}

fn xdp_fail(f: FailMode) -> warden_xdp::FailMode {
    match f {
        FailMode::Open => warden_xdp::FailMode::Open,
        FailMode::Closed => warden_xdp::FailMode::Closed,
    }
}

impl Daemon {
    fn used_slots(&self) -> Vec<u16> {
        self.pairs.iter().flat_map(|p| [p.a.slot, p.b.slot]).chain(self.monitors.iter().flat_map(|m| m.slots)).collect()
    }

    /// Starts monitoring interface `iface` (monitor mode, [`crate::monitor`]): one receive-only
    /// socket per worker in one fanout group, a session zone and two interface slots (frames
    /// received on it, frames sent out of it); replies once every worker serves it. `spec`
    /// gives the attachment's name and mode (kind, target and addresses are the caller's).
    /// The API the attach stage calls for `monitor = true` on any target kind, with the
    /// host-side interface it resolved.
    ///
    /// # Errors
    /// The interface does not exist, is inline or already monitored, the name is taken, or
    /// the sockets cannot be opened (not root); nothing is left behind.
    pub(crate) fn start_monitor(&mut self, iface: &str, spec: &warden_control::AttachSpec) -> Result<warden_control::AttachInfo, String> {
        let name = spec.name.clone().unwrap_or_else(|| iface.to_string());
        if self.pairs.iter().any(|p| p.a.name == iface || p.b.name == iface) {
            return Err(format!("interface {iface} is in an inline pair: it is inspected inline already"));
        }
        if let Some(m) = self.monitors.iter().find(|m| m.iface == iface || m.name == name) {
            return Err(format!("{} is already monitored (attachment {})", m.iface, m.name));
        }
        let mode = match spec.mode.as_deref() {
            None | Some("alert") | Some("protect") => "alert",
            Some("learn") => "learn",
            Some(m) => return Err(format!("mode {m:?} is not learn, alert or protect")),
        };
        let ifindex = ifindex_of(iface)?;
        let si = self.free_slot(&[])?;
        let so = self.free_slot(&[si])?;
        let n = self.workers.len().max(1);
        let fds = crate::monitor::open_group(ifindex, n).map_err(|e| format!("monitor {iface}: {e}"))?;
        let zone = self.next_zone;
        self.next_zone = self.next_zone.wrapping_add(1);
        let owners: Vec<usize> = (0..n).collect();
        let out_name = monitor_out_name(iface);
        self.hub.set_name(si, iface);
        self.hub.set_name(so, &out_name);
        let mut acks = Vec::new();
        for (w, fd) in fds.into_iter().enumerate() {
            let (tx, rx) = mpsc::channel();
            let cmd = Command::AddMonitor {
                zone,
                slots: [(si, iface.to_string()), (so, out_name.clone())],
                owners: owners.clone(),
                fd: Some(fd),
                reply: tx,
            };
            if self.workers[w].send(cmd).is_ok() {
                acks.push(rx);
            }
        }
        for rx in acks {
            let _ = rx.recv_timeout(Duration::from_secs(10));
        }
        let m = Monitor { name, iface: iface.to_string(), ifindex, zone, slots: [si, so], workers: owners, mode: mode.into() };
        if self.policy.workloads.iter().any(|w| w.mode == crate::policy::Mode::Protect) {
            tracing::warn!(
                "monitoring {iface}: monitor mode cannot enforce; sessions of protect-mode workloads seen there are reported as in alert mode (violation, not denied)"
            );
        }
        tracing::info!(iface, attachment = %m.name, workers = n, "monitoring (receive-only, nothing forwarded or dropped)");
        let info = self.monitor_info(&m);
        self.monitors.push(m);
        Ok(info)
    }

    /// Stops monitoring the attachment named `name` (or the interface of that name): its
    /// sockets are closed and its sessions end with final records; replies once every worker
    /// let go of it.
    ///
    /// # Errors
    /// Nothing of that name is monitored.
    pub(crate) fn stop_monitor(&mut self, name: &str) -> Result<warden_control::AttachInfo, String> {
        let pos = self
            .monitors
            .iter()
            .position(|m| m.name == name)
            .or_else(|| self.monitors.iter().position(|m| m.iface == name))
            .ok_or_else(|| format!("nothing named {name} is monitored"))?;
        let m = self.monitors.remove(pos);
        let mut acks = Vec::new();
        for w in &m.workers {
            let (tx, rx) = mpsc::channel();
            if self.workers[*w].send(Command::RemoveMonitor { zone: m.zone, reply: tx }).is_ok() {
                acks.push(rx);
            }
        }
        for rx in acks {
            let _ = rx.recv_timeout(Duration::from_secs(10));
        }
        tracing::info!(iface = %m.iface, attachment = %m.name, "monitor stopped");
        Ok(self.monitor_info(&m))
    }

    /// True when `name` is a monitor attachment or a monitored interface.
    pub(crate) fn is_monitor(&self, name: &str) -> bool {
        self.monitors.iter().any(|m| m.name == name || m.iface == name)
    }

    /// The monitor attachments, as [`Request::ListAttachments`] lists them.
    pub(crate) fn monitor_attachments(&self) -> Vec<warden_control::AttachInfo> {
        self.monitors.iter().map(|m| self.monitor_info(m)).collect()
    }

    fn monitor_info(&self, m: &Monitor) -> warden_control::AttachInfo {
        warden_control::AttachInfo {
            name: m.name.clone(),
            kind: "iface".into(),
            host_iface: m.iface.clone(),
            monitor: true,
            mode: m.mode.clone(),
            ..warden_control::AttachInfo::default()
        }
    }

    fn free_slot(&self, also: &[u16]) -> Result<u16, String> {
        let used = self.used_slots();
        (0..warden_xdp::MAX_IFACES as u16)
            .find(|s| !used.contains(s) && !also.contains(s))
            .ok_or_else(|| "no free interface slot".to_string())
    }

    fn add_pair(&mut self, p: &InlinePair) -> Result<String, String> {
        if p.a == p.b {
            return Err(format!("inline pair {}:{} uses one interface twice", p.a, p.b));
        }
        for n in [&p.a, &p.b] {
            if self.pairs.iter().any(|x| &x.a.name == n || &x.b.name == n) {
                return Err(format!("interface {n} is already in an inline pair"));
            }
        }
        let sa = self.free_slot(&[])?;
        let sb = self.free_slot(&[sa])?;
        let a = Iface { name: p.a.clone(), ifindex: ifindex_of(&p.a)?, slot: sa, queues: rx_queues(&p.a) };
        let b = Iface { name: p.b.clone(), ifindex: ifindex_of(&p.b)?, slot: sb, queues: rx_queues(&p.b) };
        let zone = self.next_zone;
        self.next_zone = self.next_zone.wrapping_add(1);
        let n = self.workers.len();
        warn_unbindable(&a);
        warn_unbindable(&b);
        let groups = a.queues.min(b.queues).clamp(1, warden_xdp::MAX_QUEUES);
        let group_worker = |g: u32| group_worker(zone, g, n);
        let mut owners: Vec<usize> = Vec::new();
        for g in 0..groups {
            let w = group_worker(g);
            if !owners.contains(&w) {
                owners.push(w);
            }
        }
        let mut pair =
            Pair { zone, a: a.clone(), b: b.clone(), fail: p.fail_mode, workers: owners.clone(), groups, xsks: Vec::new() };
        let d = &self.cfg.dataplane;
        for g in 0..groups {
            let spec = |i: &Iface| SideSpec {
                name: i.name.clone(),
                ifindex: i.ifindex,
                slot: i.slot,
                queues: bindable(i.queues).filter(|q| q % groups == g).collect(),
            };
            let (tx, rx) = mpsc::channel();
            let w = group_worker(g);
            let _ = self.workers[w].send(Command::AddGroup {
                zone,
                group: g,
                sides: [spec(&a), spec(&b)],
                owners: owners.clone(),
                frames: d.umem_frames,
                ring_size: d.ring_size,
                reply: tx,
            });
            match rx.recv_timeout(Duration::from_secs(10)) {
                Ok(Ok(fds)) => {
                    for (slot, queue, fd) in fds {
                        if let Err(e) = self.xdp.register_xsk(u32::from(slot), queue, fd) {
                            self.rollback(&pair);
                            return Err(e.to_string());
                        }
                        pair.xsks.push((slot, queue));
                    }
                }
                Ok(Err(e)) => {
                    self.rollback(&pair);
                    return Err(format!("inline pair {}:{}: {e}", a.name, b.name));
                }
                Err(_) => {
                    self.rollback(&pair);
                    return Err(format!("worker {w} did not answer"));
                }
            }
        }
        // Queue 0 of each interface is bound (every group binds its queues, or the pair fails):
        // its XSK tells the program that Warden runs.
        let cfg = self
            .xdp
            .configure_iface(a.ifindex, u32::from(a.slot), b.ifindex, xdp_fail(p.fail_mode), 0)
            .and_then(|_| {
                self.xdp.configure_iface(b.ifindex, u32::from(b.slot), a.ifindex, xdp_fail(p.fail_mode), 0)
            })
            .and_then(|_| self.set_fast_path(&a, &b, None))
            .and_then(|_| self.set_fast_path(&b, &a, None))
            .and_then(|_| self.xdp.attach(a.ifindex))
            .and_then(|_| self.xdp.attach(b.ifindex));
        if let Err(e) = cfg {
            self.rollback(&pair);
            return Err(e.to_string());
        }
        self.hub.set_name(a.slot, &a.name);
        self.hub.set_name(b.slot, &b.name);
        let msg = format!(
            "inline pair {}:{} up ({} queue group(s), workers {:?}, fail_{})",
            a.name,
            b.name,
            groups,
            pair.workers,
            if p.fail_mode == FailMode::Open { "open" } else { "closed" }
        );
        tracing::info!("{msg}");
        self.pairs.push(pair);
        Ok(msg)
    }

    /// Turns the XDP fast path on for frames arriving on `ingress` when it is configured on
    /// and `egress` accepts in-kernel redirects (a veth whose peer has neither GRO nor an XDP
    /// program drops them), off otherwise; logs a change from `was` (`None`: first time).
    fn set_fast_path(&self, ingress: &Iface, egress: &Iface, was: Option<bool>) -> Result<(), warden_xdp::Error> {
        let wanted = self.cfg.dataplane.fast_path && self.cfg.dataplane.fast_path_max > 0;
        let accepts = wanted && self.xdp.accepts_redirects(egress.ifindex);
        if was != Some(accepts) {
            self.xdp.set_fast_path(ingress.ifindex, accepts)?;
            self.fast_slots.set(ingress.slot, accepts);
            if wanted && !accepts {
                tracing::warn!(
                    "fast path off for {} -> {}: {} does not accept in-kernel redirects (on veth, its peer needs GRO on or an XDP program); those flows stay in user space",
                    ingress.name,
                    egress.name,
                    egress.name
                );
            } else if was.is_some() {
                tracing::info!("fast path {} for {} -> {}", if accepts { "on" } else { "off" }, ingress.name, egress.name);
            }
        }
        Ok(())
    }

    /// Follows changes of whether each pair's interfaces accept in-kernel redirects (a veth
    /// peer's GRO turned on or off), turning the fast path on or off per direction.
    fn check_fast_path(&mut self) {
        if !self.cfg.dataplane.fast_path {
            return;
        }
        for p in &self.pairs {
            for (i, e) in [(&p.a, &p.b), (&p.b, &p.a)] {
                let was = self.fast_slots.on(i.slot);
                if let Err(err) = self.set_fast_path(i, e, Some(was)) {
                    crate::warn_limited!("{}: {err}", i.name);
                }
            }
        }
    }

    /// Re-reads the rx queue count of every managed interface and binds queues it gained
    /// (`ethtool -L`) into the pair's existing queue groups, then attaches the XDP program
    /// again so that drivers that apply it per queue (veth) run it on the new ones. Until bound
    /// (or when binding fails) the program drops their frames and counts them as unbound; it
    /// never forwards them uninspected while Warden runs. Queues an interface lost keep their
    /// (idle) sockets.
    fn check_queues(&mut self) {
        for pi in 0..self.pairs.len() {
            for side in 0..2u8 {
                let pair = &mut self.pairs[pi];
                let iface = if side == 0 { &mut pair.a } else { &mut pair.b };
                let now = rx_queues(&iface.name);
                if now == iface.queues {
                    continue;
                }
                tracing::info!("{}: rx queues {} -> {now}", iface.name, iface.queues);
                let grew = now > iface.queues;
                iface.queues = now;
                let iface = iface.clone();
                warn_unbindable(&iface);
                let missing: Vec<u32> =
                    bindable(now).filter(|q| !pair.xsks.contains(&(iface.slot, *q))).collect();
                let (zone, groups) = (pair.zone, pair.groups);
                for g in 0..groups {
                    let queues: Vec<u32> = missing.iter().copied().filter(|q| q % groups == g).collect();
                    if queues.is_empty() {
                        continue;
                    }
                    self.bind_queues(pi, zone, g, side, &iface, queues);
                }
                // Some drivers (veth) run the program only on the queues the interface had
                // when it was attached: attach it again so new queues run it too.
                if grew {
                    if let Err(e) = self.xdp.reattach(iface.ifindex) {
                        crate::warn_limited!("{}: {e}", iface.name);
                    }
                }
            }
        }
    }

    /// Asks the worker of queue group `group` of pair `pi` to bind `queues` of `iface` (side
    /// `side`) and registers the sockets it bound.
    fn bind_queues(&mut self, pi: usize, zone: u16, group: u32, side: u8, iface: &Iface, queues: Vec<u32>) {
        let w = group_worker(zone, group, self.workers.len());
        let spec = SideSpec { name: iface.name.clone(), ifindex: iface.ifindex, slot: iface.slot, queues };
        let (tx, rx) = mpsc::channel();
        let _ = self.workers[w].send(Command::AddPorts { zone, group, side, spec: spec.clone(), reply: tx });
        let Ok(results) = rx.recv_timeout(Duration::from_secs(10)) else {
            crate::warn_limited!("worker {w} did not answer; frames on {} queues {:?} are dropped (xdp_unbound)", iface.name, spec.queues);
            return;
        };
        for (q, r) in spec.queues.iter().zip(results) {
            let r = r.and_then(|(slot, queue, fd)| {
                self.xdp.register_xsk(u32::from(slot), queue, fd).map_err(|e| e.to_string())
            });
            match r {
                Ok(()) => {
                    self.pairs[pi].xsks.push((iface.slot, *q));
                    tracing::info!("{} queue {q} bound (worker {w})", iface.name);
                }
                Err(e) => crate::warn_limited!("{} queue {q}: {e}; its frames are dropped (xdp_unbound)", iface.name),
            }
        }
    }

    /// Undoes whatever part of a pair was set up: XDP, maps, sockets and sessions.
    fn rollback(&mut self, pair: &Pair) {
        for i in [&pair.a, &pair.b] {
            if let Err(e) = self.xdp.detach(i.ifindex) {
                tracing::warn!("{e}");
            }
        }
        for &(slot, q) in &pair.xsks {
            self.xdp.unregister_xsk(u32::from(slot), q);
        }
        for i in [&pair.a, &pair.b] {
            self.fast_slots.set(i.slot, false);
            let _ = self.xdp.remove_iface(i.ifindex, u32::from(i.slot));
        }
        for w in 0..self.workers.len() {
            let (tx, rx) = mpsc::channel();
            if self.workers[w].send(Command::RemovePair { zone: pair.zone, reply: tx }).is_ok() {
                let _ = rx.recv_timeout(Duration::from_secs(10));
            }
        }
    }

    fn remove_pair(&mut self, a: &str, b: Option<&str>) -> Result<String, String> {
        let pos = self
            .pairs
            .iter()
            .position(|p| {
                let names = [p.a.name.as_str(), p.b.name.as_str()];
                names.contains(&a) && b.is_none_or(|b| names.contains(&b) && a != b)
            })
            .ok_or_else(|| format!("no inline pair with {a}{}", b.map(|b| format!(" and {b}")).unwrap_or_default()))?;
        let pair = self.pairs.remove(pos);
        self.rollback(&pair);
        let msg = format!("inline pair {}:{} removed", pair.a.name, pair.b.name);
        tracing::info!("{msg}");
        Ok(msg)
    }

    fn worker_stats(&self) -> Vec<WorkerStats> {
        let replies: Vec<_> = self
            .workers
            .iter()
            .map(|w| {
                let (tx, rx) = mpsc::channel();
                let _ = w.send(Command::Stats { reply: tx });
                rx
            })
            .collect();
        replies.into_iter().filter_map(|rx| rx.recv_timeout(Duration::from_secs(5)).ok()).collect()
    }

    /// The counters of one metrics scrape, from one stats answer of every worker (the same
    /// answers [`Self::counters`] is built from).
    fn metrics_snapshot(&self) -> crate::metrics::Snapshot {
        let generation = self.policy_handle.generation();
        let (subscribers, reporter_overflow, subscriber_queued) = self.hub.health();
        let interfaces = self
            .pairs
            .iter()
            .flat_map(|p| [&p.a, &p.b])
            .map(|i| {
                let k = self.xdp.iface_stats(u32::from(i.slot)).unwrap_or_default();
                crate::metrics::Interface {
                    name: i.name.clone(),
                    slot: i.slot,
                    xdp: crate::metrics::XdpCounters {
                        to_xsk: k.to_xsk_frames,
                        fail_open: k.fail_open_frames,
                        fail_closed: k.fail_closed_frames,
                        unbound: k.unbound_frames,
                        fast_path: k.fast_frames,
                    },
                    monitor: false,
                }
            })
            .chain(self.monitors.iter().flat_map(|m| {
                // Frames received on the interface under its name, frames sent out of it
                // under the out slot's (`rx_*` counts what Warden read from either).
                [(m.iface.clone(), m.slots[0]), (monitor_out_name(&m.iface), m.slots[1])].map(|(name, slot)| {
                    crate::metrics::Interface { name, slot, xdp: crate::metrics::XdpCounters::default(), monitor: true }
                })
            }))
            .collect();
        let workers = self.worker_stats();
        crate::metrics::Snapshot {
            uptime_s: self.started.elapsed().as_secs(),
            pairs: self.pairs.len(),
            rules: self.policy_stats_from(&workers),
            workers,
            interfaces,
            policy_generation: generation,
            report: crate::metrics::ReportHealth {
                queue_depth: self.report_queue.len(),
                queue_capacity: self.cfg.dataplane.report_queue,
                subscribers,
                subscriber_queued,
                reporter_overflow,
            },
            threats: self.hub.threats(),
            log_suppressed: crate::logging::SUPPRESSED.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// One page of at most `size` live sessions from `after` (absent: the start): the workers
    /// in index order, each walked in [`Command::Sessions`] steps of at most
    /// [`LIST_SCAN_SLOTS`] slots, at most [`LIST_STEPS`] steps per page, so a sparse table
    /// gives a short page (with a `next`) rather than a long request. A worker that does not
    /// answer within 5 s is skipped and logged (its sessions are missing from this walk).
    ///
    /// # Errors
    /// A cursor naming a worker the daemon does not have.
    fn session_page(&self, after: Option<SessionCursor>, size: usize) -> Result<SessionPage, String> {
        let n = self.workers.len();
        let (mut w, mut slot) = after.map_or((0, 0), |c| (c.worker as usize, c.slot));
        if after.is_some() && w >= n {
            return Err(format!("list_sessions: the cursor names worker {w}, the daemon runs {n} workers"));
        }
        let mut out = Vec::new();
        let mut steps = 0;
        while w < n && out.len() < size && steps < LIST_STEPS {
            steps += 1;
            let (tx, rx) = mpsc::channel();
            let _ = self.workers[w].send(Command::Sessions {
                from: slot,
                max: size - out.len(),
                scan: LIST_SCAN_SLOTS,
                reply: tx,
            });
            match rx.recv_timeout(Duration::from_secs(5)) {
                Ok((snaps, Some(next))) => {
                    out.extend(snaps.iter().map(|s| self.hub.record(s)));
                    slot = next;
                    continue;
                }
                Ok((snaps, None)) => out.extend(snaps.iter().map(|s| self.hub.record(s))),
                Err(_) => tracing::warn!(worker = w, "list_sessions: the worker did not answer within 5 s, skipped"),
            }
            w += 1;
            slot = 0;
        }
        let next = (w < n).then_some(SessionCursor { worker: w as u32, slot });
        Ok(SessionPage { sessions: out, next })
    }

    fn counters(&self) -> Counters {
        let stats = self.worker_stats();
        let mut by_slot: BTreeMap<u16, IfCounters> = BTreeMap::new();
        for w in &stats {
            for (slot, c) in &w.ifaces {
                by_slot.entry(*slot).or_default().add(c);
            }
        }
        let mut interfaces = Vec::new();
        for p in &self.pairs {
            for i in [&p.a, &p.b] {
                let c = by_slot.get(&i.slot).copied().unwrap_or_default();
                let k = self.xdp.iface_stats(u32::from(i.slot)).unwrap_or_default();
                interfaces.push(InterfaceCounters {
                    name: i.name.clone(),
                    rx_frames: c.rx_frames,
                    rx_bytes: c.rx_bytes,
                    tx_frames: c.tx_frames,
                    tx_bytes: c.tx_bytes,
                    dropped: DropReason::ALL
                        .iter()
                        .filter(|r| c.dropped[**r as usize] > 0)
                        .map(|r| (r.as_str().to_string(), c.dropped[*r as usize]))
                        .collect(),
                    tx_ring_full: c.tx_ring_full,
                    fill_ring_empty: c.fill_ring_empty,
                    xdp_to_xsk: k.to_xsk_frames,
                    xdp_fail_open: k.fail_open_frames,
                    xdp_fail_closed: k.fail_closed_frames,
                    xdp_unbound: k.unbound_frames,
                    xdp_fast_path: k.fast_frames,
                    xdp_fast_path_bytes: k.fast_bytes,
                    fast_path: self.fast_slots.on(i.slot),
                    xsk_rx_dropped: c.xsk_rx_dropped,
                    xsk_rx_ring_full: c.xsk_rx_ring_full,
                    monitor: false,
                    monitor_kernel_dropped: 0,
                });
            }
        }
        for m in &self.monitors {
            let i = by_slot.get(&m.slots[0]).copied().unwrap_or_default();
            let o = by_slot.get(&m.slots[1]).copied().unwrap_or_default();
            interfaces.push(InterfaceCounters {
                name: m.iface.clone(),
                rx_frames: i.rx_frames,
                rx_bytes: i.rx_bytes,
                tx_frames: o.rx_frames,
                tx_bytes: o.rx_bytes,
                monitor: true,
                monitor_kernel_dropped: i.monitor_kernel_dropped + o.monitor_kernel_dropped,
                ..InterfaceCounters::default()
            });
        }
        let workers = stats
            .iter()
            .map(|w| WorkerCounters {
                worker: w.worker,
                core: w.core,
                frames: w.inspect.frames,
                bytes: w.inspect.bytes,
                handoff_out: w.handoff_out,
                handoff_in: w.handoff_in,
                handoff_dropped: w.handoff_dropped,
                sessions_created: w.table.created,
                sessions_expired: w.table.expired,
                sessions_evicted: w.table.evicted,
                sessions_evicted_lingering: w.table.evicted_lingering,
                sessions_evicted_embryonic: w.table.evicted_embryonic,
                sessions_evicted_one_way: w.table.evicted_one_way,
                sessions_evicted_two_way: w.table.evicted_two_way,
                sessions_refused: w.table.refused,
                sessions_side: w.table.side_counters().into_iter().filter(|(_, n)| *n > 0).map(|(k, n)| (k.to_string(), n)).collect(),
                sessions_active: w.sessions,
                malformed: Malformed::ALL
                    .iter()
                    .filter(|m| w.inspect.malformed[**m as usize] > 0)
                    .map(|m| (m.as_str().to_string(), w.inspect.malformed[*m as usize]))
                    .collect(),
                report_overflow: w.report_overflow + w.table.ended_overflow,
                policy_dropped: w.inspect.policy_dropped,
                policy_resets: w.inspect.policy_resets,
                policy_events_dropped: w.inspect.events_dropped,
                spoofed: w.inspect.spoofed,
                exceptions: crate::exception::ExceptionReason::ALL
                    .iter()
                    .filter(|r| w.inspect.exceptions[**r as usize] > 0)
                    .map(|r| (r.as_str().to_string(), w.inspect.exceptions[*r as usize]))
                    .collect(),
                normalization: crate::normalize::Anomaly::ALL
                    .iter()
                    .map(|a| (a.as_str(), w.inspect.anomalies[*a as usize]))
                    .chain([("syn_data_resyncs", w.inspect.syn_data_resyncs)])
                    .filter(|(_, n)| *n > 0)
                    .map(|(name, n)| (name.to_string(), n))
                    .collect(),
                icmp: w
                    .inspect
                    .icmp
                    .named()
                    .iter()
                    .filter(|(_, n)| *n > 0)
                    .map(|(name, n)| (name.to_string(), *n))
                    .collect(),
                threats: [
                    ("hits", w.threats.hits.iter().sum::<u64>()),
                    ("dropped", w.threats.dropped.iter().sum::<u64>()),
                    ("events", w.threat_events.events),
                    ("merged", w.threat_events.merged),
                    ("events_lost", w.threat_events.overflow),
                ]
                .into_iter()
                .filter(|(_, n)| *n > 0)
                .map(|(k, n)| (k.to_string(), n))
                .collect(),
                defrag: DefragCounters {
                    fragments: w.defrag.fragments,
                    held: w.defrag.held,
                    reassembled: w.defrag.reassembled,
                    timeouts: w.defrag.timeouts,
                    overlaps: w.defrag.overlaps,
                    too_big: w.defrag.too_big,
                    full: w.defrag.full,
                    malformed: w.defrag.malformed,
                    exceptions: w.defrag.exceptions,
                },
                tunnels: w.inspect.tunnels.named().filter(|(_, n)| *n > 0).map(|(k, n)| (k.to_string(), n)).collect(),
                capture: w.capture.named().filter(|(_, n)| *n > 0).map(|(k, n)| (k.to_string(), n)).collect(),
                time: WorkerTime {
                    busy_ns: w.timing.busy_ns,
                    spin_ns: w.timing.spin_ns,
                    sleep_ns: w.timing.sleep_ns,
                    cpu_ns: w.timing.cpu_ns,
                    sleeps: w.timing.sleeps,
                    woken_rx: w.timing.woken_rx,
                    woken_waker: w.timing.woken_waker,
                    woken_timer: w.timing.woken_timer,
                    frames: w.timing.frames,
                    frame_gap_ns: w.timing.gap_ns,
                    stage_frames: w.timing.stages.frames,
                    stage_ns: w.timing.stages.named().iter().map(|(k, v)| (k.to_string(), *v)).collect(),
                },
                fast_path: if w.fast_capacity > 0 { w.fast.named().into_iter().collect() } else { BTreeMap::new() },
            })
            .collect();
        Counters { interfaces, workers }
    }

    fn handle(&mut self, req: Request) -> Response {
        match req {
            Request::Attach { spec } => match self.attach(spec) {
                Ok(i) => Response::ok(Reply::Attached(i)),
                Err(e) => Response::err(format!("attach: {e}")),
            },
            // Monitor attachments ([`crate::monitor`]) by their name or interface.
            Request::Detach { name } if self.is_monitor(&name) => match self.stop_monitor(&name) {
                Ok(i) => Response::ok(Reply::Done(format!("monitor {} on {} stopped", i.name, i.host_iface))),
                Err(e) => Response::err(format!("detach: {e}")),
            },
            Request::Detach { name } => match self.detach(&name) {
                Ok(m) => Response::ok(Reply::Done(m)),
                Err(e) => Response::err(format!("detach: {e}")),
            },
            Request::ListAttachments {} => {
                let mut v: Vec<warden_control::AttachInfo> = self.attachments.iter().map(crate::attach::info).collect();
                v.extend(self.monitor_attachments());
                Response::ok(Reply::Attachments(v))
            }
            Request::ListWorkloads {} => Response::ok(Reply::Workloads(self.workloads())),
            Request::Status {} => {
                let stats = self.worker_stats();
                let worker_overflow: u64 =
                    stats.iter().map(|w| w.report_overflow + w.table.ended_overflow).sum();
                let (subscribers, overflow, queued) = self.hub.health();
                Response::ok(Reply::Status(Status {
                    version: env!("CARGO_PKG_VERSION").to_string(),
                    uptime_s: self.started.elapsed().as_secs(),
                    workers: self.workers.len(),
                    inline_pairs: self.pairs.len(),
                    sessions: stats.iter().map(|w| w.sessions).sum(),
                    subscribers,
                    report_interval_s: self.cfg.dataplane.report_interval,
                    report_overflow: overflow + worker_overflow,
                    report_queued: queued,
                    report_stream: self.hub.stream_status(),
                    policy_generation: self.policy_handle.generation(),
                    policy_workloads: self.policy.workloads.len(),
                    policy_rules: self.policy.rules.len(),
                    policy_services: self.policy.services.len(),
                    shadow_rules: self.shadow.as_ref().map(|p| p.rules.len()),
                    export: self.hub.export().status(),
                    related_flows: {
                        let e = self.expectations.stats();
                        RelatedFlows {
                            registered: e.inserted,
                            joined: e.matched,
                            expired: e.expired,
                            replaced: e.replaced,
                            failed: e.failed,
                        }
                    },
                    dns_names: {
                        let n = self.names.stats();
                        DnsNames {
                            stored: n.inserted,
                            refreshed: n.refreshed,
                            replaced: n.replaced,
                            refused_unsolicited: n.refused_unsolicited,
                            refused_off_chain: n.refused_off_chain,
                            refused_too_long: n.refused_too_long,
                            refused_unwanted: n.refused_unwanted,
                            refused_clients_full: n.refused_clients_full,
                            refused_overflow: n.refused_overflow,
                            refused_malformed: n.refused_malformed,
                            failed: n.failed,
                        }
                    },
                }))
            }
            Request::ListInterfaces {} => {
                let mode = match self.cfg.dataplane.xdp_mode {
                    XdpMode::Native => "native",
                    XdpMode::Generic => "generic",
                };
                let list = self
                    .pairs
                    .iter()
                    .flat_map(|p| {
                        [(&p.a, &p.b), (&p.b, &p.a)].map(|(i, peer)| InterfaceInfo {
                            name: i.name.clone(),
                            ifindex: i.ifindex,
                            peer: peer.name.clone(),
                            queues: i.queues,
                            bound_queues: p.xsks.iter().filter(|(slot, _)| *slot == i.slot).count() as u32,
                            fail_mode: p.fail,
                            xdp_mode: mode.to_string(),
                            workers: p.workers.clone(),
                            monitor: false,
                        })
                    })
                    .chain(self.monitors.iter().map(|m| InterfaceInfo {
                        name: m.iface.clone(),
                        ifindex: m.ifindex,
                        peer: String::new(),
                        queues: rx_queues(&m.iface),
                        bound_queues: 0,
                        fail_mode: FailMode::Open,
                        xdp_mode: "monitor".into(),
                        workers: m.workers.clone(),
                        monitor: true,
                    }))
                    .collect();
                Response::ok(Reply::Interfaces(list))
            }
            Request::AddInlinePair { a, b, fail_mode } => {
                let p = InlinePair { a, b, fail_mode };
                match self.add_pair(&p) {
                    Ok(m) => Response::ok(Reply::Done(m)),
                    Err(e) => Response::err(e),
                }
            }
            Request::RemoveInlinePair { a, b } => match self.remove_pair(&a, b.as_deref()) {
                Ok(m) => Response::ok(Reply::Done(m)),
                Err(e) => Response::err(e),
            },
            Request::ListSessions { limit, page_size, after } => {
                let paged = page_size.is_some() || after.is_some();
                let size = page_size.or(limit).unwrap_or(1000).clamp(1, warden_control::MAX_LIST_SESSIONS);
                match self.session_page(after, size) {
                    Ok(p) if paged => Response::ok(Reply::SessionPage(p)),
                    Ok(p) => Response::ok(Reply::Sessions(p.sessions)),
                    Err(e) => Response::err(e),
                }
            }
            Request::Counters {} => Response::ok(Reply::Counters(self.counters())),
            Request::Subscribe { .. } => Response::err("subscribe is handled by the connection"),
            Request::Hello { .. } => Response::err("hello is handled by the connection"),
            Request::PolicyApply { text } => match Policy::from_toml(&text) {
                Ok(p) => self.install(p, "policy applied"),
                Err(e) => Response::err(format!("policy rejected, the running one stays: {e}")),
            },
            Request::PolicyShow {} => Response::ok(Reply::PolicyText(self.policy.to_toml())),
            Request::PolicyShadow { text } => match Policy::from_toml(&text) {
                Ok(p) => self.install_shadow(Some(p)),
                Err(e) => Response::err(format!("shadow policy rejected: {e}")),
            },
            Request::PolicyShadowClear {} => match self.shadow {
                Some(_) => self.install_shadow(None),
                None => Response::err("no shadow policy is loaded"),
            },
            Request::PolicyDiff {} => match self.shadow_diff() {
                Some(d) => Response::ok(Reply::PolicyDiff(d)),
                None => Response::err("no shadow policy is loaded (wardenctl policy shadow FILE)"),
            },
            Request::PolicyPromote {} => self.promote(),
            Request::CaptureStart { spec } if spec.stream => {
                Response::err("a streamed capture is served by its connection (send capture_start on a connection of its own)")
            }
            Request::CaptureStart { spec } => match self.start_capture(&spec) {
                Ok((info, _)) => Response::ok(Reply::Capture(info)),
                Err(e) => Response::err(e),
            },
            Request::CaptureList {} => Response::ok(Reply::Captures(self.captures.list())),
            Request::CaptureStop { id } => match self.captures.stop(id) {
                Ok(info) => Response::ok(Reply::Capture(info)),
                Err(e) => Response::err(e),
            },
            Request::CaptureDelete { name } => match self.captures.delete(&name) {
                Ok(m) => Response::ok(Reply::Done(m)),
                Err(e) => Response::err(e),
            },
            Request::PolicyStats {} => Response::ok(Reply::PolicyStats(self.policy_stats())),
            Request::Threats {} => Response::ok(Reply::Threats(self.threat_infos())),
            Request::PolicyLearned {} => {
                let seen = self.hub.learned();
                // Learned against the addresses as enforced (selected workloads' discovered
                // ones), written with each workload's addresses as the file has them.
                let mut learned = learned_policy(&self.enforced, &seen);
                for (w, src) in learned.workloads.iter_mut().zip(&self.policy.workloads) {
                    w.ips.clone_from(&src.ips);
                }
                Response::ok(Reply::PolicyText(learned.to_toml()))
            }
            Request::SetWorkload { workload } => {
                let r = edit_policy(&self.policy, |t| {
                    let mut w = toml::Table::new();
                    w.insert("id".into(), workload.id.clone().into());
                    w.insert(
                        "ips".into(),
                        toml::Value::Array(workload.ips.iter().map(|s| s.clone().into()).collect()),
                    );
                    if !workload.macs.is_empty() {
                        w.insert(
                            "macs".into(),
                            toml::Value::Array(workload.macs.iter().map(|s| s.clone().into()).collect()),
                        );
                    }
                    if let Some(i) = &workload.iface {
                        w.insert("iface".into(), i.clone().into());
                    }
                    if let Some(m) = &workload.mode {
                        w.insert("mode".into(), m.clone().into());
                    }
                    let ws = array(t, "workload");
                    ws.retain(|x| x.get("id").and_then(|v| v.as_str()) != Some(workload.id.as_str()));
                    ws.push(toml::Value::Table(w));
                    Ok(())
                });
                match r {
                    Ok(p) => self.install(p, &format!("workload {} set", workload.id)),
                    Err(e) => Response::err(format!("workload {} rejected: {e}", workload.id)),
                }
            }
            Request::RemoveWorkload { id } => {
                if !self.policy.workloads.iter().any(|w| w.id == id) {
                    return Response::err(format!("no workload {id:?}"));
                }
                let r = edit_policy(&self.policy, |t| {
                    array(t, "workload").retain(|x| x.get("id").and_then(|v| v.as_str()) != Some(id.as_str()));
                    array(t, "rule").retain(|r| !names_workload(r, &id));
                    for s in array(t, "service").iter_mut() {
                        if let Some(toml::Value::Array(ws)) = s.get_mut("workloads") {
                            ws.retain(|w| w.as_str() != Some(id.as_str()));
                        }
                    }
                    Ok(())
                });
                match r {
                    Ok(p) => self.install(p, &format!("workload {id} removed")),
                    Err(e) => Response::err(e),
                }
            }
            Request::SetService { service } => {
                let label = service_label(service.namespace.as_deref(), &service.name);
                let r = edit_policy(&self.policy, |t| {
                    set_service(t, &service);
                    Ok(())
                });
                match r {
                    Ok(p) => self.install(p, &format!("service {label} set")),
                    Err(e) => Response::err(format!("service {label} rejected: {e}")),
                }
            }
            Request::RemoveService { namespace, name } => {
                let label = service_label(namespace.as_deref(), &name);
                let ns = namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE);
                if !self.policy.services.iter().any(|s| s.name == name && s.namespace == ns) {
                    return Response::err(format!("no service {label}"));
                }
                let r = edit_policy(&self.policy, |t| {
                    array(t, "service").retain(|x| !is_service(x, ns, &name));
                    Ok(())
                });
                match r {
                    Ok(p) => self.install(p, &format!("service {label} removed")),
                    Err(e) => Response::err(e),
                }
            }
            Request::TestStallWorker { worker, secs } => {
                if !self.test_hooks {
                    return Response::err("test hooks are off (they need warden run --test-hooks)");
                }
                let Some(w) = self.workers.get(worker) else {
                    return Response::err(format!("no worker {worker}"));
                };
                let secs = secs.min(60);
                tracing::warn!(worker, "test hook: telling worker {worker} to stall {secs} s");
                match w.send(Command::TestStall(Duration::from_secs(secs))) {
                    Ok(()) => Response::ok(Reply::Done(format!("worker {worker} told to stall {secs} s"))),
                    Err(_) => Response::err(format!("worker {worker} is gone")),
                }
            }
            Request::TestKillWorker { worker } => {
                if !self.test_hooks {
                    return Response::err("test hooks are off (they need warden run --test-hooks)");
                }
                let Some(w) = self.workers.get(worker) else {
                    return Response::err(format!("no worker {worker}"));
                };
                tracing::warn!(worker, "test hook: telling worker {worker} to panic");
                match w.send(Command::TestPanic) {
                    Ok(()) => Response::ok(Reply::Done(format!("worker {worker} told to panic"))),
                    Err(_) => Response::err(format!("worker {worker} is gone")),
                }
            }
            Request::SetMode { id, mode } => {
                let r = edit_policy(&self.policy, |t| {
                    let ws = array(t, "workload");
                    let w = ws
                        .iter_mut()
                        .find(|x| x.get("id").and_then(|v| v.as_str()) == Some(id.as_str()))
                        .and_then(|x| x.as_table_mut())
                        .ok_or_else(|| format!("no workload {id:?}"))?;
                    w.insert("mode".into(), mode.clone().into());
                    Ok(())
                });
                match r {
                    Ok(p) => self.install(p, &format!("workload {id} mode {mode}")),
                    Err(e) => Response::err(e),
                }
            }
        }
    }

    /// SIGHUP: applies what of `new` can change at runtime (the policy file and default mode,
    /// through the same generation swap as `policy apply`, so no frame is dropped; the control
    /// socket's access lists and limits) and logs the sections that need a restart. Returns
    /// what happened; a policy that does not load leaves the running one.
    fn reload(&mut self, new: Config, gate: &crate::access::Gate) -> String {
        let mut outcome = Vec::new();
        match load_policy(&new) {
            Ok(p) => {
                let r = self.install(p, "policy reloaded (SIGHUP)");
                match (r.ok, r.reply, r.error) {
                    (true, Some(Reply::Done(m)), _) => outcome.push(m),
                    (_, _, Some(e)) => outcome.push(e),
                    _ => {}
                }
            }
            Err(e) => {
                tracing::error!("SIGHUP: policy not reloaded, the running one stays: {e}");
                outcome.push(format!("policy not reloaded: {e}"));
            }
        }
        if new.control != self.cfg.control {
            if new.control.opens_socket() != self.cfg.control.opens_socket() {
                tracing::warn!("SIGHUP: [control] access lists changed who may connect; the socket's mode changes on restart");
            }
            gate.set_config(new.control.clone());
            outcome.push("control access reloaded".into());
        }
        if new.threats != self.cfg.threats {
            let p = new.threats.resolve();
            for w in &self.workers {
                let _ = w.send(Command::Threats(p));
            }
            outcome.push("threat actions reloaded".into());
            self.cfg.threats = new.threats.clone();
        }
        let fixed = [
            ("dataplane", new.dataplane != self.cfg.dataplane),
            ("sessions", new.sessions != self.cfg.sessions),
            ("inspection", new.inspection != self.cfg.inspection),
            ("defrag", new.defrag != self.cfg.defrag),
            ("normalization", new.normalization != self.cfg.normalization),
            ("inline", new.inline != self.cfg.inline),
            ("attach", new.attach != self.cfg.attach),
            ("monitor", new.monitor != self.cfg.monitor),
            (
                "policy (dns_*)",
                new.policy.names() != self.cfg.policy.names(),
            ),
        ];
        for (name, changed) in fixed {
            if changed {
                tracing::warn!("SIGHUP: [{name}] changed; it applies at the next restart (inline pairs: wardenctl add-pair/remove-pair)");
                outcome.push(format!("[{name}] needs a restart"));
            }
        }
        self.cfg.policy = new.policy;
        self.cfg.control = new.control;
        outcome.join("; ")
    }

    /// The discovered workloads ([`Request::ListWorkloads`]), each with the policy workload
    /// its addresses belong to (or whose selector selects it).
    fn workloads(&self) -> Vec<warden_control::WorkloadInfo> {
        self.identities
            .list()
            .into_iter()
            .map(|d| {
                let owner = d
                    .ips
                    .iter()
                    .find_map(|ip| self.enforced.workloads.iter().find(|w| w.ips.contains(ip)))
                    .or_else(|| self.enforced.selecting(&d.identity));
                warden_control::WorkloadInfo {
                    attachment: d.attachment,
                    workload: owner.map(|w| w.id.clone()),
                    identity: d.identity,
                    ips: d.ips.iter().map(ToString::to_string).collect(),
                }
            })
            .collect()
    }

    /// `p` with the addresses of the discovered workloads its selectors take, the notes of
    /// addresses left out logged.
    fn fill(&self, p: &Policy) -> Policy {
        let (mut filled, notes) = p.with_discovered(&self.identities.list());
        for n in notes.iter().take(16) {
            tracing::warn!("policy selector: {n}");
        }
        (filled.bound, filled.uplinks) = self.attachment_bindings();
        filled
    }

    /// Publishes the running policy again when the discovered workloads changed since it was
    /// filled and some workload selects by identity, replying once every worker enforces it
    /// (`None`: nothing to do). The attach stage calls this after each
    /// [`crate::identity::Registry::set`] / `remove`, before it replies, so a selected
    /// workload's next frame meets its policy; the control loop also calls it every tick.
    pub(crate) fn identities_changed(&mut self) -> Option<Response> {
        let g = self.identities.generation();
        if g == self.identities_seen {
            return None;
        }
        if self.policy.workloads.iter().all(|w| w.select.is_empty()) {
            self.identities_seen = g;
            return None;
        }
        let resp = self.install(self.policy.clone(), "discovered workloads changed");
        if !resp.ok {
            tracing::warn!("policy with discovered workloads not published: {:?}", resp.error);
        }
        Some(resp)
    }

    /// Compiles and publishes `p` (with the attachments' implicit workloads,
    /// [`Self::with_attachments`], and the discovered workloads its selectors take); replies
    /// once every worker enforces it.
    fn install(&mut self, p: Policy, what: &str) -> Response {
        let p = match self.with_attachments(p, None) {
            Ok(p) => p,
            Err(e) => return Response::err(format!("policy rejected, the running one stays: {e}")),
        };
        let r = self.install_exact(p, what);
        if r.ok {
            self.save_attachments();
        }
        r
    }

    /// Compiles and publishes `p` as it is (its selectors filled with the discovered
    /// workloads); replies once every worker enforces it.
    fn install_exact(&mut self, p: Policy, what: &str) -> Response {
        let seen = self.identities.generation();
        let enforced = self.fill(&p);
        let compiled = match CompiledPolicy::compile(&enforced) {
            Ok(c) => c,
            Err(e) => return Response::err(format!("policy rejected, the running one stays: {e}")),
        };
        // A service claiming another workload's address is the policy describing
        // CVE-2020-8554: said once per install (at most MAX_LOGGED lines).
        const MAX_LOGGED: usize = 16;
        let conflicts = compiled.external_ip_conflicts();
        for (s, ip, w) in conflicts.iter().take(MAX_LOGGED) {
            tracing::warn!(
                "service {} claims {ip}, an address of workload {:?} that does not back it: traffic to it is reported as k8s_external_ip_mitm (CVE-2020-8554)",
                compiled.service_label(*s),
                compiled.workload_id(*w)
            );
        }
        if conflicts.len() > MAX_LOGGED {
            tracing::warn!("{} more service externalIPs claim other workloads' addresses", conflicts.len() - MAX_LOGGED);
        }
        let g = self.policy_handle.publish(compiled);
        // Sleeping workers pick it up now, not at their next timer.
        for w in &self.workers {
            w.wake();
        }
        let (w, r, s) = (p.workloads.len(), p.rules.len(), p.services.len());
        self.policy = p;
        self.enforced = enforced;
        self.identities_seen = seen;
        self.update_pretrigger();
        if !self.policy_handle.wait_loaded(g, Duration::from_secs(2)) {
            tracing::warn!(generation = g, "a worker did not load the new policy within 2 s");
        }
        let services = if s > 0 { format!(", {s} service(s)") } else { String::new() };
        let msg = format!("{what}: {w} workload(s), {r} rule(s){services}, generation {g}");
        tracing::info!("{msg}");
        Response::ok(Reply::Done(msg))
    }

    /// Hands the workers the pre-trigger ring's selection under the running policy, when it
    /// names workloads (their addresses may have changed).
    fn update_pretrigger(&self) {
        if self.cfg.capture.pretrigger_workloads.is_empty() || self.cfg.capture.pretrigger_frames == 0 {
            return;
        }
        match crate::capture::pretrigger_program(&self.cfg.capture, &self.enforced) {
            Ok(p) => {
                for w in &self.workers {
                    let _ = w.send(Command::PretriggerProgram(p.clone()));
                }
            }
            Err(e) => tracing::warn!("pre-trigger selection not updated: {e}"),
        }
    }

    /// Starts a capture of `spec` ([`crate::capture::manager::Manager::start`]) and hands it
    /// to every worker; a stream's receiver comes back with its description.
    fn start_capture(
        &mut self,
        spec: &warden_control::CaptureSpec,
    ) -> Result<(warden_control::CaptureInfo, Option<crossbeam::channel::Receiver<crate::capture::writer::StreamMsg>>), String> {
        let ifaces: Vec<crate::capture::manager::IfaceSlot> = self
            .pairs
            .iter()
            .flat_map(|p| [(p.a.name.clone(), p.a.slot, p.b.slot), (p.b.name.clone(), p.b.slot, p.a.slot)])
            .collect();
        let t = crate::capture::manager::Target { ifaces: &ifaces, policy: &self.enforced };
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
        let started = self.captures.start(spec, &t, now)?;
        for w in &self.workers {
            let _ = w.send(Command::Capture(started.active.clone()));
        }
        Ok((started.info, started.stream))
    }

    /// Compiles and publishes `p` as the shadow policy (None: drops the shadow); replies once
    /// every worker evaluates it.
    fn install_shadow(&mut self, p: Option<Policy>) -> Response {
        let compiled = match p.as_ref().map(|p| CompiledPolicy::compile(&self.fill(p))).transpose() {
            Ok(c) => c,
            Err(e) => return Response::err(format!("shadow policy rejected: {e}")),
        };
        let g = self.policy_handle.publish_shadow(compiled);
        for w in &self.workers {
            w.wake();
        }
        if !self.policy_handle.wait_shadow_loaded(g, Duration::from_secs(2)) {
            tracing::warn!(generation = g, "a worker did not load the shadow policy within 2 s");
        }
        let msg = match &p {
            Some(p) => format!(
                "shadow policy loaded: {} workload(s), {} rule(s), shadow generation {g}; live sessions are compared on their next frame",
                p.workloads.len(),
                p.rules.len()
            ),
            None => format!("shadow policy cleared (shadow generation {g})"),
        };
        self.shadow = p;
        tracing::info!("{msg}");
        Response::ok(Reply::Done(msg))
    }

    /// The workers' shadow diff sums merged (None: no shadow loaded).
    fn shadow_diff(&self) -> Option<warden_control::PolicyDiff> {
        let (shadow, g) = self.policy_handle.load_shadow();
        let shadow = shadow?;
        let replies: Vec<_> = self
            .workers
            .iter()
            .map(|w| {
                let (tx, rx) = mpsc::channel();
                let _ = w.send(Command::ShadowDiff { reply: tx });
                rx
            })
            .collect();
        let mut all = crate::shadow::ShadowDiff { generation: g, ..Default::default() };
        for rx in replies {
            if let Ok(d) = rx.recv_timeout(Duration::from_secs(5)) {
                all.merge(&d);
            }
        }
        Some(all.to_reply(&shadow))
    }

    /// `policy promote`: the shadow becomes the running policy in one generation swap
    /// ([`PolicyHandle::promote`]); replies once every worker enforces it.
    fn promote(&mut self) -> Response {
        let Some(p) = self.shadow.take() else {
            return Response::err("no shadow policy is loaded (wardenctl policy shadow FILE)");
        };
        let Some((g, sg)) = self.policy_handle.promote() else {
            return Response::err("no shadow policy is loaded");
        };
        for w in &self.workers {
            w.wake();
        }
        let (w, r) = (p.workloads.len(), p.rules.len());
        self.enforced = self.fill(&p);
        self.policy = p;
        self.update_pretrigger();
        if !self.policy_handle.wait_loaded(g, Duration::from_secs(2)) || !self.policy_handle.wait_shadow_loaded(sg, Duration::from_secs(2)) {
            tracing::warn!(generation = g, "a worker did not load the promoted policy within 2 s");
        }
        let mut msg = format!("shadow policy promoted: {w} workload(s), {r} rule(s), generation {g}");
        // The promoted policy is the shadow as written: the attachments' implicit workloads
        // are added back in one more generation.
        if self.attachments.iter().any(|a| a.implicit) {
            let r = self.install(self.policy.clone(), "attachments' workloads added to the promoted policy");
            if let Some(Reply::Done(m)) = r.reply {
                msg = format!("{msg}; {m}");
            }
        }
        tracing::info!("{msg}");
        Response::ok(Reply::Done(msg))
    }

    /// Sessions decided per rule and per mode default, summed over workers.
    /// The catalogue with the running actions and every worker's counters added up.
    fn threat_infos(&self) -> Vec<warden_control::ThreatInfo> {
        let stats = self.worker_stats();
        let actions = self.cfg.threats.resolve();
        crate::detect::ThreatId::ALL
            .iter()
            .map(|t| {
                let i = *t as usize;
                warden_control::ThreatInfo {
                    id: t.as_str().into(),
                    summary: t.summary().into(),
                    severity: t.severity().as_str().into(),
                    action: actions.action(*t).as_str().into(),
                    hits: stats.iter().map(|w| w.threats.hits[i]).sum(),
                    dropped_frames: stats.iter().map(|w| w.threats.dropped[i]).sum(),
                }
            })
            .collect()
    }

    fn policy_stats(&self) -> Vec<warden_control::RuleStats> {
        self.policy_stats_from(&self.worker_stats())
    }

    /// [`Self::policy_stats`] from workers' stats answers already taken.
    fn policy_stats_from(&self, stats: &[WorkerStats]) -> Vec<warden_control::RuleStats> {
        let (current, g) = self.policy_handle.load();
        let rules = current.rules();
        let mut by_rule = vec![0u64; rules.len()];
        let mut defaults = [0u64; 3];
        for w in stats {
            if w.hits.generation != g {
                continue;
            }
            for (a, b) in by_rule.iter_mut().zip(&w.hits.rules) {
                *a += b;
            }
            for (a, b) in defaults.iter_mut().zip(&w.hits.defaults) {
                *a += b;
            }
        }
        let mut out: Vec<warden_control::RuleStats> = rules
            .iter()
            .zip(by_rule)
            .map(|(r, n)| warden_control::RuleStats {
                id: Some(r.id),
                default: None,
                action: r.action.as_str().to_string(),
                sessions: n,
            })
            .collect();
        for (m, n) in [("learn", "learned"), ("alert", "violation"), ("protect", "denied")]
            .iter()
            .zip(defaults)
        {
            out.push(warden_control::RuleStats {
                id: None,
                default: Some(m.0.to_string()),
                action: m.1.to_string(),
                sessions: n,
            });
        }
        out
    }

    fn shutdown(&mut self) {
        if self.cfg.attach.on_stop == "detach" {
            let names: Vec<String> = self.attachments.iter().map(|a| a.name.clone()).collect();
            for n in names {
                if let Err(e) = self.detach(&n) {
                    tracing::warn!("stopping: {e}");
                }
            }
        }
        let pairs = std::mem::take(&mut self.pairs);
        for p in &pairs {
            // An attachment's pair keeps Warden's program and maps (its fail mode, as after a
            // crash) for the next start to adopt (`[attach] on_stop = "keep"`).
            if self.attachments.iter().any(|a| a.host == p.a.name && a.near == p.b.name) {
                continue;
            }
            for i in [&p.a, &p.b] {
                if let Err(e) = self.xdp.detach(i.ifindex) {
                    tracing::warn!("{e}");
                }
                let _ = self.xdp.remove_iface(i.ifindex, u32::from(i.slot));
            }
        }
        for w in &self.workers {
            let _ = w.send(Command::Shutdown);
        }
    }
}

/// Runs the daemon until SIGINT/SIGTERM. `cfg` is the merged configuration (file + flags).
///
/// # Errors
/// Start-up failures: the XDP program does not load (not root?), the socket cannot be created,
/// or a configured inline pair cannot be set up. Everything attached so far is detached first.
pub fn run(cfg: Config, opts: RunOptions) -> anyhow::Result<()> {
    install_panic_hook();
    // Block the stop signals before any thread starts, so only the signal thread receives them.
    let mut stop = SigSet::empty();
    stop.add(Signal::SIGINT);
    stop.add(Signal::SIGTERM);
    stop.add(Signal::SIGHUP);
    stop.thread_block()?;

    let mode = match cfg.dataplane.xdp_mode {
        XdpMode::Native => AttachMode::Native,
        XdpMode::Generic => AttachMode::Generic,
    };
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    let d = cfg.dataplane.clone();
    // Two map entries (flow directions) per session on the fast path, all workers together.
    let fast_entries = d.fast_config().map_or(0, |f| f.max.saturating_mul(d.workers).saturating_mul(2));
    let xdp = XdpProgram::load_with_fast(mode, u32::try_from(fast_entries).unwrap_or(u32::MAX))
        .map_err(|e| anyhow::anyhow!("{e} (Warden needs root or CAP_BPF+CAP_NET_ADMIN)"))?;
    let fast_slots = Arc::new(crate::fastpath::FastSlots::default());
    let identities = Arc::new(crate::identity::Registry::new());
    let hub = Arc::new(
        Hub::new(d.report_buffer_bytes, d.report_interval)
            .with_identities(identities.clone())
            .with_pending_max(d.workers.saturating_mul(cfg.sessions.max))
            .with_export(crate::export::Exporters::start(&cfg.export)?),
    );
    let policy = load_policy(&cfg).map_err(|e| anyhow::anyhow!("{e}"))?;
    let policy_handle = Arc::new(PolicyHandle::new(
        CompiledPolicy::compile(&policy).map_err(|e| anyhow::anyhow!("{e}"))?,
        d.workers,
    ));

    let (report_tx, report_rx) = bounded::<worker::WorkerReport>(d.report_queue);
    let meshes = worker::mesh(d.workers, 512).map_err(|e| anyhow::anyhow!("worker wake-up eventfd: {e}"))?;
    // One expectation table for all workers: a TFTP transfer may be owned by another worker
    // than its request.
    let expectations = Arc::new(ExpectTable::default());
    // One table of DNS names for all workers: a client's DNS flow and its later connections
    // may be owned by different workers.
    let names = Arc::new(NameTable::new(cfg.policy.names()));
    // Captures: the writer thread and one ring per worker; pre-trigger files counted over all.
    let slot_names: Arc<dyn Fn(u16) -> String + Send + Sync> = {
        let hub = hub.clone();
        Arc::new(move |slot| hub.name(slot))
    };
    let (captures, mut rings) =
        crate::capture::manager::Manager::new(&cfg.capture, d.workers, slot_names).map_err(|e| anyhow::anyhow!("{e}"))?;
    let pretrigger_files = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let pretrigger_program = crate::capture::pretrigger_program(&cfg.capture, &policy).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut workers = Vec::new();
    let mut handles = Vec::new();
    let mut pulses: Vec<Arc<crate::service::Pulse>> = Vec::new();
    let mut worker_cores = Vec::new();
    // Live sessions per source, counted across the workers (`ip_src_session_limit`).
    let source_counts = crate::threat::limit::SourceCounts::new(cfg.threats.resolve().limits.session_limit.cells);
    for (i, mesh) in meshes.into_iter().enumerate() {
        let (tx, rx) = bounded::<Command>(64);
        let core = match &d.cores {
            Some(c) => c.get(i).copied(),
            None => Some(i % core_affinity::get_core_ids().map(|c| c.len()).unwrap_or(1).max(1)),
        };
        worker_cores.extend(core);
        let wcfg = WorkerConfig {
            index: i,
            core,
            batch: d.batch as usize,
            poll: d.poll_config(),
            report_interval: Duration::from_secs(d.report_interval),
        };
        let mut insp = Inspector::with_table(cfg.sessions.table(), d.malformed, cfg.inspection.engine());
        insp.share_expectations(expectations.clone());
        insp.set_exceptions(cfg.exceptions());
        insp.set_normalization(cfg.normalization.resolve(false));
        insp.threats.set_policy(cfg.threats.resolve());
        insp.threats.share_source_counts(source_counts.clone());
        insp.set_defrag(cfg.defrag.config());
        insp.set_tunnels(&cfg.tunnels);
        insp.share_names(names.clone());
        if let Some(fc) = d.fast_config() {
            let table = xdp.fast_table().map_err(|e| anyhow::anyhow!("{e}"))?;
            insp.set_fast_path(crate::fastpath::FastPath::new(fc, Box::new(table), fast_slots.clone()));
        }
        let reports = report_tx.clone();
        let pulse = Arc::new(crate::service::Pulse::default());
        pulses.push(pulse.clone());
        let link = WorkerLink::new(tx, mesh.waker());
        let pre = crate::capture::manager::Manager::pretrigger(&cfg.capture, pretrigger_files.clone(), pretrigger_program.clone());
        let tap = crate::capture::Tap::new(i, rings.get_mut(i).and_then(Option::take), pre);
        handles.push(spawn_vital(format!("warden-w{i}"), {
            let h = policy_handle.clone();
            move || Worker::new(wcfg, insp, mesh, rx, reports).with_policy(h).with_pulse(pulse).with_tap(tap).run()
        })?);
        workers.push(link);
    }
    drop(report_tx);

    let report_queue = report_rx.clone();
    let reporter = {
        let hub = hub.clone();
        let interval = Duration::from_secs(d.report_interval);
        spawn_vital("warden-report".into(), move || {
            avoid_cores(&worker_cores);
            hub.run_reporter(report_rx, interval)
        })?
    };

    let mut daemon = Daemon {
        cfg: cfg.clone(),
        xdp,
        pairs: Vec::new(),
        monitors: Vec::new(),
        next_zone: 0,
        workers,
        hub: hub.clone(),
        started: Instant::now(),
        enforced: policy.clone(),
        policy,
        identities_seen: identities.generation(),
        identities,
        policy_handle: policy_handle.clone(),
        shadow: None,
        expectations,
        test_hooks: opts.test_hooks,
        names,
        report_queue,
        fast_slots,
        captures,
        attachments: Vec::new(),
        watch_refused: std::collections::HashSet::new(),
    };
    // Every worker enforces the start-up policy before the first pair is attached.
    if !policy_handle.wait_loaded(policy_handle.generation(), Duration::from_secs(5)) {
        tracing::warn!("a worker did not load the policy within 5 s");
    }
    for p in &cfg.inline {
        if let Err(e) = daemon.add_pair(p) {
            daemon.shutdown();
            for h in handles {
                let _ = h.join();
            }
            anyhow::bail!("{e}");
        }
    }
    for m in &cfg.monitor {
        let spec = warden_control::AttachSpec { target: m.iface.clone(), monitor: true, ..Default::default() };
        if let Err(e) = daemon.start_monitor(&m.iface, &spec) {
            daemon.shutdown();
            for h in handles {
                let _ = h.join();
            }
            anyhow::bail!("{e}");
        }
    }

    daemon.adopt_attachments();

    let (ctl_tx, ctl_rx) = mpsc::channel::<CtlMsg>();
    let socket = Path::new(&d.socket).to_path_buf();
    let listener = match control::bind(&socket, cfg.control.opens_socket()) {
        Ok(l) => l,
        Err(e) => {
            daemon.shutdown();
            for h in handles {
                let _ = h.join();
            }
            anyhow::bail!("{e}");
        }
    };
    let gate = crate::access::Gate::new(cfg.control.clone());
    {
        let ctl = ctl_tx.clone();
        let hub = hub.clone();
        let gate = gate.clone();
        thread::Builder::new()
            .name("warden-accept".into())
            .spawn(move || control::serve(listener, ctl, hub, gate))?;
    }
    match &cfg.metrics.listen {
        Some(addr) => {
            let ctl = ctl_tx.clone();
            let source: crate::metrics::Source = Arc::new(move || {
                let (tx, rx) = mpsc::channel();
                ctl.send(CtlMsg::Metrics(tx)).ok()?;
                rx.recv_timeout(Duration::from_secs(5)).ok().map(|b| *b)
            });
            let parsed = addr.parse().map_err(|e| anyhow::anyhow!("metrics.listen {addr}: {e}"));
            match parsed.and_then(|a| crate::metrics::serve(a, source).map_err(|e| anyhow::anyhow!("metrics {addr}: {e}"))) {
                Ok(local) => tracing::info!("metrics on http://{local}/metrics"),
                Err(e) => {
                    daemon.shutdown();
                    for h in handles {
                        let _ = h.join();
                    }
                    let _ = std::fs::remove_file(&socket);
                    return Err(e);
                }
            }
        }
        None => tracing::info!("metrics off ([metrics] listen or --metrics ADDR turns them on)"),
    }
    {
        let ctl = ctl_tx.clone();
        thread::Builder::new().name("warden-signal".into()).spawn(move || {
            while let Ok(sig) = stop.wait() {
                if sig == Signal::SIGHUP {
                    let _ = ctl.send(CtlMsg::Reload);
                    continue;
                }
                let _ = ctl.send(CtlMsg::Shutdown(sig));
                break;
            }
        })?;
    }
    let mut service = crate::service::Service::new(pulses);
    service.ready(daemon.pairs.len(), policy_handle.generation());
    tracing::info!(
        workers = d.workers,
        socket = %socket.display(),
        pairs = daemon.pairs.len(),
        "warden running"
    );

    let mut last_tick = Instant::now();
    loop {
        if last_tick.elapsed() >= TICK {
            last_tick = Instant::now();
            supervise(&handles, &reporter);
            daemon.check_queues();
            daemon.check_fast_path();
            daemon.check_attachments();
            daemon.watch_bridges();
            daemon.identities_changed();
        }
        let wait = service
            .tick(daemon.pairs.len(), policy_handle.generation())
            .min(TICK.saturating_sub(last_tick.elapsed()));
        let msg = match ctl_rx.recv_timeout(wait) {
            Ok(m) => m,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        match msg {
            CtlMsg::Request(req, reply) => {
                // A bug in one request's handling answers that request with an error; the
                // daemon keeps forwarding and serving.
                let resp = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| daemon.handle(req)))
                    .unwrap_or_else(|_| {
                        Response::err("internal error handling the request (logged); warden keeps running")
                    });
                let _ = reply.send(resp);
            }
            CtlMsg::Reload => {
                service.reloading();
                let loaded = match &opts.reload {
                    Some(r) => r(),
                    None => Ok(daemon.cfg.clone()),
                };
                let outcome = match loaded {
                    Ok(new) => daemon.reload(new, &gate),
                    Err(e) => {
                        tracing::error!("SIGHUP: configuration not reloaded, the running one stays: {e}");
                        format!("configuration not reloaded: {e}")
                    }
                };
                tracing::info!("SIGHUP: {outcome}");
                service.reloaded(daemon.pairs.len(), policy_handle.generation(), &outcome);
            }
            CtlMsg::Shutdown(sig) => {
                tracing::info!("{sig}: stopping");
                service.stopping();
                break;
            }
            CtlMsg::Metrics(reply) => {
                let snap = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| daemon.metrics_snapshot()));
                if let Ok(s) = snap {
                    let _ = reply.send(Box::new(s));
                }
            }
            CtlMsg::CaptureStream(spec, reply) => {
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| daemon.start_capture(&spec)))
                    .unwrap_or_else(|_| Err("internal error starting the capture (logged)".into()))
                    .and_then(|(info, rx)| rx.map(|rx| (info, rx)).ok_or_else(|| "not a stream".to_string()));
                let _ = reply.send(r);
            }
        }
    }
    daemon.shutdown();
    for h in handles {
        let _ = h.join();
    }
    daemon.captures.shutdown();
    let _ = reporter.join();
    hub.export().stop();
    let _ = std::fs::remove_file(&socket);
    tracing::info!("stopped; XDP detached from every interface");
    Ok(())
}

/// How often the control loop checks its threads and re-reads the interfaces' rx queue counts.
const TICK: Duration = Duration::from_secs(1);

/// Exits the process ([`EXIT_THREAD_FAILED`]) when a worker or the reporter has ended while
/// Warden runs: a panic already exits in [`spawn_vital`]; this catches any other way out of a
/// worker's loop, so no queue stays bound to a socket nobody serves.
fn supervise(workers: &[thread::JoinHandle<()>], reporter: &thread::JoinHandle<()>) {
    let dead = workers
        .iter()
        .chain(std::iter::once(reporter))
        .find(|h| h.is_finished())
        .map(|h| h.thread().name().unwrap_or("unnamed").to_string());
    if let Some(name) = dead {
        tracing::error!(
            "thread {name} ended while warden runs: exiting with status {EXIT_THREAD_FAILED}; every inline pair falls to its fail mode until warden is restarted"
        );
        std::process::exit(EXIT_THREAD_FAILED);
    }
}

/// Names of interface slots, shared by the control loop and the reporter.
pub(crate) type Names = HashMap<u16, String>;

/// Keeps the calling thread off `cores` (the workers') when the machine has other cores: the
/// reporter's work grows with session churn, so under a flood it would otherwise take time
/// from a worker on its own core, and the worker's rx ring would overflow.
fn avoid_cores(cores: &[usize]) {
    let Some(all) = core_affinity::get_core_ids() else { return };
    let mut set = nix::sched::CpuSet::new();
    let mut others = 0;
    for c in all.iter().filter(|c| !cores.contains(&c.id)) {
        if set.set(c.id).is_ok() {
            others += 1;
        }
    }
    if others > 0 {
        if let Err(e) = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set) {
            tracing::warn!("could not keep the reporter off the workers' cores: {e}");
        }
    }
}
