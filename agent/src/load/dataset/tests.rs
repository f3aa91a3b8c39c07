use std::collections::BTreeSet;
use std::os::unix::fs::symlink;

use tempfile::TempDir;

use super::*;

const MAX: u64 = 1 << 20;

fn dir_with(files: &[(&str, &str)]) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

fn open_one(text: &str) -> Result<Dataset, AgentError> {
    let dir = dir_with(&[("data", text)]);
    Dataset::open(&[dir.path().to_path_buf()], "data", MAX)
}

fn open_err(text: &str) -> String {
    open_one(text).unwrap_err().to_string()
}

fn text(s: &str) -> DatasetPrompt {
    DatasetPrompt::Text(s.into())
}

fn msg(role: &str, content: &str) -> ChatMessage {
    ChatMessage {
        role: role.into(),
        content: content.into(),
    }
}

#[test]
fn sharegpt_takes_the_first_two_turns_and_skips_short_conversations() {
    let data = r#"[
        {"id": "a", "conversations": [
            {"from": "human", "value": "What is 2+2?"},
            {"from": "gpt", "value": "4."},
            {"from": "human", "value": "And 3+3?"},
            {"from": "gpt", "value": "6."}]},
        {"id": "b", "conversations": [{"from": "human", "value": "alone"}]},
        {"id": "c", "conversations": []},
        {"id": "d", "conversations": [
            {"from": "system", "value": "You are terse."},
            {"from": "human", "value": "Hi"},
            {"from": "gpt", "value": "Hello."}]},
        {"id": "e", "conversations": [
            {"from": "system", "value": "You are terse."},
            {"from": "human", "value": "no reply"}]},
        {"id": "f", "conversations": [
            {"from": "human", "value": "  "},
            {"from": "gpt", "value": "empty prompt"}]}
    ]"#;
    let ds = open_one(data).unwrap();
    assert_eq!(
        ds.entries,
        vec![
            DatasetEntry {
                prompt: text("What is 2+2?"),
                output_tokens: None,
                reply: Some("4.".into()),
            },
            DatasetEntry {
                prompt: text("Hi"),
                output_tokens: None,
                reply: Some("Hello.".into()),
            },
        ]
    );
    // b and c (fewer than two turns), e (one after the system turn), f (empty prompt).
    assert_eq!(ds.skipped_malformed, 4);
    assert_eq!(ds.name, "data");
    assert!(ds.path.is_absolute());
}

