//! `ClipTokenizer` against transformers' `CLIPTokenizer`: ids recorded by `tools/oracle/tokenizer.py`
//! in `tests/fixtures/clip-tokenizer/ids.json`, for the tokenizer configs of SD 1.x, SD 2.x, SDXL and more.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use selfcascade_sd::clip::ClipTokenizer;
use selfcascade_sd::Error;
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
struct Oracle {
    transformers_version: String,
    max_length: usize,
    n_hard: usize,
    prompts: Vec<String>,
    configs: BTreeMap<String, ConfigCase>,
    codepoint_probe: Probe,
}

#[derive(Deserialize)]
struct Probe {
    config: String,
    template: String,
    block: u32,
    digests: Vec<BlockDigest>,
}

#[derive(Deserialize)]
struct BlockDigest {
    start: u32,
    end: u32,
    fnv1a64: String,
}

#[derive(Deserialize)]
struct ConfigCase {
    pad_token: String,
    pad_id: u32,
    model_max_length: usize,
    truncated: Vec<bool>,
    ids: Vec<Vec<u32>>,
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clip-tokenizer")
}

fn oracle() -> Oracle {
    let text = fs::read_to_string(fixtures().join("ids.json")).expect("read ids.json");
    serde_json::from_str(&text).expect("parse ids.json")
}

/// A fresh, empty folder under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "selfcascade-tokenizer-{}-{tag}-{n}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A complete tokenizer folder for fixture config `name`: its config files plus either vocab.json +
/// merges.txt, or (for the `-saved` configs) a tokenizer.json made from the stub and the shared vocabulary.
fn tokenizer_folder(name: &str) -> TempDir {
    let tmp = TempDir::new(name);
    let config_dir = fixtures().join("configs").join(name);
    let mut has_stub = false;
    for entry in fs::read_dir(&config_dir).expect("config folder") {
        let path = entry.expect("entry").path();
        let file = path.file_name().expect("file name").to_owned();
        if file == "tokenizer.stub.json" {
            has_stub = true;
            continue;
        }
        fs::copy(&path, tmp.0.join(file)).expect("copy config");
    }
    if has_stub {
        let mut json: Value = serde_json::from_str(
            &fs::read_to_string(config_dir.join("tokenizer.stub.json")).expect("stub"),
        )
        .expect("stub json");
        let vocab: Value = serde_json::from_str(
            &fs::read_to_string(fixtures().join("vocab.json")).expect("vocab"),
        )
        .expect("vocab");
        let merges: Vec<Value> = fs::read_to_string(fixtures().join("merges.txt"))
            .expect("merges")
            .lines()
            .filter(|l| !l.starts_with("#version") && !l.is_empty())
            .map(|l| {
                let (a, b) = l.split_once(' ').expect("merge pair");
                Value::from(vec![a, b])
            })
            .collect();
        json["model"]["vocab"] = vocab;
        json["model"]["merges"] = Value::Array(merges);
        fs::write(
            tmp.0.join("tokenizer.json"),
            serde_json::to_string(&json).expect("json"),
        )
        .expect("write");
    } else {
        fs::copy(fixtures().join("vocab.json"), tmp.0.join("vocab.json")).expect("copy vocab");
        fs::copy(fixtures().join("merges.txt"), tmp.0.join("merges.txt")).expect("copy merges");
    }
    tmp
}

