"""`dfd config`: show a job's preset (or its hash) as JSON; it takes no overrides."""
from __future__ import annotations

import json

from dfd.config import DEFAULT_PRESET, JOBS, PRESETS


def register(sub) -> None:
    p = sub.add_parser("config", help="print a job's configuration preset as JSON",
                       description="Print the configuration a job would run with.")
    p.add_argument("job", choices=sorted(JOBS))
    p.add_argument("--preset", default=DEFAULT_PRESET, choices=sorted(PRESETS))
    p.add_argument("--hash", action="store_true", help="print the config hash only")
    p.set_defaults(func=run)


def run(args) -> int:
    from dfd import config

    cfg = config.preset(args.job, args.preset)
    if args.hash:
        print(config.config_hash(cfg))
    else:
        print(json.dumps(config.to_dict(cfg), indent=2, sort_keys=True))
    return 0
