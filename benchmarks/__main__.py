"""Run every benchmark module in this package, one after the other."""
import importlib
import pkgutil
import sys

import benchmarks

names = sys.argv[1:] or sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__)
                               if not m.name.startswith("_"))
for name in names:
    print(f"=== benchmarks.{name}", flush=True)
    importlib.import_module(f"benchmarks.{name}").main()
