"""The records dfd writes, declared once. Field names are the contract of DESIGN.md."""
from __future__ import annotations

from schemas.declare import Field, RecordSchema

LABEL_FAKE = 1  # Kaggle's convention: the score is the probability of FAKE
LABEL_REAL = 0
SPLITS = ("train", "validation", "test")
IMAGE_FORMATS = ("jpeg", "png")
CROP_SIZE = 256  # the network's input side; crops are stored at this size

FACE = RecordSchema(
    name="face",
    version=1,
    doc="One face crop from one sampled frame of one video.",
    fields=(
        Field("video", "str", "video file name, e.g. abcdefghij.mp4"),
        Field("part", "int", "DFDC part number"),
        Field("original", "str", "the REAL video this one derives from; itself for REAL"),
        Field("label", "int", "1 = FAKE, 0 = REAL", choices=(LABEL_REAL, LABEL_FAKE)),
        Field("split", "str", "train | validation | test", choices=SPLITS),
        Field("frame_index", "int", "index of the frame in the decoded video"),
        Field("frame_count", "int", "frames in the video"),
        Field("face_index", "int", "0 = primary (largest confident) face"),
        Field("bbox", "floats", "x1, y1, x2, y2 in source-frame pixels", length=4),
        Field("det_score", "float", "detector confidence of the box"),
        Field("frame_width", "int", "source frame width in pixels"),
        Field("frame_height", "int", "source frame height in pixels"),
        Field("image", "bytes", f"encoded {CROP_SIZE}x{CROP_SIZE} RGB crop"),
        Field("image_format", "str", "jpeg | png", choices=IMAGE_FORMATS),
    ),
)

FRAME_PREDICTION = RecordSchema(
    name="frame_prediction",
    version=1,
    doc="A model's score for one face crop.",
    fields=(
        Field("video", "str", "video file name"),
        Field("part", "int", "DFDC part number"),
        Field("frame_index", "int", "index of the frame in the decoded video"),
        Field("face_index", "int", "0 = primary face"),
        Field("label", "int", "1 = FAKE, 0 = REAL; null when unknown", nullable=True,
              choices=(LABEL_REAL, LABEL_FAKE)),
        Field("p_fake", "float", "predicted probability of FAKE"),
        Field("model", "str", "model identifier (name and run)"),
    ),
)

SCORED_BY = ("model", "fallback")

VIDEO_PREDICTION = RecordSchema(
    name="video_prediction",
    # 2: scored_by and reason, so that a video the pipeline could not score is counted with a
    # fallback score instead of left out.
    version=2,
    doc="A model's score for one video, aggregated over its face crops, or the fallback score "
        "of a video the pipeline could not score.",
    fields=(
        Field("video", "str", "video file name"),
        Field("part", "int", "DFDC part number"),
        Field("label", "int", "1 = FAKE, 0 = REAL; null when unknown", nullable=True,
              choices=(LABEL_REAL, LABEL_FAKE)),
        Field("p_fake", "float", "aggregated probability of FAKE, or the fallback score"),
        Field("n_faces", "int", "face crops that were scored"),
        Field("aggregation", "str", "name of the aggregation rule"),
        Field("model", "str", "model identifier (name and run)"),
        Field("scored_by", "str", "model: aggregated crop scores; fallback: the pipeline "
              "rejected the video (see reason)", choices=SCORED_BY),
        Field("reason", "str", "the reject reason of a fallback-scored video (no_face, "
              "unreadable, ...); null when the model scored it", nullable=True),
    ),
)

REJECT = RecordSchema(
    name="reject",
    # 2: label and original, so that an evaluation counts a rejected video without reading the
    # raw part again (version 1 files read back with both unknown).
    version=2,
    doc="A video (or part member) the pipeline could not use, and why.",
    fields=(
        Field("video", "str", "video file name or zip member"),
        Field("part", "int", "DFDC part number"),
        Field("reason", "str", "short machine-readable reason, e.g. no_face, truncated"),
        Field("detail", "str", "human-readable detail"),
        Field("label", "int", "1 = FAKE, 0 = REAL, from metadata.json; null when unknown",
              nullable=True, choices=(LABEL_REAL, LABEL_FAKE)),
        Field("original", "str", "the REAL video it derives from (itself for REAL); null when "
              "unknown", nullable=True),
    ),
)

# A manifest entry per committed part; the manifest itself is {"schema_version", "parts": {...}}.
MANIFEST_PART = RecordSchema(
    name="manifest_part",
    version=1,
    doc="One committed part in <out>/manifest.json.",
    fields=(
        Field("part", "int", "DFDC part number"),
        Field("source", "str", "URI of the part's zip or folder"),
        Field("source_size", "int", "bytes of the source"),
        Field("source_checksum", "str", "checksum of the source (see dfd.manifest)"),
        Field("config_hash", "str", "hash of the preprocessing config that made it"),
        Field("code_version", "str", "dfd version that made it"),
        Field("schema_version", "int", "version of the face schema"),
        Field("videos_in_metadata", "int", "videos listed in metadata.json"),
        Field("videos_with_records", "int", "videos that produced at least one face record"),
        Field("videos_rejected", "int", "videos in the errors file"),
        Field("fakes_left_out", "int", "fakes dropped by balancing, never decoded"),
        Field("records", "int", "face records written"),
        Field("committed_at", "str", "UTC time of the commit, ISO 8601"),
        Field("warnings", "str", "what the source's layout made doubtful, '; '-joined (e.g. a "
              "zip holding another part's folder); null when nothing", nullable=True),
    ),
)

ALL = (FACE, FRAME_PREDICTION, VIDEO_PREDICTION, REJECT, MANIFEST_PART)
