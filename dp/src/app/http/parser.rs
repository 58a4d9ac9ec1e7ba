//! Pure HTTP/1.x parsing functions (no state, no allocation), after RFC 9112.
//!
//! - Request and status lines and header sections (RFC 9112 §3, §4, §5) are parsed by the
//!   `httparse` crate (zero-copy, works on partial input, no allocation: the header array lives
//!   on the stack); this module adds the strict, prefix-safe probes and message framing.
//! - Message body length (RFC 9112 §6.3): `Transfer-Encoding` whose final coding is `chunked`
//!   wins over `Content-Length`; a request without either has no body; a response to HEAD, a 1xx,
//!   204 or 304 has no body; a response with neither is read until the connection closes.
//! - Chunked transfer coding (RFC 9112 §7.1): chunk-size lines, chunk data + CRLF, last chunk
//!   and trailer section, each line bounded.
//!
//! Every length read from the wire is capped ([`MAX_HEAD`], [`MAX_BODY`], [`MAX_CHUNK`],
//! [`MAX_LINE`]) before use.

pub use crate::app::Parse;
use crate::rescan::Resume;

/// Largest request or response head (start line + header section, bytes) the parser waits for.
pub const MAX_HEAD: usize = 16 * 1024;
/// Largest number of header fields in one head (stack array given to `httparse`).
pub const MAX_HEADERS: usize = 96;
/// Largest accepted `Content-Length` (bytes, 2^53).
pub const MAX_BODY: u64 = 1 << 53;
/// Largest accepted chunk size (bytes, 2^40).
pub const MAX_CHUNK: u64 = 1 << 40;
/// Longest chunk-size line or trailer field line (bytes, including extensions and CRLF).
pub const MAX_LINE: usize = 4096;

/// Request methods recognised by the probe (RFC 9110 §9, WebDAV RFC 4918 §9, PATCH RFC 5789).
/// A closed list keeps line protocols that start with other words (`GET key` in Redis inline,
/// `EHLO`, `HELLO`) out, together with the version check of the request line.
pub const METHODS: &[&[u8]] = &[
    b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"CONNECT", b"OPTIONS", b"TRACE", b"PATCH",
    b"PROPFIND", b"PROPPATCH", b"MKCOL", b"COPY", b"MOVE", b"LOCK", b"UNLOCK", b"REPORT",
    b"SEARCH", b"MKCALENDAR",
];

/// Outcome of a stateless probe over the first bytes of a direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniff {
    /// A request line / status line up to the version (and status code).
    Yes,
    /// A prefix of one.
    Maybe,
    /// Not HTTP/1.x.
    No,
}

/// Matches `lit` at the start of `b`: `Some(true)` whole, `None` when `b` is a shorter prefix
/// of it, `Some(false)` on a mismatch.
fn lit(b: &[u8], lit: &[u8]) -> Option<bool> {
    let n = b.len().min(lit.len());
    if b[..n] != lit[..n] {
        Some(false)
    } else if n < lit.len() {
        None
    } else {
        Some(true)
    }
}

/// Probes a request line (RFC 9112 §3): `method SP request-target SP "HTTP/1." DIGIT`, with a
/// method from [`METHODS`] and an origin-form (`/...`), asterisk-form, absolute-form or
/// authority-form target without control characters or spaces.
pub fn sniff_request(b: &[u8]) -> Sniff {
    let Some(sp) = b.iter().take(16).position(|&c| c == b' ') else {
        let prefix = &b[..b.len().min(16)];
        return if b.len() < 16 && METHODS.iter().any(|m| m.starts_with(prefix)) {
            Sniff::Maybe
        } else {
            Sniff::No
        };
    };
    if !METHODS.contains(&&b[..sp]) {
        return Sniff::No;
    }
    let rest = &b[sp + 1..];
    match rest.first() {
        None => return Sniff::Maybe,
        Some(c) if *c == b'/' || *c == b'*' || c.is_ascii_alphanumeric() || *c == b'[' => {}
        Some(_) => return Sniff::No,
    }
    let mut end = None;
    for (i, &c) in rest.iter().enumerate().take(MAX_HEAD) {
        if c == b' ' {
            end = Some(i);
            break;
        }
        if c < 0x21 || c == 0x7f {
            return Sniff::No;
        }
    }
    let Some(end) = end else {
        return if rest.len() < MAX_HEAD { Sniff::Maybe } else { Sniff::No };
    };
    version(&rest[end + 1..])
}

