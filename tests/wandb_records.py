"""Reading a W&B offline run file (``run-<id>.wandb``) for tests: wandb 0.31 writes it from its Go core and
ships no Python reader.  The file is ``:W&B`` + 3 header bytes, then LevelDB-log records (32 KiB blocks; each
chunk: 4-byte checksum, 2-byte little-endian length, 1-byte type FULL=1 FIRST=2 MIDDLE=3 LAST=4) whose
payloads are ``wandb_internal_pb2.Record`` protobufs."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

BLOCK = 32768
HEADER = 7


def records(path: Path) -> Iterator:
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B run file")
    pos, buf = HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # block trailer padding
            pos += left
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        if kind == 0:
            break
        chunk = data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        buf = chunk if kind in (1, 2) else buf + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(buf)
            yield record


def summary(path: Path) -> dict:
    """{"config": {key: value}, "history": [row, ...], "artifacts": {name: [file, ...]}, "exit_code": int}."""
    out: dict = {"config": {}, "history": [], "artifacts": {}, "exit_code": None}
    for r in records(path):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            out["config"].update({i.key: json.loads(i.value_json) for i in r.run.config.update})
        elif kind == "config":
            out["config"].update({i.key: json.loads(i.value_json) for i in r.config.update})
        elif kind == "history":
            out["history"].append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item})
        elif kind == "artifact":
            out["artifacts"][r.artifact.name] = [m.path for m in r.artifact.manifest.contents]
        elif kind == "exit":
            out["exit_code"] = r.exit.exit_code
    return out
