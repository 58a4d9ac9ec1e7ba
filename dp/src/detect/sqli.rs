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

/// Contexts a vulnerable application pastes a value into (prefix, suffix).
const CONTEXTS: [(&[u8], &[u8]); 4] = [
    (b"SELECT a FROM t WHERE c=", b""),
    (b"SELECT a FROM t WHERE c='", b"'"),
    (b"SELECT a FROM t WHERE c=\"", b"\""),
    (b"SELECT a FROM t WHERE `", b"`=1"),
];

/// Runs the statement rules (MySQL quoting, [`StatementDetector::lenient`]: unbalanced quotes and
/// parentheses are no finding, ordinary text has those: `O'Reilly`) on `v` pasted into each
/// context a vulnerable application builds (`WHERE c=<v>`, `WHERE c='<v>'`, `WHERE c="<v>"`,
/// ``WHERE `<v>`=1``, in a [`MAX_CONTEXT`]-byte stack buffer, `v` cut to fit): the first shape
/// found.
pub fn in_contexts(v: &[u8]) -> Option<Reason> {
    in_contexts_counted(v).0
}

/// [`in_contexts`], with the bytes examined: each of the four statements built (at most
/// [`MAX_CONTEXT`] bytes) and scanned, re-scans included
/// ([`StatementDetector::scan_counted`]).
pub fn in_contexts_counted(v: &[u8]) -> (Option<Reason>, u64) {
    let mut work = 0u64;
    let mut buf = [0u8; MAX_CONTEXT];
    for (pre, post) in CONTEXTS {
        let n = v.len().min(MAX_CONTEXT - pre.len() - post.len());
        buf[..pre.len()].copy_from_slice(pre);
        buf[pre.len()..pre.len() + n].copy_from_slice(&v[..n]);
        buf[pre.len() + n..pre.len() + n + post.len()].copy_from_slice(post);
        let stmt = &buf[..pre.len() + n + post.len()];
        let d = StatementDetector {
            dialect: Dialect::Mysql,
            truncated: n < v.len(),
            lenient: true,
            ..StatementDetector::default()
        };
        let (f, w) = d.scan_counted(stmt);
        work = work.saturating_add(stmt.len() as u64).saturating_add(w);
        if let Some(f) = f {
            return (Some(f.reason), work);
        }
    }
    (None, work)
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
}
