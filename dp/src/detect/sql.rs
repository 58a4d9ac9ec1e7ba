//! Statement-level SQL injection detection: does a SQL statement, as a database client sent it,
//! *contain* an injected fragment?
//!
//! libinjection classifies user input (a parameter value) and flags any complete statement, so
//! the database protocols need their own detector; there is no crate for this, so it is written
//! here. The statement (at most [`MAX_STATEMENT`] bytes) is tokenised once, without allocation,
//! with the quoting rules of its [`Dialect`] (doubled quotes everywhere; backslash escapes and
//! `"…"` strings, `#` comments, `-- ` comments and `/*! … */` executable comments in MySQL;
//! `E'…'` and `$tag$…$tag$` strings and nested block comments otherwise; `[…]` identifiers in
//! T-SQL; `//` comments in CQL). Text inside a correctly closed literal is never looked at: a
//! payload that an application escaped properly is a string, not an injection.
//!
//! Then the token stream is checked for shapes that application queries do not have
//! ([`Reason`]):
//! - a comparison of two constants after `AND`/`OR`/`XOR`/`NOT`/`(`/`WHEN` (`OR 1=1`,
//!   `AND 8571=8571`, `OR 'a'='a'`, `OR 2>1`, `ELT(7385=7385,1)`), or `OR <constant>` ending a
//!   condition; a comparison right after `WHERE`/`ON`/`HAVING` (`WHERE 1=1 AND …`, the query
//!   builders' idiom) is allowed;
//! - `UNION [ALL|DISTINCT] SELECT` whose column list has a bare `NULL` or only constants, after a
//!   `WHERE`, or with only `NULL` columns;
//! - a line comment ending the statement right after a literal, `NULL`, a name or `)` in a
//!   statement with a `WHERE` or `UNION` (the `-- ` / `#` that cuts off the rest of the
//!   application's query);
//! - a stacked statement after a literal of a `WHERE` (`…WHERE id=1; DROP …`) that is a
//!   DDL/EXEC/DECLARE/WAITFOR statement, reads a system catalog, or ends in such a comment;
//! - time functions (`SLEEP`, `BENCHMARK`, `PG_SLEEP`, `WAITFOR DELAY|TIME`,
//!   `DBMS_PIPE.RECEIVE_MESSAGE`) and heavy calls (`RANDOMBLOB`, `ZEROBLOB`, `GENERATE_SERIES`,
//!   `REPEAT`, `REPLICATE` with a literal of seven or more digits);
//! - error-based extraction: `EXTRACTVALUE`/`UPDATEXML`/`GTID_SUBSET`/`JSON_KEYS` over a
//!   `CONCAT`, hex literal, `CHAR` or sub-select, `EXP(~(`, `RAND(0)*2`, `CAST(… version() … AS
//!   NUMERIC)`, Oracle's `CTXSYS.DRITHSX.SN` / `UTL_INADDR` / `DBMS_UTILITY.SQLID_TO_SQLHASH` /
//!   `ORD_DICOM.GETMAPPINGXPATH`;
//! - a system catalog (`information_schema`, `sqlite_master`, `pg_catalog`, `pg_*`, `mysql.user`,
//!   `sysobjects`, `all_tables`, `RDB$…`, `MSysAccessObjects`, `SYSIBM.…`, …) named after a
//!   `WHERE` or `UNION` in a statement whose first table is not a catalog;
//! - a string built from character codes (`CHAR(113,118,…)`, four or more codes in `CHAR`/`CHR`
//!   calls) or a `CONCAT` with a hex literal (`CONCAT(0x71786a6b71,…)`), sqlmap's banners;
//! - an unterminated string, quoted identifier or block comment, or parentheses that close more
//!   than they open or stay open (a statement cut by the protocol window, `truncated`, is not
//!   checked at its end);
//! - command execution and file access (`xp_cmdshell`, `sys_eval`, `LOAD_FILE(`, `INTO
//!   OUTFILE|DUMPFILE`).
//!
//! Optionally ([`Fragments`]) libinjection is also run on the statement's tail starting at each
//! literal that follows a comparison operator inside a `WHERE`, or at each string literal; both
//! are measured in `perf/RESULTS.md` ("SQL injection detection").

use arrayvec::ArrayVec;

use super::sqli::{Libinjection, SqliDetector};

/// Longest statement prefix examined (bytes); longer statements are checked on this prefix as
/// if truncated.
pub const MAX_STATEMENT: usize = 8192;
/// Most libinjection fragment checks per statement ([`Fragments`]).
pub const MAX_FRAGMENTS: usize = 16;

/// Quoting and comment rules of the statement's database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dialect {
    /// Standard SQL as PostgreSQL, Oracle and SQL Server read it: `''` doubling only, `"…"`
    /// identifiers, `E'…'` strings with backslash escapes, `$tag$…$tag$` strings, nested block
    /// comments, `--` comments.
    #[default]
    Ansi,
    /// MySQL / MariaDB (default `sql_mode`): backslash escapes and `''` doubling in `'…'` and
    /// `"…"` strings, `` `…` `` identifiers, `#` and `-- ` comments, `/*! … */` executable
    /// comments (their content is code).
    Mysql,
    /// T-SQL: [`Dialect::Ansi`] plus `[…]` identifiers.
    Tsql,
    /// CQL: [`Dialect::Ansi`] plus `//` comments.
    Cql,
}

/// Kind of a lexical token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Keyword or identifier.
    Word,
    /// Quoted identifier.
    QIdent,
    /// String literal (any prefix).
    Str,
    /// Numeric literal.
    Num,
    /// Hex or bit literal (`0x…`, `X'…'`, `B'…'`).
    Hex,
    /// Operator.
    Op,
    /// `(`.
    LParen,
    /// `)`.
    RParen,
    /// `,`.
    Comma,
    /// `;`.
    Semi,
    /// `.`.
    Dot,
    /// Bind parameter or variable (`?`, `$1`, `:name`, `@x`, `@@x`).
    Var,
    /// `--`, `#` or `//` comment up to the end of the line.
    LineComment,
    /// `/* … */` comment.
    BlockComment,
}

/// One token: kind and byte range in the statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    /// Kind.
    pub kind: Kind,
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
    /// A string, quoted identifier or block comment that runs to the end of the input.
    pub open: bool,
}

/// A tokenizer over a statement (no allocation).
#[derive(Debug)]
pub struct Lexer<'a> {
    b: &'a [u8],
    i: usize,
    d: Dialect,
    exec: bool,
    lenient: bool,
    /// What lenient lexing learnt about runs that never close (each byte is then scanned a
    /// bounded number of times however many quotes it follows).
    memo: Option<&'a mut Unclosed>,
    /// Bytes scanned again: visited by runs that did not close, which lenient lexing reads
    /// again from the byte after their opening (every other byte is visited once).
    rescanned: u64,
}

