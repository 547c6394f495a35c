"""Security properties users rely on, each checked end to end on real parts:

- planted Kaggle credentials never reach an output file, a log line or an error message, on
  success, on refusal (HTTP 401) and on server errors (HTTP 5xx, 410), through `dfd download`,
  `dfd preprocess`, `dfd sync` and the Beam fetch stage (real kaggle client against
  standins/kaggle.py), and neither do the signatures of the part links
  (standins/links.py);
- a model loads from model.json + weights.h5 only: pickles, Keras archives and configs (with
  Lambda layers), SavedModels and whole-model HDF5 files are refused, and a planted pickle is
  never unpickled;
- every write stays inside the output given: hostile names in metadata.json and in zip
  members never lead a write outside: output names refuse ``..``, absolute paths,
  backslashes and NUL, and `dfd infer`, `dfd report` and `dfd predict` write only where they
  are told, even when the video names in their input are hostile (tests/test_hostile_inputs.py
  runs the preprocessing pipeline over hostile metadata.json names and zip members).
"""
from __future__ import annotations

import base64
import json
import os
import pickle
import posixpath
import subprocess
import sys
import uuid
import warnings
from pathlib import Path

import h5py
import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dfd import config, dfdc, models, shards
from dfd import output_tree as ot
from tests.infer_fixtures import make_face_tree, make_run_dir
from standins.kaggle import Fault, KaggleStandIn
from standins.links import Fault as LinkFault
from standins.links import LinksStandIn
from tests.video_fixtures import clip

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
COMPETITION = "deepfake-detection-challenge"
SECRET_KEY = "dfdtestsecret0123456789abcdef"  # planted: must never appear anywhere
SECRET_USER = "dfdtestuser7c4e1b"
BASIC = base64.b64encode(f"{SECRET_USER}:{SECRET_KEY}".encode()).decode()  # on the wire only
SIGNATURE = "standin-signature-do-not-log"  # the stand-in's signed download URLs carry it
SECRETS = (SECRET_KEY, SECRET_USER, BASIC, SIGNATURE)
PROCESS_FLAGS = ["--preset", "smoke", "--frames-per-video", "3",
                 "--direct_running_mode", "in_memory", "--direct_num_workers", "1"]


# ---- files written, before and after ------------------------------------------------------------

