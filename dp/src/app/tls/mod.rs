//! TLS (SSL 3.0 to TLS 1.3): record and handshake versions, SNI, ALPN, cipher-suite count, JA3
//! and JA4 client fingerprints from the ClientHello; negotiated version (supported_versions,
//! RFC 8446 §4.2.1) and cipher from the ServerHello; then records are only counted.
//!
//! Specs: RFC 8446 §4 (handshake), §4.1.2-§4.1.3 (hellos, HelloRetryRequest), §4.2 (extensions),
//! §5.1-§5.2 (record layer, 2^14 + 2048 cap); RFC 5246 §6.2 and §7.4 (TLS 1.2); RFC 6066 §3
//! (server_name); RFC 7301 §3.1 (ALPN); RFC 8701 (GREASE). Record headers and hello messages are
//! decoded with the `tls-parser` crate (rusticata); it allocates small vectors for cipher lists
//! and extensions, which happens once per direction (the hello), never per record afterwards.
//!
//! Streaming: the first record of each direction must carry the hello. When a hello spans
//! several records (large post-quantum key shares) or TCP segments, [`Feed::Need`] asks the
//! engine for the records it occupies, one record header or record at a time, bounded by
//! [`parser::MAX_HANDSHAKE`]. After the hello only record headers are read; record payloads
//! are skipped with a counter, so the engine never buffers encrypted data. SSLv2-format hellos
//! are not recognised.
//!
//! Record headers keep being validated: bytes where a record must start that are no record
//! header (unknown content type, version other than 3.x, length over the cap) answer
//! [`Feed::Invalid`], so the engine detects the app again.

pub mod fingerprint;
pub mod parser;

use arrayvec::ArrayVec;
use serde_json::{Map, Value};

use super::{text, App, AppParser, Dir, Feed, Probe, Text, Transport};
use parser::{Parse, CT_ALERT, CT_APPLICATION_DATA, CT_CHANGE_CIPHER_SPEC, RECORD_HEADER};

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
    violation: bool,
}

/// Name of a protocol version ("TLSv1.3", ...; unknown ones as hex).
pub fn version_name(v: u16) -> String {
    match v {
        0x0300 => "SSLv3".into(),
        0x0301 => "TLSv1.0".into(),
        0x0302 => "TLSv1.1".into(),
        0x0303 => "TLSv1.2".into(),
        0x0304 => "TLSv1.3".into(),
        _ => format!("0x{v:04x}"),
    }
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
        match parser::first_handshake_from(b, &mut self.sides[dir as usize].walk) {
            Parse::Ok((msg, records), n) => {
                let side = &mut self.sides[dir as usize];
                side.records = side.records.saturating_add(records);
                side.stage = Stage::Records;
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
            Parse::Incomplete(k) => Err(Feed::Need { consumed: 0, at_least: k }),
            Parse::Invalid => {
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

    /// True when neither direction can tell anything more.
    fn finished(&self) -> bool {
        self.sides.iter().all(|s| s.stage == Stage::Lost)
    }
}

impl AppParser for Tls {
    const APP: App = App::Tls;
    const PORTS: &'static [u16] = &[443, 8443, 465, 993, 995, 636, 853, 5061];
    const TRANSPORT: Transport = Transport::Tcp;

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
                Stage::Records => match parser::record_header(rest) {
                    Parse::Ok(h, _) => {
                        if h.content_type == CT_ALERT && h.len == 2 && !side.ccs && self.alert.is_none() {
                            // A plaintext alert (before ChangeCipherSpec): read level and description.
                            let Some(body) = rest.get(RECORD_HEADER..RECORD_HEADER + 2) else {
                                return Feed::Need { consumed: off, at_least: RECORD_HEADER + 2 };
                            };
                            self.alert = Some((body[0], body[1]));
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
                    // No record where one must start (unknown type, version, impossible
                    // length): the stream stopped being TLS.
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
        if side.stage == Stage::Records && len <= side.skip {
            // Lost bytes inside a record payload: the framing is intact.
            side.skip -= len;
            return true;
        }
        let was_lost = side.stage == Stage::Lost;
        side.stage = Stage::Lost;
        was_lost
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
        out.insert("records_to_server".into(), self.sides[0].records.into());
        out.insert("records_to_client".into(), self.sides[1].records.into());
        if self.violation {
            out.insert("violation".into(), true.into());
        }
    }
}

#[cfg(test)]
mod tests;
