//! The plugin against a fake Warden: a thread on a Unix socket in a temporary directory that
//! answers the control protocol's JSON lines and keeps attachments as Warden would.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use warden_control::{AttachInfo, Hello, Reply, Request, Response, PROTOCOL_VERSION};

use crate::run;

/// How the fake answers.
#[derive(Default, Clone)]
struct Behaviour {
    /// Answer `attach` with this error.
    refuse_attach: Option<String>,
    /// Answer `detach` with this error (the attachment stays).
    refuse_detach: Option<String>,
    /// Never answer `attach`.
    silent_attach: bool,
    /// The protocol version `hello` answers (default ours).
    version: Option<String>,
}

#[derive(Default)]
struct State {
    requests: Vec<Request>,
    attachments: Vec<AttachInfo>,
}

struct FakeWarden {
    dir: PathBuf,
    socket: PathBuf,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn temp_dir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir()
        .join(format!("warden-cni-test-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn answer(req: &Request, b: &Behaviour, st: &mut State) -> Option<Response> {
    Some(match req {
        Request::Hello { .. } => Response::ok(Reply::Hello(Hello {
            version: b.version.clone().unwrap_or_else(|| PROTOCOL_VERSION.into()),
            server: "fake warden".into(),
            epoch: 1,
        })),
        Request::Attach { spec } => {
            if b.silent_attach {
                return None;
            }
            if let Some(m) = &b.refuse_attach {
                return Some(Response::err(m.clone()));
            }
            let name = spec.name.clone().unwrap_or_else(|| spec.target.clone());
            if st.attachments.iter().any(|a| a.name == name) {
                return Some(Response::err(format!("attach: {name} is already attached")));
            }
            let info = AttachInfo {
                name,
                kind: spec.kind.clone().unwrap_or_default(),
                host_iface: "veth-fake".into(),
                warden_iface: Some("wdn-fake".into()),
                bridge: Some("br-fake".into()),
                monitor: false,
                mode: spec.mode.clone().unwrap_or_else(|| "alert".into()),
                workload: None,
                ips: spec.ips.clone(),
                ..AttachInfo::default()
            };
            st.attachments.push(info.clone());
            Response::ok(Reply::Attached(info))
        }
        Request::Detach { name } => {
            if let Some(m) = &b.refuse_detach {
                return Some(Response::err(m.clone()));
            }
            let before = st.attachments.len();
            st.attachments.retain(|a| &a.name != name);
            if st.attachments.len() == before {
                Response::err(format!("detach: nothing attached as {name}"))
            } else {
                Response::ok(Reply::Done(format!("detached {name}")))
            }
        }
        Request::ListAttachments {} => Response::ok(Reply::Attachments(st.attachments.clone())),
        other => Response::err(format!("fake warden: {} not served", other.name())),
    })
}

impl FakeWarden {
    fn start(b: Behaviour) -> Self {
        let dir = temp_dir();
        let socket = dir.join("warden.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, stp) = (state.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stp.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (st, b) = (st.clone(), b.clone());
                std::thread::spawn(move || {
                    let mut w = conn.try_clone().unwrap();
                    for line in BufReader::new(conn).lines() {
                        let Ok(line) = line else { break };
                        let req: Request = serde_json::from_str(&line).unwrap();
                        let resp = {
                            let mut s = st.lock().unwrap();
                            s.requests.push(req.clone());
                            answer(&req, &b, &mut s)
                        };
                        if let Some(r) = resp {
                            let mut out = serde_json::to_vec(&r).unwrap();
                            out.push(b'\n');
                            if w.write_all(&out).is_err() {
                                break;
                            }
                        }
                    }
                });
            }
        });
        Self { dir, socket, state, stop, thread: Some(thread) }
    }

    fn requests(&self) -> Vec<Request> {
        self.state.lock().unwrap().requests.clone()
    }

    fn attachments(&self) -> Vec<AttachInfo> {
        self.state.lock().unwrap().attachments.clone()
    }

    fn socket(&self) -> String {
        self.socket.display().to_string()
    }
}

