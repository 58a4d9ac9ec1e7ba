//! TFTP (RFC 1350; options RFC 2347, `blksize` RFC 2348, `timeout`/`tsize` RFC 2349,
//! `windowsize` RFC 7440) over UDP, including the data transfer on its own 5-tuple.
//!
//! A client sends an RRQ or WRQ to port 69; the server answers from a new port (its transfer
//! identifier, RFC 1350 §4), so the transfer (DATA/ACK/OACK/ERROR) is a different UDP flow from
//! the request, whose first packet comes from the server. Two sessions, one parser:
//! - the **request** session (client → port 69) is recognised by content (the probe accepts
//!   only a well-formed RRQ/WRQ, see `parser.rs`) and reports the operation, file, mode and
//!   requested options. Each request it parses is announced ([`AppParser::take_related`]), and
//!   the inspector registers an expectation for the server's reply flow
//!   ([`crate::expect`]);
//! - the **data** session is opened from that expectation ([`AppParser::from_related`]) already
//!   decided as TFTP, with the request's operation, file, mode and options and the request's
//!   flow (`request_flow`), client = the TFTP client. It counts the transfer: new DATA blocks
//!   and their payload bytes, retransmitted blocks, ACKs, the last block number, the
//!   acknowledged options (OACK), errors, and whether it completed (a DATA shorter than the
//!   block size, then its ACK; RFC 1350 §6).
//!
//! DATA and ACK alone (4 header bytes of numbers) are too weak to recognise by content, so a
//! transfer whose request Warden did not see stays `unknown`: the probe never matches the
//! server's side.
//!
//! Parsing is our own (see `parser.rs` for why).

pub mod parser;

use serde_json::{Map, Value};

use super::{text, App, AppParser, Dir, Feed, Probe, Text, Transport};
use crate::expect::{Expectation, Related, RELATED_BYTES};
use crate::flow::Addr;
use parser::{Mode, Op, Options, Packet, Parse};

/// Bytes of the file name kept.
pub const FILE_MAX: usize = 128;

/// The request a session carries (request session) or was opened for (data session).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Req {
    op: Op,
    mode: Mode,
    file: Text<FILE_MAX>,
    file_truncated: bool,
    options: Options,
}

// Layout of `Related` for TFTP: op, mode, flags, file length, blksize (2), tsize (8),
// timeout, windowsize (2), unknown-option count, file name.
const R_FLAGS: usize = 2;
const R_FILE_LEN: usize = 3;
const R_BLKSIZE: usize = 4;
const R_TSIZE: usize = 6;
const R_TIMEOUT: usize = 14;
const R_WINDOW: usize = 15;
const R_UNKNOWN: usize = 17;
const R_FILE: usize = 18;
const _: () = assert!(R_FILE + FILE_MAX <= RELATED_BYTES);

impl Req {
    fn encode(&self) -> Related {
        let mut b = [0u8; RELATED_BYTES];
        b[0] = match self.op {
            Op::Read => 1,
            Op::Write => 2,
        };
        b[1] = match self.mode {
            Mode::Netascii => 1,
            Mode::Octet => 2,
            Mode::Mail => 3,
        };
        let o = &self.options;
        b[R_FLAGS] = u8::from(self.file_truncated)
            | u8::from(o.blksize.is_some()) << 1
            | u8::from(o.tsize.is_some()) << 2
            | u8::from(o.timeout.is_some()) << 3
            | u8::from(o.windowsize.is_some()) << 4;
        let f = self.file.as_bytes();
        b[R_FILE_LEN] = f.len() as u8;
        b[R_FILE..R_FILE + f.len()].copy_from_slice(f);
        b[R_BLKSIZE..R_BLKSIZE + 2].copy_from_slice(&o.blksize.unwrap_or(0).to_be_bytes());
        b[R_TSIZE..R_TSIZE + 8].copy_from_slice(&o.tsize.unwrap_or(0).to_be_bytes());
        b[R_TIMEOUT] = o.timeout.unwrap_or(0);
        b[R_WINDOW..R_WINDOW + 2].copy_from_slice(&o.windowsize.unwrap_or(0).to_be_bytes());
        b[R_UNKNOWN] = o.unknown;
        Related(b)
    }

