//! Policy tests: loading and errors, rule matching, modes, apps, learning, and the property
//! test of the compiled matcher against the reference on random policies.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;
use crate::app::{App, AppSet};

// ---------------------------------------------------------------------------------------
// Helpers.

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn load(text: &str) -> (Policy, CompiledPolicy) {
    let p = Policy::from_toml(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let c = CompiledPolicy::compile(&p).unwrap();
    (p, c)
}

fn err(text: &str) -> PolicyError {
    match Policy::from_toml(text) {
        Ok(p) => panic!("accepted: {p:?}"),
        Err(e) => e,
    }
}

/// Evaluates with both matchers, checks they agree, returns the decision.
fn ev(p: &Policy, c: &CompiledPolicy, f: &Facts<'_>) -> Decision {
    let d = c.evaluate(f);
    assert_eq!(d, reference_evaluate(p, f), "{f:?}");
    d
}

fn tcp(client: &str, server: &str, port: u16) -> Facts<'static> {
    Facts {
        client: ip(client),
        server: ip(server),
        ip_proto: 6,
        server_port: port,
        app: Some(App::Unknown),
        server_names: &[],
        client_names: &[],
    }
}

fn verdict(p: &Policy, c: &CompiledPolicy, f: &Facts<'_>) -> (Option<PolicyVerdict>, Option<u32>) {
    let d = ev(p, c, f);
    (d.verdict, d.rule_id)
}

const WL: &str = r#"
[[workload]]
id = "web"
ips = ["198.18.0.2", "2001:db8::2"]
macs = ["02:00:00:00:00:02"]
iface = "veth-s"
mode = "protect"
[[workload]]
id = "cli"
ips = ["198.18.0.1", "2001:db8::1"]
mode = "learn"
[[workload]]
id = "mon"
ips = ["198.19.0.9"]
mode = "alert"
"#;

use PolicyVerdict::*;

// ---------------------------------------------------------------------------------------
// Loading.

#[test]
fn loads_the_example_and_reads_back_its_own_output() {
    let text = r#"
default_mode = "protect"   # mode of workloads that do not say
[[workload]]
id = "web"
ips = ["198.18.0.2", "2001:db8::2"]
macs = ["02:00:00:00:00:02"]
iface = "veth-s"
[[workload]]
id = "db"
ips = ["198.18.0.3"]
mode = "alert"
[[rule]]
id = 10
from = "any"
to = "web"
ip_proto = "tcp"
ports = ["80", "8000-8100", 443]
apps = ["http"]
action = "allow"
[[rule]]
id = 11
from = "2001:db8:1::/48"
to = "2001:db8::/32"
fqdn = "*.Example.test."
action = "deny"
priority = 3
"#;
    let p = Policy::from_toml(text).unwrap();
    assert_eq!(p.default_mode, Mode::Protect);
    assert_eq!(p.workloads.len(), 2);
    let web = &p.workloads[0];
    assert_eq!(web.id, "web");
    assert_eq!(web.ips, vec![ip("198.18.0.2"), ip("2001:db8::2")]);
    assert_eq!(web.macs, vec![Mac([2, 0, 0, 0, 0, 2])]);
    assert_eq!(web.iface.as_deref(), Some("veth-s"));
    assert_eq!(web.mode, Mode::Protect, "default_mode applies");
    assert_eq!(p.workloads[1].mode, Mode::Alert);
    let r = &p.rules[0];
    assert_eq!(
        (r.id, r.priority, r.action),
        (10, 10, Action::Allow),
        "priority defaults to the id"
    );
    assert_eq!(r.from, Endpoint::Any);
    assert_eq!(r.to, Endpoint::Workload("web".into()));
    assert_eq!(r.ip_proto, IpProto::Tcp);
    assert_eq!(
        r.ports,
        Some(vec![
            PortRange { lo: 80, hi: 80 },
            PortRange { lo: 8000, hi: 8100 },
            PortRange { lo: 443, hi: 443 }
        ])
    );
    assert_eq!(r.apps, Some(vec![App::Http]));
    let r = &p.rules[1];
    assert_eq!(r.priority, 3);
    assert_eq!(r.ip_proto, IpProto::Any);
    assert_eq!(
        r.from,
        Endpoint::Cidr(Cidr {
            addr: ip("2001:db8:1::"),
            len: 48
        })
    );
    assert_eq!(
        r.to,
        Endpoint::Cidr(Cidr {
            addr: ip("2001:db8::"),
            len: 32
        })
    );
    assert_eq!(
        r.fqdn,
        Some(Fqdn {
            name: "example.test".into(),
            wildcard: true
        })
    );

    let out = p.to_toml();
    assert_eq!(Policy::from_toml(&out).unwrap(), p, "{out}");
    assert!(out.contains("ports = [\"80\", \"8000-8100\", \"443\"]"), "{out}");
    assert!(out.contains("fqdn = \"*.example.test\""), "{out}");
    // JSON shows the file's spelling.
    let j = serde_json::to_value(&p).unwrap();
    assert_eq!(j["rule"][0]["apps"][0], "http");
    assert_eq!(j["rule"][1]["from"], "2001:db8:1::/48");
    assert_eq!(j["workload"][0]["macs"][0], "02:00:00:00:00:02");
    assert_eq!(j["default_mode"], "protect");
}

#[test]
fn compiled_policy_is_send_and_sync_and_decision_is_copy() {
    fn shared<T: Send + Sync + 'static>() {}
    fn copy<T: Copy>() {}
    shared::<CompiledPolicy>();
    copy::<Decision>();
    copy::<Facts<'static>>();
    let c = std::sync::Arc::new(CompiledPolicy::empty());
    let c2 = c.clone();
    let d = std::thread::spawn(move || c2.evaluate(&tcp("198.18.0.1", "198.18.0.2", 80)))
        .join()
        .unwrap();
    assert_eq!(d, Decision::NOT_ENFORCED);
}

#[test]
fn empty_file_is_an_empty_learn_policy() {
    let p = Policy::from_toml("").unwrap();
    assert_eq!(p, Policy::default());
    assert_eq!(Policy::from_toml(&p.to_toml()).unwrap(), p);
    let c = CompiledPolicy::empty();
    let d = c.evaluate(&tcp("198.18.0.1", "198.18.0.2", 80));
    assert_eq!(d, Decision::NOT_ENFORCED);
}

/// (file, expected line, expected field, a piece of the message)
fn check_err(text: &str, line: usize, field: &str, msg: &str) {
    let e = err(text);
    assert_eq!((e.line, e.field.as_str()), (line, field), "{e}\n{text}");
    assert!(e.message.contains(msg), "{e:?} lacks {msg:?}");
}

// Rule fields start on line 6.
const RULE_HEAD: &str = "[[workload]]\nid = \"web\"\nips = [\"198.18.0.2\"]\n[[rule]]\nid = 1\n";

