"""One original and its fakes, rendered together: each frame is drawn once, encoded as the REAL
clip, then swapped and encoded once per fake, so fakes are pixel-aligned with their original
and nothing but the face differs. Frames stream straight into the encoders (a DFDC-sized clip
would not fit in memory as a whole)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from dfd.synth.encode import H264Writer
from dfd.synth.part_plan import OriginalPlan
from dfd.synth.photos import PORTRAITS
from dfd.synth.scene import SceneRenderer, sample_scene
from dfd.synth.swap import FaceSwapper, sample_swap

BOX_DECIMALS = 2


def render_clips(plan: OriginalPlan, folder: str | Path, *, fps: int,
                 frames: int) -> dict[str, dict]:
    """Write the original's and its fakes' mp4 files into `folder`; return their truth entries."""
    folder = Path(folder)
    scene = sample_scene(np.random.default_rng(plan.seed), width=plan.width,
                         height=plan.height, fps=fps, frames=frames)
    renderer = SceneRenderer(scene)
    actor_landmarks = np.asarray(PORTRAITS[scene.actor.portrait].landmarks)
    swaps = [sample_swap(np.random.default_rng(f.seed), actor=scene.actor.portrait)
             for f in plan.fakes]
    swappers = [FaceSwapper(s, actor_landmarks=actor_landmarks,
                            face_width=renderer.face_size[0]) for s in swaps]
    names = [plan.name] + [f.name for f in plan.fakes]
    writers = [H264Writer(folder / name, width=plan.width, height=plan.height, fps=fps)
               for name in names]
    boxes = []
    try:
        for index in range(frames):
            frame = renderer.render(index)
            boxes.append([round(v, BOX_DECIMALS) for v in frame.box])
            writers[0].write(frame.image)
            for swapper, writer in zip(swappers, writers[1:]):
                writer.write(swapper.apply(frame))
    finally:
        for writer in writers:
            writer.close()
    common = {"width": plan.width, "height": plan.height, "fps": fps, "frames": frames,
              "boxes": boxes, "actor": scene.actor.portrait}
    truth = {plan.name: {"label": "REAL", "original": plan.name, **common}}
    for fake, swap in zip(plan.fakes, swaps):
        truth[fake.name] = {"label": "FAKE", "original": plan.name, **common,
                            "donor": swap.donor, "strength": round(swap.strength, 3)}
    return truth
