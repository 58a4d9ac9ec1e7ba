//! TLS (SSL 2.0 to TLS 1.3): record and handshake versions, SNI, ALPN, cipher-suite count, JA3
//! and JA4 client fingerprints from the ClientHello; negotiated version (supported_versions,
//! RFC 8446 §4.2.1) and cipher from the ServerHello; then records are only counted. The threats
//! below are recorded in the parser's [`Threats`] as they are seen.
//!
//! Specs: RFC 8446 §4 (handshake), §4.1.2-§4.1.3 (hellos, HelloRetryRequest), §4.2 (extensions),
//! §5.1-§5.2 (record layer, 2^14 + 2048 cap); RFC 5246 §6.2 and §7.4 (TLS 1.2); RFC 6066 §3
//! (server_name); RFC 7301 §3.1 (ALPN); RFC 8701 (GREASE); RFC 6520 (heartbeat); the SSL 2.0
//! specification and RFC 6101 / RFC 5246 Appendix E.2 (SSLv2-format hellos). Record headers and
//! hello messages are decoded with the `tls-parser` crate (rusticata); it allocates small vectors
//! for cipher lists and extensions, which happens once per direction (the hello), never per
//! record afterwards. The threat checks read the hello's length fields themselves
//! ([`parser::hello_layout`]), so a hello `tls-parser` refuses is still judged.
//!
//! Streaming: the first record of each direction must carry the hello. When a hello spans
//! several records (large post-quantum key shares) or TCP segments, [`Feed::Need`] asks the
//! engine for the records it occupies, one record header or record at a time, bounded by
//! [`parser::MAX_HANDSHAKE`]. After the hello only record headers are read (and the first 3
//! bytes of plaintext heartbeats and alerts); record payloads are skipped with a counter, so
//! the engine never buffers encrypted data. An SSLv2-format first message (2-byte record
//! header: a CLIENT-HELLO to the server, a SERVER-HELLO or ERROR to the client) is read by its
//! fixed fields and skipped; the direction then goes on with TLS records, or with SSLv2 records
//! (2- and 3-byte headers) once the server answered in SSLv2.
//!
//! **Mid-stream** ([`MIDSTREAM`], [`crate::app::midstream`]): a session picked up without its
//! handshake is recognised by its record layer (RFC 8446 §5.1, RFC 5246 §6.2.1): a content type
//! 20-24, a version 3.0-3.4 and a length 1..=2^14 + 2048 (the cap on protected records, RFC 8446
//! §5.2), three records in a row with the same version at the offsets their lengths announce,
//! in either direction (application-data records are enough). Records say nothing of which
//! side is the client. The parser then starts at a record boundary with both directions taken
//! as past their ChangeCipherSpec ([`Tls::resumed`]): records are counted, `record_version`
//! is the first record's; there is no hello to read.
//!
//! Record headers keep being validated: bytes where a record must start that are no record
//! header (unknown content type, version other than 3.x, length over the cap) answer
//! [`Feed::Invalid`], so the engine detects the app again (a threat recorded in that feed is
//! kept for the threat stage: [`crate::app::engine::Engine::take_dropped_threats`]).
//!
//! Threats (id, reason, direction: the bytes that carried it):
//! - `tls_sslv2_sslv3`: `sslv2_client_hello` (an SSLv2 CLIENT-HELLO offering 2.0),
//!   `sslv2_format_client_hello` (the SSLv2 format offering 3.x: RFC 6176 forbids sending it),
//!   `client_offers_sslv3` (a ClientHello whose highest version, supported_versions included,
//!   is 3.0) to the server; `server_negotiates_sslv2`, `server_negotiates_sslv3` to the client.
//! - `tls_1_0`, `tls_1_1`: `server_negotiates_tls1_0` / `server_negotiates_tls1_1`, the
//!   ServerHello's version (supported_versions' selected_version when present, as TLS 1.3
//!   ServerHellos carry 0x0303 in legacy_version), to the client. A client merely offering
//!   1.0 is not a threat; the session is.
//! - `tls_cipher_overflow` (once per session): a hello length field past its container
//!   (`session_id_over_32`, `session_id_overflows_hello`, `cipher_suites_overflow_hello`,
//!   `compression_methods_overflow_hello`, `extensions_overflow_hello`,
//!   `extension_overflows_extensions`; judged on the first record's part of a hello before the
//!   rest arrives too), a handshake length past the handshake records that carry it
//!   (`handshake_length_overflows_records`) or beyond what a hello can hold
//!   (`handshake_length_over_hello_maximum`), a record over 2^14 + 2048
//!   (`record_length_over_limit`, at the hello or later), SSLv2 lists past their record
//!   (`sslv2_lists_overflow_record`, `sslv2_server_hello_overflows_record`). NeuVector checks
//!   only the SSLv2 cipher list; TLS implementations refuse every one of these
//!   (`decode_error`, `record_overflow`), so none has a benign sender.
//! - `tls_heartbleed` (CVE-2014-0160): in plaintext (before the
//!   direction's ChangeCipherSpec, either direction: servers attacked clients too) a request
//!   whose payload_length does not fit the record (`payload_length_over_record`) or leaves
//!   less than the 16 bytes of padding RFC 6520 §4 requires (`padding_under_16`: patched
//!   OpenSSL discards those; the Heartbleed scanner in Zeek's traces sends this form), both
//!   exact. NeuVector flags only a payload_length 1024 bytes past the record, which misses the
//!   second form and short over-reads. Encrypted (after ChangeCipherSpec, TLS 1.2 and below),
//!   only lengths are visible: a request shorter than any valid heartbeat under the
//!   negotiated suite ([`parser::min_heartbeat_record`], a lower bound) that the peer answers
//!   at all (`encrypted_short_request_answered`: a patched peer discards it silently), or an
//!   answer more than [`HB_ANSWER_SLACK`] bytes longer than its request
//!   (`encrypted_answer_exceeds_request`), recorded in the answer's direction (its frames
//!   carry the leaked memory). Not judged: an encrypted request of plausible length that lies
//!   about its payload_length when the peer does not answer (or answers only a little more
//!   than a valid answer: within the slack), heartbeats with TLS compression, and TLS 1.3
//!   (no heartbeat content type on the wire).

