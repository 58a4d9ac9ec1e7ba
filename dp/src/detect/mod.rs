//! Threat detection over what the app parsers extract (SQL text, HTTP request parts).
//!
//! Parsers own a fixed-size [`Threats`] in their per-session state and hand it the text they
//! see: [`Threats::sql`] / [`Threats::sql_in`] for SQL statements sent by a database client
//! (statement detector, [`sql`]), [`Threats::http_target`], [`Threats::http_form`] and
//! [`Threats::http_param`] for HTTP request parts (URL-decoded values checked with
//! libinjection, [`sqli::HttpValue`]). The detectors run at once, on the full text (not the
//! truncated copy kept for the record), and the first detection is kept as evidence. The engine
//! reads it back through [`crate::app::AppParser::threats`] for the record's `threats` array and
//! the control socket's threat events.

pub mod auth_fail;
#[cfg(test)]
mod captures_tests;
pub mod catalogue;
pub mod dns_tunnel;
pub mod ognl;
pub mod slowloris;
pub mod sql;
pub mod sqli;
pub mod urlenc;

pub use catalogue::{Action, Severity, ThreatId, ThreatSet};

use crate::app::{text, Dir, Text};
use sql::Dialect;
use urlenc::{needs_decoding, values, with_decoded};

/// Bytes of evidence kept per threat (the offending text, truncated).
pub const EVIDENCE: usize = 128;
/// Bytes of a statement kept as evidence before the token that completed a finding.
const EVIDENCE_BEFORE: usize = 48;

/// One detection: what, in which direction, why, with the (truncated) text that triggered it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Threat {
    /// The kind.
    pub id: ThreatId,
    /// Direction of the bytes that carried it.
    pub dir: Dir,
    /// The detector's reason ([`Reason::as_str`]: `"libinjection"`, `"tautology"`, ...).
    pub reason: &'static str,
    /// The triggering text, at most [`EVIDENCE`] bytes.
    pub evidence: Text<EVIDENCE>,
}

/// Most further kinds a parser's state keeps with their reason (beyond the first detection).
pub const OTHER_KINDS: usize = 3;

