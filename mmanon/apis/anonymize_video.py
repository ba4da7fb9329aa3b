"""Anonymize the faces of real videos and photos with a handcrafted or a learned anonymizer.

What comes out depends on what goes in (and, for a folder, on the output path):

- a **video** file (anything FFmpeg reads) gives a video file: ``.mp4``, ``.mov`` or ``.mkv`` in H.264,
  ``.avi`` in Motion JPEG (see :class:`~.media_io.VideoWriter`), with the frame count, frame timing and size of
  the input and, unless ``keep_audio=False``, its audio tracks copied unchanged;
- an **image** file gives an image file of the same size, in the format of the output's extension;
- a **folder of images** gives a folder of images under the same names, each anonymized on its own, of any
  sizes;
- a **folder of frames** (``sequence=True``, or any folder written to a video file) is one video: its images, in
  sorted name order and all of one size, are tracked like the frames of a video file.

Each frame goes through detection (:mod:`.face_detection`), tracking (:mod:`.face_tracking`) and the same
region geometry as training (:mod:`mmanon.models.utils.face_regions`): every tracked face box is enlarged by
``margin``, cut out, anonymized, and blended back with a ``feather`` ramp. The anonymizers see RGB pixels:
MMAction2's decoders (``RawFrameDecode`` and the video decoders) deliver RGB, and the data preprocessor
anonymizes before its own ``to_rgb`` swap and normalisation, so a learned model and a ``SolidMask`` colour mean
here what they meant in training whatever ``to_rgb`` says. Frames are read and written as OpenCV's BGR. The
handcrafted blur, pixelate and mask work on the uint8 BGR frame with OpenCV (their ``anonymize_bgr``), several
times faster than float crops, and give the same pixels as the float path of training to within one grey level
(see :func:`anonymize_regions`).

The tool fails closed. A face the detector loses stays anonymized at its track for ``max_age`` detector runs;
a face found late is also anonymized, at its first box, in the ``lookback`` frames before, which are held back
until then (so with ``detect_every=n`` the frames between two detector runs are covered too); an optional
fallback covers an expired track for ``fallback_frames`` more (``'head'``: its last region, enlarged further;
``'frame'``: the whole frame, strongly blurred). The summary counts, per track, the frames in which the detector
saw the face but the anonymized regions did not cover 90% of its box, and names the worst track. Outputs are
written to a temporary file beside the target and renamed only once complete and checked, so a failure never
leaves a partial output behind.
"""
import collections
import contextlib
import functools
import inspect
import logging
import os
import os.path as osp
import time
from fractions import Fraction
from typing import Callable, Dict, List, Optional, Tuple, Union

import cv2
import numpy as np
import torch
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.utils import ProgressBar

from mmanon.compat import checkpoint_config, load_local_checkpoint
from mmanon.models.utils import (anonymize_crops, crop_regions, enlarge_regions, feather_mask, paste_regions,
                                 to_uint8)
from mmanon.registry import MODELS, build_in_scope
from mmanon.utils.checkpoint import check_trained_keys
from mmanon.utils.checks import check_number
from .face_detection import build_face_detector
from .face_tracking import IoUTracker
from .media_io import (IMAGE_EXTENSIONS, VIDEO_OUTPUT_EXTENSIONS, ImageFile, VideoReader, VideoWriter,
                       is_image_file, move_into_place, read_ahead, remove_path, temporary_path, write_image)

# The base config under configs/_base_/anonymizers/ of each handcrafted method.
HANDCRAFTED_CONFIGS = dict(blur='box_blur', pixelate='pixelate', mask='solid_mask', noise='gaussian_noise')
METHODS = (*HANDCRAFTED_CONFIGS, 'learned')
FALLBACKS = ('head', 'frame')
DEFAULT_MARGIN = 2.0
DEFAULT_FEATHER = 0.2
DEFAULT_FPS = 30.0
# Settings of the shipped detectors for photos and for video frames, where they differ from the class defaults;
# chosen on the real-face evaluation (README, "Anonymize real videos and photos"). Photos get a second, coarse
# pass: CenterFace at full size misses a face filling a large portrait (facenet_paul_rudd.jpg, 1130 pixels).
# Video frames are detected at half size but never below 320 pixels, the half of 640x360: at half size the
# 10-pixel faces of demo.mp4 (340x256) went unseen for 9 frames.
DEFAULT_DETECTOR_OPTIONS = dict(centerface=dict(image=dict(input_scale=1.0, coarse_side=640),
                                                video=dict(input_scale=0.5, min_input_side=320)))
# Detector runs per second of video that the default detection interval aims at (see detection_interval): every
# second frame at 25-30 fps, every frame of a 6-fps video, where the frames between two runs are far apart.
DETECTIONS_PER_SECOND = 15
# A face counts as covered when this share of its box was anonymized.
COVERED_FRACTION = 0.9
# Tracks compare boxes enlarged twice: small faces, whose boxes jitter by a good part of their size, then keep
# one track (on the real-face videos: 32 instead of 39 tracks in demo.mp4, 49 instead of 52 in the Hamilton clip).
ASSOCIATION_SCALE = 2.0
# The summary counts a track as a face followed once it was detected this often; shorter ones are counted apart
# (flicker of faces near the detection threshold, or false detections).
CONFIRMED_DETECTIONS = 3
ANONYMIZER_PREFIX = 'data_preprocessor.anonymizer.'
CONFIG_DIR = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'configs', '_base_',
                      'anonymizers')
