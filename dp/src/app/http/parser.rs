//! Pure HTTP/1.x parsing functions (no state, no allocation), after RFC 9112.
//!
//! - Request lines and request field sections (RFC 9112 §2.2, §3, §5) are read as nginx,
//!   Apache and python's `http.server` read them ([`LineScan`], [`HeadScan`], [`request`]):
//!   leading empty lines, HTTP/0.9 simple requests, whitespace runs, any token method, obs-fold;
//!   what only some of them accept is flagged, not refused.
//! - Status lines and response header sections (RFC 9112 §4, §5) are parsed by the `httparse`
//!   crate (zero-copy, works on partial input, no allocation: the header array lives on the
//!   stack).
//! - Prefix-safe probes for a first message ([`sniff_request`], [`sniff_response`]).
//! - Message body length (RFC 9112 §6.3): `Transfer-Encoding` whose final coding is `chunked`
//!   wins over `Content-Length`; a request without either has no body; a response to HEAD, a 1xx,
//!   204 or 304 has no body; a response with neither is read until the connection closes;
//!   [`request_framing`] says when servers can disagree on a request's body.
//! - Chunked transfer coding (RFC 9112 §7.1): chunk-size lines, chunk data + CRLF, last chunk
//!   and trailer section, each line bounded.
//!
//! Every length read from the wire is capped ([`MAX_HEAD`], [`MAX_BODY`], [`MAX_CHUNK`],
//! [`MAX_LINE`]) before use.

pub use crate::app::Parse;
use crate::detect::ThreatId;
use crate::rescan::Resume;

/// Largest request or response head (start line + header section, bytes) the parser waits for.
pub const MAX_HEAD: usize = 16 * 1024;
/// Largest number of header fields in one response head (stack array given to `httparse`;
/// request heads are bounded by [`MAX_HEAD`] only).
pub const MAX_HEADERS: usize = 96;
/// Largest accepted `Content-Length` (bytes, 2^53).
pub const MAX_BODY: u64 = 1 << 53;
/// Largest accepted chunk size (bytes, 2^40).
pub const MAX_CHUNK: u64 = 1 << 40;
/// Longest chunk-size line or trailer field line (bytes, including extensions and CRLF).
pub const MAX_LINE: usize = 4096;

/// Leading bytes (CR, LF, whitespace) the probe skips before a request line. RFC 9112 §2.2
/// asks servers to ignore at least one empty line there (old clients add a CRLF after a POST
/// body); Apache skips at most 10 empty lines (`DEFAULT_LIMIT_BLANK_LINES`), nginx any number
/// of CR and LF bytes. 1024 bytes is 50 times Apache's bound, beyond any client's habit, and
/// small against the engine's detection window (`detect_bytes`, 8192 by default), so the
/// request line after it is still seen there. After detection more are still skipped (nginx
/// does), consumed as they come, and recorded as a violation.
pub const MAX_LEAD: usize = 1024;
/// Longest method token the probe waits for (bytes). Methods are any token (RFC 9110 §9.1:
/// nginx proxies unknown upper-case methods, Apache's default `LenientMethods` hands any token
/// to its handlers); after detection a longer one is still a method.
pub const MAX_METHOD: usize = 24;

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

/// Probes a request line as [`LineScan`] reads it, with stricter rules for a first message:
/// at most [`MAX_LEAD`] leading bytes and a method of at most [`MAX_METHOD`] bytes; a line with
/// a version (`HTTP/` major `.` minor, major 0 or 1) matches at the version's first minor digit
/// whatever its method token; a line without one (HTTP/0.9) only as `GET SP /target` and a line
/// end, with a single SP and a target starting with `/`; a control byte in the target is no
/// first request (random bytes would stay a prefix of one for long), so that line protocols that start with other words (`GET key` in Redis inline, `EHLO`, `HELLO`) stay out.
pub fn sniff_request(b: &[u8]) -> Sniff {
    let mut l = LineScan::default();
    let b_head = &b[..b.len().min(MAX_HEAD)];
    let mut i = 0;
    while let Some(&c) = b_head.get(i) {
        // Fast path (as `HeadScan`'s): the bytes of a target that are no separator, CR, LF or
        // control byte change nothing but the target's end.
        if l.at == Rl::Target && !l.cr {
            let run = b_head[i..].iter().position(|&c| c <= 0x20 || c == 0x7f).unwrap_or(b_head.len() - i);
            if run > 0 {
                i += run;
                l.target[1] = at32(i);
                continue;
            }
        }
        let at = i;
        i += 1;
        match l.step(at, c) {
            Ln::Bad => return Sniff::No,
            Ln::End => {
                let first = b.get(l.target[0] as usize).copied();
                return if l.simple && !l.odd && !l.ctl && first == Some(b'/') { Sniff::Yes } else { Sniff::No };
            }
            Ln::More => {}
        }
        if l.ctl {
            return Sniff::No;
        }
        match l.at {
            Rl::Lead if l.lead as usize > MAX_LEAD => return Sniff::No,
            Rl::Method if l.method_len() > MAX_METHOD => return Sniff::No,
            Rl::Minor(1) if !l.ctl => return Sniff::Yes,
            _ => {}
        }
    }
    if b.len() >= MAX_HEAD {
        Sniff::No
    } else {
        Sniff::Maybe
    }
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

/// Whitespace that separates request-line parts besides SP: HTAB, VT, FF (RFC 9112 §3 lets a
/// recipient split on them, and on a bare CR, handled apart) and the ASCII separators
/// 0x1c-0x1f, which python's `http.server` splits on too (`str.split`). nginx accepts only SP
/// (several), Apache's default `Strict` only one SP.
pub fn is_ws(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | 0x0b | 0x0c | 0x1c..=0x1f)
}

/// Where a [`LineScan`] is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Rl {
    /// Empty lines and whitespace before the method.
    #[default]
    Lead,
    /// Inside the method.
    Method,
    /// Whitespace after the method.
    Sep1,
    /// Inside the request target.
    Target,
    /// Whitespace after the target.
    Sep2,
    /// This many bytes of `HTTP/` matched.
    Proto(u8),
    /// This many digits of the major version read.
    Major(u8),
    /// This many digits of the minor version read (0: just after the dot).
    Minor(u8),
    /// Whitespace after the version.
    Trail,
    /// The line ended.
    Done,
}

/// One step of a [`LineScan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ln {
    /// Go on.
    More,
    /// The line ended at this byte.
    End,
    /// No server acts on this line.
    Bad,
}

