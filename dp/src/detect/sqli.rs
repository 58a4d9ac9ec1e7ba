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
//!   libinjection.
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
        !input.is_empty() && libinjectionrs::detect_sqli(&input[..input.len().min(MAX_INPUT)]).is_injection()
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
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpValue;

impl HttpValue {
    /// The reason `v` is an injection, if it is one.
    pub fn check(&self, v: &[u8]) -> Option<Reason> {
        if is_plain(v) {
            return None;
        }
        Libinjection.is_injection(v).then_some(Reason::Libinjection)
    }
}

impl SqliDetector for HttpValue {
    fn is_injection(&self, input: &[u8]) -> bool {
        self.check(input).is_some()
    }
}

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
        assert_eq!(HttpValue.check(b"apple"), None);
        assert_eq!(HttpValue.check(b"1' OR '1'='1"), Some(Reason::Libinjection));
    }
}
