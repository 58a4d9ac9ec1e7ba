//! Redis: RESP2 and RESP3 (the Redis "RESP protocol spec": RESP2 types `*` `$` `+` `-` `:`,
//! RESP3 types `_` `,` `#` `!` `=` `(` `%` `~` `>` `|`, streamed strings `$?`/`;` and streamed
//! aggregates `*?`/`.`; "Sending commands to a Redis server" for client arrays of bulk strings;
//! "Inline commands"; `HELLO 3` protocol switch).
//!
//! Written here rather than with the `redis-protocol` crate: its decoders (`decode`,
//! `decode_range`, the `Bytes` variants) need the whole frame in one buffer and build a frame tree
//! (a `Vec` per aggregate, owned strings in the owned variants). A 512 MB bulk would have to be
//! buffered whole, and every message would allocate. This module is a streaming RESP walker
//! instead: it reads one header line at a time ([`parser`]), keeps the open aggregates as a
//! fixed stack of remaining-element counters (depth capped at [`MAX_DEPTH`]) and skips bulk
//! payloads by remembering how many bytes are left, so nothing is buffered beyond one header line
//! (at most [`parser::MAX_LINE`] bytes) or one small bulk whose content it wants (a command name,
//! the `HELLO` version, a blob error: at most [`CAPTURE`] bytes).
//!
//! Extracted: command names (first [`MAX_NAMES`] distinct, uppercased, 24 bytes each), command
//! count (arrays and inline commands), reply count, server errors (count and the first error
//! text, 128 bytes), RESP3 (`HELLO 3` from the client, or RESP3-only types from the server).
//! After a gap the client direction resynchronises on the next `\r\n*` (a gap inside a bulk being
//! skipped just shortens the skip); the server direction stops.
//!
//! Bytes that cannot be RESP (no type byte where a token starts, a bad length, an aggregate
//! deeper than [`MAX_DEPTH`], an inline `POST` or `Host:` line, which Redis closes the
//! connection on) answer [`Feed::Invalid`]: the engine detects the app again from there.

pub mod parser;

use serde_json::{Map, Value};

use super::{text, App, AppParser, Dir, Feed, Probe, Text, Transport};
use crate::rescan::Resume;
use parser::{Header, Line};

/// Deepest aggregate nesting followed; deeper is a violation.
pub const MAX_DEPTH: usize = 16;
/// Command names remembered (first distinct ones).
pub const MAX_NAMES: usize = 8;
/// Bulks whose content matters (command name, `HELLO` argument, blob error) are read whole up to
/// this size (bytes); longer ones are skipped.
pub const CAPTURE: u64 = 64;
/// Largest element count of a client command array accepted by the probe.
const PROBE_MAX_ARGS: i64 = 1 << 20;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Kind {
    /// Array, set, push, map: counted elements.
    #[default]
    Counted,
    /// Attribute: counted elements, then it does not count as an element of its parent.
    Attr,
    /// Streamed aggregate: ends with `.`.
    Unbounded,
    /// Streamed string: `;` chunks until `;0`.
    StreamedStr,
}

#[derive(Debug, Clone, Copy, Default)]
struct Level {
    left: u64,
    kind: Kind,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Mode {
    #[default]
    Active,
    Resync,
    Stopped,
}

/// Per-direction walker state.
#[derive(Debug, Clone, Default)]
struct Walker {
    stack: [Level; MAX_DEPTH],
    depth: usize,
    /// Payload bytes (CRLF included) still to skip.
    skip: u64,
    /// Discarding the rest of an overlong line (up to LF).
    skip_line: bool,
    mode: Mode,
    /// Client: index of the next element of the current top-level command array.
    arg: u32,
    /// Client: the current command is `HELLO`.
    hello: bool,
    /// How far the search for the end of the line being received got (a line trickled in
    /// small segments is searched once).
    line: Resume,
}

/// Per-session Redis state: fixed size, no heap.
#[derive(Debug, Clone, Default)]
pub struct Redis {
    w: [Walker; 2],
    names: [Text<24>; MAX_NAMES],
    n_names: usize,
    commands: u64,
    inline_commands: u64,
    replies: u64,
    errors: u64,
    first_error: Option<Text<128>>,
    resp3: bool,
    hello3: bool,
    violation: bool,
    gap: bool,
}

enum Step {
    Took(usize),
    Need(usize),
    Bad,
}

impl Redis {
    /// Bytes examined searching for line ends (both directions): a measure of work that stays
    /// proportional to the bytes fed however they were segmented (tests).
    pub fn examined(&self) -> u64 {
        self.w.iter().map(|w| w.line.examined()).sum()
    }

