//! One synthetic clip: its randomly drawn parameters (`ClipSpec`) and the pure-Rust renderer that
//! turns them into RGB frames.
//!
//! Paired classes are one motion played forwards or backwards: a clip of `left` is a clip of
//! `right` with its frames in reverse order, `up` of `down`, `shrink` of `grow`, `disappear` of
//! `appear`. Every parameter is drawn the same way for both classes of a pair, so the *set* of
//! frames of a clip has exactly the same distribution in both (for the same random generator it
//! is the same set, frame for frame): only the order of the frames tells the classes apart, and a
//! model that averages frames without regard to their order (TSN) is at chance within a pair.
//! Nothing drawn per frame depends on the direction of time (the object does not point where it
//! goes, there is no motion blur, sensor noise is drawn per frame of the forward clip).

use super::Class;
use crate::rng::Rng;
use std::f32::consts::PI;

/// Shapes, each drawn inside a circle of radius `BOUND_FACTOR * radius` around its centre.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shape {
    Circle,
    Square,
    Triangle,
    Diamond,
    Ring,
    Cross,
}

const SHAPES: [Shape; 6] =
    [Shape::Circle, Shape::Square, Shape::Triangle, Shape::Diamond, Shape::Ring, Shape::Cross];

/// Largest distance from the centre to any point of any shape, in radii (the square's corner).
pub const BOUND_FACTOR: f32 = 1.15;

/// Where the object is in one frame. Positions are pixel coordinates of the centre (x right,
/// y down, pixel centres at +0.5), `radius_px` the shape's nominal radius.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ObjectState {
    pub cx: f32,
    pub cy: f32,
    pub radius_px: f32,
    pub angle: f32,
    pub visible: bool,
}

impl ObjectState {
    /// Radius of the circle that contains every pixel the object touches (antialiasing included).
    pub fn bound_px(&self) -> f32 {
        BOUND_FACTOR * self.radius_px + 1.0
    }
}

/// A static background, described in pixels so it is drawn once per clip.
#[derive(Clone, Debug)]
pub enum Background {
    Solid([f32; 3]),
    /// Linear ramp from `c0` to `c1` along `dir` across the frame.
    Gradient {
        c0: [f32; 3],
        c1: [f32; 3],
        dir: [f32; 2],
    },
    /// Smooth value noise: a coarse grid of random levels between `c0` and `c1`, interpolated.
    Blobs {
        c0: [f32; 3],
        c1: [f32; 3],
        cell_px: f32,
        grid_w: usize,
        levels: Vec<f32>,
    },
    /// Soft sinusoidal stripes.
    Stripes {
        c0: [f32; 3],
        c1: [f32; 3],
        dir: [f32; 2],
        period_px: f32,
        phase: f32,
    },
    /// A rotated checkerboard.
    Checker {
        c0: [f32; 3],
        c1: [f32; 3],
        dir: [f32; 2],
        cell_px: f32,
    },
}

impl Background {
    fn colours(&self) -> ([f32; 3], [f32; 3]) {
        match self {
            Background::Solid(c) => (*c, *c),
            Background::Gradient { c0, c1, .. }
            | Background::Blobs { c0, c1, .. }
            | Background::Stripes { c0, c1, .. }
            | Background::Checker { c0, c1, .. } => (*c0, *c1),
        }
    }

    /// Colour at the pixel centre (x, y), components in [0, 1].
    fn at(&self, x: f32, y: f32, width: f32, height: f32) -> [f32; 3] {
        let (c0, c1) = self.colours();
        let t = match self {
            Background::Solid(_) => 0.0,
            Background::Gradient { dir, .. } => {
                let half = 0.5 * (width * dir[0].abs() + height * dir[1].abs());
                let d = (x - 0.5 * width) * dir[0] + (y - 0.5 * height) * dir[1];
                0.5 + 0.5 * d / half.max(1.0)
            }
            Background::Blobs { cell_px, grid_w, levels, .. } => {
                let gx = x / cell_px;
                let gy = y / cell_px;
                let (ix, iy) = (gx.floor() as usize, gy.floor() as usize);
                let (fx, fy) = (smoothstep(gx.fract()), smoothstep(gy.fract()));
                let l = |i: usize, j: usize| levels[j * grid_w + i];
                let top = l(ix, iy) * (1.0 - fx) + l(ix + 1, iy) * fx;
                let bottom = l(ix, iy + 1) * (1.0 - fx) + l(ix + 1, iy + 1) * fx;
                top * (1.0 - fy) + bottom * fy
            }
            Background::Stripes { dir, period_px, phase, .. } => {
                let d = x * dir[0] + y * dir[1];
                0.5 + 0.5 * (2.0 * PI * d / period_px + phase).sin()
            }
            Background::Checker { dir, cell_px, .. } => {
                let u = (x * dir[0] + y * dir[1]) / cell_px;
                let v = (-x * dir[1] + y * dir[0]) / cell_px;
                ((u.floor() as i64 + v.floor() as i64).rem_euclid(2)) as f32
            }
        };
        let t = t.clamp(0.0, 1.0);
        [0, 1, 2].map(|k| c0[k] + (c1[k] - c0[k]) * t)
    }
}

