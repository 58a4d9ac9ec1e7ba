//! DNS over UDP (one message per datagram) and TCP (2-byte length prefix, RFC 1035 §4.2.2):
//! the first query name and type, the rcode of the first response, the first A/AAAA answer
//! addresses, and query/response counts (for FQDN policy rules).
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

use arrayvec::ArrayVec;
use serde_json::{Map, Value};

use super::{App, AppParser, Dir, Feed, Probe, Text, Transport};
use parser::Parse;

/// Distinct A/AAAA answer addresses kept (in order of appearance across responses).
pub const MAX_ADDRS: usize = 8;

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
}

impl Dns {
    /// The first question's name and the A/AAAA addresses the answers gave it (at most
    /// [`MAX_ADDRS`]), for the policy's DNS name cache.
    pub fn resolved(&self) -> Option<(&str, &[IpAddr])> {
        let q = self.query.as_ref()?;
        if self.answers.is_empty() {
            return None;
        }
        Some((q.as_str(), &self.answers))
    }

    /// Records one message; false when it cannot be a DNS message: shorter than the header, or
    /// announcing questions that do not parse (a message without questions that `domain` does
    /// not read, such as a FORMERR answer, is only counted malformed).
    fn on_message(&mut self, m: &[u8]) -> bool {
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

    fn feed(&mut self, _dir: Dir, data: &[u8]) -> Feed {
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
            return if self.on_message(data) { Feed::Consumed(data.len()) } else { Feed::Invalid { consumed: 0 } };
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
            if !self.on_message(m) {
                self.lost = true;
                return Feed::Invalid { consumed: off };
            }
            off += 2 + len;
        }
    }

    fn gap(&mut self, _dir: Dir, _len: usize) {
        // Over TCP the length framing is lost; over UDP there are no gaps.
        if self.mode == Some(Mode::Tcp) {
            self.lost = true;
        }
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
