"""Apache Beam pipelines: thin composite PTransforms around `dfd` functions."""
