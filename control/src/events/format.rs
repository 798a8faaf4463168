//! How an event is written out: the bus's own JSON, OCSF-shaped JSON, or CEF.
//!
//! # OCSF (schema 1.3.0 shapes)
//!
//! Every event carries the base attributes: `time` (epoch milliseconds), `severity_id`
//! (1 informational, 2 low, 3 medium, 4 high for our info, notice, warning, error) and
//! `severity`, `message`, `category_uid`/`category_name`, `class_uid`/`class_name`,
//! `activity_id`/`activity_name`, `type_uid` (`class_uid × 100 + activity_id`), `status_id`,
//! `metadata` (`version` "1.3.0", `product` {`name` "Switchyard", `vendor_name` "Switchyard",
//! `version`}, `event_code` = the event's kind, e.g. `backend_down`), and `unmapped` with the
//! Switchyard fields OCSF has no place for (`kind`, `service`, `pool`, `backend`, `worker`,
//! `reason`, `port`, `dataplane` {`pid`, `epoch`}, `evidence`). The class is picked by the kind:
//!
//! | kinds | class | activity | class-specific fields |
//! |---|---|---|---|
//! | `acl_drop`, `rate_limit_drop`, `residency_drop` (data-plane samples) | 4001 Network Activity (category 4 Network Activity) | 5 Refuse | `src_endpoint` {`ip`, `port`} (anonymised as configured), `dst_endpoint` {`ip`, `port`}, `connection_info` {`protocol_num`, `protocol_name`, `direction_id` 1 inbound}, `action_id` 2 Denied, `disposition_id` 2 Blocked |
//! | `flood_entered`, `new_flow_spike`, `acl_drops_sustained`, `rate_limit_drops_sustained`, `top_talker` | 2004 Detection Finding (category 2 Findings) | 1 Create | `finding_info` {`uid` (kind, subject, time), `title` (the message), `types` [kind], `analytic` {`name` kind, `type_id` 1 Rule}}, `evidences` [{`data`: the evidence figures}] |
//! | `api_refused` | 6003 API Activity (category 6 Application Activity) | 1 Create (POST), 2 Read (GET), 99 Other | `api` {`operation`: "POST /v1/apply"}, `src_endpoint` {`ip`}, `status_id` 2 Failure, `status_detail` (why) |
//! | everything else (policy, generation, backend health, weights, rollouts, `flood_left`, `link_down`, `link_up`) | 0 Base Event (category 0 Uncategorized) | 99 Other | — |
//!
//! # CEF
//!
//! `CEF:0|Switchyard|switchyard|VERSION|KIND|MESSAGE|SEVERITY|EXTENSIONS`: severity 3, 5, 7, 9
//! for info, notice, warning, error; extensions `rt` (epoch ms), `src`/`spt`/`dst`/`dpt`/`proto`
//! for a flow (or `src` for the client alone), `cs1` service, `cs2` pool, `cs3` backend,
//! `cs4` reason (each with its `csNLabel`), `cn1` worker, `cn2` port, `dvcpid` and `cn3` the
//! reporting data plane's pid and epoch, `act` `blocked` for drop samples, and the evidence as
//! `cs5Label=evidence cs5=name:value,…`. Header fields escape `\` and `|`;
//! extension values escape `\`, `=` and line breaks (CEF rules).

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serializer;
use serde_json::{json, Map, Value};

use super::config::Format;
use super::{Class, Event, Severity};

/// The OCSF schema version whose shapes the payload follows.
pub const OCSF_VERSION: &str = "1.3.0";

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// RFC 3339 UTC with milliseconds (the bus's JSON `time`).
#[must_use]
pub fn rfc3339(t: SystemTime) -> String {
    let ms = i64::try_from(millis(t)).unwrap_or(0);
    jiff::Timestamp::from_millisecond(ms)
        .map_or_else(|_| "1970-01-01T00:00:00Z".into(), |ts| format!("{ts:.3}"))
}

/// Serde helper: `time` as RFC 3339.
///
/// # Errors
/// Never, beyond the serializer's own.
pub fn serialize_time<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*t))
}

/// The event in `format`, one line, no line break.
#[must_use]
pub fn render(event: &Event, format: Format) -> String {
    match format {
        Format::Json => serde_json::to_string(event).unwrap_or_default(),
        Format::Ocsf => ocsf(event).to_string(),
        Format::Cef => cef(event),
    }
}

fn protocol_name(p: u8) -> &'static str {
    match p {
        1 => "icmp",
        6 => "tcp",
        17 => "udp",
        58 => "ipv6-icmp",
        _ => "other",
    }
}

