"""What `make run` (run.py) and `make serve` (serve.py) share: their child processes (started
in their own session, logged to a file each, stopped together), free ports, and the Lambda
Runtime API emulator (`cargo lambda watch --only-lambda-apis`) with the stub project it needs."""

import os
import signal
import socket
import subprocess


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class Procs:
    """The processes a script started, each logging to LOG_DIR/NAME.log."""

    def __init__(self, log_dir):
        self.log_dir = log_dir
        self.items = []  # (name, Popen, log path)

    def start(self, name, cmd, env=None, cwd=None):
        log = os.path.join(self.log_dir, f"{name}.log")
        p = subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             env=env, cwd=cwd, start_new_session=True)
        self.items.append((name, p, log))
        return p

    def exited(self, last_only=False):
        """(name, exit status, log) of a process that has exited, or None."""
        for name, p, log in self.items[-1:] if last_only else self.items:
            if p.poll() is not None:
                return name, p.returncode, log
        return None

    def stop_all(self, grace=10):
        for _, p, _ in reversed(self.items):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for _, p, _ in self.items:
            try:
                p.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


def runtime_api(procs, cargo_lambda, port, stub_dir, functions, name="runtime-api"):
    """Starts the Runtime API emulator on 127.0.0.1:PORT for FUNCTIONS. cargo-lambda serves
    only functions named after binaries of the project it runs in: it runs in a stub project
    (written to STUB_DIR) with those."""
    os.makedirs(stub_dir, exist_ok=True)
    with open(os.path.join(stub_dir, "Cargo.toml"), "w") as f:
        f.write('[package]\nname = "runtime-api-stand-in"\nversion = "0.0.0"\nedition = "2021"\npublish = false\n\n'
                '[workspace]\n')
        for n in functions:
            f.write(f'\n[[bin]]\nname = "{n}"\npath = "main.rs"\n')
    with open(os.path.join(stub_dir, "main.rs"), "w") as f:
        f.write("fn main() {}\n")
    return procs.start(name, [cargo_lambda, "lambda", "watch", "--only-lambda-apis",
                              "--invoke-address", "127.0.0.1", "--invoke-port", str(port)], cwd=stub_dir)
