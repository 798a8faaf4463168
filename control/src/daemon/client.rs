//! The `apply` and `show` subcommands' side of the local API: a small blocking HTTP client.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use ureq::typestate::{WithBody, WithoutBody};
use ureq::{Agent, RequestBuilder};

use super::auth::{self, Token};
use super::view::{ApiError, ApplyResponse, StateView};
use super::DEFAULT_LISTEN;

/// Why a call to the daemon failed.
#[derive(Debug)]
pub enum ClientError {
    /// Nothing listens at the address.
    NoDaemon { api: String },
    /// The daemon answered with an error status.
    Api { status: u16, error: ApiError },
    /// The connection broke, timed out, or the answer was not what the API sends.
    Transport { api: String, message: String },
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoDaemon { api } => write!(
                f,
                "no switchyard-control daemon at {api}: start `switchyard-control run --policy FILE`"
            ),
            Self::Api { status, error } => write!(f, "daemon answered {status}: {}", error.error),
            Self::Transport { api, message } => write!(f, "switchyard-control daemon at {api}: {message}"),
        }
    }
}

impl std::error::Error for ClientError {}

/// A client of one daemon's API.
#[derive(Debug)]
pub struct ApiClient {
    /// `host:port`, as the operator gave it (for messages).
    api: String,
    base: String,
    agent: Agent,
    /// Its token is sent as `Authorization: Bearer` on every request.
    token_file: Option<PathBuf>,
}

