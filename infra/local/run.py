#!/usr/bin/env python3
"""`make run`: the whole pipeline on local stand-ins, no AWS account needed.

Starts on 127.0.0.1: moto (ECR, Lambda, IAM, S3, Logs, API Gateway) and a real OCI registry
with ECR-style auth. Builds both images and runs `deploy push/release/api` against them.

Where Docker works, invocations go to the local data plane (lambda_dataplane.py): for each
published version it pulls that version's image by digest from the registry and runs it under
AWS's Runtime Interface Emulator with the version's memory (as --memory, and CPU as Lambda
gives it: 1 vCPU at 1769 MB), timeout, /tmp size and environment. So the smoke tests, the digit
predictions and the training run go to what the `live` alias points at, as deployed.

Without Docker (or for an image of the other architecture — arm64 on x86_64 — which runs under
bubblewrap with qemu-user as its interpreter), the locally built images run under bubblewrap
against the Lambda Runtime API emulator (cargo lambda watch): the same code, but memory,
timeout and the released version make no difference there, and the summary says so.

Sends real test digits and a short training run, prints a summary, and stops everything it started.

The registry keeps its blobs in .local/stack/registry, so a second run pushes no layer bytes.
"""

import argparse
import base64
import gzip
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
import zlib

import bcrypt  # the registry's htpasswd accepts only bcrypt hashes (installed into .venv)

from stack import Procs, free_port, runtime_api

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
STATE = os.path.join(ROOT, ".local", "stack")
NAMES = {"predict": "lambda-cnn-predict", "train": "lambda-cnn-train"}
ECR_USER, ECR_PASSWORD = "AWS", "123456789012-auth-token"  # what moto's ECR hands out

procs = Procs(STATE)
HOST_ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}.get(os.uname().machine, "x86_64")
QEMU = {"arm64": "qemu-aarch64-static", "x86_64": "qemu-x86_64-static"}


def sandbox(rootfs, arch):
    """The image's entrypoint under bubblewrap as Lambda runs it: the root read-only, a fresh /tmp,
    uid 993. An image of another architecture runs under qemu-user, bound in read-only (it is
    static: it needs nothing from the image), with the image's own loader and libraries."""
    cmd = ["bwrap", "--die-with-parent", "--ro-bind", rootfs, "/", "--tmpfs", "/tmp", "--proc", "/proc",
           "--dev", "/dev", "--unshare-all", "--share-net", "--uid", "993", "--gid", "990", "--chdir", "/var/task"]
    if arch == HOST_ARCH:
        return cmd + ["/var/runtime/bootstrap"]
    qemu = shutil.which(QEMU[arch])
    if not qemu:
        sys.exit(f"error: an {arch} image runs here under {QEMU[arch]}, which is not installed: run `make cross-tools`")
    return cmd + ["--ro-bind", qemu, "/dev/qemu", "/dev/qemu", "/var/runtime/bootstrap"]


def say(msg):
    print(f"==> {msg}", flush=True)


