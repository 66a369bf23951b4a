"""Reads thrive's TensorBoard event files back with the tensorboard package's own readers and
checks them against what thrive wrote to Parquet:

1. a `thrive sft` fine-tune, SIGKILLed after its first checkpoint and resumed with --resume:
   every tag of metrics.parquet (train/loss, eval/loss, train/learning_rate, train/grad_norm,
   train/tokens) has exactly its steps and values (float32), each step once in the raw file
   (so nothing written before the kill shows twice), and the timings (train/tokens_per_second,
   train/peak_memory_bytes) are there for every step;
2. `thrive gaussian --tensorboard DIR`: one TensorBoard run per results run, each metric a tag
   with the generation as step and the results' values;
3. `--tensorboard` at a directory that cannot be written fails and names it.

    python scripts/check_tensorboard.py target/debug/thrive

Needs scripts/requirements-tensorboard.txt (tensorboard, pyarrow). Prints `N passed, 0 failed`.
"""

import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "crates/sft/tests/fixtures/tiny-gemma2"
DATA = ROOT / "crates/pool/tests/fixtures/helpsteer2"
# metrics.parquet column -> TensorBoard tag.
TAGS = {
    "train_loss": "train/loss",
    "eval_loss": "eval/loss",
    "lr": "train/learning_rate",
    "grad_norm": "train/grad_norm",
    "tokens": "train/tokens",
}
TIMINGS = ["train/tokens_per_second", "train/peak_memory_bytes"]

passed = 0


def check(cond, what):
    global passed
    if not cond:
        print(f"FAILED: {what}")
        print("0 passed, 1 failed")
        sys.exit(1)
    passed += 1


def f32(x):
    import struct

    return struct.unpack("f", struct.pack("f", x))[0]


