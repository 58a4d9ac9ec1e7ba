use super::*;
use crate::app::testutil::{
    check_every_prefix, check_every_split, corpus_flows, feed_all, feed_segments, l7_of, Flow,
    check_rejects_other_corpus, Rng,
};

fn flow(client_port: u16) -> Flow {
    corpus_flows("ssh.pcap").into_iter().find(|f| f.client_port == client_port).expect("flow in corpus")
}

fn parse(f: &Flow, server_first: bool) -> Map<String, Value> {
    let mut t = Ssh::default();
    if server_first {
        feed_all(&mut t, Dir::ToClient, &f.to_client);
        feed_all(&mut t, Dir::ToServer, &f.to_server);
    } else {
        feed_all(&mut t, Dir::ToServer, &f.to_server);
        feed_all(&mut t, Dir::ToClient, &f.to_client);
    }
    l7_of(&t)
}

/// Bytes of `b` up to and including the packet carrying NEWKEYS (the cleartext part).
fn cleartext(b: &[u8]) -> &[u8] {
    let Parse::Ok(_, mut off) = parser::line(b) else { panic!("no identification") };
    loop {
        let Parse::Ok(payload, n) = parser::packet(&b[off..]) else { panic!("bad packet at {off}") };
        off += n;
        if payload[0] == MSG_NEWKEYS {
            return &b[..off];
        }
    }
}

#[test]
fn default_openssh_session() {
    for server_first in [false, true] {
        let m = parse(&flow(56012), server_first);
        assert_eq!(m["client_version"], "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u10");
        assert_eq!(m["server_version"], "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u10");
        assert_eq!(m["client_software"], "OpenSSH_9.2p1");
        assert_eq!(m["server_software"], "OpenSSH_9.2p1");
        assert_eq!(m["client_proto"], "2.0");
        assert_eq!(m["kex"], "sntrup761x25519-sha512");
        assert_eq!(m["host_key"], "ssh-ed25519");
        assert_eq!(m["cipher_c2s"], "chacha20-poly1305@openssh.com");
        assert_eq!(m["cipher_s2c"], "chacha20-poly1305@openssh.com");
        // KEXINIT, KEX_ECDH_INIT / REPLY, NEWKEYS.
        assert_eq!(m["packets_to_server"], 3);
        assert_eq!(m["packets_to_client"], 3);
        assert_eq!(m["encrypted"], true);
        assert!(m.get("violation").is_none());
    }
}

#[test]
fn legacy_algorithms_session() {
    for server_first in [false, true] {
        let m = parse(&flow(56020), server_first);
        assert_eq!(m["kex"], "diffie-hellman-group14-sha256");
        assert_eq!(m["host_key"], "rsa-sha2-256");
        assert_eq!(m["cipher_c2s"], "aes128-ctr");
        assert_eq!(m["cipher_s2c"], "aes128-ctr");
    }
}

#[test]
fn done_after_both_newkeys() {
    let f = flow(56018);
    let mut t = Ssh::default();
    let c = cleartext(&f.to_server);
    let s = cleartext(&f.to_client);
    assert_eq!(t.feed(Dir::ToServer, c), Feed::Consumed(c.len()));
    assert_eq!(t.feed(Dir::ToServer, &f.to_server[c.len()..]), Feed::Consumed(f.to_server.len() - c.len()));
    assert_eq!(t.feed(Dir::ToClient, s), Feed::Consumed(s.len()));
    assert_eq!(t.feed(Dir::ToClient, &f.to_client[s.len()..]), Feed::Done);
}

#[test]
fn captured_segmentation_gives_the_same_result() {
    for f in corpus_flows("ssh.pcap") {
        let mut t = Ssh::default();
        for d in [Dir::ToServer, Dir::ToClient] {
            let segs: Vec<&[u8]> = f.segments.iter().filter(|(sd, _)| *sd == d).map(|(_, s)| s.as_slice()).collect();
            feed_segments(&mut t, d, &segs);
        }
        assert_eq!(l7_of(&t), parse(&f, false), "{}", f.client_port);
    }
}

