//! Pure TLS parsing functions over `&[u8]` (no state). Record and handshake framing follow
//! RFC 8446 §5.1-§5.2 (TLSPlaintext: type, legacy_record_version, 16-bit length, at most
//! 2^14 + 2048 bytes per §5.2) and §4 (Handshake: type, 24-bit length); hello contents are
//! decoded with `tls-parser` (rusticata), extensions are split here (RFC 8446 §4.2) so that one
//! malformed extension does not hide the others.

pub use crate::app::Parse;

use std::borrow::Cow;

use tls_parser::{
    parse_tls_client_hello_extension, parse_tls_message_handshake, parse_tls_record_header,
    TlsExtension, TlsMessage, TlsMessageHandshake,
};

/// Length of a record header (type, version, length).
pub const RECORD_HEADER: usize = 5;
/// Largest record payload accepted (RFC 8446 §5.2: 2^14 + 2048, the TLSCiphertext bound).
pub const MAX_RECORD: usize = (1 << 14) + 2048;
/// Largest handshake message reassembled from several records (bytes, header included).
pub const MAX_HANDSHAKE: usize = 64 * 1024;

/// Record content type ChangeCipherSpec (RFC 8446 §5.1).
pub const CT_CHANGE_CIPHER_SPEC: u8 = 20;
/// Record content type Alert.
pub const CT_ALERT: u8 = 21;
/// Record content type Handshake.
pub const CT_HANDSHAKE: u8 = 22;
/// Record content type ApplicationData.
pub const CT_APPLICATION_DATA: u8 = 23;
/// Record content type Heartbeat (RFC 6520).
pub const CT_HEARTBEAT: u8 = 24;

/// Heartbeat message type heartbeat_request (RFC 6520 §3).
pub const HB_REQUEST: u8 = 1;
/// Heartbeat message type heartbeat_response.
pub const HB_RESPONSE: u8 = 2;
/// Smallest heartbeat plaintext (RFC 6520 §4): type (1), payload_length (2), padding (at least
/// 16); a request whose payload_length leaves less than that is discarded by a correct peer.
pub const HB_MIN_PLAINTEXT: usize = 1 + 2 + 16;

/// SSL 2.0 version number (the SSLv2 CLIENT-HELLO / SERVER-HELLO version field).
pub const SSL2_VERSION: u16 = 0x0002;
/// Bytes of an SSLv2-format CLIENT-HELLO read before its variable parts: the 2-byte record
/// header, msg_type, version, cipher_spec_length, session_id_length, challenge_length.
pub const V2_CLIENT_HELLO_HEAD: usize = 2 + 9;
/// Bytes of an SSLv2 SERVER-HELLO read before its variable parts: the 2-byte record header,
/// msg_type, session_id_hit, certificate_type, version, certificate_length, cipher_specs_length,
/// connection_id_length.
pub const V2_SERVER_HELLO_HEAD: usize = 2 + 11;
/// Largest ClientHello body the length fields can describe (bytes): version, random, session id
/// (32), cipher suites (2^16 - 2), compression methods (255), extensions (2^16 - 1), with their
/// length fields (RFC 8446 §4.1.2).
pub const MAX_CLIENT_HELLO: usize = 2 + 32 + 1 + 32 + 2 + 65534 + 1 + 255 + 2 + 65535;
/// Largest ServerHello body the length fields can describe (bytes, RFC 8446 §4.1.3).
pub const MAX_SERVER_HELLO: usize = 2 + 32 + 1 + 32 + 2 + 1 + 2 + 65535;

/// Handshake type ClientHello (RFC 8446 §4).
pub const HS_CLIENT_HELLO: u8 = 1;
/// Handshake type ServerHello (also a HelloRetryRequest in TLS 1.3).
pub const HS_SERVER_HELLO: u8 = 2;

/// Extension server_name (RFC 6066 §3).
pub const EXT_SERVER_NAME: u16 = 0x0000;
/// Extension supported_groups (RFC 8446 §4.2.7, formerly elliptic_curves).
pub const EXT_SUPPORTED_GROUPS: u16 = 0x000a;
/// Extension ec_point_formats (RFC 8422 §5.1.2).
pub const EXT_EC_POINT_FORMATS: u16 = 0x000b;
/// Extension signature_algorithms (RFC 8446 §4.2.3).
pub const EXT_SIGNATURE_ALGORITHMS: u16 = 0x000d;
/// Extension application_layer_protocol_negotiation (RFC 7301 §3.1).
pub const EXT_ALPN: u16 = 0x0010;
/// Extension supported_versions (RFC 8446 §4.2.1).
pub const EXT_SUPPORTED_VERSIONS: u16 = 0x002b;

/// A record header (RFC 8446 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// Content type (20..=24).
    pub content_type: u8,
    /// legacy_record_version (0x0300..=0x0304).
    pub version: u16,
    /// Payload length in bytes (at most [`MAX_RECORD`]).
    pub len: usize,
}

