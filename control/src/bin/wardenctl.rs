//! `wardenctl`: talks to a running Warden over its control socket.
//!
//! Human-readable tables by default; `--json` prints one JSON object per line for scripts.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use warden_control::{
    Client, ClientError, ConnectionRecord, Event, FailMode, Reply, Request, ServiceSpec, SessionCursor,
    WorkloadSpec, DEFAULT_SOCKET,
};

#[derive(Parser)]
#[command(name = "wardenctl", version, about = "Control a running Warden dataplane")]
struct Cli {
    /// Control socket of the daemon.
    #[arg(long, global = true, default_value = DEFAULT_SOCKET)]
    socket: String,
    /// One JSON object per line instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Daemon state.
    Status,
    /// Managed interfaces.
    Interfaces,
    /// Live sessions, one page (and the command for the next), or every page with --all.
    Sessions {
        /// Sessions per page (default 1000, at most 10 000).
        #[arg(long, alias = "limit")]
        page_size: Option<usize>,
        /// Follow the cursors until every session has been listed.
        #[arg(long)]
        all: bool,
        /// Start at this cursor (`WORKER:SLOT`, as printed after a page).
        #[arg(long, value_parser = parse_cursor)]
        after: Option<SessionCursor>,
    },
    /// Per-interface and per-worker counters.
    Counters,
    /// Connection reports: one batch, or every batch (and every event) with --follow.
    Connections {
        /// Keep printing batches until interrupted.
        #[arg(long)]
        follow: bool,
        /// Start after this sequence number (what the daemon still holds of the stream; 0:
        /// all it holds); default: from now on.
        #[arg(long)]
        since: Option<u64>,
    },
    /// Write the JSON Schemas of the protocol's messages (no daemon needed).
    Schema {
        /// Directory to write them to (default: print them).
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
    /// Add an inline pair at runtime.
    AddPair {
        /// First interface.
        a: String,
        /// Second interface.
        b: String,
        /// Drop instead of forwarding in the kernel while Warden is down.
        #[arg(long)]
        fail_closed: bool,
    },
    /// Remove the inline pair containing an interface.
    RemovePair {
        /// An interface of the pair.
        a: String,
        /// The other interface (optional).
        b: Option<String>,
    },
    /// Policy: apply a file, show the running one, hit counters, the learned policy.
    Policy {
        #[command(subcommand)]
        cmd: PolicyCmd,
    },
    /// The threat catalogue: each threat's severity, action in protect mode and counters.
    Threats,
    /// Workloads: add or replace, remove, change mode.
    Workload {
        #[command(subcommand)]
        cmd: WorkloadCmd,
    },
    /// Kubernetes Services with externalIPs (for k8s_external_ip_mitm): add or replace, remove.
    Service {
        #[command(subcommand)]
        cmd: ServiceCmd,
    },
    /// Put Warden inline in front of a container, network namespace or tap (its bridge port
    /// is taken over; addresses, MACs and routes of the workload do not change).
    Attach {
        /// Container id or name, network namespace (name or path), tap or host interface.
        target: String,
        /// `container`, `netns`, `tap` or `iface` (default: guessed).
        #[arg(long)]
        kind: Option<String>,
        /// The interface inside the container or namespace (default: its only one).
        #[arg(long)]
        ifname: Option<String>,
        /// Mode of the workload: learn, alert or protect (default: [attach] default_mode).
        #[arg(long)]
        mode: Option<String>,
        /// Name of the attachment (default: the container, namespace or interface name).
        #[arg(long)]
        name: Option<String>,
        /// An address of the workload (repeatable; default: read inside its namespace).
        #[arg(long = "ip")]
        ips: Vec<String>,
    },
    /// Undo an attachment: the original plumbing and settings back.
    Detach {
        /// The attachment's name (or its target).
        name: String,
    },
    /// Current attachments.
    Attachments,
    /// Packet capture inside the dataplane (pcapng): start, list, stop, delete.
    Capture {
        #[command(subcommand)]
        cmd: CaptureCmd,
    },
}

#[derive(Subcommand)]
enum CaptureCmd {
    /// Start a capture: a file in the capture directory (-w NAME, default a generated name),
    /// or the pcapng on stdout (-w -, e.g. `| tshark -r -`) until a limit or Ctrl-C. Every
    /// condition given applies; whichever limit comes first ends it.
    Start {
        /// An interface of an inline pair: the traffic crossing that pair.
        #[arg(long)]
        iface: Option<String>,
        /// A workload id: frames to or from its addresses (on its interface's pair).
        #[arg(long)]
        workload: Option<String>,
        /// A tcpdump filter expression (pcap-filter(7)).
        #[arg(long)]
        filter: Option<String>,
        /// An address or CIDR (either end), repeatable.
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// A port (either end), repeatable.
        #[arg(long = "port")]
        ports: Vec<u16>,
        /// tcp, udp, icmp, icmp6, sctp or a protocol number.
        #[arg(long)]
        proto: Option<String>,
        /// Seconds to run (default: the daemon's [capture] default_duration_s).
        #[arg(long, value_name = "SECS")]
        duration: Option<u64>,
        /// Most pcapng bytes.
        #[arg(long, value_name = "BYTES")]
        max_size: Option<u64>,
        /// Most frames.
        #[arg(long, value_name = "N")]
        max_packets: Option<u64>,
        /// Bytes kept of each frame.
        #[arg(long, value_name = "BYTES")]
        snaplen: Option<u32>,
        /// Which frames: all, forwarded or dropped.
        #[arg(long, value_parser = ["all", "forwarded", "dropped"])]
        frames: Option<String>,
        /// File name in the capture directory, or `-` for stdout.
        #[arg(short = 'w', value_name = "NAME|-")]
        write: Option<String>,
    },
    /// Running and finished captures, and the files of the capture directory.
    List,
    /// Stop a running capture.
    Stop {
        /// Capture id.
        id: u32,
    },
    /// Delete a capture file.
    Delete {
        /// File name.
        name: String,
    },
}

#[derive(Subcommand)]
enum ServiceCmd {
    /// Add or replace a service (by namespace and name).
    Set {
        /// Service name.
        name: String,
        /// Its namespace (default: `default`).
        #[arg(long, short = 'n')]
        namespace: Option<String>,
        /// An address it claims (spec.externalIPs), repeatable; at least one.
        #[arg(long = "external-ip", required = true)]
        external_ips: Vec<String>,
        /// A port (`80`) or range (`8000-8100`), repeatable; none: every port and protocol.
        #[arg(long = "port")]
        ports: Vec<String>,
        /// Id of a workload backing it, repeatable.
        #[arg(long = "workload")]
        workloads: Vec<String>,
    },
    /// Remove a service.
    Remove {
        /// Service name.
        name: String,
        /// Its namespace (default: `default`).
        #[arg(long, short = 'n')]
        namespace: Option<String>,
    },
}

/// The request a `wardenctl service ...` command sends.
fn service_request(cmd: &ServiceCmd) -> Request {
    match cmd {
        ServiceCmd::Set {
            name,
            namespace,
            external_ips,
            ports,
            workloads,
        } => Request::SetService {
            service: ServiceSpec {
                name: name.clone(),
                namespace: namespace.clone(),
                external_ips: external_ips.clone(),
                ports: ports.clone(),
                workloads: workloads.clone(),
            },
        },
        ServiceCmd::Remove { name, namespace } => Request::RemoveService {
            namespace: namespace.clone(),
            name: name.clone(),
        },
    }
}

#[derive(Subcommand)]
enum PolicyCmd {
    /// Replace the whole policy with FILE (TOML), atomically; rejected whole on any error.
    Apply {
        /// The policy file.
        file: std::path::PathBuf,
    },
    /// Print the running policy as a policy file.
    Show,
    /// Sessions decided by each rule and by each mode's default.
    Stats,
    /// Print a policy file that allows exactly the connections learned so far.
    Learned,
    /// Load FILE as the shadow policy: every session is also evaluated against it (nothing
    /// is enforced); `--clear` drops it.
    Shadow {
        /// The candidate policy file.
        #[arg(required_unless_present = "clear")]
        file: Option<std::path::PathBuf>,
        /// Drop the shadow policy instead.
        #[arg(long, conflicts_with = "file")]
        clear: bool,
    },
    /// What the shadow policy would newly deny or allow over the traffic seen since it was
    /// loaded, per rule and workload pair.
    Diff,
    /// Make the shadow policy the running one, atomically.
    Promote,
}

#[derive(Subcommand)]
enum WorkloadCmd {
    /// Add or replace a workload.
    Set {
        /// Workload id.
        id: String,
        /// Its addresses (IPv4 or IPv6), repeatable.
        #[arg(long = "ip")]
        ips: Vec<String>,
        /// Its MAC addresses, repeatable.
        #[arg(long = "mac")]
        macs: Vec<String>,
        /// Interface it sits behind.
        #[arg(long)]
        iface: Option<String>,
        /// learn, alert or protect (default: the policy's default mode).
        #[arg(long)]
        mode: Option<String>,
    },
    /// Remove a workload and the rules naming it.
    Remove {
        /// Workload id.
        id: String,
    },
    /// Change a workload's mode.
    Mode {
        /// Workload id.
        id: String,
        /// learn, alert or protect.
        mode: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wardenctl: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> Result<(), Box<dyn std::error::Error>> {
    if let Cmd::Schema { out } = &cli.cmd {
        for (name, schema) in warden_control::schema::schemas() {
            let text = warden_control::schema::to_file_text(&schema);
            match out {
                Some(dir) => {
                    let path = dir.join(name);
                    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
                }
                None => print!("{text}"),
            }
        }
        return Ok(());
    }
    let mut client = Client::connect(&cli.socket)?;
    client.hello()?;
    let req = match &cli.cmd {
        Cmd::Status => Request::Status {},
        Cmd::Interfaces => Request::ListInterfaces {},
        Cmd::Sessions { page_size, all, after } => return sessions(cli, &mut client, *page_size, *all, *after),
        Cmd::Counters => Request::Counters {},
        Cmd::Threats => Request::Threats {},
        Cmd::Connections { follow, since } => return Ok(connections(cli, &mut client, *follow, *since)?),
        Cmd::Schema { .. } => unreachable!("handled above"),
        Cmd::AddPair { a, b, fail_closed } => Request::AddInlinePair {
            a: a.clone(),
            b: b.clone(),
            fail_mode: if *fail_closed { FailMode::Closed } else { FailMode::Open },
        },
        Cmd::RemovePair { a, b } => Request::RemoveInlinePair {
            a: a.clone(),
            b: b.clone(),
        },
        Cmd::Policy { cmd } => match cmd {
            PolicyCmd::Apply { file } => {
                let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
                Request::PolicyApply { text }
            }
            PolicyCmd::Show => Request::PolicyShow {},
            PolicyCmd::Stats => Request::PolicyStats {},
            PolicyCmd::Learned => Request::PolicyLearned {},
            PolicyCmd::Shadow { clear: true, .. } => Request::PolicyShadowClear {},
            PolicyCmd::Shadow { file, .. } => {
                let file = file.as_ref().ok_or("policy shadow: FILE or --clear")?;
                let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
                Request::PolicyShadow { text }
            }
            PolicyCmd::Diff => Request::PolicyDiff {},
            PolicyCmd::Promote => Request::PolicyPromote {},
        },
        Cmd::Workload { cmd } => match cmd {
            WorkloadCmd::Set {
                id,
                ips,
                macs,
                iface,
                mode,
            } => Request::SetWorkload {
                workload: WorkloadSpec {
                    id: id.clone(),
                    ips: ips.clone(),
                    macs: macs.clone(),
                    iface: iface.clone(),
                    mode: mode.clone(),
                },
            },
            WorkloadCmd::Remove { id } => Request::RemoveWorkload { id: id.clone() },
            WorkloadCmd::Mode { id, mode } => Request::SetMode {
                id: id.clone(),
                mode: mode.clone(),
            },
        },
        Cmd::Service { cmd } => service_request(cmd),
        Cmd::Attach { target, kind, ifname, mode, name, ips } => Request::Attach {
            spec: warden_control::AttachSpec {
                target: target.clone(),
                kind: kind.clone(),
                ifname: ifname.clone(),
                mode: mode.clone(),
                monitor: false,
                name: name.clone(),
                ips: ips.clone(),
            },
        },
        Cmd::Detach { name } => Request::Detach { name: name.clone() },
        Cmd::Attachments => Request::ListAttachments {},
        Cmd::Capture { cmd } => match cmd {
            CaptureCmd::Start {
                iface,
                workload,
                filter,
                hosts,
                ports,
                proto,
                duration,
                max_size,
                max_packets,
                snaplen,
                frames,
                write,
            } => {
                let stream = write.as_deref() == Some("-");
                let spec = warden_control::CaptureSpec {
                    iface: iface.clone(),
                    workload: workload.clone(),
                    hosts: hosts.clone(),
                    ports: ports.clone(),
                    proto: proto.clone(),
                    filter: filter.clone(),
                    duration_s: *duration,
                    max_size: *max_size,
                    max_packets: *max_packets,
                    snaplen: *snaplen,
                    frames: frames.clone(),
                    name: write.clone().filter(|_| !stream),
                    stream,
                };
                if stream {
                    let mut out = std::io::stdout().lock();
                    let end = client.capture_stream(
                        &spec,
                        |i| eprintln!("capture {} started: filter {:?}", i.id.unwrap_or(0), i.filter),
                        &mut out,
                    )?;
                    eprintln!(
                        "capture {} ended ({}): {} frames, {} bytes, {} lost",
                        end.id.unwrap_or(0),
                        end.stop_reason.as_deref().unwrap_or("-"),
                        end.packets,
                        end.bytes,
                        end.lost
                    );
                    return Ok(());
                }
                Request::CaptureStart { spec }
            }
            CaptureCmd::List => Request::CaptureList {},
            CaptureCmd::Stop { id } => Request::CaptureStop { id: *id },
            CaptureCmd::Delete { name } => Request::CaptureDelete { name: name.clone() },
        },
    };
    let reply = client.request(&req)?;
    if cli.json {
        print_json_lines(&reply);
    } else {
        print_table(&reply);
    }
    Ok(())
}

/// `WORKER:SLOT` (as [`sessions`] prints it) to a cursor.
fn parse_cursor(s: &str) -> Result<SessionCursor, String> {
    let bad = || format!("cursor {s:?} is not WORKER:SLOT");
    let (w, slot) = s.split_once(':').ok_or_else(bad)?;
    Ok(SessionCursor {
        worker: w.parse().map_err(|_| bad())?,
        slot: slot.parse().map_err(|_| bad())?,
    })
}

/// Lists one page of sessions starting at `after`, or every page with `all`; says on stderr
/// how to get the next page when there is one and `all` is off.
fn sessions(
    cli: &Cli,
    client: &mut Client,
    page_size: Option<usize>,
    all: bool,
    mut after: Option<SessionCursor>,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut header = true;
    loop {
        let req = Request::ListSessions {
            limit: None,
            page_size: Some(page_size.unwrap_or(1000)),
            after,
        };
        let page = match client.request(&req)? {
            Reply::SessionPage(p) => p,
            other => return Err(format!("unexpected reply to list_sessions: {other:?}").into()),
        };
        if cli.json {
            for c in &page.sessions {
                println!("{}", serde_json::to_string(c).unwrap_or_default());
            }
        } else if !page.sessions.is_empty() || header {
            print_connections(&page.sessions, header);
            header = false;
        }
        match page.next {
            Some(n) if all => after = Some(n),
            Some(n) => {
                eprintln!("more sessions: wardenctl sessions --after {}:{} (or --all)", n.worker, n.slot);
                return Ok(());
            }
            None => return Ok(()),
        }
    }
}

fn connections(cli: &Cli, client: &mut Client, follow: bool, since: Option<u64>) -> Result<(), ClientError> {
    let sub = client.subscribe_since(since, None)?;
    if !cli.json {
        eprintln!("waiting for reports (every {} s, from seq {})...", sub.interval_s, sub.first_seq);
    }
    let mut header = true;
    loop {
        let batch = match client.next_message()? {
            Reply::Report(b) => b,
            Reply::Event(e) => {
                print_event(&e.event, cli.json);
                continue;
            }
            Reply::Lost(l) => {
                if cli.json {
                    println!("{}", serde_json::to_string(&Reply::Lost(l)).unwrap_or_default());
                } else {
                    eprintln!(
                        "warning: lost {} records, {} events ({} batches, seq {}..={}, {}{})",
                        l.records,
                        l.events,
                        l.batches,
                        l.from_seq,
                        l.to_seq,
                        l.reason,
                        if l.approximate { ", at least" } else { "" }
                    );
                }
                continue;
            }
            _ => continue,
        };
        if cli.json {
            for c in &batch.connections {
                println!("{}", serde_json::to_string(c).unwrap_or_default());
            }
        } else {
            if !batch.connections.is_empty() {
                print_connections(&batch.connections, header);
                header = false;
            }
            if batch.dropped > 0 {
                eprintln!("warning: {} records of this interval dropped by the reporter (seq {})", batch.dropped, batch.seq);
            }
        }
        if !follow && !batch.connections.is_empty() && !batch.more {
            return Ok(());
        }
    }
}

/// One line per event: the event object in JSON mode, else
/// `THREAT <id> <severity> <action> x<count> <dir> <reason> <client> -> <server> <app> <evidence>`.
fn print_event(e: &Event, json: bool) {
    if json {
        println!("{}", serde_json::to_string(e).unwrap_or_default());
        return;
    }
    match e {
        Event::Threat { threat, connection: c } => println!(
            "THREAT {} {} {} x{} {} {} {} -> {} {} {:?}",
            threat.id,
            threat.severity.as_deref().unwrap_or("-"),
            threat.action.as_deref().unwrap_or("-"),
            threat.count,
            if threat.dir.is_empty() { "-" } else { &threat.dir },
            threat.reason,
            fmt_ep(&c.client_ip, c.client_port),
            fmt_ep(&c.server_ip, c.server_port),
            c.app,
            threat.evidence
        ),
        Event::Violation { connection: c } | Event::Denied { connection: c } => println!(
            "{} {} -> {} {} app={} rule={}{}{}",
            e.kind().to_uppercase(),
            fmt_ep(&c.client_ip, c.client_port),
            fmt_ep(&c.server_ip, c.server_port),
            proto_name(c.ip_proto),
            c.app,
            c.rule_id.map(|r| r.to_string()).unwrap_or_else(|| "default".into()),
            // Why the app is what it is: it changed (was another app), or why it is unknown.
            c.previous_app.as_deref().map(|p| format!(" previous_app={p}")).unwrap_or_default(),
            c.app_unknown_reason.as_deref().map(|r| format!(" app_unknown_reason={r}")).unwrap_or_default(),
        ),
        Event::Exception { connection: c } => println!(
            "EXCEPTION {} -> {} {} reason={} action={} verdict={}",
            fmt_ep(&c.client_ip, c.client_port),
            fmt_ep(&c.server_ip, c.server_port),
            proto_name(c.ip_proto),
            c.inspection_reason.as_deref().unwrap_or("-"),
            c.exception_action.as_deref().unwrap_or("-"),
            c.verdict.as_deref().unwrap_or("-"),
        ),
    }
}

fn print_json_lines(reply: &Reply) {
    let line = |v: &dyn erased::Ser| println!("{}", v.json());
    match reply {
        Reply::Interfaces(v) => v.iter().for_each(|x| line(x)),
        Reply::Sessions(v) => v.iter().for_each(|x| line(x)),
        Reply::SessionPage(p) => p.sessions.iter().for_each(|x| line(x)),
        Reply::Counters(c) => {
            c.interfaces.iter().for_each(|x| line(x));
            c.workers.iter().for_each(|x| line(x));
        }
        Reply::Status(s) => line(s),
        Reply::PolicyStats(v) => v.iter().for_each(|x| line(x)),
        Reply::Threats(v) => v.iter().for_each(|x| line(x)),
        Reply::PolicyDiff(d) => line(d),
        Reply::Captures(v) => v.iter().for_each(|x| line(x)),
        Reply::Attachments(v) => v.iter().for_each(|x| line(x)),
        other => line(other),
    }
}

/// A tiny object-safe wrapper so one closure prints any serializable value.
mod erased {
    pub trait Ser {
        fn json(&self) -> String;
    }
    impl<T: serde::Serialize> Ser for T {
        fn json(&self) -> String {
            serde_json::to_string(self).unwrap_or_default()
        }
    }
}

/// Prints rows as aligned columns, with the header line unless `header` is false (the widths
/// still account for it so later batches line up).
fn table_opt(header: &[&str], rows: &[Vec<String>], show_header: bool) {
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.len());
        }
    }
    let fmt = |cells: Vec<&str>| {
        let s: Vec<String> =
            cells.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = width[i])).collect();
        println!("{}", s.join("  ").trim_end());
    };
    if show_header {
        fmt(header.to_vec());
    }
    for r in rows {
        fmt(r.iter().map(String::as_str).collect());
    }
}

