#!/usr/bin/env python3
"""transformers `generate(num_return_sequences=K)` on the random-initialised Qwen2.5-VL-7B in bf16
on the GPU: the same shape as sampling.rhai (prompts × K samples × new tokens, temperature 0.7),
every sequence forced to its full length (`min_new_tokens`), prompts of the token count
medbridge's prompt had (random ids: the tiny tokenizer's text means nothing to this model either).
All prompts go in one call, as transformers users batch them. Writes a JSON; without torch or a
GPU it writes `{"skipped": reason}` and exits 0.
"""
import argparse
import json
import time

from hf_model import random_model, torch_or_none, versions


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--prompt-tokens", type=int, default=64)
    a = ap.parse_args()
    torch = torch_or_none()
    if torch is None:
        json.dump({"skipped": "torch with a CUDA GPU is not importable here"}, open(a.out, "w"))
        print("transformers generate: skipped (no torch with a GPU)")
        return
    model, init_s = random_model(torch)
    vocab = model.config.get_text_config().vocab_size
    g = torch.Generator(device="cuda").manual_seed(0)
    ids = torch.randint(0, vocab, (a.prompts, a.prompt_tokens), device="cuda", generator=g)
    mask = torch.ones_like(ids)
    kwargs = dict(do_sample=True, temperature=0.7, top_p=1.0, top_k=0, num_return_sequences=a.k,
                  max_new_tokens=a.new_tokens, min_new_tokens=a.new_tokens, pad_token_id=0)
    with torch.no_grad():
        model.generate(input_ids=ids[:1], attention_mask=mask[:1], **{**kwargs, "num_return_sequences": 2,
                                                                     "max_new_tokens": 4, "min_new_tokens": 4})
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = time.time()
        out = model.generate(input_ids=ids, attention_mask=mask, **kwargs)
        torch.cuda.synchronize()
        seconds = time.time() - start
    generated = (out.shape[1] - a.prompt_tokens) * out.shape[0]
    result = {
        "prompts": a.prompts, "k": a.k, "new_tokens": a.new_tokens, "prompt_tokens": a.prompt_tokens,
        "generated_tokens": generated, "seconds": seconds, "tokens_per_s": generated / seconds,
        "init_s": init_s, "peak_allocated_bytes": torch.cuda.max_memory_allocated(), "versions": versions(torch),
    }
    json.dump(result, open(a.out, "w"), indent=2)
    print(f"transformers generate: {generated} tokens in {seconds:.1f} s = {generated / seconds:.0f} tokens/s")


if __name__ == "__main__":
    main()
