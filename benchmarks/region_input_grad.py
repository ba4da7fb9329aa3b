"""The backward pass of one adversarial training iteration, with the clips' gradient computed only inside the
anonymized regions (``AdversarialTrainingHook(region_input_grad=True)``, the default) and over whole clips (False),
on the same batches.

Two copies of the config's model with the same weights, each with the hook attached, its adversarial loss at full
weight, run the forward pass of the detector's loss (M's losses added) on identical synthetic batches (those of
``benchmarks/train_overhead.py``), and the backward pass is timed, in CPU time of this process and in wall-clock
time; the two set-ups take turns, which of them goes first alternating. The largest difference between the two
set-ups' parameter gradients of the first batch, relative to each gradient's largest element, is printed beside.

    python benchmarks/region_input_grad.py
    python benchmarks/region_input_grad.py --motion 3 --threads 1
"""
import argparse
import copy
import statistics
import sys
import time

import torch
from mmengine.optim import OptimWrapper
from mmengine.registry import DefaultScope

import mmanon  # noqa: F401  (first: its compatibility fixes make mmaction.models importable)
from mmaction.registry import MODELS  # noqa: E402
from mmanon.engine.hooks import AdversarialTrainingHook  # noqa: E402
from timing import machine, quartiles  # noqa: E402  (benchmarks/ is on sys.path as the script's folder)
from train_overhead import DEFAULT_CONFIG, clip_shape, load_config, make_batches  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(description='Time the backward pass with the clips\' gradient inside the '
                                     'regions only and over whole clips.')
    parser.add_argument('config', nargs='?', default=DEFAULT_CONFIG,
                        help='an adversarial config (default: the toy benchmark\'s)')
    parser.add_argument('--motion', type=float, default=0.,
                        help='pixels a frame that each face moves, as face tubes (default: 0, keyframe boxes)')
    parser.add_argument('--iters', type=int, default=6, help='timed iterations of each set-up (default: 6)')
    parser.add_argument('--warmup', type=int, default=1, help='untimed iterations of each set-up first (default: 1)')
    parser.add_argument('--threads', type=int, help='torch CPU threads (default: torch\'s choice)')
    return parser.parse_args()


def main():
    args = parse_args()
    cfg = load_config(args.config, args.threads)
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmaction'):
        model = MODELS.build(cfg.model)
    models = {}
    for name, region_input_grad in (('whole clips', False), ('regions only', True)):
        models[name] = copy.deepcopy(model).train()
        optim_wrapper = OptimWrapper(torch.optim.SGD(models[name].parameters(), lr=0.))
        AdversarialTrainingHook(region_input_grad=region_input_grad).attach(models[name], optim_wrapper)
        models[name].data_preprocessor.adversarial_weight = 1.0
    preprocessor = cfg.model.data_preprocessor
    batches = make_batches(args.warmup + args.iters, cfg.train_dataloader.batch_size, clip_shape(cfg),
                           cfg.model.roi_head.bbox_head.num_classes, preprocessor.discriminator.num_classes,
                           args.motion, 'cpu')
    cpu, wall = {name: [] for name in models}, {name: [] for name in models}
    first_grads = {}
    for i, batch in enumerate(batches):
        names = list(models) if i % 2 == 0 else list(models)[::-1]
        for name in names:
            detector = models[name]
            detector.zero_grad()
            torch.manual_seed(i)  # the same RoI samples in both set-ups
            total, _ = detector.parse_losses(detector(**detector.data_preprocessor(batch, True), mode='loss'))
            start_cpu, start_wall = time.process_time(), time.perf_counter()
            total.backward()
            if i >= args.warmup:
                cpu[name].append(time.process_time() - start_cpu)
                wall[name].append(time.perf_counter() - start_wall)
            if i == 0:
                first_grads[name] = {n: p.grad.clone() for n, p in detector.named_parameters() if p.grad is not None}
    reference, grads = first_grads['whole clips'], first_grads['regions only']
    difference = max((grads[n] - g).abs().max().item() / max(g.abs().max().item(), 1e-30)
                     for n, g in reference.items())
    print(f'python {" ".join(sys.argv)}')
    print(f'faces moving {args.motion:g} pixels a frame, {args.iters} iterations each after {args.warmup}, '
          f'{machine()}')
    print('| clips\' gradient | backward CPU s (median, quartiles) | backward wall s (median, quartiles) |')
    print('|---|---:|---:|')
    for name in models:
        (c1, c2, c3), (w1, w2, w3) = quartiles(cpu[name]), quartiles(wall[name])
        print(f'| {name} | {c2:.3f} ({c1:.3f}-{c3:.3f}) | {w2:.3f} ({w1:.3f}-{w3:.3f}) |')
    paired = [a - b for a, b in zip(cpu['whole clips'], cpu['regions only'])]
    first, median, third = quartiles(paired)
    print(f'CPU seconds saved per backward pass, iteration by iteration: median {median:.3f}, quartiles '
          f'{first:.3f}-{third:.3f}')
    print(f'largest difference of a parameter gradient, relative to its largest element: {difference:.2e}')


if __name__ == '__main__':
    main()
