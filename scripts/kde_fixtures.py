#!/usr/bin/env python3
"""Writes crates/kde/tests/fixtures/sklearn.json: scikit-learn KernelDensity.score_samples on
fixed points for several bandwidths (h = 0.01 and h = 100 included), and the noise-free shapes
of make_moons and make_circles (unshuffled), for the Rust tests.

Run: scripts/.venv/bin/python scripts/kde_fixtures.py
"""
import json
import pathlib

import numpy as np
import sklearn
from sklearn.datasets import make_circles, make_moons
from sklearn.neighbors import KernelDensity

out = pathlib.Path(__file__).resolve().parent.parent / "crates/kde/tests/fixtures/sklearn.json"
rng = np.random.default_rng(2410)
cases = []
for dim, n, m in [(2, 50, 20), (3, 40, 15), (1, 30, 10)]:
    points = rng.standard_normal((n, dim)) * 2.0
    queries = np.vstack([rng.standard_normal((m - 2, dim)) * 3.0, np.full((1, dim), 40.0), np.full((1, dim), -25.0)])
    for h in [0.01, 0.0316, 0.1, 1.0, 10.0, 100.0]:
        kde = KernelDensity(kernel="gaussian", bandwidth=h).fit(points)
        cases.append(
            {
                "dim": dim,
                "h": h,
                "points": points.ravel().tolist(),
                "queries": queries.ravel().tolist(),
                "log_density": kde.score_samples(queries).tolist(),
            }
        )
shapes = {}
for n in [9, 10, 101]:
    x, _ = make_moons(n_samples=n, noise=None, shuffle=False)
    shapes[f"moons_{n}"] = x.ravel().tolist()
    x, _ = make_circles(n_samples=n, noise=None, shuffle=False)
    shapes[f"circles_{n}"] = x.ravel().tolist()
out.write_text(json.dumps({"sklearn": sklearn.__version__, "cases": cases, "shapes": shapes}) + "\n")
print(f"wrote {out} ({out.stat().st_size} bytes)")
