#!/usr/bin/env python3
"""The authors' discrete-distribution loop (src/fit_discrete_distributions, protocol §7):
K outcomes, uniform start, n categorical draws a generation, the fit is the empirical
frequencies, and a run stops when the entropy falls below 1e-8 (one outcome left). Used by
scripts/discrete_fixtures.py (fixtures) and scripts/bench-discrete.sh (benchmark).

usage: discrete_reference.py --outcomes 10 --n 1000 --workflow replace --seeds 100
Prints the mean fixation generation and the wall time per run.
"""
import argparse
import time

import numpy as np


def run(outcomes, n, generations, workflow, seed, trace=None):
    """One run of at most `generations` fits; returns (entropies, fixation generation or None)."""
    np.random.seed(seed)
    pool = np.random.choice(outcomes, size=n, p=np.full(outcomes, 1.0 / outcomes))
    if trace is not None:
        trace.update(real=pool.copy(), generations=[])
    entropies = []
    fixation = None
    for t in range(1, generations + 1):
        if workflow == "accumulate-subsample":
            idx = np.random.choice(np.arange(pool.shape[0]), size=n, replace=False)
            fit = pool[idx]
        else:
            idx = None
            fit = pool
        p = np.bincount(fit, minlength=outcomes) / fit.shape[0]
        nz = p[p > 0]
        entropy = float(-np.sum(nz * np.log(nz)))
        entropies.append(entropy)
        record = dict(indices=idx, entropy=entropy, zero_outcomes=int(np.sum(p == 0)))
        if trace is not None:
            trace["generations"].append(record)
        if entropy < 1e-8:
            fixation = t
            break
        new = np.random.choice(outcomes, size=n, p=p)
        record["draws"] = new
        pool = new if workflow == "replace" else np.concatenate([pool, new])
    return entropies, fixation


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--outcomes", type=int, default=10)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--generations", type=int, default=100000)
    p.add_argument("--workflow", default="replace")
    p.add_argument("--seeds", type=int, default=100)
    a = p.parse_args()
    start = time.perf_counter()
    fixations = [run(a.outcomes, a.n, a.generations, a.workflow, seed)[1] for seed in range(a.seeds)]
    per_run = (time.perf_counter() - start) / a.seeds
    reached = [f for f in fixations if f is not None]
    mean = np.mean(reached) if reached else float("nan")
    print(f"reference: {per_run:.4f} s per run (mean fixation {mean:.1f} over {len(reached)} runs, numpy {np.__version__})")
    print(f"REFERENCE_SECONDS_PER_RUN={per_run}")


if __name__ == "__main__":
    main()