/// An incremental scan of a request line (RFC 9112 §3) as nginx, Apache and python's
/// `http.server` accept it, byte by byte:
///
/// - leading CR, LF and whitespace (nginx skips any number of CR and LF bytes, python any
///   whitespace on the line, RFC 9112 §2.2 asks for at least one empty line);
/// - a method of token characters, any token (upper-case `[A-Z_-]` for nginx, any for Apache,
///   any word for python), then one or more separators ([`is_ws`], or a bare CR);
/// - a request target of any bytes but separators, CR and LF (origin-, absolute-, authority- and
///   asterisk-form, `.`, shell metacharacters; control bytes only python accepts: recorded as
///   odd);
/// - either the line end (HTTP/0.9 simple request: `GET` only, as all three servers require),
///   or separators, `HTTP/` 1-10 digits `.` 1-10 digits with a major version of 0 or 1
///   (python accepts leading zeros and `HTTP/0.9`, nginx `HTTP/1.` up to three digits), then
///   optional whitespace and the line end;
/// - a line ends with CRLF or a bare LF.
///
/// Anything but single SPs, a version other than `HTTP/1.` DIGIT, leading whitespace or a
/// control byte in the target makes the line odd (`l7.violation`); servers disagree on it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LineScan {
    at: Rl,
    /// A CR was seen: a line end if LF follows, else a separator.
    cr: bool,
    /// Where that CR was.
    cr_at: u32,
    /// Leading bytes skipped.
    lead: u32,
    /// Method start and end.
    method: [u32; 2],
    /// Target start and end.
    target: [u32; 2],
    /// Bytes of `GET` the method matched so far (`u8::MAX`: it is another method).
    get: u8,
    /// Major and minor version (saturating).
    major: u16,
    minor: u16,
    /// Digits of the major version.
    major_digits: u8,
    /// HTTP/0.9 simple request (no version).
    simple: bool,
    /// Something only some servers accept (see the type's docs).
    odd: bool,
    /// A control byte in the target.
    ctl: bool,
    /// Where the line ends (just after its LF).
    end: u32,
}

/// `usize` offset to `u32` (offsets are bounded by [`MAX_HEAD`]).
fn at32(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(u32::MAX)
}

impl LineScan {
    fn method_len(&self) -> usize {
        self.method[1].saturating_sub(self.method[0]) as usize
    }

    /// Takes byte `c` at index `i` of the line (from where the scan started).
    fn step(&mut self, i: usize, c: u8) -> Ln {
        if self.cr {
            self.cr = false;
            if c == b'\n' {
                return self.finish(i);
            }
            // A bare CR separates parts (RFC 9112 §3; python splits on it).
            self.odd = true;
            let at = self.cr_at;
            self.at = match self.at {
                Rl::Method => {
                    self.method[1] = at;
                    Rl::Sep1
                }
                Rl::Target => {
                    self.target[1] = at;
                    Rl::Sep2
                }
                Rl::Minor(n) if n > 0 => Rl::Trail,
                s @ (Rl::Sep1 | Rl::Sep2 | Rl::Trail) => s,
                _ => return Ln::Bad,
            };
        }
        let i32 = at32(i);
        match self.at {
            Rl::Lead => {
                if c == b'\r' || c == b'\n' {
                    self.lead = self.lead.saturating_add(1);
                } else if is_ws(c) {
                    self.lead = self.lead.saturating_add(1);
                    self.odd = true;
                } else if is_tchar(c) {
                    self.method = [i32, i32.saturating_add(1)];
                    self.get = if c == b'G' { 1 } else { u8::MAX };
                    self.at = Rl::Method;
                } else {
                    return Ln::Bad;
                }
                return Ln::More;
            }
            Rl::Done => return Ln::Bad,
            _ => {}
        }
        if c == b'\r' {
            return match self.at {
                Rl::Method | Rl::Sep1 | Rl::Target | Rl::Sep2 | Rl::Trail | Rl::Minor(1..) => {
                    self.cr = true;
                    self.cr_at = i32;
                    Ln::More
                }
                _ => Ln::Bad,
            };
        }
        if c == b'\n' {
            return self.finish(i);
        }
        self.at = match self.at {
            Rl::Method if is_tchar(c) => {
                self.method[1] = i32.saturating_add(1);
                self.get = match self.get {
                    n @ (1 | 2) if b"GET".get(usize::from(n)) == Some(&c) => n + 1,
                    _ => u8::MAX,
                };
                Rl::Method
            }
            Rl::Method if is_ws(c) => {
                self.odd |= c != b' ';
                Rl::Sep1
            }
            Rl::Sep1 | Rl::Sep2 | Rl::Trail if is_ws(c) => {
                self.odd = true;
                self.at
            }
            Rl::Sep1 => {
                self.target = [i32, i32.saturating_add(1)];
                self.ctl |= c < 0x20 || c == 0x7f;
                Rl::Target
            }
            Rl::Target if is_ws(c) => {
                self.odd |= c != b' ';
                Rl::Sep2
            }
            Rl::Target => {
                self.target[1] = i32.saturating_add(1);
                self.ctl |= c < 0x20 || c == 0x7f;
                Rl::Target
            }
            Rl::Sep2 if c == b'H' => Rl::Proto(1),
            Rl::Proto(k) if k < 5 && b"HTTP/".get(usize::from(k)) == Some(&c) => Rl::Proto(k + 1),
            Rl::Proto(5) | Rl::Major(1..=9) if c.is_ascii_digit() => {
                self.major = self.major.saturating_mul(10).saturating_add(u16::from(c - b'0'));
                match self.at {
                    Rl::Major(n) => Rl::Major(n + 1),
                    _ => Rl::Major(1),
                }
            }
            // Major versions above 1 are refused by all (505).
            Rl::Major(n) if c == b'.' && self.major <= 1 => {
                self.major_digits = n;
                Rl::Minor(0)
            }
            Rl::Minor(n) if n < 10 && c.is_ascii_digit() => {
                self.minor = self.minor.saturating_mul(10).saturating_add(u16::from(c - b'0'));
                Rl::Minor(n + 1)
            }
            Rl::Minor(1..) if is_ws(c) => {
                self.odd = true;
                Rl::Trail
            }
            _ => return Ln::Bad,
        };
        Ln::More
    }

    /// The line ended with the LF at `i`.
    fn finish(&mut self, i: usize) -> Ln {
        match self.at {
            Rl::Target | Rl::Sep2 => {
                // HTTP/0.9: nginx, Apache and python take only GET.
                if self.get != 3 {
                    return Ln::Bad;
                }
                self.odd |= self.at == Rl::Sep2;
                self.simple = true;
            }
            Rl::Minor(n) => {
                if n == 0 {
                    return Ln::Bad;
                }
                self.odd |= !(self.major == 1 && self.major_digits == 1 && n == 1);
            }
            Rl::Trail => self.odd |= !(self.major == 1 && self.major_digits == 1),
            _ => return Ln::Bad,
        }
        self.at = Rl::Done;
        self.end = at32(i.saturating_add(1));
        Ln::End
    }
}

/// Whether `line` (ending with its LF) is a whole request line [`LineScan`] accepts.
pub fn is_request_line(line: &[u8]) -> bool {
    let mut l = LineScan::default();
    for (i, &c) in line.iter().enumerate() {
        match l.step(i, c) {
            Ln::More => {}
            Ln::End => return i + 1 == line.len(),
            Ln::Bad => return false,
        }
    }
    false
}

/// The target of a request line that ends `line` whatever precedes it: the word before a final
/// `HTTP/` version word, or the word after a word ending in `GET` when the line ends there
/// (HTTP/0.9). A server that frames a body differently from Warden may find its next request
/// at any offset, also inside a line: the end of that line is its request line.
pub fn embedded_target(line: &[u8]) -> Option<&[u8]> {
    let sep = |c: &u8| is_ws(*c) || *c == b'\r' || *c == b'\n';
    let mut words = line.split(sep).filter(|w| !w.is_empty()).rev();
    let last = words.next()?;
    let before = words.next()?;
    if is_version_word(last) {
        Some(before)
    } else if before.ends_with(b"GET") {
        Some(last)
    } else {
        None
    }
}

