//! Pure SSH parsing functions over `&[u8]` (no state, no allocation).
//!
//! - Identification (RFC 4253 §4.2): `SSH-protoversion-softwareversion SP comments CR LF`, at
//!   most 255 bytes including CR LF; a server may send other lines first (only from the server,
//!   at most [`MAX_PRE_LINES`]). A bare LF terminator is accepted (older implementations).
//! - Binary packets (RFC 4253 §6): `uint32 packet_length, byte padding_length, payload,
//!   padding`; packet_length is capped at [`MAX_PACKET`] (§6.1: at least 35000 must be handled).
//! - KEXINIT (RFC 4253 §7.1) is decoded with the `ssh-parser` crate (rusticata), whose
//!   `parse_ssh_packet` borrows the name-lists without allocating. Framing and identification
//!   are done here: `parse_ssh_identification` allocates a `Vec` per call and does not bound
//!   line length, and `parse_ssh_packet` neither caps packet_length nor accepts message types
//!   it does not know (DH group exchange 31-34, EXT_INFO), which must be skipped, not rejected.

pub use crate::app::Parse;

use ssh_parser::{parse_ssh_packet, SshPacket};

use crate::rescan::Resume;

/// Longest identification (or preceding) line, CR LF included (RFC 4253 §4.2).
pub const MAX_LINE: usize = 255;
/// Lines a server may send before its identification that are accepted.
pub const MAX_PRE_LINES: usize = 16;
/// Largest packet_length accepted (RFC 4253 §6.1).
pub const MAX_PACKET: usize = 35000;

/// Smallest SSH 1.x packet_length (packet type, at least 2 + 2 bytes of data or check bytes; as
/// OpenSSH's SSH-1 packet reader required).
pub const MIN_V1_PACKET: usize = 5;
/// Largest SSH 1.x packet_length (256 KiB, as OpenSSH's SSH-1 packet reader required).
pub const MAX_V1_PACKET: usize = 256 * 1024;

/// SSH_MSG_KEXINIT.
pub const MSG_KEXINIT: u8 = 20;
/// SSH_MSG_NEWKEYS.
pub const MSG_NEWKEYS: u8 = 21;

/// One line before the binary packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line<'a> {
    /// The identification string.
    Ident(Ident<'a>),
    /// Another line (allowed from servers before the identification).
    Other,
}

/// The identification string (RFC 4253 §4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ident<'a> {
    /// protoversion ("2.0", or "1.99" for compatibility).
    pub proto: &'a [u8],
    /// softwareversion.
    pub software: &'a [u8],
    /// comments (after the first space), if any.
    pub comments: Option<&'a [u8]>,
}

/// Checks the start of an identification line against `SSH-<digits/dots>-<printable>`,
/// looking only at the bytes present. Returns `Some(true)` once the software version has
/// begun (enough to recognise SSH), `Some(false)` if more bytes are needed, `None` if invalid.
fn ident_prefix(b: &[u8]) -> Option<bool> {
    let magic = b"SSH-";
    let n = b.len().min(magic.len());
    if b[..n] != magic[..n] {
        return None;
    }
    let mut i = magic.len();
    let mut digits = 0;
    while let Some(&c) = b.get(i) {
        if c == b'-' {
            break;
        }
        if !(c.is_ascii_digit() || c == b'.') || digits >= 8 {
            return None;
        }
        digits += 1;
        i += 1;
    }
    match b.get(i) {
        None => return Some(false),
        Some(_) if digits == 0 => return None,
        Some(_) => {}
    }
    match b.get(i + 1) {
        None => Some(false),
        Some(&c) if c.is_ascii_graphic() => Some(true),
        Some(_) => None,
    }
}

/// Parses one line (identification or another server line).
pub fn line(b: &[u8]) -> Parse<Line<'_>> {
    line_from(b, &mut Resume::default())
}

/// [`line`] on a line presented again with more bytes (the stream engine's contract): `from`
/// remembers how far the search for its LF (and the check for NUL bytes) got, so a line
/// trickled in small segments is examined once, not again from its start at every segment.
pub fn line_from<'a>(b: &'a [u8], from: &mut Resume) -> Parse<Line<'a>> {
    // The bytes searched before hold no NUL: a line with one was rejected then (an
    // identification prefix has none either).
    let checked = from.searched().min(b.len());
    let window = &b[..b.len().min(MAX_LINE)];
    let Some(lf) = from.find(window, MAX_LINE, b'\n') else {
        if b.len() >= MAX_LINE {
            return Parse::Invalid;
        }
        // Incomplete: validate an identification prefix or an ordinary text line so far.
        if b.starts_with(b"SSH-") || b"SSH-".starts_with(b) {
            return match ident_prefix(b) {
                None => Parse::Invalid,
                Some(_) => Parse::Incomplete(b.len() + 1),
            };
        }
        if b[checked..].contains(&0) {
            return Parse::Invalid;
        }
        return Parse::Incomplete(b.len() + 1);
    };
    let mut content = &b[..lf];
    if let [rest @ .., b'\r'] = content {
        content = rest;
    }
    if !content.starts_with(b"SSH-") {
        // RFC 4253 §4.2: other lines "MUST NOT begin with 'SSH-'" and are UTF-8 without NUL.
        if content.contains(&0) {
            return Parse::Invalid;
        }
        return Parse::Ok(Line::Other, lf + 1);
    }
    if ident_prefix(content) != Some(true) {
        return Parse::Invalid;
    }
    let rest = &content[4..];
    let dash = rest.iter().position(|&c| c == b'-').unwrap_or(0);
    let proto = &rest[..dash];
    let after = &rest[dash + 1..];
    let (software, comments) = match after.iter().position(|&c| c == b' ') {
        Some(sp) => (&after[..sp], Some(&after[sp + 1..])),
        None => (after, None),
    };
    if software.is_empty() || !software.iter().all(|c| c.is_ascii_graphic()) {
        return Parse::Invalid;
    }
    Parse::Ok(Line::Ident(Ident { proto, software, comments }), lf + 1)
}