#[test]
fn every_prefix_and_every_split() {
    for f in corpus_flows("ssh.pcap") {
        for (d, bytes) in [(Dir::ToServer, &f.to_server), (Dir::ToClient, &f.to_client)] {
            let head = cleartext(bytes);
            check_every_prefix::<Ssh>(d, head);
            check_every_split::<Ssh>(d, head);
        }
    }
}

#[test]
fn server_lines_before_identification() {
    let f = flow(56012);
    let mut b = b"Welcome to a test server\r\nauthorised use only\r\n".to_vec();
    b.extend_from_slice(&f.to_client);
    let mut t = Ssh::default();
    feed_all(&mut t, Dir::ToServer, &f.to_server);
    feed_all(&mut t, Dir::ToClient, &b);
    assert_eq!(l7_of(&t), parse(&f, false));
    check_every_split::<Ssh>(Dir::ToClient, cleartext(&f.to_client));
    // Not accepted from the client.
    let mut t = Ssh::default();
    feed_all(&mut t, Dir::ToServer, &b);
    assert_eq!(l7_of(&t)["violation"], true);
    // Unbounded lines are rejected.
    let mut t = Ssh::default();
    assert_eq!(t.feed(Dir::ToClient, &[b'x'; 300]), Feed::Consumed(300));
    assert_eq!(l7_of(&t)["violation"], true);
}

#[test]
fn oversized_and_malformed_packets() {
    assert_eq!(parser::packet(b"\x00\x00\x88\xb9"), Parse::Invalid); // 35001
    assert_eq!(parser::packet(b"\x00\x00\x88\xb8"), Parse::Incomplete(5));
    assert_eq!(parser::packet(b"\x00\x00\x00\x0c\x03"), Parse::Invalid); // padding < 4
    assert_eq!(parser::packet(b"\x00\x00\x00\x05\x04"), Parse::Invalid); // no payload
    assert_eq!(parser::packet(b"\x00\x00\x00\x0c\x0a\x15"), Parse::Incomplete(16));
    let mut t = Ssh::default();
    assert_eq!(t.feed(Dir::ToServer, b"SSH-2.0-x\r\n\xff\xff\xff\xff\x04"), Feed::Invalid { consumed: 11 });
    assert_eq!(l7_of(&t)["violation"], true);
    // A client whose first line is no identification (the server's banner decided SSH).
    let mut t = Ssh::default();
    assert_eq!(t.feed(Dir::ToClient, b"SSH-2.0-OpenSSH_9.2\r\n"), Feed::Consumed(21));
    assert_eq!(t.feed(Dir::ToServer, b"*1\r\n$4\r\nPING\r\n"), Feed::Invalid { consumed: 0 });
    // Lines before the server's identification are SSH (RFC 4253 §4.2).
    let mut t = Ssh::default();
    assert_eq!(t.feed(Dir::ToClient, b"hello there\r\nSSH-2.0-x\r\n"), Feed::Consumed(24));
}

#[test]
fn gap_stops_the_direction() {
    let f = flow(56012);
    let mut t = Ssh::default();
    feed_all(&mut t, Dir::ToServer, &f.to_server[..41]);
    t.gap(Dir::ToServer, 100);
    assert_eq!(t.feed(Dir::ToServer, &f.to_server[141..200]), Feed::Consumed(59));
    t.gap(Dir::ToClient, 10);
    assert_eq!(t.feed(Dir::ToClient, &f.to_client[10..]), Feed::Done);
    let m = l7_of(&t);
    assert!(m.get("kex").is_none());
    assert_eq!(m["client_software"], "OpenSSH_9.2p1");
}

