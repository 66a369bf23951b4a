#!/usr/bin/env python3
"""Proves that a thrive pool opens in pyarrow (and polars / DuckDB when installed).

usage: scripts/.venv/bin/python scripts/pool_check_pyarrow.py POOL_DIR
For instance, a pool with real and synthetic rows:
  cargo run --release -p thrive-pool --example pool_bench write /tmp/pool 2000 2
  scripts/.venv/bin/python scripts/pool_check_pyarrow.py /tmp/pool
Checks every file of pool.json: SHA-256 and row count as recorded, the schema version metadata,
every column with its type, example_id unique over the whole pool, and one dataset over all files.
Exits non-zero on the first mismatch.
"""
import hashlib
import json
import pathlib
import sys

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

EXPECTED = {
    "example_id": pa.string(), "source": pa.string(), "workflow": pa.string(), "chain": pa.uint64(),
    "generation": pa.uint32(), "split": pa.string(), "prompt": pa.string(), "response": pa.string(),
    "tokens": pa.uint32(), "dataset": pa.string(), "row_index": pa.uint64(), "extra": pa.string(),
    "base_model": pa.string(), "adapter_path": pa.string(), "adapter_sha256": pa.string(),
    "temperature": pa.float64(), "top_p": pa.float64(), "top_k": pa.uint32(), "max_new_tokens": pa.uint32(),
    "call_seed": pa.uint64(), "sample_index": pa.uint64(), "filter": pa.string(),
}


def fail(msg):
    sys.exit(f"FAIL: {msg}")


def main():
    pool = pathlib.Path(sys.argv[1])
    manifest = json.loads((pool / "pool.json").read_text())
    ids, paths, total = set(), [], 0
    for entry in manifest["files"]:
        path = pool / entry["path"]
        if hashlib.sha256(path.read_bytes()).hexdigest() != entry["sha256"]:
            fail(f"{path}: SHA-256 differs from the manifest")
        meta = pq.read_metadata(path).metadata or {}
        if meta.get(b"thrive.pool.schema_version") != str(manifest["schema_version"]).encode():
            fail(f"{path}: schema version metadata {meta.get(b'thrive.pool.schema_version')}")
        table = pq.read_table(path)
        if table.num_rows != entry["rows"]:
            fail(f"{path}: {table.num_rows} rows, manifest says {entry['rows']}")
        for name, ty in EXPECTED.items():
            if table.schema.field(name).type != ty:
                fail(f"{path}: column {name} is {table.schema.field(name).type}, expected {ty}")
        batch_ids = table.column("example_id").to_pylist()
        if ids.intersection(batch_ids) or len(set(batch_ids)) != len(batch_ids):
            fail(f"{path}: duplicate example_id")
        ids.update(batch_ids)
        sources = set(table.column("source").to_pylist())
        if sources != {"real" if entry["source"] == "real" else "synthetic"}:
            fail(f"{path}: source column {sources}")
        paths.append(str(path))
        total += table.num_rows
        print(f"ok  {entry['path']}: {table.num_rows} rows")
    dataset = ds.dataset(paths, format="parquet")
    if dataset.count_rows() != total:
        fail("pyarrow.dataset row count differs")
    print(f"pyarrow {pa.__version__}: {len(paths)} files, {total} rows, all checks passed")
    try:
        import polars as pl
        n = pl.scan_parquet(paths).select(pl.len()).collect().item()
        assert n == total, f"polars counted {n}"
        print(f"polars {pl.__version__}: {n} rows")
    except ImportError:
        print("polars not installed: skipped")
    try:
        import duckdb
        n = duckdb.sql(f"select count(*) from read_parquet({paths!r})").fetchone()[0]
        assert n == total, f"duckdb counted {n}"
        print(f"duckdb {duckdb.__version__}: {n} rows")
    except ImportError:
        print("duckdb not installed: skipped")


if __name__ == "__main__":
    main()
