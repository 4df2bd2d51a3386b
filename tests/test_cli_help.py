"""``--help`` of every command: it explains every flag, and building it loads neither torch nor the simulator
(so a user reads the help, and a bad flag is refused, in well under a second)."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_the_parser_loads_no_torch_no_simulator_and_every_command_prints_its_help():
    code = """
import argparse, json, sys
from orchestrator.cli import build_parser
parser = build_parser()
heavy = sorted(m for m in ("torch", "mani_skill", "sapien", "ray") if m in sys.modules)
sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
missing = [f"{name} {'/'.join(a.option_strings)}" for name, p in sub.choices.items() for a in p._actions
           if a.option_strings and a.dest != "help" and not (a.help or "").strip()]
unprintable = []  # commands whose --help argparse cannot format (a stray % in a help text)
for name, p in sub.choices.items():
    try:
        p.format_help()
    except (ValueError, TypeError, KeyError) as e:
        unprintable.append(f"{name}: {e}")
print(json.dumps({"heavy": heavy, "missing": missing, "unprintable": unprintable, "commands": sorted(sub.choices)}))
"""
    out = json.loads(subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout)
    assert out["heavy"] == [] and out["missing"] == [] and out["unprintable"] == []
    assert {"pretrain", "select", "finetune", "collect", "pretrain-iql", "pretrain-critic", "grid", "resume",
            "analyze"} <= set(out["commands"])


def test_each_pipeline_flag_is_its_config_field_with_the_declared_help():
    """The offline pipeline's commands take their flags from the dataclasses in ``algorithms.pipeline_config``."""
    from algorithms.pipeline_config import PretrainConfig

    out = subprocess.run([sys.executable, "-m", "orchestrator", "pretrain", "--help"], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout
    flat = " ".join(out.split())
    for f in fields(PretrainConfig):
        assert "--" + f.name.replace("_", "-") in out
        assert " ".join(f.metadata["help"].split())[:40] in flat.replace("%%", "%")