    fn decode(r: &Related) -> Option<Req> {
        let b = &r.0;
        let op = match b[0] {
            1 => Op::Read,
            2 => Op::Write,
            _ => return None,
        };
        let mode = match b[1] {
            1 => Mode::Netascii,
            2 => Mode::Octet,
            3 => Mode::Mail,
            _ => return None,
        };
        let flags = b[R_FLAGS];
        let has = |bit: u8| flags & (1 << bit) != 0;
        let u16_at = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
        let mut tsize = [0u8; 8];
        tsize.copy_from_slice(&b[R_TSIZE..R_TSIZE + 8]);
        let len = usize::from(b[R_FILE_LEN]).min(FILE_MAX);
        Some(Req {
            op,
            mode,
            file: text(&b[R_FILE..R_FILE + len]),
            file_truncated: has(0),
            options: Options {
                blksize: has(1).then(|| u16_at(R_BLKSIZE)),
                tsize: has(2).then(|| u64::from_be_bytes(tsize)),
                timeout: has(3).then_some(b[R_TIMEOUT]),
                windowsize: has(4).then(|| u16_at(R_WINDOW)),
                unknown: b[R_UNKNOWN],
            },
        })
    }
}

/// The request flow a data session belongs to, as `client -> server`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FlowRef {
    client: Addr,
    client_port: u16,
    server: Addr,
    server_port: u16,
}

impl FlowRef {
    fn render(&self) -> String {
        let end = |a: &Addr, p: u16| if a.is_v4() { format!("{a}:{p}") } else { format!("[{a}]:{p}") };
        format!("{} -> {}", end(&self.client, self.client_port), end(&self.server, self.server_port))
    }
}

/// Transfer counters (DATA/ACK in either direction: the server sends DATA for an RRQ, the
/// client for a WRQ).
#[derive(Debug, Clone, Copy, Default)]
struct Transfer {
    seen: bool,
    data_blocks: u32,
    data_bytes: u64,
    retransmitted: u32,
    acks: u32,
    last_block: Option<u16>,
    final_block: Option<u16>,
    completed: bool,
}

/// Per-session TFTP state: fixed size, no heap.
#[derive(Debug, Clone, Default)]
pub struct Tftp {
    req: Option<Req>,
    requests: u16,
    oack: Option<Options>,
    error: Option<(u16, Text<96>)>,
    errors: u16,
    xfer: Transfer,
    request_flow: Option<FlowRef>,
    pending: bool,
    malformed: u32,
}

impl Tftp {
    /// The state of a data session opened for the request `e` announced: the request's
    /// operation, file, mode and options, and its flow. `None` when `e.data` is not a TFTP
    /// request.
    pub fn data_transfer(e: &Expectation) -> Option<Tftp> {
        Some(Tftp {
            req: Some(Req::decode(&e.data)?),
            request_flow: Some(FlowRef {
                client: e.client,
                client_port: e.client_port,
                server: e.server,
                server_port: e.server_port,
            }),
            ..Tftp::default()
        })
    }

    fn blksize(&self) -> u16 {
        self.oack.and_then(|o| o.blksize).unwrap_or(parser::DEFAULT_BLKSIZE)
    }

    fn packet(&mut self, p: Packet<'_>) {
        match p {
            Packet::Request(r) => {
                self.requests = self.requests.saturating_add(1);
                self.req = Some(Req {
                    op: r.op,
                    mode: r.mode,
                    file: text(r.file),
                    file_truncated: r.file.len() > FILE_MAX,
                    options: r.options,
                });
                self.pending = true;
            }
            Packet::Oack(o) => self.oack = Some(o),
            Packet::Data { block, payload } => {
                let blksize = usize::from(self.blksize());
                let x = &mut self.xfer;
                x.seen = true;
                // Serial-number comparison (block numbers wrap): ahead of the last block is new.
                let ahead = x.last_block.map_or(1, |last| block.wrapping_sub(last));
                if (1..0x8000).contains(&ahead) {
                    x.data_blocks = x.data_blocks.saturating_add(1);
                    x.data_bytes = x.data_bytes.saturating_add(payload.len() as u64);
                    x.last_block = Some(block);
                    if payload.len() < blksize {
                        x.final_block = Some(block);
                    }
                } else {
                    x.retransmitted = x.retransmitted.saturating_add(1);
                }
            }
            Packet::Ack { block } => {
                let x = &mut self.xfer;
                x.seen = true;
                x.acks = x.acks.saturating_add(1);
                if x.final_block == Some(block) {
                    x.completed = true;
                }
            }
            Packet::Error { code, message } => {
                self.errors = self.errors.saturating_add(1);
                self.error = Some((code, text(message)));
            }
        }
    }
}

