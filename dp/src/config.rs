//! `warden.toml`: the daemon's configuration. Every field has a default, so an empty file (or
//! none, with `--inline` on the command line) is a valid configuration. Unknown fields are
//! errors, and errors name the line and the field (toml's error format).
//!
//! See `conf/warden.toml` for an annotated example.

use std::path::Path;

use serde::Deserialize;
use warden_control::FailMode;

use crate::app::engine::{EngineConfig, EngineLimits};
use crate::defrag::DefragConfig;
use crate::exception::{ExceptionPolicy, PerModeConfig};
use crate::inspect::MalformedPolicy;
use crate::names::NameConfig;
use crate::poll::{PollConfig, PollMode, DEFAULT_SPIN_US, MAX_SPIN_US};
use crate::session::Timeouts;

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Threads, rings, socket.
    #[serde(default)]
    pub dataplane: Dataplane,
    /// Session table sizing and timeouts.
    #[serde(default)]
    pub sessions: Sessions,
    /// App detection and stream reassembly limits.
    #[serde(default)]
    pub inspection: Inspection,
    /// IP reassembly limits.
    #[serde(default)]
    pub defrag: Defrag,
    /// TCP normalisation and checksums.
    #[serde(default)]
    pub normalization: NormalizationConfig,
    /// Inline pairs set up at start.
    #[serde(default)]
    pub inline: Vec<InlinePair>,
    /// Interfaces monitored (receive-only) from the start (`[[monitor]]`, [`crate::monitor`]).
    #[serde(default)]
    pub monitor: Vec<MonitorIface>,
    /// The policy loaded at start.
    #[serde(default)]
    pub policy: PolicyConfig,
    /// Collectors records are exported to (`[[export.ipfix]]`, [`crate::export`]).
    #[serde(default)]
    pub export: crate::export::ExportConfig,
    /// Prometheus metrics endpoint ([`crate::metrics`]).
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Log output ([`crate::logging`]).
    #[serde(default)]
    pub log: LogConfig,
    /// Who may use the control socket, connection limits ([`crate::access`]).
    #[serde(default)]
    pub control: crate::access::ControlConfig,
    /// Per-threat actions and thresholds (`[threats.<id>]`, [`crate::threat::config`]).
    #[serde(default)]
    pub threats: crate::threat::config::ThreatsConfig,
    /// Tunnel decapsulation (`[tunnels]`, [`crate::tunnel`]).
    #[serde(default)]
    pub tunnels: crate::tunnel::TunnelConfig,
    /// Packet capture and the pre-trigger ring (`[capture]`, [`crate::capture`]).
    #[serde(default)]
    pub capture: crate::capture::CaptureConfig,
    /// Attaching to workloads (`[attach]`, [`crate::attach`]).
    #[serde(default)]
    pub attach: AttachConfig,
    /// What the file says that is accepted but deserves a warning (deprecated fields), each
    /// naming the file, line and field; logged at start (`warden run`, `check-config`).
    #[serde(skip)]
    pub warnings: Vec<String>,
}

/// `[metrics]`: the Prometheus text exposition endpoint (`GET /metrics`). Off unless `listen`
/// is set (here or with `warden run --metrics ADDR`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address to serve on, `IP:PORT` (e.g. `"127.0.0.1:9597"`). Default: none (off). A
    /// non-loopback address exposes counters (interface names, rule ids) to the network.
    pub listen: Option<String>,
}

/// `[attach]`: putting Warden in front of containers, namespaces and taps
/// (`wardenctl attach`, [`crate::attach`]).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AttachConfig {
    /// Directory of the attachments' state files (written before each change, read at start to
    /// adopt or restore what a killed Warden left). Default `/run/warden/attach`.
    pub state_dir: String,
    /// Mode of an attached workload when the request names none and no policy workload owns
    /// its addresses (`learn`, `alert`, `protect`). Default: the policy's default mode.
    pub default_mode: Option<String>,
    /// Container runtimes asked for a container by id or name, in order (their CLIs'
    /// `inspect`). Default `["podman", "docker"]`.
    pub runtimes: Vec<String>,
    /// At start, what to do with attachments a previous Warden left: `"adopt"` (attach them
    /// again, default) or `"restore"` (put their original plumbing back).
    pub on_start: String,
    /// At a graceful stop: `"keep"` (default: the attachments stay, in their fail mode, for
    /// the next start to adopt, as after a crash) or `"detach"` (restore every one).
    pub on_stop: String,
    /// Fail mode of attachments' inline pairs (`"open"`, default, or `"closed"`).
    pub fail_mode: FailMode,
    /// Bridges (in Warden's namespace) whose new ports are attached as they appear: a veth or
    /// tap that joins one is attached (kind `iface` or `tap`, `default_mode`) at the control
    /// loop's next check, within about a second. Without CNI this is how new workloads come
    /// in; until then they run uninspected (README, "CNI"). Default: none.
    pub watch_bridges: Vec<String>,
}

impl Default for AttachConfig {
    fn default() -> Self {
        AttachConfig {
            state_dir: "/run/warden/attach".into(),
            default_mode: None,
            runtimes: vec!["podman".into(), "docker".into()],
            on_start: "adopt".into(),
            on_stop: "keep".into(),
            fail_mode: FailMode::Open,
            watch_bridges: Vec::new(),
        }
    }
}

