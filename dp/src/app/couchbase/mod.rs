//! Couchbase / memcached binary protocol over TCP (memcached BinaryProtocolRevamped §"Packet
//! Structure", §"Commands"; Couchbase kv_engine `docs/BinaryProtocol.md` §"Flexible framing
//! extras", `docs/SASL.md`, HELLO in `docs/BinaryProtocol.md` §"0x1f HELO"): the first 8
//! distinct opcodes, the SASL mechanism of SASL_AUTH (its key), the HELLO agent name (its key)
//! and the number of requested features (2 bytes each in its value), request/response counts and
//! the number of error responses (status != 0) with the first error status.
//!
//! Messages are length-framed: the parser consumes each whole message as it arrives and, for
//! values larger than the presented bytes, remembers how many body bytes still have to be skipped
//! (no buffering). A gap loses the framing of that direction. Own parser, see `parser.rs`.

pub mod parser;

use arrayvec::ArrayVec;
use serde_json::{Map, Value};

use super::{text, App, AppParser, Dir, Feed, Probe, Text, Transport};
use parser::{opcode_name, Parse};

/// Distinct opcodes kept.
pub const MAX_OPCODES: usize = 8;

/// Per-session state: fixed size, no heap.
#[derive(Debug, Clone, Default)]
pub struct Couchbase {
    opcodes: ArrayVec<u8, MAX_OPCODES>,
    sasl_mech: Option<Text<32>>,
    agent: Option<Text<128>>,
    hello_features: Option<u32>,
    requests: u32,
    responses: u32,
    errors: u32,
    first_error: Option<u16>,
    skip: [usize; 2],
    lost: [bool; 2],
}

impl Couchbase {
    fn on_header(&mut self, h: &parser::Header<'_>) {
        if h.is_response() {
            self.responses = self.responses.saturating_add(1);
            if h.status != 0 {
                self.errors = self.errors.saturating_add(1);
                self.first_error.get_or_insert(h.status);
            }
            return;
        }
        self.requests = self.requests.saturating_add(1);
        if !self.opcodes.contains(&h.opcode) && self.opcodes.len() < MAX_OPCODES {
            self.opcodes.push(h.opcode);
        }
        match h.opcode {
            0x1f if self.agent.is_none() => {
                self.agent = Some(text(h.key));
                let value = h.body.saturating_sub(h.value_at - parser::HEADER);
                self.hello_features = Some((value / 2) as u32);
            }
            0x21 if self.sasl_mech.is_none() => self.sasl_mech = Some(text(h.key)),
            _ => {}
        }
    }
}

impl AppParser for Couchbase {
    const APP: App = App::Couchbase;
    const PORTS: &'static [u16] = &[11210, 11207, 11211];
    const TRANSPORT: Transport = Transport::Tcp;

    fn probe(_dir: Dir, data: &[u8]) -> Probe {
        match parser::header(data) {
            Parse::Ok(..) if data.len() >= parser::HEADER => Probe::Match,
            Parse::Ok(..) | Parse::Incomplete(_) => Probe::NeedMore,
            Parse::Invalid => Probe::NoMatch,
        }
    }

    fn feed(&mut self, dir: Dir, data: &[u8]) -> Feed {
        let d = dir as usize;
        if self.lost[d] {
            return Feed::Done;
        }
        let mut off = self.skip[d].min(data.len());
        self.skip[d] -= off;
        loop {
            let rest = &data[off..];
            if rest.is_empty() {
                return Feed::Consumed(off);
            }
            match parser::header(rest) {
                Parse::Ok(h, _) => {
                    self.on_header(&h);
                    let len = h.len();
                    if len <= rest.len() {
                        off += len;
                    } else {
                        self.skip[d] = len - rest.len();
                        return Feed::Consumed(data.len());
                    }
                }
                Parse::Incomplete(k) => return Feed::Need { consumed: off, at_least: k },
                // No magic, an opcode or data type the protocol lacks, an impossible length:
                // not the binary protocol.
                Parse::Invalid => {
                    self.lost[d] = true;
                    return Feed::Invalid { consumed: off };
                }
            }
        }
    }

    fn gap(&mut self, dir: Dir, _len: usize) -> bool {
        // Length-framed: message boundaries are unknown after a gap.
        let was = self.lost[dir as usize];
        self.lost[dir as usize] = true;
        was
    }

    fn l7(&self, out: &mut Map<String, Value>) {
        let ops: Vec<Value> = self
            .opcodes
            .iter()
            .map(|o| opcode_name(*o).map_or_else(|| Value::from(*o), Value::from))
            .collect();
        out.insert("opcodes".into(), ops.into());
        if let Some(m) = &self.sasl_mech {
            out.insert("sasl_mechanism".into(), m.as_str().into());
        }
        if let Some(a) = &self.agent {
            out.insert("agent".into(), a.as_str().into());
        }
        if let Some(n) = self.hello_features {
            out.insert("hello_features".into(), n.into());
        }
        out.insert("requests".into(), self.requests.into());
        out.insert("responses".into(), self.responses.into());
        out.insert("errors".into(), self.errors.into());
        if let Some(s) = self.first_error {
            out.insert("first_error_status".into(), s.into());
        }
        if self.lost.iter().any(|l| *l) {
            out.insert("lost_sync".into(), true.into());
        }
    }
}

#[cfg(test)]
mod tests;
