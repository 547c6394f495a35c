"""What a scheduled `dfd sync` costs when nothing is new: `.venv/bin/python -m benchmarks.sync`

A links file holds the signed links of all 50 DFDC parts (the local links stand-in; tiny
files: nothing is downloaded when the check is right) and the output's manifest holds all 50
under the same config. Measured: the whole `dfd sync` command (interpreter, imports, lease,
reading the links, plan, "nothing new"), the in-process plan alone (reading 50 links, 50
receipt reads),
and the lease's acquire, renew and release on local disk.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchmarks
from standins.links import LinksStandIn

COMPETITION = "deepfake-detection-challenge"
PARTS = 50
ROOT = Path(__file__).resolve().parents[1]
SYNC_FLAGS = ["--preset", "paper"]


def _committed_output(out: Path, sizes: dict[int, int]) -> None:
    """A manifest listing every part as committed from the Kaggle file under the sync's config."""
    from dfd import manifest as mf
    from dfd.cli.preprocess import add_processing_arguments, config_from_args
    from dfd.config import part_config_hash

    parser = argparse.ArgumentParser()
    add_processing_arguments(parser)
    cfg = config_from_args(parser.parse_args(SYNC_FLAGS))
    entries = [{"part": p, "source": f"/staging/dfdc_train_part_{p:02d}.zip",
                "source_size": size, "source_checksum": "zipcd-sha256:bench",
                "config_hash": part_config_hash(cfg, p), "code_version": "0.1.0",
                "schema_version": 1, "videos_in_metadata": 2400, "videos_with_records": 2390,
                "videos_rejected": 10, "fakes_left_out": 0, "records": 11950,
                "committed_at": "2025-01-01T00:00:00+00:00"} for p, size in sizes.items()]
    out.mkdir(parents=True)
    (out / "manifest.json").write_text(mf.dumps(mf.with_parts(mf.empty(), entries)))


def main() -> dict:
    from dfd.kaggle.links import read_links
    from dfd.lease import Lease
    from pipelines.commit import read_manifest
    from pipelines.fetch import LinksSource, stage_parts

    figures: dict = {"parts_listed": PARTS}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAGGLE_", "XDG_"))}
    env.update(KAGGLE_API_ENVIRONMENT="TEST", KAGGLE_USERNAME="bench", KAGGLE_KEY="bench-key",
               PYTHONPATH=str(ROOT))
    saved = {k: os.environ.get(k) for k in ("KAGGLE_API_ENVIRONMENT", "KAGGLE_USERNAME",
                                             "KAGGLE_KEY")}
    standin = LinksStandIn()  # the data page's signed part links
    sizes = {}
    for p in range(PARTS):
        data = os.urandom(1024 + p)
        standin.add(f"dfdc_train_part_{p:02d}.zip", data)
        sizes[p] = len(data)
    try:
        with standin, tempfile.TemporaryDirectory() as tmp:
            out, staging = Path(tmp) / "out", Path(tmp) / "staging"
            links = Path(tmp) / "links.txt"
            links.write_text("\n".join(standin.link(f"dfdc_train_part_{p:02d}.zip")
                                       for p in range(PARTS)) + "\n")
            _committed_output(out, sizes)
            env["HOME"] = tmp
            runs = []
            for _ in range(3):
                t0 = time.perf_counter()
                run = subprocess.run(
                    [sys.executable, "-m", "dfd.cli", "sync", "--links", str(links),
                     "--staging", str(staging), "--output", str(out), *SYNC_FLAGS],
                    capture_output=True, text=True, env=env, cwd=ROOT)
                runs.append(time.perf_counter() - t0)
                if run.returncode or "nothing new: 50 part(s)" not in run.stdout:
                    raise SystemExit(f"sync did not find everything up to date:\n{run.stdout}"
                                     f"{run.stderr[-2000:]}")
            assert not standin.log, "an up-to-date sync downloaded something"
            figures["sync_nothing_new_cli_s"] = round(statistics.median(runs), 2)

            os.environ.update({k: env[k] for k in saved})
            manifest = read_manifest(str(out))
            plans = []
            for _ in range(3):
                t0 = time.perf_counter()
                plan = stage_parts(LinksSource(str(links), tuple(read_links(str(links)))),
                                   staging=str(staging), selection=None,
                                   manifest=manifest, beam_args=[],
                                   config_hash_of=lambda p: manifest["parts"][f"{p:02d}"]
                                   ["config_hash"])
                plans.append(time.perf_counter() - t0)
                assert plan["to_process"] == [] and len(plan["up_to_date"]) == PARTS
            figures["plan_50_parts_s"] = round(statistics.median(plans), 3)

            lease_out = str(Path(tmp) / "lease")
            cycles = []
            for _ in range(200):
                lease = Lease(lease_out, ttl_s=60)
                t0 = time.perf_counter()
                lease.acquire()
                lease.renew()
                lease.release()
                cycles.append(time.perf_counter() - t0)
            figures["lease_acquire_renew_release_ms"] = round(
                1000 * statistics.median(cycles), 3)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    for k, v in figures.items():
        print(f"{k}: {v}")
    print(f"wrote {benchmarks.save('sync', figures)}")
    return figures


if __name__ == "__main__":
    main()