/// `HTTP/` digits `.` digits with a major version of 0 or 1 (as [`LineScan`] reads it).
fn is_version_word(w: &[u8]) -> bool {
    let Some(v) = w.strip_prefix(b"HTTP/") else { return false };
    let Some(dot) = v.iter().position(|&c| c == b'.') else { return false };
    let (major, minor) = (&v[..dot], &v[dot + 1..]);
    let digits = |d: &[u8]| (1..=10).contains(&d.len()) && d.iter().all(u8::is_ascii_digit);
    digits(major) && digits(minor) && major.iter().rev().skip(1).all(|&c| c == b'0') && major.last() <= Some(&b'1')
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

/// The length-related header fields of a head, collected as servers could read them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lengths {
    /// The first valid `Content-Length` value (python's `email.message` reads the first field).
    pub content_length: Option<u64>,
    /// The largest valid `Content-Length` value (0 without one).
    pub content_length_max: u64,
    /// `Content-Length` values seen (fields and list members, saturating).
    pub content_lengths: u16,
    /// `Content-Length` values differ or one is not a number, or a length field was folded or
    /// had whitespace before its colon, or `Transfer-Encoding` came in an HTTP/1.0 request:
    /// servers can disagree on the body's length.
    pub conflict: bool,
    /// A `Transfer-Encoding` field is present.
    pub transfer_encoding: bool,
    /// The final coding of its list (all its fields, in order) is `chunked`.
    pub chunked: bool,
    /// Non-empty `Transfer-Encoding` fields (saturating).
    pub te_fields: u8,
    /// `chunked` codings in all of them (saturating): more than one is applying chunked twice,
    /// which RFC 9112 §6.1 forbids.
    pub chunked_codings: u8,
}

/// The threat form of a `Content-Length` member, or its value (RFC 9110 §8.6: 1*DIGIT).
/// Signs and values past [`MAX_BODY`] are read differently by servers (C `atoi`/`strtol`
/// take the sign, 32- and 64-bit parsers wrap, JavaScript loses integers past 2^53):
/// `http_negative_body_length`; other non-numbers are framing servers disagree on:
/// `http_request_smuggling`.
fn length_member(part: &[u8]) -> Result<u64, (ThreatId, &'static str)> {
    use ThreatId::{HttpNegativeBodyLength as Neg, HttpRequestSmuggling as Smuggling};
    match part.first() {
        None => Err((Smuggling, "invalid_content_length")),
        Some(b'-') if part.len() > 1 && part[1..].iter().all(u8::is_ascii_digit) => Err((Neg, "negative_content_length")),
        Some(b'-' | b'+') => Err((Neg, "signed_content_length")),
        Some(_) if part.iter().all(u8::is_ascii_digit) => {
            let n = part.iter().try_fold(0u64, |a, &d| a.checked_mul(10)?.checked_add(u64::from(d - b'0')));
            match n {
                None => Err((Neg, "overflowing_content_length")),
                Some(n) if n > MAX_BODY => Err((Neg, "implausible_content_length")),
                Some(n) => Ok(n),
            }
        }
        Some(_) => Err((Smuggling, "invalid_content_length")),
    }
}

/// Whether `name` is a framing field name (`Content-Length`, `Transfer-Encoding`) with `_` in
/// place of `-` (CGI, WSGI and some proxies map both to the same variable).
fn underscore_framing_name(name: &[u8]) -> bool {
    let same = |n: &[u8], want: &[u8]| {
        n.len() == want.len() && n.iter().zip(want).all(|(&a, &b)| a.eq_ignore_ascii_case(&b) || (a == b'_' && b == b'-'))
    };
    name.contains(&b'_') && (same(name, b"content-length") || same(name, b"transfer-encoding"))
}

/// Whether `name` (not a token) is a framing field name once the bytes that are no token
/// characters around it are dropped (`Transfer-Encoding\x0b`, `\x00Content-Length`).
fn mangled_framing_name(name: &[u8]) -> bool {
    let start = name.iter().position(|&c| is_tchar(c)).unwrap_or(name.len());
    let end = name.iter().rposition(|&c| is_tchar(c)).map_or(start, |e| e + 1);
    let core = name.get(start..end).unwrap_or_default();
    core.len() != name.len() && (core.eq_ignore_ascii_case(b"content-length") || core.eq_ignore_ascii_case(b"transfer-encoding"))
}

impl Lengths {
    /// Adds a `Content-Length` value (1*DIGIT, or a comma-separated list of them, RFC 9110
    /// §8.6), each capped at [`MAX_BODY`]; a bad member marks a conflict. Returns the first
    /// threat form in it ([`length_member`], or values that differ: in this list, or from an
    /// earlier field).
    pub fn add_content_length(&mut self, v: &[u8]) -> Option<(ThreatId, &'static str)> {
        let mut found = None;
        let mut here = false;
        for part in v.split(|&c| c == b',') {
            let part = trim(part);
            self.content_lengths = self.content_lengths.saturating_add(1);
            match length_member(part) {
                Err(f) => {
                    self.conflict = true;
                    found = found.or(Some(f));
                }
                Ok(n) => {
                    if self.content_length.is_some_and(|o| o != n) {
                        self.conflict = true;
                        let why = if here { "content_length_list_conflict" } else { "content_length_conflict" };
                        found = found.or(Some((ThreatId::HttpRequestSmuggling, why)));
                    }
                    here = true;
                    self.content_length.get_or_insert(n);
                    self.content_length_max = self.content_length_max.max(n);
                }
            }
        }
        found
    }

    /// Adds a `Transfer-Encoding` value: the last non-empty coding of all of them decides
    /// whether the final coding is `chunked` (RFC 9112 §6.1). Returns the smuggling form in it:
    /// a second non-empty field, `chunked` applied twice, or a coding that is `chunked` with
    /// something around it (`xchunked`, `chunked\x0b`, `"chunked"`, `chunked;a=b`).
    pub fn add_transfer_encoding(&mut self, v: &[u8]) -> Option<&'static str> {
        self.transfer_encoding = true;
        let mut found = None;
        if !trim(v).is_empty() {
            self.te_fields = self.te_fields.saturating_add(1);
            if self.te_fields > 1 {
                found = Some("transfer_encoding_repeated");
            }
        }
        for c in v.split(|&c| c == b',').map(trim).filter(|c| !c.is_empty()) {
            if c.eq_ignore_ascii_case(b"chunked") {
                self.chunked_codings = self.chunked_codings.saturating_add(1);
                if self.chunked_codings > 1 {
                    found = found.or(Some("chunked_repeated"));
                }
            } else if c.len() > 7 && c.windows(7).any(|w| w.eq_ignore_ascii_case(b"chunked")) {
                found = found.or(Some("transfer_encoding_obfuscated"));
            }
        }
        if let Some(c) = v.split(|&c| c == b',').map(trim).rfind(|c| !c.is_empty()) {
            self.chunked = c.eq_ignore_ascii_case(b"chunked");
        }
        found
    }
}

/// A threat form found while reading a request (head or chunked framing): the kind, the form
/// (`Threat::reason`) and the offending bytes (a field line, a chunk-size line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found<'a> {
    /// The kind.
    pub id: ThreatId,
    /// The form, snake_case.
    pub reason: &'static str,
    /// The offending bytes.
    pub evidence: &'a [u8],
}

