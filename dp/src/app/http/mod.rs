//! HTTP/1.0 and HTTP/1.1 (RFC 9112 message syntax, RFC 9110 semantics), and HTTP/0.9 simple
//! requests.
//!
//! One record per connection: the FIRST request's method, `Host`, target (path, bounded),
//! `User-Agent` and version (`0.9` for a simple request), the first final response's status,
//! and counts of requests (client to server) and final responses (server to client), so
//! pipelined and keep-alive exchanges are all counted; `violation` when a message was
//! something only some servers accept, or could not be read at all.
//!
//! **Lenient where servers are lenient.** A request Warden does not parse as the server does is
//! a request `apps` rules and the SQL injection check do not see, so requests are read as nginx,
//! Apache (default `HttpProtocolOptions Strict LenientMethods Allow0.9`) and python's
//! `http.server` read them, whichever accepts more (facts from their parsers, checked against
//! nginx 1.22 and python 3.11; [`parser::LineScan`] has the grammar):
//!
//! - empty lines (CRLF or bare LF, also bare CR as nginx) before a request, at the start of the
//!   connection and between keep-alive requests (RFC 9112 §2.2), and whitespace there (python):
//!   the probe skips at most [`parser::MAX_LEAD`] bytes (why that bound: see there); after
//!   detection any number is consumed as it comes, more than that (or whitespace) recorded as
//!   a violation;
//! - HTTP/0.9 simple requests `GET /path` ended by CRLF or LF (nginx, Apache and python serve
//!   them, GET only): recorded and checked like any request, version `0.9`; the answer is the
//!   body alone until the connection closes; the lines after it (python reads them as fields,
//!   nginx and Apache close) are walked as in resync below, so a request among them is checked;
//! - any token as method (nginx proxies unknown upper-case methods, Apache hands any token, also
//!   lower-case, to its handlers, python any word to `do_<method>`); several spaces (nginx),
//!   HTAB, VT, FF, 0x1c-0x1f and bare CR (python) between the parts and after the version;
//!   versions `HTTP/` 1-10 digits `.` 1-10 digits with major 0 or 1 (python);
//! - any target without whitespace (`.`, `*`, absolute-form, shell metacharacters, control
//!   bytes python takes) up to [`parser::MAX_HEAD`];
//! - field lines: obs-fold (joined to the previous field by python and Apache), lines without
//!   colon, whitespace before the colon, names that are no token, control bytes;
//! - the odd forms (anything but single SPs and `HTTP/1.x`, leading whitespace, control bytes,
//!   those field lines, repeated `Content-Length`) are recorded as `violation` and parsed.
//!
//! The probe is stricter on a first message (versioned lines with any method; HTTP/0.9 only as
//! `GET SP /target` and the line end; no control byte in the target), so line protocols that
//! start with other words stay out.
//!
//! **Body length and smuggling** (RFC 9112 §6.3). `Transfer-Encoding` whose final coding is
//! `chunked` wins over `Content-Length`, else the (first) `Content-Length`, else no body.
//! Where servers can disagree on the body's end ([`parser::request_framing`]: `Content-Length`
//! with `Transfer-Encoding`, a final coding other than chunked, `Transfer-Encoding` repeated or
//! in an HTTP/1.0 request, differing or non-numeric `Content-Length` values, a folded or
//! malformed framing field, any other smuggling form of the head), nginx and Apache answer 400 or
//! 501 and close the connection, while a server that accepts the request may read another
//! length and find a second request where Warden would skip body bytes. So Warden trusts no
//! length there: the request is recorded (`violation`) and checked, and what follows its head
//! is walked line by line (**resync**): a line that is a request line starts a request,
//! parsed as usual from there (its own framing); any other line is checked for a request line
//! at its end whatever precedes it ([`parser::embedded_target`]: the word before a final
//! `HTTP/x.y`, or after a word ending in `GET`), whose target gets the SQL injection check, and
//! the first [`FORM_MAX`] bytes of a form request's lines are checked as form values. A
//! smuggled request is thus checked wherever a server starts reading it. The walk is bounded:
//! after the largest `Content-Length` of the request (at most [`RESYNC_MAX`]) plus
//! [`parser::MAX_HEAD`] bytes without a request, the bytes are not HTTP (`Feed::Invalid`); a
//! line is held at most [`parser::MAX_HEAD`] bytes (a longer one is walked in pieces cut before
//! its last word), each byte is searched once. Identical repeated lengths are a violation
//! only. A request's chunked framing that fails (a chunk-size line that is no size, a size past
//! [`parser::MAX_CHUNK`], chunk data not followed by CRLF, a line past [`parser::MAX_LINE`]) is
//! walked the same way, from the line that failed. Responses with conflicting lengths are read
//! with the first (or chunked) and recorded.
//!
//! Request heads are scanned by [`parser::HeadScan`] (own code: `httparse` refuses HTTP/0.9,
//! whitespace runs, obs-fold and lines without colon), which keeps how far it got, so a head
//! trickled in one-byte segments is scanned once and read once complete; response heads are
//! parsed by the `httparse` crate (zero-copy over partial input, no allocation): once when the
//! head arrives whole, else at its first segment and once more when complete, `HeadScan`
//! following `httparse`'s grammar in between so a bad head is rejected at the same byte.
//! Chunk-size, trailer and resync lines resume their search the same way, so a request
//! trickled in one-byte segments costs each byte O(1) work ([`Http::examined`]);
//! framing is walked here ([`parser`]): `Content-Length` bodies, chunked bodies (RFC 9112 §7.1,
//! chunk sizes capped), responses without a length read until close, and no body after HEAD, 1xx,
//! 204 and 304 (RFC 9112 §6.3). Bodies are never buffered: a body larger than what is presented
//! is consumed as it comes and the bytes still owed are kept in the state.
//!
//! Upgrades (RFC 9110 §7.8): a request's `Upgrade` value is recorded (`"h2c"` for HTTP/2 over
//! cleartext, RFC 7540 §3.2). When the server answers `101 Switching Protocols`, this parser
//! stops both directions **without consuming** the 101 head (to the client) nor the bytes after
//! the upgrade request (to the server: the HTTP/2 connection preface): `feed` returns
//! `Consumed` up to them and `Done` when presented with them. The engine then checks
//! [`Http::h2c_switched`], builds `Http2::after_upgrade(&http)` and feeds it the unconsumed
//! tails of both directions (the to-client one starts at `HTTP/1.1 101`, which `Http2` skips).
//! A CONNECT answered 2xx becomes a tunnel: both directions stop.
//!
//! **Mid-stream** ([`MIDSTREAM`], [`crate::app::midstream`]): a session picked up without its
//! handshake is HTTP when, at a turn boundary (the first bytes of a direction, or the bytes a
//! side sends after the other side spoke), a complete response head starts with a status line
//! (RFC 9112 §4: `HTTP/1.x SP 3DIGIT`, then the field lines to the empty line, parsed by
//! `httparse`) or a complete request head starts there as the probe of a first request accepts
//! it; a response says its sender is the server, a request its sender is the client. Nothing
//! inside a body is taken for a head. The parser starts at that head ([`Http::resumed`]); a
//! response to a request Warden did not see is read as the answer to a request other than
//! HEAD or CONNECT and counted apart (`unseen_requests`).
//!
//! SQL injection ([`crate::detect`]): every request's target is checked (the URL-decoded path
//! and each query-string value, decoded and as sent, with libinjection), HTTP/0.9 and resync
//! ones included. For a request whose
//! `Content-Type` is `application/x-www-form-urlencoded`, the body's first [`FORM_MAX`] bytes
//! (of each chunk, when chunked) are checked value by value too: the parser asks the stream
//! engine for them (`Feed::Need`, so the engine's bounded buffer holds them, not this state) and
//! checks them in one piece, so no value straddles two checks; the rest of a longer body is
//! skipped by count unchecked.
//!
//! **Threats** (issue 15; recorded to the server in [`crate::detect::Threats`], evidence the
//! offending field line, framing line or text):
//!
//! - from each request head ([`parser::HeadThreats`], at most one form per kind and head):
//!   `http_negative_body_length` (a `Content-Length` member that is negative, signed,
//!   overflows 64 bits or exceeds 2^53), `http_request_smuggling` (`Content-Length` with
//!   `Transfer-Encoding`, differing lengths in fields or one list, a non-numeric length, a final
//!   coding other than chunked, `Transfer-Encoding` repeated, obfuscated (`xchunked`,
//!   `chunked\x0b`, `"chunked"`) or in HTTP/1.0, a framing field folded, with whitespace before
//!   its colon, bytes around its name or `_` for `-`), `apache_struts_rce` (OGNL in any field
//!   value, [`crate::detect::ognl`]);
//! - from the target and form bodies: OGNL, as sent and decoded ([`crate::detect::Threats::http_target`],
//!   [`crate::detect::Threats::http_form`]); from the first [`FORM_MAX`] bytes of an XML body
//!   (or of each chunk; `Content-Type` XML or a target ending `.xml`) the XStream gadget chains
//!   of CVE-2017-9805; from a multipart body's `Content-Disposition` lines, OGNL (S2-046);
//! - from a request's chunked framing (once per body): a size a 32-bit reader takes as negative
//!   or past [`parser::MAX_CHUNK`] (`http_negative_body_length`), an invalid size or extension,
//!   a bare LF or CR, data longer than its size, a framing field in the trailer
//!   (`http_request_smuggling`).
//!
//! For `http_slowloris` ([`crate::detect::slowloris`]) the state says whether a request head is
//! open and how many of its bytes arrived ([`Http::awaiting_headers`], [`Http::head_bytes`]).