/// `[log]`: log line format on stderr.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `"text"` (default) or `"json"` (one JSON object per line: timestamp, level, target,
    /// fields).
    pub format: Option<String>,
}

/// `[policy]`: the policy file loaded at start (replaced at runtime by `wardenctl policy
/// apply`), and the table of DNS names `fqdn` rules match through ([`crate::names`]).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Policy file (TOML, see `conf/policy.toml`). Default: none (no workloads, nothing
    /// enforced until a policy is applied).
    pub file: Option<String>,
    /// Mode of workloads that name none (`learn`, `alert`, `protect`); overrides the policy
    /// file's `default_mode`. Default: the file's, else `learn`.
    pub default_mode: Option<String>,
    /// Shortest time a DNS name is kept for `fqdn` rules (s), whatever the answer's TTL
    /// (1..=`dns_ttl_max`). Default 1.
    pub dns_ttl_min: u32,
    /// Longest time a DNS name is kept (s), whatever the answer's TTL (up to 604800).
    /// Default 3600.
    pub dns_ttl_max: u32,
    /// DNS clients that can hold names at once (1..=65536). Default 256.
    pub dns_clients: usize,
    /// (name, address) pairs kept per DNS client (1..=4096; clients × names at most
    /// 1048576, about 300 bytes each). Default 32.
    pub dns_names_per_client: usize,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        let n = NameConfig::default();
        PolicyConfig {
            file: None,
            default_mode: None,
            dns_ttl_min: n.ttl_min_s,
            dns_ttl_max: n.ttl_max_s,
            dns_clients: n.clients,
            dns_names_per_client: n.names_per_client,
        }
    }
}

impl PolicyConfig {
    /// The DNS name table's sizing and TTL bounds.
    pub fn names(&self) -> NameConfig {
        NameConfig {
            clients: self.dns_clients,
            names_per_client: self.dns_names_per_client,
            ttl_min_s: self.dns_ttl_min,
            ttl_max_s: self.dns_ttl_max,
        }
    }
}

/// XDP attach mode.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum XdpMode {
    /// Driver (native) XDP: veth and tap support it.
    #[default]
    Native,
    /// Generic (skb) XDP.
    Generic,
}

/// `[dataplane]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Dataplane {
    /// Worker threads (each pinned to one core). Default 1.
    pub workers: usize,
    /// Cores to pin workers to, in order; default: cores 0..workers (skipping none).
    pub cores: Option<Vec<usize>>,
    /// Control socket path. Default `/run/warden/warden.sock`.
    pub socket: String,
    /// Seconds between connection report batches. Default 5.
    pub report_interval: u64,
    /// XDP attach mode. Default native.
    pub xdp_mode: XdpMode,
    /// What to do with frames that cannot be decoded. Default drop.
    pub malformed: MalformedPolicy,
    /// UMEM frames per queue group (each 4096 bytes). Default 4096 (16 MiB).
    pub umem_frames: u32,
    /// Entries of each rx, tx, fill and completion ring (power of two). Default 2048.
    pub ring_size: u32,
    /// Frames taken from a ring per batch. Default 64.
    pub batch: u32,
    /// How a worker waits when its rings are empty ([`crate::poll`]): `"adaptive"` (default:
    /// spin only while frames come at most `spin_us` apart, else sleep in poll(2) on all its
    /// sockets, so its CPU follows the load) or `"busy"` (spin always: a whole core per worker,
    /// the lowest latency).
    pub poll: PollMode,
    /// Adaptive polling's spin budget (µs): frames expected at most this far apart are waited
    /// for by spinning, for at most this long after the last one; 0 never spins. 0..=10000,
    /// only with `poll = "adaptive"`. Default 10.
    pub spin_us: Option<toml::Spanned<u32>>,
    /// Deprecated and ignored (workers spin by time, not by a count of empty loops: `poll`,
    /// `spin_us`); accepted with a warning so older files still load.
    pub idle_spins: Option<toml::Spanned<u32>>,
    /// Bytes of published report stream messages (batches and events, as serialized JSON
    /// lines) kept for subscribers, whether or not one is connected: a subscriber that
    /// reconnects with `since` gets what is still kept, in order, and a `lost` message for
    /// the rest. The oldest go first. Default 8 MiB; at least 4096.
    pub report_buffer_bytes: usize,
    /// Queue bound (in batches) between a worker and the control thread.
    /// A worker's batch holds at most 64 session snapshots ([`crate::worker::REPORT_BATCH`]);
    /// when the queue is full, changed sessions wait for the next interval and final records
    /// in the session table's bounded queue. Default 256.
    pub report_queue: usize,
    /// The XDP fast path for decided flows ([`crate::fastpath`]): once nothing more of a
    /// session needs inspecting, the kernel forwards its frames to the peer interface and
    /// Warden pulls the counts back. On by default; per interface only while the peer accepts
    /// in-kernel redirects (a veth peer needs GRO on or an XDP program).
    pub fast_path: bool,
    /// Sessions on the fast path at once, all workers together (each worker gets an equal
    /// share, at most 65534; two kernel map entries each, about 260 bytes). A session that
    /// qualifies when its worker's share is used stays in user space (counted). 0..=1048576.
    /// Default 16384.
    pub fast_path_max: usize,
    /// Shortest opaque run (bytes a parser skips unread, such as an HTTP body of announced
    /// length) worth putting on the fast path. Default 65536.
    pub fast_path_min_bytes: u64,
}

