"""Test (evaluate) a trained detector, with the metrics of its config's ``test_evaluator``. Same flags as
MMAction2's ``tools/test.py``; importing mmanon registers its components."""
import argparse
import os
import os.path as osp

from mmengine.config import Config, DictAction
from mmengine.runner import Runner

import mmanon  # noqa: F401  (applies the compatibility fixes and registers mmanon's components)
from mmanon.engine.hooks import CheckpointCoverageHook
from mmanon.utils import add_checkpoint_arguments, apply_checkpoint_arguments, setup_cpu_distributed


def parse_args():
    parser = argparse.ArgumentParser(description='Test a spatio-temporal action detector (mmanon).')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the directory to save the evaluation logs and metrics; defaults '
                        'to ./work_dirs/<config name>')
    parser.add_argument('--dump', type=str, help='also dump the predictions to this pickle file (.pkl)')
    add_checkpoint_arguments(parser)
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, key=value pairs such as test_dataloader.batch_size=1 '
        'or env_cfg.dist_cfg.backend=gloo')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                        help='job launcher: none for one process; pytorch under torchrun '
                        '(tools/dist_test.sh); slurm under srun (tools/slurm_test.sh)')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0,
                        help='set by older launchers; torchrun sets LOCAL_RANK instead')
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def merge_args(cfg, args):
    """Apply the command-line flags to the config; they win over ``--cfg-options``."""
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    if args.dump is not None:
        if not args.dump.endswith(('.pkl', '.pickle')):
            raise ValueError(f'--dump must name a .pkl or .pickle file, got {args.dump}')
        evaluator = cfg.test_evaluator
        evaluator = list(evaluator) if isinstance(evaluator, (list, tuple)) else [evaluator]
        cfg.test_evaluator = evaluator + [dict(type='DumpResults', out_file_path=args.dump)]
    cfg.load_from = args.checkpoint
    return cfg


def main():
    args = parse_args()
    apply_checkpoint_arguments(args)
    cfg = merge_args(Config.fromfile(args.config), args)
    setup_cpu_distributed(cfg, args.launcher)
    runner = Runner.from_cfg(cfg)
    # mmengine loads load_from non-strictly: a checkpoint of another model would be tested with random parts.
    runner.register_hook(CheckpointCoverageHook(allow_missing_keys=args.allow_missing_keys))
    runner.test()


if __name__ == '__main__':
    main()
