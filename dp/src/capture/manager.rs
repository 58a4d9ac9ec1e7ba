//! The control thread's side of captures: checking and resolving a `capture start`
//! (target → one libpcap expression and a set of interfaces; limits; the output's name),
//! handing the capture to the writer and the workers, `list`, `stop`, `delete`.
//!
//! **Names cannot leave the directory.** A file name is 1 to 128 of `A-Z a-z 0-9 . _ -`, not
//! starting with `.` and without `..` (so no `/`, no `../../etc/x`); the file is created new
//! (never replacing one, never through a link: `O_EXCL | O_NOFOLLOW`) with mode 0600 in
//! `[capture] dir`, created 0700 when missing.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::channel::{bounded, Receiver, Sender};
use warden_control::{CaptureInfo, CaptureSpec};

use super::ring::{self, Producer};
use super::writer::{self, Disk, Limits, Msg, Output, StreamMsg, WriterConfig};
use super::{bpf, slot_bits, Active, CaptureConfig, Frames, Shared};
use crate::policy::Policy;

/// Captures of this run remembered for `capture list` (the oldest finished ones go first).
const HISTORY: usize = 256;

/// Chunks a stream's connection thread may have waiting (each at most 64 KiB; the writer's
/// backlog bound applies on top).
const STREAM_CHUNKS: usize = 64;

/// Checks a capture file name (see the module doc).
///
/// # Errors
/// What is wrong with it.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok_chars = name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if name.is_empty() || name.len() > 128 || !ok_chars || name.starts_with('.') || name.contains("..") {
        return Err(format!(
            "capture name {name:?} refused: 1 to 128 letters, digits, '.', '_' or '-', not starting with '.' and without \"..\" (a name in the capture directory, not a path)"
        ));
    }
    Ok(())
}

/// An interface a capture may name: (name, slot, its peer's slot).
pub type IfaceSlot = (String, u16, u16);

/// What the control loop knows that a capture's target refers to.
pub struct Target<'a> {
    /// The inline pairs' interfaces.
    pub ifaces: &'a [IfaceSlot],
    /// The running policy (workloads).
    pub policy: &'a Policy,
}

/// A capture's filter resolved: the libpcap expression (empty: all), the interface slots
/// (None: all) and their names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The expression.
    pub expr: String,
    /// Interface slots.
    pub slots: Option<Vec<u16>>,
    /// Their names.
    pub ifaces: Vec<String>,
}

/// `hosts` entry as a pcap-filter primitive (`host A`, `net A/N`), checked here so nothing but
/// an address reaches the expression.
fn host_primitive(h: &str) -> Result<String, String> {
    let bad = || format!("{h:?} is not an address or CIDR");
    match h.split_once('/') {
        None => {
            let a: std::net::IpAddr = h.parse().map_err(|_| bad())?;
            Ok(format!("host {a}"))
        }
        Some((a, n)) => {
            let a: std::net::IpAddr = a.parse().map_err(|_| bad())?;
            let n: u8 = n.parse().map_err(|_| bad())?;
            if n > if a.is_ipv4() { 32 } else { 128 } {
                return Err(bad());
            }
            Ok(format!("net {a}/{n}"))
        }
    }
}

