//! The DNS threat checks on arbitrary bytes: the message scan (its walk bounded by the step
//! budget), the parser fed the bytes as a UDP message in both directions with the queries it
//! hands out going to the tunnelling detector, and the detector on the bytes as a name: never
//! panic, and an unsafe message teaches no answer.
#![no_main]
use warden_dp::app::dns::{parser, Dns};
use warden_dp::app::{AppParser, Dir};
use warden_dp::detect::dns_tunnel::{Config, DnsTunnel};
use warden_dp::flow::Addr;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let s = parser::scan(data, |_, _| {});
    let mut tunnel = DnsTunnel::new(Config { buckets: 16, ..Config::default() });
    let mut dns = Dns::default();
    for (i, dir) in [Dir::ToServer, Dir::ToClient, Dir::ToServer].into_iter().enumerate() {
        dns.feed(dir, data);
        for (name, qtype) in dns.queries().iter() {
            tunnel.observe(0, Addr::v4([198, 18, 0, 1]), name, qtype, i as u64);
        }
        dns.clear_queries();
    }
    if s.names_unsafe {
        assert!(dns.learned().0.is_empty());
    }
    tunnel.observe(1, Addr::v4([198, 18, 0, 2]), data, 16, 0);
});
