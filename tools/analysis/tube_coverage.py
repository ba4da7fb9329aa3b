"""Face tube coverage: in how many sampled frames does an independent detector find a face left raw?

The clips are those a detector trains and tests on: an AVA-layout dataset (``tools/data/videos_to_ava.py``
makes one from real videos) read by :class:`mmanon.datasets.AVAFaceDataset` and sampled around each keyframe
as mmaction2's ``SampleAVAFrames`` does in test mode for SlowOnly 4x16 (4 frames, 16 apart) and SlowFast 8x8
(32 frames, 2 apart), at full resolution. The anonymized pixels of each clip are those that
:class:`mmanon.models.AnonymizerDataPreprocessor` replaces (its own region code, run with a solid mask and no
feathering, at ``--margin``), for each way of placing the regions:

- ``keyframe regions``: the keyframe's face boxes of the first face file in every frame (before face tubes);
- ``tubes: NAME``: the face tubes that the dataset builds from the face file NAME (keyframe faces interpolated
  between keyframes; with per-frame rows from ``detect_faces.py --all-frames``, the faces of every frame).

The reference faces are those of dlib's CNN face detector (``mmod`` of ``face_recognition_models``), which
shares nothing with the detectors the face files come from. A face is left raw when less than ``--covered``
(90%) of its box is anonymized; the table gives the share of the sampled frames that show a reference face in
which one is left raw, and the same with any raw pixel of a face box counted (strict). The reference detector
takes seconds per frame on a CPU; its boxes are cached in ``--cache``, keyed by video and frame, and
``--max-frames`` evaluates that many evenly spaced frames of each clip only (the 32 frames of a SlowFast clip
are 2 apart, so a quarter of them gives nearly the same share at a quarter of the cost).

Example::

    python tools/analysis/tube_coverage.py data/real_ava/annotations/ava_eval.csv \\
        --frame-root data/real_ava/rawframes \\
        --face-file keyframes=data/real_ava/annotations/faces_keyframes.csv \\
        all-frames=data/real_ava/annotations/faces_all_frames.csv
"""
import argparse
import json
import os
import os.path as osp
import sys
from collections import defaultdict
from typing import Dict, List, Optional

import cv2
import numpy as np
import torch
from mmengine.config import DictAction
from mmengine.dataset import pseudo_collate
from mmengine.registry import DefaultScope
from mmengine.utils import ProgressBar

import mmanon  # noqa: F401  (registers AVAFaceDataset; its compatibility fixes come first)
from mmaction.registry import DATASETS  # noqa: E402
from mmanon.models import AnonymizerDataPreprocessor  # noqa: E402

SAMPLERS = {
    'SlowOnly 4x16': dict(clip_len=4, frame_interval=16),
    'SlowFast 8x8': dict(clip_len=32, frame_interval=2),
}
KEYFRAME_REGIONS = 'keyframe regions'


class ReferenceFaces:
    """dlib's CNN face detector on RGB frames, its boxes cached in a JSON file.

    Args:
        cache (str): The JSON file; created when missing.
        upsample (int): Times dlib doubles the frame before detection (1 finds faces down to about 20
            pixels). Defaults to 1.
    """

    def __init__(self, cache: str, upsample: int = 1) -> None:
        try:
            import dlib
            import face_recognition_models
        except ImportError as e:
            raise ImportError(f'the reference detector needs dlib and face_recognition_models ({e}): '
                              'pip install dlib-bin face_recognition_models') from None
        self.detector = dlib.cnn_face_detection_model_v1(face_recognition_models.cnn_face_detector_model_location())
        self.upsample = upsample
        self.cache = cache
        self.protocol = f'mmod upsample={upsample}'
        self.boxes: Dict[str, list] = {}
        if osp.isfile(cache):
            with open(cache, encoding='utf-8') as f:
                self.boxes = json.load(f).get(self.protocol, {})

    def __call__(self, key: str, rgb: np.ndarray) -> np.ndarray:
        """(K, 4) face boxes in pixels of ``rgb``, the frame called ``key``."""
        if key not in self.boxes:
            found = self.detector(np.ascontiguousarray(rgb), self.upsample)
            self.boxes[key] = [[d.rect.left(), d.rect.top(), d.rect.right() + 1, d.rect.bottom() + 1] for d in found]
            self._save()
        return np.array(self.boxes[key], np.float64).reshape(-1, 4)

    def _save(self) -> None:
        cached = {}
        if osp.isfile(self.cache):
            with open(self.cache, encoding='utf-8') as f:
                cached = json.load(f)
        cached[self.protocol] = self.boxes
        os.makedirs(osp.dirname(osp.abspath(self.cache)), exist_ok=True)
        with open(self.cache + '.tmp', 'w', encoding='utf-8') as f:
            json.dump(cached, f)
        os.replace(self.cache + '.tmp', self.cache)