    /// Command names seen (first [`MAX_NAMES`] distinct, uppercased).
    pub fn command_names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().take(self.n_names).map(|t| t.as_str())
    }

    /// Number of client commands (RESP arrays and inline commands).
    pub fn commands(&self) -> u64 {
        self.commands
    }

    /// Whether RESP3 is in use (`HELLO 3` sent, or RESP3-only reply types seen).
    pub fn resp3(&self) -> bool {
        self.resp3
    }

    fn record_name(&mut self, raw: &[u8]) {
        let mut buf = [0u8; 24];
        let n = raw.len().min(buf.len());
        for (o, c) in buf.iter_mut().zip(raw) {
            *o = c.to_ascii_uppercase();
        }
        let name: Text<24> = text(&buf[..n]);
        if self.n_names < MAX_NAMES && !self.names[..self.n_names].contains(&name) {
            self.names[self.n_names] = name;
            self.n_names += 1;
        }
    }

    fn record_error(&mut self, t: &[u8]) {
        self.errors = self.errors.saturating_add(1);
        if self.first_error.is_none() {
            self.first_error = Some(text(t));
        }
    }

    /// One element at the current depth of direction `d` is complete: update the counters of the
    /// open aggregates, closing those that are full.
    fn element_done(&mut self, d: usize) {
        let w = &mut self.w[d];
        loop {
            if w.depth == 0 {
                break;
            }
            let top = &mut w.stack[w.depth - 1];
            if w.depth == 1 {
                w.arg = w.arg.saturating_add(1);
            }
            match top.kind {
                Kind::Unbounded | Kind::StreamedStr => return,
                Kind::Counted | Kind::Attr => {
                    top.left = top.left.saturating_sub(1);
                    if top.left > 0 {
                        return;
                    }
                    let attr = top.kind == Kind::Attr;
                    w.depth -= 1;
                    if attr {
                        return;
                    }
                }
            }
        }
        // A top-level frame is complete.
        w.arg = 0;
        w.hello = false;
        if d == Dir::ToServer as usize {
            self.commands = self.commands.saturating_add(1);
        } else {
            self.replies = self.replies.saturating_add(1);
        }
    }

    /// A bulk payload (or streamed-string chunk) has been consumed.
    fn after_payload(&mut self, d: usize) {
        let w = &self.w[d];
        if w.depth > 0 && w.stack[w.depth - 1].kind == Kind::StreamedStr {
            return;
        }
        self.element_done(d);
    }

    fn push(&mut self, d: usize, level: Level) -> bool {
        let w = &mut self.w[d];
        match w.stack.get_mut(w.depth) {
            Some(slot) => {
                *slot = level;
                w.depth += 1;
                true
            }
            None => false,
        }
    }

    /// Whether the content of a bulk of type `kind` at the current position is wanted.
    fn wants(&self, d: usize, kind: u8) -> bool {
        let w = &self.w[d];
        if d == Dir::ToServer as usize {
            kind == b'$' && w.depth == 1 && w.stack[0].kind == Kind::Counted && (w.arg == 0 || (w.arg == 1 && w.hello))
        } else {
            kind == b'!'
        }
    }

    fn content(&mut self, d: usize, kind: u8, body: &[u8]) {
        if d == Dir::ToServer as usize {
            if self.w[d].arg == 0 {
                self.record_name(body);
                self.w[d].hello = body.eq_ignore_ascii_case(b"HELLO");
            } else if body == b"3" {
                self.hello3 = true;
                self.resp3 = true;
            }
        } else if kind == b'!' {
            self.record_error(body);
        }
    }

