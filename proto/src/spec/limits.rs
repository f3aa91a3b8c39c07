//! Hard limits on a sweep file, so hostile or careless input stays bounded in memory and
//! every path derived from it fits the file system.
//!
//! Derived names, longest first (see `controller/results/src/layout.rs`, the agent's
//! `link/spool.rs` and the controller's `service.rs`):
//! - sweep id `<name>-<yyyymmddThhmmss>-<4 hex>`: name + 21 bytes; a replicate child adds
//!   `.<agent>` (agent names are at most 64 bytes);
//! - point id `<sweep id>/p<index, at least 3 digits>`;
//! - the agent's spool file `<hex of the point id>.<attempt>.spool`: twice the point id plus
//!   at most 17 bytes; this is the longest component, so a point id may be at most
//!   [`MAX_POINT_ID_LEN`] bytes;
//! - results `model=<model slug>/gpus=<N>/<sweep id>.requests.parquet.next-<pid>`: the slug
//!   is at most as long as the model name.
//!
//! With [`MAX_NAME_LEN`] and at most [`MAX_POINTS_CEILING`] points, every point id of a
//! sweep that is not replicated fits; a replicate child's id also holds the agent's name,
//! so the controller checks those ids when it knows the agents ([`point_id_fits`]).

use super::sections::{BatchSizes, LoadMode, SweepSpec};

/// Largest sweep file accepted, in bytes.
pub const MAX_SWEEP_FILE_BYTES: usize = 1 << 20;
/// Points a sweep may expand to unless the controller is configured otherwise.
pub const DEFAULT_MAX_POINTS: u64 = 10_000;
/// The most points any configuration accepts (a point's index then has at most 6 digits).
pub const MAX_POINTS_CEILING: u64 = 1_000_000;
/// Longest sweep name, in bytes (ASCII only).
pub const MAX_NAME_LEN: usize = 64;
/// Longest model name (Hugging Face id or local path), in bytes.
pub const MAX_MODEL_LEN: usize = 200;
/// Longest file-name component any derived path may have.
pub const MAX_PATH_COMPONENT: usize = 255;
/// Longest point id whose spool file name (`<hex>.<attempt, up to 10 digits>.spool`) fits
/// [`MAX_PATH_COMPONENT`].
pub const MAX_POINT_ID_LEN: usize = (MAX_PATH_COMPONENT - ".4294967295.spool".len()) / 2;

/// Whether every path derived from a point id of this length fits (see the module docs).
pub fn point_id_fits(point_id_len: usize) -> bool {
    point_id_len <= MAX_POINT_ID_LEN
}

/// Length of the longest point id of a sweep whose id is `sweep_id_len` bytes long and that
/// has `points` points.
pub fn longest_point_id(sweep_id_len: usize, points: u64) -> usize {
    let digits = points.saturating_sub(1).max(1).to_string().len().max(3);
    sweep_id_len + "/p".len() + digits
}

/// Length of a sweep id made from a name of `name_len` bytes (`<name>-<time>-<salt>`).
pub const fn sweep_id_len(name_len: usize) -> usize {
    name_len + "-yyyymmddThhmmss-abcd".len()
}

/// Why a model name is refused, if it is: a Hugging Face id (`name` or `org/name` of
/// `[A-Za-z0-9._-]`) or an absolute local path, never `..`/`.` components, empty segments
/// or control characters.
pub fn model_name_problem(model: &str) -> Option<String> {
    if model.len() > MAX_MODEL_LEN {
        return Some(format!(
            "is {} bytes long; at most {MAX_MODEL_LEN} (the results folder is named after it)",
            model.len()
        ));
    }
    if model.chars().any(char::is_control) {
        return Some("holds a control character".into());
    }
    let (segments, what) = match model.strip_prefix('/') {
        Some(path) => (path.split('/').collect::<Vec<_>>(), "path"),
        None => (model.split('/').collect(), "id"),
    };
    if segments.iter().any(|s| s.is_empty()) {
        return Some(format!(
            "{what} has an empty segment (`//` or a trailing `/`)"
        ));
    }
    if segments.iter().any(|s| *s == "." || *s == "..") {
        return Some(format!("{what} has a `.` or `..` component"));
    }
    if what == "id" {
        if segments.len() > 2 {
            return Some(
                "must be a Hugging Face id (`name` or `org/name`) or an absolute path".into(),
            );
        }
        if !model
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
        {
            return Some(
                "a Hugging Face id may hold only ASCII letters, digits, '-', '_', '.' and one '/'"
                    .into(),
            );
        }
    }
    None
}