# Sigma of the whole-frame fallback blur as a fraction of the frame's longer side: 1/40 (16 pixels at 640)
# leaves no face of a typical size recognisable, while the scene's layout stays visible.
FRAME_BLUR_SIGMA = 1 / 40

__all__ = [
    'anonymize_video', 'build_method_anonymizer', 'detection_interval', 'load_learned_anonymizer', 'move_into_place'
]


def load_learned_anonymizer(checkpoint: str, device: Union[str, torch.device] = 'cpu') -> Tuple[torch.nn.Module,
                                                                                                   dict]:
    """Build the learned anonymizer of a trained mmanon checkpoint.

    Args:
        checkpoint (str): A checkpoint of ``tools/train.py``; its ``meta['cfg']`` (read as plain values, see
            :func:`mmanon.compat.checkpoint_config`) names the anonymizer in
            ``model.data_preprocessor.anonymizer`` and its ``state_dict`` holds the weights under
            ``data_preprocessor.anonymizer.``.
        device (str | torch.device): Where to put the model. Defaults to 'cpu'.

    Returns:
        tuple[nn.Module, dict]: The anonymizer in eval mode, and the data preprocessor's config (for
        ``margin``, ``feather`` and the like).
    """
    ckpt = load_local_checkpoint(checkpoint, map_location='cpu')
    cfg = checkpoint_config(ckpt, checkpoint)
    if cfg is None:
        raise ValueError(f'{checkpoint} has no config text in meta["cfg"]; is it a checkpoint of tools/train.py?')
    preprocessor = cfg.get('model', {}).get('data_preprocessor') or {}
    if 'anonymizer' not in preprocessor:
        raise ValueError(f'the config of {checkpoint} has no model.data_preprocessor.anonymizer; it was not '
                         'trained with an mmanon anonymizer')
    state = ckpt.get('state_dict', ckpt)
    weights = {k[len(ANONYMIZER_PREFIX):]: v for k, v in state.items() if k.startswith(ANONYMIZER_PREFIX)}
    if not weights:
        raise ValueError(f'{checkpoint} has no learned anonymizer weights (no "{ANONYMIZER_PREFIX}*" entries in '
                         'its state_dict)')
    anonymizer = build_in_scope(MODELS, preprocessor['anonymizer'])
    # No opt-out: an anonymizer with parts left at random weights could leave faces recognisable.
    check_trained_keys(anonymizer, weights, checkpoint, prefix=ANONYMIZER_PREFIX)
    try:
        anonymizer.load_state_dict(weights, strict=True)
    except RuntimeError as e:
        raise ValueError(f'the anonymizer weights of {checkpoint} do not fit its config: {e}') from e
    return anonymizer.to(device).eval(), preprocessor


def build_method_anonymizer(method: str,
                            checkpoint: Optional[str] = None,
                            device: Union[str, torch.device] = 'cpu',
                            options: Optional[dict] = None) -> Tuple[torch.nn.Module, dict]:
    """The anonymizer of a method name, as ``tools/anonymize_video.py`` uses it.

    Args:
        method (str): One of ``blur``, ``pixelate``, ``mask``, ``noise`` (built from
            ``configs/_base_/anonymizers/``) or ``learned`` (from ``checkpoint``).
        checkpoint (str, optional): The trained checkpoint; needed by ``learned`` only. Defaults to None.
        device (str | torch.device): Where to put the model. Defaults to 'cpu'.
        options (dict, optional): Arguments of a handcrafted method's anonymizer, given in place of its base
            config's, e.g. ``dict(kernel_ratio=0.5)`` or ``dict(kernel_size=15)`` for ``blur`` (arguments not
            given take the anonymizer's defaults, which the base configs keep); a key the anonymizer does not
            take is refused, naming those it takes. Defaults to None.

    Returns:
        tuple[nn.Module, dict]: The anonymizer in eval mode, and the checkpoint's data preprocessor config
        (empty for handcrafted methods).
    """
    if method not in METHODS:
        raise ValueError(f'unknown method {method!r}; choose from {", ".join(METHODS)}')
    if method == 'learned':
        if options:
            raise ValueError("method 'learned' takes its anonymizer from the checkpoint; anonymizer options are for "
                             'the handcrafted methods')
        if checkpoint is None:
            raise ValueError("method 'learned' needs a trained checkpoint (--checkpoint CKPT)")
        return load_learned_anonymizer(checkpoint, device)
    path = osp.join(CONFIG_DIR, HANDCRAFTED_CONFIGS[method] + '.py')
    if not osp.isfile(path):
        raise FileNotFoundError(f'the base config of method {method!r}, {path}, is missing; use mmanon from its '
                                'source tree (pip install -e .)')
    cfg = Config.fromfile(path)['anonymizer']
    if options:
        known = set(inspect.signature(MODELS.get(cfg['type'])).parameters) - {'init_cfg'}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f'unknown option(s) {", ".join(unknown)} of method {method!r} ({cfg["type"]}); it takes '
                             f'{", ".join(sorted(known))}')
        # An option replaces the base config's choice, e.g. kernel_ratio its kernel_ratio and kernel_size alike.
        cfg = dict(type=cfg['type'], **options)
    try:
        anonymizer = build_in_scope(MODELS, cfg)
    except (TypeError, ValueError) as e:
        raise ValueError(f'method {method!r} with options {options}: {e}') from e
    return anonymizer.to(device).eval(), {}


