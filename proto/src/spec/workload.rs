//! One entry of `[matrix] workloads`: what each request of a point asks for.
//!
//! - Fixed lengths (`{ input = 512, output = 128 }`): every request has exactly these.
//! - Length distributions (`dist = "uniform" | "normal" | "lognormal"`): `input` and
//!   `output` are the means and `input_spread` / `output_spread` the spread (uniform: the
//!   half-width, so lengths are drawn from mean ± spread; normal and log-normal: the
//!   standard deviation), clipped to `[*_min, *_max]` (default 1 and what
//!   `max_model_len` leaves). Each request is still exact to its own drawn length.
//! - Shared prefixes (`prefix_groups = N, prefix_tokens = P`): request i belongs to
//!   group i mod N, and its prompt starts with its group's P-token prefix followed by a
//!   unique suffix up to its input length, so an engine with prefix caching computes
//!   each group's prefix once.
//! - Datasets (`dataset = "file"`): prompts from a local file on the agent's host (under
//!   one of the agent's `dataset_dirs`): ShareGPT JSON, or JSONL of `{"prompt": …}`,
//!   `{"messages": […]}` or `{"prompt": …, "output_tokens": N}`; see the agent's
//!   `load::dataset`. `input` is left out (the data decides); `output` is the output
//!   length of requests whose entry names none (default: the reply's length where the
//!   entry has one, as vLLM's ShareGPT sampling).
//!
//! The sampling is seeded by `[load] seed`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How lengths vary between the requests of a workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum LengthDist {
    /// Every request has the mean length.
    #[default]
    Fixed,
    /// Uniform over mean ± spread.
    Uniform,
    /// Normal with the mean and standard deviation `spread`.
    Normal,
    /// Log-normal with the mean and standard deviation `spread` (of the lengths, not of
    /// their logarithms).
    Lognormal,
}

impl LengthDist {
    pub fn as_str(self) -> &'static str {
        match self {
            LengthDist::Fixed => "fixed",
            LengthDist::Uniform => "uniform",
            LengthDist::Normal => "normal",
            LengthDist::Lognormal => "lognormal",
        }
    }
}

/// One workload of the matrix (see the module docs).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct WorkloadEntry {
    /// Input tokens (the mean with a distribution; 0 with a dataset).
    #[serde(default)]
    pub input: u32,
    /// Output tokens (the mean with a distribution; with a dataset: 0 = the data's).
    #[serde(default)]
    pub output: u32,
    #[serde(default)]
    pub dist: LengthDist,
    #[serde(default)]
    pub input_spread: u32,
    #[serde(default)]
    pub output_spread: u32,
    pub input_min: Option<u32>,
    pub input_max: Option<u32>,
    pub output_min: Option<u32>,
    pub output_max: Option<u32>,
    /// Shared-prefix groups (0: no shared prefix).
    #[serde(default)]
    pub prefix_groups: u32,
    /// Tokens of each group's shared prefix.
    #[serde(default)]
    pub prefix_tokens: u32,
    /// A dataset file, relative to one of the agent's `dataset_dirs`.
    pub dataset: Option<String>,
    /// A trace file (arrival offset, input and output tokens per request), relative to
    /// one of the agent's `dataset_dirs`; replayed with `[load] mode = "trace"`.
    pub trace: Option<String>,
    /// Trace replay speed: offsets are divided by it (2 = twice as fast; default 1).
    pub time_scale: Option<f64>,
    /// Multi-turn conversations (concurrency mode, chat endpoint): each user sends
    /// `turns` requests in a row, turn k+1 carrying every earlier user message and the
    /// engine's actual answers, then a new `input`-token user message (0 or 1: single
    /// requests).
    #[serde(default)]
    pub turns: u32,
    /// A user's pause between receiving an answer and sending the next turn, in ms.
    #[serde(default)]
    pub think_time_ms: u32,
    /// A plain text file (relative to one of the agent's `dataset_dirs`) whose words
    /// make up synthetic prompts instead of common English words: runs of the corpus's
    /// words from seeded starts, still exact to each request's length.
    pub corpus: Option<String>,
    /// Datasets: sample with replacement (each request an independent seeded draw)
    /// instead of without replacement while the data lasts.
    #[serde(default)]
    pub replacement: bool,
}