#[test]
fn bad_files_are_rejected_with_line_and_field() {
    let rule = |body: &str| format!("{RULE_HEAD}{body}");
    // Unknown workload in to (line 7) and from (line 6).
    let e = err(&rule("from = \"any\"\nto = \"wbe\"\naction = \"allow\"\n"));
    assert_eq!(
        e.to_string(),
        "policy line 7, field \"to\": unknown workload \"wbe\" \
         (expected a workload id, a CIDR, \"any\" or \"external\")"
    );
    check_err(
        &rule("from = \"nope\"\nto = \"web\"\naction = \"allow\"\n"),
        6,
        "from",
        "unknown workload \"nope\"",
    );
    // Bad CIDRs.
    check_err(
        &rule("from = \"198.18.0.0/33\"\nto = \"web\"\naction = \"allow\"\n"),
        6,
        "from",
        "bad CIDR",
    );
    check_err(
        &rule("from = \"198.18.0.1/24\"\nto = \"web\"\naction = \"allow\"\n"),
        6,
        "from",
        "host bits",
    );
    check_err(
        &rule("from = \"any\"\nto = \"2001:db8::/129\"\naction = \"allow\"\n"),
        7,
        "to",
        "bad CIDR",
    );
    check_err(
        &rule("from = \"any\"\nto = \"198.18.0\"\naction = \"allow\"\n"),
        7,
        "to",
        "bad CIDR",
    );
    check_err(
        &rule("from = \"any\"\nto = \"x/8\"\naction = \"allow\"\n"),
        7,
        "to",
        "bad CIDR",
    );
    check_err(
        &rule("from = \"198.18.0.0/16\"\nto = \"2001:db8::/32\"\naction = \"allow\"\n"),
        7,
        "to",
        "families",
    );
    // Ports.
    let ports = |p: &str| {
        rule(&format!(
            "from = \"any\"\nto = \"web\"\nip_proto = \"tcp\"\nports = {p}\naction = \"allow\"\n"
        ))
    };
    check_err(
        &ports("[\"80\", \"9000-8000\"]"),
        9,
        "ports",
        "bad port range \"9000-8000\"",
    );
    check_err(&ports("[\"65536\"]"), 9, "ports", "0..=65535");
    check_err(&ports("[\"80-\"]"), 9, "ports", "bad port range");
    check_err(&ports("[\"http\"]"), 9, "ports", "bad port range");
    check_err(&ports("[70000]"), 9, "ports", "bad port 70000");
    check_err(&ports("[]"), 9, "ports", "empty port list");
    check_err(
        &rule("from = \"any\"\nto = \"web\"\nip_proto = \"icmp\"\nports = [\"1\"]\naction = \"allow\"\n"),
        9,
        "ports",
        "ports need ip_proto",
    );
    // Apps.
    let apps = |a: &str| {
        rule(&format!(
            "from = \"any\"\nto = \"web\"\napps = {a}\naction = \"allow\"\n"
        ))
    };
    check_err(&apps("[\"http\", \"htp\"]"), 8, "apps", "unknown app \"htp\"");
    check_err(&apps("[\"unknown\"]"), 8, "apps", "\"unknown\" cannot be required");
    check_err(&apps("[]"), 8, "apps", "empty app list");
    // Other rule fields.
    check_err(
        &rule("from = \"any\"\nto = \"web\"\naction = \"permit\"\n"),
        8,
        "action",
        "unknown action",
    );
    check_err(
        &rule("from = \"any\"\nto = \"web\"\nip_proto = \"sctpp\"\naction = \"allow\"\n"),
        8,
        "ip_proto",
        "unknown ip_proto",
    );
    check_err(
        &rule("from = \"any\"\nto = \"web\"\nfqdn = \"a..test\"\naction = \"allow\"\n"),
        8,
        "fqdn",
        "bad fqdn",
    );
    check_err(
        &rule("from = \"any\"\nto = \"web\"\nfqdn = \"*.*.test\"\naction = \"allow\"\n"),
        8,
        "fqdn",
        "bad fqdn",
    );
    check_err(
        &rule("from = \"any\"\nto = \"web\"\naction = \"allow\"\npriority = -1\n"),
        9,
        "priority",
        "priority -1",
    );
    let two = "from = \"any\"\nto = \"web\"\naction = \"allow\"\n\
               [[rule]]\nid = 1\nfrom = \"any\"\nto = \"any\"\naction = \"deny\"\n";
    check_err(&format!("{RULE_HEAD}{two}"), 10, "id", "duplicate rule id 1");
    check_err(
        "[[rule]]\nid = -3\nfrom = \"any\"\nto = \"any\"\naction = \"deny\"\n",
        2,
        "id",
        "rule id -3",
    );
    // Unknown keys, wrong types, missing fields, syntax.
    check_err(
        &rule("from = \"any\"\nto = \"web\"\naction = \"allow\"\nport = [\"80\"]\n"),
        9,
        "port",
        "unknown field",
    );
    check_err("default_mode = \"learn\"\npolicy = 1\n", 2, "policy", "unknown field");
    check_err(
        "[[workload]]\nid = \"a\"\nips = [\"198.18.0.1\"]\nmod = \"learn\"\n",
        4,
        "mod",
        "unknown field",
    );
    check_err(
        &rule("from = \"any\"\nto = 5\naction = \"allow\"\n"),
        7,
        "to",
        "invalid type",
    );
    let e = err(&rule("from = \"any\"\naction = \"allow\"\n"));
    assert_eq!(e.field, "to", "{e}");
    assert!((4..=7).contains(&e.line), "{e}");
    check_err("[[rule]\nid = 1\n", 1, "", "");
    check_err(
        "default_mode = \"learn\"\ndefault_mode = \"alert\"\n",
        2,
        "default_mode",
        "duplicate",
    );
    // Workloads.
    check_err(
        "default_mode = \"block\"\n",
        1,
        "default_mode",
        "unknown mode \"block\"",
    );
    check_err(
        "[[workload]]\nid = \"a\"\nips = [\"198.18.0.1\"]\nmode = \"deny\"\n",
        4,
        "mode",
        "unknown mode",
    );
    check_err(
        &format!("{WL}[[workload]]\nid = \"web\"\nips = [\"198.18.0.7\"]\n"),
        17,
        "id",
        "duplicate workload id \"web\"",
    );
    check_err(
        &format!("{WL}[[workload]]\nid = \"web2\"\nips = [\"198.18.0.7\", \"2001:db8::2\"]\n"),
        18,
        "ips",
        "already belongs to workload \"web\"",
    );
    check_err(
        "[[workload]]\nid = \"a\"\nips = [\"198.18.0.300\"]\n",
        3,
        "ips",
        "bad address",
    );
    check_err("[[workload]]\nid = \"a\"\nips = []\n", 3, "ips", "at least one address");
    check_err(
        "[[workload]]\nid = \"any\"\nips = [\"198.18.0.1\"]\n",
        2,
        "id",
        "reserved",
    );
    check_err(
        "[[workload]]\nid = \"198.18.0.1\"\nips = [\"198.18.0.1\"]\n",
        2,
        "id",
        "reads as an address",
    );
    check_err(
        "[[workload]]\nid = \"a b\"\nips = [\"198.18.0.1\"]\n",
        2,
        "id",
        "bad workload id",
    );
    check_err(
        "[[workload]]\nid = \"a\"\nips = [\"198.18.0.1\"]\nmacs = [\"02:00:00:00:00\"]\n",
        4,
        "macs",
        "bad MAC",
    );
    check_err(
        "[[workload]]\nid = \"a\"\nips = [\"198.18.0.1\"]\niface = \"a/b\"\n",
        4,
        "iface",
        "bad interface name",
    );
    check_err(
        "[[workload]]\nid = \"a\"\nips = [\"198.18.0.1\"]\nmacs = [\"02:00:00:00:00:01\"]\n\
         [[workload]]\nid = \"b\"\nips = [\"198.18.0.3\"]\nmacs = [\"02:00:00:00:00:01\"]\n",
        8,
        "macs",
        "already belongs",
    );
}

