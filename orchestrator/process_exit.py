"""Ending a process that has run Ray in-process (the CLI's grid commands, the test session).

``ray.shutdown()`` leaves native threads running in the driver process: gRPC's (``event_engine``, ``timer_manager``,
``grpc_global_timer``, ``resolver-executor``, ``default-executor``) and Ray's GCS client (``gcs_client_io_service``).
At interpreter exit the C++ static destructors run while those threads still do, and the process can die of SIGSEGV
(exit status 139) after all its work is done and reported. Seen on the 2-core dev box, 2026-12-02, commit bf5f080:
``CI=true bash .ci/run`` printed "328 passed, 10 skipped, 1 xfailed", then pytest's process segfaulted in a non-main
thread (libstdc++ string hashing, kernel log), so CI failed; ``tests/test_process_exit.py`` finds such threads after
``ray.shutdown()``. Such a process ends with ``os._exit`` once its output is flushed, so no C++
teardown runs; one that never started Ray exits as usual.
"""
from __future__ import annotations

import logging
import os
import sys

# names (as the kernel truncates them, 15 characters) of the threads that outlive ray.shutdown()
RAY_NATIVE_THREADS = frozenset({"event_engine", "timer_manager", "grpc_global_tim", "gcs_client_io_s",
                                "resolver-execut", "default-executo"})


def native_ray_threads() -> list[str]:
    """Names of this process's threads that Ray's or gRPC's C++ code started (empty where /proc is not readable)."""
    names = []
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return names
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                name = f.read().strip()
        except OSError:  # the thread ended meanwhile
            continue
        if name in RAY_NATIVE_THREADS:
            names.append(name)
    return sorted(names)


def exit_status(code: object) -> int:
    """The exit status ``sys.exit(code)`` gives: None 0, an int itself, anything else 1 (printed to stderr, as the
    interpreter does)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def end_process(code: object = 0) -> None:
    """If Ray's native threads are running here, flush the output and end the process now with the exit status
    ``sys.exit(code)`` would give; otherwise return, and the interpreter exits as usual.  Call it only when nothing
    is left to do but exit."""
    if not native_ray_threads():
        return
    status = exit_status(code)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or gone: nothing more can reach it
            pass
    os._exit(status)
