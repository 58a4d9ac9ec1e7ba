//! Message types of the control protocol (see the crate docs for the framing).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One request line from a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Daemon state: version, uptime, workers, report queue health. Reply: [`Reply::Status`].
    Status {},
    /// Managed interfaces. Reply: [`Reply::Interfaces`].
    ListInterfaces {},
    /// Start forwarding between two interfaces (by name). Reply: [`Reply::Done`].
    AddInlinePair {
        /// First interface name.
        a: String,
        /// Second interface name.
        b: String,
        /// What the kernel does with frames while Warden is not running (default `open`).
        #[serde(default)]
        fail_mode: FailMode,
    },
    /// Stop forwarding on the pair that contains these interfaces. Reply: [`Reply::Done`].
    RemoveInlinePair {
        /// One interface of the pair.
        a: String,
        /// The other interface (optional: either name identifies the pair).
        #[serde(default)]
        b: Option<String>,
    },
    /// One page of the live sessions, walked worker by worker, each worker's table in slot
    /// order. Send `page_size` and/or `after` to page: the reply is [`Reply::SessionPage`],
    /// whose `next` cursor, sent back as `after`, gets the following page (`next` absent: the
    /// walk is done). Every session that stays live for the whole walk is returned exactly
    /// once; one created or ended meanwhile may or may not appear. Each worker answers between
    /// two frame batches and looks at no more than [`MAX_LIST_SESSIONS`] sessions and
    /// [`LIST_SCAN_SLOTS`] table slots per answer, so a huge table costs many short pauses,
    /// never a long one.
    ///
    /// Without `page_size` and `after` (the 1.0 form, `limit` only) the reply is
    /// [`Reply::Sessions`]: the first page of `limit` sessions (default 1000, clamped to
    /// [`MAX_LIST_SESSIONS`]) with no cursor.
    ListSessions {
        /// 1.0 form: most sessions returned (clamped to [`MAX_LIST_SESSIONS`]); ignored when
        /// `page_size` is given.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<usize>,
        /// Most sessions in the page (default 1000, clamped to 1..=[`MAX_LIST_SESSIONS`]).
        /// A page can be shorter, even empty, while `next` is set: only a missing `next` ends
        /// the walk.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        page_size: Option<usize>,
        /// Where to resume: the `next` of the previous page (absent: from the start).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<SessionCursor>,
    },
    /// Per-interface and per-worker counters. Reply: [`Reply::Counters`].
    Counters {},
    /// Say which protocol version the client speaks (`"MAJOR.MINOR"`, [`PROTOCOL_VERSION`]).
    /// Reply: [`Reply::Hello`] with the server's version; an error reply when the majors
    /// differ (the connection stays usable). Optional: a client that sends no `hello` is
    /// served as one of the server's version.
    Hello {
        /// The client's protocol version, `"MAJOR.MINOR"`.
        version: String,
        /// Free text naming the client (`"wardenctl 0.1.0"`), logged by nothing, for humans.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client: Option<String>,
    },
    /// Turn this connection into a report stream. Reply: [`Reply::Subscribed`], then, in
    /// sequence order, [`Reply::Report`] and [`Reply::Event`] messages (each with its `seq`)
    /// and [`Reply::Lost`] wherever messages of the stream were dropped.
    Subscribe {
        /// The last sequence number the subscriber saw: the stream starts at `since + 1`, with
        /// what the server still holds of it (`0`: everything it holds). Absent: only messages
        /// published from now on. A `since` of another daemon run (`epoch` differs, or `since`
        /// is beyond the last published number) starts at the oldest held message after a
        /// [`Reply::Lost`] with reason `restarted`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<u64>,
        /// The [`Subscribed::epoch`] the `since` belongs to (absent: this run's).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        epoch: Option<u64>,
    },
    /// Replace the whole policy (workloads, rules and services) with the TOML `text` (the policy file
    /// format, see `conf/policy.toml`), atomically: no frame sees half of it. A policy that
    /// does not parse or names unknown things is rejected whole (the error names line and
    /// field) and the running one stays. Reply: [`Reply::Done`].
    PolicyApply {
        /// The policy file's contents.
        text: String,
    },
    /// The running policy as a policy file. Reply: [`Reply::PolicyText`].
    PolicyShow {},
    /// Rule hit counters (sessions decided by each rule, and by each mode's default). Reply:
    /// [`Reply::PolicyStats`].
    PolicyStats {},
    /// Load the TOML `text` (the policy file format) as the **shadow policy**: a candidate
    /// evaluated beside the running one for every session (new ones at once, live ones on
    /// their next frame) without deciding anything. Records and events carry
    /// `shadow_verdict` / `shadow_rule_id` where it differs from the real verdict, and
    /// [`Request::PolicyDiff`] sums the differences since it was loaded. Replaces an earlier
    /// shadow (its counts start again); rejected whole like `policy_apply`. Reply:
    /// [`Reply::Done`], once every worker evaluates it.
    PolicyShadow {
        /// The candidate policy file's contents.
        text: String,
    },
    /// Drop the shadow policy (nothing changes in enforcement). Reply: [`Reply::Done`]; an
    /// error when none is loaded.
    PolicyShadowClear {},
    /// What the shadow policy would change over the sessions seen since it was loaded, per
    /// rule and workload pair. Reply: [`Reply::PolicyDiff`]; an error when none is loaded.
    PolicyDiff {},
    /// Make the shadow policy the running one, atomically (one generation swap: no session
    /// sees neither or both), and drop the shadow. Reply: [`Reply::Done`] once every worker
    /// enforces it; an error when none is loaded.
    PolicyPromote {},
    /// The threat catalogue with each threat's action, severity and counters. Reply:
    /// [`Reply::Threats`].
    Threats {},
    /// A policy file that, applied, allows exactly the connections learned so far (workloads
    /// switched to protect). Reply: [`Reply::PolicyText`].
    PolicyLearned {},
    /// Add or replace one workload (by `id`) in the running policy. Reply: [`Reply::Done`].
    SetWorkload {
        /// The workload.
        workload: WorkloadSpec,
    },
    /// Remove a workload, the rules that name it and its place among the backing workloads
    /// of services. Reply: [`Reply::Done`].
    RemoveWorkload {
        /// Its id.
        id: String,
    },
    /// Add or replace one Kubernetes Service with externalIPs (by `namespace` and `name`) in
    /// the running policy, for the `k8s_external_ip_mitm` threat (CVE-2020-8554): validated as
    /// the policy file's `[[service]]` table (the error names the field), published like any
    /// policy change (new sessions at once, live ones on their next frame). Like every runtime
    /// edit it lasts until the policy is replaced (`policy_apply`, or a reload of the policy
    /// file). Reply: [`Reply::Done`].
    SetService {
        /// The service.
        service: ServiceSpec,
    },
    /// Remove a service. Reply: [`Reply::Done`]; an error when there is no such service.
    RemoveService {
        /// Its namespace (absent: `default`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        namespace: Option<String>,
        /// Its name.
        name: String,
    },
    /// Change a workload's mode (`learn`, `alert`, `protect`): new sessions at once,
    /// established ones re-evaluated on their next frame. Reply: [`Reply::Done`].
    SetMode {
        /// Workload id.
        id: String,
        /// The new mode.
        mode: String,
    },
    /// Start a packet capture inside the dataplane (see [`CaptureSpec`]). With `stream` false
    /// the frames go to a pcapng file under `[capture] dir` and the reply is
    /// [`Reply::Capture`] at once. With `stream` true the connection turns into the capture's
    /// stream: [`Reply::Capture`], then [`Reply::CaptureData`] lines (the pcapng bytes, in
    /// order), then one [`Reply::CaptureEnd`]; the connection takes no further requests and
    /// closing it stops the capture.
    CaptureStart {
        /// What to capture, how much, where to.
        spec: CaptureSpec,
    },
    /// Running and finished captures of this run and the files in the capture directory.
    /// Reply: [`Reply::Captures`].
    CaptureList {},
    /// Stop a running capture (its file is complete when the reply comes). Reply:
    /// [`Reply::Capture`] with its final counts.
    CaptureStop {
        /// Capture id (as `capture_list` shows it).
        id: u32,
    },
    /// Delete a capture file of the capture directory by name (not one being written).
    /// Reply: [`Reply::Done`].
    CaptureDelete {
        /// The file name (no directory part).
        name: String,
    },
    /// Put Warden in front of a workload's interface (issue 12), without changing the
    /// workload's addresses, MACs or routes: see [`AttachSpec`]. Reply: [`Reply::Attached`]
    /// once the attachment forwards and every worker enforces the workload's policy (so its
    /// next frame is inspected); an error (nothing changed, the original plumbing in place)
    /// when the target cannot be found or its plumbing is not one Warden can take over.
    Attach {
        /// What to attach and how.
        spec: AttachSpec,
    },
    /// Undo an attachment: the original plumbing and interface settings exactly as before,
    /// the attachment's sessions ended with final records. Reply: [`Reply::Done`]; an error
    /// when nothing is attached under that name.
    Detach {
        /// The attachment's name ([`AttachInfo::name`]) or its target as given to `attach`.
        name: String,
    },
    /// Current attachments. Reply: [`Reply::Attachments`].
    ListAttachments {},
    /// Workloads discovered behind attached interfaces (container, pod, VM). Reply:
    /// [`Reply::Workloads`].
    ListWorkloads {},
    /// **Test hook**: makes worker `worker` panic as a bug in it would, so tests can check that
    /// Warden then exits non-zero and leaves every pair in its fail mode. Refused (an error
    /// reply, nothing happens) unless `warden run` was started with the hidden `--test-hooks`
    /// flag. Reply: [`Reply::Done`], after which the process exits.
    TestKillWorker {
        /// Worker index (as in [`WorkerCounters::worker`]).
        worker: usize,
    },
    /// **Test hook**: makes worker `worker` stop looping for `secs` seconds (at most 60), as a
    /// worker stuck in a bug would, so tests can check that the systemd watchdog pings stop.
    /// Refused unless `warden run --test-hooks`. Reply: [`Reply::Done`].
    TestStallWorker {
        /// Worker index (as in [`WorkerCounters::worker`]).
        worker: usize,
        /// How long it stalls, in seconds (clamped to 60).
        secs: u64,
    },
}