pub mod parser;

use serde_json::{Map, Value};

use super::midstream::{self, Head, Msg, Role};
use super::{text, App, AppParser, Dir, Feed, Probe, Text, Transport};
use crate::rescan::Resume;
use parser::{Framing, HeadScan, Parse, ReqKind, Sniff};

/// Where a direction is in its message stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Phase {
    /// Expecting a request or response head.
    #[default]
    Head,
    /// Inside a `Content-Length` body: bytes still owed.
    Body(u64),
    /// Expecting a chunk-size line.
    ChunkSize,
    /// Inside chunk data: bytes still owed.
    ChunkData(u64),
    /// Expecting the CRLF after chunk data.
    ChunkEnd,
    /// Inside the trailer section after the last chunk.
    Trailer,
    /// A response body delimited by the connection close.
    UntilClose,
    /// Requests only: after a request whose body servers can read differently, or after an
    /// HTTP/0.9 request, no length is trusted: what follows is walked line by line until a
    /// line that starts a request (see the module docs), within [`Http::resync_left`] bytes.
    Resync,
    /// Not HTTP/1 any more (upgrade, tunnel), a violation, or lost after a gap.
    Stopped,
}

/// Requests remembered for matching responses (pipelining depth).
const RING: usize = 16;
/// Bytes of a form body (of each chunk of a chunked one) checked for SQL injection.
pub const FORM_MAX: usize = 4096;
/// Largest `Content-Length` that widens the resync window after an ambiguous request (bytes):
/// the window is the largest `Content-Length` of the request up to this, plus [`parser::MAX_HEAD`].
pub const RESYNC_MAX: u64 = 1 << 20;

