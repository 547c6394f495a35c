"""Synthetic DFDC: how long the demo-sized set takes, and whether the label lives only in the face.

    .venv/bin/python -m benchmarks.synth [--seeds 0,1,2] [--cnn] [--dfdc-sized]

Label locality: a logistic regression on colour and sharpness statistics of the face box (inner
face vs its rim) and, separately, of everything outside the face box (the ring around it vs the
rest of the frame), scored on videos whose original it never saw (folds grouped by original) and
on the demo's held-out part. Outside the box reals and fakes are the same pixels up to H.264, so
that classifier should sit at chance (ROC AUC < 0.6); inside, the swap's traces should show.
Frames are sampled per original and reused for its fakes, as the pipeline does.
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import json
import tempfile
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np

from benchmarks import save

FRAMES_PER_VIDEO = 5


@dataclasses.dataclass(frozen=True)
class SampledFrame:
    part: int
    video: str
    original: str
    fake: int  # 1 = FAKE (Kaggle's convention)
    image: np.ndarray
    box: tuple[float, float, float, float]


def _part_files(root: Path):
    """(part, name -> bytes reader, truth) for every synthetic part under root, zip or folder."""
    from dfd.dfdc import parse_part_name
    from dfd.synth import TRUTH_FILE

    for path in sorted(root.iterdir()):
        part = parse_part_name(path.name)
        if part is None:
            continue
        if path.is_dir():
            def read(name, path=path):
                return (path / name).read_bytes()
        else:
            zf = zipfile.ZipFile(path)
            folder = zf.namelist()[0].split("/")[0]

            def read(name, zf=zf, folder=folder):
                return zf.read(f"{folder}/{name}")
        yield part, read, json.loads(read(TRUTH_FILE))


def sample_frames(root: str | Path, *, frames_per_video: int = FRAMES_PER_VIDEO,
                  seed: int = 0) -> list[SampledFrame]:
    import av

    rng = np.random.default_rng(seed)
    out = []
    for part, read, truth in _part_files(Path(root)):
        picks: dict[str, set[int]] = {}
        for name, t in sorted(truth.items()):
            if t["original"] not in picks:
                k = min(frames_per_video, t["frames"])
                picks[t["original"]] = set(rng.choice(t["frames"], k, replace=False).tolist())
            wanted = picks[t["original"]]
            with av.open(io.BytesIO(read(name))) as container:
                for i, frame in enumerate(container.decode(video=0)):
                    if i in wanted:
                        out.append(SampledFrame(part, name, t["original"],
                                                int(t["label"] == "FAKE"),
                                                frame.to_ndarray(format="rgb24"),
                                                tuple(t["boxes"][i])))
                    if i >= max(wanted):
                        break
    return out


def _stats(lab: np.ndarray, laplacian: np.ndarray, gradient: np.ndarray,
           where: np.ndarray) -> np.ndarray:
    v = lab[where]
    return np.concatenate([v.mean(0), v.std(0), [np.abs(laplacian[where]).mean(),
                                                 laplacian[where].std(), gradient[where].mean()]])


def region_features(image: np.ndarray, box) -> tuple[np.ndarray, np.ndarray]:
    """(inside, outside) feature vectors of one frame: the same statistics (Lab mean and spread,
    Laplacian and gradient energy) of two zones and their difference. Inside the face box the
    zones are the inner face and the box's rim; outside it, the ring around the box and the
    rest of the frame."""
    lab = cv2.cvtColor(image.astype(np.float32) / 255, cv2.COLOR_RGB2Lab)
    luma = lab[..., 0]
    laplacian = cv2.Laplacian(luma, cv2.CV_32F)
    gradient = np.hypot(cv2.Sobel(luma, cv2.CV_32F, 1, 0), cv2.Sobel(luma, cv2.CV_32F, 0, 1))
    h, w = luma.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    x1, y1, x2, y2 = box
    cx, cy, bw, bh = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
    dx, dy = np.abs(xx - cx) / bw, np.abs(yy - cy) / bh
    in_box = (dx < 0.5) & (dy < 0.5)
    core = in_box & ((2 * dx) ** 2 + (2 * dy) ** 2 < 0.5)
    rim = in_box & ~core
    # A small guard band around the box: H.264 blocks straddling its edge carry face pixels.
    near = (dx < 0.9) & (dy < 0.9) & ~((dx < 0.6) & (dy < 0.6))
    far = ~((dx < 0.9) & (dy < 0.9))
    zones = [_stats(lab, laplacian, gradient, z) for z in (core, rim, near, far)]
    inside = np.concatenate([zones[0], zones[1], zones[0] - zones[1]])
    outside = np.concatenate([zones[2], zones[3], zones[2] - zones[3]])
    return inside, outside


def _video_auc(videos: list[str], labels: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    names = sorted(set(videos))
    idx = {n: i for i, n in enumerate(names)}
    rows = np.array([idx[v] for v in videos])
    mean = np.bincount(rows, scores) / np.bincount(rows)
    label = np.zeros(len(names))
    label[rows] = labels
    return float(roc_auc_score(label, mean))


def label_locality(frames: list[SampledFrame], *, folds: int = 5,
                   test_parts: tuple[int, ...] = ()) -> dict[str, float]:
    """Video-level ROC AUC of the inside and outside classifiers on held-out videos: folds
    grouped by original, and (if test_parts) trained on the other parts, scored on those."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    feats = [region_features(f.image, f.box) for f in frames]
    labels = np.array([f.fake for f in frames])
    groups = np.array([f"{f.part}/{f.original}" for f in frames])
    videos = [f"{f.part}/{f.video}" for f in frames]
    parts = np.array([f.part for f in frames])

    def model():
        return make_pipeline(StandardScaler(), LogisticRegression(
            C=0.3, max_iter=5000, class_weight="balanced"))

    figures = {"videos": len(set(videos)), "frames": len(frames)}
    for k, region in enumerate(("inside", "outside")):
        x = np.array([f[k] for f in feats])
        scores = np.zeros(len(labels))
        for train, test in GroupKFold(folds).split(x, labels, groups):
            scores[test] = model().fit(x[train], labels[train]).predict_proba(x[test])[:, 1]
        figures[f"{region}_auc_grouped_cv"] = round(_video_auc(videos, labels, scores), 4)
        if test_parts:
            held = np.isin(parts, test_parts)
            fitted = model().fit(x[~held], labels[~held])
            held_scores = fitted.predict_proba(x[held])[:, 1]
            figures[f"{region}_auc_held_out_parts"] = round(
                _video_auc([v for v, h in zip(videos, held) if h], labels[held], held_scores), 4)
    return figures


