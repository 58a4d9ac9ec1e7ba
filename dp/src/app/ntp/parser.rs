//! Pure parsing functions for NTP packets (RFC 5905 §7.3, NTPv3 RFC 1305 §3.2/Appendix A).
//!
//! Layout of the 48-byte header: byte 0 = LI (2 bits) | VN (3 bits) | Mode (3 bits); byte 1
//! stratum; byte 2 poll (log2 s); byte 3 precision (log2 s, signed); root delay and dispersion
//! (4 bytes each, 16.16 seconds); reference id (4); then the reference, origin, receive and transmit timestamps
//! (8 bytes each, NTP 64-bit format). After the header, NTPv4 may carry extension fields
//! (RFC 7822 §3: 2-byte type, 2-byte length, multiple of 4, at least 16 bytes) and a MAC
//! (RFC 5905 §7.3: 4-byte key id + 16-byte MD5 or 20-byte SHA-1 digest; RFC 8573 also uses
//! 20-byte digests; a 4-byte crypto-NAK is a lone key id of 0).
//!
//! No field library: the `ntp-proto` / `sntpc` crates either pull in a full NTP daemon or only
//! build client requests; the header is 48 fixed bytes, so plain reads are simpler and
//! allocation-free. Control (mode 6) and private (mode 7) messages are not NTP time packets and
//! are rejected by the probe (they also have a different layout).

pub use crate::app::Parse;

/// Length of the fixed header (bytes).
pub const HEADER: usize = 48;
/// Largest datagram considered (bytes): header + a few extension fields + MAC.
pub const MAX_LEN: usize = 1024;

/// Association modes (RFC 5905 §7.3, Figure 10).
pub mod mode {
    /// Symmetric active.
    pub const SYMMETRIC_ACTIVE: u8 = 1;
    /// Symmetric passive.
    pub const SYMMETRIC_PASSIVE: u8 = 2;
    /// Client.
    pub const CLIENT: u8 = 3;
    /// Server.
    pub const SERVER: u8 = 4;
    /// Broadcast.
    pub const BROADCAST: u8 = 5;
}

/// Name of a mode ("client", "server", ...; "mode-N" for the others).
pub fn mode_name(m: u8) -> &'static str {
    match m {
        0 => "reserved",
        1 => "symmetric_active",
        2 => "symmetric_passive",
        3 => "client",
        4 => "server",
        5 => "broadcast",
        6 => "control",
        _ => "private",
    }
}

/// The header fields this module reports, read from one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Leap indicator (0..=3).
    pub leap: u8,
    /// Version number (1..=4 accepted).
    pub version: u8,
    /// Association mode (1..=5 accepted).
    pub mode: u8,
    /// Stratum (0..=16 accepted; 0 = unspecified / kiss-o'-death, 16 = unsynchronised).
    pub stratum: u8,
    /// Poll interval exponent (log2 seconds, as sent).
    pub poll: i8,
    /// Precision exponent (log2 seconds).
    pub precision: i8,
    /// Reference id (4 bytes, ASCII for stratum 0/1, an address or hash otherwise).
    pub refid: [u8; 4],
    /// Origin timestamp (NTP 64-bit format).
    pub origin: u64,
    /// Transmit timestamp (NTP 64-bit format).
    pub transmit: u64,
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        a.copy_from_slice(s);
    }
    u64::from_be_bytes(a)
}

/// Checks that what follows the header is a plausible sequence of extension fields (RFC 7822 §3)
/// optionally followed by a MAC (key id + 16 or 20 bytes digest, or a 4-byte crypto-NAK).
fn trailer_ok(mut t: &[u8]) -> bool {
    loop {
        match t.len() {
            0 | 4 | 20 | 24 => return true,
            _ => {}
        }
        // An extension field: type, length (>= 16, multiple of 4, within the packet).
        let Some(h) = t.get(..4) else { return false };
        let len = usize::from(u16::from_be_bytes([h[2], h[3]]));
        if len < 16 || len % 4 != 0 || len > t.len() {
            return false;
        }
        t = &t[len..];
    }
}

/// Parses one whole NTP datagram strictly (the probe). `Incomplete` while fewer than
/// [`HEADER`] bytes are given and the bytes so far are plausible; `Invalid` for modes 0, 6 and 7,
/// versions outside 1..=4, stratum above 16, unaligned or implausible trailers, and
/// all-zero transmit timestamps from a server.
pub fn packet(b: &[u8]) -> Parse<Header> {
    let Some(&first) = b.first() else { return Parse::Incomplete(HEADER) };
    let version = (first >> 3) & 7;
    let mode = first & 7;
    if !(1..=4).contains(&version) || !(1..=5).contains(&mode) {
        return Parse::Invalid;
    }
    if let Some(&stratum) = b.get(1) {
        if stratum > 16 {
            return Parse::Invalid;
        }
    }
    if b.len() < HEADER {
        return Parse::Incomplete(HEADER);
    }
    if b.len() > MAX_LEN || !trailer_ok(&b[HEADER..]) {
        return Parse::Invalid;
    }
    let h = Header {
        leap: first >> 6,
        version,
        mode,
        stratum: b[1],
        poll: b[2] as i8,
        precision: b[3] as i8,
        refid: [b[12], b[13], b[14], b[15]],
        origin: u64_at(b, 24),
        transmit: u64_at(b, 40),
    };
    // Poll is 4..=17 in RFC 5905 but clients send 0 and some old ones up to 17; a huge or
    // negative poll is not NTP. Precision is a small negative exponent, or 0 in bare SNTP
    // requests, or 32 (chrony's client requests, which hide the real value).
    if !(0..=17).contains(&h.poll) || !((-32..=0).contains(&h.precision) || h.precision == 32) {
        return Parse::Invalid;
    }
    // Root delay and root dispersion (NTP short format, 16.16 seconds) stay far below 256 s
    // (MAXDISP is 16 s, RFC 5905 §7.2).
    if b[4] != 0 || b[8] != 0 {
        return Parse::Invalid;
    }
    // Every sender fills its transmit timestamp (RFC 5905 §8; clients using random
    // timestamps for privacy, RFC 9109, still send a non-zero value).
    if h.transmit == 0 {
        return Parse::Invalid;
    }
    // A server (or broadcast) reply carries a receive/reference time; stratum 0 is only a
    // kiss-o'-death with an ASCII code (RFC 5905 §7.4).
    if matches!(h.mode, mode::SERVER | mode::BROADCAST) && h.stratum == 0 && !h.refid.iter().all(|c| c.is_ascii_uppercase() || *c == 0 || *c == b' ') {
        return Parse::Invalid;
    }
    Parse::Ok(h, b.len())
}
