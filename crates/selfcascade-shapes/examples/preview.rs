//! Writes a picture grid of sampled scenes with their measurements:
//! `cargo run -p selfcascade-shapes --example preview -- OUT.png [SIZE] [COUNT]`.

use selfcascade_shapes::{grid_with_gap, measure, render, save_png, Expected, Scene};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = args.next().unwrap_or_else(|| "shapes_preview.png".into());
    let size: u32 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(64);
    let count: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(24);
    let mut images = Vec::new();
    for seed in 0..count {
        let scene = Scene::sample(seed);
        let image = render(&scene, size, size)?;
        let m = measure(&image, Some(&Expected::from(&scene)));
        println!(
            "{seed:3}: {:40} objects {} caption match {} size error {:.3}",
            scene.caption(),
            m.num_objects,
            m.caption_match,
            m.size_error.unwrap_or(f32::NAN)
        );
        images.push(image);
    }
    save_png(&out, &grid_with_gap(&images, 6, 2, [255, 255, 255])?)?;
    println!("wrote {out}");
    Ok(())
}
