//! DNS over UDP (one message per datagram) and TCP (2-byte length prefix, RFC 1035 §4.2.2):
//! the first query name and type, the rcode of the first response, the first A/AAAA answer
//! addresses, and query/response counts; and, for `fqdn` policy rules, the names answers give
//! to addresses ([`Dns::learned`]).
//!
//! **Names for policy.** Only what a resolver itself would accept is learned: a response from
//! the server side that answers a query the client sent on the same flow (transaction id and
//! question name, type and class match one of its last [`MAX_PENDING`] unanswered queries,
//! RFC 5452 §9.1), NOERROR, not truncated and well-formed throughout, gives its question
//! name to the A/AAAA addresses where the CNAME chain from the question ends (`parser::chain_addrs`), with the smallest
//! TTL along the chain. Each query is answered once. The name is kept whole (lowercase
//! presentation form, at most 253 characters); a longer one is refused, never cut. Everything
//! refused is counted ([`Refusals`]); the inspector hands the answers to the shared name
//! table ([`crate::names`]), which decides what it stores.
//!
//! **Threats.** Every message is walked by [`parser::scan`] first: pointer loops
//! (`dns_loop_pointer`) and lengths beyond RFC 1035 limits or past the message
//! (`dns_overflow`) are recorded with their reason ([`parser::Anomaly`]), and a message with a
//! name that is not whole and safe goes no further (no `domain` decoding, no answers for
//! policy, no query for the tunnelling detector). The flow adds two size checks: a UDP
//! response larger than its query accepts (512 bytes, or the EDNS0 payload size it advertised;
//! CVE-2015-7547's exploit answers a query without EDNS0 with 2 KB and more), and a TCP
//! response over [`TCP_MAX_RESPONSE`] that no zone transfer asked for (CVE-2020-1350). Client
//! queries for AXFR/IXFR (`dns_zone_transfer`) and NULL (`dns_null_type`) are recorded, over UDP
//! and TCP. The client's standard queries are handed to the inspector for the tunnelling
//! detector ([`Dns::queries`], each once).
//!
//! **Opcodes and malformed messages.** Besides QUERY, IQUERY (RFC 1035 §6.4, also its
//! question-less form), STATUS, NOTIFY (RFC 1996), UPDATE (RFC 2136) and DSO (RFC 8490: counts
//! zero, TLVs) are DNS; the first message's opcode is in the record. A message whose header
//! and questions are sound but whose later sections (answer, authority, additional) are
//! malformed, cut short or followed by extra bytes is DNS too ([`parser::message_prefix`]):
//! the record says `violation` with the first reason ([`parser::later_malformation`], or
//! `bad_record` when a record's data does not parse), the message is counted `malformed`,
//! and nothing of it is learned for policy (counted [`Refusals::malformed`]): an attacker can
//! put data where no resolver reads it, and a resolver does not take what Warden would read
//! from such an answer.
//!
//! Specs: RFC 1035 §4.1-§4.2 (message format, transport), RFC 3596 §2 (AAAA), RFC 6891 §6.1.3
//! (extended rcode), RFC 6895 §2 (header bits), RFC 7766 §8 (several messages per TCP
//! connection). Decoding uses the `domain` crate allocation-free; see `parser.rs` for why not
//! `simple-dns` and for the strict probe (random UDP payloads are common).
//!
//! The transport is told by content on the first feed: a buffer that is exactly one valid
//! message is UDP, one that starts like a length-prefixed message is a TCP stream, anything
//! else a (malformed) UDP datagram. Query names are reported in ASCII lowercase
//! (DNS names compare case-insensitively, RFC 4343 §3, and resolvers may randomise case),
//! without the trailing dot, with `domain`'s escaping of unusual bytes (`\DDD`).

pub mod parser;

use std::fmt::Write as _;
use std::net::IpAddr;

use arrayvec::{ArrayString, ArrayVec};
use domain::base::Message;
use serde_json::{Map, Value};

use super::{App, AppParser, Dir, Feed, Probe, Text, Transport};
use crate::detect::{ThreatId, Threats, EVIDENCE};
use parser::{Anomaly, AnomalyKind, Parse, QueryKey, Scan, MAX_NAME, MAX_PRESENTATION};

