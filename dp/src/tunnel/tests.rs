//! Decapsulation of every tunnel type on frames built as their senders build them, what a
//! host would not decapsulate, bounds, and tunnelled flows through the whole `Inspector`
//! (sessions of their own, records, policy on the inner flow, the outer checks first).

use std::sync::Arc;

use super::*;
use crate::inspect::{FrameMeta, Inspector, MalformedPolicy, Verdict};
use crate::policy::{CompiledPolicy, Policy};
use crate::session::Timeouts;
use crate::wire::tcpflag::{ACK, PSH, SYN};
use crate::wire::tests::{eth, fix_checksums, ipv4, ipv6, tcp, udp, v6};

const VTEP_A: [u8; 4] = [198, 18, 0, 1];
const VTEP_B: [u8; 4] = [198, 18, 0, 2];
const POD_A: [u8; 4] = [198, 19, 1, 10];
const POD_B: [u8; 4] = [198, 19, 2, 20];

/// The inner Ethernet frame of a TCP segment from POD_A:40000 to POD_B:`dport` (checksums
/// filled).
fn inner_tcp(dport: u16, seq: u32, ack: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    eth(0x0800, &ipv4(POD_A, POD_B, 6, &tcp(40000, dport, seq, ack, flags, 65535, None, payload)))
}

/// The same, server to client.
fn inner_tcp_back(sport: u16, seq: u32, ack: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    eth(0x0800, &ipv4(POD_B, POD_A, 6, &tcp(sport, 40000, seq, ack, flags, 65535, None, payload)))
}

fn vxlan_hdr(vni: u32) -> Vec<u8> {
    let v = (vni << 8).to_be_bytes();
    vec![0x08, 0, 0, 0, v[0], v[1], v[2], v[3]]
}

/// Outer Ethernet + IPv4 + UDP from `src` to `dst` port `dport` around `payload`.
fn outer_udp(src: [u8; 4], dst: [u8; 4], dport: u16, payload: &[u8]) -> Vec<u8> {
    eth(0x0800, &ipv4(src, dst, 17, &udp(51000, dport, payload)))
}

fn vxlan(src: [u8; 4], dst: [u8; 4], vni: u32, inner: &[u8]) -> Vec<u8> {
    let mut p = vxlan_hdr(vni);
    p.extend_from_slice(inner);
    outer_udp(src, dst, 4789, &p)
}

/// Outer IPv4 GRE (`flags` byte 0, version 0) with optional key and sequence number.
fn gre(proto: u16, key: Option<u32>, seq: Option<u32>, checksum: bool, inner: &[u8]) -> Vec<u8> {
    let mut flags = 0u8;
    if checksum {
        flags |= 0x80;
    }
    if key.is_some() {
        flags |= 0x20;
    }
    if seq.is_some() {
        flags |= 0x10;
    }
    let mut g = vec![flags, 0];
    g.extend_from_slice(&proto.to_be_bytes());
    if checksum {
        g.extend_from_slice(&[0, 0, 0, 0]);
    }
    if let Some(k) = key {
        g.extend_from_slice(&k.to_be_bytes());
    }
    if let Some(s) = seq {
        g.extend_from_slice(&s.to_be_bytes());
    }
    g.extend_from_slice(inner);
    eth(0x0800, &ipv4(VTEP_A, VTEP_B, 47, &g))
}

fn decap_of(frame: &[u8]) -> Decap<'_> {
    let f = wire::decode(frame).unwrap();
    let ip = f.ip.unwrap();
    decap(&f, &ip, &Ports::default())
}

/// (kind, id, inner source, inner destination, inner destination port).
fn inner_of(frame: &[u8]) -> (Kind, u32, crate::flow::Addr, crate::flow::Addr, u16) {
    match decap_of(frame) {
        Decap::Inner(t, f) => {
            let ip = f.ip.expect("inner IP");
            (t.kind, t.id, ip.src, ip.dst, ip.dport)
        }
        other => panic!("not decapsulated: {other:?}"),
    }
}

fn a4(o: [u8; 4]) -> crate::flow::Addr {
    crate::flow::Addr::v4(o)
}

