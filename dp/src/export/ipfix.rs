//! IPFIX message encoding (RFC 7011) of connection records: two templates (IPv4 and IPv6
//! sessions, one biflow record per session, RFC 5103) and data records written into one reused
//! buffer. No I/O here: [`super`] runs the transports.
//!
//! **Why our own encoder.** Crates looked at (docs.rs): `netflow_parser` 1.0 (maintained; a
//! parser whose `to_be_bytes` re-serialises parsed messages built as vectors of
//! `(field, value)` per record, without templates-per-transport bookkeeping; we use it as the
//! independent *decoder* in our tests), `ipfix` 0.1 (parser only, nom 2, unmaintained),
//! `rustflow_export` / `rustflow_core` (an application with an AF_PACKET meter; its encoder is
//! not a library surface), `netring` (packet I/O crate with a minimal exporter behind a feature,
//! no enterprise or reverse elements). The message format we need is two fixed templates and
//! big-endian fields: about a hundred lines, allocation-free per record.
//!
//! **Record layout** (template field order; lengths in bytes):
//!
//! | IE (id) | length | value |
//! |---|---|---|
//! | `sourceIPv4Address` (8) / `sourceIPv6Address` (27) | 4 / 16 | the client |
//! | `destinationIPv4Address` (12) / `destinationIPv6Address` (28) | 4 / 16 | the server |
//! | `sourceTransportPort` (7) | 2 | client port (ICMP: the decoder's id field) |
//! | `destinationTransportPort` (11) | 2 | server port |
//! | `protocolIdentifier` (4) | 1 | IP protocol |
//! | `octetDeltaCount` (1) | 8 | bytes client→server since this session's previous record (frames as forwarded, L2 included) |
//! | `packetDeltaCount` (2) | 8 | frames client→server since the previous record |
//! | reverse `octetDeltaCount` (1, PEN 29305, RFC 5103) | 8 | bytes server→client |
//! | reverse `packetDeltaCount` (2, PEN 29305) | 8 | frames server→client |
//! | `flowStartMilliseconds` (152) | 8 | session's first frame, Unix ms |
//! | `flowEndMilliseconds` (153) | 8 | session's last frame, Unix ms |
//! | `flowEndReason` (136) | 1 | RFC 7012 / IANA: 1 idle, 2 active timeout (live session), 3 end of flow (FIN/RST), 4 forced end (shutdown, pair removed, 5-tuple reused), 5 lack of resources (evicted) |
//! | `wardenApp` (1, PEN [`WARDEN_PEN`]) | variable | app name (`http`, `tls`, `unknown`, ...) |
//! | `wardenVerdict` (2, PEN) | variable | the record's `verdict` (`allowed`, `denied`, ...), `-` when not enforced |
//! | `wardenRuleId` (3, PEN) | 4 | matching rule id, `0xFFFF_FFFF` when none |
//! | `wardenClientWorkload` (4, PEN) | variable | client workload id or `-` |
//! | `wardenServerWorkload` (5, PEN) | variable | server workload id or `-` |
//! | `wardenThreats` (6, PEN) | variable | threat ids (`sqli`, ...), comma-separated, or `-` |
//!
//! nfdump reads the forward counters as "in" and the reverse ones as "out" bytes/packets.
//! Variable-length strings use the one-byte length form (RFC 7011 §7), so they are cut at 254
//! bytes (at a UTF-8 boundary); an empty value ("none") is written as `-` ([`NONE`]).

use std::net::IpAddr;