/// Probes `"HTTP/1." DIGIT` at the start of `b`.
fn version(b: &[u8]) -> Sniff {
    match lit(b, b"HTTP/1.") {
        Some(false) => Sniff::No,
        None => Sniff::Maybe,
        Some(true) => match b.get(7) {
            None => Sniff::Maybe,
            Some(d) if d.is_ascii_digit() => Sniff::Yes,
            Some(_) => Sniff::No,
        },
    }
}

/// Probes a status line (RFC 9112 §4): `"HTTP/1." DIGIT SP 3DIGIT (SP / CR / LF)`.
pub fn sniff_response(b: &[u8]) -> Sniff {
    match version(b) {
        Sniff::Yes => {}
        other => return other,
    }
    match b.get(8) {
        None => return Sniff::Maybe,
        Some(b' ') => {}
        Some(_) => return Sniff::No,
    }
    for i in 9..12 {
        match b.get(i) {
            None => return Sniff::Maybe,
            Some(d) if d.is_ascii_digit() => {}
            Some(_) => return Sniff::No,
        }
    }
    match b.get(12) {
        None => Sniff::Maybe,
        Some(b' ' | b'\r' | b'\n') => Sniff::Yes,
        Some(_) => Sniff::No,
    }
}

/// How the body of a message is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    /// Exactly this many bytes (`Content-Length`).
    Length(u64),
    /// Chunked transfer coding (RFC 9112 §7.1).
    Chunked,
    /// Everything until the connection closes (responses only).
    UntilClose,
}

/// The length-related header fields of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lengths {
    /// `Content-Length` (all copies agree), if present.
    pub content_length: Option<u64>,
    /// A `Transfer-Encoding` field is present.
    pub transfer_encoding: bool,
    /// Its final coding is `chunked`.
    pub chunked: bool,
}

/// A parsed request head; every slice borrows from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// Method token.
    pub method: &'a [u8],
    /// Request target (RFC 9112 §3.2), as sent.
    pub target: &'a [u8],
    /// Minor version (`HTTP/1.x`).
    pub minor: u8,
    /// `Host` field value.
    pub host: Option<&'a [u8]>,
    /// `User-Agent` field value.
    pub user_agent: Option<&'a [u8]>,
    /// `Upgrade` field value (RFC 9110 §7.8).
    pub upgrade: Option<&'a [u8]>,
    /// `Content-Type` field value.
    pub content_type: Option<&'a [u8]>,
    /// Body length fields.
    pub lengths: Lengths,
}

/// Whether a `Content-Type` value is `application/x-www-form-urlencoded` (any parameters).
pub fn is_form(content_type: &[u8]) -> bool {
    let t = content_type.split(|&c| c == b';').next().map(trim).unwrap_or_default();
    t.eq_ignore_ascii_case(b"application/x-www-form-urlencoded")
}

/// A parsed response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response<'a> {
    /// Minor version.
    pub minor: u8,
    /// Status code (any 3 digits; unknown codes are values).
    pub status: u16,
    /// `Upgrade` field value.
    pub upgrade: Option<&'a [u8]>,
    /// Body length fields.
    pub lengths: Lengths,
}

/// Trims optional whitespace (RFC 9110 §5.6.3) around a field value.
fn trim(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|c| !matches!(c, b' ' | b'\t')).unwrap_or(v.len());
    let end = v.iter().rposition(|c| !matches!(c, b' ' | b'\t')).map_or(start, |e| e + 1);
    v.get(start..end).unwrap_or(&[])
}

