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
