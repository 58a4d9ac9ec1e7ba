//! Pure DNS parsing functions over `&[u8]` (no state, no allocation).
//!
//! Messages follow RFC 1035 §4.1 (header §4.1.1, question §4.1.2, resource records §4.1.3,
//! compression §4.1.4); over TCP each message has a 2-byte length prefix (RFC 1035 §4.2.2,
//! RFC 7766 §8). Header bits: RFC 6895 §2 (Z bit reserved, AD/CD from RFC 4035 §3.2), opcodes
//! from the IANA registry (QUERY, IQUERY, STATUS, NOTIFY RFC 1996, UPDATE RFC 2136, DSO
//! RFC 8490).
//!
//! Decoding uses the `domain` crate (NLnet Labs) without default features: it parses a
//! `&[u8]` in place with no allocation. `simple-dns` was not used: its `Packet::parse`
//! allocates a `Vec` per name and per section on every message (every UDP datagram) and
//! rejects the whole message when one record fails to parse.
//! The probe's header and first-question checks are written here because they must work on
//! a prefix of a message (TCP segments).
//!
//! **Every message is walked here first** ([`scan`]), and handed to `domain` only when all its
//! names are safe. `domain` only requires each compression pointer to point before itself, so
//! a chain of pointers to pointers is legal to it: one 2-byte owner name can cost thousands
//! of hops, in every record of a 64 KiB message. [`walk_name`] follows BIND's rule instead
//! (`dns_name_fromwire`: each pointer goes strictly before the previous one's target, the first
//! before itself: no cycle can form) with at most [`MAX_HOPS`] pointers per name, and the walk
//! of a whole message is bounded by [`steps_budget`]. What it finds is what attacks on
//! decoders send (the `dns_loop_pointer` and `dns_overflow` threats, [`Anomaly`]).

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

/// The opcodes of the IANA registry (RFC 6895 §2.2): QUERY 0, IQUERY 1 (RFC 1035 §4.1.1,
/// obsoleted by RFC 3425 but still sent: `dig +opcode=iquery`, old resolvers), STATUS 2
/// (never specified; `dig +opcode=status`), NOTIFY 4 (RFC 1996), UPDATE 5 (RFC 2136), DSO 6
/// (RFC 8490).
pub fn opcode_known(op: u8) -> bool {
    matches!(op, 0 | 1 | 2 | 4 | 5 | 6)
}

/// Name of an opcode (`QUERY`, `IQUERY`, `STATUS`, `NOTIFY`, `UPDATE`, `DSO`; `OPCODE3` style
/// for the unassigned ones).
pub fn opcode_name(op: u8) -> &'static str {
    const UNASSIGNED: [&str; 16] = [
        "QUERY", "IQUERY", "STATUS", "OPCODE3", "NOTIFY", "UPDATE", "DSO", "OPCODE7", "OPCODE8", "OPCODE9",
        "OPCODE10", "OPCODE11", "OPCODE12", "OPCODE13", "OPCODE14", "OPCODE15",
    ];
    UNASSIGNED[usize::from(op & 0x0f)]
}

