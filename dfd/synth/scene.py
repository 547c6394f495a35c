"""One original video's scene: an actor (a packaged portrait, mirrored, reshaped and re-toned
into its own identity) in front of a backdrop, lit, moving, and filmed with sensor noise.

`sample_scene` draws everything from one random generator; `SceneRenderer` turns the scene into
frames together with the true face box and landmarks of each frame.
"""
from __future__ import annotations

import dataclasses
import functools
import math

import cv2
import numpy as np

from dfd.synth import geometry
from dfd.synth.backgrounds import Backdrop, render_backdrop, sample_backdrop
from dfd.synth.grading import Grade, apply_grade
from dfd.synth.motion import Motion, sample_motion
from dfd.synth.photos import MIRRORED_LANDMARKS, PORTRAITS, portrait_pixels

# Face height at rest as a fraction of the frame's short side. DFDC's faces are about 200-400 px
# tall at 1080p; at the demo's 480x272 this keeps even a narrow face above the pipeline's 40 px
# minimum, well inside what RetinaFace and MTCNN find.
FACE_HEIGHT_RANGE = (0.26, 0.40)


@dataclasses.dataclass(frozen=True)
class Actor:
    portrait: str
    mirror: bool
    aspect: float  # face width stretch: a broader or narrower face than the photo's
    grade: Grade  # skin tone, saturation and contrast of this identity


@dataclasses.dataclass(frozen=True)
class Lighting:
    exposure: float
    white_balance: tuple[float, float, float]
    gradient: float  # brightness change across the frame along `direction`
    direction_deg: float
    vignette: float
    flicker: float  # mains-frequency flicker of the light level (relative amplitude)
    noise_sigma: float  # sensor noise, in 8-bit levels


@dataclasses.dataclass(frozen=True)
class Scene:
    width: int
    height: int
    fps: int
    frames: int
    actor: Actor
    face_height: float  # pixels, at rest
    backdrop: Backdrop
    lighting: Lighting
    motion: Motion
    noise_seed: int


@dataclasses.dataclass(frozen=True)
class RenderedFrame:
    image: np.ndarray  # RGB uint8, height x width x 3
    box: tuple[float, float, float, float]  # the true face box, x1, y1, x2, y2
    landmarks: np.ndarray  # 5x2 frame pixels, in dfd.synth.photos' landmark order
    placement: np.ndarray  # 2x3: portrait photo pixels -> frame pixels


def sample_scene(rng: np.random.Generator, *, width: int, height: int, fps: int,
                 frames: int) -> Scene:
    portrait = str(rng.choice(sorted(PORTRAITS)))
    if portrait == "camera":  # a grayscale photo: give this actor a skin tone of their own
        tint = (float(rng.uniform(4, 14)), float(rng.uniform(6, 22)))
    else:
        tint = (0.0, 0.0)
    actor = Actor(portrait=portrait, mirror=bool(rng.random() < 0.5),
                  aspect=float(rng.uniform(0.92, 1.08)),
                  grade=Grade.sample(rng, strength=1.0, tint=tint))
    face_height = float(rng.uniform(*FACE_HEIGHT_RANGE) * min(width, height))
    box_w, box_h = PORTRAITS[portrait].face_size
    face_width = face_height * box_w / box_h * actor.aspect
    wb = rng.uniform(0.88, 1.12, size=3)
    lighting = Lighting(exposure=float(rng.uniform(0.8, 1.15)),
                        white_balance=tuple(float(v) for v in wb / wb.mean()),
                        gradient=float(rng.uniform(-0.5, 0.5)),
                        direction_deg=float(rng.uniform(0, 360)),
                        vignette=float(rng.uniform(0.0, 0.35)),
                        flicker=float(rng.uniform(0.0, 0.02)),
                        noise_sigma=float(rng.uniform(1.0, 3.5)))
    return Scene(width=width, height=height, fps=fps, frames=frames, actor=actor,
                 face_height=face_height, backdrop=sample_backdrop(rng), lighting=lighting,
                 motion=sample_motion(rng, width=width, height=height,
                                      face_size=(face_width, face_height)),
                 noise_seed=int(rng.integers(2**31)))