/// IPFIX version number in the message header (RFC 7011 §3.1).
pub const VERSION: u16 = 10;
/// Message header length in bytes (RFC 7011 §3.1).
pub const HEADER_LEN: usize = 16;
/// Set header length in bytes (RFC 7011 §3.3.2).
pub const SET_HEADER_LEN: usize = 4;
/// Set id of a template set (RFC 7011 §3.3.2).
pub const TEMPLATE_SET_ID: u16 = 2;
/// Template id of IPv4 session records.
pub const TEMPLATE_V4: u16 = 256;
/// Template id of IPv6 session records.
pub const TEMPLATE_V6: u16 = 257;
/// Private enterprise number of the reverse information elements (RFC 5103 §6.1).
pub const REVERSE_PEN: u32 = 29305;
/// Private enterprise number of Warden's own information elements. **Placeholder**: 32473 is
/// the number IANA reserves for documentation and examples (RFC 5612); a registered number
/// replaces it before collectors rely on it.
pub const WARDEN_PEN: u32 = 32473;
/// Longest string value written, in bytes (one-byte length form of RFC 7011 §7).
pub const MAX_STRING: usize = 254;
/// String value written for "none" (RFC 7011 §7 gives variable-length fields a length of at
/// least 1 as collectors read it: `netflow_parser` refuses zero-length values).
pub const NONE: &str = "-";
/// `wardenRuleId` value when no rule matched.
pub const NO_RULE: u32 = u32::MAX;

/// `flowEndReason` values (IE 136, IANA "flowEndReason" sub-registry, RFC 5102 §5.11.3).
pub mod end_reason {
    /// The flow was idle longer than its timeout.
    pub const IDLE_TIMEOUT: u8 = 0x01;
    /// The flow is still live; this record closes an active-timeout interval.
    pub const ACTIVE_TIMEOUT: u8 = 0x02;
    /// The end of the flow was seen (TCP FIN or RST).
    pub const END_OF_FLOW: u8 = 0x03;
    /// Ended by the metering process (shutdown, pair removed, 5-tuple reused).
    pub const FORCED_END: u8 = 0x04;
    /// Evicted for lack of resources (the session table was full).
    pub const LACK_OF_RESOURCES: u8 = 0x05;
}

/// One field of a template: IE id, length (65535 = variable), enterprise number (0 = IETF).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// Information element id (without the enterprise bit).
    pub id: u16,
    /// Field length in bytes; 65535 for variable length (RFC 7011 §7).
    pub len: u16,
    /// Private enterprise number, 0 for IANA elements.
    pub pen: u32,
}

const VAR: u16 = 65535;

const fn f(id: u16, len: u16) -> Field {
    Field { id, len, pen: 0 }
}
const fn e(pen: u32, id: u16, len: u16) -> Field {
    Field { id, len, pen }
}

/// Fields after the addresses, shared by both templates.
const COMMON: [Field; 16] = [
    f(7, 2),
    f(11, 2),
    f(4, 1),
    f(1, 8),
    f(2, 8),
    e(REVERSE_PEN, 1, 8),
    e(REVERSE_PEN, 2, 8),
    f(152, 8),
    f(153, 8),
    f(136, 1),
    e(WARDEN_PEN, 1, VAR),
    e(WARDEN_PEN, 2, VAR),
    e(WARDEN_PEN, 3, 4),
    e(WARDEN_PEN, 4, VAR),
    e(WARDEN_PEN, 5, VAR),
    e(WARDEN_PEN, 6, VAR),
];

/// The fields of template `id` ([`TEMPLATE_V4`] or [`TEMPLATE_V6`]), in record order.
pub fn template_fields(id: u16) -> Vec<Field> {
    let addrs = if id == TEMPLATE_V6 { [f(27, 16), f(28, 16)] } else { [f(8, 4), f(12, 4)] };
    addrs.into_iter().chain(COMMON).collect()
}