fn smoothstep(u: f32) -> f32 {
    u * u * (3.0 - 2.0 * u)
}

/// Everything needed to render one clip; drawn by `sample_clip`, rendered by `Renderer`.
#[derive(Clone, Debug)]
pub struct ClipSpec {
    pub class: Class,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub shape: Shape,
    /// Object colour, components in [0, 1].
    pub colour: [f32; 3],
    pub background: Background,
    /// Amplitude (in 8-bit levels) of per-frame luminance noise; 0 for none.
    pub noise_amp: f32,
    noise_seed: u64,
    /// The object in each frame of the *forward* motion (`right`, `down`, `grow`, `appear`).
    forward: Vec<ObjectState>,
    /// Whether the clip plays the forward motion backwards (`left`, `up`, `shrink`, `disappear`).
    pub reversed: bool,
}

impl ClipSpec {
    pub fn num_frames(&self) -> usize {
        self.forward.len()
    }

    /// Index into the forward motion of output frame `t`.
    fn forward_index(&self, t: usize) -> usize {
        if self.reversed {
            self.forward.len() - 1 - t
        } else {
            t
        }
    }

    /// The object in output frame `t`.
    pub fn state(&self, t: usize) -> ObjectState {
        self.forward[self.forward_index(t)]
    }

    /// The object in every output frame, in playing order.
    pub fn states(&self) -> Vec<ObjectState> {
        (0..self.num_frames()).map(|t| self.state(t)).collect()
    }

    /// The same motion drawn plainly: a white object on black, no sensor noise. Object and
    /// background then differ in every patch the object touches, whatever their colours would
    /// have been, which a model that embeds patches linearly (a ViT) needs to see presence
    /// without first learning colour-invariant edge features.
    pub fn plain(mut self) -> Self {
        self.colour = [1.0; 3];
        self.background = Background::Solid([0.0; 3]);
        self.noise_amp = 0.0;
        self
    }

    /// This action in another scene: `background` and `noise_amp` (an untrimmed video keeps
    /// one scene), an object colour redrawn to stand out from it, `fps`, and every frame held
    /// `slow` times (the action lasts `slow` times longer).
    pub fn in_scene(
        mut self,
        background: &Background,
        noise_amp: f32,
        fps: u32,
        slow: usize,
        rng: &mut Rng,
    ) -> Self {
        self.colour = sample_object_colour(rng, background);
        self.background = background.clone();
        self.noise_amp = noise_amp;
        self.fps = fps;
        self.forward = self.forward.iter().flat_map(|s| std::iter::repeat_n(*s, slow.max(1))).collect();
        self
    }

    /// `n` frames of this clip's scene without its object: the stretches between actions.
    pub fn empty_scene(&self, n: usize) -> Self {
        let mut c = self.clone();
        let hidden = ObjectState { visible: false, ..self.forward[0] };
        c.forward = vec![hidden; n];
        c.reversed = false;
        c
    }
}

/// A background and noise level for a whole untrimmed video (noise always on: the scene moves
/// a little between actions too).
pub fn sample_scene(rng: &mut Rng, width: u32, height: u32) -> (Background, f32) {
    let background = sample_background(rng, width, height);
    (background, uniform(rng, 3.0, 8.0))
}

fn hsv(h: f32, s: f32, v: f32) -> [f32; 3] {
    crate::transform::hsv_to_rgb(h.rem_euclid(1.0), s, v)
}

fn distance(a: [f32; 3], b: [f32; 3]) -> f32 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
}

fn uniform(rng: &mut Rng, lo: f32, hi: f32) -> f32 {
    rng.uniform_range(lo as f64, hi as f64) as f32
}

