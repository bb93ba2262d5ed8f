"""Benchmark: start-up time of `geo --help` (goal: under 2 s).

Runs the console entry point in fresh interpreters and reports the median
wall time. Last line: JSON with `help_seconds_median`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="3 runs instead of 7")
    args = ap.parse_args()
    runs = 3 if args.quick else 7
    cmd = [sys.executable, "-c", "import sys; from tools.cli import main; sys.argv=['geo','--help']; main()"]
    subprocess.run(cmd, capture_output=True, check=True)  # warm the file cache
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True)
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    print(f"geo --help: median {med:.3f} s over {runs} runs (min {min(times):.3f}, max {max(times):.3f})")
    print(json.dumps({"help_seconds_median": round(med, 4), "runs": runs, "goal_seconds": 2.0}))


if __name__ == "__main__":
    main()