#[test]
fn every_tunnel_type_yields_its_inner_packet() {
    let syn = inner_tcp(80, 1, 0, SYN, b"");
    let ip_only = &syn[14..];
    let expect = |k, id| (k, id, a4(POD_A), a4(POD_B), 80);

    assert_eq!(inner_of(&vxlan(VTEP_A, VTEP_B, 42, &syn)), expect(Kind::Vxlan, 42));
    // Linux's default VXLAN port (Flannel) is decapsulated too.
    let mut p = vxlan_hdr(7);
    p.extend_from_slice(&syn);
    assert_eq!(inner_of(&outer_udp(VTEP_A, VTEP_B, 8472, &p)), expect(Kind::Vxlan, 7));

    // VXLAN-GPE (UDP 4790) with IPv4 and Ethernet inside; its VNI is keyed like VXLAN's.
    for (next, inner) in [(1u8, ip_only), (3, &syn[..])] {
        let mut g = vec![0x0c, 0, 0, next, 0, 0, 9, 0];
        g.extend_from_slice(inner);
        assert_eq!(inner_of(&outer_udp(VTEP_A, VTEP_B, 4790, &g)), expect(Kind::Vxlan, 9));
    }
    // Geneve with one 8-byte option, Ethernet and IPv4 payloads.
    for (proto, inner) in [(0x6558u16, &syn[..]), (0x0800, ip_only)] {
        let mut g = vec![0x02, 0];
        g.extend_from_slice(&proto.to_be_bytes());
        g.extend_from_slice(&[0, 0x30, 0x39, 0]);
        g.extend_from_slice(&[0x01, 0x02, 0x03, 0x01, 0xaa, 0xbb, 0xcc, 0xdd]);
        g.extend_from_slice(inner);
        assert_eq!(inner_of(&outer_udp(VTEP_A, VTEP_B, 6081, &g)), expect(Kind::Geneve, 12345));
    }

    // GTP-U: plain, and with a sequence number and a PDU session container extension.
    let mut plain = vec![0x30, 0xff];
    plain.extend_from_slice(&(ip_only.len() as u16).to_be_bytes());
    plain.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    plain.extend_from_slice(ip_only);
    assert_eq!(inner_of(&outer_udp(VTEP_A, VTEP_B, 2152, &plain)), expect(Kind::GtpU, 0x1234_5678));
    let mut ext = vec![0x36, 0xff, 0, 0, 0, 0, 0, 9, 0, 1, 0, 0x85, 1, 0x10, 0x01, 0x00];
    ext.extend_from_slice(ip_only);
    assert_eq!(inner_of(&outer_udp(VTEP_A, VTEP_B, 2152, &ext)), expect(Kind::GtpU, 9));

    // GRE: plain IPv4, keyed with checksum and sequence number, Ethernet (gretap).
    assert_eq!(inner_of(&gre(0x0800, None, None, false, ip_only)), expect(Kind::Gre, 0));
    assert_eq!(inner_of(&gre(0x0800, Some(77), Some(5), true, ip_only)), expect(Kind::Gre, 77));
    assert_eq!(inner_of(&gre(0x6558, Some(3), None, false, &syn)), expect(Kind::Gre, 3));

    // ERSPAN II (session 0x155) and III with the platform-specific subheader.
    let mut e2 = vec![0x10, 0x00, 0x01, 0x55, 0, 0, 0, 0];
    e2.extend_from_slice(&syn);
    assert_eq!(inner_of(&gre(0x88be, None, Some(1), false, &e2)), expect(Kind::Erspan, 0x155));
    let mut e3 = vec![0x20, 0x00, 0x00, 0x21, 0, 0, 0, 1, 0, 0, 0, 0x01];
    e3.extend_from_slice(&[0; 8]);
    e3.extend_from_slice(&syn);
    assert_eq!(inner_of(&gre(0x22eb, None, Some(1), false, &e3)), expect(Kind::Erspan, 0x21));

    // PPTP: enhanced GRE, call id 0x4242, PPP with address/control and IPv4.
    let mut pptp = vec![0x30, 0x01, 0x88, 0x0b];
    pptp.extend_from_slice(&((ip_only.len() + 4) as u16).to_be_bytes());
    pptp.extend_from_slice(&[0x42, 0x42, 0, 0, 0, 1, 0xff, 0x03, 0x00, 0x21]);
    pptp.extend_from_slice(ip_only);
    assert_eq!(inner_of(&eth(0x0800, &ipv4(VTEP_A, VTEP_B, 47, &pptp))), expect(Kind::Gre, 0x4242));

    // IP in IP, both versions inside both versions.
    assert_eq!(inner_of(&eth(0x0800, &ipv4(VTEP_A, VTEP_B, 4, ip_only))), expect(Kind::IpIp, 0));
    assert_eq!(inner_of(&eth(0x86dd, &ipv6(v6(1), v6(2), 4, ip_only))), expect(Kind::FourInSix, 0));
    let inner6 = ipv6(v6(10), v6(20), 6, &tcp(40000, 80, 1, 0, SYN, 65535, None, b""));
    let e6 = eth(0x86dd, &inner6);
    let want6 = |k| (k, 0, crate::flow::Addr::v6(v6(10)), crate::flow::Addr::v6(v6(20)), 80);
    assert_eq!(inner_of(&eth(0x0800, &ipv4(VTEP_A, VTEP_B, 41, &e6[14..]))), want6(Kind::SixInFour));
    assert_eq!(inner_of(&eth(0x86dd, &ipv6(v6(1), v6(2), 41, &e6[14..]))), want6(Kind::SixInSix));
}