/// Parses a `Content-Length` value: 1*DIGIT, or a list of identical values (RFC 9110 §8.6),
/// capped at [`MAX_BODY`].
pub fn content_length(v: &[u8]) -> Option<u64> {
    let mut out: Option<u64> = None;
    for part in v.split(|&c| c == b',') {
        let part = trim(part);
        if part.is_empty() || part.len() > 16 || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = part.iter().fold(0u64, |a, &d| a * 10 + u64::from(d - b'0'));
        if n > MAX_BODY || out.is_some_and(|o| o != n) {
            return None;
        }
        out = Some(n);
    }
    out
}

/// Whether the final coding of a `Transfer-Encoding` list is `chunked` (RFC 9112 §6.1).
pub fn final_coding_is_chunked(v: &[u8]) -> bool {
    v.split(|&c| c == b',')
        .map(trim)
        .rfind(|c| !c.is_empty())
        .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"))
}

/// Collects [`Lengths`] from a header list; `None` on conflicting or invalid `Content-Length`.
fn lengths(headers: &[httparse::Header<'_>]) -> Option<Lengths> {
    let mut l = Lengths::default();
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = content_length(h.value)?;
            if l.content_length.is_some_and(|o| o != n) {
                return None;
            }
            l.content_length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            l.transfer_encoding = true;
            // The last field's final coding decides (fields combine into one list).
            l.chunked = final_coding_is_chunked(h.value);
        }
    }
    Some(l)
}

/// The first value of header `name`.
fn field<'a>(headers: &[httparse::Header<'a>], name: &str) -> Option<&'a [u8]> {
    headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| trim(h.value))
}

/// Maps an `httparse` outcome to [`Parse`], bounding partial heads by [`MAX_HEAD`].
fn partial(len: usize) -> Parse<()> {
    if len >= MAX_HEAD {
        Parse::Invalid
    } else {
        Parse::Incomplete(len + 1)
    }
}

/// Parses a request head (RFC 9112 §2.1, §3, §5).
pub fn request(b: &[u8]) -> Parse<Request<'_>> {
    let mut hs = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut hs);
    let n = match req.parse(b) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return match partial(b.len()) {
                Parse::Incomplete(k) => Parse::Incomplete(k),
                _ => Parse::Invalid,
            }
        }
        Err(_) => return Parse::Invalid,
    };
    if n > MAX_HEAD {
        return Parse::Invalid;
    }
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Parse::Invalid;
    };
    let Some(lengths) = lengths(req.headers) else { return Parse::Invalid };
    Parse::Ok(
        Request {
            method: method.as_bytes(),
            target: target.as_bytes(),
            minor,
            host: field(req.headers, "host"),
            user_agent: field(req.headers, "user-agent"),
            upgrade: field(req.headers, "upgrade"),
            content_type: field(req.headers, "content-type"),
            lengths,
        },
        n,
    )
}

/// Parses a response head (RFC 9112 §2.1, §4, §5).
pub fn response(b: &[u8]) -> Parse<Response<'_>> {
    let mut hs = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut hs);
    let n = match resp.parse(b) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return match partial(b.len()) {
                Parse::Incomplete(k) => Parse::Incomplete(k),
                _ => Parse::Invalid,
            }
        }
        Err(_) => return Parse::Invalid,
    };
    if n > MAX_HEAD {
        return Parse::Invalid;
    }
    let (Some(minor), Some(status)) = (resp.version, resp.code) else { return Parse::Invalid };
    let Some(lengths) = lengths(resp.headers) else { return Parse::Invalid };
    Parse::Ok(Response { minor, status, upgrade: field(resp.headers, "upgrade"), lengths }, n)
}