    /// One inline command line (client direction, top level, not starting with `*`).
    fn inline(&mut self, d: usize, rest: &[u8]) -> Step {
        let (l, n, complete) = match parser::inline_line(rest, &mut self.w[d].line) {
            Some((l, n)) => (l, n, true),
            None if rest.len() < parser::MAX_LINE => return Step::Need(rest.len() + 1),
            None => (rest, 0, false),
        };
        let mut words = l.split(|&c| c == b' ' || c == b'\t').filter(|w| !w.is_empty());
        let Some(first) = words.next() else {
            return Step::Took(n); // empty line: ignored by Redis too
        };
        if first.eq_ignore_ascii_case(b"POST") || first.eq_ignore_ascii_case(b"Host:") {
            // An HTTP request: Redis treats these as a cross-protocol attack and closes the
            // connection ("Possible SECURITY ATTACK detected").
            return Step::Bad;
        }
        self.record_name(first);
        if first.eq_ignore_ascii_case(b"HELLO") && words.next() == Some(b"3") {
            self.hello3 = true;
            self.resp3 = true;
        }
        self.inline_commands = self.inline_commands.saturating_add(1);
        if complete {
            self.element_done(d);
        } else {
            self.w[d].skip_line = true;
        }
        Step::Took(n)
    }

    /// One RESP token (header line, and a small wanted bulk whole).
    fn token(&mut self, d: usize, rest: &[u8]) -> Step {
        let (l, n) = match parser::line_from(rest, &mut self.w[d].line) {
            Line::Ok(l, n) => (l, n),
            Line::Partial => return Step::Need(rest.len() + 1),
            Line::TooLong => {
                let first = rest.first().copied().unwrap_or(0);
                let in_str = self.top_kind(d) == Some(Kind::StreamedStr);
                if in_str || !matches!(first, b'+' | b'-' | b'(') {
                    return Step::Bad;
                }
                if first == b'-' {
                    let end = rest.iter().position(|&c| c == b'\r' || c == b'\n').unwrap_or(rest.len());
                    self.record_error(&rest[1..end.max(1)]);
                }
                self.w[d].skip_line = true;
                return Step::Took(0);
            }
        };
        let Some(h) = parser::header(l) else { return Step::Bad };
        if d == Dir::ToClient as usize && l.first().is_some_and(|&k| parser::is_resp3_type(k)) {
            self.resp3 = true;
        }
        let in_str = self.top_kind(d) == Some(Kind::StreamedStr);
        if in_str != matches!(h, Header::Bulk(b';', _)) {
            return Step::Bad;
        }
        match h {
            Header::Simple(_) | Header::Scalar(_) => self.element_done(d),
            Header::Error(t) => {
                self.record_error(t);
                self.element_done(d);
            }
            Header::End => {
                if self.top_kind(d) != Some(Kind::Unbounded) {
                    return Step::Bad;
                }
                self.w[d].depth -= 1;
                self.element_done(d);
            }
            Header::Streamed(k) => {
                let kind = if k == b'$' { Kind::StreamedStr } else { Kind::Unbounded };
                if !self.push(d, Level { left: 0, kind }) {
                    return Step::Bad;
                }
            }
            Header::Aggregate(k, count) => {
                if count == 0 {
                    if k != b'|' {
                        self.element_done(d);
                    }
                } else {
                    let kind = if k == b'|' { Kind::Attr } else { Kind::Counted };
                    if !self.push(d, Level { left: count, kind }) {
                        return Step::Bad;
                    }
                }
            }
            Header::Bulk(b';', 0) => {
                self.w[d].depth -= 1; // in_str checked above: the top is the streamed string
                self.element_done(d);
            }
            Header::Bulk(k, len) => {
                if k == b'!' && d == Dir::ToClient as usize && self.first_error.is_some() {
                    self.errors = self.errors.saturating_add(1);
                } else if self.wants(d, k) {
                    if len <= CAPTURE {
                        let end = n + len as usize;
                        let Some(crlf) = rest.get(end..end + 2) else { return Step::Need(end + 2) };
                        if crlf != b"\r\n" {
                            return Step::Bad;
                        }
                        self.content(d, k, &rest[n..end]);
                        self.after_payload(d);
                        return Step::Took(end + 2);
                    }
                    let avail = &rest[n..];
                    let prefix = &avail[..avail.len().min(CAPTURE as usize)];
                    self.content(d, k, prefix);
                }
                self.w[d].skip = len + 2;
            }
        }
        Step::Took(n)
    }

    fn top_kind(&self, d: usize) -> Option<Kind> {
        let w = &self.w[d];
        w.depth.checked_sub(1).and_then(|i| w.stack.get(i)).map(|l| l.kind)
    }

