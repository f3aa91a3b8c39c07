//! Dataset files: the prompts of a workload that names `dataset = "some/file.jsonl"` (see
//! [`WorkloadEntry::dataset`](fleetbench_proto::spec::WorkloadEntry::dataset)), read from
//! a file on the agent's own host.
//!
//! The sweep names the file relative to a dataset directory; the agent looks for it in its
//! configured [`dataset_dirs`](crate::config::AgentConfig::dataset_dirs), in order, and
//! reads it only when its real path (symlinks resolved) lies inside the directory that
//! holds it, it is a regular file and it is no larger than `max_dataset_bytes`: whoever
//! writes sweeps can make an agent read the datasets its operator put there, nothing else.
//!
//! Two formats, told apart by content (the extension says nothing):
//!
//! - ShareGPT JSON, as vLLM's `benchmark_serving --dataset-name sharegpt` reads it: a JSON
//!   array of `{"conversations": [{"from": …, "value": …}, …]}`. Leading `system` turns
//!   are passed over; then, as vLLM, the first turn is the prompt and the second the
//!   reference reply. A conversation with fewer than two such turns is skipped.
//! - JSONL, one object per line: `{"prompt": "…"}` or `{"messages": [{"role": …,
//!   "content": …}, …]}` (OpenAI's chat format; a last `assistant` message is the
//!   reference reply, not part of the prompt), either with an optional `"output_tokens":
//!   N`. Other fields are ignored. A line that is not such an object is an error naming
//!   the line: bad data is never silently dropped.
//!
//! Entries whose prompt is empty (or only white space) are skipped in both formats and
//! counted. The file's SHA-256 identifies the data a point ran on; [`Dataset::sample`]
//! picks a point's entries reproducibly from the load seed.

use std::fmt::Write as _;
use std::fs::{File, Metadata, OpenOptions};
use std::io::{ErrorKind, Read as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Component, Path, PathBuf};

use nix::fcntl::OFlag;
use serde::Deserialize;
use serde::de::IgnoredAny;
use sha2::{Digest as _, Sha256};

use crate::error::AgentError;
use crate::load::prompt::SplitMix64;
pub use crate::load::request::ChatMessage;

/// What the error of a file in neither format says is accepted.
const FORMATS: &str = "neither ShareGPT JSON (an array of {\"conversations\": [{\"from\": …, \
                       \"value\": …}, …]}) nor JSONL (one {\"prompt\": …} or {\"messages\": \
                       [{\"role\": …, \"content\": …}, …]} object per line, either with an \
                       optional \"output_tokens\")";

/// What an entry sends: a text, or a conversation for the chat endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatasetPrompt {
    /// A single text: ShareGPT's prompt turn, JSONL's `prompt`.
    Text(String),
    /// A conversation: JSONL's `messages`, less a last `assistant` message (the reply).
    Messages(Vec<ChatMessage>),
}

impl DatasetPrompt {
    /// Nothing to send: an empty (or white-space) text, or messages that all are.
    fn is_blank(&self) -> bool {
        match self {
            DatasetPrompt::Text(text) => text.trim().is_empty(),
            DatasetPrompt::Messages(messages) => {
                messages.iter().all(|m| m.content.trim().is_empty())
            }
        }
    }
}

/// One usable entry of a dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetEntry {
    pub prompt: DatasetPrompt,
    /// `output_tokens` given by the entry (JSONL `{prompt, output_tokens}`), if any.
    pub output_tokens: Option<u32>,
    /// The reference reply (ShareGPT: the turn after the prompt; JSONL `messages`: a last
    /// `assistant` message), if any: its token count is the output length where the entry
    /// names none, as vLLM's ShareGPT sampling does.
    pub reply: Option<String>,
}

/// A dataset file, read and parsed.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The name the sweep gave, relative to a dataset directory.
    pub name: String,
    /// The file read: its real path, inside one of the dataset directories.
    pub path: PathBuf,
    /// SHA-256 of the file's bytes, lowercase hex: which data a point ran on.
    pub sha256: String,
    /// The usable entries, in file order.
    pub entries: Vec<DatasetEntry>,
    /// Entries passed over: ShareGPT conversations without a prompt and a reply, and
    /// entries whose prompt is empty.
    pub skipped_malformed: usize,
}