fn options_json(o: &Options) -> Value {
    let mut m = Map::new();
    if let Some(v) = o.blksize {
        m.insert("blksize".into(), v.into());
    }
    if let Some(v) = o.tsize {
        m.insert("tsize".into(), v.into());
    }
    if let Some(v) = o.timeout {
        m.insert("timeout".into(), v.into());
    }
    if let Some(v) = o.windowsize {
        m.insert("windowsize".into(), v.into());
    }
    if o.unknown > 0 {
        m.insert("unknown".into(), o.unknown.into());
    }
    Value::Object(m)
}

impl AppParser for Tftp {
    const APP: App = App::Tftp;
    const PORTS: &'static [u16] = &[69];
    const TRANSPORT: Transport = Transport::Udp;

    fn probe(dir: Dir, data: &[u8]) -> Probe {
        if dir == Dir::ToClient {
            return Probe::NoMatch;
        }
        match parser::request(data) {
            Parse::Ok(..) => Probe::Match,
            Parse::Incomplete(_) => Probe::NeedMore,
            Parse::Invalid => Probe::NoMatch,
        }
    }

    fn feed(&mut self, _dir: Dir, data: &[u8]) -> Feed {
        match parser::packet(data) {
            Parse::Ok(p, _) => self.packet(p),
            // A datagram that is no TFTP packet (unknown opcode, ...): the flow stopped being
            // TFTP.
            _ => {
                self.malformed = self.malformed.saturating_add(1);
                return Feed::Invalid { consumed: 0 };
            }
        }
        Feed::Consumed(data.len())
    }

    fn take_related(&mut self) -> Option<Related> {
        if !self.pending {
            return None;
        }
        self.pending = false;
        self.req.map(|r| r.encode())
    }

    fn from_related(e: &Expectation) -> Option<Self> {
        Tftp::data_transfer(e)
    }

    fn l7(&self, out: &mut Map<String, Value>) {
        if let Some(r) = &self.req {
            out.insert("op".into(), r.op.as_str().into());
            out.insert("file".into(), r.file.as_str().into());
            if r.file_truncated {
                out.insert("file_truncated".into(), true.into());
            }
            out.insert("mode".into(), r.mode.as_str().into());
            if !r.options.is_empty() {
                out.insert("options_requested".into(), options_json(&r.options));
            }
        }
        if self.requests > 0 {
            out.insert("requests".into(), self.requests.into());
        }
        if let Some(o) = &self.oack {
            out.insert("options_acknowledged".into(), options_json(o));
        }
        if let Some(f) = &self.request_flow {
            out.insert("request_flow".into(), f.render().into());
        }
        let x = &self.xfer;
        if x.seen || self.request_flow.is_some() {
            out.insert("data_blocks".into(), x.data_blocks.into());
            out.insert("data_bytes".into(), x.data_bytes.into());
            out.insert("acks".into(), x.acks.into());
            if let Some(b) = x.last_block {
                out.insert("last_block".into(), b.into());
            }
            out.insert("completed".into(), x.completed.into());
            out.insert("retransmitted".into(), x.retransmitted.into());
        }
        if let Some((code, msg)) = &self.error {
            out.insert("error_code".into(), (*code).into());
            out.insert("error".into(), parser::error_name(*code).into());
            out.insert("error_message".into(), msg.as_str().into());
            if self.errors > 1 {
                out.insert("errors".into(), self.errors.into());
            }
        }
        if self.malformed > 0 {
            out.insert("malformed".into(), self.malformed.into());
        }
    }
}

#[cfg(test)]
mod tests;