impl ApiClient {
    /// A client of the daemon at `api` (`127.0.0.1:9180`, or with an `http://` prefix).
    /// Requests give up after `timeout`.
    #[must_use]
    pub fn new(api: &str, timeout: Duration) -> Self {
        let trimmed = api.trim_end_matches('/');
        let hostport = trimmed.strip_prefix("http://").unwrap_or(trimmed);
        let agent = Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(2)))
            .timeout_global(Some(timeout))
            .build()
            .into();
        Self {
            api: hostport.to_owned(),
            base: format!("http://{hostport}"),
            agent,
            token_file: None,
        }
    }

    /// Sends the token in `path` with every request, read when the request is made (so a client
    /// made before the daemon started finds the token it created). A file that cannot be read
    /// is not an error here (reads on loopback need no token); a 401 then says why no token was
    /// sent.
    #[must_use]
    pub fn with_token_file(mut self, path: &Path) -> Self {
        self.token_file = Some(path.to_path_buf());
        self
    }

    fn token(&self) -> Option<Token> {
        auth::read_token(self.token_file.as_deref()?).ok()
    }

    /// What a 401 adds: where the token came from, or why none was sent.
    fn token_note(&self) -> String {
        let Some(path) = &self.token_file else {
            return "no token sent: no token file given".to_owned();
        };
        match auth::read_token(path) {
            Ok(_) => format!("sent the token in {}", path.display()),
            Err(why) => format!(
                "no token sent: {why}; run as the daemon's user, or pass --token-file, or the \
                 daemon's --instance and --shm-dir"
            ),
        }
    }

    fn get(&self, path: &str) -> RequestBuilder<WithoutBody> {
        let request = self.agent.get(format!("{}{path}", self.base));
        match self.token() {
            Some(t) => request.header("Authorization", format!("Bearer {}", t.as_str())),
            None => request,
        }
    }

    fn post(&self, path: &str) -> RequestBuilder<WithBody> {
        let request = self.agent.post(format!("{}{path}", self.base));
        match self.token() {
            Some(t) => request.header("Authorization", format!("Bearer {}", t.as_str())),
            None => request,
        }
    }

    /// The address as given, without scheme.
    #[must_use]
    pub fn api(&self) -> &str {
        &self.api
    }

    /// `GET /v1/state`.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub fn state(&self) -> Result<StateView, ClientError> {
        let response = self.get("/v1/state").call();
        self.json(response)
    }

    /// `POST /v1/apply`: `policy` is the YAML text, `source` the file name the daemon uses in
    /// error lines, `wait` how long the daemon waits for the generation to go live.
    ///
    /// # Errors
    /// See [`ClientError`]; a refused policy is [`ClientError::Api`] with status 422 and the
    /// error lines.
    pub fn apply(
        &self,
        policy: &str,
        source: &str,
        dry_run: bool,
        wait: Duration,
    ) -> Result<ApplyResponse, ClientError> {
        let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
        let response = self
            .post("/v1/apply")
            .query("dry_run", if dry_run { "true" } else { "false" })
            .query("source", source)
            .query("wait_ms", wait_ms.to_string())
            .content_type("application/yaml")
            .send(policy);
        self.json(response)
    }

    /// `POST /v1/backends/{action}`: `drain`, `undrain`, `disable` or `enable` the backend
    /// `backend` (`[POOL/]NAME-OR-ADDRESS`) in the daemon's policy file.
    ///
    /// # Errors
    /// See [`ClientError`]; no such backend is status 404, an ambiguous one or a file the daemon
    /// cannot edit safely 409, a policy file that does not load 422.
    pub fn backend_state(
        &self,
        action: &str,
        backend: &str,
        dry_run: bool,
        wait: Duration,
    ) -> Result<ApplyResponse, ClientError> {
        let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
        let response = self
            .post(&format!("/v1/backends/{action}"))
            .query("backend", backend)
            .query("dry_run", if dry_run { "true" } else { "false" })
            .query("wait_ms", wait_ms.to_string())
            .send_empty();
        self.json(response)
    }

    /// `GET /v1/stats`: traffic per service, pool, backend and port.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub fn stats(&self) -> Result<super::stats::StatsView, ClientError> {
        let response = self.get("/v1/stats").call();
        self.json(response)
    }

    /// `GET /v1/rollouts`.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub fn rollouts(&self) -> Result<Vec<crate::rollout::RolloutStatus>, ClientError> {
        let response = self.get("/v1/rollouts").call();
        self.json(response)
    }

    /// `POST /v1/rollouts/{service}/{action}` (`pause`, `resume`, `abort`); answers every
    /// rollout's status after the action.
    ///
    /// # Errors
    /// See [`ClientError`]; an unknown service is status 404, an action that does not apply
    /// now 409.
    pub fn rollout(
        &self,
        service: &str,
        action: &str,
    ) -> Result<Vec<crate::rollout::RolloutStatus>, ClientError> {
        let response = self
            .post(&format!("/v1/rollouts/{service}/{action}"))
            .send_empty();
        self.json(response)
    }

    /// `GET /v1/trace`: what the data plane's workers do with a flow.
    ///
    /// # Errors
    /// See [`ClientError`]; a bad address is status 400, no data plane 503.
    pub fn trace(
        &self,
        params: &super::query::TraceParams,
    ) -> Result<super::query::TraceView, ClientError> {
        let mut request = self
            .get("/v1/trace")
            .query("client", &params.client)
            .query("vip", &params.vip);
        if let Some(p) = &params.proto {
            request = request.query("proto", p);
        }
        self.json(request.call())
    }

    /// `GET /v1/flows`: a sample of the workers' connection tables.
    ///
    /// # Errors
    /// See [`ClientError`]; an unknown backend is status 404, no data plane 503.
    pub fn flows(
        &self,
        params: &super::query::FlowsParams,
    ) -> Result<super::query::FlowsView, ClientError> {
        let mut request = self.get("/v1/flows");
        for (k, v) in [
            ("vip", params.vip.clone()),
            ("backend", params.backend.clone()),
            ("proto", params.proto.clone()),
            ("limit", params.limit.map(|l| l.to_string())),
        ] {
            if let Some(v) = v {
                request = request.query(k, v);
            }
        }
        self.json(request.call())
    }

    /// `POST /v1/capture`: starts a live capture; the answer names its file.
    ///
    /// # Errors
    /// See [`ClientError`]; a bad filter is status 400, no data plane 503.
    pub fn capture(
        &self,
        p: &super::capture::CaptureParams,
    ) -> Result<super::capture::CaptureStarted, ClientError> {
        let mut request = self.post("/v1/capture");
        for (k, v) in [
            ("vip", p.vip.clone()),
            ("port", p.port.map(|v| v.to_string())),
            ("proto", p.proto.clone()),
            ("drop", p.drop.clone()),
            ("count", p.count.map(|v| v.to_string())),
            ("seconds", p.seconds.map(|v| v.to_string())),
            ("snaplen", p.snaplen.map(|v| v.to_string())),
            ("rate", p.rate.map(|v| v.to_string())),
        ] {
            if let Some(v) = v {
                request = request.query(k, v);
            }
        }
        self.json(request.send_empty())
    }

    /// `GET /metrics`, as text.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub fn metrics(&self) -> Result<String, ClientError> {
        let response = self.get("/metrics").call();
        let (status, body) = self.read(response)?;
        if status == 200 {
            Ok(body)
        } else {
            Err(self.api_error(status, &body))
        }
    }

    fn read(
        &self,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<(u16, String), ClientError> {
        let mut response = response.map_err(|e| self.transport(e))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .read_to_string()
            .map_err(|e| self.transport(e))?;
        Ok((status, body))
    }

    fn json<T: DeserializeOwned>(
        &self,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<T, ClientError> {
        let (status, body) = self.read(response)?;
        if status != 200 {
            return Err(self.api_error(status, &body));
        }
        serde_json::from_str(&body).map_err(|e| ClientError::Transport {
            api: self.api.clone(),
            message: format!("unexpected answer ({e}); is this a switchyard-control daemon?"),
        })
    }

    fn api_error(&self, status: u16, body: &str) -> ClientError {
        let mut error = serde_json::from_str::<ApiError>(body).unwrap_or_else(|_| ApiError {
            error: body.trim().chars().take(200).collect(),
            errors: Vec::new(),
        });
        if status == 401 {
            error.error = format!("{} ({})", error.error, self.token_note());
        }
        ClientError::Api { status, error }
    }

    fn transport(&self, e: ureq::Error) -> ClientError {
        let refused = match &e {
            ureq::Error::ConnectionFailed => true,
            ureq::Error::Io(io) => matches!(
                io.kind(),
                io::ErrorKind::ConnectionRefused | io::ErrorKind::AddrNotAvailable
            ),
            _ => false,
        };
        if refused {
            ClientError::NoDaemon {
                api: self.api.clone(),
            }
        } else {
            ClientError::Transport {
                api: self.api.clone(),
                message: e.to_string(),
            }
        }
    }
}

impl Default for ApiClient {
    fn default() -> Self {
        Self::new(DEFAULT_LISTEN, Duration::from_secs(30))
    }
}
