//! One health probe or one metrics scrape against one backend, from the control plane's own
//! host stack. Every call is bounded by its timeout and reads at most [`MAX_BODY`] bytes, so a
//! hung, slow or lying backend costs one timeout and nothing more.

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::{CONNECTION, HOST, USER_AGENT};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::policy::Probe;

/// Largest response body read from a backend (a model list or a metrics page).
pub const MAX_BODY: usize = 4 << 20;

const AGENT: &str = concat!("switchyard-control/", env!("CARGO_PKG_VERSION"));

/// Why a probe or scrape failed; its `Display` is the reason logged with a transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No answer within the timeout (connect, or the whole request).
    Timeout,
    /// The backend refused the connection (nothing listens on the port).
    Refused,
    /// Any other connect error (unreachable, reset).
    Connect(String),
    /// The HTTP exchange failed (malformed response, connection closed early, body too big).
    Http(String),
    /// An unexpected status.
    Status { got: u16, expected: u16 },
    /// `/v1/models` answered but does not list the pool's model.
    ModelMissing { model: String, listed: Vec<String> },
    /// The body is not what the probe or scrape reads (not a model list, not Prometheus text).
    Body(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout => f.write_str("timeout"),
            Self::Refused => f.write_str("connection refused"),
            Self::Connect(e) => write!(f, "connect failed: {e}"),
            Self::Http(e) => write!(f, "http error: {e}"),
            Self::Status { got, expected } => write!(f, "status {got} (expected {expected})"),
            Self::ModelMissing { model, listed } => {
                if listed.is_empty() {
                    write!(f, "model {model} missing (the server lists no model)")
                } else {
                    write!(
                        f,
                        "model {model} missing (the server lists {})",
                        listed.join(", ")
                    )
                }
            }
            Self::Body(e) => write!(f, "bad body: {e}"),
        }
    }
}

/// Aborts a spawned task when dropped, so a timed-out request leaves no connection behind.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn within<T>(
    timeout: Duration,
    work: impl Future<Output = Result<T, Failure>>,
) -> Result<T, Failure> {
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or(Err(Failure::Timeout))
}

async fn connect(addr: SocketAddr) -> Result<TcpStream, Failure> {
    TcpStream::connect(addr).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::ConnectionRefused => Failure::Refused,
        std::io::ErrorKind::TimedOut => Failure::Timeout,
        _ => Failure::Connect(e.to_string()),
    })
}

/// `GET path` on a fresh connection (no pooling: a backend that stops accepting connections
/// must fail its check), `Connection: close`, body capped at [`MAX_BODY`].
async fn get(addr: SocketAddr, path: &str) -> Result<(u16, Bytes), Failure> {
    let stream = connect(addr).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| Failure::Http(e.to_string()))?;
    let _driver = AbortOnDrop(tokio::spawn(async move {
        let _ = connection.await;
    }));
    let request = hyper::Request::get(path)
        .header(HOST, addr.to_string())
        .header(CONNECTION, "close")
        .header(USER_AGENT, AGENT)
        .body(Empty::<Bytes>::new())
        .map_err(|e| Failure::Http(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| Failure::Http(e.to_string()))?;
    let status = response.status().as_u16();
    let body = Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| Failure::Http(format!("reading the body: {e}")))?
        .to_bytes();
    Ok((status, body))
}

/// Runs one health probe against `address`.
///
/// # Errors
/// Why the backend failed the probe.
pub async fn probe(address: IpAddr, probe: &Probe, timeout: Duration) -> Result<(), Failure> {
    within(timeout, async {
        match probe {
            Probe::Tcp { port } => connect(SocketAddr::new(address, *port)).await.map(drop),
            Probe::Http {
                port,
                path,
                expect_status,
                expect_model,
            } => {
                let (status, body) = get(SocketAddr::new(address, *port), path).await?;
                if status != *expect_status {
                    return Err(Failure::Status {
                        got: status,
                        expected: *expect_status,
                    });
                }
                match expect_model {
                    None => Ok(()),
                    Some(model) => check_model(&body, model),
                }
            }
        }
    })
    .await
}