#[test]
fn what_a_host_does_not_decapsulate_stays_an_ordinary_packet() {
    let syn = inner_tcp(80, 1, 0, SYN, b"");
    let ip_only = &syn[14..];
    // VXLAN without the I flag, to a port that is not a tunnel's.
    let mut no_i = vxlan_hdr(1);
    no_i[0] = 0;
    no_i.extend_from_slice(&syn);
    assert_eq!(decap_of(&outer_udp(VTEP_A, VTEP_B, 4789, &no_i)), Decap::No);
    let mut p = vxlan_hdr(1);
    p.extend_from_slice(&syn);
    assert_eq!(decap_of(&outer_udp(VTEP_A, VTEP_B, 4788, &p)), Decap::No);
    // VXLAN-GPE without P, or carrying NSH (4).
    for head in [[0x08u8, 0, 0, 1], [0x0c, 0, 0, 4]] {
        let mut g = head.to_vec();
        g.extend_from_slice(&[0, 0, 9, 0]);
        g.extend_from_slice(ip_only);
        assert_eq!(decap_of(&outer_udp(VTEP_A, VTEP_B, 4790, &g)), Decap::No, "{head:?}");
    }
    // Geneve version 1, GTP-U echo request, GTPv0.
    let mut g = vec![0x40, 0, 0x65, 0x58, 0, 0, 1, 0];
    g.extend_from_slice(&syn);
    assert_eq!(decap_of(&outer_udp(VTEP_A, VTEP_B, 6081, &g)), Decap::No);
    for head in [[0x30u8, 0x01], [0x10, 0xff]] {
        let mut m = head.to_vec();
        m.extend_from_slice(&[0, 0, 0, 0, 0, 1]);
        m.extend_from_slice(ip_only);
        assert_eq!(decap_of(&outer_udp(VTEP_A, VTEP_B, 2152, &m)), Decap::No);
    }
    // GRE with routing present, version 2, an unknown protocol.
    for head in [[0x40u8, 0x00, 0x08, 0x00], [0x00, 0x02, 0x08, 0x00], [0x00, 0x00, 0x12, 0x34]] {
        let mut m = head.to_vec();
        m.extend_from_slice(ip_only);
        assert_eq!(decap_of(&eth(0x0800, &ipv4(VTEP_A, VTEP_B, 47, &m))), Decap::No, "{head:?}");
    }
    // Decapsulation off.
    let f = vxlan(VTEP_A, VTEP_B, 1, &syn);
    let d = wire::decode(&f).unwrap();
    let off = Ports::new(&TunnelConfig { enabled: false, ..Default::default() });
    assert_eq!(decap(&d, &d.ip.unwrap(), &off), Decap::No);
}

#[test]
fn a_broken_inner_packet_is_malformed_and_no_prefix_panics() {
    let syn = inner_tcp(80, 1, 0, SYN, b"hello");
    let mut cut = syn.clone();
    cut[16..18].copy_from_slice(&2000u16.to_be_bytes()); // inner IPv4 total length past the end
    match decap_of(&vxlan(VTEP_A, VTEP_B, 1, &cut)) {
        Decap::Malformed(t, Malformed::Ipv4Length) => assert_eq!(t.kind, Kind::Vxlan),
        other => panic!("{other:?}"),
    }
    // Every prefix of every tunnel payload: decoded, refused or malformed, never a panic.
    let ip_only = &syn[14..];
    let payloads: Vec<(u8, Option<u16>, Vec<u8>)> = vec![
        (17, Some(4789), [vxlan_hdr(5), syn.clone()].concat()),
        (17, Some(6081), [vec![0x3f, 0, 0x65, 0x58, 0, 0, 1, 0], vec![1; 252], syn.clone()].concat()),
        (17, Some(2152), [vec![0x37, 0xff, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0x85, 0xff], vec![0x85; 40]].concat()),
        (47, None, [vec![0xb0, 0, 0x22, 0xeb, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 1], vec![0x20, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1], syn.clone()].concat()),
        (47, None, [vec![0x30, 0x81, 0x88, 0x0b, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0x21], ip_only.to_vec()].concat()),
        (4, None, ip_only.to_vec()),
    ];
    for (proto, port, p) in payloads {
        for n in 0..=p.len() {
            let l4 = match port {
                Some(port) => udp(51000, port, &p[..n]),
                None => p[..n].to_vec(),
            };
            let mut f = eth(0x0800, &ipv4(VTEP_A, VTEP_B, proto, &l4));
            fix_checksums(&mut f);
            let d = wire::decode(&f).unwrap();
            let _ = decap(&d, &d.ip.unwrap(), &Ports::default());
        }
    }
}

