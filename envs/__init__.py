"""Simulation layer: headless task variants, backend choice, batched vector env."""
from envs.backend import BackendUnavailable, can_render, resolve_backend
from envs.config import EnvConfig
from envs.vector import EnvState, Step, VectorEnv, make_vector_env

__all__ = ["BackendUnavailable", "EnvConfig", "EnvState", "Step", "VectorEnv", "can_render", "make_vector_env", "resolve_backend"]