def wait_port(port, what, timeout=90):
    start = time.time()
    while time.time() - start < timeout:
        if procs.exited(last_only=True) is not None:
            sys.exit(f"{what} exited at start; see {procs.items[-1][2]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    sys.exit(f"{what} did not start on 127.0.0.1:{port}; see {STATE}/*.log")


def start(name, cmd, env=None, cwd=None):
    return procs.start(name, cmd, env=env, cwd=cwd)


def run(cmd, env=None, capture=False):
    r = subprocess.run(cmd, env=env, cwd=ROOT, text=True,
                       stdout=subprocess.PIPE if capture else None)
    if r.returncode != 0:
        sys.exit(f"failed ({r.returncode}): {' '.join(cmd)}")
    return r.stdout


def docker_works():
    if os.environ.get("LAMBDA_CNN_NO_DOCKER"):
        return False
    try:
        return subprocess.run(["docker", "info"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def mnist_test(mnist_dir, n):
    def read(name):
        path = os.path.join(mnist_dir, name)
        if os.path.exists(path + ".gz"):
            with gzip.open(path + ".gz") as f:
                return f.read()
        with open(path, "rb") as f:
            return f.read()
    images, labels = read("t10k-images-idx3-ubyte"), read("t10k-labels-idx1-ubyte")
    return [(list(images[16 + i * 784:16 + (i + 1) * 784]), labels[8 + i]) for i in range(n)]


def png(pixels, side=28, declared=None):
    """A grey 8-bit PNG of one MNIST image (what a user's stored digit would be); with
    `declared`, its header lies that it is declared × declared pixels."""
    raw = b"".join(b"\x00" + bytes(pixels[r * side:(r + 1) * side]) for r in range(side))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", declared or side, declared or side, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def invoke(port, name, payload, qualifier=None):
    query = f"?Qualifier={qualifier}" if qualifier else ""
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/2015-03-31/functions/{name}/invocations{query}",
        data=json.dumps(payload).encode(), method="POST")
    start = time.time()
    with urllib.request.urlopen(req, timeout=900) as r:
        error = r.headers.get("X-Amz-Function-Error")
        body, version = r.read(), r.headers.get("X-Amz-Executed-Version")
    if error:
        sys.exit(f"error: {name}{':' + qualifier if qualifier else ''} failed ({error}): {body.decode(errors='replace')[:500]}")
    return json.loads(body), (time.time() - start) * 1000, version


def handler_ms(port, name, payload, qualifier):
    """One invocation's handler Duration, from the REPORT line of its log tail (what Lambda
    bills), as `deploy tune` reads it."""
    query = f"?Qualifier={qualifier}" if qualifier else ""
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/2015-03-31/functions/{name}/invocations{query}",
        data=json.dumps(payload).encode(), method="POST", headers={"X-Amz-Log-Type": "Tail"})
    with urllib.request.urlopen(req, timeout=900) as r:
        tail = base64.b64decode(r.headers.get("X-Amz-Log-Result") or "").decode(errors="replace")
        if r.headers.get("X-Amz-Function-Error"):
            sys.exit(f"error: {name} failed: {r.read()[:500]}")
    m = re.search(r"REPORT .*?\tDuration: ([\d.]+) ms", tail)
    if not m:
        sys.exit(f"error: no REPORT line in the log tail of {name}: {tail[-500:]}")
    return float(m.group(1))


def measure_batch_sizes(args, config, rt_port, bucket, keys, template):
    """Images per second of one predict environment (predict:live on the data plane, at its
    configured memory) per batch size, from the REPORT lines of warm batch invocations; and from
    them, on paper, 1 M and 10 M images on AWS at Lambda's default concurrency quota (1000),
    beside the same images sent one by one through the HTTPS API."""
    print()
    print("batch scoring, measured here (predict:live on the data plane, warm, median of 3 REPORT durations)")
    print(f"  {'batch size':>10}  {'ms per batch':>12}  {'images/s per environment':>24}")
    measured = {}
    for size in (1, 10, 100, 200):
        event = {"Items": [{"Key": k} for k in keys[:size]],
                 "BatchInput": {"bucket": bucket, "output": f"s3://{bucket}/bench/"}}
        handler_ms(rt_port, NAMES["predict"], event, "live")  # warm the environment
        ms = sorted(handler_ms(rt_port, NAMES["predict"], event, "live") for _ in range(3))[1]
        measured[size] = ms
        print(f"  {size:>10}  {ms:>12.1f}  {size / ms * 1000:>24.0f}")
    # The same PNG through the HTTPS API's event (POST /predict, image/png): one image a request.
    pixels, _ = mnist_test(args.mnist_dir, 1)[0]
    event = dict(template, body=base64.b64encode(png(pixels)).decode(), isBase64Encoded=True)
    event["headers"] = dict(template["headers"], **{"content-type": "image/png"})
    handler_ms(rt_port, NAMES["predict"], event, "live")
    api_ms = sorted(handler_ms(rt_port, NAMES["predict"], event, "live") for _ in range(3))[1]
    print(f"  {'API, 1 PNG':>10}  {api_ms:>12.1f}  {1 / api_ms * 1000:>24.0f}")
    print("on AWS, on paper from these durations: at batch size 100, 1000 at once (Lambda's default quota)")
    for images in (1_000_000, 10_000_000):
        w = json.loads(run([args.deploy, "--config", config, "cost", "--invocations", str(images), "--batch-size", "100",
                            "--duration-ms", f"{measured[100]:.1f}", "--concurrency", "1000", "--json"],
                           capture=True).strip().splitlines()[-1])["batch"]
        api = json.loads(run([args.deploy, "--config", config, "cost", "--invocations", str(images),
                              "--duration-ms", f"{api_ms:.1f}", "--api", "http", "--json"],
                             capture=True).strip().splitlines()[-1])["cost"]
        api_wall = images * api_ms / 1000 / 1000
        print(f"  {images:>10,} images: deploy batch ${w['total_usd']:.2f} (Lambda ${w['lambda']['total']:.2f} + "
              f"Step Functions ${w['states_usd']:.2f}), {w['wall_s']:.0f} s of invocations; "
              f"through the HTTPS API one by one ({api_ms:.0f} ms each) ${api['total']:.2f}, {api_wall:.0f} s")


def score_stored_digits(args, config, aws_env, s3_port):
    """`deploy batch` over real test digits stored as PNGs in the local S3 (and, with
    --batch-broken, three objects that must fail alone): the state machine runs on moto's
    interpreter, each child invokes predict:live on the data plane. Returns the summary, how
    many labels were right, and the wall time."""
    import boto3
    s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{s3_port}", region_name="us-east-1",
                      aws_access_key_id="local", aws_secret_access_key="local")
    bucket = "lambda-cnn-batch-demo"
    try:
        s3.create_bucket(Bucket=bucket)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    labels = {}
    for i, (pixels, label) in enumerate(mnist_test(args.mnist_dir, args.batch)):
        key = f"digits/{i:04d}.png"
        s3.put_object(Bucket=bucket, Key=key, Body=png(pixels))
        labels[key] = label
    if args.batch_broken:
        # Not an image; a PNG header that claims 100,000 × 100,000 pixels (over the pixel
        # budget); one byte over the 6 MB object cap.
        for key, body in (("digits/notes.txt", b"not an image"), ("digits/lying.png", png([0] * 784, declared=100000)),
                          ("digits/huge.png", b"\0" * (6 * 1024 * 1024 + 1))):
            s3.put_object(Bucket=bucket, Key=key, Body=body)
    say(f"deploy batch: {len(labels)} stored test digits{' and 3 broken objects' if args.batch_broken else ''} "
        f"(s3://{bucket}/digits/) through predict:live, on Step Functions' Distributed Map (moto's interpreter)")
    start_s = time.time()
    out = run([args.deploy, "--config", config, "batch", "--input", f"s3://{bucket}/digits/",
               "--output", f"s3://{bucket}/results/", "--form", "emulator", "--concurrency", "2", "--json"],
              env=aws_env, capture=True)
    wall_s = time.time() - start_s
    summary = json.loads(out.strip().splitlines()[-1])
    right = 0
    for obj in s3.list_objects_v2(Bucket=bucket, Prefix="results/").get("Contents", []):
        for line in s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read().splitlines():
            r = json.loads(line)
            right += r.get("digit") is not None and r.get("digit") == labels.get(r["key"])
    return summary, right, wall_s, bucket, sorted(labels)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--deploy", required=True, help="the deploy binary")
    ap.add_argument("--predict", required=True, help="the predict function binary")
    ap.add_argument("--train", required=True, help="the train function binary")
    ap.add_argument("--venv", default=os.path.join(ROOT, ".venv"))
    ap.add_argument("--mnist-dir", required=True)
    ap.add_argument("--digits", type=int, default=10)
    ap.add_argument("--batch", type=int, default=100, metavar="N",
                    help="how many stored test digits `deploy batch` scores (needs the data plane)")
    ap.add_argument("--batch-broken", action="store_true",
                    help="also store three objects that must fail alone (not an image, a lying header, over the size cap)")
    ap.add_argument("--arch", choices=["x86_64", "arm64"], default=HOST_ARCH,
                    help="the architecture the function binaries are built for (default: this machine's)")
    ap.add_argument("--emulator", choices=["moto", "localstack"], default=os.environ.get("AWS_EMULATOR") or "moto",
                    help="the AWS emulator (AWS_EMULATOR); with localstack, moto serves what it lacks here")
    ap.add_argument("--localstack-venv", default=os.path.join(ROOT, ".venv-localstack"))
    ap.add_argument("--tune", metavar="DIR",
                    help="then `deploy tune` both functions on the data plane (needs Docker), charts into DIR")
    ap.add_argument("--model", metavar="FILE",
                    help="at the end, release predict with this model file (one `lambda-cnn import` wrote) as "
                         "`make deploy` would: uploaded, smoke-tested with its stored sample on the data plane "
                         "(needs Docker), and its page fetched through predict:live")
    ap.add_argument("--seed-images", metavar="DIR",
                    help="the seed's Python/TensorFlow function as images (make seed-images): released as stage "
                         "`seed` on the same data plane, each smoke-tested as ours are")
    ap.add_argument("--bench-seed", metavar="DIR",
                    help="with --seed-images: then tune both predicts and both trains at the same memory sizes and "
                         "write the comparison (tables, charts) into DIR/seed.md and the README's Performance")
    ap.add_argument("--rie-dir", default=os.path.join(ROOT, ".rie"),
                    help="AWS's Runtime Interface Emulator binaries (make tools puts them there)")
    args = ap.parse_args()
    if args.model:
        args.model = os.path.abspath(args.model)
        if not os.path.isfile(args.model):
            sys.exit(f"error: MODEL={args.model}: no such file (make one with `lambda-cnn import`; see docs/import.md)")
    for a in ("deploy", "predict", "train", "venv", "mnist_dir", "localstack_venv", "rie_dir"):
        setattr(args, a, os.path.abspath(getattr(args, a)))
    if args.bench_seed and not args.seed_images:
        sys.exit("error: --bench-seed needs --seed-images (make bench-seed passes both)")
    if args.seed_images and not (args.arch == HOST_ARCH and docker_works()):
        sys.exit("error: the seed's images run on the local data plane, which needs Docker (`docker info` must work)")
    if args.tune and not (args.arch == HOST_ARCH and docker_works()):
        sys.exit("error: make tune needs the local data plane, which runs images in Docker (of this machine's "
                 f"architecture, {HOST_ARCH}): `docker info` must work; without it, memory buys nothing locally")
    os.makedirs(STATE, exist_ok=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        pipeline(args)
    finally:
        procs.stop_all()
        say("stopped the stand-ins")


def pipeline(args):
    images = os.path.join(ROOT, ".local", "images")
    moto_port, reg_port, rt_port = free_port(), free_port(), free_port()

    # Docker runs only this machine's architecture here (no binfmt handlers are registered).
    use_docker = args.arch == HOST_ARCH and docker_works()
    if args.model and not use_docker:
        sys.exit("error: MODEL= needs the local data plane, which runs each released version in Docker with its "
                 "MODEL_S3_URI (Docker, and images of this machine's architecture); without it, serve the file "
                 "with `MODEL_PATH=FILE cargo lambda watch`")
    say(f"starting moto on 127.0.0.1:{moto_port}")
    moto_env = dict(os.environ, MOTO_LAMBDA_STUB_ECR="false")
    if use_docker:
        # moto's Step Functions interpreter calls Lambda and S3 at localhost:MOTO_PORT: the data
        # plane's port, so that a state machine's Lambda tasks run the released images there,
        # and everything else is relayed back to moto.
        moto_env["MOTO_PORT"] = str(rt_port)
    start("moto", [os.path.join(args.venv, "bin", "moto_server"), "-H", "127.0.0.1", "-p", str(moto_port)], env=moto_env)
    wait_port(moto_port, "moto")
    for _ in range(100):
        try:
            req = urllib.request.Request(f"http://127.0.0.1:{moto_port}/moto-api/config",
                                         data=b'{"lambda":{"use_docker":false},"stepfunctions":{"execute_state_machine":true}}', method="POST",
                                         headers={"Content-Type": "application/json"})
            urllib.request.urlopen(req, timeout=5).read()
            break
        except OSError:
            time.sleep(0.2)

    ls_port = None
    if args.emulator == "localstack":
        ls_port = free_port()
        say(f"starting LocalStack on 127.0.0.1:{ls_port} (S3, STS, API Gateway v1); moto serves ECR, "
            "image Lambdas, API Gateway v2, CloudWatch Logs and the IAM its Lambda checks roles against")
        ls_dir = os.path.join(STATE, "localstack")
        shutil.rmtree(ls_dir, ignore_errors=True)
        os.makedirs(ls_dir)
        ls_env = dict(os.environ, GATEWAY_LISTEN=f"127.0.0.1:{ls_port}", GATEWAY_SERVER="hypercorn",
                      DNS_ADDRESS="0", DISABLE_EVENTS="1", OVERRIDE_IN_DOCKER="0", FILESYSTEM_ROOT=ls_dir,
                      SKIP_SSL_CERT_DOWNLOAD="1")
        start("localstack", [os.path.join(args.localstack_venv, "bin", "python"), "-m", "localstack.runtime.main"],
              env=ls_env, cwd=ls_dir)
        wait_port(ls_port, "LocalStack", timeout=180)
        for _ in range(600):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{ls_port}/_localstack/health", timeout=5).read()
                break
            except OSError:
                time.sleep(0.3)

    say(f"starting the registry on 127.0.0.1:{reg_port} (blobs kept in .local/stack/registry)")
    reg_dir = os.path.join(STATE, "registry")
    os.makedirs(reg_dir, exist_ok=True)
    with open(os.path.join(STATE, "htpasswd"), "w") as f:
        # A low cost: the registry checks the hash on every request, and this is a local stand-in.
        hashed = bcrypt.hashpw(ECR_PASSWORD.encode(), bcrypt.gensalt(rounds=5)).decode()
        f.write(f"{ECR_USER}:{hashed}\n")
    with open(os.path.join(STATE, "registry.yml"), "w") as f:
        f.write(f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {reg_dir}\n"
                f"http:\n  addr: 127.0.0.1:{reg_port}\nauth:\n  htpasswd:\n    realm: lambda-cnn\n"
                f"    path: {STATE}/htpasswd\n")
    start("registry", ["docker-registry", "serve", os.path.join(STATE, "registry.yml")])
    wait_port(reg_port, "the registry")

    rie = os.path.join(args.rie_dir, f"aws-lambda-rie-{HOST_ARCH}")
    if use_docker and not os.access(rie, os.X_OK):
        sys.exit(f"error: no Runtime Interface Emulator at {rie}: run `make tools`")
    if use_docker:
        moto_url = f"http://127.0.0.1:{moto_port}"
        say("starting the local Lambda data plane (each released version's image, pulled by digest, under "
            "AWS's Runtime Interface Emulator in Docker, sized by its MemorySize)")
        start("dataplane", [os.path.join(args.venv, "bin", "python"), os.path.join(ROOT, "infra", "local", "lambda_dataplane.py"),
                                    "--port", str(rt_port), "--lambda-endpoint", moto_url,
                                    "--logs-endpoint", moto_url,
                                    "--function-endpoint", f"http://127.0.0.1:{ls_port}" if ls_port else moto_url,
                                    "--registry", f"127.0.0.1:{reg_port}", "--registry-password", ECR_PASSWORD,
                                    "--rie-dir", args.rie_dir, "--state-dir", os.path.join(STATE, "dataplane"),
                                    "--forward", moto_url]
              + (["--forward-service", f"s3=http://127.0.0.1:{ls_port}"] if ls_port else []))
        wait_port(rt_port, "the data plane")
    else:
        say(f"starting the Lambda Runtime API emulator on 127.0.0.1:{rt_port}")
        runtime_api(procs, os.path.join(args.venv, "bin", "cargo-lambda"), rt_port, os.path.join(STATE, "runtime-api"),
                    list(NAMES.values()))
        wait_port(rt_port, "cargo lambda watch")

    digests = {}
    for f in ("predict", "train"):
        say(f"building the {f} image")
        out = run([args.deploy, "image", "--function", f, "--binary", getattr(args, f), "--out",
                   os.path.join(images, f), "--tar", os.path.join(images, f + ".tar"),
                   "--mnist-dir", args.mnist_dir, "--json"], capture=True)
        digests[f] = json.loads(out.strip().splitlines()[-1])["manifest_digest"]

    how = (f"under bubblewrap with {QEMU[args.arch]} ({args.arch} on {HOST_ARCH})" if args.arch != HOST_ARCH else
           "under bubblewrap (no Docker engine here)")
    if not use_docker:
        say(f"running the {args.arch} images as built, the way Lambda does: read-only root, writable /tmp, uid 993, {how}; "
            "memory, timeout and the released version are NOT emulated on this path (the data plane needs Docker)")
    for f, name in ([] if use_docker else NAMES.items()):
        rt = f"http://127.0.0.1:{rt_port}/.rt/{name}"
        lambda_env = {"AWS_LAMBDA_RUNTIME_API": rt, "AWS_LAMBDA_FUNCTION_NAME": name,
                      "AWS_LAMBDA_FUNCTION_VERSION": "1", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024"}
        bundle = os.path.join(STATE, f"bundle-{f}")
        shutil.rmtree(bundle, ignore_errors=True)
        run(["umoci", "unpack", "--image", f"{os.path.join(images, f)}:latest", bundle], capture=True)
        with open(os.path.join(bundle, "config.json")) as cf:
            image_env = dict(e.split("=", 1) for e in json.load(cf)["process"]["env"])
        start(f"function-{f}", sandbox(os.path.join(bundle, "rootfs"), args.arch), env={**image_env, **lambda_env})

    aws_env = dict(os.environ, AWS_ENDPOINT_URL=f"http://127.0.0.1:{moto_port}", AWS_ACCESS_KEY_ID="local",
                   AWS_SECRET_ACCESS_KEY="local", AWS_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true",
                   AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null")
    if ls_port:
        moto = f"http://127.0.0.1:{moto_port}"
        aws_env.update(AWS_ENDPOINT_URL=f"http://127.0.0.1:{ls_port}", AWS_ENDPOINT_URL_ECR=moto,
                       AWS_ENDPOINT_URL_LAMBDA=moto, AWS_ENDPOINT_URL_IAM=moto, AWS_ENDPOINT_URL_APIGATEWAYV2=moto,
                       AWS_ENDPOINT_URL_CLOUDWATCH_LOGS=moto, AWS_ENDPOINT_URL_SFN=moto)
    registry = f"127.0.0.1:{reg_port}"
    # The project's config, saying the architecture the images are for (doctor compares them).
    config = os.path.join(STATE, "deploy.toml")
    with open(os.path.join(ROOT, "infra", "deploy.toml")) as src, open(config, "w") as dst:
        dst.write("".join(f'architecture = "{args.arch}"\n' if line.startswith("architecture =") else line
                          for line in src))
    # The config names its IAM policies relative to itself.
    iam = os.path.join(STATE, "iam")
    if not os.path.islink(iam):
        shutil.rmtree(iam, ignore_errors=True)
        os.symlink(os.path.join(ROOT, "infra", "iam"), iam)
    say("deploy doctor (what would stop a deploy in this account; it creates nothing)")
    run([args.deploy, "--config", config, "doctor", "--images", images], env=dict(aws_env, MNIST_DIR=args.mnist_dir))
    say("deploy push (to the local registry; ECR's control plane is moto)")
    pushed = [json.loads(l) for l in run([args.deploy, "--config", config, "push", "--registry", registry, "--images", images, "--json"],
                                         env=aws_env, capture=True).splitlines() if l.startswith("{")]
    say("deploy release (smoke tests run each new version " + ("through the data plane)" if use_docker else "'s code through the Runtime API emulator)"))
    released = [json.loads(l) for l in run([args.deploy, "--config", config, "release", "--registry", registry, "--images", images,
                                            "--invoke-endpoint", f"http://127.0.0.1:{rt_port}", "--json"],
                                           env=aws_env, capture=True).splitlines() if l.startswith("{")]
    say("deploy api")
    api = json.loads(run([args.deploy, "--config", config, "api", "--json"], env=aws_env, capture=True).strip().splitlines()[-1])
    rest = None
    if ls_port:
        say("deploy api --rest (a REST API, on LocalStack's API Gateway v1)")
        rest = json.loads(run([args.deploy, "--config", config, "api", "--rest", "--json"], env=aws_env, capture=True).strip().splitlines()[-1])

    event_path = os.path.join(ROOT, "tests", "fixtures", "events", "apigw-v2-predict.json")
    with open(event_path) as ef:
        template = json.load(ef)
    # Through the data plane, the `live` alias: the released version, as API Gateway calls it.
    live = "live" if use_docker else None
    if use_docker:
        get = dict(template, routeKey="GET /", rawPath="/", body=None)
        get["requestContext"] = dict(template["requestContext"], routeKey="GET /",
                                     http=dict(template["requestContext"]["http"], method="GET", path="/"))
        get["headers"] = {k: v for k, v in template["headers"].items() if k not in ("content-length", "content-type")}
        say(f"the digit page: GET / through API Gateway's event to {NAMES['predict']}:live")
        page, _, _ = invoke(rt_port, NAMES["predict"], get, live)
        page_type = (page.get("headers") or {}).get("content-type", "")
        page_bytes = len(page.get("body") or "")
        if page.get("statusCode") != 200 or not page_type.startswith("text/html"):
            sys.exit(f"error: GET / answered {page.get('statusCode')} {page_type}")
    else:
        # The digit page, from the built image, through the emulator's Function URL front door.
        page_url = f"http://127.0.0.1:{rt_port}/lambda-url/{NAMES['predict']}/"
        say(f"the digit page: {page_url}")
        with urllib.request.urlopen(page_url, timeout=60) as r:
            page_type = r.headers.get("content-type", "")
            page_bytes = len(r.read())
        if r.status != 200 or not page_type.startswith("text/html"):
            sys.exit(f"error: {page_url} answered {r.status} {page_type}")

    say(f"predicting {args.digits} real test digits through the deployed predict code" + (" (predict:live)" if live else ""))
    right, durations = 0, []
    for i, (pixels, label) in enumerate(mnist_test(args.mnist_dir, args.digits)):
        event = dict(template, body=json.dumps({"pixels": pixels}), isBase64Encoded=False)
        event["headers"] = dict(template["headers"], **{"content-type": "application/json"})
        answer, ms, predict_version = invoke(rt_port, NAMES["predict"], event, live)
        digit = json.loads(answer["body"])["digit"]
        durations.append(ms)
        right += digit == label
        print(f"    test digit {i}: label {label}, predicted {digit} ({ms:.1f} ms)")
    say("a short training run through the deployed train code (epochs 1, limit 2000)" + (" (train:live)" if live else ""))
    trained, train_ms, train_version = invoke(rt_port, NAMES["train"], {"epochs": 1, "limit": 2000}, live)

    batch = None
    if use_docker:
        batch = score_stored_digits(args, config, aws_env, ls_port or moto_port)
        if args.batch_broken:
            measure_batch_sizes(args, config, rt_port, batch[3], [k for k in batch[4]], template)

    imported = None
    if args.model:
        say(f"deploy release --function predict --model {args.model} (uploaded under its SHA-256; the new version "
            "must answer the sample stored at import, on the data plane)")
        imported = [json.loads(l) for l in run([args.deploy, "--config", config, "release", "--function", "predict",
                                                "--model", args.model, "--registry", registry, "--images", images,
                                                "--invoke-endpoint", f"http://127.0.0.1:{rt_port}", "--json"],
                                               env=aws_env, capture=True).splitlines() if l.startswith("{")][-1]
        say(f"the imported model's page: GET / through {NAMES['predict']}:live")
        model_page, _, _ = invoke(rt_port, NAMES["predict"], get, live)
        if model_page.get("statusCode") != 200:
            sys.exit(f"error: the imported model's page answered {model_page.get('statusCode')}")
        imported["page_bytes"] = len(model_page.get("body") or "")

    mean_ms = sum(durations) / len(durations)
    cost = json.loads(run([args.deploy, "cost", "--invocations", "1000000", "--duration-ms", f"{mean_ms:.2f}",
                           "--memory-mb", "1024", "--arch", args.arch, "--json"], capture=True).strip().splitlines()[-1])
    if use_docker:
        ran = f"version {predict_version} of predict and {train_version} of train (what live points at), " \
              "pulled by digest, under AWS's RIE in Docker with their configured memory and CPU"
    else:
        ran = "the images as built, under bubblewrap: memory, timeout and the released version not emulated"
    print()
    print("summary")
    print(f"  digit page: {api['page']} once deployed to AWS (`make serve` serves it here: {page_bytes} bytes of HTML)")
    for p in pushed:
        print(f"  {p['function']:8} {p['digest']}  pushed {p['bytes_pushed']} bytes, skipped {p['bytes_skipped']}"
              + ("  (layers already in the registry)" if p["bytes_pushed"] == 0 else ""))
    for r in released:
        print(f"  {r['function']:20} version {r['version']} is {r['alias']} ({r['change']}); smoke: {r['smoke']}")
    print(f"  API {api['api_id']}: {api['url']}/predict (moto records it; it does not serve it)")
    if rest:
        print(f"  REST API {rest['api_id']}: {rest['url']}/predict (on LocalStack)")
    print(f"  ran: {ran}")
    print(f"  predictions: {right}/{args.digits} right, {mean_ms:.1f} ms mean round trip")
    print(f"  training: {trained.get('body')} in {train_ms / 1000:.1f} s")
    if imported:
        print(f"  imported model {os.path.basename(args.model)}: {imported['function']} version {imported['version']} "
              f"is {imported['alias']} ({imported['change']}); smoke: {imported['smoke']}; its page: "
              f"{imported['page_bytes']} bytes")
    if batch:
        summary, right_in_batch, wall_s, _, _ = batch
        res = summary["results"]
        print(f"  batch: {res['succeeded']}/{summary['run']['items']['total']} stored images scored by `deploy batch` "
              f"(Step Functions' Distributed Map on moto, each child on the data plane) in {wall_s:.1f} s, "
              f"{right_in_batch} right, {res['failed']} failed; into {summary['run']['output']}")
        if res["reasons"]:
            print("    failed: " + "; ".join(f"{n} × {why}" for why, n in res["reasons"].items()))
            for key, why in res["failures"][:5]:
                print(f"      {key}: {why}")
        print("    labels: " + ", ".join(f"{label}: {n}" for label, n in res["labels"].items()))
        bill = summary["bill"]
        print(f"    {summary['run']['items']['total'] / max(summary['wall_s'], 1e-9):.1f} images/s over the run's "
              f"{summary['wall_s']:.1f} s (at concurrency 2, one image per child: the emulator's form); "
              f"cost ${bill['total_usd']:.6f} = Lambda ${bill['lambda']['total']:.6f} "
              f"({bill['invocations']} invocations) + Step Functions ${bill['states_usd']:.6f} "
              f"({bill['states']['standard_transitions']} transitions)")
    else:
        print("  batch: not run (predict's batch event needs the data plane: Docker, and images of this machine's architecture)")
    print(f"  cost of 1M predictions at that duration, 1024 MB, {args.arch}, HTTP API: ${cost['cost']['total']:.2f}"
          + (f" (the duration measured under qemu on {HOST_ARCH}: not Graviton's)" if args.arch != HOST_ARCH else ""))

    if args.seed_images:
        bench_seed(args, config, aws_env, registry, rt_port, images)

    if args.tune:
        os.makedirs(args.tune, exist_ok=True)
        # predict: the recorded digit; train: 20,000 samples, seconds of CPU-bound work.
        for f, memory, invocations, strategy, payload in (
                ("predict", "128,256,512,1024,1769", "10", "cost", None),
                ("train", "512,1024,1769,3538", "3", "speed", {"epochs": 1, "limit": 20000})):
            cmd = [args.deploy, "--config", config, "tune", "--function", f, "--memory", memory,
                   "--invocations", invocations, "--strategy", strategy,
                   "--chart", os.path.join(args.tune, f"tune-{f}.svg"), "--invoke-endpoint", f"http://127.0.0.1:{rt_port}"]
            if payload:
                path = os.path.join(STATE, f"tune-{f}.json")
                with open(path, "w") as pf:
                    json.dump(payload, pf)
                cmd += ["--payload", path]
            say(f"deploy tune --function {f} (memory {memory} MB, {invocations} invocations each)")
            print(run(cmd, env=aws_env, capture=True), end="", flush=True)


# What `make bench-seed` measures: predict with the recorded test digit (10 invocations a size,
# the first cold), train with the seed's own `{}` (5 epochs of 60,000) where it fits Lambda's
# 15 minutes: at 1 and 2 vCPUs (one cold and one warm run each).
SEED_BENCH = (
    ("predict", "512,1024,1769,3008", "10", None),
    ("train", "1769,3538", "2", {}),
)
SEED_NAME = "seed (Python, TensorFlow)"
BEGIN, END = "<!-- bench-seed:begin -->", "<!-- bench-seed:end -->"


def machine():
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem_gb:.0f} GiB"


def replace_between(path, text):
    with open(path) as f:
        doc = f.read()
    if BEGIN not in doc or END not in doc:
        sys.exit(f"error: {path} has no {BEGIN} … {END} section to write the results into")
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    with open(path, "w") as f:
        f.write(head + BEGIN + "\n" + text.rstrip() + "\n" + END + tail)


def bench_seed(args, config, aws_env, registry, rt_port, images):
    """The seed's two functions released as stage `seed` by our own deploy (push, release with
    its smoke tests, the `live` alias) on the same data plane as ours; with --bench-seed, both
    sides tuned at the same sizes and compared from their REPORT lines."""
    seed = os.path.abspath(args.seed_images)
    endpoint = f"http://127.0.0.1:{rt_port}"
    deploy = [args.deploy, "--config", config]
    say("deploy --stage seed push: the seed's Python/TensorFlow images (bench/seed), to the same registry")
    run(deploy + ["--stage", "seed", "push", "--registry", registry, "--images", seed], env=aws_env)
    say("deploy --stage seed release: each version smoke-tested on the data plane as ours are")
    for line in run(deploy + ["--stage", "seed", "release", "--registry", registry, "--images", seed,
                              "--invoke-endpoint", endpoint, "--json"], env=aws_env, capture=True).splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            print(f"  {r['function']:24} version {r['version']} is {r['alias']}; smoke: {r['smoke']}")
    if not args.bench_seed:
        return
    out = os.path.abspath(args.bench_seed)
    os.makedirs(out, exist_ok=True)
    tables = []
    for f, memory, invocations, payload in SEED_BENCH:
        reports = {}
        for stage in (None, "seed"):
            cmd = deploy + (["--stage", stage] if stage else []) + [
                "tune", "--function", f, "--memory", memory, "--invocations", invocations,
                "--invoke-endpoint", endpoint, "--json"]
            if payload is not None:
                path = os.path.join(STATE, f"bench-seed-{f}.json")
                with open(path, "w") as pf:
                    json.dump(payload, pf)
                cmd += ["--payload", path]
            who = SEED_NAME if stage else "lambda-cnn"
            say(f"deploy tune --function {f} of {who} (memory {memory} MB, {invocations} invocations each)")
            reports[stage] = os.path.join(STATE, f"bench-seed-tune-{f}-{stage or 'ours'}.json")
            # Exit status 1 with a report: no size could be measured (e.g. out of memory at each):
            # a finding for the table, not the end of the bench.
            r = subprocess.run(cmd, env=aws_env, cwd=ROOT, text=True, stdout=subprocess.PIPE)
            last = (r.stdout.strip().splitlines() or [""])[-1]
            if r.returncode != 0 and not (r.returncode == 1 and last.startswith("{")):
                sys.exit(f"failed ({r.returncode}): {' '.join(cmd)}")
            with open(reports[stage], "w") as rf:
                rf.write(r.stdout)
        chart = os.path.join(out, f"seed-{f}.svg")
        table = run(deploy + ["compare", "--ours", reports[None], "--theirs", reports["seed"],
                              "--theirs-name", SEED_NAME, "--ours-image", os.path.join(images, f),
                              "--theirs-image", os.path.join(seed, f), "--chart", chart,
                              "--title", f"{f}: {SEED_NAME} and lambda-cnn on the local Lambda"], capture=True)
        print(table, flush=True)
        n = int(invocations)
        what = (f"predict: one real test digit through API Gateway's event, {n} invocations a size (the first "
                "cold)" if f == "predict" else f"train: the seed's own event `{json.dumps(payload)}` (5 epochs of "
                f"60,000 images, both functions' default), {n} runs a size (the first cold)")
        tables.append((f, what, table.strip()))
    when = time.strftime("%Y-%m-%d")
    head = (f"Measured {when} by `make bench-seed` on {machine()}: both functions released by `deploy` on the "
            "local data plane (AWS's Runtime Interface Emulator in Docker, CPU as Lambda gives it for the memory), "
            f"every figure from the REPORT lines of the same run; cost at {aws_env['AWS_REGION']}'s x86_64 prices.\n\n")
    replace_between(os.path.join(out, "seed.md"), head + "\n".join(
        f"**{what}.**\n\n{table}\n\n![{f}: duration and cost by memory size](seed-{f}.svg)\n"
        for f, what, table in tables))
    replace_between(os.path.join(ROOT, "README.md"), f"Measured {when} on {machine()}.\n\n" + "\n".join(
        f"**{f}**: {table}\n" for f, _, table in tables))
    say(f"wrote {os.path.join(out, 'seed.md')}, the charts beside it, and the README's Performance section")


if __name__ == "__main__":
    main()
