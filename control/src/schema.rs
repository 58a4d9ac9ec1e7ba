//! JSON Schemas of the protocol's messages, generated from the Rust types (`schemars`,
//! JSON Schema draft 2020-12). The files in `control/schema/` are these, written by
//! `wardenctl schema --out control/schema`; a test checks that they are current and that real
//! messages validate against them.

use schemars::schema_for;

use crate::{Request, Response};

/// `(file name, schema)` of every message: `request.schema.json` (a line a client sends),
/// `response.schema.json` (a line the server sends: replies and the report stream's
/// `report`, `event` and `lost` messages).
pub fn schemas() -> Vec<(&'static str, serde_json::Value)> {
    let value = |s: schemars::Schema| s.to_value();
    vec![
        ("request.schema.json", value(schema_for!(Request))),
        ("response.schema.json", value(schema_for!(Response))),
    ]
}

/// A schema as written to its file: pretty JSON with a final newline.
pub fn to_file_text(schema: &serde_json::Value) -> String {
    let mut s = serde_json::to_string_pretty(schema).unwrap_or_default();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::*;

    /// Validates `value` against `schema`, naming every error.
    fn validate(schema: &serde_json::Value, value: &serde_json::Value) {
        let v = jsonschema::validator_for(schema).expect("schema compiles");
        let errors: Vec<String> = v.iter_errors(value).map(|e| format!("{e} at {}", e.instance_path())).collect();
        assert!(errors.is_empty(), "{value}: {errors:?}");
    }

    fn schema(name: &str) -> serde_json::Value {
        schemas().into_iter().find(|(n, _)| *n == name).unwrap().1
    }

    /// The committed files are what the types generate (regenerate with
    /// `cargo run -p warden-control --bin wardenctl -- schema --out control/schema`).
    #[test]
    fn committed_schemas_are_current() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schema");
        for (name, s) in schemas() {
            let committed = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
            assert!(
                committed == to_file_text(&s),
                "control/schema/{name} is stale: run `wardenctl schema --out control/schema`"
            );
        }
    }

    fn record() -> ConnectionRecord {
        let mut l7 = serde_json::Map::new();
        l7.insert("method".into(), "GET".into());
        l7.insert("status".into(), 200.into());
        ConnectionRecord {
            client_ip: "198.18.0.1".into(),
            client_port: 40000,
            server_ip: "198.18.0.2".into(),
            server_port: 80,
            ip_proto: 6,
            app: "http".into(),
            closed: true,
            end_reason: Some("fin".into()),
            l7: Some(l7),
            threats: vec![threat()],
            verdict: Some("violation".into()),
            rule_id: Some(3),
            shadow_verdict: Some("denied".into()),
            capture_file: Some("threat-sql_injection-20261203T101500-w0-s7.pcapng".into()),
            ..Default::default()
        }
    }

    fn capture() -> CaptureInfo {
        CaptureInfo {
            id: Some(3),
            name: "web-http.pcapng".into(),
            state: "running".into(),
            filter: "(host 198.18.0.2) and (tcp port 80)".into(),
            ifaces: vec!["veth0".into(), "veth1".into()],
            frames: "all".into(),
            packets: 12,
            bytes: 4096,
            lost: 0,
            started: "2026-12-03T10:15:00.000000000Z".into(),
            duration_s: Some(5),
            max_size: Some(1_000_000),
            max_packets: None,
            snaplen: Some(65535),
            stop_reason: None,
        }
    }

    fn threat() -> ThreatRecord {
        ThreatRecord {
            id: "sql_injection".into(),
            dir: "to_server".into(),
            reason: "libinjection".into(),
            evidence: "1' OR '1'='1".into(),
            count: 1,
            severity: Some("critical".into()),
            action: Some("reset".into()),
            frame: Some("AgAAAAACAgAAAAABCABF".into()),
            frame_len: Some(120),
        }
    }

    /// Real messages of every kind validate against the schemas and round-trip through JSON.
    #[test]
    fn real_messages_validate() {
        let req_schema = schema("request.schema.json");
        let requests = [
            r#"{"cmd":"hello","version":"1.0","client":"agent.py"}"#,
            r#"{"cmd":"subscribe"}"#,
            r#"{"cmd":"subscribe","since":41,"epoch":1700000000000000000}"#,
            r#"{"cmd":"status"}"#,
            r#"{"cmd":"list_sessions","limit":10}"#,
            r#"{"cmd":"list_sessions","page_size":500}"#,
            r#"{"cmd":"list_sessions","page_size":500,"after":{"worker":1,"slot":70000}}"#,
            r#"{"cmd":"add_inline_pair","a":"veth0","b":"veth1","fail_mode":"closed"}"#,
            r#"{"cmd":"set_workload","workload":{"id":"web","ips":["198.18.0.2"],"mode":"protect"}}"#,
            r#"{"cmd":"set_service","service":{"name":"pay","namespace":"shop","external_ips":["198.18.0.50","2001:db8::50"],"ports":["443","8000-8100"],"workloads":["pay-a"]}}"#,
            r#"{"cmd":"set_service","service":{"name":"dns","external_ips":["198.18.0.53"]}}"#,
            r#"{"cmd":"remove_service","name":"pay","namespace":"shop"}"#,
            r#"{"cmd":"remove_service","name":"dns"}"#,
            r#"{"cmd":"policy_shadow","text":"[[workload]]\nid = \"web\"\n"}"#,
            r#"{"cmd":"policy_shadow_clear"}"#,
            r#"{"cmd":"policy_diff"}"#,
            r#"{"cmd":"policy_promote"}"#,
            r#"{"cmd":"capture_start","spec":{"workload":"web","filter":"tcp port 80","duration_s":5,"max_size":1000000,"frames":"dropped","name":"web-http"}}"#,
            r#"{"cmd":"capture_start","spec":{"iface":"veth0","hosts":["198.18.0.0/24","2001:db8::2"],"ports":[80],"proto":"tcp","snaplen":96,"max_packets":10,"stream":true}}"#,
            r#"{"cmd":"capture_list"}"#,
            r#"{"cmd":"capture_stop","id":3}"#,
            r#"{"cmd":"capture_delete","name":"web-http.pcapng"}"#,
        ];
        for line in requests {
            let r: Request = serde_json::from_str(line).unwrap();
            let v = serde_json::to_value(&r).unwrap();
            validate(&req_schema, &v);
            assert_eq!(serde_json::from_value::<Request>(v).unwrap(), r);
        }
        // What the schema refuses, the server refuses too.
        for bad in [
            r#"{"cmd":"subscribe","since":"x"}"#,
            r#"{"cmd":"list_sessions","after":{"worker":0}}"#,
            r#"{"cmd":"list_sessions","after":{"worker":0,"slot":-1}}"#,
            r#"{"cmd":"set_service","service":{"external_ips":["198.18.0.50"]}}"#,
            r#"{"cmd":"set_service","service":{"name":"pay","external_ips":["198.18.0.50"],"protocol":"tcp"}}"#,
            r#"{"cmd":"remove_service","namespace":"shop"}"#,
            r#"{"cmd":"capture_start","spec":{"path":"/etc/x"}}"#,
            r#"{"cmd":"capture_stop"}"#,
        ] {
            let bad: serde_json::Value = serde_json::from_str(bad).unwrap();
            assert!(jsonschema::validator_for(&req_schema).unwrap().validate(&bad).is_err(), "{bad}");
            assert!(serde_json::from_value::<Request>(bad.clone()).is_err(), "{bad}");
        }

        let resp_schema = schema("response.schema.json");
        let events = [
            Event::Threat { threat: threat(), connection: record() },
            Event::Violation { connection: record() },
            Event::Denied { connection: record() },
            Event::Exception { connection: record() },
        ];
        let mut responses = vec![
            Response::ok(Reply::Hello(Hello { version: PROTOCOL_VERSION.into(), server: "warden 0.1.0".into(), epoch: 7 })),
            Response::ok(Reply::Subscribed(Subscribed { interval_s: 5, epoch: 7, first_seq: 42, last_seq: 50 })),
            Response::ok(Reply::Report(ReportBatch {
                seq: 42,
                time: "2025-01-01T00:00:00.000000000Z".into(),
                connections: vec![record(), ConnectionRecord::default()],
                dropped: 3,
                more: true,
            })),
            Response::ok(Reply::Lost(Lost {
                from_seq: 3,
                to_seq: 9,
                records: 120,
                events: 2,
                batches: 5,
                reason: "buffer_full".into(),
                approximate: false,
            })),
            Response::ok(Reply::Status(Status { report_stream: ReportStream { last_seq: 9, ..Default::default() }, ..Default::default() })),
            Response::ok(Reply::Sessions(vec![record()])),
            Response::ok(Reply::SessionPage(SessionPage {
                sessions: vec![record()],
                next: Some(SessionCursor { worker: 0, slot: 17 }),
            })),
            Response::ok(Reply::SessionPage(SessionPage { sessions: vec![], next: None })),
            Response::ok(Reply::Done("ok".into())),
            Response::ok(Reply::PolicyDiff(PolicyDiff {
                compared: 9,
                differing: 1,
                overflow: 0,
                entries: vec![PolicyDiffEntry {
                    change: "deny".into(),
                    server_workload: Some("web".into()),
                    ip_proto: 6,
                    server_port: 8080,
                    verdict: Some("allowed".into()),
                    rule_id: Some(2),
                    shadow_verdict: Some("denied".into()),
                    sessions: 1,
                    example_client: "198.18.0.1".into(),
                    example_server: "2001:db8::2".into(),
                    ..Default::default()
                }],
            })),
            Response::ok(Reply::Capture(capture())),
            Response::ok(Reply::Captures(vec![capture(), CaptureInfo { name: "denied-20261203T101500-w0-s9.pcapng".into(), state: "file".into(), bytes: 900, ..Default::default() }])),
            Response::ok(Reply::CaptureData(CaptureData { id: 3, data: "Cg0NCg==".into() })),
            Response::ok(Reply::CaptureEnd(CaptureInfo { stop_reason: Some("duration".into()), state: "done".into(), ..capture() })),
            Response::err("protocol version mismatch"),
        ];
        responses.extend(events.into_iter().enumerate().map(|(i, event)| Response::ok(Reply::Event(SeqEvent { seq: i as u64 + 1, event }))));
        for r in responses {
            let v = serde_json::to_value(&r).unwrap();
            validate(&resp_schema, &v);
            assert_eq!(serde_json::from_value::<Response>(v).unwrap(), r);
        }
    }
}
