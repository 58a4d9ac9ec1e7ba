//! `warden replay`: the inspection pipeline over a capture file, no root needed.
//!
//! Reads pcap (any byte order, micro- or nanosecond timestamps) and pcapng (any byte order,
//! several sections, per-interface link types, `if_tsresol` and `if_tsoffset`) through the same
//! [`Inspector`] the workers use, with the capture's timestamps as the clock. At the end every
//! session, live or ended, yields one connection record. IP fragments are reassembled as inline
//! ([`crate::defrag`]): the frames the pipeline holds are only counted as released.
//!
//! **Link types** (the tcpdump.org registry, `LINKTYPE_*`; [`Link`]): Ethernet (1) as is;
//! Linux cooked captures SLL (113) and SLL2 (276), raw IP (101, and 12 and 14, libpcap's
//! `DLT_RAW` on BSD/OS and OpenBSD), IPv4 (228), IPv6 (229), BSD loopback `DLT_NULL` (0, a
//! 4-byte address family in the capturing host's byte order) and OpenBSD loopback `LOOP`
//! (108, network byte order). A non-Ethernet frame is copied once behind a synthetic Ethernet
//! header into a buffer reused for the whole replay, so the decoder, reassembly and origin
//! checks stay the inline path's, which only ever sees Ethernet; records therefore count such
//! a frame as the Ethernet frame Warden would see inline (IP length + 14 bytes). The synthetic
//! header's MACs are zero (SLL/SLL2: the source is the captured link-layer address), so
//! workloads with `macs` cannot be told apart in such captures.
//!
//! **Pipelines.** [`replay_file_threads`] and `warden replay --threads N` split the flows over
//! N pipelines by the hash the workers use, with the same records as one pipeline (see there
//! for what per-core detectors see). Each session's record is made as the session ends
//! (`warden replay`: its JSON line, [`replay_json`]); the records are sorted by first frame at
//! the end. Idle sessions are expired on one schedule of the capture clock ([`TICK_NS`]).
//!
//! Frames that cannot be inspected are counted by reason ([`Skipped`]): on an interface whose
//! link type is not one of the above, shorter than their link-layer header, of a non-IP
//! address family (loopback), or on an interface the pcapng file never declared. A pcap file of
//! an unsupported link type is an error naming it; so is a capture whose frames were all
//! skipped ([`ReplayError::LinkType`], [`ReplayError::NothingInspected`]).

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use pcap_file::pcap::PcapReader;
use pcap_file::pcapng::blocks::interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption};
use pcap_file::pcapng::{Block, PcapNgReader};
use pcap_file::DataLink;
use warden_control::ConnectionRecord;

use crate::config::Config;
use crate::expect::ExpectTable;
use crate::inspect::{FrameMeta, Inspector};
use crate::normalize::ChecksumPolicy;
use crate::record::to_record;
use crate::session::SessionSnapshot;
use crate::wire;

/// Totals of one replay.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReplaySummary {
    /// Frames read.
    pub frames: u64,
    /// Bytes of those frames (captured length, link-layer header included).
    pub bytes: u64,
    /// Frames given to the pipeline (read minus skipped).
    pub inspected: u64,
    /// Sessions reported.
    pub sessions: u64,
    /// Malformed frames.
    pub malformed: u64,
    /// Frames not inspected, by reason.
    pub skipped: Skipped,
    /// Interfaces (pcapng) or files (pcap) whose link type is not supported, with their frames.
    pub unsupported: Vec<UnsupportedLink>,
    /// Frames claiming a workload's address from a MAC not in its `macs` (dropped in protect
    /// mode; they belong to no session, so no record counts them).
    pub spoofed: u64,
    /// IP datagrams reassembled from fragments (each inspected as one packet).
    pub reassembled: u64,
    /// Fragment frames released with a forward verdict (their datagram's).
    pub fragments_forwarded: u64,
    /// Fragment frames released with a drop verdict: their datagram's, or, for datagrams that
    /// could not be reassembled (including those incomplete at the end of the capture, which
    /// time out then), the exception or malformed policy's.
    pub fragments_dropped: u64,
    /// Tunnel decapsulation counters ([`crate::tunnel::TunnelStats`]).
    pub tunnels: crate::tunnel::TunnelStats,
    /// Wall-clock seconds the replay took (reading, inspecting and making the records; for
    /// [`replay_json`] their JSON text too, not writing it out).
    pub seconds: f64,
    /// CPU time of the whole process when the replay ended (user + system, s;
    /// `CLOCK_PROCESS_CPUTIME_ID`: start-up and every thread included).
    pub cpu_s: f64,
    /// Pipelines the frames were split over (`--threads`).
    pub threads: usize,
    /// CPU time of each pipeline's thread (user + system, s; `CLOCK_THREAD_CPUTIME_ID`; with one
    /// pipeline, the thread that also read the capture).
    pub thread_cpu_s: Vec<f64>,
    /// Threat detections and frames dropped by threat actions, per threat with any (id,
    /// detections, frames dropped), in catalogue order.
    pub threats: Vec<(&'static str, u64, u64)>,
    /// The threat events the live path would have sent (merged on the packet clock: at most
    /// one per (threat, client, server) per 10 s of capture time), in order.
    pub threat_events: Vec<warden_control::Event>,
    /// With a shadow policy ([`replay_file_with`]): what it would change, the answer
    /// `wardenctl policy diff` gives inline ([`crate::shadow`]).
    pub shadow_diff: Option<warden_control::PolicyDiff>,
}

/// Frames a replay could not give to the pipeline, by reason (frames).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Skipped {
    /// On an interface whose link type is not supported ([`ReplaySummary::unsupported`]).
    pub link_type: u64,
    /// Shorter than their link-layer header (SLL 16, SLL2 20, loopback 4 bytes).
    pub truncated: u64,
    /// Loopback frames whose address family is not IPv4 or IPv6 (OSI, IPX, ...).
    pub not_ip: u64,
    /// pcapng packets naming an interface no Interface Description Block declared.
    pub no_interface: u64,
}

impl Skipped {
    /// All skipped frames.
    pub fn total(&self) -> u64 {
        self.link_type + self.truncated + self.not_ip + self.no_interface
    }
}

impl std::fmt::Display for Skipped {
    /// `"3 link type, 1 truncated link header"`: the non-zero reasons, or `"none"`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = [
            (self.link_type, "link type"),
            (self.truncated, "truncated link header"),
            (self.not_ip, "not IP"),
            (self.no_interface, "undeclared interface"),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
        if parts.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

/// An interface of a link type replay does not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsupportedLink {
    /// The pcapng interface id (index of its Interface Description Block in its section);
    /// `None` for a pcap file.
    pub interface: Option<u32>,
    /// The interface's `if_name` option, if any.
    pub name: Option<String>,
    /// The link type (`LINKTYPE_*` value).
    pub link_type: u32,
    /// Frames captured on it.
    pub frames: u64,
}

impl std::fmt::Display for UnsupportedLink {
    /// `interface 1 "eth0" (link type 147, USER0)` or `link type 147 (USER0)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = link_type_name(self.link_type);
        match self.interface {
            Some(i) => {
                write!(f, "interface {i}")?;
                if let Some(n) = &self.name {
                    write!(f, " {n:?}")?;
                }
                write!(f, " (link type {}, {name})", self.link_type)
            }
            None => write!(f, "link type {} ({name})", self.link_type),
        }
    }
}

/// The registry name of a link type (`USER0`, `PPP`), or `unknown`.
fn link_type_name(link_type: u32) -> String {
    match DataLink::from(link_type) {
        DataLink::Unknown(_) => "unknown".to_string(),
        d => format!("{d:?}"),
    }
}

/// What replay reads (for error messages).
const SUPPORTED: &str = "Ethernet (1), Linux cooked SLL (113) and SLL2 (276), raw IP (101, 12, 14), \
                         IPv4 (228), IPv6 (229), BSD loopback (0) and OpenBSD loopback (108)";

/// Errors of a replay.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// File path.
        path: String,
        /// I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a readable pcap/pcapng.
    #[error("{path}: {message}")]
    Format {
        /// File path.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A pcap file of a link type replay does not read.
    #[error("{path}: {link} is not supported; warden replay reads {SUPPORTED}")]
    LinkType {
        /// File path.
        path: String,
        /// The link type.
        link: UnsupportedLink,
    },
    /// The capture has frames but none could be inspected.
    #[error("{path}: none of its {frames} frames could be inspected (skipped: {skipped}){}", unsupported_list(.unsupported))]
    NothingInspected {
        /// File path.
        path: String,
        /// Frames read.
        frames: u64,
        /// Why they were skipped.
        skipped: Skipped,
        /// Interfaces of unsupported link types.
        unsupported: Vec<UnsupportedLink>,
    },
    /// The policy file could not be loaded.
    #[error("{message}")]
    Policy {
        /// What is wrong (file, line, field).
        message: String,
    },
}

/// `"; unsupported: interface 0 (link type 147, USER0), ..."`, or nothing.
fn unsupported_list(list: &[UnsupportedLink]) -> String {
    if list.is_empty() {
        return String::new();
    }
    let names: Vec<String> = list.iter().map(|u| u.to_string()).collect();
    format!("; unsupported: {}; warden replay reads {SUPPORTED}", names.join(", "))
}

