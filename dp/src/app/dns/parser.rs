//! Pure DNS parsing functions over `&[u8]` (no state, no allocation).
//!
//! Messages follow RFC 1035 §4.1 (header §4.1.1, question §4.1.2, resource records §4.1.3,
//! compression §4.1.4); over TCP each message has a 2-byte length prefix (RFC 1035 §4.2.2,
//! RFC 7766 §8). Header bits: RFC 6895 §2 (Z bit reserved, AD/CD from RFC 4035 §3.2), opcodes
//! from the IANA registry (QUERY, IQUERY, STATUS, NOTIFY RFC 1996, UPDATE RFC 2136, DSO
//! RFC 8490).
//!
//! Decoding uses the `domain` crate (NLnet Labs) without default features: it parses a
//! `&[u8]` in place with no allocation, and bounds compression pointers (they must point
//! backwards and at most 255 are followed per name). `simple-dns` was not used: its
//! `Packet::parse` allocates a `Vec` per name and per section on every message (every UDP
//! datagram) and rejects the whole message when one record fails to parse.
//! The probe's header and first-question checks are written here because they must work on
//! a prefix of a message (TCP segments).

pub use crate::app::Parse;

use std::hash::{BuildHasher, Hasher, RandomState};
use std::net::IpAddr;
use std::sync::OnceLock;

use domain::base::iana::{Class, Opcode, Rcode, Rtype};
use domain::base::{Message, ParsedName};
use domain::rdata::{Aaaa, Cname, A};

/// Length of the header.
pub const HEADER: usize = 12;
/// Smallest message with one question (header, root name, qtype, qclass).
pub const MIN_MESSAGE: usize = HEADER + 1 + 4;
/// Highest QDCOUNT accepted (real messages carry one question).
pub const MAX_QDCOUNT: u16 = 16;
/// Longest encoded name (RFC 1035 §2.3.4).
pub const MAX_NAME: usize = 255;
/// Longest name kept in presentation form (characters): the 255 octets of an encoded name
/// are at most 253 characters when no byte needs an escape (RFC 1035 §2.3.4, §5.1).
pub const MAX_PRESENTATION: usize = 253;
/// Most names of a CNAME chain followed, the question's included.
pub const MAX_CHAIN: usize = 8;
/// Most answer records examined per response when following a chain.
pub const MAX_ANSWER_RECORDS: usize = 64;

/// Reads a big-endian u16 at `at`.
fn be16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([s[0], s[1]]))
}

/// Header sanity on the bytes present (prefix-aware): a known opcode, the reserved Z bit
/// clear, a query with rcode 0, QDCOUNT in 1..=[`MAX_QDCOUNT`], and (when `total`, the message
/// length, is known) counts that fit in it.
pub fn header_ok(m: &[u8], total: usize) -> bool {
    let qr = m.get(2).map(|&f| f & 0x80 != 0);
    if let Some(&f) = m.get(2) {
        // QUERY, NOTIFY, UPDATE, DSO (IQUERY is obsolete, RFC 3425; STATUS was never
        // specified): fewer opcodes keep text lines such as "+OK\r\n" out.
        if !matches!((f >> 3) & 0x0f, 0 | 4 | 5 | 6) {
            return false;
        }
    }
    if let Some(&g) = m.get(3) {
        if g & 0x40 != 0 || (qr == Some(false) && g & 0x0f != 0) {
            return false;
        }
    }
    if let Some(qd) = be16(m, 4) {
        if !(1..=MAX_QDCOUNT).contains(&qd) {
            return false;
        }
    }
    if let (Some(qd), Some(an), Some(ns), Some(ar)) = (be16(m, 4), be16(m, 6), be16(m, 8), be16(m, 10)) {
        // Each question takes at least 5 bytes, each record at least 11.
        let min = HEADER + 5 * usize::from(qd) + 11 * (usize::from(an) + usize::from(ns) + usize::from(ar));
        if min > total {
            return false;
        }
    }
    true
}

/// The first question's extent (prefix-aware): an uncompressed name (nothing precedes it that
/// a pointer could name), labels of 1..=63 bytes, at most [`MAX_NAME`] bytes, a non-zero
/// QTYPE and a known QCLASS (IN, CH, HS, NONE, ANY; the mDNS unicast-response bit allowed).
/// Returns the offset just past it.
pub fn first_question(m: &[u8]) -> Parse<usize> {
    let mut at = HEADER;
    loop {
        let Some(&len) = m.get(at) else { return Parse::Incomplete(at + 1) };
        match len {
            0 => {
                at += 1;
                break;
            }
            1..=63 => {
                at += 1 + usize::from(len);
                if at - HEADER > MAX_NAME {
                    return Parse::Invalid;
                }
            }
            _ => return Parse::Invalid,
        }
    }
    if let Some(t) = be16(m, at) {
        if t == 0 {
            return Parse::Invalid;
        }
    }
    match be16(m, at + 2) {
        None => Parse::Incomplete(at + 4),
        Some(c) if matches!(c & 0x7fff, 1 | 3 | 4 | 254 | 255) => Parse::Ok(at + 4, at + 4),
        Some(_) => Parse::Invalid,
    }
}

