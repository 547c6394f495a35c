"""`dfd download`: fetch DFDC into a local folder, gs:// or s3://, the way it is distributed.

    dfd download --links dfdc-links.txt --out gs://bucket/dfdc-raw [--parts 0-4]
    dfd download --kaggle-files --out data/dfdc-sample
    dfd download --list

The 50 training parts come from the signed links of the competition's data page (saved into
a file, one per line): ``--links``. Kaggle's API serves only the labelled sample
(``train_sample_videos``), the unlabelled ``test_videos`` and ``sample_submission.csv``:
``--kaggle-files`` fetches them with the real kaggle client. Files already present and
verified are skipped; a failed file does not stop the others (exit 1 at the end, naming each
one). Credentials and URL signatures are never shown.
"""
from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("download", help="fetch DFDC parts (signed links) or Kaggle's files",
                       description="Fetch DFDC parts from the data page's signed links "
                                   "(--links), or the sample, test videos and submission "
                                   "template from Kaggle's API (--kaggle-files), with "
                                   "retries, resume and verification; skips what is already "
                                   "present and verified.")
    p.add_argument("--links", metavar="FILE",
                   help="file of signed part links copied from the competition's data page, "
                        "one per line (# comments allowed); local, gs:// or s3://")
    p.add_argument("--kaggle-files", nargs="?", const="all", metavar="NAMES",
                   help="fetch what Kaggle's API serves: train_sample_videos, test_videos, "
                        "sample_submission.csv (default: all three; or a comma list)")
    p.add_argument("--parts", help="part numbers, e.g. 0-4,7 (default: every linked part)")
    p.add_argument("--out", help="destination folder or gs:// / s3:// URI")
    p.add_argument("--competition", default="deepfake-detection-challenge",
                   help="Kaggle competition (default: %(default)s)")
    p.add_argument("--list", action="store_true",
                   help="list the competition's files on Kaggle's API with sizes (and which "
                        "--out has); download nothing")
    p.add_argument("--jobs", type=int, default=4,
                   help="files downloaded at the same time (default: %(default)s)")
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
    if args.links and args.kaggle_files:
        raise DfdError("--links and --kaggle-files fetch different things: one at a time")
    if not args.list and not args.out:
        raise DfdError("--out is required (a folder, gs:// or s3:// URI)")
    if args.retries < 0 or args.backoff < 0 or args.jobs < 1:
        raise DfdError("--retries and --backoff must not be negative, --jobs at least 1")
    parts = dfdc.parse_part_selection(args.parts)
    retry = kaggle.RetryPolicy(attempts=args.retries + 1, backoff_s=args.backoff)
    if args.list:
        return _list(kaggle.Competition(args.competition, retry=retry), args.out)
    progress = args.progress if args.progress is not None else (sys.stderr.isatty()
                                                                  and not args.quiet)
    if args.links:
        from dfd.kaggle import links

        results = links.download_links(links.read_links(args.links), args.out, parts=parts,
                                       jobs=args.jobs, retry=retry, scratch_dir=args.scratch,
                                       progress=progress)
    elif args.kaggle_files:
        if parts is not None:
            raise DfdError(kaggle.parts_not_served(args.competition))
        wanted = list(kaggle.API_FILES) if args.kaggle_files == "all" \
            else args.kaggle_files.split(",")
        results = kaggle.download_files(wanted, args.out, competition=args.competition,
                                        retry=retry, scratch_dir=args.scratch, jobs=args.jobs,
                                        progress=progress)
    else:
        # Parts from Kaggle's API: the real one lists none, and that error names --links.
        results = kaggle.download_parts(parts, args.out, competition=args.competition,
                                        retry=retry, scratch_dir=args.scratch,
                                        progress=progress)
    return _report(results)


def _label(r) -> str:
    part = r.file.part
    return f"part {part:02d}" if part is not None else r.file.name


def _report(results) -> int:
    from dfd.errors import DfdError

    failed = [r for r in results if r.status == "failed"]
    many = len(results) > 20  # the sample and test folders are 800 files: summarize those
    for r in results:
        if r.status == "failed":
            print(f"{_label(r)}: FAILED: {r.detail}")
        elif many:
            continue
        elif r.status == "fetched":
            print(f"{_label(r)}: fetched {_size(r.file.size)} in {r.seconds:.1f}s -> {r.uri}")
        else:
            print(f"{_label(r)}: already present and verified at {r.uri}")
    fetched = sum(r.status == "fetched" for r in results)
    print(f"{fetched} fetched, {len(results) - fetched - len(failed)} already present, "
          f"{len(failed)} failed")
    if failed:
        names = [f"{r.file.part:02d}" if r.file.part is not None else r.file.name
                 for r in failed]
        what = "part(s)" if all(r.file.part is not None for r in results) else "file(s)"
        raise DfdError(f"{len(failed)} of {len(results)} {what} failed: " + ", ".join(names))
    return 0


def _list(comp, out: str | None) -> int:
    from dfd import dfdc

    files = comp.files()
    for f in files:
        where = ""
        if out:
            where = "  present" if comp.is_current(f, out) else "  missing"
        print(f"{f.name}  {f.size:>14,d} B  {f.created or ''}{where}")
    print(f"{len(files)} files, {_size(sum(f.size for f in files))} in all")
    if not set(comp.parts()) - {dfdc.SAMPLE_PART}:  # the labelled sample is no training part
        print("the training parts are not among them: they come as links from the data page "
              "(dfd download --links FILE)")
    return 0


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    raise AssertionError("unreachable")
