//! The crate's one error type, and the one place that maps errors to HTTP answers.
//!
//! Error bodies match vLLM 0.32: OpenAI-style `{"error":{message,type,param,code}}` for API
//! errors, FastAPI's `{"detail":"Not Found"}` for unknown routes.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Everything that can go wrong in the simulator.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// Invalid configuration (a usage error).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// What a real engine dies of at start-up (the weights do not fit, no room for the KV
    /// cache): logged as vLLM logs it, exit code 1.
    #[error("{0}")]
    EngineStartup(String),
    /// The listen address could not be bound.
    #[error("failed to bind {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// Any other I/O failure (serving, socket info).
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The request named a model that is not served: 404 `NotFoundError`, param `model`.
    /// `aliases` lists the served names (`a, b`).
    #[error("The model `{model}` does not exist. Valid aliases: {aliases}.")]
    ModelNotFound { model: String, aliases: String },
    /// An invalid request: 400 `BadRequestError`, `param` null.
    #[error("{0}")]
    BadRequest(String),
    /// An invalid request that names the parameter (vLLM's `VLLMValidationError`): 400
    /// `BadRequestError` with `param`, the message ending in `(parameter=…, value=…)`.
    #[error(
        "{message} (parameter={param}{})",
        value.as_ref().map(|v| format!(", value={v}")).unwrap_or_default()
    )]
    Validation {
        message: String,
        param: &'static str,
        value: Option<String>,
    },
    /// The engine loop has stopped (shutting down): 503.
    #[error("The engine is shutting down.")]
    EngineStopped,
    /// No such route: FastAPI's 404 `{"detail":"Not Found"}`.
    #[error("Not Found")]
    RouteNotFound,
    /// Route exists with another method: FastAPI's 405 `{"detail":"Method Not Allowed"}`.
    #[error("Method Not Allowed")]
    MethodNotAllowed,
}

impl SimError {
    /// HTTP status of the error when it answers a request.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::ModelNotFound { .. } | Self::RouteNotFound => StatusCode::NOT_FOUND,
            Self::BadRequest(_) | Self::Validation { .. } => StatusCode::BAD_REQUEST,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::EngineStopped => StatusCode::SERVICE_UNAVAILABLE,
            Self::Config(_) | Self::EngineStartup(_) | Self::Bind { .. } | Self::Io(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }
}

/// vLLM's error body `{"error":{"message","type","param","code"}}`, fields in vLLM's order.
#[derive(Debug, Serialize)]
struct ErrorBody<'a> {
    error: ErrorInfo<'a>,
}

#[derive(Debug, Serialize)]
struct ErrorInfo<'a> {
    message: String,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: u16,
}

/// FastAPI's `{"detail": ...}` body for routing errors.
#[derive(Debug, Serialize)]
struct DetailBody {
    detail: String,
}

impl SimError {
    /// A [`SimError::Validation`].
    pub fn validation(
        message: impl Into<String>,
        param: &'static str,
        value: Option<impl ToString>,
    ) -> Self {
        Self::Validation {
            message: message.into(),
            param,
            value: value.map(|v| v.to_string()),
        }
    }
}

impl IntoResponse for SimError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = self.to_string();
        let (kind, param) = match &self {
            Self::RouteNotFound | Self::MethodNotAllowed => {
                return (status, Json(DetailBody { detail: message })).into_response();
            }
            Self::ModelNotFound { .. } => ("NotFoundError", Some("model")),
            Self::BadRequest(_) => ("BadRequestError", None),
            Self::Validation { param, .. } => ("BadRequestError", Some(*param)),
            Self::EngineStopped => ("ServiceUnavailableError", None),
            Self::Config(_) | Self::EngineStartup(_) | Self::Bind { .. } | Self::Io(_) => {
                ("InternalServerError", None)
            }
        };
        let body = ErrorBody {
            error: ErrorInfo {
                message,
                kind,
                param,
                code: status.as_u16(),
            },
        };
        (status, Json(body)).into_response()
    }
}
