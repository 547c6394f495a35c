"""What fetching parts from their signed links costs:
`.venv/bin/python -m benchmarks.links_download`

Serves part-sized files from the local links stand-in (loopback, so the network is not the
limit; in a process of its own for the timings, so that it does not share the downloader's
GIL) and times the whole path of `dfd.kaggle.links` (GET, md5 and crc32c hashed while the
bytes are written, size and x-goog-hash checks, atomic commit, receipt): one file alone, and
several at once (`--jobs`). Then one file whose connection is cut halfway (the stand-in in
this process, to inject the cut), counting the bytes the server sent for it against its size
(a download that started over would send about 1.5x), and a second run over committed files.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchmarks
from standins.links import Fault, LinksStandIn

SIZE = int(os.environ.get("DFD_BENCH_LINKS_MB", "256")) * 2**20
PARALLEL = 4


def main() -> dict:
    from dfd.kaggle import RetryPolicy, links

    figures: dict = {"file_mib": SIZE / 2**20, "parallel_files": PARALLEL}
    data = os.urandom(SIZE)
    names = [f"dfdc_train_part_{p:02d}.zip" for p in range(PARALLEL + 2)]
    retry = RetryPolicy(attempts=3, backoff_s=0.01)
    with tempfile.TemporaryDirectory() as tmp:
        for name in names[:1 + PARALLEL]:
            (Path(tmp) / name).write_bytes(data)
        server = subprocess.Popen([sys.executable, "-m", "standins.links",
                                   *(str(Path(tmp) / n) for n in names[:1 + PARALLEL])],
                                  stdout=subprocess.PIPE, text=True)
        try:
            urls = [server.stdout.readline().strip() for _ in range(1 + PARALLEL)]
            separate = {link.name: link for link in links.parse_links("\n".join(urls))}
            t = time.perf_counter()
            links.download_links([separate[names[0]]], str(Path(tmp) / "one"), retry=retry)
            one = time.perf_counter() - t
            batch = [separate[n] for n in names[1:1 + PARALLEL]]
            t = time.perf_counter()
            results = links.download_links(batch, str(Path(tmp) / "many"), jobs=PARALLEL,
                                           retry=retry)
            many = time.perf_counter() - t
            assert [r.status for r in results] == ["fetched"] * PARALLEL
        finally:
            server.terminate()
            server.wait()
        figures["one_link_fetch_verify_commit_mib_s"] = round(SIZE / 2**20 / one, 1)
        figures["parallel_links_total_mib_s"] = round(PARALLEL * SIZE / 2**20 / many, 1)

        cut = names[-1]
        with LinksStandIn() as standin:
            standin.add(cut, data)
            standin.objects[cut].etag, standin.objects[cut].goog_hash  # not what is measured
            [link] = links.parse_links(standin.link(cut))
            # mid-chunk, so that the bytes of the chunk in flight are lost and counted
            standin.fault(Fault(drop_after=SIZE // 2 + 12345, name=cut))
            t = time.perf_counter()
            [result] = links.download_links([link], str(Path(tmp) / "cut"), retry=retry)
            figures["fetch_with_one_cut_s"] = round(time.perf_counter() - t, 2)
            assert result.status == "fetched"
            figures["resumed_part_bytes_transferred_over_size"] = round(
                standin.bytes_served(cut) / SIZE, 6)
            assert hashlib.md5(Path(result.uri).read_bytes()).digest() == \
                hashlib.md5(data).digest()

            standin.log.clear()
            t = time.perf_counter()
            again = links.download_links([link], str(Path(tmp) / "cut"), retry=retry)
            figures["second_run_s"] = round(time.perf_counter() - t, 3)
            figures["second_run_bytes_transferred"] = sum(s.body_bytes for s in standin.log)
            assert [r.status for r in again] == ["present"]
    for k, v in figures.items():
        print(f"{k}: {v}")
    benchmarks.save("links_download", figures)
    return figures


if __name__ == "__main__":
    main()