impl Dataset {
    /// Resolves `name` in the first of `dirs` that holds it, refusing anything whose
    /// canonical path is not inside that canonical dir (symlinks pointing out, etc.), files
    /// larger than `max_bytes`, and non-regular files. Reads, hashes and parses it; a file
    /// without a single usable entry is an error too. Blocking I/O: run it in
    /// `spawn_blocking`.
    pub fn open(dirs: &[PathBuf], name: &str, max_bytes: u64) -> Result<Dataset, AgentError> {
        let DataFile {
            path,
            bytes,
            sha256,
        } = DataFile::read(dirs, name, max_bytes)?;
        let parsed =
            parse(&bytes).map_err(|m| AgentError::Dataset(format!("{}: {m}", path.display())))?;
        drop(bytes);
        if parsed.entries.is_empty() {
            return Err(AgentError::Dataset(format!(
                "{}: no usable entry ({} skipped: fewer than two turns or an empty prompt)",
                path.display(),
                parsed.skipped
            )));
        }
        Ok(Dataset {
            name: name.to_string(),
            path,
            sha256,
            entries: parsed.entries,
            skipped_malformed: parsed.skipped,
        })
    }

    /// `count` entries, seeded: without replacement while `count <= entries.len()` (a
    /// seeded Fisher–Yates shuffle prefix), else every entry in shuffled order, then again
    /// reshuffled, as often as needed. The same (seed, count) always gives the same picks,
    /// and fewer picks with the same seed are a prefix of more. Empty only for `count = 0`
    /// (an opened dataset has entries).
    pub fn sample(&self, count: usize, seed: u64) -> Vec<&DatasetEntry> {
        let len = self.entries.len();
        let mut picks = Vec::with_capacity(if len == 0 { 0 } else { count });
        if len == 0 {
            return picks;
        }
        let mut rng = SplitMix64::new(seed);
        let mut order: Vec<usize> = (0..len).collect();
        while picks.len() < count {
            let take = (count - picks.len()).min(len);
            // Fisher–Yates: place a uniform pick of the rest at each position, only as far
            // as the picks go. Any starting order gives a uniform shuffle, so each round
            // reshuffles the last one's order.
            for i in 0..take {
                order.swap(i, i + below(&mut rng, len - i));
            }
            picks.extend(order[..take].iter().map(|&i| &self.entries[i]));
        }
        picks
    }
}

impl Dataset {
    /// `count` independent seeded draws (with replacement): an entry may come twice
    /// before another comes once. Empty only for `count = 0`.
    pub fn sample_with_replacement(&self, count: usize, seed: u64) -> Vec<&DatasetEntry> {
        let len = self.entries.len();
        if len == 0 {
            return Vec::new();
        }
        let mut rng = SplitMix64::new(seed);
        (0..count)
            .map(|_| &self.entries[below(&mut rng, len)])
            .collect()
    }
}

/// A data file (dataset or trace) read from the agent's dataset directories: its real
/// path, its bytes and their SHA-256 (lowercase hex).
#[derive(Debug, Clone)]
pub struct DataFile {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
    pub sha256: String,
}

impl DataFile {
    /// Resolves `name` in `dirs` and reads it, with the checks of [`Dataset::open`].
    /// Blocking I/O.
    pub fn read(dirs: &[PathBuf], name: &str, max_bytes: u64) -> Result<DataFile, AgentError> {
        let path = resolve(dirs, name)?;
        let bytes = read_capped(&path, max_bytes)?;
        let sha256 = hex(&Sha256::digest(&bytes));
        Ok(DataFile {
            path,
            bytes,
            sha256,
        })
    }
}

/// A uniform draw in `0..n` (`n > 0`), by Lemire's multiply-shift.
fn below(rng: &mut SplitMix64, n: usize) -> usize {
    let wide = (u128::from(rng.next_u64()) * n as u128) >> 64;
    usize::try_from(wide).unwrap_or(0)
}

