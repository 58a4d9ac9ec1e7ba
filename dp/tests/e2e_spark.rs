//! End to end: a real Spark standalone Master (server namespace) and a real Spark Worker
//! registering with it (client namespace), from pyspark's jars, on non-standard ports through
//! Warden inline; then the same with `spark.authenticate` (SASL). Needs Java and the pyspark
//! venv that `scripts/install-deps.sh` makes (`WARDEN_TEST_VENV`, default
//! `/opt/warden-test-venv`).

mod common;

use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;
use warden_control::ConnectionRecord;

fn spark_home() -> String {
    let venv = std::env::var("WARDEN_TEST_VENV").unwrap_or_else(|_| "/opt/warden-test-venv".into());
    let out = std::process::Command::new(format!("{venv}/bin/python"))
        .args(["-c", "import os, pyspark; print(os.path.dirname(pyspark.__file__))"])
        .output()
        .unwrap_or_else(|e| panic!("{venv}/bin/python: {e}; run scripts/install-deps.sh"));
    assert!(out.status.success(), "pyspark missing in {venv}: run scripts/install-deps.sh");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Starts a Master on `S4:port` in the server namespace and a Worker on `C4` in the client
/// namespace registering with it; returns their PIDs once the Master listens.
fn master_and_worker(t: &mut Topo, home: &str, port: u16, props: Option<&str>) -> (u32, u32) {
    let (s, c) = (t.s.clone(), t.c.clone());
    let logs = t.path(&format!("spark-{port}"));
    std::fs::create_dir_all(&logs).unwrap();
    let class = format!("{home}/bin/spark-class");
    let env = |ip: &str| {
        vec![
            "env".to_string(),
            format!("SPARK_HOME={home}"),
            format!("SPARK_LOCAL_IP={ip}"),
            format!("SPARK_LOG_DIR={}", logs.display()),
            format!("SPARK_WORKER_DIR={}", logs.join("work").display()),
            "SPARK_NO_DAEMONIZE=1".to_string(),
            class.clone(),
        ]
    };
    let mut m = env(S4);
    m.extend(["org.apache.spark.deploy.master.Master", "--host", S4].map(String::from));
    m.extend(["--port".into(), port.to_string(), "--webui-port".into(), (port + 1000).to_string()]);
    if let Some(p) = props {
        m.extend(["--properties-file".into(), p.into()]);
    }
    let args: Vec<&str> = m.iter().map(String::as_str).collect();
    let master = t.spawn(&s, &args);
    let listening = || {
        let out = t.exec(&s, &["ss", "-Hltn", &format!("sport = :{port}")]);
        !String::from_utf8_lossy(&out.stdout).trim().is_empty()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !listening() {
        assert!(std::time::Instant::now() < deadline, "Spark Master did not listen on {port}");
        std::thread::sleep(Duration::from_millis(250));
    }
    let mut w = env(C4);
    w.push("org.apache.spark.deploy.worker.Worker".into());
    w.push(format!("spark://{S4}:{port}"));
    w.extend(["--host", C4, "--cores", "1", "--memory", "512m"].map(String::from));
    w.extend(["--port".into(), (port + 1).to_string(), "--webui-port".into(), (port + 1001).to_string()]);
    if let Some(p) = props {
        w.extend(["--properties-file".into(), p.into()]);
    }
    let args: Vec<&str> = w.iter().map(String::as_str).collect();
    let worker = t.spawn(&c, &args);
    (master, worker)
}

/// The newest record of a session to the Master on `port` whose `l7` shows the Worker's
/// registration (both directions parsed).
fn registered(all: &[ConnectionRecord], port: u16) -> Option<&ConnectionRecord> {
    all.iter().rev().find(|r| {
        r.server_port == port
            && r.l7.as_ref().is_some_and(|l| {
                let rpc = l.get("rpc_messages").map(|v| v.to_string()).unwrap_or_default();
                rpc.contains("\"RegisterWorker\"") && rpc.contains("\"RegisteredWorker\"")
            })
    })
}

#[test]
fn spark_master_and_worker_detected_inline() {
    let home = spark_home();
    let mut t = Topo::new(ClientLink::Veth);
    t.start_warden(&["--inline", &format!("{}:{}", t.a, t.b)]);
    let mut ctl = t.subscribed();

    // Plain RPC.
    let (master, worker) = master_and_worker(&mut t, &home, 17077, None);
    let records = collect_reports(&mut ctl, Duration::from_secs(120), |all| registered(all, 17077).is_some());
    let r = registered(&records, 17077).unwrap_or_else(|| {
        panic!(
            "no registration record on 17077: {:#?}",
            records.iter().filter(|r| r.server_port == 17077).collect::<Vec<_>>()
        )
    });
    assert_eq!(r.app, "spark", "{r:?}");
    let l7 = r.l7.as_ref().unwrap();
    eprintln!("17077: {}", serde_json::to_string(l7).unwrap());
    let has = |k: &str, v: &str| l7[k].as_array().is_some_and(|a| a.iter().any(|x| x == v));
    assert!(has("endpoints", "Master"), "{l7:?}");
    assert!(has("lookups", "Master"), "{l7:?}");
    assert_eq!(l7["client_address"], format!("{C4}:17078"), "{l7:?}");
    assert_eq!(l7["server_address"], format!("{S4}:17077"), "{l7:?}");
    assert!(l7["messages_to_server"]["OneWayMessage"].as_u64().unwrap_or(0) >= 1, "{l7:?}");
    assert!(l7.get("auth").is_none() && l7.get("violation").is_none(), "{l7:?}");
    t.signal(worker, Signal::SIGTERM);
    t.signal(master, Signal::SIGTERM);
    t.wait_exit(worker, Duration::from_secs(20));
    t.wait_exit(master, Duration::from_secs(20));

    // spark.authenticate: the SASL bootstrap opens each connection, RPC stays readable.
    let props = t.path("auth.conf");
    std::fs::write(&props, "spark.authenticate true\nspark.authenticate.secret warden-e2e-secret\n").unwrap();
    master_and_worker(&mut t, &home, 17177, Some(props.to_str().unwrap()));
    let records = collect_reports(&mut ctl, Duration::from_secs(120), |all| registered(all, 17177).is_some());
    let r = registered(&records, 17177).unwrap_or_else(|| {
        panic!(
            "no registration record on 17177: {:#?}",
            records.iter().filter(|r| r.server_port == 17177).collect::<Vec<_>>()
        )
    });
    assert_eq!(r.app, "spark", "{r:?}");
    let l7 = r.l7.as_ref().unwrap();
    eprintln!("17177: {}", serde_json::to_string(l7).unwrap());
    assert_eq!(l7["auth"], true, "{l7:?}");
    assert_eq!(l7["auth_protocol"], "sasl", "{l7:?}");
    assert!(l7["endpoints"].as_array().is_some_and(|a| a.iter().any(|x| x == "Master")), "{l7:?}");
}