impl WorkloadEntry {
    /// A fixed-length workload.
    pub fn fixed(input: u32, output: u32) -> Self {
        WorkloadEntry {
            input,
            output,
            ..WorkloadEntry::default()
        }
    }

    /// Whether every request has the same lengths and a prompt of its own (the workload
    /// every sweep had before distributions, prefixes and datasets).
    pub fn is_fixed(&self) -> bool {
        self.dist == LengthDist::Fixed
            && self.prefix_groups == 0
            && self.dataset.is_none()
            && self.trace.is_none()
            && self.corpus.is_none()
            && self.turns <= 1
    }

    /// Whether requests come as multi-turn conversations.
    pub fn is_multi_turn(&self) -> bool {
        self.turns >= 2
    }
}

impl fmt::Display for WorkloadEntry {
    /// `512/128`, `normal 512±128/128±32`, `512/128 prefix 4x384`, `dataset chat.jsonl/128`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let len = |v: u32, spread: u32| {
            if self.dist == LengthDist::Fixed {
                v.to_string()
            } else {
                format!("{v}±{spread}")
            }
        };
        if let Some(t) = &self.trace {
            write!(f, "trace {t}")?;
            if let Some(scale) = self.time_scale {
                write!(f, " x{scale}")?;
            }
            return Ok(());
        }
        if let Some(d) = &self.dataset {
            write!(f, "dataset {d}/")?;
            if self.output == 0 {
                f.write_str("data")?;
            } else {
                write!(f, "{}", len(self.output, self.output_spread))?;
            }
        } else {
            if self.dist != LengthDist::Fixed {
                write!(f, "{} ", self.dist.as_str())?;
            }
            write!(
                f,
                "{}/{}",
                len(self.input, self.input_spread),
                len(self.output, self.output_spread)
            )?;
        }
        if self.prefix_groups > 0 {
            write!(f, " prefix {}x{}", self.prefix_groups, self.prefix_tokens)?;
        }
        if let Some(c) = &self.corpus {
            write!(f, " corpus {c}")?;
        }
        if self.replacement {
            f.write_str(" with replacement")?;
        }
        if self.is_multi_turn() {
            write!(f, " {} turns", self.turns)?;
            if self.think_time_ms > 0 {
                write!(f, " think {} ms", self.think_time_ms)?;
            }
        }
        Ok(())
    }
}

/// The most turns a conversation may have.
pub const MAX_TURNS: u32 = 64;

/// The longest dataset name (a path relative to an agent's dataset directory).
pub const MAX_DATASET_NAME: usize = 255;

/// The clip bounds of one length: `[min, max]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub min: u32,
    pub max: u32,
}

impl WorkloadEntry {
    /// The bounds input lengths are clipped to (see [`WorkloadEntry::bounds`]).
    pub fn input_bounds(&self) -> Bounds {
        self.bounds(
            self.input,
            self.input_spread,
            self.input_min,
            self.input_max,
        )
    }

    /// The bounds output lengths are clipped to.
    pub fn output_bounds(&self) -> Bounds {
        self.bounds(
            self.output,
            self.output_spread,
            self.output_min,
            self.output_max,
        )
    }

    /// Fixed: the length itself. A distribution: `*_min` (default 1) to `*_max` (default
    /// mean + spread for uniform, mean + 4 spreads for normal and log-normal).
    fn bounds(&self, mean: u32, spread: u32, min: Option<u32>, max: Option<u32>) -> Bounds {
        let reach = match self.dist {
            LengthDist::Fixed => {
                return Bounds {
                    min: mean,
                    max: mean,
                };
            }
            LengthDist::Uniform => spread,
            LengthDist::Normal | LengthDist::Lognormal => spread.saturating_mul(4),
        };
        Bounds {
            min: min.unwrap_or(1),
            max: max.unwrap_or(mean.saturating_add(reach)),
        }
    }