/// Header sanity on the bytes present (prefix-aware): a known opcode, the reserved Z bit
/// clear, a query with rcode 0, QDCOUNT in 1..=[`MAX_QDCOUNT`]; and with `counts`, counts
/// that fit in `total`, the message length.
fn header_sane(m: &[u8], total: usize, counts: bool) -> bool {
    let qr = m.get(2).map(|&f| f & 0x80 != 0);
    if let Some(&f) = m.get(2) {
        let op = (f >> 3) & 0x0f;
        if !opcode_known(op) {
            return false;
        }
        // An IQUERY or STATUS request has AA and TC clear (RFC 1035 §4.1.1: both are bits of
        // responses); the two opcodes added to the probe stay this strict, so that a text
        // line with a control byte there ("+OK\r\n": `\n` reads as IQUERY with TC) is no
        // DNS header.
        if matches!(op, 1 | 2) && f & 0x80 == 0 && f & 0x06 != 0 {
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
    if let (true, Some(qd), Some(an), Some(ns), Some(ar)) = (counts, be16(m, 4), be16(m, 6), be16(m, 8), be16(m, 10)) {
        // Each question takes at least 5 bytes, each record at least 11.
        let min = HEADER + 5 * usize::from(qd) + 11 * (usize::from(an) + usize::from(ns) + usize::from(ar));
        if min > total {
            return false;
        }
    }
    true
}

/// Header sanity on the bytes present (prefix-aware): a known opcode, the reserved Z bit
/// clear, a query with rcode 0, QDCOUNT in 1..=[`MAX_QDCOUNT`], and (when `total`, the message
/// length, is known) counts that fit in it.
pub fn header_ok(m: &[u8], total: usize) -> bool {
    header_sane(m, total, true)
}

/// True for the QCLASS values of real questions: IN, CH, HS, NONE, ANY (the mDNS
/// unicast-response bit allowed).
fn known_qclass(c: u16) -> bool {
    matches!(c & 0x7fff, 1 | 3 | 4 | 254 | 255)
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
        Some(c) if known_qclass(c) => Parse::Ok(at + 4, at + 4),
        Some(_) => Parse::Invalid,
    }
}

/// The forms without a question (QDCOUNT 0) taken as DNS: an inverse query (opcode IQUERY,
/// QR clear, exactly one answer record and nothing else, RFC 1035 §6.4.2) and a DSO message
/// (opcode DSO, all four counts zero, then TLVs, RFC 8490 §5.4). Prefix-aware: `Incomplete`
/// while `m` is a prefix of such a message of `total` bytes; a whole one must be read to its
/// end ([`scan`], [`dso_tlvs`]).
pub fn questionless(m: &[u8], total: usize) -> Parse<()> {
    if total < HEADER {
        return Parse::Invalid;
    }
    // The form the opcode announces: IQUERY (1) or DSO (6), on the bytes present.
    let Some(&flags) = m.get(2) else { return Parse::Incomplete(HEADER) };
    let (qr, opcode) = (flags & 0x80 != 0, (flags >> 3) & 0x0f);
    let rcode = m.get(3).map_or(0, |g| g & 0x0f);
    let ok = match opcode {
        1 => !qr && rcode == 0,
        6 => qr || rcode == 0,
        _ => false,
    };
    if !ok || m.get(3).is_some_and(|g| g & 0x40 != 0) {
        return Parse::Invalid;
    }
    let want: [u16; 4] = if opcode == 1 { [0, 1, 0, 0] } else { [0; 4] };
    for (i, w) in want.into_iter().enumerate() {
        if be16(m, 4 + 2 * i).is_some_and(|c| c != w) {
            return Parse::Invalid;
        }
    }
    if m.len() < total {
        return Parse::Incomplete(total);
    }
    let m = &m[..total];
    let whole = if opcode == 1 {
        let s = scan(m, |_, _| {});
        s.end == Some(total) && s.loop_pointer.is_none() && s.overflow.is_none()
    } else {
        dso_tlvs(&m[HEADER..], qr)
    };
    if whole {
        Parse::Ok((), total)
    } else {
        Parse::Invalid
    }
}

/// The TLVs of a DSO message (RFC 8490 §5.4): each a 16-bit type and length and that many
/// bytes, exactly filling the message. A request (`response` false) has at least one, and its
/// first (the primary TLV) is one a request can carry: Keepalive 1, Retry Delay 2 (RFC 8490
/// §7), SUBSCRIBE, PUSH, UNSUBSCRIBE, RECONFIRM 0x40..=0x43 (RFC 8765 §6); a response may
/// have none. Encryption Padding (3) is never primary.
pub fn dso_tlvs(mut b: &[u8], response: bool) -> bool {
    let mut first = true;
    if b.is_empty() {
        return response;
    }
    while !b.is_empty() {
        let (Some(t), Some(len)) = (be16(b, 0), be16(b, 2)) else { return false };
        if first && !matches!(t, 1 | 2 | 0x40..=0x43) {
            return false;
        }
        first = false;
        let Some(rest) = b.get(4 + usize::from(len)..) else { return false };
        b = rest;
    }
    true
}

/// Strict check of a message of known length `total` whose first bytes are `m` (all of it
/// for UDP, a prefix for TCP): header sanity and valid questions. A complete message whose
/// header and questions are sound is DNS even when its later sections (answer, authority,
/// additional) are malformed, cut short or followed by extra bytes: the parser flags it
/// ([`later_malformation`]); one that carries what attacks on DNS decoders send in its
/// questions (an [`Anomaly`]) is taken too, so that the parser sees the attack and reports
/// it. The question-less forms are [`questionless`].
pub fn message_prefix(m: &[u8], total: usize) -> Parse<()> {
    if m.get(4..6).is_some_and(|q| q == [0, 0]) {
        return questionless(m, total);
    }
    if total < MIN_MESSAGE || !header_sane(m, total, false) {
        return Parse::Invalid;
    }
    if m.len() >= total {
        let s = scan(&m[..total], |_, _| {});
        let question = s.question.is_some_and(|q| q.qtype != 0 && known_qclass(q.qclass));
        if question && s.loop_pointer.is_some() {
            return Parse::Ok((), total);
        }
        // The first question uncompressed and whole, every question read.
        return match first_question(m) {
            Parse::Ok(end, _) if question && end <= total && s.questions_end.is_some() => Parse::Ok((), total),
            _ if question && s.overflow.is_some_and(|a| !a.reason.ends_with("past_end")) => Parse::Ok((), total),
            _ => Parse::Invalid,
        };
    }
    if !header_ok(m, total) {
        return Parse::Invalid;
    }
    match first_question(m) {
        Parse::Ok(end, _) if end > total => Parse::Invalid,
        Parse::Ok(end, _) => Parse::Ok((), end),
        Parse::Incomplete(k) if k <= total && m.len() < total => Parse::Incomplete(k),
        Parse::Incomplete(_) | Parse::Invalid => Parse::Invalid,
    }
}

/// What is wrong after the questions of a message whose questions were read ([`scan`]), as a
/// short reason: an anomaly in a record (`rdata_past_end`, `record_past_end`,
/// `counts_past_end`, `name_past_end`, ... as [`Anomaly`] names them, the pointer ones
/// included), bytes after the last counted record (`trailing_bytes`, however few), or `None`
/// when the records were read to the message's end.
pub fn later_malformation(s: &Scan, total: usize) -> Option<&'static str> {
    let after = s.questions_end?;
    for a in [s.overflow, s.loop_pointer].into_iter().flatten() {
        if a.at >= after {
            return Some(a.reason);
        }
    }
    match s.end {
        Some(end) if end < total => Some("trailing_bytes"),
        Some(_) => None,
        // The walk stopped in the records without an anomaly past the questions (the step
        // budget, counted from the questions' names).
        None => Some("records_unread"),
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
        if netbios_name_service(b) {
            return Parse::Invalid;
        }
        return Parse::Ok((), b.len());
    }
    let Some(total) = be16(b, 0) else { return Parse::Incomplete(2) };
    match message_prefix(&b[2..], usize::from(total)) {
        Parse::Ok(_, n) => Parse::Ok((), n + 2),
        Parse::Incomplete(k) => Parse::Incomplete(k + 2),
        Parse::Invalid => Parse::Invalid,
    }
}

