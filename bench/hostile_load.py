#!/usr/bin/env python3
"""`make load`: the predict function under a hostile mix, as Lambda runs it: the release binary
attached to the real Runtime API emulator (`cargo lambda watch --only-lambda-apis`), 10,000
API Gateway v2 events from 32 concurrent clients, good and bad bodies mixed. Passes when no
request gets a 5xx (or no answer), every good one a 200 with the right digit, every bad one a
4xx with a JSON error under 1 KB. Prints latency p50/p99 per kind and the function's peak RSS."""
import argparse
import base64
import collections
import concurrent.futures
import gzip
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
import zlib

from predict_load import free_port, wait_port  # the same emulator start-up as `make bench`


def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width, height, rows):
    """A grey 8-bit PNG from `rows` (bytes per row), by hand: no imaging library needed."""
    raw = b"".join(b"\0" + r for r in rows)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def png_header(width, height):
    """A PNG that declares `width`×`height` and holds no pixels."""
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", b"") + chunk(b"IEND", b""))


def iccp_bomb():
    one = png(1, 1, [b"\x09"])
    profile = zlib.compress(b"\0" * (64 << 20), 9)
    return one[:33] + chunk(b"iCCP", b"bomb\0\0" + profile) + one[33:]


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--predict", required=True, help="the release-built predict binary")
    p.add_argument("--cargo-lambda", required=True)
    p.add_argument("--weights", required=True)
    p.add_argument("--mnist-dir", required=True)
    p.add_argument("--requests", type=int, default=10000)
    p.add_argument("--clients", type=int, default=32)
    a = p.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with gzip.open(os.path.join(a.mnist_dir, "t10k-images-idx3-ubyte.gz")) as f:
        images = f.read()[16:]
    with gzip.open(os.path.join(a.mnist_dir, "t10k-labels-idx1-ubyte.gz")) as f:
        labels = f.read()[8:]
    template = json.load(open(os.path.join(root, "tests/fixtures/events/apigw-v2-predict.json")))

    def ev(body, content_type="application/json", b64=False, method="POST", path="/predict"):
        e = json.loads(json.dumps(template))
        e["body"] = base64.b64encode(body).decode() if b64 else body
        e["isBase64Encoded"] = b64
        e["rawPath"] = path
        e["requestContext"]["http"]["method"] = method
        e["requestContext"]["http"]["path"] = path
        e["headers"] = {k: v for k, v in e["headers"].items() if k not in ("content-type", "content-length")}
        if content_type:
            e["headers"]["content-type"] = content_type
        return json.dumps(e).encode()

    digit = lambda i: images[i * 784:(i + 1) * 784]
    digit_png = lambda i: png(28, 28, [digit(i)[r * 28:(r + 1) * 28] for r in range(28)])
    tiny_b64 = base64.b64encode(png_header(4096, 4096)).decode()
    # Filled in after a first pass: the digits of 0..99 the model itself gets right (it is
    # ~99 % accurate, and a wrong answer is the model's, not the endpoint's).
    right = []
    kinds = {
        # name: (event bytes, expected status, expected digit or None)
        "good pixels": lambda: [(ev(json.dumps({"pixels": list(digit(i))})), 200, labels[i]) for i in right[::2]],
        "good png": lambda: [(ev(digit_png(i), "image/png", True), 200, labels[i]) for i in right[1::2]],
        "good batch": [(ev(json.dumps({"instances": [{"pixels": list(digit(i))} for i in range(64)]})), 200, None)],
        "budget bomb": [(ev(json.dumps({"instances": [{"image": tiny_b64}] * 256})), 413, None)],
        "iccp bomb": [(ev(iccp_bomb(), "image/png", True), 400, None)],
        "bad json": [(ev('{"pixels": [1, 2'), 400, None), (ev('{"pixels": ' + '[' * 500 + ']' * 500 + '}'), 400, None)],
        "bad pixels": [(ev(json.dumps({"pixels": ["x" * 100000] + [0] * 783})), 400, None),
                       (ev(json.dumps({"pixels": [0] * 784})), 400, None)],
        "bad base64": [(ev("%%% not base64", "image/png", False), 400, None)],
        "bad type": [(ev("7", "text/plain"), 415, None)],
        "no route": [(ev("", None, method="GET", path="/" + "x" * 5000), 404, None)],
    }
    mix = (["good pixels"] * 40 + ["good png"] * 30 + ["good batch"] * 2 + ["budget bomb"] * 4 + ["iccp bomb"] * 2
           + ["bad json"] * 8 + ["bad pixels"] * 8 + ["bad base64"] * 2 + ["bad type"] * 2 + ["no route"] * 2)

    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="predict-", suffix=".log", delete=False)
    emu = subprocess.Popen([a.cargo_lambda, "lambda", "watch", "--only-lambda-apis", "--invoke-address", "127.0.0.1",
                            "--invoke-port", str(port)], cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    fn = None
    failures = []
    lat = collections.defaultdict(list)
    statuses = collections.Counter()
    try:
        wait_port(port)
        env = {**os.environ, "AWS_LAMBDA_RUNTIME_API": f"http://127.0.0.1:{port}/.rt/predict",
               "AWS_LAMBDA_FUNCTION_NAME": "predict", "AWS_LAMBDA_FUNCTION_VERSION": "1",
               "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024", "MODEL_PATH": a.weights}
        fn = subprocess.Popen([a.predict], env=env, stdout=log, stderr=log)
        url = f"http://127.0.0.1:{port}/2015-03-31/functions/predict/invocations"
        for i in range(100):
            req = urllib.request.Request(url, data=ev(json.dumps({"pixels": list(digit(i))})), method="POST")
            with urllib.request.urlopen(req, timeout=60) as r:
                if json.loads(json.load(r)["body"]).get("digit") == labels[i]:
                    right.append(i)
        print(f"  the model gets {len(right)}/100 of the first test digits right; those are the good inputs",
              file=sys.stderr)
        for k in list(kinds):
            if callable(kinds[k]):
                kinds[k] = kinds[k]()

        def one(i):
            kind = mix[i % len(mix)]
            body, want, want_digit = kinds[kind][i % len(kinds[kind])]
            t = time.perf_counter()
            try:
                req = urllib.request.Request(url, data=body, method="POST")
                with urllib.request.urlopen(req, timeout=120) as r:
                    out = json.load(r)
            except Exception as e:  # no answer at all counts as a 5xx
                return kind, (time.perf_counter() - t) * 1e3, 599, f"no answer: {e}"
            ms = (time.perf_counter() - t) * 1e3
            status = out.get("statusCode", 599)
            problem = None
            if status != want:
                problem = f"{kind}: {status}, expected {want}: {str(out)[:300]}"
            elif status == 200 and want_digit is not None:
                digit = json.loads(out["body"]).get("digit")
                if digit != want_digit:
                    problem = f"{kind}: digit {digit}, expected {want_digit}"
            elif status >= 400 and (len(out.get("body", "")) >= 1024 or "error" not in json.loads(out["body"])):
                problem = f"{kind}: error body not a small JSON error: {out.get('body', '')[:200]}"
            return kind, ms, status, problem

        start = time.time()
        with concurrent.futures.ThreadPoolExecutor(a.clients) as pool:
            for n, (kind, ms, status, problem) in enumerate(pool.map(one, range(a.requests)), 1):
                lat[kind].append(ms)
                statuses[status] += 1
                if problem:
                    failures.append(problem)
                if n % 1000 == 0:
                    print(f"  {n}/{a.requests} requests, {len(failures)} failures", file=sys.stderr, flush=True)
        wall = time.time() - start
        with open(f"/proc/{fn.pid}/status") as f:
            hwm = next(int(l.split()[1]) for l in f if l.startswith("VmHWM:")) / 1024
        alive = fn.poll() is None
    finally:
        for proc in (fn, emu):
            if proc:
                proc.kill()
                proc.wait()
    five = sum(c for s, c in statuses.items() if s >= 500)
    print(f"predict under a hostile mix: {a.requests} requests from {a.clients} clients in {wall:.1f} s "
          f"({a.requests / wall:.0f}/s) through the Runtime API emulator to one process")
    print(f"  statuses: {dict(sorted(statuses.items()))}; 5xx or no answer: {five}; function alive after: {alive}")
    print(f"  peak RSS of the function: {hwm:.1f} MB")
    print(f"  {'kind':<12} {'n':>6} {'p50 ms':>8} {'p99 ms':>8}")
    for kind, v in sorted(lat.items()):
        v.sort()
        print(f"  {kind:<12} {len(v):>6} {statistics.median(v):>8.2f} {v[min(len(v) - 1, int(len(v) * 0.99))]:>8.2f}")
    allv = sorted(x for v in lat.values() for x in v)
    print(json.dumps({"requests": a.requests, "clients": a.clients, "five_xx": five, "failures": len(failures),
                      "p50_ms": statistics.median(allv), "p99_ms": allv[int(len(allv) * 0.99)], "peak_rss_mb": hwm}))
    for f in failures[:20]:
        print("FAIL", f, file=sys.stderr)
    if failures or five or not alive:
        sys.exit(1)


if __name__ == "__main__":
    main()
