//! ResNet-18/34/50/101 with torchvision's layout and parameter names (`conv1`, `bn1`,
//! `layer{1-4}.{i}.conv{1-3}`, `bn{1-3}`, `downsample.0/1`), stride on the 3×3 conv of the
//! bottleneck (torchvision's "v1.5"), and an optional temporal shift in each residual branch
//! (TSM, mmaction2 `ResNetTSM` with `shift_place='blockres'`).

use crate::nn::int8::{feeds_next_conv, frames_as_time, read_by_convs, residual_only};
use crate::nn::{
    batch_norm2d, conv2d, conv2d_bn_relu_shifted, conv_fusable, max_pool2d, temporal_shift, ConvBn,
};
use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockKind {
    Basic,
    Bottleneck,
}

/// Blocks per stage and block kind for a depth.
pub fn resnet_layout(depth: usize) -> Option<(BlockKind, [usize; 4])> {
    Some(match depth {
        18 => (BlockKind::Basic, [2, 2, 2, 2]),
        34 => (BlockKind::Basic, [3, 4, 6, 3]),
        50 => (BlockKind::Bottleneck, [3, 4, 6, 3]),
        101 => (BlockKind::Bottleneck, [3, 4, 23, 3]),
        152 => (BlockKind::Bottleneck, [3, 8, 36, 3]),
        _ => return None,
    })
}

/// Where TSM shifts: `segments` frames per clip, `1 / shift_div` of the channels each way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShiftSpec {
    pub segments: usize,
    pub shift_div: usize,
}

#[derive(Clone, Debug)]
struct Block {
    convs: Vec<ConvBn>,
    downsample: Option<ConvBn>,
    shift: Option<ShiftSpec>,
}

impl Block {
    fn new(
        kind: BlockKind,
        cin: usize,
        planes: usize,
        stride: usize,
        shift: Option<ShiftSpec>,
        vb: VarBuilder,
    ) -> Result<(Self, usize)> {
        let expansion = if kind == BlockKind::Basic { 1 } else { 4 };
        let cout = planes * expansion;
        let cb = |i: usize, ci: usize, co: usize, k: usize, s: usize, p: usize| -> Result<ConvBn> {
            Ok(ConvBn {
                conv: conv2d(ci, co, k, s, p, vb.pp(format!("conv{i}")))?,
                bn: batch_norm2d(co, vb.pp(format!("bn{i}")))?,
            })
        };
        let convs = match kind {
            BlockKind::Basic => vec![cb(1, cin, planes, 3, stride, 1)?, cb(2, planes, planes, 3, 1, 1)?],
            BlockKind::Bottleneck => {
                vec![
                    cb(1, cin, planes, 1, 1, 0)?,
                    cb(2, planes, planes, 3, stride, 1)?,
                    cb(3, planes, cout, 1, 1, 0)?,
                ]
            }
        };
        let downsample = if stride != 1 || cin != cout {
            let d = vb.pp("downsample");
            Some(ConvBn {
                conv: conv2d(cin, cout, 1, stride, 0, d.pp("0"))?,
                bn: batch_norm2d(cout, d.pp("1"))?,
            })
        } else {
            None
        };
        Ok((Self { convs, downsample, shift }, cout))
    }

    /// The block's output; `to_next_block`: only the next block reads it (its convolutions
    /// and its residual: handed over in u8 alone under int8).
    fn forward_t(&self, x: &Tensor, train: bool, to_next_block: bool) -> Result<Tensor> {
        // On the CPU the first conv reads its input shifted (no shifted copy as a node of its own).
        let shift_in_conv = conv_fusable(x);
        let mut y = match self.shift {
            Some(s) if !shift_in_conv => temporal_shift(x, s.segments, s.shift_div)?,
            _ => x.clone(),
        };
        let identity = match &self.downsample {
            // Only the last conv reads the shortcut's output, as its residual.
            Some(d) => residual_only(|| d.forward_act(x, train, None, false))?,
            None => x.clone(),
        };
        let last = self.convs.len() - 1;
        // Only the next conv reads each inner conv's output (handed over in u8 under int8).
        for (i, cb) in self.convs[..last].iter().enumerate() {
            y = feeds_next_conv(|| match self.shift {
                Some(s) if shift_in_conv && i == 0 => {
                    conv2d_bn_relu_shifted(&cb.conv, &cb.bn, &y, train, s.segments, s.shift_div)
                }
                _ => cb.forward_act(&y, train, None, true),
            })?;
        }
        // The last conv adds the shortcut and applies the block's ReLU in one pass.
        let out = || self.convs[last].forward_act(&y, train, Some(&identity), true);
        match to_next_block {
            true => read_by_convs(out),
            false => out(),
        }
    }
}

