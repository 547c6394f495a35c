"""The composite PTransforms of the preprocessing pipeline. Each wraps plain `dfd` functions;
DoFns are private and load heavy resources (the face detector) in setup()."""
from __future__ import annotations

import logging
from collections import Counter

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

import schemas
from dfd import dfdc, shards
from dfd import output_tree as ot
from dfd.config import PreprocessConfig
from dfd.plan import plan_part
from pipelines.sources import PartSpec, read_part

log = logging.getLogger(__name__)

REJECTS = "rejects"
OUTCOMES = "outcomes"
BROKEN = "broken"
NAMESPACE = "dfd"


def _write_bytes(uri: str, data: bytes) -> None:
    with FileSystems.create(uri) as f:
        f.write(data)


class _PlanPartFn(beam.DoFn):
    """A part -> its units of work (an original with its chosen fakes), plus tagged rejects,
    per-video outcomes for the accounting, and broken-part errors."""

    def __init__(self, cfg: PreprocessConfig):
        self.cfg = cfg
        self.videos_listed = Metrics.counter(NAMESPACE, "videos_listed")
        self.left_out = Metrics.counter(NAMESPACE, "fakes_left_out")
        self.broken = Metrics.counter(NAMESPACE, "parts_broken")

    def process(self, spec: PartSpec):
        cfg = self.cfg
        try:
            raw, openers, member_rejects = read_part(
                spec, max_member_bytes=cfg.limits.max_member_bytes,
                max_video_bytes=cfg.limits.max_video_bytes)
            entries, meta_rejects = dfdc.parse_metadata(raw, part=spec.part)
        except dfdc.BrokenPart as exc:
            self.broken.inc()
            log.error("%s", exc)
            yield beam.pvalue.TaggedOutput(BROKEN, (spec.part, (exc.reason, exc.detail)))
            return
        # A member refused for its size is a rejected video, not a missing file.
        refused = {r["video"] for r in member_rejects}
        plan = plan_part(spec.part, entries, set(openers) | refused,
                         fakes_per_original=cfg.fakes_per_original, seed=cfg.seed,
                         test_parts=cfg.test_parts,
                         validation_fraction=cfg.validation_fraction,
                         shards_per_split=cfg.shards_per_split,
                         rejected_entries=[r["video"] for r in meta_rejects])
        plan_rejects = [r for r in plan.rejects if r["video"] not in refused]
        listed = {e.name for e in entries} | {r["video"] for r in meta_rejects}
        self.videos_listed.inc(len(listed))
        self.left_out.inc(len(plan.left_out))
        yield beam.pvalue.TaggedOutput(OUTCOMES, (spec.part, ("listed", sorted(listed))))
        yield beam.pvalue.TaggedOutput(OUTCOMES, (spec.part, ("left_out", plan.left_out)))
        # Each rejected video carries its label and original, so evaluations count it.
        for r in dfdc.with_entries(member_rejects + meta_rejects + plan_rejects, entries):
            yield beam.pvalue.TaggedOutput(REJECTS, (spec.part, r))
        for unit in plan.units:
            # An original refused for its size is absent from openers: its fakes are then
            # detected on their own by process_group.
            names = [unit.original.name] + [f.name for f in unit.fakes]
            yield (unit, {n: openers[n] for n in names if n in openers})


class PlanParts(beam.PTransform):
    """PartSpecs -> units, with tagged outputs REJECTS, OUTCOMES and BROKEN."""

    def __init__(self, cfg: PreprocessConfig):
        super().__init__()
        self.cfg = cfg

    def expand(self, specs):
        return specs | "Plan" >> beam.ParDo(_PlanPartFn(self.cfg)).with_outputs(
            REJECTS, OUTCOMES, BROKEN, main="units")


class _ProcessUnitFn(beam.DoFn):
    """Decode an original, detect and crop its faces, crop its fakes with the same boxes."""

    def __init__(self, cfg: PreprocessConfig):
        from dfd.process import STATS

        self.cfg = cfg
        self.units = Metrics.counter(NAMESPACE, "units_processed")
        # process_group's own counters (videos, records, image_bytes, decode_ms, ...).
        self.stats = {name: Metrics.counter(NAMESPACE, name) for name in STATS}
        self.detector = None

    def setup(self):
        from dfd.faces import detector_options, get_detector

        self.detector = get_detector(self.cfg.detector, **detector_options(self.cfg))

    def process(self, element):
        from dfd.process import VideoRef, process_group

        unit, openers = element
        refs = {}
        for entry in (unit.original, *unit.fakes):
            if entry.name in openers:
                refs[entry.name] = VideoRef(name=entry.name, part=unit.part, label=entry.label,
                                            original=entry.original,
                                            source=openers[entry.name])
        stats: Counter = Counter()
        result = process_group(refs.get(unit.original.name),
                               [refs[f.name] for f in unit.fakes if f.name in refs],
                               split=unit.split, cfg=self.cfg, detector=self.detector,
                               stats=stats)
        self.units.inc()
        for name, value in stats.items():
            self.stats[name].inc(value)
        for r in result.rejects:
            Metrics.counter(NAMESPACE, f"rejected_{r['reason']}").inc()
            yield beam.pvalue.TaggedOutput(REJECTS, (unit.part, r))
        with_records = sorted({r["video"] for r in result.records})
        yield beam.pvalue.TaggedOutput(OUTCOMES, (unit.part, ("with_records", with_records)))
        for record in result.records:
            yield (unit.part, unit.split, unit.shard), record


