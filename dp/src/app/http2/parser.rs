//! Pure HTTP/2 framing functions (no state, no allocation), after RFC 9113.
//!
//! - Connection preface (§3.4): the client's 24 magic bytes, the server's first frame a
//!   SETTINGS frame.
//! - Frame header (§4.1): 24-bit length (so at most 2^24-1 bytes, the SETTINGS_MAX_FRAME_SIZE
//!   ceiling of §6.5.2), type, flags, 31-bit stream identifier.
//! - HEADERS (§6.2) padding and priority fields, CONTINUATION (§6.10) chains, SETTINGS (§6.5)
//!   entries, RST_STREAM (§6.4) and GOAWAY (§6.8) error codes.
//! - h2c upgrade (RFC 7540 §3.2): the server's `HTTP/1.1 101` head before its first frame.

pub use crate::app::Parse;

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Frame header length (bytes).
pub const FRAME_HEADER: usize = 9;
/// Initial SETTINGS_MAX_FRAME_SIZE (RFC 9113 §6.5.2).
pub const DEFAULT_MAX_FRAME: u32 = 16_384;
/// Largest SETTINGS_MAX_FRAME_SIZE (2^24-1, also the largest 24-bit length).
pub const MAX_FRAME: u32 = (1 << 24) - 1;
/// Largest header block (all its frames, headers included) decoded; larger ones are only
/// counted. Also the most the parser asks the engine to hold.
pub const MAX_BLOCK: usize = 16 * 1024 + 64;
/// Largest SETTINGS frame accepted by the server-side probe (64 entries).
pub const MAX_PROBE_SETTINGS: u32 = 6 * 64;
/// Largest `HTTP/1.1 101` head skipped before the server's frames (bytes).
pub const MAX_UPGRADE_HEAD: usize = 8 * 1024;

/// Flag END_STREAM (DATA, HEADERS) and ACK (SETTINGS, PING).
pub const FLAG_END_STREAM: u8 = 0x1;
/// Flag END_HEADERS (HEADERS, PUSH_PROMISE, CONTINUATION).
pub const FLAG_END_HEADERS: u8 = 0x4;
/// Flag PADDED (DATA, HEADERS, PUSH_PROMISE).
pub const FLAG_PADDED: u8 = 0x8;
/// Flag PRIORITY (HEADERS).
pub const FLAG_PRIORITY: u8 = 0x20;

/// SETTINGS_ENABLE_PUSH.
pub const SETTINGS_ENABLE_PUSH: u16 = 0x2;
/// SETTINGS_INITIAL_WINDOW_SIZE.
pub const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
/// SETTINGS_MAX_FRAME_SIZE.
pub const SETTINGS_MAX_FRAME_SIZE: u16 = 0x5;

/// Frame type (RFC 9113 §6; unknown types are values and are skipped, §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// 0x0
    Data,
    /// 0x1
    Headers,
    /// 0x2
    Priority,
    /// 0x3
    RstStream,
    /// 0x4
    Settings,
    /// 0x5
    PushPromise,
    /// 0x6
    Ping,
    /// 0x7
    Goaway,
    /// 0x8
    WindowUpdate,
    /// 0x9
    Continuation,
    /// Any other type.
    Other(u8),
}

impl From<u8> for Kind {
    fn from(t: u8) -> Self {
        match t {
            0 => Kind::Data,
            1 => Kind::Headers,
            2 => Kind::Priority,
            3 => Kind::RstStream,
            4 => Kind::Settings,
            5 => Kind::PushPromise,
            6 => Kind::Ping,
            7 => Kind::Goaway,
            8 => Kind::WindowUpdate,
            9 => Kind::Continuation,
            o => Kind::Other(o),
        }
    }
}

/// A frame header (RFC 9113 §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Payload length (bytes, < 2^24).
    pub len: u32,
    /// Type.
    pub kind: Kind,
    /// Flags.
    pub flags: u8,
    /// Stream identifier (reserved bit cleared).
    pub stream: u32,
}

impl FrameHeader {
    /// Header plus payload (bytes).
    pub fn total(&self) -> usize {
        FRAME_HEADER + self.len as usize
    }
}

/// Parses a frame header.
pub fn frame_header(b: &[u8]) -> Parse<FrameHeader> {
    let Some(h) = b.get(..FRAME_HEADER) else { return Parse::Incomplete(FRAME_HEADER) };
    let len = u32::from_be_bytes([0, h[0], h[1], h[2]]);
    let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
    Parse::Ok(FrameHeader { len, kind: Kind::from(h[3]), flags: h[4], stream }, FRAME_HEADER)
}

