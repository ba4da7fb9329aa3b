"""Turn videos of people into the AVA layout, to evaluate face anonymization on real clips.

An evaluation layout, not training data: the person boxes are derived from the faces a face detector finds in
each keyframe, and every person does the one placeholder action 1. It gives ``tools/data/detect_faces.py`` and
``tools/analysis/tube_coverage.py`` real moving people in exactly the layout and sampling of AVA:

- ``<out-dir>/rawframes/<video_id>/img_00001.jpg ...``: every decoded frame of ``<video_id>.<ext>``. The layout
  counts 30 frames a second, as AVA's rawframes do, whatever the video's own rate (28 fps footage plays a
  little slowed down): the samplers of the configs (SlowOnly 4x16, SlowFast 8x8) then read the frames they
  would read from AVA's.
- ``<out-dir>/annotations/ava_eval.csv``: one row per person and keyframe. The keyframes are the whole seconds
  from ``timestamp_start + 1`` (AVA: 900) whose frames within ``--window`` seconds all exist. A face in a
  keyframe becomes the person box ``[x1 - w, y1 - h / 2, x2 + w, y2 + 4 h]`` (clipped) of its box
  ``[x1, y1, x2, y2]`` of size ``w x h``; faces of consecutive keyframes are one person (entity id) when
  their boxes, enlarged three times, overlap most. A keyframe without faces gets one whole-frame person, so
  its clip is evaluated too.

The videos are not downloaded: put them under ``data/`` yourself (see the README, "Face tubes").

Example::

    python tools/data/videos_to_ava.py data/real_videos/*.mp4 --out-dir data/real_ava
"""
import argparse
import os
import os.path as osp
import sys
from typing import Callable, Dict, List, Tuple

import cv2
import numpy as np
from mmengine.config import DictAction
from mmengine.utils import ProgressBar

from mmanon.apis import build_face_detector
from mmanon.apis.face_tracking import box_iou

FPS = 30
TIMESTAMP_START = 900
ACTION = 1
ANN_NAME = 'ava_eval.csv'


def person_box(face: np.ndarray) -> np.ndarray:
    """The person box of a normalised face box: three faces wide, from half a face above to four below."""
    x1, y1, x2, y2 = face
    w, h = x2 - x1, y2 - y1
    return np.clip([x1 - w, y1 - h / 2, x2 + w, y2 + 4 * h], 0, 1)


def link_persons(faces: List[np.ndarray], growth: float = 3.0) -> List[List[int]]:
    """Entity ids of the faces of consecutive keyframes: greedy best overlap of the boxes grown ``growth``
    times about their centres; a face that overlaps none of the previous keyframe's is a new person.

    Args:
        faces (list[np.ndarray]): Per keyframe, in order, (K, 4) normalised face boxes.
        growth (float): Scale of the boxes compared. Defaults to 3.0.

    Returns:
        list[list[int]]: The entity id of each face, per keyframe.
    """

    def grown(boxes):
        centre, half = (boxes[:, :2] + boxes[:, 2:]) / 2, (boxes[:, 2:] - boxes[:, :2]) * growth / 2
        return np.concatenate([centre - half, centre + half], axis=1)

    ids, previous, previous_ids, next_id = [], np.zeros((0, 4)), [], 0
    for boxes in faces:
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        ious = box_iou(grown(boxes), grown(previous))
        current = [-1] * len(boxes)
        taken = set()
        for flat in np.argsort(-ious, axis=None, kind='stable'):
            face, before = divmod(int(flat), max(len(previous), 1))
            if ious[face, before] <= 0:
                break
            if current[face] < 0 and before not in taken:
                current[face] = previous_ids[before]
                taken.add(before)
        for face in range(len(boxes)):
            if current[face] < 0:
                current[face], next_id = next_id, next_id + 1
        ids.append(current)
        previous, previous_ids = boxes, current
    return ids