impl Drop for FakeWarden {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = UnixStream::connect(&self.socket);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A socket path where nothing listens (the directory exists, the socket does not).
fn dead_socket() -> (PathBuf, String) {
    let d = temp_dir();
    let s = d.join("warden.sock").display().to_string();
    (d, s)
}

const ID: &str = "4f2a9c0e81d7b3a5c6e9f0d1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5";
const NETNS: &str = "/var/run/netns/cni-3b1f";

fn env(cmd: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v = vec![
        ("CNI_COMMAND", cmd),
        ("CNI_CONTAINERID", ID),
        ("CNI_NETNS", NETNS),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
    ];
    for (k, val) in extra {
        v.retain(|(n, _)| n != k);
        v.push((k, val));
    }
    v.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn exec(env: &[(String, String)], conf: &Value) -> crate::Outcome {
    let env = env.to_vec();
    run(move |k| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()), conf.to_string().as_bytes())
}

/// What the `bridge` plugin of each spec version hands on as `prevResult` (0.3.x and 0.4.0
/// carry `version` in `ips`; 1.0.0 removed it).
fn prev_result(v: &str) -> Value {
    let mut ip = json!({"address": "198.18.3.2/24", "gateway": "198.18.3.1", "interface": 2});
    if !v.starts_with('1') {
        ip["version"] = json!("4");
    }
    json!({
        "cniVersion": v,
        "interfaces": [
            {"name": "wcni-br", "mac": "3a:1b:5c:7d:9e:01"},
            {"name": "veth5e1a2b3c", "mac": "3a:1b:5c:7d:9e:02"},
            {"name": "eth0", "mac": "3a:1b:5c:7d:9e:03", "sandbox": NETNS}
        ],
        "ips": [ip],
        "routes": [{"dst": "198.18.0.0/15", "gw": "198.18.3.1"}],
        "dns": {"nameservers": ["198.18.3.1"], "search": ["example.invalid"]}
    })
}

fn conf(v: &str, socket: &str, extra: Value) -> Value {
    let mut c = json!({
        "cniVersion": v,
        "name": "wcni-test",
        "type": "warden-cni",
        "socket": socket,
        "mode": "protect",
        "prevResult": prev_result(v),
        "runtimeConfig": {"portMappings": []}
    });
    for (k, val) in extra.as_object().unwrap() {
        if val.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = val.clone();
        }
    }
    c
}

/// Checks the spec's error shape (§5) and returns the error object.
fn error_of(out: &crate::Outcome) -> Value {
    assert_eq!(out.status, 1, "{out:?}");
    assert_eq!(out.stdout.lines().count(), 1, "one JSON line: {out:?}");
    let e: Value = serde_json::from_str(&out.stdout).unwrap();
    let o = e.as_object().unwrap();
    for k in o.keys() {
        assert!(["cniVersion", "code", "msg", "details"].contains(&k.as_str()), "field {k} in {e}");
    }
    assert!(o["cniVersion"].is_string() && o["code"].is_u64() && o["msg"].is_string(), "{e}");
    assert!(!o["msg"].as_str().unwrap().is_empty());
    e
}

#[test]
fn add_attaches_and_passes_prev_result_on_for_each_version() {
    for v in crate::conf::SUPPORTED_VERSIONS {
        let fake = FakeWarden::start(Behaviour::default());
        let c = conf(v, &fake.socket(), json!({}));
        let out = exec(&env("ADD", &[]), &c);
        assert_eq!(out.status, 0, "{v}: {out:?}");
        let result: Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(result, c["prevResult"], "{v}: the result is prevResult unchanged");
        let reqs = fake.requests();
        assert!(matches!(reqs[0], Request::Hello { .. }), "{reqs:?}");
        let Request::Attach { spec } = &reqs[1] else { panic!("{reqs:?}") };
        assert_eq!(spec.target, NETNS);
        assert_eq!(spec.kind.as_deref(), Some("netns"));
        assert_eq!(spec.ifname.as_deref(), Some("eth0"));
        assert_eq!(spec.mode.as_deref(), Some("protect"));
        assert_eq!(spec.name.as_deref(), Some("cni_4f2a9c0e81d7_eth0"));
        assert_eq!(spec.ips, ["198.18.3.2"]);
        assert!(!spec.monitor);
        assert_eq!(reqs.len(), 2);
        assert!(out.stderr.contains("attached as cni_4f2a9c0e81d7_eth0 (mode protect"), "{}", out.stderr);
    }
}

#[test]
fn add_without_mode_leaves_it_to_warden_and_names_the_pod() {
    let fake = FakeWarden::start(Behaviour::default());
    let c = conf("1.0.0", &fake.socket(), json!({"mode": null}));
    let args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=x";
    let out = exec(&env("ADD", &[("CNI_ARGS", args)]), &c);
    assert_eq!(out.status, 0, "{out:?}");
    let Request::Attach { spec } = &fake.requests()[1] else { panic!() };
    assert_eq!(spec.mode, None);
    assert_eq!(spec.name.as_deref(), Some("k8s_shop_web-0_4f2a9c0e81d7_eth0"));
    assert_eq!(fake.attachments()[0].mode, "alert", "the fake's default mode");
}

