#!/usr/bin/env python3
"""A local Lambda data plane: the Invoke API on 127.0.0.1, running each function version as
Lambda would, from what the control plane (the AWS emulator: moto) records for it.

For each invocation it reads the function's configuration at the qualifier (a version, an alias
— with its canary weights — or $LATEST), and runs that version's image in an execution
environment made of real parts:
- the image pulled **by the digest in the version's ImageUri** from the local registry (the ECR
  host in the URI is mapped to it), so what runs is what was released;
- AWS's own Runtime Interface Emulator (from PyPI's aws-sam-cli) bound in as the entrypoint: it
  runs /var/runtime/bootstrap, serves it the Runtime API, enforces the timeout and writes the
  START/END/REPORT lines;
- Docker with `--memory` = MemorySize and `--cpus` = MemorySize / 1769 (Lambda's 1 vCPU at
  1769 MB; capped at this machine's cores), `--read-only`, `--tmpfs /tmp` of EphemeralStorage,
  uid 993, the version's environment plus what Lambda sets.
An environment stays warm between invocations (one invocation at a time each; a busy one makes
another); a new version or configuration is a cold start. Idle ones are stopped after
--idle-seconds, and at most --max-environments run at once.

What the RIE does not do, done here: the REPORT line's "Max Memory Used" is the container's
cgroup peak (the RIE prints the configured size); on a cold start its "Init Duration" is the
init phase the RIE logs (its REPORT says ~0 ms and counts the init in "Duration", which here
is the handler's alone, as on Lambda); a function error — the RIE answers 200 either way — is
recognised by the error document the Runtime API's /error endpoint takes (an object of
errorType and errorMessage, perhaps stackTrace, nothing else) and flagged with
`X-Amz-Function-Error: Unhandled`, as Lambda does; the invocation's log lines go to
/aws/lambda/<function> in the emulator's CloudWatch Logs (`deploy monitor` reads them as on
AWS), and with `X-Amz-Log-Type: Tail` the last 4 KB come back base64 in `X-Amz-Log-Result`
(`deploy tune` reads them as on AWS).

With --forward, every request that is not an Invoke goes on to that endpoint (the AWS emulator)
and its answer comes back: then this one port is "AWS" for a client that has only one endpoint.
moto's Step Functions interpreter is such a client: it calls Lambda and S3 at localhost:MOTO_PORT,
so with MOTO_PORT set to this port a state machine's Lambda tasks run here, as on Lambda, and its
S3 and other calls reach moto.

Prints `listening on http://127.0.0.1:PORT` once it serves.
"""

import argparse
import base64
import hashlib
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import botocore.config
import botocore.exceptions

LABEL = "lambda-cnn.dataplane"
ONE_VCPU_MB = 1769  # Lambda: "at 1,769 MB, a function has the equivalent of one vCPU"
MAX_SYNC_PAYLOAD = 6 * 1024 * 1024  # Invoke's synchronous request limit
TAIL_BYTES = 4096  # what Lambda returns with LogType=Tail
RIE_LOG = re.compile(r"^\d\d \w{3} \d{4} [\d:,]+ \[\w+\] \(rapid\)")
INIT_REPORT = re.compile(r"\(rapid\) INIT REPORT\(durationMs: ([\d.]+)\)")
# Not relayed: they describe one connection, not the request.
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection", "host"}
FORWARD_TIMEOUT_S = 120
SIGV4_SCOPE = re.compile(r"Credential=[^/]+/\d{8}/[^/]+/([^/]+)/aws4_request")
ERROR_KEYS = {"errorType", "errorMessage", "stackTrace"}
HOST_ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}.get(os.uname().machine, "x86_64")


