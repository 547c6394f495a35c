"""The Beam preprocessing pipeline: DFDC parts in, balanced leak-free face shards out.

    dfd preprocess --input data/dfdc --output data/faces [--parts 0-9] [--test-parts 9]

``run_preprocess(input, output, cfg, ...)`` is the entry point (`dfd preprocess` and `dfd
sync` call it). It runs on the DirectRunner (multi_processing, one worker per core) by
default; ``beam_args`` pass through untouched, so ``--runner=DataflowRunner --project=...
--region=...`` (or Flink, Spark) runs the same code. Parts already committed from the same
source and config are skipped. A run first rolls back any commit a killed run left unfinished
(``pipelines.commit.recover``) and clears what it staged, so a killed run is simply run again;
if a worker dies the run fails with one line naming the parts it left uncommitted.
``links`` (the signed part links of the competition's data page) or a ``kaggle://`` input first
fetches the parts that need it into ``staging`` (``pipelines.fetch``), then processes them
from there.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from dfd import config as cfgmod
from dfd import dfdc
from dfd import manifest as mf
from dfd import output_tree as ot
from dfd.config import part_config_hash
from dfd.errors import DfdError
from pipelines import commit, fetch, sources
from pipelines.options import pipeline_options
from pipelines.transforms import (BROKEN, OUTCOMES, REJECTS, PlanParts, ProcessUnits,
                                  SummarizeParts, WriteShards)

log = logging.getLogger(__name__)


def build(p: beam.Pipeline, specs: list[sources.PartSpec], *, output: str,
          cfg: cfgmod.PreprocessConfig):
    """Wire the stages; returns the PCollection of run summaries (one element)."""
    planned = (p | "Parts" >> beam.Create(specs) | "PlanParts" >> PlanParts(cfg))
    processed = planned.units | "ProcessUnits" >> ProcessUnits(cfg)
    shard_infos = processed.records | "WriteShards" >> WriteShards(output, cfg.shards_per_split)
    rejects = ((planned[REJECTS], processed[REJECTS]) | "AllRejects" >> beam.Flatten())
    outcomes = ((planned[OUTCOMES], processed[OUTCOMES]) | "AllOutcomes" >> beam.Flatten())
    summaries = ({"shards": shard_infos, "rejects": rejects, "outcomes": outcomes,
                  "broken": planned[BROKEN]}
                 | "SummarizeParts" >> SummarizeParts(output, cfg.shards_per_split))
    spec_dicts = {s.part: dataclasses.asdict(s) for s in specs}
    hashes = {s.part: part_config_hash(cfg, s.part) for s in specs}
    # What the config hashes stand for; which parts are held out is in each hash already.
    settings = cfgmod.to_dict(dataclasses.replace(cfg, test_parts=()))
    return (summaries
            | "AllParts" >> beam.combiners.ToList()
            | "Commit" >> beam.Map(commit.commit_parts, output=output, specs=spec_dicts,
                                   config_hashes=hashes, settings=settings))


# Parts per pipeline run. The commit waits for every part of its pipeline, so a run that dies
# late loses the processing of at most this many parts; the cost is one pipeline start per wave
# (seconds on the DirectRunner, minutes of worker start-up on Dataflow) and a thinner tail.
PARTS_PER_WAVE = 5


def waves(specs: list, size: int = PARTS_PER_WAVE) -> list[list]:
    """The parts to process, in order, cut into pipeline runs of at most size parts."""
    if size < 1:
        raise DfdError(f"parts per wave must be at least 1, got {size}")
    return [specs[i:i + size] for i in range(0, len(specs), size)]


def run_preprocess(input: str | None, output: str, cfg: cfgmod.PreprocessConfig, *,
                   parts: set[int] | None = None, links: str | None = None,
                   staging: str | None = None, force: bool = False,
                   beam_args: Sequence[str] = (),
                   before_processing: Callable[[], None] | None = None,
                   parts_per_wave: int = PARTS_PER_WAVE) -> dict:
    """Preprocess the parts of ``input`` (a folder or bucket of parts, or ``kaggle://...``) or
    of the ``links`` file (fetched into ``staging`` first) into ``output``; ``parts`` selects
    (None: all found). Returns the run summary: committed, failed and skipped parts (and
    fetched ones). ``before_processing()`` is called after any fetch stage, just before the
    processing pipeline starts (a sync checks its lease there). Parts are processed and
    committed in waves of ``parts_per_wave`` pipeline runs (``waves``)."""
    dfdc.check_part_source(input, links, staging)
    options = pipeline_options(list(beam_args), direct_running_mode="multi_processing")
    # Beam's s3:// and gs:// filesystems need the run's options already here, before the
    # pipeline: recovery, the manifest and part discovery go through them.
    FileSystems.set_options(options)
    recovered = commit.recover(output)  # before reading what is committed
    if recovered:
        log.warning("rolled back the unfinished commit of part(s) %s left by a killed run",
                    recovered)
    current = commit.read_manifest(output)
    source, staged, selection = input, None, parts
    fetched_from = fetch.source_of(input, links)  # a links file, or a kaggle:// input
    if fetched_from:
        staged = fetch.stage_parts(fetched_from, staging=staging, selection=selection,
                                   manifest=current, force=force, beam_args=list(beam_args),
                                   config_hash_of=lambda part: part_config_hash(cfg, part))
        source, selection = staging, set(staged["to_process"])
    found = sources.discover_parts(source, selection) if selection != set() else []
    if not found and staged is None:
        raise DfdError(f"no DFDC parts found under {input}"
                       + (f" matching the selected parts {sorted(parts)}" if parts else ""))
    todo, skipped = [], list(staged["up_to_date"]) if staged else []
    for spec in found:
        if not force and mf.is_current(current, spec.part, source_checksum=spec.checksum,
                                       config_hash=part_config_hash(cfg, spec.part)):
            skipped.append(spec.part)
        else:
            todo.append(spec)
    log.info("parts found %s; to process %s; already committed %s",
             [s.part for s in found], [s.part for s in todo], skipped)
    fetch_report = {"fetched": [r for r in staged["staged"] if r["status"] == "fetched"],
                    "failed": staged["failed"]} if staged else None
    if not todo:
        return _with_fetch({"committed": [], "failed": [], "skipped": sorted(skipped),
                            "seconds": 0.0}, fetch_report)
    if before_processing:
        before_processing()
    for spec in todo:  # leftovers of a killed run are never mistaken for this run's output
        commit.clear_staging(output, spec.part)
    started = time.perf_counter()
    summary = {"committed": [], "failed": []}
    batches = waves(todo, parts_per_wave)
    for wave in batches:
        try:
            with beam.Pipeline(options=options) as p:
                build(p, wave, output=output, cfg=cfg)
        except Exception as exc:
            raise _run_failed(exc, output, [s.part for s in todo]) from exc
        with FileSystems.open(ot.join(output, commit.RUN_SUMMARY)) as f:
            done = json.loads(f.read())
        summary = {k: summary[k] + done[k] for k in ("committed", "failed")}
    if len(batches) > 1:  # each wave's commit wrote its own: the file tells the whole run
        with FileSystems.create(ot.join(output, commit.RUN_SUMMARY)) as f:
            f.write(json.dumps(summary, indent=2, sort_keys=True).encode())
    seconds = time.perf_counter() - started
    summary["skipped"] = sorted(skipped)
    summary["seconds"] = round(seconds, 2)
    return _with_fetch(summary, fetch_report)


def _run_failed(exc: Exception, output: str, parts: list[int]) -> DfdError:
    """One line for a run that died (a worker killed, a bundle failing): which parts it left
    uncommitted. Nothing of theirs is visible, and the next run redoes exactly those."""
    try:
        listed = set(commit.read_manifest(output)["parts"])
    except Exception:  # the manifest itself is what broke: say so below, in the cause
        listed = set()
    lost = [p for p in parts if mf.part_key(p) not in listed]
    cause = str(exc).strip().splitlines()[-1][:300] if str(exc).strip() else ""
    return DfdError(f"the pipeline failed ({type(exc).__name__}: {cause}); part(s) "
                    f"{', '.join(f'{p:02d}' for p in lost) or 'none'} not committed; a new "
                    f"run processes them again")


def _with_fetch(summary: dict, fetch_report: dict | None) -> dict:
    """Parts fetched from Kaggle are listed; parts that could not be fetched count as failed."""
    if fetch_report is None:
        return summary
    failed = sorted(summary["failed"] + fetch_report["failed"], key=lambda f: f["part"])
    return {**summary, "failed": failed, "fetched": fetch_report["fetched"]}
