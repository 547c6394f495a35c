"""A synthetic stand-in for DFDC, written in its exact layout.

    dfd synth --out data/synth --preset smoke

Each original is a packaged face photograph turned into its own actor and scene (identity,
scale, position, backdrop, lighting, colour, slow motion), encoded as H.264; each fake is its
original with the face swapped for another identity's, frame by frame and pixel-aligned. A
`synth_truth.json` beside `metadata.json` gives every video's true face box per frame.
"""
from dfd.synth.parts import TRUTH_FILE, generate

__all__ = ["TRUTH_FILE", "generate"]
