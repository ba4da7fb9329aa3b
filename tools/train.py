"""Train a spatio-temporal action detector, with or without anonymization, from an mmanon or MMAction2
config. Same flags as MMAction2's ``tools/train.py``; importing mmanon registers its components."""
import argparse
import os
import os.path as osp

from mmengine.config import Config, DictAction
from mmengine.runner import Runner

import mmanon  # noqa: F401  (applies the compatibility fixes and registers mmanon's components)
from mmanon.utils import add_checkpoint_arguments, apply_checkpoint_arguments, setup_cpu_distributed


def parse_args():
    parser = argparse.ArgumentParser(description='Train a spatio-temporal action detector (mmanon).')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the directory to save logs and checkpoints; defaults to '
                        './work_dirs/<config name>')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume training: from the given checkpoint, or, with no value, from the latest checkpoint '
        'in the work directory')
    # Fine-tuning (load_from) starts from checkpoints of other models by design, so coverage is not checked.
    add_checkpoint_arguments(parser, missing_keys=False)
    parser.add_argument('--amp', action='store_true', help='enable automatic mixed-precision training')
    parser.add_argument('--no-validate', action='store_true', help='do not evaluate checkpoints during training')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the learning rate with the total batch size (auto_scale_lr in the config)')
    parser.add_argument('--seed', type=int, default=None, help='random seed')
    parser.add_argument('--diff-rank-seed', action='store_true',
                        help='give each rank a different seed derived from --seed')
    parser.add_argument('--deterministic', action='store_true',
                        help='use deterministic algorithms (slower; needed for bit-exact reruns)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, key=value pairs such as train_cfg.max_iters=10 '
        'or env_cfg.dist_cfg.backend=gloo; lists as key="[a,b]", nested tuples as key="[(a,b),(c,d)]"')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                        help='job launcher: none for one process; pytorch under torchrun '
                        '(tools/dist_train.sh); slurm under srun (tools/slurm_train.sh)')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0,
                        help='set by older launchers; torchrun sets LOCAL_RANK instead')
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def merge_args(cfg, args):
    """Apply the command-line flags to the config; as in MMAction2, they win over ``--cfg-options``."""
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.no_validate:
        cfg.val_cfg = None
        cfg.val_dataloader = None
        cfg.val_evaluator = None
    cfg.launcher = args.launcher

    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])

    if args.amp:
        optim_wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if optim_wrapper not in ('OptimWrapper', 'AmpOptimWrapper'):
            raise ValueError(f'--amp needs optim_wrapper.type OptimWrapper or AmpOptimWrapper, '
                             f'got {optim_wrapper}')
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')

    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume

    if args.auto_scale_lr:
        cfg.auto_scale_lr.enable = True

    randomness = cfg.get('randomness', dict())
    if args.seed is not None:
        randomness['seed'] = args.seed
    if args.deterministic:
        randomness['deterministic'] = True
    if args.diff_rank_seed:
        randomness['diff_rank_seed'] = True
    cfg.randomness = randomness
    return cfg


def main():
    args = parse_args()
    apply_checkpoint_arguments(args)
    cfg = merge_args(Config.fromfile(args.config), args)
    setup_cpu_distributed(cfg, args.launcher)
    runner = Runner.from_cfg(cfg)
    runner.train()


if __name__ == '__main__':
    main()
