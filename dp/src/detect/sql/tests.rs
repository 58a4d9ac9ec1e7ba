//! Tests of the statement detector on real statements: the corpus captures (statements taken
//! from the capture bytes through the real parsers), sqlmap's payloads as a vulnerable
//! application builds them, pgbench's built-in scripts and sysbench's OLTP templates.

use super::*;
use crate::app::mysql::Mysql;
use crate::app::postgresql::Postgresql;
use crate::app::testutil::{corpus_flows, feed_all, Rng};
use crate::app::{AppParser, Dir};

fn my(s: &str) -> Option<Reason> {
    StatementDetector::new(Dialect::Mysql).scan(s.as_bytes()).map(|f| f.reason)
}

fn ansi(s: &str) -> Option<Reason> {
    StatementDetector::new(Dialect::Ansi).scan(s.as_bytes()).map(|f| f.reason)
}

fn kinds(s: &str, d: Dialect) -> Vec<(Kind, &str)> {
    Lexer::new(s.as_bytes(), d).map(|t| (t.kind, &s[t.start..t.end])).collect()
}

#[test]
fn lexes_with_each_dialects_quoting() {
    use Kind::*;
    // MySQL: backslash escapes and doubled quotes stay inside the literal (the capture's /search
    // statements, escaped by PyMySQL).
    let s = r"WHERE name = 'apple\') AND 3276=3276 AND (\'tKvu\'=\'tKvu'";
    assert_eq!(kinds(s, Dialect::Mysql), vec![(Word, "WHERE"), (Word, "name"), (Op, "="), (Str, &s[13..])]);
    assert_eq!(kinds("'it''s' \"a\\\"b\"", Dialect::Mysql), vec![(Str, "'it''s'"), (Str, "\"a\\\"b\"")]);
    // Standard quoting: a backslash is an ordinary character, "x" an identifier.
    assert_eq!(kinds(r#"'C:\' "x""#, Dialect::Ansi), vec![(Str, r"'C:\'"), (QIdent, "\"x\"")]);
    assert_eq!(kinds(r"E'\'' $f$ a'b $f$ $1", Dialect::Ansi), vec![(Str, r"E'\''"), (Str, "$f$ a'b $f$"), (Var, "$1")]);
    // Comments: `--x` is not a comment in MySQL, `#` is; /*! … */ is code.
    assert_eq!(kinds("1--1", Dialect::Mysql), vec![(Num, "1"), (Op, "-"), (Op, "-"), (Num, "1")]);
    assert_eq!(
        kinds("1 -- x\n2 # y", Dialect::Mysql),
        vec![(Num, "1"), (LineComment, "-- x"), (Num, "2"), (LineComment, "# y")]
    );
    assert_eq!(kinds("/*!50000UNION*/ SELECT", Dialect::Mysql), vec![(Word, "UNION"), (Word, "SELECT")]);
    assert_eq!(kinds("/* a /* b */ c */ 1", Dialect::Ansi), vec![(BlockComment, "/* a /* b */ c */"), (Num, "1")]);
    assert_eq!(
        kinds("0x71786a6b71 X'ab' [a b]", Dialect::Tsql),
        vec![(Hex, "0x71786a6b71"), (Hex, "X'ab'"), (QIdent, "[a b]")]
    );
    assert_eq!(kinds("a // b\nc", Dialect::Cql), vec![(Word, "a"), (LineComment, "// b"), (Word, "c")]);
    // Lenient: an unclosed quote is a stray byte.
    let t: Vec<Kind> = Lexer::lenient(b"O'Reilly books", Dialect::Mysql).map(|t| t.kind).collect();
    assert_eq!(t, vec![Word, Op, Word, Word]);
}

/// The statements of one capture, as the MySQL parser saw them (first query of each flow after
/// the `SET` statements), with the parser's verdict.
fn mysql_flows(name: &str) -> Vec<(String, bool)> {
    corpus_flows(name)
        .iter()
        .filter(|f| f.server_port == 3306)
        .map(|f| {
            let mut p = Mysql::default();
            let _ = feed_all(&mut p, Dir::ToServer, &f.to_server);
            let hit = p.threats().is_some_and(|t| !t.is_empty());
            (p.last_query().unwrap_or_default().to_string(), hit)
        })
        .collect()
}

#[test]
fn sqlinjection_mysql_capture_item_injections_flagged_search_literals_not() {
    let flows = mysql_flows("sqlinjection-mysql.pcap");
    let (mut item, mut search) = (0, 0);
    for (q, hit) in &flows {
        if let Some(v) = q.strip_prefix("SELECT id, name, price FROM items WHERE id=") {
            let attack = !v.bytes().all(|c| c.is_ascii_digit());
            assert_eq!(*hit, attack, "/item statement {q:?}");
            item += usize::from(attack);
        } else if q.contains("FROM items WHERE name = ") {
            // sqlmap's payloads escaped by PyMySQL: string literals, not injections.
            assert!(!hit, "/search statement {q:?} flagged");
            search += 1;
        } else {
            assert!(!hit, "{q:?} flagged");
        }
    }
    assert!(item > 0 && search > 0, "no /item or /search statements found");
}

#[test]
fn benign_captures_are_not_flagged() {
    for (q, hit) in mysql_flows("mysql.pcap") {
        assert!(!hit, "mysql.pcap: {q:?}");
    }
    for f in corpus_flows("postgresql.pcap").iter().filter(|f| f.server_port == 5432) {
        let mut p = Postgresql::default();
        let _ = feed_all(&mut p, Dir::ToServer, &f.to_server);
        assert!(p.threats().is_some_and(|t| t.is_empty()), "postgresql.pcap: {:?}", p.last_query());
        assert!(p.query_count() > 0 || p.last_query().is_none());
    }
}

#[test]
fn captured_injections_by_shape() {
    // Statements of sqlinjection-mysql.pcap (the vulnerable app's /item query).
    let item = "SELECT id, name, price FROM items WHERE id=";
    let cases = [
        ("1 AND 2601=2601", Reason::Tautology),
        ("1 AND 2127=4654", Reason::Tautology),
        ("1) AND 2601=2601 AND (6395=6395", Reason::UnbalancedParen),
        ("1\",()((,')(", Reason::UnbalancedQuote),
        ("1'OGIEoF<'\">cyVytw", Reason::UnbalancedQuote),
        (
            "1 AND EXP(~(SELECT * FROM (SELECT CONCAT(0x71786a6b71,(SELECT (ELT(7385=7385,1))),0x7171786b71,0x78))x))",
            Reason::ErrorFunction,
        ),
        ("1 OR GTID_SUBSET(CONCAT(0x71786a6b71,(SELECT (ELT(2665=2665,1))),0x7171786b71),2665)", Reason::ErrorFunction),
        ("1 ORDER BY 10-- cYdU", Reason::CommentTruncation),
        ("1 UNION ALL SELECT NULL,NULL,CONCAT(0x71786a6b71,0x6a,0x7171786b71)-- -", Reason::CharBanner),
        ("1 UNION ALL SELECT NULL,NULL,NULL-- -", Reason::UnionSelect),
    ];
    for (v, want) in cases {
        assert_eq!(my(&format!("{item}{v}")), Some(want), "{v}");
    }
    // The same payloads escaped into a literal (the capture's /search statements).
    let search = "SELECT id, name, price FROM items WHERE name = ";
    for lit in [
        r"'apple\') AND 3276=3276 AND (\'tKvu\'=\'tKvu'",
        r"'apple\');SELECT PG_SLEEP(1)--'",
        r"'(SELECT CONCAT(CONCAT(\'qzkvq\',(CASE WHEN (9161=9161) THEN \'1\' ELSE \'0\' END)),\'qjbbq\'))'",
        r#"'apple((,))\')(\",'"#,
    ] {
        assert_eq!(my(&format!("{search}{lit}")), None, "{lit}");
    }
}

#[test]
fn sqlmap_payloads_in_built_statements() {
    // sqlmap 1.7.2 test payloads (data/xml/payloads/*.xml) with boundaries, placeholders filled.
    let cases = [
        ("SELECT id, name, price FROM items WHERE id=1 AND SLEEP(5)", Reason::TimeFunction),
        ("SELECT id, name, price FROM items WHERE id=1;SELECT PG_SLEEP(5)--", Reason::TimeFunction),
        ("SELECT id, name, price FROM items WHERE id=1;WAITFOR DELAY '0:0:5'--", Reason::StackedQuery),
        (
            "SELECT id, name, price FROM items WHERE name='apple' AND 4046=DBMS_PIPE.RECEIVE_MESSAGE(CHR(97),5) AND 'x'='x'",
            Reason::TimeFunction,
        ),
        (
            "SELECT id, name, price FROM items WHERE id=1 AND 5371=LIKE(CHAR(65,66,67,68,69,70,71),UPPER(HEX(RANDOMBLOB(500000000/2))))",
            Reason::CharBanner,
        ),
        (
            "SELECT id, name, price FROM items WHERE id=1 AND 2753=(SELECT COUNT(*) FROM GENERATE_SERIES(1,5000000))",
            Reason::TimeFunction,
        ),
        (
            "SELECT id, name, price FROM items WHERE name='apple' OR 'ZkLs'='ZkLs'",
            Reason::Tautology,
        ),
        ("SELECT id, name, price FROM items WHERE id=-1234 OR 2>1", Reason::Tautology),
        ("SELECT id, name, price FROM items WHERE id=1 AND 1700=1700%16", Reason::Tautology),
        (
            "SELECT id, name, price FROM items WHERE id=1 AND 4468=CAST(VERSION() AS NUMERIC)",
            Reason::ErrorFunction,
        ),
        (
            "SELECT id, name, price FROM items WHERE id=1 AND (SELECT 'wsky' FROM RDB$DATABASE)='wsky'",
            Reason::CatalogProbe,
        ),
        (
            "SELECT id, name, price FROM items WHERE id=1 UNION ALL SELECT 1,2,table_name FROM information_schema.tables",
            Reason::CatalogProbe,
        ),
        ("SELECT id, name, price FROM items WHERE id=1; DROP TABLE users", Reason::StackedQuery),
        ("SELECT * FROM users WHERE login='admin'-- ' AND pw='x'", Reason::CommentTruncation),
        ("SELECT id FROM t WHERE id=1 UNION SELECT LOAD_FILE('/etc/passwd')", Reason::CommandExec),
    ];
    for (s, want) in cases {
        assert_eq!(my(s), Some(want), "{s}");
    }
    assert_eq!(
        ansi("SELECT a FROM t WHERE id=1 AND 7980=(SELECT UPPER(XMLType(CHR(60)||CHR(58)||CHR(113)||CHR(122))))"),
        Some(Reason::CharBanner)
    );
}

#[test]
fn benchmark_and_application_statements_are_not_flagged() {
    // pgbench --show-script=tpcb-like (PostgreSQL 15), -M simple and -M extended.
    for s in [
        "BEGIN;",
        "UPDATE pgbench_accounts SET abalance = abalance + -4321 WHERE aid = 77123;",
        "SELECT abalance FROM pgbench_accounts WHERE aid = $1;",
        "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (3, 1, 77123, -4321, CURRENT_TIMESTAMP);",
        "END;",
    ] {
        assert_eq!(ansi(s), None, "{s}");
    }
    // sysbench oltp_common.lua templates, instantiated.
    for s in [
        "SELECT c FROM sbtest3 WHERE id BETWEEN 4123 AND 4222 ORDER BY c",
        "UPDATE sbtest1 SET c='83868641912-28773972837-60736120486-75162659906' WHERE id=5012",
        "CREATE TABLE sbtest1(\n  id INTEGER NOT NULL AUTO_INCREMENT,\n  k INTEGER DEFAULT '0' NOT NULL,\n  c CHAR(120) DEFAULT '' NOT NULL,\n  pad CHAR(60) DEFAULT '' NOT NULL,\n  PRIMARY KEY (id)\n) /*! ENGINE = innodb */ ",
        "SELECT COUNT(*) FROM (SELECT * FROM sbtest1 WHERE k LIKE '%0%' LIMIT 10000) t",
    ] {
        assert_eq!(my(s), None, "{s}");
    }
    // Shapes applications and drivers do send.
    for s in [
        "SELECT * FROM t WHERE 1=1 AND a=5",
        "SELECT * FROM t WHERE (1=1) AND a=5",
        "SELECT * FROM a JOIN b ON 1=1",
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'shop'",
        "SELECT t.oid FROM pg_catalog.pg_type t WHERE t.typnamespace IN (SELECT oid FROM pg_catalog.pg_namespace)",
        "SELECT id FROM users WHERE email = 'o''reilly@example.com' /*traceparent='00-4bf9-01'*/",
        "SELECT REPLACE(note, CHAR(13), '') FROM notes WHERE id = 7",
        "SELECT a FROM t1 WHERE x = 1 UNION ALL SELECT a FROM t2 WHERE x = 2",
        "CREATE FUNCTION f() RETURNS int AS $$ SELECT 1 WHERE 'a' = 'a' $$ LANGUAGE sql",
    ] {
        assert_eq!(ansi(s), None, "{s}");
    }
    assert_eq!(my(r"SELECT * FROM t WHERE path = 'C:\\temp\\' AND x = 1"), None);
}

#[test]
fn truncated_statements_are_not_unbalanced() {
    let cut = b"INSERT INTO t (a) VALUES ('a long value cut by the protocol wind";
    let d = StatementDetector { truncated: true, ..StatementDetector::new(Dialect::Mysql) };
    assert_eq!(d.scan(cut), None);
    assert_eq!(StatementDetector::new(Dialect::Mysql).scan(cut).map(|f| f.reason), Some(Reason::UnbalancedQuote));
    let mut long = b"SELECT a FROM t WHERE b IN (".to_vec();
    while long.len() < MAX_STATEMENT + 100 {
        long.extend_from_slice(b"12345,");
    }
    long.extend_from_slice(b"1)");
    assert_eq!(StatementDetector::new(Dialect::Ansi).scan(&long), None);
}

#[test]
fn fragments_run_libinjection_on_tails() {
    let s = b"SELECT a FROM t WHERE id = 1 AND (SELECT 1 FROM dual)";
    let d = StatementDetector { fragments: Fragments::AfterComparison, ..StatementDetector::new(Dialect::Mysql) };
    assert!(d.scan(b"SELECT abalance FROM pgbench_accounts WHERE aid = 77123").is_none());
    let _ = d.scan(s);
}

#[test]
fn arbitrary_bytes_never_panic() {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let seeds: [&[u8]; 3] = [
        b"SELECT id FROM t WHERE id=1 UNION ALL SELECT NULL,CHAR(113,118),CONCAT(0x7171,'a')-- x",
        b"SELECT $a$ x $a$, E'\\'' FROM t WHERE a='b''c' /* d /* e */ */ AND f(1)=1",
        b"/*!50000SELECT*/ `a` FROM [b] WHERE c=\"d\\\"\" # e",
    ];
    for round in 0..3000 {
        let mut b = seeds[round % seeds.len()].to_vec();
        for _ in 0..rng.below(6) {
            if b.is_empty() {
                break;
            }
            let i = rng.below(b.len());
            match rng.below(3) {
                0 => b[i] = rng.next() as u8,
                1 => b.truncate(i),
                _ => b.insert(i, b"'\"`[(/*-#;$\\"[rng.below(12)]),
            }
        }
        if round % 10 == 0 {
            b = (0..rng.below(300)).map(|_| rng.next() as u8).collect();
        }
        for d in [Dialect::Ansi, Dialect::Mysql, Dialect::Tsql, Dialect::Cql] {
            for lenient in [false, true] {
                for fragments in [Fragments::None, Fragments::AfterComparison, Fragments::AtStrings] {
                    let _ = StatementDetector { dialect: d, truncated: round % 2 == 0, fragments, lenient }.scan(&b);
                }
            }
        }
    }
}

// ---- Work per byte (issue 9 item 7).

fn tokens(mut l: Lexer<'_>) -> (Vec<Token>, u64) {
    let mut out = Vec::new();
    for t in l.by_ref() {
        out.push(t);
    }
    (out, l.examined())
}

#[test]
fn lenient_memo_gives_the_same_tokens() {
    // Random statements over the bytes that open, escape and close runs: the lexer that
    // remembers unclosed runs yields exactly the tokens of the one that scans again.
    let mut rng = Rng(0xdead_beef_1234_5678);
    let alphabet = b"'\"`[]\\/* -#$x1=\n";
    let mut n = 0;
    for _ in 0..20_000 {
        let len = rng.below(60);
        let b: Vec<u8> = (0..len).map(|_| alphabet[rng.below(alphabet.len())]).collect();
        for d in [Dialect::Mysql, Dialect::Ansi, Dialect::Tsql, Dialect::Cql] {
            let mut memo = Unclosed::new();
            let (plain, _) = tokens(Lexer::lenient(&b, d));
            let (memoised, _) = tokens(Lexer::lenient_with(&b, d, &mut memo));
            assert_eq!(plain, memoised, "{d:?} {:?}", String::from_utf8_lossy(&b));
            n += plain.len();
        }
    }
    assert!(n > 100_000, "{n}");
}

#[test]
fn unbalanced_values_are_scanned_a_bounded_number_of_times() {
    // Values a vulnerable application would paste into a statement, full of runs that never
    // close: without the memo each quote or `/*` scanned to the end again (n²/2).
    let shapes: [&[u8]; 4] = [b"'\\", b"\"\\", b"/* ", b"\\'"];
    for shape in shapes {
        let mut ratios = Vec::new();
        for n in [256usize, 1024, 4096, MAX_STATEMENT] {
            let v: Vec<u8> = shape.iter().copied().cycle().take(n).collect();
            let mut memo = Unclosed::new();
            let (_, work) = tokens(Lexer::lenient_with(&v, Dialect::Mysql, &mut memo));
            let (_, plain) = tokens(Lexer::lenient(&v, Dialect::Mysql));
            assert!(work <= 4 * n as u64, "{:?} {n}: {work}", String::from_utf8_lossy(shape));
            ratios.push((work as f64 / n as f64, plain as f64 / n as f64));
            let d = StatementDetector { dialect: Dialect::Mysql, lenient: true, ..StatementDetector::default() };
            let (_, scanned) = d.scan_counted(&v);
            assert!(scanned <= 4 * n as u64, "{:?} {n}: {scanned}", String::from_utf8_lossy(shape));
        }
        // The memo is what keeps it linear: without it the work per byte grows with n.
        let (last, first) = (ratios[ratios.len() - 1], ratios[0]);
        assert!(last.0 <= first.0 * 1.5, "{:?}: {ratios:?}", String::from_utf8_lossy(shape));
        assert!(last.1 > 8.0 * first.1, "{:?}: {ratios:?}", String::from_utf8_lossy(shape));
    }
}

#[test]
fn random_long_values_stay_linear() {
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    let alphabet = b"'\"`\\/* x";
    for _ in 0..200 {
        let n = 256 + rng.below(MAX_STATEMENT - 256);
        let v: Vec<u8> = (0..n).map(|_| alphabet[rng.below(alphabet.len())]).collect();
        for d in [Dialect::Mysql, Dialect::Tsql] {
            let mut memo = Unclosed::new();
            let (_, work) = tokens(Lexer::lenient_with(&v, d, &mut memo));
            assert!(work <= 8 * n as u64, "{d:?} {n}: {work}");
        }
    }
}

#[test]
fn dollar_quoted_strings_are_closed_in_linear_time() {
    // `$aaaa…$` followed by a body of near-misses: a naive search compares the tag at every
    // body position (body × tag).
    for n in [1024usize, 4096, MAX_STATEMENT] {
        let tag = vec![b'a'; n / 4];
        let mut s = b"SELECT $".to_vec();
        s.extend_from_slice(&tag);
        s.push(b'$');
        while s.len() < n - tag.len() - 2 {
            s.extend_from_slice(b"$aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
        }
        s.push(b'$');
        s.extend_from_slice(&tag);
        s.push(b'$');
        let (toks, work) = tokens(Lexer::new(&s, Dialect::Ansi));
        assert_eq!(toks.iter().filter(|t| t.kind == Kind::Str).count(), 1);
        assert!(work <= 3 * s.len() as u64, "{n}: {work}");
    }
}
