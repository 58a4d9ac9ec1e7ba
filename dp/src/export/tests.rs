//! Encoder lengths, messages decoded back by an independent decoder (`netflow_parser`), delta
//! records, and the exporter thread over loopback sockets.

use std::net::{IpAddr, TcpListener, UdpSocket};
use std::time::{Duration, Instant};

use netflow_parser::variable_versions::field_value::{DurationValue, FieldValue};
use netflow_parser::variable_versions::ipfix::lookup::IPFixField;
use netflow_parser::variable_versions::ipfix::FlowSetBody;
use netflow_parser::{NetflowPacket, NetflowParser};

use super::ipfix::*;
use super::*;
use crate::flow::{Addr, FlowKey};
use crate::session::{SessionTable, Timeouts};

fn rec(client: &str, server: &str) -> FlowRecord {
    FlowRecord {
        client: client.parse().unwrap(),
        server: server.parse().unwrap(),
        client_port: 40000,
        server_port: 80,
        proto: 6,
        octets: 1234,
        packets: 7,
        reverse_octets: 56789,
        reverse_packets: 9,
        start_ms: 1_700_000_000_123,
        end_ms: 1_700_000_004_567,
        end_reason: end_reason::END_OF_FLOW,
        app: "http".into(),
        verdict: "allowed".into(),
        rule_id: 12,
        client_workload: "web".into(),
        server_workload: "db".into(),
        threats: "sqli".into(),
    }
}

/// (field, value) pairs of each data record of every message in `msgs`.
fn decode(msgs: &[Vec<u8>]) -> Vec<Vec<(IPFixField, FieldValue)>> {
    let mut p = NetflowParser::default();
    let mut out = Vec::new();
    for m in msgs {
        let res = p.parse_bytes(m);
        assert!(res.error.is_none(), "{:?}", res.error);
        for pkt in res.packets {
            let NetflowPacket::IPFix(ip) = pkt else { panic!("not IPFIX") };
            assert_eq!(ip.header.version, 10);
            assert_eq!(usize::from(ip.header.length), m.len());
            for fs in ip.flowsets {
                if let FlowSetBody::Data(d) = fs.body {
                    for r in d.fields {
                        out.push(r);
                    }
                }
            }
        }
    }
    out
}

fn num(v: &FieldValue) -> u64 {
    match v {
        FieldValue::FlowEndReason(r) => return u8::from(*r).into(),
        FieldValue::ProtocolType(p) => return u8::from(*p).into(),
        FieldValue::Duration(DurationValue::Millis { value, .. }) => return *value,
        // Elements the decoder does not know (ours): big-endian unsigned.
        FieldValue::Vec(b) if b.len() <= 8 => return b.iter().fold(0, |n, x| n << 8 | u64::from(*x)),
        _ => {}
    }
    if let Ok(n) = u64::try_from(v) {
        return n;
    }
    if let Ok(n) = u32::try_from(v) {
        return n.into();
    }
    if let Ok(n) = u16::try_from(v) {
        return n.into();
    }
    if let Ok(n) = u8::try_from(v) {
        return n.into();
    }
    panic!("not a number: {v:?}")
}

fn text(v: &FieldValue) -> String {
    match v {
        FieldValue::String(s) => s.value.clone(),
        FieldValue::Vec(b) => String::from_utf8(b.clone()).unwrap(),
        other => panic!("not text: {other:?}"),
    }
}

/// The value of element `id` of enterprise `pen` (0: IANA) in record `r`.
fn get(r: &[(IPFixField, FieldValue)], pen: u32, id: u16) -> &FieldValue {
    let want = IPFixField::new(id, (pen != 0).then_some(pen));
    &r.iter().find(|(f, _)| *f == want).unwrap_or_else(|| panic!("no ({pen}, {id}) in {r:?}")).1
}