impl Request {
    /// Whether the request needs the control socket's **admin** role: everything that changes
    /// the daemon (pairs, policy, workloads, services, modes, test hooks). The rest (status, counters,
    /// interfaces, sessions, subscribe, policy show/stats/learned) is served to **read-only**
    /// clients too. Exhaustive on purpose: a new request must be classified.
    pub fn needs_admin(&self) -> bool {
        match self {
            Request::Hello { .. }
            | Request::Status {}
            | Request::ListInterfaces {}
            | Request::ListSessions { .. }
            | Request::Counters {}
            | Request::Subscribe { .. }
            | Request::PolicyShow {}
            | Request::PolicyStats {}
            | Request::PolicyDiff {}
            | Request::CaptureList {}
            | Request::Threats {}
            | Request::ListAttachments {}
            | Request::ListWorkloads {}
            | Request::PolicyLearned {} => false,
            Request::AddInlinePair { .. }
            | Request::RemoveInlinePair { .. }
            | Request::PolicyApply { .. }
            | Request::PolicyShadow { .. }
            | Request::PolicyShadowClear {}
            | Request::PolicyPromote {}
            | Request::CaptureStart { .. }
            | Request::CaptureStop { .. }
            | Request::CaptureDelete { .. }
            | Request::SetWorkload { .. }
            | Request::RemoveWorkload { .. }
            | Request::SetService { .. }
            | Request::RemoveService { .. }
            | Request::SetMode { .. }
            | Request::Attach { .. }
            | Request::Detach { .. }
            | Request::TestKillWorker { .. }
            | Request::TestStallWorker { .. } => true,
        }
    }

    /// The request's `cmd` name as sent on the wire (`status`, `policy_apply`, ...).
    pub fn name(&self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.get("cmd").and_then(|c| c.as_str()).map(str::to_string))
            .unwrap_or_else(|| "request".into())
    }
}

/// Most sessions one `list_sessions` page holds (a larger `page_size` or `limit` is clamped).
pub const MAX_LIST_SESSIONS: usize = 10_000;

/// Most session-table slots a worker looks at to answer one `list_sessions` step (live or
/// vacant; one cache line each), which bounds its pause in a large, sparsely filled table.
pub const LIST_SCAN_SLOTS: usize = 65_536;

/// Where a `list_sessions` walk resumes: a worker and a slot of its session table.
///
/// A position, not the id of the last session returned: session ids increase per worker but
/// the table keeps no order by id (an ordered index would cost work on every new session, on
/// the packet path), while a session keeps its slot for its whole life and the slots can be
/// walked in order from any point. So a walk by slot returns each session that stays live
/// throughout exactly once, resumes in O(1), and needs no state in the daemon between pages.
/// Structured rather than an opaque string so the schema says what it is; clients should
/// still only send back what they got. A cursor naming a worker the daemon does not have is
/// refused with an error; a slot beyond the worker's table moves on to the next worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionCursor {
    /// Worker index (0-based, as in [`Request::TestKillWorker`] and the counters).
    pub worker: u32,
    /// First slot of that worker's session table not looked at yet.
    pub slot: u32,
}

/// One page of live sessions, the answer to a paged [`Request::ListSessions`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SessionPage {
    /// The sessions, in walk order.
    pub sessions: Vec<ConnectionRecord>,
    /// Cursor of the next page, to send as `after`; absent when the walk is done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<SessionCursor>,
}

impl SessionPage {
    /// Whether more sessions may follow (`next` is set).
    pub fn more(&self) -> bool {
        self.next.is_some()
    }
}

/// A workload as sent over the control socket (the `[[workload]]` table of a policy file).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSpec {
    /// Unique id, referred to by rules.
    pub id: String,
    /// Its IPv4 and IPv6 addresses.
    #[serde(default)]
    pub ips: Vec<String>,
    /// Its MAC addresses (`02:00:00:00:00:02`).
    #[serde(default)]
    pub macs: Vec<String>,
    /// Interface it sits behind (optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iface: Option<String>,
    /// `learn`, `alert` or `protect`; absent: the policy's default mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

/// A Kubernetes Service with externalIPs as sent over the control socket (the `[[service]]`
/// table of a policy file): the addresses (and ports) it claims and the workloads backing it.
/// A workload's traffic to a claimed address that belongs to another workload (or to no
/// workload) is the `k8s_external_ip_mitm` threat (CVE-2020-8554).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// The Service's name (a DNS-1035 label: lowercase letters, digits and `-`, 1 to 63,
    /// starting with a letter).
    pub name: String,
    /// Its namespace (a DNS-1123 label); absent: `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The addresses it claims (`spec.externalIPs`; IPv4 or IPv6, at least one).
    #[serde(default)]
    pub external_ips: Vec<String>,
    /// Its ports (`"80"` or a range `"8000-8100"`); empty or absent: every port and protocol.
    /// With ports only TCP and UDP connections match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
    /// Ids of the workloads backing it (workloads of the running policy).
    #[serde(default)]
    pub workloads: Vec<String>,
}

/// Hit counters of one rule.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct RuleStats {
    /// Rule id, or absent for a mode default (`default` names the mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u32>,
    /// For defaults: `learn`, `alert` or `protect`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// `allow` or `deny` (rules), or the default's verdict (`learned`, `violation`, `denied`).
    pub action: String,
    /// Sessions this rule decided since the policy was applied.
    pub sessions: u64,
}

/// What the shadow policy would change (answer to [`Request::PolicyDiff`], and `warden
/// replay --policy A --shadow B`): the sessions whose settled shadow verdict differs from their
/// settled real verdict, each counted once, grouped by (client workload, server workload,
/// protocol, server port, real verdict and rule, shadow verdict and rule). Sessions whose
/// verdicts agree are only counted in `compared`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct PolicyDiff {
    /// Sessions whose real and shadow verdicts were both settled (app known where an `apps`
    /// rule needed it) since the shadow was loaded, summed over workers.
    pub compared: u64,
    /// Sessions that differ (the sum of the entries' `sessions`, plus `overflow`).
    pub differing: u64,
    /// Sessions that differ but found no room in a worker's table of groups (at most
    /// [`MAX_DIFF_GROUPS`] per worker): counted here, in no entry.
    #[serde(default)]
    pub overflow: u64,
    /// The groups, newly denied first, then newly allowed, then other changes; most
    /// sessions first within each.
    pub entries: Vec<PolicyDiffEntry>,
}

/// Most groups of differing sessions a worker keeps for [`PolicyDiff`].
pub const MAX_DIFF_GROUPS: usize = 4096;