// ---------------------------------------------------------------------------------------
// Matching.

#[test]
fn priorities_decide_and_ties_go_to_the_lower_id() {
    let (p, c) = load(&format!(
        r#"{WL}
[[rule]]
id = 5
from = "any"
to = "web"
action = "deny"
priority = 100
[[rule]]
id = 3
from = "cli"
to = "web"
ip_proto = "tcp"
action = "allow"
priority = 100
[[rule]]
id = 9
from = "cli"
to = "web"
ip_proto = "tcp"
ports = ["22"]
action = "deny"
priority = 7
"#
    ));
    assert_eq!(
        verdict(&p, &c, &tcp("198.18.0.1", "198.18.0.2", 80)),
        (Some(Allowed), Some(3)),
        "tie: id 3 < 5"
    );
    assert_eq!(
        verdict(&p, &c, &tcp("198.18.0.1", "198.18.0.2", 22)),
        (Some(Denied), Some(9)),
        "priority 7 first"
    );
    assert_eq!(
        verdict(&p, &c, &tcp("198.18.7.7", "198.18.0.2", 80)),
        (Some(Denied), Some(5))
    );
    let d = ev(&p, &c, &tcp("198.18.0.1", "198.18.0.2", 80));
    assert_eq!(d.rule_index, Some(1));
    assert_eq!(c.rules()[1].id, 3);
}

#[test]
fn port_ranges_and_edges() {
    let (p, c) = load(&format!(
        r#"{WL}
[[rule]]
id = 1
from = "any"
to = "web"
ip_proto = "any"
ports = ["0", "1", "8000-8100", "65535"]
action = "allow"
"#
    ));
    for (port, ok) in [
        (0, true),
        (1, true),
        (2, false),
        (7999, false),
        (8000, true),
        (8050, true),
        (8100, true),
        (8101, false),
        (65534, false),
        (65535, true),
    ] {
        let want = if ok {
            (Some(Allowed), Some(1))
        } else {
            (Some(Denied), None)
        };
        assert_eq!(
            verdict(&p, &c, &tcp("198.18.7.7", "198.18.0.2", port)),
            want,
            "tcp {port}"
        );
        let udp = Facts {
            ip_proto: 17,
            ..tcp("198.18.7.7", "198.18.0.2", port)
        };
        assert_eq!(verdict(&p, &c, &udp), want, "udp {port}");
    }
    // A rule with ports never matches ICMP, whatever server_port says.
    let icmp = Facts {
        ip_proto: 1,
        ..tcp("198.18.7.7", "198.18.0.2", 0)
    };
    assert_eq!(verdict(&p, &c, &icmp), (Some(Denied), None));
}

#[test]
fn many_rules_in_one_bucket_use_port_intervals() {
    // 300 rules any -> web with distinct ports, one catch-all, app and fqdn rules among them.
    let mut text = String::from(WL);
    for i in 0..300u32 {
        let port = 1000 + i * 10;
        let extra = match i % 3 {
            0 => String::new(),
            1 => "apps = [\"http\"]\n".to_string(),
            _ => "fqdn = \"*.a.test\"\n".to_string(),
        };
        text += &format!(
            "[[rule]]\nid = {}\nfrom = \"any\"\nto = \"web\"\nip_proto = \"tcp\"\n\
             ports = [\"{}-{}\"]\n{extra}action = \"{}\"\n",
            i + 10,
            port,
            port + 14,
            if i % 2 == 0 { "allow" } else { "deny" }
        );
    }
    text += "[[rule]]\nid = 5000\nfrom = \"any\"\nto = \"web\"\nip_proto = \"tcp\"\naction = \"allow\"\n";
    let (p, c) = load(&text);
    let st = c.index_stats();
    assert!(st.interval_lists >= 1, "{st:?}");
    let names: [&str; 1] = ["x.a.test"];
    for port in (0..5000u16).chain([65535]) {
        for app in [None, Some(App::Unknown), Some(App::Http), Some(App::Ssh)] {
            for sn in [&names[..], &[]] {
                let f = Facts {
                    app,
                    server_names: sn,
                    ..tcp("198.18.7.7", "198.18.0.2", port)
                };
                ev(&p, &c, &f);
            }
        }
    }
    // Port 1005 is in rule 10 (plain allow) only -> allowed; 1015 in rules 11 (http deny)
    // and 10's neighbour? (1010-1024 is rule 11: apps http, deny).
    let f = tcp("198.18.7.7", "198.18.0.2", 1005);
    assert_eq!(verdict(&p, &c, &f), (Some(Allowed), Some(10)));
    let f = Facts {
        app: Some(App::Http),
        ..tcp("198.18.7.7", "198.18.0.2", 1015)
    };
    assert_eq!(verdict(&p, &c, &f), (Some(Denied), Some(11)));
    let f = Facts {
        app: Some(App::Ssh),
        ..tcp("198.18.7.7", "198.18.0.2", 1015)
    };
    assert_eq!(verdict(&p, &c, &f), (Some(Allowed), Some(5000)));
}

