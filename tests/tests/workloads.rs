//! Workload kinds end to end (controller, agent, vllm-sim as real processes): length
//! distributions reach the server with each request exact to its own drawn length, and
//! shared-prefix prompts hit the simulator's prefix cache when prefix caching is on and
//! never when it is off, with the engine's counters stored in the points file.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use fleetbench_results::layout::partition_dir;
use fleetbench_results::read::{read_point_summaries, read_requests};
use fleetbench_tests::{AgentSpec, Cluster, submit, watch_to_end};

/// The simulator's performance model, 50x faster than real time.
const SIM: &[&str] = &["--sim-speedup", "50"];

fn sweep(name: &str, engine_extra: &str, load: &str, workload: &str) -> String {
    format!(
        r#"
name = "{name}"
model = "test/workloads"
[engine]
kind = "vllm"
runtime = "process"
max_model_len = 2048
block_size = 16
{engine_extra}
[matrix]
gpus = [1]
batch_sizes = [8]
workloads = [{workload}]
[load]
seed = 21
endpoint = "completions"
{load}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn length_distributions_and_shared_prefixes_reach_the_server() {
    let cluster = Cluster::start(vec![AgentSpec::sim("shaper", 1, SIM)]).await;
    cluster.wait_agents(1).await;
    let mut client = cluster.client().await;
    let dir = partition_dir(&cluster.results, "test/workloads", 1);

    // Normal input lengths (mean 200, sd 40) and uniform-ish outputs: 400 requests, 8 in
    // flight.
    let id = submit(
        &mut client,
        &sweep(
            "dist",
            "",
            "mode = \"concurrency\"\nrequests = 400",
            "{ input = 200, output = 16, dist = \"normal\", input_spread = 40, output_spread = 4 }",
        ),
    )
    .await;
    let status = watch_to_end(&mut client, &id).await;
    assert_eq!(status.state, "done", "{status:?}");
    let points = read_point_summaries(&dir.join(format!("{id}.points.parquet"))).unwrap();
    assert_eq!(points[0].meta.workload, "normal 200±40/16±4");
    assert_eq!(points[0].input_len_mismatches, 0, "{:?}", points[0]);
    assert_eq!(points[0].output_len_mismatches, 0, "{:?}", points[0]);
    let records = read_requests(&dir.join(format!("{id}.requests.parquet"))).unwrap();
    assert_eq!(records.len(), 400);
    // The server counted each prompt at its own drawn length.
    let inputs: Vec<f64> = records
        .iter()
        .map(|(_, _, r)| {
            assert_eq!(r.input_tokens, Some(r.target_input_tokens), "{r:?}");
            f64::from(r.input_tokens.unwrap())
        })
        .collect();
    let n = inputs.len() as f64;
    let mean = inputs.iter().sum::<f64>() / n;
    let sd = (inputs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    // Standard error of the mean 40/√400 = 2; of the deviation about 1.4: 3 of each.
    assert!((mean - 200.0).abs() < 6.0, "mean {mean}");
    assert!((sd - 40.0).abs() < 4.5, "sd {sd}");
    let outputs: std::collections::BTreeSet<u32> = records
        .iter()
        .map(|(_, _, r)| r.output_tokens.unwrap())
        .collect();
    assert!(outputs.len() >= 8, "{outputs:?}");

    // Shared prefixes: 2 groups x 64 tokens, 96-token prompts, one burst of 8. With
    // caching on, the first request of each group computes its prefix and the six others
    // find its 4 full blocks of 16 tokens cached: 6 x 64 = 384 hit tokens of 8 x 96 = 768
    // looked up. (A suffix that happens to start like another's cannot add a fifth
    // block: that needs 80 shared tokens.)
    let workload = "{ input = 96, output = 8, prefix_groups = 2, prefix_tokens = 64 }";
    let mut hits = Vec::new();
    for caching in [true, false] {
        let id = submit(
            &mut client,
            &sweep(
                &format!("prefix-{caching}"),
                &format!("prefix_caching = {caching}"),
                "",
                workload,
            ),
        )
        .await;
        let status = watch_to_end(&mut client, &id).await;
        assert_eq!(status.state, "done", "{status:?}");
        let points = read_point_summaries(&dir.join(format!("{id}.points.parquet"))).unwrap();
        let p = &points[0];
        assert_eq!(p.meta.workload, "96/8 prefix 2x64");
        assert_eq!(p.input_len_mismatches, 0, "{p:?}");
        hits.push((p.server.prefix_cache_queries, p.server.prefix_cache_hits));
    }
    // Without caching vLLM looks nothing up (and neither does the simulator).
    assert_eq!(
        hits,
        vec![(Some(768.0), Some(384.0)), (Some(0.0), Some(0.0))]
    );
    cluster.stop().await;
}

/// The SHA-256 of a file, by the system's `sha256sum` (not our code).
fn sha256sum(path: &std::path::Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dataset_prompts_go_out_verbatim_and_traces_replay_on_their_timeline() {
    let data = tempfile::tempdir().unwrap();
    // JSONL: plain prompts (some naming their output length), a conversation, an entry
    // too long for max_model_len (skipped and counted), all of distinct lengths.
    let mut jsonl = String::new();
    let mut texts = Vec::new();
    for i in 0..10u32 {
        let text = (0..(5 + 7 * i))
            .map(|w| format!("w{w}"))
            .collect::<Vec<_>>()
            .join(" ");
        if i % 2 == 0 {
            jsonl.push_str(&format!(
                "{{\"prompt\": \"{text}\", \"output_tokens\": {}, \"id\": {i}}}\n",
                3 + i
            ));
        } else {
            jsonl.push_str(&format!("{{\"prompt\": \"{text}\"}}\n"));
        }
        texts.push(text);
    }
    jsonl.push_str(
        "{\"messages\": [{\"role\": \"system\", \"content\": \"be brief\"}, {\"role\": \"user\", \"content\": \"hello there friend\"}]}\n",
    );
    texts.push("be brief\nhello there friend".into());
    let long = (0..3000).map(|_| "x").collect::<Vec<_>>().join(" ");
    jsonl.push_str(&format!("{{\"prompt\": \"{long}\"}}\n"));
    std::fs::create_dir(data.path().join("sets")).unwrap();
    let dataset = data.path().join("sets/mixed.jsonl");
    std::fs::write(&dataset, &jsonl).unwrap();
    // A trace: 60 arrivals 40 ms apart (jittered), replayed twice as fast.
    let mut trace = String::from("arrival_s,input_tokens,output_tokens\n");
    for i in 0..60u32 {
        let jitter = f64::from((i * 7919) % 13) / 1000.0;
        trace.push_str(&format!(
            "{},{},{}\n",
            10.0 + f64::from(i) * 0.04 + jitter,
            20 + i,
            2 + i % 3
        ));
    }
    std::fs::write(data.path().join("trace.csv"), &trace).unwrap();

    let agent = AgentSpec {
        dataset_dirs: vec![data.path().to_path_buf()],
        ..AgentSpec::sim(
            "reader",
            1,
            &[
                "--sim-timing",
                "exact",
                "--sim-ttft-ms",
                "5",
                "--sim-itl-ms",
                "2",
            ],
        )
    };
    let cluster = Cluster::start(vec![agent]).await;
    cluster.wait_agents(1).await;
    let mut client = cluster.client().await;
    let dir = partition_dir(&cluster.results, "test/workloads", 1);

    let id = submit(
        &mut client,
        &sweep(
            "dataset",
            "",
            "mode = \"concurrency\"\nrequests = 11",
            "{ dataset = \"sets/mixed.jsonl\", output = 6 }",
        )
        .replace("batch_sizes = [8]", "batch_sizes = [4]"),
    )
    .await;
    let status = watch_to_end(&mut client, &id).await;
    assert_eq!(status.state, "done", "{status:?}");
    let points = read_point_summaries(&dir.join(format!("{id}.points.parquet"))).unwrap();
    let p = &points[0];
    assert_eq!(p.meta.workload, "dataset sets/mixed.jsonl/6");
    assert_eq!(p.meta.data_sha256, sha256sum(&dataset));
    assert_eq!(p.meta.data_skipped, 1, "the 3000-token entry");
    assert_eq!((p.completed, p.failed), (11, 0));
    assert_eq!(
        (p.input_len_mismatches, p.output_len_mismatches),
        (0, 0),
        "{p:?}"
    );
    // Every entry that fits went out once (11 requests, 11 entries, no replacement): the
    // server's counts are the counts of the entries' texts, which differ in length.
    let records = read_requests(&dir.join(format!("{id}.requests.parquet"))).unwrap();
    let mut counted: Vec<u32> = records
        .iter()
        .map(|(_, _, r)| r.input_tokens.unwrap())
        .collect();
    counted.sort_unstable();
    let mut expected: Vec<u32> = texts
        .iter()
        .map(|t| u32::try_from(fleetbench_sim::tokenizer::count(t)).unwrap())
        .collect();
    expected.sort_unstable();
    assert_eq!(counted, expected);
    // Outputs: the entry's own where it names one, else the workload's 6.
    let mut outputs: Vec<u32> = records
        .iter()
        .map(|(_, _, r)| r.output_tokens.unwrap())
        .collect();
    outputs.sort_unstable();
    assert_eq!(outputs, vec![3, 5, 6, 6, 6, 6, 6, 6, 7, 9, 11]);

    // A text corpus fills synthetic prompts: real words, still exact lengths.
    let corpus = data.path().join("corpus.txt");
    std::fs::write(
        &corpus,
        "Call me Ishmael. Some years ago, never mind how long precisely, having little or \
         no money in my purse, and nothing particular to interest me on shore, I thought I \
         would sail about a little and see the watery part of the world.\n",
    )
    .unwrap();
    let id = submit(
        &mut client,
        &sweep(
            "corpus",
            "",
            "",
            "{ input = 40, output = 4, corpus = \"corpus.txt\" }",
        ),
    )
    .await;
    let status = watch_to_end(&mut client, &id).await;
    assert_eq!(status.state, "done", "{status:?}");
    let points = read_point_summaries(&dir.join(format!("{id}.points.parquet"))).unwrap();
    let p = &points[0];
    assert_eq!(p.meta.workload, "40/4 corpus corpus.txt");
    assert_eq!(p.meta.data_sha256, sha256sum(&corpus));
    assert_eq!((p.completed, p.input_len_mismatches), (8, 0), "{p:?}");

    // Trace replay: 60 requests at the trace's offsets (less the first) / 2.
    let id = submit(
        &mut client,
        &sweep(
            "trace",
            "",
            "mode = \"trace\"",
            "{ trace = \"trace.csv\", time_scale = 2 }",
        )
        .replace("batch_sizes = [8]\n", ""),
    )
    .await;
    let status = watch_to_end(&mut client, &id).await;
    assert_eq!(status.state, "done", "{status:?}");
    let points = read_point_summaries(&dir.join(format!("{id}.points.parquet"))).unwrap();
    let p = &points[0];
    assert_eq!(p.meta.mode, "trace");
    assert_eq!(p.meta.workload, "trace trace.csv x2");
    assert_eq!(
        p.meta.data_sha256,
        sha256sum(&data.path().join("trace.csv"))
    );
    assert_eq!(
        (p.completed, p.input_len_mismatches, p.output_len_mismatches),
        (60, 0, 0)
    );
    let mut records: Vec<_> = read_requests(&dir.join(format!("{id}.requests.parquet")))
        .unwrap()
        .into_iter()
        .map(|(_, _, r)| r)
        .collect();
    records.sort_by_key(|r| r.request_index);
    for (i, r) in records.iter().enumerate() {
        let i = u32::try_from(i).unwrap();
        let jitter = f64::from((i * 7919) % 13) / 1000.0;
        // Row 0's jitter is 0: offsets count from its arrival at 10 s.
        let want = (f64::from(i) * 0.04 + jitter) / 2.0;
        assert!(
            (r.scheduled_offset_s - want).abs() < 1e-6,
            "{i}: {} vs {want}",
            r.scheduled_offset_s
        );
        assert_eq!(
            (r.target_input_tokens, r.target_output_tokens),
            (20 + i, 2 + i % 3)
        );
    }
    // Sent on the timeline, never early; the lag's size is a benchmark's business
    // (`loadbench trace`, release build), but a replay that sent everything at once
    // would lag by up to 1.2 s.
    assert!(
        records
            .iter()
            .all(|r| r.send_offset_s >= r.scheduled_offset_s - 1e-6)
    );
    let lag_p50 = p.send_lag_s.p50.unwrap();
    assert!(lag_p50 < 0.1, "send lag p50 {lag_p50} s");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_stage_points_are_summarized_stage_by_stage() {
    let agent = AgentSpec::sim(
        "stager",
        1,
        &[
            "--sim-timing",
            "exact",
            "--sim-ttft-ms",
            "20",
            "--sim-itl-ms",
            "5",
        ],
    );
    let cluster = Cluster::start(vec![agent]).await;
    cluster.wait_agents(1).await;
    let mut client = cluster.client().await;
    let dir = partition_dir(&cluster.results, "test/workloads", 1);
    let staged = |name: &str, load: &str| {
        sweep(name, "", load, "{ input = 16, output = 4 }").replace("batch_sizes = [8]\n", "")
    };

    // Rate: 1 s at 20/s, then 0.5 s at 60/s, constant gaps.
    let id = submit(
        &mut client,
        &staged(
            "staged-rate",
            "mode = \"rate\"\narrival = \"constant\"\n\
             stages = [{ duration_s = 1, rate = 20 }, { duration_s = 0.5, rate = 60 }]",
        ),
    )
    .await;
    let status = watch_to_end(&mut client, &id).await;
    assert_eq!(status.state, "done", "{status:?}");
    let filter = fleetbench_results::query::Filter {
        sweep: vec![id.clone()],
        ..Default::default()
    };
    let (stages, _) = fleetbench_results::stages::load_stages(&cluster.results, &filter).unwrap();
    assert_eq!(stages.len(), 2, "{stages:?}");
    // 20 sends in [0, 1 s), 30 in [1, 1.5 s): each stage's achieved rate is its own.
    assert_eq!((stages[0].completed, stages[1].completed), (20, 30));
    assert_eq!(
        (stages[0].meta.request_rate, stages[1].meta.request_rate),
        (20.0, 60.0)
    );
    assert!(
        (stages[0].achieved_rate - 20.0).abs() < 0.5,
        "{}",
        stages[0].achieved_rate
    );
    assert!(
        (stages[1].achieved_rate - 60.0).abs() < 3.0,
        "{}",
        stages[1].achieved_rate
    );
    let records = read_requests(&dir.join(format!("{id}.requests.parquet"))).unwrap();
    for (_, _, r) in &records {
        let want = u32::from(r.scheduled_offset_s >= 1.0 - 1e-9);
        assert_eq!(r.wave, want, "{r:?}");
    }
    // controllerctl prints one row per stage.
    let results = cluster.results.display().to_string();
    let (code, text) = fleetbench_tests::controllerctl(
        &cluster.addr,
        &[
            "results",
            &id,
            "--dir",
            &results,
            "--by-stage",
            "--format",
            "csv",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(text.matches("/stage-").count(), 2, "{text}");

    // Concurrency: 2 in flight for 0.6 s, then 6 for 0.6 s.
    let id = submit(
        &mut client,
        &staged(
            "staged-conc",
            "mode = \"concurrency\"\n\
             stages = [{ duration_s = 0.6, concurrency = 2 }, { duration_s = 0.6, concurrency = 6 }]",
        ),
    )
    .await;
    let status = watch_to_end(&mut client, &id).await;
    assert_eq!(status.state, "done", "{status:?}");
    let filter = fleetbench_results::query::Filter {
        sweep: vec![id.clone()],
        ..Default::default()
    };
    let (stages, _) = fleetbench_results::stages::load_stages(&cluster.results, &filter).unwrap();
    assert_eq!(stages.len(), 2);
    assert_eq!(
        (stages[0].meta.batch_size, stages[1].meta.batch_size),
        (2, 6)
    );
    // A request lives 20 + 3 x 5 = 35 ms: about 2/0.035 = 57 a second with 2 slots, and
    // three times that with 6.
    let (a, b) = (
        stages[0].achieved_concurrency,
        stages[1].achieved_concurrency,
    );
    assert!(a > 1.5 && a <= 2.0 + 1e-9, "stage 1 in flight {a}");
    assert!(b > 4.5 && b <= 6.0 + 1e-9, "stage 2 in flight {b}");
    assert!(stages[1].completed > 2 * stages[0].completed, "{stages:?}");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_turn_conversations_carry_their_growing_history() {
    let cluster = Cluster::start(vec![AgentSpec::sim("talker", 1, SIM)]).await;
    cluster.wait_agents(1).await;
    let mut client = cluster.client().await;
    let dir = partition_dir(&cluster.results, "test/workloads", 1);
    // 2 users, conversations of 3 turns (24 new tokens each, 6-token answers), 20 ms of
    // thinking between an answer and the next turn, 12 turns in all.
    let id = submit(
        &mut client,
        &sweep(
            "talk",
            "prefix_caching = true",
            "mode = \"concurrency\"\nrequests = 12",
            "{ input = 24, output = 6, turns = 3, think_time_ms = 20 }",
        )
        .replace("endpoint = \"completions\"", "endpoint = \"chat\"")
        .replace("batch_sizes = [8]", "batch_sizes = [2]"),
    )
    .await;
    let status = watch_to_end(&mut client, &id).await;
    assert_eq!(status.state, "done", "{status:?}");
    let points = read_point_summaries(&dir.join(format!("{id}.points.parquet"))).unwrap();
    let p = &points[0];
    assert_eq!(p.meta.workload, "24/6 3 turns think 20 ms");
    assert_eq!((p.completed, p.failed), (12, 0), "{p:?}");
    // Every turn's length was the engine's count of the whole conversation.
    assert_eq!(
        (p.input_len_mismatches, p.output_len_mismatches),
        (0, 0),
        "{p:?}"
    );
    // Later turns found their history in the simulator's prefix cache.
    assert!(p.server.prefix_cache_hits.unwrap() > 0.0, "{:?}", p.server);

    let records = read_requests(&dir.join(format!("{id}.requests.parquet"))).unwrap();
    let mut conversations: std::collections::BTreeMap<u32, Vec<_>> = Default::default();
    for (_, _, r) in records {
        assert_eq!(r.request_index % 3, r.wave, "{r:?}");
        conversations
            .entry(r.request_index / 3)
            .or_default()
            .push(r);
    }
    assert_eq!(conversations.len(), 4);
    for turns in conversations.values_mut() {
        turns.sort_by_key(|r| r.wave);
        assert_eq!(
            turns.iter().map(|r| r.wave).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        for pair in turns.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            // The next turn carries this one's prompt, its 6-token answer and 24 new
            // tokens, plus the chat template's tokens around the two new messages.
            let grown = b.input_tokens.unwrap() - a.input_tokens.unwrap();
            assert!((30..=50).contains(&grown), "grew by {grown}: {a:?} {b:?}");
            // Sent after the answer and the user's 20 ms of thinking.
            let answered = a.send_offset_s + a.e2el_s.unwrap();
            assert!(b.send_offset_s - answered >= 0.020, "{a:?} {b:?}");
        }
    }
    cluster.stop().await;
}
