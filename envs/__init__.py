"""Simulation layer: headless task variants, backend choice, batched vector env.

The names below load on first use (PEP 562), so that importing a light submodule such as ``envs.config`` (the CLI's
flag definitions) does not pull in torch and the simulator.
"""
from importlib import import_module

_SOURCES = {
    "BackendUnavailable": "envs.backend", "can_render": "envs.backend", "resolve_backend": "envs.backend",
    "EnvConfig": "envs.config",
    "EnvState": "envs.vector", "Step": "envs.vector", "VectorEnv": "envs.vector", "make_vector_env": "envs.vector",
}
__all__ = sorted(_SOURCES)


def __getattr__(name: str):
    if name not in _SOURCES:
        raise AttributeError(f"module 'envs' has no attribute {name!r}")
    return getattr(import_module(_SOURCES[name]), name)
