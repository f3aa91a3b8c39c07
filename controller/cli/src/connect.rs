//! How controllerctl reaches the controller: plain text on loopback, or TLS (`https://`)
//! with the operator's certificate or bearer token. The token is read from a file or the
//! environment, never from a flag (flags show in `ps` and shell history).

use std::path::PathBuf;

use clap::Args;
use fleetbench_proto::channel::{self, ClientTls};
use fleetbench_proto::pb::control_service_client::ControlServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::error::CliError;

/// The environment variable that may hold the operator's token.
pub const TOKEN_ENV: &str = "FLEETBENCH_TOKEN";

/// The operator's credentials.
#[derive(Args, Debug, Clone, Default)]
pub struct Credentials {
    /// CA certificate (PEM) that signed the controller's certificate (https:// addresses).
    #[arg(long, global = true, env = "FLEETBENCH_CA")]
    pub ca: Option<PathBuf>,
    /// Operator certificate (PEM, SAN URI fleetbench://operator/<role>/<name>).
    #[arg(long, global = true, env = "FLEETBENCH_CERT")]
    pub cert: Option<PathBuf>,
    /// Private key of --cert (PEM).
    #[arg(long, global = true, env = "FLEETBENCH_KEY")]
    pub key: Option<PathBuf>,
    /// File holding the operator's bearer token (else env FLEETBENCH_TOKEN, if set).
    #[arg(long, global = true, env = "FLEETBENCH_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
}

impl Credentials {
    fn tls(&self) -> ClientTls {
        ClientTls {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
            server_name: None,
        }
    }

    /// The bearer token, from --token-file, else the environment.
    fn token(&self) -> Result<Option<String>, CliError> {
        let token = match &self.token_file {
            Some(path) => Some(std::fs::read_to_string(path).map_err(|e| CliError::io(path, e))?),
            None => std::env::var(TOKEN_ENV).ok(),
        };
        Ok(token.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()))
    }
}

/// Adds `authorization: Bearer <token>` to every call, when there is a token.
#[derive(Debug, Clone, Default)]
pub struct BearerToken(Option<MetadataValue<Ascii>>);

impl Interceptor for BearerToken {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// A control-service client with the operator's credentials.
pub type Client = ControlServiceClient<InterceptedService<Channel, BearerToken>>;

/// Connects to the controller at `addr` with `creds`.
pub async fn connect(addr: &str, creds: &Credentials) -> Result<Client, CliError> {
    let channel = channel::connect(addr, &creds.tls()).await?;
    client(channel, creds)
}

/// A client over an open channel.
pub fn client(channel: Channel, creds: &Credentials) -> Result<Client, CliError> {
    let token = match creds.token()? {
        Some(t) => Some(
            format!("Bearer {t}")
                .parse::<MetadataValue<Ascii>>()
                .map_err(|_| {
                    CliError::Usage("the token holds characters a header cannot".into())
                })?,
        ),
        None => None,
    };
    Ok(
        ControlServiceClient::with_interceptor(channel, BearerToken(token))
            .max_decoding_message_size(fleetbench_proto::limits::CONTROLLER_TO_OPERATOR)
            .max_encoding_message_size(fleetbench_proto::limits::OPERATOR_TO_CONTROLLER),
    )
}