def log(msg):
    print(f"[dataplane] {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class InvokeError(Exception):
    """An error of the Invoke API itself (not the function's): HTTP status, AWS error type."""

    def __init__(self, status, kind, message):
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


def is_error_document(body):
    """Whether BODY is what a runtime posts to /runtime/invocation/{id}/error."""
    try:
        doc = json.loads(body)
    except ValueError:
        return False
    return isinstance(doc, dict) and "errorType" in doc and "errorMessage" in doc and set(doc) <= ERROR_KEYS


def fix_report(report, init_ms, peak_mb):
    """The RIE's REPORT line made Lambda's: the measured peak memory, and on a cold start the
    init phase under Init Duration and out of Duration / Billed Duration."""
    if peak_mb is not None:
        report = re.sub(r"Max Memory Used: \d+ MB", f"Max Memory Used: {peak_mb} MB", report)
    if init_ms is not None:
        m = re.search(r"\tDuration: ([\d.]+) ms", report)
        if m:
            handler = max(float(m.group(1)) - init_ms, 0.0)
            billed = max(1, int(-(-handler // 1)))
            report = re.sub(r"\tDuration: [\d.]+ ms", f"\tDuration: {handler:.2f} ms", report)
            report = re.sub(r"Billed Duration: \d+ ms", f"Billed Duration: {billed} ms", report)
        if "Init Duration:" in report:
            report = re.sub(r"Init Duration: [\d.]+ ms", f"Init Duration: {init_ms:.2f} ms", report)
        else:
            report = report.replace("\tDuration:", f"\tInit Duration: {init_ms:.2f} ms\tDuration:", 1)
    return report


def parse_function_name(name, qualifier):
    """FunctionName may be a name, `name:qualifier`, or a (partial) ARN."""
    if name.startswith("arn:"):
        parts = name.split(":")
        if len(parts) < 7 or parts[5] != "function":
            raise InvokeError(400, "InvalidParameterValueException", f"not a function ARN: {name}")
        fn = parts[6]
        q = parts[7] if len(parts) > 7 else None
    elif ":" in name:
        fn, q = name.split(":", 1)
    else:
        fn, q = name, None
    if q and qualifier and q != qualifier:
        raise InvokeError(400, "InvalidParameterValueException",
                          f"the qualifier in the name ({q}) and the Qualifier parameter ({qualifier}) differ")
    return fn, q or qualifier


class Environment:
    """One execution environment: a container running the RIE and the function's bootstrap."""

    def __init__(self, plane, key, spec):
        self.plane, self.key, self.spec = plane, key, spec
        self.busy = False
        self.last_used = time.time()
        self.lines = []
        self.cond = threading.Condition()
        self.rie_port, self.api_port = free_port(), free_port()
        plane.counter += 1
        self.name = f"lambda-cnn-dp-{os.getpid()}-{plane.counter}"
        self.stream = time.strftime("%Y/%m/%d/", time.gmtime()) + f"[{spec['version']}]" + \
            hashlib.sha256(self.name.encode()).hexdigest()[:32]
        self.container_id = None
        self.proc = None

    def start(self):
        s, p = self.spec, self.plane
        image = p.pull(s["image_uri"])
        memory = s["memory"]
        cpus = min(memory / ONE_VCPU_MB, p.cpus)
        env = dict(s["env"])
        env.update({
            "AWS_LAMBDA_FUNCTION_NAME": s["function"], "AWS_LAMBDA_FUNCTION_VERSION": s["version"],
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory), "AWS_LAMBDA_FUNCTION_TIMEOUT": str(s["timeout"]),
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{s['function']}", "AWS_LAMBDA_LOG_STREAM_NAME": self.stream,
            "AWS_REGION": p.region, "AWS_DEFAULT_REGION": p.region, "AWS_EXECUTION_ENV": "AWS_Lambda_Image",
            # Lambda hands the function its role's credentials; here, the emulator's.
            "AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local", "AWS_SESSION_TOKEN": "local",
        })
        if p.function_endpoint:
            env["AWS_ENDPOINT_URL"] = p.function_endpoint
        cmd = ["docker", "run", "--rm", "--name", self.name, "--label", f"{LABEL}={os.getpid()}",
               "--network", "host", "--read-only", "--tmpfs", f"/tmp:rw,size={s['ephemeral']}m,mode=1777",
               "--memory", f"{memory}m", "--memory-swap", f"{memory}m", "--cpus", f"{cpus:.3f}",
               "--user", "993:990", "--workdir", "/var/task",
               "-v", f"{p.rie_dir}:/aws-lambda:ro", "--entrypoint", f"/aws-lambda/aws-lambda-rie-{s['arch']}"]
        for k, v in env.items():
            cmd += ["-e", f"{k}={v}"]
        cmd += [image, "--runtime-interface-emulator-address", f"127.0.0.1:{self.rie_port}",
                "--runtime-api-address", f"127.0.0.1:{self.api_port}", "/var/runtime/bootstrap"]
        log(f"cold start of {s['function']}:{s['version']} ({memory} MB, {cpus:.2f} vCPU, timeout {s['timeout']} s) "
            f"from {image} as {self.name}")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise InvokeError(502, "ServiceException", f"the execution environment did not start: {self.text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.rie_port), timeout=1):
                    break
            except OSError:
                time.sleep(0.05)
        else:
            self.stop()
            raise InvokeError(502, "ServiceException", "the execution environment did not start within 60 s")
        self.container_id = subprocess.run(["docker", "inspect", "-f", "{{.Id}}", self.name], capture_output=True,
                                           text=True).stdout.strip()
        p.ensure_stream(s["function"], self.stream)

    def _read(self):
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self.cond:
                self.lines.append(line)
                self.cond.notify_all()

    def text(self):
        with self.cond:
            return "\n".join(self.lines)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def peak_memory_mb(self):
        """The container's peak memory since it started (cgroup v1 or v2), in MB, or None."""
        if not self.container_id:
            return None
        cid = self.container_id
        for path in (f"/sys/fs/cgroup/memory/docker/{cid}/memory.max_usage_in_bytes",
                     f"/sys/fs/cgroup/system.slice/docker-{cid}.scope/memory.peak",
                     f"/sys/fs/cgroup/docker/{cid}/memory.peak"):
            try:
                with open(path) as f:
                    return -(-int(f.read().strip()) // (1024 * 1024))
            except (OSError, ValueError):
                continue
        return None

    def invoke(self, payload):
        """Runs one invocation: (status, headers, body, log lines)."""
        with self.cond:
            start = len(self.lines)
        url = f"http://127.0.0.1:{self.rie_port}/2015-03-31/functions/function/invocations"
        req = urllib.request.Request(url, data=payload, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.spec["timeout"] + 30) as r:
                status, body, headers = r.status, r.read(), dict(r.headers)
        except urllib.error.HTTPError as e:
            status, body, headers = e.code, e.read(), dict(e.headers)
        except OSError as e:
            status, body, headers = 502, b"", {}
            log(f"{self.name}: the RIE did not answer: {e}")
        # The REPORT line follows the answer: wait for it (and what the runtime printed before).
        deadline = time.time() + 5
        with self.cond:
            while not any(l.startswith("REPORT RequestId") for l in self.lines[start:]) and time.time() < deadline:
                if not self.alive():
                    break
                self.cond.wait(timeout=0.1)
            lines = list(self.lines[start:])
        self.last_used = time.time()
        return status, headers, body, lines


class DataPlane:
    def __init__(self, args):
        self.args = args
        self.region = args.region
        self.rie_dir = os.path.abspath(args.rie_dir)
        self.registry = args.registry
        self.function_endpoint = args.function_endpoint or args.lambda_endpoint
        self.forward = (args.forward or "").rstrip("/")
        self.forward_service = {}
        for pair in args.forward_service or []:
            service, _, url = pair.partition("=")
            self.forward_service[service] = url.rstrip("/")
        self.cpus = float(os.cpu_count() or 1)
        self.envs = []
        self.counter = 0
        self.lock = threading.Condition()
        self.pulled = set()
        self.pull_lock = threading.Lock()
        self.streams = set()
        cfg = botocore.config.Config(retries={"max_attempts": 3})
        creds = dict(aws_access_key_id="local", aws_secret_access_key="local", region_name=args.region, config=cfg)
        self.lam = boto3.client("lambda", endpoint_url=args.lambda_endpoint, **creds)
        self.logs = boto3.client("logs", endpoint_url=args.logs_endpoint or args.lambda_endpoint, **creds)
        self.docker_config = os.path.join(args.state_dir, "docker-config")
        os.makedirs(self.docker_config, exist_ok=True)
        auth = base64.b64encode(f"{args.registry_user}:{args.registry_password}".encode()).decode()
        with open(os.path.join(self.docker_config, "config.json"), "w") as f:
            json.dump({"auths": {self.registry: {"auth": auth}}}, f)
        for arch in ("x86_64", "arm64"):
            path = os.path.join(self.rie_dir, f"aws-lambda-rie-{arch}")
            if arch == HOST_ARCH and not os.access(path, os.X_OK):
                sys.exit(f"error: no Runtime Interface Emulator at {path}: run `make tools`")

    def forward_to(self, authorization):
        """Where a relayed request goes: its service's endpoint (--forward-service), read from
        the SigV4 credential scope (Credential=KEY/DATE/REGION/SERVICE/aws4_request), else
        --forward."""
        m = SIGV4_SCOPE.search(authorization)
        return self.forward_service.get(m.group(1), self.forward) if m else self.forward

    # --- the control plane's record -------------------------------------------------------

    def resolve(self, fn, qualifier):
        """The configuration an invocation of FN at QUALIFIER runs, as a spec dict."""
        try:
            version = qualifier or "$LATEST"
            if version != "$LATEST" and not version.isdigit():
                alias = self.lam.get_alias(FunctionName=fn, Name=version)
                version = alias["FunctionVersion"]
                weights = (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}
                roll = random.random()
                for v, w in weights.items():
                    if roll < w:
                        version = v
                        break
                    roll -= w
            out = self.lam.get_function(FunctionName=fn, Qualifier=version)
        except botocore.exceptions.ClientError as e:
            err = e.response.get("Error", {})
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 500)
            raise InvokeError(status, err.get("Code", "ServiceException"), err.get("Message", str(e)))
        conf, code = out["Configuration"], out.get("Code", {})
        if conf.get("PackageType") != "Image" or not code.get("ImageUri"):
            raise InvokeError(400, "InvalidParameterValueException", f"{fn} is not an image function; this data plane runs images only")
        return {
            "function": fn, "version": conf.get("Version", version),
            # ImageUri as released (by digest); moto's ResolvedImageUri repeats the "@sha256".
            "image_uri": code["ImageUri"] if "@sha256:" in code["ImageUri"] else code.get("ResolvedImageUri", ""),
            "memory": int(conf.get("MemorySize", 128)), "timeout": int(conf.get("Timeout", 3)),
            "ephemeral": int((conf.get("EphemeralStorage") or {}).get("Size", 512)),
            "arch": (conf.get("Architectures") or ["x86_64"])[0],
            "env": (conf.get("Environment") or {}).get("Variables") or {},
        }

    def pull(self, image_uri):
        """The image, by digest, from the local registry (the ECR host mapped to it)."""
        if "@sha256:" not in image_uri:
            raise InvokeError(400, "InvalidParameterValueException", f"{image_uri} is not pinned by digest")
        repo_digest = image_uri.split("/", 1)[1]
        ref = f"{self.registry}/{repo_digest}"
        with self.pull_lock:
            if ref not in self.pulled:
                log(f"pulling {ref}")
                r = subprocess.run(["docker", "--config", self.docker_config, "pull", "-q", ref],
                                   capture_output=True, text=True, timeout=600)
                if r.returncode != 0:
                    raise InvokeError(502, "ServiceException", f"cannot pull {ref}: {r.stderr.strip()}")
                self.pulled.add(ref)
        return ref

    # --- environments ---------------------------------------------------------------------

    def acquire(self, spec):
        key = json.dumps(spec, sort_keys=True)
        with self.lock:
            while True:
                self.envs = [e for e in self.envs if e.alive() or e.proc is None]
                for e in self.envs:
                    if e.key == key and not e.busy and e.alive():
                        e.busy = True
                        return e, False
                if len(self.envs) < self.args.max_environments:
                    break
                idle = [e for e in self.envs if not e.busy]
                if idle:
                    victim = min(idle, key=lambda e: e.last_used)
                    self.envs.remove(victim)
                    threading.Thread(target=stop_environment, args=(victim,), daemon=True).start()
                    break
                self.lock.wait(timeout=1)
            env = Environment(self, key, spec)
            env.busy = True
            self.envs.append(env)
        try:
            env.start()
        except Exception:
            self.release(env, dead=True)
            raise
        return env, True

    def release(self, env, dead=False):
        with self.lock:
            env.busy = False
            if dead or not env.alive():
                if env in self.envs:
                    self.envs.remove(env)
                stop_environment(env)
            self.lock.notify_all()

    def reap(self):
        while True:
            time.sleep(5)
            with self.lock:
                old = [e for e in self.envs if not e.busy and time.time() - e.last_used > self.args.idle_seconds]
                for e in old:
                    self.envs.remove(e)
            for e in old:
                log(f"{e.name}: idle for {self.args.idle_seconds} s, stopped")
                stop_environment(e)

    def stop_all(self):
        with self.lock:
            envs, self.envs = self.envs, []
        for e in envs:
            stop_environment(e)
        # The images it pulled are named after this run's registry port: left behind, every
        # run would add names to the user's `docker images` (the layers themselves are shared).
        for ref in sorted(self.pulled):
            for attempt in range(3):
                r = subprocess.run(["docker", "rmi", "-f", ref], capture_output=True, text=True)
                if r.returncode == 0 or "No such image" in r.stderr:
                    break
                time.sleep(0.5)  # a container of it may still be going away
            else:
                log(f"could not remove the image {ref}: {r.stderr.strip()}")
        self.pulled.clear()

    # --- logs -----------------------------------------------------------------------------

    def ensure_stream(self, fn, stream):
        group = f"/aws/lambda/{fn}"
        try:
            try:
                self.logs.create_log_group(logGroupName=group)
            except self.logs.exceptions.ResourceAlreadyExistsException:
                pass
            self.logs.create_log_stream(logGroupName=group, logStreamName=stream)
            self.streams.add((group, stream))
        except Exception as e:  # logging must not fail the invocation
            log(f"cannot create log stream {group} {stream}: {e}")

    def put_logs(self, fn, stream, lines):
        group = f"/aws/lambda/{fn}"
        if (group, stream) not in self.streams or not lines:
            return
        now = int(time.time() * 1000)
        try:
            self.logs.put_log_events(logGroupName=group, logStreamName=stream,
                                     logEvents=[{"timestamp": now, "message": l} for l in lines])
        except Exception as e:
            log(f"cannot write to {group} {stream}: {e}")

    # --- one invocation -------------------------------------------------------------------

    def invoke(self, fn, qualifier, payload, tail):
        spec = self.resolve(fn, qualifier)
        if spec["arch"] != HOST_ARCH:
            raise InvokeError(500, "ServiceException",
                              f"{fn}:{spec['version']} is {spec['arch']}; this data plane runs {HOST_ARCH} images only "
                              "(make run ARCH=arm64 runs arm64 images under qemu instead)")
        env, cold = self.acquire(spec)
        dead = False
        try:
            status, headers, body, lines = env.invoke(payload)
            dead = not env.alive()
        finally:
            self.release(env, dead=dead)
        function_lines = [l for l in lines if not RIE_LOG.match(l)]
        peak = env.peak_memory_mb()
        init_ms = next((float(m.group(1)) for l in lines for m in [INIT_REPORT.search(l)] if m), None)
        report = None
        for i, l in enumerate(function_lines):
            if l.startswith("REPORT RequestId"):
                function_lines[i] = report = fix_report(l, init_ms, peak)
        rie_errors = [l for l in lines if RIE_LOG.match(l) and ("[ERROR]" in l or "[WARNING]" in l)]
        error = headers.get("X-Amz-Function-Error")
        failed = status != 200 or is_error_document(body) or \
            (report is not None and ("Status: error" in report or "Status: timeout" in report))
        if failed:
            error = error or "Unhandled"
        if status != 200 and not body:
            why = next((l.split("(rapid)", 1)[1].strip() for l in reversed(rie_errors)), "the runtime failed")
            timed_out = report and "Status: timeout" in report
            body = json.dumps({
                "errorType": "Sandbox.Timedout" if timed_out else "Runtime.Unknown",
                "errorMessage": f"Task timed out after {spec['timeout']:.2f} seconds" if timed_out else why,
            }).encode()
        if report is None:
            # The RIE was killed with the function (out of memory, a crash): say so as Lambda does.
            report = (f"REPORT RequestId: unknown\tDuration: 0 ms\tBilled Duration: 0 ms\tMemory Size: {spec['memory']} MB"
                      f"\tMax Memory Used: {peak or spec['memory']} MB\tStatus: error\tError Type: Runtime.ExitError")
            function_lines.append(report)
            error = error or "Unhandled"
        self.put_logs(fn, env.stream, function_lines)
        out = {"X-Amz-Executed-Version": spec["version"]}
        if error:
            out["X-Amz-Function-Error"] = error
        if tail:
            data = ("\n".join(function_lines) + "\n").encode()[-TAIL_BYTES:]
            out["X-Amz-Log-Result"] = base64.b64encode(data).decode()
        log(f"{fn}:{spec['version']} {'cold' if cold else 'warm'}: {report}")
        return 200, out, body


def stop_environment(env):
    """Removes its container (idle, evicted, dead, or the data plane stopping)."""
    if env.proc is not None and env.proc.poll() is None:
        subprocess.run(["docker", "rm", "-f", env.name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            env.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            env.proc.kill()


def remove_orphans():
    """Containers an earlier data plane left (it was killed): removed when their owner is gone."""
    r = subprocess.run(["docker", "ps", "-a", "--filter", f"label={LABEL}", "--format",
                        "{{.ID}} {{.Label \"" + LABEL + "\"}}"], capture_output=True, text=True)
    for line in r.stdout.splitlines():
        cid, _, pid = line.partition(" ")
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            subprocess.run(["docker", "rm", "-f", cid], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def handler_for(plane):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def answer(self, status, headers, body):
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def error(self, e):
            body = json.dumps({"Type": "User" if e.status < 500 else "Service", "message": e.message}).encode()
            self.answer(e.status, {"Content-Type": "application/json", "x-amzn-ErrorType": e.kind}, body)

        def forward(self):
            """Relays this request to --forward and its answer back, unchanged."""
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
            upstream = plane.forward_to(self.headers.get("Authorization", ""))
            req = urllib.request.Request(upstream + self.path, data=body, headers=headers, method=self.command)
            try:
                with urllib.request.urlopen(req, timeout=FORWARD_TIMEOUT_S) as r:
                    status, rheaders, rbody = r.status, r.headers, r.read()
            except urllib.error.HTTPError as e:
                status, rheaders, rbody = e.code, e.headers, e.read()
            except OSError as e:
                log(f"forwarding {self.command} {self.path} to {upstream}: {e}")
                return self.error(InvokeError(502, "ServiceException", f"the AWS emulator at {upstream} did not answer: {e}"))
            self.send_response(status)
            for k, v in rheaders.items():
                if k.lower() not in HOP_HEADERS and k.lower() != "content-length":
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(rbody)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(rbody)

        def do_GET(self):
            self.forward_or_404()

        def do_PUT(self):
            self.forward_or_404()

        def do_DELETE(self):
            self.forward_or_404()

        def do_HEAD(self):
            self.forward_or_404()

        def forward_or_404(self):
            if plane.forward:
                return self.forward()
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            url = urllib.parse.urlsplit(self.path)
            self.error(InvokeError(404, "UnknownOperationException", f"no such operation: {self.command} {url.path}"))

        def do_POST(self):
            url = urllib.parse.urlsplit(self.path)
            m = re.fullmatch(r"/2015-03-31/functions/([^/]+)/invocations", url.path)
            if not m and plane.forward:
                return self.forward()
            length = int(self.headers.get("Content-Length") or 0)
            if not m:
                self.rfile.read(length)
                return self.error(InvokeError(404, "UnknownOperationException", f"no such operation: POST {url.path}"))
            try:
                if length > MAX_SYNC_PAYLOAD:
                    raise InvokeError(413, "RequestTooLargeException",
                                      f"Request must be smaller than {MAX_SYNC_PAYLOAD} bytes for the InvokeFunction operation")
                payload = self.rfile.read(length) or b"{}"
                query = urllib.parse.parse_qs(url.query)
                fn, qualifier = parse_function_name(urllib.parse.unquote(m.group(1)), (query.get("Qualifier") or [None])[0])
                kind = self.headers.get("X-Amz-Invocation-Type", "RequestResponse")
                tail = self.headers.get("X-Amz-Log-Type", "None") == "Tail"
                if kind == "DryRun":
                    plane.resolve(fn, qualifier)
                    return self.answer(204, {}, b"")
                if kind == "Event":
                    plane.resolve(fn, qualifier)
                    threading.Thread(target=lambda: run_quietly(plane, fn, qualifier, payload), daemon=True).start()
                    return self.answer(202, {}, b"")
                if kind != "RequestResponse":
                    raise InvokeError(400, "InvalidParameterValueException", f"unknown invocation type {kind}")
                status, headers, body = plane.invoke(fn, qualifier, payload, tail)
                self.answer(status, dict(headers, **{"Content-Type": "application/json"}), body)
            except InvokeError as e:
                self.error(e)
            except Exception as e:  # the data plane answers; it does not die
                log(f"error: {e!r}")
                self.error(InvokeError(500, "ServiceException", str(e)))

    return Handler


def run_quietly(plane, fn, qualifier, payload):
    try:
        plane.invoke(fn, qualifier, payload, False)
    except Exception as e:
        log(f"asynchronous invocation of {fn} failed: {e}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=0, help="where to serve the Invoke API (default: a free port)")
    ap.add_argument("--lambda-endpoint", required=True, help="the Lambda control plane (moto), http://127.0.0.1:PORT")
    ap.add_argument("--logs-endpoint", help="CloudWatch Logs (default: --lambda-endpoint)")
    ap.add_argument("--function-endpoint", help="AWS_ENDPOINT_URL inside the functions (default: --lambda-endpoint)")
    ap.add_argument("--forward", help="relay every request that is not an Invoke to this endpoint (the AWS emulator)")
    ap.add_argument("--forward-service", action="append", metavar="SERVICE=URL",
                    help="relay this service's requests (by their signature's scope, e.g. s3) to URL instead")
    ap.add_argument("--registry", required=True, help="the local registry, 127.0.0.1:PORT, that stands for ECR")
    ap.add_argument("--registry-user", default="AWS")
    ap.add_argument("--registry-password", required=True)
    ap.add_argument("--rie-dir", required=True, help="holds aws-lambda-rie-x86_64 and aws-lambda-rie-arm64")
    ap.add_argument("--region", default="us-east-1")
    ap.add_argument("--state-dir", required=True, help="for the Docker client's registry login")
    ap.add_argument("--max-environments", type=int, default=4)
    ap.add_argument("--idle-seconds", type=int, default=300)
    args = ap.parse_args()
    os.makedirs(args.state_dir, exist_ok=True)
    remove_orphans()
    plane = DataPlane(args)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler_for(plane))
    server.daemon_threads = True

    def shutdown(*_):
        plane.stop_all()
        os._exit(0)

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    threading.Thread(target=plane.reap, daemon=True).start()
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    finally:
        plane.stop_all()


if __name__ == "__main__":
    main()