#[test]
fn an_array_that_is_not_sharegpt_is_refused() {
    let err = open_err(r#"[{"prompt": "x"}]"#);
    assert!(err.contains("not ShareGPT"), "{err}");
    assert!(err.contains("conversations"), "{err}");
    let err = open_err("[1, 2]");
    assert!(err.contains("not ShareGPT"), "{err}");
}

#[test]
fn jsonl_reads_the_three_shapes_and_ignores_other_fields() {
    let data = concat!(
        "{\"prompt\": \"Tell me a story.\", \"id\": 7, \"meta\": {\"src\": \"x\"}}\n",
        "\n",
        "{\"prompt\": \"Count to ten.\", \"output_tokens\": 64}\r\n",
        "   \n",
        "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, ",
        "{\"role\": \"user\", \"content\": \"Why is the sky blue?\", \"name\": \"u\"}], ",
        "\"output_tokens\": 32}\n",
        "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}, ",
        "{\"role\": \"assistant\", \"content\": \"Hello!\"}]}\n",
        "{\"prompt\": \"\"}\n",
        "{\"messages\": [{\"role\": \"assistant\", \"content\": \"only a reply\"}]}",
    );
    let ds = open_one(data).unwrap();
    assert_eq!(
        ds.entries,
        vec![
            DatasetEntry {
                prompt: text("Tell me a story."),
                output_tokens: None,
                reply: None,
            },
            DatasetEntry {
                prompt: text("Count to ten."),
                output_tokens: Some(64),
                reply: None,
            },
            DatasetEntry {
                prompt: DatasetPrompt::Messages(vec![
                    msg("system", "Be brief."),
                    msg("user", "Why is the sky blue?"),
                ]),
                output_tokens: Some(32),
                reply: None,
            },
            DatasetEntry {
                prompt: DatasetPrompt::Messages(vec![msg("user", "Hi")]),
                output_tokens: None,
                reply: Some("Hello!".into()),
            },
        ]
    );
    // The empty prompt, and the messages that are only a reply.
    assert_eq!(ds.skipped_malformed, 2);
}

#[test]
fn a_bad_jsonl_line_is_an_error_naming_the_file_and_line() {
    let dir = dir_with(&[(
        "sets/chat.jsonl",
        "{\"prompt\": \"ok\"}\n\n{\"prompt\": \"unterminated\n{\"prompt\": \"ok\"}\n",
    )]);
    let err = Dataset::open(&[dir.path().to_path_buf()], "sets/chat.jsonl", MAX)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("dataset: "), "{err}");
    assert!(
        err.contains("sets/chat.jsonl: line 3: not valid JSON"),
        "{err}"
    );

    let err = open_err("{\"prompt\": \"ok\"}\n{\"id\": 3}\n");
    assert!(
        err.contains("line 2: has neither \"prompt\" nor \"messages\""),
        "{err}"
    );
    let err = open_err("{\"prompt\": \"a\", \"messages\": []}\n");
    assert!(err.contains("line 1: has both"), "{err}");
    let err = open_err("{\"prompt\": \"ok\"}\n[\"a\"]\n");
    assert!(err.contains("line 2: not a JSON object"), "{err}");
    let err = open_err("{\"prompt\": \"ok\"}\n\"a\"\n");
    assert!(err.contains("line 2: not a JSON object"), "{err}");
    let err = open_err("{\"prompt\": 5}\n");
    assert!(err.contains("line 1: invalid type: integer"), "{err}");
    let err = open_err("{\"prompt\": \"a\", \"output_tokens\": -1}\n");
    assert!(err.contains("line 1:"), "{err}");
    let err = open_err("{\"prompt\": \"a\", \"output_tokens\": 0}\n");
    assert!(
        err.contains("line 1: output_tokens must be at least 1"),
        "{err}"
    );
}

#[test]
fn a_file_in_neither_format_is_refused_with_the_formats_named() {
    for data in ["Once upon a time.\n", "42\n", "\u{feff}plain"] {
        let err = open_err(data);
        assert!(err.contains("data: is neither ShareGPT JSON"), "{err}");
        assert!(err.contains("nor JSONL"), "{err}");
    }
    let err = open_err(" \n\n");
    assert!(err.contains("data: is empty"), "{err}");
    // One pretty-printed object is a JSON document, not JSONL.
    let err = open_err("{\n  \"prompt\": \"x\"\n}\n");
    assert!(err.contains("is one JSON document, neither"), "{err}");
    // Only skipped entries: nothing to send.
    let err = open_err("{\"prompt\": \" \"}\n");
    assert!(err.contains("no usable entry (1 skipped"), "{err}");
}

