//! Kafka wire protocol (kafka.apache.org/protocol: "Common Request and Response Structure",
//! "Request Header v0-v2", "Response Header v0-v1", "Protocol Primitive Types", "Api Keys"; the
//! Produce and Fetch request schemas for topic names). See [`parser`] for the pure functions.
//!
//! Written here rather than with the `kafka-protocol` crate: it decodes whole messages into
//! owned values (`Vec`s, `StrBytes`, `IndexMap`s) from a complete `Bytes` buffer, so a 100 MB
//! Produce would have to be buffered and every message would allocate. This module is a header
//! walker: it reads the 4-byte size, parses at most the first [`HEAD`] bytes of each message
//! (header, client id, first topic) and then skips the rest of the message by counting bytes,
//! so nothing is buffered beyond [`HEAD`] bytes.
//!
//! Detection: a client request is recognised by its header (size `10..=100 MB`, api key
//! `0..=74`, api version `0..=20`, correlation id in `0..2^24` (clients count up from 0 or 1 per connection, so a
//! first request has a small one), a null or printable client id of at
//! most 1 KB); Produce and Fetch requests (versions that carry topic names) must also show a
//! valid first topic name (`[a-zA-Z0-9._-]{1,249}`) within their first 512 bytes. A response alone (size + correlation id) carries too little to identify Kafka, so
//! the server direction never matches by itself; the client always speaks first.
//!
//! **Mid-stream** ([`MIDSTREAM`], [`crate::app::midstream`]): a session picked up without its
//! first request is Kafka when, at turn boundaries, one side sends a request (the header above,
//! any correlation id) and the other side's next message is a response (size, then
//! correlation id: "Response Header v0") carrying that request's correlation id. The response
//! says its sender is the server. A response alone still proves nothing.
//!
//! Extracted: API keys and names (first [`MAX_KEYS`] distinct), the api version, correlation id
//! and client id (128 bytes) of the first request, request and response counts, responses
//! matched to a pending request by correlation id (up to [`MAX_PENDING`] outstanding), and the
//! first topic name of Produce (v0-v12) and Fetch (v0-v12) requests (first [`MAX_TOPICS`]
//! distinct, 128 bytes each; only the first topic of each request is read). Request header v0
//! (ControlledShutdown v0, no client id) is not told apart from v1. After a gap inside a message
//! being skipped the skip is shortened; any other gap stops that direction.

pub mod parser;

use serde_json::{Map, Value};

use super::{text, App, AppParser, Dir, Feed, Probe, Text, Transport};
use parser::{Parse, RequestHeader};

/// Produce and Fetch requests must show their first topic name within this many bytes to match.
const PROBE_TOPIC_WITHIN: usize = 512;

/// Bytes of each message looked at (header, client id, first topic); the rest is skipped.
pub const HEAD: usize = 1024;
/// Distinct API keys remembered.
pub const MAX_KEYS: usize = 8;
/// Distinct topic names remembered.
pub const MAX_TOPICS: usize = 4;
/// Outstanding requests remembered for correlation.
pub const MAX_PENDING: usize = 32;

/// First request's header fields.
#[derive(Debug, Clone, Copy, Default)]
struct First {
    api_key: i16,
    api_version: i16,
    correlation_id: i32,
}

/// Per-session Kafka state: fixed size, no heap.
#[derive(Debug, Clone, Default)]
pub struct Kafka {
    /// Bytes still to skip per direction (rest of a message).
    skip: [u64; 2],
    stopped: [bool; 2],
    keys: [i16; MAX_KEYS],
    n_keys: usize,
    first: Option<First>,
    client_id: Option<Text<128>>,
    topics: [Text<128>; MAX_TOPICS],
    n_topics: usize,
    pending: [i32; MAX_PENDING],
    n_pending: usize,
    requests: u64,
    responses: u64,
    matched: u64,
    violation: bool,
    gap: bool,
}

impl Kafka {
    /// API keys seen (first [`MAX_KEYS`] distinct).
    pub fn api_keys(&self) -> &[i16] {
        self.keys.get(..self.n_keys).unwrap_or(&[])
    }

    /// Responses matched to a request by correlation id.
    pub fn matched(&self) -> u64 {
        self.matched
    }

    fn on_request(&mut self, b: &[u8]) -> bool {
        let Parse::Ok(h, end) = parser::request_header(b) else { return false };
        self.requests = self.requests.saturating_add(1);
        if self.first.is_none() {
            self.first = Some(First {
                api_key: h.api_key,
                api_version: h.api_version,
                correlation_id: h.correlation_id,
            });
            self.client_id = h.client_id.map(text);
        }
        if self.n_keys < MAX_KEYS && !self.api_keys().contains(&h.api_key) {
            self.keys[self.n_keys] = h.api_key;
            self.n_keys += 1;
        }
        if self.n_pending < MAX_PENDING {
            self.pending[self.n_pending] = h.correlation_id;
            self.n_pending += 1;
        }
        if let Some(t) = parser::first_topic(b, &h, end) {
            let t: Text<128> = text(t);
            if self.n_topics < MAX_TOPICS && !self.topics[..self.n_topics].contains(&t) {
                self.topics[self.n_topics] = t;
                self.n_topics += 1;
            }
        }
        true
    }

