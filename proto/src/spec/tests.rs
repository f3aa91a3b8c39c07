//! Tests of the sweep file: parsing, validation errors and their locations, expansion,
//! wire conversion, vLLM flags, placement and policy.

use super::*;
use crate::pb;

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

fn rate_spec(load: &str, matrix_extra: &str) -> String {
    GOOD.replace(
        "batch_sizes = \"powers-of-2\"\nmax_batch_size = 8\n",
        matrix_extra,
    )
    .replace("[load]\n", &format!("[load]\n{load}\n"))
}

#[test]
fn rate_mode_sweeps_rates_with_arrival_settings() {
    let text = rate_spec(
        "mode = \"rate\"\narrival = \"gamma\"\nburstiness = 0.5\nduration_s = 20\nidle_timeout_s = 30",
        "rates = [1.5, 10]\n",
    );
    let spec = SweepSpec::parse(&text, "rate.toml").unwrap();
    let points = spec.expand();
    assert_eq!(points.len(), 2 * 2 * 2);
    assert_eq!(points[0].request_rate, 1.5);
    assert_eq!(points[1].request_rate, 10.0);
    assert!(points.iter().all(|p| p.batch_size == 0));
    let wire = spec.load_wire();
    assert_eq!(wire.load_mode(), pb::LoadMode::Rate);
    assert_eq!(wire.arrival_kind(), pb::Arrival::Gamma);
    assert_eq!(wire.burstiness, 0.5);
    assert_eq!(wire.duration_s, 20.0);
    assert_eq!(wire.requests, 0);
    assert_eq!(wire.idle_timeout_s, 30.0);
    assert_eq!(wire.tokenizer_source(), pb::TokenizerSource::Auto);
}

#[test]
fn concurrency_mode_keeps_batch_sizes_and_needs_an_end() {
    let text = rate_spec(
        "mode = \"concurrency\"\nrequests = 200",
        "batch_sizes = [4, 16]\n",
    );
    let spec = SweepSpec::parse(&text, "c.toml").unwrap();
    assert_eq!(spec.expand()[1].batch_size, 16);
    assert_eq!(spec.load_wire().requests, 200);

    let text = rate_spec("mode = \"concurrency\"", "batch_sizes = [4]\n");
    let err = SweepSpec::parse(&text, "c.toml").unwrap_err();
    assert_eq!(err.field, "load.duration_s");
    assert!(
        err.message.contains("needs `duration_s` or `requests`"),
        "{err}"
    );
}

#[test]
fn mode_and_matrix_axis_mismatches_name_the_field() {
    let cases = [
        // rate mode with batch sizes
        (
            "mode = \"rate\"\nduration_s = 5",
            "batch_sizes = [1]\n",
            "matrix.batch_sizes",
        ),
        // burst with rates
        ("", "batch_sizes = [1]\nrates = [2.0]\n", "matrix.rates"),
        // zero rate
        (
            "mode = \"rate\"\nrequests = 5",
            "rates = [0.0]\n",
            "matrix.rates[0]",
        ),
        // waves outside burst
        (
            "mode = \"rate\"\nrequests = 5\nwaves = 2",
            "rates = [1.0]\n",
            "load.waves",
        ),
        // duration in burst
        ("duration_s = 3", "batch_sizes = [1]\n", "load.duration_s"),
        // burstiness without gamma
        (
            "mode = \"rate\"\nrequests = 5\nburstiness = 2",
            "rates = [1.0]\n",
            "load.burstiness",
        ),
        // non-positive idle timeout
        (
            "idle_timeout_s = 0",
            "batch_sizes = [1]\n",
            "load.idle_timeout_s",
        ),
    ];
    for (load, matrix, field) in cases {
        let text = rate_spec(load, matrix);
        let err = SweepSpec::parse(&text, "x.toml").unwrap_err();
        assert_eq!(err.field, field, "{load} / {matrix}: {err}");
    }
}

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
    assert_eq!(points[4].workload, WorkloadEntry::fixed(128, 128));
    assert_eq!(spec.load.endpoint, Endpoint::Auto);
    let flags = vllm_flags(&spec.engine_wire(), 2);
    let joined = flags.join(" ");
    assert!(joined.contains("--tensor-parallel-size 2"), "{joined}");
    assert!(joined.contains("--block-size 64"), "{joined}");
    assert!(joined.contains("--enforce-eager"), "{joined}");
    assert!(joined.contains("--no-enable-prefix-caching"), "{joined}");
}

