//! Sessions already running when Warden starts (issue 11, mid-stream detection): two long
//! downloads from nginx, one over HTTP and one over TLS (self-signed certificate, `curl -k`),
//! both rate-limited by curl so they last several seconds, are started before Warden and are
//! picked up mid-stream once it runs inline, in alert mode with the server as a workload (so
//! the `[sessions] midstream` exception applies: `pass_flow`, inspected mid-stream).
//!
//! Before Warden starts, the middle namespace forwards the frames itself: a tc `mirred`
//! redirect on the ingress of each of Warden's interfaces to the other one (a plain wire).
//! When Warden attaches its XDP program, XDP sees every frame before tc ingress, so from then on
//! Warden carries the connections without the redirects being removed, and without a gap the
//! TCP connections would have to recover from. (The XDP fail_open path cannot carry traffic
//! before Warden starts: it is Warden that attaches the program.)
//!
//! Expected: the TLS download is labelled `tls` from its application-data records, the HTTP
//! one `http` when curl sends its second request on the same connection (the body of the first
//! response has no framing to recognise), both with `midstream: true`, the client on the
//! client's side, and both downloads complete with every byte.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// Size of the file each download fetches (bytes) and curl's rate limit (bytes/s): about 6 s.
const BIG: usize = 12 << 20;
const RATE: &str = "2M";

/// Makes the middle namespace forward between Warden's two interfaces by itself (tc ingress
/// redirect both ways).
fn plain_wire(t: &Topo) {
    for (from, to) in [(&t.a, &t.b), (&t.b, &t.a)] {
        sh(&["ip", "netns", "exec", &t.m, "tc", "qdisc", "add", "dev", from, "ingress"]);
        sh(&[
            "ip", "netns", "exec", &t.m, "tc", "filter", "add", "dev", from, "parent", "ffff:", "protocol", "all", "u32",
            "match", "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev", to,
        ]);
    }
}

/// nginx serving `big.bin` and `small.txt` over HTTP on 8080 and HTTPS on 8443.
fn nginx(t: &mut Topo) {
    let (www, tmp) = (t.path("www"), t.path("ngx"));
    std::fs::create_dir_all(&www).unwrap();
    std::fs::create_dir_all(&tmp).unwrap();
    write_blob(&www.join("big.bin"), BIG);
    std::fs::write(www.join("small.txt"), "small\n").unwrap();
    let (key, cert) = (tmp.join("key.pem"), tmp.join("cert.pem"));
    sh(&[
        "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
        "-subj", "/CN=midstream.test", "-keyout", key.to_str().unwrap(), "-out", cert.to_str().unwrap(),
    ]);
    let tmp_s = tmp.display().to_string();
    let conf = format!(
        "worker_processes 1;\ndaemon off;\npid {tmp_s}/nginx.pid;\nerror_log {tmp_s}/error.log;\nevents {{}}\n\
         http {{\n access_log off;\n client_body_temp_path {tmp_s}/body;\n proxy_temp_path {tmp_s}/proxy;\n\
         fastcgi_temp_path {tmp_s}/fcgi;\n uwsgi_temp_path {tmp_s}/uwsgi;\n scgi_temp_path {tmp_s}/scgi;\n\
         keepalive_timeout 60;\n\
         server {{\n  listen {S4}:8080;\n  listen {S4}:8443 ssl;\n  ssl_certificate {};\n  ssl_certificate_key {};\n  root {};\n }}\n}}\n",
        cert.display(),
        key.display(),
        www.display()
    );
    let conf_path = tmp.join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let s = t.s.clone();
    t.spawn(&s, &["nginx", "-c", conf_path.to_str().unwrap()]);
    t.wait_listening(&s, "tcp", 8080);
    t.wait_listening(&s, "tcp", 8443);
}

/// Starts `curl` in the client namespace in the background: `urls` fetched on one connection,
/// each line of its output `HTTP-CODE BYTES`, its exit status in `NAME.rc` when it ends.
fn download(t: &mut Topo, name: &str, urls: &[String]) {
    let out = t.path(&format!("{name}.out"));
    let rc = t.path(&format!("{name}.rc"));
    let mut cmd = format!("curl -sk --limit-rate {RATE} --max-time 60");
    for u in urls {
        cmd.push_str(&format!(" -o /dev/null -w '%{{http_code}} %{{size_download}}\\n' {u}"));
    }
    let script = format!("{cmd} > {} 2>&1; echo $? > {}", out.display(), rc.display());
    let c = t.c.clone();
    t.spawn(&c, &["sh", "-c", &script]);
}

/// The output of download `name` once curl has ended (`None` on timeout).
fn finished(t: &Topo, name: &str, timeout: Duration) -> Option<(String, String)> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(rc) = std::fs::read_to_string(t.path(&format!("{name}.rc"))) {
            let out = std::fs::read_to_string(t.path(&format!("{name}.out"))).unwrap_or_default();
            return Some((rc.trim().to_string(), out));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}