/// Whether an OpenAI-style model list (`{"data": [{"id": ...}, ...]}`) names `model`.
fn check_model(body: &[u8], model: &str) -> Result<(), Failure> {
    let list: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| Failure::Body(format!("not a JSON model list: {e}")))?;
    let entries = list
        .get("data")
        .and_then(serde_json::Value::as_array)
        .ok_or_else(|| Failure::Body("no `data` array in the model list".to_owned()))?;
    let listed: Vec<String> = entries
        .iter()
        .filter_map(|m| m.get("id").and_then(serde_json::Value::as_str))
        .map(str::to_owned)
        .collect();
    if listed.iter().any(|id| id == model) {
        Ok(())
    } else {
        Err(Failure::ModelMissing {
            model: model.to_owned(),
            listed: listed.into_iter().take(8).collect(),
        })
    }
}

/// Scrapes `http://address:port/path` and reads `signals` from it: for each signal, the sum of
/// its samples over every label set (`None` when the page has no sample of it).
///
/// # Errors
/// The page could not be fetched or is not Prometheus text.
pub async fn scrape(
    address: IpAddr,
    port: u16,
    path: &str,
    signals: &[String],
    timeout: Duration,
) -> Result<Vec<Option<f64>>, Failure> {
    let (status, body) = within(timeout, get(SocketAddr::new(address, port), path)).await?;
    if status != 200 {
        return Err(Failure::Status {
            got: status,
            expected: 200,
        });
    }
    let text = std::str::from_utf8(&body).map_err(|_| Failure::Body("not UTF-8".to_owned()))?;
    read_signals(text, signals)
}

/// Reads `signals` from a Prometheus text exposition (parsed with `nom-openmetrics`).
///
/// # Errors
/// The text does not parse.
pub fn read_signals(text: &str, signals: &[String]) -> Result<Vec<Option<f64>>, Failure> {
    // The parser wants the final newline the format requires; servers do not always send it.
    let owned;
    let text = if text.is_empty() || text.ends_with('\n') {
        text
    } else {
        owned = format!("{text}\n");
        &owned
    };
    let (_, families) = nom_openmetrics::parser::prometheus(text).map_err(|e| {
        let shown = e.to_string();
        let shown: String = shown.chars().take(200).collect();
        Failure::Body(format!("not Prometheus text: {shown}"))
    })?;
    let mut out = vec![None; signals.len()];
    for family in &families {
        for sample in &family.samples {
            let value = sample.number();
            if let Some(i) = signals.iter().position(|s| s == sample.name()) {
                if value.is_finite() {
                    *out[i].get_or_insert(0.0) += value;
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VLLM: &str = "\
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name=\"llama\"} 7.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{model_name=\"llama\"} 0.25
# TYPE vllm:request_success_total counter
vllm:request_success_total{finished_reason=\"stop\",model_name=\"llama\"} 10.0
vllm:request_success_total{finished_reason=\"length\",model_name=\"llama\"} 5.0
";

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn reads_vllm_metrics_with_colons_and_sums_label_sets() {
        let got = read_signals(
            VLLM,
            &names(&[
                "vllm:num_requests_waiting",
                "vllm:kv_cache_usage_perc",
                "vllm:request_success_total",
                "tgi_queue_size",
            ]),
        )
        .unwrap();
        assert_eq!(got, vec![Some(7.0), Some(0.25), Some(15.0), None]);
    }

    #[test]
    fn garbage_is_a_body_error() {
        let err = read_signals("this is { not metrics\n", &names(&["x"])).unwrap_err();
        assert!(matches!(err, Failure::Body(_)), "{err}");
    }

    #[test]
    fn model_list_must_name_the_model() {
        let body = br#"{"object":"list","data":[{"id":"llama-70b"},{"id":"mistral"}]}"#;
        assert_eq!(check_model(body, "llama-70b"), Ok(()));
        let err = check_model(body, "qwen").unwrap_err();
        assert_eq!(
            err.to_string(),
            "model qwen missing (the server lists llama-70b, mistral)"
        );
        assert!(matches!(
            check_model(b"<html>", "qwen"),
            Err(Failure::Body(_))
        ));
    }
}
