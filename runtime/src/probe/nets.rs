//! The vision-only classifiers trained from scratch for comparison with probes.
//!
//! - `SmallCnn`: three 3x3 conv + batch-norm + ReLU blocks (16, 32, 64 channels, 2x2 max-pool
//!   after the first two), global average pooling and a linear head. About 25k weights: it
//!   trains on 28 px images on a CPU in seconds.
//! - `ResNet18`: He et al.'s 18-layer residual network as MedMNIST trains it on 28 px images: a
//!   3x3 stride-1 stem and no max-pool (torchvision's 7x7/2 stem and pool would shrink 28 px to
//!   7 before the first block), then four stages of two basic blocks (64, 128, 256, 512
//!   channels, stride 2 from the second stage), global average pooling and a linear head. The
//!   same stem is used at every size, so 224 px inputs cost 64 times more than at 28 px.

use candle_core::{Module, ModuleT, Tensor};
use candle_nn::{batch_norm, conv2d_no_bias, linear, BatchNorm, Conv2d, Conv2dConfig, Linear, VarBuilder};

use crate::error::Result;

/// A classifier over `[B, C, H, W]` images returning `[B, outputs]` logits.
pub(crate) trait Net {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor>;
}

/// A 3x3 convolution without bias (a batch-norm follows every one).
fn conv3x3(cin: usize, cout: usize, stride: usize, vb: VarBuilder) -> Result<Conv2d> {
    let cfg = Conv2dConfig { padding: 1, stride, ..Default::default() };
    Ok(conv2d_no_bias(cin, cout, 3, cfg, vb)?)
}

/// Conv, batch-norm, ReLU.
struct ConvBlock {
    conv: Conv2d,
    bn: BatchNorm,
}

impl ConvBlock {
    fn new(cin: usize, cout: usize, vb: VarBuilder) -> Result<Self> {
        Ok(ConvBlock {
            conv: conv3x3(cin, cout, 1, vb.pp("conv"))?,
            bn: batch_norm(cout, 1e-5, vb.pp("bn"))?,
        })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        Ok(self.bn.forward_t(&self.conv.forward(x)?, train)?.relu()?)
    }
}

pub(crate) struct SmallCnn {
    blocks: [ConvBlock; 3],
    head: Linear,
}

impl SmallCnn {
    pub(crate) fn new(channels: usize, outputs: usize, vb: VarBuilder) -> Result<Self> {
        let blocks = [
            ConvBlock::new(channels, 16, vb.pp("block1"))?,
            ConvBlock::new(16, 32, vb.pp("block2"))?,
            ConvBlock::new(32, 64, vb.pp("block3"))?,
        ];
        Ok(SmallCnn { blocks, head: linear(64, outputs, vb.pp("head"))? })
    }
}

impl Net for SmallCnn {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let x = self.blocks[0].forward_t(x, train)?.max_pool2d(2)?;
        let x = self.blocks[1].forward_t(&x, train)?.max_pool2d(2)?;
        let x = self.blocks[2].forward_t(&x, train)?;
        Ok(self.head.forward(&x.mean((2, 3))?)?)
    }
}

/// Two 3x3 convolutions with a shortcut (a strided 1x1 conv where the shape changes).
struct BasicBlock {
    conv1: Conv2d,
    bn1: BatchNorm,
    conv2: Conv2d,
    bn2: BatchNorm,
    shortcut: Option<(Conv2d, BatchNorm)>,
}

impl BasicBlock {
    fn new(cin: usize, cout: usize, stride: usize, vb: VarBuilder) -> Result<Self> {
        let shortcut = if stride != 1 || cin != cout {
            let cfg = Conv2dConfig { stride, ..Default::default() };
            Some((
                conv2d_no_bias(cin, cout, 1, cfg, vb.pp("downsample.0"))?,
                batch_norm(cout, 1e-5, vb.pp("downsample.1"))?,
            ))
        } else {
            None
        };
        Ok(BasicBlock {
            conv1: conv3x3(cin, cout, stride, vb.pp("conv1"))?,
            bn1: batch_norm(cout, 1e-5, vb.pp("bn1"))?,
            conv2: conv3x3(cout, cout, 1, vb.pp("conv2"))?,
            bn2: batch_norm(cout, 1e-5, vb.pp("bn2"))?,
            shortcut,
        })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = self.bn1.forward_t(&self.conv1.forward(x)?, train)?.relu()?;
        let y = self.bn2.forward_t(&self.conv2.forward(&y)?, train)?;
        let skip = match &self.shortcut {
            Some((conv, bn)) => bn.forward_t(&conv.forward(x)?, train)?,
            None => x.clone(),
        };
        Ok((y + skip)?.relu()?)
    }
}

pub(crate) struct ResNet18 {
    stem: ConvBlock,
    blocks: Vec<BasicBlock>,
    fc: Linear,
}

impl ResNet18 {
    pub(crate) fn new(channels: usize, outputs: usize, vb: VarBuilder) -> Result<Self> {
        let stem = ConvBlock::new(channels, 64, vb.pp("stem"))?;
        let mut blocks = Vec::new();
        let mut cin = 64;
        for (stage, cout) in [64, 128, 256, 512].into_iter().enumerate() {
            for b in 0..2 {
                let stride = if stage > 0 && b == 0 { 2 } else { 1 };
                blocks.push(BasicBlock::new(cin, cout, stride, vb.pp(format!("layer{}.{b}", stage + 1)))?);
                cin = cout;
            }
        }
        Ok(ResNet18 { stem, blocks, fc: linear(512, outputs, vb.pp("fc"))? })
    }
}

impl Net for ResNet18 {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut x = self.stem.forward_t(x, train)?;
        for block in &self.blocks {
            x = block.forward_t(&x, train)?;
        }
        Ok(self.fc.forward(&x.mean((2, 3))?)?)
    }
}
