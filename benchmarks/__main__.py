"""`make bench`: run the benchmarks and merge their figures into benchmarks/results.json.

Each benchmark owns one key of the results file; running a subset keeps the others.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import (
    content_upworthy,
    gates,
    learning,
    line_demo,
    make_run_fresh,
    model_layer,
    ope,
    reliability,
    replies,
    scale,
)

RESULTS = Path(__file__).with_name("results.json")
BENCHMARKS: dict[str, Callable[[], dict]] = {
    "line_demo": line_demo.run,
    "make_run_fresh": make_run_fresh.run,
    "model_layer_throughput": model_layer.run,
    "gates": gates.run,
    "reliability": reliability.run,
    "learning": learning.run,
    "replies": replies.run,
    "ope": ope.run,
    "content": content_upworthy.run,
    "scale": scale.run,  # about 30 minutes: one 100,000-lead day and the marts over 10M events
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("names", nargs="*", help=f"benchmarks to run, of {sorted(BENCHMARKS)} (default: all)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - BENCHMARKS.keys())
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; known: {sorted(BENCHMARKS)}")
    for name in args.names or BENCHMARKS:
        print(f"benchmark {name} …", flush=True)
        figures = BENCHMARKS[name]()
        figures["measured_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        figures["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": sys.platform}
        # Read again just before writing: a benchmark runs for minutes, and another one may
        # have written its own key meanwhile.
        results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
        results[name] = figures
        RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
        print(json.dumps({name: figures}, indent=2), flush=True)
    print(f"written: {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
