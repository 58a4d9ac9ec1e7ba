//! Pure parsing functions for Oracle TNS (Transparent Network Substrate, "Net8") packets (no
//! state, no allocation).
//!
//! Layouts followed (offsets from the start of the packet, all integers big-endian):
//!
//! - Header (8 bytes): packet length (2 bytes; 4 bytes once a connection of TNS version 315 or
//!   later has been accepted with large SDU, the checksum then being part of the length), packet
//!   checksum (2), type (1), flags (1), header checksum (2).
//! - CONNECT: version 8, version compatible 10, service options 12, SDU 14, TDU 16, NT protocol
//!   characteristics 18, line turnaround 20, value of one 22, connect data length 24, connect
//!   data offset 26 (from the packet start), maximum receivable connect data 28 (4), connect
//!   flags 0 and 1 at 32 and 33, then trace / obsolete fields; from version 315 the large SDU and
//!   TDU (4 bytes each) at 58 and 62 when the connect data offset leaves room for them. Connect
//!   data longer than 230 bytes does not fit the CONNECT packet: its offset is then the packet
//!   length and the data arrive in the next DATA packet.
//! - ACCEPT: version 8, service options 10, SDU 12, TDU 14, hardware byte order 16, accept data
//!   length 18, accept data offset 20, connect flags 0 and 1 at 22 and 23; from version 315 the
//!   large SDU (4 bytes) at 32.
//! - REFUSE: user reason 8, system reason 9, refuse data length 10, data from 12.
//! - REDIRECT: redirect data length 8, then the data, or (listeners of version 315 and later)
//!   nothing, the data coming in the next DATA packet.
//! - DATA: data flags (2) at 8, payload from 10.
//!
//! Connect descriptors, refusal and redirect data are Oracle NV strings:
//! `(KEY=value)` or `(KEY=(KEY=value)...)`, keys case-insensitive, values optionally quoted.

pub use crate::app::Parse;

/// Header length (bytes).
pub const HEADER: usize = 8;
/// Fixed part of a CONNECT packet up to and including connect flags 1 (bytes from the packet
/// start): the smallest connect data offset accepted.
pub const CONNECT_FIXED: usize = 34;
/// Fixed part of an ACCEPT packet up to and including connect flags 1.
pub const ACCEPT_FIXED: usize = 24;
/// Largest packet accepted with 4-byte lengths (bytes): Oracle's SDU limit is 2 MB.
pub const MAX_LARGE_PACKET: usize = 4 << 20;
/// First TNS version with 4-byte packet lengths and large SDU fields (Oracle 12.1).
pub const VERSION_LARGE_SDU: u16 = 315;
/// Versions a CONNECT or ACCEPT may carry to be recognised (Oracle 8 to 23ai use 300..=319).
pub const VERSIONS: std::ops::RangeInclusive<u16> = 300..=330;
/// Deepest NV nesting whose keys are tracked.
pub const NV_DEPTH: usize = 8;

/// CONNECT.
pub const CONNECT: u8 = 1;
/// ACCEPT.
pub const ACCEPT: u8 = 2;
/// ACK.
pub const ACK: u8 = 3;
/// REFUSE.
pub const REFUSE: u8 = 4;
/// REDIRECT.
pub const REDIRECT: u8 = 5;
/// DATA.
pub const DATA: u8 = 6;
/// NULL.
pub const NULL: u8 = 7;
/// ABORT.
pub const ABORT: u8 = 9;
/// RESEND.
pub const RESEND: u8 = 11;
/// MARKER.
pub const MARKER: u8 = 12;
/// ATTENTION.
pub const ATTENTION: u8 = 13;
/// CONTROL.
pub const CONTROL: u8 = 14;