/// One group of sessions the shadow policy decides differently ([`PolicyDiff::entries`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct PolicyDiffEntry {
    /// `deny`: the shadow denies what the running policy does not (the candidate would newly
    /// block it); `allow`: the shadow allows (or learns) what the running policy denies or
    /// reports as a violation; `change`: any other difference (e.g. `allowed` to
    /// `violation`).
    pub change: String,
    /// Client workload id (as the shadow policy names it), if the client is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_workload: Option<String>,
    /// Server workload id (as the shadow policy names it), if the server is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_workload: Option<String>,
    /// IP protocol number.
    pub ip_proto: u8,
    /// Server port (0 for protocols without ports).
    pub server_port: u16,
    /// The running policy's verdict (`learned`, `allowed`, `violation`, `denied`; absent: not
    /// enforced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,
    /// The running policy's deciding rule (absent: the mode's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_id: Option<u32>,
    /// The shadow policy's verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow_verdict: Option<String>,
    /// The shadow policy's deciding rule (absent: the mode's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow_rule_id: Option<u32>,
    /// Sessions in the group.
    pub sessions: u64,
    /// The client and server address of the group's first session.
    pub example_client: String,
    /// See `example_client`.
    pub example_server: String,
}

/// What to capture ([`Request::CaptureStart`]). The target conditions all apply (and): the
/// interfaces, the workload, the addresses, ports, protocol and the tcpdump expression are
/// compiled together by libpcap into one filter run on each frame after its verdict, by the
/// worker that owns the frame's flow. Whichever limit comes first ends the capture.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CaptureSpec {
    /// An interface of an inline pair: frames received on it or on its peer (the traffic
    /// crossing that pair, both directions; each block names the interface the frame came
    /// in on). Absent: every pair.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iface: Option<String>,
    /// A workload id of the running policy: frames to or from its addresses, and, when it has
    /// an `iface`, only on that interface's pair.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    /// Addresses or CIDRs (`198.18.0.2`, `2001:db8::/64`): frames with any of them as source
    /// or destination.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Ports: TCP/UDP frames with any of them as source or destination port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
    /// `tcp`, `udp`, `icmp`, `icmp6`, `sctp`, or an IP protocol number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<String>,
    /// A tcpdump filter expression (pcap-filter(7)), over Ethernet frames as received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// Seconds to run (default `[capture] default_duration_s`, at most `max_duration_s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<u64>,
    /// Most pcapng bytes (default `[capture] default_max_size`; never more than the disk
    /// budget leaves for a file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<u64>,
    /// Most frames.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_packets: Option<u64>,
    /// Bytes kept of each frame (default 65535).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snaplen: Option<u32>,
    /// `all` (default), `forwarded` or `dropped` (dropped frames carry the reason in their
    /// block's comment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frames: Option<String>,
    /// File name in the capture directory (letters, digits, `.`, `_`, `-`; not starting with
    /// `.`; `.pcapng` is added when missing); absent: `capture-<id>-<time>.pcapng`. Ignored
    /// when `stream`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Stream the pcapng over this connection instead of writing a file (`-w -`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
}

/// A capture or a capture file ([`Reply::Capture`], [`Reply::Captures`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct CaptureInfo {
    /// Capture id (absent for a file no capture of this run wrote).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u32>,
    /// File name in the capture directory, or `-` for a stream.
    pub name: String,
    /// `running`, `done`, or `file` (a file in the directory from a pre-trigger event or an
    /// earlier run).
    pub state: String,
    /// Why it ended: `duration`, `max_size`, `max_packets`, `stopped`, `disk_budget`,
    /// `client_gone`, `write_error`, `shutdown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<String>,
    /// The filter as compiled (tcpdump syntax; empty: every frame).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub filter: String,
    /// The interfaces it takes frames from (empty: all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ifaces: Vec<String>,
    /// `all`, `forwarded` or `dropped`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub frames: String,
    /// Frames written.
    pub packets: u64,
    /// pcapng bytes written (for a file: its size).
    pub bytes: u64,
    /// Matching frames not written: a worker's ring to the writer was full, or a stream's
    /// reader fell behind its backlog.
    #[serde(default)]
    pub lost: u64,
    /// Start time, RFC 3339 UTC.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub started: String,
    /// Limits in force: seconds, bytes, frames, snap length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<u64>,
    /// See `duration_s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<u64>,
    /// See `duration_s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_packets: Option<u64>,
    /// See `duration_s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snaplen: Option<u32>,
}

/// Bytes of a streamed capture ([`Reply::CaptureData`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct CaptureData {
    /// Capture id.
    pub id: u32,
    /// The next pcapng bytes, base64 (RFC 4648 §4, padded); concatenated in order they are
    /// the capture file.
    pub data: String,
}

/// Failure behaviour of an inline pair while no Warden socket is bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailMode {
    /// The XDP program forwards frames to the peer interface in the kernel.
    #[default]
    Open,
    /// The XDP program drops frames.
    Closed,
}

/// One response line. `ok` tells success; on failure `error` says why and `reply` is absent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Response {
    /// Whether the request succeeded.
    pub ok: bool,
    /// Human-readable reason when `ok` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The payload when `ok` is true.
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<Reply>,
}

impl Response {
    /// A success response carrying `reply`.
    pub fn ok(reply: Reply) -> Self {
        Self { ok: true, error: None, reply: Some(reply) }
    }

    /// A failure response with `msg`.
    pub fn err(msg: impl Into<String>) -> Self {
        Self { ok: false, error: Some(msg.into()), reply: None }
    }
}

/// Payloads of successful responses; serialized as `"<variant>": value` next to `"ok":true`.
// One reply per request or stream message, serialized at once: the size difference costs
// nothing worth a Box in the public API.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// For [`Request::Status`].
    Status(Status),
    /// For [`Request::ListInterfaces`].
    Interfaces(Vec<InterfaceInfo>),
    /// For [`Request::ListSessions`] in its 1.0 form (`limit` only).
    Sessions(Vec<ConnectionRecord>),
    /// For [`Request::ListSessions`] with `page_size` or `after`.
    SessionPage(SessionPage),
    /// For [`Request::Counters`].
    Counters(Counters),
    /// For [`Request::Hello`].
    Hello(Hello),
    /// For [`Request::Subscribe`].
    Subscribed(Subscribed),
    /// A report batch pushed to subscribers.
    Report(ReportBatch),
    /// An event pushed to subscribers (before the batch of the same report cycle).
    Event(SeqEvent),
    /// Messages of the stream that this subscriber will never get (dropped from the server's
    /// bounded buffer before it read them), sent in their place.
    Lost(Lost),
    /// For requests that only act: a short message.
    Done(String),
    /// For [`Request::PolicyShow`] and [`Request::PolicyLearned`]: a policy file.
    PolicyText(String),
    /// For [`Request::PolicyStats`].
    PolicyStats(Vec<RuleStats>),
    /// For [`Request::PolicyDiff`].
    PolicyDiff(PolicyDiff),
    /// For [`Request::CaptureStart`] (first line of a stream) and [`Request::CaptureStop`].
    Capture(CaptureInfo),
    /// For [`Request::CaptureList`].
    Captures(Vec<CaptureInfo>),
    /// A streamed capture's next pcapng bytes.
    CaptureData(CaptureData),
    /// A streamed capture ended (its final counts and why); last line of the stream.
    CaptureEnd(CaptureInfo),
    /// For [`Request::Threats`]: every threat of the catalogue, in catalogue order.
    Threats(Vec<ThreatInfo>),
    /// For [`Request::Attach`].
    Attached(AttachInfo),
    /// For [`Request::ListAttachments`].
    Attachments(Vec<AttachInfo>),
    /// For [`Request::ListWorkloads`].
    Workloads(Vec<WorkloadInfo>),
}

/// What [`Request::Attach`] puts Warden in front of.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct AttachSpec {
    /// The target: a container id or name, a network namespace (a name under
    /// `/run/netns`, or a path such as `/proc/PID/ns/net` or `/var/run/netns/NAME`), a tap
    /// or a host-side veth interface name. How to read it: `kind` (absent: tried in that
    /// order).
    pub target: String,
    /// `container`, `netns`, `tap` or `iface` (absent: guessed as said for `target`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// For a container or network namespace: the interface inside it (absent: its only
    /// non-loopback interface, an error when it has several).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
    /// Mode of the attached workload when no policy workload selects it (`learn`, `alert`,
    /// `protect`; absent: `[attach] default_mode`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Receive-only: Warden watches the interface's frames (same pipeline, records and
    /// events) and forwards nothing; the plumbing is not changed.
    #[serde(default)]
    pub monitor: bool,
    /// The name to give the attachment (absent: the container name, netns name or interface).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Addresses the workload uses, when the caller knows them (the CNI plugin passes its
    /// `prevResult` addresses); absent: read from the interface inside the namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
}

