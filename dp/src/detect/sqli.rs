//! SQL injection detectors, behind [`SqliDetector`] so each call site picks the right one and
//! the engines can be swapped and measured (`perf/src/bin/sqli-rates.rs`).
//!
//! - [`Libinjection`]: libinjection's tokenizer-and-fingerprint method (`libinjectionrs`, a Rust
//!   port of libinjection 3.x) for **user input**: the input is tokenised as SQL in each quoting
//!   context (none, single, double quote), folded, and its fingerprint looked up in
//!   libinjection's list of injection shapes. It flags any complete SQL statement, so it is
//!   only used on request parameters.
//! - [`HttpValue`]: what the HTTP parsers run on each URL-decoded path, query-string value and
//!   form value: values made only of letters, digits and `-._~` are skipped, the rest goes to
//!   libinjection and, when it finds nothing, to the statement rules on the value pasted into
//!   the statements a vulnerable application builds ([`in_contexts`]).
//! - [`StatementDetector`](super::sql::StatementDetector): for SQL statements sent by database
//!   clients (does the statement *contain* an injected fragment?), see [`super::sql`].

use super::sql::{Dialect, Finding, Reason, StatementDetector};

/// A SQL injection detector over raw bytes.
pub trait SqliDetector {
    /// True when `input` (a SQL statement or a decoded request parameter, depending on the
    /// detector) is an injection.
    fn is_injection(&self, input: &[u8]) -> bool;
}

/// libinjection's fingerprint detector (`libinjectionrs`), for user input.
#[derive(Debug, Clone, Copy, Default)]
pub struct Libinjection;

impl SqliDetector for Libinjection {
    fn is_injection(&self, input: &[u8]) -> bool {
        // `SqliState::detect` is what `detect_sqli` runs, without computing the fingerprint a
        // second time for a result we do not use.
        !input.is_empty()
            && libinjectionrs::SqliState::new(&input[..input.len().min(MAX_INPUT)], libinjectionrs::SqliFlags::FLAG_NONE)
                .detect()
    }
}

/// Inputs longer than this are checked on their first this-many bytes (bytes).
pub const MAX_INPUT: usize = 8192;

/// True when `v` cannot carry SQL syntax: only ASCII letters, digits and `-._~` (RFC 3986
/// unreserved characters).
pub fn is_plain(v: &[u8]) -> bool {
    v.iter().all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~'))
}

/// The detector for one decoded HTTP value (path, query-string value, form value).
#[derive(Debug, Clone, Copy)]
pub struct HttpValue {
    /// Also run the statement rules on the value pasted into a statement ([`in_contexts`]).
    pub rules: bool,
}

impl Default for HttpValue {
    /// libinjection plus the statement rules.
    fn default() -> Self {
        HttpValue { rules: true }
    }
}

impl HttpValue {
    /// The reason `v` is an injection, if it is one.
    pub fn check(&self, v: &[u8]) -> Option<Reason> {
        self.check_counted(v).0
    }

    /// [`HttpValue::check`], with the bytes examined: `v` once for [`is_plain`], at most
    /// [`MAX_INPUT`] bytes given to libinjection, and what [`in_contexts_counted`] examined.
    /// Bounded by a small multiple of `v.len()` plus a constant.
    pub fn check_counted(&self, v: &[u8]) -> (Option<Reason>, u64) {
        let mut work = v.len() as u64;
        if is_plain(v) {
            return (None, work);
        }
        work += v.len().min(MAX_INPUT) as u64;
        if Libinjection.is_injection(v) {
            return (Some(Reason::Libinjection), work);
        }
        if !self.rules {
            return (None, work);
        }
        let (r, w) = in_contexts_counted(v);
        (r, work.saturating_add(w))
    }
}

impl SqliDetector for HttpValue {
    fn is_injection(&self, input: &[u8]) -> bool {
        self.check(input).is_some()
    }
}

/// What every context's statement starts with.
const COMMON: &[u8] = b"SELECT a FROM t WHERE ";