/// Parses every section of a complete message with `domain`; returns where the last record
/// ends (a well-formed message ends exactly at its length).
pub fn parsed_len(m: &[u8]) -> Option<usize> {
    let msg = Message::from_octets(m).ok()?;
    let mut sec = msg.answer().ok()?;
    loop {
        for rr in &mut sec {
            rr.ok()?;
        }
        let pos = sec.pos();
        match sec.next_section().ok()? {
            Some(next) => sec = next,
            None => return Some(pos),
        }
    }
}

/// Strict check of a message of known length `total` whose first bytes are `m` (all of it
/// for UDP, a prefix for TCP): header sanity and a valid first question. A complete message
/// must also parse to its end.
pub fn message_prefix(m: &[u8], total: usize) -> Parse<()> {
    if total < MIN_MESSAGE || !header_ok(m, total) {
        return Parse::Invalid;
    }
    match first_question(m) {
        Parse::Ok(end, _) if end > total => Parse::Invalid,
        Parse::Ok(..) if m.len() >= total => {
            if parsed_len(&m[..total]) == Some(total) {
                Parse::Ok((), total)
            } else {
                Parse::Invalid
            }
        }
        Parse::Ok(end, _) => Parse::Ok((), end),
        Parse::Incomplete(k) if k <= total && m.len() < total => Parse::Incomplete(k),
        Parse::Incomplete(_) | Parse::Invalid => Parse::Invalid,
    }
}

/// Is `b` plausibly the start of a TCP stream of DNS messages (length prefix, then a sane
/// header and first question so far)?
pub fn tcp_plausible(b: &[u8]) -> bool {
    match be16(b, 0) {
        Some(total) => message_prefix(&b[2..], usize::from(total)) != Parse::Invalid,
        None => true,
    }
}

/// Probe of the first bytes of a direction, which may be a UDP datagram (one whole message)
/// or the start of a TCP stream (length-prefixed messages).
pub fn probe(b: &[u8]) -> Parse<()> {
    if let Parse::Ok(..) = message_prefix(b, b.len()) {
        return Parse::Ok((), b.len());
    }
    let Some(total) = be16(b, 0) else { return Parse::Incomplete(2) };
    match message_prefix(&b[2..], usize::from(total)) {
        Parse::Ok(_, n) => Parse::Ok((), n + 2),
        Parse::Incomplete(k) => Parse::Incomplete(k + 2),
        Parse::Invalid => Parse::Invalid,
    }
}

/// What one message says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// QR bit: a response.
    pub response: bool,
    /// RCODE (extended with the OPT record's upper bits when present, RFC 6891 §6.1.3).
    pub rcode: u16,
    /// TC bit.
    pub truncated: bool,
    /// A record of the answer section (responses) did not parse.
    pub bad_record: bool,
}

/// Decodes a message: header summary, the first question (handed to `on_question` as name
/// and type), and A/AAAA answer addresses in order (handed to `on_addr` while it returns
/// true). `None` when the header or first question does not parse; records after a malformed
/// one are not visited.
pub fn message(
    m: &[u8],
    on_question: impl FnOnce(&ParsedName<&[u8]>, Rtype, Class),
    mut on_addr: impl FnMut(IpAddr) -> bool,
) -> Option<Summary> {
    let msg = Message::from_octets(m).ok()?;
    let h = msg.header();
    let q = msg.first_question()?;
    on_question(q.qname(), q.qtype(), q.qclass());
    let mut summary =
        Summary { response: h.qr(), rcode: msg.opt_rcode().to_int(), truncated: h.tc(), bad_record: false };
    if h.qr() {
        match msg.answer() {
            Err(_) => summary.bad_record = true,
            Ok(answers) => for rr in answers {
                let Ok(rr) = rr else {
                    summary.bad_record = true;
                    break;
                };
                let addr = match rr.rtype() {
                    Rtype::A => rr.to_record::<A>().ok().flatten().map(|r| IpAddr::from(r.data().addr().octets())),
                    Rtype::AAAA => rr.to_record::<Aaaa>().ok().flatten().map(|r| IpAddr::from(r.data().addr().octets())),
                    _ => None,
                };
                if let Some(a) = addr {
                    if !on_addr(a) {
                        break;
                    }
                }
            }
        }
    }
    Some(summary)
}