pub mod fingerprint;
pub mod parser;

use arrayvec::ArrayVec;
use serde_json::{Map, Value};

use super::midstream::{Framing, Head, Msg, Prev, Role};
use super::{text, App, AppParser, Dir, Feed, Probe, Text, Transport};
use crate::detect::{ThreatId, Threats};
use parser::{
    Parse, RecordHeader, CT_ALERT, CT_APPLICATION_DATA, CT_CHANGE_CIPHER_SPEC, CT_HEARTBEAT, HB_MIN_PLAINTEXT,
    HB_REQUEST, MAX_RECORD, RECORD_HEADER, SSL2_VERSION,
};

/// Longest JA3 string kept (longer ones are reported by hash only).
pub const MAX_JA3: usize = 512;
/// ALPN protocol names kept from the ClientHello.
pub const MAX_ALPN: usize = 4;

/// Where a direction's parsing is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Stage {
    /// Waiting for the hello (first handshake message).
    #[default]
    Hello,
    /// Counting records.
    Records,
    /// Counting SSLv2 records (2- and 3-byte headers) after an SSLv2 handshake.
    V2Records,
    /// Framing lost (gap or garbage): the rest of the direction is ignored.
    Lost,
}

/// Per-direction progress.
#[derive(Debug, Clone, Copy, Default)]
struct Side {
    stage: Stage,
    /// Payload bytes of the current record still to skip.
    skip: usize,
    /// Records seen.
    records: u32,
    /// ApplicationData records seen (encrypted handshake in TLS 1.3 included).
    app_records: u32,
    /// A ChangeCipherSpec record was seen.
    ccs: bool,
    /// How far the records of a hello that spans several were walked (a hello cut into many
    /// small records is walked once, not again from its first record at each one).
    walk: parser::HelloWalk,
    /// This direction opened with an SSLv2-format hello.
    v2: bool,
    /// This direction's encrypted heartbeat request still unanswered, and the answer so far.
    hb: Heartbeat,
}

/// The last encrypted heartbeat a direction sent as a request (RFC 6520: the other end answers
/// a request by echoing its payload) and what the other direction sent back since.
#[derive(Debug, Clone, Copy, Default)]
struct Heartbeat {
    /// Record length of the request (0: none outstanding).
    request: usize,
    /// The request was shorter than any valid heartbeat under the session's cipher suite
    /// ([`parser::min_heartbeat_record`]).
    short: bool,
    /// Heartbeat bytes (record lengths) the other direction sent since: its answer, which for
    /// a leak spans several records.
    answer: usize,
    /// The answer was reported.
    reported: bool,
}