/// Contexts a vulnerable application pastes a value into: what follows [`COMMON`] before the
/// value, and the suffix.
const CONTEXTS: [(&[u8], &[u8]); 4] = [(b"c=", b""), (b"c='", b"'"), (b"c=\"", b"\""), (b"`", b"`=1")];

/// Values up to this long are pasted into a small stack buffer (bytes).
const SMALL: usize = 192;

/// Runs the statement rules (MySQL quoting, [`StatementDetector::lenient`]: unbalanced quotes and
/// parentheses are no finding, ordinary text has those: `O'Reilly`) on `v` pasted into each
/// context a vulnerable application builds (`WHERE c=<v>`, `WHERE c='<v>'`, `WHERE c="<v>"`,
/// ``WHERE `<v>`=1``, in a [`MAX_CONTEXT`]-byte stack buffer, `v` cut to fit): the first shape
/// found.
pub fn in_contexts(v: &[u8]) -> Option<Reason> {
    in_contexts_counted(v).0
}

/// [`in_contexts`], with the bytes examined: the common start of the statements once
/// (`SELECT a FROM t WHERE `, tokenised once for the four: [`StatementDetector::prefix`]),
/// then each statement built and scanned from there, re-scans included
/// ([`StatementDetector::scan_after`]).
pub fn in_contexts_counted(v: &[u8]) -> (Option<Reason>, u64) {
    let d = StatementDetector { dialect: Dialect::Mysql, lenient: true, ..StatementDetector::default() };
    let Some(p) = d.prefix(COMMON) else {
        return (None, 0); // never: the prefix is plain words (a test checks it)
    };
    let mut work = p.examined();
    let r = if v.len() <= SMALL { contexts::<{ SMALL + 32 }>(d, &p, v, &mut work) } else { contexts::<MAX_CONTEXT>(d, &p, v, &mut work) };
    (r, work)
}

/// The four statements for `v` in an `N`-byte buffer (`v` cut to fit [`MAX_CONTEXT`]).
fn contexts<const N: usize>(d: StatementDetector, p: &super::sql::Prefix, v: &[u8], work: &mut u64) -> Option<Reason> {
    let mut buf = [0u8; N];
    buf[..COMMON.len()].copy_from_slice(COMMON);
    for (pre, post) in CONTEXTS {
        let head = COMMON.len() + pre.len();
        let n = v.len().min(MAX_CONTEXT - head - post.len()).min(N - head - post.len());
        buf[COMMON.len()..head].copy_from_slice(pre);
        buf[head..head + n].copy_from_slice(&v[..n]);
        buf[head + n..head + n + post.len()].copy_from_slice(post);
        let stmt = &buf[..head + n + post.len()];
        let d = StatementDetector { truncated: n < v.len(), ..d };
        let (f, w) = d.scan_after(p, stmt);
        *work = work.saturating_add((stmt.len() - COMMON.len()) as u64).saturating_add(w);
        if let Some(f) = f {
            return Some(f.reason);
        }
    }
    None
}

/// Size of the buffer [`in_contexts`] builds statements in (bytes).
pub const MAX_CONTEXT: usize = 4096;

/// Checks `input` (user input) with libinjection.
pub fn is_sql_injection(input: &[u8]) -> bool {
    Libinjection.is_injection(input)
}