/// A query as its response must echo it: the transaction id and a keyed hash (SipHash with a
/// random per-process key, so an answering server cannot aim a collision) of the question's
/// type, class and name, the name compared ignoring ASCII case (RFC 4343 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryKey {
    /// Transaction id (RFC 1035 §4.1.1: copied into the response).
    pub id: u16,
    /// Keyed hash of QTYPE, QCLASS and the lowercased labels of QNAME.
    pub question: u64,
}

/// The key of a standard query or its response (OPCODE QUERY, exactly one question): what a
/// resolver compares to accept a response (RFC 1035 §7.3; RFC 5452 §9.1: id, question name,
/// type and class, on the flow the query went out on). `None` for other messages.
pub fn query_key(msg: &Message<&[u8]>) -> Option<QueryKey> {
    static KEY: OnceLock<RandomState> = OnceLock::new();
    let h = msg.header();
    if h.opcode() != Opcode::QUERY || msg.header_counts().qdcount() != 1 {
        return None;
    }
    let q = msg.first_question()?;
    let mut s = KEY.get_or_init(RandomState::new).build_hasher();
    s.write_u16(q.qtype().to_int());
    s.write_u16(q.qclass().to_int());
    let mut low = [0u8; 63];
    for label in q.qname().iter() {
        let b = label.as_slice();
        let n = b.len().min(low.len());
        for (d, c) in low.iter_mut().zip(&b[..n]) {
            *d = c.to_ascii_lowercase();
        }
        s.write_u8(n as u8);
        s.write(&low[..n]);
    }
    Some(QueryKey { id: h.id(), question: s.finish() })
}

/// True when a response can name addresses: RCODE NOERROR and not truncated (a truncated
/// answer is retried over TCP, RFC 7766 §5).
pub fn answers_usable(msg: &Message<&[u8]>) -> bool {
    let h = msg.header();
    h.rcode() == Rcode::NOERROR && !h.tc()
}

/// Follows the CNAME chain from the first question through the answer section and hands each
/// A/AAAA record (class IN) of the chain's last name to `on_addr`, with the smallest TTL along
/// the chain (s; RFC 2181 §8: a TTL with the top bit set counts as 0). An alias has no other
/// data (RFC 1034 §3.6.2, RFC 2181 §10.1), so addresses are taken only for the name the chain
/// ends at; a chain longer than [`MAX_CHAIN`] names, or one that loops, gives none. At most
/// [`MAX_ANSWER_RECORDS`] records are examined; a record that does not parse ends the walk.
/// Returns the A/AAAA records examined that were not taken (their owner is not where the
/// chain from the question ends).
pub fn chain_addrs(msg: &Message<&[u8]>, mut on_addr: impl FnMut(IpAddr, u32)) -> u32 {
    let ttl_of = |t: u32| if t > i32::MAX as u32 { 0 } else { t };
    let Some(q) = msg.first_question() else { return 0 };
    let mut name: ParsedName<&[u8]> = *q.qname();
    let mut ttl = u32::MAX;
    let mut ended = false;
    for _ in 0..MAX_CHAIN {
        let Ok(section) = msg.answer() else { return 0 };
        let mut next = None;
        for rr in section.take(MAX_ANSWER_RECORDS) {
            let Ok(rr) = rr else { break };
            if rr.rtype() != Rtype::CNAME || rr.class() != Class::IN || rr.owner() != name {
                continue;
            }
            if let Ok(Some(c)) = rr.to_record::<Cname<ParsedName<&[u8]>>>() {
                next = Some((*c.data().cname(), ttl_of(rr.ttl().as_secs())));
                break;
            }
        }
        match next {
            None => {
                ended = true;
                break;
            }
            Some((target, t)) => {
                name = target;
                ttl = ttl.min(t);
            }
        }
    }
    let mut off = 0;
    let Ok(section) = msg.answer() else { return 0 };
    for rr in section.take(MAX_ANSWER_RECORDS) {
        let Ok(rr) = rr else { break };
        let addr = match rr.rtype() {
            Rtype::A => rr.to_record::<A>().ok().flatten().map(|r| IpAddr::from(r.data().addr().octets())),
            Rtype::AAAA => rr.to_record::<Aaaa>().ok().flatten().map(|r| IpAddr::from(r.data().addr().octets())),
            _ => continue,
        };
        let Some(addr) = addr else { continue };
        if ended && rr.class() == Class::IN && rr.owner() == name {
            on_addr(addr, ttl.min(ttl_of(rr.ttl().as_secs())));
        } else {
            off += 1;
        }
    }
    off
}
