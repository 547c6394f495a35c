"""Beam pipeline options for dfd's pipelines: the one place that fills in defaults around the
flags a user passes through (DESIGN.md: any runner by flags alone).

Without ``--runner`` a pipeline runs on the DirectRunner with one worker per core, in the mode
the caller names: ``multi_processing`` for CPU-bound work (decoding, detection), or
``multi_threading`` for network-bound work (downloads). Flags given explicitly always win.
"""
from __future__ import annotations

import os

from apache_beam.options.pipeline_options import (DirectOptions, PipelineOptions,
                                                  StandardOptions, WorkerOptions)

DIRECT_RUNNERS = ("DirectRunner", "direct")


def pipeline_options(beam_args: list[str], *,
                     direct_running_mode: str = "multi_processing") -> PipelineOptions:
    """PipelineOptions from Beam's own flags, with dfd's defaults where a flag is absent."""
    options = PipelineOptions(beam_args, save_main_session=False)
    given = " ".join(beam_args)
    std = options.view_as(StandardOptions)
    if std.runner is None:
        std.runner = "DirectRunner"
    if std.runner in DIRECT_RUNNERS:
        direct = options.view_as(DirectOptions)
        if "--direct_running_mode" not in given:
            direct.direct_running_mode = direct_running_mode
        if "--direct_num_workers" not in given:
            direct.direct_num_workers = os.cpu_count() or 1
    if "--default_sdk_harness_log_level" not in given:
        # Workers log every channel they open at INFO; milestones come from the launcher.
        options.view_as(WorkerOptions).default_sdk_harness_log_level = "WARNING"
    return options