#[test]
fn cidr_edges_v4_and_v6() {
    let (p, c) = load(&format!(
        r#"{WL}
[[rule]]
id = 1
from = "198.18.4.0/24"
to = "web"
action = "allow"
[[rule]]
id = 2
from = "198.18.9.9/32"
to = "web"
action = "allow"
[[rule]]
id = 3
from = "2001:db8:1::/48"
to = "web"
action = "allow"
[[rule]]
id = 4
from = "2001:db8::77/128"
to = "web"
action = "allow"
[[rule]]
id = 6
from = "0.0.0.0/0"
to = "web"
ip_proto = "udp"
action = "allow"
[[rule]]
id = 7
from = "::/0"
to = "web"
ip_proto = "icmpv6"
action = "allow"
"#
    ));
    let at = |from: &str, to: &str| verdict(&p, &c, &tcp(from, to, 80));
    assert_eq!(
        at("198.18.4.0", "198.18.0.2"),
        (Some(Allowed), Some(1)),
        "network address"
    );
    assert_eq!(
        at("198.18.4.255", "198.18.0.2"),
        (Some(Allowed), Some(1)),
        "broadcast address"
    );
    assert_eq!(at("198.18.3.255", "198.18.0.2"), (Some(Denied), None));
    assert_eq!(at("198.18.5.0", "198.18.0.2"), (Some(Denied), None));
    assert_eq!(at("198.18.9.9", "198.18.0.2"), (Some(Allowed), Some(2)));
    assert_eq!(at("198.18.9.8", "198.18.0.2"), (Some(Denied), None));
    assert_eq!(at("198.18.9.10", "198.18.0.2"), (Some(Denied), None));
    assert_eq!(at("2001:db8:1::", "2001:db8::2"), (Some(Allowed), Some(3)));
    assert_eq!(
        at("2001:db8:1:ffff:ffff:ffff:ffff:ffff", "2001:db8::2"),
        (Some(Allowed), Some(3))
    );
    assert_eq!(
        at("2001:db8:0:ffff:ffff:ffff:ffff:ffff", "2001:db8::2"),
        (Some(Denied), None)
    );
    assert_eq!(at("2001:db8:2::", "2001:db8::2"), (Some(Denied), None));
    assert_eq!(at("2001:db8::77", "2001:db8::2"), (Some(Allowed), Some(4)));
    assert_eq!(at("2001:db8::78", "2001:db8::2"), (Some(Denied), None));
    // A v4 CIDR never matches a v6 address and back.
    assert_eq!(at("::ffff:198.18.4.1", "2001:db8::2"), (Some(Denied), None));
    // /0 of each family.
    let udp = |from: &str, to: &str| {
        verdict(
            &p,
            &c,
            &Facts {
                ip_proto: 17,
                ..tcp(from, to, 53)
            },
        )
    };
    assert_eq!(udp("0.0.0.0", "198.18.0.2"), (Some(Allowed), Some(6)));
    assert_eq!(udp("255.255.255.255", "198.18.0.2"), (Some(Allowed), Some(6)));
    assert_eq!(
        udp("2001:db8:5::", "2001:db8::2"),
        (Some(Denied), None),
        "v4 /0 is not v6"
    );
    let icmp6 = |from: &str| {
        verdict(
            &p,
            &c,
            &Facts {
                ip_proto: 58,
                ..tcp(from, "2001:db8::2", 0)
            },
        )
    };
    assert_eq!(icmp6("::"), (Some(Allowed), Some(7)));
    assert_eq!(
        icmp6("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
        (Some(Allowed), Some(7))
    );
    assert_eq!(
        verdict(
            &p,
            &c,
            &Facts {
                ip_proto: 58,
                ..tcp("198.18.4.1", "198.18.0.2", 0)
            }
        ),
        (Some(Allowed), Some(1))
    );
}

#[test]
fn nested_cidrs_all_match() {
    let (p, c) = load(&format!(
        r#"{WL}
[[rule]]
id = 1
from = "198.18.0.0/15"
to = "web"
ports = ["1"]
action = "allow"
[[rule]]
id = 2
from = "198.18.4.0/22"
to = "web"
ports = ["2"]
action = "allow"
[[rule]]
id = 3
from = "198.18.5.0/24"
to = "web"
ports = ["3"]
action = "allow"
[[rule]]
id = 4
from = "198.18.5.128/25"
to = "198.18.0.0/24"
ports = ["4"]
action = "allow"
"#
    ));
    for port in 1..=4 {
        assert_eq!(
            verdict(&p, &c, &tcp("198.18.5.200", "198.18.0.2", port)),
            (Some(Allowed), Some(u32::from(port)))
        );
    }
    assert_eq!(
        verdict(&p, &c, &tcp("198.18.5.100", "198.18.0.2", 4)),
        (Some(Denied), None)
    );
    assert_eq!(
        verdict(&p, &c, &tcp("198.18.6.1", "198.18.0.2", 3)),
        (Some(Denied), None)
    );
    assert_eq!(
        verdict(&p, &c, &tcp("198.18.6.1", "198.18.0.2", 2)),
        (Some(Allowed), Some(2))
    );
    assert_eq!(
        verdict(&p, &c, &tcp("198.18.8.1", "198.18.0.2", 2)),
        (Some(Denied), None)
    );
}

#[test]
fn external_any_and_not_enforced() {
    let (p, c) = load(&format!(
        r#"{WL}
[[rule]]
id = 1
from = "external"
to = "web"
ports = ["443"]
action = "allow"
[[rule]]
id = 2
from = "any"
to = "web"
ports = ["80"]
action = "allow"
[[rule]]
id = 3
from = "web"
to = "external"
action = "allow"
"#
    ));
    // external: not a workload's address.
    assert_eq!(
        verdict(&p, &c, &tcp("203.0.113.5", "198.18.0.2", 443)),
        (Some(Allowed), Some(1))
    );
    assert_eq!(
        verdict(&p, &c, &tcp("198.18.0.1", "198.18.0.2", 443)),
        (Some(Denied), None),
        "cli is a workload"
    );
    assert_eq!(
        verdict(&p, &c, &tcp("2001:db8::1", "2001:db8::2", 443)),
        (Some(Denied), None)
    );
    assert_eq!(
        verdict(&p, &c, &tcp("2001:db8::99", "2001:db8::2", 443)),
        (Some(Allowed), Some(1))
    );
    // any includes workloads.
    assert_eq!(
        verdict(&p, &c, &tcp("198.18.0.1", "198.18.0.2", 80)),
        (Some(Allowed), Some(2))
    );
    // egress to external.
    assert_eq!(
        verdict(&p, &c, &tcp("198.18.0.2", "192.0.2.1", 5)),
        (Some(Allowed), Some(3))
    );
    assert_eq!(
        verdict(&p, &c, &tcp("198.18.0.2", "198.18.0.1", 5)),
        (Some(Denied), None),
        "cli is not external; web's egress is protect"
    );
    // Neither end a workload.
    let d = ev(&p, &c, &tcp("192.0.2.1", "192.0.2.2", 80));
    assert_eq!(d, Decision::NOT_ENFORCED);
    assert_eq!(c.workload_of(ip("198.18.0.2")), Some(WorkloadIdx(0)));
    assert_eq!(c.workload_of(ip("2001:db8::1")), Some(WorkloadIdx(1)));
    assert_eq!(c.workload_of(ip("198.18.0.4")), None);
    assert_eq!(c.workload_of_mac([2, 0, 0, 0, 0, 2]), Some(WorkloadIdx(0)));
    assert_eq!(c.workload_id(WorkloadIdx(2)), "mon");
    assert_eq!(c.workload_mode(WorkloadIdx(2)), Mode::Alert);
    assert_eq!(c.workload_by_id("cli"), Some(WorkloadIdx(1)));
}

#[test]
fn modes_and_both_ends_workloads() {
    let (p, c) = load(&format!(
        r#"{WL}
[[rule]]
id = 1
from = "any"
to = "any"
ports = ["22"]
action = "deny"
[[rule]]
id = 2
from = "any"
to = "any"
ports = ["80"]
action = "allow"
"#
    ));
    let outside = "192.0.2.1";
    let (web, cli, mon) = ("198.18.0.2", "198.18.0.1", "198.19.0.9");
    let d = |a: &str, b: &str, port: u16| {
        let d = ev(&p, &c, &tcp(a, b, port));
        (d.verdict, d.rule_id, d.mode)
    };
    // No rule: each mode's default.
    assert_eq!(d(outside, web, 9), (Some(Denied), None, Some(Mode::Protect)));
    assert_eq!(d(outside, cli, 9), (Some(Learned), None, Some(Mode::Learn)));
    assert_eq!(d(outside, mon, 9), (Some(Violation), None, Some(Mode::Alert)));
    // Deny rule: violation in learn and alert, denied in protect.
    assert_eq!(d(outside, web, 22), (Some(Denied), Some(1), Some(Mode::Protect)));
    assert_eq!(d(outside, cli, 22), (Some(Violation), Some(1), Some(Mode::Learn)));
    assert_eq!(d(outside, mon, 22), (Some(Violation), Some(1), Some(Mode::Alert)));
    // Allow rule: allowed everywhere.
    assert_eq!(d(outside, web, 80), (Some(Allowed), Some(2), Some(Mode::Protect)));
    assert_eq!(d(outside, cli, 80), (Some(Allowed), Some(2), Some(Mode::Learn)));
    // Egress only (server outside).
    assert_eq!(d(web, outside, 9), (Some(Denied), None, Some(Mode::Protect)));
    assert_eq!(d(cli, outside, 9), (Some(Learned), None, Some(Mode::Learn)));
    // Both ends workloads: the most severe end decides, the client's on a tie.
    assert_eq!(
        d(cli, web, 9),
        (Some(Denied), None, Some(Mode::Protect)),
        "learn client, protect server"
    );
    assert_eq!(d(web, cli, 9), (Some(Denied), None, Some(Mode::Protect)));
    assert_eq!(d(cli, mon, 9), (Some(Violation), None, Some(Mode::Alert)));
    assert_eq!(
        d(mon, cli, 22),
        (Some(Violation), Some(1), Some(Mode::Alert)),
        "tie: client's mode"
    );
    assert_eq!(
        d(cli, mon, 22),
        (Some(Violation), Some(1), Some(Mode::Learn)),
        "tie: client's mode"
    );
    assert_eq!(d(cli, web, 80), (Some(Allowed), Some(2), Some(Mode::Learn)));
    let full = ev(&p, &c, &tcp(cli, web, 80));
    assert_eq!(
        (full.client_workload, full.server_workload),
        (Some(WorkloadIdx(1)), Some(WorkloadIdx(0)))
    );
    assert!(!full.drops());
    assert!(ev(&p, &c, &tcp(cli, web, 9)).drops());
}

#[test]
fn protocols() {
    let (p, c) = load(&format!(
        r#"{WL}
[[rule]]
id = 1
from = "any"
to = "web"
ip_proto = "icmp"
action = "allow"
[[rule]]
id = 2
from = "any"
to = "web"
ip_proto = "47"
action = "allow"
[[rule]]
id = 3
from = "any"
to = "web"
ip_proto = "udp"
action = "allow"
"#
    ));
    assert_eq!(p.rules[1].ip_proto, IpProto::Other(47));
    let pr = |n: u8| {
        verdict(
            &p,
            &c,
            &Facts {
                ip_proto: n,
                ..tcp("192.0.2.1", "198.18.0.2", 0)
            },
        )
    };
    assert_eq!(pr(1), (Some(Allowed), Some(1)));
    assert_eq!(pr(47), (Some(Allowed), Some(2)));
    assert_eq!(pr(17), (Some(Allowed), Some(3)));
    assert_eq!(pr(6), (Some(Denied), None));
    assert_eq!(pr(58), (Some(Denied), None));
    assert_eq!("6".parse::<IpProto>(), Ok(IpProto::Tcp));
}

#[test]
fn fqdn_exact_and_wildcard() {
    let (p, c) = load(&format!(
        r#"{WL}
[[rule]]
id = 1
from = "web"
to = "external"
fqdn = "api.example.test"
action = "allow"
[[rule]]
id = 2
from = "web"
to = "external"
fqdn = "*.a.test"
action = "allow"
"#
    ));
    let with = |names: &[&str]| {
        let f = Facts {
            server_names: names,
            ..tcp("198.18.0.2", "192.0.2.9", 443)
        };
        verdict(&p, &c, &f)
    };
    assert_eq!(with(&["api.example.test"]), (Some(Allowed), Some(1)));
    assert_eq!(
        with(&["API.Example.Test."]),
        (Some(Allowed), Some(1)),
        "case and trailing dot"
    );
    assert_eq!(with(&["x.api.example.test"]), (Some(Denied), None), "exact is exact");
    assert_eq!(with(&["example.test"]), (Some(Denied), None));
    assert_eq!(with(&["x.a.test"]), (Some(Allowed), Some(2)));
    assert_eq!(with(&["y.x.a.test"]), (Some(Allowed), Some(2)), "one or more labels");
    assert_eq!(with(&["a.test"]), (Some(Denied), None), "not the base name");
    assert_eq!(with(&["xa.test"]), (Some(Denied), None));
    assert_eq!(with(&[".a.test"]), (Some(Denied), None));
    assert_eq!(
        with(&["other.test", "z.a.test"]),
        (Some(Allowed), Some(2)),
        "any of the names"
    );
    assert_eq!(with(&[]), (Some(Denied), None));
}

#[test]
fn app_rules_and_pending() {
    let (p, c) = load(&format!(
        r#"{WL}
[[rule]]
id = 1
from = "any"
to = "web"
ip_proto = "tcp"
ports = ["80"]
apps = ["http", "http2"]
action = "allow"
[[rule]]
id = 2
from = "any"
to = "web"
ip_proto = "tcp"
ports = ["22"]
apps = ["ssh"]
action = "deny"
[[rule]]
id = 3
from = "any"
to = "web"
ip_proto = "tcp"
ports = ["22"]
action = "allow"
[[rule]]
id = 4
from = "any"
to = "cli"
apps = ["redis"]
action = "deny"
[[rule]]
id = 5
from = "any"
to = "mon"
apps = ["redis"]
action = "deny"
"#
    ));
    let f = |server: &str, port: u16, app: Option<App>| {
        let d = ev(
            &p,
            &c,
            &Facts {
                app,
                ..tcp("192.0.2.1", server, port)
            },
        );
        (d.verdict, d.rule_id, d.pending_app)
    };
    let web = "198.18.0.2";
    // Protect + app allow rule: provisional denied, pending; then decided by the app.
    assert_eq!(f(web, 80, None), (Some(Denied), None, true));
    assert_eq!(f(web, 80, Some(App::Http)), (Some(Allowed), Some(1), false));
    assert_eq!(f(web, 80, Some(App::Http2)), (Some(Allowed), Some(1), false));
    assert_eq!(f(web, 80, Some(App::Ssh)), (Some(Denied), None, false));
    assert_eq!(
        f(web, 80, Some(App::Unknown)),
        (Some(Denied), None, false),
        "never allows unknown"
    );
    // Deny app rule before a plain allow: provisional allowed, pending.
    assert_eq!(f(web, 22, None), (Some(Allowed), Some(3), true));
    assert_eq!(f(web, 22, Some(App::Ssh)), (Some(Denied), Some(2), false));
    assert_eq!(f(web, 22, Some(App::Http)), (Some(Allowed), Some(3), false));
    // No app rule applies: final at once.
    assert_eq!(f(web, 443, None), (Some(Denied), None, false));
    // Learn mode + deny app rule: learned now, violation if redis: pending.
    assert_eq!(f("198.18.0.1", 6379, None), (Some(Learned), None, true));
    assert_eq!(
        f("198.18.0.1", 6379, Some(App::Redis)),
        (Some(Violation), Some(4), false)
    );
    // Alert mode + deny app rule: violation either way: not pending.
    assert_eq!(f("198.19.0.9", 6379, None), (Some(Violation), None, false));
    assert!(
        !ev(
            &p,
            &c,
            &Facts {
                app: None,
                ..tcp("192.0.2.1", web, 80)
            }
        )
        .drops(),
        "pending never drops"
    );
    // The apps that would leave each pending connection forwarded.
    let allowing = |server: &str, port: u16| ev(&p, &c, &Facts { app: None, ..tcp("192.0.2.1", server, port) }).allowing;
    assert_eq!(allowing(web, 80), AppSet::of(&[App::Http, App::Http2]), "only rule 1's apps");
    let ssh22 = allowing(web, 22);
    assert!(ssh22.contains(App::Unknown) && ssh22.contains(App::Http) && !ssh22.contains(App::Ssh));
    assert_eq!(allowing(web, 443), AppSet::EMPTY, "denied whatever the app");
    assert_eq!(allowing("198.18.0.1", 6379), AppSet::ALL, "learn mode forwards every app");
    assert_eq!(allowing("198.18.9.77", 80), AppSet::ALL, "not enforced");
}

#[test]
fn every_nameable_app_fits_the_mask_and_resolves() {
    let names: Vec<&str> = known_apps().map(|a| a.as_str()).collect();
    for a in known_apps() {
        assert!((a as u32) < 127, "{a:?}: widen the app mask in matcher.rs");
        assert_eq!(app_from_name(a.as_str()), Some(a));
    }
    for n in [
        "http",
        "http2",
        "grpc",
        "tls",
        "dns",
        "ssh",
        "redis",
        "mysql",
        "postgresql",
        "kafka",
    ] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    assert_eq!(app_from_name("unknown"), None);
    assert_eq!(app_from_name("template"), None);
}

// ---------------------------------------------------------------------------------------
// Learning.

#[test]
fn learned_policy_allows_exactly_what_was_seen() {
    let base = Policy::from_toml(&format!(
        "{WL}[[rule]]\nid = 40\nfrom = \"any\"\nto = \"web\"\nports = [\"23\"]\naction = \"deny\"\n\
         [[rule]]\nid = 41\nfrom = \"any\"\nto = \"web\"\nports = [\"8080\"]\naction = \"allow\"\n"
    ))
    .unwrap();
    let conn = |c: &str, s: &str, proto: u8, port: u16, app: App| LearnedConn {
        client: ip(c),
        server: ip(s),
        ip_proto: proto,
        server_port: port,
        app,
    };
    let seen = vec![
        conn("198.18.0.1", "198.18.0.2", 6, 80, App::Http),
        conn("198.18.0.1", "198.18.0.2", 6, 80, App::Http), // duplicate
        conn("2001:db8::1", "2001:db8::2", 6, 443, App::Tls),
        conn("203.0.113.7", "198.18.0.2", 6, 22, App::Unknown),
        conn("198.18.0.2", "192.0.2.53", 17, 53, App::Dns),
        conn("198.18.0.1", "198.19.0.9", 1, 0, App::Unknown),
        conn("198.18.0.1", "198.18.0.2", 6, 5432, App::Postgresql),
        conn("198.18.0.1", "198.18.0.2", 6, 5432, App::Unknown), // subsumes the postgresql one
        conn("198.18.0.1", "198.18.0.2", 6, 8080, App::Http),    // base allows it already
        conn("192.0.2.1", "192.0.2.2", 6, 80, App::Http),        // not enforced
        conn("198.18.0.1", "198.18.0.2", 47, 0, App::Unknown),
    ];
    let out = learned_policy(&base, &seen);
    assert!(out.workloads.iter().all(|w| w.mode == Mode::Protect));
    assert_eq!(out.default_mode, Mode::Protect);
    assert_eq!(&out.rules[..2], &base.rules[..]);
    let new = &out.rules[2..];
    assert_eq!(new.len(), 7, "{new:#?}");
    assert_eq!(
        new.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![42, 43, 44, 45, 46, 47, 48]
    );
    assert!(new.iter().all(|r| r.action == Action::Allow && r.priority == r.id));
    assert_eq!(new[0].from, Endpoint::Workload("cli".into()));
    assert_eq!(new[0].to, Endpoint::Workload("web".into()));
    assert_eq!(new[0].apps, Some(vec![App::Http]));
    assert_eq!(new[0].ports, Some(vec![PortRange { lo: 80, hi: 80 }]));
    assert_eq!(new[2].from, Endpoint::Cidr(Cidr::host(ip("203.0.113.7"))));
    assert_eq!(new[2].apps, None);
    assert_eq!(
        new[3].to,
        Endpoint::Cidr(Cidr {
            addr: ip("192.0.2.53"),
            len: 32
        })
    );
    assert_eq!((new[4].ip_proto, &new[4].ports), (IpProto::Icmp, &None));
    assert_eq!(
        (new[5].ports.as_deref(), new[5].apps.as_deref()),
        (Some(&[PortRange { lo: 5432, hi: 5432 }][..]), None)
    );
    assert_eq!(new[6].ip_proto, IpProto::Other(47));

    // The file reads back.
    let text = out.to_toml();
    assert_eq!(Policy::from_toml(&text).unwrap(), out, "{text}");

    let c = CompiledPolicy::compile(&out).unwrap();
    for s in &seen {
        let f = Facts {
            client: s.client,
            server: s.server,
            ip_proto: s.ip_proto,
            server_port: s.server_port,
            app: Some(s.app),
            server_names: &[],
            client_names: &[],
        };
        let d = ev(&out, &c, &f);
        if d.verdict.is_none() {
            assert!(c.workload_of(s.client).is_none() && c.workload_of(s.server).is_none());
            continue;
        }
        assert_eq!(d.verdict, Some(Allowed), "{s:?}: {d:?}");
        // Another port, another client, another app: denied.
        let other_port = Facts {
            server_port: s.server_port.wrapping_add(1),
            ..f
        };
        if s.ip_proto == 6 && s.server_port != 8080 {
            assert_eq!(ev(&out, &c, &other_port).verdict, Some(Denied), "{s:?} port+1");
        }
        let other_client = Facts {
            client: ip("203.0.113.99"),
            ..f
        };
        if c.workload_of(s.server).is_some() && s.server_port != 8080 {
            assert_eq!(ev(&out, &c, &other_client).verdict, Some(Denied), "{s:?} other client");
        }
    }
    let ssh_as_http = Facts {
        app: Some(App::Ssh),
        ..tcp("198.18.0.1", "198.18.0.2", 80)
    };
    assert_eq!(ev(&out, &c, &ssh_as_http).verdict, Some(Denied));
    let pending = Facts {
        app: None,
        ..tcp("198.18.0.1", "198.18.0.2", 80)
    };
    let d = ev(&out, &c, &pending);
    assert_eq!((d.verdict, d.pending_app), (Some(Denied), true));
    // The base's deny rule still wins over anything learned.
    let telnet = learned_policy(&base, &[conn("203.0.113.7", "198.18.0.2", 6, 23, App::Unknown)]);
    let ct = CompiledPolicy::compile(&telnet).unwrap();
    assert_eq!(
        ev(&telnet, &ct, &tcp("203.0.113.7", "198.18.0.2", 23)).verdict,
        Some(Denied)
    );
    // Learning from nothing: the base in protect mode.
    assert_eq!(learned_policy(&base, &[]).rules, base.rules);
}

// ---------------------------------------------------------------------------------------
// Property test: compiled == reference on random policies and facts.

/// SplitMix64: a small seeded generator (no dependency; reproducible from the seed printed
/// on failure).
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len() as u64) as usize]
    }
}

