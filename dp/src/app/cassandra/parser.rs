//! Pure parsing functions for the Cassandra CQL native protocol (no state, no allocation).
//!
//! Follows `native_protocol_v4.spec` §2 (frame header: version, flags, stream, opcode, length),
//! §2.2 flags, §2.4 opcodes, §3 notations (`[short]`, `[int]`, `[string]`, `[long string]`,
//! `[string map]`), §4.1.1 STARTUP, §4.1.4 QUERY, §4.1.5 PREPARE, §4.2.1 ERROR; and
//! `native_protocol_v5.spec` §2 (framing: segments with a 6-byte uncompressed or 8-byte
//! compressed header whose first 17 bits are the payload length and the next bit the
//! self-contained flag, followed by a CRC24, the payload and a CRC32) and §2.2 flags (`USE_BETA`).

pub use crate::app::Parse;

/// Frame header length (v3 and later).
pub const FRAME_HEADER: usize = 9;
/// Largest frame body accepted (bytes): the spec's 256 MB limit.
pub const MAX_BODY: usize = 256 * 1024 * 1024;
/// Flags defined up to v5 (compression, tracing, custom payload, warning, use beta).
pub const FLAGS: u8 = 0x1f;
/// Compression flag.
pub const FLAG_COMPRESSION: u8 = 0x01;
/// Lowest and highest Apache Cassandra protocol versions parsed.
pub const VERSIONS: std::ops::RangeInclusive<u8> = 3..=5;
/// DataStax Enterprise protocol versions DSE_V1 (0x41) and DSE_V2 (0x42): the v4 frame header
/// and framing (no v5 segments). The DataStax drivers open with DSE_V2 by default (the Python
/// driver 3.25 sends its first OPTIONS as version 0x42), and an Apache Cassandra server refuses
/// it with a protocol ERROR before the driver retries with v5 or v4.
pub const DSE_VERSIONS: [u8; 2] = [0x41, 0x42];

/// Whether `v` (direction bit removed) is a protocol version parsed: [`VERSIONS`] or
/// [`DSE_VERSIONS`].
pub fn known_version(v: u8) -> bool {
    VERSIONS.contains(&v) || DSE_VERSIONS.contains(&v)
}

/// Whether frames of version `v` travel inside v5 segments once the connection is set up
/// (`native_protocol_v5.spec` §2): only v5; the DSE versions keep the v4 framing.
pub fn uses_segments(v: u8) -> bool {
    v == 5
}

/// ERROR.
pub const ERROR: u8 = 0x00;
/// STARTUP.
pub const STARTUP: u8 = 0x01;
/// READY.
pub const READY: u8 = 0x02;
/// AUTHENTICATE.
pub const AUTHENTICATE: u8 = 0x03;
/// OPTIONS.
pub const OPTIONS: u8 = 0x05;
/// QUERY.
pub const QUERY: u8 = 0x07;
/// PREPARE.
pub const PREPARE: u8 = 0x09;

/// Name of an opcode (§2.4); `None` for unknown ones (values, not errors).
pub fn opcode_name(op: u8) -> Option<&'static str> {
    Some(match op {
        0x00 => "ERROR",
        0x01 => "STARTUP",
        0x02 => "READY",
        0x03 => "AUTHENTICATE",
        0x05 => "OPTIONS",
        0x06 => "SUPPORTED",
        0x07 => "QUERY",
        0x08 => "RESULT",
        0x09 => "PREPARE",
        0x0a => "EXECUTE",
        0x0b => "REGISTER",
        0x0c => "EVENT",
        0x0d => "BATCH",
        0x0e => "AUTH_CHALLENGE",
        0x0f => "AUTH_RESPONSE",
        0x10 => "AUTH_SUCCESS",
        _ => return None,
    })
}

/// Whether `op` is sent by clients (requests).
pub fn request_op(op: u8) -> bool {
    matches!(op, 0x01 | 0x05 | 0x07 | 0x09 | 0x0a | 0x0b | 0x0d | 0x0f)
}

/// Whether `op` is sent by servers (responses and events).
pub fn response_op(op: u8) -> bool {
    matches!(op, 0x00 | 0x02 | 0x03 | 0x06 | 0x08 | 0x0c | 0x0e | 0x10)
}