/// Per-session TLS state: fixed size, no heap.
#[derive(Debug, Clone, Default)]
pub struct Tls {
    sides: [Side; 2],
    record_version: Option<u16>,
    client_version: Option<u16>,
    server_version: Option<u16>,
    negotiated: Option<u16>,
    cipher: Option<u16>,
    cipher_suites: Option<u16>,
    sni: Option<Text<256>>,
    alpn: ArrayVec<Text<32>, MAX_ALPN>,
    alpn_total: u16,
    server_alpn: Option<Text<32>>,
    ja3: Option<Text<MAX_JA3>>,
    ja3_hash: Option<Text<32>>,
    ja4: Option<Text<36>>,
    hello_retry: bool,
    alert: Option<(u8, u8)>,
    /// ServerHello compression_method (0: null).
    compression: u8,
    violation: bool,
    /// Detected mid-stream: no hello, both directions encrypted from the first record fed.
    midstream: bool,
    threats: Threats,
}

/// Mid-stream framing of TLS (module docs): a record header at the start of `b`.
pub fn mid_head(b: &[u8], _boundary: bool) -> Head {
    match b.first() {
        None => return Head::Need(RECORD_HEADER),
        Some(t) if !(CT_CHANGE_CIPHER_SPEC..=CT_HEARTBEAT).contains(t) => return Head::No,
        Some(_) => {}
    }
    match (b.get(1), b.get(2)) {
        (Some(3), Some(0..=4)) | (Some(3), None) | (None, _) => {}
        _ => return Head::No,
    }
    if b.len() < RECORD_HEADER {
        return Head::Need(RECORD_HEADER);
    }
    let len = usize::from(u16::from_be_bytes([b[3], b[4]]));
    if len == 0 || len > MAX_RECORD {
        return Head::No;
    }
    Head::Msg(Msg {
        len: (RECORD_HEADER + len) as u32,
        key: u32::from(u16::from_be_bytes([b[1], b[2]])),
        role: Role::Either,
        starts: true,
        ends: true,
        ..Msg::default()
    })
}

/// Records of one direction share their version.
fn mid_follows(prev: Prev, next: &Msg) -> bool {
    prev.key == next.key
}

/// How TLS is recognised mid-stream (module docs).
pub const MIDSTREAM: Framing = Framing { head: mid_head, follows: mid_follows, chain: 3 };

/// Heartbeat bytes an answer may exceed its request by before it is taken for a leak: a valid
/// answer repeats the request's payload and only its padding (at least 16 bytes, RFC 6520 §4;
/// 16 in OpenSSL and GnuTLS) and block rounding differ; Heartbleed answers carry the claimed
/// payload_length, up to 64 KiB. NeuVector uses the same margin on plaintext heartbeats.
pub const HB_ANSWER_SLACK: usize = 1024;

/// Evidence text of a finding, formatted into `buf` without allocating (truncated at its size).
fn evidence<'b>(buf: &'b mut [u8; 128], args: std::fmt::Arguments<'_>) -> &'b [u8] {
    use std::io::Write;
    let mut w = &mut buf[..];
    let _ = w.write_fmt(args);
    let left = w.len();
    &buf[..128 - left]
}

/// Name of a protocol version without allocating (None for unknown ones).
fn version_str(v: u16) -> Option<&'static str> {
    Some(match v {
        SSL2_VERSION => "SSLv2",
        0x0300 => "SSLv3",
        0x0301 => "TLSv1.0",
        0x0302 => "TLSv1.1",
        0x0303 => "TLSv1.2",
        0x0304 => "TLSv1.3",
        _ => return None,
    })
}

/// A version for evidence text: its name, else hex.
struct V(u16);

impl std::fmt::Display for V {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match version_str(self.0) {
            Some(n) => f.write_str(n),
            None => write!(f, "0x{:04x}", self.0),
        }
    }
}

/// Name of a protocol version ("TLSv1.3", ...; unknown ones as hex).
pub fn version_name(v: u16) -> String {
    V(v).to_string()
}