    fn on_response(&mut self, b: &[u8]) -> bool {
        let Some(corr) = parser::be32(b, 0) else { return false };
        self.responses = self.responses.saturating_add(1);
        if let Some(i) = self.pending[..self.n_pending].iter().position(|&c| c == corr) {
            self.pending.copy_within(i + 1..self.n_pending, i);
            self.n_pending -= 1;
            self.matched = self.matched.saturating_add(1);
        }
        true
    }
}

/// Mid-stream framing of Kafka (module docs): at a turn boundary, a message whose size field
/// is plausible, read both as a request (if its header is one) and as a response.
pub fn mid_head(b: &[u8], boundary: bool) -> crate::app::midstream::Head {
    use crate::app::midstream::{Head, Msg};
    if !boundary || b.first().is_some_and(|&c| c > 0x06) {
        return Head::No;
    }
    let size = match parser::size(b, parser::MIN_RESPONSE) {
        Parse::Ok(s, _) => s,
        Parse::Incomplete(k) => return Head::Need(k),
        Parse::Invalid => return Head::No,
    };
    let m = &b[4..b.len().min(4 + size)];
    let Some(answers) = parser::be32(m, 0) else { return Head::Need(8) };
    let hi_ok = |off: usize, max: i16| m.get(off) == Some(&0) && m.get(off + 1).is_some_and(|&c| i16::from(c) <= max);
    let mut request = None;
    if size >= parser::MIN_REQUEST && hi_ok(0, parser::MAX_API_KEY) && hi_ok(2, parser::MAX_API_VERSION) {
        let (Some(corr), Some(len)) = (parser::be32(m, 4), parser::be16(m, 8)) else {
            return Head::Need(4 + parser::MIN_REQUEST);
        };
        let end = match len {
            -1 => Some(parser::MIN_REQUEST),
            0..=1024 => Some(parser::MIN_REQUEST + len as usize),
            _ => None,
        };
        if let Some(end) = end.filter(|&e| e <= size && corr >= 0) {
            match m.get(parser::MIN_REQUEST..end) {
                Some(id) if id.iter().all(|&c| parser::printable(c)) => request = Some(corr as u32),
                Some(_) => {}
                None => return Head::Need(4 + end),
            }
        }
    }
    Head::Msg(Msg {
        len: (4 + size) as u32,
        request,
        answers: Some(answers as u32),
        starts: true,
        ends: true,
        ..Msg::default()
    })
}

/// How Kafka is recognised mid-stream (module docs): a response matched to a request, never a
/// chain.
pub const MIDSTREAM: crate::app::midstream::Framing =
    crate::app::midstream::Framing { head: mid_head, follows: |_, _| true, chain: 0 };

/// Probe of a client's first request.
fn probe_request(b: &[u8]) -> Probe {
    // Size <= 100 MB: the first byte is at most 0x06.
    if b.first().is_some_and(|&c| c > 0x06) {
        return Probe::NoMatch;
    }
    let size = match parser::size(b, parser::MIN_REQUEST) {
        Parse::Ok(s, _) => s,
        Parse::Incomplete(_) => return Probe::NeedMore,
        Parse::Invalid => return Probe::NoMatch,
    };
    let m = &b[4..b.len().min(4 + size)];
    // Check each field as soon as its bytes are there (prefixes decide the same way).
    let hi_ok = |off: usize, max: u8| m.get(off).is_none_or(|&c| c == 0) && m.get(off + 1).is_none_or(|&c| c <= max);
    if !hi_ok(0, parser::MAX_API_KEY as u8) || !hi_ok(2, parser::MAX_API_VERSION as u8) {
        return Probe::NoMatch;
    }
    if m.get(4).is_some_and(|&c| c != 0) {
        // Correlation ids count up from 0 or 1 per connection: the first one is below 2^24.
        return Probe::NoMatch;
    }
    let Some(len) = parser::be16(m, 8) else {
        // Client id length: -1 (0xffff) or at most MAX_PROBE_CLIENT_ID (high byte <= 4).
        return match m.get(8) {
            Some(&c) if c != 0xff && c > 0x04 => Probe::NoMatch,
            _ => Probe::NeedMore,
        };
    };
    let end = if len == -1 {
        parser::MIN_REQUEST
    } else if (0..=parser::MAX_PROBE_CLIENT_ID as i16).contains(&len) {
        parser::MIN_REQUEST + len as usize
    } else {
        return Probe::NoMatch;
    };
    if end > size {
        return Probe::NoMatch;
    }
    let id = m.get(parser::MIN_REQUEST..end.min(m.len())).unwrap_or(&[]);
    if !id.iter().all(|&c| parser::printable(c)) {
        return Probe::NoMatch;
    }
    if m.len() < end {
        return Probe::NeedMore;
    }
    // Produce and Fetch (versions with topic names): a header alone is too little (ZooKeeper's
    // ConnectRequest reads as Produce v0), so the first topic name must be there and valid.
    let (Some(key), Some(version)) = (parser::be16(m, 0), parser::be16(m, 2)) else { return Probe::NeedMore };
    if !parser::names_topics(key, version) {
        return Probe::Match;
    }
    match parser::first_topic(m, &RequestHeader { api_key: key, api_version: version, correlation_id: 0, client_id: None }, end) {
        Some(t) if parser::topic_name(t) => Probe::Match,
        Some(_) => Probe::NoMatch,
        None if m.len() < size && m.len() < PROBE_TOPIC_WITHIN => Probe::NeedMore,
        None => Probe::NoMatch,
    }
}