#[test]
fn probe_prefixes_and_other_clients() {
    assert_eq!(Ssh::probe(Dir::ToServer, b""), Probe::NeedMore);
    assert_eq!(Ssh::probe(Dir::ToServer, b"SSH-2.0"), Probe::NeedMore);
    assert_eq!(Ssh::probe(Dir::ToServer, b"SSH-2.0-"), Probe::NeedMore);
    for id in [&b"SSH-2.0-PuTTY_Release_0.78\r\n"[..], b"SSH-1.99-Cisco-1.25\r\n", b"SSH-2.0-dropbear_2022.83\r\n", b"SSH-2.0-Go\n"] {
        assert_eq!(Ssh::probe(Dir::ToClient, id), Probe::Match, "{id:?}");
        assert!(matches!(parser::line(id), Parse::Ok(Line::Ident(_), _)));
    }
    assert_eq!(Ssh::probe(Dir::ToServer, b"SSH-\r\n"), Probe::NoMatch);
    assert_eq!(Ssh::probe(Dir::ToServer, b"SSH-2.0- x"), Probe::NoMatch);
    assert_eq!(Ssh::probe(Dir::ToServer, b"SSH-x"), Probe::NoMatch);
}

#[test]
fn probe_rejects_other_protocols() {
    for line in [&b"HELLO\r\n"[..], b"EHLO x\r\n", b"+OK\r\n", b"{\"a\":1}\n", b"GET / HTTP/1.1\r\n", b"\x16\x03\x01\x02\x00\x01"] {
        for d in [Dir::ToServer, Dir::ToClient] {
            assert_eq!(Ssh::probe(d, line), Probe::NoMatch, "{line:?}");
        }
    }
    check_rejects_other_corpus::<Ssh>(&["ssh"]);
}

#[test]
fn random_bytes_do_not_match_and_mutations_never_panic() {
    let mut rng = Rng(0xc0ff_ee11);
    for _ in 0..20_000 {
        let len = (rng.next() % 64) as usize;
        let b: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        assert_ne!(Ssh::probe(Dir::ToServer, &b), Probe::Match);
    }
    let seeds: Vec<(Dir, Vec<u8>)> = corpus_flows("ssh.pcap")
        .into_iter()
        .flat_map(|f| [(Dir::ToServer, cleartext(&f.to_server).to_vec()), (Dir::ToClient, cleartext(&f.to_client).to_vec())])
        .collect();
    for i in 0..3000 {
        let (d, seed) = &seeds[i % seeds.len()];
        let mut b = seed.clone();
        for _ in 0..1 + rng.next() % 8 {
            if b.is_empty() {
                break;
            }
            let at = (rng.next() as usize) % b.len();
            match rng.next() % 3 {
                0 => b[at] = rng.next() as u8,
                1 => b[at] ^= 0x80,
                _ => b.truncate(at),
            }
        }
        let _ = Ssh::probe(*d, &b);
        let mut t = Ssh::default();
        let cut = if b.is_empty() { 0 } else { (rng.next() as usize) % b.len() };
        feed_segments(&mut t, *d, &[&b[..cut], &b[cut..]]);
        let _ = l7_of(&t);
        // The KEXINIT decoder alone on mutated packets.
        let _ = parser::kexinit(&b);
    }
}