/// Prints rows as aligned columns under a header line.
fn table(header: &[&str], rows: &[Vec<String>]) {
    table_opt(header, rows, true);
}

/// One row of the worker time table: shares of the wall time working, spinning and asleep,
/// the thread's CPU seconds, the sleeps by what ended them, frames, CPU and working seconds per
/// million frames, and the adaptive estimate of the time between frames.
fn worker_time_row(worker: usize, t: &warden_control::WorkerTime) -> Vec<String> {
    let wall = (t.busy_ns + t.spin_ns + t.sleep_ns).max(1) as f64;
    let pct = |ns: u64| format!("{:.1}", 100.0 * ns as f64 / wall);
    let per = |v: Option<f64>| v.map(|x| format!("{x:.3}")).unwrap_or_else(|| "-".into());
    vec![
        worker.to_string(),
        pct(t.busy_ns),
        pct(t.spin_ns),
        pct(t.sleep_ns),
        format!("{:.3}", t.cpu_ns as f64 / 1e9),
        format!("{} ({}/{}/{})", t.sleeps, t.woken_rx, t.woken_waker, t.woken_timer),
        t.frames.to_string(),
        per(t.cpu_s_per_mframe()),
        per(t.busy_s_per_mframe()),
        format!("{:.1}", t.frame_gap_ns as f64 / 1e3),
    ]
}