/// A frame header (§2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Protocol version (direction bit removed).
    pub version: u8,
    /// Whether the direction bit (0x80, response) is set.
    pub response: bool,
    /// Flags.
    pub flags: u8,
    /// Stream id.
    pub stream: i16,
    /// Opcode.
    pub opcode: u8,
    /// Body length (bytes after the header), at most [`MAX_BODY`].
    pub length: usize,
}

/// Parses a frame header. Invalid when the version is not [`known_version`], undefined flags are
/// set or the length is negative or above [`MAX_BODY`].
pub fn frame_header(b: &[u8]) -> Parse<FrameHeader> {
    let Some(h) = b.get(..FRAME_HEADER) else { return Parse::Incomplete(FRAME_HEADER) };
    let version = h[0] & 0x7f;
    let length = i32::from_be_bytes([h[5], h[6], h[7], h[8]]);
    let Ok(length) = usize::try_from(length) else { return Parse::Invalid };
    if !known_version(version) || h[1] & !FLAGS != 0 || length > MAX_BODY {
        return Parse::Invalid;
    }
    Parse::Ok(
        FrameHeader {
            version,
            response: h[0] & 0x80 != 0,
            flags: h[1],
            stream: i16::from_be_bytes([h[2], h[3]]),
            opcode: h[4],
            length,
        },
        FRAME_HEADER,
    )
}

/// Big-endian u16 at `off`.
pub fn be16(b: &[u8], off: usize) -> Option<u16> {
    b.get(off..off.checked_add(2)?).map(|s| u16::from_be_bytes([s[0], s[1]]))
}

/// Big-endian i32 at `off`.
pub fn be32(b: &[u8], off: usize) -> Option<i32> {
    b.get(off..off.checked_add(4)?).map(|s| i32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// A `[long string]` at the start of `b` (QUERY and PREPARE bodies), truncated to what `b`
/// holds and to `max` bytes. `None` when the length is negative or `b` has no length.
pub fn long_string(b: &[u8], max: usize) -> Option<&[u8]> {
    let len = usize::try_from(be32(b, 0)?).ok()?;
    let end = 4usize.saturating_add(len.min(max)).min(b.len());
    b.get(4..end)
}

/// A `[string]` at `off`: its bytes and the offset after it; `None` when cut short.
pub fn string(b: &[u8], off: usize) -> Option<(&[u8], usize)> {
    let len = usize::from(be16(b, off)?);
    let end = off.checked_add(2 + len)?;
    Some((b.get(off + 2..end)?, end))
}

/// The value of `key` in the `[string map]` at the start of `b` (STARTUP options); at most 64
/// entries are looked at. `None` when absent or cut short.
pub fn string_map_get<'a>(b: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let n = be16(b, 0)?;
    let mut off = 2;
    for _ in 0..n.min(64) {
        let (k, o) = string(b, off)?;
        let (v, o) = string(b, o)?;
        if k.eq_ignore_ascii_case(key) {
            return Some(v);
        }
        off = o;
    }
    None
}

/// A v5 segment header (`native_protocol_v5.spec` §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Header length (6 uncompressed, 8 compressed).
    pub header: usize,
    /// Payload length on the wire.
    pub payload: usize,
    /// Self-contained flag (the payload holds whole frames).
    pub self_contained: bool,
}

impl Segment {
    /// Total bytes of the segment: header, payload and the trailing CRC32.
    pub fn total(&self) -> usize {
        self.header + self.payload + 4
    }
}

/// Parses a v5 segment header; `compressed` when the connection negotiated compression (the
/// header then carries the uncompressed length too). CRCs are not verified.
pub fn segment(b: &[u8], compressed: bool) -> Parse<Segment> {
    let header = if compressed { 8 } else { 6 };
    let Some(h) = b.get(..header) else { return Parse::Incomplete(header) };
    let bits = u64::from_le_bytes([h[0], h[1], h[2], h[3], h[4], 0, 0, 0]);
    let payload = (bits & 0x1ffff) as usize;
    let flag_bit = if compressed { 34 } else { 17 };
    Parse::Ok(Segment { header, payload, self_contained: bits >> flag_bit & 1 == 1 }, header)
}
