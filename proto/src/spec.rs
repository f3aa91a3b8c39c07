//! The sweep file: what a user submits with `controllerctl submit sweep.toml`.
//!
//! Parsing is strict: unknown fields and impossible values are errors that name the line,
//! the column and the field ([`SpecError`]). [`SweepSpec::expand`] turns a valid sweep into
//! the ordered list of points (GPU count × workload × batch size) the controller schedules.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::error::SpecError;
use crate::pb;

/// Largest batch size a sweep may ask for.
pub const MAX_BATCH_SIZE: u32 = 65_536;

/// A parsed, validated sweep file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepSpec {
    /// Human name of the sweep; part of the sweep id.
    pub name: Spanned<String>,
    /// Model to serve, as the engine knows it (e.g. a Hugging Face id or a local folder).
    pub model: Spanned<String>,
    pub engine: EngineSection,
    pub matrix: MatrixSection,
    #[serde(default)]
    pub load: LoadSection,
    #[serde(default)]
    pub placement: PlacementSection,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EngineKind {
    Vllm,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Runtime {
    /// The agent spawns the engine as a local process (its process group is stopped after).
    Process,
    /// An engine that already runs at `url`; no lifecycle.
    External,
}

/// `[engine]`: the vLLM settings of the seed workflow. Tensor parallel size is not set
/// here: it always equals the point's GPU count.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSection {
    pub kind: EngineKind,
    pub runtime: Runtime,
    /// Base URL of an `external` engine, e.g. `http://10.0.0.5:8000`.
    pub url: Option<Spanned<String>>,
    /// Name the engine serves the model under (`--served-model-name`); defaults to `model`.
    pub served_model_name: Option<String>,
    #[serde(default = "default_max_model_len")]
    pub max_model_len: Spanned<u32>,
    #[serde(default = "default_gpu_memory_utilization")]
    pub gpu_memory_utilization: Spanned<f64>,
    #[serde(default = "default_block_size")]
    pub block_size: Spanned<u32>,
    #[serde(default = "default_max_num_batched_tokens")]
    pub max_num_batched_tokens: Spanned<u32>,
    #[serde(default = "default_max_num_seqs")]
    pub max_num_seqs: Spanned<u32>,
    #[serde(default)]
    pub enforce_eager: bool,
    #[serde(default)]
    pub prefix_caching: bool,
    #[serde(default)]
    pub extra_args: Vec<String>,
    /// How long the engine may take to become ready, in seconds (first starts download
    /// weights).
    #[serde(default = "default_startup_timeout_s")]
    pub startup_timeout_s: Spanned<u32>,
}

fn default_max_model_len() -> Spanned<u32> {
    Spanned::new(0..0, 4096)
}
fn default_gpu_memory_utilization() -> Spanned<f64> {
    Spanned::new(0..0, 0.9)
}
fn default_block_size() -> Spanned<u32> {
    Spanned::new(0..0, 16)
}
fn default_max_num_batched_tokens() -> Spanned<u32> {
    Spanned::new(0..0, 8192)
}
fn default_max_num_seqs() -> Spanned<u32> {
    Spanned::new(0..0, 256)
}
fn default_startup_timeout_s() -> Spanned<u32> {
    Spanned::new(0..0, 900)
}

/// `[matrix]`: what the sweep varies.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatrixSection {
    /// GPU counts; each is also the tensor-parallel size.
    pub gpus: Spanned<Vec<Spanned<u32>>>,
    /// A list (`[1, 4, 16]`) or `"powers-of-2"` (1, 2, 4, … up to `max_batch_size`).
    pub batch_sizes: Spanned<BatchSizes>,
    pub max_batch_size: Option<Spanned<u32>>,
    pub workloads: Spanned<Vec<Spanned<WorkloadEntry>>>,
}

/// One input/output token pair.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WorkloadEntry {
    pub input: u32,
    pub output: u32,
}

/// Batch sizes as written in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchSizes {
    List(Vec<Spanned<u32>>),
    PowersOf2,
}

