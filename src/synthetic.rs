//! Generated test images that look like diffusion outputs to an encoder: smooth gradients, texture and mild
//! noise (not flat, not pure noise), so compression ratios and speeds are realistic. Deterministic per seed.

/// An RGB (3 channels) float image in 0..1, `width * height * 3` samples.
pub fn rgb_f32(width: u32, height: u32, seed: u64) -> Vec<f32> {
    let mut noise = Lcg(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1));
    let (w, h) = (width.max(1) as f32, height.max(1) as f32);
    let phase = (seed % 97) as f32 * 0.1;
    let mut out = Vec::with_capacity(width as usize * height as usize * 3);
    for y in 0..height {
        let fy = y as f32 / h;
        for x in 0..width {
            let fx = x as f32 / w;
            let texture = 0.06 * ((fx * 40.0 + phase).sin() * (fy * 33.0).cos());
            let blob = 0.25 * (-((fx - 0.6).powi(2) + (fy - 0.4).powi(2)) * 9.0).exp();
            let base = [0.2 + 0.5 * fx, 0.3 + 0.4 * fy, 0.6 - 0.3 * fx * fy];
            for (c, b) in base.iter().enumerate() {
                let n = noise.next_unit() * 0.03;
                out.push((b + blob * (c as f32 * 0.3 + 0.4) + texture + n).clamp(0.0, 1.0));
            }
        }
    }
    out
}

/// The same image as 8-bit samples, converted exactly as the daemon converts floats.
pub fn rgb_u8(width: u32, height: u32, seed: u64) -> Vec<u8> {
    rgb_f32(width, height, seed).into_iter().map(|x| (255.0f32 * x).clamp(0.0, 255.0) as u8).collect()
}

/// A tiny deterministic generator (no dependency needed for test pixels).
struct Lcg(u64);

impl Lcg {
    fn next_unit(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    }
}
