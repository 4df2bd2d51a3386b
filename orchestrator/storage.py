"""Where a grid's results live: a local path (shared by NFS on a cluster) or any URI that pyarrow's filesystems
accept (``s3://bucket/prefix``, ``gs://...``, ``file:///abs/path``), which Tune takes as its ``storage_path``."""
from __future__ import annotations

URI_MARK = "://"


def is_uri(storage: str) -> bool:
    return URI_MARK in storage


def is_local(storage: str) -> bool:
    """A directory on this machine's filesystem: a path, or a ``file://`` URI."""
    return not is_uri(storage) or storage.startswith("file://")


def local_path(storage: str) -> str:
    """The filesystem path of a local storage (``file:///a/b`` -> ``/a/b``)."""
    return storage[len("file://"):] if storage.startswith("file://") else storage
