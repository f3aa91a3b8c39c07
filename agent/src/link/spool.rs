//! The agent's on-disk spool of acknowledgeable messages (record batches and the
//! point-finished message of each attempt), kept until the controller's `PointAck`.
//!
//! One append-only file per (point id, attempt) in the spool directory, named
//! `<hex of point id>.<attempt>.spool`. Each frame is
//! `[payload length: u32 LE][CRC-32 of payload: u32 LE][payload: protobuf AgentMessage]`.
//! A frame whose length runs past the end of the file or whose CRC does not match ends
//! the file: it is the torn last write of an agent killed mid-write, dropped, not fatal.
//!
//! Durability: every frame is written (`write_all`, no user-space buffer) before its
//! message is queued for sending, so a killed agent (SIGKILL, panic, OOM kill) loses
//! nothing the kernel accepted. Only the point-finished frame is followed by `fsync` (on
//! the blocking pool, not delaying the send): on
//! power loss, frames of a still-running attempt may be lost, but then its point-finished
//! frame is lost too, and an attempt without one is discarded at start-up (the controller
//! re-queues that point as a new attempt). Once the point-finished frame is synced, the
//! whole attempt is on disk, because `fsync` covers the earlier writes to the same file.
//!
//! Modes: the directory (and any parent it creates) is 0700, the files 0600.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use fleetbench_proto::pb::{self, agent_message::Msg};
use prost::Message as _;
use tracing::{info, warn};

use crate::error::AgentError;

/// Bytes of a frame header: length and CRC.
const HEADER: usize = 8;
/// Largest payload accepted when reading (a torn length field could claim gigabytes).
const MAX_FRAME: usize = 256 * 1024 * 1024;
const SUFFIX: &str = ".spool";
/// The spool directory and its files are owner-only, whatever the umask: they hold the
/// measured requests (prompts' token counts, timings, errors) until acknowledged.
const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;

/// (point id, attempt): one spool file.
pub type AttemptKey = (String, u32);

/// The key of an acknowledgeable message, `None` for messages sent once (events).
pub fn attempt_of(msg: &pb::AgentMessage) -> Option<AttemptKey> {
    match &msg.msg {
        Some(Msg::RecordBatch(b)) => Some((b.point_id.clone(), b.attempt)),
        Some(Msg::PointFinished(f)) => Some((f.point_id.clone(), f.attempt)),
        _ => None,
    }
}

/// CRC-32 (IEEE 802.3, the zlib/PNG one) of `data`.
pub fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    let mut c = !0u32;
    for &b in data {
        c = TABLE[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8);
    }
    !c
}

/// Encodes one message as a frame.
pub fn encode_frame(msg: &pb::AgentMessage) -> Vec<u8> {
    let payload = msg.encode_to_vec();
    let mut frame = Vec::with_capacity(HEADER + payload.len());
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(&crc32(&payload).to_le_bytes());
    frame.extend_from_slice(&payload);
    frame
}

/// Decodes the frames of `bytes` up to the first torn or corrupt one. Returns the
/// messages and how many bytes they occupy (the rest is a torn tail).
pub fn decode_frames(bytes: &[u8]) -> (Vec<pb::AgentMessage>, usize) {
    let mut out = Vec::new();
    let mut at = 0usize;
    while bytes.len() - at >= HEADER {
        let mut len4 = [0u8; 4];
        let mut crc4 = [0u8; 4];
        len4.copy_from_slice(&bytes[at..at + 4]);
        crc4.copy_from_slice(&bytes[at + 4..at + 8]);
        let len = u32::from_le_bytes(len4) as usize;
        if len > MAX_FRAME || bytes.len() - at - HEADER < len {
            break;
        }
        let payload = &bytes[at + HEADER..at + HEADER + len];
        if crc32(payload) != u32::from_le_bytes(crc4) {
            break;
        }
        match pb::AgentMessage::decode(payload) {
            Ok(m) => out.push(m),
            Err(_) => break,
        }
        at += HEADER + len;
    }
    (out, at)
}

fn file_name(key: &AttemptKey) -> String {
    let hex: String = key.0.bytes().map(|b| format!("{b:02x}")).collect();
    format!("{hex}.{}{SUFFIX}", key.1)
}

fn parse_file_name(name: &str) -> Option<AttemptKey> {
    let stem = name.strip_suffix(SUFFIX)?;
    let (hex, attempt) = stem.rsplit_once('.')?;
    if hex.len() % 2 != 0 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect();
    let point = String::from_utf8(bytes?).ok()?;
    Some((point, attempt.parse().ok()?))
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> AgentError {
    AgentError::Spool(format!("{what} {}: {e}", path.display()))
}

/// fsyncs and closes an attempt's file. Inside a tokio runtime this runs on the blocking
/// pool: an fsync can take hundreds of milliseconds, and a runtime worker blocked that long
/// would delay the timestamps of other points' streams (the load generator shares the
/// runtime). The message is queued meanwhile; that is safe because the fsync only decides
/// what survives a power loss, and an attempt whose finish did not survive is discarded at
/// start-up and re-run. A failed fsync is logged (the write itself succeeded).
fn sync_file(f: File, path: PathBuf) {
    let sync = move || {
        if let Err(e) = f.sync_data() {
            warn!(path = %path.display(), error = %e, "spool fsync failed; a power loss could lose this finished attempt (the controller would re-run it)");
        }
    };
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            rt.spawn_blocking(sync);
        }
        Err(_) => sync(),
    }
}

