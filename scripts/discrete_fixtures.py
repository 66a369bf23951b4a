#!/usr/bin/env python3
"""Writes crates/discrete/tests/fixtures/numpy_loop.json: short runs of the authors'
discrete loop (scripts/discrete_reference.py) with every draw recorded (the real draws,
each generation's synthetic draws and subsample indices) and the entropy, zero-probability
count and fixation generation. The Rust test replays the same draws through thrive's setting.

Run: scripts/.venv/bin/python scripts/discrete_fixtures.py
"""
import json
import pathlib

import numpy as np

from discrete_reference import run

out = pathlib.Path(__file__).resolve().parent.parent / "crates/discrete/tests/fixtures/numpy_loop.json"


def ints(a):
    return None if a is None else [int(x) for x in a]


cases = []
# (K, n, generations, workflow, seed): Replace runs until fixation.
for k, n, generations, workflow, seed in [
    (4, 6, 500, "replace", 0),
    (10, 20, 500, "replace", 1),
    (3, 5, 8, "accumulate", 2),
    (5, 4, 8, "accumulate-subsample", 3),
]:
    trace = {}
    _, fixation = run(k, n, generations, workflow, seed, trace=trace)
    cases.append(
        {
            "outcomes": k,
            "n": n,
            "workflow": workflow,
            "real": ints(trace["real"]),
            "fixation": fixation,
            "generations": [
                {
                    "indices": ints(g["indices"]),
                    "entropy": g["entropy"],
                    "zero_outcomes": g["zero_outcomes"],
                    "draws": ints(g.get("draws")),
                }
                for g in trace["generations"]
            ],
        }
    )
out.write_text(json.dumps({"numpy": np.__version__, "cases": cases}) + "\n")
print(f"wrote {out}")
