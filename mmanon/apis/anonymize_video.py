"""Anonymize the faces of a real video (or a folder of frames) with a handcrafted or a learned anonymizer.

Each frame goes through detection (:mod:`.face_detection`), tracking (:mod:`.face_tracking`) and the same
region geometry as training (:mod:`mmanon.models.utils.face_regions`): every tracked face box is enlarged by
``margin``, cut out, anonymized, and blended back with a ``feather`` ramp. The anonymizers see RGB pixels:
MMAction2's decoders (``RawFrameDecode`` and the video decoders) deliver RGB, and the data preprocessor
anonymizes before its own ``to_rgb`` swap and normalisation, so a learned model and a ``SolidMask`` colour mean
here what they meant in training whatever ``to_rgb`` says. Frames are read and written as OpenCV's BGR.

The tool fails closed: a face the detector loses stays anonymized at its track for ``max_age`` frames, and an
optional fallback covers it for ``fallback_frames`` more (``'head'``: its last region, enlarged further;
``'frame'``: the whole frame, strongly blurred). The output is written to a temporary file beside the target
and renamed only once it is complete and checked, so a failure never leaves a partial output behind.
"""
import logging
import os
import os.path as osp
import shutil
import tempfile
import time
from typing import Callable, Dict, Iterator, List, Optional, Tuple, Union

import cv2
import numpy as np
import torch
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.utils import ProgressBar

from mmanon.compat import checkpoint_config, load_local_checkpoint
from mmanon.models.utils import anonymize_crops, crop_regions, enlarge_regions, paste_regions, to_uint8
from mmanon.registry import MODELS, build_in_scope
from mmanon.utils.checkpoint import check_trained_keys
from .face_detection import build_face_detector
from .face_tracking import IoUTracker

VIDEO_FOURCCS = {'.mp4': 'mp4v', '.avi': 'MJPG'}
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')
# The base config under configs/_base_/anonymizers/ of each handcrafted method.
HANDCRAFTED_CONFIGS = dict(blur='gaussian_blur', pixelate='pixelate', mask='solid_mask', noise='gaussian_noise')
METHODS = (*HANDCRAFTED_CONFIGS, 'learned')
FALLBACKS = ('head', 'frame')
# Frames written back as JPEG lose a little more on top of the input's compression; 95 keeps that invisible.
JPEG_PARAMS = [cv2.IMWRITE_JPEG_QUALITY, 95]
DEFAULT_MARGIN = 2.0
DEFAULT_FEATHER = 0.2
ANONYMIZER_PREFIX = 'data_preprocessor.anonymizer.'
CONFIG_DIR = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'configs', '_base_',
                      'anonymizers')
# Sigma of the whole-frame fallback blur as a fraction of the frame's longer side: 1/40 (16 pixels at 640)
# leaves no face of a typical size recognisable, while the scene's layout stays visible.
FRAME_BLUR_SIGMA = 1 / 40


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
                            device: Union[str, torch.device] = 'cpu') -> Tuple[torch.nn.Module, dict]:
    """The anonymizer of a method name, as ``tools/anonymize_video.py`` uses it.

    Args:
        method (str): One of ``blur``, ``pixelate``, ``mask``, ``noise`` (built from
            ``configs/_base_/anonymizers/``) or ``learned`` (from ``checkpoint``).
        checkpoint (str, optional): The trained checkpoint; needed by ``learned`` only. Defaults to None.
        device (str | torch.device): Where to put the model. Defaults to 'cpu'.

    Returns:
        tuple[nn.Module, dict]: The anonymizer in eval mode, and the checkpoint's data preprocessor config
        (empty for handcrafted methods).
    """
    if method not in METHODS:
        raise ValueError(f'unknown method {method!r}; choose from {", ".join(METHODS)}')
    if method == 'learned':
        if checkpoint is None:
            raise ValueError("method 'learned' needs a trained checkpoint (--checkpoint CKPT)")
        return load_learned_anonymizer(checkpoint, device)
    path = osp.join(CONFIG_DIR, HANDCRAFTED_CONFIGS[method] + '.py')
    if not osp.isfile(path):
        raise FileNotFoundError(f'the base config of method {method!r}, {path}, is missing; use mmanon from its '
                                'source tree (pip install -e .)')
    anonymizer = build_in_scope(MODELS, Config.fromfile(path)['anonymizer'])
    return anonymizer.to(device).eval(), {}


