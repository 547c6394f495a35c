"""dfd: deepfake-video detection as a distributed data pipeline (library code, no Beam/Ray)."""
from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("dfd")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+src"