/// The real path of `name` in the first of `dirs` that holds it; refused when outside the
/// directory's real path.
fn resolve(dirs: &[PathBuf], name: &str) -> Result<PathBuf, AgentError> {
    if dirs.is_empty() {
        return Err(AgentError::Dataset(format!(
            "{name:?}: this agent has no dataset_dirs (its config lists the folders sweeps may \
             read datasets from)"
        )));
    }
    // The controller checked the name already; this agent does not rely on it.
    let relative = Path::new(name);
    if name.is_empty()
        || !relative
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
    {
        return Err(AgentError::Dataset(format!(
            "{name:?} is not a relative path inside a dataset directory"
        )));
    }
    for dir in dirs {
        let candidate = dir.join(relative);
        match std::fs::symlink_metadata(&candidate) {
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                continue;
            }
            Err(e) => return Err(io_error("cannot read", &candidate, &e)),
        }
        let real_dir = dir
            .canonicalize()
            .map_err(|e| io_error("cannot resolve", dir, &e))?;
        let real = candidate
            .canonicalize()
            .map_err(|e| io_error("cannot resolve", &candidate, &e))?;
        if !real.starts_with(&real_dir) {
            return Err(AgentError::Dataset(format!(
                "{}: its real path is outside the dataset directory {} (a symlink out of it?)",
                candidate.display(),
                real_dir.display()
            )));
        }
        return Ok(real);
    }
    let searched: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    Err(AgentError::Dataset(format!(
        "{name:?} is in none of this agent's dataset directories ({})",
        searched.join(", ")
    )))
}

/// The bytes of the regular file at `path` (a real path: no symlink in it), refused when
/// larger than `max_bytes` before anything is read.
fn read_capped(path: &Path, max_bytes: u64) -> Result<Vec<u8>, AgentError> {
    // Checked before opening, so a FIFO or device is never opened.
    let meta = std::fs::metadata(path).map_err(|e| io_error("cannot read", path, &e))?;
    check_file(path, &meta, max_bytes)?;
    // No symlink followed (should the file be swapped for one since), no wait on a FIFO
    // swapped in; then the file actually opened is checked again.
    let flags = OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let file: File = OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits())
        .open(path)
        .map_err(|e| io_error("cannot open", path, &e))?;
    let meta = file
        .metadata()
        .map_err(|e| io_error("cannot read", path, &e))?;
    check_file(path, &meta, max_bytes)?;
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    // One byte past the cap tells a file that grew since.
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| io_error("cannot read", path, &e))?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > max_bytes {
        return Err(over_cap(path, max_bytes));
    }
    Ok(bytes)
}