/// The first threat form of each kind a request head has ([`ThreatId::HttpNegativeBodyLength`],
/// [`ThreatId::HttpRequestSmuggling`], [`ThreatId::ApacheStrutsRce`], in that order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HeadThreats<'a>(pub [Option<Found<'a>>; 3]);

impl<'a> HeadThreats<'a> {
    /// Keeps `evidence` as the form of `id` unless one was kept already.
    fn note(&mut self, id: ThreatId, reason: &'static str, evidence: &'a [u8]) {
        let slot = match id {
            ThreatId::HttpNegativeBodyLength => 0,
            ThreatId::HttpRequestSmuggling => 1,
            _ => 2,
        };
        self.0[slot].get_or_insert(Found { id, reason, evidence });
    }

    /// The forms found, in kind order.
    pub fn iter(&self) -> impl Iterator<Item = &Found<'a>> {
        self.0.iter().flatten()
    }
}

/// A parsed request head; every slice borrows from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// Method token.
    pub method: &'a [u8],
    /// Request target (RFC 9112 §3.2), as sent.
    pub target: &'a [u8],
    /// Major version (0 for an HTTP/0.9 simple request).
    pub major: u8,
    /// Minor version (9 for an HTTP/0.9 simple request; saturating).
    pub minor: u16,
    /// An HTTP/0.9 simple request: a request line without version, no header section, and an
    /// answer without status line or header section.
    pub simple: bool,
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
    /// Threat forms in the head (framing, OGNL in field values).
    pub threats: HeadThreats<'a>,
    /// Something in the head that only some servers accept (see [`LineScan`] and
    /// [`HeadScan`]): obs-fold, a field line without colon or with whitespace before it, a
    /// field name that is no token, a control byte, more than one `Content-Length`.
    pub violation: bool,
}

/// Whether a `Content-Type` value is `application/x-www-form-urlencoded` (any parameters).
pub fn is_form(content_type: &[u8]) -> bool {
    let t = content_type.split(|&c| c == b';').next().map(trim).unwrap_or_default();
    t.eq_ignore_ascii_case(b"application/x-www-form-urlencoded")
}

/// Whether a `Content-Type` value is `multipart/form-data` (any parameters).
pub fn is_multipart(content_type: &[u8]) -> bool {
    let t = content_type.split(|&c| c == b';').next().map(trim).unwrap_or_default();
    t.eq_ignore_ascii_case(b"multipart/form-data")
}

/// Whether a `Content-Type` value is XML: `application/xml`, `text/xml` or a `+xml` suffix
/// (RFC 7303), any parameters.
pub fn is_xml(content_type: &[u8]) -> bool {
    let t = content_type.split(|&c| c == b';').next().map(trim).unwrap_or_default();
    let suffix = t.len() >= 4 && t[t.len() - 4..].eq_ignore_ascii_case(b"+xml");
    suffix || t.eq_ignore_ascii_case(b"application/xml") || t.eq_ignore_ascii_case(b"text/xml")
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
    let mut l = Lengths::default();
    l.add_content_length(v);
    if l.conflict {
        None
    } else {
        l.content_length
    }
}

/// Whether the final coding of a `Transfer-Encoding` list is `chunked` (RFC 9112 §6.1).
pub fn final_coding_is_chunked(v: &[u8]) -> bool {
    let mut l = Lengths::default();
    l.add_transfer_encoding(v);
    l.chunked
}

/// Collects [`Lengths`] from a response's header list.
fn lengths(headers: &[httparse::Header<'_>]) -> Lengths {
    let mut l = Lengths::default();
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            l.add_content_length(h.value);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            l.add_transfer_encoding(h.value);
        }
    }
    l
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

/// Parses a request head (RFC 9112 §2.1, §3, §5) as [`HeadScan`] reads it.
pub fn request(b: &[u8]) -> Parse<Request<'_>> {
    HeadScan::default().request(b)
}

/// Which length field a folded line continues.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Last {
    ContentLength,
    TransferEncoding,
    Other,
}