impl SweepSpec {
    /// How many points the sweep expands to, computed from the matrix sizes without
    /// expanding it; `None` when the product overflows `u64`.
    pub fn point_count(&self) -> Option<u64> {
        let loads = match (&self.matrix.rates, self.load.mode) {
            // A search runs at most `max_points` probes per group.
            _ if self.search.is_some() => u64::from(self.search().map_or(0, |s| s.max_points)),
            _ if self.load.mode == LoadMode::Trace || self.load.stages.is_some() => 1,
            (Some(rates), LoadMode::Rate) => rates.get_ref().len() as u64,
            _ => match self.matrix.batch_sizes.as_ref().map(|b| b.get_ref()) {
                None => 0,
                Some(BatchSizes::List(list)) => list.len() as u64,
                Some(BatchSizes::PowersOf2) => {
                    let max = self
                        .matrix
                        .max_batch_size
                        .as_ref()
                        .map_or(1, |m| *m.get_ref());
                    // 1, 2, 4, … up to max: floor(log2(max)) + 1 sizes.
                    u64::from(u32::BITS - max.max(1).leading_zeros())
                }
            },
        };
        (self.matrix.gpus.get_ref().len() as u64)
            .checked_mul(self.matrix.workloads.get_ref().len() as u64)?
            .checked_mul(loads)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_non_replicated_point_id_fits() {
        let longest = longest_point_id(sweep_id_len(MAX_NAME_LEN), MAX_POINTS_CEILING);
        assert!(point_id_fits(longest), "{longest} > {MAX_POINT_ID_LEN}");
        // Spool file: hex of the id, the largest attempt, the suffix.
        assert!(2 * longest + ".4294967295.spool".len() <= MAX_PATH_COMPONENT);
        // Results: the longest replicate child id (agent names ≤ 64) with the temporary
        // suffix, and the model partition folder.
        let child = sweep_id_len(MAX_NAME_LEN) + 1 + 64;
        assert!(child + ".requests.parquet.next-4194304".len() <= MAX_PATH_COMPONENT);
        assert!("model=".len() + MAX_MODEL_LEN <= MAX_PATH_COMPONENT);
    }

    #[test]
    fn longest_point_id_counts_index_digits() {
        assert_eq!(longest_point_id(10, 8), 10 + 2 + 3);
        assert_eq!(longest_point_id(10, 10_000), 10 + 2 + 4);
        assert_eq!(longest_point_id(10, 10_001), 10 + 2 + 5);
    }

    #[test]
    fn model_names_are_ids_or_clean_absolute_paths() {
        for ok in [
            "meta-llama/Llama-3.2-1B-Instruct",
            "vllm-sim",
            "/models/llama 3/weights",
            "/m",
        ] {
            assert_eq!(model_name_problem(ok), None, "{ok}");
        }
        for (bad, why) in [
            ("../etc/passwd", "`..`"),
            ("org/../x", "`..`"),
            ("/models/../../etc", "`..`"),
            ("/models/./x", "`.`"),
            ("org//name", "empty segment"),
            ("/models/", "empty segment"),
            ("org/name/extra", "Hugging Face id"),
            ("org/na me", "only ASCII"),
            ("org/name\n", "control"),
            ("/models/x\u{7}", "control"),
        ] {
            let problem = model_name_problem(bad).unwrap_or_default();
            assert!(problem.contains(why), "{bad:?}: {problem}");
        }
        let long = format!("org/{}", "m".repeat(MAX_MODEL_LEN));
        assert!(
            model_name_problem(&long)
                .unwrap_or_default()
                .contains("at most 200")
        );
    }
}