class ProcessUnits(beam.PTransform):
    """Units -> ((part, split, shard), face record), with tagged REJECTS and OUTCOMES."""

    def __init__(self, cfg: PreprocessConfig):
        super().__init__()
        self.cfg = cfg

    def expand(self, units):
        return (units
                | "Reshuffle" >> beam.Reshuffle()
                | "Process" >> beam.ParDo(_ProcessUnitFn(self.cfg)).with_outputs(
                    REJECTS, OUTCOMES, main="records"))


def _record_order(record: dict):
    return (record["video"], record["frame_index"], record["face_index"])


class _WriteShardFn(beam.DoFn):
    def __init__(self, output: str, shards_per_split: int):
        self.output = output
        self.count = shards_per_split
        self.shards = Metrics.counter(NAMESPACE, "shards_written")
        self.bytes = Metrics.counter(NAMESPACE, "shard_bytes")

    def process(self, element):
        (part, split, shard), records = element
        records = sorted(records, key=_record_order)  # same bytes on every run
        for fmt, encode in (("parquet", shards.parquet_bytes), ("tfrecord", shards.tfrecord_bytes)):
            data = encode(records)
            _write_bytes(ot.shard_path(self.output, fmt, part, split, shard, self.count,
                                       staging=True), data)
            self.bytes.inc(len(data))
        self.shards.inc()
        yield part, (split, shard, len(records))


class WriteShards(beam.PTransform):
    """Keyed face records -> shards in each part's staging folder; emits (part, shard info)."""

    def __init__(self, output: str, shards_per_split: int):
        super().__init__()
        self.output, self.count = output, shards_per_split

    def expand(self, keyed_records):
        return (keyed_records
                | "GroupByShard" >> beam.GroupByKey()
                | "Write" >> beam.ParDo(_WriteShardFn(self.output, self.count)))


def summarize_part(element, *, output: str, shards_per_split: int) -> dict:
    """Everything known about one part after processing: writes its errors file to staging,
    fills in empty shards, and checks the accounting rule."""
    part, groups = element
    shard_infos = list(groups["shards"])
    rejects = sorted(groups["rejects"], key=lambda r: (r["video"], r["reason"]))
    broken = list(groups["broken"])
    outcomes: dict[str, set] = {"listed": set(), "left_out": set(), "with_records": set()}
    for kind, names in groups["outcomes"]:
        outcomes[kind].update(names)
    if broken:
        reason, detail = broken[0]
        rejects = [dfdc.reject(dfdc.METADATA, part, reason, detail)]
    _write_bytes(ot.errors_path(output, part, staging=True),
                 shards.parquet_bytes(rejects, schemas.REJECT))
    splits_written = {s for s, _, _ in shard_infos}
    have = {(s, i) for s, i, _ in shard_infos}
    for split in splits_written:
        for i in range(shards_per_split):
            if (split, i) not in have:  # a complete -of-N set, even when a shard got nothing
                for fmt, encode in (("parquet", shards.parquet_bytes),
                                    ("tfrecord", shards.tfrecord_bytes)):
                    _write_bytes(ot.shard_path(output, fmt, part, split, i, shards_per_split,
                                               staging=True), encode([]))
    listed = outcomes["listed"]
    rejected = {r["video"] for r in rejects} & listed
    reasons = Counter(r["reason"] for r in rejects)
    return {
        "part": part,
        "broken": broken[0] if broken else None,
        "videos_in_metadata": len(listed),
        "videos_with_records": len(outcomes["with_records"]),
        "videos_rejected": len(rejected),
        "fakes_left_out": len(outcomes["left_out"]),
        "records": sum(n for _, _, n in shard_infos),
        "records_by_split": dict(sorted(_count_by_split(shard_infos).items())),
        "shards": sorted(shard_infos),
        "reject_reasons": dict(sorted(reasons.items())),
        "rejects_total": len(rejects),
    }


def _count_by_split(shard_infos) -> Counter:
    counts: Counter = Counter()
    for split, _, n in shard_infos:
        counts[split] += n
    return counts


class SummarizeParts(beam.PTransform):
    """Join shards, rejects, outcomes and broken-part errors per part into a summary."""

    def __init__(self, output: str, shards_per_split: int):
        super().__init__()
        self.output, self.count = output, shards_per_split

    def expand(self, tagged):
        return (tagged
                | "JoinByPart" >> beam.CoGroupByKey()
                | "Summarize" >> beam.Map(summarize_part, output=self.output,
                                          shards_per_split=self.count))