/// What one data record carries (see the module table). Strings are cut at [`MAX_STRING`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowRecord {
    /// Client address.
    pub client: IpAddr,
    /// Server address (same family as `client`).
    pub server: IpAddr,
    /// Client port.
    pub client_port: u16,
    /// Server port.
    pub server_port: u16,
    /// IP protocol number.
    pub proto: u8,
    /// Bytes client→server in this record's interval.
    pub octets: u64,
    /// Frames client→server in this record's interval.
    pub packets: u64,
    /// Bytes server→client in this record's interval.
    pub reverse_octets: u64,
    /// Frames server→client in this record's interval.
    pub reverse_packets: u64,
    /// First frame of the session, Unix ms.
    pub start_ms: u64,
    /// Last frame of the session, Unix ms.
    pub end_ms: u64,
    /// `flowEndReason` ([`end_reason`]).
    pub end_reason: u8,
    /// App name.
    pub app: String,
    /// Policy verdict, empty when not enforced.
    pub verdict: String,
    /// Rule id or [`NO_RULE`].
    pub rule_id: u32,
    /// Client workload id or empty.
    pub client_workload: String,
    /// Server workload id or empty.
    pub server_workload: String,
    /// Threat ids, comma-separated, or empty.
    pub threats: String,
}

impl FlowRecord {
    /// The template this record is written with.
    pub fn template(&self) -> u16 {
        match (self.client, self.server) {
            (IpAddr::V4(_), IpAddr::V4(_)) => TEMPLATE_V4,
            _ => TEMPLATE_V6,
        }
    }

    /// Encoded length in bytes.
    pub fn encoded_len(&self) -> usize {
        let addrs = if self.template() == TEMPLATE_V4 { 8 } else { 32 };
        let strs = [&self.app, &self.verdict, &self.client_workload, &self.server_workload, &self.threats];
        addrs + 2 + 2 + 1 + 4 * 8 + 8 + 8 + 1 + 4 + strs.iter().map(|s| 1 + value(s).len()).sum::<usize>()
    }

    fn write(&self, out: &mut Vec<u8>) {
        let v6 = self.template() == TEMPLATE_V6;
        for a in [self.client, self.server] {
            match a {
                IpAddr::V4(a) if !v6 => out.extend_from_slice(&a.octets()),
                IpAddr::V4(a) => out.extend_from_slice(&a.to_ipv6_mapped().octets()),
                IpAddr::V6(a) => out.extend_from_slice(&a.octets()),
            }
        }
        out.extend_from_slice(&self.client_port.to_be_bytes());
        out.extend_from_slice(&self.server_port.to_be_bytes());
        out.push(self.proto);
        for n in [self.octets, self.packets, self.reverse_octets, self.reverse_packets, self.start_ms, self.end_ms] {
            out.extend_from_slice(&n.to_be_bytes());
        }
        out.push(self.end_reason);
        put_str(out, &self.app);
        put_str(out, &self.verdict);
        out.extend_from_slice(&self.rule_id.to_be_bytes());
        put_str(out, &self.client_workload);
        put_str(out, &self.server_workload);
        put_str(out, &self.threats);
    }
}

/// What a string field carries: [`NONE`] for an empty value, else `s` [`cut`].
fn value(s: &str) -> &str {
    if s.is_empty() {
        NONE
    } else {
        cut(s)
    }
}

/// `s` cut to at most [`MAX_STRING`] bytes at a character boundary.
fn cut(s: &str) -> &str {
    if s.len() <= MAX_STRING {
        return s;
    }
    let mut end = MAX_STRING;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let s = value(s);
    out.push(s.len() as u8);
    out.extend_from_slice(s.as_bytes());
}

/// Builds IPFIX messages for one transport session (one sequence-number stream, RFC 7011 §3.1)
/// of one observation domain, one message at a time.
#[derive(Debug)]
pub struct Encoder {
    domain: u32,
    max_len: usize,
    /// Data records sent in this stream before the message being built (mod 2^32).
    sequence: u32,
    buf: Vec<u8>,
    /// Offset of the open data set's header and its template, if one is open.
    open_set: Option<(usize, u16)>,
    records: u32,
}

impl Encoder {
    /// An encoder for observation domain `domain` whose messages stay within `max_len` bytes
    /// (at least 512; UDP exporters use the path MTU less headers, RFC 7011 §10.3.3).
    pub fn new(domain: u32, max_len: usize) -> Self {
        let max_len = max_len.clamp(512, 65535);
        let mut enc =
            Encoder { domain, max_len, sequence: 0, buf: Vec::with_capacity(max_len), open_set: None, records: 0 };
        enc.reset();
        enc
    }

