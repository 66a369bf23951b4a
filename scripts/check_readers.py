#!/usr/bin/env python3
"""Reads thrive's Parquet outputs with pandas, polars, DuckDB, Hugging Face `datasets` and pyarrow and
checks that every reader sees the promised columns, the expected row counts and the same values.
It makes the files itself with the `thrive` binary: a Gaussian and a KDE results file, a pool
(real splits and a synthetic batch) and a value-of-synthetic grid's results.

Run it once per change that touches a schema (results, pool, value grid):
    bash scripts/setup-python.sh readers
    scripts/.venv/bin/python scripts/check_readers.py [--thrive target/debug/thrive]
"""
import argparse
import glob
import math
import pathlib
import subprocess
import tempfile

import datasets
import duckdb
import pandas as pd
import polars as pl
import pyarrow.parquet as pq

ROOT = pathlib.Path(__file__).resolve().parent.parent

RESULT_COLUMNS = {
    "gaussian": ["setting", "workflow", "d", "n", "sigma2", "real", "seed", "generation",
                 "mean_squared_error", "det_ratio", "log_det_ratio", "trace_ratio", "fit_variance"],
    "kde": ["setting", "workflow", "dataset", "dim", "bandwidth", "h1", "n", "blobs", "seed", "generation",
            "nll", "h"],
}
POOL_COLUMNS = ["example_id", "source", "workflow", "chain", "generation", "split", "prompt", "response",
                "tokens", "dataset", "row_index", "extra", "base_model", "adapter_path", "adapter_sha256",
                "temperature", "top_p", "top_k", "max_new_tokens", "call_seed", "sample_index", "filter"]
VALUE_COLUMNS = ["setting", "num_real", "num_synthetic", "source", "seed", "eval_loss"]


def thrive(binary, *args):
    subprocess.run([binary, "--log", "warn", *map(str, args)], check=True, stdout=subprocess.DEVNULL)


def numeric_sums(columns, rows):
    """column -> sum of its finite numeric values, from a list of dict rows."""
    out = {}
    for c in columns:
        # (A missing value is None in most readers, NaN in pandas: only finite values count.)
        vals = [r[c] for r in rows if isinstance(r[c], (int, float)) and not isinstance(r[c], bool)]
        vals = [v for v in vals if math.isfinite(v)]
        if vals:
            out[c] = math.fsum(vals)
    return out


def check(path, columns, rows):
    """Every reader: the columns (in order, `columns` among them), `rows` rows, the same sums."""
    path = str(path)
    arrow = pq.read_table(path)
    names = arrow.column_names
    missing = [c for c in columns if c not in names]
    assert not missing, f"{path}: pyarrow misses {missing}"
    assert arrow.num_rows == rows, f"{path}: pyarrow reads {arrow.num_rows} rows, expected {rows}"
    want = numeric_sums(names, arrow.to_pylist())

    frame = pl.read_parquet(path)
    assert frame.columns == names, f"{path}: polars columns {frame.columns}"
    assert frame.height == rows, f"{path}: polars reads {frame.height} rows"
    got_pl = numeric_sums(names, frame.to_dicts())

    con = duckdb.connect()
    rel = con.execute(f"SELECT * FROM read_parquet('{path}')")
    duck_names = [d[0] for d in rel.description]
    duck_rows = [dict(zip(duck_names, r)) for r in rel.fetchall()]
    assert duck_names == names, f"{path}: DuckDB columns {duck_names}"
    assert len(duck_rows) == rows, f"{path}: DuckDB reads {len(duck_rows)} rows"
    got_duck = numeric_sums(names, duck_rows)

    ds = datasets.load_dataset("parquet", data_files=path, split="train")
    assert ds.column_names == names, f"{path}: datasets columns {ds.column_names}"
    assert ds.num_rows == rows, f"{path}: datasets reads {ds.num_rows} rows"
    got_ds = numeric_sums(names, ds.to_list())

    pdf = pd.read_parquet(path)
    assert list(pdf.columns) == names and len(pdf) == rows, f"{path}: pandas reads {list(pdf.columns)}, {len(pdf)} rows"
    got_pd = numeric_sums(names, [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()} for r in pdf.to_dict("records")])

    for reader, got in [("pandas", got_pd), ("polars", got_pl), ("DuckDB", got_duck), ("datasets", got_ds)]:
        assert got.keys() == want.keys(), f"{path}: {reader} numeric columns {sorted(got)} vs {sorted(want)}"
        for c, v in want.items():
            assert math.isclose(got[c], v, rel_tol=1e-12, abs_tol=1e-12), f"{path}: {reader} {c} sums to {got[c]}, pyarrow {v}"
    print(f"ok  {pathlib.Path(path).name}: {rows} rows, {len(names)} columns in pyarrow, pandas, polars, DuckDB, datasets")


def main():
    datasets.disable_progress_bars()
    ap = argparse.ArgumentParser()
    ap.add_argument("--thrive", default=str(ROOT / "target/debug/thrive"))
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        thrive(a.thrive, "gaussian", "--dim", "3", "--n", 10, "--generations", 5, "--seeds", "0..3",
               "--workflow", "all", "--out", tmp / "g.parquet")
        check(tmp / "g.parquet", RESULT_COLUMNS["gaussian"], 3 * 3 * 5)
        thrive(a.thrive, "kde", "--dataset", "moons", "--n", 20, "--generations", 4, "--seeds", "0..2",
               "--workflow", "all", "--bandwidth", "0.1,scott", "--out", tmp / "k.parquet")
        check(tmp / "k.parquet", RESULT_COLUMNS["kde"], 3 * 2 * 2 * 4)

        # A value grid (2 x 2 cells, one source sampling 8 prompted rows) on the sampler's tiny model.
        model = ROOT / "crates/sampler/tests/fixtures/tiny-trained"
        data = ROOT / "crates/pool/tests/fixtures/helpsteer2"
        (tmp / "value.toml").write_text(f"""
out = "{tmp / 'value'}"
model = "{model}"
device = "cpu"
[data]
helpsteer2 = "{data}"
[value]
num_real = [0, 8]
num_synthetic = [0, 8]
sources = [1]
seeds = [0]
[sft]
lr = 1e-2
warmup_ratio = 0.0
lora_rank = 4
lora_alpha = 8.0
sequences_per_step = 8
micro_batch = 8
max_len = 128
[sampling]
mode = "prompted"
count = 8
max_new_tokens = 8
batch_size = 8
""")
        thrive(a.thrive, "run", tmp / "value.toml")
        check(tmp / "value/results.parquet", VALUE_COLUMNS, 4)
        pool = tmp / "value/pool"
        check(pool / "real/train.parquet", POOL_COLUMNS, 60)
        check(pool / "real/validation.parquet", POOL_COLUMNS, 12)
        synthetic = sorted(glob.glob(str(pool / "synthetic/**/*.parquet"), recursive=True))
        assert len(synthetic) == 1, synthetic
        check(synthetic[0], POOL_COLUMNS, 8)
    print("every reader agrees")


if __name__ == "__main__":
    main()
