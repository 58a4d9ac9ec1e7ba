//! The agent channel end to end: a subscriber that disconnects during traffic and comes back
//! with `since` gets every report stream message in order (sequence numbers contiguous) when
//! Warden could hold them, and a `lost` message with the right counts when it could not. The
//! first test runs the Python example agent (`control/examples/agent.py`). Root only.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use warden_control::{Reply, ReportStream, Request};

/// `n` TCP connections from the client to `S4:8080`, `gap_ms` apart, each one HTTP request;
/// prints the client port of each. Runs in the background; `wait_with_output` collects.
fn spawn_connections(t: &Topo, n: usize, gap_ms: u64) -> std::process::Child {
    let script = format!(
        "import socket,time\n\
         for _ in range({n}):\n\
         \x20   s=socket.create_connection(('{S4}',8080),timeout=5)\n\
         \x20   print(s.getsockname()[1],flush=True)\n\
         \x20   s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n')\n\
         \x20   while s.recv(65536): pass\n\
         \x20   s.close()\n\
         \x20   time.sleep({gap_ms}/1000)\n"
    );
    Command::new("ip")
        .args(["netns", "exec", &t.c, "python3", "-c", &script])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

fn ports_of(out: std::process::Output) -> Vec<u16> {
    assert!(out.status.success(), "traffic: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| l.trim().parse().unwrap()).collect()
}

fn stream_status(t: &Topo) -> ReportStream {
    match t.client().request(&Request::Status {}).unwrap() {
        Reply::Status(s) => s.report_stream,
        other => panic!("unexpected {other:?}"),
    }
}

/// Runs the example agent for `seconds` with state file `state`; its stdout lines as JSON.
fn run_agent(t: &Topo, state: &std::path::Path, seconds: f64) -> Vec<serde_json::Value> {
    let agent = concat!(env!("CARGO_MANIFEST_DIR"), "/../control/examples/agent.py");
    let out = Command::new("python3")
        .arg(agent)
        .arg("--socket")
        .arg(t.socket())
        .arg("--state")
        .arg(state)
        .args(["--seconds", &seconds.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "agent: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Within the bound: the example agent, stopped during traffic and started again with its
/// state file, gets every message once, in order, and a closed record of every connection.
#[test]
fn agent_resumes_during_traffic_with_nothing_lost() {
    let mut t = Topo::new(ClientLink::Veth);
    t.spawn(&t.s.clone(), &["python3", "-m", "http.server", "8080", "--bind", S4]);
    t.start_warden(&["--inline", &format!("{}:{}", t.a, t.b)]);
    t.wait_listening(&t.s, "tcp", 8080);
    let state = t.path("agent.state");
    let traffic = spawn_connections(&t, 40, 150);
    // First run: during the traffic (about 6 s of it), gone after 2.5 s.
    let mut lines = run_agent(&t, &state, 2.5);
    let first_run = lines.len();
    // Away while the rest of the traffic runs.
    let ports = ports_of(traffic.wait_with_output().unwrap());
    assert_eq!(ports.len(), 40);
    std::thread::sleep(Duration::from_secs(3));
    lines.extend(run_agent(&t, &state, 4.0));

    assert!(lines.iter().all(|l| l.get("lost").is_none()), "lost: {lines:?}");
    // Every message exactly once, in order: one `batch_records` line per batch, one line per
    // event; their sequence numbers go 1, 2, 3, ... across both runs.
    let seqs: Vec<u64> = lines
        .iter()
        .filter(|l| l.get("batch_records").is_some() || l.get("event").is_some())
        .map(|l| l["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "{}", t.warden_log());
    assert!(first_run > 0 && first_run < lines.len(), "both runs got messages");
    let closed: Vec<u64> = lines
        .iter()
        .filter_map(|l| l.get("record"))
        .filter(|r| r["closed"] == true && r["server_port"] == 8080)
        .map(|r| r["client_port"].as_u64().unwrap())
        .collect();
    for p in &ports {
        assert!(closed.contains(&(*p as u64)), "no closed record of port {p}: {closed:?}");
    }
    let st = stream_status(&t);
    assert_eq!((st.lost_records, st.lost_events, st.unread_dropped_records), (0, 0, 0), "{st:?}");
}

/// Beyond the bound: the records published while the subscriber was away do not fit in
/// `report_buffer_bytes`; on its return it gets one `lost` for the oldest of them, whose
/// counts plus what it then receives are exactly what Warden published.
#[test]
fn subscriber_beyond_the_bound_gets_exact_lost_counts() {
    let mut t = Topo::new(ClientLink::Veth);
    t.spawn(&t.s.clone(), &["python3", "-m", "http.server", "8080", "--bind", S4]);
    t.start_warden_config("[dataplane]\nreport_buffer_bytes = 8192\n", &["--inline", &format!("{}:{}", t.a, t.b)]);
    t.wait_listening(&t.s, "tcp", 8080);

    // Subscribed from the start: read through the first batch, counting its records.
    let mut ctl = t.client();
    assert_eq!(ctl.hello().unwrap().version, warden_control::PROTOCOL_VERSION);
    let sub = ctl.subscribe_since(Some(0), None).unwrap();
    let (mut since, mut records_seen) = (0u64, 0u64);
    while since < 1 {
        match ctl.next_message().unwrap() {
            Reply::Report(b) => {
                assert_eq!(b.seq, since + 1);
                records_seen += b.connections.len() as u64;
                since = b.seq;
            }
            Reply::Event(e) => since = e.seq,
            other => panic!("unexpected {other:?}"),
        }
    }
    drop(ctl);

    // 60 connections, about 40 KB of records: far more than 8 KiB.
    let ports = ports_of(spawn_connections(&t, 60, 0).wait_with_output().unwrap());
    assert_eq!(ports.len(), 60);
    // Wait until every final record was published, then for the stream to be quiet.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut st = stream_status(&t);
    while st.records < records_seen + 60 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        st = stream_status(&t);
    }
    std::thread::sleep(Duration::from_secs(3));
    let quiet = stream_status(&t);
    assert!(quiet.records >= records_seen + 60, "{quiet:?}");
    assert!(quiet.held_bytes <= 8192, "{quiet:?}");
    assert!(quiet.unread_dropped_records > 0, "{quiet:?}");

    let mut ctl = t.client();
    let resumed = ctl.subscribe_since(Some(since), Some(sub.epoch)).unwrap();
    assert!(resumed.first_seq > since + 1, "{resumed:?}");
    let Reply::Lost(lost) = ctl.next_message().unwrap() else { panic!("no lost message first") };
    assert_eq!((lost.from_seq, lost.to_seq), (since + 1, resumed.first_seq - 1), "{lost:?}");
    assert_eq!((lost.reason.as_str(), lost.approximate, lost.events), ("buffer_full", false, 0));
    // Then everything from first_seq on, contiguous, through what was published when it
    // subscribed.
    let (mut next, mut received, mut batches) = (resumed.first_seq, 0u64, 0u64);
    while next <= resumed.last_seq {
        match ctl.next_message().unwrap() {
            Reply::Report(b) => {
                assert_eq!(b.seq, next);
                received += b.connections.len() as u64;
                batches += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
        next += 1;
    }
    let end = stream_status(&t);
    assert_eq!(end.records, quiet.records, "the stream was quiet");
    assert_eq!(
        records_seen + lost.records + received,
        end.records,
        "lost {lost:?}, received {received} in {batches} batches, status {end:?}"
    );
    assert_eq!(lost.batches + batches, resumed.last_seq - since);
    assert!(lost.records > 0 && end.lost_records >= lost.records, "{end:?}");
}
