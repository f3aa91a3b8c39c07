//! Every measured request carries `x-request-id: fleetbench-<wave>-<index>`, the ids of its
//! record, so that the engine's side of a request can be matched with it: here vllm-sim's
//! trace (`--sim-trace-requests`), which records when each frame left the server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use fleetbench_agent::load::request::{
    ApiEndpoint, Extensions, RequestContext, RequestPlan, measure,
};
use fleetbench_sim::{Args, run};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn the_engine_sees_the_records_wave_and_index() {
    let args = Args::try_parse_vllm([
        "vllm-sim",
        "serve",
        "m",
        "--disable-log-stats",
        "--sim-timing",
        "exact",
        "--sim-ttft-ms",
        "5",
        "--sim-itl-ms",
        "1",
        "--sim-trace-requests",
        "8",
    ])
    .unwrap();
    let (config, _) = args.into_config().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(run(config, listener, shutdown.clone()));

    let client = fleetbench_agent::http_clients().unwrap().streams;
    let plan = RequestPlan {
        index: 7,
        wave: 2,
        endpoint: ApiEndpoint::Chat,
        model: "m".into(),
        prompt: "hello there".into(),
        messages: None,
        target_input_tokens: 0,
        target_output_tokens: 6,
        scheduled_offset: Duration::ZERO,
        extensions: Extensions::ALL,
    };
    let now = Instant::now();
    let ctx = RequestContext {
        origin: now,
        deadline: now + Duration::from_secs(30),
        idle_timeout: Duration::from_secs(10),
    };
    let record = measure(&client, &base, &plan, &ctx, &CancellationToken::new()).await;
    assert!(record.success(), "{record:?}");
    assert_eq!(record.content_chunks, 6);

    let trace: Value = reqwest::get(format!("{base}/sim/trace"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let streams = trace["streams"].as_array().unwrap();
    assert_eq!(streams.len(), 1, "{trace}");
    assert_eq!(streams[0]["request_id"], "fleetbench-2-7");
    assert_eq!(streams[0]["frame_offsets_ns"].as_array().unwrap().len(), 6);

    shutdown.cancel();
    task.await.unwrap().unwrap();
}
