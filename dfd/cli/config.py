"""`dfd config`: show a job's preset (or its hash) as JSON; it takes no overrides.
``--provenance`` marks each field of the ``paper`` preset as stated by the paper or assumed."""
from __future__ import annotations

import json
import sys

from dfd.config import DEFAULT_PRESET, JOBS, PRESETS


def register(sub) -> None:
    p = sub.add_parser("config", help="print a job's configuration preset as JSON",
                       description="Print the configuration a job would run with.")
    p.add_argument("job", choices=sorted(JOBS))
    p.add_argument("--preset", default=DEFAULT_PRESET, choices=sorted(PRESETS))
    p.add_argument("--hash", action="store_true", help="print the config hash only")
    p.add_argument("--provenance", action="store_true",
                   help="with --preset paper: each field's value and whether the paper states "
                        "it or it is our assumption, and why")
    p.set_defaults(func=run)


def run(args) -> int:
    from dfd import config

    cfg = config.preset(args.job, args.preset)
    if args.provenance:
        if args.preset != "paper":
            print(f"dfd config: --provenance marks the paper preset only (what the paper "
                  f"states and what we assume); {args.preset!r} is ours throughout",
                  file=sys.stderr)
            return 2
        print(json.dumps(config.paper_provenance(args.job), indent=2, default=list,
                         ensure_ascii=False))
    elif args.hash:
        print(config.config_hash(cfg))
    else:
        print(json.dumps(config.to_dict(cfg), indent=2, sort_keys=True))
    return 0
