use super::*;
use crate::app::testutil::{
    check_every_prefix, check_every_split, corpus_flows, feed_all, feed_segments, l7_of, Flow,
    check_rejects_other_corpus, Rng,
};

/// Flows of the TLS captures, keyed by client port.
fn flow(file: &str, client_port: u16) -> Flow {
    corpus_flows(file).into_iter().find(|f| f.client_port == client_port).expect("flow in corpus")
}

/// Feeds both directions whole.
fn parse_flow(f: &Flow) -> Map<String, Value> {
    let mut t = Tls::default();
    feed_all(&mut t, Dir::ToServer, &f.to_server);
    feed_all(&mut t, Dir::ToClient, &f.to_client);
    l7_of(&t)
}

/// A ClientHello re-cut into records of at most `frag` bytes (same handshake bytes).
fn refragment(hello_record: &[u8], frag: usize) -> Vec<u8> {
    let hdr = &hello_record[..RECORD_HEADER];
    let len = usize::from(u16::from_be_bytes([hdr[3], hdr[4]]));
    let body = &hello_record[RECORD_HEADER..RECORD_HEADER + len];
    let mut out = Vec::new();
    for chunk in body.chunks(frag) {
        out.extend_from_slice(&hdr[..3]);
        out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

#[test]
fn tls13_curl_h2_fields() {
    let m = parse_flow(&flow("tls.pcap", 46616));
    assert_eq!(m["version"], "TLSv1.3");
    assert_eq!(m["record_version"], "TLSv1.0");
    assert_eq!(m["client_version"], "TLSv1.2");
    assert_eq!(m["server_version"], "TLSv1.2");
    assert_eq!(m["sni"], "www.example.test");
    assert_eq!(m["alpn"], serde_json::json!(["h2", "http/1.1"]));
    assert_eq!(m["alpn_count"], 2);
    assert_eq!(m["cipher_suites"], 31);
    assert_eq!(m["cipher"], "TLS_AES_256_GCM_SHA384");
    assert_eq!(m["cipher_id"], 0x1302);
    // curl 7.88.1 / OpenSSL 3.0: the widely published curl JA3.
    assert_eq!(m["ja3_hash"], "0149f47eabf9a20d0893e2a44e5a6323");
    assert_eq!(
        m["ja3"],
        "771,4866-4867-4865-49196-49200-159-52393-52392-52394-49195-49199-158-49188-49192-107-49187-49191-103-49162-49172-57-49161-49171-51-157-156-61-60-53-47-255,0-11-10-16-22-23-49-13-43-45-51-21,29-23-30-25-24-256-257-258-259-260,0-1-2"
    );
    assert_eq!(m["ja4"], "t13d3112h2_e8f1e7e78f70_b26ce05bbdd6");
    assert_eq!(m["records_to_server"], 7);
    assert_eq!(m["records_to_client"], 16);
    assert!(m.get("violation").is_none());
}

#[test]
fn tls13_without_sni_and_http11() {
    let m = parse_flow(&flow("tls.pcap", 46652));
    assert!(m.get("sni").is_none());
    assert_eq!(m["ja4"], "t13i3111h2_e8f1e7e78f70_b26ce05bbdd6");
    assert_eq!(m["version"], "TLSv1.3");
    let m = parse_flow(&flow("tls.pcap", 46632));
    assert_eq!(m["sni"], "api.example.test");
    assert_eq!(m["alpn"], serde_json::json!(["http/1.1"]));
    assert_eq!(m["ja4"], "t13d3112h1_e8f1e7e78f70_b26ce05bbdd6");
}

#[test]
fn tls12_fields() {
    let m = parse_flow(&flow("tls12.pcap", 46654));
    assert_eq!(m["version"], "TLSv1.2");
    assert_eq!(m["cipher"], "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384");
    assert_eq!(m["cipher_suites"], 28);
    assert_eq!(m["server_alpn"], "http/1.1");
    assert_eq!(m["ja4"], "t12d2807h1_d943125447b4_a44c6288192a");
    assert_eq!(m["records_to_server"], 7);
    assert_eq!(m["records_to_client"], 8);
    let m = parse_flow(&flow("tls12.pcap", 46666));
    assert!(m.get("alpn").is_none());
    assert_eq!(m["ja4"], "t12d280700_d943125447b4_e7e480e5a997");
}

#[test]
fn captured_segmentation_gives_the_same_result() {
    for file in ["tls.pcap", "tls12.pcap"] {
        for f in corpus_flows(file) {
            let mut t = Tls::default();
            for d in [Dir::ToServer, Dir::ToClient] {
                let segs: Vec<&[u8]> =
                    f.segments.iter().filter(|(sd, _)| *sd == d).map(|(_, s)| s.as_slice()).collect();
                feed_segments(&mut t, d, &segs);
            }
            assert_eq!(l7_of(&t), parse_flow(&f), "{file} {}", f.client_port);
        }
    }
}

#[test]
fn every_prefix_and_every_split() {
    for file in ["tls.pcap", "tls12.pcap"] {
        for f in corpus_flows(file) {
            for (d, bytes) in [(Dir::ToServer, &f.to_server), (Dir::ToClient, &f.to_client)] {
                let head = &bytes[..bytes.len().min(2600)];
                check_every_prefix::<Tls>(d, head);
                check_every_split::<Tls>(d, head);
            }
        }
    }
}

#[test]
fn hello_spanning_records_is_reassembled() {
    let f = flow("tls.pcap", 46616);
    let whole = parse_flow(&Flow { to_client: Vec::new(), ..f.clone() });
    let hello_len = RECORD_HEADER + usize::from(u16::from_be_bytes([f.to_server[3], f.to_server[4]]));
    for frag in [1usize, 3, 100, 511] {
        let mut bytes = refragment(&f.to_server[..hello_len], frag);
        let hello_records = bytes.len();
        bytes.extend_from_slice(&f.to_server[hello_len..]);
        let mut t = Tls::default();
        feed_all(&mut t, Dir::ToServer, &bytes);
        let mut m = l7_of(&t);
        let extra = m["records_to_server"].as_u64().unwrap() - whole["records_to_server"].as_u64().unwrap();
        assert_eq!(extra as usize, 512usize.div_ceil(frag) - 1);
        m.insert("records_to_server".into(), whole["records_to_server"].clone());
        assert_eq!(m, whole, "fragments of {frag}");
        if frag >= 100 {
            check_every_split::<Tls>(Dir::ToServer, &bytes[..hello_records]);
            check_every_prefix::<Tls>(Dir::ToServer, &bytes[..hello_records]);
        }
    }
}

#[test]
fn oversized_hello_and_records_are_rejected() {
    // Handshake length above MAX_HANDSHAKE in a spanning hello.
    let mut t = Tls::default();
    let r = t.feed(Dir::ToServer, b"\x16\x03\x01\x00\x04\x01\xff\xff\xff");
    assert_eq!(r, Feed::Consumed(9));
    assert_eq!(l7_of(&t)["violation"], true);
    assert_eq!(l7_of(&t)["records_to_server"], 1);
    // Record length above 2^14 + 2048.
    assert_eq!(parser::record_header(b"\x17\x03\x03\x48\x01"), Parse::Invalid);
    assert!(matches!(parser::record_header(b"\x17\x03\x03\x48\x00"), Parse::Ok(..)));
    // An oversized record is still probed as a hello (the parser reports the overflow), and
    // rejected when what follows is no hello.
    assert_eq!(Tls::probe(Dir::ToServer, b"\x16\x03\x01\x49"), Probe::NeedMore);
    assert_eq!(Tls::probe(Dir::ToServer, b"\x16\x03\x01\x49\x00\x01\x00\x49\x00\x03\x03"), Probe::Match);
    assert_eq!(Tls::probe(Dir::ToServer, b"\x16\x03\x01\x49\x00\x17\x00"), Probe::NoMatch);
    assert_eq!(Tls::probe(Dir::ToClient, b"\x15\x03\x01\x49\x00\x02"), Probe::NoMatch);
    assert_eq!(Tls::probe(Dir::ToServer, b"\x17\x03\x01\x49\x00\x01"), Probe::NoMatch);
}

#[test]
fn gap_inside_a_record_keeps_counting_else_direction_stops() {
    let f = flow("tls12.pcap", 46654);
    let mut t = Tls::default();
    feed_all(&mut t, Dir::ToServer, &f.to_server);
    // An application-data record header, then a gap inside its payload, then the next record.
    let mut bytes = b"\x17\x03\x03\x00\x20".to_vec();
    bytes.extend_from_slice(&[0u8; 8]);
    assert_eq!(t.feed(Dir::ToServer, &bytes), Feed::Consumed(13));
    t.gap(Dir::ToServer, 24);
    assert_eq!(t.feed(Dir::ToServer, b"\x17\x03\x03\x00\x01\x00"), Feed::Consumed(6));
    assert_eq!(l7_of(&t)["records_to_server"], 9);
    // A gap across a record boundary loses the framing for that direction only.
    t.gap(Dir::ToServer, 100);
    assert_eq!(t.feed(Dir::ToServer, b"garbage"), Feed::Consumed(7));
    assert_eq!(l7_of(&t)["records_to_server"], 9);
    // A gap during the hello of the other direction: both lost, parsing is done.
    t.gap(Dir::ToClient, 10);
    assert_eq!(t.feed(Dir::ToClient, b"\x17"), Feed::Done);
}

/// After the hellos, bytes where a record must start that are no record header are not TLS.
#[test]
fn non_records_after_the_hello_are_invalid() {
    let f = flow("tls12.pcap", 46654);
    for bad in [&b"*1\r\n$4\r\nPING\r\n"[..], b"GET / HTTP/1.1\r\n", b"\x17\x03\x03\xff\xff"] {
        let mut t = Tls::default();
        let mut bytes = f.to_server.clone();
        let n = bytes.len();
        bytes.extend_from_slice(bad);
        assert_eq!(t.feed(Dir::ToServer, &bytes), Feed::Invalid { consumed: n }, "{bad:?}");
    }
    // A record header split across segments is still TLS.
    let mut t = Tls::default();
    assert_eq!(t.feed(Dir::ToServer, &f.to_server), Feed::Consumed(f.to_server.len()));
    assert!(matches!(t.feed(Dir::ToServer, b"\x17\x03"), Feed::Need { consumed: 0, .. }));
}

#[test]
fn plaintext_alert_is_reported() {
    let f = flow("tls12.pcap", 46654);
    let mut t = Tls::default();
    feed_all(&mut t, Dir::ToServer, &f.to_server[..RECORD_HEADER + 0xdb]);
    let sh_len = RECORD_HEADER + usize::from(u16::from_be_bytes([f.to_client[3], f.to_client[4]]));
    feed_all(&mut t, Dir::ToClient, &f.to_client[..sh_len]);
    assert_eq!(t.feed(Dir::ToClient, b"\x15\x03\x03\x00"), Feed::Need { consumed: 0, at_least: 5 });
    assert_eq!(t.feed(Dir::ToClient, b"\x15\x03\x03\x00\x02\x02"), Feed::Need { consumed: 0, at_least: 7 });
    assert_eq!(t.feed(Dir::ToClient, b"\x15\x03\x03\x00\x02\x02\x28"), Feed::Consumed(7));
    let m = l7_of(&t);
    assert_eq!(m["alert_level"], 2);
    assert_eq!(m["alert"], 40);
    assert_eq!(Tls::probe(Dir::ToClient, b"\x15\x03\x03\x00\x02\x02\x28"), Probe::Match);
    assert_eq!(Tls::probe(Dir::ToServer, b"\x15\x03\x03\x00\x02\x02\x28"), Probe::NoMatch);
}

#[test]
fn probe_rejects_other_protocols() {
    for line in [&b"HELLO\r\n"[..], b"EHLO x\r\n", b"+OK\r\n", b"{\"a\":1}\n", b"GET / HTTP/1.1\r\n", b"SSH-2.0-x\r\n"] {
        for d in [Dir::ToServer, Dir::ToClient] {
            assert_eq!(Tls::probe(d, line), Probe::NoMatch, "{line:?}");
        }
    }
    check_rejects_other_corpus::<Tls>(&["tls"]);
}

#[test]
fn random_bytes_do_not_match_and_mutations_never_panic() {
    let mut rng = Rng(0x5eed_1234);
    let mut matched = 0;
    for _ in 0..20_000 {
        let len = (rng.next() % 64) as usize;
        let b: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if Tls::probe(Dir::ToServer, &b) == Probe::Match {
            matched += 1;
        }
    }
    assert_eq!(matched, 0);
    let seeds: Vec<(Dir, Vec<u8>)> = ["tls.pcap", "tls12.pcap"]
        .iter()
        .flat_map(|file| corpus_flows(file))
        .flat_map(|f| {
            [(Dir::ToServer, f.to_server[..f.to_server.len().min(1500)].to_vec()), (Dir::ToClient, f.to_client[..f.to_client.len().min(3000)].to_vec())]
        })
        .collect();
    for i in 0..3000 {
        let (d, seed) = &seeds[i % seeds.len()];
        let mut b = seed.clone();
        for _ in 0..1 + rng.next() % 8 {
            let at = (rng.next() as usize) % b.len();
            match rng.next() % 3 {
                0 => b[at] = rng.next() as u8,
                1 => b[at] ^= 0x80,
                _ => b.truncate(at),
            }
            if b.is_empty() {
                break;
            }
        }
        let _ = Tls::probe(*d, &b);
        let mut t = Tls::default();
        let cut = if b.is_empty() { 0 } else { (rng.next() as usize) % b.len() };
        feed_segments(&mut t, *d, &[&b[..cut], &b[cut..]]);
        let _ = l7_of(&t);
    }
}

/// The ClientHello record of `f` with a padding extension (RFC 7685) of `pad` bytes added.
fn padded_hello(hello_record: &[u8], pad: usize) -> Vec<u8> {
    let mut h = hello_record[RECORD_HEADER..].to_vec();
    // type(1) len(3) version(2) random(32) session id, cipher suites, compression methods.
    let mut p = 4 + 2 + 32;
    p += 1 + usize::from(h[p]);
    p += 2 + usize::from(u16::from_be_bytes([h[p], h[p + 1]]));
    p += 1 + usize::from(h[p]);
    let ext_len = usize::from(u16::from_be_bytes([h[p], h[p + 1]])) + 4 + pad;
    h[p..p + 2].copy_from_slice(&(ext_len as u16).to_be_bytes());
    h.extend_from_slice(&[0, 21]);
    h.extend_from_slice(&(pad as u16).to_be_bytes());
    h.extend(std::iter::repeat_n(0u8, pad));
    let body = (h.len() - 4) as u32;
    h[1..4].copy_from_slice(&body.to_be_bytes()[1..]);
    let mut rec = hello_record[..3].to_vec();
    rec.extend_from_slice(&(h.len() as u16).to_be_bytes());
    rec.extend_from_slice(&h);
    rec
}

#[test]
fn a_hello_cut_into_one_byte_records_is_walked_once() {
    // A ClientHello (padded to several sizes) cut into records of one handshake byte each, n
    // bytes of records in all (about 3 KiB to 60 KiB), trickled one byte per segment: the same
    // fields as the hello in one record, and the record headers read stay <= c * n (every
    // record used to walk all the records before it: n²/2).
    let f = flow("tls.pcap", 46616);
    let hello_len = RECORD_HEADER + usize::from(u16::from_be_bytes([f.to_server[3], f.to_server[4]]));
    let mut ratios = Vec::new();
    for pad in [0usize, 1500, 4500, 9500] {
        let one = padded_hello(&f.to_server[..hello_len], pad);
        let mut whole = Tls::default();
        feed_all(&mut whole, Dir::ToServer, &one);
        let want = l7_of(&whole);
        assert!(want.contains_key("ja4") && !want.contains_key("violation"), "{want:?}");
        let bytes = refragment(&one, 1);
        let mut t = Tls::default();
        let segs: Vec<&[u8]> = bytes.chunks(1).collect();
        assert!(feed_segments(&mut t, Dir::ToServer, &segs).is_empty());
        let mut m = l7_of(&t);
        assert_eq!(m["records_to_server"].as_u64(), Some((one.len() - RECORD_HEADER) as u64));
        m.insert("records_to_server".into(), want["records_to_server"].clone());
        assert_eq!(m, want, "pad {pad}");
        let r = t.examined() as f64 / bytes.len() as f64;
        assert!(r <= 4.0, "pad {pad}: {} for {}", t.examined(), bytes.len());
        ratios.push(r);
    }
    assert!(ratios[3] <= ratios[0] * 1.5 + 0.1, "{ratios:?}");
}

// Threats (issue 15): tls_heartbleed, tls_cipher_overflow, tls_sslv2_sslv3, tls_1_0, tls_1_1.

use crate::app::testutil::{benign_captures, capture_flows, feed_interleaved, interleaved, pcap_flows};
use crate::detect::{ThreatId, Threats};

/// Every detection a parser's `Threats` kept: the first, then the first of each further kind.
fn found(t: &Threats) -> Vec<(ThreatId, Dir, &'static str)> {
    let mut v: Vec<_> = t.first.iter().map(|f| (f.id, f.dir, f.reason)).collect();
    v.extend(t.others.iter().flatten().copied());
    v
}

/// The TCP flows of a capture that TLS detection would pick (either direction's first bytes).
fn tls_flows(flows: Vec<Flow>) -> Vec<Flow> {
    flows
        .into_iter()
        .filter(|f| f.proto == 6)
        .filter(|f| Tls::probe(Dir::ToServer, &f.to_server) == Probe::Match || Tls::probe(Dir::ToClient, &f.to_client) == Probe::Match)
        .collect()
}

/// Both directions of `f` in captured order through a fresh parser, in pieces of `piece` bytes.
fn run(f: &Flow, piece: usize) -> Tls {
    let mut t = Tls::default();
    feed_interleaved(&mut t, &interleaved(f), piece);
    t
}

use ThreatId::{Tls1_0, Tls1_1, TlsCipherOverflow, TlsHeartbleed, TlsSslv2Sslv3};
const C: Dir = Dir::ToServer;
const S: Dir = Dir::ToClient;

/// Each threat capture (`dp/tests/captures/threats/`, README there) with what the parser must
/// record on its TLS flow, and how many detections in all.
#[allow(clippy::type_complexity)]
const CAPTURES: &[(&str, &[(ThreatId, Dir, &str)], u32)] = &[
    // Zeek's test traces: a published Heartbleed scanner against a vulnerable server.
    ("zeek-heartbleed.pcap", &[(TlsHeartbleed, C, "padding_under_16")], 1),
    ("zeek-heartbleed-success.pcap", &[(TlsHeartbleed, C, "padding_under_16")], 1),
    // An encrypted heartbeat of plausible length, never answered: nothing to judge.
    ("zeek-heartbleed-encrypted.pcap", &[], 0),
    (
        "zeek-heartbleed-encrypted-success.pcap",
        &[(Tls1_0, S, "server_negotiates_tls1_0"), (TlsHeartbleed, S, "encrypted_short_request_answered")],
        2,
    ),
    (
        "zeek-heartbleed-encrypted-short.pcap",
        &[(Tls1_0, S, "server_negotiates_tls1_0"), (TlsHeartbleed, S, "encrypted_short_request_answered")],
        2,
    ),
    // An SSL 2.0 client and server: the CLIENT-HELLO, then the SERVER-HELLO (same kind).
    ("zeek-ssl-v2.pcap", &[(TlsSslv2Sslv3, C, "sslv2_client_hello")], 2),
    ("zeek-tls1_1.pcap", &[(Tls1_1, S, "server_negotiates_tls1_1")], 1),
    ("zeek-signed_certificate_timestamp_tls1_0.pcap", &[(Tls1_0, S, "server_negotiates_tls1_0")], 1),
    // Recorded here (make-tls-ssh.sh): openssl s_client / s_server.
    ("openssl-tls1.pcap", &[(Tls1_0, S, "server_negotiates_tls1_0")], 1),
    ("openssl-tls1_1.pcap", &[(Tls1_1, S, "server_negotiates_tls1_1")], 1),
    ("sslv3-hello-openssl.pcap", &[(TlsSslv2Sslv3, C, "client_offers_sslv3")], 1),
    ("sslv3-session.pcap", &[(TlsSslv2Sslv3, C, "client_offers_sslv3")], 2),
    (
        "sslv2-format-hello-openssl.pcap",
        &[(TlsSslv2Sslv3, C, "sslv2_format_client_hello"), (Tls1_0, S, "server_negotiates_tls1_0")],
        2,
    ),
    ("sslv2-hello-openssl.pcap", &[(TlsSslv2Sslv3, C, "sslv2_client_hello")], 1),
    (
        "heartbleed-openssl.pcap",
        &[(Tls1_1, S, "server_negotiates_tls1_1"), (TlsHeartbleed, C, "payload_length_over_record")],
        2,
    ),
    ("overflow-ciphers-openssl.pcap", &[(TlsCipherOverflow, C, "cipher_suites_overflow_hello")], 1),
    ("overflow-record-openssl.pcap", &[(TlsCipherOverflow, C, "record_length_over_limit")], 1),
    (
        "overflow-sslv2-openssl.pcap",
        &[(TlsSslv2Sslv3, C, "sslv2_format_client_hello"), (TlsCipherOverflow, C, "sslv2_lists_overflow_record")],
        2,
    ),
];

#[test]
fn threat_captures_raise_their_threats_however_segmented() {
    for (file, want, count) in CAPTURES {
        let flows = tls_flows(capture_flows(&format!("threats/{file}")));
        assert_eq!(flows.len(), 1, "{file}: one TLS flow");
        let f = &flows[0];
        let whole = run(f, usize::MAX);
        assert_eq!(found(&whole.threats), want.to_vec(), "{file}");
        assert_eq!(whole.threats.count, *count, "{file}");
        // Trickled byte by byte and in odd pieces: the same detections.
        for piece in [1, 7, 100] {
            assert_eq!(run(f, piece).threats, whole.threats, "{file} in pieces of {piece}");
        }
    }
}

#[test]
fn sslv2_sessions_are_followed_as_tls() {
    // Zeek's SSL 2.0 capture: CLIENT-HELLO, SERVER-HELLO, then SSLv2 records both ways.
    let f = &tls_flows(capture_flows("threats/zeek-ssl-v2.pcap"))[0];
    assert_eq!(Tls::probe(Dir::ToServer, &f.to_server), Probe::Match);
    assert_eq!(Tls::probe(Dir::ToClient, &f.to_client), Probe::Match);
    let m = l7_of(&run(f, usize::MAX));
    assert_eq!(m["version"], "SSLv2");
    assert_eq!(m["record_version"], "SSLv2");
    assert_eq!(m["client_version"], "SSLv2");
    assert_eq!(m["cipher_suites"], 7);
    assert!(m.get("violation").is_none(), "{m:?}");
    // Every byte was framed by SSLv2 record headers.
    assert!(m["records_to_server"].as_u64().unwrap() >= 2 && m["records_to_client"].as_u64().unwrap() >= 2, "{m:?}");
    check_every_prefix::<Tls>(Dir::ToServer, &f.to_server);
    check_every_split::<Tls>(Dir::ToServer, &f.to_server);
    check_every_prefix::<Tls>(Dir::ToClient, &f.to_client[..f.to_client.len().min(1500)]);
    // The version-3-compatible form answered by OpenSSL with TLS 1.0: TLS records after it.
    let f = &tls_flows(capture_flows("threats/sslv2-format-hello-openssl.pcap"))[0];
    let m = l7_of(&run(f, 1));
    assert_eq!((m["version"].as_str(), m["client_version"].as_str()), (Some("TLSv1.0"), Some("TLSv1.0")));
    assert!(m.get("violation").is_none(), "{m:?}");
}

/// Benign TLS captures kept beside the threat captures (Zeek's test traces of real clients and
/// servers negotiating TLS 1.2 and 1.3; README there).
const BENIGN_ZEEK: &[&str] = &[
    "zeek-hrr.pcap",
    "zeek-chrome-1250-tls-x25519-kyber.pcap",
    "zeek-tls13_wolfssl.pcap",
    "zeek-ecdhe.pcap",
    "zeek-ecdsa-cert.pcap",
    "zeek-dhe.pcap",
];

#[test]
fn benign_tls_raises_none_of_these_threats() {
    // Every TLS flow of the corpus (TLS 1.2 and 1.3 from curl, wget, python), of the other kept
    // captures and of the benign Zeek traces (HelloRetryRequest, a post-quantum key share
    // spanning records, wolfSSL, DHE, ECDSA certificates), whole and trickled.
    let mut per_file = std::collections::BTreeMap::new();
    for p in benign_captures(BENIGN_ZEEK) {
        for f in tls_flows(pcap_flows(&p)) {
            for piece in [usize::MAX, 1] {
                let t = run(&f, piece);
                assert!(t.threats.is_empty(), "{}: {:?}", p.display(), found(&t.threats));
            }
            *per_file.entry(p.file_name().unwrap().to_string_lossy().into_owned()).or_insert(0) += 1;
        }
    }
    for name in ["tls.pcap", "tls12.pcap"].iter().chain(BENIGN_ZEEK) {
        assert!(per_file.contains_key(*name), "no TLS flow in {name}: {per_file:?}");
    }
}

/// The TLS 1.2 session of the corpus up to both ChangeCipherSpecs (client, server), as
/// (client bytes, server bytes) cut at the first record after each CCS.
fn tls12_to_encrypted() -> (Flow, usize, usize) {
    let f = flow("tls12.pcap", 46654);
    let after_ccs = |b: &[u8]| {
        let mut off = 0;
        loop {
            let Parse::Ok(h, _) = parser::record_header(&b[off..]) else { panic!("record at {off}") };
            off += RECORD_HEADER + h.len;
            if h.content_type == CT_CHANGE_CIPHER_SPEC {
                return off;
            }
        }
    };
    let (c, s) = (after_ccs(&f.to_server), after_ccs(&f.to_client));
    (f, c, s)
}

fn heartbeat_record(len: usize) -> Vec<u8> {
    let mut r = vec![CT_HEARTBEAT, 3, 3];
    r.extend_from_slice(&(len as u16).to_be_bytes());
    r.extend(std::iter::repeat_n(0xa5, len));
    r
}

#[test]
fn encrypted_heartbeats_are_judged_by_their_lengths() {
    // The corpus TLS 1.2 session negotiated ECDHE-RSA-AES256-GCM-SHA384: a valid encrypted
    // heartbeat is at least 19 + 8 + 16 = 43 bytes.
    let (f, c, s) = tls12_to_encrypted();
    let session = |client_hb: &[usize], server_hb: &[usize]| {
        let mut t = Tls::default();
        feed_all(&mut t, Dir::ToServer, &f.to_server[..c]);
        feed_all(&mut t, Dir::ToClient, &f.to_client[..s]);
        for &l in client_hb {
            assert_eq!(t.feed(Dir::ToServer, &heartbeat_record(l)), Feed::Consumed(5 + l));
        }
        let answer: Vec<u8> = server_hb.iter().flat_map(|&l| heartbeat_record(l)).collect();
        let segs: Vec<&[u8]> = answer.chunks(1).collect();
        feed_segments(&mut t, Dir::ToClient, &segs);
        t
    };
    // Too short (32 < 43) and answered: the answer leaks.
    let t = session(&[32], &[48]);
    assert_eq!(found(&t.threats), [(TlsHeartbleed, Dir::ToClient, "encrypted_short_request_answered")]);
    assert!(t.threats.first.unwrap().evidence.contains("32 bytes (valid: 43 or more)"), "{:?}", t.threats.first);
    // Too short and not answered (a patched peer discards it): nothing to judge.
    assert!(session(&[32], &[]).threats.is_empty());
    // A plausible request answered with about its length: a heartbeat.
    assert!(session(&[60], &[60]).threats.is_empty());
    assert!(session(&[60], &[60 + HB_ANSWER_SLACK]).threats.is_empty());
    // A plausible request answered with 64 KiB in four records: a leak.
    let t = session(&[60], &[16408, 16408, 16408, 16408]);
    assert_eq!(found(&t.threats), [(TlsHeartbleed, Dir::ToClient, "encrypted_answer_exceeds_request")]);
    assert_eq!(t.threats.count, 1);
    // The server's own heartbeat request after the client's was answered is a new request.
    let mut t = session(&[60], &[60]);
    t.feed(Dir::ToClient, b"\x17\x03\x03\x00\x10");
    t.feed(Dir::ToClient, &[0; 16]);
    t.feed(Dir::ToClient, &heartbeat_record(60));
    t.feed(Dir::ToServer, &heartbeat_record(60));
    assert!(t.threats.is_empty());
}

#[test]
fn plaintext_heartbeats_must_carry_their_payload_and_padding() {
    let (f, _, _) = tls12_to_encrypted();
    let sh_len = RECORD_HEADER + usize::from(u16::from_be_bytes([f.to_client[3], f.to_client[4]]));
    let hello_len = RECORD_HEADER + usize::from(u16::from_be_bytes([f.to_server[3], f.to_server[4]]));
    let hb = |kind: u8, payload_length: u16, record_len: usize| {
        let mut r = vec![CT_HEARTBEAT, 3, 3];
        r.extend_from_slice(&(record_len as u16).to_be_bytes());
        let mut body = vec![kind];
        body.extend_from_slice(&payload_length.to_be_bytes());
        body.resize(record_len, 0x41);
        r.extend_from_slice(&body[..record_len]);
        r
    };
    for (dir, record, want) in [
        (Dir::ToServer, hb(1, 0x4000, 3), Some("payload_length_over_record")),
        (Dir::ToServer, hb(1, 0x4000, 1), Some("payload_length_over_record")),
        (Dir::ToServer, hb(1, 16, 3 + 16), Some("padding_under_16")),
        (Dir::ToServer, hb(1, 16, 3 + 16 + 15), Some("padding_under_16")),
        (Dir::ToServer, hb(1, 16, 3 + 16 + 16), None),
        (Dir::ToServer, hb(2, 0x4000, 3), None),
        (Dir::ToServer, hb(1, 0, 0), None),
        // Servers send requests too (reverse Heartbleed against clients).
        (Dir::ToClient, hb(1, 0xffff, 3), Some("payload_length_over_record")),
    ] {
        for piece in [usize::MAX, 1] {
            let mut chunks = vec![(Dir::ToServer, f.to_server[..hello_len].to_vec()), (Dir::ToClient, f.to_client[..sh_len].to_vec())];
            chunks.push((dir, record.clone()));
            let mut t = Tls::default();
            feed_interleaved(&mut t, &chunks, piece);
            let got = found(&t.threats);
            let expect: Vec<_> = want.iter().map(|r| (TlsHeartbleed, dir, *r)).collect();
            assert_eq!(got, expect, "{record:02x?} in pieces of {piece}");
        }
    }
}

#[test]
fn minimum_heartbeat_lengths_per_cipher_suite() {
    // Lower bounds of a valid heartbeat's record (19 bytes of plaintext) under each protection;
    // the CBC ones agree with the table Zeek's heartbleed script carries.
    for (version, cipher, want) in [
        (0x0302, 0x002f, Some(64)), // TLS_RSA_WITH_AES_128_CBC_SHA, TLS 1.1: IV 16 + 48
        (0x0301, 0x002f, Some(48)), // TLS 1.0: no explicit IV
        (0x0303, 0x003d, Some(80)), // AES_256_CBC_SHA256
        (0x0303, 0xc028, Some(96)), // ECDHE_RSA_WITH_AES_256_CBC_SHA384
        (0x0302, 0x000a, Some(48)), // RSA_WITH_3DES_EDE_CBC_SHA: 8-byte blocks
        (0x0301, 0x000a, Some(40)),
        (0x0301, 0x0088, Some(48)), // DHE_RSA_WITH_CAMELLIA_256_CBC_SHA (Zeek's encrypted-short)
        (0x0303, 0xc030, Some(43)), // ECDHE_RSA_WITH_AES_256_GCM_SHA384: nonce 8 + tag 16
        (0x0303, 0xcca8, Some(35)), // ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256: tag 16
        (0x0303, 0xc0a0, Some(35)), // RSA_WITH_AES_128_CCM_8: nonce 8 + tag 8
        (0x0303, 0xc09c, Some(43)), // RSA_WITH_AES_128_CCM
        (0x0301, 0x0005, Some(39)), // RSA_WITH_RC4_128_SHA
        (0x0301, 0x0004, Some(35)), // RSA_WITH_RC4_128_MD5
        (0x0303, 0x0002, Some(39)), // RSA_WITH_NULL_SHA
        (0x0303, 0xfefe, Some(35)), // unknown suite: the least any suite adds
        (0x0304, 0x1301, None),     // TLS 1.3: no heartbeat on the wire
    ] {
        assert_eq!(parser::min_heartbeat_record(version, Some(cipher), 0), want, "{version:04x} {cipher:04x}");
    }
    assert_eq!(parser::min_heartbeat_record(0x0303, None, 0), Some(35));
    assert_eq!(parser::min_heartbeat_record(0x0301, Some(0x002f), 1), None, "compressed");
}

/// The ClientHello record of the corpus TLS 1.3 session and the ServerHello record.
fn hello_records() -> (Vec<u8>, Vec<u8>) {
    let f = flow("tls.pcap", 46616);
    let rec = |b: &[u8]| b[..RECORD_HEADER + usize::from(u16::from_be_bytes([b[3], b[4]]))].to_vec();
    (rec(&f.to_server), rec(&f.to_client))
}

/// Offsets in a hello record: session id length, cipher suites length (client) or cipher
/// (server), compression, extensions length.
fn hello_offsets(rec: &[u8], client: bool) -> (usize, usize, usize, usize) {
    let sid = RECORD_HEADER + 4 + 2 + 32;
    let cs = sid + 1 + usize::from(rec[sid]);
    let comp = if client { cs + 2 + usize::from(u16::from_be_bytes([rec[cs], rec[cs + 1]])) } else { cs + 2 };
    let ext = if client { comp + 1 + usize::from(rec[comp]) } else { comp + 1 };
    (sid, cs, comp, ext)
}

fn threats_of(dir: Dir, bytes: &[u8]) -> Vec<(ThreatId, Dir, &'static str)> {
    let mut whole = Tls::default();
    feed_all(&mut whole, dir, bytes);
    let mut trickled = Tls::default();
    let segs: Vec<&[u8]> = bytes.chunks(1).collect();
    feed_segments(&mut trickled, dir, &segs);
    assert_eq!(whole.threats, trickled.threats, "{bytes:02x?}");
    found(&whole.threats)
}

/// A hello record cut before its extensions (`ext`: offset of their length), lengths fixed.
fn without_extensions(rec: &[u8], ext: usize) -> Vec<u8> {
    let mut r = rec[..ext].to_vec();
    let body = (r.len() - RECORD_HEADER - 4) as u32;
    r[RECORD_HEADER + 1..RECORD_HEADER + 4].copy_from_slice(&body.to_be_bytes()[1..]);
    let len = (r.len() - RECORD_HEADER) as u16;
    r[3..5].copy_from_slice(&len.to_be_bytes());
    r
}

#[test]
fn hello_lengths_overflowing_their_container() {
    let (ch, sh) = hello_records();
    assert!(threats_of(Dir::ToServer, &ch).is_empty());
    assert!(threats_of(Dir::ToClient, &sh).is_empty());
    let (sid, cs, comp, ext) = hello_offsets(&ch, true);
    // A hello without extensions (as SSL 3.0 clients send) is no overflow.
    assert!(threats_of(Dir::ToServer, &without_extensions(&ch, ext)).is_empty());
    let set16 = |r: &mut Vec<u8>, at: usize, v: usize| r[at..at + 2].copy_from_slice(&(v as u16).to_be_bytes());
    let cases: Vec<(Vec<u8>, &str)> = vec![
        ({ let mut r = ch.clone(); r[sid] = 33; r }, "session_id_over_32"),
        ({ let mut r = ch.clone(); set16(&mut r, cs, 0xfff0); r }, "cipher_suites_overflow_hello"),
        ({ let mut r = without_extensions(&ch, ext); r[comp] = 2; r }, "compression_methods_overflow_hello"),
        ({ let mut r = ch.clone(); let l = u16::from_be_bytes([r[ext], r[ext + 1]]); set16(&mut r, ext, usize::from(l) + 1); r }, "extensions_overflow_hello"),
        // The first extension's length past the extensions block.
        ({ let mut r = ch.clone(); set16(&mut r, ext + 4, 0xff00); r }, "extension_overflows_extensions"),
        // The handshake length past the record, followed by a ChangeCipherSpec record.
        ({ let mut r = ch.clone(); r[RECORD_HEADER + 2] += 1; r.extend_from_slice(b"\x14\x03\x03\x00\x01\x01"); r }, "handshake_length_overflows_records"),
        // More than any ClientHello's fields can describe (2^24 - 1).
        ({ let mut r = ch.clone(); r[RECORD_HEADER + 1..RECORD_HEADER + 4].copy_from_slice(&[0xff; 3]); r }, "handshake_length_over_hello_maximum"),
        // A record over 2^14 + 2048.
        ({ let mut r = ch.clone(); set16(&mut r, 3, 0xffff); r }, "record_length_over_limit"),
    ];
    for (bytes, reason) in &cases {
        assert_eq!(Tls::probe(Dir::ToServer, bytes), Probe::Match, "{reason}");
        assert_eq!(threats_of(Dir::ToServer, bytes), [(TlsCipherOverflow, Dir::ToServer, *reason)], "{reason}");
    }
    // The ServerHello's session id and extensions.
    let (sid, _, _, ext) = hello_offsets(&sh, false);
    for (bytes, reason) in [
        ({ let mut r = sh.clone(); r[sid] = 0xff; r }, "session_id_over_32"),
        ({ let mut r = sh.clone(); set16(&mut r, ext, 0x1000); r }, "extensions_overflow_hello"),
    ] {
        assert_eq!(threats_of(Dir::ToClient, &bytes), [(TlsCipherOverflow, Dir::ToClient, reason)], "{reason}");
    }
    // A hello spanning records: the overflow of its first part is reported before the rest
    // arrives (an attacker cannot hold it back by never completing the hello).
    let mut r = ch.clone();
    r[RECORD_HEADER + 1..RECORD_HEADER + 4].copy_from_slice(&[0, 0x40, 0]);
    set16(&mut r, cs, 0x7000);
    let mut t = Tls::default();
    assert!(matches!(t.feed(Dir::ToServer, &r), Feed::Need { .. }));
    assert_eq!(found(&t.threats), [(TlsCipherOverflow, Dir::ToServer, "cipher_suites_overflow_hello")]);
}

#[test]
fn a_record_over_the_limit_after_the_hello_is_reported_and_invalid() {
    let f = flow("tls12.pcap", 46654);
    let mut t = Tls::default();
    let mut bytes = f.to_server.clone();
    let n = bytes.len();
    bytes.extend_from_slice(b"\x17\x03\x03\xff\xff");
    assert_eq!(t.feed(Dir::ToServer, &bytes), Feed::Invalid { consumed: n });
    assert_eq!(found(&t.threats), [(TlsCipherOverflow, Dir::ToServer, "record_length_over_limit")]);
    // 4 bytes already prove it; 2^14 + 2048 itself is allowed.
    let mut t = Tls::default();
    assert_eq!(t.feed(Dir::ToServer, &[&f.to_server[..], b"\x17\x03\x03\x49"].concat()), Feed::Invalid { consumed: n });
    assert_eq!(t.threats.count, 1);
    let mut t = Tls::default();
    assert_eq!(t.feed(Dir::ToServer, &[&f.to_server[..], b"\x17\x03\x03\x48\x00"].concat()), Feed::Consumed(n + 5));
    assert!(t.threats.is_empty());
}

#[test]
fn negotiated_and_offered_versions() {
    let (ch, sh) = hello_records();
    // The TLS 1.3 ServerHello says 0x0303 in legacy_version, 0x0304 in supported_versions.
    let sv = sh.windows(4).position(|w| w == [0x00, 0x2b, 0x00, 0x02]).expect("supported_versions") + 4;
    assert_eq!(&sh[sv..sv + 2], &[3, 4]);
    for (v, want) in [(0x0301u16, Some((Tls1_0, "server_negotiates_tls1_0"))), (0x0302, Some((Tls1_1, "server_negotiates_tls1_1"))), (0x0300, Some((TlsSslv2Sslv3, "server_negotiates_sslv3"))), (0x0303, None)] {
        let mut r = sh.clone();
        r[sv..sv + 2].copy_from_slice(&v.to_be_bytes());
        let got = threats_of(Dir::ToClient, &r);
        assert_eq!(got, want.iter().map(|(id, re)| (*id, Dir::ToClient, *re)).collect::<Vec<_>>(), "{v:04x}");
    }
    // A legacy_version of 1.0 beside supported_versions 1.3 negotiates 1.3.
    let mut r = sh.clone();
    r[RECORD_HEADER + 4..RECORD_HEADER + 6].copy_from_slice(&[3, 1]);
    assert!(threats_of(Dir::ToClient, &r).is_empty());
    // A client offering 3.0 in legacy_version but 1.3 in supported_versions offers 1.3; with
    // supported_versions listing only 3.0 (and GREASE) it offers 3.0.
    let mut r = ch.clone();
    r[RECORD_HEADER + 4..RECORD_HEADER + 6].copy_from_slice(&[3, 0]);
    assert!(threats_of(Dir::ToServer, &r).is_empty());
    let at = r.windows(3).position(|w| w == [0x00, 0x2b, 0x00]).unwrap() + 4;
    let n = usize::from(r[at]);
    for i in 0..n / 2 {
        let v: [u8; 2] = if i == 0 { [0x0a, 0x0a] } else { [3, 0] };
        r[at + 1 + 2 * i..at + 3 + 2 * i].copy_from_slice(&v);
    }
    assert_eq!(threats_of(Dir::ToServer, &r), [(TlsSslv2Sslv3, Dir::ToServer, "client_offers_sslv3")]);
}

#[test]
fn sslv2_hello_forms() {
    // SSL 2.0 specification CLIENT-HELLO: 2-byte header, type 1, version, three lengths.
    let hello = |version: u16, cs: u16, sid: u16, ch: u16, body: usize| {
        let mut b = vec![0u8; 2 + 9 + body];
        let len = (9 + body) as u16 | 0x8000;
        b[..2].copy_from_slice(&len.to_be_bytes());
        b[2] = 1;
        for (i, v) in [version, cs, sid, ch].iter().enumerate() {
            b[3 + 2 * i..5 + 2 * i].copy_from_slice(&v.to_be_bytes());
        }
        b
    };
    let ok = hello(0x0301, 9, 0, 16, 25);
    assert_eq!(Tls::probe(Dir::ToServer, &ok), Probe::Match);
    assert_eq!(threats_of(Dir::ToServer, &ok), [(TlsSslv2Sslv3, Dir::ToServer, "sslv2_format_client_hello")]);
    check_every_prefix::<Tls>(Dir::ToServer, &ok);
    assert_eq!(threats_of(Dir::ToServer, &hello(0x0002, 9, 16, 32, 57)), [(TlsSslv2Sslv3, Dir::ToServer, "sslv2_client_hello")]);
    assert_eq!(
        threats_of(Dir::ToServer, &hello(0x0301, 0x0300, 0, 16, 25)),
        [(TlsSslv2Sslv3, Dir::ToServer, "sslv2_format_client_hello"), (TlsCipherOverflow, Dir::ToServer, "sslv2_lists_overflow_record")]
    );
    // Not SSLv2 hellos: other message type, version, cipher spec length not a multiple of 3,
    // session id of another length, challenge out of 16..=32, record shorter than the fields.
    for bad in [
        { let mut b = ok.clone(); b[2] = 2; b },
        hello(0x0200, 9, 0, 16, 25),
        hello(0x0304, 9, 0, 16, 25),
        hello(0x0301, 10, 0, 16, 25),
        hello(0x0301, 0, 0, 16, 25),
        hello(0x0301, 9, 8, 16, 25),
        hello(0x0301, 9, 0, 15, 25),
        hello(0x0301, 9, 0, 33, 25),
        { let mut b = hello(0x0301, 9, 0, 16, 0); b[1] = 8; b },
    ] {
        assert_eq!(Tls::probe(Dir::ToServer, &bad), Probe::NoMatch, "{bad:02x?}");
    }
    // An SSLv2 SERVER-HELLO to the client, and its lists overflowing the record.
    let f = &tls_flows(capture_flows("threats/zeek-ssl-v2.pcap"))[0];
    let mut sh = f.to_client[..parser::V2_SERVER_HELLO_HEAD].to_vec();
    assert_eq!(Tls::probe(Dir::ToClient, &sh), Probe::Match);
    assert_eq!(Tls::probe(Dir::ToServer, &sh), Probe::NoMatch);
    sh[7..9].copy_from_slice(&[0xff, 0xff]);
    assert_eq!(
        threats_of(Dir::ToClient, &sh),
        [(TlsSslv2Sslv3, Dir::ToClient, "server_negotiates_sslv2"), (TlsCipherOverflow, Dir::ToClient, "sslv2_server_hello_overflows_record")]
    );
}

#[test]
fn mutated_threat_captures_never_panic() {
    let mut rng = Rng(0x7e11_a5ed);
    let seeds: Vec<(Dir, Vec<u8>)> = CAPTURES
        .iter()
        .flat_map(|(file, _, _)| tls_flows(capture_flows(&format!("threats/{file}"))))
        .flat_map(|f| [(Dir::ToServer, f.to_server[..f.to_server.len().min(1500)].to_vec()), (Dir::ToClient, f.to_client[..f.to_client.len().min(3000)].to_vec())])
        .filter(|(_, b)| !b.is_empty())
        .collect();
    for i in 0..4000 {
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
        let _ = Tls::probe(*d, &b);
        let mut t = Tls::default();
        let cut = (rng.next() as usize) % b.len();
        feed_segments(&mut t, *d, &[&b[..cut], &b[cut..]]);
        let _ = l7_of(&t);
    }
}
