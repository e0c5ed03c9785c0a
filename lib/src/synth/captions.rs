//! A caption for each synthetic clip from what it renders ("a red circle moves left"), for the
//! captioning learning test and recipes: the object's colour (by hue, or white/black where it is
//! nearly grey), its shape, and its class's motion. The clip is the one `generate` writes: the
//! same draws from `clip_rng`, so the caption needs no video.

use super::render::{sample_clip, ClipSpec, Shape};
use super::{clip_rng, Class, SynthOptions};

/// The colour's name: six hues of 60° each (red centred on 0°), or white/black below saturation
/// 0.2.
pub fn colour_name(c: [f32; 3]) -> &'static str {
    let (max, min) = (c[0].max(c[1]).max(c[2]), c[0].min(c[1]).min(c[2]));
    if max <= 0.0 || (max - min) / max < 0.2 {
        return if max > 0.5 { "white" } else { "black" };
    }
    let d = max - min;
    let h = if max == c[0] {
        ((c[1] - c[2]) / d).rem_euclid(6.0)
    } else if max == c[1] {
        (c[2] - c[0]) / d + 2.0
    } else {
        (c[0] - c[1]) / d + 4.0
    } * 60.0;
    ["red", "yellow", "green", "cyan", "blue", "magenta"][(((h + 30.0) / 60.0) as usize) % 6]
}

pub fn shape_name(s: Shape) -> &'static str {
    match s {
        Shape::Circle => "circle",
        Shape::Square => "square",
        Shape::Triangle => "triangle",
        Shape::Diamond => "diamond",
        Shape::Ring => "ring",
        Shape::Cross => "cross",
    }
}

/// What the class's motion looks like, in words.
pub fn motion_phrase(c: Class) -> &'static str {
    match c {
        Class::Left => "moves left",
        Class::Right => "moves right",
        Class::Up => "moves up",
        Class::Down => "moves down",
        Class::Grow => "grows",
        Class::Shrink => "shrinks",
        Class::Appear => "appears",
        Class::Disappear => "disappears",
    }
}

/// "a {colour} {shape} {motion}".
pub fn clip_caption(spec: &ClipSpec) -> String {
    format!("a {} {} {}", colour_name(spec.colour), shape_name(spec.shape), motion_phrase(spec.class))
}

/// Every clip `generate(opts)` writes, as (list path, caption), in list order.
pub fn captions(opts: &SynthOptions) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for &class in &opts.classes {
        for k in 0..opts.per_class {
            let spec = sample_clip(class, &mut clip_rng(opts.seed, class, k), opts.width, opts.height);
            let spec = if opts.plain { spec.plain() } else { spec };
            out.push((format!("{0}/{0}_{1:03}.mp4", class.name(), k), clip_caption(&spec)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_shapes_and_motions_in_words() {
        assert_eq!(colour_name([1.0, 0.1, 0.1]), "red");
        assert_eq!(colour_name([0.1, 0.1, 0.9]), "blue");
        assert_eq!(colour_name([0.9, 0.9, 0.1]), "yellow");
        assert_eq!(colour_name([0.9, 0.9, 0.9]), "white");
        assert_eq!(colour_name([0.1, 0.1, 0.1]), "black");
        let opts =
            SynthOptions { classes: vec![Class::Left], per_class: 2, plain: true, ..Default::default() };
        let c = captions(&opts);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].0, "left/left_000.mp4");
        assert!(c[0].1.starts_with("a white ") && c[0].1.ends_with(" moves left"), "{}", c[0].1);
    }
}