/// Name of a packet type; `None` for undefined types.
pub fn type_name(t: u8) -> Option<&'static str> {
    Some(match t {
        CONNECT => "CONNECT",
        ACCEPT => "ACCEPT",
        ACK => "ACK",
        REFUSE => "REFUSE",
        REDIRECT => "REDIRECT",
        DATA => "DATA",
        NULL => "NULL",
        ABORT => "ABORT",
        RESEND => "RESEND",
        MARKER => "MARKER",
        ATTENTION => "ATTENTION",
        CONTROL => "CONTROL",
        _ => return None,
    })
}

/// Big-endian u16 at `off`, `None` when cut short.
pub fn be16(b: &[u8], off: usize) -> Option<u16> {
    let s = b.get(off..off.checked_add(2)?)?;
    Some(u16::from_be_bytes([s[0], s[1]]))
}

/// Big-endian u32 at `off`, `None` when cut short.
pub fn be32(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// A packet header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Packet length including the header (bytes).
    pub length: usize,
    /// Packet type.
    pub ptype: u8,
    /// Flags.
    pub flags: u8,
}

/// Parses a header. `large`: the connection uses 4-byte lengths. A 2-byte length of 0 cannot be
/// a packet, so such a header is read with a 4-byte length whatever `large` says (a packet
/// shorter than 64 KiB in 4-byte framing starts with two zero bytes). Errors: a length below
/// [`HEADER`] or above [`MAX_LARGE_PACKET`] is `Invalid`.
pub fn header(b: &[u8], large: bool) -> Parse<Header> {
    let (Some(l16), Some(l32), Some(&ptype), Some(&flags)) = (be16(b, 0), be32(b, 0), b.get(4), b.get(5)) else {
        return Parse::Incomplete(HEADER);
    };
    let length = if large || l16 == 0 { l32 as usize } else { usize::from(l16) };
    if !(HEADER..=MAX_LARGE_PACKET).contains(&length) {
        return Parse::Invalid;
    }
    Parse::Ok(Header { length, ptype, flags }, HEADER)
}

/// CONNECT fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Connect {
    /// TNS version the client wants.
    pub version: u16,
    /// Lowest version it accepts.
    pub version_compatible: u16,
    /// Global service options bits.
    pub service_options: u16,
    /// Session data unit (bytes): the 4-byte large SDU when present, else the 2-byte one.
    pub sdu: u32,
    /// Transport data unit (bytes), likewise.
    pub tdu: u32,
    /// Connect data length (bytes).
    pub data_len: u16,
    /// Connect data offset from the packet start (bytes).
    pub data_offset: u16,
    /// Connect flags 0.
    pub flags0: u8,
    /// Connect flags 1.
    pub flags1: u8,
}

/// Reads the CONNECT fields from the start of a CONNECT packet; `None` when `b` is shorter than
/// [`CONNECT_FIXED`].
pub fn connect(b: &[u8]) -> Option<Connect> {
    let data_offset = be16(b, 26)?;
    let large = |off: usize| {
        let v = be16(b, 8)?;
        (v >= VERSION_LARGE_SDU && usize::from(data_offset) >= off + 4).then(|| be32(b, off)).flatten()
    };
    Some(Connect {
        version: be16(b, 8)?,
        version_compatible: be16(b, 10)?,
        service_options: be16(b, 12)?,
        sdu: large(58).unwrap_or(u32::from(be16(b, 14)?)),
        tdu: large(62).unwrap_or(u32::from(be16(b, 16)?)),
        data_len: be16(b, 24)?,
        data_offset,
        flags0: *b.get(32)?,
        flags1: *b.get(33)?,
    })
}

/// ACCEPT fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Accept {
    /// Negotiated TNS version.
    pub version: u16,
    /// Service options.
    pub service_options: u16,
    /// Session data unit (bytes): the 4-byte large SDU from version 315 when present.
    pub sdu: u32,
    /// Transport data unit (bytes, 2-byte field).
    pub tdu: u16,
    /// Accept data length.
    pub data_len: u16,
    /// Accept data offset.
    pub data_offset: u16,
    /// Connect flags 0.
    pub flags0: u8,
    /// Connect flags 1.
    pub flags1: u8,
}

