//! One measured request: the unit every result is computed from.
//!
//! Definitions follow vLLM's `benchmark_serving` (see the design brief):
//! - `ttft_s`: first chunk carrying generated content (not the role-only chunk) − send time
//! - `e2el_s`: last content chunk − send time
//! - `tpot_s`: (E2EL − TTFT) / (output_tokens − 1), only when output_tokens > 1
//! - `itl_s`: gaps between successive content chunks (a chunk may hold several tokens)

use serde::{Deserialize, Serialize};

use crate::pb;

/// Why a request failed. `None` on the record means it succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// Could not connect or the connection broke before a response.
    Connect,
    /// The server answered with a non-2xx status.
    HttpStatus,
    /// The stream ended before `[DONE]` / a finish reason.
    Truncated,
    /// The stream went silent for longer than the idle timeout (a hung engine).
    Stalled,
    /// The stream held bytes that are not valid SSE/JSON/UTF-8.
    Malformed,
    /// The server sent an error object inside the stream.
    ServerError,
    /// The per-point deadline passed before the request finished.
    Timeout,
    /// The point was cancelled while the request ran.
    Cancelled,
    /// The stream finished without generating any content.
    NoContent,
}

impl ErrorKind {
    /// The name in the results' `error_kind` column (Parquet) and in displays.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::HttpStatus => "http-status",
            ErrorKind::Truncated => "truncated",
            ErrorKind::Stalled => "stalled",
            ErrorKind::Malformed => "malformed",
            ErrorKind::ServerError => "server-error",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::NoContent => "no-content",
        }
    }

    /// Reads the name [`ErrorKind::as_str`] wrote (the Parquet `error_kind` column).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "connect" => ErrorKind::Connect,
            "http-status" => ErrorKind::HttpStatus,
            "truncated" => ErrorKind::Truncated,
            "stalled" => ErrorKind::Stalled,
            "malformed" => ErrorKind::Malformed,
            "server-error" => ErrorKind::ServerError,
            "timeout" => ErrorKind::Timeout,
            "cancelled" => ErrorKind::Cancelled,
            "no-content" => ErrorKind::NoContent,
            _ => return None,
        })
    }
}

impl From<ErrorKind> for pb::ErrorKind {
    fn from(k: ErrorKind) -> Self {
        match k {
            ErrorKind::Connect => pb::ErrorKind::Connect,
            ErrorKind::HttpStatus => pb::ErrorKind::HttpStatus,
            ErrorKind::Truncated => pb::ErrorKind::Truncated,
            ErrorKind::Stalled => pb::ErrorKind::Stalled,
            ErrorKind::Malformed => pb::ErrorKind::Malformed,
            ErrorKind::ServerError => pb::ErrorKind::ServerError,
            ErrorKind::Timeout => pb::ErrorKind::Timeout,
            ErrorKind::Cancelled => pb::ErrorKind::Cancelled,
            ErrorKind::NoContent => pb::ErrorKind::NoContent,
        }
    }
}

impl ErrorKind {
    /// The kind a wire record carries; `None` for `UNSPECIFIED` (a successful request).
    fn from_wire(k: pb::ErrorKind) -> Option<Self> {
        Some(match k {
            pb::ErrorKind::Unspecified => return None,
            pb::ErrorKind::Connect => ErrorKind::Connect,
            pb::ErrorKind::HttpStatus => ErrorKind::HttpStatus,
            pb::ErrorKind::Truncated => ErrorKind::Truncated,
            pb::ErrorKind::Stalled => ErrorKind::Stalled,
            pb::ErrorKind::Malformed => ErrorKind::Malformed,
            pb::ErrorKind::ServerError => ErrorKind::ServerError,
            pb::ErrorKind::Timeout => ErrorKind::Timeout,
            pb::ErrorKind::Cancelled => ErrorKind::Cancelled,
            pb::ErrorKind::NoContent => ErrorKind::NoContent,
        })
    }
}

/// One measured request (warm-up requests are never recorded).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct RequestRecord {
    pub request_index: u32,
    pub wave: u32,
    /// When the request was sent, Unix microseconds.
    pub send_time_unix_us: i64,
    pub ttft_s: Option<f64>,
    pub e2el_s: Option<f64>,
    pub tpot_s: Option<f64>,
    pub itl_s: Vec<f64>,
    /// `usage.prompt_tokens` as the server counted it.
    pub input_tokens: Option<u32>,
    /// `usage.completion_tokens` as the server counted it.
    pub output_tokens: Option<u32>,
    pub target_input_tokens: u32,
    pub target_output_tokens: u32,
    pub content_chunks: u32,
    pub error_kind: Option<ErrorKind>,
    pub error: String,
    /// `chat` or `completions`.
    pub endpoint: String,
    /// Whether the server sent a `usage` object (otherwise output tokens are chunk counts).
    pub usage_reported: bool,
    /// When the schedule meant the request to be sent, seconds since the measured load
    /// started (rate mode's absolute timeline; burst: its wave's start; concurrency: when
    /// its slot freed).
    pub scheduled_offset_s: f64,
    /// When it was actually sent, on the same clock. `send_offset_s - scheduled_offset_s`
    /// is the send lag: a late client shows here instead of hiding in the latencies.
    pub send_offset_s: f64,
    /// Times the request was resent because it never reached the server (no connection
    /// could be made, or a pooled connection the server had closed ended before any byte of
    /// a response); a request that got a response is never resent.
    pub retries: u32,
}