#[test]
fn pppoe_mpls_and_qinq_frames_decode_to_their_ip_packet() {
    let syn = inner_tcp(80, 1, 0, SYN, b"");
    let ip_only = &syn[14..];
    let wrap = |tags: &[u16], ethertype: u16, shim: &[u8]| {
        let mut f = syn[..12].to_vec();
        for t in tags {
            f.extend_from_slice(&0x8100u16.to_be_bytes());
            f.extend_from_slice(&t.to_be_bytes());
        }
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(shim);
        f.extend_from_slice(ip_only);
        f
    };
    // QinQ + PPPoE session (id 0x0102), PPP protocol IPv4; and with a compressed protocol field.
    let len = (ip_only.len() + 2) as u16;
    let mut shim = vec![0x11, 0x00, 0x01, 0x02];
    shim.extend_from_slice(&len.to_be_bytes());
    shim.extend_from_slice(&[0x00, 0x21]);
    let f = wrap(&[100, 200], 0x8864, &shim);
    let d = wire::decode(&f).unwrap();
    assert_eq!((d.vlans, d.vlan, d.shim, d.l3), (2, [100, 200, 0, 0], wire::Shim::Pppoe(0x0102), 14 + 8 + 8));
    assert_eq!(d.ip.unwrap().dport, 80);
    let clen = (ip_only.len() + 1) as u16;
    let compressed = wrap(&[], 0x8864, &[&[0x11, 0x00, 0x01, 0x02][..], &clen.to_be_bytes(), &[0x21]].concat());
    assert_eq!(wire::decode(&compressed).unwrap().ip.unwrap().dst, a4(POD_B));
    // PPPoE carrying LCP: not IP; a discovery-stage code in a session frame: malformed.
    let lcp = wrap(&[], 0x8864, &[0x11, 0x00, 0x01, 0x02, 0, 4, 0xc0, 0x21]);
    assert!(wire::decode(&lcp).unwrap().ip.is_none());
    let padi = wrap(&[], 0x8864, &[0x11, 0x09, 0x00, 0x00, 0, 2, 0x00, 0x21]);
    assert_eq!(wire::decode(&padi), Err(Malformed::PppoeInvalid));
    // The PPPoE length bounds the packet, as the receiver trims to it: padding after it is not
    // read, and an IP length reaching into it is a truncated (malformed) packet, not payload.
    let mut padded = f.clone();
    padded.extend_from_slice(&[0xee; 6]);
    assert_eq!(wire::decode(&padded).unwrap().ip.unwrap().payload, b"");
    let short = (ip_only.len() + 2 - 6) as u16;
    let mut cut = padded.clone();
    cut[22 + 4..22 + 6].copy_from_slice(&short.to_be_bytes());
    assert_eq!(wire::decode(&cut), Err(Malformed::Ipv4Length));
    let long = (ip_only.len() + 2 + 7) as u16;
    cut[22 + 4..22 + 6].copy_from_slice(&long.to_be_bytes());
    assert_eq!(wire::decode(&cut), Err(Malformed::PppoeInvalid), "past the frame");
    // MPLS: two labels then IPv4; nine labels without a bottom: malformed.
    let f = wrap(&[], 0x8847, &[0x00, 0x01, 0x00, 0x40, 0x00, 0x02, 0x01, 0x40]);
    let d = wire::decode(&f).unwrap();
    assert_eq!((d.shim, d.l3, d.ip.unwrap().dport), (wire::Shim::Mpls(2), 22, 80));
    let deep = wrap(&[], 0x8847, &[0x00, 0x01, 0x00, 0x40].repeat(9));
    assert_eq!(wire::decode(&deep), Err(Malformed::MplsInvalid));
}

