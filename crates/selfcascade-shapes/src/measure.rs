//! Automatic measurement of an image of the shapes world: how many objects, of which colour and shape,
//! how large, and whether the picture matches its caption.
//!
//! # Method
//!
//! 1. **Pixel classes.** Each pixel goes to its nearest palette entry in a weighted RGB space
//!    (squared channel differences weighted 2 : 4 : 3, a cheap perceptual approximation). Object colours
//!    are points; each background colour is a *segment* from 55 % to 115 % of its base tone, which
//!    covers the gradient (down to 65 %), the texture and moderate brightness drift of generated images.
//! 2. **Components.** The object mask (pixels of any object colour) is split into 8-connected components.
//!    Anti-aliased or blurred rims are mixtures and may land on another object colour (yellow over teal
//!    looks green at the rim); as they stay in the same component they cannot create objects. A
//!    component's colour is the majority colour of its pixels. A component in which a second colour holds
//!    at least 30 % of the pixels (and at least the minimum area) and has a body of its own (interior
//!    pixels, which a one- or two-pixel rim lacks) is two touching objects of different colours: it is
//!    split into the per-colour connected parts.
//!    Background enclosed by object pixels (noise specks inside an object) is filled first.
//! 3. **Noise.** Components smaller than [`MeasureConfig::min_area_fraction`] of the canvas (and than
//!    [`MeasureConfig::min_pixels`]) are discarded, and so are *satellites*: components within 2 pixels
//!    of one at least 4 times larger (broken-off blurred rims, noise clusters beside an object).
//!    Objects of comparable size are never merged, however close, so repetitions are counted.
//! 4. **Shape**, from rotation- and scale-invariant features of the component (see [`ShapeFeatures`]).
//!    The name comes from *area moments*, which integrate over the whole component and so shrug off rim
//!    noise, and which blur (a symmetric kernel) attenuates without changing symmetry:
//!    *asymmetry* (√ of Hu's third invariant) is zero for centrally symmetric shapes and 0.068 for a
//!    triangle; *squareness* |c₄₀|/A³ is 0.0167 for a square and zero for circles and triangles
//!    (symmetry orders 3 and ∞ do not divide 4). Asymmetric → triangle, else four-fold → square, else
//!    circle. The outline then has to agree: *fill ratio* = area / minimum-area bounding rectangle
//!    (triangle ½, circle π/4, square 1) and *radial fill* = area / (π R²) with R the largest
//!    centroid-to-outline distance (triangle 0.41, square 0.64, circle 1) must lie near the named
//!    shape's values. Components that are elongated (aspect below [`MeasureConfig::min_aspect`]),
//!    non-convex (solidity below [`MeasureConfig::min_solidity`]) or whose outline disagrees (typically
//!    several objects merged) get no shape.
//! 5. **Size**: equivalent side `√(pixels / (W·H))`, comparable with [`crate::Scene::equivalent_side`].

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::geometry::{area_perimeter, convex_hull, min_area_rect};
use crate::palette::{BackgroundColor, ObjectColor, SceneLabel, Shape};
use crate::scene::Scene;

/// Channel weights of the colour metric.
const WEIGHTS: [f32; 3] = [2.0, 4.0, 3.0];
/// Background segments run from `BG_LO × base` to `BG_HI × base`.
const BG_LO: f32 = 0.55;
const BG_HI: f32 = 1.15;

/// 8-neighbourhood offsets.
const NEIGHBOURS: [(i64, i64); 8] = [
    (-1, -1),
    (0, -1),
    (1, -1),
    (-1, 0),
    (1, 0),
    (-1, 1),
    (0, 1),
    (1, 1),
];
/// Neighbour count from which a pixel belongs to the outline used for the shape features.
const CORE_NEIGHBOURS: u32 = 4;
/// Components smaller than this keep their full outline: at low resolution a sharp corner pixel has
/// as few neighbours as a noise pixel, and pruning would blunt triangles.
const CORE_MIN_PIXELS: usize = 256;
/// Added to the largest centroid-to-hull-vertex distance (pixel centres lie inside the true outline).
const RADIUS_OFFSET: f64 = 0.5;