/// An attempt found in the spool directory at start-up that ended with a point-finished
/// frame: its messages are to be sent again.
#[derive(Debug)]
pub struct Recovered {
    pub key: AttemptKey,
    /// Bytes of valid frames in its file.
    pub len: u64,
    /// Frames in the file (record batches + the point-finished message).
    pub frames: usize,
}

/// What [`Spool::open`] found.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Finished attempts, in (point, attempt) order.
    pub resend: Vec<Recovered>,
    /// Attempts without a point-finished frame (interrupted by the agent's death): deleted.
    pub discarded: Vec<AttemptKey>,
}

/// The spool directory. Writing is synchronous: frames are small and the disk is local;
/// the load generator never waits for the controller, only for this write.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    /// Open files of attempts still being written.
    open: BTreeMap<AttemptKey, File>,
    /// Held for the spool's lifetime: a second agent on the same directory fails to start.
    _lock: nix::fcntl::Flock<File>,
}

impl Spool {
    /// Opens (creating) the spool directory, locks it, and sorts what an earlier run left:
    /// finished attempts are kept for resending, unfinished ones deleted.
    pub fn open(dir: &Path) -> Result<(Spool, Recovery), AgentError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
            .map_err(|e| io_err("cannot create spool dir", dir, e))?;
        let lock_path = dir.join(".lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(FILE_MODE)
            .open(&lock_path)
            .map_err(|e| io_err("cannot open", &lock_path, e))?;
        let lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| {
                AgentError::Spool(format!(
                    "spool dir {} is in use by another agent: {e}",
                    dir.display()
                ))
            })?;
        let mut recovery = Recovery::default();
        let mut found = Vec::new();
        let entries = std::fs::read_dir(dir).map_err(|e| io_err("cannot list", dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| io_err("cannot list", dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(key) = parse_file_name(&name) {
                found.push((key, entry.path()));
            }
        }
        found.sort();
        for (key, path) in found {
            let mut bytes = Vec::new();
            File::open(&path)
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .map_err(|e| io_err("cannot read", &path, e))?;
            let (msgs, valid) = decode_frames(&bytes);
            let finished = matches!(
                msgs.last().map(|m| &m.msg),
                Some(Some(Msg::PointFinished(_)))
            );
            if finished {
                if valid < bytes.len() {
                    warn!(point_id = %key.0, attempt = key.1, torn_bytes = bytes.len() - valid, "spool file has a torn tail after its point-finished frame; ignored");
                }
                info!(point_id = %key.0, attempt = key.1, frames = msgs.len(), "spooled finished attempt will be resent");
                recovery.resend.push(Recovered {
                    key,
                    len: valid as u64,
                    frames: msgs.len(),
                });
            } else {
                warn!(point_id = %key.0, attempt = key.1, frames = msgs.len(), torn_bytes = bytes.len() - valid, "discarding spooled attempt interrupted by the agent's death (the controller re-queues the point)");
                std::fs::remove_file(&path).map_err(|e| io_err("cannot delete", &path, e))?;
                recovery.discarded.push(key);
            }
        }
        Ok((
            Spool {
                dir: dir.to_path_buf(),
                open: BTreeMap::new(),
                _lock: lock,
            },
            recovery,
        ))
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, key: &AttemptKey) -> PathBuf {
        self.dir.join(file_name(key))
    }

    /// Appends `frame` to its attempt's file; `sync`: then fsync and close the file (the
    /// attempt's last frame; see [`sync_file`]). On error the file may end in a torn frame.
    pub fn append(&mut self, key: &AttemptKey, frame: &[u8], sync: bool) -> Result<(), AgentError> {
        let path = self.path(key);
        if !self.open.contains_key(key) {
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(FILE_MODE)
                .open(&path)
                .map_err(|e| io_err("cannot open", &path, e))?;
            self.open.insert(key.clone(), f);
        }
        let Some(f) = self.open.get_mut(key) else {
            return Err(AgentError::Spool(format!("{} not open", path.display())));
        };
        let result = f.write_all(frame);
        if result.is_err() {
            self.open.remove(key);
        } else if sync {
            if let Some(f) = self.open.remove(key) {
                sync_file(f, path.clone());
            }
        }
        result.map_err(|e| io_err("cannot write", &path, e))
    }

    /// Reads the valid frames among the first `len` bytes of an attempt's file.
    pub fn read(&self, key: &AttemptKey, len: u64) -> Result<Vec<pb::AgentMessage>, AgentError> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let path = self.path(key);
        let mut bytes = Vec::new();
        File::open(&path)
            .and_then(|f| f.take(len).read_to_end(&mut bytes))
            .map_err(|e| io_err("cannot read", &path, e))?;
        Ok(decode_frames(&bytes).0)
    }

    /// Deletes an attempt's file (acknowledged, or abandoned after a write error).
    pub fn remove(&mut self, key: &AttemptKey) -> Result<(), AgentError> {
        self.open.remove(key);
        let path = self.path(key);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("cannot delete", &path, e)),
        }
    }
}

#[cfg(test)]
mod tests;
