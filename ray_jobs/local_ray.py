"""Ray on this machine only: an in-process Ray, and `ray start` nodes for a local rehearsal,
both reachable on 127.0.0.1 alone.

Ray replaces a 127.0.0.1 node address with the host's routable one, so its servers listen on
every interface of the machine, unless it believes it cannot form a cluster (its macOS/Windows
mode). An in-process Ray for one job never needs another machine, so the switch is flipped
just for its start. Rehearsing a multi-node cluster on one machine needs real separate nodes,
which Ray refuses in that mode; for those, ``python -m ray_jobs.local_ray start ...`` runs Ray's
own ``ray start`` with the loopback address kept as given:

    python -m ray_jobs.local_ray start --head --node-ip-address 127.0.0.1 --port 0 \\
        --include-dashboard false --num-cpus 2
    python -m ray_jobs.local_ray start --address 127.0.0.1:PORT --node-ip-address 127.0.0.1 \\
        --num-cpus 2
    dfd train ... --address 127.0.0.1:PORT

Both starts and every driver must agree on token authentication: give them the same
``RAY_AUTH_MODE=token`` and ``RAY_AUTH_TOKEN`` (Ray 2.60 turns tokens on for a head that finds
``~/.ray/auth_token`` but not for a joining node, which then cannot connect).
"""
from __future__ import annotations

import contextlib
import sys

import ray


def start_loopback_ray() -> None:
    """Start an in-process Ray reachable on 127.0.0.1 only, without a dashboard.

    The cluster switch is restored afterwards, so a later connection to a real cluster from
    this process still sees the routable address.
    """
    from ray._private import ray_constants

    can_cluster = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        # "local": never join a cluster that `ray start` left registered on this machine.
        ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1",
                 log_to_driver=False, configure_logging=False)
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = can_cluster


def is_loopback(address: str) -> bool:
    """Whether a Ray address (``host:port``, no ``ray://``) names this machine's loopback."""
    host = address.rsplit(":", 1)[0].strip("[]")
    return host in LOOPBACK_HOSTS


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@contextlib.contextmanager
def _loopback_kept():
    from ray._private import services

    resolve = services.resolve_ip_for_localhost
    services.resolve_ip_for_localhost = lambda host: host if host in LOOPBACK_HOSTS \
        else resolve(host)
    try:
        yield
    finally:
        services.resolve_ip_for_localhost = resolve


def connect(address: str) -> None:
    """Join an existing cluster as a driver. A loopback head address is kept as given: Ray
    would otherwise look for the head on the routable address, where a loopback-bound
    rehearsal cluster is not listening."""
    if is_loopback(address):
        with _loopback_kept():
            ray.init(address=address, _node_ip_address="127.0.0.1", log_to_driver=False)
    else:
        ray.init(address=address, log_to_driver=False)


def init(address: str | None = None) -> bool:
    """Connect to ``address``, or start an in-process Ray on 127.0.0.1 without one; True when
    this call did so (the caller shuts Ray down), False when Ray was already up."""
    if ray.is_initialized():
        return False
    if address:
        connect(address)
    else:
        start_loopback_ray()
    return True


def ray_cli(argv: list[str]) -> int:
    """Ray's own command line, with a loopback node or head address kept as given."""
    from ray.scripts.scripts import main

    sys.argv = ["ray", *argv]
    with _loopback_kept():
        try:
            return main() or 0
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)


if __name__ == "__main__":
    sys.exit(ray_cli(sys.argv[1:]))
