//! ZooKeeper end to end: a standalone Debian ZooKeeper 3.8 server on a non-standard port in the
//! server namespace, the C client (`cli_mt`) and the Java CLI (`ZooKeeperMain`) in the client
//! namespace, Warden inline: the app and its fields come from content.

mod common;

use std::time::{Duration, Instant};

use common::*;
use warden_control::ConnectionRecord;

const PORT: u16 = 12181;
const CLI_MT: &str = "/usr/lib/zookeeper/bin/cli_mt";
const ZK_JAR: &str = "/usr/share/java/zookeeper.jar";
const SLF4J_SIMPLE: &str = "/usr/share/java/slf4j-simple.jar";

fn zk_log(t: &Topo) -> String {
    std::fs::read_to_string(t.path("zk.log")).unwrap_or_default()
}

fn l7_str(r: &ConnectionRecord) -> String {
    r.l7.as_ref().map(|l| serde_json::to_string(l).unwrap()).unwrap_or_default()
}

fn ops(r: &ConnectionRecord) -> Vec<String> {
    r.l7.as_ref()
        .and_then(|l| l.get("ops")?.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|v| v.as_str().map(String::from))
        .collect()
}

#[test]
fn zookeeper_detected_inline_by_content() {
    let mut t = Topo::new(ClientLink::Veth);
    let data = t.path("zk-data");
    std::fs::create_dir_all(&data).unwrap();
    let cfg = t.path("zoo.cfg");
    std::fs::write(
        &cfg,
        format!(
            "tickTime=2000\ndataDir={}\nclientPort={PORT}\nclientPortAddress={S4}\nadmin.enableServer=false\n\
             4lw.commands.whitelist=\nmaxClientCnxns=10\n",
            data.display()
        ),
    )
    .unwrap();
    let s = t.s.clone();
    // slf4j-simple gives the server a log (stderr) to show when something fails.
    let log = t.path("zk.log");
    let cmd = format!(
        "exec java -Xmx128m -Dzookeeper.admin.enableServer=false -cp {ZK_JAR}:{SLF4J_SIMPLE} \
         org.apache.zookeeper.server.ZooKeeperServerMain {} >{} 2>&1",
        cfg.display(),
        log.display()
    );
    t.spawn(&s, &["sh", "-c", &cmd]);
    t.start_warden(&["--inline", &format!("{}:{}", t.a, t.b)]);
    let mut ctl = t.subscribed();
    // The JVM takes a moment to start, and the server listens before it serves (it closes
    // connections until then): ask it from its own namespace (not through Warden) until it
    // answers.
    let server = format!("{S4}:{PORT}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = t.exec(&s, &["timeout", "5", CLI_MT, &server, "cmd:ls /"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        if text.contains("/: rc = 0") {
            break;
        }
        assert!(Instant::now() < deadline, "zookeeper did not serve on {server}: {}", zk_log(&t));
        std::thread::sleep(Duration::from_millis(250));
    }
    // And for the path through Warden (attached, neighbours resolved).
    while !t.ping(S4, 1) {
        assert!(Instant::now() < deadline, "no path to {S4} through warden: {}", t.warden_log());
    }
    let c = t.c.clone();
    // C client: create a node, then list the root.
    let out = t.exec(&c, &["timeout", "20", CLI_MT, &server, "cmd:create /warden-e2e"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("[/warden-e2e]: rc = 0"), "cli_mt create: {text}\nserver: {}", zk_log(&t));
    let session = text
        .lines()
        .find_map(|l| l.split("Got a new session id: ").nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| panic!("no session id in {text}"));
    let out = t.exec(&c, &["timeout", "20", CLI_MT, &server, "cmd:ls /"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("warden-e2e"), "cli_mt ls: {text}");
    // Java CLI: read a node that does not exist (a NONODE reply).
    let out = t.exec(
        &c,
        &[
            "timeout",
            "30",
            "java",
            "-cp",
            ZK_JAR,
            "org.apache.zookeeper.ZooKeeperMain",
            "-server",
            &server,
            "get",
            "/warden-missing",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("Node does not exist: /warden-missing"), "zkCli get: {text}");

    let want = |r: &ConnectionRecord, op: &str, path: &str| {
        r.server_port == PORT && r.closed && ops(r).iter().any(|o| o == op) && l7_str(r).contains(path)
    };
    let records = collect_reports(&mut ctl, Duration::from_secs(20), |all| {
        all.iter().any(|r| want(r, "create", "/warden-e2e"))
            && all.iter().any(|r| want(r, "getChildren", "\"/\""))
            && all.iter().any(|r| want(r, "getData", "/warden-missing"))
    });
    let ours: Vec<_> = records.iter().filter(|r| r.server_port == PORT && r.closed).collect();
    assert!(ours.len() >= 3, "{records:#?}");
    for r in &ours {
        assert_eq!(r.app, "zookeeper", "{r:?}");
        let l7 = r.l7.as_ref().unwrap();
        assert_eq!(l7["protocol_version"], 0, "{l7:?}");
        assert!(l7["session_id"].as_str().is_some_and(|s| s.starts_with("0x")), "{l7:?}");
        assert!(l7["session_timeout_ms"].as_i64().is_some_and(|t| t > 0), "{l7:?}");
        assert!(l7.get("violation").is_none(), "{l7:?}");
    }
    let create = records.iter().find(|r| want(r, "create", "/warden-e2e")).unwrap_or_else(|| panic!("{records:#?}"));
    let l7 = create.l7.as_ref().unwrap();
    assert_eq!(l7["session_id"], session.as_str(), "{l7:?}");
    assert_eq!(ops(create), ["create", "closeSession"]);
    assert_eq!(l7["paths"], serde_json::json!(["/warden-e2e"]));
    assert_eq!(l7["errors"], 0);
    assert!(l7["matched"].as_u64().is_some_and(|n| n >= 2), "{l7:?}");
    let ls = records.iter().find(|r| want(r, "getChildren", "\"/\"")).unwrap();
    assert_eq!(ops(ls), ["getChildren", "closeSession"]);
    assert_eq!(ls.l7.as_ref().unwrap()["paths"], serde_json::json!(["/"]));
    let get = records.iter().find(|r| want(r, "getData", "/warden-missing")).unwrap();
    let l7 = get.l7.as_ref().unwrap();
    assert_eq!(l7["last_error"], "NONODE", "{l7:?}");
    assert_eq!(l7["last_error_op"], "getData", "{l7:?}");
    assert_eq!(ops(get)[0], "getData", "{l7:?}");
    assert_eq!(l7["paths"], serde_json::json!(["/warden-missing"]));
    assert_eq!(l7["errors"], 1, "{l7:?}");
}