/// True when message `m` is NetBIOS name service (RFC 1002 §4.2), which borrows DNS's format:
/// its first name (the question's, or a response's first answer's) is a NetBIOS name in
/// first-level encoding (RFC 1001 §14.1: a 32-byte label of the letters `A`..`P`, then scope
/// labels), of type NB (0x20) or NBSTAT (0x21). No DNS name has that shape with those types
/// (0x21 is SRV, whose names start with `_service`).
pub fn netbios_name_service(m: &[u8]) -> bool {
    let Some(label) = m.get(13..45) else { return false };
    if m[12] != 32 || !label.iter().all(|c| (b'A'..=b'P').contains(c)) {
        return false;
    }
    let mut at = 45;
    for _ in 0..16 {
        match m.get(at) {
            Some(0) => return matches!(be16(m, at + 1), Some(0x20 | 0x21)),
            Some(&n) if n < 64 => at += 1 + usize::from(n),
            _ => return false,
        }
    }
    false
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
    /// A record of the answer section (responses) did not parse, an A or AAAA record's data
    /// included (a length other than 4 or 16).
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
                    Rtype::A => Some(rr.to_record::<A>().ok().flatten().map(|r| IpAddr::from(r.data().addr().octets()))),
                    Rtype::AAAA => Some(rr.to_record::<Aaaa>().ok().flatten().map(|r| IpAddr::from(r.data().addr().octets()))),
                    _ => None,
                };
                match addr {
                    Some(Some(a)) => {
                        if !on_addr(a) {
                            break;
                        }
                    }
                    Some(None) => {
                        summary.bad_record = true;
                        break;
                    }
                    None => {}
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

/// Most compression pointers followed in one name. A name has at most 127 labels and real
/// encoders write each pointer after at least one label, so real names need far fewer;
/// NeuVector's dp stops at 63 too.
pub const MAX_HOPS: usize = 63;
/// Unparsed bytes after the last counted record that make a message an overflow attempt
/// (NeuVector's dp: more than 1024 bytes its parser did not account for).
pub const MAX_TAIL: usize = 1024;

/// Labels and pointers [`scan`] may step over in a message of `len` bytes: 16 per byte plus
/// 4096. A real message needs a few per byte (a 2-byte pointer to a name of `k` labels costs
/// `k + 1`, and records are at least 12 bytes); past the budget the message is treated as a
/// decompression bomb (`pointer_work`), so the walk of any message is linear in its size.
pub fn steps_budget(len: usize) -> usize {
    len.saturating_mul(16).saturating_add(4096)
}

/// The threat an [`Anomaly`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnomalyKind {
    /// Compression pointers that loop or could (`dns_loop_pointer`).
    LoopPointer,
    /// Lengths beyond RFC 1035 limits or past the message (`dns_overflow`).
    Overflow,
}