/// Per-session HTTP/1 state: fixed size, no heap.
#[derive(Debug, Clone, Default)]
pub struct Http {
    phase: [Phase; 2],
    method: Option<Text<16>>,
    host: Option<Text<128>>,
    path: Option<Text<256>>,
    user_agent: Option<Text<128>>,
    /// Major and minor version of the first request (0.9 for a simple request).
    version: Option<(u8, u16)>,
    upgrade: Option<Text<32>>,
    status: Option<u16>,
    requests: u32,
    responses: u32,
    kinds: [ReqKind; RING],
    switched: bool,
    tunnel: bool,
    violation: bool,
    gap: bool,
    /// What the current request's body is checked for (forms, XML, multipart).
    body: BodyCheck,
    /// The current body (or chunk) has not been checked yet.
    body_pending: bool,
    /// A threat form of the current request's chunked framing was recorded (once per body).
    chunk_noted: bool,
    /// Per direction: how far the head being received was scanned (heads trickled in small
    /// segments are scanned once, not again from their start at every segment).
    heads: [HeadScan; 2],
    /// Per direction: how far the chunk-size or trailer line being received was searched
    /// (requests: also the line being walked in [`Phase::Resync`]).
    lines: [Resume; 2],
    /// Empty lines (CR, LF, whitespace) skipped before the request being received (bytes).
    lead: u32,
    /// Bytes that may still be walked in [`Phase::Resync`] without finding a request (0: a
    /// head that is not one ends HTTP as usual).
    resync_left: u64,
    /// The resync walk is inside a line longer than [`parser::MAX_HEAD`] (its next piece does
    /// not start a line).
    midline: bool,
    /// The line the resync walk is at failed as a request head: walk past it.
    skip_line: bool,
    /// Form bytes of an ambiguous request still to check line by line in the resync walk.
    form_left: u16,
    /// Bytes examined by the leading-line skip and the resync walk's line checks.
    walked: u64,
    /// Detected mid-stream ([`Http::resumed`]).
    midstream: bool,
    /// Mid-stream: responses to requests sent before Warden saw the session.
    unseen: u32,
    threats: crate::detect::Threats,
}

/// Mid-stream framing of HTTP/1 (module docs): at a turn boundary only, a complete response
/// head (sent by the server) or request head (sent by the client).
pub fn mid_head(b: &[u8], boundary: bool) -> Head {
    if !boundary {
        return Head::No;
    }
    let head = |role: Role| Head::Msg(Msg { role, proof: true, starts: true, ends: true, ..Msg::default() });
    let (resp, req) = (parser::sniff_response(b), parser::sniff_request(b));
    if resp == Sniff::Yes {
        return match parser::response(b) {
            Parse::Ok(..) => head(Role::Server),
            Parse::Incomplete(k) => Head::Need(k),
            Parse::Invalid => Head::No,
        };
    }
    if req == Sniff::Yes {
        return match parser::request(b) {
            Parse::Ok(..) => head(Role::Client),
            Parse::Incomplete(k) => Head::Need(k),
            Parse::Invalid => Head::No,
        };
    }
    if resp == Sniff::Maybe || req == Sniff::Maybe {
        return Head::Need(b.len() + 1);
    }
    Head::No
}