/// Feature-space prototypes `(fill ratio, radial fill)` of the ideal shapes.
const PROTOTYPES: [(Shape, f32, f32); 3] = [
    (Shape::Circle, std::f32::consts::FRAC_PI_4, 1.0),
    (Shape::Square, 1.0, std::f32::consts::FRAC_2_PI),
    (Shape::Triangle, 0.5, 0.413_496_67),
];

/// What a pixel looks like: background of some base colour, or object of some colour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PixelClass {
    /// Nearest to a background tone.
    Background(BackgroundColor),
    /// Nearest to an object colour.
    Object(ObjectColor),
}

struct Classifier {
    objects: Vec<[f32; 3]>,
    /// (start, direction, |direction|²) of each background segment, in weighted space.
    backgrounds: Vec<([f32; 3], [f32; 3], f32)>,
}

impl Classifier {
    fn new() -> Self {
        let sw = WEIGHTS.map(f32::sqrt);
        let scale = |c: [f32; 3]| [c[0] * sw[0], c[1] * sw[1], c[2] * sw[2]];
        let objects = ObjectColor::ALL
            .iter()
            .map(|o| scale(o.rgb().map(|v| v as f32)))
            .collect();
        let backgrounds = BackgroundColor::ALL
            .iter()
            .map(|b| {
                let base = b.rgb().map(|v| v as f32);
                let lo = scale(base.map(|v| v * BG_LO));
                let hi = scale(base.map(|v| (v * BG_HI).min(255.0)));
                let d = [hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2]];
                (lo, d, d[0] * d[0] + d[1] * d[1] + d[2] * d[2])
            })
            .collect();
        Self {
            objects,
            backgrounds,
        }
    }

    fn classify(&self, rgb: [u8; 3]) -> PixelClass {
        let sw = WEIGHTS.map(f32::sqrt);
        let p = [
            rgb[0] as f32 * sw[0],
            rgb[1] as f32 * sw[1],
            rgb[2] as f32 * sw[2],
        ];
        let mut best = f32::INFINITY;
        let mut class = PixelClass::Background(BackgroundColor::ALL[0]);
        for (k, (a, d, dd)) in self.backgrounds.iter().enumerate() {
            let ap = [p[0] - a[0], p[1] - a[1], p[2] - a[2]];
            let t = ((ap[0] * d[0] + ap[1] * d[1] + ap[2] * d[2]) / dd).clamp(0.0, 1.0);
            let e = [ap[0] - t * d[0], ap[1] - t * d[1], ap[2] - t * d[2]];
            let dist = e[0] * e[0] + e[1] * e[1] + e[2] * e[2];
            if dist < best {
                best = dist;
                class = PixelClass::Background(BackgroundColor::ALL[k]);
            }
        }
        for (k, o) in self.objects.iter().enumerate() {
            let e = [p[0] - o[0], p[1] - o[1], p[2] - o[2]];
            let dist = e[0] * e[0] + e[1] * e[1] + e[2] * e[2];
            if dist < best {
                best = dist;
                class = PixelClass::Object(ObjectColor::ALL[k]);
            }
        }
        class
    }
}

/// Classifies one sRGB pixel to the nearest palette entry (see the module docs).
pub fn classify_pixel(rgb: [u8; 3]) -> PixelClass {
    Classifier::new().classify(rgb)
}

