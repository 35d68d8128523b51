//! Scenes: one object on a gradient background, in normalised canvas coordinates.

use serde::{Deserialize, Serialize};

use crate::mathx::{sin_cos, SplitMix64};
use crate::palette::{BackgroundColor, ObjectColor, SceneLabel, Shape};
use crate::ShapesError;

/// Smallest object size sampled by [`Scene::sample`], as a fraction of the canvas side.
pub const SIZE_MIN: f32 = 0.30;
/// Largest object size sampled by [`Scene::sample`], as a fraction of the canvas side.
pub const SIZE_MAX: f32 = 0.60;
/// Gap kept between the object's bounding box and the canvas border by [`Scene::sample`], as a fraction
/// of the canvas side (leaves room for the anti-aliased edge).
pub const BORDER_MARGIN: f32 = 0.02;
/// Range of [`Background::gradient_strength`] sampled by [`Scene::sample`].
pub const GRADIENT_STRENGTH_RANGE: (f32, f32) = (0.10, 0.35);

/// The background: a linear gradient from the base tone of `color` to a darker tone, plus a mild texture.
///
/// At canvas point `p` the tone is `base × (1 − gradient_strength × t)` with
/// `t = clamp(0.5 + (p − (0.5, 0.5))·d / √2, 0, 1)` and `d = (cos gradient_angle, sin gradient_angle)`:
/// the darkest corner lies in direction `d` from the centre.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Background {
    /// Base (lightest) tone.
    pub color: BackgroundColor,
    /// Direction of darkening, radians (0 = towards +x, π/2 = towards +y, i.e. downwards).
    pub gradient_angle: f32,
    /// How much darker the far end is: the second tone is `base × (1 − gradient_strength)`.
    pub gradient_strength: f32,
}

/// One scene of the shapes world: a single object on a textured gradient background.
///
/// Geometry lives in normalised canvas coordinates `[0, 1]²` (x to the right, y downwards), so a scene
/// depicts the same picture at every resolution.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scene {
    /// Object shape.
    pub shape: Shape,
    /// Object colour (flat fill).
    pub color: ObjectColor,
    /// Background tone, gradient and texture.
    pub background: Background,
    /// Object centre `(x, y)` in `[0, 1]²`.
    pub center: (f32, f32),
    /// Object size as a fraction of the canvas side: circle diameter, square side or triangle side.
    pub size: f32,
    /// Rotation in radians (clockwise on screen, since y points down). Ignored for circles.
    pub rotation: f32,
    /// Seed of the background texture (value noise).
    pub texture_seed: u64,
}

impl Scene {
    /// Samples a scene deterministically from `seed`: uniform label, size in
    /// [`SIZE_MIN`]..[`SIZE_MAX`], uniform rotation, uniform gradient direction, and a centre uniform
    /// among the positions that keep the object inside the canvas with [`BORDER_MARGIN`] to spare.
    ///
    /// The stream is this crate's own SplitMix64, so a seed maps to the same scene on every platform and
    /// with every dependency version.
    pub fn sample(seed: u64) -> Self {
        let mut rng = SplitMix64::new(seed);
        let shape = Shape::ALL[rng.index(Shape::COUNT)];
        let color = ObjectColor::ALL[rng.index(ObjectColor::COUNT)];
        let background = BackgroundColor::ALL[rng.index(BackgroundColor::COUNT)];
        Self::sample_rest(
            SceneLabel {
                shape,
                color,
                background,
            },
            &mut rng,
        )
    }

    /// Samples a scene with the given label, all free variation (position, size, rotation, gradient,
    /// texture) drawn deterministically from `seed`. Useful for class-balanced training data.
    pub fn sample_with_label(label: SceneLabel, seed: u64) -> Self {
        let mut rng = SplitMix64::new(seed ^ 0x1ABE_1ABE_1ABE_1ABE);
        Self::sample_rest(label, &mut rng)
    }