/// Compares every recorded prompt, reporting all mismatches at once.
fn check_against_oracle(tok: &ClipTokenizer, oracle: &Oracle, case: &ConfigCase, label: &str) {
    assert_eq!(tok.max_len(), oracle.max_length, "{label}: max_len");
    assert_eq!(
        tok.max_len(),
        case.model_max_length,
        "{label}: model_max_length"
    );
    assert_eq!(tok.pad_token(), case.pad_token, "{label}: pad token");
    assert_eq!(tok.pad_id(), case.pad_id, "{label}: pad id");
    assert_eq!(case.ids.len(), case.truncated.len());
    assert!(!case.ids.is_empty());
    let mut failures = Vec::new();
    for (i, (want, &want_truncated)) in case.ids.iter().zip(&case.truncated).enumerate() {
        let prompt = &oracle.prompts[i];
        let got = tok.encode_with_info(prompt).expect("encode");
        assert_eq!(got.ids.len(), oracle.max_length);
        if &got.ids != want || got.truncated != want_truncated {
            failures.push(format!(
                "prompt {i} {prompt:?}:\n  transformers {want:?} truncated={want_truncated}\n  ours         {:?} truncated={}",
                got.ids, got.truncated
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{label}: {} of {} prompts differ from transformers {}:\n{}",
        failures.len(),
        case.ids.len(),
        oracle.transformers_version,
        failures
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

fn check_config(name: &str) {
    let oracle = oracle();
    let case = &oracle.configs[name];
    let folder = tokenizer_folder(name);
    let tok = ClipTokenizer::from_dir(&folder.0).expect("load tokenizer folder");
    check_against_oracle(&tok, &oracle, case, name);
}

#[test]
fn oracle_covers_what_it_should() {
    let oracle = oracle();
    assert!(
        oracle.prompts.len() >= 300,
        "{} prompts",
        oracle.prompts.len()
    );
    for name in ["sd15", "sd21"] {
        assert_eq!(
            oracle.configs[name].ids.len(),
            oracle.prompts.len(),
            "{name}"
        );
        assert!(
            oracle.configs[name]
                .truncated
                .iter()
                .filter(|&&t| t)
                .count()
                >= 10,
            "{name}"
        );
    }
    for (name, case) in &oracle.configs {
        assert!(case.ids.len() >= oracle.n_hard, "{name}");
    }
    assert_eq!(oracle.configs["sd15"].pad_id, 49407);
    assert_eq!(oracle.configs["sd21"].pad_id, 0);
    assert_eq!(oracle.configs["map-wins"].pad_id, 0);
}

#[test]
fn sd15_vocab_merges_equals_transformers() {
    check_config("sd15");
}

#[test]
fn sd21_vocab_merges_equals_transformers() {
    check_config("sd21");
}

#[test]
fn sdxl_tokenizer_equals_transformers() {
    check_config("sdxl");
}

#[test]
fn sdxl_tokenizer_2_equals_transformers() {
    check_config("sdxl2");
}

#[test]
fn tokenizer_json_folders_equal_transformers() {
    check_config("sd15-saved");
    check_config("sd21-saved");
}

#[test]
fn special_token_flag_rules_equal_transformers() {
    check_config("odd-a");
    check_config("odd-b");
    check_config("map-wins");
}

#[test]
fn from_vocab_merges_equals_sd15_and_sd21() {
    let oracle = oracle();
    let vocab = fs::read_to_string(fixtures().join("vocab.json")).expect("vocab");
    let merges = fs::read_to_string(fixtures().join("merges.txt")).expect("merges");
    for (name, pad) in [("sd15", "<|endoftext|>"), ("sd21", "!")] {
        let tok = ClipTokenizer::from_vocab_merges(&vocab, &merges, pad, 77).expect("build");
        check_against_oracle(
            &tok,
            &oracle,
            &oracle.configs[name],
            &format!("from_vocab_merges({pad:?})"),
        );
    }
}

fn embedded(pad: &str) -> ClipTokenizer {
    let vocab = fs::read_to_string(fixtures().join("vocab.json")).expect("vocab");
    let merges = fs::read_to_string(fixtures().join("merges.txt")).expect("merges");
    ClipTokenizer::from_vocab_merges(&vocab, &merges, pad, 77).expect("build")
}

fn unpadded(ids: &[u32], pad: u32) -> Vec<u32> {
    let eos = ids.iter().position(|&id| id == 49407).expect("eos") + 1;
    assert!(ids[eos..].iter().all(|&id| id == pad));
    ids[..eos].to_vec()
}

#[test]
fn bang_is_the_sd2_pad_token_everywhere() {
    let sd15 = embedded("<|endoftext|>");
    let sd21 = embedded("!");
    assert_eq!(
        (
            sd15.bos_id(),
            sd15.eos_id(),
            sd15.pad_id(),
            sd15.vocab_size()
        ),
        (49406, 49407, 49407, 49408)
    );
    assert_eq!(
        (
            sd21.bos_id(),
            sd21.eos_id(),
            sd21.pad_id(),
            sd21.vocab_size()
        ),
        (49406, 49407, 0, 49408)
    );
    let hello = sd15.token_to_id("hello</w>").expect("hello");
    let world = sd15.token_to_id("world</w>").expect("world");
    // SD 1.x: "!" is an ordinary symbol, "!</w>" = 256, "!!!</w>" = 995.
    assert_eq!(
        unpadded(&sd15.encode("hello!").unwrap(), 49407),
        [49406, hello, 256, 49407]
    );
    assert_eq!(
        unpadded(&sd15.encode("!!!").unwrap(), 49407),
        [49406, 995, 49407]
    );
    // SD 2.x: every "!" is the pad token, id 0, wherever it stands.
    assert_eq!(
        unpadded(&sd21.encode("hello!").unwrap(), 0),
        [49406, hello, 0, 49407]
    );
    assert_eq!(
        unpadded(&sd21.encode("hello!world").unwrap(), 0),
        [49406, hello, 0, world, 49407]
    );
    assert_eq!(
        unpadded(&sd21.encode("!!!").unwrap(), 0),
        [49406, 0, 0, 0, 49407]
    );
}

#[test]
fn truncation_keeps_bos_75_tokens_eos() {
    let tok = embedded("!");
    let word = tok.token_to_id("word</w>").expect("word");
    for (n, truncated) in [
        (0, false),
        (1, false),
        (74, false),
        (75, false),
        (76, true),
        (200, true),
    ] {
        let prompt = vec!["word"; n].join(" ");
        let out = tok.encode_with_info(&prompt).unwrap();
        assert_eq!(out.ids.len(), 77, "{n}");
        assert_eq!(out.truncated, truncated, "{n} words");
        assert_eq!(out.num_tokens, n);
        let kept = n.min(75);
        assert_eq!(out.ids[0], 49406);
        assert!(out.ids[1..=kept].iter().all(|&id| id == word), "{n}");
        assert_eq!(out.ids[kept + 1], 49407, "{n}");
        assert!(out.ids[kept + 2..].iter().all(|&id| id == 0), "{n}");
        assert_eq!(tok.encode(&prompt).unwrap(), out.ids);
    }
    // A shorter max length truncates accordingly.
    let vocab = fs::read_to_string(fixtures().join("vocab.json")).unwrap();
    let merges = fs::read_to_string(fixtures().join("merges.txt")).unwrap();
    let short = ClipTokenizer::from_vocab_merges(&vocab, &merges, "<|endoftext|>", 4).unwrap();
    let out = short.encode_with_info("a photo of a cat").unwrap();
    assert!(out.truncated);
    assert_eq!(out.num_tokens, 5);
    assert_eq!(
        out.ids,
        [
            49406,
            short.token_to_id("a</w>").unwrap(),
            short.token_to_id("photo</w>").unwrap(),
            49407
        ]
    );
    assert!(!short.encode_with_info("a cat").unwrap().truncated);
}

fn tokenizer_error(result: Result<ClipTokenizer, Error>) -> String {
    match result {
        Ok(tok) => panic!("expected an error, got {tok:?}"),
        Err(Error::Tokenizer(message)) => message,
        Err(other) => panic!("expected Error::Tokenizer, got {other:?}"),
    }
}

#[test]
fn missing_folder_is_a_clear_error() {
    let missing = std::env::temp_dir().join("selfcascade-no-such-tokenizer-folder");
    let message = tokenizer_error(ClipTokenizer::from_dir(&missing));
    assert!(
        message.contains("selfcascade-no-such-tokenizer-folder"),
        "{message}"
    );
    assert!(message.contains("not found"), "{message}");
    assert!(
        message.contains("vocab.json") && message.contains("merges.txt"),
        "{message}"
    );
    assert!(message.contains("tokenizer_config.json"), "{message}");
}

#[test]
fn missing_files_are_clear_errors() {
    // No config at all.
    let folder = tokenizer_folder("sd21");
    fs::remove_file(folder.0.join("tokenizer_config.json")).unwrap();
    fs::remove_file(folder.0.join("special_tokens_map.json")).unwrap();
    let message = tokenizer_error(ClipTokenizer::from_dir(&folder.0));
    assert!(
        message.contains("tokenizer_config.json") && message.contains("special_tokens_map.json"),
        "{message}"
    );

    // Only special_tokens_map.json: enough (pad "!"), max length defaults to 77.
    let folder = tokenizer_folder("sd21");
    fs::remove_file(folder.0.join("tokenizer_config.json")).unwrap();
    let tok = ClipTokenizer::from_dir(&folder.0).unwrap();
    assert_eq!((tok.pad_id(), tok.max_len()), (0, 77));

    for file in ["vocab.json", "merges.txt"] {
        let folder = tokenizer_folder("sd15");
        fs::remove_file(folder.0.join(file)).unwrap();
        let message = tokenizer_error(ClipTokenizer::from_dir(&folder.0));
        assert!(message.contains(&format!("{file} not found")), "{message}");
        assert!(message.contains("tokenizer.json"), "{message}");
    }
}

#[test]
fn malformed_files_are_clear_errors() {
    let folder = tokenizer_folder("sd15");
    fs::write(folder.0.join("merges.txt"), "#version: 0.2\ni n\nt h e\n").unwrap();
    let message = tokenizer_error(ClipTokenizer::from_dir(&folder.0));
    assert!(message.contains("merges.txt line 3"), "{message}");

    let folder = tokenizer_folder("sd15");
    fs::write(folder.0.join("vocab.json"), "[1, 2]").unwrap();
    let message = tokenizer_error(ClipTokenizer::from_dir(&folder.0));
    assert!(message.contains("vocab.json"), "{message}");

    let folder = tokenizer_folder("sd15");
    fs::write(
        folder.0.join("tokenizer_config.json"),
        "{\"model_max_length\": 1}",
    )
    .unwrap();
    let message = tokenizer_error(ClipTokenizer::from_dir(&folder.0));
    assert!(message.contains("model_max_length"), "{message}");

    let folder = tokenizer_folder("sd15");
    fs::write(
        folder.0.join("tokenizer_config.json"),
        "{\"mask_token\": 5}",
    )
    .unwrap();
    let message = tokenizer_error(ClipTokenizer::from_dir(&folder.0));
    assert!(message.contains("mask_token"), "{message}");

    let vocab = fs::read_to_string(fixtures().join("vocab.json")).unwrap();
    let message = tokenizer_error(ClipTokenizer::from_vocab_merges(
        &vocab,
        "i n\nnot-a-symbol-1 not-a-symbol-2\n",
        "!",
        77,
    ));
    assert!(message.contains("vocabulary"), "{message}");
    let message = tokenizer_error(ClipTokenizer::from_vocab_merges(&vocab, "i n\n", "!", 1));
    assert!(message.contains("at least 2"), "{message}");
    let message = tokenizer_error(ClipTokenizer::from_vocab_merges(
        &vocab,
        "i n\n",
        "!",
        usize::MAX,
    ));
    assert!(message.contains("too large"), "{message}");
}

/// Every Unicode scalar value through the oracle's probe template, compared block by block with the
/// digests transformers gave: regex classes, whitespace, lowercasing and NFC over the whole range.
#[test]
fn every_code_point_equals_transformers() {
    let oracle = oracle();
    let probe = &oracle.codepoint_probe;
    let folder = tokenizer_folder(&probe.config);
    let tok = ClipTokenizer::from_dir(&folder.0).expect("load");
    let mut bad = Vec::new();
    let mut blocks = 0;
    for block in &probe.digests {
        assert_eq!(block.start % probe.block, 0);
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut fold = |v: u64| h = (h ^ v).wrapping_mul(0x0100_0000_01b3);
        for c in (block.start..=block.end).filter_map(char::from_u32) {
            let text = probe.template.replace("{c}", c.encode_utf8(&mut [0; 4]));
            for id in tok.tokens(&text).expect("tokens") {
                fold(u64::from(id));
            }
            fold(0xFFFF_FFFF);
        }
        if format!("{h:016x}") != block.fnv1a64 {
            bad.push(format!("U+{:04X}..=U+{:04X}", block.start, block.end));
        }
        blocks += 1;
    }
    assert_eq!(blocks, 0x110000 / probe.block as usize);
    assert!(
        bad.is_empty(),
        "code point blocks that differ from transformers: {}",
        bad.join(", ")
    );
}
