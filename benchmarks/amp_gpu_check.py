"""Acceptance check of adversarial training under mixed precision: the SlowOnly-R50 AVA adversarial overlay
trains with ``tools/train.py --amp`` on generated AVA-format data; ``loss_adv`` must be logged non-zero and the
anonymizer's parameters must move. The stock config trains on the same data beside it, and the seconds per
iteration of both are printed with their ratio.

Both runs start from the same weights (written here, passed as ``load_from``), with the game's warm-up and
ramp off so that the adversarial loss is on from the first iteration. On a GPU:

    python benchmarks/amp_gpu_check.py --amp

The same check runs on CPU without ``--amp`` at a tiny size (4-frame 64-pixel clips, batch 2, 3 iterations),
to show the script itself works:

    python benchmarks/amp_gpu_check.py --tiny
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys

import mmaction
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

import mmanon  # noqa: F401  (first: its compatibility fixes make mmaction.models importable)
from mmaction.registry import MODELS  # noqa: E402
from mmanon.compat import load_local_checkpoint  # noqa: E402
from mmanon.datasets.toy_ava import PRESETS, annotation_paths, generate_toy_ava  # noqa: E402

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
ADVERSARIAL = osp.join(
    REPO, 'configs/detection/slowonly/slowonly-adversarial_kinetics400-pretrained-r50_8xb16-4x16x1-20e_ava21-rgb.py')
# The config the overlay inherits, from the installed mmaction2.
STOCK = osp.join(osp.dirname(mmaction.__file__), '.mim', 'configs', 'detection', 'slowonly',
                 'slowonly_kinetics400-pretrained-r50_8xb16-4x16x1-20e_ava21-rgb.py')
ANONYMIZER = 'data_preprocessor.anonymizer.'


def parse_args():
    parser = argparse.ArgumentParser(description='Train the SlowOnly-R50 AVA adversarial overlay and the stock '
                                     'config on generated data; check loss_adv and the anonymizer\'s update.')
    parser.add_argument('--amp', action='store_true', help='train with tools/train.py --amp (needs a GPU)')
    parser.add_argument('--iters', type=int, default=20, help='training iterations of each run (default: 20)')
    parser.add_argument('--skip', type=int, default=5,
                        help='first iterations left out of the seconds per iteration (default: 5)')
    parser.add_argument('--batch-size', type=int, help='clips per GPU (default: the stock config\'s 16)')
    parser.add_argument('--tiny', action='store_true',
                        help='4-frame 64-pixel clips, batch 2, 3 iterations: a CPU check of this script')
    parser.add_argument('--work-dir', default='work_dirs/amp_gpu_check',
                        help='where the data, the configs and the runs go (default: work_dirs/amp_gpu_check)')
    return parser.parse_args()


def compose(base: str, paths: dict, args) -> Config:
    """``base`` on the generated data: the toy's classes and identities, no pretrained download, no
    validation, a log line and the timing of every iteration."""
    cfg = Config.fromfile(base)
    cfg.model.init_cfg = None
    cfg.model.roi_head.bbox_head.update(num_classes=6, topk=(1, 3))
    if cfg.model.data_preprocessor.get('discriminator') is not None:
        cfg.model.data_preprocessor.discriminator.num_classes = PRESETS['benchmark'].num_identities
        hook = next(h for h in cfg.custom_hooks if 'AdversarialTrainingHook' in h['type'])
        hook.update(warmup_iters=0, ramp_iters=0)
    dataset = cfg.train_dataloader.dataset
    dataset.update(type='mmanon.AVAFaceDataset', ann_file=paths['ann_file_train'],
                   exclude_file=paths['exclude_file_train'], proposal_file=paths['proposal_file_train'],
                   face_file=paths['face_file_train'], label_file=paths['label_file'],
                   data_prefix=dict(img=paths['data_root']), num_classes=6)
    cfg.train_dataloader.update(num_workers=2, persistent_workers=False)
    if args.batch_size:
        cfg.train_dataloader.batch_size = args.batch_size
    if args.tiny:
        cfg.train_dataloader.batch_size = 2
        for transform in dataset.pipeline:
            if transform['type'] == 'SampleAVAFrames':
                transform.update(clip_len=4, frame_interval=2)
            elif transform['type'] == 'RandomRescale':
                transform.update(scale_range=(64, 80))
            elif transform['type'] == 'RandomCrop':
                transform.update(size=64)
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=args.iters, val_interval=args.iters + 1)
    # The stock warm-up counts epochs; a linear one over the run keeps the stock learning rate from diverging.
    cfg.param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=args.iters)]
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.test_cfg = cfg.test_dataloader = cfg.test_evaluator = None
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=args.iters, by_epoch=False)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.log_processor = dict(by_epoch=False, window_size=1)
    cfg.randomness = dict(seed=0)
    return cfg


def initial_checkpoint(cfg: Config, path: str) -> None:
    """Write the adversarial model's initial weights, which both runs start from."""
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmaction'):
        model = MODELS.build(cfg.model)
    model.init_weights()
    torch.save(dict(state_dict=model.state_dict()), path)


