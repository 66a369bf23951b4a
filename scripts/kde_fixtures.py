#!/usr/bin/env python3
"""Writes crates/kde/tests/fixtures/sklearn.json: scikit-learn KernelDensity.score_samples on
fixed points for several bandwidths (h = 0.01 and h = 100 included), and the noise-free shapes
of make_moons and make_circles (unshuffled), for the Rust tests; and
crates/kde/tests/fixtures/sklearn_distributions.json: deciles of make_swiss_roll (noise 0.05)
and make_blobs (centres drawn per call; points around fixed centres, and their split), which the
Rust generators, drawing from other random streams, must match in distribution.

Run: scripts/.venv/bin/python scripts/kde_fixtures.py
"""
import json
import pathlib

import numpy as np
import sklearn
from sklearn.datasets import make_blobs, make_circles, make_moons, make_swiss_roll
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

# Distributions (large samples; the Rust test compares its own samples' CDF at these deciles).
dist_out = out.with_name("sklearn_distributions.json")
deciles = lambda v: np.quantile(v, np.arange(1, 10) / 10).tolist()
roll, _ = make_swiss_roll(n_samples=200_000, noise=0.05, random_state=1)
centres = np.array([[-8.0, -8.0], [0.0, 8.0], [8.0, -4.0]])
points, labels = make_blobs(n_samples=90_000, centers=centres, cluster_std=1.0, random_state=2)
dev = points - centres[labels]
_, split = make_blobs(n_samples=1001, centers=centres, cluster_std=1.0, random_state=3)
drawn = np.vstack([
    make_blobs(n_samples=3, centers=3, center_box=(-10.0, 10.0), return_centers=True, random_state=s)[2]
    for s in range(10_000)
])
dist = {
    "sklearn": sklearn.__version__,
    "swiss_roll_noise_0.05": {"n": 200_000, "deciles": [deciles(roll[:, j]) for j in range(3)]},
    "blobs": {
        "centres": centres.tolist(),
        "deviation_deciles": [deciles(dev[:, j]) for j in range(2)],
        "n_deviation": 90_000,
        "split_1001": np.bincount(split, minlength=3).tolist(),
        "drawn_centre_deciles": deciles(drawn.ravel()),
        "n_drawn": drawn.size,
    },
}
dist_out.write_text(json.dumps(dist) + "\n")
print(f"wrote {dist_out} ({dist_out.stat().st_size} bytes)")