/// Words in an [`Unclosed`] bitmap: one bit per byte of a statement.
const MEMO_WORDS: usize = MAX_STATEMENT / 64;

/// What a lenient [`Lexer`] learnt about quoted runs and comments that never close, so that a
/// value with many unbalanced quotes (`'\'\'\'…` in MySQL, `/* /* /* …`) is not scanned to its
/// end again after each of them (n²/2 bytes for n bytes).
///
/// A quoted run is a walk over positions that depends only on the position (a backslash or a
/// doubled quote skips two bytes, the quote ends it): two walks of the same kind that reach one
/// position end the same way. Once a walk of a kind ends unclosed, the positions it visited
/// are marked, and so are those of every later walk of that kind; a walk that reaches a marked
/// position is unclosed (marks left by walks that closed are behind the lexer, which continues
/// after the run), so each position is walked at most twice per kind. Walks before the first
/// unclosed one mark nothing (statements whose runs close pay nothing). One bitmap per kind
/// (`'`, `'` with backslash escapes, `"`, `` ` `` or `]`) over the first [`MAX_STATEMENT`]
/// bytes, grown as used, so creating one costs nothing. MySQL block comments do not nest: none
/// closes after a position from which one did not. (Nested comments of the other dialects are
/// not remembered; the HTTP detector lexes leniently in MySQL only.)
#[derive(Debug, Default)]
pub struct Unclosed {
    maps: [ArrayVec<u64, MEMO_WORDS>; 4],
    /// No `*/` at or after this position (MySQL).
    comment_from: Option<usize>,
}

impl Unclosed {
    /// An empty memo.
    pub fn new() -> Self {
        Unclosed::default()
    }

    /// Whether an unclosed walk of kind `k` was marked.
    fn live(&self, k: usize) -> bool {
        self.maps.get(k).is_some_and(|m| !m.is_empty())
    }

    /// Marks position `i` of walk kind `k`; true when it was marked already.
    fn visit(&mut self, k: usize, i: usize) -> bool {
        let Some(map) = self.maps.get_mut(k) else { return false };
        let (w, bit) = (i / 64, 1u64 << (i % 64));
        if w >= MEMO_WORDS {
            return false;
        }
        while map.len() <= w {
            map.push(0);
        }
        let seen = map[w] & bit != 0;
        map[w] |= bit;
        seen
    }
}

/// The walk kind of a quoted run (index into [`Unclosed`]'s bitmaps).
fn walk_kind(q: u8, backslash: bool) -> usize {
    match (q, backslash) {
        (b'\'', false) => 0,
        (b'\'', true) => 1,
        (b'"', _) => 2,
        _ => 3,
    }
}

fn word_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
}

impl<'a> Lexer<'a> {
    /// A lexer over `b` with `d`'s rules.
    pub fn new(b: &'a [u8], d: Dialect) -> Self {
        Lexer { b, i: 0, d, exec: false, lenient: false, memo: None, rescanned: 0 }
    }

    /// A lexer that reads a quote or `/*` that is never closed as a one-byte operator and goes
    /// on after it (for values pasted into a statement, whose own quotes may be unbalanced).
    pub fn lenient(b: &'a [u8], d: Dialect) -> Self {
        Lexer { b, i: 0, d, exec: false, lenient: true, memo: None, rescanned: 0 }
    }

    /// [`Lexer::lenient`] that remembers the runs it found unclosed in `memo` (an empty
    /// [`Unclosed`] per statement), so that every byte is examined a bounded number of times.
    pub fn lenient_with(b: &'a [u8], d: Dialect, memo: &'a mut Unclosed) -> Self {
        Lexer { b, i: 0, d, exec: false, lenient: true, memo: Some(memo), rescanned: 0 }
    }

    /// Bytes examined so far: the bytes up to where the lexer is, plus the bytes scanned
    /// again (runs that did not close in lenient lexing, read again after their opening). A
    /// measure of work for tests and benchmarks; counting costs nothing per token.
    pub fn examined(&self) -> u64 {
        (self.i.min(self.b.len()) as u64).saturating_add(self.rescanned)
    }

    fn at(&self, i: usize) -> Option<u8> {
        self.b.get(i).copied()
    }

    /// Counts `n` bytes that will be scanned again.
    fn rescan(&mut self, n: usize) {
        self.rescanned = self.rescanned.saturating_add(n as u64);
    }

    /// End of a quoted run starting at `s` (the opening quote `q`) and whether it is unclosed.
    /// With a memo that holds an unclosed walk of the same kind, a walk that reaches a
    /// position that walk visited stops there: it is unclosed too (see [`Unclosed`]). The
    /// first unclosed walk of a kind is walked again to mark its positions, so runs that close
    /// (the usual case) pay nothing for the memo.
    #[inline]
    fn quoted(&mut self, s: usize, q: u8, backslash: bool) -> (usize, bool) {
        if self.memo.is_none() {
            let (end, open) = self.run_end(s, q, backslash);
            if open && self.lenient {
                self.rescan(self.b.len() - s);
            }
            return (end, open);
        }
        self.quoted_memo(s, q, backslash)
    }

    /// [`Lexer::quoted`] with a memo.
    #[inline(never)]
    fn quoted_memo(&mut self, s: usize, q: u8, backslash: bool) -> (usize, bool) {
        let k = walk_kind(q, backslash);
        if !self.memo.as_deref().is_some_and(|m| m.live(k)) {
            let (end, open) = self.run_end(s, q, backslash);
            if open {
                // The first unclosed walk of this kind: mark its positions.
                self.rescan(self.b.len() - s);
                let (_, visited) = self.mark_run(s, q, backslash, k);
                self.rescan(visited);
            }
            return (end, open);
        }
        match self.mark_run(s, q, backslash, k) {
            (Some(end), _) => (end, false),
            (None, visited) => {
                self.rescan(visited);
                (self.b.len(), true)
            }
        }
    }

    /// Where the quoted run from `s` ends, and whether it runs to the end of the input.
    #[inline]
    fn run_end(&self, s: usize, q: u8, backslash: bool) -> (usize, bool) {
        let mut i = s + 1;
        while let Some(c) = self.at(i) {
            if backslash && c == b'\\' {
                i += 2;
                continue;
            }
            if c == q {
                if self.at(i + 1) == Some(q) {
                    i += 2;
                    continue;
                }
                return (i + 1, false);
            }
            i += 1;
        }
        (self.b.len(), true)
    }

