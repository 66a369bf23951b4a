#!/usr/bin/env python3
"""The authors' linear-regression loop (src/fit_linear_regressions/fit_linear_regressions.py,
protocol §6), literally: the design grows by a copy of X_0 every generation under Accumulate,
and every fit is numpy's pinv of the whole (or subsampled) stack. Used by
scripts/linreg_fixtures.py (fixtures) and scripts/bench-linreg.sh (benchmark).

usage: linreg_reference.py --dim 100 --n 1000 --sigma2 1 --generations 100 --workflow accumulate --seeds 1
Prints the test MSE of the last fit of each run and the wall time per run.
"""
import argparse
import time

import numpy as np


def run(dim, n, sigma2, generations, workflow, seed, test_points=1000, trace=None):
    """One run; returns the test MSE per generation. `trace`, a dict, receives every draw."""
    np.random.seed(seed)
    sigma = np.sqrt(sigma2)
    w_star = np.random.normal(size=dim)
    x0 = np.random.normal(size=(n, dim))
    eps = np.random.normal(size=n)
    y0 = x0 @ w_star + sigma * eps
    x_test = np.random.normal(size=(test_points, dim))
    y_test = x_test @ w_star  # noiseless
    if trace is not None:
        trace.update(w_star=w_star, x0=x0, real_noise=eps, y0=y0, x_test=x_test, generations=[])
    x, y = x0, y0
    out = []
    for t in range(generations):
        if workflow == "accumulate-subsample":
            idx = np.random.choice(np.arange(x.shape[0]), size=n, replace=False)
            x_fit, y_fit = x[idx], y[idx]
        else:
            idx = None
            x_fit, y_fit = x, y
        w_hat = np.linalg.pinv(x_fit) @ y_fit
        mse = float(np.mean((x_test @ w_hat - y_test) ** 2))
        out.append(mse)
        noise = np.random.normal(size=n)
        y_new = x0 @ w_hat + sigma * noise
        if trace is not None:
            trace["generations"].append(dict(indices=idx, weights=w_hat, test_mse=mse, noise=noise))
        if workflow == "replace":
            x, y = x0, y_new
        else:
            x, y = np.vstack([x, x0]), np.concatenate([y, y_new])
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dim", type=int, default=100)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--sigma2", type=float, default=1.0)
    p.add_argument("--generations", type=int, default=100)
    p.add_argument("--workflow", default="accumulate")
    p.add_argument("--seeds", type=int, default=1)
    a = p.parse_args()
    start = time.perf_counter()
    for seed in range(a.seeds):
        last = run(a.dim, a.n, a.sigma2, a.generations, a.workflow, seed)[-1]
    per_run = (time.perf_counter() - start) / a.seeds
    print(f"reference: {per_run:.4f} s per run (last test MSE {last:.4g}, numpy {np.__version__})")
    print(f"REFERENCE_SECONDS_PER_RUN={per_run}")


if __name__ == "__main__":
    main()
