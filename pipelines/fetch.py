"""The fetch stage: DFDC parts land in a staging folder, one element per part.

    dfd preprocess --links dfdc-links.txt --staging gs://b/dfdc-raw --output gs://b/faces \\
        [--parts 0-9]

The parts come from the signed links of the competition's data page (a links file, one URL per
line: ``LinksSource``); Kaggle's API does not serve them (the data page: "not available
directly on Kaggle"), so a ``kaggle://`` input (``KaggleSource``) finds none there and says to
use links, though it fetches the parts of any competition whose API lists them.

The driver reads the source once and picks the parts that need fetching: those selected that
the output's manifest does not hold under the current config (for a Kaggle file, from the same
file). ``FetchParts`` then fetches them in parallel, each worker opening the source once in
``setup()`` and fetching, verifying and committing one part per element
(``dfd.kaggle.links.PartLinks`` or ``dfd.kaggle.Competition``); a part that fails (a refused
link, retries spent) goes to a tagged output with its reason, and the others carry on. A
linked ``dfdc_train_all.zip`` is fetched once on the driver and the parts selected from it are
streamed out of it. The processing pipeline then reads the staged zips as any other input.

The fetch runs as its own pipeline before the processing one rather than as a stage of it:
the processing pipeline's commit step needs each part's source size and checksum (the zip's
central directory) when it is wired, and those exist only once the zip is staged. The staging
folder is the hand-off either way, so a part fetched by a run that later fails is not fetched
again (its receipt says it is verified). On the DirectRunner the fetch pipeline runs threaded
unless told otherwise: fetching waits on the network, and threads spare it the worker
processes' start-up.

The signed links travel to the workers inside the DoFn (they are never logged or shown), so a
worker needs no access to the links file. Kaggle workers authenticate themselves: on the
DirectRunner they inherit the launcher's environment; on a distributed runner the worker image
or environment must carry the Kaggle credentials, or every part fails with the
missing-credentials message.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
import uuid
import zipfile

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from dfd import dfdc
from dfd import manifest as mf
from dfd.errors import DfdError
from dfd.kaggle import AccessDenied, Competition, RetryPolicy
from dfd.kaggle import links as part_links
from dfd.kaggle.checks import read_receipt
from dfd.kaggle.redact import redact
from dfd.output_tree import join
from pipelines.options import pipeline_options

log = logging.getLogger(__name__)

KAGGLE_SCHEME = "kaggle://"
FAILED = "failed"
FETCH_RUNS = "_fetch_runs"  # under the staging folder: each fetch pipeline's results
NAMESPACE = "dfd"


@dataclasses.dataclass(frozen=True)
class KaggleSource:
    """Parts listed by a Kaggle competition's API (the real DFDC competition lists none)."""
    competition: str

    def __str__(self) -> str:
        return KAGGLE_SCHEME + self.competition

    def open(self, retry: RetryPolicy, scratch_dir: str | None = None) -> Competition:
        return Competition(self.competition, retry=retry, scratch_dir=scratch_dir)


@dataclasses.dataclass(frozen=True)
class LinksSource:
    """Parts at the signed links of a links file. The links themselves travel to the workers
    (inside the DoFn), so a worker needs no access to the file; they are shown nowhere."""
    uri: str  # the links file
    links: tuple = dataclasses.field(repr=False)

    def __str__(self) -> str:
        return f"the links in {self.uri}"

    def open(self, retry: RetryPolicy, scratch_dir: str | None = None):
        return part_links.PartLinks(list(self.links), retry=retry, scratch_dir=scratch_dir)


@dataclasses.dataclass(frozen=True)
class AllPartsZip:
    """dfdc_train_all.zip as input (local, gs://, s3://): its nested part zips are staged."""
    uri: str

    def __str__(self) -> str:
        return self.uri


def source_of(input: str | None,
              links: str | None) -> KaggleSource | LinksSource | AllPartsZip | None:
    """What the fetch stage fetches from: a links file, a kaggle:// input, dfdc_train_all.zip,
    or None (the input is a folder of parts already)."""
    if links:
        return LinksSource(links, tuple(part_links.read_links(links)))
    if dfdc.is_all_parts_zip(input):
        return AllPartsZip(input)
    competition = competition_of(input) if input else None
    return KaggleSource(competition) if competition else None


