#!/usr/bin/env python3
"""The authors' KDE loop (src/fit_kdes/fit_kdes.py, docs/protocol.md §3) with scikit-learn, for benchmarks.

usage: kde_reference.py --dataset moons --bandwidth 0.1 --n 1000 --generations 100 --workflow accumulate --seeds 3
Prints the mean test NLL of the last fit over runs and the wall time per run.
"""
import argparse
import time

import numpy as np
from sklearn import datasets
from sklearn.neighbors import KernelDensity

GENERATORS = {
    "blobs": lambda n: datasets.make_blobs(n_samples=n, n_features=2)[0],
    "circles": lambda n: datasets.make_circles(n_samples=n, noise=0.05)[0],
    "moons": lambda n: datasets.make_moons(n_samples=n, noise=0.05)[0],
    "swiss_roll": lambda n: datasets.make_swiss_roll(n_samples=n, noise=0.05)[0],
}


def run(dataset, bandwidth, n, generations, workflow, seed):
    np.random.seed(seed)
    pool = GENERATORS[dataset](n)
    test = GENERATORS[dataset](500)
    nlls = []
    for _ in range(generations):
        if workflow == "accumulate-subsample":
            fit = pool[np.random.choice(pool.shape[0], size=n, replace=False)]
        else:
            fit = pool
        kde = KernelDensity(kernel="gaussian", bandwidth=bandwidth).fit(fit)
        nlls.append(-kde.score_samples(test).mean())
        new = kde.sample(n_samples=n)
        pool = new if workflow == "replace" else np.concatenate([pool, new])
    return nlls


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dataset", default="moons")
    p.add_argument("--bandwidth", default="0.1")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--generations", type=int, default=100)
    p.add_argument("--workflow", default="accumulate")
    p.add_argument("--seeds", type=int, default=3)
    a = p.parse_args()
    bandwidth = a.bandwidth if a.bandwidth in ("scott", "silverman") else float(a.bandwidth)
    start = time.perf_counter()
    last = [run(a.dataset, bandwidth, a.n, a.generations, a.workflow, seed)[-1] for seed in range(a.seeds)]
    seconds = (time.perf_counter() - start) / a.seeds
    print(f"reference (scikit-learn KernelDensity): mean NLL at generation {a.generations} = {np.mean(last):.4f}, "
          f"{seconds:.3f} s per run")
    print(f"REFERENCE_SECONDS_PER_RUN={seconds}")


if __name__ == "__main__":
    main()
