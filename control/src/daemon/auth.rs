//! Who may talk to the API (`docs/CONTROL.md`, "Security of the API").
//!
//! Three checks run on every request before a handler sees it ([`Guard::check`]):
//!
//! - **Host** (loopback listeners only): the `Host` header, when present, must name a loopback
//!   address or `localhost`. A browser page that rebinds its own DNS name to 127.0.0.1 still
//!   sends its own name, so DNS rebinding is refused with 403.
//! - **Origin**: when present, it must be the daemon's own (`http://127.0.0.1:PORT`,
//!   `http://localhost:PORT`, `http://[::1]:PORT`, or the listener's address). Browsers send it
//!   on cross-site requests; other clients don't. Refused with 403.
//! - **Token**: every request that changes state (any method but GET and HEAD) carries
//!   `Authorization: Bearer TOKEN` with the token of the daemon's token file, compared in
//!   constant time; on a listener beyond loopback, reads need it too. Refused with 401.
//!
//! The token file is `<shm-dir>/switchyard-<instance>.token` unless `--token-file` says
//! otherwise. The daemon creates it (mode 0640, 32 random bytes from `/dev/urandom` as hex) when
//! it is missing, and refuses to start on a file another user owns, that its group may write or
//! that others may read or write: anyone who can read the file can change the policy. The
//! group's members (the package's `switchyard` group: the operators' CLI) may read it. The CLI
//! reads the same file.
//! `remove-instance` removes it with the instance's other files.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use axum::http::{header, HeaderMap, Method};

use crate::events::{Event, Events, Kind};

/// Bytes of randomness in a token the daemon creates.
const TOKEN_BYTES: usize = 32;
/// Shortest token the daemon accepts from a file an operator wrote.
const MIN_TOKEN_LEN: usize = 16;
/// Longest token file read (a token is a line, not a document).
const MAX_TOKEN_FILE: u64 = 4096;
/// The token file's mode: the daemon's user writes it, the instance's group (operators running
/// the CLI) reads it.
pub const TOKEN_MODE: u32 = 0o640;

/// The token file of `instance` in `shm_dir`: `<shm_dir>/switchyard-<instance>.token`.
#[must_use]
pub fn default_token_path(shm_dir: &Path, instance: &str) -> PathBuf {
    shm_dir.join(format!("switchyard-{instance}.token"))
}

/// The shared secret of the daemon and its CLI.
#[derive(Clone)]
pub struct Token(String);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    /// Whether `presented` is this token, in time that depends on `presented`'s length only.
    #[must_use]
    pub fn matches(&self, presented: &[u8]) -> bool {
        let ours = self.0.as_bytes();
        let mut diff = u8::from(ours.len() != presented.len());
        for (i, b) in presented.iter().enumerate() {
            diff |= b ^ ours.get(i).copied().unwrap_or(0);
        }
        diff == 0
    }

    /// The token's text, for the `Authorization` header.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why the daemon cannot use its token file.
#[derive(Debug)]
pub struct TokenError {
    pub path: PathBuf,
    pub message: String,
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "token file {}: {}", self.path.display(), self.message)
    }
}

impl std::error::Error for TokenError {}

/// The daemon's side: reads the token file, or creates it (mode [`TOKEN_MODE`], whatever the
/// umask) when it is missing. Symbolic links are not followed; a file that another user owns,
/// that its group may write, that others may read or write, or that holds no usable token is
/// refused.
///
/// # Errors
/// See above; each says what to do.
pub fn load_or_create(path: &Path) -> Result<(Token, bool), TokenError> {
    let fail = |message: String| TokenError {
        path: path.to_path_buf(),
        message,
    };
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(TOKEN_MODE)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(mut file) => {
            if let Err(e) = file.set_permissions(std::fs::Permissions::from_mode(TOKEN_MODE)) {
                let _ = std::fs::remove_file(path);
                return Err(fail(format!("cannot set its mode: {e}")));
            }
            let token =
                random_token().map_err(|e| fail(format!("cannot read /dev/urandom: {e}")))?;
            let written = file
                .write_all(format!("{token}\n").as_bytes())
                .and_then(|()| file.sync_all());
            if let Err(e) = written {
                let _ = std::fs::remove_file(path);
                return Err(fail(format!("cannot write: {e}")));
            }
            return Ok((Token(token), true));
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(fail(format!("cannot create: {e}"))),
    }
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| fail(format!("cannot open (a symbolic link is refused): {e}")))?;
    let meta = file
        .metadata()
        .map_err(|e| fail(format!("cannot stat: {e}")))?;
    if !meta.file_type().is_file() {
        return Err(fail("not a regular file".into()));
    }
    if let Some(me) = effective_uid() {
        if meta.uid() != me {
            return Err(fail(format!(
                "owned by uid {}, not by this daemon's uid {me}; whoever owns it can change the \
                 policy. Remove it (the daemon creates a new one) or pass --token-file",
                meta.uid()
            )));
        }
    }
    if meta.mode() & 0o027 != 0 {
        return Err(fail(format!(
            "mode {:04o} lets its group write it or other users read or write it; `chmod 640 {}`",
            meta.mode() & 0o7777,
            path.display()
        )));
    }
    let text = read_bounded(file).map_err(|e| fail(format!("cannot read: {e}")))?;
    let token = parse(&text).map_err(fail)?;
    Ok((token, false))
}