/// How HTTP/1 is recognised mid-stream (module docs): heads prove alone, never chain.
pub const MIDSTREAM: midstream::Framing = midstream::Framing { head: mid_head, follows: |_, _| false, chain: 0 };

/// What the first [`FORM_MAX`] bytes of a request body (of each chunk) are checked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum BodyCheck {
    /// Nothing.
    #[default]
    None,
    /// `application/x-www-form-urlencoded`: SQL injection and OGNL in its values.
    Form,
    /// XML (`Content-Type` `application/xml`, `text/xml`, `*+xml`, or a target ending `.xml`,
    /// which the Struts REST plugin also reads as XML): XStream gadget chains (S2-052).
    Xml,
    /// `multipart/form-data`: OGNL in the parts' `Content-Disposition` lines (S2-046).
    Multipart,
}

impl BodyCheck {
    fn of(content_type: Option<&[u8]>, target: &[u8]) -> BodyCheck {
        let path = target.split(|&c| c == b'?').next().unwrap_or_default();
        match content_type {
            Some(ct) if parser::is_form(ct) => BodyCheck::Form,
            Some(ct) if parser::is_multipart(ct) => BodyCheck::Multipart,
            Some(ct) if parser::is_xml(ct) => BodyCheck::Xml,
            _ if path.len() >= 4 && path[path.len() - 4..].eq_ignore_ascii_case(b".xml") => BodyCheck::Xml,
            _ => BodyCheck::None,
        }
    }
}

/// One step of the feed loop.
enum Step {
    /// Consumed this many bytes; go on.
    Took(usize),
    /// The next message needs at least this many bytes.
    Need(usize),
    /// Stop this direction after consuming this many bytes.
    Stop(usize),
    /// The bytes from here on are not HTTP/1 ([`Feed::Invalid`]).
    Invalid,
}

impl Http {
    /// The method of the first request, if seen.
    pub fn method(&self) -> Option<&str> {
        self.method.as_ref().map(|t| t.as_str())
    }

    /// The `Host` of the first request, if seen.
    pub fn host(&self) -> Option<&str> {
        self.host.as_ref().map(|t| t.as_str())
    }

    /// The target of the first request (at most 256 bytes), if seen.
    pub fn path(&self) -> Option<&str> {
        self.path.as_ref().map(|t| t.as_str())
    }

    /// The `User-Agent` of the first request (at most 128 bytes), if seen.
    pub fn user_agent(&self) -> Option<&str> {
        self.user_agent.as_ref().map(|t| t.as_str())
    }

    /// The `Upgrade` value of the first request that asked for one (at most 32 bytes).
    pub fn upgrade(&self) -> Option<&str> {
        self.upgrade.as_ref().map(|t| t.as_str())
    }

    /// A request head has started arriving (at least one byte of its request line) and is not
    /// complete yet: the fact `http_slowloris` ([`crate::detect::slowloris`]) watches. False
    /// between requests of a keep-alive connection, inside bodies and once the requests stopped
    /// being HTTP/1.
    pub fn awaiting_headers(&self) -> bool {
        self.phase[0] == Phase::Head && self.heads[0].scanned() > 0
    }

    /// Bytes of the incomplete request head received so far (0 when [`Http::awaiting_headers`]
    /// is false).
    pub fn head_bytes(&self) -> u32 {
        if self.phase[0] == Phase::Head {
            self.heads[0].scanned()
        } else {
            0
        }
    }

    /// Bytes this parser and its detectors examined so far: head scans and parses, chunk and
    /// trailer line searches, and the SQL injection checks ([`crate::detect::Threats::examined`]).
    /// A measure of work that stays proportional to the bytes fed however they were segmented
    /// (tests and `perf/src/bin/trickle.rs` check it).
    pub fn examined(&self) -> u64 {
        let mut n = self.threats.examined.saturating_add(self.walked);
        for d in 0..2 {
            n = n.saturating_add(self.heads[d].examined()).saturating_add(self.lines[d].examined());
        }
        n
    }

    /// The server answered `101 Switching Protocols` to an `Upgrade: h2c` request: hand the
    /// connection over to `Http2::after_upgrade` (see the module docs).
    pub fn h2c_switched(&self) -> bool {
        self.switched && self.upgrade.as_ref().is_some_and(|u| u.eq_ignore_ascii_case("h2c"))
    }