fn check_file(path: &Path, meta: &Metadata, max_bytes: u64) -> Result<(), AgentError> {
    if !meta.is_file() {
        return Err(AgentError::Dataset(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    if meta.len() > max_bytes {
        return Err(over_cap(path, max_bytes));
    }
    Ok(())
}

fn over_cap(path: &Path, max_bytes: u64) -> AgentError {
    AgentError::Dataset(format!(
        "{} is larger than this agent's max_dataset_bytes ({max_bytes} bytes)",
        path.display()
    ))
}

fn io_error(what: &str, path: &Path, e: &std::io::Error) -> AgentError {
    AgentError::Dataset(format!("{what} {}: {e}", path.display()))
}

/// Lowercase hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Entries parsed out of a file, and how many were skipped.
#[derive(Debug, Default)]
struct Parsed {
    entries: Vec<DatasetEntry>,
    skipped: usize,
}

impl Parsed {
    fn push(&mut self, prompt: DatasetPrompt, output_tokens: Option<u32>, reply: Option<String>) {
        if prompt.is_blank() {
            self.skipped += 1;
        } else {
            self.entries.push(DatasetEntry {
                prompt,
                output_tokens,
                reply,
            });
        }
    }
}

/// Parses a file's bytes in the format its first character tells; the error says what is
/// wrong where (the caller names the file).
fn parse(bytes: &[u8]) -> Result<Parsed, String> {
    let text = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    match text.iter().find(|b| !b.is_ascii_whitespace()) {
        None => Err("is empty".into()),
        Some(b'[') => parse_sharegpt(text),
        Some(b'{') => parse_jsonl(text),
        Some(_) => Err(format!("is {FORMATS}")),
    }
}

#[derive(Deserialize)]
#[serde(expecting = "a {\"conversations\": [...]} object")]
struct ShareGptRecord {
    conversations: Vec<ShareGptTurn>,
}

#[derive(Deserialize)]
#[serde(expecting = "a {\"from\": ..., \"value\": ...} object")]
struct ShareGptTurn {
    from: String,
    value: String,
}

fn parse_sharegpt(text: &[u8]) -> Result<Parsed, String> {
    let records: Vec<ShareGptRecord> = serde_json::from_slice(text).map_err(|e| {
        format!(
            "a JSON array, but not ShareGPT (an array of {{\"conversations\": [{{\"from\": …, \
             \"value\": …}}, …]}}): {e}"
        )
    })?;
    let mut parsed = Parsed::default();
    for record in records {
        let mut turns = record
            .conversations
            .into_iter()
            .skip_while(|t| t.from == "system");
        match (turns.next(), turns.next()) {
            (Some(prompt), Some(reply)) => {
                parsed.push(DatasetPrompt::Text(prompt.value), None, Some(reply.value));
            }
            _ => parsed.skipped += 1,
        }
    }
    Ok(parsed)
}

#[derive(Deserialize)]
#[serde(expecting = "an object with \"prompt\" or \"messages\"")]
struct JsonlRecord {
    prompt: Option<String>,
    messages: Option<Vec<ChatMessage>>,
    output_tokens: Option<u32>,
}

fn parse_jsonl(text: &[u8]) -> Result<Parsed, String> {
    let mut parsed = Parsed::default();
    for (index, line) in text.split(|&b| b == b'\n').enumerate() {
        let number = index + 1;
        let Some(&first) = line.iter().find(|b| !b.is_ascii_whitespace()) else {
            continue;
        };
        // serde would read an array as the record's fields in order.
        if first != b'{' {
            return Err(format!(
                "line {number}: not a JSON object (one {{\"prompt\": …}} or {{\"messages\": \
                 […]}} object per line)"
            ));
        }
        let record: JsonlRecord = serde_json::from_slice(line).map_err(|e| {
            // A first line that stops short of a whole object, in a file that is one:
            // pretty-printed JSON.
            if number == 1 && e.is_eof() && serde_json::from_slice::<IgnoredAny>(text).is_ok() {
                format!("is one JSON document, {FORMATS}")
            } else {
                format!("line {number}: {}", json_error(&e))
            }
        })?;
        if record.output_tokens == Some(0) {
            return Err(format!("line {number}: output_tokens must be at least 1"));
        }
        let (prompt, reply) = match (record.prompt, record.messages) {
            (Some(text), None) => (DatasetPrompt::Text(text), None),
            (None, Some(mut messages)) => {
                let reply = if messages.last().is_some_and(|m| m.role == "assistant") {
                    messages.pop().map(|m| m.content)
                } else {
                    None
                };
                (DatasetPrompt::Messages(messages), reply)
            }
            (Some(_), Some(_)) => {
                return Err(format!(
                    "line {number}: has both \"prompt\" and \"messages\" (give one)"
                ));
            }
            (None, None) => {
                return Err(format!(
                    "line {number}: has neither \"prompt\" nor \"messages\""
                ));
            }
        };
        parsed.push(prompt, record.output_tokens, reply);
    }
    Ok(parsed)
}

/// A serde_json error of one line: its position within the line is only the column.
fn json_error(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let message = full.strip_suffix(&suffix).unwrap_or(&full);
    if e.is_syntax() || e.is_eof() {
        format!("not valid JSON: {message} (column {})", e.column())
    } else {
        format!("{message} (column {})", e.column())
    }
}

#[cfg(test)]
mod tests;
