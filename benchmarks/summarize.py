"""Print a pytest-benchmark JSON as a markdown table (group, case, median ms, ratio to the
slowest case of its group), for benchmarks/RESULTS.md.

Usage: python benchmarks/summarize.py bench.json
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict


def main(path: str) -> None:
    data = json.load(open(path))
    groups: dict[str, list[tuple[str, float, dict]]] = defaultdict(list)
    for bench in data["benchmarks"]:
        groups[bench.get("group") or bench["name"]].append(
            (bench["name"], bench["stats"]["median"] * 1e3, bench.get("extra_info", {}))
        )
    machine = data.get("machine_info", {})
    print(f"machine: {machine.get('node', '?')} {machine.get('cpu', {}).get('brand_raw', '')}")
    print("| group | case | median ms | speed-up vs slowest | device |")
    print("| --- | --- | ---: | ---: | --- |")
    for group, rows in groups.items():
        slowest = max(ms for _, ms, _ in rows)
        for name, ms, extra in sorted(rows, key=lambda r: -r[1]):
            print(f"| {group} | {name} | {ms:.3f} | {slowest / ms:.1f}x | {extra.get('device', '')} |")


if __name__ == "__main__":
    main(sys.argv[1])