#[test]
fn trickled_lines_are_examined_once() {
    // A server's MAX_PRE_LINES lines of 250 bytes before its identification, then the real
    // server bytes, trickled one byte per segment: the same record as whole, and the bytes
    // examined searching for line ends stay <= 2 n (they were up to n²/2 per line).
    let f = corpus_flows("ssh.pcap").into_iter().find(|f| !f.to_client.is_empty()).expect("a flow");
    let mut bytes = Vec::new();
    for i in 0..parser::MAX_PRE_LINES {
        let mut l = format!("banner line {i} ").into_bytes();
        l.resize(parser::MAX_LINE - 5, b'.');
        l.extend_from_slice(b"\r\n");
        bytes.extend_from_slice(&l);
    }
    let lines = bytes.len();
    bytes.extend_from_slice(&f.to_client);
    let mut whole = Ssh::default();
    feed_all(&mut whole, Dir::ToClient, &bytes);
    let m = l7_of(&whole);
    assert!(m.contains_key("server_version") && !m.contains_key("violation"), "{m:?}");
    let mut t = Ssh::default();
    let segs: Vec<&[u8]> = bytes.chunks(1).collect();
    feed_segments(&mut t, Dir::ToClient, &segs);
    assert_eq!(l7_of(&t), m);
    assert!(t.examined() <= 2 * lines as u64 + 512, "{} for {lines}", t.examined());
    // A NUL in a later segment of a line is still a violation.
    let mut t = Ssh::default();
    feed_segments(&mut t, Dir::ToClient, &[b"some text", b" more", b"\0", b" end\r\n"]);
    assert_eq!(l7_of(&t)["violation"], true);
}

// ssh_v1 (issue 15).

use crate::app::testutil::{benign_captures, capture_flows, feed_interleaved, interleaved, pcap_flows};
use crate::detect::{ThreatId, Threats};

fn found(t: &Threats) -> Vec<(ThreatId, Dir, &'static str)> {
    let mut v: Vec<_> = t.first.iter().map(|f| (f.id, f.dir, f.reason)).collect();
    v.extend(t.others.iter().flatten().copied());
    v
}

/// The TCP flows SSH detection would pick (either direction's first bytes).
fn ssh_flows(flows: Vec<Flow>) -> Vec<Flow> {
    flows
        .into_iter()
        .filter(|f| f.proto == 6)
        .filter(|f| Ssh::probe(Dir::ToServer, &f.to_server) == Probe::Match || Ssh::probe(Dir::ToClient, &f.to_client) == Probe::Match)
        .collect()
}

/// Both directions of `f` in captured order through a fresh parser, in pieces of `piece` bytes.
fn run(f: &Flow, piece: usize) -> Ssh {
    let mut t = Ssh::default();
    feed_interleaved(&mut t, &interleaved(f), piece);
    t
}

#[test]
fn protocol_1_sessions_raise_ssh_v1() {
    // Zeek's trace: OpenSSH 6.6 built with SSH-1 support, both ends "SSH-1.5" (the server
    // speaks first), the server's SSH-1 PUBLIC_KEY packet, then the client closes. Recorded
    // here: a "1.99" server and a "1.5" client (tls_ssh_peers.py): PUBLIC_KEY, SESSION_KEY, one
    // encrypted packet.
    for (file, port, reason, ident, packets) in [
        ("zeek-ssh1-ssh2-fingerprints.pcap", 2222, "client_and_server_protocol_1", "SSH-1.5-OpenSSH_6.6", (0, 1)),
        ("ssh1-compat.pcap", 22, "client_protocol_1_server_compatible", "SSH-1.5-PuTTY_Release_0.52", (1, 2)),
    ] {
        let flows = ssh_flows(capture_flows(&format!("threats/{file}")));
        let f = flows.iter().find(|f| f.server_port == port).expect("the SSH-1 flow");
        let t = run(f, usize::MAX);
        assert_eq!(found(&t.threats), [(ThreatId::SshV1, Dir::ToServer, reason)], "{file}");
        assert_eq!(t.threats.first.unwrap().evidence.as_str(), ident);
        // The SSH-1 packets are framed by their lengths: no violation, each counted.
        let m = l7_of(&t);
        assert!(m.get("violation").is_none(), "{file}: {m:?}");
        assert_eq!((m["packets_to_server"].as_u64(), m["packets_to_client"].as_u64()), (Some(packets.0), Some(packets.1)), "{file}");
        for piece in [1, 5, 64] {
            let p = run(f, piece);
            assert_eq!((p.threats, l7_of(&p)), (t.threats, m.clone()), "{file} in pieces of {piece}");
        }
        // Its other flows (SSH 2.0) raise nothing.
        for g in flows.iter().filter(|g| g.server_port != port) {
            assert!(run(g, usize::MAX).threats.is_empty(), "{file} port {}", g.server_port);
        }
    }
}

