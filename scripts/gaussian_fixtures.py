#!/usr/bin/env python3
"""Writes crates/gaussian/tests/fixtures/numpy_fit.json: small datasets with numpy's
sample mean, maximum-likelihood covariance (np.cov(bias=True)), determinant and trace,
the estimator of the authors' src/fit_gaussians/fit_gaussians.py.

Run: scripts/.venv/bin/python scripts/gaussian_fixtures.py
"""
import json
import pathlib

import numpy as np

out = pathlib.Path(__file__).resolve().parent.parent / "crates/gaussian/tests/fixtures/numpy_fit.json"
rng = np.random.default_rng(20241022)
cases = []
for d, n, scale, offset in [(1, 10, 1.0, 0.0), (3, 7, 2.0, 5.0), (5, 40, 0.5, -3.0), (4, 3, 1.0, 1.0), (2, 50, 1e-6, 1.0)]:
    x = rng.standard_normal((n, d)) * scale + offset
    cov = np.cov(x, rowvar=False, bias=True).reshape(d, d)
    cases.append(
        {
            "dim": d,
            "points": x.ravel().tolist(),
            "mean": x.mean(axis=0).tolist(),
            "covariance": cov.ravel().tolist(),
            "det": float(np.linalg.det(cov)),
            "trace": float(np.trace(cov)),
        }
    )
out.write_text(json.dumps({"numpy": np.__version__, "cases": cases}, indent=1) + "\n")
print(f"wrote {out}")