impl<'de> Deserialize<'de> for BatchSizes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BatchVisitor;
        impl<'de> Visitor<'de> for BatchVisitor {
            type Value = BatchSizes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of batch sizes or \"powers-of-2\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<BatchSizes, E> {
                match v {
                    "powers-of-2" => Ok(BatchSizes::PowersOf2),
                    other => Err(E::invalid_value(de::Unexpected::Str(other), &self)),
                }
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<BatchSizes, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = seq.next_element::<Spanned<u32>>()? {
                    out.push(v);
                }
                Ok(BatchSizes::List(out))
            }
        }
        deserializer.deserialize_any(BatchVisitor)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum LoadMode {
    /// The seed's batch: N requests sent together, repeated for `waves` waves.
    #[default]
    Burst,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Endpoint {
    #[default]
    Chat,
    Completions,
    /// Probe `/v1/completions`, fall back to chat when the engine refuses it.
    Auto,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Chat => "chat",
            Endpoint::Completions => "completions",
            Endpoint::Auto => "auto",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "chat" => Some(Endpoint::Chat),
            "completions" => Some(Endpoint::Completions),
            "auto" => Some(Endpoint::Auto),
            _ => None,
        }
    }
}

/// `[load]`: how the agent drives each point.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadSection {
    #[serde(default)]
    pub mode: LoadMode,
    #[serde(default)]
    pub endpoint: Endpoint,
    /// Per-point timeout in seconds (the seed needed 1200 for large batches).
    #[serde(default = "default_timeout_s")]
    pub timeout_s: Spanned<u32>,
    /// Requests sent before the measured ones, excluded from results.
    #[serde(default)]
    pub warmup_requests: u32,
    /// How many bursts of N requests are measured per point.
    #[serde(default = "default_waves")]
    pub waves: Spanned<u32>,
    /// Seed for prompt generation: the same spec yields the same prompts.
    #[serde(default)]
    pub seed: u64,
}

fn default_timeout_s() -> Spanned<u32> {
    Spanned::new(0..0, 1200)
}
fn default_waves() -> Spanned<u32> {
    Spanned::new(0..0, 1)
}

impl Default for LoadSection {
    fn default() -> Self {
        LoadSection {
            mode: LoadMode::Burst,
            endpoint: Endpoint::Chat,
            timeout_s: default_timeout_s(),
            warmup_requests: 0,
            waves: default_waves(),
            seed: 0,
        }
    }
}

/// `[placement]`: which agents may run the sweep. Empty means any agent.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlacementSection {
    /// Agent names; a point may run on any of them.
    #[serde(default)]
    pub agents: Vec<String>,
    /// Labels an agent must carry (all of them).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl PlacementSection {
    /// Whether an agent with this name and labels may run the sweep.
    pub fn matches(
        &self,
        agent_name: &str,
        labels: &std::collections::HashMap<String, String>,
    ) -> bool {
        let name_ok = self.agents.is_empty() || self.agents.iter().any(|a| a == agent_name);
        let labels_ok = self
            .labels
            .iter()
            .all(|(k, v)| labels.get(k).is_some_and(|have| have == v));
        name_ok && labels_ok
    }
}

/// One point of the expanded plan.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedPoint {
    pub index: u32,
    pub gpus: u32,
    pub workload: WorkloadEntry,
    pub batch_size: u32,
}