def detection_interval(fps: float) -> int:
    """The default detection interval of a video: run the detector on every n-th frame, about
    ``DETECTIONS_PER_SECOND`` times per second of video (never fewer than two thirds of that).

    A face that appears between two runs is anonymized back to the previous one (the look-back), but a face
    seen in fewer frames than the interval can fall between runs altogether: at 6 fps, every second frame
    left a one-frame face of demo_spatiotemporal_det.mp4 raw. So the interval follows the frame rate rather than
    a fixed count of frames.

    Args:
        fps (float): Frames per second of the video.

    Returns:
        int: ``max(1, round(fps / DETECTIONS_PER_SECOND))``: 1 up to 22 fps, 2 at 25-30 fps, 4 at 60 fps.
    """
    return max(1, round(float(fps) / DETECTIONS_PER_SECOND))


def regions_mask(regions: np.ndarray, height: int, width: int) -> np.ndarray:
    """The pixels of a frame inside any of some regions.

    Args:
        regions (np.ndarray): (K, 4) integer regions (x1, y1, x2, y2), clipped to the frame.
        height (int): Frame height.
        width (int): Frame width.

    Returns:
        np.ndarray: (height, width) bool.
    """
    mask = np.zeros((height, width), bool)
    for x1, y1, x2, y2 in np.asarray(regions, np.int64).reshape(-1, 4):
        mask[y1:y2, x1:x2] = True
    return mask


