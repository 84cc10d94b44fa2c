#!/usr/bin/env python3
"""One stage of the device check: run a command under its own time limit and record how it went.

`stage.py --out DIR --timeout S [--gpu I] NAME -- CMD...` runs CMD (output to DIR/NAME.log), kills
its whole process group when it passes S seconds, and writes DIR/NAME.stage.json: exit code,
whether it timed out, wall seconds and the peak memory it reached — on a GPU the most
`nvidia-smi` reported in use on GPU I during the stage above what was in use before it (polled
every 0.1 s; the CUDA context and allocator pools included, as a user would see it), on the CPU
the child's peak resident set (getrusage). Standard library only: it runs where torch does not.
"""
import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import time


def gpu_used_bytes(index):
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", str(index)],
            capture_output=True, text=True, timeout=5,
        )
        return int(out.stdout.strip().splitlines()[0]) * 1024 * 1024
    except Exception:
        return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("name")
    ap.add_argument("--out", required=True)
    ap.add_argument("--timeout", type=float, required=True)
    ap.add_argument("--gpu", type=int, default=None)
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd and a.cmd[0] == "--" else a.cmd
    os.makedirs(a.out, exist_ok=True)
    log_path = os.path.join(a.out, a.name + ".log")
    baseline = gpu_used_bytes(a.gpu) if a.gpu is not None else None
    peak = baseline
    start = time.time()
    timed_out = False
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        while proc.poll() is None:
            if time.time() - start > a.timeout:
                timed_out = True
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                break
            if a.gpu is not None:
                used = gpu_used_bytes(a.gpu)
                if used is not None and (peak is None or used > peak):
                    peak = used
            time.sleep(0.1)
    seconds = time.time() - start
    record = {
        "name": a.name,
        "command": cmd,
        "rc": proc.returncode,
        "timed_out": timed_out,
        "timeout_s": a.timeout,
        "seconds": round(seconds, 2),
        "log": log_path,
    }
    if a.gpu is not None:
        record["peak_bytes"] = None if peak is None or baseline is None else peak - baseline
        record["peak_source"] = f"nvidia-smi memory.used on GPU {a.gpu}, above the {baseline} bytes in use before"
    else:
        # ru_maxrss is in KiB on Linux; the largest of the children waited for so far.
        record["peak_bytes"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        record["peak_source"] = "peak resident set of the stage's process (getrusage)"
    with open(os.path.join(a.out, a.name + ".stage.json"), "w") as f:
        json.dump(record, f, indent=2)
    state = "TIMED OUT" if timed_out else f"rc {proc.returncode}"
    print(f"  stage {a.name}: {state} after {seconds:.1f} s (log {log_path})", flush=True)
    return 0 if proc.returncode == 0 and not timed_out else 1


if __name__ == "__main__":
    sys.exit(main())