/// How the frames of a link type reach the decoder, which reads Ethernet (tcpdump.org
/// link-layer header types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// `LINKTYPE_ETHERNET` (1): as captured.
    Ethernet,
    /// `LINKTYPE_LINUX_SLL` (113): a 16-byte header; the protocol field is the EtherType.
    Sll,
    /// `LINKTYPE_LINUX_SLL2` (276): a 20-byte header; the protocol field is the EtherType.
    Sll2,
    /// `LINKTYPE_RAW` (101) and `DLT_RAW` (12, 14): an IPv4 or IPv6 packet, told apart by its
    /// version field (anything but 6 goes to the IPv4 decoder, which rejects a bad version).
    Raw,
    /// `LINKTYPE_IPV4` (228): an IPv4 packet.
    Ipv4,
    /// `LINKTYPE_IPV6` (229): an IPv6 packet.
    Ipv6,
    /// `LINKTYPE_NULL` (0, BSD loopback): a 4-byte address family in the capturing host's byte
    /// order (either is accepted), then the packet.
    Null,
    /// `LINKTYPE_LOOP` (108, OpenBSD loopback): a 4-byte address family, big-endian.
    Loop,
}

impl Link {
    /// The link of a `LINKTYPE_*` value, `None` when replay does not read it.
    pub fn of(link_type: u32) -> Option<Link> {
        Some(match link_type {
            1 => Link::Ethernet,
            113 => Link::Sll,
            276 => Link::Sll2,
            101 | 12 | 14 => Link::Raw,
            228 => Link::Ipv4,
            229 => Link::Ipv6,
            0 => Link::Null,
            108 => Link::Loop,
            _ => return None,
        })
    }
}

/// Why a frame was not given to the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Skip {
    /// Shorter than its link-layer header.
    Truncated,
    /// A loopback address family other than IPv4 and IPv6.
    NotIp,
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;

/// The EtherType of a BSD loopback address family (`AF_INET` 2; `AF_INET6` 24 on NetBSD,
/// OpenBSD and BSD/OS, 28 on FreeBSD and DragonFly, 30 on Darwin), as libpcap and Wireshark
/// read them.
fn loopback_ethertype(family: u32) -> Option<u16> {
    match family {
        2 => Some(ETHERTYPE_IPV4),
        24 | 28 | 30 => Some(ETHERTYPE_IPV6),
        _ => None,
    }
}

/// The frame as the decoder reads it: `data` itself for Ethernet, else `data`'s network-layer
/// packet behind a synthetic 14-byte Ethernet header written into `buf` (cleared first; it
/// keeps its capacity, so a replay allocates only for a frame larger than any before).
fn ethernet_frame<'a>(link: Link, data: &'a [u8], buf: &'a mut Vec<u8>) -> Result<&'a [u8], Skip> {
    let (ethertype, src, payload): (u16, &[u8], &[u8]) = match link {
        Link::Ethernet => return Ok(data),
        Link::Sll => {
            // packet type, ARPHRD type, address length, address (8), protocol (RFC-less:
            // tcpdump.org LINKTYPE_LINUX_SLL).
            let h = data.get(..16).ok_or(Skip::Truncated)?;
            let alen = usize::from(u16::from_be_bytes([h[4], h[5]])).min(6);
            (u16::from_be_bytes([h[14], h[15]]), &h[6..6 + alen], &data[16..])
        }
        Link::Sll2 => {
            // protocol, reserved, interface index, ARPHRD type, packet type, address length,
            // address (8) (tcpdump.org LINKTYPE_LINUX_SLL2).
            let h = data.get(..20).ok_or(Skip::Truncated)?;
            let alen = usize::from(h[11]).min(6);
            (u16::from_be_bytes([h[0], h[1]]), &h[12..12 + alen], &data[20..])
        }
        Link::Raw => {
            let v6 = data.first().is_some_and(|b| b >> 4 == 6);
            (if v6 { ETHERTYPE_IPV6 } else { ETHERTYPE_IPV4 }, &[], data)
        }
        Link::Ipv4 => (ETHERTYPE_IPV4, &[], data),
        Link::Ipv6 => (ETHERTYPE_IPV6, &[], data),
        Link::Null | Link::Loop => {
            let h: [u8; 4] = data.get(..4).ok_or(Skip::Truncated)?.try_into().map_err(|_| Skip::Truncated)?;
            let family = if link == Link::Loop {
                u32::from_be_bytes(h)
            } else {
                // Host byte order of the capturing machine: families are small numbers, so a
                // value that does not fit 16 bits was written in the other order.
                let le = u32::from_le_bytes(h);
                if le > 0xffff {
                    u32::from_be_bytes(h)
                } else {
                    le
                }
            };
            (loopback_ethertype(family).ok_or(Skip::NotIp)?, &[], &data[4..])
        }
    };
    buf.clear();
    buf.extend_from_slice(&[0; 6]);
    let mut mac = [0u8; 6];
    mac[..src.len()].copy_from_slice(src);
    buf.extend_from_slice(&mac);
    buf.extend_from_slice(&ethertype.to_be_bytes());
    buf.extend_from_slice(payload);
    Ok(buf)
}

/// One pcapng interface: how its frames are read and its clock.
struct Iface {
    /// How its frames are read, or, for an unsupported link type, its index in
    /// [`ReplaySummary::unsupported`].
    link: Result<Link, usize>,
    /// Bytes captured at most per frame (0: no limit).
    snaplen: u32,
    /// Timestamp units per second (`if_tsresol`, default 10^6).
    units: u128,
    /// Seconds added to every timestamp (`if_tsoffset`).
    offset_s: u64,
}

impl Iface {
    /// A timestamp of this interface in ns since the epoch.
    fn ns(&self, raw: u128) -> u64 {
        let ns = raw.saturating_mul(1_000_000_000) / self.units;
        u64::try_from(ns).unwrap_or(u64::MAX).saturating_add(self.offset_s.saturating_mul(1_000_000_000))
    }
}

/// Replays `path` and returns one record per session, ordered by first frame, plus totals
/// (one pipeline: [`replay_file_threads`] with 1 thread).
///
/// # Errors
/// [`ReplayError`] when the file cannot be read or is not a capture file, when a pcap file's
/// link type is not supported, or when the capture has frames and none could be inspected. A
/// truncated last packet ends the replay without error (tcpdump leaves such files when killed).
pub fn replay_file(
    path: &Path,
    cfg: &Config,
) -> Result<(Vec<ConnectionRecord>, ReplaySummary), ReplayError> {
    replay_file_threads(path, cfg, 1)
}

/// [`replay_file`] over `threads` pipelines (at least 1): each frame goes to the pipeline that
/// owns its flow by the hash the workers use (`owner_spread % threads` of the flow, or of the
/// flow an ICMP error quotes: [`crate::icmp::owner_key`]; frames that are not IP, or that do
/// not decode, go to the first), so both directions of a flow and the fragments of its
/// datagrams meet in one pipeline. Records, counters and verdicts are those of one pipeline
/// except where per-core state spans flows of several host pairs, as with several workers:
/// the per-server and per-destination detectors on the packet clock (`slowloris`, floods),
/// the shared per-source session count, and DNS names learnt by another pipeline for `fqdn`
/// rules (learnt when that pipeline gets there).
///
/// # Errors
/// As [`replay_file`].
pub fn replay_file_threads(
    path: &Path,
    cfg: &Config,
    threads: usize,
) -> Result<(Vec<ConnectionRecord>, ReplaySummary), ReplayError> {
    replay_file_with(path, cfg, threads, None)
}

/// As [`replay_file_threads`], with the policy file `shadow` evaluated beside the configured
/// policy as the shadow policy ([`crate::shadow`], `warden replay --policy A --shadow B`):
/// records carry `shadow_verdict` / `shadow_rule_id` where it differs, and the summary has its
/// diff (summed over the pipelines).
///
/// # Errors
/// As [`replay_file`]; [`ReplayError::Policy`] when the shadow file does not load.
pub fn replay_file_with(
    path: &Path,
    cfg: &Config,
    threads: usize,
    shadow: Option<&str>,
) -> Result<(Vec<ConnectionRecord>, ReplaySummary), ReplayError> {
    let (parts, summary) = run(path, cfg, threads, shadow, Records::default)?;
    let mut all: Vec<(Order, ConnectionRecord)> = parts.into_iter().flat_map(|r| r.0).collect();
    all.sort_unstable_by_key(|(o, _)| *o);
    Ok((all.into_iter().map(|(_, r)| r).collect(), summary))
}

/// [`replay_file_threads`] writing the records as JSON lines (one [`ConnectionRecord`] per
/// line, ordered by first frame) to `out`: each pipeline serializes the records of its
/// sessions as they end into one buffer of its own, so a replay holds the JSON text of its
/// records (about 1 KB each), not the sessions.
///
/// # Errors
/// As [`replay_file`]; [`ReplayError::Io`] (path `"output"`) when writing fails.
pub fn replay_json(path: &Path, cfg: &Config, threads: usize, out: &mut dyn Write) -> Result<ReplaySummary, ReplayError> {
    replay_json_with(path, cfg, threads, None, out)
}