/// Checks a complete statement in `dialect` with the default statement detector.
pub fn statement(dialect: Dialect, truncated: bool, stmt: &[u8]) -> Option<Finding> {
    StatementDetector { dialect, truncated, ..StatementDetector::default() }.scan(stmt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_payloads_and_benign_values() {
        assert!(is_sql_injection(b"1' OR '1'='1"));
        assert!(is_sql_injection(b"1 UNION ALL SELECT NULL,NULL,NULL-- -"));
        assert!(!is_sql_injection(b"42"));
        assert!(!is_sql_injection(b"hello world"));
        assert!(!is_sql_injection(b""));
        // libinjection flags a whole legitimate statement: why statements need their own detector.
        assert!(is_sql_injection(b"SELECT id FROM t WHERE id = 42"));
        let v = HttpValue::default();
        assert_eq!(v.check(b"apple"), None);
        assert_eq!(v.check(b"O'Reilly books"), None);
        assert_eq!(v.check(b"1' OR '1'='1"), Some(Reason::Libinjection));
    }

    /// `in_contexts` as it was first written: each whole statement scanned from its start.
    fn in_contexts_reference(v: &[u8]) -> Option<Reason> {
        let full: [(&[u8], &[u8]); 4] = [
            (b"SELECT a FROM t WHERE c=", b""),
            (b"SELECT a FROM t WHERE c='", b"'"),
            (b"SELECT a FROM t WHERE c=\"", b"\""),
            (b"SELECT a FROM t WHERE `", b"`=1"),
        ];
        for (pre, post) in full {
            let n = v.len().min(MAX_CONTEXT - pre.len() - post.len());
            let stmt = [pre, &v[..n], post].concat();
            let d = StatementDetector { dialect: Dialect::Mysql, truncated: n < v.len(), lenient: true, ..StatementDetector::default() };
            if let Some(f) = d.scan(&stmt) {
                return Some(f.reason);
            }
        }
        None
    }

    #[test]
    fn contexts_scanned_after_a_shared_prefix_find_the_same() {
        use crate::app::testutil::{corpus_flows, Rng};
        use crate::detect::urlenc::{decode_into, values, MAX_VALUE};
        let d = StatementDetector { dialect: Dialect::Mysql, lenient: true, ..StatementDetector::default() };
        assert!(d.prefix(COMMON).is_some(), "the common start is a clean prefix");
        let mut inputs: Vec<Vec<u8>> = Vec::new();
        for f in corpus_flows("sqlinjection-http.pcap").iter().filter(|f| !f.to_server.is_empty()) {
            let line = f.to_server.split(|&c| c == b'\r').next().unwrap_or_default();
            let target = line.split(|&c| c == b' ').nth(1).unwrap_or_default();
            for v in values(target.splitn(2, |&c| c == b'?').nth(1).unwrap_or_default()) {
                let mut buf = [0u8; MAX_VALUE];
                let n = decode_into(v, true, &mut buf);
                inputs.push(buf[..n].to_vec());
                inputs.push(v.to_vec());
            }
        }
        let alphabet: &[u8] = b"'\"`\\()/*-#;=<> 01aORNDULSECTnul,.@$x\n";
        for a in alphabet {
            inputs.push(vec![*a]);
            for b in alphabet {
                inputs.push(vec![*a, *b]);
            }
        }
        let mut rng = Rng(99);
        for _ in 0..20_000 {
            let len = rng.below(40);
            inputs.push((0..len).map(|_| alphabet[rng.below(alphabet.len())]).collect());
        }
        let words: [&[u8]; 12] = [b" OR ", b" AND ", b"1=1", b"UNION SELECT NULL", b"--", b"#", b"SLEEP(5)", b"'", b")", b"CHAR(1,2,3,4)", b";DROP TABLE x", b"/*"];
        for _ in 0..20_000 {
            let mut v = Vec::new();
            for _ in 0..rng.below(6) + 1 {
                v.extend_from_slice(words[rng.below(words.len())]);
            }
            inputs.push(v);
        }
        inputs.push(vec![b'x'; MAX_CONTEXT + 10]);
        inputs.push([b"1 OR 1=1 ".as_slice(), &vec![b'a'; MAX_CONTEXT]].concat());
        let mut found = 0;
        for v in &inputs {
            let want = in_contexts_reference(v);
            assert_eq!(in_contexts(v), want, "{:?}", String::from_utf8_lossy(v));
            found += usize::from(want.is_some());
        }
        assert!(found > 1000 && found < inputs.len(), "{found} of {}", inputs.len());
    }
}
