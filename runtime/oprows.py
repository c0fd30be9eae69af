"""Per-op profile rows shared by the backends: {op_type, name, calls, total_ms} → + mean_ms, percent."""

from __future__ import annotations


def finish_rows(rows: list[dict]) -> list[dict]:
    """Add mean and share of total to each row; sort by total time, descending."""
    total = sum(r["total_ms"] for r in rows) or 1.0
    rows.sort(key=lambda r: r["total_ms"], reverse=True)
    for r in rows:
        r["mean_ms"] = r["total_ms"] / r["calls"]
        r["percent"] = 100.0 * r["total_ms"] / total
    return rows