    /// Checks one entry (`at` is its field path, e.g. `matrix.workloads[2]`); the error
    /// is the field under it and the message.
    pub fn problem(&self, max_model_len: u32) -> Option<(&'static str, String)> {
        if let Some(c) = &self.corpus {
            if let Some(problem) = file_name_problem(c) {
                return Some(("corpus", problem));
            }
            if self.dataset.is_some() || self.trace.is_some() {
                return Some((
                    "corpus",
                    "fills synthetic prompts: a dataset or trace workload has its own".into(),
                ));
            }
        }
        if self.replacement && self.dataset.is_none() {
            return Some(("replacement", "only applies to a dataset workload".into()));
        }
        if self.think_time_ms > 0 && !self.is_multi_turn() {
            return Some((
                "think_time_ms",
                "only applies with turns = 2 or more".into(),
            ));
        }
        if self.is_multi_turn() {
            return self.conversation_problem(max_model_len);
        }
        if let Some(t) = &self.trace {
            return self.trace_problem(t);
        }
        if self.time_scale.is_some() {
            return Some(("time_scale", "only applies to a trace workload".into()));
        }
        if let Some(d) = &self.dataset {
            return self.dataset_problem(d);
        }
        if self.input == 0 {
            return Some(("input", "must be at least 1 token".into()));
        }
        if self.output == 0 {
            return Some(("output", "must be at least 1 token".into()));
        }
        if self.dist == LengthDist::Fixed {
            for (field, set) in [
                ("input_spread", self.input_spread != 0),
                ("output_spread", self.output_spread != 0),
                ("input_min", self.input_min.is_some()),
                ("input_max", self.input_max.is_some()),
                ("output_min", self.output_min.is_some()),
                ("output_max", self.output_max.is_some()),
            ] {
                if set {
                    return Some((
                        field,
                        "only applies with a length distribution (dist = \"uniform\", \
                         \"normal\" or \"lognormal\")"
                            .into(),
                    ));
                }
            }
        } else {
            for (field, spread) in [
                ("input_spread", self.input_spread),
                ("output_spread", self.output_spread),
            ] {
                if spread == 0 {
                    return Some((
                        field,
                        format!(
                            "must be at least 1 token with dist = \"{}\" (use dist = \"fixed\" \
                             for no spread)",
                            self.dist.as_str()
                        ),
                    ));
                }
            }
            for (name, mean, b) in [
                ("input", self.input, self.input_bounds()),
                ("output", self.output, self.output_bounds()),
            ] {
                if b.min == 0 || b.min > mean || b.max < mean {
                    let field = if b.min == 0 || b.min > mean {
                        if name == "input" {
                            "input_min"
                        } else {
                            "output_min"
                        }
                    } else if name == "input" {
                        "input_max"
                    } else {
                        "output_max"
                    };
                    return Some((
                        field,
                        format!(
                            "the {name} bounds {}..={} must hold the mean {mean} (and start at 1 \
                             or more)",
                            b.min, b.max
                        ),
                    ));
                }
            }
        }
        let (input, output) = (self.input_bounds(), self.output_bounds());
        if u64::from(input.max) + u64::from(output.max) > u64::from(max_model_len) {
            let hint = if self.dist == LengthDist::Fixed {
                String::new()
            } else {
                " (the longest drawn lengths; lower input_max / output_max)".into()
            };
            return Some((
                "output",
                format!(
                    "input {} + output {} tokens exceed engine.max_model_len {max_model_len}{hint}",
                    input.max, output.max
                ),
            ));
        }
        match (self.prefix_groups, self.prefix_tokens) {
            (0, 0) => {}
            (0, _) => {
                return Some(("prefix_groups", "prefix_tokens needs prefix_groups".into()));
            }
            (_, 0) => {
                return Some((
                    "prefix_tokens",
                    "must be at least 1 token with prefix_groups".into(),
                ));
            }
            (_, p) if p >= input.min => {
                return Some((
                    "prefix_tokens",
                    format!(
                        "{p} leaves no unique suffix: every input must be longer than the \
                         prefix (shortest input {})",
                        input.min
                    ),
                ));
            }
            _ => {}
        }
        None
    }

