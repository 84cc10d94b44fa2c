#!/usr/bin/env python3
"""A plain PyTorch + PEFT LoRA GRPO step on the random-initialised Qwen2.5-VL-7B in bf16, the
reference for grpo_step.rhai: the same step's work, written as a TRL user's step does it —
`generate(num_return_sequences=G)` rollouts of `new_tokens` tokens (forced to full length), then
with gradient checkpointing one forward over prompt + completions, token log-probs in f32, a
policy-gradient loss with group-normalised advantages (random rewards: the weights are random),
backward, AdamW. LoRA rank 8, alpha 16 on the seven projections of every decoder layer (not the
vision tower), as medbridge's. TRL's GRPOTrainer is not used: it is not installed on the device
and a trainer adds dataset and logging machinery the timed step does not need; this is its
inner step. Writes a JSON (`skipped` without torch, a GPU or peft).
"""
import argparse
import json
import time

from hf_model import random_model, torch_or_none, versions


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=1024)
    ap.add_argument("--prompt-tokens", type=int, default=64)
    a = ap.parse_args()
    torch = torch_or_none()
    try:
        import peft
    except ImportError:
        peft = None
    if torch is None or peft is None:
        reason = "torch with a CUDA GPU is not importable here" if torch is None else "peft is not installed"
        json.dump({"skipped": reason}, open(a.out, "w"))
        print(f"PyTorch + PEFT GRPO step: skipped ({reason})")
        return
    model, init_s = random_model(torch)
    targets = r"^(?!.*visual).*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$"
    model = peft.get_peft_model(model, peft.LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=targets))
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)
    vocab = model.config.get_text_config().vocab_size
    g = torch.Generator(device="cuda").manual_seed(0)
    prompt = torch.randint(0, vocab, (1, a.prompt_tokens), device="cuda", generator=g)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()

    start = time.time()
    model.eval()
    with torch.no_grad():
        seqs = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), do_sample=True,
                              temperature=1.0, top_k=0, num_return_sequences=a.group,
                              max_new_tokens=a.new_tokens, min_new_tokens=a.new_tokens, pad_token_id=0)
    torch.cuda.synchronize()
    rollout_s = time.time() - start
    model.train()
    logits = model(input_ids=seqs, attention_mask=torch.ones_like(seqs), use_cache=False).logits
    completion = seqs[:, a.prompt_tokens:]
    logp = torch.log_softmax(logits[:, a.prompt_tokens - 1:-1].float(), dim=-1)
    token_logp = logp.gather(-1, completion.unsqueeze(-1)).squeeze(-1)
    rewards = torch.rand(a.group, device="cuda", generator=g)
    advantages = (rewards - rewards.mean()) / (rewards.std() + 1e-4)
    ratio = torch.exp(token_logp - token_logp.detach())
    loss = -(ratio * advantages[:, None]).mean()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    seconds = time.time() - start
    result = {
        "group": a.group, "new_tokens": a.new_tokens, "prompt_tokens": a.prompt_tokens, "lora_rank": 8,
        "seconds_per_step": seconds, "rollout_s": rollout_s, "train_s": seconds - rollout_s,
        "peak_allocated_bytes": torch.cuda.max_memory_allocated(),
        "peak_reserved_bytes": torch.cuda.max_memory_reserved(), "init_s": init_s, "versions": versions(torch),
    }
    json.dump(result, open(a.out, "w"), indent=2)
    print(f"PyTorch + PEFT GRPO step: {seconds:.1f} s (rollouts {rollout_s:.1f} s), "
          f"peak allocated {result['peak_allocated_bytes'] / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