impl Default for Dataplane {
    fn default() -> Self {
        Dataplane {
            workers: 1,
            cores: None,
            socket: warden_control::DEFAULT_SOCKET.to_string(),
            report_interval: 5,
            xdp_mode: XdpMode::Native,
            malformed: MalformedPolicy::Drop,
            umem_frames: 4096,
            ring_size: 2048,
            batch: 64,
            poll: PollMode::Adaptive,
            spin_us: None,
            idle_spins: None,
            report_queue: 256,
            report_buffer_bytes: 8 << 20,
            fast_path: true,
            fast_path_max: 16384,
            fast_path_min_bytes: 64 * 1024,
        }
    }
}

impl Dataplane {
    /// The fast path settings of one of `workers` workers (`None`: off).
    pub fn fast_config(&self) -> Option<crate::fastpath::FastConfig> {
        let max = self.fast_path_max / self.workers.max(1);
        (self.fast_path && max > 0).then_some(crate::fastpath::FastConfig { max, min_bytes: self.fast_path_min_bytes })
    }

    /// The workers' waiting settings (`poll`, `spin_us`).
    pub fn poll_config(&self) -> PollConfig {
        let us = self.spin_us.as_ref().map(|s| *s.get_ref()).unwrap_or(DEFAULT_SPIN_US).min(MAX_SPIN_US);
        PollConfig { mode: self.poll, spin_ns: u64::from(us) * 1000 }
    }
}

/// `[sessions]`: sizes and idle timeouts (seconds).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Sessions {
    /// Maximum sessions per worker (1..=67108863). A new session in a full table evicts the
    /// oldest denied or closed one, else embryonic TCP, else one-way, else two-way
    /// UDP/ICMP/other; established TCP is never evicted: the new flow is refused (see
    /// [`crate::session::EvictClass`]). The table is allocated at start: about 240 bytes per
    /// session ([`crate::session::SessionTable::footprint`]; 1048576 sessions: about 240 MiB
    /// per worker, resident from the start), app contexts apart (`[inspection] max_sessions`).
    /// Default 262144.
    pub max: usize,
    /// Distinct tunnel ends (type, id, outer addresses) the table keeps for the inner flows of
    /// tunnels, shared by the sessions of one tunnel (1..=65535; [`crate::session_side`]).
    /// When full, a new inner flow's record has no `tunnel` (counted in `sessions_side`
    /// `tunnel_ends_full`). Raise it where tunnels have an id per flow (GTP-U TEIDs). Default
    /// 4096 (about 200 KiB per worker).
    pub tunnel_ends: usize,
    /// TCP handshake timeout (s), also for TCP picked up mid-stream and never answered.
    /// Default 30.
    pub tcp_syn_timeout: u64,
    /// Established TCP idle timeout (s). Default 3600.
    pub tcp_established_timeout: u64,
    /// Half-closed TCP idle timeout (s). Default 120.
    pub tcp_half_closed_timeout: u64,
    /// Linger of closed/reset TCP before the final record (s). Default 5.
    pub tcp_closed_timeout: u64,
    /// UDP idle timeout (s). Default 60.
    pub udp_timeout: u64,
    /// ICMP idle timeout (s). Default 30.
    pub icmp_timeout: u64,
    /// Other protocols' idle timeout (s). Default 60.
    pub other_timeout: u64,
    /// Exception policy for TCP sessions picked up without their SYN (mid-stream), by mode
    /// of the session's strictest workload end: `"drop_flow"`, `"pass_flow"` or `"bypass"`,
    /// or a table `{ protect = ..., alert = ..., learn = ... }`. Default: `drop_flow` in
    /// protect, `pass_flow` otherwise (see [`crate::exception`]).
    pub midstream: PerModeConfig,
}

impl Default for Sessions {
    fn default() -> Self {
        let t = Timeouts::default();
        let s = |ns: u64| ns / 1_000_000_000;
        Sessions {
            max: 262_144,
            tunnel_ends: 4096,
            tcp_syn_timeout: s(t.tcp_syn),
            tcp_established_timeout: s(t.tcp_established),
            tcp_half_closed_timeout: s(t.tcp_half_closed),
            tcp_closed_timeout: s(t.tcp_closed),
            udp_timeout: s(t.udp),
            icmp_timeout: s(t.icmp),
            other_timeout: s(t.other),
            midstream: PerModeConfig::default(),
        }
    }
}

impl Sessions {
    /// A session table of these sizes and timeouts, allocated now.
    pub fn table(&self) -> crate::session::SessionTable {
        let sides = crate::session::SideSizes { tunnel_ends: self.tunnel_ends, ..crate::session::SideSizes::for_table(self.max) };
        crate::session::SessionTable::with_sides(self.max, self.timeouts(), sides)
    }