    fn request_head(&mut self, b: &[u8]) -> Step {
        if self.upgrade.is_some() {
            // After `Upgrade: h2c` the client sends the HTTP/2 preface once it has the 101:
            // leave it (and everything after) for the HTTP/2 parser.
            let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
            let n = b.len().min(preface.len());
            if b[..n] == preface[..n] {
                return if n < preface.len() { Step::Need(preface.len()) } else { Step::Stop(0) };
            }
        }
        // Empty lines before a request (RFC 9112 §2.2; nginx skips any number, python spaces
        // on the line): consumed as they come, a violation past MAX_LEAD or when whitespace.
        let lead = b.iter().take_while(|&&c| c == b'\r' || c == b'\n' || parser::is_ws(c)).count();
        if lead > 0 {
            self.walked = self.walked.saturating_add(lead as u64 + 1);
            self.lead = self.lead.saturating_add(u32::try_from(lead).unwrap_or(u32::MAX));
            if self.lead as usize > parser::MAX_LEAD || b[..lead].iter().any(|&c| parser::is_ws(c)) {
                self.violation = true;
            }
            return Step::Took(lead);
        }
        match self.heads[0].request(b) {
            Parse::Ok(req, n) => {
                self.lead = 0;
                self.skip_line = false;
                let idx = self.requests;
                self.requests = self.requests.saturating_add(1);
                if self.method.is_none() {
                    self.method = Some(text(req.method));
                    self.path = Some(text(req.target));
                    self.host = req.host.map(text);
                    self.user_agent = req.user_agent.map(text);
                    self.version = Some((req.major, req.minor));
                }
                if self.upgrade.is_none() {
                    self.upgrade = req.upgrade.map(text);
                }
                self.violation |= req.violation;
                for f in req.threats.iter() {
                    self.threats.record(f.id, Dir::ToServer, f.reason, f.evidence);
                }
                self.threats.http_target(Dir::ToServer, req.target);
                self.body = BodyCheck::of(req.content_type, req.target);
                self.body_pending = self.body != BodyCheck::None;
                self.chunk_noted = false;
                let kind = match req.method {
                    _ if req.simple || req.major == 0 => ReqKind::Simple,
                    b"HEAD" => ReqKind::Head,
                    b"CONNECT" => ReqKind::Connect,
                    _ => ReqKind::Other,
                };
                if idx.wrapping_sub(self.responses) < RING as u32 {
                    if let Some(k) = self.kinds.get_mut(idx as usize % RING) {
                        *k = kind;
                    }
                }
                if req.simple {
                    // No header section and no body; python reads field lines after it, nginx
                    // and Apache close: walk them as lines (a request among them is checked).
                    self.body_pending = false;
                    self.phase[0] = Phase::Resync;
                    self.resync_left = self.resync_left.max(parser::MAX_HEAD as u64);
                    return Step::Took(n);
                }
                let body = parser::request_framing(&req.lengths);
                if body.ambiguous {
                    // Servers can read this body differently: trust no length, walk what
                    // follows as lines (module docs).
                    self.violation = true;
                    self.phase[0] = Phase::Resync;
                    self.body_pending = false;
                    self.form_left = if self.body == BodyCheck::Form { FORM_MAX as u16 } else { 0 };
                    let widest = req.lengths.content_length_max.min(RESYNC_MAX);
                    self.resync_left = widest.saturating_add(parser::MAX_HEAD as u64);
                    return Step::Took(n);
                }
                self.phase[0] = body_phase(body.framing);
                Step::Took(n)
            }
            Parse::Incomplete(k) => Step::Need(k),
            Parse::Invalid if self.resync_left > 0 => {
                // Inside a resync window: walk past this line instead of ending HTTP.
                self.phase[0] = Phase::Resync;
                self.skip_line = true;
                Step::Took(0)
            }
            Parse::Invalid => {
                self.violation = true;
                Step::Invalid
            }
        }
    }

    /// One step of [`Phase::Resync`] on `b` (the to-server bytes from a line start): a line
    /// that is a request line goes back to [`Phase::Head`] without being consumed; any other
    /// line is checked for a request line at its end ([`parser::embedded_target`], SQL
    /// injection in its target), for form values when the ambiguous request was a form, and
    /// consumed. A line longer than [`parser::MAX_HEAD`] is consumed in pieces cut before its
    /// last word. When the window is spent, the bytes are not HTTP.
    fn resync(&mut self, b: &[u8]) -> Step {
        if self.resync_left == 0 {
            self.violation = true;
            return Step::Invalid;
        }
        let Some(i) = self.lines[0].find(b, parser::MAX_HEAD, b'\n') else {
            if b.len() < parser::MAX_HEAD {
                return Step::Need(b.len() + 1);
            }
            let piece = &b[..parser::MAX_HEAD];
            let cut = piece.iter().rposition(|&c| parser::is_ws(c)).map_or(piece.len(), |k| k + 1);
            self.check_resync_line(&piece[..cut]);
            self.midline = true;
            self.resync_left = self.resync_left.saturating_sub(cut as u64);
            return Step::Took(cut);
        };
        let line = &b[..=i];
        if !self.midline && !self.skip_line {
            self.walked = self.walked.saturating_add(line.len() as u64);
            if parser::is_request_line(line) {
                self.phase[0] = Phase::Head;
                return Step::Took(0);
            }
        }
        self.check_resync_line(line);
        self.midline = false;
        self.skip_line = false;
        self.resync_left = self.resync_left.saturating_sub(line.len() as u64);
        Step::Took(i + 1)
    }