def competition_of(uri: str) -> str | None:
    """'kaggle://deepfake-detection-challenge' -> its competition; None for other URIs."""
    if not uri.startswith(KAGGLE_SCHEME):
        return None
    name = uri[len(KAGGLE_SCHEME):].strip("/")
    if not name or "/" in name:
        raise DfdError(f"bad Kaggle input {uri!r}: expected kaggle://<competition>")
    return name


# ---- which parts to fetch ---------------------------------------------------------------------

def needs_fetch(file, entry: dict | None, *, config_hash: str,
                receipt: dict | None) -> bool:
    """Whether a listed part (a CompetitionFile, or a PartLink) must be fetched and processed.

    The manifest names the part's source by its zip's central directory, which cannot be
    known before the zip is here; a committed part is taken to come from the Kaggle file
    when the sizes agree and the staged copy's receipt (if the staging still has one) is of
    the file Kaggle lists now (same creation time). A link says nothing of its file until it
    is fetched: its part is current when committed under this config and the staged copy (if
    any) is the one that was processed."""
    if entry is None or entry["config_hash"] != config_hash:
        return True
    size = getattr(file, "size", None)
    if size is None:  # a link
        return receipt is not None and receipt.get("size") != entry["source_size"]
    if entry["source_size"] != size:
        return True
    if receipt is not None and file.created and receipt.get("created") != file.created:
        return True  # Kaggle replaced the file since it was processed
    return False


@dataclasses.dataclass(frozen=True)
class FetchPlan:
    listed: dict  # every DFDC part the source lists: CompetitionFile or PartLink
    to_fetch: list[int]
    up_to_date: list[int]  # committed from the same file under the same config


def plan_fetch(listed: dict, selection: set[int] | None,
               manifest: dict, *, config_hash_of, staging: str,
               force: bool = False, what: str = "the competition") -> FetchPlan:
    wanted = sorted(listed) if selection is None else sorted(selection)
    missing = [p for p in wanted if p not in listed]
    if missing:
        raise DfdError(f"{what} has no part(s) {', '.join(f'{p:02d}' for p in missing)}"
                       f"; it lists {len(listed)} part(s)")
    to_fetch, current = [], []
    for part in wanted:
        file = listed[part]
        entry = manifest["parts"].get(mf.part_key(part))
        if force or needs_fetch(file, entry, config_hash=config_hash_of(part),
                                receipt=read_receipt(staging, _name(file))):
            to_fetch.append(part)
        else:
            current.append(part)
    return FetchPlan(listed, to_fetch, current)


def _name(file) -> str:
    return getattr(file, "basename", None) or file.name


# ---- the stage --------------------------------------------------------------------------------

class _FetchPartFn(beam.DoFn):
    """A part number -> where it is staged; failures tagged with their reason."""

    def __init__(self, source: KaggleSource | LinksSource, staging: str, retry: RetryPolicy,
                 scratch_dir: str | None):
        self.source = source
        self.staging = staging
        self.retry = retry
        self.scratch_dir = scratch_dir
        self.fetched = Metrics.counter(NAMESPACE, "parts_fetched")
        self.present = Metrics.counter(NAMESPACE, "parts_already_staged")
        self.failed = Metrics.counter(NAMESPACE, "parts_fetch_failed")
        self.bytes = Metrics.counter(NAMESPACE, "bytes_fetched")

    def setup(self):
        # Authenticates once per worker (Kaggle); the listing is made once and reused for
        # every part.
        self._fetcher, self._unusable = None, None
        try:
            self._fetcher = self.source.open(self.retry, self.scratch_dir)
        except DfdError as exc:  # e.g. no credentials on this worker: each part says so
            self._unusable = str(exc)

    def process(self, part: int):
        if self._unusable:
            yield self._failure(part, "no_access", self._unusable)
            return
        try:
            fetcher = self._fetcher
            listed = fetcher.parts()
            if part not in listed:
                raise DfdError(f"{self.source} no longer list(s) part {part:02d}")
            result = fetcher.fetch(listed[part], self.staging)
        except DfdError as exc:  # FetchFailed, AccessDenied, LinkRefused, a part not listed
            reason = ("access_denied" if isinstance(exc, AccessDenied) else
                      "link_refused" if isinstance(exc, part_links.LinkRefused) else
                      "fetch_failed")
            yield self._failure(part, reason, str(exc))
            return
        except Exception as exc:  # one part's surprise must not stop the other parts
            # Its text may quote a signed download URL: redacted before it is logged or kept.
            yield self._failure(part, "fetch_error", redact(f"{type(exc).__name__}: {exc}"))
            return
        if result.status == "fetched":
            self.fetched.inc()
            self.bytes.inc(result.file.size)
        else:
            self.present.inc()
        yield {"part": part, "status": result.status, "uri": result.uri,
               "size": result.file.size, "md5": result.md5,
               "seconds": round(result.seconds, 2)}

    def _failure(self, part: int, reason: str, detail: str):
        self.failed.inc()
        log.error("part %02d not fetched (%s): %s", part, reason, detail)
        return beam.pvalue.TaggedOutput(FAILED, {"part": part, "reason": reason,
                                                 "detail": detail})


