//! [`FinishReason`]: why a request ended, shared by the engine ([`crate::scheduler`]), the
//! requests that bypass it ([`crate::direct`]), the responses ([`crate::api`],
//! [`crate::stream`]) and the statistics ([`crate::metrics`]).

/// Why a request ended; the `finished_reason` label and the API `finish_reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FinishReason {
    /// Ended on its own (end-of-sequence token).
    Stop,
    /// Hit `max_tokens`.
    Length,
    /// Client went away.
    Abort,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
            Self::Abort => "abort",
        }
    }
}