#[test]
fn a_result_without_cni_version_gets_the_configuration_s() {
    let fake = FakeWarden::start(Behaviour::default());
    let mut c = conf("1.0.0", &fake.socket(), json!({}));
    c["prevResult"].as_object_mut().unwrap().remove("cniVersion");
    let out = exec(&env("ADD", &[]), &c);
    let result: Value = serde_json::from_str(&out.stdout).unwrap();
    let mut want = c["prevResult"].clone();
    want["cniVersion"] = json!("1.0.0");
    assert_eq!(result, want);
}

#[test]
fn add_fails_when_warden_is_down_and_passes_only_when_allowed() {
    let (dir, socket) = dead_socket();
    let c = conf("1.0.0", &socket, json!({}));
    let e = error_of(&exec(&env("ADD", &[]), &c));
    assert_eq!((e["code"].as_u64(), e["msg"].as_str()), (Some(11), Some("Warden is not reachable")));
    assert_eq!(e["cniVersion"], "1.0.0");
    let details = e["details"].as_str().unwrap();
    assert!(details.contains(&socket) && details.contains("not started unprotected"), "{details}");

    let c = conf("1.0.0", &socket, json!({"onUnreachable": "allow"}));
    let out = exec(&env("ADD", &[]), &c);
    assert_eq!(out.status, 0, "{out:?}");
    assert_eq!(serde_json::from_str::<Value>(&out.stdout).unwrap(), c["prevResult"]);
    assert!(out.stderr.contains("WITHOUT Warden"), "{}", out.stderr);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn add_fails_when_warden_refuses() {
    let fake = FakeWarden::start(Behaviour {
        refuse_attach: Some("attach: routed veth (no bridge) is not supported".into()),
        ..Behaviour::default()
    });
    // Even with onUnreachable "allow": Warden answered, and said no.
    let c = conf("0.4.0", &fake.socket(), json!({"onUnreachable": "allow"}));
    let e = error_of(&exec(&env("ADD", &[]), &c));
    assert_eq!((e["code"].as_u64(), e["cniVersion"].as_str()), (Some(100), Some("0.4.0")));
    assert_eq!(e["details"], "attach: routed veth (no bridge) is not supported");
}

#[test]
fn add_times_out_and_asks_warden_to_undo() {
    let fake = FakeWarden::start(Behaviour { silent_attach: true, ..Behaviour::default() });
    let c = conf("1.1.0", &fake.socket(), json!({"timeoutMs": 300}));
    let t = Instant::now();
    let e = error_of(&exec(&env("ADD", &[]), &c));
    let took = t.elapsed();
    assert_eq!(e["code"], 11);
    assert!(e["details"].as_str().unwrap().contains("within 300 ms"), "{e}");
    assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(5), "{took:?}");
    let reqs = fake.requests();
    assert!(
        reqs.iter().any(|r| matches!(r, Request::Detach { name } if name == "cni_4f2a9c0e81d7_eth0")),
        "a detach follows the unanswered attach: {reqs:?}"
    );

    // With onUnreachable "allow" the workload starts anyway: a late attach is left to protect it.
    let fake = FakeWarden::start(Behaviour { silent_attach: true, ..Behaviour::default() });
    let c = conf("1.1.0", &fake.socket(), json!({"timeoutMs": 200, "onUnreachable": "allow"}));
    let out = exec(&env("ADD", &[]), &c);
    assert_eq!(out.status, 0, "{out:?}");
    assert_eq!(serde_json::from_str::<Value>(&out.stdout).unwrap(), c["prevResult"]);
    let reqs = fake.requests();
    assert!(reqs.iter().all(|r| !matches!(r, Request::Detach { .. })), "{reqs:?}");
}

#[test]
fn add_of_a_first_plugin_or_an_incompatible_warden_fails() {
    let fake = FakeWarden::start(Behaviour::default());
    let e = error_of(&exec(&env("ADD", &[]), &conf("1.0.0", &fake.socket(), json!({"prevResult": null}))));
    assert_eq!((e["code"].as_u64(), e["msg"].as_str()), (Some(7), Some("missing prevResult")));
    assert!(fake.requests().is_empty(), "nothing sent");

    let old = FakeWarden::start(Behaviour { version: Some("2.0".into()), ..Behaviour::default() });
    let e = error_of(&exec(&env("ADD", &[]), &conf("1.0.0", &old.socket(), json!({}))));
    assert_eq!(e["code"], 100);
    assert!(e["details"].as_str().unwrap().contains("2.0"), "{e}");
    assert_eq!(old.requests().len(), 1, "only hello");
}

