//! Packet capture on demand, end to end: real curl clients and python HTTP servers in
//! namespaces, Warden inline, captures started over the control socket. The truth is a
//! tcpdump at the server's interface: Warden's pcapng of one workload's HTTP sessions must
//! hold exactly the frames tcpdump saw of them, open in tshark with both interfaces named, and
//! a second capture running at the same time must end at its size limit; a capture streamed
//! through `wardenctl capture start ... -w - | tshark -r -` must decode while it runs; a name
//! that would leave the capture directory is refused. Root only (see `common`).

mod common;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use warden_control::{CaptureInfo, CaptureSpec, Event, Reply, Request};

fn policy() -> String {
    format!("[[workload]]\nid = \"srv\"\nips = [\"{S4}\", \"{S6}\"]\nmode = \"alert\"\n")
}

/// Starts Warden inline with the `srv` policy and `[capture] dir` in the test's directory.
fn start(t: &mut Topo) -> PathBuf {
    let dir = t.path("captures");
    let file = t.path("policy.toml");
    std::fs::write(&file, policy()).unwrap();
    let pair = format!("{}:{}", t.a, t.b);
    let config = format!("[capture]\ndir = \"{}\"\n", dir.display());
    t.start_warden_with(&config, &["--inline", &pair, "--policy", file.to_str().unwrap()], &[]);
    dir
}

fn capture(t: &Topo, spec: CaptureSpec) -> CaptureInfo {
    match t.client().request(&Request::CaptureStart { spec }) {
        Ok(Reply::Capture(c)) => c,
        other => panic!("capture_start: {other:?}\n{}", t.warden_log()),
    }
}

fn list(t: &Topo) -> Vec<CaptureInfo> {
    match t.client().request(&Request::CaptureList {}).unwrap() {
        Reply::Captures(v) => v,
        other => panic!("{other:?}"),
    }
}

