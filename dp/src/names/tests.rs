//! The name table on its own, and the whole pipeline (DNS frames in, the verdict of a later
//! connection out) against each way an attacker could make Warden learn a name it should not.

use std::sync::Arc;

use super::*;
use crate::app::engine::EngineConfig;
use crate::inspect::{DropReason, FrameMeta, Inspector, MalformedPolicy, Verdict};
use crate::policy::Policy;
use crate::session::Timeouts;

const SEC: u64 = 1_000_000_000;
const C1: [u8; 4] = [198, 18, 0, 1];
const C2: [u8; 4] = [198, 18, 0, 3];
const RESOLVER: [u8; 4] = [198, 18, 0, 2];
const A: u16 = 1;
const CNAME: u16 = 5;
const AAAA: u16 = 28;

fn ip(a: [u8; 4]) -> IpAddr {
    IpAddr::from(a)
}

// ---------------------------------------------------------------------------------------
// DNS messages and frames, built byte by byte.

/// A name in wire form (uncompressed); labels may hold any bytes.
fn wire_name(labels: &[&[u8]]) -> Vec<u8> {
    let mut v = Vec::new();
    for l in labels {
        v.push(l.len() as u8);
        v.extend_from_slice(l);
    }
    v.push(0);
    v
}

fn dotted(name: &str) -> Vec<u8> {
    let labels: Vec<&[u8]> = name.split('.').map(str::as_bytes).collect();
    wire_name(&labels)
}

/// One answer record: owner, type, TTL (s), data (4 or 16 address bytes, or a name).
struct Rr(&'static str, u16, u32, Vec<u8>);

fn message(id: u16, flags: u16, qname: &[u8], qtype: u16, answers: &[Rr]) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&flags.to_be_bytes());
    m.extend_from_slice(&[0, 1]);
    m.extend_from_slice(&(answers.len() as u16).to_be_bytes());
    m.extend_from_slice(&[0, 0, 0, 0]);
    m.extend_from_slice(qname);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&[0, 1]);
    for Rr(owner, t, ttl, data) in answers {
        m.extend_from_slice(&dotted(owner));
        m.extend_from_slice(&t.to_be_bytes());
        m.extend_from_slice(&[0, 1]);
        m.extend_from_slice(&ttl.to_be_bytes());
        m.extend_from_slice(&(data.len() as u16).to_be_bytes());
        m.extend_from_slice(data);
    }
    m
}

fn query(id: u16, qname: &str, qtype: u16) -> Vec<u8> {
    message(id, 0x0100, &dotted(qname), qtype, &[])
}

fn response(id: u16, qname: &str, qtype: u16, answers: &[Rr]) -> Vec<u8> {
    message(id, 0x8180, &dotted(qname), qtype, answers)
}

fn a(owner: &'static str, ttl: u32, addr: [u8; 4]) -> Rr {
    Rr(owner, A, ttl, addr.to_vec())
}

fn cname(owner: &'static str, ttl: u32, target: &str) -> Rr {
    Rr(owner, CNAME, ttl, dotted(target))
}

fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00];
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x40, 0, 64, proto, 0, 0]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(l4);
    crate::wire::tests::fix_checksums(&mut f);
    f
}

fn udp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut l4 = Vec::new();
    l4.extend_from_slice(&sport.to_be_bytes());
    l4.extend_from_slice(&dport.to_be_bytes());
    l4.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    l4.extend_from_slice(&[0, 0]);
    l4.extend_from_slice(payload);
    ipv4(src, dst, 17, &l4)
}

fn syn(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
    let mut l4 = Vec::new();
    l4.extend_from_slice(&sport.to_be_bytes());
    l4.extend_from_slice(&dport.to_be_bytes());
    l4.extend_from_slice(&1000u32.to_be_bytes());
    l4.extend_from_slice(&0u32.to_be_bytes());
    l4.extend_from_slice(&[0x50, crate::wire::tcpflag::SYN, 0xff, 0xff, 0, 0, 0, 0]);
    ipv4(src, dst, 6, &l4)
}

// ---------------------------------------------------------------------------------------
// The pipeline under a protect-mode policy.

/// Clients 198.18.0.1 and .3 (protect) may use DNS anywhere, and TCP 443 to external
/// servers named under example.test.
const POLICY: &str = r#"
[[workload]]
id = "cli"
ips = ["198.18.0.1", "198.18.0.3"]
mode = "protect"

