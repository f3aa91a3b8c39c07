//! `controllerctl validate` on broken sweep files: every case exits 65 and names the field
//! (its full path) and the line:column, through the real binary.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Output;

use fleetbench_tests::workspace_bin;

const BASE: &str = r#"name = "v"
model = "org/model"

[engine]
kind = "vllm"
runtime = "process"

[matrix]
gpus = [1]
batch_sizes = BATCHES
workloads = [{ input = 16, output = 8 }]

[load]
timeout_s = 60
"#;

fn sweep(batches: &str) -> String {
    BASE.replace("BATCHES", batches)
}

fn validate_bytes(bytes: &[u8]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sweep.toml");
    std::fs::write(&file, bytes).unwrap();
    std::process::Command::new(workspace_bin("controllerctl"))
        .arg("validate")
        .arg(&file)
        .output()
        .unwrap()
}

fn validate(text: &str) -> Output {
    validate_bytes(text.as_bytes())
}

/// Asserts exit 65 and that stderr holds every one of `needles`; returns stderr.
fn refused(out: &Output, needles: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(65), "{stderr}");
    for n in needles {
        assert!(stderr.contains(n), "{n:?} not in {stderr}");
    }
    stderr
}

#[test]
fn a_valid_file_passes() {
    let out = validate(&sweep("[1, 2]"));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn batch_sizes_of_the_wrong_type_name_the_element() {
    for (batches, at) in [
        ("[\"one\"]", ":10:16: field `matrix.batch_sizes[0]`"),
        ("[-1]", ":10:16: field `matrix.batch_sizes[0]`"),
        ("[1.5]", ":10:16: field `matrix.batch_sizes[0]`"),
        ("[2, 1.5]", ":10:19: field `matrix.batch_sizes[1]`"),
        ("[0]", ":10:16: field `matrix.batch_sizes[0]`"),
    ] {
        refused(&validate(&sweep(batches)), &[at]);
    }
}

#[test]
fn nested_and_header_values_name_their_path() {
    let text = sweep("[1]").replace("input = 16", "input = \"x\"");
    refused(
        &validate(&text),
        &["field `matrix.workloads[0].input`", ":11:24:"],
    );
    let text = sweep("[1]").replace("timeout_s = 60", "timeout_s = \"soon\"");
    refused(&validate(&text), &["field `load.timeout_s`", ":14:13:"]);
    let text = sweep("[1]").replace("runtime = \"process\"", "runtime = \"proc\"");
    refused(&validate(&text), &["field `engine.runtime`", ":6:11:"]);
    let text = sweep("[1]").replace("timeout_s = 60", "timeout_s = 60\nbogus = 1");
    refused(&validate(&text), &["field `load.bogus`", ":15:1:"]);
}

#[test]
fn duplicate_tables_and_keys_name_the_key() {
    let text = format!("{}\n[matrix]\ngpus = [2]\n", sweep("[1]"));
    refused(
        &validate(&text),
        &[":16:", "field `matrix`", "`matrix` is defined twice"],
    );
    let text = sweep("[1]").replace("timeout_s = 60", "timeout_s = 60\ntimeout_s = 30");
    refused(
        &validate(&text),
        &[":15:1:", "field `load.timeout_s`", "defined twice"],
    );
}

#[test]
fn non_utf8_bytes_are_an_invalid_sweep_with_their_line() {
    let mut bytes = sweep("[1]").into_bytes();
    let at = bytes.windows(5).position(|w| w == b"model").unwrap() + 9; // inside the value
    bytes.insert(at, 0xff);
    let stderr = refused(&validate_bytes(&bytes), &[":2:10:", "not valid UTF-8"]);
    assert!(!stderr.contains("I/O"), "{stderr}");
}

#[test]
fn model_names_with_control_characters_are_refused() {
    for model in ["org/mo\\ndel", "org/model\\t", "/models/x\\u0001"] {
        let text = sweep("[1]").replace("org/model", model);
        refused(
            &validate(&text),
            &[":2:9:", "field `model`", "control character"],
        );
    }
}

#[test]
fn repeated_batch_sizes_and_workloads_are_measured_once_with_a_note() {
    let text = sweep("[4, 4, 8, 4]").replace(
        "workloads = [{ input = 16, output = 8 }]",
        "workloads = [{ input = 16, output = 8 }, { input = 16, output = 8 }]",
    );
    let out = validate(&text);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("note: 10:19: field `matrix.batch_sizes[1]`: 4 is listed twice"),
        "{stdout}"
    );
    assert!(stdout.contains("field `matrix.batch_sizes[3]`"), "{stdout}");
    assert!(stdout.contains("field `matrix.workloads[1]`"), "{stdout}");
    assert!(stdout.contains("\n2 points;"), "{stdout}");
}

#[test]
fn missing_fields_are_named_by_their_full_path() {
    let text = sweep("[1]").replace("kind = \"vllm\"\n", "");
    refused(
        &validate(&text),
        &[":4:1:", "field `engine.kind`", "missing field"],
    );
    let text = sweep("[1]").replace("model = \"org/model\"\n", "");
    refused(&validate(&text), &["field `model`", "missing field"]);
    let text = sweep("[1]").replace("{ input = 16, output = 8 }", "{ input = 16 }");
    refused(
        &validate(&text),
        &[":11:14:", "field `matrix.workloads[0].output`"],
    );
}