// ---- through the whole pipeline ----

fn policy(text: &str) -> Arc<CompiledPolicy> {
    Arc::new(CompiledPolicy::compile(&Policy::from_toml(text).unwrap()).unwrap())
}

/// Inner server POD_B is a protect-mode workload that takes HTTP on 80 and nothing else; the
/// VTEPs may exchange VXLAN.
const PROTECT_INNER: &str = r#"
[[workload]]
id = "pod-b"
ips = ["198.19.2.20"]
mode = "protect"

[[workload]]
id = "vtep-b"
ips = ["198.18.0.2"]
mode = "protect"

[[rule]]
id = 1
from = "any"
to = "pod-b"
ip_proto = "tcp"
ports = ["80"]
action = "allow"

[[rule]]
id = 2
from = "any"
to = "vtep-b"
ip_proto = "udp"
ports = ["4789"]
action = "allow"

[[rule]]
id = 3
from = "any"
to = "vtep-b"
ip_proto = "47"
action = "allow"

[[rule]]
id = 4
from = "any"
to = "vtep-b"
ip_proto = "4"
action = "allow"

[[rule]]
id = 5
from = "vtep-b"
to = "any"
ip_proto = "udp"
ports = ["4789"]
action = "allow"
"#;

struct Run {
    i: Inspector,
    now: u64,
}

impl Run {
    fn new(policy_text: Option<&str>) -> Run {
        let mut i = Inspector::new(1024, Timeouts::default(), MalformedPolicy::Drop);
        if let Some(p) = policy_text {
            i.set_policy(policy(p), 1);
        }
        Run { i, now: 1_000_000_000 }
    }

    fn send(&mut self, frame: &[u8]) -> Verdict {
        self.now += 1_000_000;
        self.i.process(frame, FrameMeta::new(0, 0, self.now))
    }

    fn records(&mut self) -> Vec<warden_control::ConnectionRecord> {
        self.i.snapshot(usize::MAX).iter().map(|s| crate::record::to_record(s, |_| String::new())).collect()
    }

    /// An HTTP exchange POD_A → POD_B:`dport`, each inner frame wrapped by `wrap` (client to
    /// server) and `back` (server to client); the verdicts.
    fn http(&mut self, dport: u16, wrap: &dyn Fn(&[u8]) -> Vec<u8>, back: &dyn Fn(&[u8]) -> Vec<u8>) -> Vec<Verdict> {
        let req = b"GET / HTTP/1.1\r\nHost: b\r\n\r\n";
        let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        vec![
            self.send(&wrap(&inner_tcp(dport, 100, 0, SYN, b""))),
            self.send(&back(&inner_tcp_back(dport, 500, 101, SYN | ACK, b""))),
            self.send(&wrap(&inner_tcp(dport, 101, 501, ACK, b""))),
            self.send(&wrap(&inner_tcp(dport, 101, 501, ACK | PSH, req))),
            self.send(&back(&inner_tcp_back(dport, 501, 101 + req.len() as u32, ACK | PSH, resp))),
        ]
    }
}

fn to_b(inner: &[u8]) -> Vec<u8> {
    vxlan(VTEP_A, VTEP_B, 42, inner)
}

fn to_a(inner: &[u8]) -> Vec<u8> {
    vxlan(VTEP_B, VTEP_A, 42, inner)
}

#[test]
fn a_vxlan_inner_flow_is_a_session_of_its_own_with_its_tunnel() {
    let mut r = Run::new(None);
    let v = r.http(80, &to_b, &to_a);
    assert!(v.iter().all(|v| *v == Verdict::Forward), "{v:?}");
    let recs = r.records();
    let inner = recs.iter().find(|r| r.ip_proto == 6).expect("inner session");
    assert_eq!((inner.client_ip.as_str(), inner.server_ip.as_str(), inner.server_port), ("198.19.1.10", "198.19.2.20", 80));
    assert_eq!(inner.app, "http");
    assert_eq!((inner.packets_to_server, inner.packets_to_client), (3, 2));
    let t = inner.tunnel.as_ref().expect("tunnel object");
    assert_eq!((t.kind.as_str(), t.id, t.outer_client.as_str(), t.outer_server.as_str()), ("vxlan", 42, "198.18.0.1", "198.18.0.2"));
    // The outer flows are still sessions (one per direction: the VTEPs send to each other's
    // port 4789), marked as carriers, with every frame counted.
    let outer: Vec<_> = recs.iter().filter(|r| r.ip_proto == 17).collect();
    assert_eq!(outer.len(), 2);
    assert!(outer.iter().all(|o| o.tunnel_carrier.as_deref() == Some("vxlan") && o.tunnel.is_none()));
    assert_eq!(outer.iter().map(|o| o.packets_to_server + o.packets_to_client).sum::<u64>(), 5);
    assert_eq!(r.i.stats.tunnels.decapsulated[Kind::Vxlan.index()], 5);
}

