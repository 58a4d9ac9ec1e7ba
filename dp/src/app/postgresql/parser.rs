//! Pure PostgreSQL frontend/backend protocol v3 functions (no state, no allocation), after the
//! PostgreSQL documentation, chapter "Frontend/Backend Protocol": "Message Flow" (start-up,
//! SSL/GSSAPI session encryption, cancelling requests, simple and extended query) and "Message
//! Formats" (`StartupMessage`, `SSLRequest`, `GSSENCRequest`, `CancelRequest`, `Query`, `Parse`,
//! `Authentication*`, `ErrorResponse` with the "Error and Notice Message Fields",
//! `ParameterStatus`, `NegotiateProtocolVersion`).
//!
//! Functions take a message body that may be cut short (the session only looks at the first
//! [`WINDOW`] bytes of a message): a string without its NUL reads up to the cut.

/// `SSLRequest` code.
pub const SSL_REQUEST: u32 = 80_877_103;
/// `GSSENCRequest` code.
pub const GSSENC_REQUEST: u32 = 80_877_104;
/// `CancelRequest` code.
pub const CANCEL_REQUEST: u32 = 80_877_102;
/// Protocol 3.0 as sent in `StartupMessage` (major 3 in the high 16 bits).
pub const PROTOCOL_3: u32 = 196_608;
/// Largest start-up packet the server accepts (`MAX_STARTUP_PACKET_LENGTH`).
pub const MAX_STARTUP: usize = 10_000;
/// Largest typed message accepted (length field, bytes): the server's 1 GB allocation limit.
pub const MAX_MESSAGE: usize = 1 << 30;
/// Bytes of a message body the session looks at; the rest is skipped unread.
pub const WINDOW: usize = 2048;

/// Big-endian u32 at `at`.
pub fn be32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// Splits a NUL-terminated string off `b`: the string (up to the NUL, or all of `b` when it was
/// cut before the NUL) and what follows the NUL (`None` when there was no NUL).
pub fn cstr(b: &[u8]) -> (&[u8], Option<&[u8]>) {
    match b.iter().position(|&c| c == 0) {
        Some(i) => (&b[..i], b.get(i + 1..)),
        None => (b, None),
    }
}

/// An untyped (start-up phase) frontend message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Untyped<'a> {
    /// `SSLRequest`.
    SslRequest,
    /// `GSSENCRequest`.
    GssEncRequest,
    /// `CancelRequest` with the backend process id.
    Cancel(u32),
    /// `StartupMessage`: protocol (major << 16 | minor) and the parameter block.
    Startup(u32, &'a [u8]),
    /// Another code (protocol 2 or garbage).
    Other(u32),
}

/// Classifies an untyped message from its length field `len` and body `b` (bytes after the
/// length field, possibly cut short).
pub fn untyped(len: usize, b: &[u8]) -> Option<Untyped<'_>> {
    let code = be32(b, 0)?;
    Some(match code {
        SSL_REQUEST if len == 8 => Untyped::SslRequest,
        GSSENC_REQUEST if len == 8 => Untyped::GssEncRequest,
        CANCEL_REQUEST if len >= 16 => Untyped::Cancel(be32(b, 4).unwrap_or(0)),
        c if c >> 16 == 3 => Untyped::Startup(c, b.get(4..).unwrap_or_default()),
        c => Untyped::Other(c),
    })
}

/// Iterates over the `name\0value\0` pairs of a start-up parameter block (stops at the empty
/// name that ends it, or where the block was cut).
pub fn params(mut b: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    std::iter::from_fn(move || {
        let (k, rest) = cstr(b);
        let rest = rest?;
        if k.is_empty() {
            return None;
        }
        let (v, after) = cstr(rest);
        b = after.unwrap_or_default();
        Some((k, v))
    })
}

/// Reads a typed message header: type byte and length field (which counts itself, not the type).
/// `None` with fewer than 5 bytes.
pub fn typed(b: &[u8]) -> Option<(u8, usize)> {
    Some((*b.first()?, be32(b, 1)? as usize))
}

/// Fields of an `ErrorResponse` / `NoticeResponse`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fields<'a> {
    /// `S`: severity (possibly localized).
    pub severity: Option<&'a [u8]>,
    /// `V`: severity, never localized.
    pub severity_nl: Option<&'a [u8]>,
    /// `C`: SQLSTATE code.
    pub code: Option<&'a [u8]>,
    /// `M`: primary message.
    pub message: Option<&'a [u8]>,
}

/// Parses the fields of an `ErrorResponse` / `NoticeResponse` body.
pub fn fields(mut b: &[u8]) -> Fields<'_> {
    let mut f = Fields::default();
    while let Some((&t, rest)) = b.split_first() {
        if t == 0 {
            break;
        }
        let (v, after) = cstr(rest);
        match t {
            b'S' => f.severity = Some(v),
            b'V' => f.severity_nl = Some(v),
            b'C' => f.code = Some(v),
            b'M' => f.message = Some(v),
            _ => {}
        }
        let Some(after) = after else { break };
        b = after;
    }
    f
}

/// Name of an `Authentication*` request code.
pub fn auth_name(code: u32) -> Option<&'static str> {
    Some(match code {
        0 => "ok",
        2 => "kerberos_v5",
        3 => "cleartext",
        5 => "md5",
        6 => "scm_credential",
        7 => "gss",
        8 => "gss_continue",
        9 => "sspi",
        10 => "sasl",
        11 => "sasl_continue",
        12 => "sasl_final",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_params() {
        let b = b"user\0app\0database\0shop\0\0";
        let v: Vec<_> = params(b).collect();
        assert_eq!(v, vec![(&b"user"[..], &b"app"[..]), (&b"database"[..], &b"shop"[..])]);
        assert_eq!(params(b"user\0ap").count(), 1);
        assert_eq!(params(b"us").count(), 0);
    }

    #[test]
    fn untyped_codes() {
        assert_eq!(untyped(8, &SSL_REQUEST.to_be_bytes()), Some(Untyped::SslRequest));
        assert_eq!(untyped(12, &SSL_REQUEST.to_be_bytes()), Some(Untyped::Other(SSL_REQUEST)));
        assert_eq!(untyped(8, &[0, 2]), None);
    }

    #[test]
    fn error_fields() {
        let f = fields(b"SERROR\0VERROR\0C42703\0Mcolumn x\0\0");
        assert_eq!(f.code, Some(&b"42703"[..]));
        assert_eq!(f.message, Some(&b"column x"[..]));
        let f = fields(b"SFATAL\0C28P");
        assert_eq!(f.code, Some(&b"28P"[..]));
    }
}