    /// Walks the quoted run from `s` marking each position in the memo of kind `k`: its end
    /// when it closes, `None` when it reaches a position marked before (an unclosed walk went
    /// through it) or the end of the input; and the bytes visited.
    fn mark_run(&mut self, s: usize, q: u8, backslash: bool, k: usize) -> (Option<usize>, usize) {
        let Some(m) = self.memo.as_deref_mut() else { return (None, 0) };
        let b = self.b;
        let mut i = s + 1;
        while let Some(&c) = b.get(i) {
            if m.visit(k, i) {
                break;
            }
            if backslash && c == b'\\' {
                i += 2;
                continue;
            }
            if c == q {
                if b.get(i + 1) == Some(&q) {
                    i += 2;
                    continue;
                }
                return (Some(i + 1), i + 1 - s);
            }
            i += 1;
        }
        (None, i.min(b.len()) - s)
    }

    fn block_comment(&mut self, s: usize) -> (usize, bool) {
        let nest = self.d != Dialect::Mysql;
        if !nest && self.memo.as_ref().and_then(|m| m.comment_from).is_some_and(|f| s + 2 >= f) {
            self.rescan(2);
            return (self.b.len(), true);
        }
        let mut depth = 1u32;
        let mut i = s + 2;
        let out = loop {
            if i >= self.b.len() {
                break (self.b.len(), true);
            }
            match (self.b[i], self.at(i + 1)) {
                (b'*', Some(b'/')) => {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break (i, false);
                    }
                }
                (b'/', Some(b'*')) if nest => {
                    depth += 1;
                    i += 2;
                }
                _ => i += 1,
            }
        };
        if out.1 && self.lenient {
            self.rescan(i.min(self.b.len()).saturating_sub(s));
        }
        if out.1 && !nest {
            if let Some(m) = self.memo.as_deref_mut() {
                m.comment_from = Some(m.comment_from.map_or(s + 2, |f| f.min(s + 2)));
            }
        }
        out
    }

    /// `$tag$…$tag$` starting at `s`, if one starts there.
    fn dollar(&mut self, s: usize) -> Option<(usize, bool)> {
        let mut i = s + 1;
        while let Some(c) = self.at(i) {
            if c == b'$' {
                break;
            }
            if !(c.is_ascii_alphabetic() || c == b'_' || (i > s + 1 && c.is_ascii_digit())) {
                return None;
            }
            i += 1;
        }
        self.at(i)?;
        let tag = &self.b[s..=i];
        let body = &self.b[i + 1..];
        // The first occurrence of the closing tag (linear, where a naive search costs the
        // body's length times the tag's).
        let found = memchr::memmem::find(body, tag);
        if found.is_none() && self.lenient {
            self.rescan(body.len());
        }
        Some(match found {
            Some(j) => (i + 1 + j + tag.len(), false),
            None => (self.b.len(), true),
        })
    }

    fn line_end(&self, s: usize) -> usize {
        self.b[s..].iter().position(|&c| c == b'\n').map_or(self.b.len(), |p| s + p)
    }

    fn number(&self, s: usize) -> (Kind, usize) {
        let b = self.b;
        if b[s] == b'0'
            && matches!(self.at(s + 1), Some(b'x' | b'X'))
            && self.at(s + 2).is_some_and(|c| c.is_ascii_hexdigit())
        {
            let mut i = s + 2;
            while self.at(i).is_some_and(|c| c.is_ascii_hexdigit()) {
                i += 1;
            }
            return (Kind::Hex, i);
        }
        let mut i = s;
        while self.at(i).is_some_and(|c| c.is_ascii_digit()) {
            i += 1;
        }
        if self.at(i) == Some(b'.') {
            i += 1;
            while self.at(i).is_some_and(|c| c.is_ascii_digit()) {
                i += 1;
            }
        }
        if matches!(self.at(i), Some(b'e' | b'E')) {
            let j = if matches!(self.at(i + 1), Some(b'+' | b'-')) { i + 2 } else { i + 1 };
            if self.at(j).is_some_and(|c| c.is_ascii_digit()) {
                i = j;
                while self.at(i).is_some_and(|c| c.is_ascii_digit()) {
                    i += 1;
                }
            }
        }
        (Kind::Num, i)
    }

    fn op_len(&self, s: usize) -> usize {
        let two = [self.b[s], self.at(s + 1).unwrap_or(0)];
        if &self.b[s..self.b.len().min(s + 3)] == b"<=>" || &self.b[s..self.b.len().min(s + 3)] == b"->>" {
            return 3;
        }
        match &two {
            b"<=" | b">=" | b"<>" | b"!=" | b"==" | b"||" | b"&&" | b"::" | b"<<" | b">>" | b"->" | b":=" => 2,
            _ => 1,
        }
    }
}

impl Iterator for Lexer<'_> {
    type Item = Token;

    fn next(&mut self) -> Option<Token> {
        use Kind::*;
        loop {
            while self.at(self.i).is_some_and(|c| c.is_ascii_whitespace() || c == 0) {
                self.i += 1;
            }
            let s = self.i;
            let c = self.at(s)?;
            let n1 = self.at(s + 1);
            let my = self.d == Dialect::Mysql;
            let (kind, end, open) = match c {
                b'\'' => {
                    let (e, o) = self.quoted(s, b'\'', my);
                    (Str, e, o)
                }
                b'"' => {
                    let (e, o) = self.quoted(s, b'"', my);
                    (if my { Str } else { QIdent }, e, o)
                }
                b'`' if my => {
                    let (e, o) = self.quoted(s, b'`', false);
                    (QIdent, e, o)
                }
                b'[' if self.d == Dialect::Tsql => {
                    let (e, o) = self.quoted(s, b']', false);
                    (QIdent, e, o)
                }
                b'-' if n1 == Some(b'-')
                    && (!my || self.at(s + 2).is_none_or(|c| c.is_ascii_whitespace() || c.is_ascii_control())) =>
                {
                    (LineComment, self.line_end(s), false)
                }
                b'#' if my => (LineComment, self.line_end(s), false),
                b'/' if n1 == Some(b'/') && self.d == Dialect::Cql => (LineComment, self.line_end(s), false),
                b'/' if n1 == Some(b'*') => {
                    if my && self.at(s + 2) == Some(b'!') {
                        // Executable comment: its content is code.
                        let mut i = s + 3;
                        while self.at(i).is_some_and(|c| c.is_ascii_digit()) {
                            i += 1;
                        }
                        self.i = i;
                        self.exec = true;
                        continue;
                    }
                    let (e, o) = self.block_comment(s);
                    (BlockComment, e, o)
                }
                b'*' if n1 == Some(b'/') && self.exec => {
                    self.exec = false;
                    self.i = s + 2;
                    continue;
                }
                b'$' => {
                    if let Some((e, o)) = (!my).then(|| self.dollar(s)).flatten() {
                        (Str, e, o)
                    } else if n1.is_some_and(|c| c.is_ascii_digit()) {
                        let mut i = s + 1;
                        while self.at(i).is_some_and(|c| c.is_ascii_digit()) {
                            i += 1;
                        }
                        (Var, i, false)
                    } else {
                        (Op, s + 1, false)
                    }
                }
                b'0'..=b'9' => {
                    let (k, e) = self.number(s);
                    (k, e, false)
                }
                b'.' if n1.is_some_and(|c| c.is_ascii_digit()) => {
                    let (k, e) = self.number(s);
                    (k, e, false)
                }
                b'@' => {
                    let mut i = s + 1;
                    if self.at(i) == Some(b'@') {
                        i += 1;
                    }
                    while self.at(i).is_some_and(|c| word_byte(c) || c == b'.') {
                        i += 1;
                    }
                    (Var, i, false)
                }
                b'?' => (Var, s + 1, false),
                b':' if n1.is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_') => {
                    let mut i = s + 1;
                    while self.at(i).is_some_and(word_byte) {
                        i += 1;
                    }
                    (Var, i, false)
                }
                b'(' => (LParen, s + 1, false),
                b')' => (RParen, s + 1, false),
                b',' => (Comma, s + 1, false),
                b';' => (Semi, s + 1, false),
                b'.' => (Dot, s + 1, false),
                c if word_byte(c) => {
                    let mut i = s;
                    while self.at(i).is_some_and(word_byte) {
                        i += 1;
                    }
                    // Prefixed literals: X'..' B'..' N'..' E'..'.
                    if i == s + 1 && self.at(i) == Some(b'\'') {
                        let p = c.to_ascii_uppercase();
                        let esc = my || p == b'E';
                        if matches!(p, b'X' | b'B' | b'N' | b'E') {
                            let (e, o) = self.quoted(i, b'\'', esc);
                            let k = if p == b'X' || p == b'B' { Hex } else { Str };
                            if o && self.lenient {
                                self.i = i;
                                return Some(Token { kind: Word, start: s, end: i, open: false });
                            }
                            self.i = e;
                            return Some(Token { kind: k, start: s, end: e, open: o });
                        }
                    }
                    (Word, i, false)
                }
                _ => (Op, s + self.op_len(s), false),
            };
            if open && self.lenient {
                self.i = s + 1;
                return Some(Token { kind: Op, start: s, end: s + 1, open: false });
            }
            self.i = end;
            return Some(Token { kind, start: s, end, open });
        }
    }
}