[[rule]]
id = 1
from = "cli"
to = "any"
ports = ["53"]
action = "allow"

[[rule]]
id = 2
from = "cli"
to = "external"
ip_proto = "tcp"
ports = ["443"]
fqdn = "*.example.test"
action = "allow"
"#;

fn compiled(text: &str) -> Arc<CompiledPolicy> {
    Arc::new(CompiledPolicy::compile(&Policy::from_toml(text).unwrap()).unwrap())
}

struct Pipe {
    i: Inspector,
    port: u16,
}

impl Pipe {
    fn new(table: &Arc<NameTable>) -> Pipe {
        Pipe::with_policy(table, POLICY)
    }

    fn with_policy(table: &Arc<NameTable>, policy: &str) -> Pipe {
        let engine = EngineConfig { max_sessions: 4096, ..EngineConfig::default() };
        let mut i = Inspector::with_engine(8192, Timeouts::default(), MalformedPolicy::Drop, engine);
        i.set_policy(compiled(policy), 1);
        i.share_names(table.clone());
        Pipe { i, port: 30000 }
    }

    fn frame(&mut self, f: &[u8], zone: u16, now_ns: u64) -> Verdict {
        self.i.process(f, FrameMeta::new(zone, 1, now_ns))
    }

    /// Sends `q` from `client` (a new source port) to the resolver and `r` back on the same
    /// flow; both must be forwarded.
    fn dns(&mut self, client: [u8; 4], q: &[u8], r: &[u8], now_ns: u64) {
        self.port += 1;
        let p = self.port;
        assert_eq!(self.frame(&udp(client, p, RESOLVER, 53, q), 0, now_ns), Verdict::Forward);
        assert_eq!(self.frame(&udp(RESOLVER, 53, client, p, r), 0, now_ns), Verdict::Forward);
    }

    /// Does a new TCP connection from `client` to `server`:443 in zone 0 get through?
    fn reaches(&mut self, client: [u8; 4], server: [u8; 4], now_ns: u64) -> bool {
        self.reaches_in(0, client, server, now_ns)
    }

    fn reaches_in(&mut self, zone: u16, client: [u8; 4], server: [u8; 4], now_ns: u64) -> bool {
        self.port += 1;
        match self.frame(&syn(client, self.port, server, 443), zone, now_ns) {
            Verdict::Forward => true,
            Verdict::Drop(DropReason::PolicyDenied) => false,
            v => panic!("unexpected verdict {v:?}"),
        }
    }
}

fn table() -> Arc<NameTable> {
    Arc::new(NameTable::default())
}

const WEB: [u8; 4] = [198, 18, 1, 10];
const OTHER: [u8; 4] = [198, 18, 1, 11];

#[test]
fn an_answer_to_the_flows_own_query_names_the_server_for_its_client() {
    let t = table();
    let mut p = Pipe::new(&t);
    assert!(!p.reaches(C1, WEB, SEC), "allowed before any answer");
    p.dns(C1, &query(7, "www.example.test", A), &response(7, "www.example.test", A, &[a("www.example.test", 60, WEB)]), SEC);
    assert!(p.reaches(C1, WEB, 2 * SEC));
    assert!(!p.reaches(C1, OTHER, 2 * SEC), "an address the answer did not give");
    // Case does not matter (RFC 4343), nor 0x20-randomised queries.
    p.dns(C1, &query(8, "WwW.ExAmple.TEST", A), &response(8, "WwW.ExAmple.TEST", A, &[a("WwW.ExAmple.TEST", 60, OTHER)]), SEC);
    assert!(p.reaches(C1, OTHER, 2 * SEC));
    let st = t.stats();
    assert_eq!((st.inserted, st.refused_unsolicited, st.refused_off_chain), (2, 0, 0), "{st:?}");
}

#[test]
fn a_response_with_another_transaction_id_teaches_nothing() {
    let t = table();
    let mut p = Pipe::new(&t);
    p.dns(C1, &query(7, "www.example.test", A), &response(8, "www.example.test", A, &[a("www.example.test", 60, WEB)]), SEC);
    assert!(!p.reaches(C1, WEB, 2 * SEC));
    assert_eq!((t.stats().inserted, t.stats().refused_unsolicited), (0, 1));
}