#[test]
fn the_same_inner_5_tuple_in_two_vnis_or_two_vlans_is_two_sessions() {
    let mut r = Run::new(None);
    let syn = inner_tcp(80, 100, 0, SYN, b"");
    r.send(&vxlan(VTEP_A, VTEP_B, 1, &syn));
    r.send(&vxlan(VTEP_A, VTEP_B, 2, &syn));
    let recs = r.records();
    let inner: Vec<_> = recs.iter().filter(|r| r.ip_proto == 6).collect();
    assert_eq!(inner.len(), 2);
    let mut ids: Vec<u32> = inner.iter().map(|r| r.tunnel.as_ref().unwrap().id).collect();
    ids.sort();
    assert_eq!(ids, [1, 2]);

    let mut r = Run::new(None);
    for tags in [&[10u16][..], &[20], &[10, 5], &[], &[10, 5, 7], &[10, 5, 8]] {
        r.send(&crate::wire::tests::tcp4(tags, SYN, b""));
    }
    assert_eq!(r.records().len(), 6, "one session per VLAN stack");
}

#[test]
fn policy_holds_on_the_inner_flow_and_counts_the_carrier() {
    let mut r = Run::new(Some(PROTECT_INNER));
    let v = r.http(80, &to_b, &to_a);
    assert!(v.iter().all(|v| *v == Verdict::Forward), "allowed inner port: {v:?}");
    // Redis on the inner workload is not allowed: dropped from its first frame, through the
    // allowed VXLAN outer flow.
    let v = r.send(&to_b(&inner_tcp(6379, 1, 0, SYN, b"")));
    assert!(matches!(v, Verdict::Drop(_)), "{v:?}");
    let v = r.send(&to_b(&inner_tcp(6379, 2, 0, ACK | PSH, b"*1\r\n$4\r\nPING\r\n")));
    assert!(matches!(v, Verdict::Drop(_)), "{v:?}");
    let recs = r.records();
    let redis = recs.iter().find(|r| r.server_port == 6379).unwrap();
    assert_eq!(redis.verdict.as_deref(), Some("denied"));
    assert_eq!(redis.packets_dropped_to_server, 2);
    assert_eq!(redis.tunnel.as_ref().unwrap().kind, "vxlan");
    let carrier = recs.iter().find(|r| r.ip_proto == 17 && r.server_ip == "198.18.0.2").unwrap();
    assert_eq!(carrier.packets_dropped_to_server, 2, "the carrier counts the frames its inner flow lost");

    // The same inner flow over GRE: the policy is the inner flow's whatever the tunnel.
    let v = r.send(&gre(0x0800, None, None, false, &inner_tcp(6380, 1, 0, SYN, b"")[14..]));
    assert!(matches!(v, Verdict::Drop(_)), "{v:?}");
    let v = r.send(&gre(0x0800, None, None, false, &inner_tcp(80, 7000, 0, SYN, b"")[14..]));
    assert_eq!(v, Verdict::Forward);
}

#[test]
fn a_tunnel_the_outer_policy_denies_is_dropped_before_its_inner_packet_is_read() {
    let mut r = Run::new(Some(PROTECT_INNER));
    // Geneve is not allowed to vtep-b: the outer flow is denied; the inner HTTP flow is never
    // created.
    let mut g = vec![0, 0, 0x65, 0x58, 0, 0, 1, 0];
    g.extend_from_slice(&inner_tcp(80, 1, 0, SYN, b""));
    let v = r.send(&outer_udp(VTEP_A, VTEP_B, 6081, &g));
    assert!(matches!(v, Verdict::Drop(_)), "{v:?}");
    assert!(r.records().iter().all(|r| r.ip_proto == 17));
    assert_eq!(r.i.stats.tunnels.decapsulated, [0; 9]);
}