/// Tunables of [`measure_with`]. [`Default`] is what [`measure`] uses.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MeasureConfig {
    /// Components smaller than this fraction of the canvas area are noise (default 0.002; the smallest
    /// object of a 3 × 3 tiling of sampled scenes covers about 0.0043).
    pub min_area_fraction: f32,
    /// Components with fewer pixels are noise whatever the canvas size (default 6).
    pub min_pixels: usize,
    /// Largest distance in the (fill ratio, radial fill) plane between a component and the prototype of
    /// the shape its moments name, for the name to stand (default 0.45).
    pub max_shape_distance: f32,
    /// Smallest short/long side ratio of the minimum bounding rectangle for a shape to be named
    /// (default 0.65; an equilateral triangle has 0.87, two touching equal objects about 0.5).
    pub min_aspect: f32,
    /// Smallest area / convex-hull area for a shape to be named (default 0.7).
    pub min_solidity: f32,
    /// Asymmetry (see [`ShapeFeatures::asymmetry`]) from which a component is a triangle (default 0.02;
    /// ideal triangles measure 0.068, rendered circles and squares stay below 0.006, below 0.012 even
    /// with strong noise, while blurred 32-pixel triangles stay above 0.018).
    pub triangle_asymmetry: f32,
    /// Squareness (see [`ShapeFeatures::squareness`]) from which a symmetric component is a square
    /// rather than a circle (default 0.0085, half the ideal square's 0.0167; rendered circles stay
    /// below 0.005, below 0.008 with strong noise).
    pub square_squareness: f32,
}

impl Default for MeasureConfig {
    fn default() -> Self {
        Self {
            min_area_fraction: 0.002,
            min_pixels: 6,
            max_shape_distance: 0.45,
            min_aspect: 0.65,
            min_solidity: 0.7,
            triangle_asymmetry: 0.02,
            square_squareness: 0.0085,
        }
    }
}

/// What an image is supposed to show, for [`measure`]'s verdicts.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Expected {
    /// Expected shape.
    pub shape: Shape,
    /// Expected object colour.
    pub color: ObjectColor,
    /// Expected background colour, if it should be checked.
    pub background: Option<BackgroundColor>,
    /// Expected equivalent side (fraction of the canvas side, see [`Scene::equivalent_side`]), if known.
    pub size: Option<f32>,
}

impl Expected {
    /// Expects one object of `shape` and `color`; background and size unchecked.
    pub fn new(shape: Shape, color: ObjectColor) -> Self {
        Self {
            shape,
            color,
            background: None,
            size: None,
        }
    }
}

impl From<(Shape, ObjectColor)> for Expected {
    fn from((shape, color): (Shape, ObjectColor)) -> Self {
        Self::new(shape, color)
    }
}

impl From<&Scene> for Expected {
    fn from(scene: &Scene) -> Self {
        Self {
            shape: scene.shape,
            color: scene.color,
            background: Some(scene.background.color),
            size: Some(scene.equivalent_side()),
        }
    }
}

impl From<SceneLabel> for Expected {
    fn from(label: SceneLabel) -> Self {
        Self {
            shape: label.shape,
            color: label.color,
            background: Some(label.background),
            size: None,
        }
    }
}

/// Axis-aligned bounding box in normalised canvas coordinates (pixel edges divided by the side).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct BBox {
    /// Left edge.
    pub x0: f32,
    /// Top edge.
    pub y0: f32,
    /// Right edge.
    pub x1: f32,
    /// Bottom edge.
    pub y1: f32,
}

/// Rotation-invariant geometry of a component used to name its shape.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShapeFeatures {
    /// Area / area of the minimum-area bounding rectangle (triangle 0.5, circle 0.785, square 1).
    pub fill_ratio: f32,
    /// Area / (π R²), R the largest distance from the centroid to the boundary
    /// (triangle 0.41, square 0.64, circle 1).
    pub radial_fill: f32,
    /// Short / long side of the minimum-area bounding rectangle.
    pub aspect: f32,
    /// Area / convex-hull area (1 for convex shapes).
    pub solidity: f32,
    /// Square root of Hu's third moment invariant: 0 for centrally symmetric shapes (circle, square),
    /// about 0.1 for an equilateral triangle; blur keeps symmetric shapes symmetric.
    pub asymmetry: f32,
    /// |c₄₀| / area³ with c₄₀ = Σ (x + i y)⁴ the complex moment about the centroid: about 0.0167 for a
    /// square, 0 for circles and triangles (whose symmetry orders do not divide 4).
    pub squareness: f32,
}