def covered_fraction(boxes: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The share of each box's pixels that a mask covers.

    Args:
        boxes (np.ndarray): (K, 4) boxes (x1, y1, x2, y2) in pixels, rounded to whole pixels and clipped to the
            mask.
        mask (np.ndarray): (H, W) bool, e.g. of :func:`regions_mask`.

    Returns:
        np.ndarray: (K,) shares in [0, 1]; 1 for a box with no pixel in the frame.
    """
    height, width = mask.shape
    shares = np.ones(len(boxes))
    for i, box in enumerate(np.asarray(boxes, np.float64).reshape(-1, 4)):
        x1, x2 = np.clip(np.round(box[0::2]), 0, width).astype(int)
        y1, y2 = np.clip(np.round(box[1::2]), 0, height).astype(int)
        if x2 > x1 and y2 > y1:
            shares[i] = mask[y1:y2, x1:x2].mean()
    return shares


class _FallbackRegions:
    """Faces whose tracks expired, kept for ``frames`` more frames at their last box.

    Args:
        frames (int): Frames each expired face is kept.
    """

    def __init__(self, frames: int) -> None:
        self.frames = frames
        self.pending: Dict[int, List] = {}  # track id -> [last box, frames left]

    def step(self, expired) -> np.ndarray:
        """Add the tracks that expired in this frame and return the (P, 4) boxes still pending in it."""
        for track in expired:
            self.pending[track.track_id] = [track.box.copy(), self.frames]
        boxes = [box for box, _ in self.pending.values()]
        for track_id in list(self.pending):
            self.pending[track_id][1] -= 1
            if self.pending[track_id][1] <= 0:
                del self.pending[track_id]
        return np.array(boxes, np.float64).reshape(-1, 4)


def _uncovered(boxes: np.ndarray, regions: torch.Tensor) -> np.ndarray:
    """Which ``boxes`` lie inside none of the (already anonymized) ``regions``."""
    if len(boxes) == 0 or len(regions) == 0:
        return np.ones(len(boxes), bool)
    r = regions.numpy()[None].astype(np.float64)
    b = boxes[:, None]
    inside = (b[..., 0] >= r[..., 0]) & (b[..., 1] >= r[..., 1]) & (b[..., 2] <= r[..., 2]) & \
        (b[..., 3] <= r[..., 3])
    return ~inside.any(axis=1)


def anonymize_regions(frame: np.ndarray, regions: torch.Tensor, anonymizer: Callable, feather: float,
                      device: Union[str, torch.device] = 'cpu') -> np.ndarray:
    """Anonymize pixel regions of one BGR frame; pixels outside them are returned bit-identical.

    Every region is cut out of the frame as it came in, anonymized, and blended over what earlier regions
    left (as :func:`mmanon.models.utils.paste_regions` does in training). An anonymizer with an
    ``anonymize_bgr`` method (the handcrafted ones) works on the uint8 frame with OpenCV, region by region; the
    others (the learned one, noise) get float RGB crops as in training. The two ways give the same pixels to
    within one grey level (the OpenCV way rounds the patch before blending; tested on real photos).

    Args:
        frame (np.ndarray): (H, W, 3) uint8 BGR.
        regions (Tensor): (K, 4) long regions from :func:`enlarge_regions`, all valid.
        anonymizer (callable): Maps (N, 3, h, w) RGB pixel crops to crops of the same shape; if it has a method
            ``anonymize_bgr`` mapping an (h, w, 3) uint8 BGR image to a new one, that is used instead.
        feather (float): Blending ramp, see :func:`mmanon.models.utils.feather_mask`.
        device (str | torch.device): Where to anonymize crops. Defaults to 'cpu'.

    Returns:
        np.ndarray: The anonymized (H, W, 3) uint8 BGR frame (``frame`` itself when there are no regions).
    """
    if len(regions) == 0:
        return frame
    anonymize_bgr = getattr(anonymizer, 'anonymize_bgr', None)
    if anonymize_bgr is not None:
        out = frame.copy()
        for x1, y1, x2, y2 in regions.tolist():
            weights, rest = _blend_weights(y2 - y1, x2 - x1, feather)
            out[y1:y2, x1:x2] = cv2.blendLinear(anonymize_bgr(frame[y1:y2, x1:x2]), out[y1:y2, x1:x2], weights,
                                                rest)
        return out
    # Only the rectangle around all regions is converted: whole-frame float copies would cost more than
    # the anonymizers themselves.
    x1, y1 = regions[:, :2].min(dim=0).values.tolist()
    x2, y2 = regions[:, 2:].max(dim=0).values.tolist()
    local = regions - regions.new_tensor([x1, y1, x1, y1])
    # (h, w, BGR) -> (1, RGB, 1, h, w): a clip of one frame, as the data preprocessor sees it.
    rgb = cv2.cvtColor(frame[y1:y2, x1:x2], cv2.COLOR_BGR2RGB)
    clip = torch.from_numpy(rgb).to(device).permute(2, 0, 1).float()[None, :, None]
    inds = torch.zeros(len(regions), dtype=torch.long)
    with torch.no_grad():
        patches = anonymize_crops(anonymizer, crop_regions(clip, inds, local))
        clip = paste_regions(clip, inds, local, patches, feather)
    rgb = to_uint8(clip[0, :, 0].permute(1, 2, 0)).cpu().numpy()
    out = frame.copy()
    out[y1:y2, x1:x2] = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    return out


@functools.lru_cache(maxsize=1024)
def _blend_weights(height: int, width: int, feather: float) -> Tuple[np.ndarray, np.ndarray]:
    """The feather mask of a region and its complement, as ``cv2.blendLinear`` takes them; a video's faces
    keep their region sizes for many frames, so each pair is made once."""
    weights = feather_mask(height, width, feather).numpy()
    rest = 1 - weights
    weights.flags.writeable = rest.flags.writeable = False
    return weights, rest


def face_regions(boxes: np.ndarray, margin: float, height: int, width: int) -> torch.Tensor:
    """The usable regions of face boxes: enlarged by ``margin`` and clipped to the frame.

    Args:
        boxes (np.ndarray): (K, 4+) boxes (x1, y1, x2, y2, ...) in pixels.
        margin (float): Scale factor of width and height.
        height (int): Frame height.
        width (int): Frame width.

    Returns:
        Tensor: (K', 4) long regions, those without a pixel in the frame left out.
    """
    boxes = torch.from_numpy(np.asarray(boxes, np.float64).reshape(-1, np.shape(boxes)[-1] if len(boxes) else 4))
    regions, valid = enlarge_regions(boxes[:, :4], margin, height, width)
    return regions[valid]


def detect_faces(detector: Callable, frame: np.ndarray, where: str) -> np.ndarray:
    """Run a detector on a frame and check its output against the detector contract.

    Args:
        detector (callable): ``frame_bgr -> (K, 5)`` boxes.
        frame (np.ndarray): (H, W, 3) uint8 BGR.
        where (str): The frame, for messages.

    Returns:
        np.ndarray: (K, 5) float32 boxes.
    """
    boxes = np.asarray(detector(frame), np.float32)
    if boxes.ndim != 2 or boxes.shape[1] not in (4, 5):
        raise ValueError(f'the face detector returned an array of shape {boxes.shape} for {where}; expected '
                         '(K, 5) [x1, y1, x2, y2, score]')
    if boxes.shape[1] == 4:
        boxes = np.concatenate([boxes, np.ones((len(boxes), 1), np.float32)], axis=1)
    if not np.isfinite(boxes).all():
        raise ValueError(f'the face detector returned NaN or infinite boxes for {where}')
    return boxes


class SequenceAnonymizer:
    """Detects, tracks and anonymizes the faces of the consecutive frames of one video.

    Frames go in with :meth:`push` and come out anonymized, in order, ``lookback`` frames later (the rest with
    :meth:`flush`): a face that the detector finds in a frame is also anonymized, at that first box, in the
    ``lookback`` frames before it. That covers a face in the frames between two detector runs
    (``detect_every``) and in the frames before the detector became confident of it.

    Args:
        detector (callable): ``frame_bgr -> (K, 5)`` boxes.
        anonymizer (callable): Maps RGB pixel crops to anonymized crops.
        tracker (IoUTracker): A fresh tracker.
        margin (float): Enlargement of face boxes into regions.
        feather (float): Blending ramp of the regions.
        device (str): Where the anonymizer runs. Defaults to 'cpu'.
        detect_every (int): Run the detector on every n-th frame only. Defaults to 1.
        lookback (int): Frames held back for faces found late. Defaults to 1.
        fallback (str, optional): ``'head'`` or ``'frame'``, see :func:`anonymize_video`. Defaults to None.
        fallback_frames (int): Frames a fallback lasts. Defaults to 30.
        fallback_scale (float): Extra enlargement of a head fallback region. Defaults to 1.5.
    """

    def __init__(self,
                 detector: Callable,
                 anonymizer: Callable,
                 tracker: IoUTracker,
                 margin: float,
                 feather: float,
                 device: str = 'cpu',
                 detect_every: int = 1,
                 lookback: int = 1,
                 fallback: Optional[str] = None,
                 fallback_frames: int = 30,
                 fallback_scale: float = 1.5) -> None:
        self.detector, self.anonymizer, self.tracker = detector, anonymizer, tracker
        self.margin, self.feather, self.device = margin, feather, device
        self.detect_every, self.lookback = detect_every, lookback
        self.fallback, self.fallback_scale = fallback, fallback_scale
        self.fallbacks = _FallbackRegions(fallback_frames) if fallback else None
        self.buffer = collections.deque()
        self.index = 0
        self.faces_detected = self.anonymized_frames = self.fallback_frames = 0
        # track id -> frames in which the detector saw it, those of them not covered, frames it was predicted
        self.track_frames: Dict[int, Dict[str, int]] = {}

    def push(self, frame: np.ndarray, key=None) -> List[Tuple[np.ndarray, object, dict]]:
        """Add the next frame.

        Args:
            frame (np.ndarray): (H, W, 3) uint8 BGR.
            key: Anything that should come out with the frame (its name, its timestamp). Defaults to None.

        Returns:
            list[tuple]: The frames finished now, each ``(anonymized frame, key, info)``; ``info`` holds the
            frame ``index``, the ``detections`` of the detector ((K, 5), None where it did not run), the
            ``regions`` anonymized ((R, 4) int) and whether the fallback ``blurred`` the whole frame.
        """
        height, width = frame.shape[:2]
        detections = None
        if self.index % self.detect_every == 0:
            detections = detect_faces(self.detector, frame, f'frame {self.index}')
            self.faces_detected += len(detections)
            tracks = self.tracker.update(detections)
        else:
            tracks = self.tracker.predict()
        regions = face_regions(np.array([t.box for t in tracks]), self.margin, height, width)
        entry = dict(frame=frame, key=key, index=self.index, regions=[regions], blurred=False,
                     detections=detections, seen=[(t.track_id, t.detection) for t in tracks if t.detection is not None])
        for track in tracks:
            counts = self.track_frames.setdefault(track.track_id, dict(seen=0, uncovered=0, predicted=0))
            counts['predicted'] += int(track.detection is None)
        born = [t.box for t in tracks if t.hits == 1 and t.detection is not None]
        if born and self.lookback:
            born_regions = face_regions(np.array(born), self.margin, height, width)
            for past in list(self.buffer)[-self.lookback:]:
                past['regions'].append(born_regions)
        if self.fallbacks is not None:
            pending = self.fallbacks.step(self.tracker.expired)
            pending = pending[_uncovered(pending, regions)]
            if len(pending):
                self.fallback_frames += 1
                if self.fallback == 'frame':
                    entry['blurred'] = True
                else:
                    entry['regions'].append(
                        face_regions(pending, self.margin * self.fallback_scale, height, width))
        self.buffer.append(entry)
        self.index += 1
        finished = []
        while len(self.buffer) > self.lookback:
            finished.append(self._finish(self.buffer.popleft()))
        return finished

    def flush(self) -> List[Tuple[np.ndarray, object, dict]]:
        """Finish the frames still held back; see :meth:`push`."""
        finished = [self._finish(entry) for entry in self.buffer]
        self.buffer.clear()
        return finished

    def _finish(self, entry: dict) -> Tuple[np.ndarray, object, dict]:
        frame = entry['frame']
        height, width = frame.shape[:2]
        regions = torch.cat(entry['regions'])
        frame = anonymize_regions(frame, regions, self.anonymizer, self.feather, self.device)
        if entry['blurred']:
            frame = cv2.GaussianBlur(frame, (0, 0), FRAME_BLUR_SIGMA * max(height, width))
        self.anonymized_frames += int(entry['blurred'] or len(regions) > 0)
        regions = regions.numpy()
        if entry['seen']:
            mask = np.ones((height, width), bool) if entry['blurred'] else regions_mask(regions, height, width)
            shares = covered_fraction(np.array([box for _, box in entry['seen']]), mask)
            for (track_id, _), share in zip(entry['seen'], shares):
                counts = self.track_frames[track_id]
                counts['seen'] += 1
                counts['uncovered'] += int(share < COVERED_FRACTION)
        info = dict(index=entry['index'], detections=entry['detections'], regions=regions, blurred=entry['blurred'])
        return frame, entry['key'], info

    def worst_track(self) -> Optional[dict]:
        """The track with the most frames seen but not covered (then the most predicted frames), with its
        ``track_id``, ``seen``, ``uncovered`` and ``predicted`` frame counts; None without tracks."""
        if not self.track_frames:
            return None
        track_id = max(self.track_frames,
                       key=lambda t: (self.track_frames[t]['uncovered'], self.track_frames[t]['predicted'], -t))
        return dict(track_id=track_id, **self.track_frames[track_id])


def input_kind(input_path: str, output_path: str, sequence: bool = False) -> str:
    """How an input is read: ``'video'``, ``'image'``, ``'images'`` (a folder, each image on its own) or
    ``'frames'`` (a folder as the frames of one video: with ``sequence``, or written to a video file)."""
    if osp.isdir(input_path):
        return 'frames' if sequence or osp.splitext(output_path)[1].lower() in VIDEO_OUTPUT_EXTENSIONS else 'images'
    return 'image' if is_image_file(input_path) else 'video'


def _check_paths(input_path: str, output_path: str, kind: str) -> None:
    """Fail before any work on inputs and outputs that cannot work, naming the path."""
    if not osp.exists(input_path):
        raise FileNotFoundError(f'input {input_path} does not exist')
    if osp.realpath(input_path) == osp.realpath(output_path):
        raise ValueError(f'the output {output_path} is the input; write the anonymized copy elsewhere')
    ext = osp.splitext(output_path)[1].lower()
    to_video = ext in VIDEO_OUTPUT_EXTENSIONS
    if kind == 'image':
        if not is_image_file(output_path):
            raise ValueError(f'output {output_path}: an image input is written to an image file ending in '
                             f'{", ".join(IMAGE_EXTENSIONS)}')
    elif kind == 'video' or to_video:
        if not to_video:
            raise ValueError(f'output {output_path}: a video input must be written to a video file ending in '
                             f'{", ".join(VIDEO_OUTPUT_EXTENSIONS)}')
    elif ext in IMAGE_EXTENSIONS or osp.isfile(output_path):
        raise ValueError(f'output {output_path} must be a folder (or, for frames, a video file ending in '
                         f'{", ".join(VIDEO_OUTPUT_EXTENSIONS)})')
    elif osp.isdir(output_path) and os.listdir(output_path):
        raise FileExistsError(f'the output folder {output_path} exists and is not empty')
    if kind in ('image', 'video') or to_video:
        if osp.isdir(output_path):
            raise IsADirectoryError(f'the output {output_path} is a folder, not a file')
    parent = osp.dirname(osp.abspath(output_path))
    if not osp.isdir(parent):
        raise FileNotFoundError(f'the folder of the output {output_path}, {parent}, does not exist')
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f'no permission to write the output {output_path} in {parent}')


def _image_names(folder: str) -> Tuple[List[str], int]:
    """The image files of a folder in sorted order, and how many other entries it holds."""
    entries = sorted(os.listdir(folder))
    names = [n for n in entries if is_image_file(n) and osp.isfile(osp.join(folder, n))]
    if not names:
        raise ValueError(f'{folder} holds no image files ({", ".join(IMAGE_EXTENSIONS)})')
    return names, len(entries) - len(names)


def anonymize_video(input_path: str,
                    output_path: str,
                    method: str = 'blur',
                    checkpoint: Optional[str] = None,
                    anonymizer_options: Optional[dict] = None,
                    detector: Union[str, Callable] = 'centerface',
                    detector_options: Optional[dict] = None,
                    device: str = 'cpu',
                    sequence: bool = False,
                    keep_audio: bool = True,
                    fallback: Optional[str] = None,
                    fallback_frames: int = 30,
                    fallback_scale: float = 1.5,
                    max_age: int = 15,
                    iou_threshold: float = 0.3,
                    smoothing: float = 0.5,
                    extrapolate: bool = True,
                    detect_every: Optional[int] = None,
                    lookback: Optional[int] = None,
                    margin: Optional[float] = None,
                    feather: Optional[float] = None,
                    fps: Optional[float] = None,
                    progress: bool = True,
                    frame_callback: Optional[Callable[[dict], None]] = None) -> dict:
    """Anonymize every face of a video, an image, or a folder of images or frames.

    See the module's documentation for what each kind of input gives.

    Args:
        input_path (str): A video file, an image file, or a folder of images.
        output_path (str): A video file (``.mp4``, ``.mov``, ``.mkv``, ``.avi``) for a video or a folder of
            frames; an image file for an image; a new or empty folder for a folder.
        method (str): ``blur``, ``pixelate``, ``mask``, ``noise`` (from ``configs/_base_/anonymizers/``) or
            ``learned``. Defaults to 'blur'.
        checkpoint (str, optional): The trained checkpoint of ``learned``. Defaults to None.
        anonymizer_options (dict, optional): Arguments of a handcrafted method's anonymizer in place of its base
            config's, see :func:`build_method_anonymizer`. Defaults to None.
        detector (str | callable): A spec of :func:`build_face_detector` (``centerface``, ``haar``, ``dlib``,
            ``onnx:FILE``), or a ready detector ``frame_bgr -> (K, 5) boxes``. Defaults to 'centerface'.
        detector_options (dict, optional): Keyword arguments of the detector built from a spec. Defaults to
            None: ``DEFAULT_DETECTOR_OPTIONS`` of the spec for images or for video frames.
        device (str): ``cpu`` or ``cuda``, where the anonymizer runs. Defaults to 'cpu'.
        sequence (bool): Read a folder as the frames of one video (tracked, all of one size) rather than as
            separate images. Defaults to False.
        keep_audio (bool): Copy the audio tracks of a video input. Defaults to True.
        fallback (str, optional): What covers a face once its track expired: ``'head'`` keeps anonymizing its
            last region, enlarged ``fallback_scale`` times more; ``'frame'`` blurs the whole frame. Either
            lasts ``fallback_frames`` frames, and applies only while no live track's region contains the face.
            Defaults to None (no fallback).
        fallback_frames (int): Frames a fallback lasts after a track expired. Defaults to 30.
        fallback_scale (float): Extra enlargement of a ``head`` fallback region, >= 1. Defaults to 1.5.
        max_age (int): Detector runs a lost face stays anonymized at its track. Defaults to 15.
        iou_threshold (float): Least IoU to continue a track with a detection. Defaults to 0.3.
        smoothing (float): Weight of a track's prediction in its box average, in [0, 1). Defaults to 0.5.
        extrapolate (bool): Whether tracks move on by their velocity. Defaults to True.
        detect_every (int, optional): Run the detector on every n-th frame only; tracks move on in between,
            and a face that appears is anonymized back to the previous run (see ``lookback``). Defaults to None:
            :func:`detection_interval` of the frame rate, 2 at 25-30 fps (which about halves the time spent on
            detection while every frame stays covered on the real-face evaluation, README), 1 at 6 fps.
        lookback (int, optional): Frames before a face's first detection that are anonymized at its first box.
            Defaults to None: ``detect_every``.
        margin (float, optional): Enlargement of face boxes, >= 1; None takes the checkpoint's, else 2.0.
            Defaults to None.
        feather (float, optional): Blending ramp in [0, 0.5]; None takes the checkpoint's, else 0.2. Defaults
            to None.
        fps (float, optional): Frame rate of a folder of frames (None: 30); for a video input only used when
            the file declares none. Defaults to None.
        progress (bool): Whether to show a progress bar. Defaults to True.
        frame_callback (callable, optional): Called with a dict for every frame or image written: its
            ``index``, ``name`` (folders) , ``detections`` ((K, 5) boxes of the detector, None in frames where it
            did not run), the anonymized ``regions`` ((R, 4) int) and whether the fallback ``blurred`` the whole
            frame. Defaults to None.

    Returns:
        dict: Summary: ``input``, ``output``, ``kind``, ``method``, ``frames`` (frames or images written),
        ``faces_detected``, ``anonymized_frames`` (frames or images with at least one anonymized region),
        ``seconds`` and ``processing_fps``; ``width`` and ``height`` (None for a folder of images). Videos and
        frames also: ``fps``, ``detect_every`` (the detection interval used), ``tracks`` (faces followed: tracks
        detected in at least 3 frames), ``brief_tracks`` (the others), ``fallback_frames``, ``worst_track`` (see
        :meth:`SequenceAnonymizer.worst_track`); video files also: ``codec``, ``audio``, ``declared_frames``,
        ``truncated`` (fewer frames decoded than declared, or a decoding error, given in ``error``); folders
        also ``ignored`` (entries that are not image files).
    """
    if fallback not in (None, *FALLBACKS):
        raise ValueError(f'fallback must be None, "head" or "frame", but got {fallback!r}')
    if detect_every is not None:
        check_number('detect_every', detect_every, low=1, integer=True)
    check_number('fallback_frames', fallback_frames, low=1, integer=True)
    check_number('fallback_scale', fallback_scale, low=1)
    check_number('max_age', max_age, low=0, integer=True)
    if lookback is not None:
        check_number('lookback', lookback, low=0, integer=True)
    if fps is not None:
        check_number('fps', fps, low=0, low_open=True)
    if device.startswith('cuda') and not torch.cuda.is_available():
        raise ValueError(f'device {device!r} was asked for, but CUDA is not available')
    kind = input_kind(input_path, output_path, sequence)
    _check_paths(input_path, output_path, kind)
    tracker = IoUTracker(iou_threshold, smoothing, max_age, extrapolate, ASSOCIATION_SCALE)
    anonymizer, preprocessor = build_method_anonymizer(method, checkpoint, device, anonymizer_options)
    margin = check_number('margin', preprocessor.get('margin', DEFAULT_MARGIN) if margin is None else margin, low=1)
    feather = check_number('feather', preprocessor.get('feather', DEFAULT_FEATHER) if feather is None else feather,
                           low=0, high=0.5)
    if not callable(detector):
        if detector_options is None:
            per_kind = DEFAULT_DETECTOR_OPTIONS.get(detector, {})
            detector_options = per_kind.get('image' if kind in ('image', 'images') else 'video', {})
        detector = build_face_detector(detector, **detector_options)
    summary = dict(input=input_path, output=output_path, kind=kind, method=method)
    start = time.perf_counter()
    if kind in ('image', 'images'):
        summary.update(_anonymize_images(input_path, output_path, kind, detector, anonymizer, margin, feather,
                                         device, progress, frame_callback))
    else:

        def sequence_anonymizer_at(rate: Fraction) -> SequenceAnonymizer:
            every = detection_interval(rate) if detect_every is None else detect_every
            return SequenceAnonymizer(detector, anonymizer, tracker, margin, feather, device, every,
                                      every if lookback is None else lookback, fallback, fallback_frames,
                                      fallback_scale)

        run = _anonymize_video_file if kind == 'video' else _anonymize_frames
        result, sequence_anonymizer = run(input_path, output_path, sequence_anonymizer_at, keep_audio, fps, progress,
                                          frame_callback)
        summary.update(result)
        detections = [counts['seen'] for counts in sequence_anonymizer.track_frames.values()]
        confirmed = sum(n >= CONFIRMED_DETECTIONS for n in detections)
        summary.update(detect_every=sequence_anonymizer.detect_every, tracks=confirmed,
                       brief_tracks=len(detections) - confirmed,
                       fallback_frames=sequence_anonymizer.fallback_frames,
                       worst_track=sequence_anonymizer.worst_track(),
                       faces_detected=sequence_anonymizer.faces_detected,
                       anonymized_frames=sequence_anonymizer.anonymized_frames)
    seconds = time.perf_counter() - start
    summary.update(seconds=seconds, processing_fps=summary['frames'] / seconds if seconds > 0 else float('inf'))
    return summary


def _anonymize_images(input_path, output_path, kind, detector, anonymizer, margin, feather, device, progress,
                      frame_callback) -> dict:
    """Each image on its own: an image file, or every image of a folder into a new folder."""
    if kind == 'image':
        folder, names, ignored = osp.dirname(input_path), [osp.basename(input_path)], 0
        temp = temporary_path(output_path)
    else:
        folder, (names, ignored) = input_path, _image_names(input_path)
        temp = temporary_path(output_path, folder=True)
    faces = anonymized = 0
    sizes = set()
    try:
        bar = ProgressBar(len(names)) if progress and kind == 'images' else None
        for index, name in enumerate(names):
            image = ImageFile(osp.join(folder, name))
            height, width = image.bgr.shape[:2]
            sizes.add((width, height))
            boxes = detect_faces(detector, image.bgr, osp.join(folder, name))
            regions = face_regions(boxes, margin, height, width)
            out = anonymize_regions(image.bgr, regions, anonymizer, feather, device)
            write_image(temp if kind == 'image' else osp.join(temp, name), image.restore(out))
            faces += len(boxes)
            anonymized += int(len(regions) > 0)
            if frame_callback is not None:
                frame_callback(dict(index=index, name=name, detections=boxes, regions=regions.numpy(), blurred=False))
            if bar is not None:
                bar.update()
        if bar is not None:
            print()
        move_into_place(temp, output_path)
    except BaseException:
        # Fail closed on anything, KeyboardInterrupt included: no partial output is ever left behind.
        remove_path(temp)
        raise
    if ignored:
        print_log(f'{input_path}: {ignored} entries that are not image files were left out', logger='current',
                  level=logging.WARNING)
    width, height = sizes.pop() if len(sizes) == 1 else (None, None)
    result = dict(frames=len(names), width=width, height=height, faces_detected=faces, anonymized_frames=anonymized)
    if kind == 'images':
        result['ignored'] = ignored
    return result


def _write_finished(finished, write, frame_callback, bar) -> None:
    for frame, key, info in finished:
        write(frame, key)
        if frame_callback is not None:
            frame_callback(info)
        if bar is not None:
            bar.update()


def _anonymize_video_file(input_path, output_path, anonymizer_at: Callable[[Fraction], SequenceAnonymizer],
                          keep_audio, fps, progress, frame_callback) -> Tuple[dict, SequenceAnonymizer]:
    reader = VideoReader(input_path)
    rate = reader.rate or Fraction(fps or DEFAULT_FPS).limit_denominator(1001)
    anonymizer = anonymizer_at(rate)
    try:
        writer = VideoWriter(output_path, reader.width, reader.height, rate,
                             reader.time_base if reader.rate else None, reader.audio_streams if keep_audio else None)
    except BaseException:
        reader.close()
        raise
    try:
        bar = ProgressBar(reader.declared_frames or 0) if progress else None
        # Decoding in one thread and encoding in another (see read_ahead and VideoWriter) overlap this one's
        # detection and anonymization; the frames and the file come out the same.
        with contextlib.closing(read_ahead(reader)) as items:
            for kind, item in items:
                if kind == 'audio':
                    writer.write_audio(item)
                else:
                    frame, pts = item
                    _write_finished(anonymizer.push(frame, pts), writer.write, frame_callback, bar)
        _write_finished(anonymizer.flush(), writer.write, frame_callback, bar)
        if bar is not None:
            print()
        if writer.count == 0:
            raise ValueError(f'{input_path} has no readable frames (an empty or corrupt video'
                             f'{": " + reader.error if reader.error else ""})')
        writer.finish()
    except BaseException:
        writer.abort()
        raise
    finally:
        reader.close()
    if reader.truncated:
        print_log(f'{input_path} is truncated or damaged: {reader.error or ""} {reader.frames} frames decoded of '
                  f'{reader.declared_frames} declared; the output holds the decoded ones', logger='current',
                  level=logging.WARNING)
    audio = writer.audio if keep_audio else ('dropped' if reader.audio_streams else 'none')
    return dict(frames=writer.count, width=reader.width, height=reader.height, fps=float(rate), codec=writer.codec,
                audio=audio, declared_frames=reader.declared_frames, truncated=reader.truncated,
                error=reader.error), anonymizer


def _anonymize_frames(input_path, output_path, anonymizer_at: Callable[[Fraction], SequenceAnonymizer], keep_audio,
                      fps, progress, frame_callback) -> Tuple[dict, SequenceAnonymizer]:
    """A folder of frames, into a video file or a folder of frames."""
    names, ignored = _image_names(input_path)
    first = ImageFile(osp.join(input_path, names[0])).bgr
    height, width = first.shape[:2]
    rate = Fraction(fps or DEFAULT_FPS).limit_denominator(1001)
    anonymizer = anonymizer_at(rate)
    to_video = osp.splitext(output_path)[1].lower() in VIDEO_OUTPUT_EXTENSIONS
    if to_video:
        writer = VideoWriter(output_path, width, height, rate)
        write, abort = (lambda frame, name: writer.write(frame)), writer.abort
    else:
        temp = temporary_path(output_path, folder=True)

        def write(frame, name):
            write_image(osp.join(temp, name), frame)

        def abort():
            remove_path(temp)

    written = [0]

    def count_and_write(frame, name):
        write(frame, name)
        written[0] += 1

    try:
        bar = ProgressBar(len(names)) if progress else None
        for index, name in enumerate(names):
            frame = first if index == 0 else ImageFile(osp.join(input_path, name)).bgr
            if frame.shape[:2] != (height, width):
                raise ValueError(f'{osp.join(input_path, name)} is {frame.shape[1]}x{frame.shape[0]}, but the first '
                                 f'frame is {width}x{height}; the frames of a sequence must have one size (without '
                                 '--sequence, a folder is anonymized image by image)')
            _write_finished(anonymizer.push(frame, name), count_and_write, frame_callback, bar)
        _write_finished(anonymizer.flush(), count_and_write, frame_callback, bar)
        if bar is not None:
            print()
        if to_video:
            writer.finish()
        else:
            move_into_place(temp, output_path)
    except BaseException:
        abort()
        raise
    return dict(frames=written[0], width=width, height=height, fps=float(rate), ignored=ignored,
                **(dict(codec=writer.codec) if to_video else {})), anonymizer