    /// The fields that shape synthetic prompts (distribution, spreads, bounds, shared
    /// prefix) and whether each is set: none applies to a dataset or a trace.
    fn shape_fields(&self) -> [(&'static str, bool); 9] {
        [
            ("dist", self.dist != LengthDist::Fixed),
            ("prefix_groups", self.prefix_groups != 0),
            ("prefix_tokens", self.prefix_tokens != 0),
            ("input_spread", self.input_spread != 0),
            ("output_spread", self.output_spread != 0),
            ("input_min", self.input_min.is_some()),
            ("input_max", self.input_max.is_some()),
            ("output_min", self.output_min.is_some()),
            ("output_max", self.output_max.is_some()),
        ]
    }

    /// A multi-turn workload: fixed lengths only, and the last turn (every user message
    /// and answer of the conversation) must fit `max_model_len`, with room for the chat
    /// template (not counted here: the engine refuses a longer prompt).
    fn conversation_problem(&self, max_model_len: u32) -> Option<(&'static str, String)> {
        let given = [
            ("dataset", self.dataset.is_some()),
            ("trace", self.trace.is_some()),
        ];
        // (A corpus may fill a conversation's messages.)
        if let Some((field, _)) = given.into_iter().chain(self.shape_fields()).find(|f| f.1) {
            return Some((
                field,
                "does not apply to a multi-turn workload (fixed input and output per turn)".into(),
            ));
        }
        if self.input == 0 || self.output == 0 {
            return Some((
                "input",
                "a multi-turn workload needs input and output tokens per turn".into(),
            ));
        }
        if self.turns > MAX_TURNS {
            return Some(("turns", format!("{} is more than {MAX_TURNS}", self.turns)));
        }
        let last = u64::from(self.turns) * (u64::from(self.input) + u64::from(self.output));
        if last > u64::from(max_model_len) {
            return Some((
                "turns",
                format!(
                    "{} turns of {} + {} tokens ({last}) exceed engine.max_model_len {max_model_len}",
                    self.turns, self.input, self.output
                ),
            ));
        }
        None
    }

    fn trace_problem(&self, name: &str) -> Option<(&'static str, String)> {
        if let Some(problem) = file_name_problem(name) {
            return Some(("trace", problem));
        }
        if let Some(scale) = self.time_scale
            && !(scale.is_finite() && scale > 0.0 && scale <= 1e6)
        {
            return Some((
                "time_scale",
                format!("{scale} is not a positive factor (2 = twice as fast)"),
            ));
        }
        let given = [
            ("input", self.input != 0),
            ("output", self.output != 0),
            ("dataset", self.dataset.is_some()),
        ];
        if let Some((field, _)) = given.into_iter().chain(self.shape_fields()).find(|f| f.1) {
            return Some((
                field,
                "does not apply to a trace workload: the trace gives each request's lengths".into(),
            ));
        }
        None
    }

    fn dataset_problem(&self, name: &str) -> Option<(&'static str, String)> {
        if let Some(problem) = file_name_problem(name) {
            return Some(("dataset", problem));
        }
        let given = [("input", self.input != 0)];
        if let Some((field, _)) = given.into_iter().chain(self.shape_fields()).find(|f| f.1) {
            return Some((
                field,
                "does not apply to a dataset workload: the data decides the prompts".into(),
            ));
        }
        None
    }
}

/// Why a dataset or trace file name is refused, if it is: it must be a relative path
/// inside one of the agent's dataset directories.
fn file_name_problem(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > MAX_DATASET_NAME {
        return Some(format!("must be 1 to {MAX_DATASET_NAME} bytes long"));
    }
    let bad_part = name
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..");
    if name.starts_with('/') || bad_part || name.chars().any(char::is_control) {
        return Some(format!(
            "{name:?} is not a relative path inside a dataset directory (no leading '/', no \
             '.' or '..' parts)"
        ));
    }
    None
}