    fn sample_rest(label: SceneLabel, rng: &mut SplitMix64) -> Self {
        let size = rng.uniform(SIZE_MIN as f64, SIZE_MAX as f64) as f32;
        let rotation = match label.shape {
            Shape::Circle => 0.0,
            Shape::Square => rng.uniform(0.0, std::f64::consts::FRAC_PI_2) as f32,
            Shape::Triangle => rng.uniform(0.0, 2.0 * std::f64::consts::FRAC_PI_3) as f32,
        };
        let gradient_angle = rng.uniform(0.0, std::f64::consts::TAU) as f32;
        let gradient_strength = rng.uniform(
            GRADIENT_STRENGTH_RANGE.0 as f64,
            GRADIENT_STRENGTH_RANGE.1 as f64,
        ) as f32;
        let texture_seed = rng.next_u64();
        let mut scene = Scene {
            shape: label.shape,
            color: label.color,
            background: Background {
                color: label.background,
                gradient_angle,
                gradient_strength,
            },
            center: (0.5, 0.5),
            size,
            rotation,
            texture_seed,
        };
        // Bounding box of the object relative to its centre.
        let (x0, y0, x1, y1) = scene.geometry().bounds();
        let m = BORDER_MARGIN as f64;
        let cx_lo = m - (x0 - 0.5);
        let cx_hi = 1.0 - m - (x1 - 0.5);
        let cy_lo = m - (y0 - 0.5);
        let cy_hi = 1.0 - m - (y1 - 0.5);
        let cx = rng.uniform(cx_lo, cx_hi.max(cx_lo));
        let cy = rng.uniform(cy_lo, cy_hi.max(cy_lo));
        scene.center = (cx as f32, cy as f32);
        scene
    }

    /// The discrete label (shape, colour, background colour).
    pub fn label(&self) -> SceneLabel {
        SceneLabel {
            shape: self.shape,
            color: self.color,
            background: self.background.color,
        }
    }

    /// Caption such as `"a red circle on a blue background"`.
    pub fn caption(&self) -> String {
        self.label().caption()
    }

    /// Object area as a fraction of the canvas area.
    pub fn area_fraction(&self) -> f32 {
        self.object().area_fraction()
    }

    /// Side of the square with the object's area, as a fraction of the canvas side: `√area_fraction`.
    /// This is what [`crate::ObjectInfo::size_fraction`] estimates.
    pub fn equivalent_side(&self) -> f32 {
        self.object().equivalent_side()
    }

    /// Bounding box `(x0, y0, x1, y1)` of the object in canvas coordinates.
    pub fn bounding_box(&self) -> (f32, f32, f32, f32) {
        let (x0, y0, x1, y1) = self.geometry().bounds();
        (x0 as f32, y0 as f32, x1 as f32, y1 as f32)
    }

    /// Checks the world's invariants: finite numbers, size in [`SIZE_MIN`]..=[`SIZE_MAX`], gradient
    /// strength in `[0, 1]`, and the object entirely inside the canvas. Rendering does not require a
    /// valid scene (it never panics), but measurement expectations only make sense for valid ones.
    pub fn validate(&self) -> Result<(), ShapesError> {
        let nums = [
            self.center.0,
            self.center.1,
            self.size,
            self.rotation,
            self.background.gradient_angle,
            self.background.gradient_strength,
        ];
        if nums.iter().any(|v| !v.is_finite()) {
            return Err(ShapesError::InvalidScene("non-finite number".into()));
        }
        if !(SIZE_MIN..=SIZE_MAX).contains(&self.size) {
            return Err(ShapesError::InvalidScene(format!(
                "size {} outside {SIZE_MIN}..={SIZE_MAX}",
                self.size
            )));
        }
        if !(0.0..=1.0).contains(&self.background.gradient_strength) {
            return Err(ShapesError::InvalidScene(format!(
                "gradient strength {} outside 0..=1",
                self.background.gradient_strength
            )));
        }
        let (x0, y0, x1, y1) = self.bounding_box();
        if x0 < 0.0 || y0 < 0.0 || x1 > 1.0 || y1 > 1.0 {
            return Err(ShapesError::InvalidScene(format!(
                "object bounding box ({x0}, {y0})-({x1}, {y1}) leaves the canvas"
            )));
        }
        Ok(())
    }

    /// The object alone (shape, colour, placement), e.g. to compose several with
    /// [`crate::render_composite`].
    pub fn object(&self) -> SceneObject {
        SceneObject {
            shape: self.shape,
            color: self.color,
            center: self.center,
            size: self.size,
            rotation: self.rotation,
        }
    }