impl Tls {
    /// Records what a ClientHello says.
    fn on_client_hello(&mut self, ch: &parser::ClientHello<'_>) {
        self.client_version = Some(ch.version);
        self.cipher_suites = Some(u16::try_from(ch.ciphers.len()).unwrap_or(u16::MAX));
        self.sni = ch.sni.map(text);
        self.alpn_total = u16::try_from(ch.alpn.len()).unwrap_or(u16::MAX);
        for p in ch.alpn.iter().take(MAX_ALPN) {
            self.alpn.push(text(p));
        }
        let ja3 = fingerprint::ja3_string(ch);
        self.ja3_hash = Some(text(fingerprint::ja3_hash(&ja3).as_bytes()));
        if ja3.len() <= MAX_JA3 {
            self.ja3 = Some(text(ja3.as_bytes()));
        }
        self.ja4 = Some(text(fingerprint::ja4(ch).as_bytes()));
    }

    /// Records what a ServerHello says.
    fn on_server_hello(&mut self, sh: &parser::ServerHello<'_>) {
        self.server_version = Some(sh.version);
        self.negotiated = Some(sh.selected_version.unwrap_or(sh.version));
        self.cipher = Some(sh.cipher);
        self.server_alpn = sh.alpn.map(text);
        self.hello_retry |= sh.hello_retry;
    }

    /// Bytes examined walking hellos that span several records (both directions): a measure
    /// of work, proportional to the bytes fed however they were segmented (tests).
    pub fn examined(&self) -> u64 {
        self.sides.iter().map(|s| s.walk.examined()).sum()
    }

    /// Parses the hello at the start of `b`; returns the bytes to consume or a Need/stop.
    fn hello(&mut self, dir: Dir, b: &[u8]) -> Result<usize, Feed> {
        if b.first().is_some_and(|&c| c & 0x80 != 0) {
            return self.v2_hello(dir, b);
        }
        let client = dir == Dir::ToServer;
        match parser::first_handshake_from(b, &mut self.sides[dir as usize].walk) {
            Parse::Ok((msg, records), n) => {
                let side = &mut self.sides[dir as usize];
                side.records = side.records.saturating_add(records);
                side.stage = Stage::Records;
                self.judge_hello(dir, &msg);
                let ok = match dir {
                    Dir::ToServer => parser::client_hello(&msg).map(|ch| self.on_client_hello(&ch)).is_some(),
                    Dir::ToClient => parser::server_hello(&msg).map(|sh| self.on_server_hello(&sh)).is_some(),
                };
                if dir == Dir::ToServer {
                    if let Parse::Ok(h, _) = parser::record_header(b) {
                        self.record_version = Some(h.version);
                    }
                }
                if !ok {
                    self.violation = true;
                }
                Ok(n)
            }
            Parse::Incomplete(k) => {
                // The fixed fields of the part of the hello in its first record can already
                // overflow the length its handshake header declares (constant work per call).
                if let Parse::Ok(h0, _) = parser::record_header(b) {
                    let frag = &b[RECORD_HEADER..b.len().min(RECORD_HEADER + h0.len)];
                    if let Err(reason) = parser::hello_layout(frag, client, false) {
                        self.overflow(dir, reason, frag);
                    }
                }
                Err(Feed::Need { consumed: 0, at_least: k })
            }
            Parse::Invalid => {
                if let Some(reason) = parser::hello_overflow(b, client) {
                    self.overflow(dir, reason, b);
                }
                // Not a hello (an anomaly): if it is still a record, count records from here;
                // otherwise the stream is not TLS.
                self.sides[dir as usize].walk.reset();
                self.violation = true;
                self.sides[dir as usize].stage = match parser::record_header(b) {
                    Parse::Invalid => Stage::Lost,
                    _ => Stage::Records,
                };
                match self.sides[dir as usize].stage {
                    Stage::Lost => Err(Feed::Invalid { consumed: 0 }),
                    _ => Ok(0),
                }
            }
        }
    }

