//! Wire conversion: the engine and load settings of a sweep as the `pb` messages the
//! controller sends to agents.

use super::sections::SweepSpec;
use crate::pb;

impl SweepSpec {
    /// The engine configuration as sent to agents.
    pub fn engine_wire(&self) -> pb::EngineSpec {
        let e = &self.engine;
        pb::EngineSpec {
            kind: "vllm".into(),
            runtime: e.runtime.as_str().into(),
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
            image: e
                .image
                .as_ref()
                .map(|i| i.get_ref().clone())
                .unwrap_or_default(),
            entrypoint: e.entrypoint.clone(),
        }
    }

    /// The load settings as sent to agents.
    pub fn load_wire(&self) -> pb::LoadSpec {
        let l = &self.load;
        pb::LoadSpec {
            mode: l.mode.as_str().into(),
            endpoint: l.endpoint.as_str().into(),
            // [policy] point_timeout_s, when set, is the point timeout agents enforce.
            timeout_s: self
                .policy
                .point_timeout_s
                .as_ref()
                .map_or(*l.timeout_s.get_ref(), |t| *t.get_ref()),
            warmup_requests: l.warmup_requests,
            waves: *l.waves.get_ref(),
            seed: l.seed,
            duration_s: l.duration_s.as_ref().map_or(0.0, |d| *d.get_ref()),
            requests: l.requests.as_ref().map_or(0, |r| *r.get_ref()),
            arrival: l.arrival.as_str().into(),
            burstiness: *l.burstiness.get_ref(),
            idle_timeout_s: *l.idle_timeout_s.get_ref(),
            tokenizer: l.tokenizer.as_str().into(),
        }
    }
}