def tree_state(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*") if p.is_file() or p.is_symlink()}


def written_since(root: Path, before: dict) -> set[str]:
    """Files created, changed or removed under root since the before snapshot."""
    after = tree_state(root)
    return {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}


def inside(paths: set[str], folder: str) -> bool:
    return all(p == folder or p.startswith(folder.rstrip("/") + "/") for p in paths)


# ---- credentials -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def kaggle_part(tmp_path_factory) -> bytes:
    from dfd.synth import generate

    cfg = config.SynthConfig(parts=1, originals=2, fakes_per_original=1, width=320, height=180,
                             frames=12, seed=7, zipped=True, portrait_fraction=0.0, workers=1)
    [made] = generate(tmp_path_factory.mktemp("sec-synth"), cfg)
    return made.read_bytes()


@pytest.fixture(scope="module")
def standin():
    with KaggleStandIn(COMPETITION, username=SECRET_USER, key=SECRET_KEY) as server:
        yield server


@pytest.fixture(scope="module")
def part_links():
    """The data page's signed part links (standins/links.py)."""
    with LinksStandIn() as server:
        yield server


def _env(home: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAGGLE_", "XDG_"))}
    env.update(HOME=str(home), KAGGLE_API_ENVIRONMENT="TEST", PYTHONPATH=str(ROOT), **extra)
    return env


def dfd_cli(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    # -v: debug logging, the most a user can make the tools say.
    return subprocess.run([sys.executable, "-m", "dfd.cli", "-v", *args], capture_output=True,
                          text=True, timeout=300, cwd=home, env=_env(home, **env))


def assert_no_secret(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} in {where}"


def test_planted_kaggle_credentials_never_reach_files_logs_or_errors(
        tmp_path, standin, part_links, kaggle_part, monkeypatch, caplog, capfd):
    standin.reset()
    standin.add_file("sample_submission.csv", b"filename,label\naassnaulhq.mp4,0.5\n")
    part_links.reset()
    part_links.add(dfdc.part_zip_name(0), kaggle_part)
    links = tmp_path / "links" / "links.txt"  # the one file allowed the link signatures
    links.parent.mkdir()
    links.write_text(part_links.link(dfdc.part_zip_name(0)) + "\n")
    signatures = [links.read_text().split("Signature=")[1].strip()]
    home = tmp_path / "home"
    home.mkdir()
    secret_dir = tmp_path / "secret"  # the planted kaggle.json: the one file allowed the key
    secret_dir.mkdir()
    (secret_dir / "kaggle.json").write_text(json.dumps({"username": SECRET_USER,
                                                        "key": SECRET_KEY}))
    (secret_dir / "kaggle.json").chmod(0o600)
    from_file = {"KAGGLE_CONFIG_DIR": str(secret_dir)}
    from_env = {"KAGGLE_USERNAME": SECRET_USER, "KAGGLE_KEY": SECRET_KEY}
    staging, out = tmp_path / "staging", tmp_path / "out"
    links_input = ["--links", str(links), "--staging", str(staging), "--output", str(out)]
    kaggle_input = ["--input", f"kaggle://{COMPETITION}", "--staging", str(staging),
                    "--output", str(out)]
    runs = {}

    # A part fetched from its signed link through a server error (retried) and processed.
    part_links.fault(LinkFault(status=500))
    runs["preprocess"] = dfd_cli(home, "preprocess", *links_input, *PROCESS_FLAGS,
                                 "--summary-json", str(tmp_path / "summary.json"), **from_file)
    assert runs["preprocess"].returncode == 0, runs["preprocess"].stderr[-3000:]
    assert "HTTP 500; retrying" in runs["preprocess"].stderr
    assert "part  0: fetched" in runs["preprocess"].stdout
    assert sorted(json.loads((out / "manifest.json").read_text())["parts"]) == ["00"]
    # The signed URL was requested (and logged at debug level) with its signature blanked.
    assert "/kaggle-competitions-detached-data/16880/dfdc_train_part_00.zip?***" in \
        runs["preprocess"].stderr

    # A sync with the credentials in the environment: nothing new.
    runs["sync"] = dfd_cli(home, "sync", *links_input, *PROCESS_FLAGS, **from_env)
    assert runs["sync"].returncode == 0, runs["sync"].stderr[-3000:]
    assert "nothing new: 1 part(s) up to date" in runs["sync"].stdout

    # Refused (HTTP 401): a wrong key that holds the planted one must not be echoed either.
    wrong = {**from_env, "KAGGLE_KEY": "wrong" + SECRET_KEY}
    runs["sync-401"] = dfd_cli(home, "sync", "--source", f"kaggle://{COMPETITION}",
                               "--staging", str(staging), "--output", str(out),
                               *PROCESS_FLAGS, **wrong)
    runs["preprocess-401"] = dfd_cli(home, "preprocess", *kaggle_input, *PROCESS_FLAGS,
                                     "--force", **wrong)
    runs["download-401"] = dfd_cli(home, "download", "--kaggle-files", "--out",
                                   str(tmp_path / "raw"), **wrong)
    for name in ("sync-401", "preprocess-401", "download-401"):
        assert runs[name].returncode == 1
        assert runs[name].stderr.strip().splitlines()[-1].endswith(
            "Kaggle rejected the credentials from the KAGGLE_USERNAME and KAGGLE_KEY "
            "environment variables (HTTP 401)")

    # Server errors until the retries are spent, and a status that is never retried.
    standin.fault(Fault(status=503), Fault(status=503))
    runs["download-503"] = dfd_cli(home, "download", "--kaggle-files", "sample_submission.csv",
                                   "--out", str(tmp_path / "raw"), "--retries", "1",
                                   "--backoff", "0", **from_env)
    assert runs["download-503"].returncode == 1
    assert "gave up after 2 attempt(s): HTTP 503" in runs["download-503"].stdout
    standin.fault(Fault(status=410))
    runs["download-410"] = dfd_cli(home, "download", "--kaggle-files", "sample_submission.csv",
                                   "--out", str(tmp_path / "raw"), **from_file)
    assert runs["download-410"].returncode == 1
    assert "HTTP 410" in runs["download-410"].stdout + runs["download-410"].stderr
    assert not (tmp_path / "raw" / "sample_submission.csv").exists()

    # The Beam fetch stage in this process, its part failing: the reason kept in the summary.
    from dfd import manifest as mf
    from dfd.kaggle import RetryPolicy
    from pipelines.fetch import LinksSource, stage_parts

    for name in [k for k in os.environ if k.startswith("KAGGLE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(home))
    part_links.fault(LinkFault(status=500), LinkFault(status=500))
    caplog.set_level("DEBUG")
    from dfd.kaggle.links import read_links

    staged = stage_parts(LinksSource(str(links), tuple(read_links(str(links)))),
                         staging=str(tmp_path / "staging2"), selection={0},
                         manifest=mf.empty(), config_hash_of=lambda part: "h", force=True,
                         beam_args=["--direct_num_workers", "1"],
                         retry=RetryPolicy(attempts=2, backoff_s=0.0))
    [failed] = staged["failed"]
    assert failed["reason"] == "fetch_failed" and failed["detail"].endswith("HTTP 500")
    assert "/kaggle-competitions-detached-data/" in caplog.text  # request lines, redacted

    secrets = (*SECRETS, *signatures)
    for name, run in runs.items():
        for secret in secrets:
            assert secret not in run.stdout + run.stderr, f"{secret!r} in the output of {name}"
    captured = capfd.readouterr()
    for secret in secrets:
        assert secret not in caplog.text + captured.out + captured.err + json.dumps(staged)
    for path in tmp_path.rglob("*"):
        if path.is_file() and path not in (secret_dir / "kaggle.json", links):
            blob = path.read_bytes()
            for secret in secrets:
                assert secret.encode() not in blob, f"{secret!r} in {path}"


# ---- models ----------------------------------------------------------------------------------

class PickleBomb:
    """Unpickling this writes the marker file: proof that something unpickled it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.write_text, (self.marker, "unpickled")


def lambda_model(marker: Path):
    """A Keras model whose Lambda layer writes the marker whenever it runs."""
    import tf_keras as keras

    model = keras.Sequential([
        keras.Input((256, 256, 3)),
        keras.layers.Lambda(lambda x, m=str(marker): (open(m, "a").close(), x)[1]),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(1, activation="sigmoid")])
    marker.unlink(missing_ok=True)  # building it ran the Lambda once
    return model


@pytest.fixture(scope="module")
def planted_models(tmp_path_factory):
    """Run dirs whose model/ folder holds something other than dfd's safe form, each by the
    phrase its refusal must contain; plus the markers that loading them must never create."""
    root = tmp_path_factory.mktemp("sec-models")
    marker = root / "MARKER-code-ran"
    bomb = pickle.dumps(PickleBomb(marker))
    good = make_run_dir(root / "good", history=False) / "model"
    keras_model = lambda_model(marker)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "HDF5 is a legacy format": we know
        keras_model.save(str(root / "lambda.keras"))
        keras_model.save(str(root / "lambda.h5"))
        keras_model.save(str(root / "savedmodel"), save_format="tf")
    marker.unlink(missing_ok=True)  # saving traced the Lambda

    def run_dir(name: str, files: dict[str, bytes]) -> Path:
        folder = root / name / "model"
        folder.mkdir(parents=True)
        for file_name, data in files.items():
            (folder / file_name).write_bytes(data)
        return folder

    spec = (good / "model.json").read_bytes()
    weights = (good / "weights.h5").read_bytes()
    planted = {
        "model.pkl (a pickle), which dfd never loads":
            run_dir("pickle", {"model.pkl": bomb}),
        "model.keras (a Keras archive), which dfd never loads":
            run_dir("keras", {"model.keras": (root / "lambda.keras").read_bytes()}),
        "saved_model.pb (a TensorFlow SavedModel)":
            run_dir("savedmodel", {p.name: p.read_bytes()
                                   for p in (root / "savedmodel").iterdir() if p.is_file()}),
        "weights.h5 is not an HDF5 file": run_dir("pickled-weights", {
            "model.json": spec, "weights.h5": bomb}),
        "is not an HDF5 file (it starts b'PK": run_dir("zip-weights", {
            "model.json": spec, "weights.h5": (root / "lambda.keras").read_bytes()}),
        "is a whole saved Keras model": run_dir("whole-h5", {
            "model.json": spec, "weights.h5": (root / "lambda.h5").read_bytes()}),
        "is a Keras model config": run_dir("keras-config", {
            "model.json": keras_model.to_json().encode(), "weights.h5": weights}),
        "takes no option 'function'": run_dir("option", {
            "model.json": _spec_with(spec, options={"function": "lambda x: x"}),
            "weights.h5": weights}),
        "option 'dropout' must be a number, string, boolean or null": run_dir("nested", {
            "model.json": _spec_with(spec, options={"dropout": {"py/reduce": "os.system"}}),
            "weights.h5": weights}),
        "unknown model 'Lambda'": run_dir("name", {
            "model.json": _spec_with(spec, name="Lambda"), "weights.h5": weights}),
        "is not valid JSON": run_dir("json", {"model.json": bomb, "weights.h5": weights}),
    }
    # The safe form, with a pickle beside it and a pickle's bytes stored inside the HDF5 file:
    # it loads, and neither is unpickled.
    beside = run_dir("safe-with-pickles", {"model.json": spec, "weights.h5": weights,
                                           "model.pkl": bomb})
    with h5py.File(beside / "weights.h5", "a") as h5:
        h5.create_dataset("payload", data=np.void(bomb))
        h5["dense_3"].attrs["payload"] = np.void(bomb)
    return planted, beside, marker


def _spec_with(spec: bytes, **changes) -> bytes:
    return json.dumps({**json.loads(spec), **changes}).encode()


def test_models_load_from_model_json_and_hdf5_weights_only(planted_models):
    planted, beside, marker = planted_models
    for phrase, folder in planted.items():
        with pytest.raises((ValueError, FileNotFoundError)) as refused:
            models.load_model(str(folder))
        message = str(refused.value)
        assert phrase in message, (folder, message)
        assert "\n" not in message
        assert not marker.exists(), f"loading {folder} ran planted code"

    loaded = models.load_model(str(beside))
    assert loaded.name == "paper_cnn" and not marker.exists()
    # The bomb is live: unpickling it is what the marker would reveal.
    pickle.loads((beside / "model.pkl").read_bytes())
    assert marker.read_text() == "unpickled"
    marker.unlink()


def test_dfd_predict_refuses_a_run_dir_with_a_pickle_for_weights(planted_models, tmp_path,
                                                                  capsys):
    from dfd.cli import main

    planted, _, marker = planted_models
    run = planted["weights.h5 is not an HDF5 file"].parent
    status = main(["predict", str(clip("sec-predict.mp4", 10)), "--run-dir", str(run)])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1
    assert err[-1].startswith("dfd predict: error: ") and "is not an HDF5 file" in err[-1]
    assert not marker.exists()


def test_dfd_infer_refuses_an_unsafe_model_in_one_line_before_starting_ray(planted_models,
                                                                          tmp_path, capsys):
    from dfd.cli import main

    planted, _, marker = planted_models
    data = tmp_path / "faces"
    make_face_tree(data, parts={0: "test"}, originals=1)
    with_spec = {phrase: folder for phrase, folder in planted.items()
                 if (folder / "model.json").exists()}
    assert len(with_spec) >= 4
    for phrase, folder in with_spec.items():
        status = main(["infer", "--data", str(data), "--run-dir", str(folder.parent),
                       "--out", str(tmp_path / "out")])
        err = capsys.readouterr().err.strip().splitlines()
        assert status == 1
        assert err[-1].startswith("dfd infer: error: ") and phrase in err[-1], (phrase, err)
    assert not (tmp_path / "out").exists()
    assert not marker.exists()


# ---- output paths ----------------------------------------------------------------------------

HOSTILE_PIECES = ["..", "../x", "a/../../x", "/etc/passwd", "a//b", "a/./b", ".", "",
                  "a\\..\\b", "..\\x", "x\x00.parquet", "C:/x", "c:\\x", "s3://bucket/x",
                  "a/", "/"]


def test_output_names_refuse_pieces_that_could_leave_the_output():
    for piece in HOSTILE_PIECES:
        with pytest.raises(ot.UnsafePath):
            ot.join("/out", piece)
        with pytest.raises(ot.UnsafePath):
            ot.join("gs://bucket/out", "parquet", piece)
    for split in ("../../x", "Train", "a/b", "", "test\x00", "val idation"):
        with pytest.raises(ot.UnsafePath):
            ot.shard_path("/out", "parquet", 0, split, 0, 1)
    for part in ("../1", "1", -1, 1.0, True, None):
        with pytest.raises(ValueError):
            ot.part_dir("/out", "parquet", part)
        with pytest.raises(ValueError):
            ot.errors_path("/out", part)
    with pytest.raises(ValueError):
        ot.shard_path("/out", "../parquet", 0, "train", 0, 1)
    # What the pipeline names stays as it was.
    assert ot.join("/out/", "parquet", "part-03") == "/out/parquet/part-03"
    assert ot.part_dir("gs://b/o", "tfrecord", np.int64(7)) == "gs://b/o/tfrecord/part-07"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet=st.sampled_from(list("ab./\\:\x00_-")), max_size=12),
                min_size=1, max_size=3))
def test_a_joined_path_is_inside_its_root_or_refused(pieces):
    root = "/srv/out"
    try:
        joined = ot.join(root, *pieces)
    except ot.UnsafePath:
        return
    assert joined.startswith(root + "/")
    assert posixpath.normpath(joined) == joined  # nothing for a file system to resolve
    assert "\\" not in joined and "\x00" not in joined


def _hostile_face_tree(root: Path, absolute: str) -> tuple[Path, list[str]]:
    """A committed face-shard tree whose records carry hostile video names, as a tree made
    from someone else's metadata.json could (shards are input to `dfd infer`)."""
    data = root / "data"
    records = make_face_tree(data, parts={0: "test"}, originals=2, frames=2, faceless=0)[0]
    hostile = ["../../evil.mp4", absolute, "..\\..\\evil.mp4", "<script>x</script>.mp4"]
    renamed = dict(zip(sorted({r["video"] for r in records}), hostile))
    rows = [{**r, "video": renamed.get(r["video"], r["video"]),
             "original": renamed.get(r["original"], r["original"])} for r in records]
    shards.write_parquet(rows, ot.shard_path(str(data), "parquet", 0, "test", 0, 1))
    return data, hostile


def test_infer_report_and_predict_write_only_where_they_are_told(tmp_path, monkeypatch,
                                                                 capsys):
    from dfd.cli import main

    absolute = f"/tmp/dfd-security-{uuid.uuid4().hex}.mp4"
    data, hostile = _hostile_face_tree(tmp_path / "in", absolute)
    run = make_run_dir(tmp_path / "run")
    # A part folder for `dfd predict`: one video, and metadata.json naming files outside it,
    # where real videos wait in case a name were followed.
    part = tmp_path / "in" / "raw" / dfdc.part_folder_name(0)
    part.mkdir(parents=True)
    real = clip("sec-real.mp4", 10).read_bytes()
    (part / "real0.mp4").write_bytes(real)
    (tmp_path / "in" / "evil.mp4").write_bytes(real)
    (part / "metadata.json").write_text(json.dumps(
        {name: {"label": "REAL", "split": "train"} for name in ["real0.mp4", *hostile]}))
    cwd = tmp_path / "cwd" / "a" / "b"  # '../../evil.mp4' from here stays in tmp_path
    cwd.mkdir(parents=True)
    monkeypatch.chdir(cwd)
    before = tree_state(tmp_path)

    def assert_wrote_only(folder: Path) -> None:
        nonlocal before
        changed = written_since(tmp_path, before)
        assert changed and inside(changed, str(folder.relative_to(tmp_path))), changed
        assert not Path(absolute).exists()
        before = tree_state(tmp_path)

    pred = tmp_path / "pred"
    assert main(["infer", "--data", str(data), "--run-dir", str(run), "--out", str(pred),
                 "--actors", "1"]) == 0
    videos = pq.read_table(pred / "video_predictions.parquet").column("video").to_pylist()
    assert set(hostile) <= set(videos)  # names are data: scored, never used as paths
    assert_wrote_only(pred)

    rep = tmp_path / "rep"
    assert main(["report", "--predictions", str(pred), "--run-dir", str(run),
                 "--out", str(rep)]) == 0
    assert "<script>x</script>" not in (rep / "report.html").read_text()
    assert_wrote_only(rep)

    csv = tmp_path / "sub" / "submission.csv"
    csv.parent.mkdir()
    before = tree_state(tmp_path)
    capsys.readouterr()
    status = main(["predict", str(part), "--run-dir", str(run), "--csv", str(csv),
                   "--frames-per-video", "2", "--json"])
    assert status == 0, capsys.readouterr().err
    scored = json.loads(capsys.readouterr().out)["videos"]
    assert [v["video"] for v in scored] == ["real0.mp4"]
    assert_wrote_only(csv.parent)