/// True for GREASE values (RFC 8701 §2: 0x?A?A with both bytes equal).
pub fn is_grease(v: u16) -> bool {
    v & 0x0f0f == 0x0a0a && v >> 8 == v & 0xff
}

/// Is `v` a TLS/SSL 3.x version (0x0300..=0x0304)?
fn plausible_version(v: u16) -> bool {
    (0x0300..=0x0304).contains(&v)
}

/// Parses and validates a record header: known content type, version 3.0-3.4 (TLS 1.3 records
/// carry 0x0301/0x0303), length at most [`MAX_RECORD`].
pub fn record_header(b: &[u8]) -> Parse<RecordHeader> {
    let Some(h) = b.get(..RECORD_HEADER) else {
        // Validate what is there so that non-TLS bytes are rejected early.
        if let Some(&t) = b.first() {
            if !(CT_CHANGE_CIPHER_SPEC..=CT_HEARTBEAT).contains(&t) {
                return Parse::Invalid;
            }
        }
        if let Some(&maj) = b.get(1) {
            if maj != 3 {
                return Parse::Invalid;
            }
        }
        if let Some(&min) = b.get(2) {
            if min > 4 {
                return Parse::Invalid;
            }
        }
        if let Some(&hi) = b.get(3) {
            if usize::from(hi) << 8 > MAX_RECORD {
                return Parse::Invalid;
            }
        }
        return Parse::Incomplete(RECORD_HEADER);
    };
    match parse_tls_record_header(h) {
        Ok((_, hdr)) => {
            let rh = RecordHeader { content_type: hdr.record_type.0, version: hdr.version.0, len: usize::from(hdr.len) };
            if !(CT_CHANGE_CIPHER_SPEC..=CT_HEARTBEAT).contains(&rh.content_type)
                || !plausible_version(rh.version)
                || rh.len > MAX_RECORD
            {
                return Parse::Invalid;
            }
            Parse::Ok(rh, RECORD_HEADER)
        }
        Err(_) => Parse::Invalid,
    }
}

/// Reads a big-endian u16 at `at`.
fn be16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([s[0], s[1]]))
}

/// Reads a big-endian u24 at `at`.
fn be24(b: &[u8], at: usize) -> Option<usize> {
    let s = b.get(at..at.checked_add(3)?)?;
    Some(usize::from(s[0]) << 16 | usize::from(s[1]) << 8 | usize::from(s[2]))
}

/// How far [`first_handshake_from`] walked a handshake message that spans several records,
/// in the bytes presented again with more appended (the stream engine's contract): the
/// records before `pos` were read and checked, so each record header is read a bounded number
/// of times however many records the message was cut into. 24 bytes, `Copy`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HelloWalk {
    /// End of the last record walked (0: the first record is not read yet).
    pos: u32,
    /// Handshake bytes in the records walked.
    have: u32,
    /// The message's length with its 4-byte header, once known (0: not yet).
    need: u32,
    /// Records walked.
    records: u32,
    /// Bytes examined so far (record headers read, fragments copied), never reset.
    examined: u64,
}

impl HelloWalk {
    /// Forgets the walk (the message was taken or the direction moved on); keeps the count.
    pub fn reset(&mut self) {
        *self = HelloWalk { examined: self.examined, ..HelloWalk::default() };
    }

    /// Bytes examined so far (a measure of work for tests and benchmarks).
    pub fn examined(&self) -> u64 {
        self.examined
    }

    fn count(&mut self, n: usize) {
        self.examined = self.examined.saturating_add(n as u64);
    }
}

/// The first handshake message of a flight, reassembled from as many handshake records as it
/// spans. Returns the message (4-byte handshake header included; borrowed when it fits in the
/// first record, copied otherwise, at most [`MAX_HANDSHAKE`] bytes), the bytes of the whole
/// records it occupies and how many records those are. Messages that follow it inside the last
/// record are not returned (the caller only wants the hello).
pub fn first_handshake(b: &[u8]) -> Parse<(Cow<'_, [u8]>, u32)> {
    first_handshake_from(b, &mut HelloWalk::default())
}