/// [`replay_json`] with a shadow policy file (see [`replay_file_with`]).
///
/// # Errors
/// As [`replay_json`]; [`ReplayError::Policy`] when the shadow file does not load.
pub fn replay_json_with(
    path: &Path,
    cfg: &Config,
    threads: usize,
    shadow: Option<&str>,
    out: &mut dyn Write,
) -> Result<ReplaySummary, ReplayError> {
    let (parts, summary) = run(path, cfg, threads, shadow, JsonLines::default)?;
    let mut lines: Vec<(Order, usize, usize, usize)> = Vec::with_capacity(parts.iter().map(|p| p.lines.len()).sum());
    for (t, p) in parts.iter().enumerate() {
        lines.extend(p.lines.iter().map(|&(o, from, to)| (o, t, from, to)));
    }
    lines.sort_unstable_by_key(|l| l.0);
    let io = |source| ReplayError::Io { path: "output".into(), source };
    for (_, t, from, to) in lines {
        out.write_all(&parts[t].bytes[from..to]).map_err(io)?;
    }
    out.flush().map_err(io)?;
    Ok(summary)
}

/// The order of records: by first frame (capture time), then by the frame that created the
/// session (its index among the inspected frames), then by session id (sessions one frame
/// created, in the order it created them). Unique per replay; the same whatever the number of
/// pipelines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Order {
    /// First frame's timestamp (ns since the epoch).
    first_ns: u64,
    /// Index of the creating frame among the inspected ones.
    created: u64,
    /// Session id (per pipeline).
    id: u64,
}

/// What a pipeline makes of the final snapshot of each session.
trait Collect: Send {
    /// Takes the final snapshot of one session.
    fn add(&mut self, order: Order, s: &SessionSnapshot);
}

/// Connection records with their order.
#[derive(Default)]
struct Records(Vec<(Order, ConnectionRecord)>);

impl Collect for Records {
    fn add(&mut self, order: Order, s: &SessionSnapshot) {
        self.0.push((order, to_record(s, |_| "pcap".to_string())));
    }
}

/// Connection records as JSON lines in one buffer: `lines` holds each line's order and byte
/// range in `bytes` (newline included).
#[derive(Default)]
struct JsonLines {
    bytes: Vec<u8>,
    lines: Vec<(Order, usize, usize)>,
}

impl Collect for JsonLines {
    fn add(&mut self, order: Order, s: &SessionSnapshot) {
        let from = self.bytes.len();
        let r = to_record(s, |_| "pcap".to_string());
        // Serializing plain structs, maps with string keys and numbers into memory cannot fail.
        if serde_json::to_writer(&mut self.bytes, &r).is_ok() {
            self.bytes.push(b'\n');
            self.lines.push((order, from, self.bytes.len()));
        } else {
            self.bytes.truncate(from);
        }
    }
}

/// What every pipeline shares (as the daemon's workers do).
struct Shared {
    policy: Option<Arc<crate::policy::CompiledPolicy>>,
    /// The shadow policy every pipeline evaluates beside `policy`, if any.
    shadow: Option<Arc<crate::policy::CompiledPolicy>>,
    expectations: Arc<ExpectTable>,
    names: Arc<crate::names::NameTable>,
    sources: Arc<crate::threat::limit::SourceCounts>,
}

impl Shared {
    fn new(cfg: &Config, shadow: Option<&str>) -> Result<Shared, ReplayError> {
        let policy = if cfg.policy.file.is_some() || cfg.policy.default_mode.is_some() {
            let policy = crate::daemon::load_policy(cfg).map_err(|message| ReplayError::Policy { message })?;
            let compiled = crate::policy::CompiledPolicy::compile(&policy)
                .map_err(|e| ReplayError::Policy { message: e.to_string() })?;
            Some(Arc::new(compiled))
        } else {
            None
        };
        let mut shared = Shared::with_policy(cfg, policy);
        if let Some(file) = shadow {
            let mut c = cfg.clone();
            c.policy.file = Some(file.to_string());
            let policy = crate::daemon::load_policy(&c).map_err(|message| ReplayError::Policy { message })?;
            let compiled = crate::policy::CompiledPolicy::compile(&policy)
                .map_err(|e| ReplayError::Policy { message: format!("shadow {file}: {e}") })?;
            shared.shadow = Some(Arc::new(compiled));
        }
        Ok(shared)
    }

    fn with_policy(cfg: &Config, policy: Option<Arc<crate::policy::CompiledPolicy>>) -> Shared {
        Shared {
            policy,
            shadow: None,
            expectations: Arc::new(ExpectTable::default()),
            names: Arc::new(crate::names::NameTable::new(cfg.policy.names())),
            sources: crate::threat::limit::SourceCounts::new(cfg.threats.resolve().limits.session_limit.cells),
        }
    }
}

/// One inspection pipeline of a replay: an [`Inspector`] set up as a worker's, and what it
/// produced.
struct Pipeline<C> {
    insp: Inspector,
    out: C,
    /// Reused buffer of ended sessions' snapshots.
    snaps: Vec<SessionSnapshot>,
    /// For session id `i + 1`: the index of the inspected frame that created it.
    created: Vec<u64>,
    /// Threat events with the index of the frame after which they were taken, in order.
    events: Vec<(u64, warden_control::Event)>,
    /// Threat events taken so far (compared with the merger's count).
    events_taken: u64,
    /// Sessions handed to the collector.
    reported: u64,
    fragments_forwarded: u64,
    fragments_dropped: u64,
}

impl<C: Collect> Pipeline<C> {
    fn new(cfg: &Config, shared: &Shared, out: C) -> Self {
        let mut insp = Inspector::with_table(cfg.sessions.table(), cfg.dataplane.malformed, cfg.inspection.engine());
        if let Some(p) = &shared.policy {
            insp.set_policy(p.clone(), 1);
        }
        if shared.shadow.is_some() {
            insp.set_shadow(shared.shadow.clone(), 1);
        }
        insp.set_exceptions(cfg.exceptions());
        insp.set_normalization(cfg.normalization.resolve(true));
        insp.threats.set_policy(cfg.threats.resolve());
        insp.threats.share_source_counts(shared.sources.clone());
        insp.set_defrag(cfg.defrag.config());
        insp.set_tunnels(&cfg.tunnels);
        insp.share_expectations(shared.expectations.clone());
        insp.share_names(shared.names.clone());
        Pipeline {
            insp,
            out,
            snaps: Vec::new(),
            created: Vec::new(),
            events: Vec::new(),
            events_taken: 0,
            reported: 0,
            fragments_forwarded: 0,
            fragments_dropped: 0,
        }
    }

    /// Ends the sessions idle past their timeout at `ts_ns` (ns since the epoch), as the
    /// worker's expiry does between batches ([`Ticks`]).
    #[inline(never)] // a stage of its own in perf/replay/profile.sh
    fn tick(&mut self, ts_ns: u64) {
        self.insp.sessions.expire(ts_ns, usize::MAX);
        if self.insp.sessions.ended_pending() > 0 {
            self.drain();
        }
    }

    /// Inspects Ethernet frame `frame` captured at `ts_ns` (ns since the epoch), the `index`th
    /// inspected frame of the capture. Datagrams incomplete past the reassembly timeout fail
    /// first (checked on every frame: it is one comparison when nothing is due).
    #[inline(never)] // a stage of its own in perf/replay/profile.sh
    fn frame(&mut self, index: u64, ts_ns: u64, frame: &[u8]) {
        let insp = &mut self.insp;
        insp.expire_fragments(ts_ns);
        insp.process_frame(frame, FrameMeta::new(0, 0, ts_ns), 0);
        let created = insp.sessions.stats().created;
        while (self.created.len() as u64) < created {
            self.created.push(index);
        }
        self.count_releases();
        self.insp.flush_threats(ts_ns);
        self.take_events(index);
        if self.insp.sessions.ended_pending() > 0 {
            self.drain();
        }
    }

    /// Hands the ended sessions' snapshots to the collector.
    fn drain(&mut self) {
        self.snaps.clear();
        self.insp.drain_ended(&mut self.snaps);
        for s in &self.snaps {
            let order = self.order(s);
            self.out.add(order, s);
        }
        self.reported += self.snaps.len() as u64;
        self.snaps.clear();
    }

    fn order(&self, s: &SessionSnapshot) -> Order {
        let id = s.session.id;
        let created = usize::try_from(id).ok().and_then(|i| self.created.get(i.wrapping_sub(1))).copied().unwrap_or(u64::MAX);
        Order { first_ns: s.session.first_ns, created, id }
    }

    /// Counts the frames the pipeline released (a capture has nothing to transmit) and clears
    /// them.
    fn count_releases(&mut self) {
        for (r, tokens) in self.insp.releases().iter() {
            let n = tokens.len() as u64;
            if r.verdict == crate::inspect::Verdict::Forward {
                self.fragments_forwarded += n;
            } else {
                self.fragments_dropped += n;
            }
        }
        self.insp.clear_releases();
    }

