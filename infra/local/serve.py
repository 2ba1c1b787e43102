#!/usr/bin/env python3
"""`make serve`: the digit page on this machine, until Ctrl-C.

Starts the Lambda Runtime API emulator (`cargo lambda watch --only-lambda-apis`, whose front
door turns browser requests into Function URL events), attaches the release-built predict
function to it with the shipped weights, waits until it answers, and prints the address to
open. Nothing else is needed: no AWS account, no Docker.
"""

import argparse
import os
import signal
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.request

from stack import Procs, free_port, port_open, runtime_api

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FUNCTION = "predict"


def port_is_free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def wait_ok(url, procs, timeout):
    start = time.time()
    while time.time() - start < timeout:
        if (gone := procs.exited()) is not None:
            sys.exit(f"error: {gone[0]} exited with status {gone[1]}; its log: {gone[2]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    sys.exit(f"error: {url} did not answer 200 within {timeout} s")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--predict", required=True, help="the release-built predict binary")
    ap.add_argument("--cargo-lambda", required=True, help="the cargo-lambda binary")
    ap.add_argument("--weights", default=os.path.join(ROOT, "model-weights", "mnist-cnn.safetensors"))
    ap.add_argument("--port", type=int, default=int(os.environ.get("PORT", "9000")),
                    help="port to serve on (default 9000, or PORT; a free one if taken)")
    a = ap.parse_args()
    a.predict, a.cargo_lambda, a.weights = map(os.path.abspath, (a.predict, a.cargo_lambda, a.weights))
    for path, what in [(a.predict, "the predict binary (make build)"), (a.cargo_lambda, "cargo-lambda (make tools)"),
                       (a.weights, "the weights")]:
        if not os.path.exists(path):
            sys.exit(f"error: {path} not found: {what}")
    port = a.port if port_is_free(a.port) else free_port()
    if port != a.port:
        print(f"port {a.port} is taken; using {port}", flush=True)

    work = tempfile.mkdtemp(prefix="lambda-cnn-serve-")
    procs = Procs(work)

    def stop(*_, status=0):
        procs.stop_all(grace=5)
        print("stopped", flush=True)
        sys.exit(status)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)

    print(f"starting the Runtime API emulator on 127.0.0.1:{port} and the predict function…", flush=True)
    runtime_api(procs, a.cargo_lambda, port, os.path.join(work, "stub"), [FUNCTION], name="cargo-lambda-watch")
    start_t = time.time()
    while not port_open(port):
        if time.time() - start_t > 60:
            sys.exit(f"error: cargo lambda watch did not open 127.0.0.1:{port}; its log: {procs.items[0][2]}")
        time.sleep(0.1)
    env = dict(os.environ)
    env.update({
        "AWS_LAMBDA_RUNTIME_API": f"http://127.0.0.1:{port}/.rt/{FUNCTION}",
        "AWS_LAMBDA_FUNCTION_NAME": FUNCTION,
        "AWS_LAMBDA_FUNCTION_VERSION": "1",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
        "MODEL_PATH": a.weights,
    })
    for k in ("MODEL_S3_URI", "MODEL_BUCKET"):
        env.pop(k, None)
    procs.start(FUNCTION, [a.predict], env=env, cwd=ROOT)
    base = f"http://127.0.0.1:{port}/lambda-url/{FUNCTION}/"
    wait_ok(base + "health", procs, 120)
    print(f"\nthe digit page: {base}\n(draw a digit; Ctrl-C stops; logs in {work})", flush=True)
    while True:
        if (gone := procs.exited()) is not None:
            print(f"error: {gone[0]} exited with status {gone[1]}; its log: {gone[2]}", file=sys.stderr)
            stop(status=1)
        time.sleep(1)


if __name__ == "__main__":
    main()