/// [`first_handshake`] on bytes presented again with more appended: `walk` keeps how far the
/// records of a message that spans several were walked, and the walk goes on from there (a
/// hello cut into many small records is not walked again from its first record at each one).
/// `b` must start where it started at the previous call (after [`HelloWalk::reset`],
/// anywhere).
pub fn first_handshake_from<'a>(b: &'a [u8], walk: &mut HelloWalk) -> Parse<(Cow<'a, [u8]>, u32)> {
    if walk.pos as usize > b.len() {
        walk.reset();
    }
    if walk.pos == 0 {
        walk.count(RECORD_HEADER + 4);
        let h0 = match record_header(b) {
            Parse::Ok(h, _) => h,
            Parse::Incomplete(k) => return Parse::Incomplete(k),
            Parse::Invalid => return Parse::Invalid,
        };
        if h0.content_type != CT_HANDSHAKE || h0.len == 0 {
            return Parse::Invalid;
        }
        // Handshake header (type + u24 length) from the first fragment: reject absurd lengths
        // early.
        let frag0_avail = &b[RECORD_HEADER..b.len().min(RECORD_HEADER + h0.len)];
        if let Some(hl) = be24(frag0_avail, 1) {
            if hl + 4 > MAX_HANDSHAKE {
                return Parse::Invalid;
            }
        }
        let end0 = RECORD_HEADER + h0.len;
        let Some(frag0) = b.get(RECORD_HEADER..end0) else {
            return Parse::Incomplete(end0);
        };
        if let Some(hl) = be24(frag0, 1) {
            if hl + 4 <= frag0.len() {
                return Parse::Ok((Cow::Borrowed(&frag0[..hl + 4]), 1), end0);
            }
        }
        // The message spans records: walk the following handshake records until it is
        // complete, asking for one more record header or record at a time.
        *walk = HelloWalk {
            pos: u32::try_from(end0).unwrap_or(u32::MAX),
            have: u32::try_from(frag0.len()).unwrap_or(u32::MAX),
            need: be24(frag0, 1).map_or(0, |hl| u32::try_from(hl + 4).unwrap_or(u32::MAX)),
            records: 1,
            examined: walk.examined,
        };
    }
    while walk.need == 0 || walk.have < walk.need {
        let pos = walk.pos as usize;
        walk.count(RECORD_HEADER);
        let h = match record_header(b.get(pos..).unwrap_or(&[])) {
            Parse::Ok(h, _) => h,
            Parse::Incomplete(k) => return Parse::Incomplete(pos + k),
            Parse::Invalid => return Parse::Invalid,
        };
        if h.content_type != CT_HANDSHAKE || h.len == 0 {
            return Parse::Invalid;
        }
        let end = pos + RECORD_HEADER + h.len;
        if end > b.len() {
            return Parse::Incomplete(end);
        }
        walk.have = walk.have.saturating_add(u32::try_from(h.len).unwrap_or(u32::MAX));
        walk.pos = u32::try_from(end).unwrap_or(u32::MAX);
        walk.records += 1;
        if walk.need == 0 && walk.have >= 4 {
            let mut hdr = [0u8; 4];
            let n = copy_fragments(b, end, &mut hdr);
            walk.count(n);
            let hl = usize::from(hdr[1]) << 16 | usize::from(hdr[2]) << 8 | usize::from(hdr[3]);
            if hl + 4 > MAX_HANDSHAKE {
                return Parse::Invalid;
            }
            walk.need = u32::try_from(hl + 4).unwrap_or(u32::MAX);
        }
    }
    let mut msg = vec![0u8; walk.need as usize];
    let n = copy_fragments(b, walk.pos as usize, &mut msg);
    walk.count(n);
    let out = Parse::Ok((Cow::Owned(msg), walk.records), walk.pos as usize);
    walk.reset();
    out
}

/// Copies the concatenation of the fragments of the records in `b[..upto]` (already checked
/// by the walk) into `out` until it is full; returns the bytes examined (headers read and
/// bytes copied).
fn copy_fragments(b: &[u8], upto: usize, out: &mut [u8]) -> usize {
    let (mut p, mut filled, mut examined) = (0usize, 0usize, 0usize);
    while p + RECORD_HEADER <= upto && filled < out.len() {
        let len = be16(b, p + 3).map_or(0, usize::from);
        let frag = b.get(p + RECORD_HEADER..(p + RECORD_HEADER + len).min(upto)).unwrap_or(&[]);
        let k = frag.len().min(out.len() - filled);
        out[filled..filled + k].copy_from_slice(&frag[..k]);
        filled += k;
        examined += RECORD_HEADER + k;
        p += RECORD_HEADER + len;
    }
    examined
}

/// What a ClientHello says (RFC 8446 §4.1.2), with borrowed strings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientHello<'a> {
    /// legacy_version.
    pub version: u16,
    /// Cipher suites in order (GREASE included).
    pub ciphers: Vec<u16>,
    /// Extension types in order (GREASE included).
    pub extensions: Vec<u16>,
    /// server_name host_name (first entry).
    pub sni: Option<&'a [u8]>,
    /// ALPN protocol names in order.
    pub alpn: Vec<&'a [u8]>,
    /// supported_versions (GREASE included).
    pub supported_versions: Vec<u16>,
    /// supported_groups (GREASE included).
    pub groups: Vec<u16>,
    /// ec_point_formats.
    pub point_formats: Vec<u8>,
    /// signature_algorithms in order.
    pub sig_algs: Vec<u16>,
}