    /// The timeouts in ns.
    pub fn timeouts(&self) -> Timeouts {
        let ns = |s: u64| s.saturating_mul(1_000_000_000);
        Timeouts {
            tcp_syn: ns(self.tcp_syn_timeout),
            tcp_established: ns(self.tcp_established_timeout),
            tcp_half_closed: ns(self.tcp_half_closed_timeout),
            tcp_closed: ns(self.tcp_closed_timeout),
            udp: ns(self.udp_timeout),
            icmp: ns(self.icmp_timeout),
            other: ns(self.other_timeout),
        }
    }
}

/// `[inspection]`: app detection and TCP stream limits (per worker).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Inspection {
    /// Sessions inspected at once; later ones are forwarded with `inspection: "bypassed"`.
    /// Default 16384.
    pub max_sessions: usize,
    /// Bytes buffered per session direction (unconsumed and out-of-order). Default 65536.
    pub stream_session_cap: usize,
    /// Bytes buffered over all sessions. Default 64 MiB.
    pub stream_core_cap: usize,
    /// Give up detection after this many packets with payload in one direction. Default 16.
    pub detect_packets: u32,
    /// Give up detection after this many bytes in one direction. Default 8192.
    pub detect_bytes: usize,
    /// Exception policy when a session whose verdict depends on its app cannot be inspected
    /// (app context pool full, stream buffers full, out-of-order limit), by mode; same forms
    /// and defaults as `[sessions] midstream` (see [`crate::exception`]).
    pub exception_policy: PerModeConfig,
}

impl Default for Inspection {
    fn default() -> Self {
        let e = EngineConfig::default();
        Inspection {
            max_sessions: e.max_sessions,
            stream_session_cap: e.stream_session_cap,
            stream_core_cap: e.stream_core_cap,
            detect_packets: e.limits.detect_packets,
            detect_bytes: e.limits.detect_bytes,
            exception_policy: PerModeConfig::default(),
        }
    }
}

impl Inspection {
    /// The engine configuration.
    pub fn engine(&self) -> EngineConfig {
        EngineConfig {
            max_sessions: self.max_sessions,
            stream_session_cap: self.stream_session_cap,
            stream_core_cap: self.stream_core_cap,
            limits: EngineLimits { detect_packets: self.detect_packets, detect_bytes: self.detect_bytes },
        }
    }
}

/// `[normalization]`: what Warden reads of frames the receiving host would drop or read
/// differently ([`crate::normalize`]).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct NormalizationConfig {
    /// `verify` (default for live traffic), `ignore`, or `auto` (default of `warden replay`:
    /// decided from the first packets of the capture).
    pub checksums: Option<crate::normalize::ChecksumPolicy>,
    /// What protect mode does with frames the receiver would drop or ignore (bad checksum,
    /// TCP segments outside what the receiver accepts, retransmissions that differ from what
    /// was inspected): `drop` (default) or `forward` (still never inspected). Alert and learn
    /// mode forward them and count them.
    pub invalid: crate::normalize::InvalidAction,
    /// Urgent data: `oob` (default: the urgent byte is out of band, as Linux reads it) or
    /// `inline`.
    pub urgent: crate::normalize::UrgentPolicy,
}

impl NormalizationConfig {
    /// The settings for live traffic (`replay`: for `warden replay`, whose checksum default is
    /// `auto`).
    pub fn resolve(&self, replay: bool) -> crate::normalize::Normalization {
        use crate::normalize::ChecksumPolicy;
        let default = if replay { ChecksumPolicy::Auto } else { ChecksumPolicy::Verify };
        crate::normalize::Normalization {
            checksums: self.checksums.unwrap_or(default),
            invalid: self.invalid,
            urgent: self.urgent,
        }
    }
}

/// `[defrag]`: IPv4/IPv6 reassembly limits, per worker ([`crate::defrag`]). When a limit is
/// reached the oldest datagram in reassembly fails, and a datagram not complete within
/// `timeout` fails: the exception policy of `[inspection] exception_policy` decides their
/// fragments (reasons `defrag_full`, `defrag_timeout`; default drop in protect mode).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Defrag {
    /// Datagrams in reassembly at once. Default 512.
    pub max_datagrams: usize,
    /// Fragments of one datagram. Default 128.
    pub max_fragments: usize,
    /// Fragment frames held over all datagrams; each holds one UMEM frame, so at most a
    /// quarter of `dataplane.umem_frames`. Default 1024.
    pub max_frames: usize,
    /// Bytes of fragment data held (charged in 512-byte chunks). Default 4 MiB.
    pub max_bytes: usize,
    /// Seconds a datagram may take to complete, from its first fragment. Default 30.
    pub timeout: u64,
}

impl Default for Defrag {
    fn default() -> Self {
        let d = DefragConfig::default();
        Defrag {
            max_datagrams: d.max_datagrams,
            max_fragments: d.max_fragments,
            max_frames: d.max_frames,
            max_bytes: d.max_bytes,
            timeout: d.timeout_ns / 1_000_000_000,
        }
    }
}

impl Defrag {
    /// The reassembly configuration.
    pub fn config(&self) -> DefragConfig {
        DefragConfig {
            max_datagrams: self.max_datagrams,
            max_fragments: self.max_fragments,
            max_frames: self.max_frames,
            max_bytes: self.max_bytes,
            timeout_ns: self.timeout.saturating_mul(1_000_000_000),
        }
    }
}

