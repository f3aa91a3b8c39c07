//! The key-value metadata of a partition's Parquet files, typed: what sweep, model and GPU
//! count the files hold, which hosts and engine produced them, and the engine's events
//! (crash forensics). This is the only code that knows the `fleetbench.*` key names: the
//! controller's writer builds a [`PartitionMetadata`], the reports read one back.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Every key starts with this.
const PREFIX: &str = "fleetbench.";

const SWEEP_ID: &str = "sweep_id";
const SWEEP_NAME: &str = "sweep_name";
const MODEL: &str = "model";
const GPUS: &str = "gpus";
const VERSION: &str = "version";
const HOSTS: &str = "hosts";
const ENGINE_RUNTIME: &str = "engine_runtime";
const ENGINE_KIND: &str = "engine_kind";
const ENGINE_ARGS: &str = "engine_args";
const ENGINE_VERSION: &str = "engine_version";
const ENGINE_IMAGE: &str = "engine_image";
const ENGINE_IMAGE_DIGEST: &str = "engine_image_digest";
const LOAD: &str = "load";
const ENGINE_EVENTS: &str = "engine_events";

/// One engine event as the files store it (JSON in `fleetbench.engine_events`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EngineEvent {
    pub point_id: String,
    pub kind: String,
    pub message: String,
    pub exit_code: Option<i64>,
    pub unix_ms: i64,
    pub log_tail: Vec<String>,
    pub oom_killed: Option<bool>,
    pub died_after_s: Option<f64>,
    pub container: String,
    pub image: String,
    pub image_digest: String,
    pub gpu_ids: Vec<u32>,
}

impl EngineEvent {
    /// The engine died or never came up.
    pub fn is_crash(&self) -> bool {
        self.kind == "exited" || self.kind == "start-failed"
    }
}

/// A partition's metadata. Fields a file lacks (older versions, other writers) read as
/// empty.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PartitionMetadata {
    pub sweep_id: String,
    pub sweep_name: String,
    pub model: String,
    pub gpus: u32,
    /// The fleetbench version that wrote the files.
    pub version: String,
    /// Hosts that ran the partition's points, sorted.
    pub hosts: Vec<String>,
    pub engine_runtime: String,
    /// Which server the engine was (`vllm`, `transformers`, `llama-cpp`, …); files written
    /// before engine kinds existed read as empty (they were vLLM).
    pub engine_kind: String,
    /// The engine's arguments as one line.
    pub engine_args: String,
    pub engine_version: String,
    pub engine_image: String,
    pub engine_image_digest: String,
    /// The sweep's load section, as text.
    pub load: String,
    pub engine_events: Vec<EngineEvent>,
}

impl PartitionMetadata {
    /// The `fleetbench.*` key-value pairs the files carry.
    pub fn to_key_values(&self) -> BTreeMap<String, String> {
        let events = serde_json::to_string(&self.engine_events).unwrap_or_else(|_| "[]".into());
        [
            (SWEEP_ID, self.sweep_id.clone()),
            (SWEEP_NAME, self.sweep_name.clone()),
            (MODEL, self.model.clone()),
            (GPUS, self.gpus.to_string()),
            (VERSION, self.version.clone()),
            (HOSTS, self.hosts.join(",")),
            (ENGINE_RUNTIME, self.engine_runtime.clone()),
            (ENGINE_KIND, self.engine_kind.clone()),
            (ENGINE_ARGS, self.engine_args.clone()),
            (ENGINE_VERSION, self.engine_version.clone()),
            (ENGINE_IMAGE, self.engine_image.clone()),
            (ENGINE_IMAGE_DIGEST, self.engine_image_digest.clone()),
            (LOAD, self.load.clone()),
            (ENGINE_EVENTS, events),
        ]
        .into_iter()
        .map(|(k, v)| (format!("{PREFIX}{k}"), v))
        .collect()
    }

    /// Reads the `fleetbench.*` pairs of `kv`; other keys are ignored, missing or unreadable
    /// values read as empty.
    pub fn from_key_values(kv: &BTreeMap<String, String>) -> PartitionMetadata {
        let get = |k: &str| kv.get(&format!("{PREFIX}{k}")).cloned().unwrap_or_default();
        PartitionMetadata {
            sweep_id: get(SWEEP_ID),
            sweep_name: get(SWEEP_NAME),
            model: get(MODEL),
            gpus: get(GPUS).parse().unwrap_or(0),
            version: get(VERSION),
            hosts: get(HOSTS)
                .split(',')
                .filter(|h| !h.is_empty())
                .map(str::to_owned)
                .collect(),
            engine_runtime: get(ENGINE_RUNTIME),
            engine_kind: get(ENGINE_KIND),
            engine_args: get(ENGINE_ARGS),
            engine_version: get(ENGINE_VERSION),
            engine_image: get(ENGINE_IMAGE),
            engine_image_digest: get(ENGINE_IMAGE_DIGEST),
            load: get(LOAD),
            engine_events: serde_json::from_str(&get(ENGINE_EVENTS)).unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_metadata_round_trips_through_key_values() {
        let m = PartitionMetadata {
            sweep_id: "s-1".into(),
            sweep_name: "seed".into(),
            model: "org/m".into(),
            gpus: 2,
            version: "0.1.0".into(),
            hosts: vec!["a".into(), "b".into()],
            engine_runtime: "docker".into(),
            engine_kind: "vllm".into(),
            engine_args: "--x 1".into(),
            engine_version: "0.32".into(),
            engine_image: "img".into(),
            engine_image_digest: "sha256:1".into(),
            load: "Load { .. }".into(),
            engine_events: vec![EngineEvent {
                point_id: "p0".into(),
                kind: "exited".into(),
                exit_code: Some(3),
                log_tail: vec!["boom".into()],
                ..EngineEvent::default()
            }],
        };
        let kv = m.to_key_values();
        assert!(kv.keys().all(|k| k.starts_with("fleetbench.")), "{kv:?}");
        assert_eq!(kv["fleetbench.hosts"], "a,b");
        assert_eq!(kv["fleetbench.gpus"], "2");
        assert_eq!(PartitionMetadata::from_key_values(&kv), m);
    }

    #[test]
    fn missing_keys_read_as_empty() {
        let mut kv = BTreeMap::new();
        kv.insert("fleetbench.model".to_owned(), "m".to_owned());
        kv.insert("fleetbench.engine_events".to_owned(), "not json".to_owned());
        let m = PartitionMetadata::from_key_values(&kv);
        assert_eq!(m.model, "m");
        assert!(m.hosts.is_empty() && m.engine_events.is_empty() && m.gpus == 0);
    }
}
