"""Temporal consistency of anonymized faces along face tubes: does the anonymizer add flicker to a clip?

For every clip of an AVA-layout dataset (see ``tools/analysis/tube_coverage.py``), sampled as SlowFast 8x8
samples it in test mode (32 frames, 2 apart), the face regions are cut out as the anonymizer data
preprocessor cuts them, with face tubes (a region that follows the face, one size per tube) and with keyframe
regions (the keyframe's region in every frame). Each group of a tube's frames that share a region size is
anonymized in one call, as in training, and the mean absolute change between consecutive frames of the group
(rows that show frames t-1 and t of the clip, as the training term ``loss_temporal`` pairs them), in pixel
values, is compared with that of the raw crops:

    flicker ratio = mean |A(x_t) - A(x_t-1)| / mean |x_t - x_t-1|

1 means the anonymized face changes from frame to frame exactly as much as the raw face does; well above 1,
the anonymizer adds changes of its own (flicker), below 1 it smooths them.

Example::

    python tools/analysis/tube_flicker.py data/real_ava/annotations/ava_eval.csv \\
        --frame-root data/real_ava/rawframes --face-file data/real_ava/annotations/faces_all_frames.csv \\
        --checkpoint work_dirs/toy/learned/iter_600.pth
"""
import argparse
import sys
from typing import Dict, List

import torch
from mmengine.utils import ProgressBar

from tube_coverage import SAMPLERS, build_dataset  # noqa: E402  (tools/analysis is on sys.path as the script's folder)

import mmanon  # noqa: F401,E402  (its compatibility fixes come first)
from mmanon.apis import build_method_anonymizer  # noqa: E402
from mmanon.models.utils import (anonymize_crops, consecutive_rows, crop_frames, crop_regions,  # noqa: E402
                                 enlarge_regions)

HANDCRAFTED = ('blur', 'pixelate', 'noise')