const NAMES: &[&str] = &[
    "api.example.test",
    "x.a.test",
    "y.x.a.test",
    "a.test",
    "b.test",
    "z.b.test",
    "API.a.test.",
];
const PATTERNS: &[(&str, bool)] = &[
    ("api.example.test", false),
    ("a.test", true),
    ("a.test", false),
    ("b.test", true),
    ("x.a.test", true),
    ("example.test", true),
];

/// A pool of addresses the policy and the facts share: inside 198.18.0.0/15 and
/// 2001:db8::/32, with range edges, plus some outside.
fn address_pool(r: &mut Rng) -> Vec<IpAddr> {
    let mut pool = Vec::new();
    let v4_base = 0xC612_0000u32; // 198.18.0.0
    for _ in 0..10 {
        let a = v4_base | (r.below(1 << 17) as u32);
        pool.push(IpAddr::V4(Ipv4Addr::from(a)));
        // its neighbours and the edges of an aligned block around it
        let len = r.below(33) as u32;
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        pool.push(IpAddr::V4(Ipv4Addr::from(a & mask)));
        pool.push(IpAddr::V4(Ipv4Addr::from(a | !mask)));
        pool.push(IpAddr::V4(Ipv4Addr::from(a.wrapping_add(1))));
    }
    let v6_base = 0x2001_0db8u128 << 96;
    for _ in 0..10 {
        let a = v6_base | (u128::from(r.next()) << 32 | u128::from(r.next() as u32)) >> r.below(90);
        pool.push(IpAddr::V6(Ipv6Addr::from(a)));
        let len = r.below(129) as u32;
        let mask = if len == 0 { 0 } else { u128::MAX << (128 - len) };
        pool.push(IpAddr::V6(Ipv6Addr::from(a & mask)));
        pool.push(IpAddr::V6(Ipv6Addr::from(a | !mask)));
        pool.push(IpAddr::V6(Ipv6Addr::from(a.wrapping_sub(1))));
    }
    pool.push(ip("192.0.2.1"));
    pool.push(ip("0.0.0.0"));
    pool.push(ip("255.255.255.255"));
    pool.push(ip("::"));
    pool.push(ip("2001:db9::1"));
    pool
}

