"""A small IoU tracker that keeps faces covered between the detector's hits.

Face detectors flicker: a face turned slightly, blurred by motion or half occluded is missed in some frames.
A video anonymizer that trusted each frame's detections alone would show the face in exactly those frames.
The tracker bridges them: every detected face starts a track at once, and a track the detector loses keeps
its last (smoothed) box, moved on by its last velocity, for ``max_age`` frames, so the face stays anonymized.
Deterministic and pure numpy.
"""
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

from mmanon.utils.checks import check_number


def box_iou(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """Pairwise intersection over union.

    Args:
        boxes1 (np.ndarray): (N, 4) boxes (x1, y1, x2, y2).
        boxes2 (np.ndarray): (M, 4) boxes.

    Returns:
        np.ndarray: (N, M) IoUs; 0 where a union is empty.
    """
    boxes1 = np.asarray(boxes1, np.float64).reshape(-1, 4)
    boxes2 = np.asarray(boxes2, np.float64).reshape(-1, 4)
    lo = np.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    hi = np.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=2)
    area1 = np.prod(np.clip(boxes1[:, 2:] - boxes1[:, :2], 0, None), axis=1)
    area2 = np.prod(np.clip(boxes2[:, 2:] - boxes2[:, :2], 0, None), axis=1)
    union = area1[:, None] + area2[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


@dataclass
class FaceTrack:
    """One face followed over frames.

    Args:
        track_id (int): Unique within a tracker, in order of creation from 0.
        box (np.ndarray): (4,) the face's box (x1, y1, x2, y2) in this frame, in pixels: smoothed while it is
            detected, then carried on while it is lost.
        score (float): The score of its last detection.
        velocity (np.ndarray): (2,) smoothed motion of the box centre, in pixels per frame.
        hits (int): Frames in which it was detected.
        misses (int): Consecutive frames, up to this one, in which it was not.
        detection (np.ndarray, optional): (4,) the box of the detection that continued (or started) it in this
            frame, as the detector gave it; None in a frame where it was not detected.
    """
    track_id: int
    box: np.ndarray
    score: float
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))
    hits: int = 1
    misses: int = 0
    detection: Optional[np.ndarray] = None

    @property
    def lost(self) -> bool:
        """Whether the detector missed the face in this frame."""
        return self.misses > 0


