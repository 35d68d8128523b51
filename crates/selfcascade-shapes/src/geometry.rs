//! Planar geometry on pixel sets: convex hull and minimum-area bounding rectangle.

/// Convex hull of integer points (Andrew's monotone chain), counter-clockwise in a y-up frame, no
/// collinear points. Exact (integer arithmetic).
pub(crate) fn convex_hull(mut pts: Vec<(i64, i64)>) -> Vec<(i64, i64)> {
    pts.sort_unstable();
    pts.dedup();
    if pts.len() < 3 {
        return pts;
    }
    fn cross(o: (i64, i64), a: (i64, i64), b: (i64, i64)) -> i64 {
        (a.0 - o.0) * (b.1 - o.1) - (a.1 - o.1) * (b.0 - o.0)
    }
    let mut hull: Vec<(i64, i64)> = Vec::with_capacity(2 * pts.len());
    for &p in &pts {
        while hull.len() >= 2 && cross(hull[hull.len() - 2], hull[hull.len() - 1], p) <= 0 {
            hull.pop();
        }
        hull.push(p);
    }
    let lower = hull.len() + 1;
    for &p in pts.iter().rev().skip(1) {
        while hull.len() >= lower && cross(hull[hull.len() - 2], hull[hull.len() - 1], p) <= 0 {
            hull.pop();
        }
        hull.push(p);
    }
    hull.pop();
    hull
}

/// Area and perimeter of a polygon.
pub(crate) fn area_perimeter(poly: &[(i64, i64)]) -> (f64, f64) {
    let n = poly.len();
    if n < 2 {
        return (0.0, 0.0);
    }
    let mut a2 = 0i64;
    let mut per = 0.0;
    for i in 0..n {
        let p = poly[i];
        let q = poly[(i + 1) % n];
        a2 += p.0 * q.1 - q.0 * p.1;
        let (dx, dy) = ((q.0 - p.0) as f64, (q.1 - p.1) as f64);
        per += (dx * dx + dy * dy).sqrt();
    }
    ((a2 as f64).abs() * 0.5, per)
}

/// Minimum-area enclosing rectangle of a convex polygon, as `(long side, short side)` of the extents of
/// the points along the best edge direction (rotating calipers by brute force, O(n²), n ≤ a few hundred).
/// Axis directions are always tried too, so degenerate hulls (points, segments) work.
pub(crate) fn min_area_rect(hull: &[(i64, i64)]) -> (f64, f64) {
    if hull.is_empty() {
        return (0.0, 0.0);
    }
    let mut dirs: Vec<(f64, f64)> = vec![(1.0, 0.0)];
    let n = hull.len();
    for i in 0..n {
        let p = hull[i];
        let q = hull[(i + 1) % n];
        let (dx, dy) = ((q.0 - p.0) as f64, (q.1 - p.1) as f64);
        let len = (dx * dx + dy * dy).sqrt();
        if len > 0.0 {
            dirs.push((dx / len, dy / len));
        }
    }
    let mut best = (f64::INFINITY, 0.0, 0.0);
    for (ex, ey) in dirs {
        let (mut a0, mut a1, mut b0, mut b1) = (
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::INFINITY,
            f64::NEG_INFINITY,
        );
        for &(x, y) in hull {
            let (x, y) = (x as f64, y as f64);
            let a = x * ex + y * ey;
            let b = -x * ey + y * ex;
            a0 = a0.min(a);
            a1 = a1.max(a);
            b0 = b0.min(b);
            b1 = b1.max(b);
        }
        let (wa, wb) = (a1 - a0, b1 - b0);
        // Rank by the area of the pixel-extended rectangle, which is what callers use.
        let area = (wa + 1.0) * (wb + 1.0);
        if area < best.0 {
            best = (area, wa.max(wb), wa.min(wb));
        }
    }
    (best.1, best.2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hull_of_square_grid() {
        let pts: Vec<_> = (0..5).flat_map(|x| (0..5).map(move |y| (x, y))).collect();
        let h = convex_hull(pts);
        assert_eq!(h.len(), 4);
        let (a, p) = area_perimeter(&h);
        assert_eq!(a, 16.0);
        assert_eq!(p, 16.0);
        assert_eq!(min_area_rect(&h), (4.0, 4.0));
    }

    #[test]
    fn degenerate_hulls() {
        assert_eq!(convex_hull(vec![(1, 1), (1, 1)]), vec![(1, 1)]);
        assert_eq!(min_area_rect(&[(1, 1)]), (0.0, 0.0));
        let h = convex_hull(vec![(0, 0), (1, 1), (2, 2)]);
        assert_eq!(h.len(), 2);
        assert_eq!(min_area_rect(&[]), (0.0, 0.0));
    }

    #[test]
    fn diamond_min_rect_is_rotated() {
        // Diamond |x| + |y| <= 4: the min rectangle is the rotated square of side 4√2.
        let pts: Vec<_> = (-4i64..=4)
            .flat_map(|x| (-4i64..=4).map(move |y| (x, y)))
            .filter(|(x, y)| x.abs() + y.abs() <= 4)
            .collect();
        let (l, s) = min_area_rect(&convex_hull(pts));
        assert!((l - 4.0 * 2f64.sqrt()).abs() < 1e-9 && (s - l).abs() < 1e-9);
    }
}