#[test]
fn a_response_to_another_question_teaches_nothing() {
    let t = table();
    let mut p = Pipe::new(&t);
    // Another name, another type, another class than the query's (same id, same flow).
    p.dns(C1, &query(7, "harmless.other.test", A), &response(7, "www.example.test", A, &[a("www.example.test", 60, WEB)]), SEC);
    p.dns(C1, &query(9, "www.example.test", AAAA), &response(9, "www.example.test", A, &[a("www.example.test", 60, WEB)]), SEC);
    let mut ch = response(10, "www.example.test", A, &[a("www.example.test", 60, WEB)]);
    let class_at = 12 + dotted("www.example.test").len() + 2;
    ch[class_at + 1] = 3; // CH
    p.dns(C1, &query(10, "www.example.test", A), &ch, SEC);
    assert!(!p.reaches(C1, WEB, 2 * SEC));
    assert_eq!((t.stats().inserted, t.stats().refused_unsolicited), (0, 3));
}

#[test]
fn addresses_off_the_cname_chain_teach_nothing() {
    let t = table();
    let mut p = Pipe::new(&t);
    const CHAINED: [u8; 4] = [198, 18, 1, 20];
    const OWNER_ELSEWHERE: [u8; 4] = [198, 18, 1, 21];
    const BESIDE_ALIAS: [u8; 4] = [198, 18, 1, 22];
    let r = response(
        11,
        "www.example.test",
        A,
        &[
            // The chain: www.example.test -> edge.cdn.test -> host.cdn.test.
            cname("www.example.test", 300, "edge.cdn.test"),
            // Owner is a name the rule matches, but not on the chain from the question.
            a("evil.example.test", 300, OWNER_ELSEWHERE),
            cname("edge.cdn.test", 300, "host.cdn.test"),
            // An alias has no other data (RFC 2181 §10.1).
            a("www.example.test", 300, BESIDE_ALIAS),
            a("host.cdn.test", 300, CHAINED),
        ],
    );
    p.dns(C1, &query(11, "www.example.test", A), &r, SEC);
    assert!(p.reaches(C1, CHAINED, 2 * SEC), "the end of the chain is named by the question");
    assert!(!p.reaches(C1, OWNER_ELSEWHERE, 2 * SEC));
    assert!(!p.reaches(C1, BESIDE_ALIAS, 2 * SEC));
    assert_eq!((t.stats().inserted, t.stats().refused_off_chain), (1, 2));
    // A chain that loops names nothing.
    let looped = response(
        12,
        "loop.example.test",
        A,
        &[cname("loop.example.test", 300, "b.example.test"), cname("b.example.test", 300, "loop.example.test"), a("b.example.test", 300, OTHER)],
    );
    p.dns(C1, &query(12, "loop.example.test", A), &looped, SEC);
    assert!(!p.reaches(C1, OTHER, 2 * SEC));
}