/// Waits until capture `id` has ended; its final description.
fn wait_done(t: &Topo, id: u32, timeout: Duration) -> CaptureInfo {
    let deadline = Instant::now() + timeout;
    loop {
        let c = list(t).into_iter().find(|c| c.id == Some(id)).expect("capture listed");
        if c.state == "done" {
            return c;
        }
        assert!(Instant::now() < deadline, "capture {id} still running: {c:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The frames of a pcap or pcapng file (pcapng: with the interface name of each).
fn frames(path: &Path) -> Vec<(Option<String>, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let mut out = Vec::new();
    if bytes.starts_with(&[0x0a, 0x0d, 0x0d, 0x0a]) {
        use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
        let mut r = pcap_file::pcapng::PcapNgReader::new(&bytes[..]).unwrap();
        let mut names = Vec::new();
        // A file still being written may end inside a block: what is complete counts.
        while let Some(Ok(b)) = r.next_block() {
            match b {
                pcap_file::pcapng::Block::InterfaceDescription(i) => names.push(i.options.iter().find_map(|o| match o {
                    InterfaceDescriptionOption::IfName(n) => Some(n.to_string()),
                    _ => None,
                })),
                pcap_file::pcapng::Block::EnhancedPacket(e) => {
                    out.push((names[e.interface_id as usize].clone(), e.data.into_owned()));
                }
                _ => {}
            }
        }
    } else {
        let mut r = pcap_file::pcap::PcapReader::new(&bytes[..]).unwrap();
        while let Some(p) = r.next_packet() {
            out.push((None, p.unwrap().data.into_owned()));
        }
    }
    out
}

fn tshark_count(path: &Path) -> usize {
    let out = Command::new("tshark").arg("-r").arg(path).args(["-T", "fields", "-e", "frame.number"]).output().unwrap();
    assert!(out.status.success(), "tshark: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().count()
}

#[test]
fn a_workload_capture_holds_what_the_server_saw_and_a_second_one_stops_at_its_size() {
    let mut t = Topo::new(ClientLink::Veth);
    index_server(&mut t, 8080);
    index_server(&mut t, 9090);
    let dir = start(&mut t);
    // A name that leaves the directory is refused, and nothing is created.
    for bad in ["../../etc/x", "/tmp/x", "a/b"] {
        let r = t.client().request(&Request::CaptureStart { spec: CaptureSpec { name: Some(bad.into()), ..Default::default() } });
        assert!(matches!(&r, Err(e) if e.to_string().contains("refused")), "{bad}: {r:?}");
    }
    assert!(!Path::new("/etc/x.pcapng").exists() && !dir.join("../../etc/x.pcapng").exists());
    let tcpdump = t.capture_server("server.pcap", "tcp port 8080");
    let web = capture(
        &t,
        CaptureSpec {
            workload: Some("srv".into()),
            filter: Some("tcp port 8080".into()),
            duration_s: Some(5),
            name: Some("web-http".into()),
            ..Default::default()
        },
    );
    assert_eq!(web.name, "web-http.pcapng");
    assert_eq!(web.filter, format!("(host {S4} or host {S6}) and (tcp port 8080)"));
    let small = capture(&t, CaptureSpec { max_size: Some(3000), duration_s: Some(5), ..Default::default() });
    let started = Instant::now();
    for host in [S4, S6, S4] {
        assert_eq!(curl_index(&t, host, 8080), "200", "{}", t.warden_log());
        assert_eq!(curl_index(&t, host, 9090), "200");
    }
    assert!(t.ping(S4, 2));
    assert!(started.elapsed() < Duration::from_secs(4), "traffic must end inside the capture's 5 s");
    let small = wait_done(&t, small.id.unwrap(), Duration::from_secs(10));
    assert_eq!(small.stop_reason.as_deref(), Some("max_size"), "{small:?}");
    let small_file = dir.join(&small.name);
    let size = std::fs::metadata(&small_file).unwrap().len();
    assert!(size <= 3000 && size == small.bytes && small.packets > 0, "{size} bytes: {small:?}");
    assert_eq!(tshark_count(&small_file) as u64, small.packets);
    let web = wait_done(&t, web.id.unwrap(), Duration::from_secs(10));
    assert_eq!((web.stop_reason.as_deref(), web.lost), (Some("duration"), 0), "{web:?}");
    let (_, server_summary) = t.replay_capture(tcpdump);
    assert!(server_summary.frames >= 3 * 8, "{server_summary:?}");
    // Exactly the frames tcpdump saw at the server (forwarded unchanged, so byte for byte).
    let file = dir.join("web-http.pcapng");
    let mut ours: Vec<Vec<u8>> = frames(&file).into_iter().map(|f| f.1).collect();
    let mut theirs: Vec<Vec<u8>> = frames(&t.path("server.pcap")).into_iter().map(|f| f.1).collect();
    ours.sort();
    theirs.sort();
    assert_eq!(ours.len(), theirs.len(), "Warden {} frames, tcpdump {}", ours.len(), theirs.len());
    assert!(ours == theirs, "the frames differ");
    assert_eq!(web.packets as usize, ours.len());
    // tshark reads it, and each frame names the interface it came in on (both sides).
    assert_eq!(tshark_count(&file), ours.len());
    let mut ifaces: Vec<String> = frames(&file).into_iter().filter_map(|f| f.0).collect();
    ifaces.sort();
    ifaces.dedup();
    assert_eq!(ifaces, [t.a.clone(), t.b.clone()]);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    // Listed, then deleted.
    assert!(list(&t).iter().any(|c| c.name == "web-http.pcapng" && c.state == "done"));
    assert!(matches!(t.client().request(&Request::CaptureDelete { name: "web-http.pcapng".into() }), Ok(Reply::Done(_))));
    assert!(!file.exists());
    assert!(t.client().request(&Request::CaptureDelete { name: "../warden.toml".into() }).is_err());
    assert!(t.path("warden.toml").exists());
}

/// `wardenctl capture start ... -w - | tshark -r -`: tshark prints the HTTP frames while the
/// capture still runs, and the capture's end is the stream's end.
#[test]
fn a_streamed_capture_decodes_live_in_tshark() {
    let mut t = Topo::new(ClientLink::Veth);
    index_server(&mut t, 8080);
    start(&mut t);
    let wardenctl = Path::new(env!("CARGO_BIN_EXE_warden")).with_file_name("wardenctl");
    assert!(wardenctl.exists(), "build wardenctl first (cargo build -p warden-control): {}", wardenctl.display());
    let cmd = format!(
        "{} --socket {} capture start --workload srv --filter 'tcp port 8080' --duration 6 -w - | tshark -l -r - -T fields -e tcp.dstport -e http.request.method",
        wardenctl.display(),
        t.socket().display()
    );
    let mut child = Command::new("sh").args(["-c", &cmd]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let started = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(l) = line else { break };
            if tx.send((Instant::now(), l)).is_err() {
                break;
            }
        }
    });
    // Let the capture start, then make traffic.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !list(&t).iter().any(|c| c.name == "-" && c.state == "running") {
        assert!(Instant::now() < deadline, "the streamed capture did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(curl_index(&t, S4, 8080), "200");
    let (first_at, first) = rx.recv_timeout(Duration::from_secs(4)).expect("tshark printed nothing while the capture ran");
    assert!(first_at.duration_since(started) < Duration::from_secs(5), "decoded only after the capture ended");
    assert!(first.starts_with("8080") || first.starts_with("4"), "{first}");
    let mut lines = vec![first];
    while let Ok((_, l)) = rx.recv_timeout(Duration::from_secs(8)) {
        lines.push(l);
    }
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(status.success(), "{err}");
    assert!(lines.iter().any(|l| l == "8080\tGET"), "{lines:?}");
    assert!(lines.len() >= 6, "{lines:?}");
    assert!(err.contains("ended (duration)"), "{err}");
}

/// The pre-trigger ring: a connection the policy denies and an SQL injection (reported, its
/// action `alert`) each get a pcapng named after the event, holding the session's frames
/// before the event and the next ones after it, and the event's record names the file.
#[test]
fn a_denied_connection_and_an_sql_injection_each_get_a_pretrigger_file() {
    let mut t = Topo::new(ClientLink::Veth);
    index_server(&mut t, 8080);
    let dir = t.path("captures");
    let file = t.path("policy.toml");
    std::fs::write(
        &file,
        format!(
            "[[workload]]\nid = \"srv\"\nips = [\"{S4}\", \"{S6}\"]\nmode = \"protect\"\n\n\
             [[rule]]\nid = 1\nfrom = \"any\"\nto = \"srv\"\nip_proto = \"tcp\"\nports = [\"8080\"]\naction = \"allow\"\n"
        ),
    )
    .unwrap();
    let pair = format!("{}:{}", t.a, t.b);
    let config = format!(
        "[capture]\ndir = \"{}\"\npretrigger_frames = 16\npretrigger_after = 6\npretrigger_sessions = 256\n\n[threats.sql_injection]\naction = \"alert\"\n",
        dir.display()
    );
    t.start_warden_with(&config, &["--inline", &pair, "--policy", file.to_str().unwrap()], &[]);
    let mut sub = t.subscribed();
    // Denied: nothing answers the SYNs, the client sends them again.
    assert_eq!(curl_index(&t, S4, 7777), "000");
    // SQL injection on the allowed port: forwarded (action alert), answered.
    let url = format!("http://{S4}:8080/item?id=1%27%20OR%20%271%27%3D%271");
    let out = t.exec(&t.c, &["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "3", &url]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "404", "{}", t.warden_log());
    let (_, events) = collect_messages(&mut sub, Duration::from_secs(20), |_, ev| {
        ev.iter().any(|e| matches!(e, Event::Denied { .. })) && ev.iter().any(|e| matches!(e, Event::Threat { threat, .. } if threat.id == "sql_injection"))
    });
    let denied = events
        .iter()
        .find_map(|e| match e {
            Event::Denied { connection } if connection.server_port == 7777 => connection.capture_file.clone(),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no denied event with a capture file: {events:?}"));
    let sqli = events
        .iter()
        .find_map(|e| match e {
            Event::Threat { threat, connection } if threat.id == "sql_injection" => connection.capture_file.clone(),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no sql_injection event with a capture file: {events:?}"));
    assert!(denied.starts_with("denied-") && denied.ends_with(".pcapng"), "{denied}");
    assert!(sqli.starts_with("threat-sql_injection-"), "{sqli}");
    // The denied SYN (the event's frame, dropped: its comment says why), then the client's
    // retransmissions of it.
    let decode = |f: &[u8]| -> (u16, u8, Vec<u8>) {
        let ihl = usize::from(f[14] & 0x0f) * 4;
        let tcp = &f[14 + ihl..];
        let off = usize::from(tcp[12] >> 4) * 4;
        (u16::from_be_bytes([tcp[2], tcp[3]]), tcp[13], tcp[off..].to_vec())
    };
    let wait_frames = |name: &str, n: usize| {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let f = frames(&dir.join(name));
            if f.len() >= n || Instant::now() > deadline {
                return f;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let syns = wait_frames(&denied, 2);
    assert!(syns.len() >= 2, "the denied SYN and at least one retransmission: {} frames", syns.len());
    assert!(syns.iter().all(|(_, f)| decode(f).0 == 7777 && decode(f).1 & 0x02 != 0), "only the denied SYNs");
    let comments = Command::new("tshark").arg("-r").arg(dir.join(&denied)).args(["-T", "fields", "-e", "frame.comment"]).output().unwrap();
    assert!(String::from_utf8_lossy(&comments.stdout).contains("warden: dropped (policy_denied)"), "{comments:?}");
    // The injection: the handshake and the request before, the server's answer after.
    let f = wait_frames(&sqli, 6);
    let payloads: Vec<Vec<u8>> = f.iter().map(|(_, f)| decode(f).2).collect();
    let request = payloads.iter().position(|p| p.starts_with(b"GET /item?id=1%27")).unwrap_or_else(|| panic!("no request in {} frames", f.len()));
    let response = payloads.iter().position(|p| p.starts_with(b"HTTP/1.0 404")).unwrap_or_else(|| panic!("no response after the event"));
    assert!(request >= 2 && response > request, "handshake, request, then response: {request} {response}");
    assert!(tshark_count(&dir.join(&sqli)) == f.len());
    // Both files are listed.
    let names: Vec<String> = list(&t).into_iter().map(|c| c.name).collect();
    assert!(names.contains(&denied) && names.contains(&sqli), "{names:?}");
}