#[test]
fn an_outer_packet_the_host_drops_is_not_decapsulated() {
    let mut r = Run::new(None);
    let mut f = to_b(&inner_tcp(80, 1, 0, SYN, b""));
    // A wrong outer UDP checksum: the receiving host drops the packet, so its inner packet
    // must not create or move an inner session.
    let udp_csum = 14 + 20 + 6;
    f[udp_csum] ^= 0x55;
    r.send(&f);
    assert!(r.records().iter().all(|r| r.ip_proto != 6), "{:?}", r.records());
    assert_eq!(r.i.stats.tunnels.decapsulated, [0; 9]);
    // A wrong inner TCP checksum: the inner packet is not read by its session either.
    let mut inner = inner_tcp(80, 1, 0, SYN, b"");
    inner[14 + 20 + 16] ^= 0x55;
    r.send(&to_b(&inner));
    assert!(r.records().iter().all(|r| r.ip_proto != 6));
}

/// `inner` in an IPv4 IP-in-IP packet VTEP_A → VTEP_B with its header checksum filled.
fn ipip(inner: &[u8]) -> Vec<u8> {
    let mut p = ipv4(VTEP_A, VTEP_B, 4, inner);
    crate::checksum::fill_ipv4_header(&mut p[..20]);
    p
}

#[test]
fn inner_fragments_and_deep_nesting_fall_to_the_exception_policy() {
    let mut r = Run::new(Some(PROTECT_INNER));
    // An inner IPv4 fragment (MF set) to the protect workload: not reassembled inside the
    // tunnel, so not let through uninspected.
    let mut frag = inner_tcp(80, 1, 0, SYN, b"0123456789abcdef")[14..].to_vec();
    frag[6] = 0x20;
    frag[7] = 0;
    let v = r.send(&gre(0x0800, None, None, false, &frag));
    assert!(matches!(v, Verdict::Drop(_)), "{v:?}");
    assert_eq!(r.i.stats.tunnels.inner_fragments, 1);
    // IP-in-IP four deep with max_depth 3: the innermost packet is not inspected.
    let mut p = inner_tcp(80, 1, 0, SYN, b"")[14..].to_vec();
    for _ in 0..3 {
        p = ipip(&p);
    }
    let mut f = eth(0x0800, &ipv4(VTEP_A, VTEP_B, 4, &p));
    fix_checksums(&mut f);
    let v = r.send(&f);
    assert!(matches!(v, Verdict::Drop(_)), "{v:?}");
    assert_eq!(r.i.stats.tunnels.too_deep, 1);
    // Three deep is inspected: the allowed HTTP SYN passes.
    let mut p = inner_tcp(80, 5, 0, SYN, b"")[14..].to_vec();
    for _ in 0..2 {
        p = ipip(&p);
    }
    let v = r.send(&eth(0x0800, &ipv4(VTEP_A, VTEP_B, 4, &p)));
    assert_eq!(v, Verdict::Forward);
    // Without workloads nothing is policed: forwarded, still counted.
    let mut free = Run::new(None);
    assert_eq!(free.send(&gre(0x0800, None, None, false, &frag)), Verdict::Forward);
    let recs = free.records();
    assert_eq!(free.i.stats.tunnels.inner_fragments, 1, "{:?} {recs:?}", free.i.stats.tunnels);
}

#[test]
fn a_malformed_inner_packet_follows_the_malformed_policy() {
    let mut r = Run::new(None);
    let mut inner = inner_tcp(80, 1, 0, SYN, b"");
    inner[14] = 0x44; // IHL 4
    let v = r.send(&to_b(&inner));
    assert!(matches!(v, Verdict::Drop(_)), "{v:?}");
    assert_eq!(r.i.stats.tunnels.malformed, 1);
    assert_eq!(r.i.stats.malformed[Malformed::Ipv4Header as usize], 1);
}

#[test]
fn a_geneve_flow_whose_directions_use_two_vnis_is_one_session() {
    // OVN-style: the logical datapath in the VNI differs per direction.
    let geneve = |src, dst, vni: u32, inner: &[u8]| {
        let v = (vni << 8).to_be_bytes();
        let mut g = vec![0, 0, 0x65, 0x58, v[0], v[1], v[2], v[3]];
        g.extend_from_slice(inner);
        outer_udp(src, dst, 6081, &g)
    };
    let mut r = Run::new(None);
    r.send(&geneve(VTEP_A, VTEP_B, 10, &inner_tcp(22, 100, 0, SYN, b"")));
    r.send(&geneve(VTEP_B, VTEP_A, 11, &inner_tcp_back(22, 500, 101, SYN | ACK, b"")));
    let recs = r.records();
    let inner: Vec<_> = recs.iter().filter(|r| r.ip_proto == 6).collect();
    assert_eq!(inner.len(), 1, "{recs:#?}");
    assert_eq!((inner[0].packets_to_server, inner[0].packets_to_client, inner[0].state.as_str()), (1, 1, "syn_received"));
}

