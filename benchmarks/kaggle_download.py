"""What fetching a file from Kaggle's API costs besides the network:
`.venv/bin/python -m benchmarks.kaggle_download`

The API serves the sample, the test videos and the submission template (the parts come as
signed links: benchmarks.links_download). Serves one file from the local Kaggle stand-in
(loopback, so the network is not the limit) and times the whole path of `dfd.kaggle` (list,
download through the kaggle client, verify size and checksums, commit), the verification
alone, and a resume after a cut connection, including the bytes the kaggle downloader's
abandoned first stream pulls before its Range request.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import time
from pathlib import Path

import benchmarks
from standins.kaggle import Fault, KaggleStandIn, etag, goog_hash

COMPETITION = "deepfake-detection-challenge"
SIZE = int(os.environ.get("DFD_BENCH_KAGGLE_MB", "256")) * 2**20


def main() -> dict:
    from dfd import kaggle
    from dfd.kaggle import checks

    data = os.urandom(SIZE)
    name = "test_videos.zip"  # what the API serves; parts come as links (links_download)
    figures: dict = {"file_mib": SIZE / 2**20}
    saved = {k: os.environ.get(k) for k in ("KAGGLE_API_ENVIRONMENT", "KAGGLE_USERNAME",
                                             "KAGGLE_KEY")}
    standin = KaggleStandIn(COMPETITION, username="bench", key="bench-key")
    standin.add_file(name, data)
    etag(data), goog_hash(data)  # the stand-in's own hashing is not what is measured
    os.environ.update(KAGGLE_API_ENVIRONMENT="TEST", KAGGLE_USERNAME="bench",
                      KAGGLE_KEY="bench-key")
    try:
        with standin, tempfile.TemporaryDirectory() as tmp:
            comp = kaggle.Competition(COMPETITION,
                                      retry=kaggle.RetryPolicy(attempts=3, backoff_s=0.01))
            [listed] = comp.files()

            t = time.perf_counter()
            comp.fetch(listed, str(Path(tmp) / "clean"))
            whole = time.perf_counter() - t
            figures["fetch_verify_commit_mib_s"] = round(SIZE / 2**20 / whole, 1)

            target = Path(tmp) / "clean" / name
            t = time.perf_counter()
            with open(target, "rb") as f:
                checks.file_digests(f, {"crc32c"})
            verify = time.perf_counter() - t
            figures["verify_md5_crc32c_mib_s"] = round(SIZE / 2**20 / verify, 1)
            figures["verify_share_of_fetch"] = round(verify / whole, 3)
            figures["verify_s_per_10gb_part"] = round(verify * 10e9 / SIZE, 1)

            standin.log.clear()
            standin.fault(Fault(drop_after=SIZE // 2))
            t = time.perf_counter()
            comp.fetch(listed, str(Path(tmp) / "cut"))
            figures["fetch_with_one_cut_s"] = round(time.perf_counter() - t, 2)
            deadline = time.monotonic() + 5
            while len(standin.storage_gets()) < 3 and time.monotonic() < deadline:
                time.sleep(0.05)  # the abandoned stream is logged once its socket closes
            gets = standin.storage_gets()
            served = sum(s.body_bytes for s in gets)
            figures["bytes_served_with_one_cut_over_file_size"] = round(served / SIZE, 3)
            abandoned = sum(s.body_bytes for s in gets[1:] if s.status == 200)
            figures["abandoned_stream_mib_before_range_request"] = round(abandoned / 2**20, 1)
            assert hashlib.md5((Path(tmp) / "cut" / name).read_bytes()).digest() == \
                hashlib.md5(data).digest()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    for k, v in figures.items():
        print(f"{k}: {v}")
    benchmarks.save("kaggle_download", figures)
    return figures


if __name__ == "__main__":
    main()