    /// An SSLv2-format first message (2-byte record header): a CLIENT-HELLO to the server, a
    /// SERVER-HELLO or ERROR to the client. Reads its fixed fields and skips the rest.
    fn v2_hello(&mut self, dir: Dir, b: &[u8]) -> Result<usize, Feed> {
        let mut ev = [0u8; 128];
        let d = dir as usize;
        let (n, skip, stage) = match dir {
            Dir::ToServer => match parser::v2_client_hello(b) {
                Parse::Ok(h, n) => {
                    self.client_version = Some(h.version);
                    self.record_version = Some(SSL2_VERSION);
                    self.cipher_suites = Some(u16::try_from(h.cipher_specs / 3).unwrap_or(u16::MAX));
                    let reason = if h.version == SSL2_VERSION { "sslv2_client_hello" } else { "sslv2_format_client_hello" };
                    let e = evidence(&mut ev, format_args!("SSLv2-format CLIENT-HELLO offering {}", V(h.version)));
                    self.threats.record(ThreatId::TlsSslv2Sslv3, dir, reason, e);
                    if h.overflows() {
                        let e = evidence(
                            &mut ev,
                            format_args!(
                                "cipher_spec_length {}, session_id_length {}, challenge_length {} in a {}-byte record",
                                h.cipher_specs, h.session_id, h.challenge, h.len
                            ),
                        );
                        self.once(ThreatId::TlsCipherOverflow, dir, "sslv2_lists_overflow_record", e);
                    }
                    (n, h.len.saturating_sub(n - 2), Stage::Records)
                }
                Parse::Incomplete(k) => return Err(Feed::Need { consumed: 0, at_least: k }),
                Parse::Invalid => return Err(self.lose(d)),
            },
            Dir::ToClient => match parser::v2_server_hello(b) {
                Parse::Ok(h, n) => {
                    self.server_version = Some(SSL2_VERSION);
                    self.negotiated = Some(SSL2_VERSION);
                    let e = evidence(&mut ev, format_args!("SSLv2 SERVER-HELLO"));
                    self.threats.record(ThreatId::TlsSslv2Sslv3, dir, "server_negotiates_sslv2", e);
                    if h.overflows() {
                        let e = evidence(
                            &mut ev,
                            format_args!(
                                "certificate_length {}, cipher_specs_length {}, connection_id_length {} in a {}-byte record",
                                h.certificate, h.cipher_specs, h.connection_id, h.len
                            ),
                        );
                        self.once(ThreatId::TlsCipherOverflow, dir, "sslv2_server_hello_overflows_record", e);
                    }
                    (n, h.len.saturating_sub(n - 2), Stage::V2Records)
                }
                Parse::Incomplete(k) => return Err(Feed::Need { consumed: 0, at_least: k }),
                // An SSLv2 ERROR message (msg_type 0) refusing the client: SSLv2 records.
                Parse::Invalid if b.get(2) == Some(&0) && matches!(parser::v2_record(b), Parse::Ok(..)) => {
                    (0, 0, Stage::V2Records)
                }
                Parse::Invalid => return Err(self.lose(d)),
            },
        };
        let side = &mut self.sides[d];
        side.v2 = true;
        if n > 0 {
            side.records = side.records.saturating_add(1);
        }
        side.skip = skip;
        side.stage = stage;
        Ok(n)
    }

    /// This direction's bytes cannot be TLS: stop reading it.
    fn lose(&mut self, d: usize) -> Feed {
        self.violation = true;
        self.sides[d].stage = Stage::Lost;
        Feed::Invalid { consumed: 0 }
    }

    /// Records `id` unless this session already has it.
    fn once(&mut self, id: ThreatId, dir: Dir, reason: &'static str, evidence: &[u8]) {
        if !self.threats.kinds.contains(id) {
            self.threats.record(id, dir, reason, evidence);
        }
    }

    /// Records a `tls_cipher_overflow` of `reason` (once per session) with the first bytes of
    /// `at` as evidence: the record header (the 4 bytes that prove an oversized record) or the
    /// hello's handshake header and version.
    fn overflow(&mut self, dir: Dir, reason: &'static str, at: &[u8]) {
        let mut ev = [0u8; 128];
        let e = if reason == "record_length_over_limit" {
            evidence(&mut ev, format_args!("record {:02x?}.. over {MAX_RECORD} bytes", &at[..at.len().min(4)]))
        } else {
            evidence(&mut ev, format_args!("{reason}: {:02x?}", &at[..at.len().min(6)]))
        };
        self.once(ThreatId::TlsCipherOverflow, dir, reason, e);
    }

