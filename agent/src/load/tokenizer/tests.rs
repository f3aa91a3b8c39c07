//! Unit tests of local token counting with a small `tokenizer.json`, and of finding a
//! model's file.

use super::*;

/// A tokenizer.json: whitespace-split words, a BOS added by a template post-processor.
fn json_with_bos() -> String {
    serde_json::json!({
        "version": "1.0",
        "truncation": {"direction": "Right", "max_length": 4, "strategy": "LongestFirst", "stride": 0},
        "padding": null,
        "added_tokens": [
            {"id": 1, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false,
             "normalized": false, "special": true}
        ],
        "normalizer": null,
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}
        },
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": {"[UNK]": 0, "<s>": 1}, "unk_token": "[UNK]"}
    })
    .to_string()
}

#[test]
fn counts_with_and_without_special_tokens_and_ignores_truncation() {
    let tok = LocalTokenizer::from_json(&json_with_bos()).unwrap();
    assert_eq!(tok.count("a b c d e f", false).unwrap(), 6);
    // The post-processor's BOS, as vLLM adds it to a completions prompt.
    assert_eq!(tok.count("a b c d e f", true).unwrap(), 7);
    assert_eq!(tok.count("", false).unwrap(), 0);
    assert_eq!(tok.source(), "<json>");
    assert!(format!("{tok:?}").contains("<json>"));
}

#[test]
fn sim_tokenizer_json_counts_like_the_sim() {
    let json = fleetbench_sim::tokenizer::tokenizer_json().to_string();
    let tok = LocalTokenizer::from_json(&json).unwrap();
    for text in [
        "Hello, world!  It's 42.\n\nnaïve ok",
        "",
        " ",
        " \n x",
        "日本語",
    ] {
        let want = fleetbench_sim::tokenizer::count(text);
        assert_eq!(tok.count(text, true).unwrap() as usize, want, "{text:?}");
        assert_eq!(tok.count(text, false).unwrap() as usize, want, "{text:?}");
    }
}

#[test]
fn load_errors_name_the_file() {
    let err = LocalTokenizer::from_file("/nonexistent/tokenizer.json").unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/tokenizer.json"),
        "{err}"
    );
    assert!(LocalTokenizer::from_json("{not json").is_err());
}

#[test]
fn finds_model_folders_and_the_hub_cache() {
    let root = tempfile::tempdir().unwrap();
    let write = |p: &Path| {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, "{}").unwrap();
    };
    let folder = root.path().join("models").join("smol");
    write(&folder.join("tokenizer.json"));
    let hub = root.path().join("hub");
    let repo = hub.join("models--Org--Tiny-Model");
    write(&repo.join("snapshots/aaa/tokenizer.json"));
    write(&repo.join("snapshots/bbb/tokenizer.json"));
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "aaa\n").unwrap();

    let mut paths = BTreeMap::new();
    paths.insert("Org/Smol".to_owned(), folder.display().to_string());
    // model_paths first.
    assert_eq!(
        find_in("Org/Smol", &paths, Some(&hub)),
        Some(folder.join("tokenizer.json"))
    );
    // The model is itself a local folder.
    let name = folder.display().to_string();
    assert_eq!(
        find_in(&name, &BTreeMap::new(), Some(&hub)),
        Some(folder.join("tokenizer.json"))
    );
    // The hub cache, at refs/main.
    assert_eq!(
        find_in("Org/Tiny-Model", &BTreeMap::new(), Some(&hub)),
        Some(repo.join("snapshots/aaa/tokenizer.json"))
    );
    // Without refs/main, a snapshot that has the file.
    std::fs::remove_file(repo.join("refs/main")).unwrap();
    std::fs::remove_file(repo.join("snapshots/aaa/tokenizer.json")).unwrap();
    assert_eq!(
        find_in("Org/Tiny-Model", &BTreeMap::new(), Some(&hub)),
        Some(repo.join("snapshots/bbb/tokenizer.json"))
    );
    // A model_paths value that is a repository id, found in the cache.
    let mut alias = BTreeMap::new();
    alias.insert("tiny".to_owned(), "Org/Tiny-Model".to_owned());
    assert_eq!(
        find_in("tiny", &alias, Some(&hub)),
        Some(repo.join("snapshots/bbb/tokenizer.json"))
    );
    assert_eq!(find_in("Org/Missing", &BTreeMap::new(), Some(&hub)), None);
    assert_eq!(find_in("Org/Tiny-Model", &BTreeMap::new(), None), None);
}
