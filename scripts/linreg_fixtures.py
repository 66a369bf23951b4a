#!/usr/bin/env python3
"""Writes crates/linreg/tests/fixtures/numpy_loop.json: short runs of the authors'
linear-regression loop (scripts/linreg_reference.py, literal numpy: stacked designs, pinv)
with every draw recorded (w*, X_0, the test inputs, each generation's noise and subsample
indices) and the fitted weights and test MSE per generation. The Rust test replays the
same draws through thrive's setting.

Run: scripts/.venv/bin/python scripts/linreg_fixtures.py
"""
import json
import pathlib

import numpy as np

from linreg_reference import run

out = pathlib.Path(__file__).resolve().parent.parent / "crates/linreg/tests/fixtures/numpy_loop.json"


def flat(a):
    return None if a is None else np.asarray(a).ravel().tolist()


cases = []
# (d, n, sigma2, generations, seed): n > d + 1, n < d (minimum-norm fits), d = 1.
for d, n, sigma2, generations, seed in [(3, 10, 1.0, 6, 0), (8, 5, 0.5, 4, 1), (1, 10, 10.0, 5, 2)]:
    for workflow in ["replace", "accumulate", "accumulate-subsample"]:
        trace = {}
        run(d, n, sigma2, generations, workflow, seed, test_points=20, trace=trace)
        cases.append(
            {
                "dim": d,
                "n": n,
                "sigma2": sigma2,
                "workflow": workflow,
                "w_star": flat(trace["w_star"]),
                "design": flat(trace["x0"]),
                "real_noise": flat(trace["real_noise"]),
                "real_labels": flat(trace["y0"]),
                "test": flat(trace["x_test"]),
                "generations": [
                    {
                        "indices": flat(g["indices"]),
                        "weights": flat(g["weights"]),
                        "test_mse": g["test_mse"],
                        "noise": flat(g["noise"]),
                    }
                    for g in trace["generations"]
                ],
            }
        )
out.write_text(json.dumps({"numpy": np.__version__, "cases": cases}) + "\n")
print(f"wrote {out}")