/// What a ServerHello says (RFC 8446 §4.1.3).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerHello<'a> {
    /// legacy_version.
    pub version: u16,
    /// supported_versions selected_version, if present (TLS 1.3).
    pub selected_version: Option<u16>,
    /// cipher_suite.
    pub cipher: u16,
    /// ALPN protocol selected (TLS 1.2 servers send it here; TLS 1.3 in EncryptedExtensions).
    pub alpn: Option<&'a [u8]>,
    /// True for a TLS 1.3 HelloRetryRequest (RFC 8446 §4.1.3 special random).
    pub hello_retry: bool,
}

/// RFC 8446 §4.1.3: the random of a HelloRetryRequest (SHA-256 of "HelloRetryRequest").
const HRR_RANDOM: [u8; 32] = [
    0xCF, 0x21, 0xAD, 0x74, 0xE5, 0x9A, 0x61, 0x11, 0xBE, 0x1D, 0x8C, 0x02, 0x1E, 0x65, 0xB8, 0x91,
    0xC2, 0xA2, 0x11, 0x16, 0x7A, 0xBB, 0x8C, 0x5E, 0x07, 0x9E, 0x09, 0xE2, 0xC8, 0xA8, 0x33, 0x9C,
];

/// Splits an extensions block into (type, data) pairs (RFC 8446 §4.2); stops at the first
/// malformed entry.
pub fn extensions(mut ext: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let t = be16(ext, 0)?;
        let l = usize::from(be16(ext, 2)?);
        let data = ext.get(4..4 + l)?;
        ext = &ext[4 + l..];
        Some((t, data))
    })
}

/// Decodes a ClientHello handshake message (header included) with `tls-parser`.
pub fn client_hello(msg: &[u8]) -> Option<ClientHello<'_>> {
    let Ok((_, TlsMessage::Handshake(TlsMessageHandshake::ClientHello(ch)))) = parse_tls_message_handshake(msg)
    else {
        return None;
    };
    let mut out = ClientHello {
        version: ch.version.0,
        ciphers: ch.ciphers.iter().map(|c| c.0).collect(),
        ..ClientHello::default()
    };
    let raw = ch.ext.unwrap_or(&[]);
    let mut off = 0;
    for (t, data) in extensions(raw) {
        out.extensions.push(t);
        let whole = &raw[off..off + 4 + data.len()];
        off += 4 + data.len();
        let Ok((_, ext)) = parse_tls_client_hello_extension(whole) else { continue };
        match ext {
            TlsExtension::SNI(names) => {
                out.sni = names.iter().find(|(ty, _)| ty.0 == 0).map(|(_, n)| *n);
            }
            TlsExtension::ALPN(protos) => out.alpn = protos,
            TlsExtension::SupportedVersions(v) => out.supported_versions = v.iter().map(|x| x.0).collect(),
            TlsExtension::EllipticCurves(g) => out.groups = g.iter().map(|x| x.0).collect(),
            TlsExtension::EcPointFormats(p) => out.point_formats = p.to_vec(),
            TlsExtension::SignatureAlgorithms(s) => out.sig_algs = s,
            _ => {}
        }
    }
    Some(out)
}

/// Decodes a ServerHello handshake message (header included) with `tls-parser`; the few
/// extensions wanted are read here (supported_versions is a single u16 in a ServerHello).
pub fn server_hello(msg: &[u8]) -> Option<ServerHello<'_>> {
    let Ok((_, TlsMessage::Handshake(TlsMessageHandshake::ServerHello(sh)))) = parse_tls_message_handshake(msg)
    else {
        return None;
    };
    let mut out = ServerHello {
        version: sh.version.0,
        cipher: sh.cipher.0,
        hello_retry: sh.random == HRR_RANDOM,
        ..ServerHello::default()
    };
    for (t, data) in extensions(sh.ext.unwrap_or(&[])) {
        match t {
            EXT_SUPPORTED_VERSIONS => out.selected_version = be16(data, 0),
            EXT_ALPN => {
                // u16 list length, then one u8-length protocol name.
                let l = data.get(2).map(|&l| usize::from(l)).unwrap_or(0);
                out.alpn = data.get(3..3 + l).filter(|p| !p.is_empty());
            }
            _ => {}
        }
    }
    Some(out)
}

