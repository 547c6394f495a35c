"""The README's benchmark figures, rendered from bench-results/*.json, so that the page says
what the measurements say (as infra/sizing.py renders docs/sizing.md):

    .venv/bin/python -m benchmarks._readme            # print every generated block
    .venv/bin/python -m benchmarks._readme --write    # replace the blocks in README.md
    .venv/bin/python -m benchmarks._readme --check    # exit 1 naming each block that differs

In README.md a generated block sits between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``
lines; everything between them is this module's output and is replaced on --write. To add one:
write a function taking the figures of its JSON file(s) and returning Markdown, add it to
BLOCKS, put the two marker lines where it belongs, run --write. tests/test_bench_readme.py
checks that README.md holds what the JSON files give. (The leading underscore keeps
`python -m benchmarks`, which runs every benchmark module, from running this one.)
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import textwrap
from collections.abc import Callable, Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench-results"
README = REPO / "README.md"


def load(name: str, results: Path = RESULTS) -> dict:
    """The ``figures`` of bench-results/NAME.json."""
    return json.loads((results / f"{name}.json").read_text())["figures"]


def _n(x: float, digits: int = 1) -> str:
    """A figure with thousands separators: 1,133.6."""
    return f"{x:,.{digits}f}"


def _paragraph(text: str) -> str:
    """Wrapped at the README's 100 columns, a figure kept on one line with the word after it
    ("245.8 MiB/s")."""
    glued = re.sub(r"(\d) (?=\S)", "\\1\u00a0", text)
    return textwrap.fill(glued, width=100, break_long_words=False,
                         break_on_hyphens=False).replace("\u00a0", " ")


def _target(text: str) -> str:
    return text.replace("<=", "≤").replace(">=", "≥")


# ---- per-video core ------------------------------------------------------------------------------

PER_VIDEO_PATHS = (
    ("a", "a_decode_floor", "(a) decode floor: decode to the last sampled frame, no conversion",
     None),
    ("b", "b_ours", "(b) ours, {frames} {sampling} frames: decode, detect, crop, encode", "b/a"),
    ("c", "c_naive", "(c) naive: convert every frame, detect at full resolution", "c/b"),
    ("d", "d_fake_reusing_boxes", "(d) ours, a fake reusing its original's boxes", "d/a"))


def per_video(f: Mapping) -> str:
    n = f["clips"]
    cfg = f["config"]
    rows = ["| path | CPU s | wall s | ratio | target |", "|---|---:|---:|---|---|"]
    for _, key, label, ratio in PER_VIDEO_PATHS:
        label = label.format(frames=cfg["frames_per_video"], sampling=cfg["sampling"])
        ratio_text = f"{ratio} = {f['ratios_cpu'][ratio]:.2f}" if ratio else ""
        target = _target(f["targets"][ratio]) if ratio else ""
        rows.append(f"| {label} | {f['cpu_s'][key] / n:.2f} | {f['wall_s'][key] / n:.2f} | "
                    f"{ratio_text} | {target} |")
    return "\n".join(rows)


def per_video_detect(f: Mapping) -> str:
    n, cfg, bd = f["clips"], f["config"], f["b_breakdown_wall_s"]
    extra = (f["cpu_s"]["b_ours"] - f["cpu_s"]["a_decode_floor"]) / n
    return (f"What (b) adds to the floor, {extra:.2f} CPU s per clip, is mostly detection. In "
            f"one more run of (b), `process_video`'s own counters gave, per clip (wall time, "
            f"so the load shows): decoding {bd['decode_s'] / n:.2f} s, detecting faces on "
            f"{cfg['frames_per_video']} frames at {cfg['detect_max_side']} px on the long side "
            f"{bd['detect_s'] / n:.2f} s, cropping and encoding {bd['crop_encode_s'] / n:.3f} s. "
            f"The detection size decides the ratio, not the box quality (mean IoU of the "
            f"primary box with `synth_truth.json` on the sampled frames):")


def per_video_sweep(f: Mapping) -> str:
    default = f["config"]["detect_max_side"]
    rows = ["| `detect_max_side` | b/a | mean IoU |", "|---:|---:|---:|"]
    for side, s in sorted(f["detect_max_side_sweep"].items(), key=lambda kv: int(kv[0])):
        name = f"{side} (default)" if int(side) == default else side
        rows.append(f"| {name} | {s['b/a_cpu']:.2f} | {s['mean_iou']:.2f} |")
    return "\n".join(rows)


def per_video_uniform(f: Mapping) -> str:
    u = f["uniform_32"]
    return (f"With the `full` preset's 32 uniform frames, detection dominates the original "
            f"(b/a = {u['b/a']:.2f}) while each fake stays at the floor (d/a = {u['d/a']:.2f}): "
            f"box reuse is what keeps fakes cheap.")


# ---- Beam preprocessing --------------------------------------------------------------------------

PREPROCESS_RUNS = (("small_2w", "part of {clips} clips, 2 workers"),
                   ("large_1w", "part of {clips} clips ({x}x), 1 worker"),
                   ("large_2w", "part of {clips} clips ({x}x), 2 workers"))


def preprocess(f: Mapping) -> str:
    runs = f["runs"]
    x = runs["large_1w"]["clips"] // runs["small_2w"]["clips"]
    rows = ["| run | clips | seconds | clips/s | peak RSS of the largest worker |",
            "|---|---:|---:|---:|---:|"]
    for key, label in PREPROCESS_RUNS:
        r = runs[key]
        rows.append(f"| {label.format(clips=r['clips'], x=x)} | {r['clips']} | "
                    f"{r['seconds']:.1f} | {r['clips_per_s']:.2f} | "
                    f"{_n(r['worker_peak_rss_mb'], 0)} MB |")
    return "\n".join(rows)


def preprocess_notes(f: Mapping, per_video_figures: Mapping) -> str:
    runs = f["runs"]
    small, large = runs["small_2w"]["worker_peak_rss_mb"], runs["large_2w"]["worker_peak_rss_mb"]
    x = runs["large_1w"]["clips"] // runs["small_2w"]["clips"]
    floor_ratio = per_video_figures["ratios_cpu"]["b/a"]
    return (f"At this size a run is dominated by its fixed start (each worker imports "
            f"TensorFlow and loads RetinaFace), so these rates understate steady throughput; at "
            f"1 worker the whole run costs {f['s_per_clip_1_worker']:.2f} s per clip against a "
            f"decode floor of {f['decode_floor_s_per_clip']:.2f} s per clip (decoding to the "
            f"last sampled frame with no colour conversion): "
            f"{f['s_per_clip_over_decode_floor_1_worker']:.2f}x, start-up included. The "
            f"per-clip cost without start-up is in the per-video table above "
            f"({floor_ratio:.2f}x the floor). Two workers on the two cores ran "
            f"{f['speedup_2_workers']:.2f}x as fast as one. Worker memory stays flat when the "
            f"part grows {x}x ({_n(small, 0)} -> {_n(large, 0)} MB, "
            f"{100 * (large / small - 1):+.0f} %): a worker holds one original and its fakes at "
            f"a time, and shards are written per (part, split, shard) group.")


# ---- training and inference ----------------------------------------------------------------------

TRAIN_INPUTS = (
    ("parquet_rowgroups_tfdata",
     "input pipeline alone: Parquet row groups -> tf.data decode (what training uses)"),
    ("tfrecord_tfdata", "input pipeline alone: TFRecord -> tf.data"),
    ("ray_data_parquet", "input pipeline alone: Ray Data over Parquet"))


def train(f: Mapping) -> str:
    rows = ["| | images/s |", "|---|---:|"]
    rows += [f"| {label} | {_n(f['input_images_per_s'][key])} |" for key, label in TRAIN_INPUTS]
    for key, run in f["training"].items():
        workers, cpus = re.fullmatch(r"(\d+)_workers_x_(\d+)_cpus", key).groups()
        strategy = " (MultiWorkerMirroredStrategy)" if int(workers) > 1 else ""
        rows.append(f"| training, {workers} worker{'s' if int(workers) > 1 else ''} x {cpus} "
                    f"CPU{'s' if int(cpus) > 1 else ''}{strategy} | {_n(run['images_per_s'])} |")
    return "\n".join(rows)


def train_notes(f: Mapping) -> str:
    return (f"The input pipeline runs at {f['input_over_training']:.0f}x the training rate "
            f"({f['train_crops']} crops, global batch {f['batch_size']}).")


def infer(f: Mapping) -> str:
    plain = f["plain"]["images_per_s"]
    rows = ["| path | images/s | vs plain |", "|---|---:|---:|",
            f"| plain single-process `model.predict` over the same shards | {plain:.1f} "
            f"| 1.00 |"]
    for key, label in (("ray_1_actor", "Ray Data, 1 actor"),
                       ("ray_2_actors", "Ray Data, 2 actors")):
        r = f[key]
        rows.append(f"| {label}, steady state | {r['images_per_s_steady']:.1f} | "
                    f"{r['images_per_s_steady'] / plain:.2f} |")
        rows.append(f"| {label}, end to end (with {r['startup_s']:.0f} s actor start-up) | "
                    f"{r['images_per_s_end_to_end']:.1f} | "
                    f"{r['images_per_s_end_to_end'] / plain:.2f} |")
    return "\n".join(rows)


def infer_setup(f: Mapping) -> str:
    return (f"**Batch inference** (`.venv/bin/python -m benchmarks.infer`, {f['crops']} crops in "
            f"{f['shards']} shards, {f['model']}, batch {f['batch_size']}, best of "
            f"{f['rounds']} interleaved rounds, load average {f['load_average_before']:.1f} "
            f"before and {f['load_average_after']:.1f} after):")


# ---- synthetic data ------------------------------------------------------------------------------

def _synth_seeds(f: Mapping) -> dict[int, Mapping]:
    return {int(k.split("_")[1]): v for k, v in f.items() if re.fullmatch(r"seed_\d+", k)}


def synth(f: Mapping) -> str:
    cfg, seeds = f["smoke_config"], _synth_seeds(f)
    first = seeds[min(seeds)]["generate"]
    others = "; ".join(f"{s['generate']['seconds']:.1f} s for seed {k}"
                       for k, s in sorted(seeds.items())[1:])
    big_key = next(k for k in f if k.startswith("1080p_"))
    big = f[big_key]
    frames = int(re.match(r"1080p_(\d+)_frames", big_key).group(1))
    return (f"**Synthetic data** (`.venv/bin/python -m benchmarks.synth`, generation only, "
            f"{cfg['workers'] or 1} process): the demo-sized set ({first['parts']} parts, "
            f"{first['videos']} clips at {cfg['width']}x{cfg['height']}, {cfg['frames']} frames) "
            f"in {first['seconds']:.1f} s wall for synthesis seed {min(seeds)}"
            f"{f' ({others})' if others else ''}. At 1080p, {big['videos']} clips of {frames} "
            f"frames took {big['seconds']:.1f} s: {big['videos'] * frames / big['seconds']:.1f} "
            f"encoded frames/s.")


def synth_locality(f: Mapping) -> str:
    seeds = _synth_seeds(f)
    loc = [s["label_locality"] for s in seeds.values()]
    inside = [v for x in loc for k, v in x.items() if k.startswith("inside_auc")]
    outside = [v for x in loc for k, v in x.items() if k.startswith("outside_auc")]
    inside_text = (f"{min(inside):.2f}" if min(inside) == max(inside)
                   else f"{min(inside):.2f}–{max(inside):.2f}")
    cnn = " and ".join(f"{s['paper_cnn_6_epochs_held_out_video_auc']:.3f}"
                       for _, s in sorted(seeds.items()))
    names = " and ".join(str(k) for k in sorted(seeds))
    return (f"Label locality of the synthetic set (`.venv/bin/python -m benchmarks.synth`, also "
            f"asserted by `tests/test_synth.py`): a logistic regression on pixels inside the "
            f"face box scores video AUC {inside_text} on held-out videos (grouped "
            f"cross-validation and held-out parts); the same classifier on pixels outside the "
            f"box scores {min(outside):.2f}–{max(outside):.2f} (chance), so the label lives "
            f"only in the face. The paper's CNN trained on parts 0–1 for 6 epochs scored video "
            f"AUC {cnn} on held-out parts 2–4 for synthesis seeds {names} "
            f"(`--seeds {','.join(str(k) for k in sorted(seeds))} --cnn`).")


# ---- ingestion and sync --------------------------------------------------------------------------

def kaggle_download(f: Mapping) -> str:
    return (f"Kaggle's API files (`.venv/bin/python -m benchmarks.kaggle_download`, one "
            f"{f['file_mib']:.0f} MiB file through the kaggle client): list + download + verify "
            f"+ commit {f['fetch_verify_commit_mib_s']:.1f} MiB/s; md5 + crc32c verification "
            f"alone {f['verify_md5_crc32c_mib_s']:.1f} MiB/s (about "
            f"{f['verify_s_per_10gb_part']:.0f} s per 10 GB); a cut connection transfers "
            f"{f['bytes_served_with_one_cut_over_file_size']:.3f}x the file (the kaggle "
            f"downloader's abandoned first stream pulls "
            f"{f['abandoned_stream_mib_before_range_request']:.1f} MiB before its Range "
            f"request).")


def sync(f: Mapping) -> str:
    return (f"**Scheduled sync** (`.venv/bin/python -m benchmarks.sync`): `dfd sync` with all "
            f"{f['parts_listed']} parts up to date (their links in the links file) takes "
            f"{f['sync_nothing_new_cli_s']:.1f} s (mostly importing Beam), of which reading the "
            f"links and planning what to fetch is {f['plan_50_parts_s']:.3f} s; the lease costs "
            f"{f['lease_acquire_renew_release_ms']:.1f} ms to acquire, renew and release on "
            f"local disk.")


# ---- the demo -----------------------------------------------------------------------------------

def _ci(value: float, interval) -> str:
    return f"{value:.2f} [{interval[0]:.2f}, {interval[1]:.2f}]"


def demo(f: Mapping) -> str:
    rows = ["| training seed | exported epoch | held-out videos | video AUC [95 %] | "
            "log loss [95 %] (chance) | accuracy [95 %] |",
            "|---:|---:|---:|---:|---:|---:|"]
    for r in f["runs"]:
        epoch = "last" if r.get("exported_epoch") is None else \
            f"{r['exported_epoch']} of 0-{r['epochs'] - 1}"
        rows.append(f"| {r['seed']} | {epoch} | {r['videos']} | "
                    f"{_ci(r['auc'], r['ci95']['auc'])} | "
                    f"{_ci(r['log_loss'], r['ci95']['log_loss'])} "
                    f"({r['chance_log_loss']:.3f}) | {_ci(r['accuracy'], r['ci95']['accuracy'])} |")
    return "\n".join(rows)


def demo_notes(f: Mapping) -> str:
    first = f["runs"][0]
    stages = first.get("stage_seconds") or {}
    aucs = [r["auc"] for r in f["runs"]]
    lows = [r["ci95"]["auc"][0] for r in f["runs"]]
    return (f"The first seed ran every stage in {stages.get('total', '-')} s wall (synth "
            f"{stages.get('synth', '-')} s, Beam preprocessing {stages.get('preprocess', '-')} s, "
            f"Ray Train {stages.get('train', '-')} s, Ray Data inference and report "
            f"{stages.get('infer', '-')} s). Across the {len(aucs)} training seeds the held-out "
            f"video AUC ranged {min(aucs):.2f}-{max(aucs):.2f}, and the lower end of its 95 % "
            f"interval {min(lows):.2f}-{max(lows):.2f}.")


# ---- the registry and the page -------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Block:
    sources: tuple[str, ...]  # bench-results/<name>.json files, passed in this order
    render: Callable[..., str]


BLOCKS: dict[str, Block] = {
    "per_video": Block(("per_video",), per_video),
    "per_video_detect": Block(("per_video",), per_video_detect),
    "per_video_sweep": Block(("per_video",), per_video_sweep),
    "per_video_uniform": Block(("per_video",), per_video_uniform),
    "preprocess": Block(("preprocess",), preprocess),
    "preprocess_notes": Block(("preprocess", "per_video"), preprocess_notes),
    "train": Block(("train",), train),
    "train_notes": Block(("train",), train_notes),
    "infer_setup": Block(("infer",), infer_setup),
    "infer": Block(("infer",), infer),
    "synth": Block(("synth",), synth),
    "synth_locality": Block(("synth",), synth_locality),
    "kaggle_download": Block(("kaggle_download",), kaggle_download),
    "sync": Block(("sync",), sync),
    "demo": Block(("demo",), demo),
    "demo_notes": Block(("demo",), demo_notes),
}


def render(name: str, results: Path = RESULTS) -> str:
    block = BLOCKS[name]
    text = block.render(*(load(s, results) for s in block.sources)).rstrip("\n")
    return (text if text.startswith("|") else _paragraph(text)) + "\n"


def _pattern(name: str) -> re.Pattern:
    name = re.escape(name)
    return re.compile(rf"(<!-- bench:{name} -->\n)(.*?)(<!-- /bench:{name} -->)", re.S)


def blocks_in(page: str) -> dict[str, str]:
    """Every generated block of a page, by name, as the page holds it."""
    return {m.group(1): m.group(2)
            for m in re.finditer(r"<!-- bench:([\w-]+) -->\n(.*?)<!-- /bench:\1 -->", page, re.S)}


def missing_sources(name: str, results: Path = RESULTS) -> list[str]:
    """The JSON files a block needs that the results folder does not have (yet)."""
    return [f"{results.name}/{s}.json" for s in BLOCKS[name].sources
            if not (results / f"{s}.json").exists()]


def rewrite(page: str, results: Path = RESULTS) -> str:
    """The page with every block it holds replaced by what the JSON files give now; a block
    whose JSON file is missing is left as it is, with a warning."""
    for name in blocks_in(page):
        if name not in BLOCKS:
            raise SystemExit(f"README block {name!r} has no renderer in benchmarks._readme")
        missing = missing_sources(name, results)
        if missing:
            print(f"bench block {name} left as it is: no {', '.join(missing)}", file=sys.stderr)
            continue
        text = render(name, results)
        page = _pattern(name).sub(lambda m, t=text: m.group(1) + t + m.group(3), page)
    return page


def stale(page: str, results: Path = RESULTS) -> list[str]:
    """Names of the blocks whose text is not what the JSON files give (or whose JSON file is
    missing), and of the renderers the page has no block for."""
    found = blocks_in(page)
    wrong = []
    for name, text in found.items():
        if name not in BLOCKS:
            continue
        missing = missing_sources(name, results)
        if missing:
            wrong.append(f"{name} (no {', '.join(missing)})")
        elif text != render(name, results):
            wrong.append(name)
    return wrong + [f"{n} (no block in the page)" for n in BLOCKS if n not in found]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="replace the blocks in the page")
    mode.add_argument("--check", action="store_true",
                      help="exit 1 when a block differs from what the JSON files give")
    parser.add_argument("--page", type=Path, default=README, help="the page (README.md)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="bench-results folder")
    args = parser.parse_args(argv)
    page = args.page.read_text(encoding="utf-8")
    if args.check:
        wrong = stale(page, args.results)
        for name in wrong:
            fix = ("measure it first (.venv/bin/python -m benchmarks.NAME)" if "(no " in name
                   else "run `.venv/bin/python -m benchmarks._readme --write`")
            print(f"{args.page}: bench block {name} differs from {args.results}; {fix}",
                  file=sys.stderr)
        return 1 if wrong else 0
    if args.write:
        new = rewrite(page, args.results)
        if new != page:
            args.page.write_text(new, encoding="utf-8")
        return 0
    for name in BLOCKS:
        print(f"<!-- bench:{name} -->\n{render(name, args.results)}<!-- /bench:{name} -->\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