/// Where an incremental head scan is in the grammar (see [`HeadScan`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum At {
    /// Empty lines before the start line (skipped, as `httparse` does).
    #[default]
    Lead,
    /// After a `\r` of an empty leading line.
    LeadCr,
    /// The method's first byte.
    Method0,
    /// Inside the method.
    Method,
    /// Inside the request target.
    Target,
    /// At this byte of `HTTP/1.x`.
    Version(u8),
    /// After a request line's version: CRLF or LF.
    VersionEnd,
    /// After the `\r` ending a start line.
    StartCr,
    /// After a status line's version: one space.
    Space,
    /// At this digit of the status code.
    Code(u8),
    /// After the status code: space, CRLF or LF.
    AfterCode,
    /// Inside the reason phrase.
    Reason,
    /// At the start of a field line (or of the empty line ending the head).
    LineStart,
    /// After the `\r` of the empty line ending the head.
    EndCr,
    /// Inside a field name.
    Name,
    /// Whitespace after the colon.
    Colon,
    /// Inside a field value.
    Value,
    /// After the `\r` ending a field line.
    ValueCr,
}

/// An incremental scan for the end of a request or response head, resumed at each call with
/// the same unconsumed bytes presented again with more appended (the stream engine's contract):
/// it follows `httparse`'s grammar and defaults byte by byte (empty lines before the start
/// line, token methods, a non-empty target of visible bytes that is UTF-8, `HTTP/1.0` or
/// `HTTP/1.1`, CRLF or LF line ends, token field names, field values without control bytes but
/// HTAB, no obsolete line folding, at most [`MAX_HEADERS`] fields), so a head is rejected at the
/// byte where `httparse` would reject it, and `httparse` runs once, on the complete head. Each
/// byte is examined once however the head was segmented ([`HeadScan::examined`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeadScan {
    /// Bytes of the head already scanned.
    pos: u32,
    /// Where the request target starts.
    target: u32,
    /// Field lines completed.
    fields: u8,
    at: At,
    /// Bytes examined so far (scan and head parses), never reset.
    examined: u64,
}

/// `tchar` (RFC 9110 §5.6.2), as `httparse`'s token map.
fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

/// A request-target byte as `httparse` accepts it (visible ASCII or obs-text).
fn is_target_byte(c: u8) -> bool {
    (0x21..=0x7e).contains(&c) || c >= 0x80
}

/// A field value byte as `httparse` accepts it (HTAB, SP, visible ASCII, obs-text).
fn is_value_byte(c: u8) -> bool {
    c == b'\t' || (0x20..=0x7e).contains(&c) || c >= 0x80
}

/// Outcome of one scan step.
enum Scanned {
    /// The head ends just before this index.
    End(usize),
    /// Not a head `httparse` would accept.
    Bad,
}

impl HeadScan {
    /// Forgets the head scanned so far (consumed, or another item begins); keeps the count.
    pub fn reset(&mut self) {
        *self = HeadScan { examined: self.examined, ..HeadScan::default() };
    }

    /// Bytes examined so far (scanning and parsing heads), for tests and benchmarks.
    pub fn examined(&self) -> u64 {
        self.examined
    }

    fn count(&mut self, n: usize) {
        self.examined = self.examined.saturating_add(n as u64);
    }