    fn stop(&mut self, d: usize, data_len: usize) -> Feed {
        self.w[d].mode = Mode::Stopped;
        if self.w[1 - d].mode == Mode::Stopped {
            Feed::Done
        } else {
            Feed::Consumed(data_len)
        }
    }

    /// Client direction after a gap: skip to the next `\r\n*` and start over at the top level.
    fn resync(&mut self, d: usize, data: &[u8]) -> Option<usize> {
        let i = data.windows(3).position(|w| w == b"\r\n*")?;
        let w = &mut self.w[d];
        *w = Walker::default();
        Some(i + 2)
    }
}

impl AppParser for Redis {
    const APP: App = App::Redis;
    const PORTS: &'static [u16] = &[6379, 6380, 26379];
    const TRANSPORT: Transport = Transport::Tcp;

    fn probe(dir: Dir, data: &[u8]) -> Probe {
        match dir {
            Dir::ToServer => probe_client(data),
            Dir::ToClient => probe_server(data),
        }
    }

    fn feed(&mut self, dir: Dir, data: &[u8]) -> Feed {
        let d = dir as usize;
        let mut off = 0;
        match self.w[d].mode {
            Mode::Stopped => return self.stop(d, data.len()),
            Mode::Resync => match self.resync(d, data) {
                Some(n) => off = n,
                None => return Feed::Consumed(data.len().saturating_sub(2)),
            },
            Mode::Active => {}
        }
        loop {
            let w = &mut self.w[d];
            if w.skip > 0 {
                let avail = (data.len() - off) as u64;
                let n = w.skip.min(avail);
                off += n as usize;
                w.skip -= n;
                if w.skip > 0 {
                    return Feed::Consumed(off);
                }
                self.after_payload(d);
                continue;
            }
            if w.skip_line {
                match data[off..].iter().position(|&c| c == b'\n') {
                    None => return Feed::Consumed(data.len()),
                    Some(i) => {
                        off += i + 1;
                        w.skip_line = false;
                        self.element_done(d);
                        continue;
                    }
                }
            }
            let rest = &data[off..];
            let Some(&first) = rest.first() else { return Feed::Consumed(off) };
            let step = if dir == Dir::ToServer && w.depth == 0 && first != b'*' {
                self.inline(d, rest)
            } else {
                self.token(d, rest)
            };
            match step {
                Step::Took(n) => {
                    off += n;
                    self.w[d].line.reset();
                }
                Step::Need(k) => return Feed::Need { consumed: off, at_least: k },
                Step::Bad => {
                    // No RESP type where one must start, an impossible length or nesting: the
                    // stream stopped being RESP (Redis itself answers a protocol error and
                    // closes the connection).
                    self.violation = true;
                    self.w[d].mode = Mode::Stopped;
                    return Feed::Invalid { consumed: off };
                }
            }
        }
    }

    fn gap(&mut self, dir: Dir, len: usize) -> bool {
        let d = dir as usize;
        self.gap = true;
        let w = &mut self.w[d];
        w.line.reset();
        if w.mode == Mode::Stopped {
            return true;
        }
        if w.mode == Mode::Active && w.skip >= len as u64 {
            w.skip -= len as u64; // lost bytes were payload being skipped anyway
            return true;
        }
        // Resynchronising skips what comes before the next `\r\n*` unread: not validated.
        w.mode = if dir == Dir::ToServer { Mode::Resync } else { Mode::Stopped };
        false
    }

    fn l7(&self, out: &mut Map<String, Value>) {
        out.insert("resp3".into(), self.resp3.into());
        out.insert("commands".into(), self.command_names().collect::<Vec<_>>().into());
        out.insert("command_count".into(), self.commands.into());
        if self.inline_commands > 0 {
            out.insert("inline_commands".into(), self.inline_commands.into());
        }
        out.insert("replies".into(), self.replies.into());
        out.insert("errors".into(), self.errors.into());
        if let Some(e) = &self.first_error {
            out.insert("first_error".into(), e.as_str().into());
        }
        if self.violation {
            out.insert("violation".into(), true.into());
        }
        if self.gap {
            out.insert("gap".into(), true.into());
        }
    }
}

