//! Vocabularies of the shapes world: shapes, object colours, background colours, caption words and the
//! class-index mapping used by class-conditional models.
//!
//! # Palettes
//!
//! Object and background colours come from two **disjoint** palettes that are far apart in colour space,
//! so that a generated pixel can be told object-or-background by its nearest palette entry even after noise,
//! blur or a colour cast:
//!
//! * objects are **bright and saturated** (or pure white): red, green, yellow, white, magenta;
//! * backgrounds are **dark or mid-tone**: blue, gray, teal. A background is further darkened by its
//!   gradient (down to 65 % of the base tone), which only pushes it away from the object palette.
//!
//! In the weighted RGB metric used by measurement (weights 2, 4, 3 on squared channel differences) the
//! closest object/background pair (green vs teal) is about 180 units apart, the closest two object
//! colours (green vs yellow) about 265.

use serde::{Deserialize, Serialize};

macro_rules! vocab_enum {
    (
        $(#[$meta:meta])*
        $name:ident { $( $(#[$vmeta:meta])* $variant:ident => $word:literal ),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "lowercase")]
        pub enum $name {
            $( $(#[$vmeta])* $variant ),+
        }

        impl $name {
            /// Every value, in index order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// Number of values.
            pub const COUNT: usize = Self::ALL.len();

            /// The caption word for this value.
            pub fn name(self) -> &'static str {
                match self { $($name::$variant => $word),+ }
            }

            /// The caption words of all values, in index order (e.g. to build a label encoder).
            pub fn names() -> Vec<&'static str> {
                Self::ALL.iter().map(|v| v.name()).collect()
            }

            /// Position in [`Self::ALL`].
            pub fn index(self) -> usize {
                self as usize
            }

            /// Inverse of [`Self::index`]; `None` when out of range.
            pub fn from_index(index: usize) -> Option<Self> {
                Self::ALL.get(index).copied()
            }

            /// Inverse of [`Self::name`] (exact, lowercase); `None` for an unknown word.
            pub fn from_name(word: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.name() == word)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

vocab_enum! {
    /// Object shape. Geometry (all sizes are fractions of the canvas side, see [`crate::Scene::size`]):
    /// a circle of diameter `size`, a square of side `size`, an equilateral triangle of side `size`.
    Shape {
        /// Disc of diameter `size`.
        Circle => "circle",
        /// Square of side `size`, rotated by `rotation`.
        Square => "square",
        /// Equilateral triangle of side `size`, apex up at rotation 0, rotated by `rotation`.
        Triangle => "triangle",
    }
}

vocab_enum! {
    /// Colour of the object: bright, saturated palette disjoint from [`BackgroundColor`].
    ObjectColor {
        /// sRGB (225, 45, 40).
        Red => "red",
        /// sRGB (60, 200, 70).
        Green => "green",
        /// sRGB (245, 215, 50).
        Yellow => "yellow",
        /// sRGB (240, 240, 240).
        White => "white",
        /// sRGB (215, 60, 210).
        Magenta => "magenta",
    }
}

impl ObjectColor {
    /// Reference sRGB colour, as rendered.
    pub fn rgb(self) -> [u8; 3] {
        match self {
            ObjectColor::Red => [225, 45, 40],
            ObjectColor::Green => [60, 200, 70],
            ObjectColor::Yellow => [245, 215, 50],
            ObjectColor::White => [240, 240, 240],
            ObjectColor::Magenta => [215, 60, 210],
        }
    }
}

vocab_enum! {
    /// Base tone of the background: dark/mid palette disjoint from [`ObjectColor`]. The rendered background
    /// runs from this tone to a darker one (see [`crate::Background`]).
    BackgroundColor {
        /// sRGB (40, 70, 170).
        Blue => "blue",
        /// sRGB (85, 85, 90).
        Gray => "gray",
        /// sRGB (20, 115, 115).
        Teal => "teal",
    }
}

/// Words that are not shape or colour names but appear in every caption.
pub const CAPTION_FILLER_WORDS: &[&str] = &["a", "on", "background"];

/// Every word that can appear in a caption, without duplicates, in a fixed order: filler words, shapes,
/// object colours, background colours. Index in this list is a stable token id for a text encoder.
pub fn caption_vocabulary() -> Vec<&'static str> {
    let mut words: Vec<&'static str> = CAPTION_FILLER_WORDS.to_vec();
    words.extend(Shape::ALL.iter().map(|s| s.name()));
    words.extend(ObjectColor::ALL.iter().map(|c| c.name()));
    for b in BackgroundColor::ALL {
        if !words.contains(&b.name()) {
            words.push(b.name());
        }
    }
    words
}

/// The discrete content of a scene: shape × object colour × background colour. This is the class of a
/// class-conditional model; position, size, rotation, gradient and texture are free variation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SceneLabel {
    /// Object shape.
    pub shape: Shape,
    /// Object colour.
    pub color: ObjectColor,
    /// Background base colour.
    pub background: BackgroundColor,
}

impl SceneLabel {
    /// Number of distinct labels (`3 × 5 × 3 = 45`).
    pub const NUM_CLASSES: usize = Shape::COUNT * ObjectColor::COUNT * BackgroundColor::COUNT;

    /// Class index in `0..NUM_CLASSES`: `(shape * 5 + color) * 3 + background`.
    pub fn index(self) -> usize {
        (self.shape.index() * ObjectColor::COUNT + self.color.index()) * BackgroundColor::COUNT
            + self.background.index()
    }

    /// Inverse of [`Self::index`]; `None` when `index >= NUM_CLASSES`.
    pub fn from_index(index: usize) -> Option<Self> {
        if index >= Self::NUM_CLASSES {
            return None;
        }
        let background = BackgroundColor::ALL[index % BackgroundColor::COUNT];
        let rest = index / BackgroundColor::COUNT;
        let color = ObjectColor::ALL[rest % ObjectColor::COUNT];
        let shape = Shape::ALL[rest / ObjectColor::COUNT];
        Some(Self {
            shape,
            color,
            background,
        })
    }

    /// All labels in index order.
    pub fn all() -> impl Iterator<Item = SceneLabel> {
        (0..Self::NUM_CLASSES).filter_map(Self::from_index)
    }

    /// Caption such as `"a red circle on a blue background"`.
    pub fn caption(self) -> String {
        format!(
            "a {} {} on a {} background",
            self.color, self.shape, self.background
        )
    }

    /// Parses a caption produced by [`Self::caption`] (exact format); `None` otherwise.
    pub fn from_caption(caption: &str) -> Option<Self> {
        let words: Vec<&str> = caption.split_whitespace().collect();
        match words.as_slice() {
            ["a", color, shape, "on", "a", background, "background"] => Some(Self {
                shape: Shape::from_name(shape)?,
                color: ObjectColor::from_name(color)?,
                background: BackgroundColor::from_name(background)?,
            }),
            _ => None,
        }
    }
}

impl BackgroundColor {
    /// Base sRGB tone (the light end of the gradient).
    pub fn rgb(self) -> [u8; 3] {
        match self {
            BackgroundColor::Blue => [40, 70, 170],
            BackgroundColor::Gray => [85, 85, 90],
            BackgroundColor::Teal => [20, 115, 115],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_index_round_trip() {
        let all: Vec<_> = SceneLabel::all().collect();
        assert_eq!(all.len(), SceneLabel::NUM_CLASSES);
        for (i, l) in all.iter().enumerate() {
            assert_eq!(l.index(), i);
            assert_eq!(SceneLabel::from_caption(&l.caption()), Some(*l));
        }
        assert_eq!(SceneLabel::from_index(SceneLabel::NUM_CLASSES), None);
        assert_eq!(SceneLabel::from_caption("a blue circle"), None);
    }

    #[test]
    fn vocabulary_covers_captions() {
        let vocab = caption_vocabulary();
        for l in SceneLabel::all() {
            for w in l.caption().split_whitespace() {
                assert!(vocab.contains(&w), "{w}");
            }
        }
        assert_eq!(Shape::names(), ["circle", "square", "triangle"]);
        assert_eq!(ObjectColor::names().len(), ObjectColor::COUNT);
        assert_eq!(BackgroundColor::names(), ["blue", "gray", "teal"]);
        let mut dedup = vocab.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(dedup.len(), vocab.len());
    }

    #[test]
    fn palettes_are_disjoint() {
        for o in ObjectColor::ALL {
            for b in BackgroundColor::ALL {
                assert_ne!(o.name(), b.name());
                assert_ne!(o.rgb(), b.rgb());
            }
            assert_eq!(ObjectColor::from_name(o.name()), Some(*o));
        }
    }
}
