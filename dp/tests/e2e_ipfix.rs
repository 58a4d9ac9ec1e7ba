//! IPFIX export end to end: HTTP downloads through Warden inline, records exported to Debian's
//! `nfcapd` (IPFIX over UDP, in a collector namespace) and to a TCP listener (nfcapd 1.7 takes
//! UDP only), read back with `nfdump -R` and an independent decoder (`netflow_parser`), and
//! compared with the records Warden reports over its socket. Root only (see `common`).

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use netflow_parser::variable_versions::field_value::FieldValue;
use netflow_parser::variable_versions::ipfix::lookup::IPFixField;
use netflow_parser::variable_versions::ipfix::FlowSetBody;
use netflow_parser::{NetflowPacket, NetflowParser};
use nix::sys::signal::Signal;
use warden_control::{ConnectionRecord, Reply, Request};

/// Writes every byte of one TCP connection on `198.18.9.2:4740` to the file `argv[1]`.
const TCP_SINK: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("198.18.9.2", 4740))
s.listen(1)
c, _ = s.accept()
with open(sys.argv[1], "wb") as f:
    while True:
        b = c.recv(65536)
        if not b:
            break
        f.write(b)
        f.flush()
"#;

/// TCP flows of port 8080: (client address, client port, server port, packets/bytes to server, packets/bytes to client) per flow `nfdump` printed.
fn nfdump_flows(dir: &std::path::Path) -> Vec<(String, u16, u16, [u64; 4])> {
    let out = Command::new("nfdump")
        .arg("-R")
        .arg(dir)
        .args(["-q", "-N", "-o", "fmt:%sa|%sp|%dp|%ipkt|%ibyt|%opkt|%obyt", "proto tcp and port 8080"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "nfdump: {text} {}", String::from_utf8_lossy(&out.stderr));
    text.lines()
        .filter(|l| l.contains('|'))
        .map(|l| {
            let f: Vec<&str> = l.split('|').map(str::trim).collect();
            let n = |i: usize| f[i].parse::<u64>().unwrap_or_else(|_| panic!("{l}"));
            (f[0].to_string(), n(1) as u16, n(2) as u16, [n(3), n(4), n(5), n(6)])
        })
        .collect()
}

/// IPFIX messages in a TCP byte stream, decoded: (client port, counters, app) per record.
fn decode_stream(bytes: &[u8]) -> Vec<(u16, [u64; 4], String)> {
    let mut p = NetflowParser::default();
    let mut out = Vec::new();
    let mut at = 0;
    while at + 4 <= bytes.len() {
        let len = usize::from(u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]));
        assert!(len >= 16 && at + len <= bytes.len(), "truncated stream at {at}");
        let res = p.parse_bytes(&bytes[at..at + len]);
        assert!(res.error.is_none(), "{:?}", res.error);
        for pkt in res.packets {
            let NetflowPacket::IPFix(m) = pkt else { panic!("not IPFIX") };
            for fs in m.flowsets {
                let FlowSetBody::Data(d) = fs.body else { continue };
                for r in d.fields {
                    let get = |id: u16, pen: Option<u32>| {
                        let want = IPFixField::new(id, pen);
                        r.iter().find(|(f, _)| *f == want).map(|(_, v)| v.clone()).unwrap()
                    };
                    let num = |v: FieldValue| u64::try_from(&v).unwrap_or_else(|_| u64::from(u16::try_from(&v).unwrap()));
                    let app = match get(1, Some(32473)) {
                        FieldValue::Vec(b) => String::from_utf8(b).unwrap(),
                        FieldValue::String(s) => s.value,
                        other => panic!("{other:?}"),
                    };
                    out.push((
                        num(get(7, None)) as u16,
                        [num(get(2, None)), num(get(1, None)), num(get(2, Some(29305))), num(get(1, Some(29305)))],
                        app,
                    ));
                }
            }
        }
        at += len;
    }
    out
}