/// Distinct A/AAAA answer addresses kept (in order of appearance across responses).
pub const MAX_ADDRS: usize = 8;
/// Unanswered queries remembered per flow (a new one beyond replaces the oldest, counted).
pub const MAX_PENDING: usize = 8;
/// Addresses one answer gives its name (more are counted as [`Refusals::overflow`]).
pub const MAX_ANSWER_ADDRS: usize = 16;
/// Answers held until the inspector takes them (after each frame from the server).
pub const MAX_LEARNED: usize = 2;
/// Client queries held until the inspector takes them ([`Dns::queries`]; one UDP datagram
/// holds one, a TCP segment may hold several).
pub const MAX_SEEN: usize = 8;
/// Bytes of their names held (uncompressed wire form; two names of the longest form fit).
pub const SEEN_BYTES: usize = 512;
/// UDP message size a requestor accepts without EDNS0 (RFC 1035 §2.3.4, §4.2.1).
pub const UDP_PLAIN: usize = 512;
/// Largest TCP response that is not a zone transfer before it counts as an overflow attempt
/// (bytes): Microsoft's workaround for CVE-2020-1350 (SIGRed, KB4569509) caps TCP DNS
/// messages at 0xFF00, as the exploit needs a message close to 64 KiB.
pub const TCP_MAX_RESPONSE: usize = 0xff00;

/// The queries a client sent that the inspector has not taken yet, for the DNS tunnelling
/// detector ([`crate::detect::dns_tunnel`]): for each, the first question's name, whole, in
/// uncompressed wire form (length-prefixed labels and the root label, at most 255 bytes,
/// RFC 1035 §3.1; case as sent), and its QTYPE. Fixed size: at most [`MAX_SEEN`] queries and
/// [`SEEN_BYTES`] bytes of names; more are counted ([`SeenQueries::missed`]).
#[derive(Debug, Clone)]
pub struct SeenQueries {
    bytes: [u8; SEEN_BYTES],
    used: usize,
    /// (offset in `bytes`, length, QTYPE).
    list: ArrayVec<(u16, u8, u16), MAX_SEEN>,
    missed: u32,
}

impl Default for SeenQueries {
    fn default() -> Self {
        SeenQueries { bytes: [0; SEEN_BYTES], used: 0, list: ArrayVec::new(), missed: 0 }
    }
}

impl SeenQueries {
    /// The queries, oldest first: (name in wire form, QTYPE).
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], u16)> + '_ {
        self.list.iter().map(|&(at, len, qtype)| (&self.bytes[usize::from(at)..usize::from(at) + usize::from(len)], qtype))
    }

    /// How many queries are held.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// True when none is held.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Queries not held because the bounds were reached (saturating).
    pub fn missed(&self) -> u32 {
        self.missed
    }

    fn push(&mut self, name: &[u8], qtype: u16) {
        let end = self.used + name.len();
        if name.len() > MAX_NAME || end > SEEN_BYTES || self.list.is_full() {
            self.missed = self.missed.saturating_add(1);
            return;
        }
        self.bytes[self.used..end].copy_from_slice(name);
        self.list.push((self.used as u16, name.len() as u8, qtype));
        self.used = end;
    }

    fn clear(&mut self) {
        self.used = 0;
        self.list.clear();
        self.missed = 0;
    }
}

/// A name being built from the labels of a question (at most [`MAX_NAME`] bytes).
struct NameBuf {
    name: [u8; MAX_NAME],
    len: usize,
}

impl NameBuf {
    /// Appends a label (the walk never hands more than 255 bytes of a valid name).
    fn push_label(&mut self, label: &[u8]) {
        if let Some(dst) = self.name.get_mut(self.len..self.len + 1 + label.len()) {
            dst[0] = label.len() as u8;
            dst[1..].copy_from_slice(label);
            self.len += 1 + label.len();
        }
    }

    /// The name with its root label.
    fn finish(&mut self) -> &[u8] {
        if let Some(b) = self.name.get_mut(self.len) {
            *b = 0;
            self.len += 1;
        }
        &self.name[..self.len]
    }
}