/// Reads the ACCEPT fields from the start of an ACCEPT packet (`len`: the packet length);
/// `None` when `b` is shorter than [`ACCEPT_FIXED`].
pub fn accept(b: &[u8], len: usize) -> Option<Accept> {
    let version = be16(b, 8)?;
    let large = if version >= VERSION_LARGE_SDU && len >= 36 { be32(b, 32) } else { None };
    Some(Accept {
        version,
        service_options: be16(b, 10)?,
        sdu: large.unwrap_or(u32::from(be16(b, 12)?)),
        tdu: be16(b, 14)?,
        data_len: be16(b, 18)?,
        data_offset: be16(b, 20)?,
        flags0: *b.get(22)?,
        flags1: *b.get(23)?,
    })
}

/// REFUSE fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Refuse {
    /// User (application) reason code.
    pub user_reason: u8,
    /// System reason code.
    pub system_reason: u8,
    /// Refuse data length (bytes, from offset 12).
    pub data_len: u16,
}

/// Reads the REFUSE fields; `None` when `b` is shorter than 12 bytes.
pub fn refuse(b: &[u8]) -> Option<Refuse> {
    Some(Refuse { user_reason: *b.get(8)?, system_reason: *b.get(9)?, data_len: be16(b, 10)? })
}

/// Verdict of a probe over possibly incomplete bytes: `Some(true)` match, `Some(false)` no
/// match, `None` need more.
pub type Verdict = Option<bool>;

/// Checks, on whatever bytes are present, that `b` starts a packet header of a type in `types`
/// with zero checksums and a 2-byte length of at least `min_len`; returns the length once known.
fn probe_header(b: &[u8], types: &[u8], min_len: usize) -> Result<usize, Verdict> {
    let bad = |i: usize, ok: &dyn Fn(u8) -> bool| b.get(i).is_some_and(|&c| !ok(c));
    if bad(2, &|c| c == 0)
        || bad(3, &|c| c == 0)
        || bad(4, &|c| types.contains(&c))
        || bad(6, &|c| c == 0)
        || bad(7, &|c| c == 0)
    {
        return Err(Some(false));
    }
    let Some(len) = be16(b, 0) else { return Err(None) };
    if usize::from(len) < min_len {
        return Err(Some(false));
    }
    if b.len() < HEADER {
        return Err(None);
    }
    Ok(usize::from(len))
}

/// Checks that a DATA packet carrying `data_len` bytes of NV data starts at `b` (whose first
/// payload byte must be `(`).
fn probe_data_follows(b: &[u8], data_len: usize) -> Verdict {
    let len = match probe_header(b, &[DATA], HEADER + 3) {
        Ok(l) => l,
        Err(v) => return v,
    };
    if len > HEADER + 2 + data_len {
        return Some(false);
    }
    Some(*b.get(HEADER + 2)? == b'(')
}

/// Whether `b` starts like a client's CONNECT: zero checksums, a version in [`VERSIONS`] and a
/// compatible version between 256 and it, a non-empty connect data whose offset is past the
/// fixed part, and either inline data ending exactly at the packet end or (offset equal to the
/// packet length) a following DATA packet; the data must start with `(`.
pub fn probe_connect(b: &[u8]) -> Verdict {
    let len = match probe_header(b, &[CONNECT], CONNECT_FIXED) {
        Ok(l) => l,
        Err(v) => return v,
    };
    if b.get(8).is_some_and(|&c| c != 0x01) {
        return Some(false);
    }
    let version = be16(b, 8)?;
    if !VERSIONS.contains(&version) {
        return Some(false);
    }
    let compat = be16(b, 10)?;
    if !(256..=version).contains(&compat) {
        return Some(false);
    }
    let data_len = usize::from(be16(b, 24)?);
    let offset = usize::from(be16(b, 26)?);
    if data_len == 0 || offset < CONNECT_FIXED || offset > len {
        return Some(false);
    }
    if offset + data_len == len {
        return Some(*b.get(offset)? == b'(');
    }
    if offset != len {
        return Some(false);
    }
    probe_data_follows(b.get(len..)?, data_len)
}