    /// Scans `b[pos..end]`, `response` selecting the start line's grammar.
    fn scan(&mut self, b: &[u8], end: usize, response: bool) -> Option<Scanned> {
        let start = self.pos as usize;
        let bytes = b.get(start..end).unwrap_or_default();
        self.count(bytes.len());
        for (k, &c) in bytes.iter().enumerate() {
            let i = start + k;
            let mut at = self.at;
            if at == At::Lead {
                match c {
                    b'\r' => {
                        self.at = At::LeadCr;
                        continue;
                    }
                    b'\n' => continue,
                    _ => at = if response { At::Version(0) } else { At::Method0 },
                }
            }
            self.at = match at {
                At::Lead => at,
                At::LeadCr if c == b'\n' => At::Lead,
                At::Method0 if is_tchar(c) => At::Method,
                At::Method if c == b' ' => {
                    self.target = u32::try_from(i + 1).unwrap_or(u32::MAX);
                    At::Target
                }
                At::Method if is_tchar(c) => At::Method,
                At::Target if is_target_byte(c) => At::Target,
                At::Target if c == b' ' => {
                    let target = b.get(self.target as usize..i).unwrap_or_default();
                    self.count(target.len());
                    if target.is_empty() || std::str::from_utf8(target).is_err() {
                        return Some(Scanned::Bad);
                    }
                    At::Version(0)
                }
                At::Version(v) if v < 7 && b"HTTP/1.".get(usize::from(v)) == Some(&c) => At::Version(v + 1),
                At::Version(7) if c == b'0' || c == b'1' => {
                    if response {
                        At::Space
                    } else {
                        At::VersionEnd
                    }
                }
                At::VersionEnd if c == b'\r' => At::StartCr,
                At::VersionEnd | At::StartCr if c == b'\n' => At::LineStart,
                At::Space if c == b' ' => At::Code(0),
                At::Code(d) if c.is_ascii_digit() => {
                    if d == 2 {
                        At::AfterCode
                    } else {
                        At::Code(d + 1)
                    }
                }
                At::AfterCode if c == b' ' => At::Reason,
                At::AfterCode | At::Reason if c == b'\r' => At::StartCr,
                At::AfterCode | At::Reason if c == b'\n' => At::LineStart,
                At::Reason if c == b'\t' || c == b' ' || (0x21..=0x7e).contains(&c) || c >= 0x80 => At::Reason,
                At::LineStart if c == b'\r' => At::EndCr,
                At::LineStart | At::EndCr if c == b'\n' => {
                    self.pos = u32::try_from(i + 1).unwrap_or(u32::MAX);
                    return Some(Scanned::End(i + 1));
                }
                At::LineStart if is_tchar(c) => At::Name,
                At::Name if is_tchar(c) => At::Name,
                At::Name if c == b':' => At::Colon,
                At::Colon if c == b' ' || c == b'\t' => At::Colon,
                At::Colon | At::Value if is_value_byte(c) => At::Value,
                At::Colon | At::Value if c == b'\r' => At::ValueCr,
                At::Colon | At::Value | At::ValueCr if c == b'\n' => {
                    self.fields = self.fields.saturating_add(1);
                    if usize::from(self.fields) > MAX_HEADERS {
                        return Some(Scanned::Bad);
                    }
                    At::LineStart
                }
                _ => return Some(Scanned::Bad),
            };
        }
        self.pos = u32::try_from(end).unwrap_or(u32::MAX);
        None
    }

    /// Where the head that starts `b` ends: `Ok(n, n)` once it is complete (`n` bytes),
    /// `Incomplete(b.len() + 1)` while it may still be one, `Invalid` when it is not a head or
    /// exceeds [`MAX_HEAD`]. `b` must start where it started at the previous call (after
    /// [`HeadScan::reset`], anywhere).
    pub fn end(&mut self, b: &[u8], response: bool) -> Parse<usize> {
        if self.pos as usize > b.len() {
            self.reset();
        }
        match self.scan(b, b.len().min(MAX_HEAD), response) {
            Some(Scanned::End(n)) => Parse::Ok(n, n),
            Some(Scanned::Bad) => Parse::Invalid,
            None if b.len() >= MAX_HEAD => Parse::Invalid,
            None => Parse::Incomplete(b.len() + 1),
        }
    }

    /// [`request`] on a head presented again with more bytes: the first attempt parses `b`
    /// directly (a head that arrived whole costs one pass); while incomplete, only the new
    /// bytes are scanned, and `httparse` runs again once the head is complete.
    pub fn request<'a>(&mut self, b: &'a [u8]) -> Parse<Request<'a>> {
        self.resumed(b, false, request)
    }

    /// [`response`] the same way as [`HeadScan::request`].
    pub fn response<'a>(&mut self, b: &'a [u8]) -> Parse<Response<'a>> {
        self.resumed(b, true, response)
    }

    fn resumed<'a, T>(&mut self, b: &'a [u8], resp: bool, parse: fn(&'a [u8]) -> Parse<T>) -> Parse<T> {
        if self.pos == 0 && self.at == At::Lead {
            let r = parse(b);
            self.count(match r {
                Parse::Ok(_, n) => n,
                _ => b.len(),
            });
            if !matches!(r, Parse::Incomplete(_)) {
                return r;
            }
        }
        match self.end(b, resp) {
            Parse::Ok(n, _) => {
                self.count(n);
                parse(b)
            }
            Parse::Incomplete(k) => Parse::Incomplete(k),
            Parse::Invalid => Parse::Invalid,
        }
    }
}

