//! Helpers shared by the binary's integration tests.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs the `selfcascade` binary: (success, stdout, stderr).
pub fn selfcascade(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_selfcascade"))
        .args(args)
        .output()
        .expect("binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A fresh temporary folder for test `name` of suite `suite`.
#[allow(dead_code)] // not every suite writes files
pub fn tmp(suite: &str, name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("selfcascade-{suite}-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Copies a folder tree.
#[allow(dead_code)]
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

/// CLIP's byte-to-unicode table: printable bytes map to themselves, the others to 256, 257, … in order.
#[allow(dead_code)]
fn byte_chars() -> Vec<char> {
    let printable =
        |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut next = 256;
    (0..256u32)
        .map(|b| {
            let c = if printable(b) {
                b
            } else {
                next += 1;
                next - 1
            };
            char::from_u32(c).unwrap()
        })
        .collect()
}

/// A byte-level CLIP tokenizer of 514 tokens in `tok` (the tiny text encoders have 1000 ids).
#[allow(dead_code)]
pub fn write_byte_tokenizer(tok: &Path) {
    std::fs::create_dir_all(tok).unwrap();
    let mut vocab = serde_json::Map::new();
    for c in byte_chars() {
        vocab.insert(c.to_string(), vocab.len().into());
    }
    for c in byte_chars() {
        vocab.insert(format!("{c}</w>"), vocab.len().into());
    }
    vocab.insert("<|startoftext|>".into(), vocab.len().into());
    vocab.insert("<|endoftext|>".into(), vocab.len().into());
    std::fs::write(
        tok.join("vocab.json"),
        serde_json::Value::Object(vocab).to_string(),
    )
    .unwrap();
    std::fs::write(tok.join("merges.txt"), "#version: 0.2\n").unwrap();
    std::fs::write(
        tok.join("tokenizer_config.json"),
        r#"{"bos_token":"<|startoftext|>","eos_token":"<|endoftext|>","pad_token":"<|endoftext|>","unk_token":"<|endoftext|>","model_max_length":77}"#,
    )
    .unwrap();
}