fn unit_vector(rng: &mut Rng) -> [f32; 2] {
    let a = uniform(rng, 0.0, 2.0 * PI);
    [a.cos(), a.sin()]
}

fn sample_background(rng: &mut Rng, width: u32, height: u32) -> Background {
    let scale = width.min(height) as f32;
    let c0 = hsv(uniform(rng, 0.0, 1.0), uniform(rng, 0.0, 0.6), uniform(rng, 0.15, 0.9));
    // The second colour is a gentle variation of the first, so the texture stays behind the object.
    let contrast = uniform(rng, 0.12, 0.3) * if rng.chance(0.5) { 1.0 } else { -1.0 };
    let tint = [0, 1, 2].map(|_| uniform(rng, -0.08, 0.08));
    let c1 = [0, 1, 2].map(|k| (c0[k] + contrast + tint[k]).clamp(0.0, 1.0));
    match rng.below(5) {
        0 => Background::Solid(c0),
        1 => Background::Gradient { c0, c1, dir: unit_vector(rng) },
        2 => {
            let cell_px = scale * uniform(rng, 0.15, 0.4);
            let grid_w = (width as f32 / cell_px).ceil() as usize + 2;
            let grid_h = (height as f32 / cell_px).ceil() as usize + 2;
            let levels = (0..grid_w * grid_h).map(|_| uniform(rng, 0.0, 1.0)).collect();
            Background::Blobs { c0, c1, cell_px, grid_w, levels }
        }
        3 => Background::Stripes {
            c0,
            c1,
            dir: unit_vector(rng),
            period_px: scale * uniform(rng, 0.08, 0.3),
            phase: uniform(rng, 0.0, 2.0 * PI),
        },
        _ => Background::Checker { c0, c1, dir: unit_vector(rng), cell_px: scale * uniform(rng, 0.06, 0.2) },
    }
}

/// A vivid colour far from both background colours (white or black if none is found quickly).
fn sample_object_colour(rng: &mut Rng, background: &Background) -> [f32; 3] {
    let (c0, c1) = background.colours();
    let far = |c: [f32; 3]| distance(c, c0).min(distance(c, c1));
    for _ in 0..32 {
        let c = hsv(uniform(rng, 0.0, 1.0), uniform(rng, 0.4, 1.0), uniform(rng, 0.3, 1.0));
        if far(c) >= 0.5 {
            return c;
        }
    }
    let (white, black) = ([1.0; 3], [0.0; 3]);
    if far(white) >= far(black) {
        white
    } else {
        black
    }
}

/// How progress along the motion goes with time, u in [0, 1].
#[derive(Clone, Copy)]
enum Easing {
    Linear,
    Smooth,
    In,
    Out,
}

impl Easing {
    fn apply(self, u: f32) -> f32 {
        match self {
            Easing::Linear => u,
            Easing::Smooth => smoothstep(u),
            Easing::In => u * u,
            Easing::Out => 1.0 - (1.0 - u) * (1.0 - u),
        }
    }
}

/// A centre in [lo, hi], or the middle of the range when it is empty (a frame too small).
fn place(rng: &mut Rng, lo: f32, hi: f32) -> f32 {
    if hi > lo {
        uniform(rng, lo, hi)
    } else {
        0.5 * (lo + hi)
    }
}

/// Start in [lo, hi - |d|] (shifted when d < 0) so that both start and start + d lie in [lo, hi].
fn place_with_drift(rng: &mut Rng, lo: f32, hi: f32, d: f32) -> f32 {
    place(rng, lo + (-d).max(0.0), hi - d.max(0.0))
}