    /// Takes the inspector's queued threat events (after frame `index`).
    fn take_events(&mut self, index: u64) {
        if self.insp.threats.merge_stats().events == self.events_taken {
            return;
        }
        let mut hits = Vec::new();
        self.insp.drain_threats_upto(&mut hits, usize::MAX);
        self.events_taken += hits.len() as u64;
        for (h, snap) in hits {
            let connection = match snap {
                Some(s) => to_record(&s, |_| "pcap".to_string()),
                None => crate::record::hit_record(&h),
            };
            let threat = crate::record::threat_record(&h);
            self.events.push((index, warden_control::Event::Threat { threat, connection }));
        }
    }

    /// Ends the replay at `last_ns` (the capture's latest timestamp): incomplete datagrams
    /// fail as timed out, sessions idle by then end, the rest are reported live, pending
    /// threat events go out.
    fn finish(mut self, last_ns: u64) -> Finished<C> {
        self.insp.expire_fragments(u64::MAX);
        self.count_releases();
        self.insp.sessions.expire(last_ns, usize::MAX);
        self.drain();
        for s in self.insp.snapshot(usize::MAX) {
            let order = self.order(&s);
            self.out.add(order, &s);
            self.reported += 1;
        }
        self.insp.threats.flush_all(last_ns);
        self.take_events(u64::MAX);
        let insp = &self.insp;
        Finished {
            sessions: self.reported,
            malformed: insp.stats.malformed.iter().sum(),
            spoofed: insp.stats.spoofed,
            tunnels: insp.stats.tunnels,
            reassembled: insp.defrag_stats().reassembled,
            fragments_forwarded: self.fragments_forwarded,
            fragments_dropped: self.fragments_dropped,
            threats: insp.threats.stats,
            events: self.events,
            shadow_diff: insp.shadow_diff.clone(),
            cpu_s: thread_cpu_s(),
            out: self.out,
        }
    }
}

/// What a pipeline hands back at the end.
struct Finished<C> {
    /// Sessions reported.
    sessions: u64,
    malformed: u64,
    spoofed: u64,
    tunnels: crate::tunnel::TunnelStats,
    reassembled: u64,
    fragments_forwarded: u64,
    fragments_dropped: u64,
    threats: crate::threat::ThreatStats,
    events: Vec<(u64, warden_control::Event)>,
    /// What the shadow policy would change in this pipeline's sessions.
    shadow_diff: crate::shadow::ShadowDiff,
    /// CPU time of the pipeline's thread (s).
    cpu_s: f64,
    out: C,
}

