#!/usr/bin/env python3
"""Third-party readers read fleetbench's results folder and agree with `controllerctl results`.

Usage: check_readers.py RESULTS_DIR RESULTS_JSON

RESULTS_DIR is the Hive-partitioned results folder
(model=<slug>/gpus=<N>/<sweep-id>.{requests,points,metrics}.parquet); RESULTS_JSON is what
`controllerctl results --dir RESULTS_DIR --format json` printed. pyarrow.dataset and DuckDB
each read the whole folder with Hive partitioning; both must find the same totals as
controllerctl: points, completed requests (from the points and from the requests files),
output tokens of the completed requests, and the summed output throughput per (model, GPU
count), with the model and GPU count taken from the partition keys.

Exits 0 when everything agrees, 1 on a mismatch, 2 when pyarrow or DuckDB is missing (a
missing reader is a failure, never a skip).
"""

import glob
import json
import math
import os
import re
import sys

try:
    import duckdb
    import pyarrow.compute as pc
    import pyarrow.dataset as ds
except ImportError as e:  # pragma: no cover - the message is the point
    print(
        f"check_readers: {e}; install the pinned readers: "
        "python3 -m pip install pyarrow==26.0.1 duckdb==2.0.0",
        file=sys.stderr,
    )
    sys.exit(2)


def slug(model):
    """fleetbench's model slug (proto/src/spec.rs model_slug): the partition value."""
    s = model.strip("/").replace("/", "--")
    return re.sub(r"[^A-Za-z0-9._-]", "_", s)


def close(a, b, rel=1e-9):
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-9)


def expected_totals(rows):
    per = {}
    for r in rows:
        key = (slug(r["model"]), int(r["gpus"]))
        per[key] = per.get(key, 0.0) + float(r["output_throughput"])
    return {
        "points": len(rows),
        "completed": sum(int(r["completed"]) for r in rows),
        # output throughput = output tokens of the completed requests / duration
        "output_tokens": sum(float(r["output_throughput"]) * float(r["duration_s"]) for r in rows),
        "throughput": per,
    }


def pyarrow_totals(root):
    def dataset(kind):
        files = sorted(glob.glob(os.path.join(root, "**", f"*.{kind}.parquet"), recursive=True))
        if not files:
            raise SystemExit(f"check_readers: no *.{kind}.parquet under {root}")
        return ds.dataset(files, format="parquet", partitioning="hive", partition_base_dir=root)

    points = dataset("points").to_table(columns=["model", "gpus", "model_name", "completed", "output_throughput"])
    requests = dataset("requests").to_table(columns=["success", "output_tokens"])
    ok = requests.filter(pc.field("success"))
    per = {}
    for m, g, name, tput in zip(
        points["model"].to_pylist(),
        points["gpus"].to_pylist(),
        points["model_name"].to_pylist(),
        points["output_throughput"].to_pylist(),
    ):
        assert m == slug(name), f"partition model={m} but model_name {name}"
        per[(m, int(g))] = per.get((m, int(g)), 0.0) + tput
    return {
        "points": points.num_rows,
        "completed": pc.sum(points["completed"]).as_py() or 0,
        "completed_requests": ok.num_rows,
        "output_tokens": pc.sum(ok["output_tokens"]).as_py() or 0,
        "throughput": per,
    }


def duckdb_totals(root):
    con = duckdb.connect()
    pts = os.path.join(root, "**", "*.points.parquet")
    req = os.path.join(root, "**", "*.requests.parquet")
    n, completed = con.execute(
        "SELECT count(*), coalesce(sum(completed), 0) FROM read_parquet(?, hive_partitioning = true)",
        [pts],
    ).fetchone()
    requests, tokens = con.execute(
        "SELECT count(*), coalesce(sum(output_tokens), 0) FROM read_parquet(?, hive_partitioning = true) WHERE success",
        [req],
    ).fetchone()
    per = {
        (m, int(g)): t
        for m, g, t in con.execute(
            "SELECT model, gpus, sum(output_throughput) FROM read_parquet(?, hive_partitioning = true) GROUP BY ALL",
            [pts],
        ).fetchall()
    }
    return {
        "points": n,
        "completed": int(completed),
        "completed_requests": requests,
        "output_tokens": int(tokens),
        "throughput": per,
    }


def compare(name, got, want):
    problems = []
    for key in ("points", "completed"):
        if got[key] != want[key]:
            problems.append(f"{key}: {got[key]} != controllerctl's {want[key]}")
    if got["completed_requests"] != want["completed"]:
        problems.append(
            f"completed requests in the requests files: {got['completed_requests']} != controllerctl's {want['completed']}"
        )
    if not close(got["output_tokens"], want["output_tokens"], rel=1e-6):
        problems.append(f"output tokens: {got['output_tokens']} != controllerctl's {want['output_tokens']:.3f}")
    if set(got["throughput"]) != set(want["throughput"]):
        problems.append(f"(model, gpus) partitions: {sorted(got['throughput'])} != {sorted(want['throughput'])}")
    else:
        for key, t in want["throughput"].items():
            if not close(got["throughput"][key], t):
                problems.append(f"output throughput of {key}: {got['throughput'][key]} != {t}")
    print(
        f"{name}: {got['points']} points, {got['completed']} completed requests "
        f"({got['completed_requests']} rows), {got['output_tokens']} output tokens, "
        f"{len(got['throughput'])} (model, gpus) partitions"
        + ("" if not problems else " -- MISMATCH"),
    )
    for p in problems:
        print(f"  {p}", file=sys.stderr)
    return not problems


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 64
    root, json_path = sys.argv[1], sys.argv[2]
    with open(json_path, encoding="utf-8") as f:
        want = expected_totals(json.load(f))
    print(
        f"controllerctl: {want['points']} points, {want['completed']} completed requests, "
        f"{want['output_tokens']:.1f} output tokens"
    )
    print(f"pyarrow {__import__('pyarrow').__version__}, duckdb {duckdb.__version__}")
    ok = compare("pyarrow.dataset", pyarrow_totals(root), want)
    ok = compare("duckdb", duckdb_totals(root), want) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