/// What an attack on a DNS decoder puts in a message: kind, reason (the threat record's
/// snake_case reason), offset in the message (bytes) and a number that says how far
/// (`value`: the pointer's target, the length announced, ...).
///
/// Reasons, RFC 1035 §4.1.4 (pointers) and §2.3.4 (sizes):
/// - loop pointers: `pointer_to_itself`, `pointer_forward` (at or after the pointer),
///   `pointer_loop` (not before the previous pointer's target: it can cycle through labels),
///   `pointer_chain` (more than [`MAX_HOPS`] in one name; `value` the hops),
///   `pointer_work` (the message's names exceed [`steps_budget`]);
/// - overflows: `label_over_63` (a length octet 0x40..=0xBF, read by naive decoders as a
///   label of up to 191 bytes; the RFC 6891 §5 extended label types are deprecated),
///   `name_over_255` (decompressed name; `value` its length so far), `name_past_end`,
///   `counts_past_end` (the header counts more questions or records than the message
///   holds), `record_past_end`, `rdata_past_end` (RDLENGTH beyond the message; `value` it),
///   `name_past_rdata` (a name inside RDATA running past RDLENGTH), `trailing_bytes` (more
///   than [`MAX_TAIL`] bytes after the last counted record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Anomaly {
    /// Which threat.
    pub kind: AnomalyKind,
    /// Which form of it.
    pub reason: &'static str,
    /// Offset in the message (bytes).
    pub at: usize,
    /// The pointer target, the length or count (see the reasons).
    pub value: usize,
}