/// Whether a partial header line (no CRLF yet) can still become a valid header of type `kind`.
fn partial_header_ok(p: &[u8]) -> bool {
    let Some((&kind, body)) = p.split_first() else { return true };
    let body = body.strip_suffix(b"\r").unwrap_or(body);
    if body.contains(&b'\r') || body.contains(&b'\n') {
        return false;
    }
    match kind {
        b'+' | b'-' => body.iter().all(|&c| c >= 0x20 && c != 0x7f),
        b'$' | b'*' | b'%' | b'~' | b'>' | b'|' | b'!' | b'=' | b':' | b'(' => {
            body.len() <= 20 && body.iter().all(|&c| c.is_ascii_digit() || c == b'-' || c == b'?')
        }
        b',' => body.len() <= 64 && body.iter().all(|&c| c.is_ascii_alphanumeric() || b"+-.".contains(&c)),
        b'#' => body.len() <= 1 && body.iter().all(|&c| c == b't' || c == b'f'),
        b'_' => body.is_empty(),
        _ => false,
    }
}

/// Client probe: a RESP array whose first element is a bulk string holding a plausible command
/// name, or an inline command from [`parser::INLINE_COMMANDS`].
fn probe_client(b: &[u8]) -> Probe {
    let Some(&first) = b.first() else { return Probe::NeedMore };
    if first != b'*' {
        return probe_inline(b);
    }
    let (count, n) = match parser::line(b) {
        Line::Ok(l, n) => match parser::header(l) {
            Some(Header::Aggregate(b'*', c)) if (1..=PROBE_MAX_ARGS as u64).contains(&c) => (c, n),
            _ => return Probe::NoMatch,
        },
        Line::Partial if b.len() <= 10 && partial_header_ok(b) => return Probe::NeedMore,
        _ => return Probe::NoMatch,
    };
    let _ = count;
    let rest = &b[n..];
    let (len, m) = match parser::line(rest) {
        Line::Ok(l, m) => match parser::header(l) {
            Some(Header::Bulk(b'$', len)) if (1..=32).contains(&len) => (len as usize, m),
            _ => return Probe::NoMatch,
        },
        Line::Partial if rest.first().is_none_or(|&c| c == b'$') && rest.len() <= 4 && partial_header_ok(rest) => {
            return Probe::NeedMore
        }
        _ => return Probe::NoMatch,
    };
    let body = &rest[m..];
    let name = &body[..body.len().min(len)];
    if !parser::plausible_command_prefix(name) {
        return Probe::NoMatch;
    }
    match body.get(len..len + 2) {
        Some(b"\r\n") => Probe::Match,
        Some(_) => Probe::NoMatch,
        None if body.len() == len + 1 && body[len] != b'\r' => Probe::NoMatch,
        None => Probe::NeedMore,
    }
}

fn probe_inline(b: &[u8]) -> Probe {
    let end = b.iter().position(|&c| c == b' ' || c == b'\r' || c == b'\n').unwrap_or(b.len());
    let word = &b[..end];
    let known = |w: &[u8], whole: bool| {
        parser::INLINE_COMMANDS.iter().any(|c| {
            let c = c.as_bytes();
            if whole {
                c.eq_ignore_ascii_case(w)
            } else {
                c.len() >= w.len() && c[..w.len()].eq_ignore_ascii_case(w)
            }
        })
    };
    if end == b.len() {
        return if word.len() <= 16 && known(word, false) { Probe::NeedMore } else { Probe::NoMatch };
    }
    let tail = &b[end..];
    if !known(word, true) && !redis_only_form(word, tail) {
        return Probe::NoMatch;
    }
    // The rest of the line: printable, ends with LF within 256 bytes; IRC's `PING :x` excluded.
    if tail.starts_with(b" :") {
        return Probe::NoMatch;
    }
    for (i, &c) in tail.iter().enumerate().take(256) {
        match c {
            b'\n' => return Probe::Match,
            b'\r' if tail.get(i + 1).is_none_or(|&n| n == b'\n') => {}
            0x20..=0x7e => {}
            _ => return Probe::NoMatch,
        }
    }
    if tail.len() >= 256 {
        Probe::NoMatch
    } else {
        Probe::NeedMore
    }
}