@functools.cache
def _subject_layer(portrait: str) -> tuple[np.ndarray, np.ndarray]:
    """The photo extended downwards (so a torso never ends mid-frame) and a soft matte that keeps
    head, hair and shoulders and drops most of the photo's own backdrop."""
    photo = portrait_pixels(portrait)
    ph, pw = photo.shape[:2]
    canvas = cv2.copyMakeBorder(photo, 0, 2 * ph, 0, 0, cv2.BORDER_REPLICATE)
    p = PORTRAITS[portrait]
    (cx, cy), (fw, fh) = p.face_center, p.face_size
    yy, xx = np.mgrid[0:canvas.shape[0], 0:pw].astype(np.float32)
    head = ((xx - cx) / (0.95 * fw)) ** 2 + ((yy - (cy - 0.12 * fh)) / (0.9 * fh)) ** 2 <= 1
    shoulders = ((xx - cx) / (2.6 * fw)) ** 2 + ((yy - (cy + 2.0 * fh)) / (1.6 * fh)) ** 2 <= 1
    below = (yy >= cy + 2.0 * fh) & (np.abs(xx - cx) <= 2.6 * fw)
    matte = (head | shoulders | below).astype(np.float32)
    matte = cv2.GaussianBlur(matte, (0, 0), 0.12 * fw)
    # Fade out towards the photo's sides so its edge never shows as a line in the frame.
    ramp = 0.1 * fw
    side = np.clip(np.minimum(xx, pw - 1 - xx) / ramp, 0, 1)
    matte *= side
    canvas.flags.writeable = False
    matte.flags.writeable = False
    return canvas, matte


def _light_map(lighting: Lighting, width: int, height: int) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    a = math.radians(lighting.direction_deg)
    along = ((xx - width / 2) * math.cos(a) + (yy - height / 2) * math.sin(a)) / max(width, height)
    corner2 = (width / 2) ** 2 + (height / 2) ** 2
    radius2 = ((xx - width / 2) ** 2 + (yy - height / 2) ** 2) / corner2
    gain = lighting.exposure * (1 + lighting.gradient * along) * (1 - lighting.vignette * radius2)
    return gain[..., None] * np.asarray(lighting.white_balance, np.float32)


class SceneRenderer:
    """Renders a scene frame by frame. Holds the prepared layers of one video."""

    _NOISE_PAD = 32

    def __init__(self, scene: Scene):
        self.scene = scene
        w, h = scene.width, scene.height
        portrait = PORTRAITS[scene.actor.portrait]
        canvas, self._matte = _subject_layer(scene.actor.portrait)
        self._subject = apply_grade(canvas, scene.actor.grade)
        self._scale = scene.face_height / portrait.face_size[1]
        self._anchor = portrait.face_center
        lm = np.asarray(portrait.landmarks)
        self._landmarks = lm[list(MIRRORED_LANDMARKS)] if scene.actor.mirror else lm
        self._face_size = portrait.face_size * self._scale * np.array([scene.actor.aspect, 1.0])
        self._reach = int(math.ceil(scene.motion.camera_reach)) + 2
        self._backdrop = render_backdrop(scene.backdrop, w + 2 * self._reach, h + 2 * self._reach)
        self._light = _light_map(scene.lighting, w, h)
        rng = np.random.default_rng(scene.noise_seed)
        pad = self._NOISE_PAD
        self._noise = rng.standard_normal((h + pad, w + pad, 3), dtype=np.float32)
        self._noise *= scene.lighting.noise_sigma
        self._noise_offsets = rng.integers(0, pad, size=(scene.frames, 2))

    @property
    def face_size(self) -> tuple[float, float]:
        """The true face box's width and height at rest, in frame pixels."""
        return float(self._face_size[0]), float(self._face_size[1])

    def placement(self, index: int) -> np.ndarray:
        pose = self.scene.motion.pose(index / self.scene.fps)
        return geometry.placement(self._anchor, pose.center,
                                  scale_x=self._scale * self.scene.actor.aspect * pose.scale,
                                  scale_y=self._scale * pose.scale, angle_deg=pose.angle_deg,
                                  mirror=self.scene.actor.mirror)

    def render(self, index: int) -> RenderedFrame:
        scene = self.scene
        w, h = scene.width, scene.height
        t = index / scene.fps
        pose = scene.motion.pose(t)
        m = self.placement(index)
        subject = cv2.warpAffine(self._subject, m, (w, h), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_CONSTANT)
        alpha = cv2.warpAffine(self._matte, m, (w, h), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT)
        cam = geometry.translation(pose.camera[0] - self._reach, pose.camera[1] - self._reach)
        back = cv2.warpAffine(self._backdrop, cam, (w, h), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REFLECT)
        # In place, one frame-sized float buffer: at 1080p every temporary costs milliseconds.
        img = cv2.blendLinear(subject.astype(np.float32), back.astype(np.float32), alpha,
                              1.0 - alpha)
        img *= self._light
        img *= np.float32(1 + scene.lighting.flicker * math.sin(2 * math.pi * 2.3 * t))
        ox, oy = self._noise_offsets[index]
        img += self._noise[oy:oy + h, ox:ox + w]
        img += 0.5
        np.clip(img, 0, 255, out=img)
        image = img.astype(np.uint8)
        (cx, cy) = pose.center
        bw, bh = self._face_size * pose.scale
        box = (cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2)
        return RenderedFrame(image=image, box=tuple(float(v) for v in box),
                             landmarks=geometry.apply(m, self._landmarks), placement=m)