#[test]
fn an_answer_without_a_query_in_its_flow_teaches_nothing() {
    let t = table();
    let mut p = Pipe::new(&t);
    let q = query(7, "www.example.test", A);
    let r = response(7, "www.example.test", A, &[a("www.example.test", 60, WEB)]);
    // The flow's own query was another one: the answer to a query sent from another port
    // arrives on it.
    assert_eq!(p.frame(&udp(C1, 40001, RESOLVER, 53, &q), 0, SEC), Verdict::Forward);
    assert_eq!(p.frame(&udp(C1, 40002, RESOLVER, 53, &query(99, "other.example.test", A)), 0, SEC), Verdict::Forward);
    assert_eq!(p.frame(&udp(RESOLVER, 53, C1, 40002, &r), 0, SEC), Verdict::Forward);
    // A response opening a flow: no query went out on it (and the policy does not let the
    // resolver open flows to the client).
    p.frame(&udp(RESOLVER, 53, C1, 40003, &r), 0, SEC);
    assert!(!p.reaches(C1, WEB, 2 * SEC));
    // The client itself sending answer-shaped messages teaches nothing either.
    assert_eq!(p.frame(&udp(C1, 40004, RESOLVER, 53, &q), 0, SEC), Verdict::Forward);
    assert_eq!(p.frame(&udp(C1, 40004, RESOLVER, 53, &r), 0, SEC), Verdict::Forward);
    assert!(!p.reaches(C1, WEB, 2 * SEC));
    // Each query is answered once: a second answer to it (injected after the real one) is
    // refused, whatever it says.
    let other = response(7, "www.example.test", A, &[a("www.example.test", 60, OTHER)]);
    assert_eq!(p.frame(&udp(RESOLVER, 53, C1, 40001, &r), 0, SEC), Verdict::Forward);
    assert_eq!(p.frame(&udp(RESOLVER, 53, C1, 40001, &other), 0, SEC), Verdict::Forward);
    assert!(p.reaches(C1, WEB, 2 * SEC));
    assert!(!p.reaches(C1, OTHER, 2 * SEC));
    // Only the last few unanswered queries of a flow are remembered.
    for id in 100..100 + crate::app::dns::MAX_PENDING as u16 + 1 {
        assert_eq!(p.frame(&udp(C1, 40005, RESOLVER, 53, &query(id, "www.example.test", A)), 0, SEC), Verdict::Forward);
    }
    let first = response(100, "www.example.test", A, &[a("www.example.test", 60, [198, 18, 1, 12])]);
    let last = response(108, "www.example.test", A, &[a("www.example.test", 60, [198, 18, 1, 13])]);
    assert_eq!(p.frame(&udp(RESOLVER, 53, C1, 40005, &first), 0, SEC), Verdict::Forward);
    assert_eq!(p.frame(&udp(RESOLVER, 53, C1, 40005, &last), 0, SEC), Verdict::Forward);
    assert!(!p.reaches(C1, [198, 18, 1, 12], 2 * SEC));
    assert!(p.reaches(C1, [198, 18, 1, 13], 2 * SEC));
    let st = t.stats();
    // On 40002, 40004 (the client's own), the second answer on 40001, the displaced query's.
    assert_eq!((st.inserted, st.refused_unsolicited, st.refused_overflow), (2, 4, 1), "{st:?}");
}

#[test]
fn answers_name_servers_only_for_the_client_that_asked() {
    let t = table();
    let mut p = Pipe::new(&t);
    p.dns(C2, &query(7, "www.example.test", A), &response(7, "www.example.test", A, &[a("www.example.test", 60, WEB)]), SEC);
    assert!(p.reaches(C2, WEB, 2 * SEC));
    assert!(!p.reaches(C1, WEB, 2 * SEC), "another client's answer named the server");
    // The same client on another inline pair (zone) did not ask either.
    assert!(!p.reaches_in(1, C2, WEB, 2 * SEC));
}

