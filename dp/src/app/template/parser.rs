//! Pure parsing functions of the template protocol (no state, no allocation).
//!
//! Wire format (invented for the template): a 5-byte hello `b"WTPL"` + version byte, sent once by
//! each side, then frames of a 2-byte big-endian length followed by that many payload bytes.
//! Lengths above [`MAX_FRAME`] are a protocol violation.

pub use crate::app::Parse;

/// Magic of the hello.
pub const MAGIC: &[u8; 4] = b"WTPL";
/// Largest accepted frame payload (bytes).
pub const MAX_FRAME: usize = 4096;

/// Parses the hello; returns the version.
pub fn hello(b: &[u8]) -> Parse<u8> {
    let n = b.len().min(4);
    if b[..n] != MAGIC[..n] {
        return Parse::Invalid;
    }
    match b.get(4) {
        Some(&v) => Parse::Ok(v, 5),
        None => Parse::Incomplete(5),
    }
}

/// Parses one frame; returns its payload.
pub fn frame(b: &[u8]) -> Parse<&[u8]> {
    let Some(len) = b.get(..2).map(|l| usize::from(u16::from_be_bytes([l[0], l[1]]))) else {
        return Parse::Incomplete(2);
    };
    if len > MAX_FRAME {
        return Parse::Invalid;
    }
    match b.get(2..2 + len) {
        Some(p) => Parse::Ok(p, 2 + len),
        None => Parse::Incomplete(2 + len),
    }
}