#[test]
fn wire_enums_round_trip_and_unspecified_reads_as_the_default() {
    for m in [LoadMode::Burst, LoadMode::Concurrency, LoadMode::Rate] {
        assert_eq!(LoadMode::from(pb::LoadMode::from(m)), m);
    }
    for e in [Endpoint::Chat, Endpoint::Completions, Endpoint::Auto] {
        assert_eq!(Endpoint::from(pb::Endpoint::from(e)), e);
    }
    for a in [Arrival::Constant, Arrival::Poisson, Arrival::Gamma] {
        assert_eq!(Arrival::from(pb::Arrival::from(a)), a);
    }
    for t in [
        TokenizerSource::Auto,
        TokenizerSource::Server,
        TokenizerSource::Local,
    ] {
        assert_eq!(TokenizerSource::from(pb::TokenizerSource::from(t)), t);
    }
    for r in [Runtime::Process, Runtime::External, Runtime::Docker] {
        assert_eq!(Runtime::try_from(pb::Runtime::from(r)).unwrap(), r);
    }
    // A LoadSpec without the fields (what an empty string meant before).
    let empty = pb::LoadSpec::default();
    assert_eq!(LoadMode::from(empty.load_mode()), LoadMode::Burst);
    assert_eq!(Endpoint::from(empty.endpoint_kind()), Endpoint::Chat);
    assert_eq!(Arrival::from(empty.arrival_kind()), Arrival::Poisson);
    assert_eq!(
        TokenizerSource::from(empty.tokenizer_source()),
        TokenizerSource::Auto
    );
    assert!(Runtime::try_from(pb::EngineSpec::default().runtime_kind()).is_err());
    // A value this build does not know is refused by the generated `try_from`.
    assert!(pb::LoadMode::try_from(99).is_err());
}