def build_dataset(ann_file: str, frame_root: str, face_file: str, sampler: dict, **dataset_args):
    """The AVAFaceDataset of one face file, sampling test clips at full resolution."""
    pipeline = [
        dict(type='SampleAVAFrames', test_mode=True, **sampler),
        dict(type='RawFrameDecode'),
        dict(type='FormatShape', input_format='NCTHW', collapse=True),
        dict(type='PackActionInputs', meta_keys=('img_shape', 'img_key', 'video_id', 'timestamp', 'frame_inds')),
    ]
    with DefaultScope.overwrite_default_scope('mmaction'):
        return DATASETS.build(
            dict(type='mmanon.AVAFaceDataset', ann_file=ann_file, face_file=face_file, pipeline=pipeline,
                 data_prefix=dict(img=frame_root), test_mode=True, **dataset_args))


def anonymized_pixels(preprocessor: AnonymizerDataPreprocessor, packed: dict, keyframe_regions: bool) -> np.ndarray:
    """(T, H, W) bool: the pixels the preprocessor replaces in a packed sample's clip.

    With ``keyframe_regions``, the sample's face tubes are left out, so the keyframe's face boxes are used in
    every frame, as before face tubes.
    """
    sample = packed['data_samples'].clone()
    if keyframe_regions:
        del sample.face_tubes
    zeros = torch.zeros_like(packed['inputs'])
    with torch.no_grad():
        out = preprocessor(pseudo_collate([dict(inputs=zeros, data_samples=sample)]), False)['inputs']
    return (out[0] > 0).any(dim=0).numpy()


def raw_share(face: np.ndarray, anonymized: np.ndarray) -> float:
    """The share of a face box's pixels that are not anonymized (pixels whose centre lies in the box)."""
    height, width = anonymized.shape
    x1, y1, x2, y2 = (int(np.clip(np.round(v), 0, limit)) for v, limit in zip(face, (width, height) * 2))
    if x2 <= x1 or y2 <= y1:
        return 0.0
    return float(1 - anonymized[y1:y2, x1:x2].mean())