def demo_cnn_auc(root: str | Path, *, train_parts: tuple[int, ...], seed: int = 0,
                 epochs: int = 6) -> float:
    """The demo's budget on a synthetic set: one fake per original, 5 frames per video, crops
    with a 0.3 margin as JPEG q95, the paper's CNN for `epochs` epochs (batch 32, Adam 1e-3);
    video-level ROC AUC on the parts not trained on. Truth boxes stand in for detections."""
    import tf_keras as keras

    from dfd.crop import crop_face, encode_crop
    from dfd.images import decode_crops
    from dfd.models import build_model, compile_classifier

    rng = np.random.default_rng(seed)
    frames = sample_frames(root, seed=seed)
    kept = {}  # (part, original) -> the one fake kept, as the balanced pipeline keeps one
    for f in frames:
        if f.fake:
            kept.setdefault((f.part, f.original), set()).add(f.video)
    kept = {k: sorted(v)[rng.integers(len(v))] for k, v in kept.items()}
    frames = [f for f in frames if not f.fake or kept[(f.part, f.original)] == f.video]
    crops = decode_crops([encode_crop(crop_face(f.image, f.box, margin=0.3), "jpeg", 95)
                          for f in frames])
    labels = np.array([f.fake for f in frames], np.float32)
    train = np.array([f.part in train_parts for f in frames])
    keras.utils.set_random_seed(seed)
    model = build_model("paper_cnn")
    compile_classifier(model, learning_rate=1e-3)
    model.fit(crops[train], labels[train], batch_size=32, epochs=epochs, shuffle=True, verbose=0)
    scores = model.predict(crops[~train], verbose=0)[:, 0]
    videos = [f"{f.part}/{f.video}" for f, t in zip(frames, train) if not t]
    return _video_auc(videos, labels[~train], scores)