fn print_connections(conns: &[ConnectionRecord], header: bool) {
    let rows: Vec<Vec<String>> = conns
        .iter()
        .map(|c| {
            vec![
                fmt_ep(&c.client_ip, c.client_port),
                fmt_ep(&c.server_ip, c.server_port),
                proto_name(c.ip_proto),
                c.app.clone(),
                format!("{}/{}", c.packets_to_server, c.packets_to_client),
                format!("{}/{}", c.bytes_to_server, c.bytes_to_client),
                c.state.clone(),
                c.iface.clone(),
                if c.closed { "closed".into() } else { "open".into() },
                match (&c.verdict, c.rule_id) {
                    (Some(v), Some(r)) => format!("{v}({r})"),
                    (Some(v), None) => v.clone(),
                    (None, _) => "-".into(),
                },
                detail(c),
            ]
        })
        .collect();
    let h = [
        "CLIENT", "SERVER", "PROTO", "APP", "PKTS(c>s/s>c)", "BYTES(c>s/s>c)", "STATE", "IFACE",
        "", "VERDICT", "DETAIL",
    ];
    table_opt(&h, &rows, header);
}

/// A one-line summary of the record's `l7` object (the fields an operator looks for first), at
/// most 60 characters.
fn detail(c: &ConnectionRecord) -> String {
    let Some(l7) = &c.l7 else { return String::new() };
    let pick = |k: &str| l7.get(k).and_then(|v| v.as_str().map(String::from).or_else(|| v.as_u64().map(|n| n.to_string())));
    let parts: Vec<String> = match c.app.as_str() {
        "http" | "http2" | "grpc" => ["method", "http_method", "host", "authority", "path", "status"]
            .iter()
            .filter_map(|k| pick(k))
            .collect(),
        "tls" => ["sni", "version"].iter().filter_map(|k| pick(k)).collect(),
        "dns" => ["query", "qtype", "rcode"].iter().filter_map(|k| pick(k)).collect(),
        "ssh" => ["client_version", "server_version"].iter().filter_map(|k| pick(k)).collect(),
        "mysql" | "postgresql" => ["user", "database", "first_query"].iter().filter_map(|k| pick(k)).collect(),
        "redis" => l7
            .get("commands")
            .and_then(|v| v.as_array())
            .map(|a| a.iter().filter_map(|x| x.as_str().map(String::from)).collect())
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    let mut s = parts.join(" ");
    if s.chars().count() > 60 {
        s = s.chars().take(57).collect::<String>() + "...";
    }
    s
}

fn fmt_ep(ip: &str, port: u16) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

fn proto_name(p: u8) -> String {
    warden_control::render::proto_name(p)
}

/// Attachments as a table: name, kind, state, host interface, Warden's interface, bridge,
/// mode, workload, addresses.
fn print_attachments(v: &[warden_control::AttachInfo]) {
    let rows: Vec<Vec<String>> = v
        .iter()
        .map(|a| {
            vec![
                a.name.clone(),
                a.kind.clone(),
                a.state.clone().unwrap_or_else(|| "-".into()),
                a.host_iface.clone(),
                a.warden_iface.clone().unwrap_or_else(|| "-".into()),
                a.bridge.clone().unwrap_or_else(|| "-".into()),
                a.mode.clone(),
                a.workload.clone().unwrap_or_else(|| "-".into()),
                if a.ips.is_empty() { "-".into() } else { a.ips.join(",") },
            ]
        })
        .collect();
    table(&["NAME", "KIND", "STATE", "HOST IFACE", "WARDEN IFACE", "BRIDGE", "MODE", "WORKLOAD", "ADDRESSES"], &rows);
}

/// Captures as a table: id, name, state (and why it ended), frames, bytes, lost, filter.
fn print_captures(v: &[warden_control::CaptureInfo]) {
    let rows: Vec<Vec<String>> = v
        .iter()
        .map(|c| {
            vec![
                c.id.map(|i| i.to_string()).unwrap_or_else(|| "-".into()),
                c.name.clone(),
                match &c.stop_reason {
                    Some(r) => format!("{} ({r})", c.state),
                    None => c.state.clone(),
                },
                c.packets.to_string(),
                c.bytes.to_string(),
                c.lost.to_string(),
                if c.ifaces.is_empty() { c.filter.clone() } else { format!("{} on {}", c.filter, c.ifaces.join(",")) },
            ]
        })
        .collect();
    table(&["ID", "NAME", "STATE", "FRAMES", "BYTES", "LOST", "FILTER"], &rows);
}

fn print_table(reply: &Reply) {
    match reply {
        Reply::Attached(a) => print_attachments(std::slice::from_ref(a)),
        Reply::Attachments(v) => print_attachments(v),
        Reply::Workloads(_) => {
            println!("{}", serde_json::to_string_pretty(reply).unwrap_or_default());
        }
        Reply::Status(s) => {
            let rows = [
                ("version", s.version.clone()),
                ("uptime", format!("{} s", s.uptime_s)),
                ("workers", s.workers.to_string()),
                ("inline pairs", s.inline_pairs.to_string()),
                ("sessions", s.sessions.to_string()),
                ("subscribers", s.subscribers.to_string()),
                ("report interval", format!("{} s", s.report_interval_s)),
                ("report overflow", s.report_overflow.to_string()),
                ("report queued", s.report_queued.to_string()),
                ("report stream", {
                    let r = &s.report_stream;
                    format!(
                        "seq {}..={} held, {} of {} bytes; {} records, {} events published; dropped unread {} records, {} events; announced lost {} records, {} events",
                        r.oldest_seq, r.last_seq, r.held_bytes, r.limit_bytes, r.records, r.events,
                        r.unread_dropped_records, r.unread_dropped_events, r.lost_records, r.lost_events
                    )
                }),
                ("policy", format!("generation {}, {} workload(s), {} rule(s), {} service(s)", s.policy_generation, s.policy_workloads, s.policy_rules, s.policy_services)),
                ("shadow policy", s.shadow_rules.map_or_else(|| "none".to_string(), |r| format!("{r} rule(s) (wardenctl policy diff)"))),
                ("dns names", {
                    let n = &s.dns_names;
                    let refused = n.refused_unsolicited
                        + n.refused_off_chain
                        + n.refused_too_long
                        + n.refused_unwanted
                        + n.refused_clients_full
                        + n.refused_overflow
                        + n.refused_malformed;
                    format!("{} stored, {} replaced, {} refused", n.stored, n.replaced, refused)
                }),
            ];
            for (k, v) in rows {
                println!("{k:<16} {v}");
            }
            for e in &s.export {
                println!(
                    "{:<16} {} {} ({}): {} records sent, {} queued, {} dropped (queue full), {} dropped (send), {} send errors",
                    "ipfix export",
                    e.transport,
                    e.collector,
                    if e.connected { "connected" } else { "not connected" },
                    e.records_sent,
                    e.queued,
                    e.dropped_queue_full,
                    e.dropped_send,
                    e.send_errors
                );
            }
        }
        Reply::Interfaces(v) => {
            let rows: Vec<Vec<String>> = v
                .iter()
                .map(|i| {
                    vec![
                        i.name.clone(),
                        i.ifindex.to_string(),
                        i.peer.clone(),
                        i.queues.to_string(),
                        i.bound_queues.to_string(),
                        format!("{:?}", i.fail_mode).to_lowercase(),
                        i.xdp_mode.clone(),
                        format!("{:?}", i.workers),
                    ]
                })
                .collect();
            table(&["NAME", "IFINDEX", "PEER", "QUEUES", "BOUND", "FAIL", "XDP", "WORKERS"], &rows);
        }
        Reply::Sessions(v) => print_connections(v, true),
        Reply::SessionPage(p) => print_connections(&p.sessions, true),
        Reply::Counters(c) => {
            let rows: Vec<Vec<String>> = c
                .interfaces
                .iter()
                .map(|i| {
                    let drops: u64 = i.dropped.values().sum();
                    vec![
                        i.name.clone(),
                        i.rx_frames.to_string(),
                        i.rx_bytes.to_string(),
                        i.tx_frames.to_string(),
                        i.tx_bytes.to_string(),
                        drops.to_string(),
                        i.tx_ring_full.to_string(),
                        i.fill_ring_empty.to_string(),
                        i.xdp_fail_open.to_string(),
                        i.xdp_unbound.to_string(),
                    ]
                })
                .collect();
            table(
                &[
                    "IFACE", "RX", "RX_BYTES", "TX", "TX_BYTES", "DROPPED", "TX_FULL",
                    "FILL_EMPTY", "FAIL_OPEN", "UNBOUND",
                ],
                &rows,
            );
            for i in &c.interfaces {
                for (why, n) in &i.dropped {
                    println!("  {} dropped {why}: {n}", i.name);
                }
            }
            println!();
            let rows: Vec<Vec<String>> = c
                .workers
                .iter()
                .map(|w| {
                    vec![
                        w.worker.to_string(),
                        w.core.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
                        w.frames.to_string(),
                        w.sessions_active.to_string(),
                        w.sessions_created.to_string(),
                        w.sessions_expired.to_string(),
                        w.sessions_evicted.to_string(),
                        w.sessions_refused.to_string(),
                        format!("{}/{}", w.handoff_out, w.handoff_in),
                        w.malformed.values().sum::<u64>().to_string(),
                        format!("{}/{}", w.defrag.reassembled, w.defrag.fragments),
                    ]
                })
                .collect();
            table(
                &[
                    "WORKER", "CORE", "FRAMES", "SESSIONS", "CREATED", "EXPIRED", "EVICTED",
                    "REFUSED", "HANDOFF(out/in)", "MALFORMED", "DEFRAG(datagrams/fragments)",
                ],
                &rows,
            );
            for w in &c.workers {
                if w.sessions_evicted > 0 {
                    println!(
                        "  worker {} evicted: lingering {}, embryonic {}, one_way {}, two_way {}",
                        w.worker,
                        w.sessions_evicted_lingering,
                        w.sessions_evicted_embryonic,
                        w.sessions_evicted_one_way,
                        w.sessions_evicted_two_way
                    );
                }
                for (why, n) in &w.malformed {
                    println!("  worker {} malformed {why}: {n}", w.worker);
                }
                for (what, n) in &w.icmp {
                    println!("  worker {} icmp {what}: {n}", w.worker);
                }
                for (what, n) in &w.tunnels {
                    println!("  worker {} tunnels {what}: {n}", w.worker);
                }
                for (what, n) in &w.capture {
                    println!("  worker {} capture {what}: {n}", w.worker);
                }
                let d = &w.defrag;
                if d.fragments > 0 {
                    println!(
                        "  worker {} defrag: held {} timeouts {} overlaps {} too_big {} full {} malformed {} exceptions {}",
                        w.worker, d.held, d.timeouts, d.overlaps, d.too_big, d.full, d.malformed, d.exceptions
                    );
                }
                for (why, n) in &w.normalization {
                    println!("  worker {} normalization {why}: {n}", w.worker);
                }
                for (why, n) in &w.exceptions {
                    println!("  worker {} exceptions {why}: {n}", w.worker);
                }
            }
            println!();
            // Where each worker's time went since start, and what a frame cost it.
            let rows: Vec<Vec<String>> = c.workers.iter().map(|w| worker_time_row(w.worker, &w.time)).collect();
            table(
                &["WORKER", "BUSY%", "SPIN%", "SLEEP%", "CPU_S", "SLEEPS(rx/wake/timer)", "FRAMES", "CPU_S/MFRAME", "BUSY_S/MFRAME", "GAP_US"],
                &rows,
            );
            for w in c.workers.iter().filter(|w| w.time.stage_frames > 0) {
                let per: Vec<String> = ["rx", "decode", "inspect", "tx"]
                    .iter()
                    .map(|st| {
                        let v = w.time.stage_ns.get(*st).copied().unwrap_or(0);
                        format!("{st} {:.0}", v as f64 / w.time.stage_frames as f64)
                    })
                    .collect();
                println!("  worker {} ns per frame (sampled, {} frames): {}", w.worker, w.time.stage_frames, per.join(", "));
            }
        }
        Reply::Subscribed(s) => println!("subscribed, every {} s", s.interval_s),
        Reply::Hello(h) => println!("{} (protocol {})", h.server, h.version),
        Reply::Report(b) => print_connections(&b.connections, true),
        Reply::Event(e) => print_event(&e.event, false),
        Reply::Lost(l) => println!("lost {} records, {} events (seq {}..={})", l.records, l.events, l.from_seq, l.to_seq),
        Reply::Done(msg) => println!("{msg}"),
        Reply::PolicyText(text) => print!("{text}"),
        Reply::PolicyDiff(d) => {
            for l in warden_control::render::policy_diff(d) {
                println!("{l}");
            }
        }
        Reply::Capture(c) | Reply::CaptureEnd(c) => print_captures(std::slice::from_ref(c)),
        Reply::CaptureData(d) => println!("capture {}: {} base64 bytes", d.id, d.data.len()),
        Reply::Captures(v) => print_captures(v),
        Reply::PolicyStats(v) => {
            let rows: Vec<Vec<String>> = v
                .iter()
                .map(|r| {
                    vec![
                        r.id.map(|i| i.to_string())
                            .unwrap_or_else(|| format!("default({})", r.default.as_deref().unwrap_or("-"))),
                        r.action.clone(),
                        r.sessions.to_string(),
                    ]
                })
                .collect();
            table(&["RULE", "ACTION", "SESSIONS"], &rows);
        }
        Reply::Threats(v) => {
            let rows: Vec<Vec<String>> = v
                .iter()
                .map(|t| {
                    vec![
                        t.id.clone(),
                        t.severity.clone(),
                        t.action.clone(),
                        t.hits.to_string(),
                        t.dropped_frames.to_string(),
                        t.summary.clone(),
                    ]
                })
                .collect();
            table(&["THREAT", "SEVERITY", "ACTION", "HITS", "DROPPED", "WHAT"], &rows);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("wardenctl").chain(args.iter().copied()))
    }

    fn service(args: &[&str]) -> Request {
        match parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}")).cmd {
            Cmd::Service { cmd } => service_request(&cmd),
            _ => panic!("{args:?} is not a service command"),
        }
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn service_set_and_remove_build_their_requests() {
        let r = service(&[
            "service", "set", "payments", "-n", "shop", "--external-ip", "198.18.0.50", "--external-ip",
            "2001:db8::50", "--port", "443", "--port", "8000-8100", "--workload", "pay-a", "--workload", "pay-b",
        ]);
        assert_eq!(
            r,
            Request::SetService {
                service: ServiceSpec {
                    name: "payments".into(),
                    namespace: Some("shop".into()),
                    external_ips: vec!["198.18.0.50".into(), "2001:db8::50".into()],
                    ports: vec!["443".into(), "8000-8100".into()],
                    workloads: vec!["pay-a".into(), "pay-b".into()],
                }
            }
        );
        // The JSON line the daemon gets: no namespace key when none was given, no ports key
        // without ports (every port).
        let r = service(&["service", "set", "dns", "--external-ip", "198.18.0.53"]);
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"cmd":"set_service","service":{"name":"dns","external_ips":["198.18.0.53"],"workloads":[]}}"#
        );
        assert_eq!(
            service(&["service", "remove", "payments", "--namespace", "shop"]),
            Request::RemoveService { namespace: Some("shop".into()), name: "payments".into() }
        );
        assert_eq!(
            service(&["service", "remove", "dns"]),
            Request::RemoveService { namespace: None, name: "dns".into() }
        );
    }

    #[test]
    fn service_set_needs_a_name_and_an_external_ip() {
        for bad in [
            &["service", "set", "web"][..],
            &["service", "set", "--external-ip", "198.18.0.50"][..],
            &["service", "remove"][..],
            &["service", "set", "web", "--external-ip", "198.18.0.50", "--bogus"][..],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
    }
}