#[test]
fn long_names_are_kept_whole_or_refused_never_cut() {
    let t = table();
    let mut p = Pipe::new(&t);
    // 96 characters that end in ".example.test" (what a 96-character cache kept of the
    // name), then the attacker's own domain.
    let head = format!("{}.{}.example.test", "a".repeat(63), "b".repeat(19));
    assert_eq!(head.len(), 96);
    let evil = format!("{head}.evil.test");
    let evil: &'static str = Box::leak(evil.into_boxed_str());
    p.dns(C1, &query(7, evil, A), &response(7, evil, A, &[a(evil, 60, WEB)]), SEC);
    assert!(!p.reaches(C1, WEB, 2 * SEC), "a name under evil.test matched *.example.test");
    assert_eq!(t.stats().refused_unwanted, 1);
    // The longest name there is (253 characters) under example.test is kept whole and matches.
    let long = format!("{}.{}.{}.{}.example.test", "a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(48));
    assert_eq!(long.len(), 253);
    let long: &'static str = Box::leak(long.into_boxed_str());
    // Its answer's owner compressed, as servers write it: uncompressed, the answer would be
    // larger than the 512 bytes a query without EDNS0 accepts (a `dns_overflow`, not learned).
    let mut r = response(8, long, A, &[]);
    r[7] = 1;
    r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
    r.extend_from_slice(&OTHER);
    p.dns(C1, &query(8, long, A), &r, SEC);
    assert!(p.reaches(C1, OTHER, 2 * SEC));
    let mut buf = NameBuf::default();
    let names = t.lookup(&compiled(POLICY), 0, ip(C1), ip(OTHER), 2 * SEC, &mut buf);
    assert_eq!(names.as_slice(), [long]);
    // A name whose presentation form needs escapes beyond 253 characters is refused whole.
    let odd: Vec<u8> = vec![1; 60];
    let qname = wire_name(&[&odd, &odd, &odd, b"example", b"test"]);
    const ODD: [u8; 4] = [198, 18, 1, 30];
    let q = message(9, 0x0100, &qname, A, &[]);
    let mut r = message(9, 0x8180, &qname, A, &[]);
    r[7] = 1; // one answer, owner = the question (compression pointer to offset 12)
    r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
    r.extend_from_slice(&ODD);
    p.dns(C1, &q, &r, SEC);
    assert!(!p.reaches(C1, ODD, 2 * SEC));
    assert_eq!(t.stats().refused_too_long, 1);
    assert_eq!(t.insert(0, ip(C1), ip(ODD), &format!("{}.example.test", "x".repeat(241)), 60, SEC), Stored::TooLong);
}

#[test]
fn a_flood_of_answers_does_not_evict_a_name_a_rule_needs() {
    // Small enough that either flood would fill it if it could.
    let t = Arc::new(NameTable::new(NameConfig { clients: 4, names_per_client: 8, ..NameConfig::default() }));
    let mut p = Pipe::new(&t);
    p.dns(C1, &query(1, "api.example.test", A), &response(1, "api.example.test", A, &[a("api.example.test", 600, WEB)]), SEC);
    // 1000 answers to C1's own queries for names no rule can use: none is stored.
    for i in 0..1000u16 {
        let n: &'static str = Box::leak(format!("n{i}.unrelated.test").into_boxed_str());
        p.dns(C1, &query(i, n, A), &response(i, n, A, &[a(n, 600, [198, 19, (i >> 8) as u8, i as u8])]), 2 * SEC);
    }
    // 1000 answers to another client for names the rule matches fill only its own share.
    for i in 0..1000u16 {
        let n: &'static str = Box::leak(format!("n{i}.example.test").into_boxed_str());
        p.dns(C2, &query(i, n, A), &response(i, n, A, &[a(n, 600, [198, 19, (i >> 8) as u8, i as u8])]), 2 * SEC);
    }
    assert!(p.reaches(C1, WEB, 3 * SEC), "the flood evicted C1's name");
    assert!(p.reaches(C2, [198, 19, 3, 231], 3 * SEC), "C2's newest name");
    assert!(!p.reaches(C2, [198, 19, 0, 0], 3 * SEC), "C2's oldest was replaced by its own");
    let st = t.stats();
    assert_eq!(st.refused_unwanted, 1000, "{st:?}");
    assert_eq!((st.inserted, st.replaced), (1001, 1000 - 8), "{st:?}");
    // Hosts outside every rule's `from` (not enforced: forwarded) cannot take a client slot.
    for h in 0..10u8 {
        p.dns([198, 18, 2, h], &query(1, "www.example.test", A), &response(1, "www.example.test", A, &[a("www.example.test", 600, OTHER)]), 2 * SEC);
    }
    assert_eq!(t.stats().refused_unwanted, 1010);
    assert!(p.reaches(C1, WEB, 3 * SEC));
    // Clients the rule covers beyond the table's room are refused, not stored over C1's.
    let many = Arc::new(NameTable::new(NameConfig { clients: 2, names_per_client: 4, ..NameConfig::default() }));
    for c in 0..10u8 {
        let r = many.insert(0, ip([198, 18, 3, c]), ip(OTHER), "x.example.test", 600, SEC);
        assert_eq!(r, if c < 2 { Stored::New } else { Stored::ClientsFull }, "{c}");
    }
    assert_eq!(many.stats().refused_clients_full, 8);
    // Once every name of a client has expired its slot goes to the next client.
    assert_eq!(many.insert(0, ip(C1), ip(WEB), "api.example.test", 600, 700 * SEC), Stored::New);
    let mut buf = NameBuf::default();
    assert_eq!(many.lookup(&compiled(POLICY), 0, ip(C1), ip(WEB), 701 * SEC, &mut buf).as_slice(), ["api.example.test"]);
    assert!(many.lookup(&compiled(POLICY), 0, ip([198, 18, 3, 0]), ip(OTHER), 701 * SEC, &mut buf).as_slice().is_empty());
}

#[test]
fn names_last_their_ttl_within_the_configured_bounds() {
    let t = Arc::new(NameTable::new(NameConfig { ttl_min_s: 2, ttl_max_s: 100, ..NameConfig::default() }));
    let mut p = Pipe::new(&t);
    let t0 = 1000 * SEC;
    let one = |p: &mut Pipe, id: u16, name: &'static str, ttl: u32, to: [u8; 4]| {
        p.dns(C1, &query(id, name, A), &response(id, name, A, &[a(name, ttl, to)]), t0);
    };
    one(&mut p, 1, "five.example.test", 5, [198, 18, 4, 1]);
    one(&mut p, 2, "zero.example.test", 0, [198, 18, 4, 2]);
    one(&mut p, 3, "long.example.test", 1_000_000, [198, 18, 4, 3]);
    one(&mut p, 4, "neg.example.test", 0x8000_0000, [198, 18, 4, 4]); // RFC 2181 §8: as 0
    // The smallest TTL along the chain counts.
    let r = response(5, "alias.example.test", A, &[cname("alias.example.test", 3, "real.example.test"), a("real.example.test", 50, [198, 18, 4, 5])]);
    p.dns(C1, &query(5, "alias.example.test", A), &r, t0);
    for (server, lasts) in [(1, 5), (2, 2), (3, 100), (4, 2), (5, 3)] {
        let s = [198, 18, 4, server];
        assert!(p.reaches(C1, s, t0 + lasts * SEC - 1), "{server} gone before {lasts} s");
        assert!(!p.reaches(C1, s, t0 + lasts * SEC), "{server} kept past {lasts} s");
    }
    // A later answer's TTL replaces the earlier one's (refreshed, not a second entry).
    one(&mut p, 6, "five.example.test", 50, [198, 18, 4, 1]);
    assert!(p.reaches(C1, [198, 18, 4, 1], t0 + 49 * SEC));
    assert_eq!(t.stats().refreshed, 1);
}

