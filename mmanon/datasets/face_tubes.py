"""Face tubes: where each face of a clip is in every sampled frame, not only in its keyframe.

AVA annotates one frame per second, but a clip spans about two seconds (64 frames for SlowOnly 4x16 and
SlowFast 8x8) in which people move. :class:`mmanon.datasets.AVAFaceDataset` gives each face a box in every
sampled frame, from these sources in order of preference:

1. **Per-frame rows** of the face file (decimal timestamps, see :mod:`mmanon.datasets.face_annotations`), as
   ``tools/data/detect_faces.py --all-frames`` writes them. A video's rows are linked into tubes by
   :class:`mmanon.apis.IoUTracker` over its frames in order; a face the detector misses for a few frames keeps
   its last box (:class:`FrameFaces`).
2. **Interpolation between keyframes**: a keyframe face's box at its person's keyframes before and after
   (the same ``entity_id``, else the same ``identity``), linearly interpolated and grown by the motion
   measured between them, so that the face stays inside as long as it strays from the straight path by less
   than the distance it travels (:func:`interpolate_boxes`). A face seen in one keyframe only keeps its box.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from mmanon.apis.face_tracking import IoUTracker, box_iou


class FrameFaces:
    """The per-frame face boxes of one video, linked into tubes.

    Args:
        frames (np.ndarray): (R,) frame indices, ascending.
        tube_ids (np.ndarray): (R,) the tube of each row; a tube has at most one row per frame.
        boxes (np.ndarray): (R, 4) normalised boxes (x1, y1, x2, y2).
    """

    def __init__(self, frames: np.ndarray, tube_ids: np.ndarray, boxes: np.ndarray) -> None:
        self.frames = np.asarray(frames, np.int64)
        self.tube_ids = np.asarray(tube_ids, np.int64)
        self.boxes = np.asarray(boxes, np.float32).reshape(-1, 4)

    @classmethod
    def link(cls, detections: Dict[int, np.ndarray], tracker: Optional[dict] = None) -> 'FrameFaces':
        """Link the faces of each frame into tubes with an :class:`IoUTracker` run over the frames in order.

        Every frame from the first to the last with rows is visited; one without rows is a frame without
        faces. A tube's box where the detector lost it is the tracker's (its last box, moved on by its
        velocity, for ``max_age`` frames).

        Args:
            detections (dict[int, np.ndarray]): Frame index -> (K, 4) normalised boxes.
            tracker (dict, optional): Arguments of :class:`IoUTracker`. Defaults to None (its defaults).

        Returns:
            FrameFaces: A row per tube and frame in which the tube is alive.
        """
        tracker = IoUTracker(**(tracker or {}))
        frames, tube_ids, boxes = [], [], []
        if detections:
            for frame in range(min(detections), max(detections) + 1):
                for track in tracker.update(detections.get(frame)):
                    frames.append(frame)
                    tube_ids.append(track.track_id)
                    boxes.append(track.box)
        return cls(np.array(frames), np.array(tube_ids), np.array(boxes))

    def tubes_at(self, frame_inds: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
        """The tubes alive in any of the given frames.

        Args:
            frame_inds (Sequence[int]): T frame indices (repeats allowed).

        Returns:
            tuple[np.ndarray, np.ndarray]: (M,) tube ids and (M, T, 4) normalised boxes, NaN in the frames
            where a tube is not alive.
        """
        bounds = [(np.searchsorted(self.frames, f, 'left'), np.searchsorted(self.frames, f, 'right'))
                  for f in frame_inds]
        ids = np.unique(np.concatenate([self.tube_ids[lo:hi] for lo, hi in bounds] + [np.zeros(0, np.int64)]))
        tubes = np.full((len(ids), len(bounds), 4), np.nan, np.float32)
        for t, (lo, hi) in enumerate(bounds):
            tubes[np.searchsorted(ids, self.tube_ids[lo:hi]), t] = self.boxes[lo:hi]
        return ids, tubes


def interpolate_boxes(times: np.ndarray, boxes: np.ndarray, query: np.ndarray) -> np.ndarray:
    """One face's box at any time from its boxes at a few keyframes, fail-closed for moderate detours.

    Between two keyframes the box is interpolated linearly and grown on each side by ``min(a, 1 - a)`` times
    the distance its coordinates moved along that axis (``a`` is the fraction of the time between them): at
    the keyframes it is the keyframe's box, half-way it covers both boxes. Before the first and after the last
    keyframe the nearest box is held, grown by the speed measured between the two nearest keyframes times the
    time from it (not grown when there is only one keyframe).

    Args:
        times (np.ndarray): (M,) keyframe seconds, ascending and distinct, M >= 1.
        boxes (np.ndarray): (M, 4) boxes (x1, y1, x2, y2) at those times.
        query (np.ndarray): (T,) seconds.

    Returns:
        np.ndarray: (T, 4) float32 boxes.
    """
    times = np.asarray(times, np.float64)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    query = np.asarray(query, np.float64)
    if len(times) == 1:
        return np.repeat(boxes.astype(np.float32), len(query), axis=0)
    # Per keyframe pair: the largest move of the box's x and y edges, per second.
    moves = np.abs(np.diff(boxes, axis=0))
    speed = np.stack([moves[:, 0::2].max(axis=1), moves[:, 1::2].max(axis=1)], axis=1) / np.diff(times)[:, None]
    pair = np.clip(np.searchsorted(times, query, 'right') - 1, 0, len(times) - 2)
    start, end = times[pair], times[pair + 1]
    alpha = np.clip((query - start) / (end - start), 0, 1)[:, None]
    result = boxes[pair] * (1 - alpha) + boxes[pair + 1] * alpha
    # Inside a pair: a detour of min(a, 1 - a) of the move; outside: the time beyond the nearest keyframe.
    seconds = np.minimum(query - start, end - query).clip(min=0)
    seconds = np.where(query < times[0], times[0] - query, np.where(query > times[-1], query - times[-1], seconds))
    grow = np.tile(speed[pair] * seconds[:, None], 2)
    return (result + grow * np.array([-1, -1, 1, 1])).astype(np.float32)


def link_keyframe_faces(times: np.ndarray, boxes: np.ndarray, links: List[Optional[tuple]]
                        ) -> Dict[tuple, Tuple[np.ndarray, np.ndarray]]:
    """Group the keyframe faces of one video by person, for :func:`interpolate_boxes`.

    Args:
        times (np.ndarray): (F,) keyframe seconds.
        boxes (np.ndarray): (F, 4) normalised boxes.
        links (list[tuple | None]): The person of each face (``('entity', id)`` or ``('identity', id)``),
            None for a face of no known person, which is not grouped.

    Returns:
        dict: person -> ((M,) ascending seconds, (M, 4) boxes). Several faces of one person in one keyframe
        are merged into the box around them all.
    """
    grouped: Dict[tuple, Dict[int, np.ndarray]] = {}
    for time, box, link in zip(times, np.asarray(boxes, np.float32).reshape(-1, 4), links):
        if link is None:
            continue
        at = grouped.setdefault(link, {})
        at[time] = box if time not in at else np.concatenate([np.minimum(at[time][:2], box[:2]),
                                                              np.maximum(at[time][2:], box[2:])])
    return {link: (np.array(sorted(at), np.float64), np.stack([at[t] for t in sorted(at)]))
            for link, at in grouped.items()}


def match_keyframe_faces(key_boxes: np.ndarray, tube_boxes: np.ndarray, iou_threshold: float = 0.5) -> np.ndarray:
    """Which per-frame tube each keyframe face is, by the greedy best IoU in the keyframe.

    Args:
        key_boxes (np.ndarray): (F, 4) keyframe face boxes.
        tube_boxes (np.ndarray): (M, 4) the tubes' boxes in the keyframe, NaN where a tube has none.
        iou_threshold (float): Least IoU of a match. Defaults to 0.5.

    Returns:
        np.ndarray: (F,) tube index per face, -1 where none matches.
    """
    ious = box_iou(key_boxes, np.nan_to_num(tube_boxes, nan=0.0))
    match = np.full(len(key_boxes), -1, np.int64)
    for flat in np.argsort(-ious, axis=None, kind='stable'):
        face, tube = divmod(int(flat), ious.shape[1])
        if ious[face, tube] < iou_threshold:
            break
        if match[face] < 0 and tube not in match:
            match[face] = tube
    return match