/// What made a statement an injection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// A comparison of constants after a logical operator (`OR 1=1`), or `OR <constant>`.
    Tautology,
    /// `UNION SELECT` of `NULL`s / constants after a `WHERE`.
    UnionSelect,
    /// A second statement stacked after a `WHERE` literal.
    StackedQuery,
    /// A line comment cutting off the rest of the statement right after a literal.
    CommentTruncation,
    /// A time-delay function.
    TimeFunction,
    /// An error-based extraction function.
    ErrorFunction,
    /// A system catalog named inside a condition or a `UNION`.
    CatalogProbe,
    /// A string built from character codes or hex in `CONCAT`.
    CharBanner,
    /// An unterminated string, quoted identifier or comment.
    UnbalancedQuote,
    /// Parentheses closing more than they open, or left open.
    UnbalancedParen,
    /// Command execution or file access.
    CommandExec,
    /// libinjection flagged a fragment of the statement ([`Fragments`]).
    Fragment,
    /// libinjection flagged an input value (HTTP detectors).
    Libinjection,
}

impl Reason {
    /// Name used in records (`"tautology"`, `"union_select"`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Tautology => "tautology",
            Reason::UnionSelect => "union_select",
            Reason::StackedQuery => "stacked_query",
            Reason::CommentTruncation => "comment_truncation",
            Reason::TimeFunction => "time_function",
            Reason::ErrorFunction => "error_function",
            Reason::CatalogProbe => "catalog_probe",
            Reason::CharBanner => "char_banner",
            Reason::UnbalancedQuote => "unbalanced_quote",
            Reason::UnbalancedParen => "unbalanced_paren",
            Reason::CommandExec => "command_exec",
            Reason::Fragment => "libinjection_fragment",
            Reason::Libinjection => "libinjection",
        }
    }
}

/// A detection: why, and the byte offset in the statement where the shape was recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finding {
    /// The shape found.
    pub reason: Reason,
    /// Byte offset of the token that completed it.
    pub at: usize,
}

/// Where libinjection is additionally run on statement fragments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fragments {
    /// Never (rules only).
    #[default]
    None,
    /// On the tail starting at each literal that follows a comparison operator inside a `WHERE`.
    AfterComparison,
    /// On the tail starting at each string literal's opening quote.
    AtStrings,
}

/// Keywords and function names the rules look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Kw {
    #[default]
    None,
    And,
    Or,
    Xor,
    Not,
    Where,
    On,
    Having,
    When,
    Union,
    All,
    Distinct,
    Select,
    From,
    Join,
    Null,
    True,
    False,
    Like,
    As,
    Into,
    Outfile,
    Waitfor,
    Delay,
    Time,
    Sleep,
    BigArg,
    ExtractXml,
    Exp,
    Rand,
    Char,
    Concat,
    Cast,
    Banner,
    NumType,
    OraError,
    Exec,
    LoadFile,
    Dangerous,
    Clause,
    Other,
}