#[test]
fn ipfix_records_read_back_by_nfdump_match_socket_records() {
    let mut t = Topo::new(ClientLink::Veth);
    let (x, collector) = t.collector_ns();
    let flows = t.path("nfcapd");
    std::fs::create_dir_all(&flows).unwrap();
    let sink_file = t.path("tcp-sink.bin");
    let script = t.path("tcp_sink.py");
    std::fs::write(&script, TCP_SINK).unwrap();
    let nfcapd = t.spawn(&x, &["nfcapd", "-w", flows.to_str().unwrap(), "-b", collector, "-p", "4739", "-t", "60"]);
    t.spawn(&x, &["python3", script.to_str().unwrap(), sink_file.to_str().unwrap()]);
    t.wait_listening(&x, "udp", 4739);
    t.wait_listening(&x, "tcp", 4740);

    let www = t.path("www");
    std::fs::create_dir_all(&www).unwrap();
    write_blob(&www.join("blob.bin"), 300_000);
    t.spawn(&t.s.clone(), &["python3", "-m", "http.server", "8080", "--bind", "::", "-d", www.to_str().unwrap()]);
    let toml = format!(
        "[[export.ipfix]]\ncollector = \"{collector}:4739\"\ntransport = \"udp\"\nobservation_domain = 7\n\
         [[export.ipfix]]\ncollector = \"{collector}:4740\"\ntransport = \"tcp\"\n"
    );
    let warden = t.start_warden_config(&toml, &["--inline", &format!("{}:{}", t.a, t.b)]);
    let mut ctl = t.subscribed();
    t.wait_listening(&t.s, "tcp", 8080);
    for url in [format!("http://{S4}:8080/blob.bin"), format!("http://[{S6}]:8080/blob.bin")] {
        let out = t.exec(&t.c, &["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "30", &url]);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "200", "{url}: {}", t.warden_log());
    }
    let records = collect_reports(&mut ctl, Duration::from_secs(20), |all| {
        all.iter().filter(|r| r.server_port == 8080 && r.closed).count() >= 2
    });
    let closed: Vec<&ConnectionRecord> = records.iter().filter(|r| r.server_port == 8080 && r.closed).collect();
    assert_eq!(closed.len(), 2, "records: {records:#?}");

    // Both collectors got the records: counters in status.
    std::thread::sleep(Duration::from_secs(1));
    let Reply::Status(st) = t.client().request(&Request::Status {}).unwrap() else { panic!("no status") };
    assert_eq!(st.export.len(), 2, "{st:?}");
    for e in &st.export {
        assert!(e.connected && e.records_sent >= 2 && e.templates_sent >= 1, "{e:?}");
        assert_eq!((e.dropped_queue_full, e.dropped_send), (0, 0), "{e:?}");
    }
    // Warden flushes its exporters and closes the TCP connection when it stops; nfcapd writes
    // its file when it stops.
    t.signal(warden, Signal::SIGTERM);
    assert_eq!(t.wait_exit(warden, Duration::from_secs(20)), Some(true), "{}", t.warden_log());
    t.signal(nfcapd, Signal::SIGTERM);
    assert!(t.wait_exit(nfcapd, Duration::from_secs(10)).is_some(), "nfcapd did not stop");

    let seen = nfdump_flows(&flows);
    let tcp = decode_stream(&std::fs::read(&sink_file).unwrap());
    for r in closed {
        let want = [r.packets_to_server, r.bytes_to_server, r.packets_to_client, r.bytes_to_client];
        // Records of the session, each with the counts since the previous one: their sums
        // are the socket's final totals.
        let sum = |v: Vec<[u64; 4]>| {
            assert!(!v.is_empty(), "session {r:?} not exported: nfdump {seen:?} tcp {tcp:?}");
            v.iter().fold([0u64; 4], |a, b| [a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3]])
        };
        let nf = seen.iter().filter(|f| f.1 == r.client_port && f.2 == 8080).map(|f| f.3).collect();
        assert_eq!(sum(nf), want, "nfdump vs socket for {r:?}");
        let ip = seen.iter().find(|f| f.1 == r.client_port).unwrap();
        assert_eq!(ip.0.parse::<std::net::IpAddr>().unwrap(), r.client_ip.parse::<std::net::IpAddr>().unwrap());
        let over_tcp = tcp.iter().filter(|f| f.0 == r.client_port).map(|f| f.1).collect();
        assert_eq!(sum(over_tcp), want, "TCP collector vs socket for {r:?}");
        assert!(tcp.iter().any(|f| f.0 == r.client_port && f.2 == r.app), "app {} not exported", r.app);
        assert!(r.bytes_to_client > 300_000);
    }
}
