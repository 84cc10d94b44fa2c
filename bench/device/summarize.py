#!/usr/bin/env python3
"""Gather the device check's stage results (DIR/*.stage.json and what each stage wrote) into
DIR/check.json and print a summary: parity, sampling tokens/s beside transformers as a ratio,
the GRPO step's time and peak memory beside PyTorch + PEFT, and memory_plan's peak beside the
measured one. A stage that failed, timed out or was skipped is reported as such, never as a
number. Standard library only.
"""
import glob
import json
import os
import sys


# check.sh's stages, in the order it runs them.
STAGES = ["parity", "sampling", "sampling_hf", "grpo", "grpo_peft"]


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def ratio(a, b):
    return a / b if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else None


def main():
    out, mode = sys.argv[1], sys.argv[2]
    found = {os.path.basename(p)[: -len(".stage.json")]: load(p) for p in glob.glob(os.path.join(out, "*.stage.json"))}
    stages = {name: found[name] for name in STAGES if name in found}
    parity = load(os.path.join(out, "parity", "parity.json"))
    sampling = load(os.path.join(out, "sampling", "sampling.json"))
    sampling_hf = load(os.path.join(out, "sampling_hf.json"))
    grpo = load(os.path.join(out, "grpo", "grpo.json"))
    peft = load(os.path.join(out, "grpo_peft.json"))
    measured_peak = (stages.get("grpo") or {}).get("peak_bytes")
    planned_peak = ((grpo or {}).get("memory_plan") or {}).get("peak")
    hf_ok = sampling_hf and "skipped" not in sampling_hf
    peft_ok = peft and "skipped" not in peft
    report = {
        "mode": mode,
        "stages": stages,
        "parity": parity,
        "sampling": {
            "medbridge": sampling,
            "transformers": sampling_hf,
            "ratio_tokens_per_s": ratio((sampling or {}).get("tokens_per_s"), sampling_hf.get("tokens_per_s")) if hf_ok else None,
        },
        "grpo_step": {
            "medbridge": grpo and {k: v for k, v in grpo.items() if k != "memory_plan"},
            "medbridge_peak_bytes": measured_peak,
            "pytorch_peft": peft,
            "speedup": ratio((peft or {}).get("seconds_per_step"), (grpo or {}).get("seconds_per_step")) if peft_ok else None,
            "peak_ratio_vs_peft": ratio(measured_peak, (peft or {}).get("peak_reserved_bytes")) if peft_ok else None,
        },
        "memory_plan": {
            "plan": (grpo or {}).get("memory_plan"),
            "planned_peak_bytes": planned_peak,
            "measured_peak_bytes": measured_peak,
            "measured_by": (stages.get("grpo") or {}).get("peak_source"),
            "ratio": ratio(planned_peak, measured_peak),
        },
    }
    with open(os.path.join(out, "check.json"), "w") as f:
        json.dump(report, f, indent=2)

    gib = lambda b: f"{b / 2**30:.2f} GiB" if isinstance(b, (int, float)) else "n/a"
    num = lambda x, fmt="{:.3g}": fmt.format(x) if isinstance(x, (int, float)) else "n/a"
    print(f"== device check ({mode}) -> {os.path.join(out, 'check.json')}")
    for name, s in stages.items():
        state = "timed out" if s and s.get("timed_out") else f"rc {s.get('rc')}" if s else "missing"
        print(f"  {name:<12} {state:<10} {num((s or {}).get('seconds'), '{:.1f}')} s")
    if parity:
        print(f"parity ({parity['device']} vs cpu): max |dlogit| {num(parity['max_abs_logit_diff'])} "
              f"(<= 1e-4: {parity['logits_within_1e_4']}), greedy tokens identical: {parity['tokens_identical']}")
    else:
        print("parity: no result")
    s = sampling or {}
    print(f"sampling: medbridge {num(s.get('tokens_per_s'), '{:.0f}')} tokens/s "
          f"({s.get('prompts_done')}/{s.get('prompts')} prompts x K {s.get('k')} x {s.get('new_tokens')} tokens, complete: {s.get('complete')})")
    if hf_ok:
        print(f"          transformers generate {num(sampling_hf['tokens_per_s'], '{:.0f}')} tokens/s; "
              f"ratio medbridge/transformers {num(report['sampling']['ratio_tokens_per_s'])}")
    else:
        print(f"          transformers: {(sampling_hf or {}).get('skipped', 'no result')}")
    g = grpo or {}
    print(f"GRPO step: medbridge {num(g.get('seconds_per_step'), '{:.2f}')} s, peak {gib(measured_peak)} "
          f"(G {g.get('group')}, {g.get('new_tokens')} new tokens)")
    if peft_ok:
        print(f"           PyTorch + PEFT {num(peft['seconds_per_step'], '{:.2f}')} s, peak reserved "
              f"{gib(peft['peak_reserved_bytes'])}; speedup {num(report['grpo_step']['speedup'])}x")
    else:
        print(f"           PyTorch + PEFT: {(peft or {}).get('skipped', 'no result')}")
    print(f"memory_plan: planned peak {gib(planned_peak)} vs measured {gib(measured_peak)} "
          f"(ratio {num(report['memory_plan']['ratio'])})")


if __name__ == "__main__":
    main()
