//! DNS over UDP (one message per datagram) and TCP (2-byte length prefix, RFC 1035 §4.2.2):
//! the first query name and type, the rcode of the first response, the first A/AAAA answer
//! addresses, and query/response counts; and, for `fqdn` policy rules, the names answers give
//! to addresses ([`Dns::learned`]).
//!
//! **Names for policy.** Only what a resolver itself would accept is learned: a response from
//! the server side that answers a query the client sent on the same flow (transaction id and
//! question name, type and class match one of its last [`MAX_PENDING`] unanswered queries,
//! RFC 5452 §9.1), NOERROR and not truncated, gives its question name to the A/AAAA addresses
//! where the CNAME chain from the question ends (`parser::chain_addrs`), with the smallest
//! TTL along the chain. Each query is answered once. The name is kept whole (lowercase
//! presentation form, at most 253 characters); a longer one is refused, never cut. Everything
//! refused is counted ([`Refusals`]); the inspector hands the answers to the shared name
//! table ([`crate::names`]), which decides what it stores.
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
use parser::{Parse, QueryKey, MAX_PRESENTATION};

/// Distinct A/AAAA answer addresses kept (in order of appearance across responses).
pub const MAX_ADDRS: usize = 8;
/// Unanswered queries remembered per flow (a new one beyond replaces the oldest, counted).
pub const MAX_PENDING: usize = 8;
/// Addresses one answer gives its name (more are counted as [`Refusals::overflow`]).
pub const MAX_ANSWER_ADDRS: usize = 16;
/// Answers held until the inspector takes them (after each frame from the server).
pub const MAX_LEARNED: usize = 2;

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
    lost: bool,
    /// Queries of the client not answered yet, oldest first.
    pending: ArrayVec<QueryKey, MAX_PENDING>,
    /// Answers for policy not taken yet.
    learned: ArrayVec<Answer, MAX_LEARNED>,
    refused: Refusals,
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

    /// Remembers a client's query, or takes the answer to one (see the module docs).
    fn learn(&mut self, dir: Dir, m: &[u8], response: bool) {
        let Ok(msg) = Message::from_octets(m) else { return };
        let key = parser::query_key(&msg);
        if !response {
            if let (Dir::ToServer, Some(k)) = (dir, key) {
                if self.pending.is_full() {
                    self.pending.remove(0);
                    self.refused.overflow = self.refused.overflow.saturating_add(1);
                }
                self.pending.push(k);
            }
            return;
        }
        let at = key.and_then(|k| self.pending.iter().position(|p| *p == k));
        let (Dir::ToClient, Some(at)) = (dir, at) else {
            self.refused.unsolicited = self.refused.unsolicited.saturating_add(1);
            return;
        };
        self.pending.remove(at);
        if !parser::answers_usable(&msg) {
            return;
        }
        let Some(q) = msg.first_question() else { return };
        let mut a = Answer::default();
        if write!(a.name, "{}", q.qname()).is_err() {
            self.refused.too_long = self.refused.too_long.saturating_add(1);
            return;
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
            return;
        }
        if self.learned.try_push(a).is_err() {
            over += 1;
        }
        self.refused.overflow = self.refused.overflow.saturating_add(over);
    }

    /// Records one message; false when it cannot be a DNS message: shorter than the header, or
    /// announcing questions that do not parse (a message without questions that `domain` does
    /// not read, such as a FORMERR answer, is only counted malformed).
    fn on_message(&mut self, dir: Dir, m: &[u8]) -> bool {
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
            self.malformed = self.malformed.saturating_add(1);
            let questions = m.get(4..6).map_or(0, |q| u16::from_be_bytes([q[0], q[1]]));
            return m.len() >= parser::HEADER && questions == 0;
        };
        if s.bad_record {
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
        self.learn(dir, m, s.response);
        true
    }
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
        out.insert("queries".into(), self.queries.into());
        out.insert("responses".into(), self.responses.into());
        if self.malformed > 0 {
            out.insert("malformed".into(), self.malformed.into());
        }
    }
}

#[cfg(test)]
mod tests;
