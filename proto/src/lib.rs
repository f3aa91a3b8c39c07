//! fleetbench's wire protocol (`fleetbench.v1`) and the plain Rust types both sides share.
//!
//! - [`pb`]: the generated prost messages and tonic clients/servers.
//! - [`spec`]: the sweep file (TOML), its validation with line/field errors, and its
//!   expansion into points.
//! - [`record`]: one measured request, as the agent records it and the controller stores it.
//! - [`channel`]: dialing the controller over plain text or TLS.
//! - [`limits`]: gRPC message sizes and page sizes both ends use.

pub mod channel;
pub mod error;
pub mod limits;
pub mod record;
pub mod spec;

pub use error::ProtoError;

/// Generated code for package `fleetbench.v1`.
pub mod pb {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("fleetbench.v1");
}

/// The fleetbench version every component reports and stamps into result metadata.
pub const FLEETBENCH_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Current wall-clock time as Unix microseconds (0 if the clock is before 1970).
pub fn unix_micros_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Current wall-clock time as Unix milliseconds.
pub fn unix_millis_now() -> i64 {
    unix_micros_now() / 1000
}