def video_to_ava(path: str, out_dir: str, detector: Callable, window: float = 1.1) -> Tuple[str, List[str]]:
    """Write the frames of one video and return its video id and annotation rows; see the module docstring.

    Args:
        path (str): The video file.
        out_dir (str): The layout's folder.
        detector (callable): ``frame_bgr -> (K, 5)`` face boxes in pixels.
        window (float): Seconds of frames a keyframe needs on each side. Defaults to 1.1 (33 frames: the
            clips of SlowOnly 4x16 and SlowFast 8x8 in test mode).

    Returns:
        tuple[str, list[str]]: The video id and its rows of the annotation CSV.
    """
    video_id = osp.splitext(osp.basename(path))[0]
    folder = osp.join(out_dir, 'rawframes', video_id)
    os.makedirs(folder, exist_ok=True)
    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        raise ValueError(f'cannot open the video {path}')
    num_frames = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        num_frames += 1
        if not cv2.imwrite(osp.join(folder, f'img_{num_frames:05d}.jpg'), frame):
            raise OSError(f'cannot write {folder}/img_{num_frames:05d}.jpg')
    capture.release()
    if num_frames == 0:
        raise ValueError(f'{path} has no frames that OpenCV can decode')

    margin = int(np.ceil(window * FPS))
    # Frame i shows second TIMESTAMP_START + (i - 1) / FPS; a keyframe needs frames i - margin to i + margin.
    seconds = [s for s in range(1, num_frames // FPS + 1) if s * FPS + 1 - margin >= 1 and
               s * FPS + 1 + margin <= num_frames]
    keyframe_faces: Dict[int, np.ndarray] = {}
    for second in seconds:
        frame = cv2.imread(osp.join(folder, f'img_{second * FPS + 1:05d}.jpg'))
        height, width = frame.shape[:2]
        boxes = np.asarray(detector(frame), np.float64).reshape(-1, 5)[:, :4] / [width, height, width, height]
        keyframe_faces[second] = np.clip(boxes, 0, 1)
    entity_ids = link_persons([keyframe_faces[s] for s in seconds])
    rows = []
    for second, ids in zip(seconds, entity_ids):
        timestamp = TIMESTAMP_START + second
        persons = [(person_box(face), e) for face, e in zip(keyframe_faces[second], ids)]
        if not persons:
            persons = [(np.array([0., 0., 1., 1.]), max((max(i, default=-1) for i in entity_ids), default=-1) + 1)]
        rows += [f'{video_id},{timestamp},{",".join(f"{v:.3f}" for v in box)},{ACTION},{e}' for box, e in persons]
    return video_id, rows


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Turn videos into the AVA layout (rawframes at a nominal 30 fps and an annotation CSV whose '
        'person boxes are derived from detected faces), to evaluate face anonymization on real clips.',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('videos', nargs='+', help='video files; the file name without extension is the video id')
    parser.add_argument('--out-dir', required=True, help='the layout\'s folder (rawframes/ and annotations/)')
    parser.add_argument('--detector', default='centerface',
                        help='face detector of the keyframes: centerface, haar, dlib or onnx:FILE')
    parser.add_argument('--detector-options', nargs='+', action=DictAction, default={},
                        help='keyword arguments of the detector, e.g. score_threshold=0.3')
    parser.add_argument('--window', type=float, default=1.1,
                        help='seconds of frames a keyframe needs on each side (1.1: SlowOnly 4x16 and SlowFast '
                        '8x8 test clips)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        detector = build_face_detector(args.detector, **args.detector_options)
        os.makedirs(osp.join(args.out_dir, 'annotations'), exist_ok=True)
        rows = []
        bar = ProgressBar(len(args.videos))
        for path in args.videos:
            rows += video_to_ava(path, args.out_dir, detector, args.window)[1]
            bar.update()
        print()
    except (OSError, ValueError, ImportError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    ann_file = osp.join(args.out_dir, 'annotations', ANN_NAME)
    with open(ann_file, 'w', encoding='utf-8') as f:
        f.write(''.join(row + '\n' for row in rows))
    keyframes = len({tuple(row.split(',')[:2]) for row in rows})
    print(f'wrote {ann_file}: {len(rows)} persons in {keyframes} keyframes of {len(args.videos)} videos; frames in '
          f'{osp.join(args.out_dir, "rawframes")} (AVADataset: fps={FPS}, timestamp_start={TIMESTAMP_START})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