#[test]
fn workers_sharing_the_table_see_each_others_answers() {
    let shared = table();
    let mut w0 = Pipe::new(&shared);
    let mut w1 = Pipe::new(&shared);
    w0.dns(C1, &query(7, "www.example.test", A), &response(7, "www.example.test", A, &[a("www.example.test", 60, WEB)]), SEC);
    assert!(w1.reaches(C1, WEB, 2 * SEC), "the other worker did not see the answer");
    // A pipeline with its own table does not.
    let mut alone = Pipe::new(&table());
    assert!(!alone.reaches(C1, WEB, 2 * SEC));
}

/// The corpus capture (real resolver answers over UDP and TCP, a CNAME among them) through a
/// pipeline: the addresses answers gave the names the rules allow are reachable, others not.
#[test]
fn corpus_answers_name_their_servers() {
    let policy = r#"
[[workload]]
id = "cli"
ips = ["198.18.0.1", "198.18.0.3"]
mode = "protect"

[[rule]]
id = 1
from = "cli"
to = "any"
ports = ["53"]
action = "allow"

[[rule]]
id = 2
from = "cli"
to = "external"
ip_proto = "tcp"
ports = ["443"]
fqdn = "alias.corp.test"
action = "allow"

[[rule]]
id = 3
from = "cli"
to = "external"
ip_proto = "tcp"
ports = ["443"]
fqdn = "*.example.test"
action = "allow"
"#;
    for proto in [17u8, 6] {
        let t = table();
        let mut p = Pipe::with_policy(&t, &policy.replace("alias.corp.test", if proto == 17 { "alias.corp.test" } else { "www.corp.test" }));
        let f = std::fs::File::open(crate::app::testutil::corpus("dns.pcap")).unwrap();
        let mut r = pcap_file::pcap::PcapReader::new(f).unwrap();
        let mut last = 0;
        while let Some(Ok(pkt)) = r.next_packet() {
            let d = crate::wire::decode(&pkt.data).unwrap();
            if d.ip.as_ref().is_some_and(|ip| ip.proto == proto) {
                last = pkt.timestamp.as_nanos() as u64;
                assert_eq!(p.frame(&pkt.data, 0, last), Verdict::Forward);
            }
        }
        // The capture's answers have TTL 0: kept for the 1 s minimum.
        let now = last + SEC / 1000;
        let st = t.stats();
        assert_eq!((st.refused_unsolicited, st.refused_off_chain, st.refused_too_long), (0, 0, 0), "{proto}: {st:?}");
        if proto == 17 {
            // alias.corp.test CNAME www.corp.test, A 198.18.0.20; host1.example.test A .10.
            assert!(p.reaches(C1, [198, 18, 0, 20], now));
            assert!(p.reaches(C1, [198, 18, 0, 10], now));
            // mail.corp.test A .25: no rule names it.
            assert!(!p.reaches(C1, [198, 18, 0, 25], now));
            assert_eq!(st.inserted, 2, "{st:?}");
        } else {
            // www.corp.test over TCP: A 198.18.0.20 (twice) and AAAA 2001:db8::20.
            assert!(p.reaches(C1, [198, 18, 0, 20], now));
            let mut buf = NameBuf::default();
            let v6: IpAddr = "2001:db8::20".parse().unwrap();
            assert_eq!(t.lookup(p.i.policy(), 0, ip(C1), v6, now, &mut buf).as_slice(), ["www.corp.test"]);
            // Three flows: ANY (A and AAAA), A, A.
            assert_eq!((st.inserted, st.refreshed), (4, 2), "{st:?}");
        }
        assert!(!p.reaches(C2, [198, 18, 0, 20], now), "another client");
        assert!(!p.reaches(C1, [198, 18, 0, 20], last + SEC + 1), "kept past the 1 s minimum");
    }
}