class _FrameSource:
    """The frames of a video file or of a folder of images, read lazily, all of one size.

    Args:
        path (str): A video file or a folder of images (frame order = sorted file names).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.is_folder = osp.isdir(path)
        if self.is_folder:
            self.names = sorted(n for n in os.listdir(path) if n.lower().endswith(IMAGE_EXTENSIONS)
                                and osp.isfile(osp.join(path, n)))
            if not self.names:
                raise ValueError(f'{path} holds no image files ({", ".join(IMAGE_EXTENSIONS)})')
            first = self._read_image(self.names[0])
            self.fps = None
            self.num_frames = len(self.names)
        else:
            self.names = None
            self.capture = cv2.VideoCapture(path)
            if not self.capture.isOpened():
                raise ValueError(f'cannot open {path}: not a video, or a codec OpenCV lacks')
            ok, first = self.capture.read()
            if not ok:
                self.close()
                raise ValueError(f'{path} has no readable frames (an empty or corrupt video)')
            fps = self.capture.get(cv2.CAP_PROP_FPS)
            self.fps = fps if np.isfinite(fps) and fps > 0 else None
            self.num_frames = max(int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0)
        self.first = first
        self.height, self.width = first.shape[:2]

    def _read_image(self, name: str) -> np.ndarray:
        frame = cv2.imread(osp.join(self.path, name), cv2.IMREAD_COLOR)
        if frame is None:
            raise ValueError(f'cannot read the image {osp.join(self.path, name)}')
        return frame

    def __iter__(self) -> Iterator[Tuple[Optional[str], np.ndarray]]:
        """Yield ``(file name or None, BGR frame)``; raises on a frame of another size."""
        if self.is_folder:
            for index, name in enumerate(self.names):
                frame = self.first if index == 0 else self._read_image(name)
                self._check_size(frame, osp.join(self.path, name))
                yield name, frame
            return
        try:
            frame, index = self.first, 0
            while True:
                self._check_size(frame, f'{self.path}, frame {index}')
                yield None, frame
                ok, frame = self.capture.read()
                if not ok:
                    break
                index += 1
        finally:
            self.close()
        if self.num_frames and index + 1 != self.num_frames:
            print_log(f'{self.path} declares {self.num_frames} frames but {index + 1} could be decoded; the '
                      'output has the decodable ones', logger='current', level=logging.WARNING)

    def close(self) -> None:
        """Release the video file (a no-op for folders and when done already)."""
        if not self.is_folder:
            self.capture.release()

    def _check_size(self, frame: np.ndarray, where: str) -> None:
        if frame.shape[:2] != (self.height, self.width):
            raise ValueError(f'{where} is {frame.shape[1]}x{frame.shape[0]}, but the first frame is '
                             f'{self.width}x{self.height}; all frames must have one size')


class _FrameSink:
    """Writes frames to a temporary file or folder beside ``path`` and renames it to ``path`` when done.

    Args:
        path (str): The output: a ``.mp4`` / ``.avi`` video, or a folder of frames.
        width (int): Frame width.
        height (int): Frame height.
        fps (float): Frame rate of a video output.
    """

    def __init__(self, path: str, width: int, height: int, fps: float) -> None:
        self.path, self.width, self.height, self.fps = path, width, height, fps
        self.ext = osp.splitext(path)[1].lower()
        self.is_video = self.ext in VIDEO_FOURCCS
        parent = osp.dirname(osp.abspath(path))
        prefix = f'.{osp.basename(osp.abspath(path))}.'
        try:
            if self.is_video:
                fd, self.temp = tempfile.mkstemp(prefix=prefix, suffix=f'.partial{self.ext}', dir=parent)
                os.close(fd)
            else:
                self.temp = tempfile.mkdtemp(prefix=prefix, suffix='.partial', dir=parent)
        except OSError as e:
            raise PermissionError(f'cannot write beside the output {path} in {parent}: {e.strerror}') from e
        self.count = 0
        self.writer = None
        if self.is_video:
            self.writer = cv2.VideoWriter(self.temp, cv2.VideoWriter_fourcc(*VIDEO_FOURCCS[self.ext]), fps,
                                          (width, height))
            if not self.writer.isOpened():
                self.abort()
                raise ValueError(f'OpenCV cannot write {self.ext} video (codec {VIDEO_FOURCCS[self.ext]}) to '
                                 f'{path}')

    def write(self, frame: np.ndarray, name: Optional[str] = None) -> None:
        """Append one BGR frame; a folder output needs its file ``name``."""
        if self.is_video:
            self.writer.write(frame)
        elif not cv2.imwrite(osp.join(self.temp, name), frame, JPEG_PARAMS if name.lower().endswith(
                ('.jpg', '.jpeg')) else []):
            raise OSError(f'cannot write the frame {name} of {self.path}')
        self.count += 1

    def finish(self) -> None:
        """Check what was written (frame count, size, fps) and move it to the output path."""
        if self.is_video:
            self.writer.release()
            self.writer = None
            written = _video_properties(self.temp)
            expected = dict(frames=self.count, width=self.width, height=self.height)
            if any(written[k] != v for k, v in expected.items()) or abs(written['fps'] - self.fps) > 1e-3:
                raise OSError(f'the video written for {self.path} does not match its input: wrote '
                              f'{dict(expected, fps=self.fps)}, read back {written}')
            move_into_place(self.temp, self.path)
            return
        written = len(os.listdir(self.temp))
        if written != self.count:
            raise OSError(f'wrote {self.count} frames for {self.path}, but {written} files are there')
        move_into_place(self.temp, self.path)

    def abort(self) -> None:
        """Remove the temporary output."""
        if self.writer is not None:
            self.writer.release()
            self.writer = None
        if osp.isdir(self.temp):
            shutil.rmtree(self.temp, ignore_errors=True)
        elif osp.exists(self.temp):
            os.remove(self.temp)


def move_into_place(temp: str, path: str) -> None:
    """Rename a finished temporary file or folder to ``path``, with the mode a normally created one gets.

    ``tempfile`` creates them private (0o600 / 0o700); the output should be as readable as any other.

    Args:
        temp (str): The temporary file or folder, in the folder of ``path``.
        path (str): The final name; an existing file (or, for a folder, an empty folder) is replaced.
    """
    umask = os.umask(0)
    os.umask(umask)
    is_dir = osp.isdir(temp)
    os.chmod(temp, (0o777 if is_dir else 0o666) & ~umask)
    if is_dir and osp.isdir(path):
        os.rmdir(path)
    os.replace(temp, path)


def _video_properties(path: str) -> dict:
    """Frame count, size and fps of a video file, the count by decoding when the container lacks it."""
    capture = cv2.VideoCapture(path)
    try:
        frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        if frames <= 0:
            frames = 0
            while capture.grab():
                frames += 1
        return dict(frames=frames, width=int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
                    height=int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)), fps=capture.get(cv2.CAP_PROP_FPS))
    finally:
        capture.release()


def _check_paths(input_path: str, output_path: str) -> None:
    """Fail before any work on inputs and outputs that cannot work, naming the path."""
    if not osp.exists(input_path):
        raise FileNotFoundError(f'input {input_path} does not exist')
    if osp.realpath(input_path) == osp.realpath(output_path):
        raise ValueError(f'the output {output_path} is the input; write the anonymized copy elsewhere')
    ext = osp.splitext(output_path)[1].lower()
    if ext not in VIDEO_FOURCCS:
        if not osp.isdir(input_path):
            raise ValueError(f'output {output_path}: a video input must be written to a video file ending in '
                             f'{" or ".join(VIDEO_FOURCCS)}')
        if ext in IMAGE_EXTENSIONS or osp.isfile(output_path):
            raise ValueError(f'output {output_path} must be a folder of frames or a video file ending in '
                             f'{" or ".join(VIDEO_FOURCCS)}')
        if osp.isdir(output_path) and os.listdir(output_path):
            raise FileExistsError(f'the output folder {output_path} exists and is not empty')
    elif osp.isdir(output_path):
        raise IsADirectoryError(f'the output {output_path} is a folder, not a video file')
    parent = osp.dirname(osp.abspath(output_path))
    if not osp.isdir(parent):
        raise FileNotFoundError(f'the folder of the output {output_path}, {parent}, does not exist')
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f'no permission to write the output {output_path} in {parent}')


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

    Args:
        frame (np.ndarray): (H, W, 3) uint8 BGR.
        regions (Tensor): (K, 4) long regions from :func:`enlarge_regions`, all valid.
        anonymizer (callable): Maps (N, 3, h, w) RGB pixel crops to crops of the same shape.
        feather (float): Blending ramp, see :func:`mmanon.models.utils.feather_mask`.
        device (str | torch.device): Where to anonymize. Defaults to 'cpu'.

    Returns:
        np.ndarray: The anonymized (H, W, 3) uint8 BGR frame (``frame`` itself when there are no regions).
    """
    if len(regions) == 0:
        return frame
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


