"""Print the Beam flags of a runner's option file, ready for `dfd preprocess`.

    export PROJECT=my-project REGION=europe-west4 BUCKET=my-bucket BEAM_IMAGE=...
    flags=$(python infra/beam/flags.py infra/beam/dataflow.flags) &&
      dfd preprocess --input gs://$BUCKET/dfdc --output gs://$BUCKET/faces $flags

An option file holds one Beam flag per line; blank lines and lines starting with `#` are
comments; `${NAME}` is replaced by the environment variable NAME. A variable left unset is an
error naming every missing one (exit 2), never an empty value: a flag such as
`--project=` would otherwise reach Beam and fail far from its cause, and the `&&` above keeps a
failed expansion from launching the pipeline on the local DirectRunner instead.
Standard library only, so it runs anywhere Python does.
"""
from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping

PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class FlagFileError(ValueError):
    """An option file that cannot become a list of flags."""


def placeholders(path: str) -> set[str]:
    """The environment variables an option file needs."""
    with open(path, encoding="utf-8") as f:
        return set(PLACEHOLDER.findall(f.read()))


def read_flags(path: str, env: Mapping[str, str] | None = None) -> list[str]:
    """The file's flags in order, placeholders filled from ``env`` (default: os.environ)."""
    env = os.environ if env is None else env
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    flags, missing = [], set()
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        # The shell splits an unquoted $flags on whitespace and globs *, ? and [: such a flag
        # would arrive in pieces or as file names.
        if any(ch.isspace() or ch in "*?[" for ch in line):
            raise FlagFileError(f"{path}:{number}: whitespace or *?[ in a flag would not "
                                f"survive the shell: {line!r}")
        if not line.startswith("--"):
            raise FlagFileError(f"{path}:{number}: not a --flag: {line!r}")
        missing.update(name for name in PLACEHOLDER.findall(line) if not env.get(name))
        flags.append(PLACEHOLDER.sub(lambda m: env.get(m.group(1), ""), line))
    if missing:
        raise FlagFileError(f"{path}: set {', '.join(sorted(missing))} in the environment")
    return flags


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        print("usage: python infra/beam/flags.py FILE.flags", file=sys.stderr)
        return 2
    try:
        print("\n".join(read_flags(argv[0])))
    except (OSError, FlagFileError) as exc:
        print(f"flags: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
