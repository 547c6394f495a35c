"""`dfd predict` on raw mp4 files scores videos as the pipeline path does (Beam preprocessing,
then the crops scored and aggregated as `dfd infer` does)."""
import contextlib
import dataclasses
import io
import json
import shutil

import av
import numpy as np
import pyarrow.parquet as pq
import pytest

from dfd import aggregate, config, predict
from dfd.cli import main
from dfd.models import load_model
from tests.infer_fixtures import make_run_dir

PART = 3
FRAMES = 3


def _faceless_video(path):
    """A real H.264 clip of a plain gradient: nothing a detector could call a face."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        ramp = np.tile(np.linspace(40, 200, 320, dtype=np.uint8), (240, 1))
        for k in range(12):
            rgb = np.stack([ramp, np.roll(ramp, 8 * k, axis=1), ramp[::-1]], axis=-1)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


@pytest.fixture(scope="module")
def pipeline_path(tmp_path_factory):
    """A synthetic DFDC part preprocessed by the real Beam pipeline, a run dir trained on it,
    and the video scores of the pipeline path."""
    from dfd.synth import generate
    from dfd.cli.preprocess import run_argv

    root = tmp_path_factory.mktemp("predict")
    [part_dir] = generate(root / "raw", config.SynthConfig(
        parts=1, first_part=PART, originals=2, fakes_per_original=1, width=480, height=272,
        frames=12, zipped=False, portrait_fraction=0.0, seed=1))
    run_argv(["--input", str(root / "raw"), "--output", str(root / "faces"),
                    "--frames-per-video", str(FRAMES), "--test-parts", str(PART),
                    "--fakes-per-original", "all", "--direct_running_mode", "in_memory"])
    run = make_run_dir(root / "run")
    run_config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**run_config, "data": str(root / "faces")}))

    faces = pq.read_table(root / "faces" / "parquet").to_pydict()
    model = load_model(str(run / "model"))
    faces["p_fake"] = predict.score_records(model, faces["image"], batch_size=7).tolist()
    videos = aggregate.video_records(faces, model="m", rule="mean")
    return root, part_dir, run, {v["video"]: v for v in videos}


def _predict(*args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(["predict", *map(str, args)])
    return status, out.getvalue(), err.getvalue()


@pytest.mark.slow
def test_predict_scores_equal_the_pipeline_paths_and_bad_files_get_one_line(pipeline_path):
    root, part_dir, run, expected = pipeline_path
    bad = root / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42 but nothing else")
    faceless = root / "plain.mp4"
    _faceless_video(faceless)
    status, out, err = _predict("--run-dir", run, part_dir, bad, faceless, root / "gone.mp4",
                                "--frames-per-video", FRAMES, "--json")
    assert status == 1  # some inputs could not be read; the rest are scored
    errors = [line for line in err.splitlines() if line.startswith("dfd predict: error:")]
    assert len(errors) == 2
    assert errors[0].startswith(f"dfd predict: error: {bad}: ")
    gone = root / "gone.mp4"
    assert errors[1] == f"dfd predict: error: {gone}: not_found: no such file or folder"

    report = json.loads(out)
    by_name = {v["video"]: v for v in report["videos"]}
    assert set(by_name) == set(expected) | {"plain.mp4"}
    for name, want in expected.items():
        got = by_name[name]
        assert got["n_faces"] == want["n_faces"] == FRAMES
        assert got["p_fake"] == pytest.approx(want["p_fake"], rel=1e-6, abs=1e-7)
        assert (got["part"], got["label"]) == (PART, want["label"])
    assert by_name["plain.mp4"] == {**by_name["plain.mp4"], "p_fake": 0.5, "n_faces": 0,
                                    "part": None, "label": None}
    assert [e["reason"] for e in report["errors"]] == ["unreadable", "not_found"]


@pytest.mark.slow
def test_a_fake_alone_is_cropped_with_its_originals_boxes_and_shown_in_a_table(pipeline_path):
    root, part_dir, run, expected = pipeline_path
    fake = next(n for n, v in expected.items() if v["label"] == 1)
    copy = root / "submission.csv"
    status, out, err = _predict("--run-dir", run, part_dir / fake, "--frames-per-video",
                                FRAMES, "--aggregation", "max", "--csv", copy)
    assert status == 0 and "error" not in err
    header, row = out.splitlines()
    assert header.split() == ["video", "part", "label", "faces", "p_fake", "call"]
    assert row.split()[:4] == [fake, str(PART), "FAKE", str(FRAMES)]
    faces = pq.read_table(root / "faces" / "parquet").to_pydict()
    crops = [img for v, img in zip(faces["video"], faces["image"]) if v == fake]
    model = load_model(str(run / "model"))
    top = float(predict.score_records(model, crops, batch_size=64).max())
    assert float(row.split()[4]) == pytest.approx(top, abs=5e-5)
    assert copy.read_text().splitlines()[1].startswith(f"{fake},")


@pytest.mark.slow
def test_settings_come_from_the_manifest_the_pipeline_wrote(tmp_path, pipeline_path):
    _, _, run, _ = pipeline_path
    cfg, why = predict.recorded_settings(str(run))
    # The pipeline ran with the paper preset and these flags; every part of it is recorded.
    used = dataclasses.replace(config.preset("preprocess", "paper"), frames_per_video=FRAMES,
                               fakes_per_original=None)
    assert cfg == used and why.startswith("recorded in")

    # Data made before settings were recorded, or by several settings: none is guessed.
    data = tmp_path / "data"
    shutil.copytree(json.loads((run / "config.json").read_text())["data"], data)
    run2 = tmp_path / "run"
    shutil.copytree(run, run2)
    (run2 / "config.json").write_text(json.dumps({"data": str(data)}))
    manifest = json.loads((data / "manifest.json").read_text())
    (data / "manifest.json").write_text(json.dumps({**manifest, "settings": {}}))
    assert predict.recorded_settings(str(run2)) == (
        None, f"{data / 'manifest.json'} does not record them")
    [entry] = manifest["parts"].values()
    other = dict(entry, part=PART + 1, config_hash="another")
    settings = {entry["config_hash"]: config.to_dict(used),
                "another": config.to_dict(config.override(used, sampling="uniform"))}
    (data / "manifest.json").write_text(json.dumps(
        {**manifest, "parts": {**manifest["parts"], f"{PART + 1:02d}": other},
         "settings": settings}))
    cfg, why = predict.recorded_settings(str(run2))
    assert cfg is None and "2 different settings" in why


def test_config_hash_formula_is_the_pipelines():
    from pipelines.preprocess import part_config_hash

    cfg = config.PreprocessConfig(frames_per_video=3, test_parts=(3,))
    assert predict.part_config_hashes(cfg) == {part_config_hash(cfg, 3), part_config_hash(cfg, 4)}


def test_a_run_dir_without_a_model_is_one_clear_error(tmp_path):
    status, _, err = _predict("--run-dir", tmp_path, tmp_path)
    assert status == 1
    assert err.strip().splitlines() == [
        f"dfd predict: error: {tmp_path} holds no trained model (model/model.json is "
        f"missing): is it the run dir of `dfd train`?"]