    /// Exact geometry in canvas coordinates (f64).
    pub(crate) fn geometry(&self) -> Geometry {
        self.object().geometry()
    }
}

/// One object placed on the canvas. A [`Scene`] holds exactly one; [`crate::render_composite`] draws any
/// number, e.g. to build synthetic repetition pictures.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SceneObject {
    /// Object shape.
    pub shape: Shape,
    /// Object colour.
    pub color: ObjectColor,
    /// Centre `(x, y)` in canvas coordinates.
    pub center: (f32, f32),
    /// Size as a fraction of the canvas side (circle diameter, square side, triangle side); any positive
    /// value is drawn, the [`SIZE_MIN`]..[`SIZE_MAX`] range applies to sampled scenes only.
    pub size: f32,
    /// Rotation in radians (ignored for circles).
    pub rotation: f32,
}

impl SceneObject {
    /// Object area as a fraction of the canvas area.
    pub fn area_fraction(&self) -> f32 {
        let s = self.size as f64;
        let a = match self.shape {
            Shape::Circle => std::f64::consts::PI / 4.0 * s * s,
            Shape::Square => s * s,
            Shape::Triangle => 3f64.sqrt() / 4.0 * s * s,
        };
        a as f32
    }

    /// Side of the square with the object's area, as a fraction of the canvas side: `√area_fraction`.
    /// This is what [`crate::ObjectInfo::size_fraction`] estimates.
    pub fn equivalent_side(&self) -> f32 {
        self.area_fraction().max(0.0).sqrt()
    }

    /// Exact geometry in canvas coordinates (f64).
    pub(crate) fn geometry(&self) -> Geometry {
        let cx = self.center.0 as f64;
        let cy = self.center.1 as f64;
        let s = self.size as f64;
        match self.shape {
            Shape::Circle => Geometry::Circle { cx, cy, r: 0.5 * s },
            Shape::Square => {
                let (sn, cs) = sin_cos(self.rotation as f64);
                let h = 0.5 * s;
                let corners = [(-h, -h), (h, -h), (h, h), (-h, h)];
                Geometry::polygon(
                    corners
                        .iter()
                        .map(|&(x, y)| (cx + x * cs - y * sn, cy + x * sn + y * cs)),
                )
            }
            Shape::Triangle => {
                // Circumradius s/√3; apex straight up (−y) at rotation 0; vertices clockwise on screen.
                let r = s / 3f64.sqrt();
                let base = self.rotation as f64 - std::f64::consts::FRAC_PI_2;
                Geometry::polygon((0..3).map(|k| {
                    let (sn, cs) = sin_cos(base + k as f64 * 2.0 * std::f64::consts::FRAC_PI_3);
                    (cx + r * cs, cy + r * sn)
                }))
            }
        }
    }
}

/// Half-plane `a x + b y + c <= 0` with `(a, b)` a unit outward normal.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Edge {
    a: f64,
    b: f64,
    c: f64,
}

/// Object geometry prepared for rendering.
#[derive(Clone, Debug)]
pub(crate) enum Geometry {
    Circle {
        cx: f64,
        cy: f64,
        r: f64,
    },
    /// Convex polygon: vertices and the outward edge lines.
    Polygon {
        vertices: Vec<(f64, f64)>,
        edges: Vec<Edge>,
    },
}

impl Geometry {
    fn polygon(vertices: impl Iterator<Item = (f64, f64)>) -> Self {
        let vertices: Vec<(f64, f64)> = vertices.collect();
        let n = vertices.len();
        // Orientation-independent: compute signed area, flip normals so they point outwards.
        let mut area2 = 0.0;
        for i in 0..n {
            let (x0, y0) = vertices[i];
            let (x1, y1) = vertices[(i + 1) % n];
            area2 += x0 * y1 - x1 * y0;
        }
        let sign = if area2 >= 0.0 { 1.0 } else { -1.0 };
        let edges = (0..n)
            .map(|i| {
                let (x0, y0) = vertices[i];
                let (x1, y1) = vertices[(i + 1) % n];
                let (dx, dy) = (x1 - x0, y1 - y0);
                let len = (dx * dx + dy * dy).sqrt();
                let (a, b) = if len > 0.0 {
                    (sign * dy / len, -sign * dx / len)
                } else {
                    (0.0, 0.0)
                };
                Edge {
                    a,
                    b,
                    c: -(a * x0 + b * y0),
                }
            })
            .collect();
        Geometry::Polygon { vertices, edges }
    }