/// Whether `b` starts like a listener's first answer: ACCEPT (version in [`VERSIONS`], accept
/// data inside the packet), REFUSE (refuse data ending exactly at the packet end, starting with
/// `(` when present) or REDIRECT (inline data ending at the packet end, or a following DATA
/// packet, starting with `(`).
pub fn probe_answer(b: &[u8]) -> Verdict {
    let len = match probe_header(b, &[ACCEPT, REFUSE, REDIRECT], HEADER + 2) {
        Ok(l) => l,
        Err(v) => return v,
    };
    match *b.get(4)? {
        ACCEPT => {
            if len < ACCEPT_FIXED || b.get(8).is_some_and(|&c| c != 0x01) {
                return Some(false);
            }
            if !VERSIONS.contains(&be16(b, 8)?) {
                return Some(false);
            }
            let data_len = usize::from(be16(b, 18)?);
            let offset = usize::from(be16(b, 20)?);
            Some(offset <= len && (data_len == 0 || offset >= ACCEPT_FIXED && offset + data_len <= len))
        }
        REFUSE => {
            let data_len = usize::from(be16(b, 10)?);
            if 12 + data_len != len {
                return Some(false);
            }
            if data_len == 0 {
                return Some(true);
            }
            Some(*b.get(12)? == b'(')
        }
        _ => {
            let data_len = usize::from(be16(b, 8)?);
            if data_len == 0 {
                return Some(false);
            }
            if len == 10 + data_len {
                return Some(*b.get(10)? == b'(');
            }
            if len != 10 {
                return Some(false);
            }
            probe_data_follows(b.get(len..)?, data_len)
        }
    }
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if !first.is_ascii_whitespace() {
            break;
        }
        s = rest;
    }
    while let [rest @ .., last] = s {
        if !last.is_ascii_whitespace() {
            break;
        }
        s = rest;
    }
    s
}

/// End of an atomic NV value starting at `i`: the index of the `)` closing it (or `s.len()`),
/// honouring double quotes and backslash escapes.
fn value_end(s: &[u8], mut i: usize) -> usize {
    let mut quoted = false;
    while let Some(&c) = s.get(i) {
        match c {
            b'\\' => i += 1,
            b'"' => quoted = !quoted,
            b')' if !quoted => return i,
            _ => {}
        }
        i += 1;
    }
    s.len()
}

/// The first atomic value in NV string `s` whose key path ends with `path` (keys compared
/// ASCII case-insensitively): `nv_value(d, &[b"CID", b"PROGRAM"])` finds `x` in
/// `(DESCRIPTION=(CONNECT_DATA=(CID=(PROGRAM=x))))`. The value is trimmed and its surrounding
/// double quotes removed; `(TMP=)` gives an empty value. Malformed input gives `None` or a
/// best-effort value, never a panic; keys deeper than [`NV_DEPTH`] are not matched.
pub fn nv_value<'a>(s: &'a [u8], path: &[&[u8]]) -> Option<&'a [u8]> {
    let mut keys: [&[u8]; NV_DEPTH] = [&[]; NV_DEPTH];
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(&c) = s.get(i) {
        match c {
            b'(' => {
                let start = i + 1;
                let rest = s.get(start..).unwrap_or(&[]);
                let k = rest.iter().position(|&c| matches!(c, b'=' | b'(' | b')'))?;
                if rest[k] != b'=' {
                    i = start + k;
                    continue;
                }
                if let Some(slot) = keys.get_mut(depth) {
                    *slot = trim(&rest[..k]);
                }
                depth += 1;
                let mut j = start + k + 1;
                while s.get(j).is_some_and(|c| c.is_ascii_whitespace()) {
                    j += 1;
                }
                if s.get(j) == Some(&b'(') {
                    i = j;
                    continue;
                }
                let end = value_end(s, j);
                if depth <= NV_DEPTH && depth >= path.len() {
                    let tail = &keys[depth - path.len()..depth];
                    if tail.iter().zip(path).all(|(a, b)| a.eq_ignore_ascii_case(b)) {
                        let v = trim(s.get(j..end).unwrap_or(&[]));
                        return Some(match v {
                            [b'"', inner @ .., b'"'] => inner,
                            v => v,
                        });
                    }
                }
                depth -= 1;
                i = end + 1;
            }
            b')' => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            _ => i += 1,
        }
    }
    None
}

