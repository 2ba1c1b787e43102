#!/usr/bin/env python3
"""The seed's Keras model, and the same model in PyTorch, timed the way `lambda-cnn bench`
times ours: the seed's hyper-parameters (Adam 1e-3, batch 32), a fixed number of optimizer
steps after a warm-up, on the real MNIST training set. Prints one JSON line."""
import argparse
import gzip
import json
import os
import time

import numpy as np


def load_mnist(folder):
    def read(name, header):
        path = os.path.join(folder, name)
        opener = gzip.open if os.path.exists(path + ".gz") else open
        with opener(path + ".gz" if os.path.exists(path + ".gz") else path, "rb") as f:
            return np.frombuffer(f.read(), np.uint8, offset=header)

    x = read("train-images-idx3-ubyte", 16).reshape(-1, 28, 28).astype(np.float32) / 255.0
    y = read("train-labels-idx1-ubyte", 8).astype(np.int64)
    xt = read("t10k-images-idx3-ubyte", 16).reshape(-1, 28, 28).astype(np.float32) / 255.0
    return x, y, xt


def keras_run(x, y, xt, warmup, steps):
    import keras  # the seed's code, §3.1/§5.2

    model = keras.Sequential([
        keras.layers.Input((28, 28, 1)),
        keras.layers.Conv2D(32, (3, 3), activation="relu"),
        keras.layers.MaxPooling2D((2, 2)),
        keras.layers.Flatten(),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    x = x[..., None]
    model.fit(x[: warmup * 32], y[: warmup * 32], batch_size=32, epochs=1, verbose=0)
    n = steps * 32
    start = time.perf_counter()
    model.fit(x[warmup * 32: warmup * 32 + n], y[warmup * 32: warmup * 32 + n], batch_size=32, epochs=1, verbose=0)
    train = n / (time.perf_counter() - start)
    xt = xt[..., None]
    predict_one = lambda i: model(xt[i: i + 1], training=False).numpy()
    predict_batch = lambda: model(xt[:256], training=False).numpy()
    return train, predict_one, predict_batch


def torch_run(x, y, xt, warmup, steps):
    import torch
    from torch import nn

    torch.set_num_threads(os.cpu_count())
    torch.manual_seed(42)
    model = nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(5408, 128), nn.ReLU(), nn.Linear(128, 10),
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    xs = torch.from_numpy(x).unsqueeze(1)
    ys = torch.from_numpy(y)
    order = torch.randperm(len(xs))

    def run(first, count):
        for s in range(first, first + count):
            idx = order[(s * 32) % (len(xs) - 32):][:32]
            opt.zero_grad()
            loss_fn(model(xs[idx]), ys[idx]).backward()
            opt.step()

    run(0, warmup)
    start = time.perf_counter()
    run(warmup, steps)
    train = steps * 32 / (time.perf_counter() - start)
    model.eval()
    xt = torch.from_numpy(xt).unsqueeze(1)

    def predict_one(i):
        with torch.no_grad():
            return torch.softmax(model(xt[i: i + 1]), 1).numpy()

    def predict_batch():
        with torch.no_grad():
            return torch.softmax(model(xt[:256]), 1).numpy()

    return train, predict_one, predict_batch


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--framework", choices=["keras", "torch"], required=True)
    p.add_argument("--mnist-dir", default=os.environ.get("MNIST_DIR", "../shared/mnist"))
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--train-only", action="store_true")
    a = p.parse_args()
    x, y, xt = load_mnist(a.mnist_dir)
    run = keras_run if a.framework == "keras" else torch_run
    train, predict_one, predict_batch = run(x, y, xt, a.warmup, a.steps)
    out = {"framework": a.framework, "train_samples_per_second": train}
    if not a.train_only:
        for i in range(50):
            predict_one(i)
        times = []
        for i in range(1000):
            t = time.perf_counter()
            predict_one(i)
            times.append((time.perf_counter() - t) * 1e6)
        times.sort()
        predict_batch()
        t = time.perf_counter()
        for _ in range(20):
            predict_batch()
        out.update(predict_p50_us=times[len(times) // 2], predict_p99_us=times[int(len(times) * 0.99)],
                   batch256_images_per_second=20 * 256 / (time.perf_counter() - t))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