fn severity_id(s: Severity) -> u8 {
    match s {
        Severity::Info => 1,
        Severity::Notice => 2,
        Severity::Warning => 3,
        Severity::Error => 4,
    }
}

/// The OCSF-shaped object (see the module documentation, field by field).
#[must_use]
pub fn ocsf(event: &Event) -> Value {
    let mut unmapped = Map::new();
    unmapped.insert("kind".into(), json!(event.kind.as_str()));
    if let Some(s) = &event.service {
        unmapped.insert("service".into(), json!(s));
    }
    if let Some(p) = &event.pool {
        unmapped.insert("pool".into(), json!(p));
    }
    if let Some(b) = event.backend {
        unmapped.insert("backend".into(), json!(b.to_string()));
    }
    if let Some(w) = event.worker {
        unmapped.insert("worker".into(), json!(w));
    }
    if let Some(r) = &event.reason {
        unmapped.insert("reason".into(), json!(r));
    }
    if let Some(p) = event.port {
        unmapped.insert("port".into(), json!(p));
    }
    if let Some(d) = event.dataplane {
        unmapped.insert("dataplane".into(), json!({"pid": d.pid, "epoch": d.epoch}));
    }
    if !event.evidence.is_empty() {
        unmapped.insert("evidence".into(), json!(event.evidence));
    }
    let time = millis(event.time);
    let (category, category_name, class, class_name, activity, activity_name) =
        match event.kind.class() {
            Class::Network => (4, "Network Activity", 4001, "Network Activity", 5, "Refuse"),
            Class::Finding => (2, "Findings", 2004, "Detection Finding", 1, "Create"),
            // The activity follows the refused request's method, below.
            Class::Api => (6, "Application Activity", 6003, "API Activity", 99, "Other"),
            // Also link changes (`link_down`, `link_up`): a port's carrier is a device's status,
            // not traffic between endpoints (Network Activity, which we use for refused
            // packets), not a detection (Detection Finding) and not an API call. OCSF's nearest
            // classes are in Discovery (Device Inventory Info; Device Config State Change,
            // which is about a device's security configuration), which none of our events use;
            // so, like a backend's health changes, a base event whose `event_code` says what
            // happened, with the port and the data plane in `unmapped`.
            Class::Control => (0, "Uncategorized", 0, "Base Event", 99, "Other"),
        };
    let mut o = json!({
        "time": time,
        "severity_id": severity_id(event.severity),
        "severity": event.severity.as_str(),
        "message": event.message,
        "category_uid": category,
        "category_name": category_name,
        "class_uid": class,
        "class_name": class_name,
        "activity_id": activity,
        "activity_name": activity_name,
        "type_uid": class * 100 + activity,
        "status_id": 1,
        "status": "Success",
        "metadata": {
            "version": OCSF_VERSION,
            "product": {
                "name": "Switchyard",
                "vendor_name": "Switchyard",
                "version": env!("CARGO_PKG_VERSION"),
            },
            "event_code": event.kind.as_str(),
        },
        "unmapped": unmapped,
    });
    let Some(obj) = o.as_object_mut() else {
        return o;
    };
    match event.kind.class() {
        Class::Network => {
            if let Some(f) = &event.flow {
                obj.insert(
                    "src_endpoint".into(),
                    json!({"ip": f.src, "port": f.src_port}),
                );
                obj.insert(
                    "dst_endpoint".into(),
                    json!({"ip": f.dst.to_string(), "port": f.dst_port}),
                );
                obj.insert(
                    "connection_info".into(),
                    json!({
                        "protocol_num": f.protocol,
                        "protocol_name": protocol_name(f.protocol),
                        "direction_id": 1,
                        "direction": "Inbound",
                    }),
                );
            }
            obj.insert("action_id".into(), json!(2));
            obj.insert("action".into(), json!("Denied"));
            obj.insert("disposition_id".into(), json!(2));
            obj.insert("disposition".into(), json!("Blocked"));
        }
        Class::Finding => {
            let subject = event
                .service
                .as_deref()
                .or(event.client.as_deref())
                .map(str::to_owned)
                .or_else(|| event.worker.map(|w| format!("worker-{w}")))
                .unwrap_or_else(|| "all".into());
            obj.insert(
                "finding_info".into(),
                json!({
                    "uid": format!("{}:{subject}:{time}", event.kind.as_str()),
                    "title": event.message,
                    "types": [event.kind.as_str()],
                    "analytic": {"name": event.kind.as_str(), "type_id": 1, "type": "Rule"},
                }),
            );
            obj.insert("evidences".into(), json!([{ "data": event.evidence }]));
            if let Some(c) = &event.client {
                obj.insert("src_endpoint".into(), json!({"ip": c}));
            }
        }
        Class::Api => {
            let operation = event.reason.clone().unwrap_or_default();
            let (id, name) = if operation.starts_with("POST ") {
                (1, "Create")
            } else if operation.starts_with("GET ") {
                (2, "Read")
            } else {
                (99, "Other")
            };
            obj.insert("activity_id".into(), json!(id));
            obj.insert("activity_name".into(), json!(name));
            obj.insert("type_uid".into(), json!(600_300 + id));
            obj.insert("api".into(), json!({"operation": operation}));
            if let Some(c) = &event.client {
                obj.insert("src_endpoint".into(), json!({"ip": c}));
            }
            obj.insert("status_id".into(), json!(2));
            obj.insert("status".into(), json!("Failure"));
            obj.insert("status_detail".into(), json!(event.message));
        }
        Class::Control => {}
    }
    o
}