impl Anomaly {
    fn pointer(reason: &'static str, at: usize, value: usize) -> Self {
        Anomaly { kind: AnomalyKind::LoopPointer, reason, at, value }
    }

    fn overflow(reason: &'static str, at: usize, value: usize) -> Self {
        Anomaly { kind: AnomalyKind::Overflow, reason, at, value }
    }
}

/// The walk of one name ([`walk_name`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameWalk {
    /// Offset just past the name where it sits (after its root label or its first pointer);
    /// `None` when it runs past the message before either.
    pub end: Option<usize>,
    /// Decompressed length in wire form (length octets, labels and root, bytes) as far as
    /// walked; at most [`MAX_NAME`] unless the anomaly is `name_over_255`.
    pub wire_len: usize,
    /// The first anomaly; the name is whole and safe to decode only when there is none.
    pub anomaly: Option<Anomaly>,
    /// Labels and pointers stepped over.
    pub steps: usize,
}

/// Walks the name at offset `at` of the message `m`, following compression pointers
/// (RFC 1035 §4.1.4) under BIND's rule: the first pointer must point before itself, each
/// further one before the previous one's target, at most [`MAX_HOPS`] of them. `on_label`
/// gets each label of the decompressed name in order while the name is valid so far (never
/// more than [`MAX_NAME`] bytes in wire form). After an anomaly the walk only goes on, in
/// place, to find where the name ends; it never reads outside `m` and takes at most
/// `MAX_HOPS + 1` steps past the name's own bytes.
pub fn walk_name(m: &[u8], at: usize, mut on_label: impl FnMut(&[u8])) -> NameWalk {
    let mut w = NameWalk { end: None, wire_len: 0, anomaly: None, steps: 0 };
    let mut pos = at;
    // A pointer must point before this (BIND's `biggest_pointer`).
    let mut limit = at;
    let mut hops = 0;
    loop {
        if w.anomaly.is_some() && w.end.is_some() {
            return w;
        }
        w.steps += 1;
        let Some(&b) = m.get(pos) else {
            w.anomaly.get_or_insert(Anomaly::overflow("name_past_end", pos, m.len()));
            return w;
        };
        match b {
            0 => {
                w.wire_len += 1;
                w.end.get_or_insert(pos + 1);
                return w;
            }
            1..=0xbf => {
                let len = usize::from(b);
                if len > 63 {
                    w.anomaly.get_or_insert(Anomaly::overflow("label_over_63", pos, len));
                }
                let next = pos + 1 + len;
                if next > m.len() {
                    w.anomaly.get_or_insert(Anomaly::overflow("name_past_end", pos, len));
                    return w;
                }
                if w.anomaly.is_none() && w.wire_len + 1 + len + 1 > MAX_NAME {
                    w.anomaly = Some(Anomaly::overflow("name_over_255", at, w.wire_len + 1 + len + 1));
                }
                if w.anomaly.is_none() {
                    on_label(&m[pos + 1..next]);
                }
                w.wire_len += 1 + len;
                pos = next;
                if hops == 0 {
                    limit = pos;
                }
            }
            _ => {
                let Some(&lo) = m.get(pos + 1) else {
                    w.anomaly.get_or_insert(Anomaly::overflow("name_past_end", pos, m.len()));
                    return w;
                };
                w.end.get_or_insert(pos + 2);
                if w.anomaly.is_some() {
                    return w;
                }
                let target = usize::from(b & 0x3f) << 8 | usize::from(lo);
                if target >= limit || target == pos {
                    let reason = if target == pos {
                        "pointer_to_itself"
                    } else if target > pos {
                        "pointer_forward"
                    } else {
                        "pointer_loop"
                    };
                    w.anomaly = Some(Anomaly::pointer(reason, pos, target));
                    return w;
                }
                hops += 1;
                if hops > MAX_HOPS {
                    w.anomaly = Some(Anomaly::pointer("pointer_chain", pos, hops));
                    return w;
                }
                limit = target;
                pos = target;
            }
        }
    }
}

