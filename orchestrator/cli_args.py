"""Flags generated from config dataclasses, so every hyperparameter is a visible CLI flag."""
from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any


def comma_list(text: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``: a comma-separated flag value, blanks dropped."""
    return [item.strip() for item in text.split(",") if item.strip()]


def _bool(s: str) -> bool:
    v = s.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {s!r}")


def _optional(inner):
    def parse(s: str):
        if s.strip().lower() in ("none", "null", ""):
            return None
        return inner(s)

    parse.__name__ = getattr(inner, "__name__", "value")
    return parse


def _parser_for(tp):
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _optional(_parser_for(args[0]))
    if tp is bool:
        return _bool
    if tp in (int, float, str):
        return tp
    return str


def add_dataclass_args(parser: argparse.ArgumentParser, cls, skip: tuple = (), group: str | None = None) -> None:
    """One ``--flag-name`` per field of ``cls``, typed, with the dataclass default shown in --help."""
    hints = typing.get_type_hints(cls)
    target = parser.add_argument_group(group) if group else parser
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.init:
            continue
        default = f.default if f.default is not dataclasses.MISSING else (f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        target.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            type=_parser_for(hints[f.name]),
            default=argparse.SUPPRESS,
            # argparse expands %-placeholders in help: a literal % (success rates) must reach it as %%
            help=f"{f.metadata.get('help', '')} (default: {default})".replace("%", "%%").strip(),
        )


def dataclass_from_args(cls, ns: argparse.Namespace, **overrides: Any):
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {k: v for k, v in vars(ns).items() if k in names}
    kwargs.update(overrides)
    return cls(**kwargs)