/// The backbone up to the last stage (no pooling, no fc).
#[derive(Clone, Debug)]
pub struct ResNet {
    stem: ConvBn,
    stages: Vec<Vec<Block>>,
    pub out_channels: usize,
}

impl ResNet {
    /// `base_width` 64 is torchvision's; smaller values give narrow variants for tests.
    pub fn new(depth: usize, base_width: usize, shift: Option<ShiftSpec>, vb: VarBuilder) -> Result<Self> {
        Self::with_input_channels(depth, base_width, 3, None, shift, vb)
    }

    /// A stem that takes `in_channels` (StNet's super-images: 3 × frames per segment), and
    /// `blocks` per stage in place of the depth's (narrow, shallow models for tests).
    pub fn with_input_channels(
        depth: usize,
        base_width: usize,
        in_channels: usize,
        blocks: Option<[usize; 4]>,
        shift: Option<ShiftSpec>,
        vb: VarBuilder,
    ) -> Result<Self> {
        let Some((kind, counts)) = resnet_layout(depth) else {
            candle_core::bail!("no ResNet of depth {depth} (18, 34, 50, 101, 152)")
        };
        let counts = blocks.unwrap_or(counts);
        let stem = ConvBn {
            conv: conv2d(in_channels, base_width, 7, 2, 3, vb.pp("conv1"))?,
            bn: batch_norm2d(base_width, vb.pp("bn1"))?,
        };
        // mmaction2 ResNetTSM: with 23 or more blocks in layer3, every stage shifts only its
        // even-numbered blocks (n_round = 2).
        let every = if counts[2] >= 23 { 2 } else { 1 };
        let mut cin = base_width;
        let mut stages = Vec::new();
        for (s, &n) in counts.iter().enumerate() {
            let planes = base_width << s;
            let mut blocks = Vec::new();
            for b in 0..n {
                let stride = if b == 0 && s > 0 { 2 } else { 1 };
                let shift_here = if b % every == 0 { shift } else { None };
                let (block, cout) =
                    Block::new(kind, cin, planes, stride, shift_here, vb.pp(format!("layer{}.{b}", s + 1)))?;
                cin = cout;
                blocks.push(block);
            }
            stages.push(blocks);
        }
        Ok(Self { stem, stages, out_channels: cin })
    }

    /// [N, 3, H, W] → [N, C, H/32, W/32]
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_stages_t(x, self.stages.len(), train)
    }

    /// The stem: conv, BN, ReLU and the max pool.
    pub fn stem_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        max_pool2d(&self.stem.forward_act(x, train, None, true)?, 3, 2, 1)
    }

    /// Stage `s` (0-based: `layer{s + 1}`) alone.
    pub fn stage_t(&self, s: usize, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut y = x.clone();
        let blocks = &self.stages[s];
        for (i, block) in blocks.iter().enumerate() {
            y = block.forward_t(&y, train, i + 1 < blocks.len())?;
        }
        Ok(y)
    }

    /// Output channels of stage `s` (0-based).
    pub fn stage_channels(&self, s: usize) -> usize {
        let b = &self.stages[s][self.stages[s].len() - 1];
        b.convs[b.convs.len() - 1].conv.weight.dim(0).unwrap_or(0)
    }

    /// The output of the stem and the first `stages` stages (`layer1` .. `layer{stages}`).
    pub fn forward_stages_t(&self, x: &Tensor, stages: usize, train: bool) -> Result<Tensor> {
        // Under int8 the frames run as time, one product per convolution over all of them (the
        // u8 between convolutions frames inside, TSM's shift moving frames inside each group).
        frames_as_time(|| self.forward_stages_in_turn(x, stages, train))
    }

    /// `forward_stages_t`.
    fn forward_stages_in_turn(&self, x: &Tensor, stages: usize, train: bool) -> Result<Tensor> {
        // Only the first block's convolutions read the stem, through its pool: u8 alone under
        // int8, pooled as bytes; bf16 under bf16, pooled into bf16 (`nn::bf16_act`).
        let stem = || crate::nn::through_max_pool(|| self.stem.forward_act(x, train, None, true));
        let mut y = read_by_convs(stem)?;
        y = max_pool2d(&y, 3, 2, 1)?; // torchvision's stem pool
                                      // Every block's output but the last one's goes to the next block alone.
        let blocks = self.stages[..stages.min(self.stages.len())].iter().flatten();
        let count = blocks.clone().count();
        for (i, block) in blocks.enumerate() {
            y = block.forward_t(&y, train, i + 1 < count)?;
        }
        Ok(y)
    }
}
