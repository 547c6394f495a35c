"""Benchmarks: each module runs as `python -m benchmarks.<name>`, prints its figures and writes
them to bench-results/<name>.json. `python -m benchmarks` runs them all."""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

RESULTS = Path(os.environ.get("DFD_BENCH_RESULTS", "bench-results"))


def save(name: str, figures: dict) -> Path:
    """Write one benchmark's figures with the machine they were measured on."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {"benchmark": name, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                           "processor": platform.machine()},
               "figures": figures}
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    return path