def train(config: str, work_dir: str, args) -> list:
    command = [sys.executable, osp.join(REPO, 'tools/train.py'), config, '--work-dir', work_dir]
    command += ['--amp'] if args.amp else []
    print(' '.join(command), flush=True)
    subprocess.run(command, check=True, env=dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [REPO, os.environ.get('PYTHONPATH')]))))
    runs = sorted(d for d in os.listdir(work_dir) if osp.isfile(osp.join(work_dir, d, 'vis_data', 'scalars.json')))
    with open(osp.join(work_dir, runs[-1], 'vis_data', 'scalars.json')) as f:
        return [json.loads(line) for line in f if '"loss"' in line]


def main():
    args = parse_args()
    if args.tiny:
        args.iters, args.skip = 3, 1
    if args.amp and not torch.cuda.is_available():
        raise SystemExit('--amp needs a CUDA GPU; on CPU run --tiny without --amp')
    work_dir = osp.abspath(args.work_dir)
    data_dir = osp.join(work_dir, 'data', 'toy_ava')
    if not osp.isfile(osp.join(data_dir, 'toy_ava.json')):
        generate_toy_ava(data_dir, PRESETS['benchmark'])
    paths = annotation_paths(data_dir)
    configs = dict(adversarial=compose(ADVERSARIAL, paths, args), stock=compose(STOCK, paths, args))
    start = osp.join(work_dir, 'initial.pth')
    initial_checkpoint(configs['adversarial'], start)
    logs = {}
    for name, cfg in configs.items():
        cfg.load_from = start
        path = osp.join(work_dir, f'{name}.py')
        cfg.dump(path)
        logs[name] = train(path, osp.join(work_dir, name), args)

    adversarial = logs['adversarial']
    assert len(adversarial) == args.iters, f'{len(adversarial)} logged iterations, expected {args.iters}'
    loss_adv = [entry['loss_adv'] for entry in adversarial]
    assert all(value != 0 for value in loss_adv), f'loss_adv was zero in some iteration: {loss_adv}'
    assert all(entry['loss_l1'] > 0 for entry in adversarial), 'loss_l1 was not logged positive'
    before = load_local_checkpoint(start)['state_dict']
    after = load_local_checkpoint(osp.join(work_dir, 'adversarial', f'iter_{args.iters}.pth'))['state_dict']
    moved = max((after[k].float() - before[k].float()).abs().max().item() for k in before if k.startswith(ANONYMIZER))
    assert moved > 0, 'the anonymizer\'s parameters did not move'
    seconds = {name: sum(e['time'] for e in log[args.skip:]) / len(log[args.skip:]) for name, log in logs.items()}
    print(f'loss_adv in every one of {args.iters} iterations, from {loss_adv[0]:.4f} to {loss_adv[-1]:.4f}; '
          f'largest change of an anonymizer parameter {moved:.3g}')
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU'
    print(f'{device}, {"AMP" if args.amp else "fp32"}, batch {configs["stock"].train_dataloader.batch_size}, '
          f'mean of iterations {args.skip + 1} to {args.iters}')
    print('| set-up | s per iteration | x stock |')
    print('|---|---:|---:|')
    for name in ('stock', 'adversarial'):
        print(f'| {name} | {seconds[name]:.3f} | {seconds[name] / seconds["stock"]:.2f} |')


if __name__ == '__main__':
    main()