/// `[[inline]]`: two interfaces forwarded to each other.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct InlinePair {
    /// First interface name.
    pub a: String,
    /// Second interface name.
    pub b: String,
    /// Behaviour while Warden is down. Default open.
    #[serde(default)]
    pub fail_mode: FailMode,
}

/// `[[monitor]]`: an interface watched receive-only (monitor mode, [`crate::monitor`]): its
/// frames in both directions go through the pipeline (records, events, learning, alerts) and
/// nothing is forwarded or dropped; protect mode is reported as alert.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MonitorIface {
    /// Interface name.
    pub iface: String,
}

impl InlinePair {
    /// Parses `A:B` (the `--inline` flag).
    ///
    /// # Errors
    /// A message when the text is not two non-empty names separated by one colon.
    pub fn parse_flag(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            Some((a, b)) if !a.is_empty() && !b.is_empty() && !b.contains(':') && a != b => {
                Ok(InlinePair { a: a.into(), b: b.into(), fail_mode: FailMode::Open })
            }
            _ => Err(format!("--inline expects two different interfaces as A:B, got {s:?}")),
        }
    }
}

/// Errors reading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// File path.
        path: String,
        /// I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The TOML is invalid or a field is unknown or has the wrong type; the message names the
    /// line, column and field.
    #[error("{path}: {message}")]
    Parse {
        /// File path.
        path: String,
        /// toml's message with line and field.
        message: String,
    },
    /// A value is out of range.
    #[error("{path}: {field}: {message}")]
    Invalid {
        /// File path (or "command line").
        path: String,
        /// The field, e.g. `dataplane.ring_size`.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
}

impl Config {
    /// The exception policy (`[sessions] midstream`, `[inspection] exception_policy`).
    pub fn exceptions(&self) -> ExceptionPolicy {
        ExceptionPolicy {
            midstream: self.sessions.midstream.resolve(),
            inspection: self.inspection.exception_policy.resolve(),
        }
    }

