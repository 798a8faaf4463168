//! The test model server, tests/tools/model_server.py: the OpenAI-compatible backend of the
//! end-to-end tests and the demo. These tests pin the behaviour the other tests rely on: the
//! model list, streamed tokens in order, the backend's name in every answer, metric overrides,
//! the failure modes a health checker must notice (wrong model, hang, errors), and a prompt exit
//! on SIGTERM with streams open. Plain HTTP/1.1 over `TcpStream`; no root needed.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tools/model_server.py");
const MODEL: &str = "llama-test";

/// A running model server on 127.0.0.1 (port 0: it binds a free port itself and reports it, so
/// no other process can take the port between choosing and binding it).
struct ModelServer {
    process: Background,
    addr: SocketAddr,
    name: String,
}

impl ModelServer {
    fn start(extra: &[&str]) -> Self {
        let name = unique("gpu-");
        let mut process = Background::spawn(
            Command::new("python3").args(
                [
                    SCRIPT,
                    "--listen",
                    "127.0.0.1:0",
                    "--model",
                    MODEL,
                    "--name",
                    &name,
                ]
                .iter()
                .chain(extra),
            ),
        );
        let line = process.wait_for_line(Duration::from_secs(10), |l| l.starts_with("listening "));
        let addr = line["listening ".len()..].parse().unwrap();
        process.wait_for_line(Duration::from_secs(10), |l| l == "ready");
        Self {
            process,
            addr,
            name,
        }
    }

    fn get(&self, path: &str) -> Response {
        http(self.addr, "GET", path, None, Duration::from_secs(10)).unwrap()
    }

    fn post(&self, path: &str, body: &str) -> Response {
        http(self.addr, "POST", path, Some(body), Duration::from_secs(10)).unwrap()
    }