/// Probe of the first bytes of a direction: a handshake record whose first message is a
/// ClientHello (to server) or ServerHello (to client) with a 3.x version, or (to client) a
/// plaintext alert record; or an SSLv2-format CLIENT-HELLO (to server, [`v2_client_hello`]) or
/// SERVER-HELLO (to client, [`v2_server_hello`]). Decides on the 11 (SSLv2 server: 13) first
/// bytes. A hello record longer than [`MAX_RECORD`] is still TLS (the overflow is the parser's
/// to report).
pub fn probe(to_server: bool, b: &[u8]) -> Parse<()> {
    if b.first().is_some_and(|&c| c & 0x80 != 0) {
        let v2 = if to_server { unit(v2_client_hello(b)) } else { unit(v2_server_hello(b)) };
        return match v2 {
            Parse::Ok(_, n) => Parse::Ok((), n),
            other => other,
        };
    }
    let oversized = oversized_record(b).is_some();
    let hdr_ok = match record_header(b) {
        Parse::Ok(h, _) => Some(h),
        Parse::Incomplete(_) => None,
        Parse::Invalid if oversized => None,
        Parse::Invalid => return Parse::Invalid,
    };
    let Some(&ct) = b.first() else { return Parse::Incomplete(1) };
    if ct == CT_ALERT && !to_server {
        if oversized {
            return Parse::Invalid;
        }
        // Alert: 2-byte body (level 1 or 2, description).
        if let Some(h) = hdr_ok {
            if h.len != 2 {
                return Parse::Invalid;
            }
        }
        return match b.get(5) {
            None => Parse::Incomplete(6),
            Some(1 | 2) => Parse::Ok((), 7),
            Some(_) => Parse::Invalid,
        };
    }
    if ct != CT_HANDSHAKE {
        return Parse::Invalid;
    }
    if let Some(h) = hdr_ok {
        if h.len < 4 {
            return Parse::Invalid;
        }
    }
    let want = if to_server { HS_CLIENT_HELLO } else { HS_SERVER_HELLO };
    match b.get(5) {
        None => return Parse::Incomplete(6),
        Some(&t) if t != want => return Parse::Invalid,
        Some(_) => {}
    }
    // Handshake length: a hello is at least 38 bytes (version, random, the session id,
    // cipher and compression lengths). A longer one than MAX_HANDSHAKE (or than a hello can
    // be) is still TLS: the parser reports the overflow.
    if let Some(hl) = be24(b, 6) {
        if hl < 38 && !oversized {
            return Parse::Invalid;
        }
    }
    // Hello legacy_version 3.x.
    if let Some(&maj) = b.get(9) {
        if maj != 3 {
            return Parse::Invalid;
        }
    }
    match b.get(10) {
        None => Parse::Incomplete(11),
        Some(&min) if min > 4 => Parse::Invalid,
        Some(_) => Parse::Ok((), 11),
    }
}

/// The length of a record whose header is otherwise valid (known content type, version 3.x)
/// but whose length exceeds [`MAX_RECORD`] (RFC 8446 §5.2, RFC 5246 §6.2.3: 2^14 + 2048), read
/// from the first 4 bytes once the high length byte alone proves it (a lower bound then), else
/// from 5. None for any other bytes.
pub fn oversized_record(b: &[u8]) -> Option<usize> {
    let (&t, &maj, &min, &hi) = (b.first()?, b.get(1)?, b.get(2)?, b.get(3)?);
    if !(CT_CHANGE_CIPHER_SPEC..=CT_HEARTBEAT).contains(&t) || maj != 3 || min > 4 {
        return None;
    }
    let len = usize::from(hi) << 8 | usize::from(b.get(4).copied().unwrap_or(0));
    (len > MAX_RECORD).then_some(len)
}

/// Where a hello's variable-length parts are, as far as its length fields fit (RFC 8446
/// §4.1.2-§4.1.3, RFC 5246 §7.4.1.2-§7.4.1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HelloLayout<'a> {
    /// legacy_version.
    pub version: u16,
    /// ServerHello cipher_suite (None for a ClientHello).
    pub cipher: Option<u16>,
    /// ServerHello compression_method (None for a ClientHello).
    pub compression: Option<u8>,
    /// The extensions block (empty when absent).
    pub extensions: &'a [u8],
}