/// Per-session threat state of a parser: the first detection with its evidence, the kinds
/// seen, the first detection of up to [`OTHER_KINDS`] further kinds (without evidence), and how
/// many there were. Fixed size, no heap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Threats {
    /// The first detection.
    pub first: Option<Threat>,
    /// Every kind detected in this session.
    pub kinds: ThreatSet,
    /// The first detection (kind, direction, reason) of further kinds, in order.
    pub others: [Option<(ThreatId, Dir, &'static str)>; OTHER_KINDS],
    /// Detections in this session (saturating).
    pub count: u32,
    /// Bytes the detectors examined in this session (decoding, libinjection's input, the
    /// statements scanned, re-scans included; saturating): a measure of work that stays
    /// proportional to the bytes checked (tests and `perf/src/bin/trickle.rs` check it).
    pub examined: u64,
}

impl Threats {
    /// Records a detection of `id` in `dir` for `reason` with `evidence`.
    pub fn record(&mut self, id: ThreatId, dir: Dir, reason: &'static str, evidence: &[u8]) {
        self.count = self.count.saturating_add(1);
        let new_kind = self.kinds.insert(id);
        if self.first.is_none() {
            self.first = Some(Threat { id, dir, reason, evidence: text(evidence) });
        } else if new_kind {
            if let Some(slot) = self.others.iter_mut().find(|o| o.is_none()) {
                *slot = Some((id, dir, reason));
            }
        }
    }

    /// Checks one complete SQL statement in standard quoting ([`Dialect::Ansi`]: PostgreSQL,
    /// SQL Server, Oracle; TDS SQLBatch and TNS call this) for an injected fragment; true when it
    /// has one.
    pub fn sql(&mut self, dir: Dir, statement: &[u8]) -> bool {
        self.sql_in(dir, Dialect::Ansi, false, statement)
    }

    /// Checks one SQL statement with `dialect`'s quoting rules; `truncated` when `statement` is
    /// only the first bytes of it (its end is then not checked for balance).
    pub fn sql_in(&mut self, dir: Dir, dialect: Dialect, truncated: bool, statement: &[u8]) -> bool {
        let (finding, work) = sql::StatementDetector { dialect, truncated, ..Default::default() }.scan_counted(statement);
        self.work(work);
        match finding {
            Some(f) => {
                let from = f.at.saturating_sub(EVIDENCE_BEFORE).min(statement.len());
                self.record(ThreatId::SqlInjection, dir, f.reason.as_str(), &statement[from..]);
                true
            }
            None => false,
        }
    }

    /// Checks one already-decoded HTTP value (a query-string or form value, a path, an HTTP/2
    /// `:path` part) with libinjection; true when it is an injection.
    pub fn http_param(&mut self, dir: Dir, value: &[u8]) -> bool {
        let (reason, work) = sqli::HttpValue::default().check_counted(value);
        self.work(work);
        match reason {
            Some(r) => {
                self.record(ThreatId::SqlInjection, dir, r.as_str(), value);
                true
            }
            None => false,
        }
    }

    /// Checks one raw (percent-encoded) value: decoded (`plus`: `+` is a space), and as sent
    /// when decoding changed it.
    fn raw_value(&mut self, dir: Dir, raw: &[u8], plus: bool) -> bool {
        // Decoding reads at most `raw`; `needs_decoding` reads it again.
        self.work(2 * raw.len());
        with_decoded(raw, plus, |v| self.http_param(dir, v)) || (needs_decoding(raw, plus) && self.http_param(dir, raw))
    }

    /// Checks `text` for an Apache Struts OGNL injection ([`ognl::scan`]; `probe`: also the
    /// arithmetic probes) and records it (`apache_struts_rce`) with `evidence`, or with the text
    /// from a little before the finding when `evidence` is `None`. True when found.
    pub fn struts(&mut self, dir: Dir, text: &[u8], probe: bool, evidence: Option<&[u8]>) -> bool {
        self.work(text.len());
        let Some(hit) = ognl::scan(text, probe) else { return false };
        let ev = evidence.unwrap_or_else(|| &text[hit.at.saturating_sub(EVIDENCE_BEFORE).min(text.len())..]);
        self.record(ThreatId::ApacheStrutsRce, dir, hit.reason, ev);
        true
    }

    /// Checks the first bytes of an XML request body for the XStream gadget chains of the
    /// Struts REST plugin exploit (S2-052, [`ognl::xml`]); records `apache_struts_rce`.
    pub fn struts_xml(&mut self, dir: Dir, body: &[u8]) -> bool {
        self.work(3 * body.len());
        let Some(hit) = ognl::xml(body) else { return false };
        self.record(ThreatId::ApacheStrutsRce, dir, hit.reason, &body[hit.at.saturating_sub(EVIDENCE_BEFORE).min(body.len())..]);
        true
    }

    /// OGNL in raw text and, when decoding changes it, in its percent-decoded form (`plus`:
    /// `+` is a space); one finding at most.
    fn struts_decoded(&mut self, dir: Dir, raw: &[u8], plus: bool, probe: bool) -> bool {
        if self.struts(dir, raw, probe, None) {
            return true;
        }
        if !needs_decoding(raw, plus) {
            return false;
        }
        self.work(raw.len());
        with_decoded(raw, plus, |v| self.struts(dir, v, probe, None))
    }

    /// Checks a request target (`/path?query`, origin or absolute form): the URL-decoded path,
    /// and each query-string value (decoded, `+` as space, and as sent) for SQL injection; the
    /// whole target, as sent and decoded, for OGNL (Struts namespaces in the path, parameter
    /// names and values). Returns true when one was an injection (each finding is counted).
    pub fn http_target(&mut self, dir: Dir, target: &[u8]) -> bool {
        // Splitting: the `?`, the `#` and the values' separators.
        self.work(3 * target.len());
        // `+` stays itself: Struts namespaces are paths, and scanners probe with `${(1+1)}`.
        let ognl = self.struts_decoded(dir, target, false, true);
        let (path, query) = match target.iter().position(|&c| c == b'?') {
            Some(i) => (&target[..i], &target[i + 1..]),
            None => (target, &[][..]),
        };
        let query = query.split(|&c| c == b'#').next().unwrap_or_default();
        let mut hit = self.raw_value(dir, path, false);
        for v in values(query) {
            hit |= self.raw_value(dir, v, true);
        }
        hit | ognl
    }

    /// Checks an `application/x-www-form-urlencoded` body (or its first bytes): each value,
    /// decoded and as sent, for SQL injection; the whole body, as sent and decoded, for OGNL.
    pub fn http_form(&mut self, dir: Dir, body: &[u8]) -> bool {
        self.work(2 * body.len());
        let mut hit = self.struts_decoded(dir, body, true, false);
        for v in values(body) {
            hit |= self.raw_value(dir, v, true);
        }
        hit
    }

    /// Counts `n` examined bytes.
    fn work(&mut self, n: impl TryInto<u64>) {
        self.examined = self.examined.saturating_add(n.try_into().unwrap_or(u64::MAX));
    }

    /// Adds `other`'s detections (its first with its evidence, its further kinds without) and
    /// counts; no allocation.
    pub fn absorb(&mut self, other: &Threats) {
        let count = self.count;
        if let Some(f) = other.first {
            self.record(f.id, f.dir, f.reason, f.evidence.as_bytes());
        }
        for &(id, dir, reason) in other.others.iter().flatten() {
            self.record(id, dir, reason, &[]);
        }
        self.count = count.saturating_add(other.count);
        self.examined = self.examined.saturating_add(other.examined);
    }

    /// True when nothing was detected.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use urlenc::{decode_into, MAX_VALUE};

    /// A query string of about `n` bytes made of `pair` repeated.
    fn query(pair: &[u8], n: usize) -> Vec<u8> {
        let mut t = b"/item?".to_vec();
        while t.len() + pair.len() <= n {
            t.extend_from_slice(pair);
        }
        t
    }

    #[test]
    fn absorbing_keeps_every_kind_and_the_counts() {
        let mut a = Threats::default();
        a.record(ThreatId::Tls1_0, Dir::ToClient, "server_negotiates_tls1_0", b"ServerHello");
        let mut b = Threats::default();
        b.record(ThreatId::TlsCipherOverflow, Dir::ToServer, "record_length_over_limit", b"record");
        b.record(ThreatId::TlsHeartbleed, Dir::ToServer, "padding_under_16", b"");
        b.record(ThreatId::TlsHeartbleed, Dir::ToServer, "padding_under_16", b"");
        a.absorb(&b);
        assert_eq!(a.count, 4);
        assert_eq!(a.first.unwrap().id, ThreatId::Tls1_0);
        let others: Vec<_> = a.others.iter().flatten().map(|o| o.0).collect();
        assert_eq!(others, [ThreatId::TlsCipherOverflow, ThreatId::TlsHeartbleed]);
        // Into an empty one: the other's first with its evidence.
        let mut c = Threats::default();
        c.absorb(&b);
        assert_eq!((c.first.unwrap().evidence.as_str(), c.count), ("record", 3));
    }

    #[test]
    fn long_query_strings_cost_linear_work() {
        // Work per byte of target (decoding, libinjection's input, the statements built per
        // value and their scans) stays the same from 1 KiB to 60 KiB, whatever the values:
        // many tiny values (each costs the context statements' fixed prefix), long values of
        // unbalanced quotes and comments (re-scans), plain words (skipped).
        let shapes: [(&[u8], f64); 6] = [
            (b"a=%27&", 100.0),
            (b"id=1%27%20OR%201%3D1&", 10.0),
            (b"q=apple&", 8.0),
            (&[b"v=".as_slice(), &b"%27%5C".repeat(700), b"&"].concat(), 30.0),
            (&[b"v=".as_slice(), &b"/*+".repeat(1500), b"&"].concat(), 30.0),
            (&[b"v=".as_slice(), &b"x".repeat(5000), b"'&"].concat(), 30.0),
        ];
        for (pair, bound) in shapes {
            let mut per_byte = Vec::new();
            for n in [1024usize, 4096, 16 * 1024, 60 * 1024] {
                let t = query(pair, n.max(pair.len() + 6));
                let mut th = Threats::default();
                th.http_target(Dir::ToServer, &t);
                let r = th.examined as f64 / t.len() as f64;
                assert!(r <= bound, "{:?}… at {n}: {r:.1} bytes examined per byte", String::from_utf8_lossy(&pair[..pair.len().min(12)]));
                per_byte.push(r);
            }
            let (lo, hi) = per_byte.iter().fold((f64::MAX, 0f64), |(lo, hi), &r| (lo.min(r), hi.max(r)));
            assert!(hi <= lo * 1.6 + 1.0, "{:?}: {per_byte:?}", String::from_utf8_lossy(&pair[..pair.len().min(12)]));
        }
    }

    #[test]
    fn the_memo_keeps_detection_identical() {
        // The values of the capture of sqlmap against a vulnerable app pasted into the four
        // statements the HTTP detector builds: the lenient lexer with the memo of unclosed
        // runs yields the same tokens as without (so the rules find the same).
        use crate::app::testutil::corpus_flows;
        let mut checked = 0;
        for f in corpus_flows("sqlinjection-http.pcap").iter().filter(|f| !f.to_server.is_empty()) {
            let line = f.to_server.split(|&c| c == b'\r').next().unwrap_or_default();
            let target = line.split(|&c| c == b' ').nth(1).unwrap_or_default();
            let query = target.splitn(2, |&c| c == b'?').nth(1).unwrap_or_default();
            for v in values(query) {
                let mut buf = [0u8; MAX_VALUE];
                let n = decode_into(v, true, &mut buf);
                for (pre, post) in [("c=", ""), ("c='", "'"), ("c=\"", "\""), ("`", "`=1")] {
                    let stmt = [b"SELECT a FROM t WHERE ", pre.as_bytes(), &buf[..n], post.as_bytes()].concat();
                    // `scan` lexes with the memo; the plain lenient lexer scans again.
                    let plain: Vec<_> = sql::Lexer::lenient(&stmt, Dialect::Mysql).collect();
                    let mut memo = sql::Unclosed::new();
                    let memoised: Vec<_> = sql::Lexer::lenient_with(&stmt, Dialect::Mysql, &mut memo).collect();
                    assert_eq!(plain, memoised, "{:?}", String::from_utf8_lossy(&stmt));
                    checked += 1;
                }
            }
        }
        assert!(checked > 1000, "{checked}");
    }
}