// ---------------------------------------------------------------------------------------
// The table on its own.

#[test]
fn a_client_keeps_several_names_per_address_and_addresses_of_both_families() {
    let t = NameTable::default();
    let p = compiled(POLICY);
    let v6: IpAddr = "2001:db8::10".parse().unwrap();
    let mapped: IpAddr = "::ffff:198.18.1.10".parse().unwrap();
    assert_eq!(t.insert(0, ip(C1), ip(WEB), "a.example.test.", 60, 0), Stored::New);
    assert_eq!(t.insert(0, ip(C1), ip(WEB), "B.example.test", 60, 0), Stored::New);
    assert_eq!(t.insert(0, ip(C1), v6, "v6.example.test", 60, 0), Stored::New);
    let mut buf = NameBuf::default();
    let mut got: Vec<&str> = t.lookup(&p, 0, ip(C1), ip(WEB), 1, &mut buf).as_slice().to_vec();
    got.sort();
    assert_eq!(got, ["a.example.test", "b.example.test"]);
    assert_eq!(t.lookup(&p, 0, ip(C1), v6, 1, &mut buf).as_slice(), ["v6.example.test"]);
    // An IPv4-mapped IPv6 address is an IPv6 address (as in the policy).
    assert!(t.lookup(&p, 0, ip(C1), mapped, 1, &mut buf).as_slice().is_empty());
    // Nothing is looked up for a policy without fqdn rules.
    assert!(t.lookup(&CompiledPolicy::empty(), 0, ip(C1), ip(WEB), 1, &mut buf).as_slice().is_empty());
}

/// Writers keep storing self-consistent entries (each name says which server it names)
/// while readers look servers up: no reader ever sees a name for another server, or a torn one.
#[test]
fn concurrent_learning_and_lookups_never_see_a_torn_name() {
    let t = Arc::new(NameTable::new(NameConfig { clients: 4, names_per_client: 8, ..NameConfig::default() }));
    let p = compiled(POLICY);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut handles = Vec::new();
    for w in 0..2u8 {
        let (t, stop) = (t.clone(), stop.clone());
        handles.push(std::thread::spawn(move || {
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                i = i.wrapping_add(1);
                let s = (i % 24) as u8;
                let pad = "x".repeat(usize::from(s) * 9);
                t.insert(0, ip([198, 18, 5, w]), ip([198, 18, 6, s]), &format!("s{s}.{pad}.example.test"), 60, 0);
            }
            0u64
        }));
    }
    for r in 0..2u8 {
        let (t, stop, p) = (t.clone(), stop.clone(), p.clone());
        handles.push(std::thread::spawn(move || {
            let mut seen = 0u64;
            let mut i = 0u32;
            let mut buf = NameBuf::default();
            while !stop.load(Ordering::Relaxed) {
                i = i.wrapping_add(1);
                let s = (i % 24) as u8;
                let want = format!("s{s}.{}.example.test", "x".repeat(usize::from(s) * 9));
                for n in t.lookup(&p, 0, ip([198, 18, 5, r]), ip([198, 18, 6, s]), 1, &mut buf).as_slice() {
                    assert_eq!(*n, want);
                    seen += 1;
                }
            }
            seen
        }));
    }
    std::thread::sleep(std::time::Duration::from_millis(1000));
    stop.store(true, Ordering::Relaxed);
    let counts: Vec<u64> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(counts[2] + counts[3] > 1000, "only {counts:?} names read");
    assert!(t.stats().inserted > 1000);
}