/// Resolves `spec`'s target against the pairs and the policy into one expression and a set of
/// interfaces.
///
/// # Errors
/// An unknown interface or workload, a malformed address, protocol or expression (libpcap's
/// message).
pub fn resolve(spec: &CaptureSpec, t: &Target<'_>) -> Result<Resolved, String> {
    let mut parts: Vec<String> = Vec::new();
    let mut slots: Option<Vec<u16>> = None;
    let restrict = |slots: &mut Option<Vec<u16>>, pair: &[u16]| {
        *slots = Some(match slots.take() {
            None => pair.to_vec(),
            Some(s) => s.into_iter().filter(|x| pair.contains(x)).collect(),
        });
    };
    let pair_of = |name: &str| t.ifaces.iter().find(|(n, _, _)| n == name).map(|(_, s, p)| [*s, *p]);
    if let Some(i) = &spec.iface {
        let pair = pair_of(i).ok_or_else(|| format!("no inline pair has interface {i:?}"))?;
        restrict(&mut slots, &pair);
    }
    if let Some(id) = &spec.workload {
        let w = t.policy.workloads.iter().find(|w| &w.id == id).ok_or_else(|| format!("no workload {id:?} in the running policy"))?;
        if !w.ips.is_empty() {
            let hosts: Vec<String> = w.ips.iter().map(|a| format!("host {a}")).collect();
            parts.push(format!("({})", hosts.join(" or ")));
        }
        if let Some(i) = &w.iface {
            let pair = pair_of(i).ok_or_else(|| format!("workload {id:?} sits behind {i:?}, which is in no inline pair"))?;
            restrict(&mut slots, &pair);
        }
    }
    if !spec.hosts.is_empty() {
        let hosts = spec.hosts.iter().map(|h| host_primitive(h)).collect::<Result<Vec<_>, _>>()?;
        parts.push(format!("({})", hosts.join(" or ")));
    }
    if !spec.ports.is_empty() {
        let ports: Vec<String> = spec.ports.iter().map(|p| format!("port {p}")).collect();
        parts.push(format!("({})", ports.join(" or ")));
    }
    if let Some(p) = &spec.proto {
        let prim = match p.as_str() {
            "tcp" | "udp" | "icmp" | "icmp6" | "sctp" => p.clone(),
            n => match n.parse::<u8>() {
                Ok(n) => format!("(ip proto {n} or ip6 proto {n})"),
                Err(_) => return Err(format!("protocol {p:?}: tcp, udp, icmp, icmp6, sctp or a number")),
            },
        };
        parts.push(prim);
    }
    if let Some(f) = spec.filter.as_deref().map(str::trim).filter(|f| !f.is_empty()) {
        // Alone first: a complete expression, so the parentheses around it hold.
        bpf::compile(f).map_err(|e| e.to_string())?;
        parts.push(format!("({f})"));
    }
    let expr = parts.join(" and ");
    let mut ifaces: Vec<String> = Vec::new();
    if let Some(s) = &slots {
        if s.is_empty() {
            return Err("the interface and the workload's interface are in different pairs: nothing to capture".into());
        }
        ifaces = t.ifaces.iter().filter(|(_, slot, _)| s.contains(slot)).map(|(n, _, _)| n.clone()).collect();
    }
    Ok(Resolved { expr, slots, ifaces })
}

struct Entry {
    id: u32,
    name: String,
    shared: Arc<Shared>,
    resolved: Resolved,
    frames: Frames,
    started: String,
    limits: (u64, u64, Option<u64>, u32),
}

impl Entry {
    fn info(&self) -> CaptureInfo {
        let reason = self.shared.reason();
        CaptureInfo {
            id: Some(self.id),
            name: self.name.clone(),
            state: if reason.is_some() { "done" } else { "running" }.into(),
            stop_reason: reason.map(|r| r.as_str().to_string()),
            filter: self.resolved.expr.clone(),
            ifaces: self.resolved.ifaces.clone(),
            frames: match self.frames {
                Frames::All => "all",
                Frames::Forwarded => "forwarded",
                Frames::Dropped => "dropped",
            }
            .into(),
            packets: self.shared.frames.load(Ordering::Relaxed),
            bytes: self.shared.bytes.load(Ordering::Relaxed),
            lost: self.shared.lost.load(Ordering::Relaxed),
            started: self.started.clone(),
            duration_s: Some(self.limits.0),
            max_size: Some(self.limits.1),
            max_packets: self.limits.2,
            snaplen: Some(self.limits.3),
        }
    }
}

/// The captures of a daemon: its writer thread, the workers' ring ends, this run's captures.
pub struct Manager {
    cfg: CaptureConfig,
    dir: PathBuf,
    writer: Option<(Sender<Msg>, std::thread::JoinHandle<()>)>,
    disk: Arc<Disk>,
    next_id: u32,
    entries: Vec<Entry>,
}

/// A capture started with [`Manager::start`]: its first description, the stream's receiver
/// (for `stream`), and what the workers must be given.
pub struct Started {
    /// As `capture list` shows it.
    pub info: CaptureInfo,
    /// A stream's pcapng bytes (None for a file).
    pub stream: Option<Receiver<StreamMsg>>,
    /// For every worker ([`crate::worker::Command::Capture`]).
    pub active: Arc<Active>,
}