/// Builds the request of the complete head `b[..n]` whose request line `l` scanned: the field
/// lines (RFC 9112 §5) as servers read them. A line starting with SP or HTAB continues the
/// previous field (obs-fold, §5.2: python and Apache join it, nginx refuses); a line without
/// colon is skipped (nginx keeps it as an empty field, python ends the section there, Apache
/// refuses); whitespace before the colon is trimmed (Apache `Unsafe`; nginx refuses). Each of
/// those, a name that is no token, a control byte and more than one `Content-Length` value
/// make the request a violation; a folded or malformed length field a length conflict.
///
/// Threat forms ([`HeadThreats`], evidence: the field line): `Content-Length` values that are
/// negative, signed, overflowing or implausible ([`length_member`]); framing servers disagree
/// on (RFC 9112 §6.1, §6.3, and the published smuggling forms): differing lengths (separate
/// fields or one list), a non-numeric length, `Transfer-Encoding` with `Content-Length`, a
/// final coding other than chunked, `Transfer-Encoding` repeated or obfuscated, in an HTTP/1.0
/// request, a framing field folded, with whitespace before its colon, with bytes around its
/// name that are no token or with `_` for `-`; OGNL in any field value ([`crate::detect::ognl`],
/// CVE-2017-5638 in `Content-Type` and kin).
fn build<'a>(b: &'a [u8], n: usize, l: &LineScan) -> Request<'a> {
    use ThreatId::{ApacheStrutsRce as Struts, HttpRequestSmuggling as Smuggling};
    let slice = |r: [u32; 2]| b.get(r[0] as usize..r[1] as usize).unwrap_or_default();
    let mut req = Request {
        method: slice(l.method),
        target: slice(l.target),
        major: if l.simple { 0 } else { u8::try_from(l.major).unwrap_or(u8::MAX) },
        minor: if l.simple { 9 } else { l.minor },
        simple: l.simple,
        host: None,
        user_agent: None,
        upgrade: None,
        content_type: None,
        lengths: Lengths::default(),
        threats: HeadThreats::default(),
        violation: l.odd || l.ctl,
    };
    if l.simple {
        return req;
    }
    let section = b.get(l.end as usize..n).unwrap_or_default();
    let mut last = Last::Other;
    // Where the previous field line starts (a folded line's evidence starts there).
    let mut last_start = 0;
    let mut te_lines: [Option<&[u8]>; 2] = [None, None];
    let mut from = 0;
    for lf in memchr::memchr_iter(b'\n', section) {
        let start = from;
        let line = &section[from..lf];
        from = lf + 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        // Without early exit, so that it vectorises.
        req.violation |= line.iter().fold(false, |a, &c| a | ((c < 0x20) & (c != b'\t')) | (c == 0x7f));
        if matches!(line.first(), Some(b' ' | b'\t')) {
            req.violation = true;
            let joined = section.get(last_start..start + line.len()).unwrap_or(line);
            match last {
                Last::ContentLength => {
                    req.lengths.conflict = true;
                    req.threats.note(Smuggling, "folded_framing_field", joined);
                    if let Some((id, why)) = req.lengths.add_content_length(line) {
                        req.threats.note(id, why, joined);
                    }
                }
                Last::TransferEncoding => {
                    req.lengths.conflict = true;
                    req.threats.note(Smuggling, "folded_framing_field", joined);
                    req.lengths.add_transfer_encoding(line);
                    te_lines[1] = Some(joined);
                }
                Last::Other => {
                    // ` Transfer-Encoding: chunked` after another field: python and Apache
                    // fold it into that field, a server that trims the line reads framing.
                    let folded = trim(line);
                    let colon = memchr::memchr(b':', folded).map_or(folded, |c| trim(&folded[..c]));
                    if colon.eq_ignore_ascii_case(b"content-length") || colon.eq_ignore_ascii_case(b"transfer-encoding") {
                        req.threats.note(Smuggling, "folded_framing_field", joined);
                    }
                }
            }
            if let Some(h) = crate::detect::ognl::scan(line, true) {
                req.threats.note(Struts, h.reason, joined);
            }
            continue;
        }
        last_start = start;
        let Some(colon) = memchr::memchr(b':', line) else {
            req.violation = true;
            last = Last::Other;
            continue;
        };
        let raw_name = &line[..colon];
        let name = trim(raw_name);
        let spaced = name.len() != raw_name.len();
        if spaced || name.is_empty() || !name.iter().all(|&c| is_tchar(c)) {
            req.violation = true;
            if mangled_framing_name(name) {
                req.threats.note(Smuggling, "malformed_framing_field_name", line);
            }
        }
        if underscore_framing_name(name) {
            req.threats.note(Smuggling, "underscore_framing_field_name", line);
        }
        let value = trim(&line[colon + 1..]);
        if let Some(h) = crate::detect::ognl::scan(value, true) {
            req.threats.note(Struts, h.reason, line);
        }
        last = Last::Other;
        if name.eq_ignore_ascii_case(b"content-length") {
            req.lengths.conflict |= spaced;
            if spaced {
                req.threats.note(Smuggling, "spaced_framing_field_name", line);
            }
            if let Some((id, why)) = req.lengths.add_content_length(value) {
                req.threats.note(id, why, line);
            }
            last = Last::ContentLength;
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            req.lengths.conflict |= spaced;
            if spaced {
                req.threats.note(Smuggling, "spaced_framing_field_name", line);
            }
            if let Some(why) = req.lengths.add_transfer_encoding(value) {
                req.threats.note(Smuggling, why, line);
            }
            te_lines[0].get_or_insert(line);
            te_lines[1] = Some(line);
            last = Last::TransferEncoding;
        } else if name.eq_ignore_ascii_case(b"host") {
            req.host.get_or_insert(value);
        } else if name.eq_ignore_ascii_case(b"user-agent") {
            req.user_agent.get_or_insert(value);
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            req.upgrade.get_or_insert(value);
        } else if name.eq_ignore_ascii_case(b"content-type") {
            req.content_type.get_or_insert(value);
        }
    }
    req.violation |= req.lengths.content_lengths > 1;
    // Any framing form found so far: servers can read different lengths.
    req.lengths.conflict |= req.threats.0[0].is_some() || req.threats.0[1].is_some();
    let lens = &mut req.lengths;
    if let (true, Some(te), Some(te_last)) = (lens.transfer_encoding, te_lines[0], te_lines[1]) {
        if lens.content_lengths > 0 {
            req.threats.note(Smuggling, "content_length_with_transfer_encoding", te);
        }
        if !lens.chunked {
            req.threats.note(Smuggling, "transfer_encoding_not_chunked", te_last);
        }
        // RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing (nginx
        // answers 400, python ignores the field).
        if req.major == 0 || (req.major == 1 && req.minor == 0) {
            lens.conflict = true;
            req.threats.note(Smuggling, "transfer_encoding_in_http10", te);
        }
    }
    req
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
    let lengths = lengths(resp.headers);
    Parse::Ok(Response { minor, status, upgrade: field(resp.headers, "upgrade"), lengths }, n)
}

/// Where an incremental head scan is in the grammar (see [`HeadScan`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum At {
    /// Before the start line (a request's is scanned by its [`LineScan`]).
    #[default]
    Start,
    /// Empty lines before a status line (skipped, as `httparse` does).
    Lead,
    /// After a `\r` of an empty leading line.
    LeadCr,
    /// At this byte of a status line's `HTTP/1.x`.
    Version(u8),
    /// After the `\r` ending a status line.
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
    /// Request field section: at the start of a line.
    Line0,
    /// Request field section: after a `\r` at the start of a line.
    Line0Cr,
    /// Request field section: inside a line.
    Line,
}

/// An incremental scan for the end of a request or response head, resumed at each call with
/// the same unconsumed bytes presented again with more appended (the stream engine's contract).
/// A request's line is read by a [`LineScan`]; its field section is any lines up to the first
/// empty one (CRLF or LF; a bare CR is a byte of its line), as python reads it, and each line
/// is read by [`request`]; an HTTP/0.9 request ends with its line. A response follows
/// `httparse`'s grammar and defaults byte by byte (empty lines before the status line,
/// `HTTP/1.0` or `HTTP/1.1`, CRLF or LF line ends, token field names, field values without
/// control bytes but HTAB, no obsolete line folding, at most [`MAX_HEADERS`] fields), so a
/// response head is rejected at the byte where `httparse` would reject it, and `httparse` runs
/// once, on the complete head. Each byte is scanned once however the head was segmented
/// ([`HeadScan::examined`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeadScan {
    /// Bytes of the head already scanned.
    pos: u32,
    /// Field lines completed (responses).
    fields: u8,
    at: At,
    /// A request's line.
    line: LineScan,
    /// Bytes examined so far (scan and head parses), never reset.
    examined: u64,
}

