"""A server that runs ``python -m orchestrator ARGS`` commands in forked children, having imported torch and the CLI once.

Used by ``tests/bad_inputs.py`` (``run_cases(forked=True)``): a refusal is about 2.5 CPU-seconds as a new process, most
of it importing torch, and the suite runs about sixty.  Each command is still its own process (its exit status,
output, descendants and files are what the caller observes), started from a clean interpreter that has done nothing
but import; a plain subprocess (``python -m tests.cli_fork_server``), not multiprocessing's fork server, so nothing
depends on the caller's ``__main__``.

Also the test suite's ``run_cli`` (``tests/conftest.py``): most of a short command's cost is the same imports.

Protocol, one JSON object per line: the caller writes ``{"args": [...], "cwd": ..., "out": ..., "err": ...}`` on
stdin; the server answers ``{"pid": N}`` once the child runs, then ``{"status": S}`` when it has ended (S as
``os.waitstatus_to_exitcode``: negative for a signal).  End of stdin ends the server.  :class:`ForkServer` is the
caller's side.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# What a refusal imports (torch is most of its cost), and torch._dynamo, which torch.optim imports on the first
# optimizer a command builds (2-3.6 s on the 2-core dev box)
PRELOAD = ("torch", "torch._dynamo", "yaml", "orchestrator.cli", "orchestrator.grid_commands", "algorithms.finetune")


def run_command(args: list, cwd: str, out: str, err: str) -> int:
    """In the child: the CLI's process entry point in ``cwd``, no stdin, stdout/stderr to the files ``out``/``err``,
    as ``python -m orchestrator ARGS`` would run it.  Returns its exit status."""
    from orchestrator.cli import program
    from orchestrator.process_exit import exit_status

    os.chdir(cwd)
    os.environ.pop("RAY_ADDRESS", None)
    for fd, path, flags in ((0, os.devnull, os.O_RDONLY), (1, out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                            (2, err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)):
        f = os.open(path, flags, 0o644)
        os.dup2(f, fd)
        os.close(f)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.argv = [os.path.join(repo, "orchestrator", "__main__.py"), *args]  # what `python -m orchestrator` sets
    try:
        program(args)
        return 0
    except SystemExit as e:
        return exit_status(e.code)
    except BaseException:
        traceback.print_exc()  # what the interpreter prints for an uncaught exception
        return 1


def serve(requests, replies) -> None:
    """Fork one child per request line of ``requests``, one after the other; report its pid and exit status."""
    for module in PRELOAD:
        __import__(module)
    for line in requests:
        req = json.loads(line)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = run_command(req["args"], req["cwd"], req["out"], req["err"])
            finally:
                for stream in (sys.stdout, sys.stderr):
                    stream.flush()
                os._exit(code)  # no interpreter teardown in a fork: the server's state is not the child's to clean
        replies.write(json.dumps({"pid": pid}) + "\n")
        replies.flush()
        _, status = os.waitpid(pid, 0)
        replies.write(json.dumps({"status": os.waitstatus_to_exitcode(status)}) + "\n")
        replies.flush()


class ForkServer:
    """This module as a subprocess (the caller's side of the protocol): runs one command at a time, each in a child
    it forks."""

    def __init__(self, env: dict | None = None):
        """``env``: the commands' environment (default: this process's), PYTHONPATH and PYTHONUNBUFFERED set."""
        env = dict(os.environ if env is None else env, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.cli_fork_server"], cwd=REPO, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def start(self, args: list, cwd: Path, out: str, err: str) -> int:
        """Start one command; its pid."""
        self.proc.stdin.write(json.dumps({"args": args, "cwd": str(cwd), "out": out, "err": err}) + "\n")
        self.proc.stdin.flush()
        return self._reply("pid")

    def status(self) -> int:
        """The exit status of the command started last, once it has ended."""
        return self._reply("status")

    def run(self, args: list, cwd: Path, timeout: float) -> subprocess.CompletedProcess:
        """One command to its end, as ``subprocess.run(..., capture_output=True, text=True, timeout=timeout)`` runs
        ``python -m orchestrator ARGS``: killed, and ``subprocess.TimeoutExpired``, after ``timeout`` seconds."""
        argv = ["python", "-m", "orchestrator", *args]
        with tempfile.TemporaryDirectory() as tmp:
            out, err = os.path.join(tmp, "out"), os.path.join(tmp, "err")
            for path in (out, err):  # there even if the child dies before it opens them
                Path(path).write_text("")
            pid = self.start(args, cwd, out, err)
            end = time.monotonic() + timeout
            while os.path.exists(f"/proc/{pid}/task"):  # the server reaps the child as soon as it ends
                if time.monotonic() > end:
                    os.kill(pid, signal.SIGKILL)
                    self.status()
                    raise subprocess.TimeoutExpired(argv, timeout)
                time.sleep(0.02)
            code = self.status()
            return subprocess.CompletedProcess(argv, code, Path(out).read_text(), Path(err).read_text())

    def _reply(self, key: str) -> int:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the fork server ended (status {self.proc.wait()}) before it answered {key!r}")
        return json.loads(line)[key]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


if __name__ == "__main__":
    serve(sys.stdin, sys.stdout)
