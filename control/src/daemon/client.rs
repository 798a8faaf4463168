//! The `apply` and `show` subcommands' side of the local API: a small blocking HTTP client.

use std::fmt;
use std::io;
use std::time::Duration;

use serde::de::DeserializeOwned;
use ureq::Agent;

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
        let response = self.agent.get(format!("{}/v1/state", self.base)).call();
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
            .agent
            .post(format!("{}/v1/apply", self.base))
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
            .agent
            .post(format!("{}/v1/backends/{action}", self.base))
            .query("backend", backend)
            .query("dry_run", if dry_run { "true" } else { "false" })
            .query("wait_ms", wait_ms.to_string())
            .send_empty();
        self.json(response)
    }

    /// `GET /v1/rollouts`.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub fn rollouts(&self) -> Result<Vec<crate::rollout::RolloutStatus>, ClientError> {
        let response = self.agent.get(format!("{}/v1/rollouts", self.base)).call();
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
            .agent
            .post(format!("{}/v1/rollouts/{service}/{action}", self.base))
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
            .agent
            .get(format!("{}/v1/trace", self.base))
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
        let mut request = self.agent.get(format!("{}/v1/flows", self.base));
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

    /// `GET /metrics`, as text.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub fn metrics(&self) -> Result<String, ClientError> {
        let response = self.agent.get(format!("{}/metrics", self.base)).call();
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
        let error = serde_json::from_str::<ApiError>(body).unwrap_or_else(|_| ApiError {
            error: body.trim().chars().take(200).collect(),
            errors: Vec::new(),
        });
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
