#!/usr/bin/env python3
"""The predict function under load, as Lambda runs it: the release binary attached to the
real Runtime API emulator (`cargo lambda watch --only-lambda-apis`), sent a stream of API
Gateway v2 events (single digits, PNGs, 256-instance batches). Reports the function's cold
start (exec → ready, from its own `init_ms` log line), request latency through the emulator,
and its peak resident memory (VmHWM) afterwards. Prints one JSON line last."""
import argparse
import base64
import gzip
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--predict", required=True, help="the release-built predict binary")
    p.add_argument("--cargo-lambda", required=True)
    p.add_argument("--weights", required=True)
    p.add_argument("--mnist-dir", required=True)
    p.add_argument("--requests", type=int, default=2000)
    a = p.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with gzip.open(os.path.join(a.mnist_dir, "t10k-images-idx3-ubyte.gz")) as f:
        images = f.read()[16:]
    template = json.load(open(os.path.join(root, "tests/fixtures/events/apigw-v2-predict.json")))
    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="predict-", suffix=".log", delete=False)
    emu = subprocess.Popen([a.cargo_lambda, "lambda", "watch", "--only-lambda-apis", "--invoke-address", "127.0.0.1",
                            "--invoke-port", str(port)], cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    fn = None
    try:
        wait_port(port)
        env = {**os.environ, "AWS_LAMBDA_RUNTIME_API": f"http://127.0.0.1:{port}/.rt/predict",
               "AWS_LAMBDA_FUNCTION_NAME": "predict", "AWS_LAMBDA_FUNCTION_VERSION": "1",
               "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512", "MODEL_PATH": a.weights}
        fn = subprocess.Popen([a.predict], env=env, stdout=log, stderr=log)
        url = f"http://127.0.0.1:{port}/2015-03-31/functions/predict/invocations"

        def invoke(body):
            ev = dict(template, body=body)
            req = urllib.request.Request(url, data=json.dumps(ev).encode(), method="POST")
            t = time.perf_counter()
            with urllib.request.urlopen(req, timeout=60) as r:
                out = json.load(r)
            return (time.perf_counter() - t) * 1e3, out["statusCode"]

        singles = [json.dumps({"pixels": list(images[i * 784:(i + 1) * 784])}) for i in range(200)]
        batch = json.dumps({"instances": [{"pixels": list(images[i * 784:(i + 1) * 784])} for i in range(256)]})
        lat = []
        for i in range(a.requests):
            ms, status = invoke(batch if i % 50 == 49 else singles[i % len(singles)])
            if status != 200:
                sys.exit(f"request {i} answered {status}")
            if i % 50 != 49:
                lat.append(ms)
        with open(f"/proc/{fn.pid}/status") as f:
            hwm = next(int(l.split()[1]) for l in f if l.startswith("VmHWM:")) / 1024
        init_ms = next(json.loads(l)["fields"]["init_ms"] for l in open(log.name) if '"init_ms"' in l)
    finally:
        for proc in (fn, emu):
            if proc:
                proc.kill()
                proc.wait()
    lat.sort()
    print(f"predict function: {a.requests} requests through the Runtime API emulator (every 50th a batch of 256)")
    print(f"  cold start (exec -> ready): {init_ms:.1f} ms")
    print(f"  latency via emulator: p50 {statistics.median(lat):.2f} ms, p99 {lat[int(len(lat) * 0.99)]:.2f} ms")
    print(f"  peak RSS: {hwm:.1f} MB")
    print(json.dumps({"predict_cold_start_ms": init_ms, "predict_peak_rss_mb": hwm,
                      "invoke_p50_ms": statistics.median(lat), "invoke_p99_ms": lat[int(len(lat) * 0.99)]}))


if __name__ == "__main__":
    main()
