"""`dfd download`: fetch DFDC parts from Kaggle into a local folder, gs:// or s3://.

    dfd download --parts 0-4 --out gs://bucket/dfdc-raw
    dfd download --list

Parts already present and verified are skipped; a failed part does not stop the others (exit 1
at the end). Credentials come from Kaggle's usual places and are never shown.
"""
from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("download", help="fetch DFDC parts from Kaggle",
                       description="Fetch DFDC parts from Kaggle with retries, resume and "
                                   "verification; skips parts already present and verified.")
    p.add_argument("--parts", help="part numbers, e.g. 0-4,7 (default: every listed part)")
    p.add_argument("--out", help="destination folder or gs:// / s3:// URI")
    p.add_argument("--competition", default="deepfake-detection-challenge",
                   help="Kaggle competition (default: %(default)s)")
    p.add_argument("--list", action="store_true",
                   help="list the competition's parts with sizes (and which --out has); "
                        "download nothing")
    p.add_argument("--retries", type=int, default=5,
                   help="retries per file after the first attempt (default: %(default)s)")
    p.add_argument("--backoff", type=float, default=2.0,
                   help="seconds to wait after the first failure, doubled after each further "
                        "one (default: %(default)s)")
    p.add_argument("--scratch", help="local folder for partial downloads to a remote --out "
                                     "(default: ~/.cache/dfd/kaggle)")
    bars = p.add_mutually_exclusive_group()
    bars.add_argument("--progress", dest="progress", action="store_true", default=None,
                      help="progress bars even when stderr is not a terminal")
    bars.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(func=run)


def run(args) -> int:
    import logging

    from dfd import dfdc, kaggle
    from dfd.errors import DfdError

    # urllib3's debug log quotes every request line, and a download's is a signed URL.
    logging.getLogger("urllib3").setLevel(logging.INFO)
    if not args.list and not args.out:
        raise DfdError("--out is required (a folder, gs:// or s3:// URI)")
    if args.retries < 0 or args.backoff < 0:
        raise DfdError("--retries and --backoff must not be negative")
    parts = dfdc.parse_part_selection(args.parts)
    retry = kaggle.RetryPolicy(attempts=args.retries + 1, backoff_s=args.backoff)
    if args.list:
        return _list(kaggle.Competition(args.competition, retry=retry), args.out, parts)

    progress = args.progress if args.progress is not None else (sys.stderr.isatty()
                                                                  and not args.quiet)
    results = kaggle.download_parts(parts, args.out, competition=args.competition, retry=retry,
                                    scratch_dir=args.scratch, progress=progress)
    failed = [r for r in results if r.status == "failed"]
    for r in results:
        label = f"part {r.file.part:02d}"
        if r.status == "fetched":
            print(f"{label}: fetched {_size(r.file.size)} in {r.seconds:.1f}s -> {r.uri}")
        elif r.status == "present":
            print(f"{label}: already present and verified at {r.uri}")
        else:
            print(f"{label}: FAILED: {r.detail}")
    fetched = sum(r.status == "fetched" for r in results)
    print(f"{fetched} fetched, {len(results) - fetched - len(failed)} already present, "
          f"{len(failed)} failed")
    if failed:
        raise DfdError(f"{len(failed)} of {len(results)} part(s) failed: "
                       + ", ".join(f"{r.file.part:02d}" for r in failed))
    return 0


def _list(comp, out: str | None, parts: set[int] | None) -> int:
    listed = comp.parts()
    for part, f in sorted(listed.items()):
        if parts is not None and part not in parts:
            continue
        where = ""
        if out:
            where = "  present" if comp.is_current(f, out) else "  missing"
        print(f"{f.basename}  {f.size:>14,d} B  {f.created or ''}{where}")
    print(f"{len(listed)} parts, {_size(sum(f.size for f in listed.values()))} in all")
    return 0


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    raise AssertionError("unreachable")