/// A client query waiting for its answer: its key, and the UDP message size its requestor
/// accepts (bytes: 512, or the EDNS0 payload size it advertised, RFC 6891 §6.2.3-§6.2.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pending {
    key: QueryKey,
    udp_limit: u16,
}

/// One answer for policy: the question's name (lowercase presentation form without the
/// trailing dot, whole) and the addresses the chain from it ends at, each with its TTL (s,
/// the smallest along the chain).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answer {
    /// The question name.
    pub name: ArrayString<MAX_PRESENTATION>,
    /// (address, TTL in s).
    pub addrs: ArrayVec<(IpAddr, u32), MAX_ANSWER_ADDRS>,
}

/// What a flow's messages could not teach, by reason, since the last [`Dns::clear_learned`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Refusals {
    /// Responses that answer no outstanding query of this flow (wrong id or question, no
    /// query, already answered, or sent by the client's side).
    pub unsolicited: u32,
    /// A/AAAA records whose owner is not where the CNAME chain from the question ends.
    pub off_chain: u32,
    /// Question names longer than 253 characters.
    pub too_long: u32,
    /// Queries that displaced an older unanswered one, addresses beyond
    /// [`MAX_ANSWER_ADDRS`], answers beyond [`MAX_LEARNED`] not yet taken.
    pub overflow: u32,
    /// Responses to a pending query that are malformed anywhere (a record that does not
    /// parse, sections cut short, bytes after the last record, an attack on decoders): a
    /// resolver takes nothing from them, or not what Warden would read.
    pub malformed: u32,
}

/// The transport, as told by the first feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// One message per datagram.
    Udp,
    /// Length-prefixed messages in a stream.
    Tcp,
}

/// Per-session DNS state: fixed size, no heap.
#[derive(Debug, Clone, Default)]
pub struct Dns {
    mode: Option<Mode>,
    query: Option<Text<256>>,
    qtype: Option<u16>,
    qclass: Option<u16>,
    rcode: Option<u16>,
    truncated: bool,
    answers: ArrayVec<IpAddr, MAX_ADDRS>,
    queries: u32,
    responses: u32,
    malformed: u32,
    /// The first message's opcode.
    opcode: Option<u8>,
    /// Why a message's later sections (answer, authority, additional) were malformed, the
    /// first time one was ([`parser::later_malformation`], or `bad_record`).
    violation: Option<&'static str>,
    lost: bool,
    /// Queries of the client not answered yet, oldest first.
    pending: ArrayVec<Pending, MAX_PENDING>,
    /// Answers for policy not taken yet.
    learned: ArrayVec<Answer, MAX_LEARNED>,
    refused: Refusals,
    /// The client asked for a zone transfer (its large TCP answers are expected).
    transfer: bool,
    /// Client queries not taken yet ([`Self::queries`]).
    seen: SeenQueries,
    /// Threats found in this session's messages.
    threats: Threats,
}

impl Dns {
    /// Answers to this flow's own queries since the last [`Self::clear_learned`], and what
    /// was refused (see the module docs).
    pub fn learned(&self) -> (&[Answer], Refusals) {
        (&self.learned, self.refused)
    }

    /// Forgets the answers and counts [`Self::learned`] returned.
    pub fn clear_learned(&mut self) {
        self.learned.clear();
        self.refused = Refusals::default();
    }

    /// The queries the client sent since the last [`Self::clear_queries`], oldest first, and
    /// how many more were not kept: what the inspector feeds the DNS tunnelling detector after
    /// each frame ([`crate::detect::dns_tunnel`]), each query once. Queries of any opcode
    /// (QR clear) sent towards the server with a whole first question name count: a server
    /// that tunnels reads the name whatever the opcode.
    pub fn queries(&self) -> &SeenQueries {
        &self.seen
    }

    /// Forgets the queries [`Self::queries`] returned and their missed count.
    pub fn clear_queries(&mut self) {
        self.seen.clear();
    }

