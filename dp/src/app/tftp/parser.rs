//! Pure parsing functions for TFTP packets (RFC 1350 §5 and Appendix, options RFC 2347 §2-3,
//! `blksize` RFC 2348, `timeout`/`tsize` RFC 2349, `windowsize` RFC 7440).
//!
//! Layouts (all integers big-endian, strings NUL-terminated netascii):
//! - RRQ (1) / WRQ (2): opcode (2), file name, mode (`netascii`, `octet`, `mail`, any case), then
//!   option name / value pairs (RFC 2347 §2).
//! - DATA (3): opcode, block number (2), 0..blksize payload bytes.
//! - ACK (4): opcode, block number.
//! - ERROR (5): opcode, error code (2), message.
//! - OACK (6): opcode, option name / value pairs (RFC 2347 §3).
//!
//! Written here rather than with a crate: the TFTP crates (`tftp`, `async-tftp`, `tftp-server`)
//! decode into owned `String`s and option maps; the format is a handful of fixed fields and
//! NUL-terminated strings, parsed here in place without allocating.
//!
//! The request parse is strict, because it is also the probe: the file name must be non-empty
//! UTF-8 without control characters, the mode one of the three names, and options printable
//! ASCII with well-formed values for the options this module knows (decimal, in the RFC's
//! range). A datagram that stops inside one of these fields is [`Parse::Incomplete`] (a prefix of
//! a real request), anything else invalid is [`Parse::Invalid`].

pub use crate::app::Parse;

/// Opcodes (RFC 1350 §5, RFC 2347 §3).
pub mod op {
    /// Read request.
    pub const RRQ: u16 = 1;
    /// Write request.
    pub const WRQ: u16 = 2;
    /// Data block.
    pub const DATA: u16 = 3;
    /// Acknowledgment.
    pub const ACK: u16 = 4;
    /// Error.
    pub const ERROR: u16 = 5;
    /// Option acknowledgment.
    pub const OACK: u16 = 6;
}

/// Default block size when no `blksize` option was acknowledged (RFC 1350 §1).
pub const DEFAULT_BLKSIZE: u16 = 512;
/// Longest decimal value read for a known option (digits); `tsize` fits in 20 digits.
const MAX_DIGITS: usize = 20;

/// Direction of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// RRQ: the client reads a file from the server.
    Read,
    /// WRQ: the client writes a file to the server.
    Write,
}

impl Op {
    /// Name used in `l7` (`"read"`, `"write"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Read => "read",
            Op::Write => "write",
        }
    }
}

/// Transfer mode (RFC 1350 §1; `mail` is obsolete but defined).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `netascii`.
    Netascii,
    /// `octet`.
    Octet,
    /// `mail`.
    Mail,
}

impl Mode {
    const ALL: [(Mode, &'static [u8]); 3] =
        [(Mode::Netascii, b"netascii"), (Mode::Octet, b"octet"), (Mode::Mail, b"mail")];

    /// Name used in `l7` (lower case).
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Netascii => "netascii",
            Mode::Octet => "octet",
            Mode::Mail => "mail",
        }
    }
}

/// The options this module reports, as found in a request or an OACK (absent: `None`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// `blksize` in bytes (RFC 2348: 8..=65464).
    pub blksize: Option<u16>,
    /// `tsize` in bytes (RFC 2349; 0 in an RRQ asks the server for the size).
    pub tsize: Option<u64>,
    /// `timeout` in seconds (RFC 2349: 1..=255).
    pub timeout: Option<u8>,
    /// `windowsize` in blocks (RFC 7440: 1..=65535).
    pub windowsize: Option<u16>,
    /// Other options (names this module does not know), counted.
    pub unknown: u8,
}

impl Options {
    /// True when no option was present.
    pub fn is_empty(&self) -> bool {
        *self == Options::default()
    }
}

/// A parsed RRQ or WRQ, borrowing the file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// Read or write.
    pub op: Op,
    /// File name bytes (valid UTF-8, no control characters, no NUL).
    pub file: &'a [u8],
    /// Transfer mode.
    pub mode: Mode,
    /// Options requested.
    pub options: Options,
}

/// One parsed TFTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet<'a> {
    /// RRQ or WRQ.
    Request(Request<'a>),
    /// DATA: block number and payload.
    Data {
        /// Block number (wraps at 65535).
        block: u16,
        /// Payload bytes.
        payload: &'a [u8],
    },
    /// ACK of a block (0 acknowledges a WRQ or an OACK).
    Ack {
        /// Block number.
        block: u16,
    },
    /// ERROR with its code and message bytes (without the NUL).
    Error {
        /// Error code (RFC 1350 Appendix, 8 from RFC 2347).
        code: u16,
        /// Message bytes.
        message: &'a [u8],
    },
    /// OACK with the acknowledged options.
    Oack(Options),
}

