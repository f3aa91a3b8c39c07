//! Who is calling and what they may do: the controller's one authentication and
//! authorization point, a tower layer in front of every gRPC service.
//!
//! Identities:
//! - **agents** present a client certificate (mutual TLS) whose subject alternative name
//!   holds the URI `fleetbench://agent/<name>`; the controller binds the session to that
//!   name, so an agent can register as itself only;
//! - **operators** present a client certificate with `fleetbench://operator/<role>/<name>`,
//!   or a bearer token (`authorization: Bearer <token>`) listed, as its SHA-256 digest, in
//!   the controller's tokens file with a role.
//!
//! Roles: `admin` (everything of the control service), `viewer` (status, watch, listings,
//! results). Agents may call the agent service only, operators the control service only;
//! the health service is open. A controller configured with neither a client CA nor
//! tokens runs **open** (every caller may do everything) — only allowed on loopback or with
//! `--insecure` (see `server.rs`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::task::{Context, Poll};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use tonic::Status;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use crate::error::ControllerError;

/// Agent identities in certificates: `fleetbench://agent/<name>`.
pub const AGENT_URI_PREFIX: &str = "fleetbench://agent/";
/// Operator identities in certificates: `fleetbench://operator/<role>/<name>`.
pub const OPERATOR_URI_PREFIX: &str = "fleetbench://operator/";

const AGENT_SERVICE: &str = "/fleetbench.v1.AgentService/";
const CONTROL_SERVICE: &str = "/fleetbench.v1.ControlService/";
const HEALTH_SERVICE: &str = "/grpc.health.v1.Health/";
/// Control-service methods that change the fleet: admins only.
const ADMIN_METHODS: [&str; 2] = ["SubmitSweep", "CancelSweep"];

/// An operator's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Submit and cancel sweeps, and everything a viewer may.
    Admin,
    /// Status, watch, agents, sweeps and results: read only.
    Viewer,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "viewer" => Some(Role::Viewer),
            _ => None,
        }
    }
}

/// The authenticated caller of one request, put into the request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// An agent, by the name its certificate carries.
    Agent(String),
    /// An operator, by certificate or token.
    Operator { name: String, role: Role },
    /// No credentials, on an open controller.
    Open,
}

/// One operator token of the tokens file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: String,
    role: Role,
    /// Hex SHA-256 of the token.
    sha256: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    token: Vec<TokenEntry>,
}

/// Who may call the controller.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Operator tokens by the digest of the token.
    tokens: BTreeMap<[u8; 32], (String, Role)>,
    /// Client certificates are verified by the TLS layer against this CA.
    client_certs: bool,
}

impl Access {
    /// An open controller: no credentials asked for.
    pub fn open() -> Access {
        Access::default()
    }

    /// Certificates (verified against the client CA by TLS) and/or tokens.
    pub fn new(client_certs: bool, tokens: Option<&Path>) -> Result<Access, ControllerError> {
        let mut access = Access {
            client_certs,
            ..Access::default()
        };
        if let Some(path) = tokens {
            let text = std::fs::read_to_string(path).map_err(|e| ControllerError::io(path, e))?;
            let file: TokensFile = toml::from_str(&text).map_err(|e| {
                ControllerError::Usage(format!("tokens file {}: {e}", path.display()))
            })?;
            for t in file.token {
                let digest = parse_digest(&t.sha256).ok_or_else(|| {
                    ControllerError::Usage(format!(
                        "tokens file {}: token {:?}: sha256 must be 64 hex digits",
                        path.display(),
                        t.name
                    ))
                })?;
                access.tokens.insert(digest, (t.name, t.role));
            }
        }
        Ok(access)
    }

    /// Neither certificates nor tokens: everyone may do everything.
    pub fn is_open(&self) -> bool {
        !self.client_certs && self.tokens.is_empty()
    }

    /// The caller of a request, from its verified client certificate or bearer token.
    fn authenticate<B>(&self, req: &http::Request<B>) -> Result<Principal, Status> {
        if let Some(certs) = req
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(|i| i.peer_certs())
        {
            if let Some(leaf) = certs.first() {
                return principal_of_cert(leaf.as_ref());
            }
        }
        if let Some(value) = req.headers().get(http::header::AUTHORIZATION) {
            let token = value
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .ok_or_else(|| Status::unauthenticated("authorization must be `Bearer <token>`"))?;
            let digest: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
            return match self.tokens.get(&digest) {
                Some((name, role)) => Ok(Principal::Operator {
                    name: name.clone(),
                    role: *role,
                }),
                None => Err(Status::unauthenticated("unknown token")),
            };
        }
        if self.is_open() {
            Ok(Principal::Open)
        } else {
            Err(Status::unauthenticated(
                "credentials required: a client certificate or a bearer token",
            ))
        }
    }
}

/// Whether `who` may call the gRPC method at `path`.
pub fn authorize(who: &Principal, path: &str) -> Result<(), Status> {
    if path.starts_with(HEALTH_SERVICE) {
        return Ok(());
    }
    if path.starts_with(AGENT_SERVICE) {
        return match who {
            Principal::Agent(_) | Principal::Open => Ok(()),
            Principal::Operator { .. } => Err(Status::permission_denied(
                "operators may not call the agent service",
            )),
        };
    }
    if let Some(method) = path.strip_prefix(CONTROL_SERVICE) {
        return match who {
            Principal::Open => Ok(()),
            Principal::Agent(_) => Err(Status::permission_denied(
                "agents may not call the control service",
            )),
            Principal::Operator {
                role: Role::Admin, ..
            } => Ok(()),
            Principal::Operator {
                role: Role::Viewer,
                name,
            } if ADMIN_METHODS.contains(&method) => Err(Status::permission_denied(format!(
                "{method} needs the admin role; {name} is a viewer"
            ))),
            Principal::Operator { .. } => Ok(()),
        };
    }
    // Other paths reach the router, which answers `unimplemented`.
    Ok(())
}

