//! Threat detection over what the app parsers extract (SQL text, HTTP request parts).
//!
//! Parsers own a fixed-size [`Threats`] in their per-session state and hand it the text they
//! see (`sql` for SQL statements, `http_*` for HTTP request parts); the detectors run at once,
//! on the full text (not the truncated copy kept for the record), and the first detection is
//! kept as evidence. The engine reads it back through [`crate::app::AppParser::threats`] for
//! the record's `threats` array and the control socket's threat events.

pub mod sqli;

use crate::app::{text, Dir, Text};

/// Bytes of evidence kept per threat (the offending text, truncated).
pub const EVIDENCE: usize = 128;

/// A kind of threat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ThreatId {
    /// SQL injection in SQL text or an HTTP request.
    SqlInjection,
}

impl ThreatId {
    /// Name used in records and events (`"sql_injection"`).
    pub fn as_str(self) -> &'static str {
        match self {
            ThreatId::SqlInjection => "sql_injection",
        }
    }
}

/// One detection: what, in which direction, with the (truncated) text that triggered it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Threat {
    /// The kind.
    pub id: ThreatId,
    /// Direction of the bytes that carried it.
    pub dir: Dir,
    /// The triggering text, at most [`EVIDENCE`] bytes.
    pub evidence: Text<EVIDENCE>,
}

/// Per-session threat state of a parser: the first detection and how many there were. Fixed
/// size, no heap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Threats {
    /// The first detection.
    pub first: Option<Threat>,
    /// Detections in this session (saturating).
    pub count: u32,
}

impl Threats {
    /// Records a detection of `id` in `dir` with `evidence`.
    pub fn record(&mut self, id: ThreatId, dir: Dir, evidence: &[u8]) {
        self.count = self.count.saturating_add(1);
        if self.first.is_none() {
            self.first = Some(Threat {
                id,
                dir,
                evidence: text(evidence),
            });
        }
    }

    /// Checks one SQL statement (MySQL COM_QUERY, PostgreSQL Query/Parse, TDS SQLBatch, TNS,
    /// CQL QUERY/PREPARE text) for SQL injection; returns true when it was one.
    pub fn sql(&mut self, dir: Dir, statement: &[u8]) -> bool {
        let hit = sqli::is_sql_injection(statement);
        if hit {
            self.record(ThreatId::SqlInjection, dir, statement);
        }
        hit
    }

    /// True when nothing was detected.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}