fn random_cidr(r: &mut Rng, pool: &[IpAddr]) -> Cidr {
    let a = *r.pick(pool);
    match a {
        IpAddr::V4(v) => {
            let len = r.below(33) as u8;
            let m = if len == 0 {
                0
            } else {
                u32::from(v) & (u32::MAX << (32 - u32::from(len)))
            };
            Cidr {
                addr: IpAddr::V4(m.into()),
                len,
            }
        }
        IpAddr::V6(v) => {
            let len = r.below(129) as u8;
            let m = if len == 0 {
                0
            } else {
                u128::from(v) & (u128::MAX << (128 - u32::from(len)))
            };
            Cidr {
                addr: IpAddr::V6(m.into()),
                len,
            }
        }
    }
}

fn random_endpoint(r: &mut Rng, pool: &[IpAddr], workloads: &[Workload]) -> Endpoint {
    match r.below(10) {
        0 | 1 => Endpoint::Any,
        2 => Endpoint::External,
        3..=5 if !workloads.is_empty() => Endpoint::Workload(r.pick(workloads).id.clone()),
        _ => Endpoint::Cidr(random_cidr(r, pool)),
    }
}

const EDGE_PORTS: &[u16] = &[0, 1, 2, 22, 53, 79, 80, 81, 443, 8000, 8100, 65534, 65535];