/// Classifies a word (case-insensitive).
fn kw(w: &[u8]) -> Kw {
    let mut u = [0u8; 28];
    if w.len() > u.len() {
        return Kw::None;
    }
    for (d, s) in u.iter_mut().zip(w) {
        *d = s.to_ascii_uppercase();
    }
    match &u[..w.len()] {
        b"AND" => Kw::And,
        b"OR" => Kw::Or,
        b"XOR" => Kw::Xor,
        b"NOT" => Kw::Not,
        b"WHERE" => Kw::Where,
        b"ON" => Kw::On,
        b"HAVING" => Kw::Having,
        b"WHEN" => Kw::When,
        b"UNION" => Kw::Union,
        b"ALL" => Kw::All,
        b"DISTINCT" => Kw::Distinct,
        b"SELECT" => Kw::Select,
        b"FROM" => Kw::From,
        b"JOIN" => Kw::Join,
        b"NULL" => Kw::Null,
        b"TRUE" => Kw::True,
        b"FALSE" => Kw::False,
        b"LIKE" | b"RLIKE" | b"REGEXP" | b"GLOB" => Kw::Like,
        b"AS" => Kw::As,
        b"INTO" => Kw::Into,
        b"OUTFILE" | b"DUMPFILE" => Kw::Outfile,
        b"WAITFOR" => Kw::Waitfor,
        b"DELAY" => Kw::Delay,
        b"TIME" => Kw::Time,
        b"SLEEP" | b"BENCHMARK" | b"PG_SLEEP" | b"PG_SLEEP_FOR" | b"PG_SLEEP_UNTIL" | b"RECEIVE_MESSAGE" => Kw::Sleep,
        b"RANDOMBLOB" | b"ZEROBLOB" | b"GENERATE_SERIES" | b"REPEAT" | b"REPLICATE" => Kw::BigArg,
        b"EXTRACTVALUE" | b"UPDATEXML" | b"GTID_SUBSET" | b"JSON_KEYS" => Kw::ExtractXml,
        b"EXP" => Kw::Exp,
        b"RAND" => Kw::Rand,
        b"CHAR" | b"CHR" | b"NCHAR" | b"NCHR" => Kw::Char,
        b"CONCAT" | b"CONCAT_WS" => Kw::Concat,
        b"CAST" | b"CONVERT" => Kw::Cast,
        b"VERSION" | b"USER" | b"CURRENT_USER" | b"SESSION_USER" | b"DATABASE" | b"CURRENT_DATABASE" | b"SCHEMA"
        | b"SQLITE_VERSION" | b"BANNER" => Kw::Banner,
        b"NUMERIC" | b"INT" | b"INTEGER" | b"DECIMAL" | b"SIGNED" | b"BIGINT" | b"FLOAT" | b"NUMBER" => Kw::NumType,
        b"DRITHSX" | b"GETMAPPINGXPATH" | b"SQLID_TO_SQLHASH" | b"GET_HOST_ADDRESS" | b"GET_HOST_NAME" => Kw::OraError,
        b"XP_CMDSHELL" | b"SYS_EVAL" | b"SYS_EXEC" | b"SP_OACREATE" => Kw::Exec,
        b"LOAD_FILE" => Kw::LoadFile,
        b"DROP" | b"SHUTDOWN" | b"EXEC" | b"EXECUTE" | b"DECLARE" | b"TRUNCATE" | b"GRANT" | b"ALTER" | b"CREATE" => {
            Kw::Dangerous
        }
        b"ORDER" | b"GROUP" | b"LIMIT" | b"OFFSET" | b"FETCH" | b"PROCEDURE" | b"FOR" | b"THEN" | b"ELSE" | b"END" => {
            Kw::Clause
        }
        b"IN" | b"IS" | b"BETWEEN" | b"CASE" | b"IF" | b"BY" | b"VALUES" | b"SET" | b"EXISTS" | b"ANY" | b"SOME"
        | b"RETURNING" | b"USING" | b"LEFT" | b"RIGHT" | b"INNER" | b"OUTER" | b"CROSS" | b"UPDATE" | b"INSERT"
        | b"DELETE" | b"WITH" | b"DESC" | b"ASC" => Kw::Other,
        _ => Kw::None,
    }
}

/// Whether a name is a system catalog (or a well-known dummy table of an exotic DBMS that
/// sqlmap uses to fingerprint).
fn is_catalog(w: &[u8]) -> bool {
    let mut u = [0u8; 32];
    if w.len() > u.len() {
        return false;
    }
    for (d, s) in u.iter_mut().zip(w) {
        *d = s.to_ascii_lowercase();
    }
    let u = &u[..w.len()];
    const EXACT: &[&[u8]] = &[
        b"information_schema",
        b"sqlite_master",
        b"sqlite_schema",
        b"sqlite_temp_master",
        b"sysobjects",
        b"syscolumns",
        b"sysusers",
        b"sysdatabases",
        b"sysxlogins",
        b"syslogins",
        b"sql_logins",
        b"all_tables",
        b"all_tab_columns",
        b"all_users",
        b"user_tables",
        b"user_tab_columns",
        b"dba_users",
        b"sysdummy1",
        b"systables",
        b"syscat",
        b"sysibm",
        b"sysmaster",
        b"sysdual",
        b"onerow",
        b"performance_schema",
        b"mysql",
        b"sys",
    ];
    const PREFIX: &[&[u8]] = &[b"pg_", b"rdb$", b"msys", b"v$", b"sqlite_"];
    EXACT.contains(&u) || PREFIX.iter().any(|p| u.starts_with(p))
}

/// A significant (non-comment) token with its keyword class.
#[derive(Debug, Clone, Copy)]
struct Sig {
    kind: Kind,
    kw: Kw,
    start: usize,
    end: usize,
    /// Came right after `WHERE`/`ON`/`HAVING` (and only `(` since).
    lead: bool,
}

const NONE_SIG: Sig = Sig { kind: Kind::Semi, kw: Kw::None, start: 0, end: 0, lead: false };

/// Innermost function-call frames tracked.
const FRAMES: usize = 8;
/// Tokens of history kept.
const HIST: usize = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FrameKind {
    Other,
    Char,
    Concat,
    ExtractXml,
    Cast,
    BigArg,
}

#[derive(Debug, Clone, Copy)]
struct Frame {
    kind: FrameKind,
    depth: i32,
    /// `Cast`: a version/user/database function or `@@` variable was seen inside.
    banner: bool,
}

/// Columns of a `UNION SELECT` being scanned.
#[derive(Debug, Clone, Copy)]
struct UnionCols {
    depth: i32,
    cols: u32,
    tokens: u32,
    col_null: bool,
    col_lit: bool,
    any_null: bool,
    all_null: bool,
    all_lit: bool,
}

impl UnionCols {
    fn end_col(&mut self) {
        let null = self.tokens == 1 && self.col_null;
        let lit = self.tokens >= 1 && self.col_lit;
        self.any_null |= null;
        self.all_null &= null;
        self.all_lit &= lit || null;
        self.cols += 1;
        self.tokens = 0;
        self.col_null = false;
        self.col_lit = true;
    }

    fn suspicious(&self, where_seen: bool) -> bool {
        self.cols > 0 && (self.all_null || (where_seen && (self.any_null || self.all_lit)))
    }
}

/// Per-statement state (reset at `;`).
#[derive(Debug, Clone, Copy, Default)]
struct Stmt {
    where_seen: bool,
    /// Only `(` since the last `WHERE`/`ON`/`HAVING`.
    where_open: bool,
    union_kw: bool,
    union_seen: bool,
    union: Option<UnionCols>,
    /// In a table name after `FROM`/`JOIN`; whether a part of it is a catalog.
    from_name: Option<bool>,
    first_from_catalog: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    None,
    Taut(usize),
    /// A tautology's right side continued with an arithmetic operator (`1=1%16`).
    TautArith(usize),
    OrConst(usize),
}

fn is_literal(s: &Sig) -> bool {
    matches!(s.kind, Kind::Num | Kind::Str | Kind::Hex) || matches!(s.kw, Kw::True | Kw::False)
}

fn is_cmp(b: &[u8], s: &Sig) -> bool {
    match s.kind {
        Kind::Op => matches!(&b[s.start..s.end], b"=" | b"==" | b"<>" | b"!=" | b"<" | b">" | b"<=" | b">=" | b"<=>"),
        Kind::Word => s.kw == Kw::Like,
        _ => false,
    }
}

