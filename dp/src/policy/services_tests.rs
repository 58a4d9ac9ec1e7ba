//! Services with externalIPs: loading and its errors, runtime-edit round trips, and the
//! `k8s_external_ip_mitm` lookup ([`CompiledPolicy::external_ip_mitm`]), checked case by case
//! and against a linear reference on random policies.

use std::net::IpAddr;

use super::tests::Rng;
use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn load(text: &str) -> CompiledPolicy {
    let p = Policy::from_toml(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    CompiledPolicy::compile(&p).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// (file, expected line, expected field, a piece of the message)
fn check_err(text: &str, line: usize, field: &str, msg: &str) {
    let e = match Policy::from_toml(text) {
        Ok(p) => panic!("accepted: {p:?}\n{text}"),
        Err(e) => e,
    };
    assert_eq!((e.line, e.field.as_str()), (line, field), "{e}\n{text}");
    assert!(e.message.contains(msg), "{e:?} lacks {msg:?}");
}

/// Four workloads; `db` owns 198.18.0.3 and 2001:db8::3, `pay-a`/`pay-b` back the services.
const WL: &str = r#"[[workload]]
id = "cli"
ips = ["198.18.0.1", "2001:db8::1"]
[[workload]]
id = "db"
ips = ["198.18.0.3", "2001:db8::3"]
[[workload]]
id = "pay-a"
ips = ["198.18.0.10", "2001:db8::10"]
[[workload]]
id = "pay-b"
ips = ["198.18.0.11"]
"#;

// ---------------------------------------------------------------------------------------
// Loading.

#[test]
fn services_load_and_read_back() {
    let text = format!(
        "{WL}[[service]]\nname = \"payments\"\nnamespace = \"shop\"\n\
         external_ips = [\"198.18.0.3\", \"198.19.9.9\", \"2001:db8::3\"]\n\
         ports = [\"443\", 8443, \"9000-9100\"]\nworkloads = [\"pay-a\", \"pay-b\"]\n\
         [[service]]\nname = \"dns\"\nexternal_ips = [\"198.19.0.53\"]\n"
    );
    let p = Policy::from_toml(&text).unwrap();
    assert_eq!(p.services.len(), 2);
    let s = &p.services[0];
    assert_eq!((s.name.as_str(), s.namespace.as_str()), ("payments", "shop"));
    assert_eq!(s.external_ips, vec![ip("198.18.0.3"), ip("198.19.9.9"), ip("2001:db8::3")]);
    assert_eq!(
        s.ports,
        Some(vec![
            PortRange { lo: 443, hi: 443 },
            PortRange { lo: 8443, hi: 8443 },
            PortRange { lo: 9000, hi: 9100 }
        ])
    );
    assert_eq!(s.workloads, vec!["pay-a".to_string(), "pay-b".to_string()]);
    let d = &p.services[1];
    assert_eq!((d.namespace.as_str(), d.ports.as_ref(), d.workloads.len()), ("default", None, 0));

    // The file form reads back equal (the namespace written out), and so does JSON's shape.
    let out = p.to_toml();
    assert_eq!(Policy::from_toml(&out).unwrap(), p, "{out}");
    assert!(out.contains("[[service]]") && out.contains("namespace = \"default\""), "{out}");
    let j = serde_json::to_value(&p).unwrap();
    assert_eq!(j["service"][0]["external_ips"][2], "2001:db8::3");
    assert_eq!(j["service"][0]["ports"][2], "9000-9100");
    assert!(j["service"][1].get("ports").is_none());

    let c = CompiledPolicy::compile(&p).unwrap();
    assert_eq!(c.services().len(), 2);
    assert_eq!(c.service_label(ServiceIdx(0)), "shop/payments");
    assert_eq!(c.service(ServiceIdx(1)).name, "dns");
}

// Service fields start on line 14 (after WL's 12 lines and the table header on 13).
#[test]
fn bad_services_are_rejected_with_line_and_field() {
    let svc = |body: &str| format!("{WL}[[service]]\n{body}");
    check_err(
        &svc("name = \"pay\"\nexternal_ips = [\"198.18.0.50\"]\nworkloads = [\"pay-a\", \"nosuch\"]\n"),
        16,
        "workloads",
        "unknown workload \"nosuch\"",
    );
    check_err(
        &svc("name = \"pay\"\nexternal_ips = [\"198.18.0.50\"]\nworkloads = [\"pay-a\", \"pay-a\"]\n"),
        16,
        "workloads",
        "duplicate workload \"pay-a\"",
    );
    check_err(
        &svc("name = \"pay\"\nexternal_ips = [\n  \"198.18.0.50\",\n  \"198.18.0.300\",\n]\n"),
        17,
        "external_ips",
        "bad address \"198.18.0.300\"",
    );
    check_err(
        &svc("name = \"pay\"\nexternal_ips = [\"198.18.0.0/24\"]\n"),
        15,
        "external_ips",
        "an address, not a CIDR",
    );
    check_err(
        &svc("name = \"pay\"\nexternal_ips = [\"198.18.0.50\", \"198.18.0.50\"]\n"),
        15,
        "external_ips",
        "duplicate address 198.18.0.50",
    );
    for (addr, why) in [
        ("0.0.0.0", "unspecified"),
        ("255.255.255.255", "broadcast"),
        ("127.0.0.1", "loopback"),
        ("169.254.1.1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("::", "unspecified"),
        ("::1", "loopback"),
        ("fe80::1", "link-local"),
        ("ff02::1", "multicast"),
    ] {
        check_err(&svc(&format!("name = \"pay\"\nexternal_ips = [\"{addr}\"]\n")), 15, "external_ips", why);
    }
    check_err(&svc("name = \"pay\"\nexternal_ips = []\n"), 15, "external_ips", "at least one");
    check_err(&svc("name = \"pay\"\n"), 13, "external_ips", "missing field");
    check_err(&svc("external_ips = [\"198.18.0.50\"]\n"), 13, "name", "missing field");
    check_err(
        &svc("name = \"pay\"\nexternal_ips = [\"198.18.0.50\"]\nports = []\n"),
        16,
        "ports",
        "empty port list",
    );
    check_err(
        &svc("name = \"pay\"\nexternal_ips = [\"198.18.0.50\"]\nports = [443, 70000]\n"),
        16,
        "ports",
        "bad port 70000",
    );
    check_err(
        &svc("name = \"pay\"\nexternal_ips = [\"198.18.0.50\"]\nports = [\"90-80\"]\n"),
        16,
        "ports",
        "first port is above the last",
    );
    check_err(
        &svc("name = \"pay\"\nexternal_ips = [\"198.18.0.50\"]\nprotocol = \"tcp\"\n"),
        16,
        "protocol",
        "unknown field",
    );
    for name in ["Pay", "9pay", "pay-", "pay_x", "", &"p".repeat(64)] {
        check_err(
            &svc(&format!("name = \"{name}\"\nexternal_ips = [\"198.18.0.50\"]\n")),
            14,
            "name",
            "bad service name",
        );
    }
    // Namespaces may start with a digit (DNS-1123), not with '-'.
    check_err(
        &svc("name = \"pay\"\nnamespace = \"-shop\"\nexternal_ips = [\"198.18.0.50\"]\n"),
        15,
        "namespace",
        "bad namespace",
    );
    assert!(Policy::from_toml(&svc("name = \"pay\"\nnamespace = \"9shop\"\nexternal_ips = [\"198.18.0.50\"]\n")).is_ok());
    // One namespace and name once; the same name in another namespace is another service.
    let two = |ns2: &str| {
        format!(
            "{WL}[[service]]\nname = \"pay\"\nnamespace = \"shop\"\nexternal_ips = [\"198.18.0.50\"]\n\
             [[service]]\nname = \"pay\"\nnamespace = \"{ns2}\"\nexternal_ips = [\"198.18.0.51\"]\n"
        )
    };
    let e = Policy::from_toml(&two("shop")).unwrap_err();
    assert_eq!(e.to_string(), "policy line 18, field \"name\": duplicate service shop/pay");
    assert_eq!(Policy::from_toml(&two("bank")).unwrap().services.len(), 2);
}

#[test]
fn compile_checks_services_built_in_code() {
    let mut p = Policy::from_toml(WL).unwrap();
    let good = Service {
        name: "pay".into(),
        namespace: "shop".into(),
        external_ips: vec![ip("198.18.0.50")],
        ports: None,
        workloads: vec!["pay-a".into()],
    };
    p.services = vec![Service { workloads: vec!["gone".into()], ..good.clone() }];
    let e = CompiledPolicy::compile(&p).unwrap_err();
    assert_eq!((e.line, e.field.as_str()), (0, "workloads"), "{e}");
    assert!(e.message.contains("shop/pay") && e.message.contains("\"gone\""), "{e}");
    p.services = vec![good.clone(), good.clone()];
    assert_eq!(CompiledPolicy::compile(&p).unwrap_err().field, "name");
    p.services = vec![Service { external_ips: vec![], ..good.clone() }];
    assert_eq!(CompiledPolicy::compile(&p).unwrap_err().field, "external_ips");
    p.services = vec![Service { ports: Some(vec![]), ..good.clone() }];
    assert_eq!(CompiledPolicy::compile(&p).unwrap_err().field, "ports");
    p.services = vec![Service { workloads: vec!["pay-a".into(), "pay-a".into()], ..good }];
    assert_eq!(CompiledPolicy::compile(&p).unwrap_err().field, "workloads");
}

// ---------------------------------------------------------------------------------------
// The lookup.

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;

fn wl(c: &CompiledPolicy, id: &str) -> Option<WorkloadIdx> {
    Some(c.workload_by_id(id).unwrap_or_else(|| panic!("no workload {id}")))
}

/// `payments` (backed by pay-a, pay-b) claims db's addresses and an outside one on 443 and
/// 9000-9100; `mirror` (no ports, backed by db) claims db's v4 address too.
fn hijack() -> CompiledPolicy {
    load(&format!(
        "{WL}[[service]]\nname = \"payments\"\nnamespace = \"shop\"\n\
         external_ips = [\"198.18.0.3\", \"198.19.9.9\", \"2001:db8::3\"]\n\
         ports = [443, \"9000-9100\"]\nworkloads = [\"pay-a\", \"pay-b\"]\n\
         [[service]]\nname = \"mirror\"\nexternal_ips = [\"198.18.0.3\", \"198.19.7.7\"]\nworkloads = [\"db\"]\n"
    ))
}

#[test]
fn an_external_ip_owned_by_another_workload_is_the_threat() {
    let c = hijack();
    let (cli, db, pay_a) = (wl(&c, "cli"), wl(&c, "db"), wl(&c, "pay-a"));
    let payments = ServiceIdx(0);
    let m = ExternalIpMitm { service: payments, owner: db };
    let want = Some(m);
    // cli's traffic to db's address on a claimed port goes to the payments pods.
    assert_eq!(c.external_ip_mitm(cli, ip("198.18.0.3"), TCP, 443), want);
    assert_eq!(c.external_ip_mitm(cli, ip("198.18.0.3"), UDP, 9050), want);
    assert_eq!(c.external_ip_mitm(cli, ip("198.18.0.3"), TCP, 9100), want, "range end");
    // The address is a workload's: whoever the client is (a host outside the policy, or the
    // service's own pods), traffic meant for db is redirected.
    assert_eq!(c.external_ip_mitm(None, ip("198.18.0.3"), TCP, 443), want);
    assert_eq!(c.external_ip_mitm(pay_a, ip("198.18.0.3"), TCP, 443), want);
    // IPv6 alike.
    assert_eq!(c.external_ip_mitm(cli, ip("2001:db8::3"), TCP, 443), want);
    assert_eq!(m.reason(), "external_ip_of_workload");
    assert_eq!(c.service_label(m.service), "shop/payments");
    assert_eq!(c.workload_id(m.owner.unwrap()), "db");
}

#[test]
fn no_threat_off_the_claimed_ports_or_to_a_backing_owner() {
    let c = hijack();
    let (cli, db) = (wl(&c, "cli"), wl(&c, "db"));
    // Ports payments does not list; mirror (no ports) claims 198.18.0.3 too, but db backs it.
    for port in [80, 442, 444, 8999, 9101] {
        assert_eq!(c.external_ip_mitm(cli, ip("198.18.0.3"), TCP, port), None, "port {port}");
        assert_eq!(c.external_ip_mitm(cli, ip("2001:db8::3"), UDP, port), None, "v6 port {port}");
    }
    // A service with ports claims TCP and UDP only.
    assert_eq!(c.external_ip_mitm(cli, ip("198.18.0.3"), ICMP, 443), None);
    assert_eq!(c.external_ip_mitm(cli, ip("198.18.0.3"), 132, 443), None, "SCTP");
    // The owner's own traffic to its address is not redirected away from it.
    assert_eq!(c.external_ip_mitm(db, ip("198.18.0.3"), TCP, 443), None);
    // Addresses nobody claims, and other workloads' addresses.
    assert_eq!(c.external_ip_mitm(cli, ip("198.18.0.10"), TCP, 443), None);
    assert_eq!(c.external_ip_mitm(cli, ip("198.18.0.4"), TCP, 443), None);
    assert_eq!(c.external_ip_mitm(cli, ip("2001:db8::4"), TCP, 443), None);
    // An IPv4-mapped IPv6 address is an IPv6 address (as everywhere in the policy).
    assert_eq!(c.external_ip_mitm(cli, ip("::ffff:198.18.0.3"), TCP, 443), None);
    // Nothing at all in a policy without services.
    let plain = load(WL);
    assert_eq!(plain.external_ip_mitm(wl(&plain, "cli"), ip("198.18.0.3"), TCP, 443), None);
    assert!(plain.external_ip_conflicts().is_empty());
}

#[test]
fn an_unowned_external_ip_is_the_threat_for_workloads_that_do_not_back_it() {
    let c = hijack();
    let (cli, db, pay_a, pay_b) = (wl(&c, "cli"), wl(&c, "db"), wl(&c, "pay-a"), wl(&c, "pay-b"));
    // 198.19.9.9 is no workload's: a workload's traffic to it reaches the payments pods.
    let m = ExternalIpMitm { service: ServiceIdx(0), owner: None };
    let want = Some(m);
    assert_eq!(c.external_ip_mitm(cli, ip("198.19.9.9"), TCP, 443), want);
    assert_eq!(c.external_ip_mitm(db, ip("198.19.9.9"), TCP, 443), want);
    assert_eq!(m.reason(), "external_ip_unowned");
    // The service's own pods reaching their service, and clients that are no workload (the
    // outside traffic externalIPs are for), are not.
    assert_eq!(c.external_ip_mitm(pay_a, ip("198.19.9.9"), TCP, 443), None);
    assert_eq!(c.external_ip_mitm(pay_b, ip("198.19.9.9"), TCP, 443), None);
    assert_eq!(c.external_ip_mitm(None, ip("198.19.9.9"), TCP, 443), None);
    assert_eq!(c.external_ip_mitm(cli, ip("198.19.9.9"), TCP, 80), None, "port");
    // mirror lists no ports: every protocol and port.
    let mirror = Some(ExternalIpMitm { service: ServiceIdx(1), owner: None });
    for (proto, port) in [(TCP, 1), (UDP, 65535), (ICMP, 0), (132, 7)] {
        assert_eq!(c.external_ip_mitm(cli, ip("198.19.7.7"), proto, port), mirror, "{proto}/{port}");
    }
    assert_eq!(c.external_ip_mitm(db, ip("198.19.7.7"), TCP, 1), None, "db backs mirror");
}

#[test]
fn several_services_on_one_address_answer_in_file_order() {
    // Two services claim the same outside address: `a` on 443, `b` on every port, backed by
    // cli. The first claim that applies answers.
    let c = load(&format!(
        "{WL}[[service]]\nname = \"a\"\nexternal_ips = [\"198.19.1.1\", \"2001:db8:1::1\"]\nports = [443]\nworkloads = [\"pay-a\"]\n\
         [[service]]\nname = \"b\"\nexternal_ips = [\"2001:db8:1::1\", \"198.19.1.1\"]\nworkloads = [\"cli\"]\n"
    ));
    let (cli, db, pay_a) = (wl(&c, "cli"), wl(&c, "db"), wl(&c, "pay-a"));
    for addr in ["198.19.1.1", "2001:db8:1::1"] {
        let svc = |c: &CompiledPolicy, w, port| c.external_ip_mitm(w, ip(addr), TCP, port).map(|m| m.service.0);
        assert_eq!(svc(&c, db, 443), Some(0), "{addr}");
        assert_eq!(svc(&c, db, 80), Some(1), "{addr}");
        // cli backs b, not a; pay-a backs a, not b.
        assert_eq!(svc(&c, cli, 443), Some(0), "{addr}");
        assert_eq!(svc(&c, cli, 80), None, "{addr}");
        assert_eq!(svc(&c, pay_a, 443), Some(1), "{addr}");
        assert_eq!(svc(&c, pay_a, 80), Some(1), "{addr}");
    }
}

#[test]
fn conflicts_name_every_claimed_address_of_a_workload_not_backing() {
    let c = hijack();
    let got: Vec<(String, IpAddr, String)> = c
        .external_ip_conflicts()
        .into_iter()
        .map(|(s, a, w)| (c.service_label(s).to_string(), a, c.workload_id(w).to_string()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("shop/payments".to_string(), ip("198.18.0.3"), "db".to_string()),
            ("shop/payments".to_string(), ip("2001:db8::3"), "db".to_string()),
        ]
    );
}

// ---------------------------------------------------------------------------------------
// Against a linear reference.

/// The lookup's semantics written out linearly over the source policy.
fn reference(p: &Policy, client: Option<WorkloadIdx>, server: IpAddr, proto: u8, port: u16) -> Option<ExternalIpMitm> {
    let owner = p.workloads.iter().position(|w| w.ips.contains(&server)).map(|i| WorkloadIdx(i as u32));
    let backs = |s: &Service, w: WorkloadIdx| s.workloads.iter().any(|id| *id == p.workloads[w.index()].id);
    for (i, s) in p.services.iter().enumerate() {
        if !s.external_ips.contains(&server) {
            continue;
        }
        if let Some(ports) = &s.ports {
            if !(proto == 6 || proto == 17) || !ports.iter().any(|r| r.contains(port)) {
                continue;
            }
        }
        let hit = match owner {
            Some(o) => !backs(s, o) && client != Some(o),
            None => client.is_some_and(|c| !backs(s, c)),
        };
        if hit {
            return Some(ExternalIpMitm { service: ServiceIdx(i as u32), owner });
        }
    }
    None
}

#[test]
fn lookup_matches_the_reference_on_random_policies() {
    let mut r = Rng(0x5eed_0815);
    let mut hits = [0u64; 2];
    for case in 0..400 {
        // A small address pool so services, workloads and facts collide often.
        let pool: Vec<IpAddr> = (0..12)
            .map(|i| {
                if r.below(3) == 0 {
                    IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i))
                } else {
                    IpAddr::V4(std::net::Ipv4Addr::new(198, 18, 0, i as u8 + 1))
                }
            })
            .collect();
        let mut text = String::new();
        let mut free: Vec<IpAddr> = pool.clone();
        let nw = 1 + r.below(5);
        for w in 0..nw {
            let mut ips = Vec::new();
            for _ in 0..1 + r.below(2) {
                if free.len() > 4 {
                    ips.push(free.swap_remove(r.below(free.len() as u64) as usize));
                }
            }
            if ips.is_empty() {
                break;
            }
            let list: Vec<String> = ips.iter().map(|a| format!("\"{a}\"")).collect();
            text += &format!("[[workload]]\nid = \"w{w}\"\nips = [{}]\n", list.join(", "));
        }
        let ids: Vec<String> = Policy::from_toml(&text).unwrap().workloads.iter().map(|w| w.id.clone()).collect();
        for s in 0..1 + r.below(4) {
            let mut ips: Vec<IpAddr> = Vec::new();
            for _ in 0..1 + r.below(3) {
                let a = pool[r.below(pool.len() as u64) as usize];
                if !ips.contains(&a) {
                    ips.push(a);
                }
            }
            let list: Vec<String> = ips.iter().map(|a| format!("\"{a}\"")).collect();
            let mut body = format!("[[service]]\nname = \"s{s}\"\nexternal_ips = [{}]\n", list.join(", "));
            if r.below(2) == 0 {
                let lo = r.below(6) as u16 * 100;
                body += &format!("ports = [{}, \"{}-{}\"]\n", 1 + r.below(600), lo, lo + r.below(300) as u16);
            }
            let backing: Vec<String> =
                ids.iter().filter(|_| r.below(3) == 0).map(|id| format!("\"{id}\"")).collect();
            body += &format!("workloads = [{}]\n", backing.join(", "));
            text += &body;
        }
        let p = Policy::from_toml(&text).unwrap_or_else(|e| panic!("case {case}: {e}\n{text}"));
        assert_eq!(Policy::from_toml(&p.to_toml()).unwrap(), p, "case {case} round trip");
        let c = CompiledPolicy::compile(&p).unwrap();
        for _ in 0..60 {
            let client = match r.below(p.workloads.len() as u64 + 1) {
                0 => None,
                i => Some(WorkloadIdx(i as u32 - 1)),
            };
            let server = pool[r.below(pool.len() as u64) as usize];
            let proto = [TCP, UDP, ICMP][r.below(3) as usize];
            let port = r.below(900) as u16;
            let got = c.external_ip_mitm(client, server, proto, port);
            assert_eq!(
                got,
                reference(&p, client, server, proto, port),
                "case {case}: {client:?} -> {server} {proto}/{port}\n{text}"
            );
            if let Some(m) = got {
                hits[usize::from(m.owner.is_some())] += 1;
            }
        }
    }
    // Both kinds must be exercised, not just "no threat".
    assert!(hits[0] > 100 && hits[1] > 100, "unowned {} owned {}", hits[0], hits[1]);
}

/// The annotated example `conf/policy.toml` loads, and its service is the documented case:
/// `payments` (backed by web) claims cache's address on 443.
#[test]
fn the_example_policy_loads_and_its_service_claims_cache() {
    let c = load(include_str!("../../../conf/policy.toml"));
    let (web, cache) = (wl(&c, "web"), wl(&c, "cache"));
    let payments = ExternalIpMitm { service: ServiceIdx(0), owner: cache };
    assert_eq!(c.service_label(payments.service), "shop/payments");
    assert_eq!(c.external_ip_mitm(web, ip("198.18.0.3"), TCP, 443), Some(payments));
    assert_eq!(c.external_ip_mitm(None, ip("198.18.0.3"), TCP, 443), Some(payments));
    assert_eq!(c.external_ip_mitm(web, ip("198.18.0.3"), TCP, 6379), None);
    assert_eq!(c.external_ip_conflicts().len(), 1);
}

/// The learned policy keeps the services (they are facts about the cluster, not traffic).
#[test]
fn the_learned_policy_keeps_the_services() {
    let text = format!("{WL}[[service]]\nname = \"pay\"\nexternal_ips = [\"198.18.0.3\"]\nworkloads = [\"pay-a\"]\n");
    let base = Policy::from_toml(&text).unwrap();
    let seen = [LearnedConn {
        client: ip("198.18.0.1"),
        server: ip("198.18.0.3"),
        ip_proto: 6,
        server_port: 443,
        app: crate::app::App::Unknown,
    }];
    let learned = learned_policy(&base, &seen);
    assert_eq!(learned.rules.len(), 1);
    assert_eq!(learned.services, base.services);
    let back = Policy::from_toml(&learned.to_toml()).unwrap();
    assert_eq!(back, learned);
}