/// Draws every parameter of one clip of `class` at `width` x `height`.
///
/// Sizes and distances are fractions of the short side, so one seed gives the same content at any
/// size. Ranges: 24–64 frames, 12–30 fps, objects of radius 8–16% of the short side travelling
/// 45–100% of the free width/height (`left`...`down`), 3–6% growing to 16–26% (`grow`), an object
/// present for the last 25–75% of the clip (`appear`).
pub fn sample_clip(class: Class, rng: &mut Rng, width: u32, height: u32) -> ClipSpec {
    let (w, h) = (width as f32, height as f32);
    let scale = w.min(h);
    let n = rng.int_inclusive(24, 64) as usize;
    let fps = rng.int_inclusive(12, 30) as u32;
    let background = sample_background(rng, width, height);
    let colour = sample_object_colour(rng, &background);
    let shape = SHAPES[rng.below(SHAPES.len())];
    let angle0 = uniform(rng, 0.0, 2.0 * PI);
    // Spin in either direction, so it says nothing about the direction of time.
    let spin = uniform(rng, -0.06, 0.06);
    let easing = [Easing::Linear, Easing::Smooth, Easing::In, Easing::Out][rng.below(4)];
    let noise_amp = if rng.chance(0.35) { uniform(rng, 3.0, 10.0) } else { 0.0 };
    let noise_seed = rng.next_u64();

    let progress = |t: usize| easing.apply(t as f32 / (n - 1) as f32);
    let state = |t: usize, cx: f32, cy: f32, radius_px: f32, visible: bool| ObjectState {
        cx,
        cy,
        radius_px,
        angle: angle0 + spin * t as f32,
        visible,
    };
    let bound = |r: f32| BOUND_FACTOR * r + 1.0;

    let forward: Vec<ObjectState> = match class {
        Class::Left | Class::Right | Class::Up | Class::Down => {
            // Forward is `right` (along x) or `down` (along y); `along`/`across` are that axis and
            // the other one.
            let horizontal = matches!(class, Class::Left | Class::Right);
            let (along, across) = if horizontal { (w, h) } else { (h, w) };
            let r = scale * uniform(rng, 0.08, 0.16);
            let b = bound(r);
            let free = (along - 2.0 * b).max(0.0);
            let travel = free * uniform(rng, 0.45, 1.0);
            let start = b + place(rng, 0.0, free - travel);
            let drift = scale * uniform(rng, -0.1, 0.1);
            let across0 = place_with_drift(rng, b, across - b, drift);
            (0..n)
                .map(|t| {
                    let p = progress(t);
                    let (a, c) = (start + travel * p, across0 + drift * p);
                    let (cx, cy) = if horizontal { (a, c) } else { (c, a) };
                    state(t, cx, cy, r, true)
                })
                .collect()
        }
        Class::Grow | Class::Shrink => {
            let r0 = scale * uniform(rng, 0.03, 0.06);
            let r1 = scale * uniform(rng, 0.16, 0.26);
            let b = bound(r1);
            let (dx, dy) = (scale * uniform(rng, -0.05, 0.05), scale * uniform(rng, -0.05, 0.05));
            let x0 = place_with_drift(rng, b, w - b, dx);
            let y0 = place_with_drift(rng, b, h - b, dy);
            (0..n)
                .map(|t| {
                    let p = progress(t);
                    // Geometric growth: each frame scales the object by the same factor.
                    let r = r0 * (r1 / r0).powf(p);
                    state(t, x0 + dx * p, y0 + dy * p, r, true)
                })
                .collect()
        }
        Class::Appear | Class::Disappear => {
            let r = scale * uniform(rng, 0.09, 0.18);
            let b = bound(r);
            let (dx, dy) = (scale * uniform(rng, -0.08, 0.08), scale * uniform(rng, -0.08, 0.08));
            let x0 = place_with_drift(rng, b, w - b, dx);
            let y0 = place_with_drift(rng, b, h - b, dy);
            let first = rng.int_inclusive((n as f32 * 0.25).round() as i64, (n as f32 * 0.75).round() as i64)
                as usize;
            (0..n)
                .map(|t| {
                    let p = t as f32 / (n - 1) as f32;
                    state(t, x0 + dx * p, y0 + dy * p, r, t >= first)
                })
                .collect()
        }
    };
    let reversed = matches!(class, Class::Left | Class::Up | Class::Shrink | Class::Disappear);
    ClipSpec {
        class,
        width,
        height,
        fps,
        shape,
        colour,
        background,
        noise_amp,
        noise_seed,
        forward,
        reversed,
    }
}