/// The identity a certificate (DER) carries in its subject alternative names.
pub fn principal_of_cert(der: &[u8]) -> Result<Principal, Status> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|_| Status::unauthenticated("unreadable client certificate"))?;
    let sans = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|ext| ext.value.general_names.clone())
        .unwrap_or_default();
    for name in sans {
        if let x509_parser::extensions::GeneralName::URI(uri) = name {
            if let Some(agent) = uri.strip_prefix(AGENT_URI_PREFIX) {
                if valid_name(agent) {
                    return Ok(Principal::Agent(agent.to_owned()));
                }
            }
            if let Some(rest) = uri.strip_prefix(OPERATOR_URI_PREFIX) {
                if let Some((role, name)) = rest.split_once('/') {
                    if let (Some(role), true) = (Role::parse(role), valid_name(name)) {
                        return Ok(Principal::Operator {
                            name: name.to_owned(),
                            role,
                        });
                    }
                }
            }
        }
    }
    Err(Status::unauthenticated(format!(
        "the client certificate names no fleetbench identity (a SAN URI {AGENT_URI_PREFIX}<name> or {OPERATOR_URI_PREFIX}<admin|viewer>/<name>)"
    )))
}

/// Agent and operator names: 1-64 of `[A-Za-z0-9._-]`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Hex SHA-256 of a token, as the tokens file holds it.
pub fn token_digest_hex(token: &str) -> String {
    Sha256::digest(token.trim().as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The tower layer that authenticates and authorizes every request.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    access: Arc<Access>,
}

impl AuthLayer {
    pub fn new(access: Access) -> AuthLayer {
        AuthLayer {
            access: Arc::new(access),
        }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            access: self.access.clone(),
        }
    }
}

/// [`AuthLayer`]'s service.
#[derive(Debug, Clone)]
pub struct Auth<S> {
    inner: S,
    access: Arc<Access>,
}

impl<S, B> tower::Service<http::Request<B>> for Auth<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = futures::future::Either<
        S::Future,
        std::future::Ready<Result<http::Response<tonic::body::Body>, S::Error>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let checked = self.access.authenticate(&req).and_then(|who| {
            authorize(&who, req.uri().path())?;
            Ok(who)
        });
        match checked {
            Ok(who) => {
                req.extensions_mut().insert(who);
                futures::future::Either::Left(self.inner.call(req))
            }
            Err(status) => {
                tracing::warn!(path = %req.uri().path(), code = ?status.code(), reason = %status.message(), "request refused");
                futures::future::Either::Right(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(role: Role) -> Principal {
        Principal::Operator {
            name: "alice".into(),
            role,
        }
    }

    #[test]
    fn roles_and_services_are_kept_apart() {
        let submit = "/fleetbench.v1.ControlService/SubmitSweep";
        let list = "/fleetbench.v1.ControlService/ListSweeps";
        let session = "/fleetbench.v1.AgentService/Session";
        assert!(authorize(&op(Role::Admin), submit).is_ok());
        let e = authorize(&op(Role::Viewer), submit).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(authorize(&op(Role::Viewer), list).is_ok());
        let agent = Principal::Agent("a".into());
        assert_eq!(
            authorize(&agent, list).unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
        assert!(authorize(&agent, session).is_ok());
        assert_eq!(
            authorize(&op(Role::Admin), session).unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
        assert!(authorize(&agent, "/grpc.health.v1.Health/Check").is_ok());
        assert!(authorize(&Principal::Open, submit).is_ok());
    }

    #[test]
    fn tokens_are_looked_up_by_digest_and_bad_ones_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        std::fs::write(
            &path,
            format!(
                "[[token]]\nname = \"ci\"\nrole = \"viewer\"\nsha256 = \"{}\"\n",
                token_digest_hex("s3cret-token")
            ),
        )
        .unwrap();
        let access = Access::new(false, Some(&path)).unwrap();
        assert!(!access.is_open());
        let req = |auth: Option<&str>| {
            let mut b = http::Request::builder().uri("/fleetbench.v1.ControlService/ListSweeps");
            if let Some(a) = auth {
                b = b.header("authorization", a);
            }
            b.body(()).unwrap()
        };
        assert_eq!(
            access
                .authenticate(&req(Some("Bearer s3cret-token")))
                .unwrap(),
            Principal::Operator {
                name: "ci".into(),
                role: Role::Viewer
            }
        );
        for bad in [Some("Bearer wrong"), Some("s3cret-token"), None] {
            let e = access.authenticate(&req(bad)).unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unauthenticated, "{bad:?}");
        }
        assert_eq!(
            Access::open().authenticate(&req(None)).unwrap(),
            Principal::Open
        );
    }

    #[test]
    fn a_tokens_file_with_a_bad_digest_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        std::fs::write(
            &path,
            "[[token]]\nname = \"x\"\nrole = \"admin\"\nsha256 = \"abc\"\n",
        )
        .unwrap();
        let e = Access::new(false, Some(&path)).unwrap_err();
        assert!(e.to_string().contains("64 hex digits"), "{e}");
    }

    #[test]
    fn names_are_short_and_plain() {
        assert!(valid_name("b60-host-1.lab_a"));
        for bad in ["", "a/b", "a b", "../x", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