/// One attachment (answer to [`Request::Attach`], [`Request::ListAttachments`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct AttachInfo {
    /// Its name (unique): what [`Request::Detach`] takes.
    pub name: String,
    /// `container`, `netns`, `tap` or `iface`.
    pub kind: String,
    /// The workload's interface on the host side (the veth peer or the tap) Warden now
    /// receives the workload's frames on.
    pub host_iface: String,
    /// The interface Warden created to take the host interface's place (on its bridge), if
    /// inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warden_iface: Option<String>,
    /// The bridge the host interface was a port of, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
    /// True when receive-only ([`AttachSpec::monitor`]).
    #[serde(default)]
    pub monitor: bool,
    /// The workload's mode as enforced (`learn`, `alert`, `protect`).
    pub mode: String,
    /// The policy workload id its addresses belong to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    /// Its addresses.
    #[serde(default)]
    pub ips: Vec<String>,
    /// Who it is, as far as discovered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Identity>,
    /// `attached`, `starting` (being set up) or `gone` (its interface went away; attached
    /// again when the same container, namespace or tap returns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

/// Who is behind an address: the container, pod or VM discovered behind an attached
/// interface (network namespace → processes → cgroup → runtime metadata; libvirt's domain
/// XML for taps). Every field is optional: only what was found is set.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct Identity {
    /// Container id (64 hex digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// Container name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
    /// `docker`, `containerd`, `cri-o` or `podman`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// Kubernetes pod name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    /// Kubernetes pod namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_namespace: Option<String>,
    /// Kubernetes pod uid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    /// Kubernetes pod labels, where the runtime's metadata has them.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub pod_labels: std::collections::BTreeMap<String, String>,
    /// libvirt domain name (for a VM's tap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_name: Option<String>,
    /// The host-side interface the workload sits behind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_iface: Option<String>,
}

/// One discovered workload (answer to [`Request::ListWorkloads`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct WorkloadInfo {
    /// The attachment it was found behind.
    pub attachment: String,
    /// Who it is.
    pub identity: Identity,
    /// Its addresses.
    #[serde(default)]
    pub ips: Vec<String>,
    /// The policy workload id its addresses belong to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
}

/// One threat of the catalogue as the daemon runs it (answer to [`Request::Threats`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct ThreatInfo {
    /// Id (`tcp_syn_flood`, ...), as in records, events and `[threats.<id>]`.
    pub id: String,
    /// What it is, one line.
    pub summary: String,
    /// `low`, `medium`, `high` or `critical`.
    pub severity: String,
    /// Action in protect mode: `alert`, `drop`, `reset` or `off` (`[threats.<id>] action`).
    pub action: String,
    /// Detections since start, all workers.
    pub hits: u64,
    /// Frames dropped by its action since start.
    pub dropped_frames: u64,
}

/// The control protocol version this crate speaks, `"MAJOR.MINOR"`. A change of MAJOR breaks
/// clients (a message they parse changed meaning or shape); MINOR adds optional fields,
/// messages or requests that older clients may ignore.
pub const PROTOCOL_VERSION: &str = "1.5";

/// The `(major, minor)` of a `"MAJOR.MINOR"` version string.
///
/// # Errors
/// A message quoting `v` when it is not two dot-separated decimal numbers.
pub fn parse_version(v: &str) -> Result<(u32, u32), String> {
    let bad = || format!("protocol version {v:?} is not MAJOR.MINOR");
    let (a, b) = v.split_once('.').ok_or_else(bad)?;
    Ok((a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?))
}

/// Checks that `ours` and `theirs` share their major version.
///
/// # Errors
/// A message naming both versions when the majors differ or a version does not parse.
pub fn check_version(ours: &str, theirs: &str, who: &str) -> Result<(), String> {
    let (a, _) = parse_version(ours)?;
    let (b, _) = parse_version(theirs)?;
    if a != b {
        return Err(format!(
            "protocol version mismatch: this side speaks {ours}, the {who} speaks {theirs} (major versions differ)"
        ));
    }
    Ok(())
}

/// Answer to [`Request::Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct Hello {
    /// The server's protocol version, `"MAJOR.MINOR"`.
    pub version: String,
    /// The server software and its version (`"warden 0.1.0"`).
    pub server: String,
    /// This daemon run (see [`Subscribed::epoch`]).
    pub epoch: u64,
}

/// Answer to [`Request::Subscribe`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct Subscribed {
    /// Seconds between report batches.
    pub interval_s: u64,
    /// Identifies this daemon run (its start time, ns since the Unix epoch): sequence numbers
    /// start at 1 in each run, so a stored `since` is only meaningful with its epoch.
    pub epoch: u64,
    /// The first sequence number this subscription will deliver (a [`Reply::Lost`] comes
    /// first when that is after `since + 1`).
    pub first_seq: u64,
    /// The last sequence number published so far (0: none yet).
    pub last_seq: u64,
}

/// An event with its sequence number: `{"seq":7,"event":"threat",...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SeqEvent {
    /// Position in the report stream (one sequence for batches, events; see
    /// [`ReportBatch::seq`]).
    pub seq: u64,
    /// The event.
    #[serde(flatten)]
    pub event: Event,
}

/// Messages of the report stream dropped before this subscriber read them (like Hubble's
/// `LostEvent`): sequence numbers `from_seq..=to_seq` will not be delivered.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct Lost {
    /// First sequence number lost.
    pub from_seq: u64,
    /// Last sequence number lost.
    pub to_seq: u64,
    /// Connection records those report batches carried.
    pub records: u64,
    /// Events lost.
    pub events: u64,
    /// Report batches lost.
    pub batches: u64,
    /// `buffer_full`: dropped from the server's buffer (`[dataplane] report_buffer_bytes`)
    /// before this subscriber read them (it was disconnected or slow); `restarted`: `since`
    /// belongs to another daemon run, whose undelivered messages are gone (counts unknown,
    /// 0, `from_seq` and `to_seq` 0).
    pub reason: String,
    /// True when the counts are lower bounds (the server no longer remembers the exact counts
    /// of messages that old).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub approximate: bool,
}

/// Daemon state.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct Status {
    /// Warden's version.
    pub version: String,
    /// Seconds since start.
    pub uptime_s: u64,
    /// Number of worker threads.
    pub workers: usize,
    /// Number of inline pairs.
    pub inline_pairs: usize,
    /// Live sessions over all workers.
    pub sessions: u64,
    /// Current report subscribers.
    pub subscribers: usize,
    /// Seconds between report batches.
    pub report_interval_s: u64,
    /// Connection records that could not be queued (a worker's report queue to the control
    /// thread was full, or a slow subscriber's queue overflowed); counted, never silent.
    pub report_overflow: u64,
    /// Report stream messages published but not yet read, summed over subscribers.
    pub report_queued: usize,
    /// Report stream: the buffer of published messages kept for subscribers (bounded in bytes).
    #[serde(default)]
    pub report_stream: ReportStream,
    /// Flows announced by other flows (TFTP transfers announced by their requests), over all
    /// workers.
    #[serde(default)]
    pub related_flows: RelatedFlows,
    /// DNS names learned for `fqdn` rules (one table for all workers).
    #[serde(default)]
    pub dns_names: DnsNames,
    /// Generation of the running policy (increments with every apply, workload, service or mode
    /// change).
    #[serde(default)]
    pub policy_generation: u32,
    /// Workloads in the running policy.
    #[serde(default)]
    pub policy_workloads: usize,
    /// Rules in the running policy.
    #[serde(default)]
    pub policy_rules: usize,
    /// Kubernetes Services with externalIPs in the running policy.
    #[serde(default)]
    pub policy_services: usize,
    /// Rules of the shadow policy (`policy_shadow`), absent when none is loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow_rules: Option<usize>,
    /// Collectors records are exported to (`[[export.ipfix]]`), with their counters.
    #[serde(default)]
    pub export: Vec<ExportStatus>,
}