def consecutive_change(crops: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """Sum and count of ``|x_t - x_t-1|`` over the consecutive frames of a (G, C, h, w) crop whose rows show the
    clip's ``frames`` (see :func:`mmanon.models.utils.crop_frames`), as a (2,) tensor of float64."""
    prev = consecutive_rows(frames)
    change = (crops[prev + 1] - crops[prev]).abs()
    return torch.stack([change.sum().double(), torch.tensor(change.numel(), dtype=torch.float64)])


def measure(ann_file: str, frame_root: str, face_file: str, anonymizers: Dict[str, torch.nn.Module],
            margin: float = 2.0, sampler: str = 'SlowFast 8x8', **dataset_args) -> List[dict]:
    """Flicker of each anonymizer along tube regions and keyframe regions; see the module docstring.

    Args:
        ann_file (str): The AVA annotation CSV.
        frame_root (str): The rawframes folder.
        face_file (str): The face CSV (with per-frame rows, for tubes that follow the faces).
        anonymizers (dict[str, nn.Module]): Name -> anonymizer.
        margin (float): The preprocessor's ``margin``. Defaults to 2.0.
        sampler (str): A key of :data:`SAMPLERS`. Defaults to 'SlowFast 8x8'.
        **dataset_args: More arguments of the dataset (``fps``, ``timestamp_start``, ``filename_tmpl``).

    Returns:
        list[dict]: Per anonymizer and placement (``regions``: 'tubes' or 'keyframe regions'): ``raw`` and
        ``anonymized``, the mean consecutive change in pixel values, and ``ratio``.
    """
    dataset = build_dataset(ann_file, frame_root, face_file, SAMPLERS[sampler], **dataset_args)
    sums = {(name, regions): torch.zeros(2, 2, dtype=torch.float64) for name in anonymizers
            for regions in ('tubes', 'keyframe regions')}
    bar = ProgressBar(len(dataset))
    for i in range(len(dataset)):
        packed = dataset[i]
        clip, sample = packed['inputs'], packed['data_samples']
        num_frames, height, width = clip.shape[1:]
        placements = dict(tubes=sample.face_tubes.bboxes,
                          **{'keyframe regions': sample.gt_faces.bboxes[:, None].expand(-1, num_frames, -1)})
        for regions_name, tubes in placements.items():
            regions, valid = enlarge_regions(tubes, margin, height, width)
            regions = regions[valid.any(dim=1)]
            crops = [c.float() for c in crop_regions([clip], torch.zeros(len(regions), dtype=torch.long), regions)]
            frames = crop_frames(regions, num_frames)
            raw = sum((consecutive_change(c, f) for c, f in zip(crops, frames)), torch.zeros(2, dtype=torch.float64))
            for name, anonymizer in anonymizers.items():
                with torch.no_grad():
                    patches = anonymize_crops(anonymizer, crops)
                anonymized = sum((consecutive_change(p, f) for p, f in zip(patches, frames)),
                                 torch.zeros(2, dtype=torch.float64))
                sums[(name, regions_name)] += torch.stack([raw, anonymized])
        bar.update()
    print()
    rows = []
    for (name, regions), ((raw_sum, count), (anonymized_sum, _)) in sums.items():
        raw, anonymized = float(raw_sum / count.clamp(min=1)), float(anonymized_sum / count.clamp(min=1))
        rows.append(dict(anonymizer=name, regions=regions, raw=raw, anonymized=anonymized,
                         ratio=anonymized / raw if raw else float('nan')))
    return rows


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Flicker of anonymized faces along face tubes: mean change between consecutive frames of the '
        'anonymized face regions against that of the raw ones.',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('ann_file', help='AVA annotation CSV of the clips (e.g. from tools/data/videos_to_ava.py)')
    parser.add_argument('--frame-root', required=True, help='rawframes folder, <video_id>/img_XXXXX.jpg')
    parser.add_argument('--face-file', required=True,
                        help='face CSV with per-frame rows (detect_faces.py --all-frames)')
    parser.add_argument('--methods', nargs='+', default=list(HANDCRAFTED), choices=HANDCRAFTED,
                        help='handcrafted anonymizers (configs/_base_/anonymizers) to measure')
    parser.add_argument('--checkpoint', nargs='*', default=[],
                        help='trained checkpoints whose learned anonymizers to measure')
    parser.add_argument('--sampler', choices=list(SAMPLERS), default='SlowFast 8x8', help='frame sampler (test mode)')
    parser.add_argument('--margin', type=float, default=2.0, help='the preprocessor\'s region margin')
    parser.add_argument('--fps', type=int, default=30, help='frame rate of the layout (AVADataset fps)')
    parser.add_argument('--timestamp-start', type=int, default=900, help='the second of the first frame')
    parser.add_argument('--filename-tmpl', default='img_{:05d}.jpg', help='frame file names')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        anonymizers = {method: build_method_anonymizer(method)[0] for method in args.methods}
        for checkpoint in args.checkpoint:
            # Named by the path as given: checkpoints of different runs share their file name (iter_600.pth).
            anonymizers[f'learned ({checkpoint})'] = build_method_anonymizer('learned', checkpoint)[0]
        rows = measure(args.ann_file, args.frame_root, args.face_file, anonymizers, args.margin, args.sampler,
                       fps=args.fps, timestamp_start=args.timestamp_start, filename_tmpl=args.filename_tmpl)
    except (OSError, ValueError, ImportError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    print(f'python {" ".join(sys.argv)}')
    print(f'{args.sampler} test clips, margin {args.margin}; mean |change| between consecutive frames, pixel values')
    print('| anonymizer | regions | raw | anonymized | flicker ratio |')
    print('|---|---|---:|---:|---:|')
    for r in rows:
        print(f'| {r["anonymizer"]} | {r["regions"]} | {r["raw"]:.2f} | {r["anonymized"]:.2f} | {r["ratio"]:.2f} |')
    return 0


if __name__ == '__main__':
    sys.exit(main())