    /// The checks of a line (or piece) the resync walk skips.
    fn check_resync_line(&mut self, line: &[u8]) {
        self.walked = self.walked.saturating_add(line.len() as u64);
        if let Some(target) = parser::embedded_target(line) {
            self.threats.http_target(Dir::ToServer, target);
        }
        if self.form_left > 0 {
            let n = line.len().min(usize::from(self.form_left));
            self.threats.http_form(Dir::ToServer, &line[..n]);
            self.form_left -= n as u16;
        }
    }

    /// Checks the first bytes of a request body (of a chunk) as its [`BodyCheck`] says.
    fn check_body(&mut self, first: &[u8]) {
        match self.body {
            BodyCheck::None => {}
            BodyCheck::Form => {
                self.threats.http_form(Dir::ToServer, first);
            }
            BodyCheck::Xml => {
                self.threats.struts_xml(Dir::ToServer, first);
            }
            BodyCheck::Multipart => {
                // The part headers' `Content-Disposition` lines (S2-046: OGNL in a filename).
                for line in first.split(|&c| c == b'\n') {
                    let cd = b"content-disposition:";
                    if line.len() > cd.len() && line[..cd.len()].eq_ignore_ascii_case(cd) {
                        self.threats.struts(Dir::ToServer, line, false, Some(line));
                    }
                }
            }
        }
    }

    /// Records a threat form of the current request's chunked framing, once per body (a
    /// violation).
    fn chunk_form(&mut self, f: Option<parser::Found<'_>>) {
        if let Some(f) = f {
            self.violation = true;
            if !self.chunk_noted {
                self.chunk_noted = true;
                self.threats.record(f.id, Dir::ToServer, f.reason, f.evidence);
            }
        }
    }

    /// A request's chunked framing failed at `rest` ([`parser::chunk_fault`],
    /// [`parser::crlf_fault`]): servers that read these chunks differently find another request
    /// boundary, so as after an ambiguous head no length is trusted and what follows is walked
    /// line by line ([`Phase::Resync`], at least [`parser::MAX_HEAD`] bytes), its requests
    /// parsed and checked. Recorded (`http_request_smuggling`, or `http_negative_body_length`
    /// for an implausible size) and a violation.
    fn chunk_fault(&mut self, f: parser::Found<'_>) {
        self.threats.record(f.id, Dir::ToServer, f.reason, f.evidence);
        self.violation = true;
        self.body_pending = false;
        self.form_left = 0;
        self.phase[0] = Phase::Resync;
        self.resync_left = self.resync_left.max(parser::MAX_HEAD as u64);
    }

    fn response_head(&mut self, b: &[u8]) -> Step {
        if self.midstream && self.requests <= self.responses && !matches!(parser::sniff_response(b), Sniff::No) {
            // Mid-stream: the answer to a request sent before Warden saw the session.
            self.unseen = self.unseen.saturating_add(1);
            self.requests = self.responses.saturating_add(1);
        }
        let idx = self.responses;
        let kind = if self.requests > idx && self.requests - idx <= RING as u32 {
            self.kinds.get(idx as usize % RING).copied().unwrap_or_default()
        } else {
            ReqKind::Other
        };
        if kind == ReqKind::Simple {
            // The answer to an HTTP/0.9 request is its body alone, until the connection
            // closes (unless the server answers with a status line anyway).
            match parser::sniff_response(b) {
                Sniff::No => {
                    self.responses = self.responses.saturating_add(1);
                    self.phase[1] = Phase::UntilClose;
                    return Step::Took(0);
                }
                Sniff::Maybe => return Step::Need(b.len() + 1),
                Sniff::Yes => {}
            }
        }
        match self.heads[1].response(b) {
            Parse::Ok(resp, n) => {
                if resp.status == 101 {
                    // Switching protocols: what follows is not HTTP/1. Leave the 101 head
                    // unconsumed for the next protocol's parser.
                    self.switched = true;
                    self.status.get_or_insert(101);
                    self.responses = self.responses.saturating_add(1);
                    if self.upgrade.is_none() {
                        self.upgrade = resp.upgrade.map(text);
                    }
                    self.phase[0] = Phase::Stopped;
                    return Step::Stop(0);
                }
                if (100..200).contains(&resp.status) {
                    return Step::Took(n); // interim (100 Continue, 103 Early Hints): no body
                }
                self.responses = self.responses.saturating_add(1);
                self.status.get_or_insert(resp.status);
                // Differing lengths: the first is read (as by RFC 9112 §6.3 clients that do not
                // refuse the response), recorded.
                self.violation |= resp.lengths.conflict || (resp.lengths.transfer_encoding && resp.lengths.content_lengths > 0);
                if kind == ReqKind::Connect && (200..300).contains(&resp.status) {
                    self.tunnel = true;
                    self.phase[0] = Phase::Stopped;
                    return Step::Stop(n);
                }
                self.phase[1] = body_phase(parser::response_framing(resp.status, kind, &resp.lengths));
                Step::Took(n)
            }
            Parse::Incomplete(k) => Step::Need(k),
            Parse::Invalid => {
                self.violation = true;
                Step::Invalid
            }
        }
    }
}