/// Matches the client preface (or a prefix of it).
pub fn preface(b: &[u8]) -> Parse<()> {
    let n = b.len().min(PREFACE.len());
    if b[..n] != PREFACE[..n] {
        Parse::Invalid
    } else if n < PREFACE.len() {
        Parse::Incomplete(PREFACE.len())
    } else {
        Parse::Ok((), PREFACE.len())
    }
}

/// The header block fragment of a HEADERS frame payload: strips the pad length and padding
/// (PADDED) and the stream dependency and weight (PRIORITY). `None` when the padding is longer
/// than the payload (a PROTOCOL_ERROR, §6.2).
pub fn headers_fragment(flags: u8, payload: &[u8]) -> Option<&[u8]> {
    let mut p = payload;
    let mut pad = 0usize;
    if flags & FLAG_PADDED != 0 {
        let (&n, rest) = p.split_first()?;
        pad = usize::from(n);
        p = rest;
    }
    if flags & FLAG_PRIORITY != 0 {
        p = p.get(5..)?;
    }
    p.get(..p.len().checked_sub(pad)?)
}

/// Iterates the `(identifier, value)` entries of a SETTINGS payload (§6.5.1); a trailing
/// partial entry is ignored (the caller checks `len % 6`).
pub fn settings(payload: &[u8]) -> impl Iterator<Item = (u16, u32)> + '_ {
    payload.chunks_exact(6).map(|e| (u16::from_be_bytes([e[0], e[1]]), u32::from_be_bytes([e[2], e[3], e[4], e[5]])))
}

/// Whether a SETTINGS value is in range for its identifier (§6.5.2); unknown identifiers are
/// accepted (they must be ignored).
pub fn setting_valid(id: u16, value: u32) -> bool {
    match id {
        SETTINGS_ENABLE_PUSH => value <= 1,
        SETTINGS_INITIAL_WINDOW_SIZE => value <= 0x7fff_ffff,
        SETTINGS_MAX_FRAME_SIZE => (DEFAULT_MAX_FRAME..=MAX_FRAME).contains(&value),
        _ => true,
    }
}

/// Probes the server's first bytes: a SETTINGS frame (not an ACK) on stream 0 whose length is
/// a multiple of 6 up to [`MAX_PROBE_SETTINGS`] and whose known entries are in range
/// (RFC 9113 §3.4). `Ok` only once the whole frame is there.
pub fn probe_server_settings(b: &[u8]) -> Parse<()> {
    // The length (at most 384) starts with a zero byte and a byte of at most 1.
    if b.first().is_some_and(|&c| c != 0) || b.get(1).is_some_and(|&c| c > 1) {
        return Parse::Invalid;
    }
    if let Some(l) = b.get(..3) {
        let len = u32::from_be_bytes([0, l[0], l[1], l[2]]);
        if !len.is_multiple_of(6) || len > MAX_PROBE_SETTINGS {
            return Parse::Invalid;
        }
    }
    // Type SETTINGS, no flags (not an ACK), stream 0.
    let want = [4u8, 0, 0, 0, 0, 0];
    for (i, w) in want.iter().enumerate() {
        match b.get(3 + i) {
            None => return Parse::Incomplete(FRAME_HEADER),
            Some(c) if c != w => return Parse::Invalid,
            Some(_) => {}
        }
    }
    let Parse::Ok(h, _) = frame_header(b) else { return Parse::Incomplete(FRAME_HEADER) };
    let payload = b.get(FRAME_HEADER..).unwrap_or_default();
    let whole = payload.len() >= h.len as usize;
    let payload = payload.get(..h.len as usize).unwrap_or(payload);
    if settings(payload).any(|(id, v)| !setting_valid(id, v)) {
        return Parse::Invalid;
    }
    if whole {
        Parse::Ok((), h.total())
    } else {
        Parse::Incomplete(h.total())
    }
}

use crate::rescan::Resume;

/// Skips the server's `HTTP/1.1 101` head (h2c upgrade, RFC 7540 §3.2); `Invalid` when the
/// bytes do not start with it or the head exceeds [`MAX_UPGRADE_HEAD`].
pub fn upgrade_head(b: &[u8]) -> Parse<()> {
    upgrade_head_from(b, &mut Resume::default())
}

/// [`upgrade_head`] on a head presented again with more bytes (the stream engine's contract):
/// `from` remembers how far the search for its end got, so a head trickled in small segments
/// is searched once, not again from its start at every segment.
pub fn upgrade_head_from(b: &[u8], from: &mut Resume) -> Parse<()> {
    let start = b"HTTP/1.1 101";
    let n = b.len().min(start.len());
    if b[..n] != start[..n] {
        return Parse::Invalid;
    }
    // An end starting within the first MAX_UPGRADE_HEAD bytes.
    match from.find_seq(b, MAX_UPGRADE_HEAD + 3, b"\r\n\r\n") {
        Some(i) => Parse::Ok((), i + 4),
        None if b.len() >= MAX_UPGRADE_HEAD => Parse::Invalid,
        None => Parse::Incomplete(b.len() + 1),
    }
}

