//! Tests of the statement detector on real statements (corpus captures, sqlmap payloads,
//! pgbench and sysbench statements).

use super::*;

fn my(s: &str) -> Option<Reason> {
    StatementDetector::new(Dialect::Mysql).scan(s.as_bytes()).map(|f| f.reason)
}

#[test]
fn scratch() {
    for s in [
        "SELECT a FROM t WHERE c='apple';(SELECT * FROM (SELECT(SLEEP(5)))KFPx)#'",
        "SELECT a FROM t WHERE c=apple';(SELECT * FROM (SELECT(SLEEP(5)))KFPx)#",
    ] {
        let toks: Vec<_> = Lexer::new(s.as_bytes(), Dialect::Mysql).map(|t| (t.kind, &s[t.start..t.end])).collect();
        eprintln!("{s}\n  {:?}\n  {toks:?}", my(s));
    }
}