/// Walks the length fields of a ClientHello (`client`) or ServerHello `msg` (4-byte handshake
/// header, then the body as far as it is present) against their container, the body of the
/// length the handshake header declares. `Err(reason)` for the first field whose length runs
/// past its container (or a session id over 32 bytes, RFC 8446 §4.1.2); `Ok(None)` when the
/// bytes present end first, or when the body is too short for its fixed fields (malformed, but
/// nothing overflows); `Ok(Some(..))` once every field, each extension included, was found in
/// place. Extensions are walked only when the whole body is present and `walk_extensions`.
/// Reasons: `session_id_over_32`, `session_id_overflows_hello`, `cipher_suites_overflow_hello`,
/// `compression_methods_overflow_hello`, `extensions_overflow_hello`,
/// `extension_overflows_extensions`.
pub fn hello_layout(msg: &[u8], client: bool, walk_extensions: bool) -> Result<Option<HelloLayout<'_>>, &'static str> {
    let Some(hl) = be24(msg, 1) else { return Ok(None) };
    let end = 4 + hl;
    let avail = msg.len().min(end);
    let body = &msg[..avail];
    // version (2) and random (32).
    let Some(version) = be16(body, 4) else { return Ok(None) };
    let mut p = 4 + 2 + 32;
    let Some(&sid) = body.get(p) else { return Ok(None) };
    if sid > 32 {
        return Err("session_id_over_32");
    }
    p += 1 + usize::from(sid);
    if p > end {
        return Err("session_id_overflows_hello");
    }
    let (mut cipher, mut compression) = (None, None);
    if client {
        let Some(cl) = be16(body, p) else { return Ok(None) };
        p += 2 + usize::from(cl);
        if p > end {
            return Err("cipher_suites_overflow_hello");
        }
        let Some(&n) = body.get(p) else { return Ok(None) };
        p += 1 + usize::from(n);
        if p > end {
            return Err("compression_methods_overflow_hello");
        }
    } else {
        let (Some(c), Some(&m)) = (be16(body, p), body.get(p + 2)) else { return Ok(None) };
        cipher = Some(c);
        compression = Some(m);
        p += 3;
    }
    let mut extensions: &[u8] = &[];
    if p < end {
        let Some(el) = be16(body, p) else { return Ok(None) };
        p += 2;
        if p + usize::from(el) > end {
            return Err("extensions_overflow_hello");
        }
        let Some(block) = body.get(p..p + usize::from(el)) else { return Ok(None) };
        extensions = block;
    }
    if !walk_extensions || avail < end {
        return Ok(None);
    }
    let mut rest = extensions;
    while !rest.is_empty() {
        let l = match be16(rest, 2) {
            Some(l) if 4 + usize::from(l) <= rest.len() => usize::from(l),
            _ => return Err("extension_overflows_extensions"),
        };
        rest = &rest[4 + l..];
    }
    Ok(Some(HelloLayout { version, cipher, compression, extensions }))
}

/// The highest version a ClientHello offers: the largest non-GREASE entry of its
/// supported_versions extension (RFC 8446 §4.2.1), else its legacy_version.
pub fn offered_version(layout: &HelloLayout<'_>) -> u16 {
    extensions(layout.extensions)
        .filter(|(t, _)| *t == EXT_SUPPORTED_VERSIONS)
        .flat_map(|(_, d)| {
            let n = d.first().map_or(0, |&n| usize::from(n));
            d.get(1..1 + n).unwrap_or(&[]).chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]]))
        })
        .filter(|v| !is_grease(*v))
        .max()
        .unwrap_or(layout.version)
}

/// The version a ServerHello negotiates: its supported_versions selected_version (RFC 8446
/// §4.2.1; TLS 1.3 ServerHellos carry 0x0303 as legacy_version), else its legacy_version.
pub fn negotiated_version(layout: &HelloLayout<'_>) -> u16 {
    extensions(layout.extensions)
        .find(|(t, _)| *t == EXT_SUPPORTED_VERSIONS)
        .and_then(|(_, d)| be16(d, 0))
        .unwrap_or(layout.version)
}

/// Why a direction's first bytes, which [`first_handshake_from`] refused, are an overflow:
/// `record_length_over_limit` (a record longer than [`MAX_RECORD`]),
/// `handshake_length_over_hello_maximum` (more than the hello's fields can describe,
/// [`MAX_CLIENT_HELLO`] / [`MAX_SERVER_HELLO`]), `handshake_length_overflows_records` (the
/// handshake records that follow end before the message does: another record type, or no
/// record at all). None when nothing overflows or the bytes present cannot tell yet. Walks the
/// records once (call it once per direction).
pub fn hello_overflow(b: &[u8], client: bool) -> Option<&'static str> {
    if oversized_record(b).is_some() {
        return Some("record_length_over_limit");
    }
    let Parse::Ok(h0, _) = record_header(b) else { return None };
    if h0.content_type != CT_HANDSHAKE || h0.len == 0 {
        return None;
    }
    let frag0 = &b[RECORD_HEADER..b.len().min(RECORD_HEADER + h0.len)];
    let hl = be24(frag0, 1)?;
    if hl > if client { MAX_CLIENT_HELLO } else { MAX_SERVER_HELLO } {
        return Some("handshake_length_over_hello_maximum");
    }
    let (mut pos, mut have) = (RECORD_HEADER + h0.len, h0.len);
    while have < hl + 4 {
        let rest = b.get(pos..)?;
        match record_header(rest) {
            Parse::Ok(h, _) if h.content_type == CT_HANDSHAKE && h.len > 0 => {
                have += h.len;
                pos += RECORD_HEADER + h.len;
            }
            Parse::Ok(..) => return Some("handshake_length_overflows_records"),
            Parse::Incomplete(_) => return None,
            Parse::Invalid if oversized_record(rest).is_some() => return Some("record_length_over_limit"),
            Parse::Invalid => return Some("handshake_length_overflows_records"),
        }
    }
    None
}