    /// Remembers a client's query (with the UDP size its requestor accepts), or takes the
    /// answer to one (see the module docs). For a response that answers a pending query,
    /// returns that query's UDP size limit; nothing is learned without `teach` (a message
    /// with an anomaly) nor from a UDP response over the limit.
    fn learn(&mut self, dir: Dir, m: &[u8], response: bool, udp_limit: u16, teach: bool) -> Option<u16> {
        let Ok(msg) = Message::from_octets(m) else { return None };
        let key = parser::query_key(&msg);
        if !response {
            if let (Dir::ToServer, Some(key)) = (dir, key) {
                if self.pending.is_full() {
                    self.pending.remove(0);
                    self.refused.overflow = self.refused.overflow.saturating_add(1);
                }
                self.pending.push(Pending { key, udp_limit });
            }
            return None;
        }
        let at = key.and_then(|k| self.pending.iter().position(|p| p.key == k));
        let (Dir::ToClient, Some(at)) = (dir, at) else {
            self.refused.unsolicited = self.refused.unsolicited.saturating_add(1);
            return None;
        };
        let limit = self.pending.remove(at).udp_limit;
        if !teach {
            self.refused.malformed = self.refused.malformed.saturating_add(1);
            return Some(limit);
        }
        if self.mode == Some(Mode::Udp) && m.len() > usize::from(limit) {
            return Some(limit);
        }
        if !parser::answers_usable(&msg) {
            return Some(limit);
        }
        let Some(q) = msg.first_question() else { return Some(limit) };
        let mut a = Answer::default();
        if write!(a.name, "{}", q.qname()).is_err() {
            self.refused.too_long = self.refused.too_long.saturating_add(1);
            return Some(limit);
        }
        a.name.make_ascii_lowercase();
        let mut over = 0u32;
        let off = parser::chain_addrs(&msg, |addr, ttl| {
            if a.addrs.iter().any(|(x, _)| *x == addr) {
                return;
            }
            if a.addrs.try_push((addr, ttl)).is_err() {
                over += 1;
            }
        });
        self.refused.off_chain = self.refused.off_chain.saturating_add(off);
        if a.addrs.is_empty() || a.name.is_empty() {
            self.refused.overflow = self.refused.overflow.saturating_add(over);
            return Some(limit);
        }
        if self.learned.try_push(a).is_err() {
            over += 1;
        }
        self.refused.overflow = self.refused.overflow.saturating_add(over);
        Some(limit)
    }

    /// Records one message; false when it cannot be a DNS message: shorter than the header, or
    /// announcing questions whose first one cannot be read (a message without questions that
    /// is neither an inverse query nor a DSO message, such as a FORMERR answer, is only counted
    /// malformed). Later sections that are malformed, cut short or followed by extra bytes make
    /// the session's `violation` (the first reason) and count the message malformed; nothing
    /// of such a message is learned for policy.
    ///
    /// The message is walked by [`parser::scan`] first; what attacks on decoders send is
    /// recorded as threats, and a message with a name that is not whole and safe is only
    /// counted (its first question kept when that one is whole): no name of it reaches
    /// `domain`, the answers learned for policy or the tunnelling detector.
    fn on_message(&mut self, dir: Dir, m: &[u8]) -> bool {
        let mut name = NameBuf { name: [0; MAX_NAME], len: 0 };
        let s = parser::scan(m, |label, _| name.push_label(label));
        let questions = m.get(4..6).map_or(0, |q| u16::from_be_bytes([q[0], q[1]]));
        if m.len() < parser::HEADER || (s.question.is_none() && questions > 0) {
            self.malformed = self.malformed.saturating_add(1);
            return m.len() >= parser::HEADER && questions == 0;
        }
        self.opcode.get_or_insert(s.opcode);
        self.message_threats(dir, m, &s);
        if !s.response {
            if let Some(q) = s.question.filter(|q| q.clean) {
                // Any opcode's question name can carry tunnelled data to a server that reads
                // it (STATUS, NOTIFY and IQUERY included).
                if dir == Dir::ToServer {
                    self.seen.push(name.finish(), q.qtype);
                }
            }
        }
        let later = parser::later_malformation(&s, m.len());
        if let Some(r) = later {
            self.violation.get_or_insert(r);
        }
        if s.names_unsafe {
            self.malformed = self.malformed.saturating_add(1);
            if self.query.is_none() {
                if let Some(q) = s.question.filter(|q| q.clean) {
                    self.query = Some(presentation(m, q.name_at));
                    self.qtype = Some(q.qtype);
                    self.qclass = Some(q.qclass);
                }
            }
            if s.response {
                self.responses = self.responses.saturating_add(1);
            } else {
                self.queries = self.queries.saturating_add(1);
            }
            return true;
        }
        self.on_safe_message(dir, m, &s, later.is_some())
    }