#[test]
fn benign_ssh_and_failed_protocol_1_raise_nothing() {
    // OpenSSH's ssh (2.0 only) against a 1.5-only server: no common protocol, nothing
    // negotiated (the client closes: "Protocol major versions differ"). A Cisco client
    // announcing "1.99" to a 2.0 server speaks 2.0. The corpus' OpenSSH sessions, Zeek's
    // benign SSH traces and every other kept capture.
    let extra = ["ssh1-server-openssh-client.pcap", "zeek-ssh_version_199.pcap", "zeek-single-conn.pcap", "zeek-server-pre-banner-data.pcap", "zeek-ssh_kex_curve25519.pcap"];
    let mut per_file = std::collections::BTreeMap::new();
    for p in benign_captures(&extra) {
        for f in ssh_flows(pcap_flows(&p)) {
            for piece in [usize::MAX, 1] {
                let t = run(&f, piece);
                assert!(t.threats.is_empty(), "{}: {:?}", p.display(), found(&t.threats));
            }
            *per_file.entry(p.file_name().unwrap().to_string_lossy().into_owned()).or_insert(0) += 1;
        }
    }
    for name in ["ssh.pcap"].iter().chain(&extra) {
        assert!(per_file.contains_key(*name), "no SSH flow in {name}: {per_file:?}");
    }
    // The 1.99 client's session is parsed as SSH 2.0 to its NEWKEYS.
    let f = &ssh_flows(capture_flows("threats/zeek-ssh_version_199.pcap"))[0];
    let m = l7_of(&run(f, usize::MAX));
    assert_eq!((m["client_proto"].as_str(), m["server_proto"].as_str()), (Some("1.99"), Some("2.0")));
    assert!(m.get("violation").is_none() && m.contains_key("kex"), "{m:?}");
}

#[test]
fn which_identification_pairs_negotiate_protocol_1() {
    // RFC 4253 §5.1: "1.99" speaks both; any other 1.x only protocol 1.
    use parser::Protocol::*;
    for (p, want) in [("2.0", V2), ("1.99", Compat), ("1.5", V1), ("1.3", V1), ("1", V1), ("3.0", Other), ("12.0", Other)] {
        assert_eq!(parser::protocol(p.as_bytes()), want, "{p}");
    }
    let both = Some("client_and_server_protocol_1");
    for (client, server, want) in [
        ("1.5", "1.5", both),
        ("1.3", "1.5", both),
        ("1.5", "1.99", Some("client_protocol_1_server_compatible")),
        ("1.99", "1.5", Some("server_protocol_1_client_compatible")),
        ("2.0", "1.5", None),
        ("1.5", "2.0", None),
        ("1.99", "1.99", None),
        ("1.99", "2.0", None),
        ("2.0", "1.99", None),
        ("2.0", "2.0", None),
        ("3.0", "1.5", None),
    ] {
        let c = format!("SSH-{client}-client_1\r\n");
        let s = format!("SSH-{server}-server_1\r\n");
        for server_first in [false, true] {
            let mut t = Ssh::default();
            let order = if server_first { [(Dir::ToClient, &s), (Dir::ToServer, &c)] } else { [(Dir::ToServer, &c), (Dir::ToClient, &s)] };
            for (d, line) in order {
                assert_eq!(t.feed(d, line.as_bytes()), Feed::Consumed(line.len()));
            }
            // Recorded in the direction of the 1.x-only identification (the later one when both).
            let later = order[1].0;
            let expect: Vec<_> = want
                .map(|r| {
                    let dir = match r {
                        "client_protocol_1_server_compatible" => Dir::ToServer,
                        "server_protocol_1_client_compatible" => Dir::ToClient,
                        _ => later,
                    };
                    (ThreatId::SshV1, dir, r)
                })
                .into_iter()
                .collect();
            assert_eq!(found(&t.threats), expect, "{client} / {server}, server first: {server_first}");
        }
    }
}

