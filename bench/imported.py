#!/usr/bin/env python3
"""PyTorch's side of `make bench-peers`'s imported-model rows: a fixture model of
tests/fixtures/models (made by its make.py), loaded from the state dict lambda-cnn imported,
timed the way `lambda-cnn bench --model` times ours: one image at a time over 3000 MNIST test
images (p50, p99) and 40 batches of 256, after 50 warm-up images, in eval mode without grad,
with as many threads as cores. Prints one JSON object."""
import argparse
import gzip
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "tests", "fixtures", "models")


def mnist_test(folder):
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte"):
        path = os.path.join(folder, name)
        if os.path.exists(path):
            opener = gzip.open if name.endswith(".gz") else open
            with opener(path, "rb") as f:
                return f.read()[16:]
    sys.exit(f"no MNIST test images in {folder}")


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--arch", choices=["seed", "twoconv"], default="twoconv")
    p.add_argument("--mnist-dir", required=True)
    p.add_argument("--singles", type=int, default=3000)
    p.add_argument("--batches", type=int, default=40)
    a = p.parse_args()
    import numpy as np
    import torch

    sys.path.insert(0, FIXTURES)
    from make import torch_models  # the one definition of the fixtures' models

    torch.set_num_threads(os.cpu_count())
    model = dict(zip(["seed", "twoconv", "rgb"], torch_models()))[a.arch]
    model.load_state_dict(torch.load(os.path.join(FIXTURES, f"{a.arch}-torch.pt")))
    model.eval()
    raw = np.frombuffer(mnist_test(a.mnist_dir), dtype=np.uint8).reshape(-1, 1, 28, 28)
    x = torch.from_numpy(raw.astype(np.float32) / 255.0)
    with torch.inference_mode():
        for i in range(50):
            model(x[i:i + 1])
        micros = []
        for i in range(a.singles):
            j = i % len(x)
            start = time.perf_counter()
            model(x[j:j + 1])
            micros.append((time.perf_counter() - start) * 1e6)
        micros.sort()
        batch = x[:256]
        model(batch)
        start = time.perf_counter()
        for _ in range(a.batches):
            model(batch)
        seconds = time.perf_counter() - start
    pct = lambda q: micros[round((len(micros) - 1) * q)]
    print(json.dumps({"framework": f"torch {torch.__version__}", "arch": a.arch,
                      "predict_p50_us": pct(0.5), "predict_p99_us": pct(0.99),
                      "batch256_images_per_second": 256 * a.batches / seconds}))


if __name__ == "__main__":
    main()