/// One detected object.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObjectInfo {
    /// Majority colour of the component.
    pub color: ObjectColor,
    /// Recognised shape, `None` when the component fits no shape (merged objects, blobs).
    pub shape: Option<Shape>,
    /// Number of pixels.
    pub pixels: usize,
    /// Pixels / canvas pixels.
    pub area_fraction: f32,
    /// Equivalent side `√area_fraction` (fraction of the canvas side).
    pub size_fraction: f32,
    /// Bounding box.
    pub bbox: BBox,
    /// Centroid `(x, y)` in normalised canvas coordinates.
    pub centroid: (f32, f32),
    /// Whether the component reaches the image border (the object may be cut off; its shape is then
    /// unreliable).
    pub touches_border: bool,
    /// Mean colour of the component's pixels.
    pub mean_rgb: [u8; 3],
    /// The features the shape was decided from.
    pub features: ShapeFeatures,
}

/// Result of measuring one image.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// Image width in pixels.
    pub width: u32,
    /// Image height in pixels.
    pub height: u32,
    /// Number of objects found (`objects.len()`).
    pub num_objects: usize,
    /// Objects, largest first.
    pub objects: Vec<ObjectInfo>,
    /// Majority background colour of the non-object pixels (`None` for an empty image or one that is all
    /// object).
    pub background: Option<BackgroundColor>,
    /// Exactly one object.
    pub single_object: bool,
    /// `|size − expected| / expected` for the largest object, when an expected size was given and some
    /// object was found.
    pub size_error: Option<f32>,
    /// Exactly one object, of the expected shape and colour (false without an expectation).
    pub caption_match: bool,
    /// Whether the background colour is the expected one (`None` when not asked).
    pub background_match: Option<bool>,
}

/// Measures `image` with the default [`MeasureConfig`]. Never fails: an empty (0-pixel) image yields a
/// measurement with no objects.
pub fn measure(image: &RgbImage, expected: Option<&Expected>) -> Measurement {
    measure_with(image, expected, &MeasureConfig::default())
}

/// Label of a pixel in the working buffer: 0 = background, `1 + k` = object colour k, [`HOLE`] =
/// background enclosed by object pixels.
const BG: u8 = 0;
/// Enclosed background: counts as object area, has no colour vote.
const HOLE: u8 = u8::MAX;
/// A component is a satellite if a component this many times larger lies within [`SATELLITE_GAP`].
const SATELLITE_RATIO: usize = 4;
/// Largest gap in pixels (Chebyshev distance) between a satellite and its host.
const SATELLITE_GAP: usize = 2;