def measure(ann_file: str,
            frame_root: str,
            face_files: Dict[str, str],
            reference: ReferenceFaces,
            samplers: List[str],
            margin: float = 2.0,
            covered: float = 0.9,
            max_frames: Optional[int] = None,
            show_dir: Optional[str] = None,
            **dataset_args) -> List[dict]:
    """The coverage of every sampler and way of placing regions; see the module docstring.

    Args:
        ann_file (str): The AVA annotation CSV.
        frame_root (str): The rawframes folder.
        face_files (dict[str, str]): Name -> face CSV; the first one's keyframe faces also give the
            ``keyframe regions`` row.
        reference (ReferenceFaces): The independent face detector.
        samplers (list[str]): Keys of :data:`SAMPLERS`.
        margin (float): The preprocessor's ``margin``. Defaults to 2.0.
        covered (float): Least anonymized share of a reference face box for the face to count as covered.
            Defaults to 0.9.
        max_frames (int, optional): Evaluate at most this many evenly spaced frames of each clip. Defaults to
            None (all).
        show_dir (str, optional): Where to write each frame with a face left raw (regions in green, the
            reference faces in red). Defaults to None.
        **dataset_args: More arguments of the dataset (``fps``, ``timestamp_start``, ``filename_tmpl``).

    Returns:
        list[dict]: One row per sampler and placement: ``sampler``, ``regions``, ``clips``,
        ``sampled_frames``, ``face_frames``, ``raw_frames`` (a face less than ``covered`` anonymized),
        ``strict_raw_frames`` (a face pixel raw), ``faces``, ``raw_faces`` and per video ``by_video``
        (face frames, raw frames).
    """
    preprocessor = AnonymizerDataPreprocessor(anonymizer=dict(type='SolidMask', fill=255), margin=margin,
                                              feather=0., mean=[0, 0, 0], std=[1, 1, 1])
    variants = [(KEYFRAME_REGIONS, next(iter(face_files.values())), True)]
    variants += [(f'tubes: {name}', path, False) for name, path in face_files.items()]
    rows = []
    for sampler in samplers:
        for regions, face_file, keyframe_regions in variants:
            dataset = build_dataset(ann_file, frame_root, face_file, SAMPLERS[sampler], **dataset_args)
            row = dict(sampler=sampler, regions=regions, clips=len(dataset), sampled_frames=0, face_frames=0,
                       raw_frames=0, strict_raw_frames=0, faces=0, raw_faces=0, by_video=defaultdict(lambda: [0, 0]))
            print(f'{sampler}, {regions}:')
            bar = ProgressBar(len(dataset))
            for i in range(len(dataset)):
                packed = dataset[i]
                meta = packed['data_samples'].metainfo
                mask = anonymized_pixels(preprocessor, packed, keyframe_regions)
                frames = packed['inputs'].permute(1, 2, 3, 0).numpy()  # (T, H, W, RGB)
                step = 1 if max_frames is None else -(-len(frames) // max_frames)
                for t in range(0, len(frames), step):
                    frame, index = frames[t], meta['frame_inds'][t]
                    faces = reference(f'{meta["video_id"]}/{int(index)}', frame)
                    shares = [raw_share(face, mask[t]) for face in faces]
                    row['sampled_frames'] += 1
                    if not shares:
                        continue
                    left_raw = max(shares) > 1 - covered
                    row['face_frames'] += 1
                    row['raw_frames'] += left_raw
                    row['strict_raw_frames'] += max(shares) > 0
                    row['faces'] += len(shares)
                    row['raw_faces'] += sum(s > 1 - covered for s in shares)
                    row['by_video'][meta['video_id']][0] += 1
                    row['by_video'][meta['video_id']][1] += left_raw
                    if left_raw and show_dir is not None:
                        _show(show_dir, sampler, regions, meta, int(index), frame, mask[t], faces)
                bar.update()
            print()
            row['by_video'] = dict(row['by_video'])
            rows.append(row)
    return rows


def _show(show_dir: str, sampler: str, regions: str, meta: dict, index: int, frame: np.ndarray,
          mask: np.ndarray, faces: np.ndarray) -> None:
    """Write a frame with a face left raw: anonymized pixels tinted green, reference faces in red."""
    image = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
    image[mask] = (0.5 * image[mask] + [0, 127, 0]).astype(np.uint8)
    for x1, y1, x2, y2 in faces.astype(int):
        cv2.rectangle(image, (x1, y1), (x2 - 1, y2 - 1), (0, 0, 255), 1)
    name = f'{sampler}_{regions}_{meta["img_key"]}_{index:05d}.png'.replace(' ', '_').replace(':', '').replace(',', '_')
    os.makedirs(show_dir, exist_ok=True)
    cv2.imwrite(osp.join(show_dir, name), image)


def format_table(rows: List[dict]) -> str:
    """The Markdown table of :func:`measure`'s rows."""
    lines = ['| sampler | regions | clips | frames evaluated | with a face | face left raw | share | strict share |',
             '|---|---|---:|---:|---:|---:|---:|---:|']
    for r in rows:
        share = r['raw_frames'] / max(r['face_frames'], 1)
        strict = r['strict_raw_frames'] / max(r['face_frames'], 1)
        lines.append(f'| {r["sampler"]} | {r["regions"]} | {r["clips"]} | {r["sampled_frames"]} | '
                     f'{r["face_frames"]} | {r["raw_frames"]} | {share:.1%} | {strict:.1%} |')
    return '\n'.join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Share of sampled frames in which an independent face detector (dlib CNN) finds a face '
        'that the anonymizer data preprocessor leaves raw, with keyframe regions and with face tubes.',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('ann_file', help='AVA annotation CSV of the clips (e.g. from tools/data/videos_to_ava.py)')
    parser.add_argument('--frame-root', required=True, help='rawframes folder, <video_id>/img_XXXXX.jpg')
    parser.add_argument('--face-file', nargs='+', action=DictAction, required=True, metavar='NAME=CSV',
                        help='face files to compare; the first one\'s keyframe faces also give the keyframe '
                        'regions')
    parser.add_argument('--samplers', nargs='+', choices=list(SAMPLERS), default=list(SAMPLERS),
                        help='frame samplers (test mode, as the configs of these detectors)')
    parser.add_argument('--margin', type=float, default=2.0, help='the preprocessor\'s region margin')
    parser.add_argument('--covered', type=float, default=0.9,
                        help='least anonymized share of a reference face box for the face to count as covered')
    parser.add_argument('--upsample', type=int, default=1, help='times dlib doubles a frame before detection')
    parser.add_argument('--max-frames', type=int,
                        help='evaluate at most this many evenly spaced frames of each clip (default: all)')
    parser.add_argument('--cache', default='work_dirs/tube_coverage/reference_faces.json',
                        help='JSON cache of the reference detector\'s boxes')
    parser.add_argument('--fps', type=int, default=30, help='frame rate of the layout (AVADataset fps)')
    parser.add_argument('--timestamp-start', type=int, default=900, help='the second of the first frame')
    parser.add_argument('--filename-tmpl', default='img_{:05d}.jpg', help='frame file names')
    parser.add_argument('--show-dir', help='write every frame with a face left raw here, for inspection')
    parser.add_argument('--out', help='also write the rows as JSON here')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if not 0 < args.covered <= 1:
        print(f'error: --covered must be in (0, 1], got {args.covered}', file=sys.stderr)
        return 1
    try:
        reference = ReferenceFaces(args.cache, args.upsample)
        rows = measure(args.ann_file, args.frame_root, dict(args.face_file), reference, args.samplers, args.margin,
                       args.covered, args.max_frames, args.show_dir, fps=args.fps,
                       timestamp_start=args.timestamp_start, filename_tmpl=args.filename_tmpl)
    except (OSError, ValueError, ImportError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    print(f'python {" ".join(sys.argv)}')
    print(f'reference: dlib CNN ({reference.protocol}); a face is left raw when less than {args.covered:.0%} of its '
          f'box is anonymized (strict: any raw pixel); margin {args.margin}; '
          f'{"all" if args.max_frames is None else f"at most {args.max_frames}"} frames of each clip')
    print(format_table(rows))
    if args.out:
        with open(args.out, 'w', encoding='utf-8') as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