/// Counters of one IPFIX collector (see [`Status::export`]). Every update the reporter
/// offered is either sent, still queued, not due yet (a live session between active
/// timeouts), or counted in one of the `dropped_*` counters.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct ExportStatus {
    /// Collector address and port.
    pub collector: String,
    /// `udp` or `tcp`.
    pub transport: String,
    /// UDP: socket open; TCP: connected now.
    pub connected: bool,
    /// Session updates waiting in the queue.
    pub queued: usize,
    /// Data records sent.
    pub records_sent: u64,
    /// IPFIX messages sent (templates included).
    pub messages_sent: u64,
    /// Template sets sent (at start, per TCP connection, and each UDP template interval).
    pub templates_sent: u64,
    /// Session updates dropped because the queue was full (the exporter fell behind or the
    /// TCP collector was unreachable).
    pub dropped_queue_full: u64,
    /// Records lost because their message could not be sent (or left queued at shutdown while
    /// the collector was unreachable).
    pub dropped_send: u64,
    /// Failed sends and connection attempts.
    pub send_errors: u64,
    /// Transport sessions opened (TCP connections; 1 for UDP).
    pub connects: u64,
}

/// The report stream's buffer and losses (see [`Status::report_stream`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct ReportStream {
    /// This daemon run (see [`Subscribed::epoch`]).
    pub epoch: u64,
    /// Last sequence number published (0: none yet).
    pub last_seq: u64,
    /// Oldest sequence number still held (`last_seq + 1` when none is held).
    pub oldest_seq: u64,
    /// Messages held.
    pub held: usize,
    /// Bytes held (serialized JSON lines).
    pub held_bytes: usize,
    /// The bound on `held_bytes` (`[dataplane] report_buffer_bytes`).
    pub limit_bytes: usize,
    /// Connection records published (in report batches) since start.
    pub records: u64,
    /// Events published since start.
    pub events: u64,
    /// Records dropped from the buffer before any subscriber read them.
    pub unread_dropped_records: u64,
    /// Events dropped from the buffer before any subscriber read them.
    pub unread_dropped_events: u64,
    /// Records announced as lost to subscribers ([`Reply::Lost`]), summed over subscriptions.
    pub lost_records: u64,
    /// Events announced as lost to subscribers, summed over subscriptions.
    pub lost_events: u64,
}

/// Counters of the related-flow expectation table (see [`Status::related_flows`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct RelatedFlows {
    /// Expectations registered (new or refreshed by a retransmitted request).
    pub registered: u64,
    /// New sessions joined to the flow that announced them.
    pub joined: u64,
    /// Expectations that expired unused (counted when their slot is reused).
    pub expired: u64,
    /// Live expectations dropped because every slot was in use.
    pub replaced: u64,
    /// Registrations abandoned after losing the race for a slot repeatedly.
    pub failed: u64,
}

/// Counters of the DNS name table `fqdn` rules match through (see [`Status::dns_names`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct DnsNames {
    /// Names stored (new, refreshed, or replacing one of the same client's).
    pub stored: u64,
    /// Stores that refreshed a client's same name and address.
    pub refreshed: u64,
    /// Stores that replaced a live name of the same client (its share of the table was full).
    pub replaced: u64,
    /// Responses that answer no outstanding query of their flow (wrong transaction id or
    /// question, no query, answered already).
    pub refused_unsolicited: u64,
    /// Address records outside the CNAME chain from the question.
    pub refused_off_chain: u64,
    /// Names longer than 253 characters (never truncated).
    pub refused_too_long: u64,
    /// Names no `fqdn` rule could use for that client and address.
    pub refused_unwanted: u64,
    /// Names of a new client refused because every client slot held live names.
    pub refused_clients_full: u64,
    /// Queries beyond a flow's outstanding bound, addresses beyond an answer's bound.
    pub refused_overflow: u64,
    /// Answers that were malformed (a record that does not parse, sections cut short, bytes
    /// after the last record): nothing of them is stored.
    #[serde(default)]
    pub refused_malformed: u64,
    /// Stores abandoned after losing races for a slot repeatedly.
    pub failed: u64,
}

/// One managed interface.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct InterfaceInfo {
    /// Interface name.
    pub name: String,
    /// Kernel ifindex.
    pub ifindex: u32,
    /// The other interface of its inline pair.
    pub peer: String,
    /// Number of rx queues the interface has (as last read; Warden re-reads it every second).
    pub queues: u32,
    /// Number of its rx queues Warden bound a socket to; frames on the others are dropped
    /// while Warden runs (`xdp_unbound` in the counters).
    #[serde(default)]
    pub bound_queues: u32,
    /// `open` or `closed`.
    pub fail_mode: FailMode,
    /// `native` or `generic` XDP.
    pub xdp_mode: String,
    /// Workers that own a socket on it.
    pub workers: Vec<usize>,
}

/// Counters of one interface, summed over the workers that serve it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct InterfaceCounters {
    /// Interface name.
    pub name: String,
    /// Frames received from the interface's XSKs.
    pub rx_frames: u64,
    /// Bytes of those frames (L2, no FCS).
    pub rx_bytes: u64,
    /// Frames transmitted on the interface.
    pub tx_frames: u64,
    /// Bytes transmitted.
    pub tx_bytes: u64,
    /// Frames received on this interface and dropped, by reason.
    pub dropped: BTreeMap<String, u64>,
    /// Times the tx ring had no room for a whole batch.
    pub tx_ring_full: u64,
    /// Times the fill ring was found empty (the kernel may have dropped frames).
    pub fill_ring_empty: u64,
    /// Kernel-side counts: frames the XDP program redirected to Warden.
    pub xdp_to_xsk: u64,
    /// Kernel-side counts: frames forwarded in-kernel because no socket was bound.
    pub xdp_fail_open: u64,
    /// Kernel-side counts: frames dropped because no socket was bound (fail_closed).
    pub xdp_fail_closed: u64,
    /// Kernel-side counts: frames dropped while Warden runs because their rx queue has no
    /// Warden socket (not bound yet after a channel change, or beyond the queues Warden can
    /// bind); never forwarded uninspected.
    #[serde(default)]
    pub xdp_unbound: u64,
    /// Kernel-side counts: frames the XDP fast path redirected to the peer interface in the
    /// kernel (flows Warden decided and offloaded; their sessions count them too).
    #[serde(default)]
    pub xdp_fast_path: u64,
    /// Bytes of those frames (L2, no FCS).
    #[serde(default)]
    pub xdp_fast_path_bytes: u64,
    /// True when frames arriving here may take the XDP fast path (`[dataplane] fast_path` on
    /// and the peer interface accepts in-kernel redirects).
    #[serde(default)]
    pub fast_path: bool,
    /// Kernel XSK statistics: frames dropped because the rx ring was full (summed over queues).
    pub xsk_rx_dropped: u64,
    /// Kernel XSK statistics: invalid descriptors and rx-ring-full events.
    pub xsk_rx_ring_full: u64,
}