def accumulate(run_dir):
    acc = event_accumulator.EventAccumulator(str(run_dir), size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    return acc


def raw_steps(run_dir):
    """(tag, step) of every scalar in the event files, as written (no de-duplication)."""
    out = []
    for f in sorted(Path(run_dir).glob("*tfevents*")):
        for event in EventFileLoader(str(f)).Load():
            for v in event.summary.value:
                out.append((v.tag, event.step))
    return out


def compare_with_metrics(run_dir):
    table = pq.read_table(run_dir / "metrics.parquet").to_pydict()
    acc = accumulate(run_dir)
    tags = set(acc.Tags()["scalars"])
    for col, tag in TAGS.items():
        # Tokens are written per optimizer step (metrics.parquet also has 0 before training).
        trained_only = col == "tokens"
        want = [(s, v) for s, v, t in zip(table["step"], table[col], table["train_loss"])
                if v is not None and (t is not None or not trained_only)]
        got = [(e.step, e.value) for e in acc.Scalars(tag)]
        check([s for s, _ in got] == [s for s, _ in want], f"{run_dir}: {tag} steps {got} != {want}")
        for (s, g), (_, w) in zip(got, want):
            close = (math.isnan(w) and math.isnan(g)) or g == f32(w)
            check(close, f"{run_dir}: {tag} at step {s}: {g} != {w}")
    trained = [s for s, v in zip(table["step"], table["train_loss"]) if v is not None]
    for tag in TIMINGS:
        check(tag in tags, f"{run_dir}: no {tag}")
        check([e.step for e in acc.Scalars(tag)] == trained, f"{run_dir}: {tag} not at every step")
    raw = raw_steps(run_dir)
    check(len(raw) == len(set(raw)), f"{run_dir}: a (tag, step) written twice: {sorted(raw)}")
    return len(trained)


def sft(thrive, tmp):
    pool = tmp / "pool"
    subprocess.run(
        [thrive, "--log", "warn", "pool", "import", str(pool), "--helpsteer2", str(DATA),
         "--tokenizer", str(MODEL / "tokenizer.json")],
        check=True,
    )
    base = [thrive, "--log", "warn", "sft", "--model", str(MODEL), "--pool", str(pool), "--generation", "1",
            "--lr", "1e-2", "--sequences-per-step", "4", "--micro-batch", "4", "--max-len", "128",
            "--checkpoint-every", "4", "--eval-every", "2", "--epochs", "2", "--device", "cpu"]
    whole = tmp / "whole"
    subprocess.run(base + ["--out", str(whole)], check=True)
    steps = compare_with_metrics(whole)
    check(steps >= 4, f"only {steps} steps")

    # Killed once the event file holds steps after the newest checkpoint: those are written
    # again by the resumed run and must not show twice.
    killed = tmp / "killed"
    child = subprocess.Popen(base + ["--out", str(killed)])
    deadline = time.time() + 300
    while True:
        check(time.time() < deadline and child.poll() is None, "the fine-tune ended before it could be killed")
        checkpoints = [int(p.parent.name.split("-")[1]) for p in killed.glob("checkpoint-*/state.json")]
        written = [s for tag, s in raw_steps(killed) if tag == "train/loss"] if checkpoints else []
        if written and max(written) > max(checkpoints):
            os.kill(child.pid, signal.SIGKILL)
            break
        time.sleep(0.002)
    child.wait()
    check(child.returncode == -signal.SIGKILL, "not killed")
    subprocess.run(base + ["--out", str(killed), "--resume"], check=True)
    check(compare_with_metrics(killed) == steps, "the resumed fine-tune has another number of steps")
    # The same values as the uninterrupted run: resumption is bit-exact.
    a, b = accumulate(whole), accumulate(killed)
    for tag in TAGS.values():
        check([e.value for e in a.Scalars(tag)] == [e.value for e in b.Scalars(tag)], f"{tag}: resumed != whole")


def gaussian(thrive, tmp):
    out, tb = tmp / "gaussian.parquet", tmp / "tb"
    subprocess.run(
        [thrive, "--log", "warn", "gaussian", "--dim", "2", "--n", "16,32", "--generations", "5", "--seeds", "0..2",
         "--workflow", "replace,accumulate", "--out", str(out), "--tensorboard", str(tb)],
        check=True,
    )
    table = pq.read_table(out).to_pydict()
    meta = pq.read_schema(out).metadata
    metrics = json.loads(meta[b"thrive.metrics"])
    runs = sorted({p.parent for p in tb.rglob("*tfevents*")})
    keys = {(n, w, s) for n, w, s in zip(table["n"], table["workflow"], table["seed"])}
    check(len(runs) == len(keys) == 8, f"{len(runs)} TensorBoard runs for {len(keys)} results runs")
    for run in runs:
        seed = int(run.name.removeprefix("seed-"))
        name = run.parent.name
        n = int(name.split("n-")[1].split("_")[0])
        workflow = name.rsplit("_", 1)[1]
        acc = accumulate(run)
        rows = [i for i in range(len(table["seed"]))
                if table["seed"][i] == seed and table["n"][i] == n and table["workflow"][i] == workflow]
        for metric in metrics:
            want = [(table["generation"][i], table[metric][i]) for i in rows
                    if table[metric][i] is not None and math.isfinite(table[metric][i])]
            got = [(e.step, e.value) for e in acc.Scalars(metric)]
            check([s for s, _ in got] == [s for s, _ in want], f"{run}: {metric} steps")
            check(all(g == f32(w) for (_, g), (_, w) in zip(got, want)), f"{run}: {metric} values")

    blocker = tmp / "a-file"
    blocker.write_text("")
    bad = subprocess.run(
        [thrive, "gaussian", "--dim", "2", "--n", "16", "--generations", "2", "--seeds", "0..1",
         "--out", str(tmp / "x.parquet"), "--tensorboard", str(blocker / "tb")],
        capture_output=True, text=True,
    )
    check(bad.returncode != 0 and "--tensorboard" in bad.stderr and "a-file/tb" in bad.stderr, bad.stderr)


def main():
    thrive = str(Path(sys.argv[1]).resolve()) if len(sys.argv) > 1 else str(ROOT / "target/debug/thrive")
    with tempfile.TemporaryDirectory() as tmp:
        sft(thrive, Path(tmp))
        gaussian(thrive, Path(tmp))
    print(f"{passed} passed, 0 failed")


if __name__ == "__main__":
    main()
