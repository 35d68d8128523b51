//! # selfcascade-shapes
//!
//! The procedural **shapes world** in which the self-cascade experiments run: a tiny diffusion model is
//! trained on 32 × 32 renders of these scenes and then sampled at 4× and 16× the pixels, where direct
//! sampling repeats objects and self-cascade should not. This crate has no model code; it provides
//!
//! * [`Scene`]s — one object (circle, square or triangle; five colours) on a textured gradient
//!   background (three colours), sampled deterministically from a `u64` seed, with a caption
//!   ("a red circle on a blue background") and a class label ([`SceneLabel`], 45 classes);
//! * a **renderer** ([`render()`], [`render_chw`]) that draws a scene at any resolution: geometry is in
//!   normalised canvas coordinates, the background texture is value noise defined on the canvas, so a scene
//!   rendered at 32² and at 128² is the same picture; edges are anti-aliased by 4 × 4 supersampling; output
//!   bytes are identical on every platform (own SplitMix64 stream, own sine/cosine, only IEEE basic
//!   operations);
//! * a **measurement** ([`measure()`]) of any image of this world, in particular generated ones: number of
//!   objects, their colour, shape, size, bounding box and centroid, and verdicts against the expected scene
//!   (`single_object`, `caption_match`, `size_error`) — the repetition metric of the experiments;
//! * PNG output ([`save_png`], atomic) and picture grids ([`grid`]); [`render_composite`] draws several
//!   objects on one background (synthetic repetition pictures); degradations ([`perturb`]) check that
//!   the measurement survives noise, blur and colour casts.
//!
//! ## Design choices
//!
//! **Palettes.** Objects are bright and saturated — red, green, yellow, white, magenta — and
//! backgrounds dark or mid-tone — blue, gray, teal (see [`palette`] for values and separations). The two
//! palettes are disjoint and far apart, so a pixel is segmented by its nearest palette colour even on noisy
//! generated images; the background gradient only ever *darkens* the base tone (by 10–35 %), away from the
//! object palette, and the texture is at most ±8 levels.
//!
//! **Geometry.** Sizes are fractions of the canvas side in `[0.30, 0.60]`: circle diameter, square side,
//! equilateral-triangle side. Squares and triangles are rotated uniformly over their symmetry period. The
//! centre is drawn so that the whole object (its rotated bounding box) lies inside the canvas with a 2 %
//! margin. Objects are flat-coloured.
//!
//! **Measurement.** Nearest-palette pixel classes → 8-connected components of object pixels (colour by
//! majority vote, so anti-aliasing rims cannot spawn objects; enclosed noise specks filled; tiny
//! components and small satellites hugging a much larger object dropped) → shape named from
//! rotation-invariant *area moments* (third-order asymmetry for triangles, fourth-order complex moment
//! for squares, neither for circles), which survive noise and blur far better than outline features, and
//! cross-checked against the outline (fill of the minimum-area bounding rectangle and of the
//! circumscribed centroid circle). The size is the equivalent side √(area fraction). Details in
//! [`measure`](mod@measure).
//!
//! **Limits.** Objects of the same colour that touch form one component: they count as one object
//! (whose shape is then usually `None`, so `caption_match` is false). Differently coloured touching
//! objects are split. On a non-square canvas the scene is stretched.
//!
//! ## Round trip
//!
//! ```
//! use selfcascade_shapes::{measure, render, Expected, Scene};
//!
//! let scene = Scene::sample(7);
//! let image = render(&scene, 64, 64)?;
//! let m = measure(&image, Some(&Expected::from(&scene)));
//! assert!(m.single_object && m.caption_match, "{}: {m:?}", scene.caption());
//! assert!(m.size_error.unwrap() < 0.1);
//! # Ok::<(), selfcascade_shapes::ShapesError>(())
//! ```
//!
//! ## Bad inputs
//!
//! Nothing panics on bad input. Rendering and conversions return [`ShapesError::EmptyImage`] for a zero
//! side and [`ShapesError::TooLarge`] above [`MAX_SIDE`]; measuring a 0-pixel image returns a
//! measurement with no objects; a scene with non-finite or out-of-range numbers still renders (use
//! [`Scene::validate`] to reject it).

#![warn(missing_docs)]

pub mod error;
mod geometry;
pub mod io;
mod mathx;
pub mod measure;
pub mod palette;
pub mod perturb;
pub mod render;
pub mod scene;

pub use error::ShapesError;
pub use image::RgbImage;
pub use io::{grid, grid_with_gap, load_png, save_png};
pub use measure::{
    classify_pixel, measure, measure_with, summarize, BBox, Expected, MeasureConfig, Measurement,
    ObjectInfo, PixelClass, ShapeFeatures, Summary,
};
pub use palette::{caption_vocabulary, BackgroundColor, ObjectColor, SceneLabel, Shape};
pub use render::{chw_to_image, image_to_chw, render, render_chw, render_composite, MAX_SIDE};
pub use scene::{Background, Scene, SceneObject, SIZE_MAX, SIZE_MIN};
