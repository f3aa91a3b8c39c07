//! The agent's link to the controller: [`session`] (the one long-lived gRPC stream:
//! registration, heartbeats, assignments, acknowledgements), [`outbox`] (messages waiting
//! to be sent, results kept until acknowledged) and [`spool`] (the outbox's on-disk file
//! per attempt).

pub mod outbox;
pub mod session;
pub mod spool;
