//! Pure RESP tokenising functions (no state, no allocation): one header line at a time.
//!
//! Follows the Redis "RESP protocol spec" (RESP2 and RESP3): every frame starts with a type byte
//! and a CRLF-terminated line; `$`, `!`, `=` (and the `;` chunks of a streamed string) announce a
//! payload of the given length followed by CRLF; `*`, `%`, `~`, `>`, `|` announce that many
//! elements (maps and attributes: that many pairs); `?` instead of a length opens a streamed
//! aggregate (ended by `.`) or a streamed string (ended by `;0`). Payloads are not part of a
//! token: the caller skips them (they may be up to 512 MB and are never buffered).

use crate::rescan::Resume;

/// Longest header line parsed in one piece (bytes, CRLF included). Longer `+`, `-`, `(` lines and
/// inline commands are skipped in a streaming way; longer lines of other types are violations.
pub const MAX_LINE: usize = 4096;
/// Largest accepted bulk / blob / verbatim payload or chunk (bytes). Redis' own default limit
/// (`proto-max-bulk-len`) is 512 MB; a server may be configured higher, so accept up to 4 GiB.
pub const MAX_BULK: u64 = 1 << 32;
/// Largest accepted aggregate element count (Redis rejects multibulk lengths above `i32::MAX`).
pub const MAX_AGGREGATE: u64 = i32::MAX as u64;

/// Outcome of looking for one CRLF-terminated line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line<'a> {
    /// The line without its CRLF, and the bytes it took (CRLF included).
    Ok(&'a [u8], usize),
    /// No CRLF yet within [`MAX_LINE`] bytes: more input needed.
    Partial,
    /// No CRLF within [`MAX_LINE`] bytes.
    TooLong,
}

/// Finds the first CRLF-terminated line of `b` (the `\r` must directly precede the `\n`).
pub fn line(b: &[u8]) -> Line<'_> {
    line_from(b, &mut Resume::default())
}

/// [`line`] on a line presented again with more bytes (the stream engine's contract): `from`
/// remembers how far the search for its LF got, so a line trickled in small segments is
/// searched once, not again from its start at every segment.
pub fn line_from<'a>(b: &'a [u8], from: &mut Resume) -> Line<'a> {
    let window = &b[..b.len().min(MAX_LINE)];
    match from.find(window, MAX_LINE, b'\n') {
        Some(i) if i > 0 && window.get(i - 1) == Some(&b'\r') => Line::Ok(&window[..i - 1], i + 1),
        Some(_) => Line::TooLong, // bare LF: not RESP; treated like an overlong line by callers
        None if b.len() >= MAX_LINE => Line::TooLong,
        None => Line::Partial,
    }
}

/// Finds the first LF-terminated line (inline commands: Redis splits on `\n` and trims `\r`).
/// Returns the line without `\r\n` / `\n` and the bytes it took; `None` if there is no LF within
/// [`MAX_LINE`] bytes. `from` as for [`line_from`].
pub fn inline_line<'a>(b: &'a [u8], from: &mut Resume) -> Option<(&'a [u8], usize)> {
    let window = &b[..b.len().min(MAX_LINE)];
    let i = from.find(window, MAX_LINE, b'\n')?;
    let l = &window[..i];
    Some((l.strip_suffix(b"\r").unwrap_or(l), i + 1))
}

/// Parses a signed decimal integer of at most 19 digits (`-`/`+` sign allowed).
pub fn int(b: &[u8]) -> Option<i64> {
    let (neg, digits) = match b.first() {
        Some(b'-') => (true, &b[1..]),
        Some(b'+') => (false, &b[1..]),
        _ => (false, b),
    };
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let v = digits.iter().fold(0i64, |acc, &d| acc * 10 + i64::from(d - b'0'));
    Some(if neg { -v } else { v })
}

/// One RESP header, classified. Lengths are already capped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header<'a> {
    /// `+` simple string.
    Simple(&'a [u8]),
    /// `-` simple error.
    Error(&'a [u8]),
    /// A complete scalar: `:` integer, `,` double, `#` boolean, `(` big number, `_` null, or a
    /// null bulk / null aggregate (`$-1`, `*-1`). The byte is the type.
    Scalar(u8),
    /// `$` bulk string, `!` blob error, `=` verbatim string, `;` streamed-string chunk: the type
    /// and the payload length (CRLF not included).
    Bulk(u8, u64),
    /// `*` array, `~` set, `>` push (count elements), `%` map, `|` attribute (count already
    /// doubled to elements).
    Aggregate(u8, u64),
    /// `$?`, `*?`, `%?`, `~?`, `>?`: a streamed string or aggregate of unknown length.
    Streamed(u8),
    /// `.`: end of a streamed aggregate.
    End,
}

/// The RESP type bytes (RESP2 and RESP3).
pub const TYPE_BYTES: &[u8] = b"*$+-:_,#!=(%~>|;.";

/// Whether `kind` only exists in RESP3.
pub fn is_resp3_type(kind: u8) -> bool {
    b"_,#!=(%~>|;.".contains(&kind)
}

/// Classifies a header line (`l` is the line without CRLF, type byte included). `None` if the
/// type byte is unknown, a length is malformed or above its cap, or a scalar is malformed.
pub fn header(l: &[u8]) -> Option<Header<'_>> {
    let (&kind, body) = l.split_first()?;
    match kind {
        b'+' => Some(Header::Simple(body)),
        b'-' => Some(Header::Error(body)),
        b':' => int(body).map(|_| Header::Scalar(kind)),
        b'_' => body.is_empty().then_some(Header::Scalar(kind)),
        b'#' => matches!(body, b"t" | b"f").then_some(Header::Scalar(kind)),
        b',' => double_ok(body).then_some(Header::Scalar(kind)),
        b'(' => big_ok(body).then_some(Header::Scalar(kind)),
        b'.' => body.is_empty().then_some(Header::End),
        b'$' | b'!' | b'=' | b';' => {
            if body == b"?" && kind == b'$' {
                return Some(Header::Streamed(kind));
            }
            match int(body)? {
                -1 if kind == b'$' => Some(Header::Scalar(kind)),
                n if n >= 0 && (n as u64) <= MAX_BULK => Some(Header::Bulk(kind, n as u64)),
                _ => None,
            }
        }
        b'*' | b'%' | b'~' | b'>' | b'|' => {
            if body == b"?" && kind != b'|' {
                return Some(Header::Streamed(kind));
            }
            match int(body)? {
                -1 if kind == b'*' => Some(Header::Scalar(kind)),
                n if n >= 0 && (n as u64) <= MAX_AGGREGATE => {
                    let n = n as u64;
                    Some(Header::Aggregate(kind, if matches!(kind, b'%' | b'|') { n * 2 } else { n }))
                }
                _ => None,
            }
        }
        _ => None,
    }
}

