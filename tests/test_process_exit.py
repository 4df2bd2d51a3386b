"""orchestrator.process_exit on real Ray: a process that ran Ray keeps gRPC's and Ray's native threads after
``ray.shutdown()``, and ``end_process`` ends it with the given status, its output flushed, before C++ teardown; a
process that never started Ray returns from ``end_process`` and exits as usual (its atexit handlers run)."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

RAN_RAY = """
import atexit, sys
import ray
from orchestrator.process_exit import end_process, native_ray_threads
ray.init(num_cpus=1, include_dashboard=False, logging_level="ERROR")
assert ray.get(ray.put(41)) + 1 == 42
ray.shutdown()
atexit.register(print, "atexit ran")
print("threads:", ",".join(sorted(set(native_ray_threads()))), end="")  # no newline: still in the buffer
end_process(3)
print("end_process returned")
"""

NO_RAY = """
import atexit
from orchestrator.process_exit import end_process, native_ray_threads
atexit.register(print, "atexit ran")
assert native_ray_threads() == []
end_process(3)
print("end_process returned")
"""


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=180)


def test_a_process_that_ran_ray_ends_with_its_status_and_flushed_output():
    out = _run(RAN_RAY)
    assert out.returncode == 3, out.stderr[-2000:]
    threads = out.stdout.removeprefix("threads:").split(",")
    assert out.stdout.startswith("threads:") and {"event_engine", "gcs_client_io_s"} <= set(threads), out.stdout
    assert "end_process returned" not in out.stdout and "atexit ran" not in out.stdout


def test_a_process_without_ray_exits_as_usual():
    out = _run(NO_RAY)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines() == ["end_process returned", "atexit ran"]