    /// Bounding box `(x0, y0, x1, y1)`.
    pub(crate) fn bounds(&self) -> (f64, f64, f64, f64) {
        match self {
            Geometry::Circle { cx, cy, r } => (cx - r, cy - r, cx + r, cy + r),
            Geometry::Polygon { vertices, .. } => vertices.iter().fold(
                (
                    f64::INFINITY,
                    f64::INFINITY,
                    f64::NEG_INFINITY,
                    f64::NEG_INFINITY,
                ),
                |(a, b, c, d), &(x, y)| (a.min(x), b.min(y), c.max(x), d.max(y)),
            ),
        }
    }

    /// A lower bound on the signed distance (positive outside) that is exact inside and a valid bound
    /// outside: used only to skip supersampling far from the edge.
    pub(crate) fn signed_distance_bound(&self, x: f64, y: f64) -> f64 {
        match self {
            Geometry::Circle { cx, cy, r } => {
                let dx = x - cx;
                let dy = y - cy;
                (dx * dx + dy * dy).sqrt() - r
            }
            Geometry::Polygon { edges, .. } => edges
                .iter()
                .map(|e| e.a * x + e.b * y + e.c)
                .fold(f64::NEG_INFINITY, f64::max),
        }
    }

    /// Point-in-shape test (boundary counts as inside).
    pub(crate) fn contains(&self, x: f64, y: f64) -> bool {
        match self {
            Geometry::Circle { cx, cy, r } => {
                let dx = x - cx;
                let dy = y - cy;
                dx * dx + dy * dy <= r * r
            }
            Geometry::Polygon { edges, .. } => edges.iter().all(|e| e.a * x + e.b * y + e.c <= 0.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampled_scenes_are_valid_and_deterministic() {
        for seed in 0..2000 {
            let s = Scene::sample(seed);
            s.validate().unwrap();
            assert_eq!(s, Scene::sample(seed));
            let (x0, y0, x1, y1) = s.bounding_box();
            let m = BORDER_MARGIN - 1e-5;
            assert!(
                x0 >= m && y0 >= m && x1 <= 1.0 - m && y1 <= 1.0 - m,
                "{s:?}"
            );
        }
    }

    #[test]
    fn labels_are_all_reached() {
        let mut seen = [false; SceneLabel::NUM_CLASSES];
        for seed in 0..2000 {
            seen[Scene::sample(seed).label().index()] = true;
        }
        assert!(seen.iter().all(|&s| s));
        let l = SceneLabel::from_index(17).unwrap();
        let s = Scene::sample_with_label(l, 3);
        assert_eq!(s.label(), l);
        s.validate().unwrap();
    }

    #[test]
    fn triangle_geometry_is_equilateral() {
        let mut s = Scene::sample(1);
        s.shape = Shape::Triangle;
        s.size = 0.5;
        s.rotation = 0.3;
        if let Geometry::Polygon { vertices, .. } = s.geometry() {
            for i in 0..3 {
                let (a, b) = (vertices[i], vertices[(i + 1) % 3]);
                let d = ((a.0 - b.0).powi(2) + (a.1 - b.1).powi(2)).sqrt();
                assert!((d - 0.5).abs() < 1e-6);
            }
        } else {
            panic!("triangle must be a polygon");
        }
        assert!(s.geometry().contains(s.center.0 as f64, s.center.1 as f64));
    }

    #[test]
    fn validate_rejects_bad_scenes() {
        let mut s = Scene::sample(5);
        s.center = (0.01, 0.5);
        assert!(s.validate().is_err());
        s = Scene::sample(5);
        s.size = f32::NAN;
        assert!(s.validate().is_err());
        s = Scene::sample(5);
        s.size = 0.9;
        assert!(s.validate().is_err());
    }
}