    fn set_mode(&self, mode: &str) {
        let r = self.post("/admin/mode", &format!(r#"{{"mode": "{mode}"}}"#));
        assert_eq!(r.status, 200, "{}", r.body);
    }
}

#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn request_bytes(method: &str, path: &str, body: Option<&str>) -> Vec<u8> {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    if let Some(b) = body {
        req += &format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        );
    }
    req += "\r\n";
    req += body.unwrap_or("");
    req.into_bytes()
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`), read to the end.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
) -> std::io::Result<Response> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.write_all(&request_bytes(method, path, body))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    Ok(parse_response(&raw))
}

fn parse_response(raw: &[u8]) -> Response {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let payload = &raw[split + 4..];
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    let body = if chunked {
        dechunk(payload)
    } else {
        payload.to_vec()
    };
    Response {
        status,
        headers,
        body: String::from_utf8(body).unwrap(),
    }
}

/// Decodes a chunked body; panics unless it ends with the zero-length chunk.
fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size_text = std::str::from_utf8(&data[..eol]).unwrap();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size {size_text:?}"));
        data = &data[eol + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        assert_eq!(&data[size..size + 2], b"\r\n", "chunk not followed by CRLF");
        data = &data[size + 2..];
    }
}

/// The text of `"key": "value"` in a flat JSON text (the server writes no escapes in these).
fn json_str<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("\"{key}\": \"");
    let start = json.find(&pat)? + pat.len();
    let len = json[start..].find('"')?;
    Some(&json[start..start + len])
}

fn json_u64(json: &str, key: &str) -> Option<u64> {
    let pat = format!("\"{key}\": ");
    let start = json.find(&pat)? + pat.len();
    let digits: String = json[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// The value of a metric sample `name{model_name="MODEL"} VALUE` in Prometheus text.
fn metric(text: &str, name: &str) -> Option<f64> {
    let prefix = format!("{name}{{model_name=\"{MODEL}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map(|v| v.parse().unwrap())
}

#[test]
fn model_server_lists_its_model_and_names_the_backend() {
    let server = ModelServer::start(&[]);
    let r = server.get("/v1/models");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r
        .body
        .starts_with(r#"{"object": "list", "data": [{"id": ""#));
    assert_eq!(json_str(&r.body, "id"), Some(MODEL), "{}", r.body);
    assert_eq!(json_str(&r.body, "owned_by"), Some("switchyard-test"));
    assert_eq!(r.header("X-Backend"), Some(server.name.as_str()));

    let r = server.get("/whoami");
    assert_eq!(r.status, 200);
    assert_eq!(r.body.trim(), server.name);
    assert_eq!(r.header("X-Backend"), Some(server.name.as_str()));

    let r = server.post(
        "/v1/chat/completions",
        r#"{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}"#,
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("X-Backend"), Some(server.name.as_str()));
    assert_eq!(json_str(&r.body, "object"), Some("chat.completion"));
    assert_eq!(
        json_str(&r.body, "system_fingerprint"),
        Some(server.name.as_str())
    );
    assert_eq!(json_str(&r.body, "content"), Some("tok0 tok1 tok2 tok3"));
}

#[test]
fn model_server_streams_every_token_in_order_then_done() {
    const TOKENS: u64 = 30;
    let server = ModelServer::start(&["--token-delay-ms", "10"]);
    let started = Instant::now();
    let r = server.post(
        "/v1/chat/completions",
        &format!(r#"{{"messages": [{{"role": "user", "content": "count"}}], "stream": true, "max_tokens": {TOKENS}}}"#),
    );
    let took = started.elapsed();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("Content-Type"), Some("text/event-stream"));
    assert_eq!(r.header("Transfer-Encoding"), Some("chunked"));
    assert_eq!(r.header("X-Backend"), Some(server.name.as_str()));
    assert!(
        took >= Duration::from_millis(10 * TOKENS),
        "{TOKENS} tokens 10 ms apart came in {took:?}"
    );

    let events: Vec<&str> = r
        .body
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            e.strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not an SSE data event: {e:?}"))
        })
        .collect();
    assert_eq!(events.last(), Some(&"[DONE]"), "{}", r.body);
    let chunks = &events[..events.len() - 1];
    let mut text = String::new();
    let mut indexes = Vec::new();
    for c in chunks {
        assert_eq!(json_str(c, "object"), Some("chat.completion.chunk"), "{c}");
        assert_eq!(
            json_str(c, "system_fingerprint"),
            Some(server.name.as_str())
        );
        if let Some(i) = json_u64(c, "token_index") {
            indexes.push(i);
            text += json_str(c, "content").unwrap();
        }
    }
    assert_eq!(indexes, (0..TOKENS).collect::<Vec<_>>());
    let words: Vec<String> = text.split(' ').map(str::to_owned).collect();
    let expected: Vec<String> = (0..TOKENS).map(|i| format!("tok{i}")).collect();
    assert_eq!(words, expected);
    assert_eq!(
        json_str(chunks.last().unwrap(), "finish_reason"),
        Some("length")
    );
}

#[test]
fn model_server_metric_overrides_show_in_metrics() {
    let server = ModelServer::start(&[]);
    let r = server.get("/metrics");
    assert_eq!(r.status, 200);
    assert!(r.header("Content-Type").unwrap().starts_with("text/plain"));
    for (name, kind) in [
        ("vllm:num_requests_waiting", "gauge"),
        ("vllm:num_requests_running", "gauge"),
        ("vllm:kv_cache_usage_perc", "gauge"),
        ("vllm:request_success_total", "counter"),
        ("switchyard_test_request_errors_total", "counter"),
    ] {
        assert!(r.body.contains(&format!("# HELP {name} ")), "{}", r.body);
        assert!(
            r.body.contains(&format!("# TYPE {name} {kind}\n")),
            "{}",
            r.body
        );
        assert!(metric(&r.body, name).is_some(), "no {name} in {}", r.body);
    }
    assert_eq!(metric(&r.body, "vllm:num_requests_waiting"), Some(0.0));

    let r = server.post(
        "/admin/metrics",
        r#"{"vllm:num_requests_waiting": 10, "vllm:kv_cache_usage_perc": 0.5, "switchyard_test_extra": 7}"#,
    );
    assert_eq!(r.status, 200, "{r:?}");
    let text = server.get("/metrics").body;
    assert_eq!(metric(&text, "vllm:num_requests_waiting"), Some(10.0));
    assert_eq!(metric(&text, "vllm:kv_cache_usage_perc"), Some(0.5));
    assert_eq!(metric(&text, "switchyard_test_extra"), Some(7.0));

    // null removes an override: the metric goes back to its own value, a new one disappears.
    server.post(
        "/admin/metrics",
        r#"{"vllm:num_requests_waiting": null, "switchyard_test_extra": null}"#,
    );
    let text = server.get("/metrics").body;
    assert_eq!(metric(&text, "vllm:num_requests_waiting"), Some(0.0));
    assert_eq!(metric(&text, "vllm:kv_cache_usage_perc"), Some(0.5));
    assert_eq!(metric(&text, "switchyard_test_extra"), None);

    let r = server.post("/admin/metrics", r#"{"vllm:num_requests_waiting": "ten"}"#);
    assert_eq!(r.status, 400);
}

#[test]
fn model_server_wrong_model_mode_lists_another_model() {
    let server = ModelServer::start(&[]);
    server.set_mode("wrong_model");
    let r = server.get("/v1/models");
    assert_eq!(r.status, 200);
    assert_eq!(
        json_str(&r.body, "id"),
        Some(format!("not-{MODEL}").as_str())
    );
    server.set_mode("ok");
    assert_eq!(json_str(&server.get("/v1/models").body, "id"), Some(MODEL));
}

#[test]
fn model_server_hang_mode_accepts_connections_but_never_answers() {
    let server = ModelServer::start(&[]);
    server.set_mode("hang");

    // The TCP handshake completes and the request goes out; no answer comes.
    let mut s = TcpStream::connect_timeout(&server.addr, Duration::from_secs(1))
        .expect("connect to a hung server");
    s.write_all(&request_bytes("GET", "/v1/models", None))
        .unwrap();
    s.set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let mut buf = [0u8; 256];
    let err = s.read(&mut buf).expect_err("a hung server must not answer");
    assert!(
        matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{err:?}"
    );
    let err = http(
        server.addr,
        "GET",
        "/metrics",
        None,
        Duration::from_millis(500),
    )
    .expect_err("metrics answered while hung");
    assert!(
        matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{err:?}"
    );

    // /admin/ still answers, so the test can restore it; the held request then completes.
    let state = server.get("/admin/state");
    assert_eq!(
        json_str(&state.body, "mode"),
        Some("hang"),
        "{}",
        state.body
    );
    server.set_mode("ok");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let r = parse_response(&raw);
    assert_eq!(r.status, 200);
    assert_eq!(json_str(&r.body, "id"), Some(MODEL));
}

#[test]
fn model_server_error_mode_answers_503() {
    let server = ModelServer::start(&[]);
    server.set_mode("error");
    assert_eq!(server.get("/v1/models").status, 503);
    let r = server.post("/v1/chat/completions", r#"{"messages": []}"#);
    assert_eq!(r.status, 503);
    assert_eq!(r.header("X-Backend"), Some(server.name.as_str()));
    let text = server.get("/metrics").body;
    assert_eq!(
        metric(&text, "switchyard_test_request_errors_total"),
        Some(2.0)
    );

    server.set_mode("no_metrics");
    assert_eq!(server.get("/metrics").status, 503);
    assert_eq!(server.get("/v1/models").status, 200);
}

#[test]
fn model_server_exits_on_sigterm_within_a_second_with_open_streams() {
    let mut server = ModelServer::start(&["--token-delay-ms", "20"]);
    let body = r#"{"messages": [], "stream": true, "max_tokens": 100000}"#;
    let mut streams: Vec<TcpStream> = (0..5)
        .map(|_| {
            let mut s = TcpStream::connect(server.addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(&request_bytes("POST", "/v1/chat/completions", Some(body)))
                .unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            while !String::from_utf8_lossy(&seen).contains("tok1") {
                let n = s.read(&mut buf).unwrap();
                assert!(n > 0, "stream ended early");
                seen.extend_from_slice(&buf[..n]);
            }
            s
        })
        .collect();
    let state = server.get("/admin/state").body;
    assert_eq!(json_u64(&state, "streams_open"), Some(5), "{state}");
    let text = server.get("/metrics").body;
    assert_eq!(metric(&text, "vllm:num_requests_running"), Some(5.0));

    let started = Instant::now();
    let (status, _) = server.process.stop(libc::SIGTERM, Duration::from_secs(1));
    let took = started.elapsed();
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(took < Duration::from_secs(1), "exit took {took:?}");

    // The streams end (no [DONE]: the server went away), and the port is closed.
    for s in &mut streams {
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        assert!(!String::from_utf8_lossy(&rest).contains("[DONE]"));
    }
    assert!(TcpStream::connect(server.addr).is_err());
}

#[test]
fn model_server_refuses_a_port_in_use_with_exit_2() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = run_with_timeout(
        Command::new("python3").args([
            SCRIPT,
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--model",
            MODEL,
        ]),
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot listen on"), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("ready"));
}