/// The phase that reads a body framed by `f`.
fn body_phase(f: Framing) -> Phase {
    match f {
        Framing::None => Phase::Head,
        Framing::Length(n) => Phase::Body(n),
        Framing::Chunked => Phase::ChunkSize,
        Framing::UntilClose => Phase::UntilClose,
    }
}

/// In the feed loop: leaves the chunked framing of a request for the resync walk
/// ([`Http::chunk_fault`]), which starts at the line that failed.
macro_rules! return_resync {
    ($self:ident, $fault:expr) => {{
        $self.chunk_fault($fault);
        $self.heads[0].reset();
        $self.lines[0].reset();
        continue;
    }};
}

/// Maps a parse of a framing line to a step, moving to `next` on success.
fn line_step<T>(p: Parse<T>, violation: &mut bool, next: impl FnOnce(T) -> Phase, phase: &mut Phase) -> Step {
    match p {
        Parse::Ok(v, n) => {
            *phase = next(v);
            Step::Took(n)
        }
        Parse::Incomplete(k) => Step::Need(k),
        Parse::Invalid => {
            *violation = true;
            Step::Invalid
        }
    }
}

impl AppParser for Http {
    const APP: App = App::Http;
    const PORTS: &'static [u16] = &[80, 8080, 8000, 8008, 8888, 3128];
    const TRANSPORT: Transport = Transport::Tcp;
    const BECOMES: &'static [App] = &[App::Http2, App::Grpc];
    const MIDSTREAM: Option<midstream::Framing> = Some(MIDSTREAM);

    fn resumed() -> Self {
        Http { midstream: true, ..Http::default() }
    }

    fn probe(dir: Dir, data: &[u8]) -> Probe {
        let s = match dir {
            Dir::ToServer => parser::sniff_request(data),
            Dir::ToClient => parser::sniff_response(data),
        };
        match s {
            Sniff::Yes => Probe::Match,
            Sniff::Maybe => Probe::NeedMore,
            Sniff::No => Probe::NoMatch,
        }
    }