#[test]
fn template_set_and_record_lengths() {
    let mut e = Encoder::new(7, 1400);
    e.add_templates();
    let m = e.finish(1);
    // Each template: 4-byte header, 10 IANA fields of 4 bytes, 8 enterprise fields of 8 bytes.
    let tpl = 4 + 10 * 4 + 8 * 8;
    assert_eq!(m.len(), HEADER_LEN + SET_HEADER_LEN + 2 * tpl);
    assert_eq!(u16::from_be_bytes([m[2], m[3]]) as usize, m.len());
    assert_eq!(u16::from_be_bytes([m[16], m[17]]), TEMPLATE_SET_ID);
    assert_eq!(u16::from_be_bytes([m[18], m[19]]) as usize, SET_HEADER_LEN + 2 * tpl);
    assert_eq!(u32::from_be_bytes([m[12], m[13], m[14], m[15]]), 7, "observation domain");

    let r = rec("198.18.0.1", "198.18.0.2");
    // 8 (addresses) + 5 (ports, protocol) + 48 (counters, times) + 1 (reason) + 4 (rule)
    // + five strings with one length byte each.
    assert_eq!(r.encoded_len(), 8 + 5 + 48 + 1 + 4 + (1 + 4) + (1 + 7) + (1 + 3) + (1 + 2) + (1 + 4));
    assert!(e.push(&r));
    assert!(e.push(&r));
    let m = e.finish(2);
    assert_eq!(m.len(), HEADER_LEN + SET_HEADER_LEN + 2 * r.encoded_len());
    assert_eq!(u16::from_be_bytes([m[16], m[17]]), TEMPLATE_V4);
    assert_eq!(u16::from_be_bytes([m[18], m[19]]) as usize, SET_HEADER_LEN + 2 * r.encoded_len());
    let r6 = rec("2001:db8::1", "2001:db8::2");
    assert_eq!(r6.encoded_len(), r.encoded_len() + 24);
}

#[test]
fn messages_decode_back_with_sequence_numbers() {
    let mut e = Encoder::new(3, 1400);
    e.add_templates();
    let t = e.finish(100);
    let (r4, mut r6) = (rec("198.18.0.1", "198.18.0.2"), rec("2001:db8::1", "2001:db8::2"));
    r6.rule_id = NO_RULE;
    r6.verdict.clear();
    r6.end_reason = end_reason::IDLE_TIMEOUT;
    assert!(e.push(&r4) && e.push(&r6) && e.push(&r4));
    let m1 = e.finish(101);
    assert!(e.push(&r6));
    let m2 = e.finish(102);
    // RFC 7011 §3.1: data records sent before this message (templates count none).
    let seq = |m: &[u8]| u32::from_be_bytes([m[8], m[9], m[10], m[11]]);
    assert_eq!((seq(&t), seq(&m1), seq(&m2)), (0, 0, 3));

    let recs = decode(&[t, m1, m2]);
    assert_eq!(recs.len(), 4);
    for (d, want) in recs.iter().zip([&r4, &r6, &r4, &r6]) {
        let v4 = want.template() == TEMPLATE_V4;
        let addr = |id4, id6| IpAddr::try_from(get(d, 0, if v4 { id4 } else { id6 })).unwrap();
        assert_eq!(addr(8, 27), want.client);
        assert_eq!(addr(12, 28), want.server);
        assert_eq!(num(get(d, 0, 7)), 40000);
        assert_eq!(num(get(d, 0, 11)), 80);
        assert_eq!(num(get(d, 0, 1)), want.octets);
        assert_eq!(num(get(d, 0, 2)), want.packets);
        assert_eq!(num(get(d, REVERSE_PEN, 1)), want.reverse_octets);
        assert_eq!(num(get(d, REVERSE_PEN, 2)), want.reverse_packets);
        assert_eq!(num(get(d, WARDEN_PEN, 3)), u64::from(want.rule_id));
        assert_eq!(text(get(d, WARDEN_PEN, 1)), want.app);
        assert_eq!(text(get(d, WARDEN_PEN, 4)), want.client_workload);
        assert_eq!(text(get(d, WARDEN_PEN, 6)), want.threats);
        let verdict = if want.verdict.is_empty() { "-" } else { &want.verdict };
        assert_eq!(text(get(d, WARDEN_PEN, 2)), verdict);
        assert_eq!(num(get(d, 0, 136)), u64::from(want.end_reason));
        assert_eq!(num(get(d, 0, 4)), 6);
        assert_eq!(num(get(d, 0, 152)), want.start_ms);
        assert_eq!(num(get(d, 0, 153)), want.end_ms);
    }
}

#[test]
fn message_length_bound_and_long_strings() {
    let mut e = Encoder::new(0, 512);
    let mut r = rec("198.18.0.1", "198.18.0.2");
    r.app = "é".repeat(200); // 400 bytes: cut at 254 (a character boundary)
    assert_eq!(r.encoded_len(), rec("198.18.0.1", "198.18.0.2").encoded_len() - 4 + 254);
    let mut n = 0;
    while e.push(&r) {
        n += 1;
    }
    assert_eq!(n, (512 - HEADER_LEN - SET_HEADER_LEN) / r.encoded_len());
    let m = e.finish(0);
    assert!(m.len() <= 512);
    let d = decode(&[{
        let mut t = Encoder::new(0, 512);
        t.add_templates();
        t.finish(0)
    }, m]);
    assert_eq!(text(get(&d[0], WARDEN_PEN, 1)), "é".repeat(127));
}