#[test]
fn the_digest_is_sha256_of_the_bytes() {
    let dir = dir_with(&[("abc", "abc")]);
    // "abc" is no dataset, but the digest comes from the bytes alone.
    assert_eq!(
        hex(&Sha256::digest(
            std::fs::read(dir.path().join("abc")).unwrap()
        )),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let data = "{\"prompt\": \"abc\"}\n";
    let ds = open_one(data).unwrap();
    assert_eq!(ds.sha256, hex(&Sha256::digest(data.as_bytes())));
    assert_eq!(ds.sha256.len(), 64);
    assert!(
        ds.sha256
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    );
}

#[test]
fn a_bom_is_passed_over_but_hashed() {
    let data = "\u{feff}{\"prompt\": \"x\"}\n";
    let ds = open_one(data).unwrap();
    assert_eq!(ds.entries.len(), 1);
    assert_eq!(ds.sha256, hex(&Sha256::digest(data.as_bytes())));
}

#[test]
fn a_symlink_out_of_the_dir_is_refused() {
    let outside = dir_with(&[("secret.jsonl", "{\"prompt\": \"secret\"}\n")]);
    let dir = dir_with(&[("ok.jsonl", "{\"prompt\": \"ok\"}\n")]);
    symlink(
        outside.path().join("secret.jsonl"),
        dir.path().join("link.jsonl"),
    )
    .unwrap();
    symlink(outside.path(), dir.path().join("sub")).unwrap();
    let dirs = [dir.path().to_path_buf()];
    for name in ["link.jsonl", "sub/secret.jsonl"] {
        let err = Dataset::open(&dirs, name, MAX).unwrap_err().to_string();
        assert!(
            err.contains("real path is outside the dataset directory"),
            "{name}: {err}"
        );
        assert!(!err.contains("secret\""), "{err}");
    }
    // A symlink that stays inside is fine: the file read is its target.
    symlink(dir.path().join("ok.jsonl"), dir.path().join("alias.jsonl")).unwrap();
    let ds = Dataset::open(&dirs, "alias.jsonl", MAX).unwrap();
    assert_eq!(ds.path, dir.path().join("ok.jsonl").canonicalize().unwrap());
}

#[test]
fn names_that_leave_the_dir_are_refused() {
    let outside = dir_with(&[("secret.jsonl", "{\"prompt\": \"secret\"}\n")]);
    let dir = outside.path().join("sets");
    std::fs::create_dir(&dir).unwrap();
    let dirs = [dir];
    let absolute = outside.path().join("secret.jsonl");
    for name in [
        "../secret.jsonl",
        "a/../../secret.jsonl",
        absolute.to_str().unwrap(),
        "",
        ".",
    ] {
        let err = Dataset::open(&dirs, name, MAX).unwrap_err().to_string();
        assert!(
            err.contains("is not a relative path inside a dataset directory"),
            "{name}: {err}"
        );
    }
}

#[test]
fn only_regular_files_within_the_cap_are_read() {
    let dir = dir_with(&[("big.jsonl", "{\"prompt\": \"0123456789\"}\n")]);
    std::fs::create_dir(dir.path().join("folder")).unwrap();
    nix::unistd::mkfifo(
        &dir.path().join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let dirs = [dir.path().to_path_buf()];
    let err = Dataset::open(&dirs, "big.jsonl", 10)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("big.jsonl is larger than this agent's max_dataset_bytes (10 bytes)"),
        "{err}"
    );
    // Exactly at the cap is fine.
    let len = std::fs::metadata(dir.path().join("big.jsonl"))
        .unwrap()
        .len();
    Dataset::open(&dirs, "big.jsonl", len).unwrap();
    // A FIFO is refused, not opened (which would wait for a writer).
    for name in ["folder", "fifo"] {
        let err = Dataset::open(&dirs, name, MAX).unwrap_err().to_string();
        assert!(err.contains("is not a regular file"), "{name}: {err}");
    }
}

#[test]
fn the_first_dir_that_holds_the_name_is_used() {
    let first = dir_with(&[("only-first.jsonl", "{\"prompt\": \"first\"}\n")]);
    let second = dir_with(&[
        ("only-first.jsonl", "{\"prompt\": \"second\"}\n"),
        ("sets/b.jsonl", "{\"prompt\": \"b\"}\n"),
    ]);
    let missing = first.path().join("not-there");
    let dirs = [
        missing,
        first.path().to_path_buf(),
        second.path().to_path_buf(),
    ];
    let ds = Dataset::open(&dirs, "sets/b.jsonl", MAX).unwrap();
    assert_eq!(ds.entries[0].prompt, text("b"));
    assert!(ds.path.starts_with(second.path().canonicalize().unwrap()));
    let ds = Dataset::open(&dirs, "only-first.jsonl", MAX).unwrap();
    assert_eq!(ds.entries[0].prompt, text("first"));
    // A file where a folder of the name is expected is not the name either.
    let ds = Dataset::open(&dirs, "only-first.jsonl/x", MAX).unwrap_err();
    assert!(
        ds.to_string()
            .contains("\"only-first.jsonl/x\" is in none of this agent's dataset directories"),
        "{ds}"
    );
    let err = Dataset::open(&dirs, "nope.jsonl", MAX)
        .unwrap_err()
        .to_string();
    assert!(err.contains(&second.path().display().to_string()), "{err}");
    let err = Dataset::open(&[], "a.jsonl", MAX).unwrap_err().to_string();
    assert!(err.contains("this agent has no dataset_dirs"), "{err}");
}

fn numbered(count: usize) -> Dataset {
    let data: String = (0..count)
        .map(|i| format!("{{\"prompt\": \"p{i}\"}}\n"))
        .collect();
    open_one(&data).unwrap()
}

fn prompts(picks: &[&DatasetEntry]) -> Vec<String> {
    picks
        .iter()
        .map(|e| match &e.prompt {
            DatasetPrompt::Text(t) => t.clone(),
            DatasetPrompt::Messages(_) => unreachable!(),
        })
        .collect()
}

#[test]
fn sampling_is_seeded() {
    let ds = numbered(50);
    let a = prompts(&ds.sample(20, 7));
    assert_eq!(a, prompts(&ds.sample(20, 7)));
    assert_ne!(a, prompts(&ds.sample(20, 8)));
    // Fewer picks with the same seed are a prefix of more, past the data's length too.
    assert_eq!(prompts(&ds.sample(5, 7)), a[..5]);
    assert_eq!(prompts(&ds.sample(120, 7))[..20], a[..]);
    assert!(ds.sample(0, 7).is_empty());
}

#[test]
fn sampling_within_the_data_never_repeats() {
    let ds = numbered(50);
    for count in [1, 10, 49, 50] {
        let picks = prompts(&ds.sample(count, 3));
        assert_eq!(picks.len(), count);
        let distinct: BTreeSet<&String> = picks.iter().collect();
        assert_eq!(distinct.len(), count, "{picks:?}");
    }
    // Shuffled, not the file's order.
    let all = prompts(&ds.sample(50, 3));
    let in_order: Vec<String> = (0..50).map(|i| format!("p{i}")).collect();
    assert_ne!(all, in_order);
}

#[test]
fn sampling_past_the_data_goes_round_each_entry_again() {
    let ds = numbered(7);
    let picks = prompts(&ds.sample(23, 11));
    assert_eq!(picks.len(), 23);
    // Each full round is every entry once: 3 rounds, then 2 more picks.
    for round in picks.chunks(7).take(3) {
        let distinct: BTreeSet<&String> = round.iter().collect();
        assert_eq!(distinct.len(), 7, "{picks:?}");
    }
    // The rounds are reshuffled, not repeated.
    assert_ne!(picks[..7], picks[7..14]);
}

#[test]
fn sampling_with_replacement_draws_each_pick_independently() {
    let ds = numbered(10);
    let a = prompts(&ds.sample_with_replacement(1_000, 5));
    assert_eq!(a, prompts(&ds.sample_with_replacement(1_000, 5)));
    assert_ne!(a, prompts(&ds.sample_with_replacement(1_000, 6)));
    // Repeats within the data's length (without replacement there are none)...
    let first: BTreeSet<&String> = a[..10].iter().collect();
    assert!(first.len() < 10, "{:?}", &a[..10]);
    // ...and every entry about equally often: 100 expected each, sd about 9.5.
    for i in 0..10 {
        let n = a.iter().filter(|p| **p == format!("p{i}")).count();
        assert!((60..=140).contains(&n), "p{i}: {n}");
    }
}