/// The rules' state between two tokens ([`StatementDetector::scan`]): the last tokens, the
/// open function calls, the shapes pending on the next token. `Copy`, no heap.
#[derive(Debug, Clone, Copy)]
struct RuleState {
    h: [Sig; HIST],
    depth: i32,
    st: Stmt,
    frames: [Frame; FRAMES],
    nf: usize,
    char_codes: u32,
    pend: Pending,
    semi_after_where: bool,
    stack_suspect: bool,
    trailing: Option<usize>,
    fragments: usize,
}

impl RuleState {
    fn new() -> Self {
        RuleState {
            h: [NONE_SIG; HIST],
            depth: 0,
            st: Stmt::default(),
            frames: [Frame { kind: FrameKind::Other, depth: 0, banner: false }; FRAMES],
            nf: 0,
            char_codes: 0,
            pend: Pending::None,
            semi_after_where: false,
            stack_suspect: false,
            trailing: None,
            fragments: 0,
        }
    }
}

/// Where the rules stopped. (The state is returned by value: no heap on the packet path.)
#[allow(clippy::large_enum_variant)]
enum Walk {
    /// A finding.
    Found(Finding),
    /// No finding up to the last token; the state after it.
    End(RuleState),
}

/// A statement prefix already run through the rules ([`StatementDetector::prefix`]): statements
/// that start with it are scanned from where it ends ([`StatementDetector::scan_after`]), so a
/// detector that pastes many values after the same prefix tokenises the prefix once.
#[derive(Debug, Clone, Copy)]
pub struct Prefix {
    state: RuleState,
    /// Bytes of the prefix.
    len: usize,
    /// Bytes examined scanning it.
    examined: u64,
}

impl Prefix {
    /// Bytes examined scanning the prefix (counted once).
    pub fn examined(&self) -> u64 {
        self.examined
    }
}

/// The statement detector: rules over the token stream, optionally with libinjection on
/// fragments. See the module docs.
#[derive(Debug, Clone, Copy, Default)]
pub struct StatementDetector {
    /// Quoting rules.
    pub dialect: Dialect,
    /// The statement was cut (protocol window): its end is not checked for balance.
    pub truncated: bool,
    /// Additional libinjection checks.
    pub fragments: Fragments,
    /// For a value pasted into a statement (not a client's statement): unclosed quotes and
    /// comments are read as stray characters ([`Lexer::lenient`]), parentheses are not
    /// balanced, and neither is a finding.
    pub lenient: bool,
}

impl SqliDetector for StatementDetector {
    fn is_injection(&self, input: &[u8]) -> bool {
        self.scan(input).is_some()
    }
}

impl StatementDetector {
    /// The rules only, in dialect `d`, on a complete statement.
    pub fn new(d: Dialect) -> Self {
        StatementDetector { dialect: d, truncated: false, fragments: Fragments::None, lenient: false }
    }

    /// Scans `stmt` (its first [`MAX_STATEMENT`] bytes); the first finding, if any.
    pub fn scan(&self, stmt: &[u8]) -> Option<Finding> {
        self.scan_counted(stmt).0
    }

    /// [`StatementDetector::scan`], with the bytes it examined (tokenising, re-scans and
    /// fragment checks included): a measure of work, at most a small multiple of the
    /// statement's length (lenient lexing remembers the runs it found unclosed, [`Unclosed`]).
    pub fn scan_counted(&self, stmt: &[u8]) -> (Option<Finding>, u64) {
        let truncated = self.truncated || stmt.len() > MAX_STATEMENT;
        let b = &stmt[..stmt.len().min(MAX_STATEMENT)];
        let mut memo = Unclosed::new();
        let mut lexer =
            if self.lenient { Lexer::lenient_with(b, self.dialect, &mut memo) } else { Lexer::new(b, self.dialect) };
        let mut extra = 0u64;
        let f = self.rules(b, truncated, &mut lexer, &mut extra);
        (f, lexer.examined().saturating_add(extra))
    }

    /// Runs the rules over `prefix` and keeps their state, for statements that start with it
    /// ([`StatementDetector::scan_after`]). `None` when the prefix cannot be cut there without
    /// changing how what follows is read (it does not end with a space, or holds a comment or a
    /// quote that does not close inside it) or when it is a finding on its own.
    pub fn prefix(&self, prefix: &[u8]) -> Option<Prefix> {
        if prefix.len() > MAX_STATEMENT || prefix.last() != Some(&b' ') || self.fragments != Fragments::None {
            return None;
        }
        let mut memo = Unclosed::new();
        let mut lexer =
            if self.lenient { Lexer::lenient_with(prefix, self.dialect, &mut memo) } else { Lexer::new(prefix, self.dialect) };
        let mut extra = 0u64;
        // Tokens that may read differently with more bytes: comments, runs that do not close,
        // executable comments left open.
        let mut probe = Lexer::new(prefix, self.dialect);
        if probe.by_ref().any(|t| t.open || matches!(t.kind, Kind::LineComment | Kind::BlockComment)) || probe.exec {
            return None;
        }
        match self.walk(prefix, false, &mut lexer, RuleState::new(), &mut extra) {
            Walk::Found(_) => None,
            Walk::End(state) => Some(Prefix { state, len: prefix.len(), examined: lexer.examined().saturating_add(extra) }),
        }
    }

    /// [`StatementDetector::scan_counted`] of `stmt`, which starts with the bytes `p` was made
    /// from by [`StatementDetector::prefix`] with the same settings: the rules go on from the
    /// state after the prefix, which is not tokenised again (its bytes are not counted).
    pub fn scan_after(&self, p: &Prefix, stmt: &[u8]) -> (Option<Finding>, u64) {
        let truncated = self.truncated || stmt.len() > MAX_STATEMENT;
        let b = &stmt[..stmt.len().min(MAX_STATEMENT)];
        let mut memo = Unclosed::new();
        let mut lexer =
            if self.lenient { Lexer::lenient_with(b, self.dialect, &mut memo) } else { Lexer::new(b, self.dialect) };
        lexer.i = p.len.min(b.len());
        let mut extra = 0u64;
        let f = match self.walk(b, truncated, &mut lexer, p.state, &mut extra) {
            Walk::Found(f) => Some(f),
            Walk::End(s) => self.finish(b, truncated, &s),
        };
        (f, lexer.examined().saturating_sub(lexer.i.min(p.len) as u64).saturating_add(extra))
    }

    /// The rules over the tokens of `b` (see the module docs); `extra` counts the bytes of
    /// fragments given to libinjection.
    fn rules(&self, b: &[u8], truncated: bool, lexer: &mut Lexer<'_>, extra: &mut u64) -> Option<Finding> {
        match self.walk(b, truncated, lexer, RuleState::new(), extra) {
            Walk::Found(f) => Some(f),
            Walk::End(s) => self.finish(b, truncated, &s),
        }
    }