/// Counters of one worker thread.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct WorkerCounters {
    /// Worker index.
    pub worker: usize,
    /// Core it is pinned to, if pinning succeeded.
    pub core: Option<usize>,
    /// Frames processed (received from XSKs plus handed over from other workers).
    pub frames: u64,
    /// Bytes processed.
    pub bytes: u64,
    /// Frames this worker passed to the worker that owns their flow.
    pub handoff_out: u64,
    /// Frames this worker received from other workers.
    pub handoff_in: u64,
    /// Frames lost because a handoff ring was full.
    pub handoff_dropped: u64,
    /// Sessions created.
    pub sessions_created: u64,
    /// Sessions ended by idle timeout.
    pub sessions_expired: u64,
    /// Sessions evicted because the table was full (all classes below).
    pub sessions_evicted: u64,
    /// Evicted: denied by policy, or TCP closed/reset (lingering until reported).
    #[serde(default)]
    pub sessions_evicted_lingering: u64,
    /// Evicted: TCP handshakes never completed.
    #[serde(default)]
    pub sessions_evicted_embryonic: u64,
    /// Evicted: flows seen in one direction only.
    #[serde(default)]
    pub sessions_evicted_one_way: u64,
    /// Evicted: UDP/ICMP/other flows seen in both directions. (Established TCP sessions are
    /// never evicted.)
    #[serde(default)]
    pub sessions_evicted_two_way: u64,
    /// New flows refused (their frames dropped) because the table was full of established TCP
    /// sessions.
    #[serde(default)]
    pub sessions_refused: u64,
    /// Live sessions.
    pub sessions_active: u64,
    /// Malformed frames by reason (forwarded or dropped per policy; counted either way).
    pub malformed: BTreeMap<String, u64>,
    /// Connection records lost because the queue to the control thread was full.
    pub report_overflow: u64,
    /// Frames dropped because their session is denied by policy.
    #[serde(default)]
    pub policy_dropped: u64,
    /// Denied sessions ended with TCP resets.
    #[serde(default)]
    pub policy_resets: u64,
    /// Violation/denied events lost because the per-core event queue was full.
    #[serde(default)]
    pub policy_events_dropped: u64,
    /// Frames claiming a workload's address, or a session's direction, from a side or MAC
    /// it does not send from (dropped in protect mode, counted in every mode).
    #[serde(default)]
    pub spoofed: u64,
    /// Exception policy applications by reason (`midstream`, `inspection_pool_full`,
    /// `stream_core_cap`, `stream_session_cap`, `out_of_order_limit`, `defrag_full`,
    /// `defrag_timeout`); only reasons seen.
    #[serde(default)]
    pub exceptions: BTreeMap<String, u64>,
    /// Frames never inspected because the receiving host drops or ignores them, by anomaly
    /// (`bad_checksum`, `tcp_no_ack`, `tcp_ack_unsent`, `tcp_out_of_window`,
    /// `tcp_rst_out_of_window`, `tcp_rst_challenged`, `tcp_syn_established`, `tcp_conflict`, `tcp_urgent_ambiguous`), and
    /// `syn_data_resyncs` (sessions whose unaccepted SYN data was inspected again); only
    /// those seen.
    #[serde(default)]
    pub normalization: BTreeMap<String, u64>,
    /// ICMP counters by name (frames): `errors_related` (counted toward the session they
    /// quote), `rejected_wrong_direction`, `rejected_seq_missing`, `rejected_seq_out_of_window`
    /// (errors quoting a live session that failed that check), `rejected_dropped` (of those,
    /// dropped in protect mode), `errors_unmatched`, `redirects`, `redirects_dropped`,
    /// `echo_reversed`, `echo_reply_opened`. Only non-zero counters are listed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub icmp: BTreeMap<String, u64>,
    /// Threats: detections (`hits`), frames dropped by threat actions (`dropped`), threat
    /// events sent, detections merged into events, detections lost to a full event queue
    /// (`events_lost`), per worker (absent when all zero).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub threats: BTreeMap<String, u64>,
    /// IP reassembly.
    #[serde(default)]
    pub defrag: DefragCounters,
    /// Tunnel decapsulation, frames: inner packets decapsulated by tunnel type (`vxlan`,
    /// `geneve`, `gre`, `erspan`, `gtpu`, `ipip`, `6in4`, `4in6`, `ip6ip6`), tunnel packets
    /// whose inner packet did not decode (`malformed`), inner packets nested too deep
    /// (`too_deep`) or fragmented (`inner_fragments`). Only non-zero counters are listed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tunnels: BTreeMap<String, u64>,
    /// Capture stage, frames and flows: `copied` (copies put into the ring to the capture
    /// writer), `lost` (copies the full ring refused), and the pre-trigger ring's
    /// `pretrigger_flows` (flows kept), `pretrigger_evicted` (one-way or idle flows replaced),
    /// `pretrigger_not_kept` (new flows with no entry to take), `pretrigger_files`,
    /// `pretrigger_files_refused` (rate or file limit). Only non-zero counters are listed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub capture: BTreeMap<String, u64>,
    /// Where the worker's time went since start: working, waiting (spinning or asleep), its
    /// thread's CPU time, and the frames it cost that for.
    #[serde(default)]
    pub time: WorkerTime,
    /// The XDP fast path of this worker's sessions (`[dataplane] fast_path`): sessions put on
    /// it (`offloaded`) and on it now (`active`), frames and bytes the kernel forwarded for
    /// them (`frames`, `bytes`, as pulled back), sessions that qualified while every entry of
    /// the worker was used (`refused_full`) or after too many offloads (`refused_limit`), map
    /// updates the kernel refused (`errors`), sessions taken off by reason (`removed_ended`,
    /// `removed_policy`, `removed_threats`, `removed_frame`, `removed_icmp`,
    /// `removed_error`). Empty when the fast path is off.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fast_path: BTreeMap<String, u64>,
}

/// Where one worker's time went since start (ns; `[dataplane] poll`). Its wall time is
/// `busy_ns + spin_ns + sleep_ns`; the CPU it used is `cpu_ns` (the kernel's figure for the
/// thread, system calls included), about `busy_ns + spin_ns`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct WorkerTime {
    /// Loops that did work (frames, handoffs, commands): their time (ns).
    pub busy_ns: u64,
    /// Loops that found nothing, spinning on empty rings (ns): CPU spent waiting.
    pub spin_ns: u64,
    /// Asleep in poll(2) (ns): waiting without CPU.
    pub sleep_ns: u64,
    /// CPU time of the worker thread, user + system (ns, CLOCK_THREAD_CPUTIME_ID).
    pub cpu_ns: u64,
    /// Sleeps in poll(2).
    pub sleeps: u64,
    /// Sleeps ended by frames on an rx ring.
    pub woken_rx: u64,
    /// Sleeps ended by a wake-up: frames handed over by another worker, a command, a policy.
    pub woken_waker: u64,
    /// Sleeps ended by their timeout (the worker's timers).
    pub woken_timer: u64,
    /// Frames the worker took from its rx rings and handoff rings.
    pub frames: u64,
    /// Adaptive polling's estimate of the mean time between the worker's frames (ns).
    pub frame_gap_ns: u64,
    /// Sampled stage timing (one rx batch in 64): frames of the timed batches and the time
    /// (ns) each stage took for them: `rx` (the rx ring), `decode` (L2–L4), `inspect`
    /// (sessions, streams and apps, policy, threats; or the handoff copy), `tx` (the peer's tx
    /// ring and the kernel's transmit). Stage time / frames = mean ns per frame in that stage.
    #[serde(default)]
    pub stage_frames: u64,
    /// ns per stage over `stage_frames` (`rx`, `decode`, `inspect`, `tx`).
    #[serde(default)]
    pub stage_ns: BTreeMap<String, u64>,
}

impl WorkerTime {
    /// CPU seconds per million frames: the thread's CPU time over the frames (`None` before
    /// the first frame).
    pub fn cpu_s_per_mframe(&self) -> Option<f64> {
        (self.frames > 0).then(|| self.cpu_ns as f64 / self.frames as f64 / 1e3)
    }

    /// Working seconds per million frames: the busy loops' time over the frames.
    pub fn busy_s_per_mframe(&self) -> Option<f64> {
        (self.frames > 0).then(|| self.busy_ns as f64 / self.frames as f64 / 1e3)
    }
}

/// IP reassembly counters of one worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct DefragCounters {
    /// Fragment frames received.
    pub fragments: u64,
    /// Fragment frames held now (waiting for the rest of their datagram).
    pub held: u64,
    /// Datagrams reassembled (each decided and inspected as one packet).
    pub reassembled: u64,
    /// Datagrams not complete within `[defrag] timeout`.
    pub timeouts: u64,
    /// Datagrams whose overlapping fragments carried different bytes (`ip_teardrop`).
    pub overlaps: u64,
    /// Datagrams longer than 65535 bytes (`ping_of_death`), dropped.
    pub too_big: u64,
    /// Datagrams failed for lack of room (`[defrag]` limits).
    pub full: u64,
    /// Fragments or datagrams no host reassembles (malformed).
    pub malformed: u64,
    /// Datagrams whose fragments the exception policy forwarded or dropped (room or timeout).
    pub exceptions: u64,
}

/// Answer to [`Request::Counters`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct Counters {
    /// One entry per managed interface.
    pub interfaces: Vec<InterfaceCounters>,
    /// One entry per worker.
    pub workers: Vec<WorkerCounters>,
}

/// The tunnel an inner flow rides ([`ConnectionRecord::tunnel`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct TunnelRecord {
    /// Tunnel type: `vxlan`, `geneve`, `gre`, `erspan`, `gtpu`, `ipip` (IPv4 in IPv4), `6in4`,
    /// `4in6`, `ip6ip6`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The tunnel id of the frame that opened the session: VXLAN/Geneve VNI, GRE key (0 when
    /// absent), PPTP call id, ERSPAN session id, GTP-U TEID (each end picks its own, so the
    /// other direction's may differ); 0 for IP-in-IP.
    pub id: u32,
    /// Outer address of the tunnel endpoint on the client's side.
    pub outer_client: String,
    /// Outer address of the tunnel endpoint on the server's side.
    pub outer_server: String,
}

