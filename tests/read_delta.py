"""Independent reader for the integration tests: prints a Delta table as JSON lines.

Uses the `deltalake` package from PyPI (delta-rs's Python binding, a separate
implementation path from the Rust writer) and pyarrow. Usage:
    read_delta.py PATH [VERSION]
Rows of changelog tables come sorted by (_sluice_lsn, _sluice_seq); values that JSON cannot hold are printed
with str().
"""
import json
import math
import os
import sys

from deltalake import DeltaTable

path = sys.argv[1]
version = int(sys.argv[2]) if len(sys.argv) > 2 else None
table = DeltaTable(path, version=version)
rows = table.to_pyarrow_table().to_pylist()
for row in rows:
    for key, value in row.items():
        if isinstance(value, float) and not math.isfinite(value):
            row[key] = str(value)
if rows and "_sluice_lsn" in rows[0]:
    rows.sort(key=lambda r: (r["_sluice_lsn"], r["_sluice_seq"]))
for row in rows:
    print(json.dumps(row, default=str, sort_keys=True))
sys.stdout.flush()
# Skip interpreter teardown: the deltalake binding can abort there ("terminate called
# without an active exception") after everything was printed.
os._exit(0)