/// The CLI's side: the token in `path`, or why there is none (the caller decides whether that
/// matters: reads on loopback need no token).
///
/// # Errors
/// The file is missing, unreadable or holds no usable token.
pub fn read_token(path: &Path) -> Result<Token, String> {
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let text = read_bounded(file).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn read_bounded(file: File) -> io::Result<String> {
    let mut text = String::new();
    file.take(MAX_TOKEN_FILE).read_to_string(&mut text)?;
    Ok(text)
}

fn parse(text: &str) -> Result<Token, String> {
    let token = text.trim();
    if token.len() < MIN_TOKEN_LEN || token.lines().count() != 1 {
        return Err(format!(
            "holds no token: expected one line of at least {MIN_TOKEN_LEN} characters"
        ));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("the token has characters an HTTP header cannot carry".into());
    }
    Ok(Token(token.to_owned()))
}

fn random_token() -> io::Result<String> {
    let mut bytes = [0u8; TOKEN_BYTES];
    File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// This process's effective uid: the owner of `/proc/self` (no `unsafe` for `geteuid`).
fn effective_uid() -> Option<u32> {
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

/// A refused request: the status, the JSON error, and the reason for the log.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub error: String,
}

/// The checks every request passes before a handler runs.
#[derive(Debug, Clone)]
pub struct Guard {
    token: Token,
    /// Where the API listens (its port is part of the allowed origins).
    listen: SocketAddr,
    /// Reads need the token too: the listener is not on loopback.
    reads_need_token: bool,
    /// Where the token lives, for the error message.
    token_file: PathBuf,
    /// Where refusals are reported as `api_refused` events.
    events: Events,
}

impl Guard {
    #[must_use]
    pub fn new(token: Token, token_file: PathBuf, listen: SocketAddr) -> Self {
        Self {
            token,
            listen,
            reads_need_token: !listen.ip().is_loopback(),
            token_file,
            events: Events::disabled(),
        }
    }

    /// Reports refusals on `events` as well as in the log.
    #[must_use]
    pub fn with_events(mut self, events: Events) -> Self {
        self.events = events;
        self
    }

    /// Logs a refused request with its peer and emits an `api_refused` event.
    pub fn refused(&self, peer: SocketAddr, method: &Method, path: &str, status: u16, error: &str) {
        tracing::warn!("API: refused {method} {path} from {peer} ({status}): {error}");
        self.events.emit(
            Event::new(
                Kind::ApiRefused,
                format!("API: refused {method} {path} ({status}): {error}"),
            )
            .client(peer.ip())
            .reason(format!("{method} {path}"))
            .evidence("status", f64::from(status)),
        );
    }

    /// Checks Host, Origin and the token; `Err` says what to answer.
    ///
    /// # Errors
    /// A [`Refusal`] with status 403 (Host, Origin) or 401 (token).
    pub fn check(&self, method: &Method, headers: &HeaderMap) -> Result<(), Refusal> {
        let refuse = |status: u16, error: String| Err(Refusal { status, error });
        if self.listen.ip().is_loopback() {
            if let Some(host) = headers.get(header::HOST) {
                let host = host.to_str().unwrap_or("");
                if !is_loopback_host(host) {
                    return refuse(
                        403,
                        format!(
                            "Host `{host}` is not a loopback name of this API; use \
                             http://127.0.0.1:{} or http://localhost:{}",
                            self.listen.port(),
                            self.listen.port()
                        ),
                    );
                }
            }
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("");
            if !self.is_own_origin(origin) {
                return refuse(
                    403,
                    format!("Origin `{origin}` is not this API's; cross-site requests are refused"),
                );
            }
        }
        let is_read = *method == Method::GET || *method == Method::HEAD;
        if is_read && !self.reads_need_token {
            return Ok(());
        }
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
        match presented {
            None => refuse(
                401,
                format!(
                    "this request needs `Authorization: Bearer TOKEN` with the token in {} \
                     (the CLI sends it; see --token-file)",
                    self.token_file.display()
                ),
            ),
            Some(t) if !self.token.matches(t.trim_ascii()) => refuse(
                401,
                format!(
                    "wrong token; the daemon's token is in {}",
                    self.token_file.display()
                ),
            ),
            Some(_) => Ok(()),
        }
    }

    fn is_own_origin(&self, origin: &str) -> bool {
        let Some(rest) = origin.strip_prefix("http://") else {
            return false;
        };
        let Some((host, port)) = rest.rsplit_once(':') else {
            return false;
        };
        if port != self.listen.port().to_string() {
            return false;
        }
        is_loopback_name(host) || parse_host_ip(host) == Some(self.listen.ip())
    }
}

/// `localhost`, `127.0.0.1`, `[::1]` and other loopback addresses, with or without a port.
fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port or [v6]
        rest.split_once(']').map_or(host, |(inside, _)| inside)
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    is_loopback_name(name)
}

fn is_loopback_name(name: &str) -> bool {
    name.eq_ignore_ascii_case("localhost") || parse_host_ip(name).is_some_and(|ip| ip.is_loopback())
}

fn parse_host_ip(name: &str) -> Option<IpAddr> {
    let bare = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    bare.parse().ok()
}

/// Whether a `Content-Type` is YAML: `application/yaml`, `application/x-yaml` or `text/yaml`,
/// parameters (`; charset=utf-8`) allowed.
#[must_use]
pub fn is_yaml(content_type: &str) -> bool {
    let media = content_type.split(';').next().unwrap_or("").trim();
    ["application/yaml", "application/x-yaml", "text/yaml"]
        .iter()
        .any(|m| media.eq_ignore_ascii_case(m))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn guard(listen: &str) -> Guard {
        Guard::new(
            Token("0123456789abcdef0123".into()),
            PathBuf::from("/tmp/t.token"),
            listen.parse().unwrap(),
        )
    }

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn the_token_file_is_created_group_readable_and_refused_when_wider() {
        let dir = std::env::temp_dir().join(format!("sy-token-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.token");
        let (created, fresh) = load_or_create(&path).unwrap();
        assert!(fresh);
        // Whatever the umask: the owner writes, the group (operators' CLI) reads.
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, TOKEN_MODE);
        let (again, fresh) = load_or_create(&path).unwrap();
        assert!(!fresh);
        assert!(again.matches(created.0.as_bytes()));
        for wider in [0o660, 0o644, 0o606] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(wider)).unwrap();
            let err = load_or_create(&path).unwrap_err();
            assert!(err.message.contains("chmod 640"), "{wider:o}: {err}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tokens_compare_whole() {
        let t = Token("0123456789abcdef0123".into());
        assert!(t.matches(b"0123456789abcdef0123"));
        assert!(!t.matches(b"0123456789abcdef012"));
        assert!(!t.matches(b"0123456789abcdef01234"));
        assert!(!t.matches(b"1123456789abcdef0123"));
        assert!(!t.matches(b""));
    }

    #[test]
    fn loopback_hosts_pass_and_others_are_refused() {
        for host in [
            "127.0.0.1:9180",
            "localhost:9180",
            "LOCALHOST",
            "[::1]:9180",
            "127.1.2.3",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "attacker.example",
            "attacker.example:9180",
            "10.0.0.1:9180",
            "[::2]:1",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn reads_on_loopback_need_no_token_but_writes_do() {
        let g = guard("127.0.0.1:9180");
        let host = (header::HOST, "127.0.0.1:9180");
        assert_eq!(
            g.check(&Method::GET, &headers(std::slice::from_ref(&host))),
            Ok(())
        );
        assert_eq!(
            g.check(&Method::POST, &headers(std::slice::from_ref(&host)))
                .unwrap_err()
                .status,
            401
        );
        let bearer = (header::AUTHORIZATION, "Bearer 0123456789abcdef0123");
        assert_eq!(
            g.check(&Method::POST, &headers(&[host.clone(), bearer])),
            Ok(())
        );
        let origin = (header::ORIGIN, "http://localhost:9180");
        assert_eq!(
            g.check(&Method::GET, &headers(&[host.clone(), origin])),
            Ok(())
        );
        let evil = (header::ORIGIN, "http://evil.example");
        assert_eq!(
            g.check(&Method::GET, &headers(&[host, evil]))
                .unwrap_err()
                .status,
            403
        );
        let other_port = (header::ORIGIN, "http://127.0.0.1:8080");
        assert_eq!(
            g.check(&Method::GET, &headers(&[other_port]))
                .unwrap_err()
                .status,
            403
        );
    }

    #[test]
    fn beyond_loopback_reads_need_the_token_and_any_host_is_fine() {
        let g = guard("0.0.0.0:9180");
        let host = (header::HOST, "lb1.example:9180");
        assert_eq!(
            g.check(&Method::GET, &headers(std::slice::from_ref(&host)))
                .unwrap_err()
                .status,
            401
        );
        let bearer = (header::AUTHORIZATION, "Bearer 0123456789abcdef0123");
        assert_eq!(g.check(&Method::GET, &headers(&[host, bearer])), Ok(()));
    }

    #[test]
    fn yaml_media_types() {
        assert!(is_yaml("application/yaml"));
        assert!(is_yaml("Application/X-YAML; charset=utf-8"));
        assert!(is_yaml("text/yaml"));
        assert!(!is_yaml("text/plain"));
        assert!(!is_yaml(""));
        assert!(!is_yaml("application/x-www-form-urlencoded"));
    }
}