/// The first question of a message, as [`scan`] found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Question {
    /// Offset of its name.
    pub name_at: usize,
    /// QTYPE.
    pub qtype: u16,
    /// QCLASS.
    pub qclass: u16,
    /// The name is whole, with no anomaly.
    pub clean: bool,
}

/// What the walk of a whole message found ([`scan`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scan {
    /// QR bit.
    pub response: bool,
    /// OPCODE.
    pub opcode: u8,
    /// The first question, when its type and class are in the message.
    pub question: Option<Question>,
    /// Where the last question ends, when every question was read without an anomaly.
    pub questions_end: Option<usize>,
    /// Where the last counted record ends, when every question and record was read.
    pub end: Option<usize>,
    /// The first pointer anomaly.
    pub loop_pointer: Option<Anomaly>,
    /// The first length anomaly.
    pub overflow: Option<Anomaly>,
    /// Some name is not whole and safe: the message must not reach a decoder that follows
    /// pointers on its own.
    pub names_unsafe: bool,
    /// The requestor's UDP payload size of the first OPT record (RFC 6891 §6.1.2: its CLASS).
    pub edns_payload: Option<u16>,
    /// The first question asking a zone transfer: (name offset, AXFR 252 or IXFR 251;
    /// RFC 5936 §2.1.2, RFC 1995 §3).
    pub transfer: Option<(usize, u16)>,
    /// The offset of the name of the first question of type NULL (10, RFC 1035 §3.3.10).
    pub null_type: Option<usize>,
}

impl Scan {
    fn note(&mut self, a: Anomaly) {
        let slot = match a.kind {
            AnomalyKind::LoopPointer => &mut self.loop_pointer,
            AnomalyKind::Overflow => &mut self.overflow,
        };
        slot.get_or_insert(a);
    }
}

/// Where the names sit in the RDATA of `rtype` (types whose RDATA holds domain names that
/// decoders decompress: RFC 1035 §3.3, RFC 3597 §4, RFC 2163, RFC 2782, RFC 2230, RFC 6672,
/// RFC 2535, RFC 4034): bytes skipped before the first name, how many names follow each
/// other.
fn rdata_names(rtype: u16) -> Option<(usize, usize)> {
    Some(match rtype {
        // NS, MD, MF, CNAME, MB, MG, MR, PTR, DNAME, NSEC (next domain name).
        2 | 3 | 4 | 5 | 7 | 8 | 9 | 12 | 39 | 47 => (0, 1),
        // SOA (MNAME RNAME), MINFO, RP.
        6 | 14 | 17 => (0, 2),
        // MX, AFSDB, RT, KX: a 16-bit preference first.
        15 | 18 | 21 | 36 => (2, 1),
        // PX: preference, MAP822, MAPX400.
        26 => (2, 2),
        // SRV: priority, weight, port.
        33 => (6, 1),
        // SIG, RRSIG: the signer's name after 18 bytes of fields.
        24 | 46 => (18, 1),
        _ => return None,
    })
}

