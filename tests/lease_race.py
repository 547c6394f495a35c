"""Leases racing for one output: every contender starts acquiring at the same moment."""
from __future__ import annotations

import threading

from dfd.lease import Lease, LeaseHeld


def race(leases: list[Lease]) -> tuple[list[str], list[str]]:
    """All acquire at once; returns (the holders that won, the holders refused)."""
    start, won, refused = threading.Barrier(len(leases)), [], []

    def one(lease: Lease) -> None:
        start.wait()
        try:
            lease.acquire()
            won.append(lease.holder)
        except LeaseHeld:
            refused.append(lease.holder)

    threads = [threading.Thread(target=one, args=(lease,)) for lease in leases]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return won, refused