#[test]
fn del_detaches_and_is_idempotent() {
    let fake = FakeWarden::start(Behaviour::default());
    let c = conf("1.0.0", &fake.socket(), json!({}));
    assert_eq!(exec(&env("ADD", &[]), &c).status, 0);
    assert_eq!(fake.attachments().len(), 1);
    // DEL may come without CNI_NETNS (the namespace is gone).
    let del_env = env("DEL", &[("CNI_NETNS", "")]);
    let out = exec(&del_env, &c);
    assert_eq!((out.status, out.stdout.as_str()), (0, ""), "{out:?}");
    assert!(fake.attachments().is_empty());
    assert!(fake.requests().iter().any(|r| matches!(r, Request::Detach { name } if name == "cni_4f2a9c0e81d7_eth0")));
    let n = fake.requests().len();
    let out = exec(&del_env, &c);
    assert_eq!((out.status, out.stdout.as_str()), (0, ""), "{out:?}");
    let later = &fake.requests()[n..];
    assert!(later.iter().all(|r| !matches!(r, Request::Detach { .. })), "nothing to detach: {later:?}");
    assert!(out.stderr.contains("not attached"), "{}", out.stderr);
    // DEL without prevResult (allowed by §2) works the same.
    assert_eq!(exec(&del_env, &conf("1.0.0", &fake.socket(), json!({"prevResult": null}))).status, 0);
}

