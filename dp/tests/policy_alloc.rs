//! `CompiledPolicy::evaluate` and the externalIP lookup (`enforce::external_ip_mitm`) allocate
//! nothing: counted by a global allocator wrapper, on the evaluating thread only.

use std::net::IpAddr;

use warden_dp::app::App;
use warden_dp::policy::{CompiledPolicy, Facts, Policy};

mod alloc_count;

#[global_allocator]
static GLOBAL: alloc_count::Counting = alloc_count::Counting;

#[test]
fn evaluate_does_not_allocate() {
    let mut text = String::from(
        "[[workload]]\nid = \"web\"\nips = [\"198.18.0.2\", \"2001:db8::2\"]\nmode = \"protect\"\n\
         [[workload]]\nid = \"cli\"\nips = [\"198.18.0.1\", \"2001:db8::1\"]\nmode = \"alert\"\n",
    );
    let ends = [
        "any",
        "external",
        "web",
        "cli",
        "198.18.0.0/15",
        "198.18.0.0/24",
        "2001:db8::/32",
        "0.0.0.0/0",
    ];
    let mut id = 0;
    for from in ends {
        for to in ends {
            for (proto, ports, extra) in [
                ("tcp", "ports = [\"80\", \"8000-8100\"]\n", "apps = [\"http\"]\n"),
                ("udp", "ports = [\"53\"]\n", "fqdn = \"*.a.test\"\n"),
                ("any", "", ""),
                ("tcp", "ports = [\"1-1000\"]\n", ""),
            ] {
                if from.contains(':') && to.contains('.') || from.contains('.') && to.contains(':') {
                    continue;
                }
                id += 1;
                text += &format!(
                    "[[rule]]\nid = {id}\nfrom = \"{from}\"\nto = \"{to}\"\nip_proto = \"{proto}\"\n{ports}{extra}\
                     action = \"{}\"\npriority = {}\n",
                    if id % 3 == 0 { "deny" } else { "allow" },
                    (id * 7919) % 97
                );
            }
        }
    }
    // Services with externalIPs for the k8s_external_ip_mitm lookup: web's address and an
    // outside one claimed by a service cli backs, on some ports; web's v6 address on all.
    text += "[[service]]\nname = \"a\"\nexternal_ips = [\"198.18.0.2\", \"198.18.0.77\"]\n\
             ports = [80, \"8000-8100\"]\nworkloads = [\"cli\"]\n\
             [[service]]\nname = \"b\"\nexternal_ips = [\"2001:db8::2\", \"198.18.0.77\"]\n";
    let p = Policy::from_toml(&text).unwrap();
    let c = CompiledPolicy::compile(&p).unwrap();
    let names = ["x.a.test"];
    let addrs: Vec<IpAddr> = [
        "198.18.0.1",
        "198.18.0.2",
        "198.18.0.77",
        "192.0.2.1",
        "2001:db8::1",
        "2001:db8::2",
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect();
    let mut facts = Vec::new();
    for &client in &addrs {
        for &server in &addrs {
            if client.is_ipv4() != server.is_ipv4() {
                continue;
            }
            for (ip_proto, server_port) in [(6, 80), (6, 8050), (6, 443), (17, 53), (1, 0)] {
                for app in [None, Some(App::Unknown), Some(App::Http)] {
                    facts.push(Facts {
                        client,
                        server,
                        ip_proto,
                        server_port,
                        app,
                        server_names: &names,
                        client_names: &[],
                    });
                }
            }
        }
    }
    // The counter works: a Box counts.
    let ((), n) = alloc_count::counted(|| drop(std::hint::black_box(Box::new(1u64))));
    assert_eq!(n, 1, "allocation counter");

    let mut decided = 0;
    let ((), n) = alloc_count::counted(|| {
        for f in &facts {
            decided += usize::from(c.evaluate(f).rule_id.is_some());
        }
    });
    assert_eq!(n, 0, "evaluate allocated");
    assert!(decided > facts.len() / 2, "{decided} of {}", facts.len());

    // The externalIP lookup, as the packet path calls it after an evaluation.
    let decisions: Vec<_> = facts.iter().map(|f| c.evaluate(f)).collect();
    let mut kinds = [0usize; 2];
    let ((), n) = alloc_count::counted(|| {
        for (f, d) in facts.iter().zip(&decisions) {
            if let Some(m) = warden_dp::enforce::external_ip_mitm(&c, f, d) {
                kinds[usize::from(m.owner.is_some())] += 1;
            }
        }
    });
    assert_eq!(n, 0, "external_ip_mitm allocated");
    assert!(kinds[0] > 0 && kinds[1] > 0, "unowned {} owned {}", kinds[0], kinds[1]);
}