/// Measures `image` with explicit tunables; see the module docs for the method.
pub fn measure_with(
    image: &RgbImage,
    expected: Option<&Expected>,
    config: &MeasureConfig,
) -> Measurement {
    let (width, height) = image.dimensions();
    let (w, h) = (width as usize, height as usize);
    let n = w * h;
    let classifier = Classifier::new();
    let mut labels = vec![BG; n];
    let mut bg_votes = [0usize; BackgroundColor::COUNT];
    // Neighbouring pixels are often identical (flat objects, slowly varying backgrounds): remember the
    // last answer.
    let mut last: Option<([u8; 3], PixelClass)> = None;
    for (k, px) in image.pixels().enumerate() {
        let class = match last {
            Some((rgb, class)) if rgb == px.0 => class,
            _ => {
                let class = classifier.classify(px.0);
                last = Some((px.0, class));
                class
            }
        };
        match class {
            PixelClass::Background(b) => bg_votes[b.index()] += 1,
            PixelClass::Object(o) => labels[k] = 1 + o.index() as u8,
        }
    }
    let min_px = config
        .min_pixels
        .max((config.min_area_fraction.max(0.0) as f64 * n as f64).ceil() as usize)
        .max(1);

    fill_holes(w, h, &mut labels);

    // Connected components of the object mask (holes included).
    let mut comp_id = vec![u32::MAX; n];
    let mut comps: Vec<Vec<u32>> = Vec::new();
    for start in 0..n {
        if labels[start] == BG || comp_id[start] != u32::MAX {
            continue;
        }
        let id = comps.len() as u32;
        comps.push(flood(w, h, start, id, &mut comp_id, |k| labels[k] != BG));
    }
    let dropped = satellites(w, h, &comps, &comp_id);

    let mut objects = Vec::new();
    for (id, comp) in comps.iter().enumerate() {
        if comp.len() < min_px || dropped[id] {
            continue;
        }
        let mut votes = [0usize; ObjectColor::COUNT];
        for &k in comp {
            let l = labels[k as usize];
            if l != HOLE {
                votes[l as usize - 1] += 1;
            }
        }
        let mut order: Vec<usize> = (0..ObjectColor::COUNT).collect();
        order.sort_by_key(|&c| std::cmp::Reverse(votes[c]));
        let second = order[1];
        if votes[second] >= min_px
            && votes[second] as f64 >= 0.3 * comp.len() as f64
            && has_interior(w, h, comp, &labels, second, order[0])
        {
            // Touching objects of different colours: split by colour.
            let mut sub_id = vec![u32::MAX; n];
            for &c in order.iter().filter(|&&c| votes[c] >= min_px) {
                let tag = 1 + c as u8;
                for &k in comp {
                    let k = k as usize;
                    if labels[k] != tag || sub_id[k] != u32::MAX {
                        continue;
                    }
                    let part = flood(w, h, k, 0, &mut sub_id, |q| {
                        labels[q] == tag && comp_id[q] == id as u32
                    });
                    if part.len() >= min_px {
                        objects.push(analyse(image, &part, ObjectColor::ALL[c], config));
                    }
                }
            }
        } else {
            objects.push(analyse(image, comp, ObjectColor::ALL[order[0]], config));
        }
    }
    objects.sort_by_key(|o| std::cmp::Reverse(o.pixels));

    let background = if bg_votes.iter().all(|&v| v == 0) {
        None
    } else {
        let k = (0..BackgroundColor::COUNT)
            .max_by_key(|&k| (bg_votes[k], std::cmp::Reverse(k)))
            .unwrap_or(0);
        Some(BackgroundColor::ALL[k])
    };
    let num_objects = objects.len();
    let single_object = num_objects == 1;
    let size_error = match (expected.and_then(|e| e.size), objects.first()) {
        (Some(s), Some(o)) if s > 0.0 => Some((o.size_fraction - s).abs() / s),
        _ => None,
    };
    let caption_match = expected.is_some_and(|e| {
        single_object && objects[0].color == e.color && objects[0].shape == Some(e.shape)
    });
    let background_match = expected
        .and_then(|e| e.background)
        .map(|b| background == Some(b));
    Measurement {
        width,
        height,
        num_objects,
        objects,
        background,
        single_object,
        size_error,
        caption_match,
        background_match,
    }
}

/// Whether colour `second` forms a body of its own in `comp`, not just a rim around `first`: it must
/// have interior pixels (all four neighbours of the same colour), at least a fifth as many as `first`.
/// Blurred or anti-aliased rims are one or two pixels wide and have none.
fn has_interior(
    w: usize,
    h: usize,
    comp: &[u32],
    labels: &[u8],
    second: usize,
    first: usize,
) -> bool {
    let mut interior = [0usize; 2];
    for &k in comp {
        let k = k as usize;
        let l = labels[k];
        let slot = if l == 1 + second as u8 {
            1
        } else if l == 1 + first as u8 {
            0
        } else {
            continue;
        };
        let (x, y) = (k % w, k / w);
        if x > 0
            && y > 0
            && x + 1 < w
            && y + 1 < h
            && labels[k - 1] == l
            && labels[k + 1] == l
            && labels[k - w] == l
            && labels[k + w] == l
        {
            interior[slot] += 1;
        }
    }
    interior[1] > 0 && 5 * interior[1] >= interior[0]
}