/// The fixed part of an SSLv2-format CLIENT-HELLO (SSL 2.0 specification, CLIENT-HELLO, with a
/// 2-byte record header; RFC 6101 Appendix E.2 and RFC 5246 Appendix E.2 for the
/// version-3-compatible form).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct V2ClientHello {
    /// Record length (bytes after the 2-byte header).
    pub len: usize,
    /// Highest version offered: 0x0002 (SSL 2.0) or 0x0300..=0x0303.
    pub version: u16,
    /// cipher_spec_length (bytes; 3 per cipher spec).
    pub cipher_specs: usize,
    /// session_id_length (0 or 16).
    pub session_id: usize,
    /// challenge_length (16..=32).
    pub challenge: usize,
}

impl V2ClientHello {
    /// True when the three lists run past the record (SSLv2 "cipher length overflow").
    pub fn overflows(&self) -> bool {
        9 + self.cipher_specs + self.session_id + self.challenge > self.len
    }
}

/// The outcome of a parse without its item.
fn unit<T>(p: Parse<T>) -> Parse<()> {
    match p {
        Parse::Ok(_, n) => Parse::Ok((), n),
        Parse::Incomplete(n) => Parse::Incomplete(n),
        Parse::Invalid => Parse::Invalid,
    }
}

/// True when `b[i]` is absent (not received yet) or passes `ok`.
fn byte_ok(b: &[u8], i: usize, ok: impl Fn(u8) -> bool) -> bool {
    b.get(i).is_none_or(|&c| ok(c))
}

/// Parses the fixed part of an SSLv2-format CLIENT-HELLO ([`V2_CLIENT_HELLO_HEAD`] bytes),
/// validating what is present: high bit of the first byte (2-byte header), record length at
/// least 9, msg_type 1, version 0x0002 or 3.0-3.3, cipher_spec_length a non-zero multiple of 3,
/// session_id_length 0 or 16, challenge_length 16..=32. The three lists may overflow the
/// record ([`V2ClientHello::overflows`]).
pub fn v2_client_hello(b: &[u8]) -> Parse<V2ClientHello> {
    let plausible = byte_ok(b, 0, |c| c & 0x80 != 0)
        && byte_ok(b, 2, |c| c == 1)
        && byte_ok(b, 3, |c| c == 0 || c == 3)
        && b.get(3..5).is_none_or(|v| matches!(u16::from_be_bytes([v[0], v[1]]), SSL2_VERSION | 0x0300..=0x0303))
        && be16(b, 5).is_none_or(|n| n > 0 && n % 3 == 0)
        && byte_ok(b, 7, |c| c == 0)
        && be16(b, 7).is_none_or(|n| n == 0 || n == 16)
        && byte_ok(b, 9, |c| c == 0)
        && be16(b, 9).is_none_or(|n| (16..=32).contains(&n));
    if !plausible {
        return Parse::Invalid;
    }
    let len = be16(b, 0).map(|h| usize::from(h & 0x7fff));
    if len.is_some_and(|l| l < 9) {
        return Parse::Invalid;
    }
    let (Some(len), Some(version), Some(cs), Some(sid), Some(ch)) = (len, be16(b, 3), be16(b, 5), be16(b, 7), be16(b, 9))
    else {
        return Parse::Incomplete(V2_CLIENT_HELLO_HEAD);
    };
    let h = V2ClientHello {
        len,
        version,
        cipher_specs: usize::from(cs),
        session_id: usize::from(sid),
        challenge: usize::from(ch),
    };
    Parse::Ok(h, V2_CLIENT_HELLO_HEAD)
}

/// The fixed part of an SSLv2 SERVER-HELLO (SSL 2.0 specification).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct V2ServerHello {
    /// Record length (bytes after the 2-byte header).
    pub len: usize,
    /// certificate_length (bytes).
    pub certificate: usize,
    /// cipher_specs_length (bytes).
    pub cipher_specs: usize,
    /// connection_id_length (16..=32).
    pub connection_id: usize,
}

impl V2ServerHello {
    /// True when the certificate, cipher specs and connection id run past the record.
    pub fn overflows(&self) -> bool {
        11 + self.certificate + self.cipher_specs + self.connection_id > self.len
    }
}

