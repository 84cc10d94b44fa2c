"""The transformers side's model: Qwen2.5-VL-7B-Instruct's architecture from the config.json
medbridge embeds (runtime/assets/qwen2_5_vl_7b/config.json), random-initialised directly on the
GPU in bf16 (built under `torch.device("cuda")` with bf16 as the default dtype, so no f32 copy
and no host-to-device transfer) — the same shapes `new_model("qwen2_5_vl_7b")` gives, no
download. Shared by hf_generate.py and peft_grpo_step.py.
"""
import os
import time

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "runtime", "assets", "qwen2_5_vl_7b")


def torch_or_none():
    """torch when importable with a GPU, else None (the caller records the skip)."""
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


def random_model(torch, seed=0):
    """(model, seconds to build it)."""
    import transformers
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(CONFIG_DIR)
    cls = getattr(transformers, "Qwen2_5_VLForConditionalGeneration")
    torch.manual_seed(seed)
    start = time.time()
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("cuda"):
            model = cls(config)
    finally:
        torch.set_default_dtype(previous)
    model = model.to(torch.bfloat16).eval()
    torch.cuda.synchronize()
    return model, time.time() - start


def versions(torch):
    import transformers

    out = {"torch": torch.__version__, "transformers": transformers.__version__, "gpu": torch.cuda.get_device_name(0)}
    try:
        import peft

        out["peft"] = peft.__version__
    except ImportError:
        pass
    return out