/// Marks background regions that do not reach the image border (4-connected, the dual of the objects'
/// 8-connectivity) as [`HOLE`]: noise specks inside an object must not eat into its area or outline.
fn fill_holes(w: usize, h: usize, labels: &mut [u8]) {
    let mut outside = vec![false; labels.len()];
    let mut stack = Vec::new();
    for y in 0..h {
        for x in 0..w {
            let k = y * w + x;
            if (x == 0 || y == 0 || x + 1 == w || y + 1 == h) && labels[k] == BG && !outside[k] {
                outside[k] = true;
                stack.push(k);
            }
        }
    }
    while let Some(k) = stack.pop() {
        let (x, y) = (k % w, k / w);
        let mut visit = |q: usize| {
            if labels[q] == BG && !outside[q] {
                outside[q] = true;
                stack.push(q);
            }
        };
        if x > 0 {
            visit(k - 1);
        }
        if x + 1 < w {
            visit(k + 1);
        }
        if y > 0 {
            visit(k - w);
        }
        if y + 1 < h {
            visit(k + w);
        }
    }
    for (l, o) in labels.iter_mut().zip(outside) {
        if *l == BG && !o {
            *l = HOLE;
        }
    }
}

/// Components that are satellites of a larger one: within [`SATELLITE_GAP`] pixels (Chebyshev) of a
/// component at least [`SATELLITE_RATIO`] times larger. They are the broken-off rim of a blurred object
/// (a yellow object's rim over teal looks green) or noise clusters next to it, not objects.
fn satellites(w: usize, h: usize, comps: &[Vec<u32>], comp_id: &[u32]) -> Vec<bool> {
    let max = comps.iter().map(Vec::len).max().unwrap_or(0);
    let r = SATELLITE_GAP as i64;
    comps
        .iter()
        .enumerate()
        .map(|(id, comp)| {
            if comp.len() * SATELLITE_RATIO > max {
                return false;
            }
            comp.iter().any(|&k| {
                let (x, y) = ((k as usize % w) as i64, (k as usize / w) as i64);
                (-r..=r).any(|dy| {
                    (-r..=r).any(|dx| {
                        let (nx, ny) = (x + dx, y + dy);
                        if nx < 0 || ny < 0 || nx >= w as i64 || ny >= h as i64 {
                            return false;
                        }
                        let other = comp_id[ny as usize * w + nx as usize];
                        other != u32::MAX
                            && other as usize != id
                            && comps[other as usize].len() >= SATELLITE_RATIO * comp.len()
                    })
                })
            })
        })
        .collect()
}

/// 8-connected flood fill from `start` over pixels satisfying `member`, tagging them `id` in `ids`.
fn flood(
    w: usize,
    h: usize,
    start: usize,
    id: u32,
    ids: &mut [u32],
    member: impl Fn(usize) -> bool,
) -> Vec<u32> {
    let mut out = Vec::new();
    let mut stack = vec![start];
    ids[start] = id;
    while let Some(k) = stack.pop() {
        out.push(k as u32);
        let (x, y) = (k % w, k / w);
        for dy in -1i64..=1 {
            for dx in -1i64..=1 {
                let (nx, ny) = (x as i64 + dx, y as i64 + dy);
                if nx < 0 || ny < 0 || nx >= w as i64 || ny >= h as i64 {
                    continue;
                }
                let q = ny as usize * w + nx as usize;
                if ids[q] == u32::MAX && member(q) {
                    ids[q] = id;
                    stack.push(q);
                }
            }
        }
    }
    out
}