/// `tchar` (RFC 9110 §5.6.2), as `httparse`'s token map.
fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
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

    /// Bytes of the head being received scanned so far (0 after [`HeadScan::reset`]).
    pub fn scanned(&self) -> u32 {
        self.pos
    }

    fn count(&mut self, n: usize) {
        self.examined = self.examined.saturating_add(n as u64);
    }

    /// Scans `b[pos..end]`, `response` selecting the start line's grammar; counts the bytes
    /// it examined (up to where it stopped).
    fn scan(&mut self, b: &[u8], end: usize, response: bool) -> Option<Scanned> {
        let start = self.pos as usize;
        let r = self.scan_bytes(b, end, response);
        let stop = match r {
            Some(Scanned::End(n)) => n,
            Some(Scanned::Bad) => self.pos as usize,
            None => end,
        };
        self.count(stop.saturating_sub(start));
        r
    }

    fn scan_bytes(&mut self, b: &[u8], end: usize, response: bool) -> Option<Scanned> {
        let start = self.pos as usize;
        let bytes = b.get(start..end).unwrap_or_default();
        let mut k = 0;
        while let Some(&c) = bytes.get(k) {
            let i = start + k;
            k += 1;
            // Fast paths: the bytes of a target that are no separator, CR, LF or control byte,
            // and a request field line up to its LF, need no state change.
            if !response && self.at == At::Start && self.line.at == Rl::Target && !self.line.cr {
                let run = bytes[k - 1..].iter().position(|&c| c <= 0x20 || c == 0x7f).unwrap_or(bytes.len() - k + 1);
                if run > 0 {
                    self.line.target[1] = at32(i + run);
                    k += run - 1;
                    continue;
                }
            }
            if self.at == At::Line {
                match memchr::memchr(b'\n', &bytes[k - 1..]) {
                    Some(j) => {
                        self.at = At::Line0;
                        k += j;
                    }
                    None => k = bytes.len(),
                }
                continue;
            }
            if !response && self.at == At::Start {
                match self.line.step(i, c) {
                    Ln::More => continue,
                    Ln::Bad => return self.bad(i),
                    Ln::End if self.line.simple => {
                        self.pos = at32(i + 1);
                        return Some(Scanned::End(i + 1));
                    }
                    Ln::End => {
                        self.at = At::Line0;
                        continue;
                    }
                }
            }
            let mut at = self.at;
            if at == At::Start {
                at = At::Lead;
            }
            if at == At::Lead {
                match c {
                    b'\r' => {
                        self.at = At::LeadCr;
                        continue;
                    }
                    b'\n' => {
                        self.at = At::Lead;
                        continue;
                    }
                    _ => at = At::Version(0),
                }
            }
            self.at = match at {
                At::Start | At::Lead => at,
                At::LeadCr if c == b'\n' => At::Lead,
                At::Version(v) if v < 7 && b"HTTP/1.".get(usize::from(v)) == Some(&c) => At::Version(v + 1),
                At::Version(7) if c == b'0' || c == b'1' => At::Space,
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
                At::AfterCode | At::Reason | At::StartCr if c == b'\n' => At::LineStart,
                At::Reason if c == b'\t' || c == b' ' || (0x21..=0x7e).contains(&c) || c >= 0x80 => At::Reason,
                At::LineStart if c == b'\r' => At::EndCr,
                At::LineStart | At::EndCr | At::Line0 | At::Line0Cr if c == b'\n' => {
                    self.pos = at32(i + 1);
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
                        return self.bad(i);
                    }
                    At::LineStart
                }
                // A request's field section: lines up to an empty one (inside a line, only
                // its LF matters: the fast path above).
                At::Line0 if c == b'\r' => At::Line0Cr,
                At::Line0 | At::Line0Cr | At::Line => At::Line,
                _ => return self.bad(i),
            };
        }
        self.pos = at32(end);
        None
    }

    /// The head is bad at byte `i` (scanned up to it).
    fn bad(&mut self, i: usize) -> Option<Scanned> {
        self.pos = at32(i + 1);
        Some(Scanned::Bad)
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

    /// [`request`] on a head presented again with more bytes: only the new bytes are scanned,
    /// and the head is read once it is complete.
    pub fn request<'a>(&mut self, b: &'a [u8]) -> Parse<Request<'a>> {
        match self.end(b, false) {
            Parse::Ok(n, _) => {
                // The read of the head, and its field values' OGNL scan.
                self.count(2 * n);
                Parse::Ok(build(b, n, &self.line), n)
            }
            Parse::Incomplete(k) => Parse::Incomplete(k),
            Parse::Invalid => Parse::Invalid,
        }
    }

    /// [`response`] on a head presented again with more bytes: the first attempt parses `b`
    /// directly (a head that arrived whole costs one pass); while incomplete, only the new
    /// bytes are scanned, and `httparse` runs again once the head is complete.
    pub fn response<'a>(&mut self, b: &'a [u8]) -> Parse<Response<'a>> {
        if self.pos == 0 && self.at == At::Start {
            let r = response(b);
            self.count(match r {
                Parse::Ok(_, n) => n,
                _ => b.len(),
            });
            if !matches!(r, Parse::Incomplete(_)) {
                return r;
            }
        }
        match self.end(b, true) {
            Parse::Ok(n, _) => {
                self.count(n);
                response(b)
            }
            Parse::Incomplete(k) => Parse::Incomplete(k),
            Parse::Invalid => Parse::Invalid,
        }
    }
}

/// How the body of a request is read, and whether servers can disagree on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestBody {
    /// The body as RFC 9112 §6.3 frames it: `Transfer-Encoding` whose final coding is chunked
    /// wins over `Content-Length`; else the first `Content-Length`; else none.
    pub framing: Framing,
    /// Servers can disagree on where the body ends (see [`request_framing`]).
    pub ambiguous: bool,
}

/// Body framing of a request (RFC 9112 §6.3 items 3, 5, 6, 7). Ambiguous when servers can
/// disagree on where the body ends, so that one of them may read a request where another reads
/// body bytes: `Transfer-Encoding` with `Content-Length` (RFC: chunked wins and the server
/// closes after answering; nginx answers 400; a server that ignores `Transfer-Encoding` reads
/// the length), a final coding other than chunked (RFC: 400 and close; python ignores it),
/// `Content-Length` values that differ or are not numbers (nginx and Apache: 400 and close;
/// python's applications read the first), a folded or malformed length field,
/// `Transfer-Encoding` in two fields or `chunked` twice (nginx: 400; RFC 9112 §6.1 forbids
/// chunked twice), or any smuggling form [`request`] noted in the head (`conflict`).
pub fn request_framing(l: &Lengths) -> RequestBody {
    let ambiguous = l.conflict
        || (l.transfer_encoding && (l.content_lengths > 0 || !l.chunked || l.te_fields > 1 || l.chunked_codings > 1));
    let framing = if l.transfer_encoding && l.chunked {
        Framing::Chunked
    } else {
        match l.content_length {
            Some(0) | None => Framing::None,
            Some(n) => Framing::Length(n),
        }
    };
    RequestBody { framing, ambiguous }
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
    /// An HTTP/0.9 request (or one with version `HTTP/0.x`, which python answers the same
    /// way): the answer is the body alone, until the connection closes.
    Simple,
}

/// Body framing of a final or interim response (RFC 9112 §6.3 items 1-7); with conflicting
/// `Content-Length` values, the first.
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

/// Chunk sizes from which a 32-bit signed reader sees a negative length (NeuVector's
/// `http_negative_body_length` test on chunk sizes): 2^31 bytes.
pub const CHUNK_INT32: u64 = 1 << 31;

/// Why a chunk-size line that [`chunk_size`] refused is refused, with the bytes up to the one
/// that decided it (`b`: the unconsumed bytes from the line's start, as given to
/// [`chunk_size`]): `chunk_size_invalid` (no hex digit first, or bytes after the size that are
/// neither an extension nor the line end: `0x5`, ` 5`, `5 5`, a bare CR), `chunk_size_overflow`
/// (more than 64 bits) or `implausible_chunk_size` (past [`MAX_CHUNK`]:
/// `http_negative_body_length`), `chunk_line_too_long` (no line end within [`MAX_LINE`]).
/// The same bytes are blamed however the line was segmented.
pub fn chunk_fault(b: &[u8]) -> Found<'_> {
    use ThreatId::{HttpNegativeBodyLength as Neg, HttpRequestSmuggling as Smuggling};
    let window = &b[..b.len().min(MAX_LINE)];
    let found = |id, reason, k: usize| Found { id, reason, evidence: &b[..k.min(b.len())] };
    let Some(i) = memchr::memchr(b'\n', window) else {
        return match b.first() {
            Some(c) if !c.is_ascii_hexdigit() => found(Smuggling, "chunk_size_invalid", 1),
            _ => found(Smuggling, "chunk_line_too_long", window.len()),
        };
    };
    let line = &b[..=i];
    let digits = line.iter().take_while(|c| c.is_ascii_hexdigit()).count();
    if digits == 0 {
        return found(Smuggling, "chunk_size_invalid", 1);
    }
    let mut size = 0u64;
    for (k, &c) in line[..digits].iter().enumerate() {
        let v = u64::from(char::from(c).to_digit(16).unwrap_or(0));
        match size.checked_mul(16) {
            Some(s) => size = s + v,
            None => return found(Smuggling, "chunk_size_overflow", k + 1),
        }
    }
    if size > MAX_CHUNK {
        return found(Neg, "implausible_chunk_size", digits);
    }
    found(Smuggling, "chunk_size_invalid", digits + 1)
}