/// Inline `SET` and `AUTH` lines in the forms only Redis takes (its inline parser splits on
/// spaces and honours quotes): `SET key value [options]` but not memcached's storage command
/// `set key flags exptime bytes [noreply]` (numbers after the key); `AUTH [user] password` but
/// not the SASL `AUTH <mechanism>` of SMTP, POP3 and IMAP (RFC 4954 §4, RFC 5034 §4) nor a bare
/// `AUTH`. `tail` starts at the byte after the command word; only its first line is read.
fn redis_only_form(word: &[u8], tail: &[u8]) -> bool {
    let line = &tail[..tail.iter().position(|&c| c == b'\n').unwrap_or(tail.len()).min(256)];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut args = line.split(|&c| c == b' ').filter(|a| !a.is_empty());
    let numeric = |a: &[u8]| !a.is_empty() && a.iter().all(u8::is_ascii_digit);
    if word.eq_ignore_ascii_case(b"SET") {
        let (Some(_key), Some(value)) = (args.next(), args.next()) else { return false };
        let rest: Vec<&[u8]> = args.take(3).collect();
        let memcached = numeric(value) && rest.len() >= 2 && numeric(rest[0]) && numeric(rest[1]);
        return !memcached;
    }
    if word.eq_ignore_ascii_case(b"AUTH") {
        const SASL: &[&[u8]] = &[
            b"PLAIN", b"LOGIN", b"CRAM-MD5", b"DIGEST-MD5", b"GSSAPI", b"XOAUTH2", b"OAUTHBEARER", b"EXTERNAL",
            b"ANONYMOUS", b"NTLM", b"SCRAM-SHA-1", b"SCRAM-SHA-256", b"SCRAM-SHA-1-PLUS", b"SCRAM-SHA-256-PLUS",
        ];
        let Some(first) = args.next() else { return false };
        return !SASL.iter().any(|m| m.eq_ignore_ascii_case(first)) && args.nth(1).is_none();
    }
    false
}

/// Server probe, conservative: a reply only Redis sends (`+PONG`, `+QUEUED`, an integer, a bulk,
/// an aggregate whose first element is valid, a RESP3 type, a Redis-specific error code), or two
/// valid replies in a row. A lone `+OK` or `-ERR` line (also POP3) stays undecided.
fn probe_server(b: &[u8]) -> Probe {
    probe_server_frame(b, false)
}

fn probe_server_frame(b: &[u8], second: bool) -> Probe {
    if b.is_empty() {
        return Probe::NeedMore;
    }
    let (l, n) = match parser::line(b) {
        Line::Ok(l, n) => (l, n),
        Line::Partial if partial_header_ok(b) && !b.starts_with(b";") && !b.starts_with(b".") => {
            return Probe::NeedMore
        }
        _ => return Probe::NoMatch,
    };
    let Some(h) = parser::header(l) else { return Probe::NoMatch };
    let rest = &b[n..];
    match h {
        _ if second => Probe::Match,
        Header::Simple(s) if s == b"PONG" || s == b"QUEUED" => Probe::Match,
        Header::Error(e) if parser::REDIS_ERRORS.iter().any(|c| e.starts_with(c.as_bytes())) => Probe::Match,
        Header::Simple(s) | Header::Error(s) => {
            if s.iter().any(|&c| c < 0x20 || c == 0x7f) {
                Probe::NoMatch
            } else {
                probe_server_frame(rest, true)
            }
        }
        Header::Scalar(_) => Probe::Match,
        Header::Bulk(b';', _) | Header::End => Probe::NoMatch,
        Header::Bulk(_, len) => {
            let want = (len as usize).min(32);
            if len <= 32 {
                match rest.get(want..want + 2) {
                    Some(b"\r\n") => Probe::Match,
                    Some(_) => Probe::NoMatch,
                    None => Probe::NeedMore,
                }
            } else if rest.len() >= want {
                Probe::Match
            } else {
                Probe::NeedMore
            }
        }
        Header::Aggregate(_, 0) => Probe::Match,
        Header::Aggregate(..) | Header::Streamed(_) => {
            if rest.is_empty() {
                return Probe::NeedMore;
            }
            match parser::line(rest) {
                Line::Ok(l, _) if parser::header(l).is_some() => Probe::Match,
                Line::Partial if partial_header_ok(rest) => Probe::NeedMore,
                _ => Probe::NoMatch,
            }
        }
    }
}

#[cfg(test)]
mod tests;