fn up(id: u64, totals: [u64; 4], start_ms: u64, end_ms: u64, ended: bool) -> Update {
    let mut r = rec("198.18.0.1", "198.18.0.2");
    (r.octets, r.packets, r.reverse_octets, r.reverse_packets) = (totals[0], totals[1], totals[2], totals[3]);
    (r.start_ms, r.end_ms) = (start_ms, end_ms);
    Update { key: (0, id), rec: r, ended }
}

#[test]
fn live_sessions_export_deltas_per_active_timeout() {
    let mut t = Tracker::new(Duration::from_secs(60), 16);
    let t0 = Instant::now();
    // Young live session: nothing yet.
    assert!(t.record(up(1, [100, 1, 0, 0], 0, 30_000, false), t0).is_none());
    // Older than the active timeout: its totals so far.
    let r = t.record(up(1, [500, 5, 900, 4], 0, 61_000, false), t0).unwrap();
    assert_eq!((r.octets, r.packets, r.reverse_octets, r.reverse_packets), (500, 5, 900, 4));
    // Within the next interval: nothing.
    assert!(t.record(up(1, [600, 6, 900, 4], 0, 70_000, false), t0 + Duration::from_secs(30)).is_none());
    // Next interval: the delta.
    let r = t.record(up(1, [700, 7, 1000, 5], 0, 125_000, false), t0 + Duration::from_secs(61)).unwrap();
    assert_eq!((r.octets, r.packets, r.reverse_octets, r.reverse_packets), (200, 2, 100, 1));
    // Ended: the rest, and forgotten.
    let r = t.record(up(1, [750, 8, 1100, 6], 0, 130_000, true), t0 + Duration::from_secs(62)).unwrap();
    assert_eq!((r.octets, r.packets, r.reverse_octets, r.reverse_packets), (50, 1, 100, 1));
    assert!(t.is_empty());
    // A short session: one final record with its totals.
    let r = t.record(up(2, [10, 1, 20, 1], 0, 5, true), t0).unwrap();
    assert_eq!((r.octets, r.reverse_octets), (10, 20));
}

#[test]
fn tracker_is_bounded_and_forgets_stale_sessions() {
    let mut t = Tracker::new(Duration::from_secs(1), 2);
    let t0 = Instant::now();
    for id in 0..2 {
        assert!(t.record(up(id, [1, 1, 0, 0], 0, 2000, false), t0).is_some());
    }
    // Full: a third live session waits for its end (then carries all its counts).
    assert!(t.record(up(9, [1, 1, 0, 0], 0, 2000, false), t0).is_none());
    assert_eq!(t.record(up(9, [5, 2, 0, 0], 0, 3000, true), t0).unwrap().octets, 5);
    // Ten intervals later the first two (never ended here) are stale and make room.
    assert!(t.record(up(10, [1, 1, 0, 0], 0, 2000, false), t0 + Duration::from_secs(11)).is_some());
    assert_eq!(t.len(), 1);
}

fn snapshot(ended: Option<EndReason>) -> SessionSnapshot {
    let mut t = SessionTable::new(4, Timeouts::default());
    let (k, end) = FlowKey::new(0, 17, Addr::v4([198, 18, 0, 1]), 5353, Addr::v4([198, 18, 0, 2]), 53);
    t.track(&k, end, 80, None, 0, 1_700_000_000_000_000_000).unwrap();
    let (k2, end2) = FlowKey::new(0, 17, Addr::v4([198, 18, 0, 2]), 53, Addr::v4([198, 18, 0, 1]), 5353);
    t.track(&k2, end2, 120, None, 0, 1_700_000_000_250_000_000).unwrap();
    SessionSnapshot { ended, ..t.snapshot(10)[0].clone() }
}

#[test]
fn snapshot_to_flow_record() {
    let s = snapshot(Some(EndReason::Idle));
    let r = flow_record(&s, &crate::record::to_record(&s, |_| String::new()));
    assert_eq!((r.client.to_string(), r.client_port), ("198.18.0.1".to_string(), 5353));
    assert_eq!((r.server.to_string(), r.server_port, r.proto), ("198.18.0.2".to_string(), 53, 17));
    assert_eq!((r.octets, r.packets, r.reverse_octets, r.reverse_packets), (80, 1, 120, 1));
    assert_eq!((r.start_ms, r.end_ms), (1_700_000_000_000, 1_700_000_000_250));
    assert_eq!(r.end_reason, end_reason::IDLE_TIMEOUT);
    assert_eq!(r.rule_id, NO_RULE);
}