#[test]
fn del_succeeds_when_warden_is_down() {
    let (dir, socket) = dead_socket();
    let out = exec(&env("DEL", &[]), &conf("1.0.0", &socket, json!({})));
    assert_eq!((out.status, out.stdout.as_str()), (0, ""), "{out:?}");
    assert!(out.stderr.contains("not reachable"), "{}", out.stderr);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn del_reports_a_detach_warden_refused() {
    let fake = FakeWarden::start(Behaviour { refuse_detach: Some("detach: restore failed".into()), ..Behaviour::default() });
    let c = conf("1.0.0", &fake.socket(), json!({}));
    assert_eq!(exec(&env("ADD", &[]), &c).status, 0);
    let e = error_of(&exec(&env("DEL", &[]), &c));
    assert_eq!((e["code"].as_u64(), e["details"].as_str()), (Some(100), Some("detach: restore failed")));
}

#[test]
fn check_looks_for_the_attachment_and_its_addresses() {
    let fake = FakeWarden::start(Behaviour::default());
    let c = conf("1.0.0", &fake.socket(), json!({}));
    assert_eq!(exec(&env("ADD", &[]), &c).status, 0);
    let out = exec(&env("CHECK", &[]), &c);
    assert_eq!((out.status, out.stdout.as_str()), (0, ""), "{out:?}");

    let e = error_of(&exec(&env("CHECK", &[("CNI_CONTAINERID", "other")]), &c));
    assert_eq!(e["code"], 101);
    assert!(e["details"].as_str().unwrap().contains("cni_other_eth0"), "{e}");

    let mut more = c.clone();
    more["prevResult"]["ips"].as_array_mut().unwrap().push(json!({"address": "2001:db8:3::2/64", "interface": 2}));
    let e = error_of(&exec(&env("CHECK", &[]), &more));
    assert_eq!(e["code"], 102);
    assert!(e["details"].as_str().unwrap().contains("2001:db8:3::2"), "{e}");

    let e = error_of(&exec(&env("CHECK", &[]), &conf("0.3.1", &fake.socket(), json!({}))));
    assert_eq!((e["code"].as_u64(), e["msg"].as_str()), (Some(1), Some("config version does not allow CHECK")));

    let (dir, socket) = dead_socket();
    let e = error_of(&exec(&env("CHECK", &[]), &conf("1.0.0", &socket, json!({}))));
    assert_eq!(e["code"], 11);
    assert_eq!(exec(&env("CHECK", &[]), &conf("1.0.0", &socket, json!({"onUnreachable": "allow"}))).status, 0);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn version_lists_the_supported_versions() {
    for (input, want) in [(json!({"cniVersion": "0.4.0"}), "0.4.0"), (json!({}), "1.1.0")] {
        let out = exec(&[("CNI_COMMAND".into(), "VERSION".into())], &input);
        assert_eq!(out.status, 0);
        let v: Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(v, json!({"cniVersion": want, "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]}));
    }
}

#[test]
fn status_says_whether_warden_answers_and_gc_has_nothing_to_collect() {
    let fake = FakeWarden::start(Behaviour::default());
    let c = conf("1.1.0", &fake.socket(), json!({"prevResult": null}));
    let st = [("CNI_COMMAND".to_string(), "STATUS".to_string())];
    let out = exec(&st, &c);
    assert_eq!((out.status, out.stdout.as_str()), (0, ""), "{out:?}");
    assert!(matches!(fake.requests()[..], [Request::Hello { .. }]));

    let (dir, socket) = dead_socket();
    let e = error_of(&exec(&st, &conf("1.1.0", &socket, json!({"prevResult": null}))));
    assert_eq!((e["code"].as_u64(), e["msg"].as_str()), (Some(50), Some("Warden is not available")));
    let e = error_of(&exec(&st, &conf("1.0.0", &socket, json!({"prevResult": null}))));
    assert_eq!(e["code"], 1);
    std::fs::remove_dir_all(dir).unwrap();

    let mut gc = conf("1.1.0", &fake.socket(), json!({"prevResult": null}));
    gc["cni.dev/valid-attachments"] = json!([{"containerID": ID, "ifname": "eth0"}]);
    let out = exec(&[("CNI_COMMAND".into(), "GC".into())], &gc);
    assert_eq!((out.status, out.stdout.as_str()), (0, ""), "{out:?}");
}

#[test]
fn errors_have_the_spec_s_shape() {
    let (dir, socket) = dead_socket();
    let c = conf("1.0.0", &socket, json!({}));
    let e = error_of(&exec(&env("FROB", &[]), &c));
    assert_eq!((e["code"].as_u64(), e["msg"].as_str()), (Some(4), Some("unknown CNI_COMMAND: FROB")));
    let e = error_of(&exec(&[], &c));
    assert_eq!((e["code"].as_u64(), e["msg"].as_str()), (Some(4), Some("required env variables [CNI_COMMAND] missing")));
    let e = error_of(&exec(&env("ADD", &[("CNI_IFNAME", "")]), &c));
    assert_eq!(e["msg"], "required env variables [CNI_IFNAME] missing");
    let env_add = env("ADD", &[]);
    let out = run(|k| env_add.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()), b"{\"cniVersion\":");
    assert_eq!(error_of(&out)["code"], 6);
    let e = error_of(&exec(&env("ADD", &[]), &conf("0.2.0", &socket, json!({}))));
    assert_eq!((e["code"].as_u64(), e["cniVersion"].as_str()), (Some(1), Some("0.2.0")));
    assert!(e["details"].as_str().unwrap().contains("0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0"), "{e}");
    let e = error_of(&exec(&env("ADD", &[]), &conf("1.0.0", &socket, json!({"mode": "deny"}))));
    assert_eq!(e["code"], 7);
    assert!(e["details"].as_str().unwrap().contains("\"deny\""), "{e}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// The example network configuration list (conf/cni/10-warden.conflist) as a runtime uses it:
/// warden-cni comes after the interface plugin, and its entry, with the fields a runtime adds
/// (§3), is a configuration the plugin accepts.
#[test]
fn the_example_conflist_chains_warden_cni_last_with_valid_fields() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/cni/10-warden.conflist");
    let list: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let plugins = list["plugins"].as_array().unwrap();
    let types: Vec<&str> = plugins.iter().map(|p| p["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["bridge", "warden-cni"]);
    let subnet = plugins[0]["ipam"]["ranges"][0][0]["subnet"].as_str().unwrap();
    assert!(subnet.starts_with("198.18."), "{subnet}");
    let mut conf = plugins[1].clone();
    conf["cniVersion"] = list["cniVersion"].clone();
    conf["name"] = list["name"].clone();
    conf["prevResult"] = prev_result(list["cniVersion"].as_str().unwrap());
    let c = crate::conf::NetConf::parse(conf.to_string().as_bytes()).unwrap();
    assert_eq!((c.socket(), c.mode.as_deref()), (warden_control::DEFAULT_SOCKET, Some("protect")));
    assert_eq!(c.on_unreachable, crate::conf::OnUnreachable::Fail);
    assert!(crate::conf::SUPPORTED_VERSIONS.contains(&c.version()));
}