    /// Judges a complete hello message (handshake header included) read raw, whatever
    /// `tls-parser` makes of it: length fields that overflow (`tls_cipher_overflow`), the
    /// highest version a ClientHello offers and the version a ServerHello negotiates
    /// (`tls_sslv2_sslv3`, `tls_1_0`, `tls_1_1`).
    fn judge_hello(&mut self, dir: Dir, msg: &[u8]) {
        let client = dir == Dir::ToServer;
        let layout = match parser::hello_layout(msg, client, true) {
            Ok(l) => l,
            Err(reason) => {
                self.overflow(dir, reason, msg);
                None
            }
        };
        let Some(legacy) = msg.get(4..6).map(|v| u16::from_be_bytes([v[0], v[1]])) else { return };
        let mut ev = [0u8; 128];
        if client {
            let offered = layout.as_ref().map_or(legacy, parser::offered_version);
            if offered <= 0x0300 {
                let e = evidence(&mut ev, format_args!("ClientHello offering {} as highest version", V(offered)));
                self.threats.record(ThreatId::TlsSslv2Sslv3, dir, "client_offers_sslv3", e);
            }
            return;
        }
        let negotiated = layout.as_ref().map_or(legacy, parser::negotiated_version);
        if let Some(l) = &layout {
            self.compression = l.compression.unwrap_or(0);
            self.cipher = self.cipher.or(l.cipher);
        }
        self.negotiated = self.negotiated.or(Some(negotiated));
        let (id, reason) = match negotiated {
            0x0300 => (ThreatId::TlsSslv2Sslv3, "server_negotiates_sslv3"),
            0x0301 => (ThreatId::Tls1_0, "server_negotiates_tls1_0"),
            0x0302 => (ThreatId::Tls1_1, "server_negotiates_tls1_1"),
            _ => return,
        };
        let cipher = layout
            .and_then(|l| l.cipher)
            .and_then(tls_parser::TlsCipherSuite::from_id)
            .map_or("unknown cipher", |s| s.name);
        let e = evidence(&mut ev, format_args!("ServerHello negotiating {} with {cipher}", V(negotiated)));
        self.threats.record(id, dir, reason, e);
    }

    /// Judges a heartbeat record (RFC 6520) of `dir` whose header `h` starts `rest`.
    /// Plaintext (before the direction's ChangeCipherSpec): a request whose payload_length and
    /// 16 bytes of padding do not fit in the record (`payload_length_over_record` when even the
    /// payload does not: the over-read of CVE-2014-0160; `padding_under_16` when only the
    /// padding is missing: discarded by a correct peer, RFC 6520 §4). Encrypted: only record
    /// lengths are visible; a heartbeat of one direction is taken as a request, the
    /// other direction's heartbeats that follow as its answer, and the answer is a leak when
    /// the request was shorter than any valid heartbeat ([`parser::min_heartbeat_record`]) and
    /// was answered at all (`encrypted_short_request_answered`; any valid answer is longer than
    /// such a request), or when the answer exceeds the request by more than
    /// [`HB_ANSWER_SLACK`] (`encrypted_answer_exceeds_request`). Recorded in the direction of
    /// the request (plaintext) or of the answer (encrypted: the frames carrying the leak).
    /// `Err(n)`: `n` bytes are needed to read a plaintext heartbeat's type and payload_length.
    fn heartbeat(&mut self, dir: Dir, h: &RecordHeader, rest: &[u8]) -> Result<(), usize> {
        let d = dir as usize;
        let mut ev = [0u8; 128];
        if !self.sides[d].ccs {
            let want = RECORD_HEADER + h.len.min(3);
            let Some(body) = rest.get(RECORD_HEADER..want) else { return Err(want) };
            if body.first() != Some(&HB_REQUEST) {
                return Ok(());
            }
            let payload = body.get(1..3).map(|p| usize::from(u16::from_be_bytes([p[0], p[1]])));
            let reason = match payload {
                Some(p) if p + HB_MIN_PLAINTEXT <= h.len => return Ok(()),
                Some(p) if p + 3 <= h.len => "padding_under_16",
                _ => "payload_length_over_record",
            };
            let e = match payload {
                Some(p) => evidence(&mut ev, format_args!("heartbeat request: payload_length {p} in a {}-byte record", h.len)),
                None => evidence(&mut ev, format_args!("heartbeat request in a {}-byte record", h.len)),
            };
            self.threats.record(ThreatId::TlsHeartbleed, dir, reason, e);
            return Ok(());
        }
        let o = 1 - d;
        let req = self.sides[o].hb;
        if req.request == 0 {
            let version = self.negotiated.unwrap_or(0x0303);
            let min = parser::min_heartbeat_record(version, self.cipher, self.compression);
            self.sides[d].hb = Heartbeat { request: h.len, short: min.is_some_and(|m| h.len < m), ..Heartbeat::default() };
            return Ok(());
        }
        let answer = req.answer.saturating_add(h.len);
        self.sides[o].hb.answer = answer;
        if req.reported {
            return Ok(());
        }
        let reason = if req.short {
            "encrypted_short_request_answered"
        } else if answer > req.request + HB_ANSWER_SLACK {
            "encrypted_answer_exceeds_request"
        } else {
            return Ok(());
        };
        self.sides[o].hb.reported = true;
        let version = self.negotiated.unwrap_or(0x0303);
        let min = parser::min_heartbeat_record(version, self.cipher, self.compression).unwrap_or(0);
        let e = evidence(
            &mut ev,
            format_args!("encrypted heartbeat request of {} bytes (valid: {min} or more), answered with {answer} bytes", req.request),
        );
        self.threats.record(ThreatId::TlsHeartbleed, dir, reason, e);
        Ok(())
    }