class IoUTracker:
    """Greedy IoU association with exponential smoothing and a grace period for lost faces.

    Each frame, every live track is first moved by its velocity (when ``extrapolate``). Then the pairs
    (track, detection) are matched greedily, highest IoU first (ties by track id, then detection index),
    down to ``iou_threshold``; the IoU is that of the boxes enlarged ``association_scale`` times about their
    centres, so that a small face whose box jitters by a few pixels between frames keeps its track. A matched track's box becomes ``smoothing * predicted + (1 - smoothing) *
    detected``; an unmatched track counts a miss and is dropped (moved to :attr:`expired`) after more than
    ``max_age`` consecutive misses; an unmatched detection starts a new track in this very frame.

    Args:
        iou_threshold (float): Least IoU for a detection to continue a track. Defaults to 0.3.
        smoothing (float): Weight of the track's own prediction in the moving average, in [0, 1); 0 follows
            the detector exactly, larger values steady jittery boxes. Defaults to 0.5.
        max_age (int): Frames a track survives without detections, still reported (and anonymized) at its
            last box. Defaults to 15.
        extrapolate (bool): Whether tracks move on by their velocity (used for association, smoothing and
            lost tracks); otherwise a lost track stays where it was last seen. Defaults to True.
        association_scale (float): Enlargement of the boxes compared for association, >= 1. Defaults to 1.0.
    """

    def __init__(self,
                 iou_threshold: float = 0.3,
                 smoothing: float = 0.5,
                 max_age: int = 15,
                 extrapolate: bool = True,
                 association_scale: float = 1.0) -> None:
        check_number('iou_threshold', iou_threshold, low=0, high=1, low_open=True)
        check_number('smoothing', smoothing, low=0, high=1, high_open=True)
        check_number('max_age', max_age, low=0, integer=True)
        check_number('association_scale', association_scale, low=1)
        self.iou_threshold = iou_threshold
        self.smoothing = smoothing
        self.max_age = max_age
        self.extrapolate = extrapolate
        self.association_scale = association_scale
        self.tracks: List[FaceTrack] = []
        self.expired: List[FaceTrack] = []
        self.num_tracks = 0

    def _predicted(self, track: FaceTrack) -> np.ndarray:
        if not self.extrapolate:
            return track.box.copy()
        return track.box + np.tile(track.velocity, 2)

    def update(self, detections: Optional[np.ndarray]) -> List[FaceTrack]:
        """Advance one frame with that frame's detections.

        Args:
            detections (np.ndarray, optional): (K, 4) or (K, 5) boxes (x1, y1, x2, y2[, score]) in pixels;
                boxes without area are ignored. None or K = 0: no face was detected.

        Returns:
            list[FaceTrack]: The live tracks in this frame (detected or lost), by track id. The tracks dropped
            in this frame are in :attr:`expired`.
        """
        dets = np.zeros((0, 5)) if detections is None else np.asarray(detections, np.float64)
        if dets.ndim != 2 or dets.shape[1] not in (4, 5):
            raise ValueError(f'detections must have shape (K, 4) or (K, 5), but got {dets.shape}')
        if dets.shape[1] == 4:
            dets = np.concatenate([dets, np.ones((len(dets), 1))], axis=1)
        dets = dets[(dets[:, 2] > dets[:, 0]) & (dets[:, 3] > dets[:, 1]) & np.isfinite(dets).all(axis=1)]

        predicted = [self._predicted(t) for t in self.tracks]
        ious = box_iou(scale_boxes(np.array(predicted).reshape(-1, 4), self.association_scale),
                       scale_boxes(dets[:, :4], self.association_scale))
        # Greedy, best pair first; a stable sort of the row-major order breaks ties by track, then detection.
        order = np.argsort(-ious, axis=None, kind='stable')
        track_of_det, used_tracks = {}, set()
        for flat in order:
            t, d = divmod(int(flat), len(dets))
            if ious[t, d] < self.iou_threshold:
                break
            if t in used_tracks or d in track_of_det:
                continue
            used_tracks.add(t)
            track_of_det[d] = t

        matched = {t: d for d, t in track_of_det.items()}
        alive, self.expired = [], []
        for t, (track, prediction) in enumerate(zip(self.tracks, predicted)):
            if t in matched:
                det = dets[matched[t]]
                box = self.smoothing * prediction + (1 - self.smoothing) * det[:4]
                step = _centre(box) - _centre(track.box)
                track.velocity = self.smoothing * track.velocity + (1 - self.smoothing) * step
                track.box, track.score, track.detection = box, float(det[4]), det[:4].copy()
                track.hits += 1
                track.misses = 0
            else:
                track.box, track.detection = prediction, None
                track.misses += 1
                if track.misses > self.max_age:
                    self.expired.append(track)
                    continue
            alive.append(track)
        for d, det in enumerate(dets):
            if d not in track_of_det:
                alive.append(FaceTrack(self.num_tracks, det[:4].copy(), float(det[4]), detection=det[:4].copy()))
                self.num_tracks += 1
        self.tracks = alive
        return list(alive)

    def predict(self) -> List[FaceTrack]:
        """Advance one frame in which the detector was not run: tracks move on, but count no miss.

        Returns:
            list[FaceTrack]: The live tracks, by track id.
        """
        self.expired = []
        for track in self.tracks:
            track.box, track.detection = self._predicted(track), None
        return list(self.tracks)


def scale_boxes(boxes: np.ndarray, scale: float) -> np.ndarray:
    """(N, 4) boxes (x1, y1, x2, y2) scaled about their centres."""
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    halves = (boxes[:, 2:] - boxes[:, :2]) * scale / 2
    return np.concatenate([centres - halves, centres + halves], axis=1)


def _centre(box: np.ndarray) -> np.ndarray:
    return (box[:2] + box[2:]) / 2