    /// Records the threats a message carries by itself ([`parser::Scan`]): loop pointers,
    /// overflows, zone transfer and NULL queries, a TCP response near 64 KiB that no zone
    /// transfer asked for.
    fn message_threats(&mut self, dir: Dir, m: &[u8], s: &Scan) {
        for a in [s.loop_pointer, s.overflow].into_iter().flatten() {
            let id = match a.kind {
                AnomalyKind::LoopPointer => ThreatId::DnsLoopPointer,
                AnomalyKind::Overflow => ThreatId::DnsOverflow,
            };
            self.threats.record(id, dir, a.reason, anomaly_evidence(&a, m.len()).as_bytes());
        }
        if s.response {
            // Whatever its questions (a zone transfer's later messages may have none).
            if self.mode == Some(Mode::Tcp) && m.len() > TCP_MAX_RESPONSE && !self.transfer {
                let mut ev = Text::<EVIDENCE>::new();
                let _ = write!(ev, "{}-byte response over TCP, no zone transfer asked", m.len());
                self.threats.record(ThreatId::DnsOverflow, dir, "tcp_over_65280", ev.as_bytes());
            }
            return;
        }
        if let Some((at, qtype)) = s.transfer {
            self.transfer = true;
            let (reason, t) = if qtype == 252 { ("axfr", "AXFR") } else { ("ixfr", "IXFR") };
            let mut ev = Text::<EVIDENCE>::new();
            let _ = write!(ev, "{t} {}", presentation(m, at));
            self.threats.record(ThreatId::DnsZoneTransfer, dir, reason, ev.as_bytes());
        }
        if let Some(at) = s.null_type {
            let mut ev = Text::<EVIDENCE>::new();
            let _ = write!(ev, "NULL {}", presentation(m, at));
            self.threats.record(ThreatId::DnsNullType, dir, "null_query", ev.as_bytes());
        }
    }

    /// A UDP response larger than the query it answers accepts.
    fn size_threats(&mut self, dir: Dir, m: &[u8], s: &Scan, udp_limit: Option<u16>) {
        if !s.response {
            return;
        }
        let mut ev = Text::<EVIDENCE>::new();
        if let (Some(Mode::Udp), Some(limit)) = (self.mode, udp_limit) {
            if m.len() > usize::from(limit) {
                let _ = write!(ev, "{}-byte response over UDP, the query accepts {limit}", m.len());
                let reason = if usize::from(limit) == UDP_PLAIN { "udp_over_512" } else { "udp_over_edns_size" };
                self.threats.record(ThreatId::DnsOverflow, dir, reason, ev.as_bytes());
            }
        }
    }

