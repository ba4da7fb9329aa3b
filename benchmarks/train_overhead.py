"""Time per training iteration of the stock detector and of the adversarial set-up, on the same batches.

From an adversarial config, the stock detector is the same model with MMAction2's ``ActionDataPreprocessor``
in place of the anonymizer data preprocessor; the adversarial set-up is the config's model (anonymizer and
discriminator in the preprocessor) with the config's ``AdversarialTrainingHook`` doing its per-iteration work
(M's losses in the detector's loss dict, M's and D's steps with their own optimizers), the adversarial loss at
full weight in every iteration (no warm-up, one D step per adversarial step of M: the game's most expensive
iteration). Both train on identical synthetic batches shaped like the config's training clips (clip length and
crop size read from its train pipeline), with 2 persons per clip whose faces carry identities (with ``--motion``,
face tubes whose boxes move that many pixels a frame, so every frame has a region of its own, as the dataset
gives them), the two set-ups taking turns iteration by iteration, which of them goes first alternating, so that
both see the same load of the machine. After ``--warmup`` untimed iterations of each, ``--iters`` are timed; the
median time per iteration of each set-up is printed with its quartiles and the ratio of the medians, and the
ratio of each adversarial iteration to the stock one timed beside it, with its median, quartiles and range (the
spread of the figure).

    python benchmarks/train_overhead.py
    python benchmarks/train_overhead.py --motion 3
    python benchmarks/train_overhead.py configs/detection/slowonly/slowonly-adversarial_kinetics400-pretrained-r50_8xb16-4x16x1-20e_ava21-rgb.py --device cuda --batch-size 16
"""
import argparse
import copy
import logging
import os.path as osp
import statistics
import sys
from typing import Optional

import torch
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope
from mmengine.structures import InstanceData

import mmanon  # noqa: F401  (first: its compatibility fixes make mmaction.models importable)
from mmaction.registry import MODELS  # noqa: E402
from mmaction.structures import ActionDataSample  # noqa: E402
from mmanon.registry import HOOKS, build_in_scope  # noqa: E402
from timing import machine, quartiles, seconds_in_turn  # noqa: E402  (benchmarks/ is on sys.path as the script's folder)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEFAULT_CONFIG = osp.join(REPO, 'configs/detection/slowonly/slowonly-adversarial_r18_1xb8-4x6x1-600i_toy-ava-rgb.py')


def parse_args():
    parser = argparse.ArgumentParser(description='Time a training iteration: stock detector vs adversarial.')
    parser.add_argument('config', nargs='?', default=DEFAULT_CONFIG,
                        help='an adversarial config (default: the toy benchmark\'s)')
    parser.add_argument('--batch-size', type=int, help='clips per batch (default: the config\'s)')
    parser.add_argument('--motion', type=float, default=0.,
                        help='pixels a frame that each face moves, as face tubes (default: 0, keyframe boxes)')
    parser.add_argument('--iters', type=int, default=20,
                        help='timed iterations of each set-up; medians and quartiles are reported (default: 20)')
    parser.add_argument('--warmup', type=int, default=3, help='untimed iterations of each set-up first (default: 3)')
    parser.add_argument('--device', default='cpu', help='cpu or cuda (default: cpu)')
    parser.add_argument('--threads', type=int, help='torch CPU threads (default: torch\'s choice)')
    return parser.parse_args()


def clip_shape(cfg):
    """(T, H, W) of the config's training clips, from its train pipeline."""
    pipeline = {t['type']: t for t in cfg.train_dataloader.dataset.pipeline}
    size = pipeline.get('RandomCrop', {}).get('size', 256)
    return pipeline['SampleAVAFrames']['clip_len'], size, size