fn random_ports(r: &mut Rng) -> Vec<PortRange> {
    (0..1 + r.below(3))
        .map(|_| {
            let a = if r.chance(70) {
                *r.pick(EDGE_PORTS)
            } else {
                r.below(65536) as u16
            };
            let b = if r.chance(50) {
                a
            } else if r.chance(50) {
                *r.pick(EDGE_PORTS)
            } else {
                r.below(65536) as u16
            };
            PortRange {
                lo: a.min(b),
                hi: a.max(b),
            }
        })
        .collect()
}

fn random_policy(r: &mut Rng, pool: &[IpAddr], max_rules: u64) -> Policy {
    let apps: Vec<App> = known_apps().collect();
    let modes = [Mode::Learn, Mode::Alert, Mode::Protect];
    let mut used = std::collections::HashSet::new();
    let mut workloads = Vec::new();
    for i in 0..r.below(6) {
        let ips: Vec<IpAddr> = (0..1 + r.below(3))
            .map(|_| *r.pick(pool))
            .filter(|a| used.insert(*a))
            .collect();
        if ips.is_empty() {
            continue;
        }
        workloads.push(Workload {
            id: format!("w{i}"),
            ips,
            macs: if r.chance(30) {
                vec![Mac([2, 0, 0, 0, 0, i as u8])]
            } else {
                vec![]
            },
            iface: r.chance(20).then(|| format!("veth{i}")),
            select: Default::default(),
            mode: *r.pick(&modes),
        });
    }
    let mut ids = std::collections::HashSet::new();
    let mut rules = Vec::new();
    for _ in 0..r.below(max_rules + 1) {
        let id = r.below(4 * max_rules + 4) as u32;
        if !ids.insert(id) {
            continue;
        }
        let from = random_endpoint(r, pool, &workloads);
        let mut to = random_endpoint(r, pool, &workloads);
        while let (Endpoint::Cidr(a), Endpoint::Cidr(b)) = (&from, &to) {
            if a.addr.is_ipv4() == b.addr.is_ipv4() {
                break;
            }
            to = random_endpoint(r, pool, &workloads);
        }
        let ip_proto = *r.pick(&[
            IpProto::Tcp,
            IpProto::Tcp,
            IpProto::Udp,
            IpProto::Icmp,
            IpProto::Icmpv6,
            IpProto::Any,
            IpProto::Any,
            IpProto::Other(47),
        ]);
        let ports =
            (matches!(ip_proto, IpProto::Tcp | IpProto::Udp | IpProto::Any) && r.chance(60)).then(|| random_ports(r));
        let apps = r
            .chance(25)
            .then(|| (0..1 + r.below(2)).map(|_| *r.pick(&apps)).collect::<Vec<_>>());
        let apps = apps.map(|mut v| {
            v.dedup();
            v
        });
        let fqdn = r.chance(15).then(|| {
            let (n, w) = *r.pick(PATTERNS);
            Fqdn {
                name: n.into(),
                wildcard: w,
            }
        });
        let priority = if r.chance(50) { r.below(8) as u32 } else { id };
        let action = if r.chance(50) { Action::Allow } else { Action::Deny };
        rules.push(Rule {
            id,
            from,
            to,
            ip_proto,
            ports,
            apps,
            fqdn,
            action,
            priority,
        });
    }
    Policy {
        default_mode: *r.pick(&modes),
        workloads,
        rules,
        services: Vec::new(),
        bound: Default::default(),
        uplinks: Default::default(),
    }
}

