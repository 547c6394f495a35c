"""Record schemas, declared once (``schemas.records``); everything else is derived
(``schemas.derive``)."""
from schemas.declare import Field, RecordSchema
from schemas.derive import (SchemaError, arrow_schema, check_arrow_schema, decode_parsed,
                            feature_spec, from_example, to_arrow_table, to_example, validate)
from schemas.records import (ALL, CROP_SIZE, FACE, FRAME_PREDICTION, IMAGE_FORMATS, LABEL_FAKE,
                             LABEL_REAL, MANIFEST_PART, REJECT, SPLITS, VIDEO_PREDICTION)

__all__ = [
    "ALL", "CROP_SIZE", "FACE", "FRAME_PREDICTION", "IMAGE_FORMATS", "LABEL_FAKE", "LABEL_REAL",
    "MANIFEST_PART", "REJECT", "SPLITS", "VIDEO_PREDICTION", "Field", "RecordSchema",
    "SchemaError", "arrow_schema", "check_arrow_schema", "decode_parsed", "feature_spec",
    "from_example", "to_arrow_table", "to_example", "validate",
]