    /// Records a message whose names are all whole and safe (`domain` decodes it).
    fn on_safe_message(&mut self, dir: Dir, m: &[u8], scan: &Scan, later: bool) -> bool {
        let want_question = self.query.is_none();
        let mut question = None;
        let answers = &mut self.answers;
        let summary = parser::message(
            m,
            |name, qtype, qclass| {
                if want_question {
                    let mut s = Text::<256>::new();
                    // Truncates silently past 256 bytes (escapes can lengthen a name).
                    let _ = write!(s, "{name}");
                    if s.is_empty() {
                        s.push('.');
                    }
                    s.make_ascii_lowercase();
                    question = Some((s, qtype.to_int(), qclass.to_int()));
                }
            },
            |addr| {
                if answers.len() < MAX_ADDRS && !answers.contains(&addr) {
                    answers.push(addr);
                }
                answers.len() < MAX_ADDRS
            },
        );
        let Some(s) = summary else {
            let questions = m.get(4..6).map_or(0, |q| u16::from_be_bytes([q[0], q[1]]));
            if questions == 0 && matches!(parser::questionless(m, m.len()), Parse::Ok(..)) {
                // An inverse query or a DSO message.
                if scan.response {
                    self.responses = self.responses.saturating_add(1);
                } else {
                    self.queries = self.queries.saturating_add(1);
                }
                return true;
            }
            self.malformed = self.malformed.saturating_add(1);
            return m.len() >= parser::HEADER && questions == 0;
        };
        if s.bad_record {
            self.violation.get_or_insert("bad_record");
        }
        if s.bad_record || later {
            self.malformed = self.malformed.saturating_add(1);
        }
        if let Some((name, t, c)) = question {
            self.query = Some(name);
            self.qtype = Some(t);
            self.qclass = Some(c);
        }
        if s.response {
            self.responses = self.responses.saturating_add(1);
            if self.rcode.is_none() {
                self.rcode = Some(s.rcode);
                self.truncated = s.truncated;
            }
        } else {
            self.queries = self.queries.saturating_add(1);
        }
        let accepts = scan.edns_payload.map_or(UDP_PLAIN as u16, |p| p.max(UDP_PLAIN as u16));
        let hostile = scan.loop_pointer.is_some() || scan.overflow.is_some();
        let limit = self.learn(dir, m, s.response, accepts, !hostile && !later && !s.bad_record);
        self.size_threats(dir, m, scan, limit);
        true
    }
}

/// The name at `at` in presentation form (lowercase, dots between labels, bytes other than
/// letters, digits, `-` and `_` as `\DDD`, RFC 1035 §5.1), cut at 256 bytes; `.` for the
/// root. Walks with [`parser::walk_name`], so any name is safe to show.
fn presentation(m: &[u8], at: usize) -> Text<256> {
    let mut out = Text::<256>::new();
    parser::walk_name(m, at, |label| {
        for &c in label {
            let c = c.to_ascii_lowercase();
            let _ = if c.is_ascii_alphanumeric() || c == b'-' || c == b'_' {
                out.try_push(char::from(c)).map_err(|_| std::fmt::Error)
            } else {
                write!(out, "\\{c:03}")
            };
        }
        let _ = out.try_push('.');
    });
    if out.len() > 1 && out.ends_with('.') {
        out.pop();
    }
    if out.is_empty() {
        out.push('.');
    }
    out
}

/// The evidence of an anomaly: where, what, in how long a message.
fn anomaly_evidence(a: &Anomaly, len: usize) -> Text<EVIDENCE> {
    let mut ev = Text::<EVIDENCE>::new();
    let _ = match a.kind {
        AnomalyKind::LoopPointer if a.reason == "pointer_chain" => {
            write!(ev, "{} pointers in a name, at offset {} of a {len}-byte message", a.value, a.at)
        }
        AnomalyKind::LoopPointer if a.reason == "pointer_work" => {
            write!(ev, "{} name steps by offset {} of a {len}-byte message", a.value, a.at)
        }
        AnomalyKind::LoopPointer => write!(ev, "pointer at offset {} to {} in a {len}-byte message", a.at, a.value),
        AnomalyKind::Overflow => match a.reason {
            "label_over_63" => write!(ev, "label of {} bytes at offset {} of a {len}-byte message", a.value, a.at),
            "name_over_255" => write!(ev, "name of {}+ bytes at offset {} of a {len}-byte message", a.value, a.at),
            "counts_past_end" => write!(ev, "{} entries counted, the {len}-byte message ends at offset {}", a.value, a.at),
            "rdata_past_end" => write!(ev, "RDLENGTH {} at offset {} of a {len}-byte message", a.value, a.at),
            "trailing_bytes" => write!(ev, "{} bytes after the last record at offset {}", a.value, a.at),
            _ => write!(ev, "{} at offset {} of a {len}-byte message", a.reason, a.at),
        },
    };
    ev
}

