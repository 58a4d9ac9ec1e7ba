//! Policy files (what `wardenctl policy apply` sends over the control socket): parsing,
//! compiling, writing back, one evaluation and the externalIP lookups never panic, and a policy that loads reads back
//! equal from its own TOML.
#![no_main]
use warden_dp::policy::{CompiledPolicy, Facts, Policy};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(p) = Policy::from_toml(text) else { return };
    let again = Policy::from_toml(&p.to_toml()).expect("a loaded policy reads back");
    assert_eq!(again, p);
    if let Ok(c) = CompiledPolicy::compile(&p) {
        let a = "198.18.0.1".parse().unwrap();
        let b = "198.18.0.2".parse().unwrap();
        let f = Facts { client: a, server: b, ip_proto: 6, server_port: 80, app: None, server_names: &[], client_names: &[] };
        let d = c.evaluate(&f);
        // The externalIP lookup on every claimed address, from both ends' workloads.
        for s in c.services() {
            for &ip in &s.external_ips {
                for client in [d.client_workload, c.workload_of(ip), None] {
                    let _ = c.external_ip_mitm(client, ip, 6, 443);
                }
            }
        }
    }
});
