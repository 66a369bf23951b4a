#!/usr/bin/env python3
"""The authors' Gaussian loop (src/fit_gaussians/fit_gaussians.py, docs/protocol.md §2), for benchmarks.

usage: gaussian_reference.py --dim 100 --n 1000 --generations 100 --workflow accumulate --seeds 3
Prints the mean squared error of the last fit of each run and the wall time per run.
"""
import argparse
import time

import numpy as np


def run(dim, n, generations, workflow, seed, sigma2=1.0):
    np.random.seed(seed)
    pool = np.random.multivariate_normal(mean=np.zeros(dim), cov=sigma2 * np.eye(dim), size=n)
    out = []
    for _ in range(generations):
        if workflow == "accumulate-subsample":
            idx = np.random.choice(np.arange(pool.shape[0]), size=n, replace=False)
            fit = pool[idx]
        else:
            fit = pool
        mu = fit.mean(axis=0)
        cov = np.cov(fit, rowvar=False, bias=True).reshape(dim, dim)
        out.append((np.sum(mu**2), np.linalg.det(cov), np.trace(cov) / (dim * sigma2)))
        new = np.random.multivariate_normal(mean=mu, cov=cov, size=n)
        pool = new if workflow == "replace" else np.concatenate([pool, new])
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dim", type=int, default=100)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--generations", type=int, default=100)
    p.add_argument("--workflow", default="accumulate")
    p.add_argument("--seeds", type=int, default=3)
    a = p.parse_args()
    start = time.perf_counter()
    for seed in range(a.seeds):
        last = run(a.dim, a.n, a.generations, a.workflow, seed)[-1]
    per_run = (time.perf_counter() - start) / a.seeds
    print(f"reference: {per_run:.4f} s per run (last SE {last[0]:.4g}, numpy {np.__version__})")
    print(f"REFERENCE_SECONDS_PER_RUN={per_run}")


if __name__ == "__main__":
    main()