impl Manager {
    /// The captures of a daemon with `workers` workers: one ring each (their producer ends
    /// are returned, in worker order; none when `ring_bytes` is 0) and the writer thread,
    /// naming interfaces with `names`. The capture directory is created (0700) only when a
    /// file is first written into it.
    ///
    /// # Errors
    /// The thread cannot be spawned.
    pub fn new(
        cfg: &CaptureConfig,
        workers: usize,
        names: Arc<dyn Fn(u16) -> String + Send + Sync>,
    ) -> Result<(Manager, Vec<Option<Producer>>), String> {
        let dir = PathBuf::from(&cfg.dir);
        let disk = Arc::new(Disk::default());
        if cfg.ring_bytes == 0 {
            let m = Manager { cfg: cfg.clone(), dir, writer: None, disk, next_id: 1, entries: Vec::new() };
            return Ok((m, (0..workers).map(|_| None).collect()));
        }
        let (prods, conss): (Vec<_>, Vec<_>) = (0..workers).map(|_| ring::ring(cfg.ring_bytes)).unzip();
        let (tx, rx) = bounded(64);
        // A pre-trigger file: its frames, each at most a block of the snap length.
        let frames = (cfg.pretrigger_frames + cfg.pretrigger_after) as u64;
        let pretrigger_file_max = 4096 + frames * super::pcapng::block_len(cfg.pretrigger_snaplen, 64) + 4 * 256;
        let wcfg = WriterConfig { dir: dir.clone(), max_disk: cfg.max_disk_bytes, pretrigger_file_max, names };
        let d = disk.clone();
        let h = std::thread::Builder::new()
            .name("warden-capture".into())
            .spawn(move || writer::run(wcfg, conss, rx, d))
            .map_err(|e| format!("capture writer thread: {e}"))?;
        let m = Manager { cfg: cfg.clone(), dir, writer: Some((tx, h)), disk, next_id: 1, entries: Vec::new() };
        Ok((m, prods.into_iter().map(Some).collect()))
    }

    /// The pre-trigger ring of one worker as configured (None: off), keeping the frames
    /// `program` selects ([`super::pretrigger_program`]; None: all).
    pub fn pretrigger(
        cfg: &CaptureConfig,
        files: Arc<std::sync::atomic::AtomicUsize>,
        program: Option<bpf::Program>,
    ) -> Option<super::pretrigger::Pretrigger> {
        if cfg.pretrigger_frames == 0 || cfg.ring_bytes == 0 {
            return None;
        }
        Some(super::pretrigger::Pretrigger::new(
            cfg.pretrigger_sessions,
            cfg.pretrigger_frames,
            cfg.pretrigger_snaplen,
            cfg.pretrigger_after,
            program,
            cfg.pretrigger_max_files,
            files,
        ))
    }

    /// The disk accounting (bytes used and reserved in the capture directory).
    pub fn disk(&self) -> &Disk {
        &self.disk
    }

    fn running(&self) -> usize {
        self.entries.iter().filter(|e| e.shared.reason().is_none()).count()
    }