/// Parses a decimal number of at most 10 digits (surrounding whitespace allowed).
pub fn decimal(s: &[u8]) -> Option<u32> {
    let s = trim(s);
    if s.is_empty() || s.len() > 10 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    s.iter().try_fold(0u32, |n, &d| n.checked_mul(10)?.checked_add(u32::from(d - b'0')))
}

/// The banner of a TTC protocol negotiation message (TTIPRO, message type 1) at the start of a
/// DATA payload: type 1, a list of up to 16 protocol version bytes ended by 0, then a
/// NUL-terminated printable banner (client driver or server platform, 1..=64 bytes, e.g.
/// `python-oracledb`). `None` for anything else.
pub fn ttc_banner(payload: &[u8]) -> Option<&[u8]> {
    let rest = payload.strip_prefix(&[1])?;
    let z = rest.iter().take(17).position(|&c| c == 0)?;
    if z == 0 || rest[..z].iter().any(|&v| v > 0x10) {
        return None;
    }
    let text = rest.get(z + 1..)?;
    let n = text.iter().take(65).position(|&c| c == 0)?;
    let banner = &text[..n];
    (!banner.is_empty() && banner.iter().all(|c| c.is_ascii_graphic() || *c == b' ')).then_some(banner)
}

/// Native Network Encryption / Advanced Networking Option negotiation magic at the start of a
/// DATA payload.
pub const ANO_MAGIC: [u8; 4] = [0xde, 0xad, 0xbe, 0xef];

/// Statement keywords that start the SQL text a TTC call (OALL8 and friends) carries.
const SQL_START: &[&[u8]] = &[
    b"SELECT", b"INSERT", b"UPDATE", b"DELETE", b"MERGE", b"WITH", b"BEGIN", b"DECLARE", b"CALL",
    b"CREATE", b"ALTER", b"DROP", b"TRUNCATE", b"GRANT",
];

/// Shortest text taken for a statement (bytes).
pub const MIN_SQL: usize = 10;

/// SQL text inside a client DATA payload: the first run of printable ASCII (with tab, CR, LF)
/// that starts at a word boundary with a statement keyword (any case) and is at least
/// [`MIN_SQL`] bytes long. TTC sends a statement as one length-prefixed string in the call
/// (longer ones in length-prefixed chunks, of which this finds the first); the TTC call layout
/// itself depends on capabilities agreed at logon and is not decoded, so this is a scan, not a
/// parse. `None` when there is no such run.
pub fn sql_text(payload: &[u8]) -> Option<&[u8]> {
    let printable = |c: u8| (0x20..0x7f).contains(&c) || matches!(c, b'\t' | b'\r' | b'\n');
    let mut i = 0;
    while i < payload.len() {
        let boundary = i == 0 || !payload[i - 1].is_ascii_alphanumeric();
        if boundary && payload[i].is_ascii_alphabetic() {
            let starts = SQL_START.iter().any(|k| {
                payload.get(i..i + k.len()).is_some_and(|w| w.eq_ignore_ascii_case(k))
                    && payload.get(i + k.len()).is_none_or(|c| !c.is_ascii_alphanumeric())
            });
            if starts {
                let len = payload[i..].iter().take_while(|c| printable(**c)).count();
                if len >= MIN_SQL {
                    return Some(&payload[i..i + len]);
                }
            }
        }
        i += 1;
    }
    None
}