/// Threat forms of an accepted chunk-size line (`line`, with its LF) announcing `size` bytes:
/// a size a 32-bit signed reader takes as negative (`chunk_size_over_int32`, at least
/// [`CHUNK_INT32`]: `http_negative_body_length`), something else than an extension after the
/// size (`chunk_extension_invalid`), a bare LF line end (`bare_lf_in_chunked`) or
/// a bare CR inside the line (`bare_cr_in_chunked`): servers that take only CRLF, or also a
/// bare CR, as the line end read the chunks differently.
pub fn chunk_line_form(line: &[u8], size: u64) -> Option<Found<'_>> {
    let found = |id, reason| Some(Found { id, reason, evidence: line });
    if size >= CHUNK_INT32 {
        return found(ThreatId::HttpNegativeBodyLength, "chunk_size_over_int32");
    }
    // After the size: optional whitespace, then `;` (an extension) or the line end (RFC 9112
    // §7.1.1); `5 5` or `5 x` is read as 5 by some servers and refused by others.
    let digits = line.iter().take_while(|c| c.is_ascii_hexdigit()).count();
    let after = line[digits..].iter().find(|&&c| c != b' ' && c != b'\t');
    if !matches!(after, Some(b';' | b'\r' | b'\n') | None) {
        return found(ThreatId::HttpRequestSmuggling, "chunk_extension_invalid");
    }
    line_end_form(line)
}

/// A bare LF line end, or a bare CR inside the line, of a chunked-framing line (`line` ends
/// with its LF).
fn line_end_form(line: &[u8]) -> Option<Found<'_>> {
    let found = |reason| Some(Found { id: ThreatId::HttpRequestSmuggling, reason, evidence: line });
    let body = match line.strip_suffix(b"\r\n") {
        Some(body) => body,
        None => return found("bare_lf_in_chunked"),
    };
    if memchr::memchr(b'\r', body).is_some() {
        return found("bare_cr_in_chunked");
    }
    None
}

/// Threat forms of a trailer field line (`line`, with its LF): a bare LF or CR as in
/// [`chunk_line_form`], or a framing field (`Content-Length`, `Transfer-Encoding`), which RFC
/// 9110 §6.5.1 forbids in trailers and servers that merge trailers into the header section
/// would act on (`framing_field_in_trailer`).
pub fn trailer_form(line: &[u8]) -> Option<Found<'_>> {
    let name = line.iter().position(|&c| c == b':').map(|i| trim(&line[..i]));
    if name.is_some_and(|n| n.eq_ignore_ascii_case(b"content-length") || n.eq_ignore_ascii_case(b"transfer-encoding")) {
        return Some(Found { id: ThreatId::HttpRequestSmuggling, reason: "framing_field_in_trailer", evidence: line });
    }
    line_end_form(line)
}

/// Why a trailer line was refused ([`trailer_line`] answered `Invalid`): no line end within
/// [`MAX_LINE`] (`chunk_line_too_long`), with those bytes.
pub fn trailer_fault(b: &[u8]) -> Found<'_> {
    Found { id: ThreatId::HttpRequestSmuggling, reason: "chunk_line_too_long", evidence: &b[..b.len().min(MAX_LINE)] }
}

