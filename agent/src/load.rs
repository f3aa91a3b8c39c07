//! Load generation for one point: the seed's burst mode (N requests sent together,
//! repeated for W waves), after optional warm-up requests that are not recorded.

use std::time::Duration;

use fleetbench_proto::pb;
use fleetbench_proto::record::RequestRecord;
use fleetbench_proto::spec::Endpoint;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::error::AgentError;
use crate::prompt::{TokenCounter, build_prompts, mix};
use crate::request::{ApiEndpoint, RequestPlan, measure};
use crate::telemetry::{MetricSample, spawn_scraper};

/// How a point's load run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadOutcome {
    pub endpoint: ApiEndpoint,
    /// Requests measured (successful or not), warm-up excluded.
    pub measured: u32,
    /// Prompts whose server-counted length differs from the target (or is unknown).
    pub inexact_prompts: u32,
    /// The engine's `/metrics` during the measured load.
    pub engine_metrics: Vec<MetricSample>,
}

/// Decides the endpoint for `auto`: completions when the engine serves it, otherwise chat
/// (the seed's image answered 404 on `/v1/completions`).
pub async fn resolve_endpoint(
    client: &reqwest::Client,
    base_url: &str,
    model: &str,
    wanted: Endpoint,
) -> Result<ApiEndpoint, AgentError> {
    match wanted {
        Endpoint::Chat => Ok(ApiEndpoint::Chat),
        Endpoint::Completions => Ok(ApiEndpoint::Completions),
        Endpoint::Auto => {
            let resp = client
                .post(format!("{base_url}/v1/completions"))
                .json(&serde_json::json!({"model": model, "prompt": "hello", "max_tokens": 1}))
                .timeout(Duration::from_secs(60))
                .send()
                .await?;
            let status = resp.status();
            if status.is_success() {
                Ok(ApiEndpoint::Completions)
            } else if status == reqwest::StatusCode::NOT_FOUND
                || status == reqwest::StatusCode::METHOD_NOT_ALLOWED
            {
                info!(%status, "completions endpoint refused; auto falls back to chat");
                Ok(ApiEndpoint::Chat)
            } else {
                Err(AgentError::Engine(format!(
                    "probe of /v1/completions answered {status}"
                )))
            }
        }
    }
}

/// Runs one point against a ready engine; each measured request's record is sent to
/// `records` as soon as it completes.
pub async fn run_point(
    client: &reqwest::Client,
    base_url: &str,
    point: &pb::PointSpec,
    records: &mpsc::Sender<RequestRecord>,
    metrics_interval: Duration,
    cancel: &CancellationToken,
) -> Result<LoadOutcome, AgentError> {
    let load = point.load.clone().unwrap_or_default();
    let workload = point.workload.unwrap_or_default();
    let engine = point.engine.clone().unwrap_or_default();
    let model = engine.served_model_name.clone();
    let wanted = Endpoint::parse(&load.endpoint).unwrap_or(Endpoint::Chat);
    let endpoint = resolve_endpoint(client, base_url, &model, wanted).await?;
    let deadline = Instant::now() + Duration::from_secs(u64::from(load.timeout_s.max(1)));

    let waves = load.waves.max(1);
    let measured = point.batch_size.saturating_mul(waves);
    let total = usize::try_from(load.warmup_requests.saturating_add(measured)).unwrap_or(0);
    let seed = mix(
        load.seed,
        (u64::from(workload.input_tokens) << 32) | u64::from(point.batch_size),
    );
    let counter = TokenCounter::new(client.clone(), base_url, &model);
    let prompts = tokio::select! {
        p = build_prompts(&counter, endpoint, workload.input_tokens, total, seed) => p?,
        () = cancel.cancelled() => return Err(AgentError::Cancelled),
    };
    let inexact = prompts
        .iter()
        .skip(usize::try_from(load.warmup_requests).unwrap_or(0))
        .filter(|p| !p.is_exact(workload.input_tokens))
        .count();
    if inexact > 0 {
        warn!(
            inexact,
            target = workload.input_tokens,
            "prompts whose server-counted length is not the target"
        );
    }
    let plan = |index: u32, wave: u32, text: &str| RequestPlan {
        index,
        wave,
        endpoint,
        model: model.clone(),
        prompt: text.to_string(),
        target_input_tokens: workload.input_tokens,
        target_output_tokens: workload.output_tokens,
    };

    let mut prompts = prompts.into_iter();
    // Warm-up: sent together, awaited, never recorded.
    let warmups: Vec<RequestPlan> = (0..load.warmup_requests)
        .filter_map(|i| prompts.next().map(|p| plan(i, 0, &p.text)))
        .collect();
    if !warmups.is_empty() {
        let mut inflight: FuturesUnordered<_> = warmups
            .iter()
            .map(|p| measure(client, base_url, p, deadline, cancel))
            .collect();
        while let Some(r) = inflight.next().await {
            if !r.success() {
                warn!(error = %r.error, "warm-up request failed");
            }
        }
    }

    let stop_scraper = CancellationToken::new();
    let scraper = spawn_scraper(
        client.clone(),
        base_url.to_string(),
        metrics_interval,
        stop_scraper.clone(),
    );
    let measured_run = async {
        for wave in 0..waves {
            if cancel.is_cancelled() {
                return Err(AgentError::Cancelled);
            }
            let plans: Vec<RequestPlan> = (0..point.batch_size)
                .filter_map(|i| {
                    prompts
                        .next()
                        .map(|p| plan(wave * point.batch_size + i, wave, &p.text))
                })
                .collect();
            // All N futures are created first and polled together: the burst leaves at once.
            let mut inflight: FuturesUnordered<_> = plans
                .iter()
                .map(|p| measure(client, base_url, p, deadline, cancel))
                .collect();
            while let Some(record) = inflight.next().await {
                if records.send(record).await.is_err() {
                    return Err(AgentError::Engine("record sink closed".into()));
                }
            }
        }
        Ok(())
    }
    .await;
    stop_scraper.cancel();
    let engine_metrics = scraper.await.unwrap_or_default();
    measured_run?;
    Ok(LoadOutcome {
        endpoint,
        measured,
        inexact_prompts: u32::try_from(inexact).unwrap_or(u32::MAX),
        engine_metrics,
    })
}
