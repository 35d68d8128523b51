//! PNG files and picture grids.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use image::{ImageEncoder, Rgb, RgbImage};

use crate::render::check_size;
use crate::ShapesError;

/// Writes `image` as a PNG at `path` atomically: the bytes go to a temporary file in the same folder,
/// which is flushed to disk and then renamed over `path`, so readers never see a partial file.
///
/// # Errors
/// [`ShapesError::EmptyImage`] for a 0-pixel image, [`ShapesError::Png`] / [`ShapesError::Io`] when
/// encoding, writing or renaming fails (the temporary file is removed then).
pub fn save_png(path: impl AsRef<Path>, image: &RgbImage) -> Result<(), ShapesError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let path = path.as_ref();
    let (width, height) = image.dimensions();
    if width == 0 || height == 0 {
        return Err(ShapesError::EmptyImage { width, height });
    }
    let io_err = |source| ShapesError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io_err(std::io::Error::other("path has no file name")))?;
    let tmp = dir.join(format!(
        ".{}.{}-{}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let file = std::fs::File::create(&tmp).map_err(io_err)?;
        let mut writer = std::io::BufWriter::new(file);
        image::codecs::png::PngEncoder::new(&mut writer)
            .write_image(
                image.as_raw(),
                width,
                height,
                image::ExtendedColorType::Rgb8,
            )
            .map_err(|source| ShapesError::Png {
                path: path.to_path_buf(),
                source,
            })?;
        writer.flush().map_err(io_err)?;
        let file = writer.into_inner().map_err(|e| io_err(e.into_error()))?;
        file.sync_all().map_err(io_err)?;
        std::fs::rename(&tmp, path).map_err(io_err)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Reads a PNG (or any format the `png` feature decodes) into an RGB image, dropping alpha.
///
/// # Errors
/// [`ShapesError::Io`] when the file cannot be read, [`ShapesError::Png`] when it cannot be decoded.
pub fn load_png(path: impl AsRef<Path>) -> Result<RgbImage, ShapesError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| ShapesError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    image::load_from_memory_with_format(&bytes, image::ImageFormat::Png)
        .map(|img| img.to_rgb8())
        .map_err(|source| ShapesError::Png {
            path: path.to_path_buf(),
            source,
        })
}

/// Tiles `images` row by row into `cols` columns with no gap (see [`grid_with_gap`]).
///
/// # Errors
/// As [`grid_with_gap`].
pub fn grid(images: &[RgbImage], cols: usize) -> Result<RgbImage, ShapesError> {
    grid_with_gap(images, cols, 0, [0, 0, 0])
}

/// Tiles `images` row by row into `cols` columns, each cell as large as the largest image (smaller ones
/// sit in the top-left corner of their cell), cells separated and framed by `gap` pixels of `fill`.
/// Tiling one scene's render `n × n` with no gap makes the synthetic "repetition" picture.
///
/// # Errors
/// [`ShapesError::EmptyGrid`] when `images` is empty, all images are empty or `cols == 0`;
/// [`ShapesError::TooLarge`] when the result would exceed [`crate::MAX_SIDE`].
pub fn grid_with_gap(
    images: &[RgbImage],
    cols: usize,
    gap: u32,
    fill: [u8; 3],
) -> Result<RgbImage, ShapesError> {
    let cell_w = images.iter().map(|i| i.width()).max().unwrap_or(0);
    let cell_h = images.iter().map(|i| i.height()).max().unwrap_or(0);
    if cols == 0 || cell_w == 0 || cell_h == 0 {
        return Err(ShapesError::EmptyGrid);
    }
    let cols = cols.min(images.len());
    let rows = images.len().div_ceil(cols);
    let side = |cells: usize, cell: u32| -> u32 {
        let cells = cells as u64;
        let total = cells.saturating_mul(cell as u64) + (cells + 1).saturating_mul(gap as u64);
        u32::try_from(total).unwrap_or(u32::MAX)
    };
    let (width, height) = (side(cols, cell_w), side(rows, cell_h));
    check_size(width, height)?;
    let mut out = RgbImage::from_pixel(width, height, Rgb(fill));
    for (k, img) in images.iter().enumerate() {
        let (r, c) = ((k / cols) as u32, (k % cols) as u32);
        let ox = gap + c * (cell_w + gap);
        let oy = gap + r * (cell_h + gap);
        for (x, y, p) in img.enumerate_pixels() {
            out.put_pixel(ox + x, oy + y, *p);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_layout() {
        let a = RgbImage::from_pixel(2, 3, Rgb([10, 0, 0]));
        let b = RgbImage::from_pixel(2, 3, Rgb([20, 0, 0]));
        let g = grid(&[a.clone(), b.clone(), a.clone()], 2).unwrap();
        assert_eq!(g.dimensions(), (4, 6));
        assert_eq!(g.get_pixel(0, 0).0[0], 10);
        assert_eq!(g.get_pixel(2, 0).0[0], 20);
        assert_eq!(g.get_pixel(0, 3).0[0], 10);
        assert_eq!(g.get_pixel(3, 5).0[0], 0);
        let g = grid_with_gap(&[a, b], 5, 1, [9, 9, 9]).unwrap();
        assert_eq!(g.dimensions(), (7, 5));
        assert_eq!(g.get_pixel(0, 0).0, [9, 9, 9]);
        assert_eq!(g.get_pixel(1, 1).0[0], 10);
        assert_eq!(g.get_pixel(4, 1).0[0], 20);
    }

    #[test]
    fn grid_errors() {
        assert!(matches!(grid(&[], 2), Err(ShapesError::EmptyGrid)));
        let a = RgbImage::new(2, 2);
        assert!(matches!(
            grid(std::slice::from_ref(&a), 0),
            Err(ShapesError::EmptyGrid)
        ));
        assert!(matches!(
            grid(&[RgbImage::new(0, 0)], 1),
            Err(ShapesError::EmptyGrid)
        ));
        let big = RgbImage::new(5000, 1);
        assert!(matches!(
            grid(&[big.clone(), big], 2),
            Err(ShapesError::TooLarge { .. })
        ));
    }

    #[test]
    fn save_and_load() {
        let dir =
            std::env::temp_dir().join(format!("selfcascade-shapes-io-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.png");
        let img = crate::render(&crate::Scene::sample(3), 20, 20).unwrap();
        save_png(&path, &img).unwrap();
        assert_eq!(load_png(&path).unwrap(), img);
        // Overwrite in place; no temporary files left behind.
        save_png(&path, &img).unwrap();
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        assert!(matches!(
            save_png(&path, &RgbImage::new(0, 3)),
            Err(ShapesError::EmptyImage { .. })
        ));
        assert!(matches!(
            save_png(dir.join("missing/y.png"), &img),
            Err(ShapesError::Io { .. })
        ));
        assert!(matches!(
            load_png(dir.join("nope.png")),
            Err(ShapesError::Io { .. })
        ));
        std::fs::write(dir.join("bad.png"), b"not a png").unwrap();
        assert!(matches!(
            load_png(dir.join("bad.png")),
            Err(ShapesError::Png { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