/// Probe of the first bytes of a direction: the first line must be an identification string
/// (a server that sends other lines first is recognised from the client side). Decides as soon
/// as `SSH-<version>-<first software character>` is seen.
pub fn probe(b: &[u8]) -> Parse<()> {
    match ident_prefix(&b[..b.len().min(MAX_LINE)]) {
        None => Parse::Invalid,
        Some(true) => Parse::Ok((), b.len()),
        Some(false) => {
            if b.len() >= MAX_LINE || b.contains(&b'\n') {
                Parse::Invalid
            } else {
                Parse::Incomplete(b.len() + 1)
            }
        }
    }
}

/// One binary packet: its payload (message type first) and total size on the wire.
pub fn packet(b: &[u8]) -> Parse<&[u8]> {
    let Some(h) = b.get(..5) else {
        if let Some(l) = b.get(..4) {
            if u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize > MAX_PACKET {
                return Parse::Invalid;
            }
        }
        return Parse::Incomplete(5);
    };
    let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
    let pad = usize::from(h[4]);
    // RFC 4253 §6: padding is 4..=255 bytes and the payload is at least the message type.
    if len > MAX_PACKET || pad < 4 || pad + 2 > len {
        return Parse::Invalid;
    }
    match b.get(5..4 + len - pad) {
        Some(payload) if b.len() >= 4 + len => Parse::Ok(payload, 4 + len),
        _ => Parse::Incomplete(4 + len),
    }
}

/// The name-lists of a KEXINIT that matter here (RFC 4253 §7.1), borrowed comma-separated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KexInit<'a> {
    /// kex_algorithms.
    pub kex: &'a [u8],
    /// server_host_key_algorithms.
    pub host_key: &'a [u8],
    /// encryption_algorithms_client_to_server.
    pub enc_c2s: &'a [u8],
    /// encryption_algorithms_server_to_client.
    pub enc_s2c: &'a [u8],
}

/// Decodes a KEXINIT from a whole packet (as framed by [`packet`]) with `ssh-parser`.
pub fn kexinit(whole_packet: &[u8]) -> Option<KexInit<'_>> {
    match parse_ssh_packet(whole_packet) {
        Ok((_, (SshPacket::KeyExchange(k), _))) => Some(KexInit {
            kex: k.kex_algs,
            host_key: k.server_host_key_algs,
            enc_c2s: k.encr_algs_client_to_server,
            enc_s2c: k.encr_algs_server_to_client,
        }),
        _ => None,
    }
}

/// The names of a name-list (RFC 4251 §5), empty names skipped.
pub fn names(list: &[u8]) -> impl Iterator<Item = &[u8]> {
    list.split(|&c| c == b',').filter(|n| !n.is_empty())
}

/// FNV-1a 64-bit hash of an algorithm name (to remember one side's list in fixed space).
pub fn name_hash(name: &[u8]) -> u64 {
    name.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &c| (h ^ u64::from(c)).wrapping_mul(0x0100_0000_01b3))
}

/// Which protocol an identification's protoversion speaks (RFC 4253 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// SSH 2.0 only ("2.0").
    V2,
    /// Both, preferring 2.0 ("1.99": a server compatible with old clients).
    Compat,
    /// SSH 1.x only (any other "1.x", e.g. "1.5").
    V1,
    /// Anything else (an unknown major version).
    Other,
}

/// Classifies a protoversion ("2.0", "1.99", "1.5", ...).
pub fn protocol(proto: &[u8]) -> Protocol {
    let major = proto.split(|&c| c == b'.').next().unwrap_or_default();
    match major {
        b"2" => Protocol::V2,
        b"1" if proto == b"1.99" => Protocol::Compat,
        b"1" => Protocol::V1,
        _ => Protocol::Other,
    }
}

/// The wire length of one SSH 1.x binary packet (SSH protocol 1.5, "The Binary Packet
/// Protocol": uint32 packet_length counting type, data and CRC, then 1..=8 bytes of padding to
/// a multiple of 8, then those bytes; the length stays in clear after encryption starts), read
/// from its first 4 bytes. Invalid: a length outside [`MIN_V1_PACKET`]..=[`MAX_V1_PACKET`].
pub fn v1_packet(b: &[u8]) -> Parse<usize> {
    let Some(l) = b.get(..4) else { return Parse::Incomplete(4) };
    let len = u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize;
    if !(MIN_V1_PACKET..=MAX_V1_PACKET).contains(&len) {
        return Parse::Invalid;
    }
    Parse::Ok(4 + (8 - len % 8) + len, 4)
}