impl SweepSpec {
    /// Parses and validates a sweep file. `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, SpecError> {
        let spec: SweepSpec = toml::from_str(text).map_err(|e| toml_error(text, file, &e))?;
        spec.validate(text, file)?;
        Ok(spec)
    }

    fn validate(&self, text: &str, file: &str) -> Result<(), SpecError> {
        let err = |span: Range<usize>, field: &str, message: String| {
            Err(located(text, file, span, field, message))
        };
        if self.name.get_ref().trim().is_empty() {
            return err(self.name.span(), "name", "must not be empty".into());
        }
        if !self
            .name
            .get_ref()
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return err(
                self.name.span(),
                "name",
                "may hold only ASCII letters, digits, '-', '_' and '.'".into(),
            );
        }
        if self.model.get_ref().trim().is_empty() {
            return err(self.model.span(), "model", "must not be empty".into());
        }
        let e = &self.engine;
        match (e.runtime, &e.url) {
            (Runtime::External, None) => {
                return err(
                    0..0,
                    "engine.url",
                    "runtime \"external\" needs `url`".into(),
                );
            }
            (Runtime::External, Some(url))
                if !(url.get_ref().starts_with("http://")
                    || url.get_ref().starts_with("https://")) =>
            {
                return err(
                    url.span(),
                    "engine.url",
                    "must start with http:// or https://".into(),
                );
            }
            (Runtime::Process, Some(url)) => {
                return err(
                    url.span(),
                    "engine.url",
                    "only runtime \"external\" takes a url".into(),
                );
            }
            _ => {}
        }
        let util = *e.gpu_memory_utilization.get_ref();
        if !(util > 0.0 && util <= 1.0) {
            return err(
                e.gpu_memory_utilization.span(),
                "engine.gpu_memory_utilization",
                format!("{util} is not in (0, 1]"),
            );
        }
        for (field, v) in [
            ("engine.max_model_len", &e.max_model_len),
            ("engine.block_size", &e.block_size),
            ("engine.max_num_batched_tokens", &e.max_num_batched_tokens),
            ("engine.max_num_seqs", &e.max_num_seqs),
            ("engine.startup_timeout_s", &e.startup_timeout_s),
        ] {
            if *v.get_ref() == 0 {
                return err(v.span(), field, "must be at least 1".into());
            }
        }
        if self.matrix.gpus.get_ref().is_empty() {
            return err(
                self.matrix.gpus.span(),
                "matrix.gpus",
                "must not be empty".into(),
            );
        }
        for (i, g) in self.matrix.gpus.get_ref().iter().enumerate() {
            if *g.get_ref() == 0 {
                return err(
                    g.span(),
                    &format!("matrix.gpus[{i}]"),
                    "GPU count must be at least 1".into(),
                );
            }
        }
        match self.matrix.batch_sizes.get_ref() {
            BatchSizes::List(list) => {
                if list.is_empty() {
                    return err(
                        self.matrix.batch_sizes.span(),
                        "matrix.batch_sizes",
                        "must not be empty".into(),
                    );
                }
                for (i, b) in list.iter().enumerate() {
                    let v = *b.get_ref();
                    if v == 0 || v > MAX_BATCH_SIZE {
                        return err(
                            b.span(),
                            &format!("matrix.batch_sizes[{i}]"),
                            format!("batch size {v} is not in 1..={MAX_BATCH_SIZE}"),
                        );
                    }
                }
                if let Some(max) = &self.matrix.max_batch_size {
                    return err(
                        max.span(),
                        "matrix.max_batch_size",
                        "only applies with batch_sizes = \"powers-of-2\"".into(),
                    );
                }
            }
            BatchSizes::PowersOf2 => match &self.matrix.max_batch_size {
                None => {
                    return err(
                        self.matrix.batch_sizes.span(),
                        "matrix.max_batch_size",
                        "batch_sizes = \"powers-of-2\" needs max_batch_size".into(),
                    );
                }
                Some(max) if *max.get_ref() == 0 || *max.get_ref() > MAX_BATCH_SIZE => {
                    return err(
                        max.span(),
                        "matrix.max_batch_size",
                        format!("{} is not in 1..={MAX_BATCH_SIZE}", max.get_ref()),
                    );
                }
                Some(_) => {}
            },
        }
        if self.matrix.workloads.get_ref().is_empty() {
            return err(
                self.matrix.workloads.span(),
                "matrix.workloads",
                "must not be empty".into(),
            );
        }
        let max_len = *e.max_model_len.get_ref();
        for (i, w) in self.matrix.workloads.get_ref().iter().enumerate() {
            let wl = w.get_ref();
            if wl.input == 0 {
                return err(
                    w.span(),
                    &format!("matrix.workloads[{i}].input"),
                    "must be at least 1 token".into(),
                );
            }
            if wl.output == 0 {
                return err(
                    w.span(),
                    &format!("matrix.workloads[{i}].output"),
                    "must be at least 1 token".into(),
                );
            }
            if u64::from(wl.input) + u64::from(wl.output) > u64::from(max_len) {
                return err(
                    w.span(),
                    &format!("matrix.workloads[{i}].output"),
                    format!(
                        "input {} + output {} tokens exceed engine.max_model_len {max_len}",
                        wl.input, wl.output
                    ),
                );
            }
        }
        if *self.load.timeout_s.get_ref() == 0 {
            return err(
                self.load.timeout_s.span(),
                "load.timeout_s",
                "must be at least 1".into(),
            );
        }
        if *self.load.waves.get_ref() == 0 {
            return err(
                self.load.waves.span(),
                "load.waves",
                "must be at least 1".into(),
            );
        }
        Ok(())
    }

    /// Batch sizes in the order they run.
    pub fn batch_sizes(&self) -> Vec<u32> {
        match self.matrix.batch_sizes.get_ref() {
            BatchSizes::List(list) => list.iter().map(|b| *b.get_ref()).collect(),
            BatchSizes::PowersOf2 => {
                let max = self
                    .matrix
                    .max_batch_size
                    .as_ref()
                    .map_or(1, |m| *m.get_ref());
                std::iter::successors(Some(1u32), |b| b.checked_mul(2))
                    .take_while(|b| *b <= max)
                    .collect()
            }
        }
    }

    /// Expands the matrix into points, ordered so the engine restarts as rarely as
    /// possible: grouped by GPU count (the only engine setting the matrix varies), then
    /// workload, then ascending batch size.
    pub fn expand(&self) -> Vec<PlannedPoint> {
        let batches = self.batch_sizes();
        let mut points = Vec::new();
        let mut index = 0u32;
        for gpus in self.matrix.gpus.get_ref() {
            for w in self.matrix.workloads.get_ref() {
                for &batch_size in &batches {
                    points.push(PlannedPoint {
                        index,
                        gpus: *gpus.get_ref(),
                        workload: *w.get_ref(),
                        batch_size,
                    });
                    index += 1;
                }
            }
        }
        points
    }

    /// Name the engine serves the model under.
    pub fn served_model_name(&self) -> String {
        self.engine
            .served_model_name
            .clone()
            .unwrap_or_else(|| self.model.get_ref().clone())
    }

    /// The engine configuration as sent to agents.
    pub fn engine_wire(&self) -> pb::EngineSpec {
        let e = &self.engine;
        pb::EngineSpec {
            kind: "vllm".into(),
            runtime: match e.runtime {
                Runtime::Process => "process".into(),
                Runtime::External => "external".into(),
            },
            model: self.model.get_ref().clone(),
            served_model_name: self.served_model_name(),
            max_model_len: *e.max_model_len.get_ref(),
            gpu_memory_utilization: *e.gpu_memory_utilization.get_ref(),
            block_size: *e.block_size.get_ref(),
            max_num_batched_tokens: *e.max_num_batched_tokens.get_ref(),
            max_num_seqs: *e.max_num_seqs.get_ref(),
            enforce_eager: e.enforce_eager,
            enable_prefix_caching: e.prefix_caching,
            extra_args: e.extra_args.clone(),
            external_url: e
                .url
                .as_ref()
                .map(|u| u.get_ref().clone())
                .unwrap_or_default(),
            startup_timeout_s: *e.startup_timeout_s.get_ref(),
        }
    }

    /// The load settings as sent to agents.
    pub fn load_wire(&self) -> pb::LoadSpec {
        pb::LoadSpec {
            mode: "burst".into(),
            endpoint: self.load.endpoint.as_str().into(),
            timeout_s: *self.load.timeout_s.get_ref(),
            warmup_requests: self.load.warmup_requests,
            waves: *self.load.waves.get_ref(),
            seed: self.load.seed,
        }
    }
}