def anonymize_video(input_path: str,
                    output_path: str,
                    method: str = 'blur',
                    checkpoint: Optional[str] = None,
                    detector: Union[str, Callable] = 'haar',
                    detector_options: Optional[dict] = None,
                    device: str = 'cpu',
                    fallback: Optional[str] = None,
                    fallback_frames: int = 30,
                    fallback_scale: float = 1.5,
                    max_age: int = 15,
                    iou_threshold: float = 0.3,
                    smoothing: float = 0.5,
                    extrapolate: bool = True,
                    detect_every: int = 1,
                    margin: Optional[float] = None,
                    feather: Optional[float] = None,
                    fps: Optional[float] = None,
                    progress: bool = True) -> dict:
    """Anonymize every face of a video file or a folder of frames.

    The output keeps the resolution, frame count and frame rate. A video input is read with OpenCV; a folder
    input is read as its image files in sorted name order. A ``.mp4`` output is written with the mp4v codec,
    a ``.avi`` one with MJPG; any other output path is a folder that receives the frames under their input
    names (folder inputs only).

    Args:
        input_path (str): A video file, or a folder of frames.
        output_path (str): A ``.mp4`` or ``.avi`` file, or (for a folder input) a new or empty folder.
        method (str): ``blur``, ``pixelate``, ``mask``, ``noise`` (from ``configs/_base_/anonymizers/``) or
            ``learned``. Defaults to 'blur'.
        checkpoint (str, optional): The trained checkpoint of ``learned``. Defaults to None.
        detector (str | callable): A spec of :func:`build_face_detector` (``haar``, ``dlib``,
            ``onnx:FILE``), or a ready detector ``frame_bgr -> (K, 5) boxes``. Defaults to 'haar'.
        detector_options (dict, optional): Keyword arguments of the detector built from a spec.
            Defaults to None.
        device (str): ``cpu`` or ``cuda``, where the anonymizer runs. Defaults to 'cpu'.
        fallback (str, optional): What covers a face once its track expired: ``'head'`` keeps anonymizing its
            last region, enlarged ``fallback_scale`` times more; ``'frame'`` blurs the whole frame. Either
            lasts ``fallback_frames`` frames, and applies only while no live track's region contains the face.
            Defaults to None (no fallback).
        fallback_frames (int): Frames a fallback lasts after a track expired. Defaults to 30.
        fallback_scale (float): Extra enlargement of a ``head`` fallback region. Defaults to 1.5.
        max_age (int): Frames a lost face stays anonymized at its track. Defaults to 15.
        iou_threshold (float): Least IoU to continue a track with a detection. Defaults to 0.3.
        smoothing (float): Weight of a track's prediction in its box average, in [0, 1). Defaults to 0.5.
        extrapolate (bool): Whether tracks move on by their velocity. Defaults to True.
        detect_every (int): Run the detector on every n-th frame only (tracks move on in between, and
            ``max_age`` counts the frames it ran on); faster, but a face that appears is missed for up to
            ``n - 1`` frames. Defaults to 1.
        margin (float, optional): Enlargement of face boxes; None takes the checkpoint's, else 2.0.
            Defaults to None.
        feather (float, optional): Blending ramp; None takes the checkpoint's, else 0.2. Defaults to None.
        fps (float, optional): Frame rate of a folder input (None: 30); for a video input only used when the
            file declares none. Defaults to None.
        progress (bool): Whether to show a progress bar. Defaults to True.

    Returns:
        dict: Summary: ``input``, ``output``, ``method``, ``frames``, ``width``, ``height``, ``fps``,
        ``faces_detected`` (detections over all frames), ``tracks`` (faces followed), ``anonymized_frames``
        (frames with at least one anonymized region), ``fallback_frames`` (frames a fallback covered),
        ``seconds`` and ``processing_fps``.
    """
    if fallback not in (None, *FALLBACKS):
        raise ValueError(f'fallback must be None, "head" or "frame", but got {fallback!r}')
    if not (isinstance(detect_every, int) and detect_every >= 1):
        raise ValueError(f'detect_every must be a positive int, but got {detect_every!r}')
    if not (isinstance(fallback_frames, int) and fallback_frames >= 1):
        raise ValueError(f'fallback_frames must be a positive int, but got {fallback_frames!r}')
    if device.startswith('cuda') and not torch.cuda.is_available():
        raise ValueError(f'device {device!r} was asked for, but CUDA is not available')
    _check_paths(input_path, output_path)
    tracker = IoUTracker(iou_threshold, smoothing, max_age, extrapolate)
    anonymizer, preprocessor = build_method_anonymizer(method, checkpoint, device)
    margin = preprocessor.get('margin', DEFAULT_MARGIN) if margin is None else margin
    feather = preprocessor.get('feather', DEFAULT_FEATHER) if feather is None else feather
    if margin < 1 or not 0 <= feather <= 0.5:
        raise ValueError(f'margin must be >= 1 and feather in [0, 0.5], but got {margin} and {feather}')
    if not callable(detector):
        detector = build_face_detector(detector, **(detector_options or {}))
    source = _FrameSource(input_path)
    out_fps = (fps or 30.0) if source.is_folder else (source.fps or fps or 30.0)
    height, width = source.height, source.width
    fallbacks = _FallbackRegions(fallback_frames) if fallback else None
    try:
        sink = _FrameSink(output_path, width, height, out_fps)
    except BaseException:
        source.close()
        raise
    stats = dict(faces_detected=0, anonymized_frames=0, fallback_frames=0)
    start = time.perf_counter()
    try:
        bar = ProgressBar(source.num_frames) if progress else None
        for index, (name, frame) in enumerate(source):
            if index % detect_every == 0:
                boxes = np.asarray(detector(frame), np.float32)
                if boxes.ndim != 2 or boxes.shape[1] not in (4, 5):
                    raise ValueError(f'the face detector returned an array of shape {boxes.shape} for frame '
                                     f'{index} of {input_path}; expected (K, 5) [x1, y1, x2, y2, score]')
                stats['faces_detected'] += len(boxes)
                tracks = tracker.update(boxes)
            else:
                tracks = tracker.predict()
            track_boxes = torch.from_numpy(np.array([t.box for t in tracks]).reshape(-1, 4))
            regions, valid = enlarge_regions(track_boxes, margin, height, width)
            regions = regions[valid]
            blur_frame = False
            if fallbacks is not None:
                pending = fallbacks.step(tracker.expired)
                pending = pending[_uncovered(pending, regions)]
                if len(pending):
                    stats['fallback_frames'] += 1
                    if fallback == 'frame':
                        blur_frame = True
                    else:
                        extra, extra_valid = enlarge_regions(
                            torch.from_numpy(pending), margin * fallback_scale, height, width)
                        regions = torch.cat([regions, extra[extra_valid]])
            frame = anonymize_regions(frame, regions, anonymizer, feather, device)
            if blur_frame:
                frame = cv2.GaussianBlur(frame, (0, 0), FRAME_BLUR_SIGMA * max(height, width))
            stats['anonymized_frames'] += int(blur_frame or len(regions) > 0)
            sink.write(frame, name)
            if bar is not None:
                bar.update()
        if progress:
            print()
        sink.finish()
    except BaseException:
        # Fail closed on anything, KeyboardInterrupt included: no partial output is ever left behind.
        sink.abort()
        raise
    finally:
        source.close()
    seconds = time.perf_counter() - start
    return dict(
        input=input_path,
        output=output_path,
        method=method,
        frames=sink.count,
        width=width,
        height=height,
        fps=out_fps,
        faces_detected=stats['faces_detected'],
        tracks=tracker.num_tracks,
        anonymized_frames=stats['anonymized_frames'],
        fallback_frames=stats['fallback_frames'],
        seconds=seconds,
        processing_fps=sink.count / seconds if seconds > 0 else float('inf'))