#[test]
fn downloads_running_when_warden_starts_are_labelled_midstream_and_complete() {
    let mut t = Topo::new(ClientLink::Veth);
    // Between the XDP program's attach and Warden's sockets, fail_open forwards in the kernel,
    // which into a veth needs GRO (NAPI) on the receiving end.
    for (ns, dev) in [(&t.c, &t.c0), (&t.s, &t.s0)] {
        sh(&["ip", "netns", "exec", ns, "ethtool", "-K", dev, "gro", "on"]);
    }
    // A small receive buffer in the client: the bytes on the wire follow curl's rate limit
    // (Linux would otherwise let megabytes run ahead into the socket buffer, and a download
    // could be on the wire entirely before Warden starts).
    sh(&["ip", "netns", "exec", &t.c, "sysctl", "-qw", "net.ipv4.tcp_rmem=4096 65536 262144"]);
    nginx(&mut t);
    plain_wire(&t);
    assert!(t.ping(S4, 1), "the plain wire does not forward");
    let http = [format!("http://{S4}:8080/big.bin"), format!("http://{S4}:8080/small.txt")];
    let started = std::time::SystemTime::now();
    download(&mut t, "http", &http);
    download(&mut t, "tls", &[format!("https://{S4}:8443/big.bin")]);
    // Both are running (handshakes done, bodies flowing) when Warden starts.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(finished(&t, "http", Duration::ZERO).is_none() && finished(&t, "tls", Duration::ZERO).is_none(), "downloads ended too early");
    let policy = format!(
        "[[workload]]\nid = \"web\"\nips = [\"{S4}\"]\nmode = \"alert\"\n\n\
         [[rule]]\nid = 1\nfrom = \"any\"\nto = \"web\"\nip_proto = \"tcp\"\nports = [\"8080\"]\napps = [\"http\"]\naction = \"allow\"\n\n\
         [[rule]]\nid = 2\nfrom = \"any\"\nto = \"web\"\nip_proto = \"tcp\"\nports = [\"8443\"]\napps = [\"tls\"]\naction = \"allow\"\n"
    );
    t.start_warden_policy(&policy);
    let warden_up = started.elapsed().unwrap_or_default();
    let mut ctl = t.subscribed();
    let labelled = |all: &[warden_control::ConnectionRecord], port: u16, app: &str| {
        all.iter().any(|r| r.server_port == port && r.app == app && r.midstream)
    };
    let records = collect_reports(&mut ctl, Duration::from_secs(40), |all| labelled(all, 8080, "http") && labelled(all, 8443, "tls"));
    for (name, want) in [("http", vec![format!("200 {BIG}"), "200 6".to_string()]), ("tls", vec![format!("200 {BIG}")])] {
        let (rc, out) = finished(&t, name, Duration::from_secs(60)).unwrap_or_else(|| panic!("{name} download did not end"));
        assert_eq!(rc, "0", "{name}: curl failed: {out}\n{}", t.warden_log());
        assert_eq!(out.lines().collect::<Vec<_>>(), want, "{name}: incomplete download");
    }
    let seen: Vec<String> = records
        .iter()
        .map(|r| {
            format!(
                "{}:{}->{}:{} {} midstream={} packets {}/{} {}",
                r.client_ip, r.client_port, r.server_ip, r.server_port, r.app, r.midstream, r.packets_to_server, r.packets_to_client, r.state
            )
        })
        .collect();
    for (port, app) in [(8080u16, "http"), (8443, "tls")] {
        let r = records
            .iter()
            .rev()
            .find(|r| r.server_port == port && r.app == app)
            .unwrap_or_else(|| {
                // When each download ended (its rc file written), against Warden's start.
                let ended = |name: &str| {
                    std::fs::metadata(t.path(&format!("{name}.rc")))
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|m| m.duration_since(started).ok())
                };
                panic!(
                    "{port} never labelled {app}: {seen:#?}\nWarden up {warden_up:?} after the downloads started; http ended after {:?}, tls after {:?}\n{}",
                    ended("http"),
                    ended("tls"),
                    t.warden_log()
                )
            });
        assert!(r.midstream, "{r:?}");
        assert_eq!((r.client_ip.as_str(), r.server_ip.as_str()), (C4, S4), "{r:?}");
        assert_eq!((r.verdict.as_deref(), r.exception_action.as_deref()), (Some("allowed"), Some("pass_flow")), "{r:?}");
        assert_ne!(r.inspection.as_deref(), Some("bypassed"), "{r:?}");
        assert!(r.packets_to_client > 100, "the download went through Warden: {seen:#?}");
    }
    let tls = records.iter().rev().find(|r| r.server_port == 8443 && r.app == "tls").unwrap();
    let l7 = tls.l7.as_ref().unwrap();
    assert!(l7["records_to_client"].as_u64().unwrap() > 0, "{l7:?}");
    let http = records.iter().rev().find(|r| r.server_port == 8080 && r.app == "http").unwrap();
    let l7 = http.l7.as_ref().unwrap();
    assert_eq!(l7["path"], "/small.txt", "the request after the pickup: {l7:?}");
}
