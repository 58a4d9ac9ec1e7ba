//! Metrics end to end: `warden run --metrics` scraped by a real Prometheus server (Debian's
//! `prometheus`, run by the test in Warden's namespace on loopback, with its own temporary
//! storage), the values read back through Prometheus's HTTP API (`/api/v1/query`) and compared
//! with what the control socket's `counters` says. Root only (see `common`).

mod common;

use std::time::{Duration, Instant};

use common::*;
use warden_control::{Counters, Reply, Request};

const METRICS: &str = "127.0.0.1:9597";
const PROM: &str = "127.0.0.1:9590";

fn counters(t: &Topo) -> Counters {
    match t.client().request(&Request::Counters {}).unwrap() {
        Reply::Counters(c) => c,
        r => panic!("{r:?}"),
    }
}

/// The value of the (single-series) instant query `q`, through Prometheus's HTTP API.
fn query(t: &Topo, q: &str) -> Option<f64> {
    let out = t.exec(
        &t.m,
        &["curl", "-s", "--max-time", "5", &format!("http://{PROM}/api/v1/query"), "--data-urlencode", &format!("query={q}")],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    assert_eq!(v["status"], "success", "query {q}: {v}");
    let r = v["data"]["result"].as_array()?;
    assert!(r.len() <= 1, "query {q} gave several series: {v}");
    r.first()?["value"][1].as_str()?.parse().ok()
}

/// Waits until Prometheus's value of `q` lies between two `counters` readings taken around a
/// wait of two scrape intervals (equal when no frame moved meanwhile); returns it.
fn settle(t: &Topo, q: &str, from_ctl: impl Fn(&Counters) -> u64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut last = (0, None, 0);
    while Instant::now() < deadline {
        let before = from_ctl(&counters(t));
        std::thread::sleep(Duration::from_millis(2500));
        let prom = query(t, q);
        let after = from_ctl(&counters(t));
        if let Some(p) = prom {
            if before as f64 <= p && p <= after as f64 {
                return p;
            }
        }
        last = (before, prom, after);
    }
    panic!("{q}: prometheus {:?} never within counters {}..={}; warden log:\n{}", last.1, last.0, last.2, t.warden_log());
}

#[test]
fn prometheus_scrapes_what_counters_says() {
    let mut t = Topo::new(ClientLink::Veth);
    let www = t.path("www");
    std::fs::create_dir_all(&www).unwrap();
    write_blob(&www.join("blob.bin"), 200_000);
    t.spawn(&t.s.clone(), &["python3", "-m", "http.server", "8080", "--bind", "0.0.0.0", "-d", www.to_str().unwrap()]);
    t.start_warden(&["--inline", &format!("{}:{}", t.a, t.b), "--metrics", METRICS, "--log-format", "json"]);

    // Prometheus in Warden's namespace, loopback only, scraping every second into a temporary
    // directory of the test (removed with the topology; the process is ended by PID).
    let prom_dir = t.path("prom");
    std::fs::create_dir_all(&prom_dir).unwrap();
    let cfg = t.path("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: warden\n    scrape_interval: 1s\n    scrape_timeout: 900ms\n    static_configs:\n      - targets: ['{METRICS}']\n"
        ),
    )
    .unwrap();
    t.spawn(
        &t.m.clone(),
        &[
            "prometheus",
            &format!("--config.file={}", cfg.display()),
            &format!("--storage.tsdb.path={}", prom_dir.display()),
            &format!("--web.listen-address={PROM}"),
            "--storage.tsdb.retention.time=1h",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while query(&t, "up{job=\"warden\"}") != Some(1.0) {
        assert!(Instant::now() < deadline, "prometheus never scraped warden (up != 1); warden log:\n{}", t.warden_log());
        std::thread::sleep(Duration::from_millis(500));
    }

    t.wait_listening(&t.s, "tcp", 8080);
    for _ in 0..5 {
        let out = t.exec(
            &t.c,
            &["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{size_download}", "--max-time", "20", &format!("http://{S4}:8080/blob.bin")],
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "200 200000", "{}", t.warden_log());
    }

    let (a, b) = (t.a.clone(), t.b.clone());
    let iface = |name: String, f: fn(&warden_control::InterfaceCounters) -> u64| {
        move |c: &Counters| c.interfaces.iter().filter(|i| i.name == name).map(f).sum::<u64>()
    };
    let rx_a = settle(&t, &format!("sum(warden_interface_rx_frames_total{{interface=\"{a}\"}})"), iface(a.clone(), |i| i.rx_frames));
    assert!(rx_a > 100.0, "5 downloads: handshakes, requests and ACKs from the client side: {rx_a}");
    settle(&t, &format!("sum(warden_interface_rx_bytes_total{{interface=\"{b}\"}})"), iface(b.clone(), |i| i.rx_bytes));
    settle(&t, &format!("sum(warden_interface_tx_frames_total{{interface=\"{b}\"}})"), iface(b.clone(), |i| i.tx_frames));
    let created = settle(&t, "sum(warden_sessions_created_total)", |c| c.workers.iter().map(|w| w.sessions_created).sum());
    assert!(created >= 5.0, "{created}");
    settle(&t, "sum(warden_worker_frames_total)", |c| c.workers.iter().map(|w| w.frames).sum());
    // Every frame received from an XSK is in exactly one timed rx batch.
    settle(&t, "sum(warden_frame_processing_seconds_count)", |c| c.interfaces.iter().map(|i| i.rx_frames).sum());
    // Sessions closed by FIN expire after the 1 s linger of the test's config.
    settle(&t, "sum(warden_sessions_expired_total)", |c| c.workers.iter().map(|w| w.sessions_expired).sum());

    let http = query(&t, "sum(warden_app_sessions_total{app=\"http\"})").unwrap_or(0.0);
    assert!(http >= 5.0, "5 HTTP sessions detected, prometheus says {http}");
    let p99 = query(&t, "histogram_quantile(0.99, sum by (le) (warden_frame_processing_seconds_bucket))").expect("p99");
    assert!(p99 > 0.0 && p99.is_finite(), "p99 per-frame time {p99}");
    let busy = query(&t, "sum(warden_worker_busy_loops_total)").expect("busy loops");
    assert!(busy > 0.0);

    // --log-format json: every log line is one JSON object with a level and a message.
    let log = t.warden_log();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v["level"].is_string() && v["fields"]["message"].is_string(), "{l}");
    }
    assert!(log.contains(&format!("metrics on http://{METRICS}/metrics")), "{log}");
}