    /// Reads and validates a file.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file, line and field.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: p.clone(), source })?;
        Self::parse(&text, &p)
    }

    /// Parses and validates TOML text; `origin` names it in errors.
    ///
    /// # Errors
    /// [`ConfigError::Parse`] or [`ConfigError::Invalid`].
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        cfg.validate_text(origin, Some(text))?;
        if let Some(s) = &cfg.dataplane.idle_spins {
            cfg.warnings.push(format!(
                "{origin}: line {}: dataplane.idle_spins is deprecated and ignored: workers spin by \
                 time now (dataplane.poll = \"adaptive\" or \"busy\", dataplane.spin_us)",
                line_of(text, s.span().start)
            ));
        }
        Ok(cfg)
    }

    /// Checks ranges.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the field.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        self.validate_text(origin, None)
    }

    /// [`Self::validate`]; with the file's `text`, errors about fields whose place is known
    /// also name their line.
    fn validate_text(&self, origin: &str, text: Option<&str>) -> Result<(), ConfigError> {
        let bad = |field, message: String| ConfigError::Invalid {
            path: origin.to_string(),
            field,
            message,
        };
        let at = |span: std::ops::Range<usize>| text.map(|t| format!(" (line {})", line_of(t, span.start))).unwrap_or_default();
        let d = &self.dataplane;
        if let Some(s) = &d.spin_us {
            if *s.get_ref() > MAX_SPIN_US {
                return Err(bad("dataplane.spin_us", format!("must be 0..={MAX_SPIN_US} µs, got {}{}", s.get_ref(), at(s.span()))));
            }
            if d.poll == PollMode::Busy {
                return Err(bad(
                    "dataplane.spin_us",
                    format!("only applies to poll = \"adaptive\" (poll = \"busy\" always spins){}", at(s.span())),
                ));
            }
        }
        if d.fast_path_max > 1 << 20 || d.fast_path_max / d.workers.max(1) > usize::from(crate::fastpath::NO_ENTRY) - 1 {
            return Err(bad(
                "dataplane.fast_path_max",
                format!("must be 0..=1048576 and at most 65534 per worker, got {}", d.fast_path_max),
            ));
        }
        if d.workers == 0 || d.workers > 256 {
            return Err(bad("dataplane.workers", format!("must be 1..=256, got {}", d.workers)));
        }
        if !d.ring_size.is_power_of_two() || !(64..=16384).contains(&d.ring_size) {
            return Err(bad(
                "dataplane.ring_size",
                format!("must be a power of two in 64..=16384, got {}", d.ring_size),
            ));
        }
        if d.umem_frames < 2 * d.ring_size || d.umem_frames > 1 << 20 {
            return Err(bad(
                "dataplane.umem_frames",
                format!("must be at least 2 x ring_size and at most 1048576, got {}", d.umem_frames),
            ));
        }
        if d.batch == 0 || d.batch > d.ring_size {
            return Err(bad("dataplane.batch", format!("must be 1..=ring_size, got {}", d.batch)));
        }
        if d.report_interval == 0 {
            return Err(bad("dataplane.report_interval", "must be at least 1 s".into()));
        }
        if let Err((field, message)) = self.capture.validate() {
            return Err(bad(field, message));
        }
        if d.report_buffer_bytes < 4096 {
            return Err(bad("dataplane.report_buffer_bytes", "must be at least 4096".into()));
        }
        if d.report_queue == 0 {
            return Err(bad("dataplane.report_queue", "must be at least 1".into()));
        }
        if let Some(l) = &self.metrics.listen {
            if l.parse::<std::net::SocketAddr>().is_err() {
                return Err(bad("metrics.listen", format!("must be IP:PORT (e.g. 127.0.0.1:9597), got {l:?}")));
            }
        }
        if let Some(f) = &self.log.format {
            if f != "text" && f != "json" {
                return Err(bad("log.format", format!("must be \"text\" or \"json\", got {f:?}")));
            }
        }
        if let Some(c) = &d.cores {
            if c.len() < d.workers {
                return Err(bad(
                    "dataplane.cores",
                    format!("lists {} cores for {} workers", c.len(), d.workers),
                ));
            }
        }
        if self.sessions.max == 0 || self.sessions.max > crate::session_index::MAX_SLOTS {
            return Err(bad("sessions.max", format!("must be 1..=67108863, got {}", self.sessions.max)));
        }
        if self.sessions.tunnel_ends == 0 || self.sessions.tunnel_ends > crate::session_side::Tunnels::MAX {
            return Err(bad("sessions.tunnel_ends", format!("must be 1..=65535, got {}", self.sessions.tunnel_ends)));
        }
        let i = &self.inspection;
        if i.max_sessions == 0 || i.max_sessions > 1 << 24 {
            return Err(bad("inspection.max_sessions", format!("must be 1..=16777216, got {}", i.max_sessions)));
        }
        if i.stream_session_cap < 4096 || i.stream_session_cap > 16 << 20 {
            return Err(bad(
                "inspection.stream_session_cap",
                format!("must be 4096..=16777216 bytes, got {}", i.stream_session_cap),
            ));
        }
        if i.stream_core_cap < i.stream_session_cap {
            return Err(bad("inspection.stream_core_cap", "must be at least stream_session_cap".into()));
        }
        if i.detect_bytes > i.stream_session_cap {
            return Err(bad("inspection.detect_bytes", "must not exceed stream_session_cap".into()));
        }
        if let Err((field, message)) = self.tunnels.validate() {
            return Err(bad(field, message));
        }
        let g = &self.defrag;
        if g.max_datagrams == 0 || g.max_datagrams > 1 << 20 {
            return Err(bad("defrag.max_datagrams", format!("must be 1..=1048576, got {}", g.max_datagrams)));
        }
        if g.max_fragments < 2 || g.max_fragments > 8192 {
            return Err(bad("defrag.max_fragments", format!("must be 2..=8192, got {}", g.max_fragments)));
        }
        if g.max_frames < g.max_fragments || g.max_frames > d.umem_frames as usize / 4 {
            return Err(bad(
                "defrag.max_frames",
                format!(
                    "must be at least max_fragments ({}) and at most umem_frames / 4 ({}), got {}",
                    g.max_fragments,
                    d.umem_frames / 4,
                    g.max_frames
                ),
            ));
        }
        let min_bytes = 2 * crate::defrag::MAX_ASSEMBLED;
        if g.max_bytes < min_bytes || g.max_bytes > 1 << 30 {
            return Err(bad(
                "defrag.max_bytes",
                format!("must be {min_bytes}..=1073741824 bytes (two largest datagrams at least), got {}", g.max_bytes),
            ));
        }
        if g.timeout == 0 || g.timeout > 120 {
            return Err(bad("defrag.timeout", format!("must be 1..=120 s, got {}", g.timeout)));
        }
        let pc = &self.policy;
        if pc.dns_ttl_min == 0 || pc.dns_ttl_min > pc.dns_ttl_max {
            return Err(bad("policy.dns_ttl_min", format!("must be 1..=dns_ttl_max, got {}", pc.dns_ttl_min)));
        }
        if pc.dns_ttl_max > 604_800 {
            return Err(bad("policy.dns_ttl_max", format!("must be at most 604800 s, got {}", pc.dns_ttl_max)));
        }
        if pc.dns_clients == 0 || pc.dns_clients > 65536 {
            return Err(bad("policy.dns_clients", format!("must be 1..=65536, got {}", pc.dns_clients)));
        }
        if pc.dns_names_per_client == 0
            || pc.dns_names_per_client > 4096
            || pc.dns_clients * pc.dns_names_per_client > 1 << 20
        {
            return Err(bad(
                "policy.dns_names_per_client",
                format!("must be 1..=4096 with dns_clients x it at most 1048576, got {}", pc.dns_names_per_client),
            ));
        }
        let a = &self.attach;
        if !["adopt", "restore"].contains(&a.on_start.as_str()) {
            return Err(bad("attach.on_start", format!("must be \"adopt\" or \"restore\", got {:?}", a.on_start)));
        }
        if !["keep", "detach"].contains(&a.on_stop.as_str()) {
            return Err(bad("attach.on_stop", format!("must be \"keep\" or \"detach\", got {:?}", a.on_stop)));
        }
        if let Some(m) = &a.default_mode {
            if crate::policy::Mode::from_name(m).is_none() {
                return Err(bad("attach.default_mode", format!("{m:?} is not learn, alert or protect")));
            }
        }
        if a.state_dir.is_empty() {
            return Err(bad("attach.state_dir", "must not be empty".into()));
        }
        let mut monitored = std::collections::HashSet::new();
        for m in &self.monitor {
            if m.iface.is_empty() {
                return Err(bad("monitor", "iface must name an interface".into()));
            }
            if !monitored.insert(m.iface.clone()) {
                return Err(bad("monitor", format!("interface {} is monitored twice", m.iface)));
            }
        }
        for p in &self.inline {
            if let Some(n) = [&p.a, &p.b].into_iter().find(|n| monitored.contains(*n)) {
                return Err(bad("monitor", format!("interface {n} is in an inline pair: monitor it or put it inline, not both")));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for p in &self.inline {
            if p.a == p.b {
                return Err(bad("inline", format!("pair {}:{} uses one interface twice", p.a, p.b)));
            }
            for n in [&p.a, &p.b] {
                if !seen.insert(n.clone()) {
                    return Err(bad("inline", format!("interface {n} is in two pairs")));
                }
            }
        }
        Ok(())
    }
}

/// The 1-based line of byte offset `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())].iter().filter(|b| **b == b'\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_settings_their_errors_and_the_deprecated_idle_spins() {
        let d = Config::default().dataplane.poll_config();
        assert_eq!((d.mode, d.spin_ns), (PollMode::Adaptive, u64::from(DEFAULT_SPIN_US) * 1000));
        let c = Config::parse("[dataplane]\npoll = \"adaptive\"\nspin_us = 0\n", "w.toml").unwrap();
        assert_eq!(c.dataplane.poll_config(), PollConfig { mode: PollMode::Adaptive, spin_ns: 0 });
        let c = Config::parse("[dataplane]\npoll = \"busy\"\n", "w.toml").unwrap();
        assert_eq!(c.dataplane.poll_config().mode, PollMode::Busy);
        assert!(c.warnings.is_empty());
        for (text, want) in [
            ("[dataplane]\nworkers = 1\nspin_us = 20000\n", "dataplane.spin_us: must be 0..=10000 µs, got 20000 (line 3)"),
            ("[dataplane]\npoll = \"busy\"\nspin_us = 5\n", "dataplane.spin_us: only applies to poll = \"adaptive\""),
        ] {
            let e = Config::parse(text, "w.toml").unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
        // A mode that does not exist: toml's error names the line and the field's values.
        let e = Config::parse("[dataplane]\npoll = \"sleepy\"\n", "w.toml").unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("adaptive") && e.contains("busy"), "{e}");
        // idle_spins still loads, with a warning naming the line, and changes nothing.
        let c = Config::parse("[dataplane]\nworkers = 1\n\nidle_spins = 2000\n", "w.toml").unwrap();
        assert_eq!(c.warnings.len(), 1);
        assert!(c.warnings[0].contains("w.toml: line 4: dataplane.idle_spins is deprecated"), "{}", c.warnings[0]);
        assert_eq!(c.dataplane.poll_config(), Config::default().dataplane.poll_config());
    }

    #[test]
    fn example_config_parses() {
        let text = include_str!("../../conf/warden.toml");
        let c = Config::parse(text, "conf/warden.toml").unwrap();
        assert_eq!(c.inline.len(), 1);
        assert_eq!(c.sessions.timeouts().tcp_closed, 5_000_000_000);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert_eq!(c.capture, crate::capture::CaptureConfig::default(), "the example shows the defaults");
        assert_eq!(c.attach, AttachConfig::default(), "the example shows the defaults");
    }

    #[test]
    fn capture_section() {
        let c = Config::parse("[capture]\ndir = \"/srv/caps\"\npretrigger_frames = 16\npretrigger_filter = \"host 198.18.0.2\"\n", "w.toml").unwrap();
        assert_eq!((c.capture.dir.as_str(), c.capture.pretrigger_frames), ("/srv/caps", 16));
        for (text, field) in [
            ("[capture]\nmax_active = 0\n", "capture.max_active"),
            ("[capture]\nring_bytes = 100\n", "capture.ring_bytes"),
            ("[capture]\npretrigger_frames = 1000\n", "capture.pretrigger_frames"),
            ("[capture]\npretrigger_filter = \"tcp port\"\n", "capture.pretrigger_filter"),
            ("[capture]\nnope = 1\n", "nope"),
        ] {
            let e = Config::parse(text, "w.toml").unwrap_err().to_string();
            assert!(e.contains(field), "{text}: {e}");
        }
    }

    #[test]
    fn metrics_and_log_sections() {
        let c = Config::parse("[metrics]\nlisten = \"127.0.0.1:9597\"\n[log]\nformat = \"json\"\n", "w.toml").unwrap();
        assert_eq!(c.metrics.listen.as_deref(), Some("127.0.0.1:9597"));
        assert_eq!(c.log.format.as_deref(), Some("json"));
        // Off by default.
        assert_eq!(Config::default().metrics.listen, None);
        for (text, field) in [
            ("[metrics]\nlisten = \"localhost\"\n", "metrics.listen"),
            ("[metrics]\nlisten = \"127.0.0.1\"\n", "metrics.listen"),
            ("[log]\nformat = \"xml\"\n", "log.format"),
        ] {
            let e = Config::parse(text, "w.toml").unwrap_err().to_string();
            assert!(e.contains(field), "{text}: {e}");
        }
    }

    #[test]
    fn empty_is_default() {
        assert_eq!(Config::parse("", "x").unwrap(), Config::default());
    }

    #[test]
    fn unknown_field_names_line_and_field() {
        let e = Config::parse("[dataplane]\nworkers = 2\nwokers = 3\n", "w.toml").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("line 3") && msg.contains("wokers"), "{msg}");
    }

    #[test]
    fn wrong_type_names_line() {
        let e = Config::parse("[sessions]\nmax = \"lots\"\n", "w.toml").unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("max"), "{e}");
    }

    #[test]
    fn ranges_are_checked() {
        let e = Config::parse("[dataplane]\nring_size = 1000\n", "w.toml").unwrap_err();
        assert!(e.to_string().contains("dataplane.ring_size"), "{e}");
        let e = Config::parse("[[inline]]\na='x'\nb='x'\n", "w.toml").unwrap_err();
        assert!(e.to_string().contains("inline"), "{e}");
        for (text, field) in [
            ("[policy]\ndns_ttl_min = 0\n", "policy.dns_ttl_min"),
            ("[policy]\ndns_ttl_min = 60\ndns_ttl_max = 30\n", "policy.dns_ttl_min"),
            ("[policy]\ndns_ttl_max = 700000\n", "policy.dns_ttl_max"),
            ("[policy]\ndns_clients = 0\n", "policy.dns_clients"),
            ("[policy]\ndns_clients = 4096\ndns_names_per_client = 4096\n", "policy.dns_names_per_client"),
            ("[sessions]\ntunnel_ends = 0\n", "sessions.tunnel_ends"),
            ("[sessions]\ntunnel_ends = 65536\n", "sessions.tunnel_ends"),
            ("[sessions]\nmax = 0\n", "sessions.max"),
        ] {
            let e = Config::parse(text, "w.toml").unwrap_err();
            assert!(e.to_string().contains(field), "{text}: {e}");
        }
        // A table of a million sessions per worker, its tunnel ends raised to the most.
        let c = Config::parse("[sessions]\nmax = 1048576\ntunnel_ends = 65535\n", "w.toml").unwrap();
        let t = c.sessions.table();
        assert_eq!((t.capacity(), t.footprint().capacity), (1 << 20, 1 << 20));
        let c = Config::parse("[policy]\ndns_ttl_min = 5\ndns_ttl_max = 60\ndns_clients = 8\n", "w.toml").unwrap();
        assert_eq!(c.policy.names(), NameConfig { clients: 8, names_per_client: 32, ttl_min_s: 5, ttl_max_s: 60 });
    }

    #[test]
    fn defrag_section_and_its_ranges() {
        let c = Config::parse("[defrag]\nmax_datagrams = 64\ntimeout = 5\n", "w.toml").unwrap();
        let d = c.defrag.config();
        assert_eq!((d.max_datagrams, d.timeout_ns, d.max_frames), (64, 5_000_000_000, 1024));
        for (text, field) in [
            ("[defrag]\nmax_fragments = 1\n", "defrag.max_fragments"),
            ("[defrag]\nmax_frames = 2048\n", "defrag.max_frames"),
            ("[dataplane]\numem_frames = 4096\nring_size = 64\n[defrag]\nmax_frames = 1025\n", "defrag.max_frames"),
            ("[defrag]\nmax_bytes = 1000\n", "defrag.max_bytes"),
            ("[defrag]\ntimeout = 0\n", "defrag.timeout"),
            ("[defrag]\nmax_datagrams = 0\n", "defrag.max_datagrams"),
        ] {
            let e = Config::parse(text, "w.toml").unwrap_err().to_string();
            assert!(e.contains(field), "{text}: {e}");
        }
        let e = Config::parse("[defrag]\nmax_datagram = 3\n", "w.toml").unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("max_datagram"), "{e}");
    }

    #[test]
    fn monitor_tables() {
        let c = Config::parse("[[monitor]]\niface = 'eth1'\n[[monitor]]\niface = 'eth2'\n", "w.toml").unwrap();
        assert_eq!(c.monitor.iter().map(|m| m.iface.as_str()).collect::<Vec<_>>(), ["eth1", "eth2"]);
        for bad in ["[[monitor]]\niface = 'x'\n[[monitor]]\niface = 'x'\n", "[[monitor]]\niface = ''\n", "[[monitor]]\nif = 'x'\n"] {
            let e = Config::parse(bad, "w.toml").unwrap_err();
            assert!(e.to_string().contains("monitor") || e.to_string().contains("unknown field"), "{bad}: {e}");
        }
        // An interface is monitored or inline, not both.
        let e = Config::parse("[[monitor]]\niface = 'a'\n[[inline]]\na = 'a'\nb = 'b'\n", "w.toml").unwrap_err();
        assert!(e.to_string().contains("not both"), "{e}");
    }

    #[test]
    fn inline_flag() {
        assert_eq!(InlinePair::parse_flag("a:b").unwrap().b, "b");
        for bad in ["a", ":b", "a:", "a:b:c", "a:a"] {
            assert!(InlinePair::parse_flag(bad).is_err(), "{bad}");
        }
    }
}