/// Name of an error code (RFC 1350 Appendix; 8 is RFC 2347 §5).
pub fn error_name(code: u16) -> &'static str {
    match code {
        0 => "not_defined",
        1 => "file_not_found",
        2 => "access_violation",
        3 => "disk_full",
        4 => "illegal_operation",
        5 => "unknown_transfer_id",
        6 => "file_exists",
        7 => "no_such_user",
        8 => "option_negotiation_failed",
        _ => "other",
    }
}

/// Position of the first NUL in `data`, checking every byte before it with `ok`:
/// `Ok(n)` with the string length, `Incomplete` when no NUL (all bytes fine), `Invalid` when a
/// byte fails.
fn cstr(data: &[u8], ok: impl Fn(u8) -> bool) -> Parse<usize> {
    for (i, &b) in data.iter().enumerate() {
        if b == 0 {
            return Parse::Ok(i, i + 1);
        }
        if !ok(b) {
            return Parse::Invalid;
        }
    }
    Parse::Incomplete(data.len() + 1)
}

fn printable(b: u8) -> bool {
    (0x20..=0x7e).contains(&b)
}

/// A file name: non-empty UTF-8 without control characters. Returns the name length and the
/// bytes taken (with the NUL).
fn file_name(data: &[u8]) -> Parse<usize> {
    let end = data.iter().position(|b| *b == 0);
    let name = &data[..end.unwrap_or(data.len())];
    let text = match std::str::from_utf8(name) {
        Ok(t) => t,
        // Cut inside a multi-byte character at the end of a truncated datagram.
        Err(e) if end.is_none() && e.error_len().is_none() => {
            let valid = &name[..e.valid_up_to()];
            std::str::from_utf8(valid).unwrap_or("")
        }
        Err(_) => return Parse::Invalid,
    };
    if text.chars().any(char::is_control) {
        return Parse::Invalid;
    }
    match end {
        Some(0) => Parse::Invalid,
        Some(n) => Parse::Ok(n, n + 1),
        None => Parse::Incomplete(data.len() + 1),
    }
}

/// The mode string (case-insensitive); a truncated prefix of a mode name is `Incomplete`.
fn mode(data: &[u8]) -> Parse<Mode> {
    let end = data.iter().position(|b| *b == 0);
    let s = &data[..end.unwrap_or(data.len())];
    for (m, name) in Mode::ALL {
        match end {
            Some(n) if s.eq_ignore_ascii_case(name) => return Parse::Ok(m, n + 1),
            None if s.len() <= name.len() && s.eq_ignore_ascii_case(&name[..s.len()]) => {
                return Parse::Incomplete(data.len() + 1)
            }
            _ => {}
        }
    }
    Parse::Invalid
}

/// Which known option a name is (case-insensitive, RFC 2347 §2).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Known {
    Blksize,
    Tsize,
    Timeout,
    Windowsize,
}

fn known(name: &[u8]) -> Option<Known> {
    [
        (Known::Blksize, &b"blksize"[..]),
        (Known::Tsize, b"tsize"),
        (Known::Timeout, b"timeout"),
        (Known::Windowsize, b"windowsize"),
    ]
    .into_iter()
    .find(|(_, n)| name.eq_ignore_ascii_case(n))
    .map(|(k, _)| k)
}

