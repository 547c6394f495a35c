"""The paper's experiments as re-runnable studies (``dfd study KIND``).

    augmentation  no augmentation vs horizontal flip, rotation and zoom (paper: rotation cost
                  about 10 % accuracy, zoom about 5 %, the flip nothing)
    backbone      the paper's CNN vs an EfficientNet-B0 backbone (paper: B0 started in the low
                  0.8s and lost accuracy with every epoch)
    occlusion     a trained model on held-out crops with face regions masked, and an
                  occlusion-sensitivity map (the paper's proposed, never-run experiment)
    split         the paper's random image-level split vs the leak-free split of DESIGN.md

Every study trains or evaluates each variant on the same data with the same budget over several
seeds and reports mean and spread of video-level AUC, log loss and accuracy on held-out parts.
This package holds the Ray-free logic; ``ray_jobs.study`` runs it.
"""
from __future__ import annotations

STUDIES = ("augmentation", "backbone", "occlusion", "split")
HELD_OUT = "test"  # the split of parts held out whole: folders no model trained on
