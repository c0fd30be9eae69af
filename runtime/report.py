"""Report writers (JSON, CSV); both atomic: write a temp file beside the target, then os.replace.

CSV layout: a first block `metric,value` (model, target, runs, threads, latency
stats, throughput, peak RSS), one blank line, then the op rows with header
`op_type,name,calls,total_ms,mean_ms,percent` (header present even when no ops).
"""
from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path

OP_COLUMNS = ("op_type", "name", "calls", "total_ms", "mean_ms", "percent")


def _atomic_write(path: Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def write_json(report: dict, path: Path) -> Path:
    return _atomic_write(path, json.dumps(report, indent=2) + "\n")


def summary_rows(report: dict) -> list[tuple[str, object]]:
    rows = [(k, report.get(k)) for k in ("model", "target", "backend", "runs", "warmup", "threads", "batch")
            if k in report]
    rows += list((report.get("latency") or {}).items())
    rows += [(k, report[k]) for k in ("throughput_per_s", "peak_rss_mb") if k in report]
    return rows


def write_csv(report: dict, path: Path) -> Path:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(("metric", "value"))
    w.writerows(summary_rows(report))
    w.writerow(())
    w.writerow(OP_COLUMNS)
    for row in report.get("ops") or []:
        w.writerow([row.get(c) for c in OP_COLUMNS])
    return _atomic_write(path, buf.getvalue())
