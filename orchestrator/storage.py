"""Where a grid's results live: a local path (shared by NFS on a cluster) or any URI that pyarrow's filesystems
accept (``s3://bucket/prefix``, ``gs://bucket/prefix``, ``hdfs://...``; ``file:///abs/path`` is a local path).

A URI is Tune's ``storage_path``: Tune and its trials write the experiment there (each node directly, no
NFS needed).  The grid's own small files (``spec.yaml``, ``spec.resolved.json``, ``launches.jsonl``) are
written in a local staging copy of the run directory and uploaded next to Tune's; the analysis downloads
the whole experiment into the staging copy, analyses it there and uploads ``analysis/``.  Credentials and
endpoints come from the usual environment of each filesystem (S3: ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL`` for an S3-compatible server).
The staging copies live under ``$O2O_STAGING`` (default ``~/.cache/o2o-finetune/storage``).
"""
from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional
from urllib.parse import urlparse

URI_MARK = "://"
OWN_FILES = ("spec.yaml", "spec.resolved.json", "launches.jsonl")
ANALYSIS = "analysis"
# pyarrow.fs.FileSystem.from_uri's schemes (file:// is turned into a path before this table is consulted)
SCHEMES = ("s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss")


def is_uri(storage: str) -> bool:
    return URI_MARK in str(storage)


def is_local(storage: str) -> bool:
    """A directory on this machine's filesystem: a path, or a ``file://`` URI."""
    return not is_uri(storage) or str(storage).startswith("file://")


def local_path(storage: str) -> str:
    """The filesystem path of a local storage (``file:///a/b`` -> ``/a/b``)."""
    return storage[len("file://"):] if storage.startswith("file://") else storage


def check_uri(uri: str, path: str = "storage") -> str:
    """A remote storage URI, checked for form only (no network here); raises ValueError naming ``path``."""
    u = urlparse(uri)
    if u.scheme not in SCHEMES:
        raise ValueError(f"{path}: {uri} has scheme {u.scheme!r}; use a path, file://, or one of {', '.join(s + '://' for s in SCHEMES)}")
    if not u.netloc:
        raise ValueError(f"{path}: {uri} names no bucket or host ({u.scheme}://BUCKET/PREFIX)")
    return uri.rstrip("/")


def join(uri: str, *parts: str) -> str:
    return "/".join([uri.rstrip("/"), *parts])


def filesystem(uri: str):
    """(pyarrow filesystem, path inside it) for ``uri``; one-line ValueError when pyarrow cannot open it."""
    import pyarrow.fs as pafs

    try:
        return pafs.FileSystem.from_uri(uri)
    except (OSError, ValueError) as e:  # pyarrow's ArrowIOError / ArrowInvalid
        raise ValueError(f"storage {uri}: pyarrow cannot open it: {str(e).splitlines()[0]}") from None


def staging_dir(uri: str) -> Path:
    """The local copy of a remote run directory: one folder per URI, named like the run (Tune's experiment name)."""
    root = Path(os.environ.get("O2O_STAGING") or Path.home() / ".cache" / "o2o-finetune" / "storage")
    parent, name = uri.rstrip("/").rsplit("/", 1)
    return root / re.sub(r"[^A-Za-z0-9_.+=-]+", "_", parent.replace(URI_MARK, "/").strip("/")) / name


@dataclass
class RemoteRun:
    """A run directory at ``uri`` with its local staging copy ``staging``."""

    uri: str
    staging: Path

    @classmethod
    def at(cls, uri: str) -> "RemoteRun":
        uri = uri.rstrip("/")
        return cls(uri, staging_dir(uri))

    @property
    def parent(self) -> str:
        return self.uri.rsplit("/", 1)[0]

    @property
    def name(self) -> str:
        return self.uri.rsplit("/", 1)[1]

    def pull_own_files(self) -> Path:
        """A fresh staging copy holding just the grid's own files that exist at the URI (none for a new run)."""
        import pyarrow.fs as pafs

        shutil.rmtree(self.staging, ignore_errors=True)
        self.staging.mkdir(parents=True)
        fs, root = filesystem(self.uri)
        for name in OWN_FILES:
            info = fs.get_file_info(f"{root}/{name}")
            if info.type == pafs.FileType.File:
                with fs.open_input_stream(info.path) as src:
                    (self.staging / name).write_bytes(src.read())
        return self.staging

    def pull_all(self) -> Path:
        """The whole experiment (Tune's state, every trial) into the staging copy, for the analysis."""
        import pyarrow.fs as pafs

        fs, root = filesystem(self.uri)
        self.staging.mkdir(parents=True, exist_ok=True)
        pafs.copy_files(root, str(self.staging), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
        return self.staging

    def push(self, *names: str) -> None:
        """Upload these files or folders of the staging copy (default: the grid's own files) to the URI."""
        import pyarrow.fs as pafs

        fs, root = filesystem(self.uri)
        for name in names or OWN_FILES:
            src = self.staging / name
            if src.exists():
                pafs.copy_files(str(src), f"{root}/{name}", source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)

    def exists(self) -> bool:
        import pyarrow.fs as pafs

        fs, root = filesystem(self.uri)
        return fs.get_file_info(root).type != pafs.FileType.NotFound


def remote_run(storage: str, name: str) -> Optional[RemoteRun]:
    """The RemoteRun of ``<storage>/<name>`` for a remote storage; None for a local one."""
    return None if is_local(storage) else RemoteRun.at(join(storage, name))


def analyze_runs(run_dirs, out_dir=None, **kw):
    """``orchestrator.analysis.analyze`` of run directories of which any may be at a URI: each remote one is
    downloaded into its staging copy and analysed there.  One remote run analysed into its own ``analysis/``
    (no ``out_dir``) gets that folder uploaded beside it."""
    from orchestrator.analysis import analyze  # pandas/matplotlib: not loaded by the spec, which imports this module

    dirs = [run_dirs] if isinstance(run_dirs, (str, os.PathLike)) else list(run_dirs)
    remote = [None if is_local(str(d)) else RemoteRun.at(str(d)) for d in dirs]
    for run in remote:  # every URI checked before anything is downloaded
        if run is not None and not run.exists():
            raise ValueError(f"RUN_DIR {run.uri} does not exist")
    local = [local_path(str(d)) if run is None else run.pull_all() for d, run in zip(dirs, remote)]
    outputs = analyze(local, out_dir, **kw)
    if out_dir is None and len(remote) == 1 and remote[0] is not None:
        remote[0].push(ANALYSIS)
    return outputs