class FetchParts(beam.PTransform):
    """Part numbers -> staged parts ({part, status, uri, size, md5, seconds}); parts that could
    not be fetched under the FAILED tag ({part, reason, detail})."""

    def __init__(self, source: KaggleSource | LinksSource | str, staging: str, *,
                 retry: RetryPolicy = RetryPolicy(), scratch_dir: str | None = None):
        super().__init__()
        # A bare name is a Kaggle competition.
        self.source = KaggleSource(source) if isinstance(source, str) else source
        self.staging = staging
        self.retry = retry
        self.scratch_dir = scratch_dir

    def expand(self, parts):
        return (parts
                # Create hands every part to one bundle; spread them over the workers.
                | "Spread" >> beam.Reshuffle()
                | "Fetch" >> beam.ParDo(_FetchPartFn(self.source, self.staging,
                                                     self.retry, self.scratch_dir))
                .with_outputs(FAILED, main="staged"))


def _write_results(results: list, *, uri: str) -> None:
    with FileSystems.create(uri) as f:
        f.write(json.dumps(results, sort_keys=True).encode())


def run_fetch(parts: list[int], *, competition, staging: str, beam_args: list[str],
              retry: RetryPolicy = RetryPolicy(), scratch_dir: str | None = None) -> dict:
    """Fetch the parts into staging with one Beam pipeline; returns {"staged": [...],
    "failed": [...]} (see FetchParts)."""
    results_uri = join(staging, FETCH_RUNS, f"{uuid.uuid4().hex}.json")
    started = time.perf_counter()
    with beam.Pipeline(options=pipeline_options(
            beam_args, direct_running_mode="multi_threading")) as p:
        out = (p | "Parts" >> beam.Create(sorted(parts))
               | "FetchParts" >> FetchParts(competition, staging, retry=retry,
                                            scratch_dir=scratch_dir))
        tagged = ((out.staged | "TagStaged" >> beam.Map(lambda r: ("staged", r))),
                  (out[FAILED] | "TagFailed" >> beam.Map(lambda r: (FAILED, r))))
        (tagged | "All" >> beam.Flatten() | "ToList" >> beam.combiners.ToList()
         | "Write" >> beam.Map(_write_results, uri=results_uri))
    with FileSystems.open(results_uri) as f:
        results = json.loads(f.read())
    FileSystems.delete([results_uri])
    summary = {"staged": sorted((r for k, r in results if k == "staged"),
                                key=lambda r: r["part"]),
               "failed": sorted((r for k, r in results if k == FAILED),
                                key=lambda r: r["part"])}
    log.info("fetch stage: %d part(s) staged, %d failed in %.1f s", len(summary["staged"]),
             len(summary["failed"]), time.perf_counter() - started)
    return summary