#[test]
fn unknown_field_names_line_and_field() {
    let bad = GOOD.replace("block_size = 64", "blocksize = 64");
    let err = SweepSpec::parse(&bad, "bad.toml").unwrap_err();
    assert_eq!(err.line, 9, "{err}");
    assert_eq!(err.field, "engine.blocksize", "{err}");
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
fn docker_runtime_needs_an_image_and_only_it_takes_one() {
    let docker = GOOD.replace("runtime = \"process\"", "runtime = \"docker\"");
    let err = SweepSpec::parse(&docker, "d.toml").unwrap_err();
    assert_eq!(err.field, "engine.image", "{err}");
    assert!(err.message.contains("needs `image`"), "{err}");

    let ok = docker.replace(
        "runtime = \"docker\"",
        "runtime = \"docker\"\nimage = \"fleetbench/vllm-sim:dev\"\nentrypoint = [\"/vllm-sim\"]",
    );
    let spec = SweepSpec::parse(&ok, "d.toml").unwrap();
    let wire = spec.engine_wire();
    assert_eq!(
        (wire.runtime_kind(), wire.image.as_str()),
        (pb::Runtime::Docker, "fleetbench/vllm-sim:dev")
    );
    assert_eq!(wire.entrypoint, vec!["/vllm-sim"]);

    let process_with_image = GOOD.replace(
        "runtime = \"process\"",
        "runtime = \"process\"\nimage = \"x\"",
    );
    let err = SweepSpec::parse(&process_with_image, "p.toml").unwrap_err();
    assert_eq!((err.field.as_str(), err.line), ("engine.image", 8), "{err}");
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
    assert_eq!(err.field, "engine.runtime", "{err}");

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

fn with_policy(policy: &str) -> String {
    format!("{GOOD}\n[policy]\n{policy}\n")
}

#[test]
fn policy_defaults_to_continue_and_load_timeout() {
    let spec = SweepSpec::parse(GOOD, "good.toml").unwrap();
    assert_eq!(spec.policy.on_engine_crash, OnEngineCrash::Continue);
    assert_eq!(spec.policy.crash_retries(), 0);
    assert_eq!(spec.load_wire().timeout_s, 600);
}

#[test]
fn policy_parses_skip_larger_retry_and_point_timeout() {
    let spec = SweepSpec::parse(
        &with_policy("on_engine_crash = \"skip-larger\"\npoint_timeout_s = 90"),
        "p.toml",
    )
    .unwrap();
    assert_eq!(spec.policy.on_engine_crash, OnEngineCrash::SkipLarger);
    assert_eq!(spec.policy.crash_retries(), 0);
    // The policy's point timeout overrides [load] timeout_s on the wire.
    assert_eq!(spec.load_wire().timeout_s, 90);

    let spec = SweepSpec::parse(&with_policy("on_engine_crash = \"retry\""), "p.toml").unwrap();
    assert_eq!(spec.policy.crash_retries(), DEFAULT_CRASH_RETRIES);
    let spec = SweepSpec::parse(
        &with_policy("on_engine_crash = \"retry\"\nretries = 3"),
        "p.toml",
    )
    .unwrap();
    assert_eq!(spec.policy.crash_retries(), 3);
    assert_eq!(spec.load_wire().timeout_s, 600);
}

#[test]
fn policy_errors_name_the_field_and_line() {
    // GOOD ends on line 20; "[policy]" is line 22, its first key line 23.
    let err =
        SweepSpec::parse(&with_policy("on_engine_crash = \"explode\""), "p.toml").unwrap_err();
    assert_eq!(err.field, "policy.on_engine_crash", "{err}");
    assert_eq!((err.line, err.column), (23, 19), "{err}");
    assert!(err.message.contains("explode"), "{err}");
    assert!(err.to_string().starts_with("p.toml:23:19: "), "{err}");

    let err = SweepSpec::parse(
        &with_policy("on_engine_crash = \"retry\"\nretries = 0"),
        "p.toml",
    )
    .unwrap_err();
    assert_eq!(
        (err.field.as_str(), err.line),
        ("policy.retries", 24),
        "{err}"
    );
    assert!(err.message.contains("at least 1"), "{err}");

    let err = SweepSpec::parse(
        &with_policy("on_engine_crash = \"skip-larger\"\nretries = 2"),
        "p.toml",
    )
    .unwrap_err();
    assert_eq!(
        (err.field.as_str(), err.line),
        ("policy.retries", 24),
        "{err}"
    );
    assert!(err.message.contains("only applies with"), "{err}");

    let err = SweepSpec::parse(&with_policy("retries = 2"), "p.toml").unwrap_err();
    assert_eq!(err.field, "policy.retries", "{err}");

    let err = SweepSpec::parse(&with_policy("point_timeout_s = 0"), "p.toml").unwrap_err();
    assert_eq!(
        (err.field.as_str(), err.line),
        ("policy.point_timeout_s", 23),
        "{err}"
    );

    let err = SweepSpec::parse(&with_policy("retry_count = 2"), "p.toml").unwrap_err();
    assert_eq!(
        (err.field.as_str(), err.line),
        ("policy.retry_count", 23),
        "{err}"
    );
    assert!(err.message.contains("unknown field"), "{err}");

    let err = SweepSpec::parse(&with_policy("retries = -1"), "p.toml").unwrap_err();
    assert_eq!(
        (err.field.as_str(), err.line),
        ("policy.retries", 23),
        "{err}"
    );
}

fn inventory(name: &str, labels: &[(&str, &str)], gpus: &[(&str, &str)]) -> pb::Inventory {
    pb::Inventory {
        agent_name: name.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        gpus: gpus
            .iter()
            .enumerate()
            .map(|(i, (vendor, model))| pb::Gpu {
                index: u32::try_from(i).unwrap(),
                vendor: vendor.to_string(),
                model: model.to_string(),
                memory_bytes: 0,
                pci_bus_id: String::new(),
            })
            .collect(),
        ..Default::default()
    }
}

#[test]
fn placement_matches_names_and_labels() {
    let p = PlacementSection {
        labels: [("gpu".to_string(), "b60".to_string())].into(),
        ..Default::default()
    };
    assert!(p.matches(&inventory("a", &[("gpu", "b60")], &[])));
    assert!(!p.matches(&inventory("a", &[("gpu", "h100")], &[])));
    let p = PlacementSection {
        agents: vec!["b".into()],
        ..Default::default()
    };
    assert!(!p.matches(&inventory("a", &[], &[])));
    assert!(p.matches(&inventory("b", &[], &[])));
}

fn with_placement(placement: &str) -> String {
    format!("{GOOD}\n[placement]\n{placement}\n")
}

#[test]
fn placement_matches_gpu_vendor_and_model_without_case() {
    let spec = SweepSpec::parse(
        &with_placement("strategy = \"replicate\"\ngpu_vendor = \"Intel\"\ngpu_model = \"b60\""),
        "p.toml",
    )
    .unwrap();
    let p = &spec.placement;
    assert_eq!(p.strategy, Strategy::Replicate);
    assert!(p.matches(&inventory("a", &[], &[("intel", "Arc Pro B60")])));
    // Vendor and model must hold for the same GPU.
    assert!(!p.matches(&inventory(
        "a",
        &[],
        &[("nvidia", "B60 lookalike"), ("intel", "Arc A770")]
    )));
    assert!(!p.matches(&inventory("a", &[], &[])));
    let spec = SweepSpec::parse(GOOD, "p.toml").unwrap();
    assert_eq!(spec.placement.strategy, Strategy::Spread);
    assert!(spec.placement.matches(&inventory("a", &[], &[])));
}

#[test]
fn placement_errors_name_the_field_and_line() {
    // GOOD ends on line 20; "[placement]" is line 22, its first key line 23.
    let err = SweepSpec::parse(&with_placement("strategy = \"scatter\""), "p.toml").unwrap_err();
    assert_eq!(
        (err.field.as_str(), err.line),
        ("placement.strategy", 23),
        "{err}"
    );
    assert!(err.message.contains("scatter"), "{err}");

    let err = SweepSpec::parse(
        &with_placement("strategy = \"spread\"\ngpu_vendor = \"intle\""),
        "p.toml",
    )
    .unwrap_err();
    assert_eq!(
        (err.field.as_str(), err.line),
        ("placement.gpu_vendor", 24),
        "{err}"
    );
    assert!(err.message.contains("intle"), "{err}");

    let err = SweepSpec::parse(&with_placement("gpu_model = \" \""), "p.toml").unwrap_err();
    assert_eq!(
        (err.field.as_str(), err.line),
        ("placement.gpu_model", 23),
        "{err}"
    );

    let err = SweepSpec::parse(&with_placement("gpu_count = 2"), "p.toml").unwrap_err();
    assert_eq!(
        (err.field.as_str(), err.line),
        ("placement.gpu_count", 23),
        "{err}"
    );
}

/// A 34 KB-ish file whose matrix expands to `gpus × workloads × batch sizes` points.
fn huge_matrix(gpus: usize, workloads: usize, batches: usize) -> String {
    let g: Vec<String> = (0..gpus).map(|i| (i + 1).to_string()).collect();
    let w: Vec<String> = (0..workloads)
        .map(|i| format!("{{ input = {}, output = 1 }}", i + 1))
        .collect();
    let b: Vec<String> = (0..batches).map(|i| (i + 1).to_string()).collect();
    format!(
        "name = \"huge\"\nmodel = \"m/x\"\n[engine]\nkind = \"vllm\"\nruntime = \"process\"\n\
         [matrix]\ngpus = [{}]\nbatch_sizes = [{}]\nworkloads = [{}]\n",
        g.join(","),
        b.join(","),
        w.join(",")
    )
}

#[test]
fn point_count_is_computed_without_expanding() {
    let spec = SweepSpec::parse(GOOD, "good.toml").unwrap();
    assert_eq!(spec.point_count(), Some(spec.expand().len() as u64));
    let rate = SweepSpec::parse(
        &rate_spec(
            "mode = \"rate\"\nrequests = 10",
            "rates = [1.0, 2.0, 3.0]\n",
        ),
        "r",
    )
    .unwrap();
    assert_eq!(rate.point_count(), Some(rate.expand().len() as u64));
}

#[test]
fn eight_million_points_are_refused_before_expansion() {
    let text = huge_matrix(200, 200, 200);
    assert!(text.len() < 40_000, "{}", text.len());
    let e = SweepSpec::parse(&text, "huge.toml").unwrap_err();
    assert_eq!(e.field, "matrix");
    assert!(e.line > 0);
    assert!(e.message.contains("8000000 points"), "{e}");
    assert!(e.message.contains("limit is 10000"), "{e}");
    // The same file passes a controller configured for more.
    assert!(SweepSpec::parse_limited(&text, "huge.toml", 8_000_000).is_ok());
    // 10,000 points exactly is allowed by default.
    assert!(SweepSpec::parse(&huge_matrix(10, 10, 100), "ok.toml").is_ok());
    assert!(SweepSpec::parse(&huge_matrix(10, 10, 101), "no.toml").is_err());
}

#[test]
fn oversized_files_names_and_models_are_refused() {
    let big = format!("{GOOD}\n# {}\n", "x".repeat(MAX_SWEEP_FILE_BYTES));
    let e = SweepSpec::parse(&big, "big.toml").unwrap_err();
    assert!(e.message.contains("at most 1048576 bytes"), "{e}");

    let name = "n".repeat(MAX_NAME_LEN + 1);
    let e =
        SweepSpec::parse(&GOOD.replace("\"demo\"", &format!("\"{name}\"")), "t.toml").unwrap_err();
    assert_eq!((e.field.as_str(), e.line), ("name", 2), "{e}");
    assert!(e.message.contains("at most 64"), "{e}");
    let name = "n".repeat(MAX_NAME_LEN);
    assert!(SweepSpec::parse(&GOOD.replace("\"demo\"", &format!("\"{name}\"")), "t").is_ok());

    for model in ["../../etc", "org//x", "/models/../x", "a/b/c"] {
        let text = GOOD.replace("meta-llama/Llama-3.2-1B-Instruct", model);
        let e = SweepSpec::parse(&text, "t.toml").unwrap_err();
        assert_eq!((e.field.as_str(), e.line), ("model", 3), "{model}: {e}");
    }
    let text = GOOD.replace("meta-llama/Llama-3.2-1B-Instruct", "/models/llama");
    assert!(SweepSpec::parse(&text, "t.toml").is_ok());
}

fn list_spec(batches: &str) -> String {
    GOOD.replace(
        "batch_sizes = \"powers-of-2\"\nmax_batch_size = 8\n",
        &format!("batch_sizes = {batches}\n"),
    )
}

#[test]
fn type_errors_name_the_full_field_path_and_position() {
    for (batches, field, at, what) in [
        (
            "[\"one\"]",
            "matrix.batch_sizes[0]",
            (14, 16),
            "string \"one\"",
        ),
        ("[-1]", "matrix.batch_sizes[0]", (14, 16), "-1"),
        ("[4, 1.5]", "matrix.batch_sizes[1]", (14, 19), "1.5"),
        ("\"many\"", "matrix.batch_sizes", (14, 15), "powers-of-2"),
    ] {
        let e = SweepSpec::parse(&list_spec(batches), "f.toml").unwrap_err();
        assert_eq!(e.field, field, "{batches}: {e}");
        assert_eq!((e.line, e.column), at, "{batches}: {e}");
        assert!(e.message.contains(what), "{batches}: {e}");
    }
    let nested = GOOD.replace("input = 128,", "input = \"x\",");
    let e = SweepSpec::parse(&nested, "f.toml").unwrap_err();
    assert_eq!(e.field, "matrix.workloads[1].input", "{e}");
    let e = SweepSpec::parse(&GOOD.replace("gpus = [1, 2]", "gpus = [1, [2]]"), "f").unwrap_err();
    assert_eq!(e.field, "matrix.gpus[1]", "{e}");
}

#[test]
fn duplicate_tables_and_keys_name_the_key() {
    let e =
        SweepSpec::parse(&GOOD.replace("[load]", "[matrix]\ngpus = [1]\n[load]"), "f").unwrap_err();
    assert_eq!(e.field, "matrix", "{e}");
    assert_eq!(e.line, 18, "{e}");
    assert!(e.to_string().contains("`matrix` is defined twice"), "{e}");
    let e =
        SweepSpec::parse(&GOOD.replace("[load]\n", "[load]\ntimeout_s = 3\n"), "f").unwrap_err();
    assert_eq!(e.field, "load.timeout_s", "{e}");
    assert_eq!(e.line, 21, "{e}");
}

#[test]
fn model_names_with_control_characters_are_refused() {
    for model in ["org/name\\n", "org/na\\tme", "/models/x\\u0007"] {
        let text = GOOD.replace("meta-llama/Llama-3.2-1B-Instruct", model);
        let e = SweepSpec::parse(&text, "f").unwrap_err();
        assert_eq!(e.field, "model", "{model}: {e}");
        assert_eq!(e.line, 3, "{e}");
        assert!(e.message.contains("control character"), "{e}");
    }
}

#[test]
fn repeated_matrix_values_are_measured_once_with_a_note() {
    let spec = SweepSpec::parse(&list_spec("[4, 4, 8, 4]"), "f").unwrap();
    assert_eq!(spec.batch_sizes(), [4, 8]);
    assert_eq!(spec.expand().len(), 2 * 2 * 2);
    assert_eq!(spec.notes.len(), 2, "{:?}", spec.notes);
    assert!(
        spec.notes[0].starts_with("14:19: field `matrix.batch_sizes[1]`: 4 is listed twice"),
        "{:?}",
        spec.notes
    );
    let text = GOOD.replace("gpus = [1, 2]", "gpus = [2, 2]").replace(
        "{ input = 128, output = 128 }",
        "{ input = 1024, output = 512 }",
    );
    let spec = SweepSpec::parse(&text, "f").unwrap();
    assert_eq!(spec.expand().len(), 4);
    assert!(
        spec.notes.iter().any(|n| n.contains("`matrix.gpus[1]`")),
        "{:?}",
        spec.notes
    );
    assert!(
        spec.notes
            .iter()
            .any(|n| n.contains("`matrix.workloads[1]`")),
        "{:?}",
        spec.notes
    );
    let text = rate_spec("mode = \"rate\"\nduration_s = 5", "rates = [1.5, 2, 1.5]\n");
    let spec = SweepSpec::parse(&text, "f").unwrap();
    assert_eq!(spec.expand().len(), 2 * 2 * 2);
    assert!(
        spec.notes
            .iter()
            .any(|n| n.contains("`matrix.rates[2]`: 1.5")),
        "{:?}",
        spec.notes
    );
    assert!(SweepSpec::parse(GOOD, "f").unwrap().notes.is_empty());
}

#[test]
fn missing_fields_are_named_by_their_full_path() {
    let e = SweepSpec::parse(&GOOD.replace("kind = \"vllm\"\n", ""), "f").unwrap_err();
    assert_eq!(e.field, "engine.kind", "{e}");
    assert_eq!(e.line, 5, "{e}");
    let e = SweepSpec::parse(
        &GOOD.replace("model = \"meta-llama/Llama-3.2-1B-Instruct\"\n", ""),
        "f",
    )
    .unwrap_err();
    assert_eq!(e.field, "model", "{e}");
    let e = SweepSpec::parse(
        &GOOD.replace("{ input = 128, output = 128 }", "{ input = 128 }"),
        "f",
    )
    .unwrap_err();
    assert_eq!(e.field, "matrix.workloads[1].output", "{e}");
}

#[test]
fn engine_kinds_travel_and_get_their_own_command_lines() {
    let listen = Listen {
        host: "127.0.0.1",
        port: 8123,
    };
    let cases = [
        ("vllm", "m --served-model-name m --tensor-parallel-size 2"),
        (
            "transformers",
            "m --continuous-batching --host 127.0.0.1 --port 8123",
        ),
        ("llama-cpp", "-m m --alias m --ctx-size 8192 --parallel 2"),
        ("sglang", "--model-path m --served-model-name m --tp-size 2"),
        ("tgi", "--model-id m --num-shard 2 --max-total-tokens 4096"),
    ];
    for (kind, start) in cases {
        let gpus = if kind == "transformers" { "[1]" } else { "[2]" };
        let text = GOOD
            .replace("kind = \"vllm\"", &format!("kind = \"{kind}\""))
            .replace("meta-llama/Llama-3.2-1B-Instruct", "m")
            .replace("gpus = [1, 2]", &format!("gpus = {gpus}"))
            .replace("[engine]\n", "[engine]\nmax_num_seqs = 2\n");
        let spec = SweepSpec::parse(&text, "k.toml").unwrap();
        assert_eq!(spec.engine.kind.as_str(), kind);
        let wire = spec.engine_wire();
        assert_eq!(EngineKind::from(wire.engine_kind()), spec.engine.kind);
        let gpu_count = if kind == "transformers" { 1 } else { 2 };
        let args = engine_args(&wire, gpu_count, "m", listen, VllmModelArg::Positional).join(" ");
        assert!(args.starts_with(start), "{kind}: {args}");
        let host = if kind == "tgi" {
            "--hostname"
        } else {
            "--host"
        };
        assert!(
            args.ends_with(&format!("{host} 127.0.0.1 --port 8123")),
            "{kind}: {args}"
        );
    }
    // An old agent's spec without a kind reads as vLLM.
    assert_eq!(
        EngineKind::from(pb::EngineKind::Unspecified),
        EngineKind::Vllm
    );
}

#[test]
fn transformers_serves_one_gpu_under_the_model_path() {
    let base = GOOD.replace("kind = \"vllm\"", "kind = \"transformers\"");
    let err = SweepSpec::parse(&base, "t.toml").unwrap_err();
    assert_eq!(err.field, "matrix.gpus", "{err}");
    assert!(err.to_string().contains("one GPU"), "{err}");
    let one_gpu = base.replace("gpus = [1, 2]", "gpus = [1]");
    SweepSpec::parse(&one_gpu, "t.toml").unwrap();
    let renamed = one_gpu.replace("[engine]\n", "[engine]\nserved_model_name = \"other\"\n");
    let err = SweepSpec::parse(&renamed, "t.toml").unwrap_err();
    assert_eq!(err.field, "engine.served_model_name", "{err}");
}

#[test]
fn converging_warm_up_is_validated_and_travels() {
    let with = |warmup: &str| {
        GOOD.replace(
            "timeout_s = 600\n",
            &format!("timeout_s = 600\n\n[load.warmup]\n{warmup}\n"),
        )
    };
    let spec = SweepSpec::parse(&with("max_waves = 6\ntolerance = 0.02"), "w.toml").unwrap();
    let load = spec.load_wire();
    assert_eq!((load.warmup_max_waves, load.warmup_tolerance), (6, 0.02));
    let spec = SweepSpec::parse(&with("max_waves = 4"), "w.toml").unwrap();
    assert_eq!(spec.load_wire().warmup_tolerance, DEFAULT_WARMUP_TOLERANCE);
    assert_eq!(
        SweepSpec::parse(GOOD, "w.toml")
            .unwrap()
            .load_wire()
            .warmup_max_waves,
        0
    );
    for (bad, field) in [
        ("max_waves = 1", "load.warmup.max_waves"),
        ("max_waves = 4\ntolerance = 0", "load.warmup.tolerance"),
        ("max_waves = 4\ntolerance = 1.5", "load.warmup.tolerance"),
    ] {
        let err = SweepSpec::parse(&with(bad), "w.toml").unwrap_err();
        assert_eq!(err.field, field, "{bad}: {err}");
    }
    let err = SweepSpec::parse(&with("waves = 3"), "w.toml").unwrap_err();
    assert!(err.to_string().contains("waves"), "{err}");
}

fn concurrency_spec(extra: &str) -> String {
    GOOD.replace(
        "[load]\n",
        "[load]\nmode = \"concurrency\"\nrequests = 64\n",
    ) + extra
}

#[test]
fn slo_section_reads_thresholds_in_ms_with_percentiles() {
    let text = concurrency_spec("\n[slo]\nttft_ms = 2000\ntpot_ms = 50\ntpot_percentile = 90\n");
    let spec = SweepSpec::parse(&text, "slo.toml").unwrap();
    let slo = spec.slo().unwrap();
    assert_eq!(
        slo.ttft,
        Some(Objective {
            threshold_s: 2.0,
            percentile: DEFAULT_SLO_PERCENTILE
        })
    );
    assert_eq!(slo.tpot.unwrap().percentile, 90.0);
    assert_eq!(slo.e2el, None);
    assert_eq!(slo.describe(), "p99 ttft <= 2000 ms, p90 tpot <= 50 ms");
}

#[test]
fn slo_errors_name_the_field_and_line() {
    for (extra, field, needle) in [
        ("\n[slo]\npercentile = 99\n", "slo", "names no objective"),
        (
            "\n[slo]\nttft_ms = -1\n",
            "slo.ttft_ms",
            "not a positive time",
        ),
        (
            "\n[slo]\nttft_ms = 10\npercentile = 101\n",
            "slo.percentile",
            "not in (0, 100]",
        ),
        (
            "\n[slo]\nttft_ms = 10\ne2el_percentile = 90\n",
            "slo.e2el_percentile",
            "only with slo.e2el_ms",
        ),
        ("\n[slo]\nttft = 10\n", "slo.ttft", "unknown field"),
    ] {
        let e = SweepSpec::parse(&concurrency_spec(extra), "bad.toml").unwrap_err();
        assert_eq!(e.field, field, "{extra}: {e}");
        assert!(e.to_string().contains(needle), "{extra}: {e}");
    }
}

fn search_spec(search: &str) -> String {
    concurrency_spec(&format!("\n[slo]\nttft_ms = 2000\n\n[search]\n{search}\n"))
        .replace("batch_sizes = \"powers-of-2\"\nmax_batch_size = 8\n", "")
}

#[test]
fn a_search_sweep_starts_each_group_at_min_and_caps_its_points() {
    let spec =
        SweepSpec::parse(&search_spec("min = 2\nmax = 64\nmax_points = 9"), "s.toml").unwrap();
    let points = spec.expand();
    // 2 GPU counts x 2 workloads, one first probe each.
    assert_eq!(points.len(), 4);
    assert!(
        points
            .iter()
            .all(|p| p.batch_size == 2 && p.request_rate == 0.0)
    );
    assert_eq!(spec.point_count(), Some(4 * 9));
    let search = spec.search().unwrap();
    assert_eq!(
        (search.min, search.max, search.resolution),
        (2.0, 64.0, 1.0)
    );
    assert!(search.integer);
}

#[test]
fn search_errors_name_the_field_and_line() {
    for (text, field, needle) in [
        (
            concurrency_spec("\n[search]\nmax = 64\n")
                .replace("batch_sizes = \"powers-of-2\"\nmax_batch_size = 8\n", ""),
            "search.goal",
            "needs an [slo] section",
        ),
        (
            concurrency_spec("\n[slo]\nttft_ms = 1\n[search]\nmax = 64\n"),
            "matrix.batch_sizes",
            "chooses its loads itself",
        ),
        (search_spec("max = 6.5"), "search.max", "not a whole number"),
        (
            search_spec("min = 8\nmax = 4"),
            "search.max",
            "below search.min",
        ),
        (
            search_spec("max = 64\nmax_points = 1"),
            "search.max_points",
            "not in 2..=64",
        ),
        (
            search_spec("max = 64\nmin_gain = 0.1"),
            "search.min_gain",
            "goal = \"throughput\"",
        ),
    ] {
        let e = SweepSpec::parse(&text, "bad.toml").unwrap_err();
        assert_eq!(e.field, field, "{text}: {e}");
        assert!(e.to_string().contains(needle), "{text}: {e}");
    }
}

#[test]
fn a_rate_search_probes_rates() {
    let text = rate_spec("mode = \"rate\"\nduration_s = 10", "")
        + "\n[search]\ngoal = \"throughput\"\nmin = 0.5\nmax = 32\n";
    let spec = SweepSpec::parse(&text, "r.toml").unwrap();
    let points = spec.expand();
    assert!(
        points
            .iter()
            .all(|p| p.batch_size == 0 && p.request_rate == 0.5)
    );
    assert_eq!(spec.search().unwrap().resolution, 0.5);
}

#[test]
fn stages_make_one_point_per_workload_and_travel_to_agents() {
    let text = rate_spec(
        "mode = \"rate\"\nstages = [{ duration_s = 60, rate = 2 }, { duration_s = 30, rate = 8.5 }]",
        "",
    );
    let spec = SweepSpec::parse(&text, "staged.toml").unwrap();
    // 2 GPU counts x 2 workloads, one staged point each.
    assert_eq!(spec.expand().len(), 4);
    let wire = spec.load_wire();
    assert_eq!(wire.stages.len(), 2);
    assert_eq!(
        (wire.stages[1].duration_s, wire.stages[1].rate),
        (30.0, 8.5)
    );
}

#[test]
fn stage_errors_name_the_field_and_line() {
    for (load, matrix, field, needle) in [
        (
            "mode = \"rate\"\nstages = [{ duration_s = 6, concurrency = 2 }]",
            "",
            "load.stages[0].rate",
            "need `rate`",
        ),
        (
            "mode = \"concurrency\"\nstages = [{ duration_s = 0, concurrency = 2 }]",
            "",
            "load.stages[0].duration_s",
            "not a positive",
        ),
        (
            "mode = \"rate\"\nstages = [{ duration_s = 6, rate = 2 }]",
            "rates = [1]\n",
            "matrix.rates",
            "takes its loads",
        ),
        (
            "mode = \"burst\"\nstages = [{ duration_s = 6, rate = 2 }]",
            "batch_sizes = [1]\n",
            "load.stages",
            "rate and concurrency mode",
        ),
    ] {
        let e = SweepSpec::parse(&rate_spec(load, matrix), "bad.toml").unwrap_err();
        assert_eq!(e.field, field, "{load}: {e}");
        assert!(e.to_string().contains(needle), "{load}: {e}");
    }
}

#[test]
fn multi_turn_workloads_need_concurrency_chat_and_room_for_every_turn() {
    let conversation = |load: &str, workload: &str| {
        GOOD.replace(
            "workloads = [{ input = 1024, output = 512 }, { input = 128, output = 128 }]",
            &format!("workloads = [{workload}]"),
        )
        .replace(
            "[load]\nendpoint = \"auto\"\n",
            &format!("[load]\n{load}\n"),
        )
    };
    let ok = conversation(
        "mode = \"concurrency\"\nrequests = 12\nendpoint = \"chat\"",
        "{ input = 64, output = 16, turns = 4, think_time_ms = 500 }",
    );
    let spec = SweepSpec::parse(&ok, "talk.toml").unwrap();
    let w = &spec.expand()[0].workload;
    assert_eq!(w.to_string(), "64/16 4 turns think 500 ms");
    assert_eq!((w.to_wire().turns, w.to_wire().think_time_ms), (4, 500));
    for (text, field, needle) in [
        (
            conversation(
                "mode = \"burst\"\nendpoint = \"chat\"",
                "{ input = 64, output = 16, turns = 4 }",
            ),
            "matrix.workloads[0].turns",
            "concurrency",
        ),
        (
            conversation(
                "mode = \"concurrency\"\nrequests = 4\nendpoint = \"completions\"",
                "{ input = 64, output = 16, turns = 4 }",
            ),
            "matrix.workloads[0].turns",
            "chat",
        ),
        (
            conversation(
                "mode = \"concurrency\"\nrequests = 4\nendpoint = \"chat\"",
                "{ input = 1000, output = 100, turns = 4 }",
            ),
            "matrix.workloads[0].turns",
            "exceed engine.max_model_len 4096",
        ),
        (
            conversation(
                "mode = \"concurrency\"\nrequests = 4\nendpoint = \"chat\"",
                "{ input = 64, output = 16, think_time_ms = 5 }",
            ),
            "matrix.workloads[0].think_time_ms",
            "turns = 2 or more",
        ),
    ] {
        let e = SweepSpec::parse(&text, "bad.toml").unwrap_err();
        assert_eq!(e.field, field, "{e}");
        assert!(e.to_string().contains(needle), "{e}");
    }
}
