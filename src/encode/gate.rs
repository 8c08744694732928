//! The quality gate's two scores, on the 8-bit image, as SPEC §4 defines them:
//! gray = 0.299 R + 0.587 G + 0.114 B (a gray image is its own gray);
//! variance score = min(1, var(gray on 0..255) / 3000);
//! edge-density score = min(1, mean(mean|vertical neighbour diff|, mean|horizontal neighbour diff|) on 0..1 / 0.05).

use super::Image8;

/// Scores in 0..1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scores {
    /// The variance score.
    pub variance: f64,
    /// The edge-density score.
    pub edge_density: f64,
}

/// Divisor of the variance (0..255 scale) that maps to a score of 1.
pub const VARIANCE_SCALE: f64 = 3000.0;
/// Divisor of the mean edge magnitude (0..1 scale) that maps to a score of 1.
pub const EDGE_SCALE: f64 = 0.05;

fn gray(image: &Image8) -> Vec<f64> {
    let c = usize::from(image.channels);
    image
        .data
        .chunks_exact(c)
        .map(|p| {
            if c == 1 {
                f64::from(p[0])
            } else {
                0.299 * f64::from(p[0]) + 0.587 * f64::from(p[1]) + 0.114 * f64::from(p[2])
            }
        })
        .collect()
}

/// Both scores of one image.
pub fn scores(image: &Image8) -> Scores {
    let g = gray(image);
    let (w, h) = (image.width as usize, image.height as usize);
    let n = g.len() as f64;
    let mean = g.iter().sum::<f64>() / n;
    let variance = g.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    let vertical =
        mean_abs_diff((0..h.saturating_sub(1)).flat_map(|y| (0..w).map(move |x| (y * w + x, (y + 1) * w + x))), &g);
    let horizontal =
        mean_abs_diff((0..h).flat_map(|y| (0..w.saturating_sub(1)).map(move |x| (y * w + x, y * w + x + 1))), &g);
    let edge = (vertical + horizontal) / 2.0 / 255.0;
    Scores { variance: (variance / VARIANCE_SCALE).min(1.0), edge_density: (edge / EDGE_SCALE).min(1.0) }
}

/// Mean of |g[a] - g[b]| over the pairs; NaN for no pairs (a one-pixel-wide image), as numpy's mean of nothing.
fn mean_abs_diff(pairs: impl Iterator<Item = (usize, usize)>, g: &[f64]) -> f64 {
    let (sum, count) = pairs.fold((0.0, 0usize), |(s, n), (a, b)| (s + (g[a] - g[b]).abs(), n + 1));
    sum / count as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(w: u32, h: u32, f: impl Fn(u32, u32) -> [u8; 3]) -> Image8 {
        let f = &f;
        let data = (0..h).flat_map(|y| (0..w).flat_map(move |x| f(x, y))).collect::<Vec<u8>>();
        Image8 { width: w, height: h, channels: 3, data }
    }

    #[test]
    fn a_flat_image_scores_zero_and_a_checkerboard_scores_one() {
        let flat = scores(&image(16, 16, |_, _| [90, 90, 90]));
        assert_eq!((flat.variance, flat.edge_density), (0.0, 0.0));
        let checker = scores(&image(16, 16, |x, y| if (x + y) % 2 == 0 { [0; 3] } else { [255; 3] }));
        assert_eq!((checker.variance, checker.edge_density), (1.0, 1.0));
    }

    #[test]
    fn scores_follow_the_formulas() {
        // Two columns, gray 0 and 100: variance 2500 -> 0.8333; horizontal diff 100/255, vertical 0.
        let img = image(2, 2, |x, _| if x == 0 { [0; 3] } else { [100; 3] });
        let s = scores(&img);
        assert!((s.variance - 2500.0 / 3000.0).abs() < 1e-12, "{s:?}");
        let expected_edge = ((0.0 + 100.0 / 255.0) / 2.0 / 0.05f64).min(1.0);
        assert!((s.edge_density - expected_edge).abs() < 1e-12, "{s:?}");
    }
}