/// Signed distance (pixels, negative inside) from the shape's centre-relative point (x, y).
fn signed_distance(shape: Shape, x: f32, y: f32, r: f32) -> f32 {
    let boxed = |x: f32, y: f32, hx: f32, hy: f32| {
        let (qx, qy) = (x.abs() - hx, y.abs() - hy);
        (qx.max(0.0).hypot(qy.max(0.0))) + qx.max(qy).min(0.0)
    };
    match shape {
        Shape::Circle => x.hypot(y) - r,
        Shape::Square => boxed(x, y, 0.8 * r, 0.8 * r),
        Shape::Diamond => (x.abs() + y.abs() - 1.1 * r) * std::f32::consts::FRAC_1_SQRT_2,
        Shape::Ring => (x.hypot(y) - 0.72 * r).abs() - 0.28 * r,
        Shape::Cross => boxed(x, y, r, 0.34 * r).min(boxed(x, y, 0.34 * r, r)),
        Shape::Triangle => {
            // Inigo Quilez's exact equilateral-triangle distance; half side 0.95 r, so the
            // corners sit at 1.1 r.
            let s = 0.95 * r;
            let k = 3f32.sqrt();
            let (mut px, mut py) = (x.abs() - s, y + s / k);
            if px + k * py > 0.0 {
                (px, py) = ((px - k * py) / 2.0, (-k * px - py) / 2.0);
            }
            px -= px.clamp(-2.0 * s, 0.0);
            -px.hypot(py) * py.signum()
        }
    }
}

/// Renders a clip's frames; the background is drawn once.
pub struct Renderer<'a> {
    spec: &'a ClipSpec,
    background: Vec<u8>,
}

impl<'a> Renderer<'a> {
    pub fn new(spec: &'a ClipSpec) -> Self {
        let (w, h) = (spec.width as usize, spec.height as usize);
        let mut background = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            for x in 0..w {
                let c = spec.background.at(x as f32 + 0.5, y as f32 + 0.5, w as f32, h as f32);
                background.extend(c.map(to_u8));
            }
        }
        Self { spec, background }
    }

    /// Bytes in one RGB frame.
    pub fn frame_len(&self) -> usize {
        self.background.len()
    }

    /// Draws output frame `t` (in playing order) as packed RGB24 into `out`.
    pub fn render(&self, t: usize, out: &mut [u8]) {
        let spec = self.spec;
        out.copy_from_slice(&self.background);
        let object = spec.state(t);
        if object.visible {
            self.draw_object(&object, out);
        }
        if spec.noise_amp > 0.0 {
            // Seeded by the frame's place in the forward motion, so a reversed clip carries the
            // same noisy frames as the forward one.
            let mut rng = Rng::derive(spec.noise_seed, spec.forward_index(t) as u64);
            add_noise(out, spec.noise_amp, &mut rng);
        }
    }

    fn draw_object(&self, o: &ObjectState, out: &mut [u8]) {
        let (w, h) = (self.spec.width as i64, self.spec.height as i64);
        let b = o.bound_px();
        let x0 = ((o.cx - b).floor() as i64).clamp(0, w);
        let x1 = ((o.cx + b).ceil() as i64).clamp(0, w);
        let y0 = ((o.cy - b).floor() as i64).clamp(0, h);
        let y1 = ((o.cy + b).ceil() as i64).clamp(0, h);
        let (sin, cos) = o.angle.sin_cos();
        let colour = self.spec.colour.map(|c| c * 255.0);
        for y in y0..y1 {
            for x in x0..x1 {
                let (dx, dy) = (x as f32 + 0.5 - o.cx, y as f32 + 0.5 - o.cy);
                // Into the object's own frame: rotate by -angle.
                let (lx, ly) = (cos * dx + sin * dy, -sin * dx + cos * dy);
                // One pixel of antialiasing: coverage falls from 1 to 0 across the edge.
                let alpha = (0.5 - signed_distance(self.spec.shape, lx, ly, o.radius_px)).clamp(0.0, 1.0);
                if alpha > 0.0 {
                    let i = ((y * w + x) * 3) as usize;
                    for k in 0..3 {
                        let bg = out[i + k] as f32;
                        out[i + k] = (bg + (colour[k] - bg) * alpha).round() as u8;
                    }
                }
            }
        }
    }
}

fn to_u8(c: f32) -> u8 {
    (c * 255.0).round().clamp(0.0, 255.0) as u8
}

/// Adds the same triangular-distributed offset in [-amp, amp] to the three channels of each pixel.
fn add_noise(frame: &mut [u8], amp: f32, rng: &mut Rng) {
    let scale = amp / 255.0;
    let mut bits = 0u64;
    for (i, px) in frame.chunks_exact_mut(3).enumerate() {
        if i % 4 == 0 {
            bits = rng.next_u64();
        }
        let pair = (bits >> ((i % 4) * 16)) as u16;
        let n = ((pair & 0xff) as f32 + (pair >> 8) as f32 - 255.0) * scale;
        for v in px.iter_mut() {
            *v = (*v as f32 + n).round().clamp(0.0, 255.0) as u8;
        }
    }
}