def stage_parts(source: KaggleSource | LinksSource | str, *, staging: str,
                selection: set[int] | None, manifest: dict, config_hash_of,
                beam_args: list[str], force: bool = False,
                retry: RetryPolicy = RetryPolicy()) -> dict:
    """List the source, fetch the selected parts that need it into staging.

    Returns {"to_process": [parts staged for processing], "up_to_date": [...],
    "staged": [...], "failed": [...]}; no pipeline runs when nothing needs fetching."""
    if isinstance(source, str):  # a bare name is a Kaggle competition
        source = KaggleSource(source)
    if isinstance(source, AllPartsZip):
        with part_links.open_seekable(source.uri) as f, zipfile.ZipFile(f) as zf:
            held = set(part_links.nested_parts(zf))
        wanted = held if selection is None else set(selection)
        done = _stage_nested(
            wanted, manifest, config_hash_of=config_hash_of, force=force,
            stage=lambda needed: part_links.unpack_nested_parts(source.uri, staging,
                                                                parts=set(needed)))
        missing = sorted(wanted - held)
        failed = [{"part": p, "reason": "not_in_archive",
                   "detail": f"{source.uri} holds no part {p}"} for p in missing]
        log.info("%s: %d part(s); staged %s; up to date %s", source, len(held),
                 [r["part"] for r in done["staged"]], done["up_to_date"])
        return {"to_process": [r["part"] for r in done["staged"]],
                "up_to_date": done["up_to_date"], "staged": done["staged"],
                "failed": sorted(done["failed"] + failed, key=lambda r: r["part"])}
    fetcher = source.open(retry)
    listed = fetcher.parts()
    nested = _nested_parts_to_stage(source, listed, selection, manifest,
                                    config_hash_of=config_hash_of, staging=staging,
                                    force=force, retry=retry)
    if isinstance(source, KaggleSource) and not set(listed) - {dfdc.SAMPLE_PART} \
            and (selection is None or selection - {dfdc.SAMPLE_PART}):
        raise DfdError(part_links_error(source.competition))
    if selection is not None and nested is not None:
        selection = selection & set(listed)  # the rest come from dfdc_train_all.zip
    plan = plan_fetch(listed, selection, manifest, config_hash_of=config_hash_of,
                      staging=staging, force=force, what=str(source))
    log.info("%s: %d part(s); to fetch %s; up to date %s", source, len(listed),
             plan.to_fetch, plan.up_to_date)
    fetched = {"staged": [], "failed": []}
    if plan.to_fetch:
        fetched = run_fetch(plan.to_fetch, competition=source, staging=staging,
                            beam_args=beam_args, retry=retry)
    if nested:
        fetched = {key: sorted(fetched[key] + nested[key], key=lambda r: r["part"])
                   for key in ("staged", "failed")}
    up_to_date = sorted(set(plan.up_to_date) | set(nested["up_to_date"] if nested else ()))
    return {"to_process": [r["part"] for r in fetched["staged"]],
            "up_to_date": up_to_date, **fetched}


def part_links_error(competition: str) -> str:
    from dfd.kaggle import parts_not_served

    return parts_not_served(competition)


def _nested_parts_to_stage(source, listed: dict, selection: set[int] | None, manifest: dict, *,
                           config_hash_of, staging: str, force: bool,
                           retry: RetryPolicy) -> dict | None:
    """Parts selected without a link of their own, staged from a linked dfdc_train_all.zip
    (fetched once, verified, its nested part zips streamed out): on the driver, since it is
    one file. None when the links hold no dfdc_train_all.zip."""
    if not isinstance(source, LinksSource):
        return None
    [all_zip] = [link for link in source.links if link.name == part_links.ALL_PARTS_ZIP] or \
        [None]
    if all_zip is None:
        return None
    wanted = (set(range(50)) if selection is None else set(selection)) - set(listed)
    return _stage_nested(
        wanted, manifest, config_hash_of=config_hash_of, force=force,
        stage=lambda needed: part_links.download_links([all_zip], staging, parts=set(needed),
                                                       jobs=1, retry=retry))


def _stage_nested(wanted: set[int], manifest: dict, *, config_hash_of, force: bool,
                  stage) -> dict:
    """Stage the wanted parts not committed under this config from dfdc_train_all.zip with
    stage(needed) (FetchResults: the archive itself, then its parts); a failure of the
    archive fails every part needed from it."""
    needed = sorted(p for p in wanted if force or mf.part_key(p) not in manifest["parts"]
                    or manifest["parts"][mf.part_key(p)]["config_hash"] != config_hash_of(p))
    current = sorted(wanted - set(needed))
    if not needed:
        return {"staged": [], "failed": [], "up_to_date": current}
    try:
        results = stage(needed)
    except (DfdError, zipfile.BadZipFile, OSError) as exc:
        detail = f"{part_links.ALL_PARTS_ZIP}: {type(exc).__name__}: {exc}"
        return {"staged": [], "up_to_date": current,
                "failed": [{"part": p, "reason": "fetch_failed", "detail": detail}
                           for p in needed]}
    staged, failed = [], []
    for r in results:
        if r.file.part is None and r.status != "failed":
            continue  # the archive itself
        if r.status == "failed":
            for part in needed if r.file.part is None else [r.file.part]:
                failed.append({"part": part, "reason": "fetch_failed", "detail": r.detail})
        else:
            staged.append({"part": r.file.part, "status": r.status, "uri": r.uri,
                           "size": r.file.size, "md5": r.md5, "seconds": round(r.seconds, 2)})
    return {"staged": staged, "failed": failed, "up_to_date": current}