/// Body framing of a request (RFC 9112 §6.3 items 3, 5, 6, 7): chunked, else `Content-Length`,
/// else none. `None` for a transfer coding other than chunked last (the server must answer 400).
pub fn request_framing(l: &Lengths) -> Option<Framing> {
    if l.transfer_encoding {
        return l.chunked.then_some(Framing::Chunked);
    }
    Some(match l.content_length {
        Some(0) | None => Framing::None,
        Some(n) => Framing::Length(n),
    })
}

/// What the response answers (affects its framing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReqKind {
    /// Any method whose response framing follows the header fields.
    #[default]
    Other,
    /// HEAD: the response has no body.
    Head,
    /// CONNECT: a 2xx response turns the connection into a tunnel.
    Connect,
}

/// Body framing of a final or interim response (RFC 9112 §6.3 items 1-7).
pub fn response_framing(status: u16, kind: ReqKind, l: &Lengths) -> Framing {
    if kind == ReqKind::Head || (100..200).contains(&status) || status == 204 || status == 304 {
        return Framing::None;
    }
    if kind == ReqKind::Connect && (200..300).contains(&status) {
        return Framing::UntilClose;
    }
    if l.transfer_encoding {
        return if l.chunked { Framing::Chunked } else { Framing::UntilClose };
    }
    match l.content_length {
        Some(0) => Framing::None,
        Some(n) => Framing::Length(n),
        None => Framing::UntilClose,
    }
}

/// Finds the end of a line (index just after `\n`) within `max` bytes, examining only the bytes
/// `from` has not examined yet (see [`Resume`]).
fn line_end(b: &[u8], max: usize, from: &mut Resume) -> Parse<usize> {
    match from.find(b, max, b'\n') {
        Some(i) => Parse::Ok(i + 1, i + 1),
        None if b.len() >= max => Parse::Invalid,
        None => Parse::Incomplete(b.len() + 1),
    }
}

/// Parses a chunk-size line `chunk-size [ chunk-ext ] CRLF` (RFC 9112 §7.1, §7.1.1); returns
/// the size, capped at [`MAX_CHUNK`]. A bare LF is accepted as line end. `from` remembers how
/// far an incomplete line was searched (the same line presented again with more bytes is not
/// searched from its start again).
pub fn chunk_size(b: &[u8], from: &mut Resume) -> Parse<u64> {
    let n = match line_end(b, MAX_LINE, from) {
        Parse::Ok(n, _) => n,
        Parse::Incomplete(k) => {
            // Reject early when what is there cannot start a chunk-size line.
            return match b.first() {
                Some(c) if !c.is_ascii_hexdigit() => Parse::Invalid,
                _ => Parse::Incomplete(k),
            };
        }
        Parse::Invalid => return Parse::Invalid,
    };
    let line = &b[..n];
    let digits = line.iter().take_while(|c| c.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Parse::Invalid;
    }
    let mut size = 0u64;
    for &c in &line[..digits] {
        let v = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => 0,
        };
        size = size * 16 + u64::from(v);
        if size > MAX_CHUNK {
            return Parse::Invalid;
        }
    }
    match &line[digits..] {
        [b'\r', b'\n'] | [b'\n'] => {}
        [b';' | b' ' | b'\t', .., b'\n'] => {}
        _ => return Parse::Invalid,
    }
    Parse::Ok(size, n)
}

/// Parses the CRLF after chunk data (bare LF accepted).
pub fn crlf(b: &[u8]) -> Parse<()> {
    match b {
        [] | [b'\r'] => Parse::Incomplete(2),
        [b'\r', b'\n', ..] => Parse::Ok((), 2),
        [b'\n', ..] => Parse::Ok((), 1),
        _ => Parse::Invalid,
    }
}