#[test]
fn ssh1_packets_are_framed_by_their_lengths() {
    // packet_length counts type, data and CRC; 8 - length % 8 bytes of padding come first.
    assert_eq!(parser::v1_packet(b"\x00\x00\x00\x05"), Parse::Ok(4 + 3 + 5, 4));
    assert_eq!(parser::v1_packet(b"\x00\x00\x00\x08"), Parse::Ok(4 + 8 + 8, 4));
    assert_eq!(parser::v1_packet(b"\x00\x04\x00\x00"), Parse::Ok(4 + 8 + 262144, 4));
    assert_eq!(parser::v1_packet(b"\x00\x04\x00\x01"), Parse::Invalid);
    assert_eq!(parser::v1_packet(b"\x00\x00\x00\x04"), Parse::Invalid);
    assert_eq!(parser::v1_packet(b"\x00\x00\x00"), Parse::Incomplete(4));
    // After protocol 1 is negotiated, a packet length out of bounds is not SSH; a gap inside a
    // packet keeps the framing, one across packets loses it.
    let start = |t: &mut Ssh| {
        assert_eq!(t.feed(Dir::ToClient, b"SSH-1.99-s\n"), Feed::Consumed(11));
        assert_eq!(t.feed(Dir::ToServer, b"SSH-1.5-c\n"), Feed::Consumed(10));
    };
    let mut t = Ssh::default();
    start(&mut t);
    let pkt = [&b"\x00\x00\x00\x0d"[..], &[0u8; 3], &[2u8; 13]].concat();
    assert_eq!(t.feed(Dir::ToClient, &pkt), Feed::Consumed(20));
    assert_eq!(t.feed(Dir::ToClient, b"\x00\x10\x00\x00"), Feed::Invalid { consumed: 0 });
    assert_eq!(l7_of(&t)["violation"], true);
    let mut t = Ssh::default();
    start(&mut t);
    assert_eq!(t.feed(Dir::ToServer, &pkt[..10]), Feed::Consumed(10));
    assert!(t.gap(Dir::ToServer, 5));
    assert_eq!(t.feed(Dir::ToServer, &[&pkt[15..], &pkt[..]].concat()), Feed::Consumed(25));
    assert_eq!(l7_of(&t)["packets_to_server"], 2);
    assert!(!t.gap(Dir::ToServer, 100));
}

#[test]
fn mutated_ssh1_sessions_never_panic() {
    let mut rng = Rng(0x55e1_0001);
    let seeds: Vec<(Dir, Vec<u8>)> = ["threats/ssh1-compat.pcap", "threats/zeek-ssh1-ssh2-fingerprints.pcap"]
        .iter()
        .flat_map(|file| capture_flows(file))
        .flat_map(|f| [(Dir::ToServer, f.to_server), (Dir::ToClient, f.to_client)])
        .filter(|(_, b)| !b.is_empty())
        .collect();
    for i in 0..3000 {
        let (d, seed) = &seeds[i % seeds.len()];
        let mut b = seed.clone();
        for _ in 0..1 + rng.next() % 6 {
            let at = (rng.next() as usize) % b.len();
            match rng.next() % 3 {
                0 => b[at] = rng.next() as u8,
                1 => b[at] ^= 0x80,
                _ => b.truncate(at.max(1)),
            }
        }
        // The other end's identification first, so that the mutated side may speak SSH-1.
        let mut t = Ssh::default();
        let other = if *d == Dir::ToServer { Dir::ToClient } else { Dir::ToServer };
        let _ = t.feed(other, b"SSH-1.99-peer\r\n");
        let cut = (rng.next() as usize) % b.len();
        feed_segments(&mut t, *d, &[&b[..cut], &b[cut..]]);
        let _ = l7_of(&t);
    }
}