/// vLLM command-line flags for an engine spec at a GPU count (tensor parallel = GPUs).
/// The model and port are not included.
pub fn vllm_flags(engine: &pb::EngineSpec, gpus: u32) -> Vec<String> {
    let mut args = vec![
        "--served-model-name".to_string(),
        engine.served_model_name.clone(),
        "--tensor-parallel-size".into(),
        gpus.to_string(),
        "--max-model-len".into(),
        engine.max_model_len.to_string(),
        "--gpu-memory-utilization".into(),
        engine.gpu_memory_utilization.to_string(),
        "--block-size".into(),
        engine.block_size.to_string(),
        "--max-num-batched-tokens".into(),
        engine.max_num_batched_tokens.to_string(),
        "--max-num-seqs".into(),
        engine.max_num_seqs.to_string(),
    ];
    if engine.enforce_eager {
        args.push("--enforce-eager".into());
    }
    args.push(if engine.enable_prefix_caching {
        "--enable-prefix-caching".into()
    } else {
        "--no-enable-prefix-caching".into()
    });
    args.extend(engine.extra_args.iter().cloned());
    args
}

/// Directory-safe form of a model name for Hive partition values:
/// `meta-llama/Llama-3.2-1B` → `meta-llama--Llama-3.2-1B`.
pub fn model_slug(model: &str) -> String {
    let replaced = model.trim_matches('/').replace('/', "--");
    replaced
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text.as_bytes()[..offset];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |p| p + 1);
    let column = text
        .get(line_start..offset)
        .map_or(1, |s| s.chars().count() + 1);
    (line, column)
}

