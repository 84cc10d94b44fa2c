"""Write the processor's reference fixture from Pillow and transformers' slow image processor.

Run by hand from the repository root (outputs are committed next to this script):

    pip install pillow numpy transformers tokenizers   # no torch needed
    python runtime/src/models/qwen2_5_vl/processor/testdata/make_processor_fixture.py

Writes:
- input_37x23.png: a non-square RGB test image (smooth gradients plus fixed-seed noise);
- resize_WxH.png: that image resized with Pillow's Image.resize(BICUBIC), up, down and mixed;
- rgba_8x6.png / rgba_8x6_on_white.png: an RGBA image and transformers' convert_to_rgb of it
  (alpha composited onto white);
- pixel_values_small.f32 + expected.json: Qwen2VLImageProcessorPil's pixel_values (little-endian
  f32) for a small config (patch 2, merge 2) that forces a downscale, and the tiny preset's token
  ids for an image prompt and a text-only prompt, from transformers' tokenizer and chat template
  with the image pads expanded as Qwen2_5_VLProcessor expands them.
"""

import json
from pathlib import Path

import numpy as np
from PIL import Image
from transformers import AutoTokenizer
from transformers.image_transforms import convert_to_rgb
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

HERE = Path(__file__).resolve().parent
ASSETS = HERE.parents[3] / "assets" / "qwen2_5_vl_tiny"

SMALL_CONFIG = {"patch_size": 2, "merge_size": 2, "temporal_patch_size": 2, "min_pixels": 64, "max_pixels": 600}
RESIZES = [(112, 84), (13, 9), (20, 40), (37, 50)]  # (width, height)
PROMPT = "Which of the following best describes this chest X-ray image?\nA. effusion\nB. nodule"


def test_image() -> Image.Image:
    rng = np.random.default_rng(7)
    h, w = 23, 37
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / (w - 1), y * 255 / (h - 1), (x + y) * 255 / (w + h - 2)], axis=-1)
    noisy = base + rng.normal(0, 40, size=base.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")


def tiny_ids(tokenizer, image_tokens: int | None, prompt: str) -> list[int]:
    content = ([{"type": "image"}] if image_tokens is not None else []) + [{"type": "text", "text": prompt}]
    text = tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True)
    if image_tokens is not None:
        text = text.replace("<|image_pad|>", "<|image_pad|>" * image_tokens, 1)
    return tokenizer(text)["input_ids"]


def main() -> None:
    image = test_image()
    image.save(HERE / "input_37x23.png")
    for w, h in RESIZES:
        image.resize((w, h), Image.BICUBIC).save(HERE / f"resize_{w}x{h}.png")

    rng = np.random.default_rng(11)
    rgba = Image.fromarray(rng.integers(0, 256, size=(6, 8, 4), dtype=np.uint8), "RGBA")
    rgba.save(HERE / "rgba_8x6.png")
    Image.fromarray(convert_to_rgb(rgba, return_numpy=True)).save(HERE / "rgba_8x6_on_white.png")

    small = Qwen2VLImageProcessorPil(**SMALL_CONFIG)(images=[image], return_tensors="np")
    pixel_values = small["pixel_values"].astype("<f4")
    (HERE / "pixel_values_small.f32").write_bytes(pixel_values.tobytes())

    tiny_config = json.loads((ASSETS / "preprocessor_config.json").read_text())
    tiny = Qwen2VLImageProcessorPil(**{k: v for k, v in tiny_config.items() if not k.endswith("_type") and k != "processor_class"})
    grid = tiny(images=[image], return_tensors="np")["image_grid_thw"][0].tolist()
    image_tokens = int(np.prod(grid)) // tiny_config["merge_size"] ** 2
    tokenizer = AutoTokenizer.from_pretrained(ASSETS)

    expected = {
        "small_config": SMALL_CONFIG,
        "small_pixel_values_shape": list(pixel_values.shape),
        "small_grid_thw": small["image_grid_thw"][0].tolist(),
        "prompt": PROMPT,
        "tiny_grid_thw": grid,
        "tiny_image_ids": tiny_ids(tokenizer, image_tokens, PROMPT),
        "tiny_text_ids": tiny_ids(tokenizer, None, PROMPT),
    }
    (HERE / "expected.json").write_text(json.dumps(expected) + "\n")
    print(json.dumps({k: v for k, v in expected.items() if not k.endswith("_ids")}))


if __name__ == "__main__":
    main()