fn collector(addr: std::net::SocketAddr, transport: Transport, queue: usize) -> ExportConfig {
    ExportConfig {
        ipfix: vec![IpfixCollector {
            collector: addr,
            transport,
            observation_domain: 9,
            template_interval: 60,
            active_timeout: 60,
            queue,
            max_message: 1400,
        }],
    }
}

#[test]
fn udp_exporter_sends_templates_then_records() {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let x = Exporters::start(&collector(sock.local_addr().unwrap(), Transport::Udp, 16)).unwrap();
    let s = snapshot(Some(EndReason::Fin));
    let r = crate::record::to_record(&s, |_| String::new());
    x.offer(0, &s, &r);
    // A live, young session: queued but not due.
    let live = snapshot(None);
    x.offer(1, &live, &crate::record::to_record(&live, |_| String::new()));
    x.stop();
    let mut msgs = Vec::new();
    let mut buf = [0u8; 2048];
    while let Ok(n) = sock.recv(&mut buf) {
        msgs.push(buf[..n].to_vec());
        if msgs.len() == 2 {
            break;
        }
    }
    let d = decode(&msgs);
    assert_eq!(d.len(), 1);
    assert_eq!(num(get(&d[0], 0, 136)), u64::from(end_reason::END_OF_FLOW));
    assert_eq!(num(get(&d[0], REVERSE_PEN, 1)), 120);
    let st = &x.status()[0];
    assert_eq!((st.records_sent, st.templates_sent, st.messages_sent), (1, 1, 2));
    assert_eq!((st.dropped_queue_full, st.dropped_send, st.connects), (0, 0, 1));
}

#[test]
fn unreachable_tcp_collector_counts_what_it_loses() {
    // A port nobody listens on: bound, then closed.
    let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let x = Exporters::start(&collector(addr, Transport::Tcp, 2)).unwrap();
    let s = snapshot(Some(EndReason::Fin));
    let r = crate::record::to_record(&s, |_| String::new());
    for _ in 0..5 {
        x.offer(0, &s, &r);
    }
    let st = x.status()[0].clone();
    assert!(!st.connected);
    assert_eq!((st.queued, st.dropped_queue_full), (2, 3));
    x.stop();
    let st = &x.status()[0];
    assert_eq!((st.records_sent, st.dropped_send), (0, 2));
    assert!(st.send_errors >= 1);
}

#[test]
fn tcp_exporter_reconnects_and_resends_templates() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let x = Exporters::start(&collector(l.local_addr().unwrap(), Transport::Tcp, 16)).unwrap();
    let read_msgs = |c: &mut std::net::TcpStream, n: usize| {
        use std::io::Read;
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut out = Vec::new();
        for _ in 0..n {
            let mut h = [0u8; 4];
            c.read_exact(&mut h).unwrap();
            let len = usize::from(u16::from_be_bytes([h[2], h[3]]));
            let mut m = h.to_vec();
            m.resize(len, 0);
            c.read_exact(&mut m[4..]).unwrap();
            out.push(m);
        }
        out
    };
    let s = snapshot(Some(EndReason::Rst));
    let r = crate::record::to_record(&s, |_| String::new());
    let (mut c1, _) = l.accept().unwrap();
    x.offer(0, &s, &r);
    let first = read_msgs(&mut c1, 2);
    assert_eq!(decode(&first).len(), 1);
    drop(c1);
    // The next writes fail; the exporter reconnects (backoff 1 s) and starts with templates.
    let deadline = Instant::now() + Duration::from_secs(10);
    l.set_nonblocking(true).unwrap();
    let mut c2 = loop {
        x.offer(0, &s, &r);
        if let Ok((c, _)) = l.accept() {
            break c;
        }
        assert!(Instant::now() < deadline, "no reconnect: {:?}", x.status());
        std::thread::sleep(Duration::from_millis(100));
    };
    c2.set_nonblocking(false).unwrap();
    x.offer(0, &s, &r);
    let again = read_msgs(&mut c2, 2);
    // The new connection starts with the templates (set id 2); a fresh decoder reads it.
    assert_eq!(u16::from_be_bytes([again[0][16], again[0][17]]), TEMPLATE_SET_ID);
    assert!(!decode(&again).is_empty());
    assert_eq!(u32::from_be_bytes([again[0][8], again[0][9], again[0][10], again[0][11]]), 0);
    x.stop();
    assert!(x.status()[0].connects >= 2);
}
