//! The SQL injection checks (statement detector in every dialect, HTTP target, form body and
//! parameter checks) on arbitrary bytes: never panic.
#![no_main]
use warden_dp::app::Dir;
use warden_dp::detect::{sql::Dialect, Threats};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut t = Threats::default();
    for d in [Dialect::Ansi, Dialect::Mysql, Dialect::Tsql, Dialect::Cql] {
        t.sql_in(Dir::ToServer, d, data.first().is_some_and(|b| b & 1 == 1), data);
    }
    t.sql(Dir::ToServer, data);
    t.http_target(Dir::ToServer, data);
    t.http_form(Dir::ToServer, data);
    t.http_param(Dir::ToServer, data);
});