/// Walks a whole message (`m` is exactly one message): header, every question and record,
/// the names inside the RDATA of types that carry them ([`rdata_names`]), within
/// [`steps_budget`]. `on_qname` gets the labels of the first question's name (while it is
/// valid) and their count so far. Never reads outside `m`; linear in its length.
pub fn scan(m: &[u8], mut on_qname: impl FnMut(&[u8], usize)) -> Scan {
    let mut s = Scan::default();
    if m.len() < HEADER {
        return s;
    }
    let total = m.len();
    s.response = m[2] & 0x80 != 0;
    s.opcode = (m[2] >> 3) & 0x0f;
    let count = |at| usize::from(be16(m, at).unwrap_or(0));
    let (qd, records) = (count(4), count(6) + count(8) + count(10));
    let budget = steps_budget(total);
    let mut steps = 0usize;
    let mut at = HEADER;
    // Walks one name at `at` and accounts for it; `None` stops the scan.
    let mut name = |s: &mut Scan, at: usize, labels: &mut dyn FnMut(&[u8])| -> Option<NameWalk> {
        let w = walk_name(m, at, labels);
        steps += w.steps;
        if let Some(a) = w.anomaly {
            s.note(a);
            s.names_unsafe = true;
        }
        if steps > budget {
            s.note(Anomaly::pointer("pointer_work", at, steps));
            s.names_unsafe = true;
            return None;
        }
        w.end.map(|_| w)
    };
    for i in 0..qd {
        if at >= total {
            s.note(Anomaly::overflow("counts_past_end", at, qd + records));
            return s;
        }
        let mut n = 0;
        let first = i == 0;
        let Some(w) = name(&mut s, at, &mut |l: &[u8]| {
            if first {
                n += 1;
                on_qname(l, n);
            }
        }) else {
            return s;
        };
        let end = w.end.unwrap_or(total);
        let (Some(qtype), Some(qclass)) = (be16(m, end), be16(m, end + 2)) else {
            s.note(Anomaly::overflow("record_past_end", end, total));
            return s;
        };
        if first {
            s.question = Some(Question { name_at: at, qtype, qclass, clean: w.anomaly.is_none() });
        }
        match qtype {
            251 | 252 if s.transfer.is_none() => s.transfer = Some((at, qtype)),
            10 if s.null_type.is_none() => s.null_type = Some(at),
            _ => {}
        }
        at = end + 4;
    }
    if s.loop_pointer.is_none() && s.overflow.is_none() {
        s.questions_end = Some(at);
    }
    for _ in 0..records {
        if at >= total {
            s.note(Anomaly::overflow("counts_past_end", at, qd + records));
            return s;
        }
        let Some(w) = name(&mut s, at, &mut |_| {}) else { return s };
        let end = w.end.unwrap_or(total);
        let fixed = m.get(end..end + 10);
        let Some(f) = fixed else {
            s.note(Anomaly::overflow("record_past_end", end, total));
            return s;
        };
        let rtype = u16::from_be_bytes([f[0], f[1]]);
        let rdlen = usize::from(u16::from_be_bytes([f[8], f[9]]));
        let rdata = end + 10;
        if rdata + rdlen > total {
            s.note(Anomaly::overflow("rdata_past_end", end + 8, rdlen));
            return s;
        }
        if rtype == 41 && s.edns_payload.is_none() {
            s.edns_payload = Some(u16::from_be_bytes([f[2], f[3]]));
        }
        // Empty RDATA is legal where names would be (RFC 2136 §2.5.2: UPDATE deletes an RRset
        // with a record of class ANY and no RDATA).
        if let Some((skip, names)) = rdata_names(rtype).filter(|_| rdlen > 0) {
            let mut p = rdata + skip;
            for _ in 0..names {
                if p >= rdata + rdlen {
                    s.note(Anomaly::overflow("name_past_rdata", p, rdlen));
                    break;
                }
                let Some(w) = name(&mut s, p, &mut |_| {}) else { return s };
                p = w.end.unwrap_or(total);
                if p > rdata + rdlen {
                    s.note(Anomaly::overflow("name_past_rdata", p, rdlen));
                    break;
                }
            }
        }
        at = rdata + rdlen;
    }
    s.end = Some(at);
    if total - at > MAX_TAIL {
        s.note(Anomaly::overflow("trailing_bytes", at, total - at));
    }
    s
}