#[test]
fn a_fragmented_datagram_over_pppoe_is_reassembled_with_its_pppoe_length() {
    // A DNS query split in two IPv4 fragments, each in a PPPoE session frame.
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in ["a-rather-long-label-to-split-over-two-fragments", "example", "com"] {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    let whole = eth(0x0800, &ipv4(POD_A, POD_B, 17, &udp(40000, 53, &q)));
    let frags = crate::defrag::tests::frag4(&whole, 77, &[(0, 40), (40, whole.len() - 14 - 20 - 40)]);
    let mut r = Run::new(None);
    for f in &frags {
        let ip = &f[14..];
        let mut p = f[..12].to_vec();
        p.extend_from_slice(&[0x88, 0x64, 0x11, 0x00, 0x00, 0x07]);
        p.extend_from_slice(&((ip.len() + 2) as u16).to_be_bytes());
        p.extend_from_slice(&[0x00, 0x21]);
        p.extend_from_slice(ip);
        r.send(&p);
    }
    let recs = r.records();
    assert_eq!(recs.len(), 1, "{recs:#?}");
    assert_eq!((recs[0].app.as_str(), recs[0].server_port, recs[0].packets_to_server), ("dns", 53, 1));
}

#[test]
fn a_flood_that_fills_the_tables_tunnel_ends_turns_off_no_check() {
    // A table that keeps 4 distinct tunnel ends; VXLAN from 16 spoofed outer sources, each
    // carrying an allowed inner SYN, fills them.
    let sides = crate::session::SideSizes { wide: 64, tunnel_ends: 4 };
    let table = crate::session::SessionTable::with_sides(1024, Timeouts::default(), sides);
    let mut r = Run { i: Inspector::with_table(table, MalformedPolicy::Drop, Default::default()), now: 1_000_000_000 };
    r.i.set_policy(policy(PROTECT_INNER), 1);
    for n in 0..16u8 {
        let inner = eth(0x0800, &ipv4(POD_A, POD_B, 6, &tcp(30000 + u16::from(n), 80, 1, 0, SYN, 65535, None, b"")));
        assert_eq!(r.send(&vxlan([198, 18, 7, n], VTEP_B, 42, &inner)), Verdict::Forward);
    }
    let st = r.i.sessions.stats().side;
    assert_eq!((st.tunnel_ends, st.tunnel_ends_full), (4, 12));
    // The denied inner flow is still denied in protect mode, through a tunnel whose ends found
    // no room; its record says so, without the tunnel object.
    let v = r.send(&to_b(&inner_tcp(6379, 1, 0, SYN, b"")));
    assert!(matches!(v, Verdict::Drop(_)), "{v:?}");
    let v = r.send(&to_b(&inner_tcp(6379, 2, 0, ACK | PSH, b"*1\r\n$4\r\nPING\r\n")));
    assert!(matches!(v, Verdict::Drop(_)), "{v:?}");
    let recs = r.records();
    let redis = recs.iter().find(|r| r.server_port == 6379).unwrap();
    assert_eq!((redis.verdict.as_deref(), redis.packets_dropped_to_server), (Some("denied"), 2));
    assert!(redis.tunnel.is_none());
    assert_eq!(r.i.sessions.stats().side.tunnel_ends_full, 13);
    // An allowed inner HTTP exchange is inspected as ever (app from content).
    let v = r.http(80, &to_b, &to_a);
    assert!(v.iter().all(|v| *v == Verdict::Forward), "{v:?}");
    let recs = r.records();
    let http = recs.iter().find(|r| r.server_port == 80 && r.client_port == 40000).unwrap();
    assert_eq!(http.app, "http");
    // Once the flood's sessions are gone, the ends are free again.
    r.i.end_sessions(|_| true, 0);
    assert_eq!(r.i.sessions.stats().side.tunnel_ends, 0);
    r.send(&to_b(&inner_tcp(80, 100, 0, SYN, b"")));
    let recs = r.records();
    assert_eq!(recs.iter().find(|r| r.ip_proto == 6).and_then(|r| r.tunnel.as_ref()).map(|t| t.outer_client.as_str()), Some("198.18.0.1"));
}
