"""Choosing the simulation backend once, and checking what it needs."""
from __future__ import annotations

import platform
from pathlib import Path

BACKENDS = ("auto", "gpu", "cpu")


class BackendUnavailable(RuntimeError):
    """The requested simulation backend cannot run on this machine."""


def can_render() -> bool:
    """True when SAPIEN finds a rendering device (primitive visuals can be built)."""
    import sapien

    try:
        sapien.render.RenderMaterial(base_color=[1, 1, 1, 1])
    except RuntimeError:
        return False
    return True


def physx_gpu_library() -> Path:
    """Where SAPIEN looks for its GPU PhysX library (it downloads it there on first use)."""
    import sapien.physx

    name = "PhysXGpu_64.dll" if platform.system() == "Windows" else "libPhysXGpu_64.so"
    return Path.home() / ".sapien" / "physx" / sapien.physx.version() / name


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def check_gpu_backend() -> None:
    """Raise :class:`BackendUnavailable` with one line saying what is missing for GPU simulation."""
    if not cuda_available():
        raise BackendUnavailable("backend 'gpu' needs a CUDA device, and torch sees none; use backend 'cpu'")
    lib = physx_gpu_library()
    if not lib.exists():
        raise BackendUnavailable(
            f"backend 'gpu' needs SAPIEN's GPU PhysX library, which is missing: put libPhysXGpu_64.so at {lib} "
            "(SAPIEN downloads it there on first use when online), or use backend 'cpu'"
        )


def resolve_backend(backend: str) -> str:
    """'auto' -> 'gpu' when CUDA and the GPU PhysX library are both present, else 'cpu'."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "cpu":
        return "cpu"
    if backend == "gpu":
        check_gpu_backend()
        return "gpu"
    try:
        check_gpu_backend()
    except BackendUnavailable:
        return "cpu"
    return "gpu"