/// Parses one line of the trailer section (RFC 9112 §7.1.2); `true` for the empty line that
/// ends it. `from` as for [`chunk_size`].
pub fn trailer_line(b: &[u8], from: &mut Resume) -> Parse<bool> {
    match line_end(b, MAX_LINE, from) {
        Parse::Ok(n, _) => Parse::Ok(matches!(b.get(..n), Some(b"\r\n" | b"\n")), n),
        Parse::Incomplete(k) => Parse::Incomplete(k),
        Parse::Invalid => Parse::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_request_lines() {
        assert_eq!(sniff_request(b"GET / HTTP/1.1\r\n"), Sniff::Yes);
        assert_eq!(sniff_request(b"OPTIONS * HTTP/1.0\r\n"), Sniff::Yes);
        assert_eq!(sniff_request(b"CONNECT example.com:443 HTTP/1.1\r\n"), Sniff::Yes);
        assert_eq!(sniff_request(b"GET http://x/ HTTP/1.1\r\n"), Sniff::Yes);
        assert_eq!(sniff_request(b"GE"), Sniff::Maybe);
        assert_eq!(sniff_request(b"GET /a"), Sniff::Maybe);
        assert_eq!(sniff_request(b"GET /a HTTP/"), Sniff::Maybe);
        assert_eq!(sniff_request(b"GET key\r\n"), Sniff::No);
        assert_eq!(sniff_request(b"GET /a HTTP/2.0\r\n"), Sniff::No);
        assert_eq!(sniff_request(b"PRI * HTTP/2.0\r\n"), Sniff::No);
        assert_eq!(sniff_request(b"HELLO\r\n"), Sniff::No);
        assert_eq!(sniff_request(b"get / HTTP/1.1\r\n"), Sniff::No);
    }

    #[test]
    fn sniffs_status_lines() {
        assert_eq!(sniff_response(b"HTTP/1.1 200 OK\r\n"), Sniff::Yes);
        assert_eq!(sniff_response(b"HTTP/1.0 404\r\n"), Sniff::Yes);
        assert_eq!(sniff_response(b"HTTP/1.1 20"), Sniff::Maybe);
        assert_eq!(sniff_response(b"HTTP/1.1 2x0 OK"), Sniff::No);
        assert_eq!(sniff_response(b"HTTP/2 200"), Sniff::No);
        assert_eq!(sniff_response(b"+OK\r\n"), Sniff::No);
    }

    #[test]
    fn lengths_and_codings() {
        assert_eq!(content_length(b" 42 "), Some(42));
        assert_eq!(content_length(b"42, 42"), Some(42));
        assert_eq!(content_length(b"42, 43"), None);
        assert_eq!(content_length(b"-1"), None);
        assert_eq!(content_length(b"99999999999999999999"), None);
        assert!(final_coding_is_chunked(b"gzip, Chunked"));
        assert!(!final_coding_is_chunked(b"chunked, gzip"));
    }

    #[test]
    fn chunk_lines() {
        assert_eq!(chunk_size(b"1f\r\n", &mut Resume::default()), Parse::Ok(31, 4));
        assert_eq!(chunk_size(b"0;ext=1\r\n", &mut Resume::default()), Parse::Ok(0, 9));
        assert_eq!(chunk_size(b"1f", &mut Resume::default()), Parse::Incomplete(3));
        assert_eq!(chunk_size(b"zz\r\n", &mut Resume::default()), Parse::Invalid);
        assert_eq!(chunk_size(b"fffffffffffffffffffff\r\n", &mut Resume::default()), Parse::Invalid);
        assert_eq!(crlf(b"\r\nx"), Parse::Ok((), 2));
        assert_eq!(crlf(b"x"), Parse::Invalid);
        assert_eq!(trailer_line(b"\r\n", &mut Resume::default()), Parse::Ok(true, 2));
        assert_eq!(trailer_line(b"X-T: 1\r\n\r\n", &mut Resume::default()), Parse::Ok(false, 8));
    }
}