/// Name of a query type ("A", "AAAA", ..., "TYPE65" style for unknown ones).
pub fn qtype_name(t: u16) -> String {
    domain::base::iana::Rtype::from_int(t).to_string()
}

/// Name of an rcode ("NOERROR", "NXDOMAIN", ...; the number for unknown ones).
pub fn rcode_name(r: u16) -> String {
    domain::base::iana::OptRcode::masked_from_int(r).to_string()
}

impl AppParser for Dns {
    const APP: App = App::Dns;
    const PORTS: &'static [u16] = &[53, 5353, 5355];
    const TRANSPORT: Transport = Transport::Both;

    fn probe(_dir: Dir, data: &[u8]) -> Probe {
        match parser::probe(data) {
            Parse::Ok(..) => Probe::Match,
            Parse::Incomplete(_) => Probe::NeedMore,
            Parse::Invalid => Probe::NoMatch,
        }
    }

    fn feed(&mut self, dir: Dir, data: &[u8]) -> Feed {
        if self.lost {
            return Feed::Done;
        }
        let mode = *self.mode.get_or_insert_with(|| {
            if let Parse::Ok(..) = parser::message_prefix(data, data.len()) {
                Mode::Udp
            } else if parser::tcp_plausible(data) {
                Mode::Tcp
            } else {
                Mode::Udp
            }
        });
        if mode == Mode::Udp {
            return if self.on_message(dir, data) { Feed::Consumed(data.len()) } else { Feed::Invalid { consumed: 0 } };
        }
        let mut off = 0;
        loop {
            let rest = &data[off..];
            if rest.is_empty() {
                return Feed::Consumed(off);
            }
            let Some(len) = rest.get(..2).map(|l| usize::from(u16::from_be_bytes([l[0], l[1]]))) else {
                return Feed::Need { consumed: off, at_least: 2 };
            };
            if len < parser::HEADER {
                // Not a message: the stream stopped being DNS.
                self.malformed = self.malformed.saturating_add(1);
                self.lost = true;
                return Feed::Invalid { consumed: off };
            }
            let Some(m) = rest.get(2..2 + len) else {
                return Feed::Need { consumed: off, at_least: 2 + len };
            };
            if !self.on_message(dir, m) {
                self.lost = true;
                return Feed::Invalid { consumed: off };
            }
            off += 2 + len;
        }
    }

    fn gap(&mut self, _dir: Dir, _len: usize) -> bool {
        // Over TCP the length framing is lost; over UDP there are no gaps.
        if self.mode == Some(Mode::Tcp) && !self.lost {
            self.lost = true;
            return false;
        }
        true
    }

    fn l7(&self, out: &mut Map<String, Value>) {
        if let Some(q) = &self.query {
            out.insert("query".into(), q.as_str().into());
        }
        if let Some(t) = self.qtype {
            out.insert("qtype".into(), qtype_name(t).into());
            out.insert("qtype_id".into(), t.into());
        }
        if let Some(c) = self.qclass {
            if c & 0x7fff != 1 {
                out.insert("qclass".into(), c.into());
            }
        }
        if let Some(r) = self.rcode {
            out.insert("rcode".into(), rcode_name(r).into());
            out.insert("rcode_id".into(), r.into());
        }
        if !self.answers.is_empty() {
            out.insert("answers".into(), self.answers.iter().map(|a| Value::from(a.to_string())).collect());
        }
        if self.truncated {
            out.insert("truncated".into(), true.into());
        }
        if let Some(op) = self.opcode {
            out.insert("opcode".into(), parser::opcode_name(op).into());
            out.insert("opcode_id".into(), op.into());
        }
        out.insert("queries".into(), self.queries.into());
        out.insert("responses".into(), self.responses.into());
        if self.malformed > 0 {
            out.insert("malformed".into(), self.malformed.into());
        }
        if let Some(r) = self.violation {
            out.insert("violation".into(), true.into());
            out.insert("violation_reason".into(), r.into());
        }
    }

    fn threats(&self) -> Option<&Threats> {
        Some(&self.threats)
    }
}

#[cfg(test)]
mod tests;
