"""Kaggle DFDC submission files: ``filename,label`` with the probability of FAKE as the label.

Any set of videos can be written: pass the file names to score (e.g. the rows of Kaggle's
``sample_submission.csv``) and videos without a prediction get 0.5, what the competition's
scoring treats as "no idea" and what a video without a face scores here.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Iterable, Mapping

from dfd.aggregate import NO_FACE_SCORE

HEADER = ("filename", "label")


def submission_rows(scores: Mapping[str, float],
                    videos: Iterable[str] | None = None) -> list[tuple[str, float]]:
    """(filename, p_fake) rows: for ``videos`` in their order, else every scored video sorted."""
    names = list(videos) if videos is not None else sorted(scores)
    return [(name, float(scores.get(name, NO_FACE_SCORE))) for name in names]


@dataclass(frozen=True)
class Template:
    """A submission file to answer (e.g. Kaggle's ``sample_submission.csv``): its two column
    names and its videos, in order."""
    header: tuple[str, str]
    videos: tuple[str, ...]


def read_template(path: str | Path) -> Template:
    """The header and videos of a submission-format CSV: a file name column first, the
    probability of FAKE second."""
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows or len(rows[0]) != 2 or rows[0][0].strip() != HEADER[0]:
        raise ValueError(f"{path}: expected a CSV with the columns {','.join(HEADER)}, "
                         f"as Kaggle's sample_submission.csv has")
    return Template((rows[0][0].strip(), rows[0][1].strip()),
                    tuple(row[0] for row in rows[1:] if row))


def submission_csv(scores: Mapping[str, float], videos: Iterable[str] | None = None, *,
                   header: tuple[str, str] = HEADER) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for name, p in submission_rows(scores, videos):
        writer.writerow((name, repr(p)))  # repr: the shortest text that reads back exactly
    return buf.getvalue()


def write_submission(scores: Mapping[str, float], path: str | Path,
                     videos: Iterable[str] | None = None, *,
                     template: Template | None = None) -> int:
    """Write the CSV (for a template: its videos in its order, under its header); return the
    number of rows."""
    if template is not None:
        videos = template.videos
    text = submission_csv(scores, videos, header=template.header if template else HEADER)
    Path(path).write_text(text)
    return text.count("\n") - 1


def read_videos(path: str | Path) -> list[str]:
    """The file names of a submission-format CSV (e.g. ``sample_submission.csv``), in order."""
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows or [c.strip() for c in rows[0][:1]] != ["filename"]:
        raise ValueError(f"{path}: expected a CSV whose first column is 'filename'")
    return [row[0] for row in rows[1:] if row]


def read_submission(path: str | Path) -> dict[str, float]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or list(reader.fieldnames) != list(HEADER):
            raise ValueError(f"{path}: expected the header {','.join(HEADER)}")
        return {row["filename"]: float(row["label"]) for row in reader}