/// One connection (session) record, as reported to subscribers, by `list_sessions` and by
/// `warden replay`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct ConnectionRecord {
    /// Address of the side that opened the flow (IPv4 or IPv6, textual).
    pub client_ip: String,
    /// Client port (0 for protocols without ports; for ICMP echo and timestamp, the identifier:
    /// the client is the sender of the request, and the server port is 0).
    pub client_port: u16,
    /// Address of the other side.
    pub server_ip: String,
    /// Server port.
    pub server_port: u16,
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6, ...).
    pub ip_proto: u8,
    /// Application protocol, `"unknown"` until detected.
    pub app: String,
    /// Frame bytes (L2, as on the wire without FCS) from client to server since the start.
    pub bytes_to_server: u64,
    /// Frame bytes from server to client.
    pub bytes_to_client: u64,
    /// Frames from client to server.
    pub packets_to_server: u64,
    /// Frames from server to client.
    pub packets_to_client: u64,
    /// Frames from client to server that Warden dropped (included in `packets_to_server`).
    #[serde(default)]
    pub packets_dropped_to_server: u64,
    /// Frames from server to client that Warden dropped (included in `packets_to_client`).
    #[serde(default)]
    pub packets_dropped_to_client: u64,
    /// Bytes of the dropped client-to-server frames (included in `bytes_to_server`).
    #[serde(default)]
    pub bytes_dropped_to_server: u64,
    /// Bytes of the dropped server-to-client frames (included in `bytes_to_client`).
    #[serde(default)]
    pub bytes_dropped_to_client: u64,
    /// First frame, RFC 3339 UTC.
    pub first_seen: String,
    /// Latest frame, RFC 3339 UTC.
    pub last_seen: String,
    /// Session state (`syn_sent`, `established`, `half_closed`, `closed`, `reset`, `active`...).
    pub state: String,
    /// True for a TCP session picked up mid-stream: its SYN was not seen (Warden started or
    /// restarted while the connection was open, or the SYN took another path). Its app is then
    /// detected from the framing of whatever it sends (TLS records, HTTP heads at turns, TDS
    /// packets, Kafka responses matched to requests), and its client and server are those the
    /// content showed (the sender of a response is the server) or else a guess (the end on the
    /// higher port is the client). Absent otherwise.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub midstream: bool,
    /// Interface where the client side was seen.
    pub iface: String,
    /// True in the final record of a session that ended (closed, reset, expired or evicted).
    pub closed: bool,
    /// Why the session ended when `closed` (`fin`, `rst`, `idle`, `evicted`, `shutdown`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<String>,
    /// Session packets seen when the app was decided (absent while `app` is unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_detected_after: Option<u32>,
    /// Fields the app's parser extracted (bounded; shape per app, see ARCHITECTURE.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l7: Option<serde_json::Map<String, serde_json::Value>>,
    /// The app the session was detected as before its bytes stopped being that protocol (its
    /// parser rejected them) and detection ran again; `app` is what came after (absent when
    /// the app never changed so).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_app: Option<String>,
    /// Times the stream stopped being its detected protocol and detection ran again (absent
    /// when none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_changes: Option<u32>,
    /// Why `app` is `unknown` although detection ended: `no_match` (every parser rejected the
    /// bytes), `detect_limit` (the detection window ended undecided), `gap` (bytes lost during
    /// detection), `no_allowed_app` (the session's verdict hung on its app and its bytes could
    /// no longer be any app the policy allows: decided at once), `too_many_changes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_unknown_reason: Option<String>,
    /// `active` (probing or parsing), `done` (nothing more to inspect), `bypassed` (no longer
    /// inspected, see `inspection_reason` and `exception_action`) or `none` (denied by policy
    /// on its first frame: never inspected). A `midstream` session passed on by `pass_flow` is
    /// inspected (`active`/`done`), with `exception_action` `pass_flow`. Absent for protocols Warden does not inspect
    /// (ICMP, other IP protocols).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inspection: Option<String>,
    /// Why inspection was bypassed (`midstream`: dropped by `drop_flow` or forwarded by
    /// `bypass`; `stream_session_cap`, `stream_core_cap`, `out_of_order_limit`,
    /// `inspection_pool_full`) or not done (`policy_denied`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inspection_reason: Option<String>,
    /// The exception policy action taken because Warden could not inspect what the verdict
    /// depends on (`drop_flow`, `pass_flow`, `bypass`; absent when none applied or the session
    /// is not policed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exception_action: Option<String>,
    /// TCP bytes retransmitted with different content than first seen (evasion signal): bytes
    /// of retransmissions that differed from bytes already inspected and not yet acknowledged,
    /// and of out-of-order segments that differed from each other (absent when none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_overlap_conflicts: Option<u32>,
    /// Retransmitted TCP bytes that could not be compared with what was inspected (no longer
    /// kept: per-stream ring or per-core budget full; absent when none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_unverified_bytes: Option<u32>,
    /// Urgent TCP bytes taken out of band (absent when none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_urgent_bytes: Option<u32>,
    /// Normalisation anomalies of the session: frames the receiving host drops or ignores
    /// and Warden never inspected (`bad_checksum`, `tcp_no_ack`, `tcp_ack_unsent`,
    /// `tcp_out_of_window`, `tcp_rst_out_of_window`, `tcp_rst_challenged`, `tcp_syn_established`, `tcp_conflict`, `tcp_urgent_ambiguous`;
    /// empty when none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub anomalies: Vec<String>,
    /// Frames of the session with one of those anomalies (absent when none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anomalous_frames: Option<u32>,
    /// For the inner flow of a tunnel: the tunnel it rides (absent otherwise). The client and
    /// server fields are the inner flow's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<TunnelRecord>,
    /// For an outer flow that carries a tunnel: the tunnel type (`vxlan`, `geneve`, `gre`,
    /// `erspan`, `gtpu`, `ipip`, `6in4`, `4in6`, `ip6ip6`); its inner flows have records of
    /// their own. Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel_carrier: Option<String>,
    /// True when the session was put on the XDP fast path at some point: its verdict was
    /// final and nothing more needed inspecting, so the kernel forwarded frames of it without
    /// Warden reading them (counted in the totals above all the same). Absent otherwise.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fast_path: bool,
    /// Frames of the session the fast path forwarded in the kernel (included in
    /// `packets_to_server` + `packets_to_client`; absent when none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fast_path_frames: Option<u64>,
    /// Threats detected in the session (first detection of each session's parser; absent when
    /// none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub threats: Vec<ThreatRecord>,
    /// Policy verdict: `learned`, `allowed`, `violation` or `denied` (absent when neither end
    /// is a workload).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,
    /// The rule that decided (absent: the mode's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_id: Option<u32>,
    /// The shadow policy's verdict (`wardenctl policy shadow`), present only when a shadow is
    /// loaded and its verdict differs from `verdict` (both settled): `learned`, `allowed`,
    /// `violation`, `denied`, or `none` where the shadow does not enforce the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow_verdict: Option<String>,
    /// The shadow policy's deciding rule where `shadow_verdict` is present (absent there: the
    /// shadow's mode default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow_rule_id: Option<u32>,
    /// In an event: the pre-trigger capture of the session (`[capture] pretrigger_frames`), a
    /// pcapng file in the capture directory holding its frames before the event and the next
    /// ones after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_file: Option<String>,
    /// Workload id of the client, if it is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_workload: Option<String>,
    /// Workload id of the server, if it is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_workload: Option<String>,
    /// Who the client is (container, pod, VM), when its address is a discovered workload's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_identity: Option<Identity>,
    /// Who the server is, when its address is a discovered workload's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_identity: Option<Identity>,
    /// Mode of the workload whose end decided (`learn`, `alert`, `protect`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// ICMP errors that quoted this session, went to the end that sent the quoted packet and
    /// (TCP) quoted a sequence number in window: counted in its frames and bytes (absent when
    /// none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_errors: Option<u32>,
    /// The threat that blocked the session in protect mode (its action `drop` or `reset`):
    /// its frames are dropped from then on (absent when none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threat_block: Option<String>,
    /// The blocking threat's action (`drop` or `reset`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threat_action: Option<String>,
    /// ICMP errors that quoted this session but failed those checks (forged or misdirected):
    /// not counted in its frames, dropped in protect mode (absent when none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_errors_rejected: Option<u32>,
}