impl RequestRecord {
    /// Actual minus scheduled send time, in seconds.
    pub fn send_lag_s(&self) -> f64 {
        self.send_offset_s - self.scheduled_offset_s
    }

    pub fn success(&self) -> bool {
        self.error_kind.is_none()
    }

    /// Per-request output speed (the seed's "per-request throughput"): output tokens / E2EL.
    pub fn output_speed(&self) -> Option<f64> {
        match (self.output_tokens, self.e2el_s) {
            (Some(n), Some(e2el)) if e2el > 0.0 && self.success() => Some(f64::from(n) / e2el),
            _ => None,
        }
    }
}

/// TPOT as vLLM's `benchmark_serving` defines it: (E2EL − TTFT) / (output tokens − 1),
/// defined only for more than one output token.
pub fn tpot(ttft_s: f64, e2el_s: f64, output_tokens: u32) -> Option<f64> {
    (output_tokens > 1).then(|| (e2el_s - ttft_s) / f64::from(output_tokens - 1))
}

impl From<&RequestRecord> for pb::RequestRecord {
    fn from(r: &RequestRecord) -> Self {
        pb::RequestRecord {
            request_index: r.request_index,
            wave: r.wave,
            send_time_unix_us: r.send_time_unix_us,
            ttft_s: r.ttft_s,
            e2el_s: r.e2el_s,
            tpot_s: r.tpot_s,
            itl_s: r.itl_s.clone(),
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            target_input_tokens: r.target_input_tokens,
            target_output_tokens: r.target_output_tokens,
            content_chunks: r.content_chunks,
            success: r.success(),
            failure_kind: r
                .error_kind
                .map_or(pb::ErrorKind::Unspecified, pb::ErrorKind::from)
                .into(),
            error: r.error.clone(),
            endpoint: r.endpoint.clone(),
            usage_reported: r.usage_reported,
            scheduled_offset_s: r.scheduled_offset_s,
            send_offset_s: r.send_offset_s,
            retries: r.retries,
        }
    }
}

impl TryFrom<pb::RequestRecord> for RequestRecord {
    type Error = crate::ProtoError;

    fn try_from(r: pb::RequestRecord) -> Result<Self, Self::Error> {
        let error_kind = if r.success {
            None
        } else {
            let kind = pb::ErrorKind::try_from(r.failure_kind)
                .ok()
                .and_then(ErrorKind::from_wire);
            Some(kind.ok_or_else(|| crate::ProtoError::InvalidField {
                message: "RequestRecord",
                field: "failure_kind",
                reason: format!(
                    "unknown or unspecified error kind {} on a failed request",
                    r.failure_kind
                ),
            })?)
        };
        Ok(RequestRecord {
            request_index: r.request_index,
            wave: r.wave,
            send_time_unix_us: r.send_time_unix_us,
            ttft_s: r.ttft_s,
            e2el_s: r.e2el_s,
            tpot_s: r.tpot_s,
            itl_s: r.itl_s,
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            target_input_tokens: r.target_input_tokens,
            target_output_tokens: r.target_output_tokens,
            content_chunks: r.content_chunks,
            error_kind,
            error: r.error,
            endpoint: r.endpoint,
            usage_reported: r.usage_reported,
            scheduled_offset_s: r.scheduled_offset_s,
            send_offset_s: r.send_offset_s,
            retries: r.retries,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tpot_follows_benchmark_serving() {
        assert_eq!(tpot(0.5, 1.5, 11), Some(0.1));
        assert_eq!(tpot(0.5, 0.5, 1), None);
        assert_eq!(tpot(0.5, 0.5, 0), None);
    }

    #[test]
    fn wire_round_trip_keeps_everything() {
        let r = RequestRecord {
            request_index: 3,
            wave: 1,
            send_time_unix_us: 1_700_000_000_000_000,
            ttft_s: Some(0.25),
            e2el_s: Some(1.25),
            tpot_s: tpot(0.25, 1.25, 5),
            itl_s: vec![0.25, 0.25, 0.25, 0.25],
            input_tokens: Some(128),
            output_tokens: Some(5),
            target_input_tokens: 128,
            target_output_tokens: 5,
            content_chunks: 5,
            error_kind: None,
            error: String::new(),
            endpoint: "chat".into(),
            usage_reported: true,
            scheduled_offset_s: 0.5,
            send_offset_s: 0.5004,
            retries: 1,
        };
        let wire = pb::RequestRecord::from(&r);
        assert_eq!(RequestRecord::try_from(wire).unwrap(), r);
        let failed = RequestRecord {
            error_kind: Some(ErrorKind::Truncated),
            error: "eof".into(),
            ..r
        };
        let wire = pb::RequestRecord::from(&failed);
        assert!(!wire.success);
        assert_eq!(wire.failure_kind(), pb::ErrorKind::Truncated);
        assert_eq!(RequestRecord::try_from(wire).unwrap(), failed);
    }

    #[test]
    fn failed_wire_record_needs_a_known_error_kind() {
        let ok = pb::RequestRecord {
            success: true,
            ..Default::default()
        };
        assert_eq!(RequestRecord::try_from(ok).unwrap().error_kind, None);
        for failure_kind in [0, 99] {
            let failed = pb::RequestRecord {
                success: false,
                failure_kind,
                ..Default::default()
            };
            assert!(RequestRecord::try_from(failed).is_err(), "{failure_kind}");
        }
        for kind in [ErrorKind::Connect, ErrorKind::NoContent] {
            assert_eq!(ErrorKind::parse(kind.as_str()), Some(kind));
        }
    }
}