def _generate_timed(out: Path, cfg) -> dict:
    from dfd.synth import generate

    started = time.perf_counter()
    paths = generate(out, cfg)
    seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 2), "parts": len(paths),
            "videos": cfg.parts * cfg.originals * (1 + cfg.fakes_per_original),
            "bytes": sum(p.stat().st_size for p in paths)}


def main(argv: list[str] | None = None) -> dict:
    from dfd import config
    from dfd.synth import generate

    ap = argparse.ArgumentParser(prog="benchmarks.synth")
    ap.add_argument("--seeds", default="0,1,2", help="synthetic sets to score label locality on")
    ap.add_argument("--cnn", action="store_true",
                    help="also train the paper's CNN on the demo's budget per seed (minutes "
                         "each): parts 0-1 for training, 2-4 held out")
    ap.add_argument("--dfdc-sized", action="store_true",
                    help="also time one DFDC-sized group (1920x1080, 300 frames, 1 REAL + 5 FAKE)")
    # parse_known_args: `python -m benchmarks synth` leaves the benchmark names in sys.argv.
    args, _ = ap.parse_known_args(argv)
    smoke = config.preset("synth", "smoke")
    test_parts = config.preset("preprocess", "smoke").test_parts
    figures: dict = {"smoke_config": config.to_dict(smoke)}
    with tempfile.TemporaryDirectory(prefix="bench-synth-") as tmp:
        tmp = Path(tmp)
        for seed in (int(s) for s in args.seeds.split(",")):
            cfg = config.override(smoke, seed=seed)
            timing = _generate_timed(tmp / f"smoke-{seed}", cfg)
            locality = label_locality(sample_frames(tmp / f"smoke-{seed}", seed=seed),
                                      test_parts=test_parts)
            figures[f"seed_{seed}"] = {"generate": timing, "label_locality": locality}
            if args.cnn:
                # Parts 0-2 are the smoke set's own; two more give 36 held-out videos, not 12.
                generate(tmp / f"smoke-{seed}", config.override(cfg, first_part=3, parts=2))
                auc = demo_cnn_auc(tmp / f"smoke-{seed}", train_parts=(0, 1), seed=seed)
                figures[f"seed_{seed}"]["paper_cnn_6_epochs_held_out_video_auc"] = round(auc, 4)
                print(f"seed {seed}: paper CNN, 6 epochs on parts 0-1, video AUC on parts 2-4: "
                      f"{auc:.3f}", flush=True)
            print(f"seed {seed}: smoke set ({timing['videos']} videos) in {timing['seconds']} s; "
                  f"inside-face AUC {locality['inside_auc_grouped_cv']} (held-out part "
                  f"{locality.get('inside_auc_held_out_parts')}), outside-face AUC "
                  f"{locality['outside_auc_grouped_cv']} (held-out part "
                  f"{locality.get('outside_auc_held_out_parts')})", flush=True)
        big = config.override(smoke, parts=1, originals=1, fakes_per_original=2, width=1920,
                              height=1080, frames=60, portrait_fraction=0.0)
        timing = _generate_timed(tmp / "1080p", big)
        figures["1080p_60_frames_1_real_2_fake"] = timing
        print(f"1080p: 3 clips x 60 frames in {timing['seconds']} s "
              f"({3 * 60 / timing['seconds']:.1f} encoded frames/s)", flush=True)
        if args.dfdc_sized:
            dfdc = config.override(big, fakes_per_original=5, frames=300)
            timing = _generate_timed(tmp / "dfdc-sized", dfdc)
            figures["dfdc_sized_1_real_5_fake"] = timing
            print(f"DFDC-sized group (6 clips of 1920x1080x300) in {timing['seconds']} s, "
                  f"{timing['bytes'] / 6 / 2**20:.2f} MiB per clip", flush=True)
    path = save("synth", figures)
    print(f"wrote {path}")
    return figures


if __name__ == "__main__":
    main()
