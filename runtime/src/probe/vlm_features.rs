//! A VLM's frozen vision tower as a [`FeatureSource`]: each image is preprocessed exactly as the
//! model sees it, run through the tower, and mean-pooled — after the patch merger (the features
//! the language model receives) or before it (the tower's own hidden states).

use candle_core::{DType, Tensor};
use sha2::{Digest, Sha256};

use super::FeatureSource;
use crate::error::Result;
use crate::image::Image;
use crate::models::Vlm;

/// Which vision-tower output is pooled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pool {
    /// Mean of the patch merger's output (what the LM gets).
    Merger,
    /// Mean of the last block's hidden states, before merging.
    PreMerger,
}

impl Pool {
    pub fn parse(name: &str) -> Result<Pool> {
        match name {
            "merger" | "mean" | "merger-mean" => Ok(Pool::Merger),
            "pre_merger" | "pre-merger" => Ok(Pool::PreMerger),
            other => crate::bail!("unknown pool `{other}`: use \"merger\" or \"pre_merger\""),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Pool::Merger => "merger-mean",
            Pool::PreMerger => "pre-merger-mean",
        }
    }
}

pub struct VlmFeatures<'a> {
    vlm: &'a Vlm,
    pool: Pool,
    fingerprint: String,
}

impl<'a> VlmFeatures<'a> {
    pub fn new(vlm: &'a Vlm, pool: Pool) -> Result<Self> {
        Ok(VlmFeatures { vlm, pool, fingerprint: vision_fingerprint(vlm)? })
    }
}

/// SHA-256 over the vision tower's tensor names, shapes and values: the cache key's notion of
/// "these weights". Hashing only the tower keeps it cheap next to a 7B language model.
fn vision_fingerprint(vlm: &Vlm) -> Result<String> {
    let mut hasher = Sha256::new();
    for (name, t) in vlm.model.named_tensors()? {
        if !name.starts_with("visual.") {
            continue;
        }
        hasher.update(name.as_bytes());
        hasher.update(format!("{:?}", t.dims()).as_bytes());
        for v in t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()? {
            hasher.update(v.to_le_bytes());
        }
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

impl FeatureSource for VlmFeatures<'_> {
    fn source_id(&self) -> String {
        format!("{}/{}", self.fingerprint, self.pool.name())
    }

    fn extract(&self, images: &[Image]) -> Result<Tensor> {
        let device = self.vlm.device();
        let mut pixels = Vec::with_capacity(images.len());
        let mut grids = Vec::with_capacity(images.len());
        for image in images {
            let p = self.vlm.processor.preprocess_image(image)?;
            pixels.push(p.pixel_values);
            grids.push(p.grid_thw);
        }
        let pixels = Tensor::cat(&pixels, 0)?.to_device(device)?.to_dtype(self.vlm.model.dtype())?;
        let pooled = match self.pool {
            Pool::Merger => self.vlm.model.vision_features(&pixels, &grids)?.1,
            Pool::PreMerger => {
                let hidden = self.vlm.model.vision().forward_pre_merger(&pixels, &grids)?;
                let mut start = 0;
                let mut means = Vec::with_capacity(grids.len());
                for [t, h, w] in &grids {
                    let n = t * h * w;
                    means.push(hidden.narrow(0, start, n)?.mean_keepdim(0)?);
                    start += n;
                }
                Tensor::cat(&means, 0)?
            }
        };
        // Features are data to a probe. A tower with trainable weights (fresh from GRPO with
        // `train_vision`) records every op for autograd; without the detach, each step of the
        // probe's fit would walk back through that record of the whole dataset's forward.
        Ok(pooled.to_dtype(DType::F32)?.detach())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn features_are_one_row_per_image_and_the_id_tracks_weights_and_pooling() {
        let a = Vlm::new_preset("qwen2_5_vl_tiny", 0, &Device::Cpu).unwrap();
        let b = Vlm::new_preset("qwen2_5_vl_tiny", 1, &Device::Cpu).unwrap();
        let images: Vec<Image> =
            (0..3u8).map(|i| Image::new(28, 28, 1, vec![40 * i; 28 * 28]).unwrap()).collect();
        let merged = VlmFeatures::new(&a, Pool::Merger).unwrap();
        let pre = VlmFeatures::new(&a, Pool::PreMerger).unwrap();
        assert_eq!(merged.extract(&images).unwrap().dims(), &[3, a.model.config().vision.out_hidden_size]);
        assert_eq!(pre.extract(&images).unwrap().dims(), &[3, a.model.config().vision.hidden_size]);
        assert_ne!(merged.source_id(), pre.source_id());
        assert_ne!(merged.source_id(), VlmFeatures::new(&b, Pool::Merger).unwrap().source_id());
        let training = a.with_model(a.model.full_finetune_with_vision().unwrap());
        let features = VlmFeatures::new(&training, Pool::Merger).unwrap().extract(&images).unwrap();
        assert!(!features.track_op(), "a training tower's features reach the probe detached");
        let one = merged.extract(&images[1..2]).unwrap();
        let diff = (one - merged.extract(&images).unwrap().narrow(0, 1, 1).unwrap()).unwrap().abs().unwrap();
        assert!(diff.max_all().unwrap().to_scalar::<f32>().unwrap() < 1e-5, "batching changes features");
    }
}