/// Why the bytes after chunk data are refused as its CRLF ([`crlf`] answered `Invalid`): the
/// chunk held more than its size said (`chunk_missing_crlf`), with the bytes up to the one
/// that decided it.
pub fn crlf_fault(b: &[u8]) -> Found<'_> {
    let k = if b.first() == Some(&b'\r') { 2 } else { 1 };
    Found { id: ThreatId::HttpRequestSmuggling, reason: "chunk_missing_crlf", evidence: &b[..k.min(b.len())] }
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

    /// `sniff_request` as first written: every byte through the line scan.
    fn sniff_request_reference(b: &[u8]) -> Sniff {
        let mut l = LineScan::default();
        for (i, &c) in b.iter().enumerate().take(MAX_HEAD) {
            match l.step(i, c) {
                Ln::Bad => return Sniff::No,
                Ln::End => {
                    let first = b.get(l.target[0] as usize).copied();
                    return if l.simple && !l.odd && !l.ctl && first == Some(b'/') { Sniff::Yes } else { Sniff::No };
                }
                Ln::More => {}
            }
            if l.ctl {
                return Sniff::No;
            }
            match l.at {
                Rl::Lead if l.lead as usize > MAX_LEAD => return Sniff::No,
                Rl::Method if l.method_len() > MAX_METHOD => return Sniff::No,
                Rl::Minor(1) if !l.ctl => return Sniff::Yes,
                _ => {}
            }
        }
        if b.len() >= MAX_HEAD {
            Sniff::No
        } else {
            Sniff::Maybe
        }
    }

    #[test]
    fn sniffing_skips_target_bytes_to_the_same_answer() {
        let mut rng = crate::app::testutil::Rng(11);
        let pieces: [&[u8]; 14] =
            [b"GET", b"POST", b" ", b"  ", b"/", b"/a?b=c%27", b"x", b"\t", b"\r", b"\n", b"\r\n", b"HTTP/1.1", b"\x01", b"\x7f"];
        for _ in 0..50_000 {
            let mut b = Vec::new();
            for _ in 0..rng.below(12) {
                b.extend_from_slice(pieces[rng.below(pieces.len())]);
            }
            assert_eq!(sniff_request(&b), sniff_request_reference(&b), "{:?}", String::from_utf8_lossy(&b));
        }
        let long = [b"GET /".as_slice(), &vec![b'a'; MAX_HEAD + 10]].concat();
        for n in [MAX_HEAD - 1, MAX_HEAD, MAX_HEAD + 1, long.len()] {
            assert_eq!(sniff_request(&long[..n]), sniff_request_reference(&long[..n]), "{n}");
        }
    }

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
    }

    /// The forms nginx, Apache or python's http.server accept (checked against nginx 1.22.1
    /// and python 3.11's http.server; Apache's from its `ap_parse_request_line`), and what none
    /// of them does.
    #[test]
    fn sniffs_request_lines_as_servers_accept_them() {
        for yes in [
            // Leading empty lines (RFC 9112 §2.2), bare CRs (nginx), spaces (python).
            &b"\r\nGET / HTTP/1.1\r\n"[..],
            b"\n\n\r\nGET / HTTP/1.1\r\n",
            b"\r\rGET / HTTP/1.0\r\n",
            b"  GET / HTTP/1.0\r\n",
            // HTTP/0.9 simple requests.
            b"GET /index.html\r\n",
            b"GET /index.html\n",
            b"\r\nGET /item?id=1\r\n",
            // Several spaces (nginx, python), tabs, VT, FF, 0x1c and bare CR (python).
            b"GET  /a  HTTP/1.1\r\n",
            b"GET /a HTTP/1.1  \r\n",
            b"GET\t/a\tHTTP/1.0\r\n",
            b"GET\x0b/a\x0cHTTP/1.0\r\n",
            b"GET\x1c/a HTTP/1.0\r\n",
            b"GET\r/a HTTP/1.0\r\n",
            // Unknown and lower-case methods (nginx proxies `FOO`, Apache hands any token on).
            b"FOO /a HTTP/1.1\r\n",
            b"get / HTTP/1.1\r\n",
            b"M-SEARCH * HTTP/1.1\r\n",
            // Unusual targets.
            b"GET . HTTP/1.0\r\n",
            b"GET http://x/a?b HTTP/1.1\r\n",
            b"OPTIONS * HTTP/1.1\r\n",
            b"GET /a?$(id);`x`|&<>'\" HTTP/1.1\r\n",
            // Versions python accepts.
            b"GET / HTTP/1.10\r\n",
            b"GET / HTTP/01.1\r\n",
            b"GET / HTTP/0.9\r\n",
        ] {
            assert_eq!(sniff_request(yes), Sniff::Yes, "{:?}", String::from_utf8_lossy(yes));
        }
        for no in [
            // HTTP/0.9 is GET only, with one SP and an origin-form target, here.
            &b"POST /a\r\n"[..],
            b"GET key\r\n",
            b"GET  /a\r\n",
            b"GET /a \r\n",
            b"GET /a\x01\r\n",
            b"SET key value\r\n",
            b"EHLO x\r\n",
            // No target, a version no server takes, trailing text.
            b"GET HTTP/1.1\r\n",
            b"GET\r\n",
            b"GET / HTTP/2.0\r\n",
            b"GET / HTTP/1.\r\n",
            b"GET / http/1.1\r\n",
            b"GET /a b HTTP/1.1\r\n",
            b"G@T / HTTP/1.1\r\n",
        ] {
            assert_eq!(sniff_request(no), Sniff::No, "{:?}", String::from_utf8_lossy(no));
        }
        // Bounds: leading bytes and method length.
        let mut lead = vec![b'\n'; MAX_LEAD];
        lead.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert_eq!(sniff_request(&lead), Sniff::Yes);
        lead.insert(0, b'\r');
        assert_eq!(sniff_request(&lead), Sniff::No);
        assert_eq!(sniff_request(&lead[..MAX_LEAD]), Sniff::Maybe);
        let long = [b'X'; MAX_METHOD + 1];
        assert_eq!(sniff_request(&long), Sniff::No);
        assert_eq!(sniff_request(&long[..MAX_METHOD]), Sniff::Maybe);
        // No prefix of an accepted line is refused.
        for yes in [&b"\r\n GET\t/a?b=1  HTTP/1.1 \r\n"[..], b"GET /index.html\r\n"] {
            for cut in 0..yes.len() {
                assert_ne!(sniff_request(&yes[..cut]), Sniff::No, "{:?}", String::from_utf8_lossy(&yes[..cut]));
            }
        }
    }

    #[test]
    fn request_lines_are_read_as_servers_read_them() {
        let head = |b: &'static [u8]| match request(b) {
            Parse::Ok(r, n) => (r, n),
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(b)),
        };
        let (r, n) = head(b"\r\n\r\nGET /a?b=1 HTTP/1.1\r\nHost: h\r\n\r\nrest");
        assert_eq!((r.method, r.target, r.major, r.minor, r.simple, r.host, r.violation), (&b"GET"[..], &b"/a?b=1"[..], 1, 1, false, Some(&b"h"[..]), false));
        assert_eq!(n, 36);
        let (r, n) = head(b"GET /x?id=1\r\nHost: h\r\n\r\n");
        assert_eq!((r.target, r.major, r.minor, r.simple, r.host, r.violation), (&b"/x?id=1"[..], 0, 9, true, None, false));
        assert_eq!(n, 13, "an HTTP/0.9 request ends with its line");
        let (r, _) = head(b"GET\t /a\x0b\rHTTP/1.1 \n\n");
        assert_eq!((r.method, r.target, r.major, r.minor, r.violation), (&b"GET"[..], &b"/a"[..], 1, 1, true));
        let (r, _) = head(b"get /a HTTP/01.10\r\n\r\n");
        assert_eq!((r.method, r.major, r.minor, r.violation), (&b"get"[..], 1, 10, true));
        let (r, _) = head(b"GET /a\x01b HTTP/1.0\r\n\r\n");
        assert_eq!((r.target, r.violation), (&b"/a\x01b"[..], true));
        // Field lines as servers read them: obs-fold, no colon, space before colon.
        let (r, _) = head(b"GET / HTTP/1.1\r\nUser-Agent: a\r\n b\r\nJunk\r\nHost : h\r\n\r\n");
        assert_eq!((r.user_agent, r.host, r.violation), (Some(&b"a"[..]), Some(&b"h"[..]), true));
        let (r, _) = head(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip,\r\n chunked\r\n\r\n");
        assert!(r.lengths.chunked && r.lengths.conflict && r.violation);
        for bad in [&b"GET\r\n\r\n"[..], b"POST /a\r\n", b"GET / HTTP/2.0\r\n\r\n", b"GET / HTTP/1.1x\r\n\r\n", b"GET / HTTP/1.1 x\r\n\r\n", b"\x01GET / HTTP/1.1\r\n\r\n"] {
            assert_eq!(request(bad), Parse::Invalid, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn embedded_request_lines() {
        assert_eq!(embedded_target(b"helloGET /x?id=1 HTTP/1.1\r\n"), Some(&b"/x?id=1"[..]));
        assert_eq!(embedded_target(b"@@ @@GET\t/y HTTP/1.0"), Some(&b"/y"[..]));
        assert_eq!(embedded_target(b"x=1GET /z\r\n"), Some(&b"/z"[..]));
        assert_eq!(embedded_target(b"Host: example.com\r\n"), None);
        assert_eq!(embedded_target(b"a b HTTP/2.0\r\n"), None);
        assert_eq!(embedded_target(b"HTTP/1.1\r\n"), None);
        assert!(is_request_line(b" GET / HTTP/1.1\r\n"));
        assert!(is_request_line(b"GET /a\n"));
        assert!(!is_request_line(b"GET / HTTP/1.1"));
        assert!(!is_request_line(b"\r\n"));
        assert!(!is_request_line(b"x=1&y=2\r\n"));
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
        let mut l = Lengths::default();
        l.add_content_length(b"5");
        l.add_content_length(b"40, 5");
        assert_eq!((l.content_length, l.content_length_max, l.content_lengths, l.conflict), (Some(5), 40, 3, true));
        let mut l = Lengths::default();
        l.add_content_length(b"5, 5");
        assert_eq!((l.content_length, l.content_lengths, l.conflict), (Some(5), 2, false));
        let mut l = Lengths::default();
        l.add_transfer_encoding(b"chunked");
        l.add_transfer_encoding(b"");
        assert!(l.chunked, "an empty field does not change the final coding");
        assert_eq!(request_framing(&l), RequestBody { framing: Framing::Chunked, ambiguous: false });
        l.add_content_length(b"3");
        assert_eq!(request_framing(&l), RequestBody { framing: Framing::Chunked, ambiguous: true });
        let mut l = Lengths::default();
        l.add_transfer_encoding(b"gzip");
        l.add_content_length(b"3");
        assert_eq!(request_framing(&l), RequestBody { framing: Framing::Length(3), ambiguous: true });
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