def make_batches(count, batch_size, shape, num_classes, num_identities, motion, device):
    generator = torch.Generator().manual_seed(0)
    t, h, w = shape
    batches = []
    for _ in range(count):
        inputs, samples = [], []
        for _ in range(batch_size):
            inputs.append(torch.randint(0, 256, (3, t, h, w), dtype=torch.uint8, generator=generator).to(device))
            persons = torch.tensor([[0.05 * w, 0.2 * h, 0.45 * w, 0.95 * h], [0.55 * w, 0.2 * h, 0.95 * w, 0.95 * h]])
            faces = torch.stack([persons[:, 0] + 0.1 * w, persons[:, 1], persons[:, 2] - 0.1 * w,
                                 persons[:, 1] + 0.15 * h], dim=1)
            labels = torch.zeros(2, num_classes)
            labels[:, 1] = 1
            identities = torch.randint(0, num_identities, (2, ), generator=generator)
            sample = ActionDataSample(metainfo=dict(img_shape=(h, w)))
            sample.gt_instances = InstanceData(bboxes=persons, labels=labels, identities=identities)
            sample.proposals = InstanceData(bboxes=persons.clone())
            sample.gt_faces = InstanceData(bboxes=faces, identities=identities)
            if motion:
                # Diagonal motion, centred on the keyframe's box: a new region in every frame.
                steps = (torch.arange(t, dtype=torch.float32) - t // 2) * motion
                sample.face_tubes = InstanceData(bboxes=faces[:, None] + steps[None, :, None])
            samples.append(sample)
        batches.append(dict(inputs=inputs, data_samples=samples))
    return batches


def load_config(config: str, threads: Optional[int] = None) -> Config:
    """The benchmark's config, its model built from scratch (no pretrained weights), with ``threads`` torch
    threads (torch's choice when None) and MMEngine's log quiet below warnings: the optimizer constructor logs
    the options of every parameter, and the benchmarks print their tables only."""
    if threads:
        torch.set_num_threads(threads)
    MMLogger.get_current_instance().setLevel(logging.WARNING)
    cfg = Config.fromfile(config)
    cfg.model.init_cfg = None
    return cfg


def main():
    args = parse_args()
    cfg = load_config(args.config, args.threads)
    preprocessor = cfg.model.data_preprocessor
    stock_cfg = copy.deepcopy(cfg.model)
    stock_cfg.data_preprocessor = dict(type='mmaction.ActionDataPreprocessor', mean=preprocessor.mean,
                                       std=preprocessor.std, format_shape='NCTHW')
    hook_cfg = next(h for h in cfg.custom_hooks if 'AdversarialTrainingHook' in h['type'])
    with DefaultScope.overwrite_default_scope('mmaction'):
        stock = MODELS.build(stock_cfg).to(args.device)
        adversarial = MODELS.build(cfg.model).to(args.device)
    hook = build_in_scope(HOOKS, dict(hook_cfg, type='AdversarialTrainingHook', warmup_iters=0, ramp_iters=0,
                                      discriminator_steps=1, freeze_detector_iters=0))

    batch_size = args.batch_size or cfg.train_dataloader.batch_size
    bbox_head = cfg.model.roi_head.bbox_head
    batches = make_batches(args.warmup + args.iters, batch_size, clip_shape(cfg), bbox_head.num_classes,
                           preprocessor.discriminator.num_classes, args.motion, args.device)
    optim_wrappers = {}
    for name, model in (('stock detector', stock), ('adversarial', adversarial)):
        model.train()
        with DefaultScope.overwrite_default_scope('mmaction'):
            optim_wrappers[name] = build_optim_wrapper(model, copy.deepcopy(cfg.optim_wrapper))
    hook.attach(adversarial, optim_wrappers['adversarial'])

    def stock_step(item):
        stock.train_step(item[1], optim_wrappers['stock detector'])

    def adversarial_step(item):
        iteration, batch = item
        hook.before_step(adversarial, optim_wrappers['adversarial'], iteration)
        adversarial.train_step(batch, optim_wrappers['adversarial'])
        hook.after_step(adversarial, optim_wrappers['adversarial'], iteration)

    times = seconds_in_turn({'stock detector': stock_step, 'adversarial': adversarial_step},
                            list(enumerate(batches)), args.warmup, args.device)
    stock_median = statistics.median(times['stock detector'])
    # Each adversarial iteration against the stock one timed beside it: the load they shared cancels out.
    paired = [a / s for a, s in zip(times['adversarial'], times['stock detector'])]
    print(f'python {" ".join(sys.argv)}')
    print(f'config {osp.relpath(args.config, REPO)}, batch {batch_size} x (3, {", ".join(map(str, clip_shape(cfg)))}), '
          f'faces moving {args.motion:g} pixels a frame, device {args.device}, {args.iters} iterations each after '
          f'{args.warmup} of warm-up, {machine()}')
    print('| set-up | s per iteration (median) | quartiles | x stock (ratio of medians) |')
    print('|---|---:|---:|---:|')
    for name, values in times.items():
        first, median, third = quartiles(values)
        print(f'| {name} | {median:.3f} | {first:.3f}-{third:.3f} | {median / stock_median:.2f} |')
    first, median, third = quartiles(paired)
    print(f'adversarial / stock, iteration by iteration: median {median:.3f}, quartiles {first:.3f}-{third:.3f}, '
          f'range {min(paired):.3f}-{max(paired):.3f}')


if __name__ == '__main__':
    main()