    /// Starts a capture of `spec` (see [`warden_control::CaptureSpec`]); the caller hands
    /// [`Started::active`] to every worker.
    ///
    /// # Errors
    /// Capture is off, too many run, the target or a limit is invalid, the name is refused
    /// or taken, the disk budget has no room.
    pub fn start(&mut self, spec: &CaptureSpec, t: &Target<'_>, now_ns: u64) -> Result<Started, String> {
        let Some((tx, _)) = &self.writer else {
            return Err("capture is off ([capture] ring_bytes = 0)".into());
        };
        if self.running() >= self.cfg.max_active {
            return Err(format!("{} captures run already ([capture] max_active)", self.cfg.max_active));
        }
        let resolved = resolve(spec, t)?;
        let program = if resolved.expr.is_empty() { None } else { Some(bpf::compile(&resolved.expr).map_err(|e| e.to_string())?) };
        let frames = match spec.frames.as_deref() {
            None => Frames::All,
            Some(f) => Frames::from_name(f).ok_or_else(|| format!("frames {f:?}: all, forwarded or dropped"))?,
        };
        let duration = spec.duration_s.unwrap_or(self.cfg.default_duration_s);
        if duration == 0 || duration > self.cfg.max_duration_s {
            return Err(format!("duration {duration} s: 1..={} ([capture] max_duration_s)", self.cfg.max_duration_s));
        }
        let max_size = spec.max_size.unwrap_or(self.cfg.default_max_size).min(self.cfg.max_disk_bytes);
        if max_size < 1024 {
            return Err(format!("max size {max_size} bytes: at least 1024"));
        }
        if spec.max_packets == Some(0) {
            return Err("max packets: at least 1".into());
        }
        let snaplen = spec.snaplen.unwrap_or(65_535);
        if !(1..=65_535).contains(&snaplen) {
            return Err(format!("snap length {snaplen}: 1..=65535"));
        }
        let id = self.next_id;
        let (name, output, stream) = if spec.stream {
            let (stx, srx) = bounded(STREAM_CHUNKS);
            ("-".to_string(), Output::Stream(stx), Some(srx))
        } else {
            let name = match &spec.name {
                Some(n) => {
                    check_name(n)?;
                    if n.ends_with(".pcapng") { n.clone() } else { format!("{n}.pcapng") }
                }
                None => {
                    let stamp: String = crate::record::rfc3339(now_ns).chars().take(19).filter(|c| c.is_ascii_digit() || *c == 'T').collect();
                    format!("capture-{id}-{stamp}.pcapng")
                }
            };
            check_name(&name)?;
            if self.entries.iter().any(|e| e.name == name && e.shared.reason().is_none()) {
                return Err(format!("capture {name} is being written"));
            }
            writer::ensure_dir(&self.dir)?;
            let path = self.dir.join(&name);
            (name, Output::File(path), None)
        };
        let shared = Arc::new(Shared::default());
        let comment = format!(
            "warden capture {id}: filter {:?}, interfaces {:?}, frames {}, duration {duration} s, max size {max_size} bytes{}",
            resolved.expr,
            resolved.ifaces,
            spec.frames.as_deref().unwrap_or("all"),
            spec.max_packets.map(|n| format!(", max packets {n}")).unwrap_or_default()
        );
        let limits = Limits { until: Instant::now() + Duration::from_secs(duration), max_size, max_packets: spec.max_packets, snaplen };
        let (rtx, rrx) = std::sync::mpsc::channel();
        tx.send(Msg::Start { id, output, limits, shared: shared.clone(), comment, reply: rtx })
            .map_err(|_| "the capture writer is gone".to_string())?;
        rrx.recv_timeout(Duration::from_secs(5)).map_err(|_| "the capture writer did not answer".to_string())??;
        self.next_id += 1;
        let active = Arc::new(Active {
            id,
            slots: resolved.slots.as_deref().map(slot_bits),
            program,
            frames,
            snaplen,
            shared: shared.clone(),
        });
        let entry = Entry {
            id,
            name,
            shared,
            resolved,
            frames,
            started: crate::record::rfc3339(now_ns),
            limits: (duration, max_size, spec.max_packets, snaplen),
        };
        let info = entry.info();
        self.entries.push(entry);
        if self.entries.len() > HISTORY {
            if let Some(i) = self.entries.iter().position(|e| e.shared.reason().is_some()) {
                self.entries.remove(i);
            }
        }
        tracing::info!(id, name = %info.name, filter = %info.filter, "capture started");
        Ok(Started { info, stream, active })
    }

    /// Stops capture `id`; its output is complete when this returns.
    ///
    /// # Errors
    /// No such capture, or it ended already.
    pub fn stop(&mut self, id: u32) -> Result<CaptureInfo, String> {
        let e = self.entries.iter().find(|e| e.id == id).ok_or_else(|| format!("no capture {id}"))?;
        if e.shared.reason().is_some() {
            return Err(format!("capture {id} has ended ({})", e.info().stop_reason.unwrap_or_default()));
        }
        self.end(id, super::StopReason::Stopped);
        Ok(self.entries.iter().find(|e| e.id == id).map(Entry::info).unwrap_or_default())
    }

    /// Ends capture `id` for `why` and waits (up to 5 s) for its output to be closed.
    pub fn end(&mut self, id: u32, why: super::StopReason) {
        let Some((tx, _)) = &self.writer else { return };
        let (rtx, rrx) = std::sync::mpsc::channel();
        if tx.send(Msg::Stop { id, why, reply: rtx }).is_ok() {
            let _ = rrx.recv_timeout(Duration::from_secs(5));
        }
        if let Some(e) = self.entries.iter().find(|e| e.id == id) {
            e.shared.finish(why);
        }
    }