/// Geometry and colour statistics of one component.
fn analyse(
    image: &RgbImage,
    pixels: &[u32],
    color: ObjectColor,
    config: &MeasureConfig,
) -> ObjectInfo {
    let (width, height) = image.dimensions();
    let w = width as usize;
    let n_canvas = (width as f64) * (height as f64);
    let count = pixels.len();
    let (mut sx, mut sy) = (0.0f64, 0.0f64);
    let mut rgb = [0u64; 3];
    let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0usize, 0usize);
    for &k in pixels {
        let (x, y) = (k as usize % w, k as usize / w);
        sx += x as f64;
        sy += y as f64;
        x0 = x0.min(x);
        y0 = y0.min(y);
        x1 = x1.max(x);
        y1 = y1.max(y);
        let p = image.get_pixel(x as u32, y as u32).0;
        for c in 0..3 {
            rgb[c] += p[c] as u64;
        }
    }
    let cnt = count.max(1) as f64;
    let (cx, cy) = (sx / cnt, sy / cnt);
    // Third-order central moments (zero for centrally symmetric shapes such as circles and squares).
    let (mut m30, mut m21, mut m12, mut m03) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    // Real and imaginary parts of the complex moment c40 = Σ (dx + i dy)^4 (zero for circles and
    // triangles, whose symmetry orders do not divide 4).
    let (mut c40r, mut c40i) = (0.0f64, 0.0f64);
    for &k in pixels {
        let dx = (k as usize % w) as f64 - cx;
        let dy = (k as usize / w) as f64 - cy;
        m30 += dx * dx * dx;
        m21 += dx * dx * dy;
        m12 += dx * dy * dy;
        m03 += dy * dy * dy;
        let (x2, y2) = (dx * dx, dy * dy);
        c40r += x2 * x2 - 6.0 * x2 * y2 + y2 * y2;
        c40i += 4.0 * dx * dy * (x2 - y2);
    }
    let squareness = (c40r * c40r + c40i * c40i).sqrt() / (cnt * cnt * cnt);
    // Hu's third invariant, scale-normalised (η_pq = μ_pq / μ00^(5/2)).
    let norm = cnt.powi(2) * cnt.sqrt();
    let (a, b) = ((m30 - 3.0 * m12) / norm, (3.0 * m21 - m03) / norm);
    let asymmetry = (a * a + b * b).sqrt();
    // Local occupancy grid with a one-pixel frame, to count neighbours.
    let (bw, bh) = (x1 - x0 + 3, y1 - y0 + 3);
    let mut grid = vec![false; bw * bh];
    for &k in pixels {
        let (x, y) = (k as usize % w - x0 + 1, k as usize / w - y0 + 1);
        grid[y * bw + x] = true;
    }
    // For large components the outline comes from "core" pixels (at least CORE_NEIGHBOURS of 8
    // neighbours in the component): single noise pixels stuck to the rim have at most 3 and would
    // otherwise inflate the hull. Pixels on straight or diagonal edges have 4 or more, so true outlines
    // are kept; a corner loses at most a pixel or two, negligible at that size.
    let mut rows: Vec<(i64, i64)> = vec![(i64::MAX, i64::MIN); bh];
    let mut core = 0usize;
    for &k in pixels {
        let (x, y) = (k as usize % w - x0 + 1, k as usize / w - y0 + 1);
        let mut nb = 0;
        for (dx, dy) in NEIGHBOURS {
            nb += grid[(y as i64 + dy) as usize * bw + (x as i64 + dx) as usize] as u32;
        }
        if nb >= CORE_NEIGHBOURS {
            core += 1;
            let r = &mut rows[y];
            r.0 = r.0.min(x as i64);
            r.1 = r.1.max(x as i64);
        }
    }
    if core < 3 || count < CORE_MIN_PIXELS {
        rows.fill((i64::MAX, i64::MIN));
        for &k in pixels {
            let (x, y) = (k as usize % w - x0 + 1, k as usize / w - y0 + 1);
            let r = &mut rows[y];
            r.0 = r.0.min(x as i64);
            r.1 = r.1.max(x as i64);
        }
    }
    let mut pts = Vec::with_capacity(2 * bh);
    for (y, &(a, b)) in rows.iter().enumerate() {
        if a <= b {
            pts.push((a + x0 as i64 - 1, y as i64 + y0 as i64 - 1));
            pts.push((b + x0 as i64 - 1, y as i64 + y0 as i64 - 1));
        }
    }
    let hull = convex_hull(pts);
    let (hull_area, hull_perimeter) = area_perimeter(&hull);
    let (long, short) = min_area_rect(&hull);
    let area = count as f64;
    // Pixel centres sit about half a pixel inside the true outline: extend by half a pixel per side.
    let fill_ratio = area / ((long + 1.0) * (short + 1.0));
    let r_max = hull
        .iter()
        .map(|&(x, y)| ((x as f64 - cx).powi(2) + (y as f64 - cy).powi(2)).sqrt())
        .fold(0.0, f64::max)
        + RADIUS_OFFSET;
    let radial_fill = area / (std::f64::consts::PI * r_max * r_max);
    let aspect = (short + 1.0) / (long + 1.0);
    // Digital convex set: pixel count ≈ hull area + perimeter / 2 + 1 (Pick).
    let solidity = (area / (hull_area + 0.5 * hull_perimeter + 1.0)).min(1.0);
    let features = ShapeFeatures {
        fill_ratio: fill_ratio as f32,
        radial_fill: radial_fill as f32,
        aspect: aspect as f32,
        solidity: solidity as f32,
        asymmetry: asymmetry as f32,
        squareness: squareness as f32,
    };
    let area_fraction = (area / n_canvas) as f32;
    ObjectInfo {
        color,
        shape: name_shape(&features, config),
        pixels: count,
        area_fraction,
        size_fraction: area_fraction.sqrt(),
        bbox: BBox {
            x0: x0 as f32 / width as f32,
            y0: y0 as f32 / height as f32,
            x1: (x1 + 1) as f32 / width as f32,
            y1: (y1 + 1) as f32 / height as f32,
        },
        centroid: (
            ((cx + 0.5) / width as f64) as f32,
            ((cy + 0.5) / height as f64) as f32,
        ),
        touches_border: x0 == 0 || y0 == 0 || x1 + 1 == w || y1 + 1 == height as usize,
        mean_rgb: rgb.map(|v| ((v as f64 / cnt) + 0.5).floor().min(255.0) as u8),
        features,
    }
}

