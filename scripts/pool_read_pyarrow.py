#!/usr/bin/env python3
"""Reference scan for scripts/bench-pool.sh: read the same Parquet files a pool view reads with pyarrow.

usage: pool_read_pyarrow.py POOL_DIR GENERATION
Reads real/train.parquet and synthetic/accumulate/chain-0/gen-0001..GENERATION-1 (the Accumulate
training set of GENERATION) batch by batch, all columns, one thread per file as our reader does,
and prints rows, seconds and decoded prompt+response bytes per second.
"""
import pathlib
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq

pa.set_cpu_count(1)
pa.set_io_thread_count(1)
pool, generation = pathlib.Path(sys.argv[1]), int(sys.argv[2])
files = [pool / "real" / "train.parquet"] + [
    pool / "synthetic" / "accumulate" / "chain-0" / f"gen-{g:04d}.parquet" for g in range(1, generation)
]
start = time.perf_counter()
rows = text = 0
for f in files:
    for batch in pq.ParquetFile(f).iter_batches(batch_size=8192, use_threads=False):
        rows += batch.num_rows
        text += batch.column("prompt").buffers()[2].size + batch.column("response").buffers()[2].size
secs = time.perf_counter() - start
print(f"pyarrow rows={rows} seconds={secs:.3f} text_bytes={text} text_gbps={text / secs / 1e9:.3f}")
