"""Restoring saved random-generator states, also on a machine of another kind.

A trial's generators live on its compute device (a CUDA generator on a GPU machine, a CPU one elsewhere), and
their saved states are device-specific: a CUDA generator's state is 16 bytes (seed and offset), a CPU one's is
the 5,056-byte Mersenne-Twister state, and neither can be set into the other.  A run checkpointed on a GPU machine
and resumed on a CPU one (or back) would otherwise fail to resume.  There the generator is instead seeded from a
digest of the saved state: the stream stays a deterministic function of the saved run (a resume replays bit for bit
on the same kind of machine, and reproducibly on the other), but it is a new stream.
"""
from __future__ import annotations

import hashlib

import torch


def restore(gen: torch.Generator, state: torch.Tensor) -> bool:
    """Set ``gen`` to ``state`` (a ``get_state()`` ByteTensor).  Returns False where ``state`` came from a generator of
    another device type and ``gen`` was seeded from its digest instead."""
    if state.numel() == gen.get_state().numel():
        gen.set_state(state)
        return True
    digest = hashlib.sha256(state.cpu().numpy().tobytes()).digest()
    gen.manual_seed(int.from_bytes(digest[:8], "little") >> 1)
    return False
