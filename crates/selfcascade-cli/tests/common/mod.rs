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

// The byte-level tokenizer is shared with selfcascade-sd's tests.
#[path = "../../../selfcascade-sd/tests/common/byte_tokenizer.rs"]
mod byte_tokenizer;
#[allow(unused_imports)]
pub use byte_tokenizer::write_byte_tokenizer;
