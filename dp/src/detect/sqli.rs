//! SQL injection detection, behind [`SqliDetector`] so the engine can be swapped and measured.
//!
//! The detector is libinjection's tokenizer-and-fingerprint method (`libinjectionrs`, a Rust
//! port of libinjection 3.x): the input is tokenised as SQL in each quoting context (none,
//! single, double quote), folded, and its fingerprint looked up in libinjection's list of known
//! injection shapes.

/// A SQL injection detector over raw bytes.
pub trait SqliDetector {
    /// True when `input` (a SQL statement or a decoded request parameter) is an injection.
    fn is_injection(&self, input: &[u8]) -> bool;
}

/// libinjection's fingerprint detector (`libinjectionrs`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Libinjection;

impl SqliDetector for Libinjection {
    fn is_injection(&self, input: &[u8]) -> bool {
        libinjectionrs::detect_sqli(input).is_injection()
    }
}

/// Inputs longer than this are checked on their first this-many bytes (bytes).
pub const MAX_INPUT: usize = 8192;

/// Checks `input` with the default detector ([`Libinjection`]).
pub fn is_sql_injection(input: &[u8]) -> bool {
    if input.is_empty() {
        return false;
    }
    Libinjection.is_injection(&input[..input.len().min(MAX_INPUT)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_payloads_and_benign_statements() {
        assert!(is_sql_injection(b"1' OR '1'='1"));
        assert!(is_sql_injection(b"1 UNION ALL SELECT NULL,NULL,NULL-- -"));
        assert!(!is_sql_injection(b"42"));
        assert!(!is_sql_injection(b"hello world"));
        assert!(!is_sql_injection(b""));
    }
}