    /// A record of `dir` that is not a heartbeat ends its answer to the other direction's
    /// heartbeat request, if it had begun one.
    fn not_heartbeat(&mut self, dir: Dir) {
        let hb = &mut self.sides[1 - dir as usize].hb;
        if hb.request > 0 && hb.answer > 0 {
            *hb = Heartbeat::default();
        }
    }

    /// True when neither direction can tell anything more.
    fn finished(&self) -> bool {
        self.sides.iter().all(|s| s.stage == Stage::Lost)
    }
}

impl AppParser for Tls {
    const APP: App = App::Tls;
    const PORTS: &'static [u16] = &[443, 8443, 465, 993, 995, 636, 853, 5061];
    const TRANSPORT: Transport = Transport::Tcp;
    const MIDSTREAM: Option<Framing> = Some(MIDSTREAM);

    fn resumed() -> Self {
        let mut t = Tls { midstream: true, ..Tls::default() };
        for side in &mut t.sides {
            side.stage = Stage::Records;
            side.ccs = true;
        }
        t
    }

    fn probe(dir: Dir, data: &[u8]) -> Probe {
        match parser::probe(dir == Dir::ToServer, data) {
            Parse::Ok(..) => Probe::Match,
            Parse::Incomplete(_) => Probe::NeedMore,
            Parse::Invalid => Probe::NoMatch,
        }
    }

    fn feed(&mut self, dir: Dir, data: &[u8]) -> Feed {
        let d = dir as usize;
        let mut off = 0;
        loop {
            let side = &mut self.sides[d];
            if side.skip > 0 {
                let k = side.skip.min(data.len() - off);
                side.skip -= k;
                off += k;
            }
            let rest = &data[off..];
            if rest.is_empty() {
                return Feed::Consumed(off);
            }
            match side.stage {
                Stage::Lost => {
                    return if self.finished() { Feed::Done } else { Feed::Consumed(data.len()) };
                }
                Stage::Hello => match self.hello(dir, rest) {
                    Ok(n) => off += n,
                    Err(Feed::Need { at_least, .. }) => return Feed::Need { consumed: off, at_least },
                    Err(Feed::Invalid { .. }) => return Feed::Invalid { consumed: off },
                    Err(f) => return f,
                },
                Stage::Records if side.v2 && self.negotiated == Some(SSL2_VERSION) => {
                    // The server answered an SSLv2-format hello with SSLv2: SSLv2 records follow.
                    side.stage = Stage::V2Records;
                }
                Stage::Records => match parser::record_header(rest) {
                    Parse::Ok(h, _) => {
                        if self.midstream && self.record_version.is_none() {
                            self.record_version = Some(h.version);
                        }
                        if h.content_type == CT_ALERT && h.len == 2 && !side.ccs && self.alert.is_none() {
                            // A plaintext alert (before ChangeCipherSpec): read level and description.
                            let Some(body) = rest.get(RECORD_HEADER..RECORD_HEADER + 2) else {
                                return Feed::Need { consumed: off, at_least: RECORD_HEADER + 2 };
                            };
                            self.alert = Some((body[0], body[1]));
                        }
                        if h.content_type == CT_HEARTBEAT {
                            if let Err(n) = self.heartbeat(dir, &h, rest) {
                                return Feed::Need { consumed: off, at_least: n };
                            }
                        } else {
                            self.not_heartbeat(dir);
                        }
                        let side = &mut self.sides[d];
                        side.records = side.records.saturating_add(1);
                        match h.content_type {
                            CT_APPLICATION_DATA => side.app_records = side.app_records.saturating_add(1),
                            CT_CHANGE_CIPHER_SPEC => side.ccs = true,
                            _ => {}
                        }
                        side.skip = h.len;
                        off += RECORD_HEADER;
                    }
                    Parse::Incomplete(k) => return Feed::Need { consumed: off, at_least: k },
                    // After an SSLv2-format hello, SSLv2 records when the server chose SSLv2
                    // (its answer may not have been read yet).
                    Parse::Invalid if side.v2 && !matches!(parser::v2_record(rest), Parse::Invalid) => {
                        side.stage = Stage::V2Records;
                    }
                    // No record where one must start (unknown type, version, impossible
                    // length): the stream stopped being TLS.
                    Parse::Invalid => {
                        if parser::oversized_record(rest).is_some() {
                            self.overflow(dir, "record_length_over_limit", rest);
                        }
                        self.violation = true;
                        self.sides[d].stage = Stage::Lost;
                        return Feed::Invalid { consumed: off };
                    }
                },
                Stage::V2Records => match parser::v2_record(rest) {
                    Parse::Ok((hdr, len), _) => {
                        side.records = side.records.saturating_add(1);
                        side.skip = len;
                        off += hdr;
                    }
                    Parse::Incomplete(k) => return Feed::Need { consumed: off, at_least: k },
                    Parse::Invalid => {
                        self.violation = true;
                        side.stage = Stage::Lost;
                        return Feed::Invalid { consumed: off };
                    }
                },
            }
        }
    }