/// One threat detected in a session (in a record's `threats`), or a threat event's detection.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct ThreatRecord {
    /// Kind, one of the catalogue's ids (`sql_injection`, `tcp_syn_flood`, ...; `wardenctl
    /// threats` lists them).
    pub id: String,
    /// Direction of the carrying bytes: `to_server` or `to_client` (empty when not tied to a
    /// direction: floods, frame checks).
    #[serde(default)]
    pub dir: String,
    /// What the detector saw: `libinjection` (an HTTP value) or a statement shape
    /// (`tautology`, `union_select`, `stacked_query`, `comment_truncation`, `time_function`,
    /// `error_function`, `catalog_probe`, `char_banner`, `unbalanced_quote`,
    /// `unbalanced_paren`, `command_exec`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// The triggering text, truncated (at most 128 bytes; empty for frame-level threats).
    #[serde(default)]
    pub evidence: String,
    /// In a record: detections of this kind in the session (for a parser's first kind, all
    /// its detections). In an event: the detections this event stands for, since the
    /// previous event of the same (threat, client, server) (events are merged: at most one
    /// per key per 10 s).
    pub count: u32,
    /// Events only: `low`, `medium`, `high` or `critical`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    /// Events only: what was done: `alert` (reported, forwarded), `drop` or `reset`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// Events only: the first offending frame's first bytes (at most 256, from the Ethernet
    /// header), base64 (RFC 4648 §4, padded); absent when the detection had no frame (a
    /// session judged when it ended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame: Option<String>,
    /// Events only: that frame's whole length (bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame_len: Option<u32>,
}

/// An event pushed to subscribers, serialized with its kind under `"event"`:
/// `{"event":"threat","threat":{...},"connection":{...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A session's first threat detection, sent once per session in the report cycle after it
    /// appeared.
    Threat {
        /// The detection (as in the record's `threats` array).
        threat: ThreatRecord,
        /// The session's record at that report cycle.
        connection: ConnectionRecord,
    },
    /// Alert mode: no rule allows the connection (sent when the session is decided, not at the
    /// next report cycle).
    Violation {
        /// The session's record when it was decided.
        connection: ConnectionRecord,
    },
    /// Protect mode: the connection is denied and its frames dropped (sent when decided).
    Denied {
        /// The session's record when it was decided.
        connection: ConnectionRecord,
    },
    /// Warden could not inspect what the session's verdict depends on and applied its
    /// exception policy (the record's `inspection_reason` and `exception_action` say why and
    /// what); sent when applied.
    Exception {
        /// The session's record when the exception applied.
        connection: ConnectionRecord,
    },
}

impl Event {
    /// The kind as serialized (`threat`, `violation`, `denied`, `exception`).
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Threat { .. } => "threat",
            Event::Violation { .. } => "violation",
            Event::Denied { .. } => "denied",
            Event::Exception { .. } => "exception",
        }
    }

    /// The session's record.
    pub fn connection(&self) -> &ConnectionRecord {
        match self {
            Event::Threat { connection, .. }
            | Event::Violation { connection }
            | Event::Denied { connection }
            | Event::Exception { connection } => {
                connection
            }
        }
    }
}

/// A batch of connection records pushed to subscribers every report interval (an interval
/// with many records is split into batches of at most [`MAX_BATCH_RECORDS`], all but the last
/// with `more`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct ReportBatch {
    /// Position in the report stream: one sequence per daemon run for batches and events,
    /// starting at 1, incremented by one per message, the same for every subscriber.
    pub seq: u64,
    /// RFC 3339 UTC time the batch was assembled.
    pub time: String,
    /// Every session that changed since the previous interval, and final records of ended
    /// ones.
    pub connections: Vec<ConnectionRecord>,
    /// Records of this interval the reporter could not hold (more distinct sessions than its
    /// per-interval bound), so in no batch; also counted in `status` `report_overflow`.
    #[serde(default)]
    pub dropped: u64,
    /// True when further batches of the same interval follow.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub more: bool,
}

/// Most connection records in one [`ReportBatch`].
pub const MAX_BATCH_RECORDS: usize = 512;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_must_share_their_major() {
        assert_eq!(parse_version("1.12"), Ok((1, 12)));
        assert!(parse_version("1").is_err() && parse_version("a.b").is_err());
        assert!(check_version("1.0", "1.7", "client").is_ok());
        let e = check_version("1.0", "2.0", "client").unwrap_err();
        assert!(e.contains("1.0") && e.contains("2.0") && e.contains("major"), "{e}");
    }

    #[test]
    fn request_wire_names() {
        let r: Request =
            serde_json::from_str(r#"{"cmd":"add_inline_pair","a":"x","b":"y"}"#).unwrap();
        assert_eq!(
            r,
            Request::AddInlinePair { a: "x".into(), b: "y".into(), fail_mode: FailMode::Open }
        );
        assert_eq!(serde_json::to_string(&Request::Status {}).unwrap(), r#"{"cmd":"status"}"#);
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"nope"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"status","x":1}"#).is_err());
        // Services: the namespace may be left out (the daemon reads it as `default`); an
        // unknown key in the service is refused, as in a workload.
        let r: Request = serde_json::from_str(
            r#"{"cmd":"set_service","service":{"name":"pay","external_ips":["198.18.0.50"],"ports":["443"],"workloads":["pay-a"]}}"#,
        )
        .unwrap();
        assert_eq!(
            r,
            Request::SetService {
                service: ServiceSpec {
                    name: "pay".into(),
                    namespace: None,
                    external_ips: vec!["198.18.0.50".into()],
                    ports: vec!["443".into()],
                    workloads: vec!["pay-a".into()],
                }
            }
        );
        assert!(r.needs_admin());
        let r: Request = serde_json::from_str(r#"{"cmd":"remove_service","namespace":"shop","name":"pay"}"#).unwrap();
        assert_eq!(r, Request::RemoveService { namespace: Some("shop".into()), name: "pay".into() });
        assert!(r.needs_admin());
        assert_eq!(r.name(), "remove_service");
        assert!(serde_json::from_str::<Request>(
            r#"{"cmd":"set_service","service":{"name":"pay","external_ips":[],"protocol":"tcp"}}"#
        )
        .is_err());
    }

    #[test]
    fn response_shapes_round_trip() {
        let ok = Response::ok(Reply::Subscribed(Subscribed { interval_s: 5, epoch: 9, first_seq: 3, last_seq: 2 }));
        let s = serde_json::to_string(&ok).unwrap();
        assert_eq!(s, r#"{"ok":true,"subscribed":{"interval_s":5,"epoch":9,"first_seq":3,"last_seq":2}}"#);
        assert_eq!(serde_json::from_str::<Response>(&s).unwrap(), ok);

        let err = Response::err("bad");
        let s = serde_json::to_string(&err).unwrap();
        assert_eq!(s, r#"{"ok":false,"error":"bad"}"#);
        assert_eq!(serde_json::from_str::<Response>(&s).unwrap(), err);

        let rec = ConnectionRecord { client_ip: "2001:db8::1".into(), ..Default::default() };
        let batch = Response::ok(Reply::Report(ReportBatch {
            seq: 3,
            connections: vec![rec],
            ..Default::default()
        }));
        let s = serde_json::to_string(&batch).unwrap();
        assert!(s.starts_with(r#"{"ok":true,"report":{"seq":3"#), "{s}");
        assert_eq!(serde_json::from_str::<Response>(&s).unwrap(), batch);

        let threat = ThreatRecord {
            id: "sql_injection".into(),
            dir: "to_server".into(),
            reason: "libinjection".into(),
            evidence: "1' OR '1'='1".into(),
            count: 1,
            ..Default::default()
        };
        let ev = Response::ok(Reply::Event(SeqEvent {
            seq: 4,
            event: Event::Threat { threat, connection: ConnectionRecord::default() },
        }));
        let s = serde_json::to_string(&ev).unwrap();
        assert!(
            s.starts_with(r#"{"ok":true,"event":{"seq":4,"event":"threat","threat":{"id":"sql_injection","dir":"to_server","reason":"libinjection""#),
            "{s}"
        );
        assert!(s.contains(r#""connection":{"client_ip":"#), "{s}");
        assert_eq!(serde_json::from_str::<Response>(&s).unwrap(), ev);
    }
}