    fn feed(&mut self, dir: Dir, data: &[u8]) -> Feed {
        let d = dir as usize;
        let mut off = 0usize;
        loop {
            let rest = data.get(off..).unwrap_or_default();
            let phase = self.phase[d];
            if phase == Phase::Stopped {
                return if off == 0 { Feed::Done } else { Feed::Consumed(off) };
            }
            if rest.is_empty() {
                return Feed::Consumed(off);
            }
            let step = match phase {
                Phase::Head => match dir {
                    Dir::ToServer => self.request_head(rest),
                    Dir::ToClient => self.response_head(rest),
                },
                Phase::Body(owed) | Phase::ChunkData(owed) if dir == Dir::ToServer && self.body_pending => {
                    // Check the body's first bytes in one piece (the engine buffers them).
                    let want = owed.min(FORM_MAX as u64) as usize;
                    match rest.get(..want) {
                        Some(first) => {
                            self.check_body(first);
                            self.body_pending = false;
                            Step::Took(0)
                        }
                        None => Step::Need(want),
                    }
                }
                Phase::Body(owed) | Phase::ChunkData(owed) => {
                    let k = owed.min(rest.len() as u64);
                    let left = owed - k;
                    self.phase[d] = match (phase, left) {
                        (Phase::Body(_), 0) => Phase::Head,
                        (Phase::Body(_), _) => Phase::Body(left),
                        (_, 0) => Phase::ChunkEnd,
                        _ => Phase::ChunkData(left),
                    };
                    Step::Took(k as usize)
                }
                Phase::ChunkSize => {
                    let p = parser::chunk_size(rest, &mut self.lines[d]);
                    if dir == Dir::ToServer {
                        self.body_pending = self.body != BodyCheck::None;
                        match p {
                            Parse::Ok(size, n) => self.chunk_form(parser::chunk_line_form(&rest[..n], size)),
                            Parse::Invalid => return_resync!(self, parser::chunk_fault(rest)),
                            Parse::Incomplete(_) => {}
                        }
                    }
                    line_step(p, &mut self.violation, |n| if n == 0 { Phase::Trailer } else { Phase::ChunkData(n) }, &mut self.phase[d])
                }
                Phase::ChunkEnd => {
                    let p = parser::crlf(rest);
                    if dir == Dir::ToServer {
                        match p {
                            Parse::Ok((), 1) => self.chunk_form(parser::chunk_line_form(&rest[..1], 0)),
                            Parse::Invalid => return_resync!(self, parser::crlf_fault(rest)),
                            _ => {}
                        }
                    }
                    line_step(p, &mut self.violation, |()| Phase::ChunkSize, &mut self.phase[d])
                }
                Phase::Trailer => {
                    let p = parser::trailer_line(rest, &mut self.lines[d]);
                    if dir == Dir::ToServer {
                        match p {
                            Parse::Ok(_, n) => self.chunk_form(parser::trailer_form(&rest[..n])),
                            Parse::Invalid => return_resync!(self, parser::trailer_fault(rest)),
                            Parse::Incomplete(_) => {}
                        }
                    }
                    line_step(p, &mut self.violation, |end| if end { Phase::Head } else { Phase::Trailer }, &mut self.phase[d])
                }
                Phase::UntilClose => Step::Took(rest.len()),
                Phase::Resync => self.resync(rest),
                Phase::Stopped => Step::Stop(0),
            };
            match step {
                Step::Took(n) => off += n,
                Step::Need(k) => return Feed::Need { consumed: off, at_least: k },
                Step::Stop(n) => {
                    off += n;
                    self.phase[d] = Phase::Stopped;
                }
                Step::Invalid => {
                    self.phase[d] = Phase::Stopped;
                    return Feed::Invalid { consumed: off };
                }
            }
            // The next item starts here: searches start over.
            self.heads[d].reset();
            self.lines[d].reset();
        }
    }

    fn opaque(&self, dir: Dir) -> u64 {
        if dir == Dir::ToServer && self.body_pending {
            // The first bytes of a request body are checked (forms, XML, multipart).
            return 0;
        }
        match self.phase[dir as usize] {
            Phase::Body(owed) | Phase::ChunkData(owed) => owed,
            Phase::UntilClose => u64::MAX,
            _ => 0,
        }
    }

    fn gap(&mut self, dir: Dir, len: usize) -> bool {
        let d = dir as usize;
        self.heads[d].reset();
        self.lines[d].reset();
        if dir == Dir::ToServer {
            self.body_pending = false;
        }
        let len = len as u64;
        self.phase[d] = match self.phase[d] {
            // A hole inside a body of known length keeps the framing.
            Phase::Body(owed) if len < owed => Phase::Body(owed - len),
            Phase::Body(owed) if len == owed => Phase::Head,
            Phase::ChunkData(owed) if len < owed => Phase::ChunkData(owed - len),
            Phase::ChunkData(owed) if len == owed => Phase::ChunkEnd,
            Phase::UntilClose => Phase::UntilClose,
            Phase::Stopped => Phase::Stopped,
            _ => {
                self.gap = true;
                self.phase[d] = Phase::Stopped;
                return false;
            }
        };
        true
    }

    fn l7(&self, out: &mut Map<String, Value>) {
        if let Some(m) = &self.method {
            out.insert("method".into(), m.as_str().into());
        }
        if let Some(h) = &self.host {
            out.insert("host".into(), h.as_str().into());
        }
        if let Some(p) = &self.path {
            out.insert("path".into(), p.as_str().into());
        }
        if let Some(u) = &self.user_agent {
            out.insert("user_agent".into(), u.as_str().into());
        }
        if let Some((major, minor)) = self.version {
            out.insert("version".into(), format!("{major}.{minor}").into());
        }
        if let Some(s) = self.status {
            out.insert("status".into(), s.into());
        }
        out.insert("requests".into(), self.requests.saturating_sub(self.unseen).into());
        out.insert("responses".into(), self.responses.into());
        if self.unseen > 0 {
            out.insert("unseen_requests".into(), self.unseen.into());
        }
        if let Some(u) = &self.upgrade {
            out.insert("upgrade".into(), u.as_str().into());
        }
        if self.switched {
            out.insert("switched".into(), true.into());
        }
        if self.tunnel {
            out.insert("tunnel".into(), true.into());
        }
        if self.violation {
            out.insert("violation".into(), true.into());
        }
        if self.gap {
            out.insert("gap".into(), true.into());
        }
    }

    fn threats(&self) -> Option<&crate::detect::Threats> {
        Some(&self.threats)
    }
}

#[cfg(test)]
mod tests;