    fn gap(&mut self, dir: Dir, len: usize) -> bool {
        let side = &mut self.sides[dir as usize];
        side.walk.reset();
        if matches!(side.stage, Stage::Records | Stage::V2Records) && len <= side.skip {
            // Lost bytes inside a record payload: the framing is intact.
            side.skip -= len;
            return true;
        }
        let was_lost = side.stage == Stage::Lost;
        side.stage = Stage::Lost;
        was_lost
    }

    fn threats(&self) -> Option<&Threats> {
        Some(&self.threats)
    }

    fn l7(&self, out: &mut Map<String, Value>) {
        if let Some(v) = self.negotiated {
            out.insert("version".into(), version_name(v).into());
        }
        if let Some(v) = self.record_version {
            out.insert("record_version".into(), version_name(v).into());
        }
        if let Some(v) = self.client_version {
            out.insert("client_version".into(), version_name(v).into());
        }
        if let Some(v) = self.server_version {
            out.insert("server_version".into(), version_name(v).into());
        }
        if let Some(s) = &self.sni {
            out.insert("sni".into(), s.as_str().into());
        }
        if self.alpn_total > 0 {
            out.insert("alpn".into(), self.alpn.iter().map(|a| Value::from(a.as_str())).collect());
            out.insert("alpn_count".into(), self.alpn_total.into());
        }
        if let Some(a) = &self.server_alpn {
            out.insert("server_alpn".into(), a.as_str().into());
        }
        if let Some(n) = self.cipher_suites {
            out.insert("cipher_suites".into(), n.into());
        }
        if let Some(c) = self.cipher {
            out.insert("cipher_id".into(), c.into());
            let name = tls_parser::TlsCipherSuite::from_id(c).map(|s| s.name.to_string());
            out.insert("cipher".into(), name.unwrap_or_else(|| format!("0x{c:04x}")).into());
        }
        if let Some(j) = &self.ja3 {
            out.insert("ja3".into(), j.as_str().into());
        }
        if let Some(j) = &self.ja3_hash {
            out.insert("ja3_hash".into(), j.as_str().into());
        }
        if let Some(j) = &self.ja4 {
            out.insert("ja4".into(), j.as_str().into());
        }
        if self.hello_retry {
            out.insert("hello_retry".into(), true.into());
        }
        if let Some((level, desc)) = self.alert {
            out.insert("alert_level".into(), level.into());
            out.insert("alert".into(), desc.into());
        }
        if self.compression != 0 {
            out.insert("compression".into(), self.compression.into());
        }
        out.insert("records_to_server".into(), self.sides[0].records.into());
        out.insert("records_to_client".into(), self.sides[1].records.into());
        if self.violation {
            out.insert("violation".into(), true.into());
        }
    }
}

#[cfg(test)]
mod tests;
