//! Parsing a sweep file and checking its values: every impossible or contradictory
//! setting is an error that names the field, the line and the column.

use std::ops::Range;

use toml::Spanned;

use super::limits::{DEFAULT_MAX_POINTS, MAX_NAME_LEN, MAX_SWEEP_FILE_BYTES, model_name_problem};
use super::locate::{line_col, located, toml_error};
use super::sections::{
    Arrival, BatchSizes, Endpoint, EngineKind, GPU_VENDORS, LoadMode, MAX_STAGES, OnEngineCrash,
    Runtime, StageEntry, SweepSpec,
};
use crate::error::SpecError;

/// Largest batch size a sweep may ask for.
pub const MAX_BATCH_SIZE: u32 = 65_536;

impl SweepSpec {
    /// Parses and validates a sweep file, allowing at most
    /// [`DEFAULT_MAX_POINTS`](super::DEFAULT_MAX_POINTS) points. `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, SpecError> {
        Self::parse_limited(text, file, DEFAULT_MAX_POINTS)
    }

    /// [`SweepSpec::parse`] allowing at most `max_points` points. The file's size is
    /// checked before it is parsed and the point count from the matrix sizes before
    /// anything is expanded, so a small file that would expand to millions of points
    /// costs nothing.
    pub fn parse_limited(text: &str, file: &str, max_points: u64) -> Result<Self, SpecError> {
        if text.len() > MAX_SWEEP_FILE_BYTES {
            return Err(SpecError {
                file: file.to_string(),
                line: 0,
                column: 0,
                field: String::new(),
                message: format!(
                    "the sweep file is {} bytes; at most {MAX_SWEEP_FILE_BYTES} bytes are accepted",
                    text.len()
                ),
            });
        }
        let mut spec: SweepSpec = toml::from_str(text).map_err(|e| toml_error(text, file, &e))?;
        spec.validate(text, file)?;
        spec.drop_duplicates(text);
        spec.validate_point_count(text, file, max_points)?;
        Ok(spec)
    }

    /// Drops repeated GPU counts, batch sizes, rates and workloads (each would measure the
    /// same point again), keeping the first, and says so in [`SweepSpec::notes`].
    fn drop_duplicates(&mut self, text: &str) {
        let mut notes = Vec::new();
        let matrix = &mut self.matrix;
        dedupe(
            text,
            "matrix.gpus",
            matrix.gpus.get_mut(),
            |g| u64::from(*g.get_ref()),
            |g| g.get_ref().to_string(),
            &mut notes,
        );
        if let Some(b) = matrix.batch_sizes.as_mut()
            && let BatchSizes::List(list) = b.get_mut()
        {
            dedupe(
                text,
                "matrix.batch_sizes",
                list,
                |b| u64::from(*b.get_ref()),
                |b| b.get_ref().to_string(),
                &mut notes,
            );
        }
        if let Some(r) = matrix.rates.as_mut() {
            dedupe(
                text,
                "matrix.rates",
                r.get_mut(),
                |r| r.get_ref().to_bits(),
                |r| r.get_ref().to_string(),
                &mut notes,
            );
        }
        dedupe(
            text,
            "matrix.workloads",
            matrix.workloads.get_mut(),
            |w| format!("{:?}", w.get_ref()),
            |w| format!("workload {}", w.get_ref()),
            &mut notes,
        );
        self.notes.extend(notes);
    }

    fn validate_point_count(&self, text: &str, file: &str, max: u64) -> Result<(), SpecError> {
        let n = self.point_count();
        if n.is_none_or(|n| n > max) {
            let count = n.map_or_else(|| "more than 2^64".to_string(), |n| n.to_string());
            let gpus = self.matrix.gpus.get_ref().len();
            let workloads = self.matrix.workloads.get_ref().len();
            return Err(located(
                text,
                file,
                self.matrix.gpus.span(),
                "matrix",
                format!(
                    "expands to {count} points ({gpus} GPU counts x {workloads} workloads x \
                     load levels); the limit is {max} points per sweep"
                ),
            ));
        }
        Ok(())
    }

    fn validate(&self, text: &str, file: &str) -> Result<(), SpecError> {
        let err = |span: Range<usize>, field: &str, message: String| {
            Err(located(text, file, span, field, message))
        };
        if self.name.get_ref().trim().is_empty() {
            return err(self.name.span(), "name", "must not be empty".into());
        }
        if self.name.get_ref().len() > MAX_NAME_LEN {
            return err(
                self.name.span(),
                "name",
                format!(
                    "is {} characters long; at most {MAX_NAME_LEN} (sweep ids, result and spool \
                     file names are built from it)",
                    self.name.get_ref().len()
                ),
            );
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
        if let Some(problem) = model_name_problem(self.model.get_ref()) {
            return err(self.model.span(), "model", problem);
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
            (Runtime::Process | Runtime::Docker, Some(url)) => {
                return err(
                    url.span(),
                    "engine.url",
                    "only runtime \"external\" takes a url".into(),
                );
            }
            _ => {}
        }
        match (e.runtime, &e.image) {
            (Runtime::Docker, None) => {
                return err(
                    0..0,
                    "engine.image",
                    "runtime \"docker\" needs `image`".into(),
                );
            }
            (Runtime::Docker, Some(image)) if image.get_ref().trim().is_empty() => {
                return err(image.span(), "engine.image", "must not be empty".into());
            }
            (Runtime::Process | Runtime::External, Some(image)) => {
                return err(
                    image.span(),
                    "engine.image",
                    "only runtime \"docker\" takes an image".into(),
                );
            }
            _ => {}
        }
        if e.kind == EngineKind::Transformers {
            if let Some(name) = e
                .served_model_name
                .as_ref()
                .filter(|n| *n != self.model.get_ref())
            {
                return err(
                    0..0,
                    "engine.served_model_name",
                    format!(
                        "engine kind \"transformers\" serves the model under its path {:?}, \
                         not {name:?}: leave served_model_name out",
                        self.model.get_ref()
                    ),
                );
            }
            if let Some(g) = self
                .matrix
                .gpus
                .get_ref()
                .iter()
                .find(|g| *g.get_ref() != 1)
            {
                return err(
                    g.span(),
                    "matrix.gpus",
                    format!(
                        "engine kind \"transformers\" serves on one GPU, not {}",
                        g.get_ref()
                    ),
                );
            }
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
        self.validate_load_axis(text, file)?;
        if let Some(slo) = &self.slo {
            slo.validate(text, file)?;
        }
        if let Some(search) = &self.search {
            let mode = self.load.mode;
            let axis = (mode.as_str(), mode != LoadMode::Rate);
            search.validate(text, file, axis, MAX_BATCH_SIZE, self.slo.is_some())?;
        }
        match self
            .matrix
            .batch_sizes
            .as_ref()
            .map(|b| (b.get_ref(), b.span()))
        {
            None => {}
            Some((BatchSizes::List(list), span)) => {
                if list.is_empty() {
                    return err(span, "matrix.batch_sizes", "must not be empty".into());
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
            Some((BatchSizes::PowersOf2, span)) => match &self.matrix.max_batch_size {
                None => {
                    return err(
                        span,
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
            if let Some((field, message)) = w.get_ref().problem(max_len) {
                return err(w.span(), &format!("matrix.workloads[{i}].{field}"), message);
            }
            let conversation = w.get_ref().is_multi_turn();
            if conversation
                && (self.load.mode != LoadMode::Concurrency
                    || self.load.endpoint != Endpoint::Chat
                    || self.load.stages.is_some())
            {
                return err(
                    w.span(),
                    &format!("matrix.workloads[{i}].turns"),
                    "multi-turn conversations run in load.mode = \"concurrency\" (users) with \
                     endpoint = \"chat\" and no stages"
                        .into(),
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
        let idle = *self.load.idle_timeout_s.get_ref();
        if !(idle.is_finite() && idle > 0.0) {
            return err(
                self.load.idle_timeout_s.span(),
                "load.idle_timeout_s",
                format!("{idle} is not a positive number of seconds"),
            );
        }
        let warmup = &self.load.warmup;
        if *warmup.max_waves.get_ref() == 1 {
            return err(
                warmup.max_waves.span(),
                "load.warmup.max_waves",
                "must be 0 (no converging warm-up) or at least 2: convergence compares two \
                 consecutive waves"
                    .into(),
            );
        }
        let tolerance = *warmup.tolerance.get_ref();
        if !(tolerance > 0.0 && tolerance < 1.0) {
            return err(
                warmup.tolerance.span(),
                "load.warmup.tolerance",
                format!("{tolerance} is not a share in (0, 1), e.g. 0.03 for 3 %"),
            );
        }
        let placement = &self.placement;
        if let Some(v) = &placement.gpu_vendor {
            let lower = v.get_ref().to_lowercase();
            if !GPU_VENDORS.contains(&lower.as_str()) {
                return err(
                    v.span(),
                    "placement.gpu_vendor",
                    format!(
                        "\"{}\" is not one of {}",
                        v.get_ref(),
                        GPU_VENDORS.join(", ")
                    ),
                );
            }
        }
        if let Some(m) = &placement.gpu_model
            && m.get_ref().trim().is_empty()
        {
            return err(m.span(), "placement.gpu_model", "must not be empty".into());
        }
        if placement.agents.iter().any(|a| a.trim().is_empty()) {
            return err(0..0, "placement.agents", "holds an empty name".into());
        }
        let policy = &self.policy;
        if let Some(r) = &policy.retries {
            if policy.on_engine_crash != OnEngineCrash::Retry {
                return err(
                    r.span(),
                    "policy.retries",
                    format!(
                        "only applies with on_engine_crash = \"retry\" (it is \"{}\")",
                        policy.on_engine_crash.as_str()
                    ),
                );
            }
            if *r.get_ref() == 0 {
                return err(
                    r.span(),
                    "policy.retries",
                    "must be at least 1 with on_engine_crash = \"retry\"".into(),
                );
            }
        }
        if let Some(t) = &policy.point_timeout_s
            && *t.get_ref() == 0
        {
            return err(
                t.span(),
                "policy.point_timeout_s",
                "must be at least 1".into(),
            );
        }
        if let Some(s) = &policy.max_failed_share
            && !(0.0..=1.0).contains(s.get_ref())
        {
            return err(
                s.span(),
                "policy.max_failed_share",
                format!("must be between 0 and 1 (it is {})", s.get_ref()),
            );
        }
        Ok(())
    }

    /// `[load] stages`: rate or concurrency mode, each stage a positive duration and the
    /// mode's load, and no other load axis (matrix rates or batch sizes, a search, a
    /// duration or request count).
    fn validate_stages(
        &self,
        text: &str,
        file: &str,
        stages: &Spanned<Vec<Spanned<StageEntry>>>,
    ) -> Result<(), SpecError> {
        let err = |span: Range<usize>, field: &str, message: String| {
            Err(located(text, file, span, field, message))
        };
        let mode = self.load.mode;
        if !matches!(mode, LoadMode::Rate | LoadMode::Concurrency) {
            return err(
                stages.span(),
                "load.stages",
                format!(
                    "stages apply to rate and concurrency mode (mode is \"{}\")",
                    mode.as_str()
                ),
            );
        }
        if stages.get_ref().is_empty() || stages.get_ref().len() > MAX_STAGES {
            return err(
                stages.span(),
                "load.stages",
                format!("needs 1 to {MAX_STAGES} stages"),
            );
        }
        for (field, span) in [
            (
                "matrix.batch_sizes",
                self.matrix.batch_sizes.as_ref().map(Spanned::span),
            ),
            (
                "matrix.rates",
                self.matrix.rates.as_ref().map(Spanned::span),
            ),
            (
                "load.duration_s",
                self.load.duration_s.as_ref().map(Spanned::span),
            ),
            (
                "load.requests",
                self.load.requests.as_ref().map(Spanned::span),
            ),
            ("search", self.search.as_ref().map(|s| s.max.span())),
        ] {
            if let Some(span) = span {
                return err(
                    span,
                    field,
                    "a staged point takes its loads and durations from load.stages; leave it out"
                        .into(),
                );
            }
        }
        for (i, s) in stages.get_ref().iter().enumerate() {
            let stage = s.get_ref();
            let at = |f: &str| format!("load.stages[{i}].{f}");
            if !(stage.duration_s.is_finite() && stage.duration_s > 0.0) {
                return err(
                    s.span(),
                    &at("duration_s"),
                    format!("{} is not a positive number of seconds", stage.duration_s),
                );
            }
            match (mode, stage.rate, stage.concurrency) {
                (LoadMode::Rate, Some(r), None) if r.is_finite() && r > 0.0 && r <= 1e6 => {}
                (LoadMode::Rate, Some(r), None) => {
                    return err(
                        s.span(),
                        &at("rate"),
                        format!("rate {r} is not in (0, 1000000]"),
                    );
                }
                (LoadMode::Concurrency, None, Some(c)) if (1..=MAX_BATCH_SIZE).contains(&c) => {}
                (LoadMode::Concurrency, None, Some(c)) => {
                    return err(
                        s.span(),
                        &at("concurrency"),
                        format!("{c} is not in 1..={MAX_BATCH_SIZE}"),
                    );
                }
                (LoadMode::Rate, _, _) => {
                    return err(
                        s.span(),
                        &at("rate"),
                        "rate mode stages need `rate` (and no `concurrency`)".into(),
                    );
                }
                _ => {
                    return err(
                        s.span(),
                        &at("concurrency"),
                        "concurrency mode stages need `concurrency` (and no `rate`)".into(),
                    );
                }
            }
        }
        Ok(())
    }

    /// Checks that the matrix varies what the load mode needs (batch sizes for burst and
    /// concurrency, rates for rate mode) and that the mode's own settings make sense.
    fn validate_load_axis(&self, text: &str, file: &str) -> Result<(), SpecError> {
        let err = |span: Range<usize>, field: &str, message: String| {
            Err(located(text, file, span, field, message))
        };
        let load = &self.load;
        let mode = load.mode;
        if self.search.is_some() {
            // A search chooses its loads itself.
            for (field, span) in [
                (
                    "matrix.batch_sizes",
                    self.matrix.batch_sizes.as_ref().map(Spanned::span),
                ),
                (
                    "matrix.rates",
                    self.matrix.rates.as_ref().map(Spanned::span),
                ),
                (
                    "matrix.max_batch_size",
                    self.matrix.max_batch_size.as_ref().map(Spanned::span),
                ),
            ] {
                if let Some(span) = span {
                    return err(
                        span,
                        field,
                        "a [search] sweep chooses its loads itself (search.min .. search.max); \
                         leave it out"
                            .into(),
                    );
                }
            }
        }
        let traces = self
            .matrix
            .workloads
            .get_ref()
            .iter()
            .position(|w| w.get_ref().trace.is_some());
        let plain = self
            .matrix
            .workloads
            .get_ref()
            .iter()
            .position(|w| w.get_ref().trace.is_none());
        if mode == LoadMode::Trace {
            if let Some(i) = plain {
                return err(
                    self.matrix.workloads.span(),
                    &format!("matrix.workloads[{i}].trace"),
                    "trace mode replays trace workloads only: every workload needs `trace`".into(),
                );
            }
            for (field, span) in [
                (
                    "matrix.batch_sizes",
                    self.matrix.batch_sizes.as_ref().map(Spanned::span),
                ),
                (
                    "matrix.rates",
                    self.matrix.rates.as_ref().map(Spanned::span),
                ),
            ] {
                if let Some(span) = span {
                    return err(
                        span,
                        field,
                        "trace mode takes its arrivals from the trace; leave it out".into(),
                    );
                }
            }
            if let Some(s) = &self.search {
                return err(
                    s.max.span(),
                    "search",
                    "a trace replay has no load level to search".into(),
                );
            }
        } else if let Some(i) = traces {
            return err(
                self.matrix.workloads.span(),
                &format!("matrix.workloads[{i}].trace"),
                format!(
                    "a trace workload is replayed with load.mode = \"trace\" (mode is \"{}\")",
                    mode.as_str()
                ),
            );
        }
        if let Some(stages) = &load.stages {
            self.validate_stages(text, file, stages)?;
        }
        match (mode, &self.matrix.batch_sizes, &self.matrix.rates) {
            _ if self.search.is_some() || mode == LoadMode::Trace || load.stages.is_some() => {}
            (LoadMode::Rate, Some(b), _) => {
                return err(
                    b.span(),
                    "matrix.batch_sizes",
                    "rate mode sweeps matrix.rates (requests per second), not batch sizes".into(),
                );
            }
            (LoadMode::Rate, None, None) => {
                return err(
                    0..0,
                    "matrix.rates",
                    "rate mode needs `rates` (requests per second)".into(),
                );
            }
            (LoadMode::Rate, None, Some(rates)) => {
                if rates.get_ref().is_empty() {
                    return err(rates.span(), "matrix.rates", "must not be empty".into());
                }
                for (i, r) in rates.get_ref().iter().enumerate() {
                    let v = *r.get_ref();
                    if !(v.is_finite() && v > 0.0 && v <= 1e6) {
                        return err(
                            r.span(),
                            &format!("matrix.rates[{i}]"),
                            format!("rate {v} is not in (0, 1000000] requests/s"),
                        );
                    }
                }
            }
            (_, _, Some(rates)) => {
                return err(
                    rates.span(),
                    "matrix.rates",
                    format!(
                        "only applies with load.mode = \"rate\" (mode is \"{}\")",
                        mode.as_str()
                    ),
                );
            }
            (_, None, None) => {
                return err(
                    0..0,
                    "matrix.batch_sizes",
                    format!("{} mode needs `batch_sizes`", mode.as_str()),
                );
            }
            (_, Some(_), None) => {}
        }
        let waves_set = load.waves.span() != (0..0);
        match mode {
            LoadMode::Burst => {
                for (field, span) in [
                    (
                        "load.duration_s",
                        load.duration_s.as_ref().map(Spanned::span),
                    ),
                    ("load.requests", load.requests.as_ref().map(Spanned::span)),
                ] {
                    if let Some(span) = span {
                        return err(
                            span,
                            field,
                            "burst mode sends batch_size x waves requests; use waves".into(),
                        );
                    }
                }
            }
            LoadMode::Trace => {
                if waves_set {
                    return err(
                        load.waves.span(),
                        "load.waves",
                        "only applies with load.mode = \"burst\"".into(),
                    );
                }
            }
            LoadMode::Concurrency | LoadMode::Rate => {
                if waves_set {
                    return err(
                        load.waves.span(),
                        "load.waves",
                        "only applies with load.mode = \"burst\"".into(),
                    );
                }
                if load.duration_s.is_none() && load.requests.is_none() && load.stages.is_none() {
                    return err(
                        0..0,
                        "load.duration_s",
                        format!(
                            "{} mode needs `duration_s` or `requests` (or both)",
                            mode.as_str()
                        ),
                    );
                }
                if let Some(d) = &load.duration_s {
                    let v = *d.get_ref();
                    if !(v.is_finite() && v > 0.0) {
                        return err(
                            d.span(),
                            "load.duration_s",
                            format!("{v} is not a positive number of seconds"),
                        );
                    }
                }
                if let Some(r) = &load.requests
                    && *r.get_ref() == 0
                {
                    return err(r.span(), "load.requests", "must be at least 1".into());
                }
            }
        }
        let shape = *load.burstiness.get_ref();
        if !(shape.is_finite() && shape > 0.0) {
            return err(
                load.burstiness.span(),
                "load.burstiness",
                format!("{shape} is not a positive gamma shape"),
            );
        }
        if load.burstiness.span() != (0..0) && load.arrival != Arrival::Gamma {
            return err(
                load.burstiness.span(),
                "load.burstiness",
                "only applies with arrival = \"gamma\"".into(),
            );
        }
        Ok(())
    }
}

/// Keeps the first of equal items (by `key`) and notes each later one by its field path and
/// line:column as written.
fn dedupe<T, K: std::hash::Hash + Eq>(
    text: &str,
    field: &str,
    items: &mut Vec<Spanned<T>>,
    key: impl Fn(&Spanned<T>) -> K,
    show: impl Fn(&Spanned<T>) -> String,
    notes: &mut Vec<String>,
) {
    let mut seen = std::collections::HashSet::new();
    let mut index = 0;
    items.retain(|item| {
        let i = index;
        index += 1;
        if seen.insert(key(item)) {
            return true;
        }
        let (line, column) = line_col(text, item.span().start);
        notes.push(format!(
            "{line}:{column}: field `{field}[{i}]`: {} is listed twice; its points are \
             measured once",
            show(item)
        ));
        false
    });
}