    /// This run's captures, then the other pcapng files of the directory (pre-trigger files,
    /// earlier runs), by name.
    pub fn list(&self) -> Vec<CaptureInfo> {
        let mut v: Vec<CaptureInfo> = self.entries.iter().map(Entry::info).collect();
        let mut files: Vec<CaptureInfo> = std::fs::read_dir(&self.dir)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .filter_map(|e| {
                        let name = e.file_name().to_string_lossy().to_string();
                        let m = e.metadata().ok()?;
                        (name.ends_with(".pcapng") && m.is_file() && !v.iter().any(|c| c.name == name)).then(|| CaptureInfo {
                            name,
                            state: "file".into(),
                            bytes: m.len(),
                            ..Default::default()
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        files.sort_by(|a, b| a.name.cmp(&b.name));
        v.extend(files);
        v
    }

    /// Deletes capture file `name` of the directory.
    ///
    /// # Errors
    /// The name is refused, the file is being written, is not a regular file, or cannot be
    /// removed.
    pub fn delete(&mut self, name: &str) -> Result<String, String> {
        check_name(name)?;
        if self.entries.iter().any(|e| e.name == name && e.shared.reason().is_none()) {
            return Err(format!("capture {name} is being written: stop it first"));
        }
        let path = self.dir.join(name);
        let m = std::fs::symlink_metadata(&path).map_err(|e| format!("{name}: {e}"))?;
        if !m.is_file() {
            return Err(format!("{name} is not a capture file"));
        }
        std::fs::remove_file(&path).map_err(|e| format!("{name}: {e}"))?;
        if let Some((tx, _)) = &self.writer {
            let _ = tx.send(Msg::Deleted(m.len()));
        }
        self.entries.retain(|e| e.name != name);
        Ok(format!("capture file {name} deleted ({} bytes)", m.len()))
    }

    /// Ends every capture and the writer thread.
    pub fn shutdown(&mut self) {
        if let Some((tx, h)) = self.writer.take() {
            let _ = tx.send(Msg::Shutdown);
            let _ = h.join();
        }
        for e in &self.entries {
            e.shared.finish(super::StopReason::Shutdown);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_leave_the_directory() {
        for bad in ["../../etc/x", "/etc/x", "a/b", "..", ".hidden", "x..pcapng", "", "a b", "a\0b", &"x".repeat(129)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        for good in ["web-http", "capture-1-20261203T101500.pcapng", "a.b_c-d"] {
            assert!(check_name(good).is_ok(), "{good:?}");
        }
    }

    fn policy() -> Policy {
        Policy::from_toml(
            "[[workload]]\nid = \"web\"\nips = [\"198.18.0.2\", \"2001:db8::2\"]\n\
             [[workload]]\nid = \"db\"\nips = [\"198.18.0.3\"]\niface = \"b1\"\n",
        )
        .unwrap()
    }

    /// Targets compile into one expression (checked by libpcap) and a set of interfaces.
    #[test]
    fn targets_resolve() {
        let p = policy();
        let ifaces: Vec<IfaceSlot> = vec![("a0".into(), 0, 1), ("b0".into(), 1, 0), ("a1".into(), 2, 3), ("b1".into(), 3, 2)];
        let t = Target { ifaces: &ifaces, policy: &p };
        let spec = CaptureSpec {
            workload: Some("web".into()),
            filter: Some("tcp port 80".into()),
            ports: vec![80, 8080],
            hosts: vec!["198.18.0.0/24".into()],
            proto: Some("tcp".into()),
            ..Default::default()
        };
        let r = resolve(&spec, &t).unwrap();
        assert_eq!(
            r.expr,
            "(host 198.18.0.2 or host 2001:db8::2) and (net 198.18.0.0/24) and (port 80 or port 8080) and tcp and (tcp port 80)"
        );
        assert_eq!(r.slots, None);
        bpf::compile(&r.expr).unwrap();
        let r = resolve(&CaptureSpec { iface: Some("a1".into()), ..Default::default() }, &t).unwrap();
        assert_eq!((r.expr.as_str(), r.slots, r.ifaces), ("", Some(vec![2, 3]), vec!["a1".to_string(), "b1".to_string()]));
        let r = resolve(&CaptureSpec { workload: Some("db".into()), ..Default::default() }, &t).unwrap();
        assert_eq!((r.expr.as_str(), r.slots), ("(host 198.18.0.3)", Some(vec![3, 2])));
        // Errors: unknown names, an interface of another pair than the workload's, bad
        // addresses and protocols, an expression libpcap refuses or one that would escape its
        // parentheses.
        for bad in [
            CaptureSpec { iface: Some("nope".into()), ..Default::default() },
            CaptureSpec { workload: Some("nope".into()), ..Default::default() },
            CaptureSpec { workload: Some("db".into()), iface: Some("a0".into()), ..Default::default() },
            CaptureSpec { hosts: vec!["198.18.0.0/33".into()], ..Default::default() },
            CaptureSpec { hosts: vec!["host 1.2.3.4 or 1".into()], ..Default::default() },
            CaptureSpec { proto: Some("tcp or udp".into()), ..Default::default() },
            CaptureSpec { filter: Some("tcp port".into()), ..Default::default() },
            CaptureSpec { filter: Some("tcp) or (udp".into()), ..Default::default() },
        ] {
            assert!(resolve(&bad, &t).is_err(), "{bad:?}");
        }
    }
}