impl AppParser for Kafka {
    const APP: App = App::Kafka;
    const PORTS: &'static [u16] = &[9092, 9093, 9094];
    const TRANSPORT: Transport = Transport::Tcp;
    const MIDSTREAM: Option<crate::app::midstream::Framing> = Some(MIDSTREAM);

    fn probe(dir: Dir, data: &[u8]) -> Probe {
        match dir {
            Dir::ToServer => probe_request(data),
            Dir::ToClient => Probe::NoMatch,
        }
    }

    fn feed(&mut self, dir: Dir, data: &[u8]) -> Feed {
        let d = dir as usize;
        let mut off = 0;
        loop {
            if self.stopped[d] {
                return Feed::Consumed(data.len());
            }
            if super::skip_body(&mut self.skip[d], data, &mut off) {
                return Feed::Consumed(off);
            }
            let rest = &data[off..];
            if rest.is_empty() {
                return Feed::Consumed(off);
            }
            let min = if dir == Dir::ToServer { parser::MIN_REQUEST } else { parser::MIN_RESPONSE };
            let size = match parser::size(rest, min) {
                Parse::Ok(s, _) => s,
                Parse::Incomplete(k) => return Feed::Need { consumed: off, at_least: k },
                // Negative, too small or over the broker's `socket.request.max.bytes`: the
                // broker closes the connection; not Kafka.
                Parse::Invalid => {
                    self.violation = true;
                    self.stopped[d] = true;
                    return Feed::Invalid { consumed: off };
                }
            };
            let total = 4 + size;
            let window = total.min(HEAD);
            let Some(head) = rest.get(4..window) else {
                return Feed::Need { consumed: off, at_least: window };
            };
            let ok = if dir == Dir::ToServer { self.on_request(head) } else { self.on_response(head) };
            if !ok {
                self.violation = true;
                self.stopped[d] = true;
                return Feed::Invalid { consumed: off };
            }
            let take = total.min(rest.len());
            off += take;
            self.skip[d] = (total - take) as u64;
        }
    }

    fn gap(&mut self, dir: Dir, len: usize) -> bool {
        let d = dir as usize;
        self.gap = true;
        if self.stopped[d] {
            return true;
        }
        if !super::skip_gap(&mut self.skip[d], len) {
            self.stopped[d] = true;
            return false;
        }
        true
    }

    fn l7(&self, out: &mut Map<String, Value>) {
        out.insert("api_keys".into(), self.api_keys().iter().map(|&k| Value::from(k)).collect());
        out.insert(
            "api_names".into(),
            self.api_keys().iter().map(|&k| Value::from(parser::api_name(k).unwrap_or("unknown"))).collect(),
        );
        if let Some(f) = self.first {
            out.insert("api_version".into(), f.api_version.into());
            out.insert("correlation_id".into(), f.correlation_id.into());
            out.insert("first_api_key".into(), f.api_key.into());
        }
        if let Some(c) = &self.client_id {
            out.insert("client_id".into(), c.as_str().into());
        }
        if self.n_topics > 0 {
            out.insert("topics".into(), self.topics[..self.n_topics].iter().map(|t| Value::from(t.as_str())).collect());
        }
        out.insert("requests".into(), self.requests.into());
        out.insert("responses".into(), self.responses.into());
        out.insert("matched".into(), self.matched.into());
        if self.violation {
            out.insert("violation".into(), true.into());
        }
        if self.gap {
            out.insert("gap".into(), true.into());
        }
    }
}

#[cfg(test)]
mod tests;