    /// Runs the rules over the rest of `lexer`'s tokens from state `start`: a finding, or the
    /// state after the last token.
    fn walk(&self, b: &[u8], truncated: bool, lexer: &mut Lexer<'_>, start: RuleState, extra: &mut u64) -> Walk {
        let found = |reason, at| Walk::Found(Finding { reason, at });
        let RuleState {
            mut h,
            mut depth,
            mut st,
            mut frames,
            mut nf,
            mut char_codes,
            mut pend,
            mut semi_after_where,
            mut stack_suspect,
            mut trailing,
            mut fragments,
        } = start;
        for t in lexer.by_ref() {
            if t.open && !truncated {
                return found(Reason::UnbalancedQuote, t.start);
            }
            if matches!(t.kind, Kind::LineComment | Kind::BlockComment) {
                let prev = h[0];
                let cut_after = is_literal(&prev)
                    || matches!(prev.kind, Kind::RParen | Kind::QIdent | Kind::Word)
                    || prev.kw == Kw::Null;
                if t.kind == Kind::LineComment
                    && prev.end > 0
                    && cut_after
                    && (st.where_seen || st.union_seen || stack_suspect)
                {
                    trailing = Some(t.start);
                }
                continue;
            }
            trailing = None;
            let kwc = if t.kind == Kind::Word { kw(&b[t.start..t.end]) } else { Kw::None };
            let s = Sig { kind: t.kind, kw: kwc, start: t.start, end: t.end, lead: st.where_open };
            let text = &b[t.start..t.end];
            // Resolve a pending shape with this token.
            match pend {
                Pending::Taut(at) => {
                    let arith = t.kind == Kind::Op
                        && matches!(text, b"+" | b"-" | b"*" | b"/" | b"%" | b"||" | b"^" | b"&" | b"|");
                    if arith {
                        pend = Pending::TautArith(at);
                    } else if matches!(t.kind, Kind::Dot | Kind::LParen) || (t.kind == Kind::Op && text == b"::") {
                        pend = Pending::None;
                    } else {
                        return found(Reason::Tautology, at);
                    }
                }
                Pending::TautArith(at) => {
                    // Still constant when a literal follows (re-checked at the next token).
                    pend = if is_literal(&Sig { kind: t.kind, kw: kwc, start: 0, end: 0, lead: false }) {
                        Pending::Taut(at)
                    } else {
                        Pending::None
                    };
                }
                Pending::OrConst(at) => {
                    let ends = matches!(t.kind, Kind::RParen | Kind::Semi)
                        || matches!(kwc, Kw::And | Kw::Or | Kw::Xor | Kw::Clause | Kw::Union | Kw::Having | Kw::Into);
                    if ends {
                        return found(Reason::Tautology, at);
                    }
                    pend = Pending::None;
                }
                Pending::None => {}
            }
            // A statement stacked after a literal of a WHERE.
            if semi_after_where {
                semi_after_where = false;
                if kwc == Kw::Dangerous || kwc == Kw::Waitfor {
                    return found(Reason::StackedQuery, t.start);
                }
            }
            // Table names after FROM / JOIN.
            if let Some(cat) = st.from_name {
                match t.kind {
                    Kind::Word | Kind::QIdent => {
                        let name = if t.kind == Kind::QIdent {
                            text.get(1..text.len().saturating_sub(1)).unwrap_or_default()
                        } else {
                            text
                        };
                        st.from_name = Some(cat || is_catalog(name));
                    }
                    Kind::Dot => {}
                    Kind::Op if text == b":" => {}
                    _ => {
                        st.from_name = None;
                        match st.first_from_catalog {
                            None if cat && stack_suspect => return found(Reason::StackedQuery, t.start),
                            None => st.first_from_catalog = Some(cat),
                            Some(false) if cat && (st.where_seen || st.union_seen) => {
                                return found(Reason::CatalogProbe, t.start);
                            }
                            _ => {}
                        }
                    }
                }
            }
            // UNION SELECT columns.
            if let Some(mut u) = st.union {
                let end = depth == u.depth
                    && (matches!(t.kind, Kind::Semi | Kind::RParen)
                        || matches!(kwc, Kw::From | Kw::Into | Kw::Where | Kw::Union | Kw::Clause));
                if end {
                    u.end_col();
                    st.union = None;
                    if u.suspicious(st.where_seen) {
                        return found(Reason::UnionSelect, t.start);
                    }
                } else if t.kind == Kind::Comma && depth == u.depth {
                    u.end_col();
                    st.union = Some(u);
                } else {
                    u.tokens += 1;
                    u.col_null = u.tokens == 1 && kwc == Kw::Null;
                    let lit = is_literal(&s) || (t.kind == Kind::Op && text == b"-" && u.tokens == 1);
                    u.col_lit &= lit && depth == u.depth;
                    st.union = Some(u);
                }
            }
            let in_frame = |k: FrameKind, frames: &[Frame], nf: usize| frames[..nf].iter().any(|f| f.kind == k);
            match t.kind {
                Kind::LParen => {
                    depth += 1;
                    let f = h[0];
                    let mut kind = FrameKind::Other;
                    if f.kind == Kind::Word {
                        match f.kw {
                            Kw::Sleep => return found(Reason::TimeFunction, f.start),
                            Kw::OraError => return found(Reason::ErrorFunction, f.start),
                            Kw::Exec | Kw::LoadFile => return found(Reason::CommandExec, f.start),
                            Kw::BigArg => kind = FrameKind::BigArg,
                            Kw::ExtractXml => kind = FrameKind::ExtractXml,
                            Kw::Concat => {
                                if in_frame(FrameKind::ExtractXml, &frames, nf) {
                                    return found(Reason::ErrorFunction, f.start);
                                }
                                kind = FrameKind::Concat;
                            }
                            Kw::Cast => kind = FrameKind::Cast,
                            Kw::Char => {
                                // A function call, not a type (`AS CHAR(10)`, `name CHAR(36)`).
                                let p = h[1];
                                let typ = (p.kind == Kind::Word && matches!(p.kw, Kw::None | Kw::As))
                                    || p.kind == Kind::QIdent;
                                if !typ {
                                    if in_frame(FrameKind::ExtractXml, &frames, nf) {
                                        return found(Reason::ErrorFunction, f.start);
                                    }
                                    kind = FrameKind::Char;
                                }
                            }
                            Kw::Banner => {
                                if let Some(c) = frames[..nf].iter_mut().rev().find(|f| f.kind == FrameKind::Cast) {
                                    c.banner = true;
                                }
                            }
                            _ => {}
                        }
                    }
                    // EXP(~(
                    if h[0].kind == Kind::Op
                        && &b[h[0].start..h[0].end] == b"~"
                        && h[1].kind == Kind::LParen
                        && h[2].kw == Kw::Exp
                    {
                        return found(Reason::ErrorFunction, h[2].start);
                    }
                    if nf < FRAMES {
                        frames[nf] = Frame { kind, depth, banner: false };
                        nf += 1;
                    }
                }
                Kind::RParen => {
                    while nf > 0 && frames[nf - 1].depth >= depth {
                        nf -= 1;
                    }
                    depth -= 1;
                    if depth < 0 {
                        if !self.lenient {
                            return found(Reason::UnbalancedParen, t.start);
                        }
                        depth = 0;
                    }
                }
                Kind::Semi => {
                    semi_after_where = st.where_seen && (is_literal(&h[0]) || h[0].kind == Kind::RParen);
                    stack_suspect |= semi_after_where;
                    st = Stmt::default();
                    depth = 0;
                    nf = 0;
                }
                Kind::Var if text.len() > 2 && text[..2] == *b"@@" => {
                    if let Some(c) = frames[..nf].iter_mut().rev().find(|f| f.kind == FrameKind::Cast) {
                        c.banner = true;
                    }
                }
                Kind::Word => match kwc {
                    Kw::Where | Kw::Having => st.where_seen = true,
                    Kw::Union => st.union_kw = true,
                    Kw::All | Kw::Distinct => {}
                    Kw::Select if st.union_kw => {
                        st.union_kw = false;
                        st.union_seen = true;
                        st.union = Some(UnionCols {
                            depth,
                            cols: 0,
                            tokens: 0,
                            col_null: false,
                            col_lit: true,
                            any_null: false,
                            all_null: true,
                            all_lit: true,
                        });
                    }
                    Kw::From | Kw::Join => st.from_name = Some(false),
                    Kw::Delay | Kw::Time if h[0].kw == Kw::Waitfor => return found(Reason::TimeFunction, h[0].start),
                    Kw::Outfile if h[0].kw == Kw::Into => return found(Reason::CommandExec, t.start),
                    Kw::NumType
                        if h[0].kw == Kw::As
                            && frames[..nf]
                                .iter()
                                .rev()
                                .find(|f| f.kind == FrameKind::Cast)
                                .is_some_and(|f| f.banner) =>
                    {
                        return found(Reason::ErrorFunction, t.start);
                    }
                    _ => {}
                },
                _ => {}
            }
            if !matches!(kwc, Kw::All | Kw::Distinct | Kw::Union) && t.kind != Kind::LParen {
                st.union_kw = false;
            }
            if is_literal(&s) {
                // Two constants compared after a logical operator.
                if is_cmp(b, &h[0]) && is_literal(&h[1]) {
                    let p = h[2];
                    let after_logic = matches!(p.kw, Kw::And | Kw::Or | Kw::Xor | Kw::Not | Kw::When)
                        || (p.kind == Kind::Op && matches!(&b[p.start..p.end], b"&&" | b"!"))
                        || (p.kind == Kind::Op && self.dialect == Dialect::Mysql && &b[p.start..p.end] == b"||")
                        || (p.kind == Kind::LParen && !p.lead);
                    if after_logic {
                        pend = Pending::Taut(h[1].start);
                    }
                }
                if matches!(h[0].kw, Kw::Or | Kw::Xor)
                    || (h[0].kind == Kind::Op && self.dialect == Dialect::Mysql && &b[h[0].start..h[0].end] == b"||")
                {
                    pend = if pend == Pending::None { Pending::OrConst(h[0].start) } else { pend };
                }
                if nf > 0 {
                    let top = frames[nf - 1];
                    match t.kind {
                        Kind::Num if top.kind == FrameKind::BigArg && text.len() >= 7 => {
                            return found(Reason::TimeFunction, t.start);
                        }
                        Kind::Num if top.kind == FrameKind::Char && top.depth == depth => {
                            char_codes += 1;
                            if char_codes >= 4 {
                                return found(Reason::CharBanner, t.start);
                            }
                        }
                        Kind::Hex if text.len() >= 8 && in_frame(FrameKind::ExtractXml, &frames, nf) => {
                            return found(Reason::ErrorFunction, t.start);
                        }
                        Kind::Hex if text.len() >= 8 && in_frame(FrameKind::Concat, &frames, nf) => {
                            return found(Reason::CharBanner, t.start);
                        }
                        _ => {}
                    }
                }
                // RAND(0)*2 (duplicate-key error extraction).
                if t.kind == Kind::Num
                    && text == b"2"
                    && h[0].kind == Kind::Op
                    && &b[h[0].start..h[0].end] == b"*"
                    && h[1].kind == Kind::RParen
                    && h[2].kind == Kind::Num
                    && h[3].kind == Kind::LParen
                    && h[4].kw == Kw::Rand
                {
                    return found(Reason::ErrorFunction, h[4].start);
                }
            }
            if kwc == Kw::Select && in_frame(FrameKind::ExtractXml, &frames, nf) {
                return found(Reason::ErrorFunction, t.start);
            }
            // Fragments for libinjection.
            if self.fragments != Fragments::None && fragments < MAX_FRAGMENTS {
                let hit = match self.fragments {
                    Fragments::AfterComparison => st.where_seen && is_literal(&s) && is_cmp(b, &h[0]),
                    Fragments::AtStrings => t.kind == Kind::Str,
                    Fragments::None => false,
                };
                if hit {
                    fragments += 1;
                    *extra = extra.saturating_add((b.len() - t.start) as u64);
                    if Libinjection.is_injection(&b[t.start..]) {
                        return found(Reason::Fragment, t.start);
                    }
                }
            }
            st.where_open = matches!(kwc, Kw::Where | Kw::On | Kw::Having) || (st.where_open && t.kind == Kind::LParen);
            h.copy_within(0..HIST - 1, 1);
            h[0] = s;
        }
        Walk::End(RuleState {
            h,
            depth,
            st,
            frames,
            nf,
            char_codes,
            pend,
            semi_after_where,
            stack_suspect,
            trailing,
            fragments,
        })
    }

    /// The checks at the end of the statement (pending shapes, balance).
    fn finish(&self, b: &[u8], truncated: bool, s: &RuleState) -> Option<Finding> {
        let found = |reason, at| Some(Finding { reason, at });
        let RuleState { depth, st, pend, stack_suspect, trailing, .. } = *s;
        match pend {
            Pending::Taut(at) | Pending::OrConst(at) => return found(Reason::Tautology, at),
            Pending::TautArith(_) => {}
            Pending::None => {}
        }
        if let Some(mut u) = st.union {
            u.end_col();
            if u.suspicious(st.where_seen) {
                return found(Reason::UnionSelect, b.len());
            }
        }
        if let Some(at) = trailing {
            return found(if stack_suspect { Reason::StackedQuery } else { Reason::CommentTruncation }, at);
        }
        if let (Some(cat), Some(false)) = (st.from_name, st.first_from_catalog) {
            if cat && (st.where_seen || st.union_seen) {
                return found(Reason::CatalogProbe, b.len());
            }
        }
        if depth != 0 && !truncated && !self.lenient {
            return found(Reason::UnbalancedParen, b.len());
        }
        None
    }
}

#[cfg(test)]
mod tests;