/// CPU time of the calling thread (user + system, s; `CLOCK_THREAD_CPUTIME_ID`), 0 if it
/// cannot be read.
fn thread_cpu_s() -> f64 {
    cpu_s(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
}

fn cpu_s(clock: nix::time::ClockId) -> f64 {
    nix::time::clock_gettime(clock).map_or(0.0, |t| t.tv_sec() as f64 + t.tv_nsec() as f64 * 1e-9)
}

/// When the pipelines expire idle sessions: before the first frame whose timestamp is at least
/// [`TICK_NS`] past the last expiry's (on the capture's clock, one schedule for every pipeline,
/// so the sessions that end are the same whatever the number of pipelines). The workers
/// expire between batches; a session whose next frame comes less than a tick after its
/// timeout may go on where inline it would have ended.
#[derive(Default)]
struct Ticks {
    /// Timestamp (ns) from which the next frame is preceded by an expiry.
    next_ns: u64,
}

/// Capture time between session expiries in a replay (ns).
pub const TICK_NS: u64 = 10_000_000;

/// Keeps nothing (the pipeline that decides `auto` checksums for the others).
struct Discard;

impl Collect for Discard {
    fn add(&mut self, _: Order, _: &SessionSnapshot) {}
}

impl Ticks {
    /// True when the frame at `ts_ns` is to be preceded by an expiry at `ts_ns`.
    fn due(&mut self, ts_ns: u64) -> bool {
        if ts_ns < self.next_ns {
            return false;
        }
        self.next_ns = ts_ns.saturating_add(TICK_NS);
        true
    }
}

/// Reads the capture and runs its frames through `threads` pipelines (at least 1), each on a
/// thread of its own (pipeline 0 on the calling thread), and sums up.
///
/// Every pipeline reads the whole capture itself (from the page cache after the first): for each
/// frame it keeps the one expiry schedule ([`Ticks`]) and, with `auto` checksums, the decision
/// one pipeline would make, and inspects the frame only if it owns its flow ([`owner`]). No
/// thread hands frames to another, so nothing is copied or queued and no reading thread
/// competes with the pipelines for a core: what each pipeline does beyond its own share is
/// reading and decoding every frame's headers to find its owner.
fn run<C: Collect>(
    path: &Path,
    cfg: &Config,
    threads: usize,
    shadow: Option<&str>,
    collector: impl Fn() -> C + Sync,
) -> Result<(Vec<C>, ReplaySummary), ReplayError> {
    let start = Instant::now();
    let threads = threads.max(1);
    let shared = Shared::new(cfg, shadow)?;
    let mut summary = ReplaySummary { threads, ..ReplaySummary::default() };
    let finished: Vec<Finished<C>> = std::thread::scope(|scope| {
        let mut handles = Vec::with_capacity(threads - 1);
        for t in 1..threads {
            let (shared, collector) = (&shared, &collector);
            let h = std::thread::Builder::new()
                .name(format!("warden-replay{t}"))
                .spawn_scoped(scope, move || run_part(path, cfg, shared, collector(), t, threads, &mut ReplaySummary::default()))
                .map_err(|source| ReplayError::Io { path: "thread".into(), source });
            match h {
                Ok(h) => handles.push(h),
                // The threads started read to the end and are joined when the scope ends.
                Err(e) => return Err(e),
            }
        }
        let first = run_part(path, cfg, &shared, collector(), 0, threads, &mut summary);
        let mut done = Vec::with_capacity(threads);
        let mut error = None;
        match first {
            Ok(f) => done.push(f),
            Err(e) => error = Some(e),
        }
        for h in handles {
            match h.join() {
                Ok(Ok(f)) => done.push(f),
                // Every pipeline reads the same file: pipeline 0's error, if any, is reported.
                Ok(Err(e)) => {
                    error.get_or_insert(e);
                }
                Err(p) => std::panic::resume_unwind(p),
            }
        }
        error.map_or(Ok(done), Err)
    })?;

    let mut events: Vec<(u64, usize, usize, warden_control::Event)> = Vec::new();
    let mut hits = [0u64; crate::threat::KINDS];
    let mut dropped = [0u64; crate::threat::KINDS];
    let mut parts = Vec::with_capacity(finished.len());
    // Every pipeline loaded the shadow policy as generation 1.
    let mut shadow_diff = crate::shadow::ShadowDiff { generation: 1, ..Default::default() };
    for (t, f) in finished.into_iter().enumerate() {
        shadow_diff.merge(&f.shadow_diff);
        summary.sessions += f.sessions;
        summary.malformed += f.malformed;
        summary.spoofed += f.spoofed;
        summary.reassembled += f.reassembled;
        summary.fragments_forwarded += f.fragments_forwarded;
        summary.fragments_dropped += f.fragments_dropped;
        let tun = &mut summary.tunnels;
        for (k, n) in f.tunnels.decapsulated.iter().enumerate() {
            tun.decapsulated[k] += n;
        }
        tun.malformed += f.tunnels.malformed;
        tun.too_deep += f.tunnels.too_deep;
        tun.inner_fragments += f.tunnels.inner_fragments;
        for k in 0..crate::threat::KINDS {
            hits[k] += f.threats.hits[k];
            dropped[k] += f.threats.dropped[k];
        }
        events.extend(f.events.into_iter().enumerate().map(|(n, (i, e))| (i, t, n, e)));
        summary.thread_cpu_s.push(f.cpu_s);
        parts.push(f.out);
    }
    // By the frame after which each was taken, then pipeline, then its own order.
    events.sort_unstable_by_key(|e| (e.0, e.1, e.2));
    summary.threat_events = events.into_iter().map(|e| e.3).collect();
    summary.threats = crate::detect::ThreatId::ALL
        .iter()
        .map(|t| (t.as_str(), hits[*t as usize], dropped[*t as usize]))
        .filter(|t| t.1 + t.2 > 0)
        .collect();
    summary.shadow_diff = shared.shadow.as_ref().map(|p| shadow_diff.to_reply(p));
    summary.seconds = start.elapsed().as_secs_f64();
    summary.cpu_s = cpu_s(nix::time::ClockId::CLOCK_PROCESS_CPUTIME_ID);
    Ok((parts, summary))
}

/// Pipeline `t` of `threads` over the capture at `path` (see [`run`]); the reading is counted in
/// `summary` (pipeline 0's is the one reported).
fn run_part<C: Collect>(
    path: &Path,
    cfg: &Config,
    shared: &Shared,
    out: C,
    t: usize,
    threads: usize,
    summary: &mut ReplaySummary,
) -> Result<Finished<C>, ReplayError> {
    let mut p = Pipeline::new(cfg, shared, out);
    let mut ticks = Ticks::default();
    // `auto` checksums with several pipelines: decided on the capture's first packets as one
    // pipeline decides (this probe, fed every frame until it has), then put in force after the
    // same frame in every pipeline. Its tables are its own, as one pipeline's are: it must
    // neither see nor leave expectations, names or per-source counts in the pipeline's.
    let mut probe = (threads > 1 && cfg.normalization.resolve(true).checksums == ChecksumPolicy::Auto)
        .then(|| Pipeline::new(cfg, &Shared::with_policy(cfg, shared.policy.clone()), Discard));
    let last_ns = read_capture(path, summary, &mut |i, ts, f| {
        let tick = ticks.due(ts);
        if tick {
            p.tick(ts);
        }
        if threads == 1 || owner(f, threads) == t {
            p.frame(i, ts, f);
        }
        if let Some(q) = probe.as_mut() {
            if tick {
                q.tick(ts);
            }
            q.frame(i, ts, f);
            let decided = q.insp.checksum_policy();
            if decided != ChecksumPolicy::Auto {
                p.insp.set_checksum_policy(decided);
                probe = None;
            }
        }
    })?;
    Ok(p.finish(last_ns))
}

/// The pipeline of `threads` that owns Ethernet frame `frame`: as a worker picks its owner
/// (`owner_spread % threads` of the flow, or of the flow an ICMP error quotes:
/// [`crate::icmp::owner_key`]); 0 for frames that are not IP or do not decode.
///
/// A plain (untagged) IPv4 or IPv6 packet carrying TCP or UDP, most of any capture, is owned
/// by its two addresses alone ([`crate::flow::FlowKey::owner_spread`] reads nothing else), so
/// they are read directly; every other frame is decoded. If such a packet is malformed
/// further on, the pipeline that owns its addresses counts it instead of pipeline 0: no
/// session has it either way.
fn owner(frame: &[u8], threads: usize) -> usize {
    use crate::flow::{Addr, FlowKey};
    let spread = |src: Addr, dst: Addr| FlowKey::new(0, 0, src, 0, dst, 0).0.owner_spread() as usize % threads;
    match frame.get(12..14) {
        Some([0x08, 0x00]) => {
            if let Some(ip) = frame.get(14..34) {
                if ip[0] >> 4 == 4 && matches!(ip[9], 6 | 17) {
                    let a = |o: usize| [ip[o], ip[o + 1], ip[o + 2], ip[o + 3]];
                    return spread(Addr::v4(a(12)), Addr::v4(a(16)));
                }
            }
        }
        Some([0x86, 0xdd]) => {
            if let Some(ip) = frame.get(14..54) {
                if ip[0] >> 4 == 6 && matches!(ip[6], 6 | 17) {
                    let mut src = [0u8; 16];
                    let mut dst = [0u8; 16];
                    src.copy_from_slice(&ip[8..24]);
                    dst.copy_from_slice(&ip[24..40]);
                    return spread(Addr::v6(src), Addr::v6(dst));
                }
            }
        }
        _ => {}
    }
    owner_decoded(frame, threads)
}

/// [`owner`] by decoding the whole frame.
fn owner_decoded(frame: &[u8], threads: usize) -> usize {
    match wire::decode(frame) {
        Ok(d) => crate::icmp::owner_key(&d, 0).map_or(0, |k| k.owner_spread() as usize % threads),
        Err(_) => 0,
    }
}

/// Reads the capture at `path`, counting what it reads in `summary` (frames, bytes, skipped,
/// unsupported link types, inspected), and hands every frame it can inspect, as an Ethernet
/// frame, to `frame` with its index among the inspected frames and its timestamp (ns). Returns
/// the latest timestamp.
fn read_capture(path: &Path, summary: &mut ReplaySummary, frame: &mut dyn FnMut(u64, u64, &[u8])) -> Result<u64, ReplayError> {
    let p = path.display().to_string();
    let mut file = BufReader::with_capacity(
        1 << 20,
        File::open(path).map_err(|source| ReplayError::Io { path: p.clone(), source })?,
    );
    let mut magic = [0u8; 4];
    file.read_exact(&mut magic).map_err(|source| ReplayError::Io { path: p.clone(), source })?;
    let reader = std::io::Cursor::new(magic).chain(file);
    let mut last_ns = 0u64;
    let mut eth = Vec::with_capacity(65536);

    // `link`: how to read the frame, or the index of its interface in `summary.unsupported`,
    // or `None` for an undeclared pcapng interface.
    let mut feed = |summary: &mut ReplaySummary, link: Option<Result<Link, usize>>, ts_ns: u64, data: &[u8]| {
        summary.frames += 1;
        summary.bytes += data.len() as u64;
        let link = match link {
            Some(Ok(l)) => l,
            Some(Err(i)) => {
                summary.skipped.link_type += 1;
                summary.unsupported[i].frames += 1;
                return;
            }
            None => {
                summary.skipped.no_interface += 1;
                return;
            }
        };
        let f = match ethernet_frame(link, data, &mut eth) {
            Ok(f) => f,
            Err(Skip::Truncated) => {
                summary.skipped.truncated += 1;
                return;
            }
            Err(Skip::NotIp) => {
                summary.skipped.not_ip += 1;
                return;
            }
        };
        last_ns = last_ns.max(ts_ns);
        frame(summary.inspected, ts_ns, f);
        summary.inspected += 1;
    };

    let fmt_err = |e: pcap_file::PcapError| ReplayError::Format { path: p.clone(), message: e.to_string() };
    if magic == [0x0a, 0x0d, 0x0d, 0x0a] {
        let mut r = PcapNgReader::new(reader).map_err(fmt_err)?;
        let mut ifaces: Vec<Iface> = Vec::new();
        let mut ng_last = 0u64;
        while let Some(block) = r.next_block() {
            let block = match block {
                Ok(b) => b,
                Err(pcap_file::PcapError::IncompleteBuffer) => break,
                Err(e) => return Err(fmt_err(e)),
            };
            match block {
                // A new section numbers its interfaces from 0 again.
                Block::SectionHeader(_) => ifaces.clear(),
                Block::InterfaceDescription(idb) => {
                    let iface = describe(&idb, ifaces.len() as u32, &mut summary.unsupported);
                    ifaces.push(iface);
                }
                Block::EnhancedPacket(epb) => {
                    let iface = ifaces.get(epb.interface_id as usize);
                    if let Some(i) = iface {
                        ng_last = i.ns(epb.timestamp.as_nanos());
                    }
                    feed(summary, iface.map(|i| i.link), ng_last, &epb.data);
                }
                Block::SimplePacket(spb) => {
                    // Interface 0, no timestamp (the last one is kept); the captured length is
                    // the original length cut at the snap length, the rest is padding.
                    let first = ifaces.first();
                    let snap = first.map_or(0, |i| i.snaplen);
                    let cap = if snap == 0 { spb.original_len } else { spb.original_len.min(snap) };
                    let len = (cap as usize).min(spb.data.len());
                    let link = first.map(|i| i.link);
                    feed(summary, link, ng_last, &spb.data[..len]);
                }
                _ => {}
            }
        }
    } else {
        let mut r = PcapReader::new(reader).map_err(fmt_err)?;
        let link_type = u32::from(r.header().datalink);
        let Some(link) = Link::of(link_type) else {
            let link = UnsupportedLink { interface: None, name: None, link_type, frames: 0 };
            return Err(ReplayError::LinkType { path: p, link });
        };
        let nano = r.header().ts_resolution == pcap_file::TsResolution::NanoSecond;
        // Raw records, checked as libpcap checks them (the captured bytes are there), not as
        // pcap_file's `next_packet` does: it refuses records whose captured length exceeds the
        // original length or the snap length, which real writers produce (go-sniffer) and
        // libpcap, tcpdump and tshark read.
        while let Some(pkt) = r.next_raw_packet() {
            let pkt = match pkt {
                Ok(p) => p,
                Err(pcap_file::PcapError::IncompleteBuffer) => break,
                Err(e) => return Err(fmt_err(e)),
            };
            let frac = if nano { u64::from(pkt.ts_frac) } else { u64::from(pkt.ts_frac).saturating_mul(1000) };
            let ts_ns = u64::from(pkt.ts_sec).saturating_mul(1_000_000_000).saturating_add(frac);
            feed(summary, Some(Ok(link)), ts_ns, &pkt.data);
        }
    }
    if summary.frames > 0 && summary.inspected == 0 {
        return Err(ReplayError::NothingInspected {
            path: p,
            frames: summary.frames,
            skipped: summary.skipped,
            unsupported: std::mem::take(&mut summary.unsupported),
        });
    }
    Ok(last_ns)
}

/// Reads a pcapng interface: its link, timestamp resolution and offset (pcapng §4.2,
/// `if_tsresol`: 10^-n, or 2^-n with the top bit set; default 10^-6). An unsupported link type
/// is added to `unsupported` (with `id` and the interface's name).
fn describe(idb: &InterfaceDescriptionBlock<'_>, id: u32, unsupported: &mut Vec<UnsupportedLink>) -> Iface {
    let link_type = u32::from(idb.linktype);
    let mut iface = Iface { link: Ok(Link::Ethernet), snaplen: idb.snaplen, units: 1_000_000, offset_s: 0 };
    let mut name = None;
    for opt in &idb.options {
        match opt {
            InterfaceDescriptionOption::IfTsResol(r) => {
                let n = u32::from(r & 0x7f);
                let units = if r & 0x80 != 0 { 2u128.checked_pow(n) } else { 10u128.checked_pow(n) };
                // A resolution beyond 2^-127 / 10^-38 s is nonsense: keep microseconds.
                iface.units = units.filter(|u| *u > 0).unwrap_or(1_000_000);
            }
            InterfaceDescriptionOption::IfTsOffset(o) => iface.offset_s = *o,
            InterfaceDescriptionOption::IfName(n) => name = Some(n.to_string()),
            _ => {}
        }
    }
    iface.link = Link::of(link_type).ok_or_else(|| {
        unsupported.push(UnsupportedLink { interface: Some(id), name, link_type, frames: 0 });
        unsupported.len() - 1
    });
    iface
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn corpus() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../corpus")
    }

    #[test]
    fn reads_every_corpus_file_and_accounts_every_frame() {
        let dir = corpus();
        let labels: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("labels.json")).unwrap()).unwrap();
        let mut files = 0;
        for (name, label) in labels.as_object().unwrap() {
            let (recs, sum) = replay_file(&dir.join(name), &Config::default()).unwrap();
            files += 1;
            assert_eq!(sum.frames, label["packets"].as_u64().unwrap(), "{name}");
            assert_eq!(sum.skipped, Skipped::default(), "{name}");
            // Every frame lands in exactly one session (non-IP excepted).
            let counted: u64 = recs.iter().map(|r| r.packets_to_server + r.packets_to_client).sum();
            assert!(counted <= sum.frames && counted + 16 >= sum.frames, "{name}: {counted} of {}", sum.frames);
            // The labelled server port is seen as a server port, on the right transport.
            let port = label["server_port"].as_u64().unwrap() as u16;
            assert!(
                recs.iter().any(|r| r.server_port == port),
                "{name}: no session with server port {port}"
            );
        }
        assert_eq!(files, 24);
    }

    #[test]
    fn the_owner_read_from_addresses_is_the_decoded_owner() {
        // Every frame of the corpus and of the test captures (tunnels, fragments, ICMP errors,
        // VLANs, attacks): wherever the frame decodes, the short cut gives the pipeline
        // decoding gives.
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk(&p, out);
                } else if p.extension().is_some_and(|e| e == "pcap" || e == "pcapng") {
                    out.push(p);
                }
            }
        }
        let mut files = Vec::new();
        walk(&corpus(), &mut files);
        walk(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/captures"), &mut files);
        let (mut fast, mut decoded) = (0u64, 0u64);
        for path in &files {
            let mut sum = ReplaySummary::default();
            read_capture(path, &mut sum, &mut |_, _, f| {
                if wire::decode(f).is_err() {
                    return;
                }
                for n in [2, 3, 7] {
                    assert_eq!(owner(f, n), owner_decoded(f, n), "{}: {n} pipelines", path.display());
                }
                let ip = wire::decode(f).unwrap().ip.is_some_and(|ip| matches!(ip.proto, 6 | 17));
                if ip { fast += 1 } else { decoded += 1 }
            })
            .ok();
        }
        assert!(fast > 10_000 && decoded > 100, "{fast} TCP/UDP frames, {decoded} others");
    }

    #[test]
    fn http_capture_counts_match_the_file() {
        let (recs, sum) = replay_file(&corpus().join("http.pcap"), &Config::default()).unwrap();
        let bytes: u64 = recs.iter().map(|r| r.bytes_to_server + r.bytes_to_client).sum();
        assert_eq!(bytes, sum.bytes);
        for r in recs.iter().filter(|r| r.server_port == 80) {
            assert_eq!(r.client_ip, "198.18.0.1");
            assert_eq!(r.server_ip, "198.18.0.2");
            assert!(r.packets_to_server > 0 && r.packets_to_client > 0);
        }
    }

    #[test]
    fn tftp_transfers_are_joined_to_their_requests() {
        let (recs, _) = replay_file(&corpus().join("tftp.pcap"), &Config::default()).unwrap();
        assert_eq!(recs.len(), 10);
        for r in &recs {
            assert_eq!(r.app, "tftp", "{r:?}");
            assert_eq!((r.client_ip.as_str(), r.server_ip.as_str()), ("198.18.0.1", "198.18.0.2"));
            let l7 = r.l7.as_ref().unwrap();
            if r.server_port == 69 {
                continue;
            }
            assert_eq!(l7["request_flow"], format!("198.18.0.1:{} -> 198.18.0.2:69", r.client_port));
            let req = recs.iter().find(|q| q.server_port == 69 && q.client_port == r.client_port).unwrap();
            assert_eq!(req.l7.as_ref().unwrap()["file"], l7["file"]);
        }
    }

    /// `warden replay --policy` on a real capture of a client that sends an HTTP request, gets
    /// the answer, then sends a RESP `SET` on the same connection (port 8080): where only
    /// `http` is allowed the record shows the app change and a denial (protect) or a
    /// violation (alert); with `redis` allowed too (control) it is allowed.
    #[test]
    fn http_then_resp_capture_under_app_rules() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/captures");
        let run = |file: &str, mode: &str| {
            let mut cfg = Config::default();
            cfg.policy.file = Some(dir.join(file).display().to_string());
            cfg.policy.default_mode = Some(mode.into());
            let (recs, _) = replay_file(&dir.join("http-then-resp.pcap"), &cfg).unwrap();
            assert_eq!(recs.len(), 1, "{recs:?}");
            let r = recs.into_iter().next().unwrap();
            assert_eq!((r.app.as_str(), r.previous_app.as_deref(), r.app_changes), ("redis", Some("http"), Some(1)), "{r:?}");
            (r.verdict, r.rule_id)
        };
        assert_eq!(run("http-then-resp.http-only.toml", "protect"), (Some("denied".into()), None));
        assert_eq!(run("http-then-resp.http-only.toml", "alert"), (Some("violation".into()), None));
        assert_eq!(run("http-then-resp.http-redis.toml", "protect"), (Some("allowed".into()), Some(30)));
    }

    /// A capture with a UDP datagram in three fragments (sent out of order) and the first
    /// fragment of another that never completes: one session, one packet, the bytes of the
    /// three frames; all four fragment frames released (forwarded: no workload).
    #[test]
    fn fragments_are_reassembled_and_counted() {
        use crate::defrag::tests::{frag4, ip4, udp, A4, B4};
        let big = ip4(17, A4, B4, &udp(5000, 9999, &[5; 3000]));
        let mut frames = frag4(&big, 1, &[(2960, 48), (0, 1480), (1480, 1480)]);
        frames.extend(frag4(&big, 2, &[(0, 1480)]));
        let p = std::env::temp_dir().join(format!("warden-frag-{}.pcap", std::process::id()));
        {
            let f = std::fs::File::create(&p).unwrap();
            let mut w = pcap_file::pcap::PcapWriter::new(f).unwrap();
            for (i, data) in frames.iter().enumerate() {
                let ts = std::time::Duration::from_millis(1 + i as u64);
                w.write_packet(&pcap_file::pcap::PcapPacket::new(ts, data.len() as u32, data)).unwrap();
            }
        }
        let (recs, sum) = replay_file(&p, &Config::default()).unwrap();
        std::fs::remove_file(&p).ok();
        assert_eq!((sum.frames, sum.reassembled, sum.fragments_forwarded, sum.fragments_dropped), (4, 1, 4, 0));
        assert_eq!(recs.len(), 1, "{recs:?}");
        let r = &recs[0];
        assert_eq!((r.server_port, r.packets_to_server), (9999, 1));
        assert_eq!(r.bytes_to_server, frames[..3].iter().map(|f| f.len() as u64).sum::<u64>());
    }

    /// Records whose captured length exceeds their original length and the snap length (as
    /// go-sniffer writes them) are read as libpcap reads them, with nanosecond timestamps.
    #[test]
    fn records_longer_than_their_original_length_are_read() {
        use crate::defrag::tests::{ip4, udp, A4, B4};
        let frame = ip4(17, A4, B4, &udp(5000, 53, &[0; 40]));
        let mut file = Vec::new();
        // Nanosecond magic, version 2.4, snap length 64, Ethernet.
        for v in [0xa1b2_3c4du32, 0x0004_0002, 0, 0, 64, 1] {
            file.extend_from_slice(&v.to_le_bytes());
        }
        for (sec, nsec) in [(10u32, 5u32), (11, 999_999_999)] {
            for v in [sec, nsec, frame.len() as u32, 20] {
                file.extend_from_slice(&v.to_le_bytes());
            }
            file.extend_from_slice(&frame);
        }
        let p = std::env::temp_dir().join(format!("warden-incl-{}.pcap", std::process::id()));
        std::fs::write(&p, &file).unwrap();
        let (recs, sum) = replay_file(&p, &Config::default()).unwrap();
        std::fs::remove_file(&p).ok();
        assert_eq!((sum.frames, sum.inspected, recs.len()), (2, 2, 1));
        assert_eq!(recs[0].packets_to_server, 2);
        assert_eq!((recs[0].first_seen.as_str(), recs[0].last_seen.as_str()), ("1970-01-01T00:00:10.000000Z", "1970-01-01T00:00:11.999999Z"));
    }

    fn linktypes() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/captures/linktypes")
    }

    /// What a record says about its flow, minus the link layer: the same traffic in any link
    /// type must give the same.
    fn flow(r: &ConnectionRecord) -> String {
        format!(
            "{} {}:{} > {}:{} {} {:?} {}/{} pkts {}/{} bytes {} {} {:?} {}",
            r.ip_proto,
            r.client_ip,
            r.client_port,
            r.server_ip,
            r.server_port,
            r.app,
            r.l7,
            r.packets_to_server,
            r.packets_to_client,
            r.bytes_to_server,
            r.bytes_to_client,
            r.state,
            r.closed,
            r.end_reason,
            r.app_detected_after.unwrap_or(0),
        )
    }

    /// Every link-type capture of `tests/captures/linktypes` (README there) gives the records
    /// of the Ethernet recording it was made from or recorded beside: apps, `l7` fields,
    /// packet and byte counts (frames count as the Ethernet frame they would be inline), and,
    /// for files converted from it, the timestamps (pcapng: per-interface resolutions).
    #[test]
    fn every_link_type_labels_the_flows_as_the_ethernet_original() {
        let dir = linktypes();
        let (orig, osum) = replay_file(&dir.join("ethernet.pcap"), &Config::default()).unwrap();
        // The recording: HTTP and DNS over IPv4 and IPv6, neighbour discovery, MLD; its two
        // ARP frames make no session.
        let apps: Vec<(u8, &str, u16)> = orig.iter().map(|r| (r.ip_proto, r.app.as_str(), r.server_port)).collect();
        for want in [(6, "http", 8080), (17, "dns", 5300)] {
            assert_eq!(apps.iter().filter(|a| **a == want).count(), 2, "{apps:?}");
        }
        assert!(orig.iter().any(|r| r.client_ip.contains(':')) && orig.iter().any(|r| !r.client_ip.contains(':')));
        let v6 = |r: &&ConnectionRecord| r.client_ip.contains(':');
        let all: Vec<&ConnectionRecord> = orig.iter().collect();
        let only6: Vec<&ConnectionRecord> = orig.iter().filter(v6).collect();
        let only4: Vec<&ConnectionRecord> = orig.iter().filter(|r| !v6(r)).collect();
        // (file, the original's records it holds, same timestamps, frames, skipped frames)
        let cases: [(&str, &[&ConnectionRecord], bool, u64, Skipped); 13] = [
            ("sll.pcap", &all, false, osum.frames, Skipped::default()),
            ("sll2.pcap", &all, false, osum.frames, Skipped::default()),
            ("raw.pcap", &all, true, osum.frames - 2, Skipped::default()),
            ("raw-dlt12.pcap", &all, true, osum.frames - 2, Skipped::default()),
            ("raw-dlt14.pcap", &all, true, osum.frames - 2, Skipped::default()),
            ("ipv4.pcap", &only4, true, 14, Skipped::default()),
            ("ipv6.pcap", &only6, true, 20, Skipped::default()),
            ("null-le.pcap", &all, true, osum.frames - 2, Skipped::default()),
            ("null-be.pcap", &all, true, osum.frames - 2, Skipped::default()),
            ("loop.pcap", &all, true, osum.frames - 2, Skipped::default()),
            ("interfaces.pcapng", &all, true, osum.frames + 2, Skipped { link_type: 2, ..Skipped::default() }),
            ("sections.pcapng", &all, true, osum.frames - 2, Skipped::default()),
            ("ethernet.pcap", &all, true, osum.frames, Skipped::default()),
        ];
        for (file, want, same_time, frames, skipped) in cases {
            let (recs, sum) = replay_file(&dir.join(file), &Config::default()).unwrap();
            assert_eq!((sum.frames, sum.skipped, sum.malformed), (frames, skipped, 0), "{file}: {sum:?}");
            assert_eq!(sum.inspected, frames - skipped.total(), "{file}");
            let got: Vec<String> = recs.iter().map(flow).collect();
            let expected: Vec<String> = want.iter().map(|r| flow(r)).collect();
            assert_eq!(got, expected, "{file}");
            if same_time {
                let times = |v: &mut dyn Iterator<Item = &ConnectionRecord>| -> Vec<(String, String)> {
                    v.map(|r| (r.first_seen.clone(), r.last_seen.clone())).collect()
                };
                assert_eq!(times(&mut recs.iter()), times(&mut want.iter().copied()), "{file}");
            }
        }
        let (_, sum) = replay_file(&dir.join("interfaces.pcapng"), &Config::default()).unwrap();
        assert_eq!(
            sum.unsupported,
            vec![UnsupportedLink { interface: Some(2), name: Some("usb0".into()), link_type: 147, frames: 2 }]
        );
        assert_eq!(sum.unsupported[0].to_string(), "interface 2 \"usb0\" (link type 147, USER0)");
    }

    #[test]
    fn link_headers_become_ethernet() {
        let ip4 = [0x45u8, 0, 0, 20];
        let ip6 = [0x60u8, 0, 0, 0];
        let mut buf = Vec::new();
        let mut eth = |link, data: &[u8]| ethernet_frame(link, data, &mut buf).map(|f| f.to_vec());
        let frame = |mac: [u8; 6], ethertype: u16, payload: &[u8]| {
            let mut f = vec![0u8; 6];
            f.extend_from_slice(&mac);
            f.extend_from_slice(&ethertype.to_be_bytes());
            f.extend_from_slice(payload);
            f
        };
        assert_eq!(eth(Link::Ethernet, &[1, 2, 3]), Ok(vec![1, 2, 3]), "as is, even when short");
        assert_eq!(eth(Link::Raw, &ip4), Ok(frame([0; 6], 0x0800, &ip4)));
        assert_eq!(eth(Link::Raw, &ip6), Ok(frame([0; 6], 0x86dd, &ip6)));
        // Not 6: the IPv4 decoder rejects the version (counted as malformed, as inline).
        assert_eq!(eth(Link::Raw, &[0x50]), Ok(frame([0; 6], 0x0800, &[0x50])));
        assert_eq!(eth(Link::Raw, &[]), Ok(frame([0; 6], 0x0800, &[])));
        assert_eq!(eth(Link::Ipv4, &ip6), Ok(frame([0; 6], 0x0800, &ip6)), "the link type decides");
        assert_eq!(eth(Link::Ipv6, &ip6), Ok(frame([0; 6], 0x86dd, &ip6)));
        // Loopback families, either byte order for DLT_NULL, big-endian for LOOP.
        for (link, family, ethertype) in [
            (Link::Null, 2u32.to_le_bytes(), 0x0800),
            (Link::Null, 2u32.to_be_bytes(), 0x0800),
            (Link::Null, 24u32.to_le_bytes(), 0x86dd),
            (Link::Null, 28u32.to_be_bytes(), 0x86dd),
            (Link::Null, 30u32.to_le_bytes(), 0x86dd),
            (Link::Loop, 24u32.to_be_bytes(), 0x86dd),
            (Link::Loop, 2u32.to_be_bytes(), 0x0800),
        ] {
            let mut data = family.to_vec();
            data.extend_from_slice(&ip4);
            assert_eq!(eth(link, &data), Ok(frame([0; 6], ethertype, &ip4)), "{link:?} {family:?}");
        }
        // OSI (7), IPX (23), Linux's AF_INET6 (10), LOOP in little-endian: not IP.
        for (link, family) in [
            (Link::Null, 7u32.to_le_bytes()),
            (Link::Null, 23u32.to_be_bytes()),
            (Link::Null, 10u32.to_le_bytes()),
            (Link::Loop, 2u32.to_le_bytes()),
        ] {
            assert_eq!(eth(link, &family), Err(Skip::NotIp), "{link:?} {family:?}");
        }
        // SLL: packet type, ARPHRD, address length, address (8), protocol.
        let mut sll = vec![0, 4, 0, 1, 0, 6, 2, 0, 0, 0, 0, 9, 0xaa, 0xbb, 0x86, 0xdd];
        sll.extend_from_slice(&ip6);
        assert_eq!(eth(Link::Sll, &sll), Ok(frame([2, 0, 0, 0, 0, 9], 0x86dd, &ip6)));
        // An address longer than a MAC is cut; ARP keeps its EtherType (non-IP, as inline).
        let mut sll = vec![0, 0, 3, 0x38, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0x08, 0x06];
        sll.extend_from_slice(&[1, 2]);
        assert_eq!(eth(Link::Sll, &sll), Ok(frame([1, 2, 3, 4, 5, 6], 0x0806, &[1, 2])));
        // SLL2: protocol, reserved, interface index, ARPHRD, packet type, address length, address.
        let mut sll2 = vec![0x08, 0x00, 0, 0, 0, 0, 0, 7, 0, 1, 0, 6, 2, 0, 0, 0, 0, 9, 0, 0];
        sll2.extend_from_slice(&ip4);
        assert_eq!(eth(Link::Sll2, &sll2), Ok(frame([2, 0, 0, 0, 0, 9], 0x0800, &ip4)));
        // No address (ARPHRD_NONE, a tun device): zero MAC.
        sll2[11] = 0;
        assert_eq!(eth(Link::Sll2, &sll2), Ok(frame([0; 6], 0x0800, &ip4)));
        for (link, n) in [(Link::Sll, 16), (Link::Sll2, 20), (Link::Null, 4), (Link::Loop, 4)] {
            for len in 0..n {
                assert_eq!(eth(link, &sll2[..len.min(sll2.len())]), Err(Skip::Truncated), "{link:?} {len}");
            }
        }
        for (t, link) in [(0, Link::Null), (1, Link::Ethernet), (12, Link::Raw), (14, Link::Raw), (101, Link::Raw), (108, Link::Loop), (113, Link::Sll), (228, Link::Ipv4), (229, Link::Ipv6), (276, Link::Sll2)] {
            assert_eq!(Link::of(t), Some(link));
        }
        for t in [2, 9, 105, 127, 147, 220, 1000] {
            assert_eq!(Link::of(t), None, "{t}");
        }
    }

    /// A scratch file removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str, bytes: &[u8]) -> Scratch {
            let p = std::env::temp_dir().join(format!("warden-{name}-{}", std::process::id()));
            std::fs::write(&p, bytes).unwrap();
            Scratch(p)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            std::fs::remove_file(&self.0).ok();
        }
    }

    /// A little-endian microsecond pcap of `link` with `frames`.
    fn pcap(link: u32, frames: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        for w in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 262_144, link] {
            v.extend_from_slice(&w.to_le_bytes());
        }
        for (i, f) in frames.iter().enumerate() {
            for w in [1u32, i as u32, f.len() as u32, f.len() as u32] {
                v.extend_from_slice(&w.to_le_bytes());
            }
            v.extend_from_slice(f);
        }
        v
    }

    /// A little-endian pcapng block (body padded to 32 bits).
    fn ng_block(kind: u32, body: &[u8]) -> Vec<u8> {
        let mut body = body.to_vec();
        body.resize(body.len().next_multiple_of(4), 0);
        let n = (12 + body.len()) as u32;
        let mut v = kind.to_le_bytes().to_vec();
        v.extend_from_slice(&n.to_le_bytes());
        v.extend_from_slice(&body);
        v.extend_from_slice(&n.to_le_bytes());
        v
    }

    /// A little-endian pcapng section: one interface per `(link type, name)`, then
    /// `(interface id, timestamp, frame)` packets.
    fn pcapng(ifaces: &[(u16, &str)], packets: &[(u32, u64, &[u8])]) -> Vec<u8> {
        let mut shb = 0x1a2b_3c4du32.to_le_bytes().to_vec();
        shb.extend_from_slice(&[1, 0, 0, 0]);
        shb.extend_from_slice(&(-1i64).to_le_bytes());
        let mut v = ng_block(0x0a0d_0d0a, &shb);
        for (link, name) in ifaces {
            let mut idb = link.to_le_bytes().to_vec();
            idb.extend_from_slice(&[0, 0]);
            idb.extend_from_slice(&262_144u32.to_le_bytes());
            idb.extend_from_slice(&2u16.to_le_bytes());
            idb.extend_from_slice(&(name.len() as u16).to_le_bytes());
            idb.extend_from_slice(name.as_bytes());
            idb.resize(idb.len().next_multiple_of(4) + 4, 0);
            v.extend(ng_block(1, &idb));
        }
        for (iface, ts, data) in packets {
            let mut epb = Vec::new();
            for w in [*iface, (ts >> 32) as u32, *ts as u32, data.len() as u32, data.len() as u32] {
                epb.extend_from_slice(&w.to_le_bytes());
            }
            epb.extend_from_slice(data);
            v.extend(ng_block(6, &epb));
        }
        v
    }

    #[test]
    fn an_unsupported_pcap_link_type_is_an_error_naming_it() {
        for (link, name) in [(147u32, "USER0"), (9, "PPP"), (1000, "unknown")] {
            let f = Scratch::new(&format!("lt{link}.pcap"), &pcap(link, &[b"\x45\0\0\x14"]));
            let e = replay_file(&f.0, &Config::default()).unwrap_err();
            assert!(matches!(e, ReplayError::LinkType { .. }), "{e:?}");
            let msg = e.to_string();
            assert!(msg.contains(&format!("link type {link} ({name}) is not supported")), "{msg}");
            assert!(msg.contains("raw IP (101, 12, 14)") && msg.contains(&f.0.display().to_string()), "{msg}");
        }
        // Even with no frames: nothing in the file could ever be read.
        let f = Scratch::new("lt147-empty.pcap", &pcap(147, &[]));
        assert!(matches!(replay_file(&f.0, &Config::default()), Err(ReplayError::LinkType { .. })));
    }

    #[test]
    fn a_capture_with_every_frame_skipped_is_an_error() {
        // pcapng: every frame on an unsupported interface; the error names the interfaces.
        let ng = pcapng(&[(147, "usb0"), (9, "ppp0")], &[(0, 1, b"abc"), (1, 2, b"def"), (1, 3, b"ghi")]);
        let f = Scratch::new("allskipped.pcapng", &ng);
        let e = replay_file(&f.0, &Config::default()).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("none of its 3 frames could be inspected (skipped: 3 link type)")
                && msg.contains("interface 0 \"usb0\" (link type 147, USER0), interface 1 \"ppp0\" (link type 9, PPP)"),
            "{msg}"
        );
        // Supported link types whose frames are all too short for their header.
        let f = Scratch::new("allshort.pcap", &pcap(113, &[&[0; 15], &[0; 3]]));
        let msg = replay_file(&f.0, &Config::default()).unwrap_err().to_string();
        assert!(msg.contains("none of its 2 frames could be inspected (skipped: 2 truncated link header)"), "{msg}");
        // Loopback frames of other families; packets on interfaces never declared.
        let f = Scratch::new("allosi.pcap", &pcap(0, &[&7u32.to_le_bytes()]));
        let msg = replay_file(&f.0, &Config::default()).unwrap_err().to_string();
        assert!(msg.contains("(skipped: 1 not IP)"), "{msg}");
        let f = Scratch::new("noiface.pcapng", &pcapng(&[], &[(0, 1, b"abc")]));
        let msg = replay_file(&f.0, &Config::default()).unwrap_err().to_string();
        assert!(msg.contains("(skipped: 1 undeclared interface)"), "{msg}");
        // An empty capture of a supported link type is no error: nothing was skipped.
        let f = Scratch::new("empty.pcap", &pcap(101, &[]));
        let (recs, sum) = replay_file(&f.0, &Config::default()).unwrap();
        assert_eq!((recs.len(), sum.frames), (0, 0));
    }

    /// Frames on supported interfaces are inspected, the rest counted by reason; the
    /// resolution of each pcapng interface gives the clock (default microseconds).
    #[test]
    fn mixed_pcapng_counts_what_it_skipped() {
        use crate::defrag::tests::{ip4, udp, A4, B4};
        let eth = ip4(17, A4, B4, &udp(5000, 53, &[7; 20]));
        let dgram = &eth[14..];
        let ng = pcapng(
            &[(147, "usb0"), (101, "tun0"), (1, "eth0")],
            &[(0, 5, b"junk"), (1, 2_000_000, dgram), (2, 3_000_000, &eth), (7, 9, &eth), (1, 3_500_000, &[0x45])],
        );
        let f = Scratch::new("mixed.pcapng", &ng);
        let (recs, sum) = replay_file(&f.0, &Config::default()).unwrap();
        assert_eq!(sum.frames, 5);
        assert_eq!(sum.inspected, 3);
        assert_eq!(sum.malformed, 1, "the one-byte IPv4 packet");
        assert_eq!(sum.skipped, Skipped { link_type: 1, no_interface: 1, ..Skipped::default() });
        assert_eq!(sum.skipped.to_string(), "1 link type, 1 undeclared interface");
        assert_eq!(recs.len(), 1, "{recs:?}");
        let r = &recs[0];
        assert_eq!((r.server_port, r.packets_to_server, r.bytes_to_server), (53, 2, 2 * eth.len() as u64));
        // 2 000 000 µs and 3 000 000 µs after the epoch.
        assert_eq!((r.first_seen.as_str(), r.last_seen.as_str()), ("1970-01-01T00:00:02.000000Z", "1970-01-01T00:00:03.000000Z"));

        // A Simple Packet Block (interface 0, no timestamp): its padding is not frame bytes.
        let odd = ip4(17, A4, B4, &udp(5000, 53, &[7; 21]));
        assert_ne!(odd.len() % 4, 0);
        let mut spb = (odd.len() as u32).to_le_bytes().to_vec();
        spb.extend_from_slice(&odd);
        let mut ng = pcapng(&[(1, "eth0")], &[]);
        ng.extend(ng_block(3, &spb));
        let f = Scratch::new("spb.pcapng", &ng);
        let (recs, sum) = replay_file(&f.0, &Config::default()).unwrap();
        assert_eq!((sum.inspected, sum.bytes, sum.malformed), (1, odd.len() as u64, 0));
        assert_eq!(recs[0].bytes_to_server, odd.len() as u64);
    }

    #[test]
    fn not_a_capture_is_a_clear_error() {
        let p = std::env::temp_dir().join(format!("warden-notpcap-{}", std::process::id()));
        std::fs::write(&p, b"hello world, not a pcap").unwrap();
        let e = replay_file(&p, &Config::default()).unwrap_err();
        std::fs::remove_file(&p).ok();
        assert!(e.to_string().contains("warden-notpcap"), "{e}");
    }
}