    /// Starts the sequence again (a new transport session, RFC 7011 §10.4.2: a TCP reconnect).
    pub fn restart(&mut self) {
        self.sequence = 0;
        self.reset();
    }

    fn reset(&mut self) {
        self.buf.clear();
        self.buf.resize(HEADER_LEN, 0);
        self.open_set = None;
        self.records = 0;
    }

    /// Data records in the message being built.
    pub fn pending(&self) -> u32 {
        self.records
    }

    /// Whether the message being built has nothing after its header.
    pub fn is_empty(&self) -> bool {
        self.buf.len() == HEADER_LEN
    }

    /// Adds a template set with both templates. Call on an empty message (templates first).
    pub fn add_templates(&mut self) {
        self.close_set();
        let start = self.buf.len();
        self.buf.extend_from_slice(&TEMPLATE_SET_ID.to_be_bytes());
        self.buf.extend_from_slice(&[0, 0]);
        for id in [TEMPLATE_V4, TEMPLATE_V6] {
            let fields = template_fields(id);
            self.buf.extend_from_slice(&id.to_be_bytes());
            self.buf.extend_from_slice(&(fields.len() as u16).to_be_bytes());
            for fl in fields {
                if fl.pen == 0 {
                    self.buf.extend_from_slice(&fl.id.to_be_bytes());
                    self.buf.extend_from_slice(&fl.len.to_be_bytes());
                } else {
                    self.buf.extend_from_slice(&(fl.id | 0x8000).to_be_bytes());
                    self.buf.extend_from_slice(&fl.len.to_be_bytes());
                    self.buf.extend_from_slice(&fl.pen.to_be_bytes());
                }
            }
        }
        let len = (self.buf.len() - start) as u16;
        self.buf[start + 2..start + 4].copy_from_slice(&len.to_be_bytes());
    }

    /// Appends `rec` to the message if it fits within the length bound; `false` when the
    /// message must be finished first (an empty message always takes a record).
    pub fn push(&mut self, rec: &FlowRecord) -> bool {
        let tpl = rec.template();
        let need = rec.encoded_len() + if self.open_set.map(|s| s.1) == Some(tpl) { 0 } else { SET_HEADER_LEN };
        if self.buf.len() + need > self.max_len && self.records > 0 {
            return false;
        }
        if self.open_set.map(|s| s.1) != Some(tpl) {
            self.close_set();
            self.open_set = Some((self.buf.len(), tpl));
            self.buf.extend_from_slice(&tpl.to_be_bytes());
            self.buf.extend_from_slice(&[0, 0]);
        }
        rec.write(&mut self.buf);
        self.records += 1;
        true
    }

    fn close_set(&mut self) {
        if let Some((at, _)) = self.open_set.take() {
            let len = (self.buf.len() - at) as u16;
            self.buf[at + 2..at + 4].copy_from_slice(&len.to_be_bytes());
        }
    }

    /// Writes the header (export time `export_s`, Unix seconds) and returns the message; the
    /// next message starts empty and its sequence number counts this one's data records.
    pub fn finish(&mut self, export_s: u32) -> Vec<u8> {
        self.close_set();
        let len = self.buf.len() as u16;
        let hdr = &mut self.buf[..HEADER_LEN];
        hdr[0..2].copy_from_slice(&VERSION.to_be_bytes());
        hdr[2..4].copy_from_slice(&len.to_be_bytes());
        hdr[4..8].copy_from_slice(&export_s.to_be_bytes());
        hdr[8..12].copy_from_slice(&self.sequence.to_be_bytes());
        hdr[12..16].copy_from_slice(&self.domain.to_be_bytes());
        self.sequence = self.sequence.wrapping_add(self.records);
        let msg = std::mem::replace(&mut self.buf, Vec::with_capacity(self.max_len));
        self.reset();
        msg
    }
}