/// `hot`: the policy's workload addresses, picked for one end or both most of the time.
fn random_facts<'a>(r: &mut Rng, pool: &[IpAddr], hot: &[IpAddr], names: &'a [&'a str]) -> Facts<'a> {
    let apps: Vec<App> = known_apps().collect();
    let client = if !hot.is_empty() && r.chance(50) {
        *r.pick(hot)
    } else {
        *r.pick(pool)
    };
    let family =
        |v: &[IpAddr]| -> Vec<IpAddr> { v.iter().copied().filter(|a| a.is_ipv4() == client.is_ipv4()).collect() };
    let (same, same_hot) = (family(pool), family(hot));
    let server = if !same_hot.is_empty() && r.chance(60) {
        *r.pick(&same_hot)
    } else {
        *r.pick(&same)
    };
    let n = r.below(names.len() as u64 + 1) as usize;
    let start = r.below((names.len() - n) as u64 + 1) as usize;
    Facts {
        client,
        server,
        ip_proto: *r.pick(&[6, 6, 17, 1, 58, 47, 132]),
        server_port: if r.chance(80) {
            *r.pick(EDGE_PORTS)
        } else {
            r.below(65536) as u16
        },
        app: match r.below(4) {
            0 => None,
            1 => Some(App::Unknown),
            _ => Some(*r.pick(&apps)),
        },
        server_names: &names[start..start + n],
        client_names: &[],
    }
}

fn property_run(seed: u64, policies: u64, max_rules: u64, facts_per: u64) {
    let mut r = Rng(seed);
    let mut enforced = 0u64;
    let mut by_rule = 0u64;
    let mut pending = 0u64;
    let mut narrowed = 0u64;
    let mut interval_lists = 0usize;
    for case in 0..policies {
        let pool = address_pool(&mut r);
        let p = random_policy(&mut r, &pool, max_rules);
        let c = CompiledPolicy::compile(&p).unwrap_or_else(|e| panic!("seed {seed} case {case}: {e}"));
        if case % 16 == 0 {
            let back = Policy::from_toml(&p.to_toml()).unwrap_or_else(|e| panic!("{e}\n{}", p.to_toml()));
            assert_eq!(back, p, "round trip, seed {seed} case {case}");
        }
        interval_lists += c.index_stats().interval_lists;
        let hot: Vec<IpAddr> = p.workloads.iter().flat_map(|w| w.ips.iter().copied()).collect();
        for _ in 0..facts_per {
            let f = random_facts(&mut r, &pool, &hot, NAMES);
            let got = c.evaluate(&f);
            let want = reference_evaluate(&p, &f);
            assert_eq!(
                got,
                want,
                "seed {seed} case {case}\nfacts {f:?}\npolicy:\n{}",
                p.to_toml()
            );
            enforced += u64::from(got.verdict.is_some());
            by_rule += u64::from(got.rule_id.is_some());
            pending += u64::from(got.pending_app);
            if f.app.is_none() && case % 4 == 0 {
                // `allowing` is exactly the apps whose detection does not deny (one policy in
                // four: 23 more evaluations per fact).
                for a in App::ALL {
                    let later = c.evaluate(&Facts { app: Some(*a), ..f });
                    assert_eq!(
                        got.allowing.contains(*a),
                        later.verdict != Some(PolicyVerdict::Denied),
                        "seed {seed} case {case} app {a:?}\nfacts {f:?}\npolicy:\n{}",
                        p.to_toml()
                    );
                    narrowed += u64::from(got.pending_app && !got.allowing.contains(*a));
                }
            }
        }
    }
    // The generator must exercise the interesting paths, not just "not enforced".
    let total = policies * facts_per;
    assert!(enforced * 4 > total, "enforced {enforced} of {total}");
    assert!(by_rule * 20 > total, "rule-decided {by_rule} of {total}");
    assert!(pending > 0, "no pending decisions");
    assert!(narrowed > 0, "no pending decision ruled an app out");
    if max_rules > 100 {
        assert!(interval_lists > 0, "no port interval lists built");
    }
}

#[test]
fn compiled_matches_reference_on_small_random_policies() {
    property_run(0x5eed_0001, 3000, 40, 40);
}

#[test]
fn compiled_matches_reference_on_large_random_policies() {
    // Buckets with more than LINEAR_MAX rules, so port interval lists are exercised.
    property_run(0x5eed_0002, 60, 600, 400);
}

#[test]
fn random_policies_round_trip_through_toml() {
    let mut r = Rng(0x5eed_0003);
    for case in 0..300 {
        let pool = address_pool(&mut r);
        let p = random_policy(&mut r, &pool, 30);
        let text = p.to_toml();
        assert_eq!(
            Policy::from_toml(&text).unwrap_or_else(|e| panic!("case {case}: {e}\n{text}")),
            p
        );
    }
}

#[test]
fn error_messages_read_well() {
    let cases = [
        "[[rule]]\nid = 1\nfrom = \"any\"\naction = \"allow\"\n",
        "[[rule]\nid = 1\n",
        "[[workload]]\nid = \"a\"\nips = [\"198.18.0.1\"]\nmod = \"learn\"\n",
        "[[rule]]\nid = \"x\"\nfrom = \"any\"\nto = \"any\"\naction = \"allow\"\n",
    ];
    for c in cases {
        let e = err(c);
        assert!(
            e.line >= 1 && !e.message.is_empty() && !e.message.contains('\n'),
            "{e:?}"
        );
        println!("{e}");
    }
    let e = err("[[rule]]\nid = \"x\"\nfrom = \"any\"\nto = \"any\"\naction = \"allow\"\n");
    assert_eq!((e.line, e.field.as_str()), (2, "id"), "{e}");
}

#[test]
fn cidr_and_port_parsing() {
    assert_eq!(
        "198.18.0.2".parse::<Cidr>(),
        Ok(Cidr {
            addr: ip("198.18.0.2"),
            len: 32
        })
    );
    assert_eq!(
        "2001:db8::2".parse::<Cidr>(),
        Ok(Cidr {
            addr: ip("2001:db8::2"),
            len: 128
        })
    );
    assert_eq!(
        "0.0.0.0/0".parse::<Cidr>(),
        Ok(Cidr {
            addr: ip("0.0.0.0"),
            len: 0
        })
    );
    assert!("1.0.0.0/0".parse::<Cidr>().is_err());
    assert!("198.18.0.0/08".parse::<Cidr>().is_err());
    assert!("198.18.0.0/+8".parse::<Cidr>().is_err());
    assert_eq!("0-65535".parse::<PortRange>(), Ok(PortRange { lo: 0, hi: 65535 }));
    assert!("-1".parse::<PortRange>().is_err());
    assert!("1 - 2".parse::<PortRange>().is_err());
    assert_eq!(
        "02:AB:00:00:00:0f".parse::<Mac>().map(|m| m.to_string()),
        Ok("02:ab:00:00:00:0f".into())
    );
    assert!("02:ab:00:00:00:0f:00".parse::<Mac>().is_err());
}