/// Parses the fixed part of an SSLv2 SERVER-HELLO ([`V2_SERVER_HELLO_HEAD`] bytes), validating
/// what is present: 2-byte header, record length at least 11, msg_type 4, session_id_hit 0/1,
/// certificate_type 0/1 (X.509), version 0x0002, cipher_specs_length a multiple of 3,
/// connection_id_length 16..=32.
pub fn v2_server_hello(b: &[u8]) -> Parse<V2ServerHello> {
    let plausible = byte_ok(b, 0, |c| c & 0x80 != 0)
        && byte_ok(b, 2, |c| c == 4)
        && byte_ok(b, 3, |c| c <= 1)
        && byte_ok(b, 4, |c| c <= 1)
        && byte_ok(b, 5, |c| c == 0)
        && byte_ok(b, 6, |c| c == 2)
        && be16(b, 9).is_none_or(|n| n % 3 == 0)
        && byte_ok(b, 11, |c| c == 0)
        && be16(b, 11).is_none_or(|n| (16..=32).contains(&n));
    if !plausible {
        return Parse::Invalid;
    }
    let len = be16(b, 0).map(|h| usize::from(h & 0x7fff));
    if len.is_some_and(|l| l < 11) {
        return Parse::Invalid;
    }
    let (Some(len), Some(cert), Some(cs), Some(conn)) = (len, be16(b, 7), be16(b, 9), be16(b, 11)) else {
        return Parse::Incomplete(V2_SERVER_HELLO_HEAD);
    };
    let h = V2ServerHello {
        len,
        certificate: usize::from(cert),
        cipher_specs: usize::from(cs),
        connection_id: usize::from(conn),
    };
    Parse::Ok(h, V2_SERVER_HELLO_HEAD)
}

/// An SSLv2 record header (SSL 2.0 specification, "Record Header"): 2 bytes when the high bit
/// of the first is set (15-bit length), else 3 (14-bit length, then the padding length, which
/// must be shorter than the record). Returns (header bytes, record length); a zero-length
/// record is invalid.
pub fn v2_record(b: &[u8]) -> Parse<(usize, usize)> {
    let Some(&b0) = b.first() else { return Parse::Incomplete(2) };
    let (hdr, len) = if b0 & 0x80 != 0 {
        let Some(&b1) = b.get(1) else { return Parse::Incomplete(2) };
        (2, usize::from(b0 & 0x7f) << 8 | usize::from(b1))
    } else {
        let (Some(&b1), Some(&pad)) = (b.get(1), b.get(2)) else { return Parse::Incomplete(3) };
        let len = usize::from(b0 & 0x3f) << 8 | usize::from(b1);
        if usize::from(pad) >= len.max(1) {
            return Parse::Invalid;
        }
        (3, len)
    };
    if len == 0 {
        return Parse::Invalid;
    }
    Parse::Ok((hdr, len), hdr)
}

/// The smallest record length (bytes) an encrypted heartbeat can have when it is valid, i.e.
/// carries at least [`HB_MIN_PLAINTEXT`] bytes of plaintext, under the negotiated `version`,
/// `cipher` suite and `compression` method: the least the suite's record protection adds
/// (RFC 5246 §6.2.3: MAC, block padding to the cipher's block, explicit IV from TLS 1.1 on,
/// and the encrypt-then-MAC layout of RFC 7366 where shorter; AEAD explicit nonce and tag,
/// RFC 5288 / RFC 6655 / RFC 7905). A suite Warden does not know gets the least any
/// negotiable suite adds (16 bytes: an MD5 MAC, a CCM_8 nonce and tag, a Poly1305 tag). None
/// where nothing can be judged: compressed records (their plaintext may be shorter) and TLS 1.3
/// (no heartbeat content type on the wire, RFC 8446 §5).
pub fn min_heartbeat_record(version: u16, cipher: Option<u16>, compression: u8) -> Option<usize> {
    use tls_parser::{TlsCipherEnc as Enc, TlsCipherEncMode as Mode, TlsCipherKx, TlsCipherSuite};
    if compression != 0 || version >= 0x0304 {
        return None;
    }
    const ANY: usize = HB_MIN_PLAINTEXT + 16;
    let Some(s) = cipher.and_then(TlsCipherSuite::from_id) else { return Some(ANY) };
    if s.kx == TlsCipherKx::Tls13 {
        return None;
    }
    let mac = usize::from(s.mac_size / 8);
    let min = match (s.enc, s.enc_mode) {
        (Enc::Chacha20_Poly1305, _) => HB_MIN_PLAINTEXT + 16,
        (_, Mode::Gcm) => HB_MIN_PLAINTEXT + 8 + 16,
        (_, Mode::Ccm) if s.name.contains("CCM_8") => HB_MIN_PLAINTEXT + 8 + 8,
        (_, Mode::Ccm) => HB_MIN_PLAINTEXT + 8 + 16,
        (_, Mode::Cbc) => {
            let bs = if matches!(s.enc, Enc::Des | Enc::TripleDes | Enc::Rc2 | Enc::Idea) { 8 } else { 16 };
            let iv = if version >= 0x0302 { bs } else { 0 };
            let mac_then_encrypt = (HB_MIN_PLAINTEXT + mac + 1).div_ceil(bs) * bs;
            let encrypt_then_mac = (HB_MIN_PLAINTEXT + 1).div_ceil(bs) * bs + mac;
            iv + mac_then_encrypt.min(encrypt_then_mac)
        }
        // Stream ciphers (RC4) and NULL encryption: the MAC only.
        _ => HB_MIN_PLAINTEXT + mac,
    };
    Some(min)
}
