//! A byte-level CLIP tokenizer folder for the tiny random-weight text encoders.

use std::path::Path;

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