fn located(text: &str, file: &str, span: Range<usize>, field: &str, message: String) -> SpecError {
    // Defaulted fields carry the empty span 0..0: locate them at their section instead.
    let (line, column) = if span == (0..0) {
        section_line(text, field).unwrap_or((0, 0))
    } else {
        line_col(text, span.start)
    };
    SpecError {
        file: file.to_string(),
        line,
        column,
        field: field.to_string(),
        message,
    }
}

/// Line of the `[section]` header a dotted field lives in, for values that were defaulted.
fn section_line(text: &str, field: &str) -> Option<(usize, usize)> {
    let section = field.split('.').next()?;
    let header = format!("[{section}]");
    text.lines()
        .position(|l| l.trim() == header)
        .map(|i| (i + 1, 1))
}

fn toml_error(text: &str, file: &str, e: &toml::de::Error) -> SpecError {
    let span = e.span().unwrap_or(0..0);
    let (line, column) = if e.span().is_some() {
        line_col(text, span.start)
    } else {
        (0, 0)
    };
    // For unknown fields the span covers the offending key; name it.
    let message = e.message().trim().to_string();
    let field = key_at(text, &span).unwrap_or_default();
    SpecError {
        file: file.to_string(),
        line,
        column,
        field,
        message,
    }
}

/// The bare key written at `span`, when the span covers one (`foo` in `foo = 1`).
fn key_at(text: &str, span: &Range<usize>) -> Option<String> {
    let s = text.get(span.clone())?.trim();
    let rest = text.get(span.end..)?.trim_start();
    let is_key = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && rest.starts_with('=');
    is_key.then(|| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "demo"
model = "meta-llama/Llama-3.2-1B-Instruct"

[engine]
kind = "vllm"
runtime = "process"
max_model_len = 4096
block_size = 64
enforce_eager = true

[matrix]
gpus = [1, 2]
batch_sizes = "powers-of-2"
max_batch_size = 8
workloads = [{ input = 1024, output = 512 }, { input = 128, output = 128 }]

[load]
endpoint = "auto"
timeout_s = 600
"#;

    #[test]
    fn parses_and_expands_in_engine_order() {
        let spec = SweepSpec::parse(GOOD, "good.toml").unwrap();
        assert_eq!(spec.batch_sizes(), vec![1, 2, 4, 8]);
        let points = spec.expand();
        assert_eq!(points.len(), 2 * 2 * 4);
        // Grouped by GPU count first, so one engine start per GPU count.
        assert!(points[..8].iter().all(|p| p.gpus == 1));
        assert!(points[8..].iter().all(|p| p.gpus == 2));
        assert_eq!(points[3].batch_size, 8);
        assert_eq!(
            points[4].workload,
            WorkloadEntry {
                input: 128,
                output: 128
            }
        );
        assert_eq!(spec.load.endpoint, Endpoint::Auto);
        let flags = vllm_flags(&spec.engine_wire(), 2);
        let joined = flags.join(" ");
        assert!(joined.contains("--tensor-parallel-size 2"), "{joined}");
        assert!(joined.contains("--block-size 64"), "{joined}");
        assert!(joined.contains("--enforce-eager"), "{joined}");
        assert!(joined.contains("--no-enable-prefix-caching"), "{joined}");
    }

    #[test]
    fn unknown_field_names_line_and_field() {
        let bad = GOOD.replace("block_size = 64", "blocksize = 64");
        let err = SweepSpec::parse(&bad, "bad.toml").unwrap_err();
        assert_eq!(err.line, 9, "{err}");
        assert_eq!(err.field, "blocksize", "{err}");
        assert!(err.message.contains("unknown field"), "{err}");
    }

    #[test]
    fn batch_size_zero_is_rejected_with_location() {
        let bad = GOOD
            .replace("batch_sizes = \"powers-of-2\"", "batch_sizes = [1, 0, 4]")
            .replace("max_batch_size = 8\n", "");
        let err = SweepSpec::parse(&bad, "bad.toml").unwrap_err();
        assert_eq!(err.field, "matrix.batch_sizes[1]", "{err}");
        assert_eq!((err.line, err.column), (14, 19), "{err}");
        assert!(
            err.to_string()
                .starts_with("bad.toml:14:19: field `matrix.batch_sizes[1]`"),
            "{err}"
        );
    }

    #[test]
    fn output_above_max_model_len_is_rejected() {
        let bad = GOOD.replace(
            "{ input = 128, output = 128 }",
            "{ input = 128, output = 4000 }",
        );
        let err = SweepSpec::parse(&bad, "bad.toml").unwrap_err();
        assert_eq!(err.field, "matrix.workloads[1].output", "{err}");
        assert_eq!(err.line, 16, "{err}");
        assert!(
            err.message.contains("exceed engine.max_model_len 4096"),
            "{err}"
        );
    }

    #[test]
    fn wrong_type_and_bad_enum_name_the_line() {
        let bad = GOOD.replace("runtime = \"process\"", "runtime = \"kubernetes\"");
        let err = SweepSpec::parse(&bad, "bad.toml").unwrap_err();
        assert_eq!(err.line, 7, "{err}");
        assert!(err.message.contains("kubernetes"), "{err}");

        let bad = GOOD.replace("timeout_s = 600", "timeout_s = \"ten\"");
        let err = SweepSpec::parse(&bad, "bad.toml").unwrap_err();
        assert_eq!(err.line, 20, "{err}");
    }

    #[test]
    fn powers_of_two_need_a_max() {
        let bad = GOOD.replace("max_batch_size = 8\n", "");
        let err = SweepSpec::parse(&bad, "bad.toml").unwrap_err();
        assert_eq!(err.field, "matrix.max_batch_size", "{err}");
        assert_eq!(err.line, 14, "{err}");
    }

    #[test]
    fn model_slug_is_a_safe_partition_value() {
        assert_eq!(
            model_slug("meta-llama/Llama-3.2-1B"),
            "meta-llama--Llama-3.2-1B"
        );
        assert_eq!(model_slug("/models/x y=z"), "models--x_y_z");
    }

    #[test]
    fn placement_matches_names_and_labels() {
        let mut labels = std::collections::HashMap::new();
        labels.insert("gpu".to_string(), "b60".to_string());
        let p = PlacementSection {
            agents: vec![],
            labels: [("gpu".to_string(), "b60".to_string())].into(),
        };
        assert!(p.matches("a", &labels));
        labels.insert("gpu".to_string(), "h100".to_string());
        assert!(!p.matches("a", &labels));
        let p = PlacementSection {
            agents: vec!["b".into()],
            labels: BTreeMap::new(),
        };
        assert!(!p.matches("a", &labels));
        assert!(p.matches("b", &labels));
    }
}