/// Names the shape of a component from its features, or `None` if it is implausible as one shape.
///
/// 1. Elongated (aspect < `min_aspect`) or non-convex (solidity < `min_solidity`): `None`.
/// 2. By symmetry, from area moments (robust to rim noise and blur): triangle if asymmetry ≥
///    `triangle_asymmetry`, else square if squareness ≥ `square_squareness`, else circle.
/// 3. Sanity check of the outline: the (fill ratio, radial fill) point must lie within
///    `max_shape_distance` of the named shape's prototype, else `None` (e.g. merged objects).
pub(crate) fn name_shape(f: &ShapeFeatures, config: &MeasureConfig) -> Option<Shape> {
    if !(f.aspect >= config.min_aspect && f.solidity >= config.min_solidity) {
        return None;
    }
    let shape = if f.asymmetry >= config.triangle_asymmetry {
        Shape::Triangle
    } else if f.squareness >= config.square_squareness {
        Shape::Square
    } else {
        Shape::Circle
    };
    let &(_, a, b) = PROTOTYPES.iter().find(|p| p.0 == shape)?;
    let dist = ((f.fill_ratio - a).powi(2) + (f.radial_fill - b).powi(2)).sqrt();
    (dist <= config.max_shape_distance).then_some(shape)
}

/// Aggregate rates over many measurements (e.g. one per generated image).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Number of measurements.
    pub count: usize,
    /// Fraction with exactly one object.
    pub single_object_rate: f32,
    /// Fraction whose caption matched.
    pub caption_match_rate: f32,
    /// Fraction with more than one object (the repetition symptom).
    pub multi_object_rate: f32,
    /// Fraction with no object at all.
    pub empty_rate: f32,
    /// Mean number of objects.
    pub mean_objects: f32,
    /// Mean of the available size errors (`None` if none).
    pub mean_size_error: Option<f32>,
}

/// Aggregates measurements into rates. An empty slice gives all-zero rates.
pub fn summarize(measurements: &[Measurement]) -> Summary {
    let count = measurements.len();
    if count == 0 {
        return Summary::default();
    }
    let rate = |f: &dyn Fn(&Measurement) -> bool| {
        measurements.iter().filter(|m| f(m)).count() as f32 / count as f32
    };
    let errs: Vec<f32> = measurements.iter().filter_map(|m| m.size_error).collect();
    Summary {
        count,
        single_object_rate: rate(&|m| m.single_object),
        caption_match_rate: rate(&|m| m.caption_match),
        multi_object_rate: rate(&|m| m.num_objects > 1),
        empty_rate: rate(&|m| m.num_objects == 0),
        mean_objects: measurements
            .iter()
            .map(|m| m.num_objects as f32)
            .sum::<f32>()
            / count as f32,
        mean_size_error: (!errs.is_empty()).then(|| errs.iter().sum::<f32>() / errs.len() as f32),
    }
}