fn cef_header(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace(['\r', '\n'], " ")
}

fn cef_value(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('=', "\\=")
        .replace('\r', "\\r")
        .replace('\n', "\\n")
}

/// The CEF line (see the module documentation).
#[must_use]
pub fn cef(event: &Event) -> String {
    let severity = match event.severity {
        Severity::Info => 3,
        Severity::Notice => 5,
        Severity::Warning => 7,
        Severity::Error => 9,
    };
    let mut out = format!(
        "CEF:0|Switchyard|switchyard|{}|{}|{}|{severity}|rt={}",
        env!("CARGO_PKG_VERSION"),
        event.kind.as_str(),
        cef_header(&event.message),
        millis(event.time)
    );
    let mut ext = |key: &str, value: &str| {
        let _ = write!(out, " {key}={}", cef_value(value));
    };
    if let Some(f) = &event.flow {
        ext("src", &f.src);
        ext("spt", &f.src_port.to_string());
        ext("dst", &f.dst.to_string());
        ext("dpt", &f.dst_port.to_string());
        ext("proto", protocol_name(f.protocol));
        ext("act", "blocked");
    } else if let Some(c) = &event.client {
        ext("src", c);
    }
    for (n, label, value) in [
        (1, "service", event.service.clone()),
        (2, "pool", event.pool.clone()),
        (3, "backend", event.backend.map(|b| b.to_string())),
        (4, "reason", event.reason.clone()),
    ] {
        if let Some(v) = value {
            ext(&format!("cs{n}Label"), label);
            ext(&format!("cs{n}"), &v);
        }
    }
    if let Some(w) = event.worker {
        ext("cn1Label", "worker");
        ext("cn1", &w.to_string());
    }
    if let Some(p) = event.port {
        ext("cn2Label", "port");
        ext("cn2", &p.to_string());
    }
    if let Some(d) = event.dataplane {
        ext("dvcpid", &d.pid.to_string());
        ext("cn3Label", "dataplane_epoch");
        ext("cn3", &d.epoch.to_string());
    }
    if !event.evidence.is_empty() {
        let figures = event
            .evidence
            .iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect::<Vec<_>>()
            .join(",");
        ext("cs5Label", "evidence");
        ext("cs5", &figures);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Flow, Kind};

    fn drop_sample() -> Event {
        Event::new(Kind::AclDrop, "ACL deny 198.18.0.0/15")
            .service("llama-70b")
            .flow(Flow {
                src: "198.18.0.7".parse().unwrap(),
                src_port: 40000,
                dst: "203.0.113.10".parse().unwrap(),
                dst_port: 443,
                protocol: 6,
            })
    }

    #[test]
    fn network_activity_has_endpoints_and_type_uid() {
        let o = ocsf(&drop_sample());
        assert_eq!(o["class_uid"], 4001);
        assert_eq!(o["type_uid"], 400_105);
        assert_eq!(o["src_endpoint"]["ip"], "198.18.0.7");
        assert_eq!(o["dst_endpoint"]["port"], 443);
        assert_eq!(o["connection_info"]["protocol_name"], "tcp");
        assert_eq!(o["disposition_id"], 2);
        assert_eq!(o["metadata"]["event_code"], "acl_drop");
        assert_eq!(o["unmapped"]["service"], "llama-70b");
    }

    #[test]
    fn detection_finding_carries_its_evidence() {
        let e = Event::new(Kind::NewFlowSpike, "spike")
            .service("llama-70b")
            .evidence("rate_per_second", 900.0)
            .evidence("baseline_per_second", 100.0);
        let o = ocsf(&e);
        assert_eq!(o["class_uid"], 2004);
        assert_eq!(o["type_uid"], 200_401);
        assert_eq!(o["severity_id"], 3);
        assert_eq!(o["evidences"][0]["data"]["rate_per_second"], 900.0);
        assert_eq!(o["finding_info"]["types"][0], "new_flow_spike");
    }

    #[test]
    fn api_refusal_is_api_activity_failure() {
        let e = Event::new(Kind::ApiRefused, "no token")
            .client("127.0.0.1".parse().unwrap())
            .reason("POST /v1/apply");
        let o = ocsf(&e);
        assert_eq!(o["class_uid"], 6003);
        assert_eq!(o["type_uid"], 600_301);
        assert_eq!(o["status_id"], 2);
        assert_eq!(o["api"]["operation"], "POST /v1/apply");
    }

    #[test]
    fn link_changes_are_base_events_with_port_and_dataplane() {
        let down = Event::new(Kind::LinkDown, "port 1: link down")
            .port(1)
            .dataplane(4242, 3)
            .evidence("link_changes", 5.0);
        let o = ocsf(&down);
        assert_eq!(o["class_uid"], 0);
        assert_eq!(o["category_uid"], 0);
        assert_eq!(o["activity_id"], 99);
        assert_eq!(o["type_uid"], 99);
        assert_eq!(o["severity_id"], 3);
        assert_eq!(o["severity"], "warning");
        assert_eq!(o["metadata"]["event_code"], "link_down");
        assert_eq!(o["unmapped"]["kind"], "link_down");
        assert_eq!(o["unmapped"]["port"], 1);
        assert_eq!(o["unmapped"]["dataplane"]["pid"], 4242);
        assert_eq!(o["unmapped"]["dataplane"]["epoch"], 3);
        assert_eq!(o["unmapped"]["evidence"]["link_changes"], 5.0);
        let line = cef(&down);
        assert!(
            line.contains("|link_down|port 1: link down|7|rt="),
            "warning is CEF 7 (high): {line}"
        );
        assert!(
            line.ends_with(
                " cn2Label=port cn2=1 dvcpid=4242 cn3Label=dataplane_epoch cn3=3 \
                 cs5Label=evidence cs5=link_changes:5"
            ),
            "{line}"
        );

        let up = Event::new(Kind::LinkUp, "port 1: link up at 10 Gbps")
            .port(1)
            .dataplane(4242, 3)
            .evidence("speed_mbps", 10_000.0);
        let o = ocsf(&up);
        assert_eq!(o["class_uid"], 0);
        assert_eq!(o["severity_id"], 1);
        assert_eq!(o["metadata"]["event_code"], "link_up");
        assert_eq!(o["unmapped"]["evidence"]["speed_mbps"], 10_000.0);
        let line = cef(&up);
        assert!(
            line.contains("|link_up|port 1: link up at 10 Gbps|3|"),
            "{line}"
        );
        assert!(line.contains(" cn2=1 dvcpid=4242 "), "{line}");
        let v: Value = serde_json::from_str(&render(&up, Format::Json)).unwrap();
        assert_eq!(v["kind"], "link_up");
        assert_eq!(v["severity"], "info");
        assert_eq!(v["port"], 1);
        assert_eq!(v["dataplane"], json!({"pid": 4242, "epoch": 3}));
        assert_eq!(v["evidence"]["speed_mbps"], 10_000.0);
    }

    #[test]
    fn cef_escapes_header_and_extension() {
        let e = Event::new(Kind::PolicyRefused, "bad | policy\nline").reason("a=b\\c");
        let line = cef(&e);
        assert!(line.starts_with("CEF:0|Switchyard|switchyard|"), "{line}");
        assert!(
            line.contains("|policy_refused|bad \\| policy line|7|rt="),
            "{line}"
        );
        assert!(line.contains("cs4=a\\=b\\\\c"), "{line}");
        assert!(!line.contains('\n'));
        let line = cef(&drop_sample());
        assert!(
            line.contains(
                " src=198.18.0.7 spt=40000 dst=203.0.113.10 dpt=443 proto=tcp act=blocked"
            ),
            "{line}"
        );
    }

    #[test]
    fn json_has_kind_time_and_fields() {
        let v: Value = serde_json::from_str(&render(&drop_sample(), Format::Json)).unwrap();
        assert_eq!(v["kind"], "acl_drop");
        assert_eq!(v["severity"], "notice");
        assert_eq!(v["flow"]["src_port"], 40000);
        assert!(v["time"].as_str().unwrap().ends_with('Z'));
        assert!(v.get("pool").is_none());
    }
}