/// Where a header block starting with a HEADERS (or PUSH_PROMISE) frame at the start of `b`
/// ends: the HEADERS frame and the CONTINUATION frames of the same stream up to END_HEADERS
/// (§6.10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    /// The whole block is in `b`: its total length (frames with their headers).
    Complete(usize),
    /// At least this many bytes are needed.
    Incomplete(usize),
    /// Longer than [`MAX_BLOCK`] or more than `MAX_FRAGS` frames: not decoded.
    TooBig,
    /// A frame other than CONTINUATION of the same stream interrupts the block.
    Invalid,
}

/// Walks the frames of a header block (see [`Block`]).
pub fn block_span(b: &[u8], max_frags: usize) -> Block {
    let Parse::Ok(first, _) = frame_header(b) else { return Block::Incomplete(FRAME_HEADER) };
    let mut span = first.total();
    let mut flags = first.flags;
    let mut frags = 1;
    loop {
        if span > MAX_BLOCK {
            return Block::TooBig;
        }
        if flags & FLAG_END_HEADERS != 0 {
            return if b.len() >= span { Block::Complete(span) } else { Block::Incomplete(span) };
        }
        let Some(rest) = b.get(span..) else { return Block::Incomplete(span + FRAME_HEADER) };
        let Parse::Ok(h, _) = frame_header(rest) else { return Block::Incomplete(span + FRAME_HEADER) };
        if h.kind != Kind::Continuation || h.stream != first.stream {
            return Block::Invalid;
        }
        frags += 1;
        if frags > max_frags {
            return Block::TooBig;
        }
        span += h.total();
        flags = h.flags;
    }
}

/// Splits a gRPC `:path` `/package.Service/Method` into service and method (gRPC over HTTP/2,
/// "Path" in PROTOCOL-HTTP2.md).
pub fn grpc_path(path: &[u8]) -> Option<(&[u8], &[u8])> {
    let p = path.strip_prefix(b"/")?;
    let slash = p.iter().position(|&c| c == b'/')?;
    let (service, method) = (&p[..slash], &p[slash + 1..]);
    if service.is_empty() || method.is_empty() || method.contains(&b'/') {
        return None;
    }
    Some((service, method))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_headers() {
        let b = [0, 0, 0x24, 4, 0, 0, 0, 0, 0];
        assert_eq!(
            frame_header(&b),
            Parse::Ok(FrameHeader { len: 36, kind: Kind::Settings, flags: 0, stream: 0 }, 9)
        );
        assert_eq!(frame_header(&b[..5]), Parse::Incomplete(9));
        let h = frame_header(&[0xff, 0xff, 0xff, 0xee, 0xff, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(h, Parse::Ok(FrameHeader { len: MAX_FRAME, kind: Kind::Other(0xee), flags: 0xff, stream: 0x7fff_ffff }, 9));
    }

    #[test]
    fn fragments() {
        assert_eq!(headers_fragment(0, b"abc"), Some(&b"abc"[..]));
        assert_eq!(headers_fragment(FLAG_PADDED, b"\x02abcXX"), Some(&b"abc"[..]));
        assert_eq!(headers_fragment(FLAG_PADDED | FLAG_PRIORITY, b"\x01\0\0\0\x01\x10abX"), Some(&b"ab"[..]));
        assert_eq!(headers_fragment(FLAG_PADDED, b"\x09abc"), None);
        assert_eq!(headers_fragment(FLAG_PRIORITY, b"abc"), None);
    }

    #[test]
    fn grpc_paths() {
        assert_eq!(grpc_path(b"/corpus.v1.Echo/Ping"), Some((&b"corpus.v1.Echo"[..], &b"Ping"[..])));
        assert_eq!(grpc_path(b"/index.html"), None);
        assert_eq!(grpc_path(b"//x"), None);
        assert_eq!(grpc_path(b"/a/b/c"), None);
    }

    #[test]
    fn upgrade_heads() {
        assert_eq!(upgrade_head(b"HTTP/1.1 101 Switching Protocols\r\n\r\n\0"), Parse::Ok((), 36));
        assert_eq!(upgrade_head(b"HTTP/1.1 10"), Parse::Incomplete(12));
        assert_eq!(upgrade_head(b"HTTP/1.1 200 OK\r\n\r\n"), Parse::Invalid);
    }
}
