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
import tempfile


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
    # Imported models (issue 26): the seed's architecture from Keras on the seed's kernels, and
    # the two-conv model from a PyTorch state dict against PyTorch itself, each ours and the
    # peer alternating, median of the rounds.
    fixtures = os.path.join(here, "..", "tests", "fixtures", "models")
    work = tempfile.mkdtemp(prefix="lambda-cnn-bench-")
    seed_model = os.path.join(work, "seed-keras.safetensors")
    twoconv_model = os.path.join(work, "twoconv-torch.safetensors")
    # The shipped weights themselves through the state-dict importer: the same weights, so the
    # same speed if the same kernels run (a model's speed depends on its weights too: the
    # seed's dense layer skips what the ReLU zeroed).
    reimported = os.path.join(work, "seed-reimported.safetensors")
    subprocess.run([a.ours, "import", "model-weights/mnist-cnn.safetensors", "--layers",
                    os.path.join(here, "seed.layers.json"), "--out", reimported], check=True, capture_output=True)
    subprocess.run([a.ours, "import", os.path.join(fixtures, "seed-keras.keras"), "--out", seed_model],
                   check=True, capture_output=True)
    subprocess.run([a.ours, "import", os.path.join(fixtures, "twoconv-torch.pt"), "--layers",
                    os.path.join(fixtures, "twoconv-torch.layers.json"), "--out", twoconv_model],
                   check=True, capture_output=True)
    keys = ["predict_p50_us", "predict_p99_us", "batch256_images_per_second"]
    imported = {}
    for r in range(a.rounds):
        for name, cmd in [
            ("native seed", [a.ours, "bench", "--json", "--model", "model-weights/mnist-cnn.safetensors", "--mnist-dir", a.mnist_dir]),
            ("seed re-imported", [a.ours, "bench", "--json", "--model", reimported, "--mnist-dir", a.mnist_dir]),
            ("seed from Keras", [a.ours, "bench", "--json", "--model", seed_model, "--mnist-dir", a.mnist_dir]),
            ("twoconv, ours", [a.ours, "bench", "--json", "--model", twoconv_model, "--mnist-dir", a.mnist_dir]),
            ("twoconv, torch", [a.python, os.path.join(here, "imported.py"), "--arch", "twoconv", "--mnist-dir", a.mnist_dir]),
        ]:
            f = last_json(cmd)
            imported.setdefault(name, []).append({k: f[k] for k in keys})
    medians = {name: {k: statistics.median(x[k] for x in rs) for k in keys} for name, rs in imported.items()}
    print(f"\nimported models, inference ({os.cpu_count()} cores, median of {a.rounds} alternating rounds)")
    print(f"{'':<18}{'p50 µs':>10}{'p99 µs':>10}{'batch-256 img/s':>18}")
    for name, f in medians.items():
        print(f"{name:<18}{f['predict_p50_us']:>10.1f}{f['predict_p99_us']:>10.1f}{f['batch256_images_per_second']:>18.0f}")
    ours, torch = medians["twoconv, ours"], medians["twoconv, torch"]
    print(f"twoconv vs PyTorch: one image {torch['predict_p50_us'] / ours['predict_p50_us']:.2f}× as fast, "
          f"batch-256 {ours['batch256_images_per_second'] / torch['batch256_images_per_second']:.2f}× the throughput")
    print(json.dumps({"train_ratio_median": summary, "inference": full, "imported": medians}))


if __name__ == "__main__":
    main()
