//! The `warden-cni` binary as a runtime runs it: CNI_* in the environment, the configuration
//! on stdin, the result or error JSON on stdout and the exit status (the logic itself is
//! tested in `src/tests.rs` against a fake Warden).

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{json, Value};

/// Runs the plugin with `cmd` and `conf` on stdin; returns (exit code, stdout JSON or Null, stderr).
fn plugin(cmd: &str, conf: &Value) -> (i32, Value, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_warden-cni"))
        .env_clear()
        .env("CNI_COMMAND", cmd)
        .env("CNI_CONTAINERID", "9d3b1f0e5a7c")
        .env("CNI_NETNS", "/run/netns/warden-cni-binary-test")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(conf.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let json = if stdout.trim().is_empty() { Value::Null } else { serde_json::from_str(&stdout).unwrap() };
    (out.status.code().unwrap(), json, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn with_warden_down_add_fails_with_an_error_result_and_del_succeeds() {
    let dir = std::env::temp_dir().join(format!("warden-cni-binary-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("warden.sock").display().to_string();
    let prev = json!({"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": "/run/netns/x"}],
                      "ips": [{"address": "198.18.9.2/24", "interface": 0}]});
    let conf = json!({"cniVersion": "1.0.0", "name": "n", "type": "warden-cni", "socket": socket, "prevResult": prev});

    let (code, out, err) = plugin("ADD", &conf);
    assert_eq!(code, 1, "{out} {err}");
    assert_eq!((out["code"].as_u64(), out["cniVersion"].as_str()), (Some(11), Some("1.0.0")), "{out}");
    assert!(err.contains("Warden is not reachable"), "{err}");

    let (code, out, err) = plugin("DEL", &conf);
    assert_eq!((code, out), (0, Value::Null), "{err}");

    let (code, out, _) = plugin("VERSION", &json!({"cniVersion": "1.0.0"}));
    assert_eq!(code, 0);
    assert_eq!(out["supportedVersions"], json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]));
    std::fs::remove_dir_all(dir).unwrap();
}
