//! Writing results: PNG with text metadata, written atomically (temp file in the same folder + rename),
//! so an interrupted or failed run never leaves a half-written file at the requested path.

use crate::CliResult;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `bytes` produced by `write` to `path` atomically.
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> CliResult {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(format!(
            "cannot write {}: folder {} does not exist",
            path.display(),
            dir.display()
        ));
    }
    let name = path
        .file_name()
        .ok_or_else(|| format!("cannot write {}: not a file path", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> std::io::Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
        write(&mut file)?;
        file.flush()?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!("cannot write {}: {e}", path.display()));
    }
    Ok(())
}

/// Writes an 8-bit RGB PNG with `tEXt` metadata entries.
pub fn write_png(
    path: &Path,
    width: u32,
    height: u32,
    rgb: &[u8],
    metadata: &[(String, String)],
) -> CliResult {
    if rgb.len() != width as usize * height as usize * 3 {
        return Err(format!(
            "internal error: {}x{} image with {} bytes",
            width,
            height,
            rgb.len()
        ));
    }
    write_atomic(path, |file| {
        let mut enc = png::Encoder::new(std::io::BufWriter::new(file), width, height);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        for (k, v) in metadata {
            enc.add_text_chunk(k.clone(), v.clone())
                .map_err(std::io::Error::other)?;
        }
        let mut writer = enc.write_header().map_err(std::io::Error::other)?;
        writer
            .write_image_data(rgb)
            .map_err(std::io::Error::other)?;
        writer.finish().map_err(std::io::Error::other)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_round_trip_with_metadata_and_no_temp_left() {
        let dir = std::env::temp_dir().join(format!("selfcascade-out-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.png");
        let rgb: Vec<u8> = (0..2 * 3 * 3).map(|i| i as u8 * 10).collect();
        write_png(
            &path,
            2,
            3,
            &rgb,
            &[("prompt".into(), "a red circle".into())],
        )
        .unwrap();
        let decoder =
            png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap()));
        let mut reader = decoder.read_info().unwrap();
        let text = reader.info().uncompressed_latin1_text.clone();
        assert!(text
            .iter()
            .any(|t| t.keyword == "prompt" && t.text == "a red circle"));
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!(&buf[..info.buffer_size()], &rgb[..]);
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn unwritable_paths_are_clear_errors() {
        let err =
            write_png(Path::new("/nonexistent-dir/x.png"), 1, 1, &[0, 0, 0], &[]).unwrap_err();
        assert!(
            err.contains("/nonexistent-dir") && err.contains("does not exist"),
            "{err}"
        );
    }
}
