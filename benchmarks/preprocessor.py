"""Time per batch of the stock data preprocessor and of the anonymizer data preprocessor with each anonymizer.

A batch of 8 clips of 3 x 8 x 256 x 256 pixels with 2 faces per clip (face boxes carried by the data samples,
enlarged 2x into the anonymized regions, as in training; with ``--motion``, face tubes whose boxes move that
many pixels a frame, so every frame has a region of its own) goes through MMAction2's ``ActionDataPreprocessor``
and through ``AnonymizerDataPreprocessor`` with each base config of ``configs/_base_/anonymizers``; the table
gives the median time of ``--repeats`` runs and its ratio to the stock one, in evaluation mode (no gradient)
and, for the learned anonymizer, in training mode with a backward pass through it as well.

    python benchmarks/preprocessor.py
    python benchmarks/preprocessor.py --device cuda --repeats 20
    python benchmarks/preprocessor.py --motion 3
"""
import argparse
import glob
import os.path as osp
import sys

import torch
from mmengine.config import Config
from mmengine.structures import InstanceData

import mmanon  # noqa: F401  (first: its compatibility fixes make mmaction.models importable)
from mmaction.models import ActionDataPreprocessor  # noqa: E402
from mmaction.structures import ActionDataSample  # noqa: E402
from mmanon.models import AnonymizerDataPreprocessor  # noqa: E402
from timing import machine, median_seconds  # noqa: E402  (benchmarks/ is on sys.path as the script's folder)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
NORM = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], format_shape='NCTHW')


def parse_args():
    parser = argparse.ArgumentParser(description='Time the anonymizer data preprocessor against the stock one.')
    parser.add_argument('--batch', type=int, nargs=5, default=(8, 3, 8, 256, 256), metavar=('N', 'C', 'T', 'H', 'W'),
                        help='batch shape (default: 8 3 8 256 256)')
    parser.add_argument('--faces', type=int, default=2, help='faces per clip (default: 2)')
    parser.add_argument('--motion', type=float, default=0.,
                        help='pixels a frame that each face moves, as face tubes (default: 0, keyframe boxes)')
    parser.add_argument('--repeats', type=int, default=10, help='timed runs per method; the median is reported')
    parser.add_argument('--device', default='cpu', help='cpu or cuda (default: cpu)')
    parser.add_argument('--threads', type=int, help='torch CPU threads (default: torch\'s choice)')
    return parser.parse_args()


def make_batch(shape, faces, motion, device):
    n, c, t, h, w = shape
    generator = torch.Generator().manual_seed(0)
    inputs = [torch.randint(0, 256, (c, t, h, w), dtype=torch.uint8, generator=generator) for _ in range(n)]
    samples = []
    for _ in range(n):
        boxes = []
        for i in range(faces):
            x1 = (i + 0.5) * w / faces - 24
            boxes.append([x1, 0.2 * h, x1 + 48, 0.2 * h + 56])
        sample = ActionDataSample()
        sample.gt_faces = InstanceData(bboxes=torch.tensor(boxes), identities=torch.arange(faces))
        if motion:
            # Diagonal motion, centred on the keyframe's box: a new region in every frame.
            steps = (torch.arange(t, dtype=torch.float32) - t // 2) * motion
            sample.face_tubes = InstanceData(bboxes=torch.tensor(boxes)[:, None] + steps[None, :, None])
        samples.append(sample)
    return dict(inputs=[x.to(device) for x in inputs], data_samples=samples)


def main():
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    batch = make_batch(args.batch, args.faces, args.motion, args.device)
    stock = ActionDataPreprocessor(**NORM).to(args.device)
    repeat = [batch] * (args.repeats + 1)  # the first call warms up
    rows = [('stock ActionDataPreprocessor', 'eval', median_seconds(lambda b: stock(b, False), repeat, 1, args.device))]
    for path in sorted(glob.glob(osp.join(REPO, 'configs/_base_/anonymizers/*.py'))):
        name = osp.basename(path)[:-3]
        ours = AnonymizerDataPreprocessor(anonymizer=Config.fromfile(path).anonymizer, **NORM).to(args.device)
        with torch.no_grad():
            rows.append((name, 'eval', median_seconds(lambda b: ours(b, False), repeat, 1, args.device)))
        if any(p.requires_grad for p in ours.parameters()):
            ours.l1_weight = 1.0

            def train_step(b):
                ours(b, True)['inputs'].sum().backward()

            rows.append((name, 'train (+backward)', median_seconds(train_step, repeat, 1, args.device)))

    base = rows[0][2]
    print(f'python {" ".join(sys.argv)}')
    print(f'batch {tuple(args.batch)}, {args.faces} faces per clip moving {args.motion:g} pixels a frame, device '
          f'{args.device}, {machine()}')
    print(f'| {"method":28s} | {"mode":17s} | ms per batch | x stock |')
    print(f'|{"-" * 30}|{"-" * 19}|-------------:|--------:|')
    for name, mode, seconds in rows:
        print(f'| {name:28s} | {mode:17s} | {seconds * 1e3:12.1f} | {seconds / base:7.1f} |')


if __name__ == '__main__':
    main()