fn double_ok(b: &[u8]) -> bool {
    matches!(b, b"inf" | b"-inf" | b"nan")
        || (!b.is_empty() && b.len() <= 64 && b.iter().all(|c| c.is_ascii_digit() || b"+-.eE".contains(c)))
}

fn big_ok(b: &[u8]) -> bool {
    let d = b.strip_prefix(b"-").unwrap_or(b);
    !d.is_empty() && d.iter().all(u8::is_ascii_digit)
}

/// Whether `name` is a plausible command name: a letter, then letters, digits, `.`, `_`, `-`, `|`
/// (module commands such as `JSON.SET`), at most 32 bytes.
pub fn plausible_command(name: &[u8]) -> bool {
    plausible_command_prefix(name) && !name.is_empty()
}

/// Whether `name` can be the beginning of a plausible command name.
pub fn plausible_command_prefix(name: &[u8]) -> bool {
    name.len() <= 32
        && name.first().is_none_or(u8::is_ascii_alphabetic)
        && name.iter().all(|c| c.is_ascii_alphanumeric() || b"._-|".contains(c))
}

/// Inline commands (client sends a plain text line) recognised by the probe. Deliberately a
/// short list of Redis-specific words: `GET` (memcached, HTTP), `QUIT` (SMTP, POP3) and `HELLO`
/// (generic greeting) are left out, as the RESP array form is what clients send; `SET` and
/// `AUTH` are recognised in the forms only Redis takes (`redis_only_form` in the module).
pub const INLINE_COMMANDS: &[&str] = &[
    "PING",
    "INFO",
    "DBSIZE",
    "KEYS",
    "EXISTS",
    "HGETALL",
    "HSET",
    "HGET",
    "LPUSH",
    "RPUSH",
    "LRANGE",
    "LLEN",
    "SADD",
    "SMEMBERS",
    "ZADD",
    "ZRANGE",
    "INCR",
    "DECR",
    "EXPIRE",
    "TTL",
    "FLUSHALL",
    "FLUSHDB",
    "MONITOR",
    "SLOWLOG",
    "PUBLISH",
    "SUBSCRIBE",
];

/// Error prefixes only a Redis server sends (a bare `-ERR` is also POP3's).
pub const REDIS_ERRORS: &[&str] = &[
    "WRONGTYPE",
    "NOAUTH",
    "NOPERM",
    "WRONGPASS",
    "MOVED",
    "ASK",
    "LOADING",
    "BUSY",
    "READONLY",
    "MISCONF",
    "NOSCRIPT",
    "EXECABORT",
    "CROSSSLOT",
    "CLUSTERDOWN",
    "TRYAGAIN",
    "NOREPLICAS",
    "MASTERDOWN",
    "NOPROTO",
    "UNKILLABLE",
    "NOTBUSY",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers() {
        assert_eq!(header(b"*3"), Some(Header::Aggregate(b'*', 3)));
        assert_eq!(header(b"%2"), Some(Header::Aggregate(b'%', 4)));
        assert_eq!(header(b"$-1"), Some(Header::Scalar(b'$')));
        assert_eq!(header(b"$5"), Some(Header::Bulk(b'$', 5)));
        assert_eq!(header(b"$?"), Some(Header::Streamed(b'$')));
        assert_eq!(header(b"#t"), Some(Header::Scalar(b'#')));
        assert_eq!(header(b",1.5e3"), Some(Header::Scalar(b',')));
        assert_eq!(header(b"$9999999999999"), None);
        assert_eq!(header(b"*x"), None);
        assert_eq!(header(b"@1"), None);
        assert_eq!(header(b""), None);
    }

    #[test]
    fn lines() {
        assert_eq!(line(b"+OK\r\nrest"), Line::Ok(b"+OK", 5));
        assert_eq!(line(b"+OK\r"), Line::Partial);
        assert_eq!(line(b"+OK\n"), Line::TooLong);
        assert_eq!(line(&[b'+'; MAX_LINE]), Line::TooLong);
        assert_eq!(inline_line(b"PING\r\n", &mut Resume::default()), Some((&b"PING"[..], 6)));
        assert_eq!(int(b"-12"), Some(-12));
        assert_eq!(int(b"1234567890123456789"), None);
    }
}