/// Decimal value of at most [`MAX_DIGITS`] digits.
fn decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > MAX_DIGITS {
        return None;
    }
    v.iter().try_fold(0u64, |acc, b| {
        if b.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// Option name / value pairs up to the end of `data` (RFC 2347 §2): names non-empty printable
/// ASCII without spaces; values printable ASCII; values of known options decimal in range.
/// `Ok` only when `data` ends exactly after a value's NUL.
pub fn options(data: &[u8]) -> Parse<Options> {
    let mut o = Options::default();
    let mut off = 0;
    while off < data.len() {
        let rest = &data[off..];
        let n = match cstr(rest, |b| b.is_ascii_graphic()) {
            Parse::Ok(0, _) => return Parse::Invalid,
            Parse::Ok(n, _) => n,
            Parse::Incomplete(_) => return Parse::Incomplete(data.len() + 1),
            Parse::Invalid => return Parse::Invalid,
        };
        let name = &rest[..n];
        let k = known(name);
        let vrest = &rest[n + 1..];
        let numeric = k.is_some();
        let v = match cstr(vrest, |b| if numeric { b.is_ascii_digit() } else { printable(b) }) {
            Parse::Ok(v, _) => v,
            Parse::Incomplete(_) if numeric && vrest.len() > MAX_DIGITS => return Parse::Invalid,
            Parse::Incomplete(_) => return Parse::Incomplete(data.len() + 1),
            Parse::Invalid => return Parse::Invalid,
        };
        let value = &vrest[..v];
        match k {
            None => o.unknown = o.unknown.saturating_add(1),
            Some(k) => {
                let Some(x) = decimal(value) else { return Parse::Invalid };
                match k {
                    Known::Blksize if (8..=65464).contains(&x) => o.blksize = Some(x as u16),
                    Known::Tsize => o.tsize = Some(x),
                    Known::Timeout if (1..=255).contains(&x) => o.timeout = Some(x as u8),
                    Known::Windowsize if (1..=65535).contains(&x) => o.windowsize = Some(x as u16),
                    _ => return Parse::Invalid,
                }
            }
        }
        off += n + 1 + v + 1;
    }
    Parse::Ok(o, data.len())
}

fn opcode(data: &[u8]) -> Parse<u16> {
    match data {
        [] => Parse::Incomplete(2),
        [0] => Parse::Incomplete(2),
        [_] => Parse::Invalid,
        [a, b, ..] => Parse::Ok(u16::from_be_bytes([*a, *b]), 2),
    }
}

/// Parses a whole datagram as an RRQ or WRQ (the probe). `Ok` takes the whole datagram.
pub fn request(data: &[u8]) -> Parse<Request<'_>> {
    let op = match opcode(data) {
        Parse::Ok(op::RRQ, _) => Op::Read,
        Parse::Ok(op::WRQ, _) => Op::Write,
        Parse::Ok(..) | Parse::Invalid => return Parse::Invalid,
        Parse::Incomplete(n) => return Parse::Incomplete(n),
    };
    let rest = &data[2..];
    let (flen, ftake) = match file_name(rest) {
        Parse::Ok(n, t) => (n, t),
        Parse::Incomplete(_) => return Parse::Incomplete(data.len() + 1),
        Parse::Invalid => return Parse::Invalid,
    };
    let file = &rest[..flen];
    let rest = &rest[ftake..];
    let (mode, mtake) = match mode(rest) {
        Parse::Ok(m, t) => (m, t),
        Parse::Incomplete(_) => return Parse::Incomplete(data.len() + 1),
        Parse::Invalid => return Parse::Invalid,
    };
    match options(&rest[mtake..]) {
        Parse::Ok(options, _) => Parse::Ok(Request { op, file, mode, options }, data.len()),
        Parse::Incomplete(_) => Parse::Incomplete(data.len() + 1),
        Parse::Invalid => Parse::Invalid,
    }
}

/// Parses a whole datagram as any TFTP packet. An ERROR message without its NUL (some
/// implementations omit it) ends at the datagram's end; bytes after an ACK's block number are
/// ignored.
pub fn packet(data: &[u8]) -> Parse<Packet<'_>> {
    let code = match opcode(data) {
        Parse::Ok(c, _) => c,
        Parse::Incomplete(n) => return Parse::Incomplete(n),
        Parse::Invalid => return Parse::Invalid,
    };
    let rest = &data[2..];
    let block = || match rest {
        [a, b, ..] => Some(u16::from_be_bytes([*a, *b])),
        _ => None,
    };
    match code {
        op::RRQ | op::WRQ => match request(data) {
            Parse::Ok(r, n) => Parse::Ok(Packet::Request(r), n),
            Parse::Incomplete(n) => Parse::Incomplete(n),
            Parse::Invalid => Parse::Invalid,
        },
        op::DATA => match block() {
            Some(block) => Parse::Ok(Packet::Data { block, payload: &rest[2..] }, data.len()),
            None => Parse::Incomplete(4),
        },
        op::ACK => match block() {
            Some(block) => Parse::Ok(Packet::Ack { block }, data.len()),
            None => Parse::Incomplete(4),
        },
        op::ERROR => match block() {
            Some(code) => {
                let msg = &rest[2..];
                let end = msg.iter().position(|b| *b == 0).unwrap_or(msg.len());
                Parse::Ok(Packet::Error { code, message: &msg[..end] }, data.len())
            }
            None => Parse::Incomplete(4),
        },
        op::OACK => match options(rest) {
            Parse::Ok(o, _) => Parse::Ok(Packet::Oack(o), data.len()),
            Parse::Incomplete(_) => Parse::Incomplete(data.len() + 1),
            Parse::Invalid => Parse::Invalid,
        },
        _ => Parse::Invalid,
    }
}
