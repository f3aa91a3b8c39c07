//! Unit tests of [`super`]: the synthetic tokenizer, its `tokenizer.json` and chat encoding.

use super::*;

#[test]
fn splits_words_punctuation_and_whitespace() {
    let p: Vec<&str> = pieces("Hello, world!  It's 42.\n\nnaïve ok").collect();
    assert_eq!(
        p,
        [
            "Hello", ",", " world", "!", "  ", "It", "'", "s", " 42", ".", "\n\n", "na", "ï", "ve",
            " ok"
        ]
    );
    assert_eq!(count("Hello, world!  It's 42.\n\nnaïve ok"), 15);
    assert_eq!(count(""), 0);
    assert_eq!(count(" "), 1);
    assert_eq!(count(" \n x"), 2);
    assert_eq!(count("日本語"), 3);
    assert_eq!(count(" 日本"), 2);
}

#[test]
fn tokenizer_json_names_the_piece_regex() {
    let doc = tokenizer_json();
    assert_eq!(doc["pre_tokenizer"]["pattern"]["Regex"], PIECE_REGEX);
    assert_eq!(PIECE_REGEX, r" ?[A-Za-z0-9]+| ?[^\sA-Za-z0-9]|\s+");
    assert_eq!(doc["model"]["type"], "WordLevel");
    assert!(doc["post_processor"].is_null());
    let dir = std::env::temp_dir().join(format!("sim-tokjson-{}", std::process::id()));
    let path = dir.join("sub").join("tokenizer.json");
    write_tokenizer_json(&path).unwrap();
    let back: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(back, doc);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn pieces_concatenate_back_to_the_text() {
    let text = "  A b\tc , d\u{00a0}e  \r\n f💡g ";
    assert_eq!(pieces(text).collect::<String>(), text);
}

#[test]
fn ids_are_stable_and_in_range() {
    assert_eq!(token_id(" hello"), token_id(" hello"));
    assert_ne!(token_id(" hello"), token_id("hello"));
    assert!(
        encode("some text, with 12 tokens or so")
            .iter()
            .all(|&id| id < VOCAB_SIZE)
    );
    // FNV-1a of "a" is 0xaf63dc4c8601ec8c.
    assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    assert_eq!(token_id("a"), (0xaf63_dc4c_8601_ec8c_u64 % 49_152) as u32);
}

#[test]
fn chat_template_adds_five_per_message_and_three_for_generation() {
    let msgs = [("system", "You are helpful."), ("user", "Hi there")];
    let content = count("You are helpful.") + count("Hi there");
    assert_eq!(content, 6);
    assert_eq!(encode_chat(msgs, true).len(), content + 2 * 5 + 3);
    assert_eq!(encode_chat(msgs, false).len(), content + 2 * 5);
    assert_eq!(chat_pieces(msgs, true).len(), encode_chat(msgs, true).len());
    assert_eq!(chat_pieces(msgs, true).concat(), render_chat(msgs, true));
    let ids = encode_chat([("user", "x")], true);
    assert_eq!(ids.first(), Some(&IM_START));
    assert_eq!(ids.get(4), Some(&IM_END));
}

#[test]
fn every_generated_word_is_one_token() {
    for piece in WORDS {
        assert!(piece.starts_with(' '));
        assert_eq!(count(piece), 1, "{piece:?}");
    }
    let out = SyntheticOutput {
        seed: 7,
        len: 200,
        ends_with_eos: false,
    };
    let text = out.text(0, 200);
    assert_eq!(count(&text), 200);
    assert_eq!(decode(&encode(&text)), text);
}

#[test]
fn output_words_have_distinct_ids() {
    let ids: std::collections::HashSet<u32> = WORDS.iter().map(|w| token_id(w)).collect();
    assert_eq!(ids.len(), WORDS.len());
}

#[test]
fn eos_token_has_empty_text() {
    let out = SyntheticOutput {
        seed: 1,
        len: 3,
        ends_with_eos: true,
    };
    assert!(!out.piece(1).is_empty());
    assert_eq!(out.piece(2), "");
    assert_eq!(count(&out.text(0, 3)), 2);
}

#[test]
fn natural_length_is_deterministic_and_bounded() {
    let ids = encode("Tell me a story about a robot.");
    let n = natural_length(&ids, 0, 100);
    assert_eq!(n, natural_length(&ids, 0, 100));
    assert!((1..=100).contains(&n));
    assert_eq!(natural_length(&ids, 0, 1), 1);
    let lengths: std::collections::HashSet<u32> = (0..50)
        .map(|i| natural_length(&encode(&format!("prompt {i}")), 0, 1000))
        .collect();
    assert!(lengths.len() > 40, "lengths should vary with the prompt");
}

#[test]
fn decode_inverts_common_tokens() {
    let text = "<|im_start|>";
    assert_eq!(decode(&[IM_START]), text);
    assert_eq!(
        decode(&encode("The world, the data.")),
        "The world, the data."
    );
}
