"""Pair benchmark runs of two trees: for each (loop, workload, aiolmdb row, peer), the median
over runs of the per-run ratio aiolmdb/peer, for the old and the new tree, and new/old with the
spread (min..max of the per-run ratios of each side). Usage:
    python tools/pair_bench.py --old a.json b.json --new c.json d.json"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict


def load(paths: list[str]) -> dict[tuple[str, str, str, str], list[float]]:
    out: dict[tuple[str, str, str, str], list[float]] = defaultdict(list)
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        for r in data["ratios"]:
            if r.get("median_ratio") is None:
                continue
            key = (r["loop"], r["workload"], r["impl"], r["peer"])
            out[key].append(float(r["median_ratio"]))
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--old", nargs="+", required=True)
    p.add_argument("--new", nargs="+", required=True)
    a = p.parse_args()
    old, new = load(a.old), load(a.new)
    print("| loop | workload | row vs peer | old (median, range) | new (median, range) | new/old |")
    print("|---|---|---|---:|---:|---:|")
    for key in sorted(set(old) & set(new)):
        o, n = old[key], new[key]
        mo, mn = statistics.median(o), statistics.median(n)
        loop, workload, impl, peer = key
        print(
            f"| {loop} | {workload} | {impl} vs {peer} | {mo:.3f} ({min(o):.3f}-{max(o):.3f}) "
            f"| {mn:.3f} ({min(n):.3f}-{max(n):.3f}) | {mn / mo:.2f} |"
        )


if __name__ == "__main__":
    main()
