#!/usr/bin/env python3
"""`make bench-peers`: ours against the seed's Keras script and the same model in PyTorch, on
this machine, in one run. The machine is shared and noisy, so each peer is run three times,
alternating with ours, and the median of the three ratios is reported."""
import argparse
import json
import os
import statistics
import subprocess
import sys


def last_json(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--ours", required=True, help="the lambda-cnn binary")
    p.add_argument("--python", required=True, help="a Python with tensorflow-cpu and torch")
    p.add_argument("--mnist-dir", required=True)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    here = os.path.dirname(os.path.abspath(__file__))
    ours_cmd = [a.ours, "bench", "--train-only", "--json", "--mnist-dir", a.mnist_dir,
                "--steps", str(a.steps), "--warmup", str(a.warmup)]
    rows = {}
    for r in range(a.rounds):
        for peer in ["keras", "torch"]:
            ours = last_json(ours_cmd)["train_samples_per_second"]
            theirs = last_json([a.python, os.path.join(here, "peers.py"), "--framework", peer, "--train-only",
                                "--mnist-dir", a.mnist_dir, "--steps", str(a.steps), "--warmup", str(a.warmup)])
            theirs = theirs["train_samples_per_second"]
            rows.setdefault(peer, []).append((ours, theirs, ours / theirs))
            print(f"round {r + 1} {peer:>5}: ours {ours:8.0f} samples/s, {peer} {theirs:8.0f} samples/s, ratio {ours / theirs:.2f}",
                  file=sys.stderr, flush=True)
    # Inference figures, once each.
    full = {"lambda-cnn": last_json([a.ours, "bench", "--json", "--mnist-dir", a.mnist_dir, "--steps", "100", "--warmup", "20"])}
    for peer in ["keras", "torch"]:
        full[peer] = last_json([a.python, os.path.join(here, "peers.py"), "--framework", peer, "--mnist-dir", a.mnist_dir,
                                "--steps", "100", "--warmup", "20"])
    print(f"\ntraining throughput, Adam 1e-3, batch 32, {a.steps} steps after {a.warmup} warm-up, {os.cpu_count()} cores")
    print(f"{'peer':<8}{'ours (median)':>16}{'peer (median)':>16}{'median ratio':>14}")
    summary = {}
    for peer, rs in rows.items():
        ratio = statistics.median(x[2] for x in rs)
        summary[peer] = ratio
        print(f"{peer:<8}{statistics.median(x[0] for x in rs):>16.0f}{statistics.median(x[1] for x in rs):>16.0f}{ratio:>14.2f}")
    print(f"\ninference ({os.cpu_count()} cores)")
    print(f"{'':<12}{'p50 µs':>10}{'p99 µs':>10}{'batch-256 img/s':>18}")
    for name, f in full.items():
        print(f"{name:<12}{f['predict_p50_us']:>10.1f}{f['predict_p99_us']:>10.1f}{f['batch256_images_per_second']:>18.0f}")
    print(json.dumps({"train_ratio_median": summary, "inference": full}))


if __name__ == "__main__":
    main()
