"""Generate the toy AVA benchmark (or the tests' tiny fixture) in the exact AVA layout.

Deterministic: the same arguments write the same annotation bytes. See ``mmanon.datasets.toy_ava``.
"""
import argparse

from mmengine.utils import ProgressBar

from mmanon.datasets.toy_ava import PRESETS, generate_toy_ava, spec_from_preset


def parse_args():
    parser = argparse.ArgumentParser(description='Generate a toy benchmark in the AVA layout.')
    parser.add_argument('out_dir', help='output folder, e.g. data/toy_ava (files there are overwritten)')
    parser.add_argument('--preset', choices=sorted(PRESETS), default='benchmark',
                        help='benchmark: the main job\'s data; fixture: the tests\' tiny data')
    parser.add_argument('--seed', type=int, help='random seed (default: the preset\'s, 0)')
    parser.add_argument('--num-train-videos', type=int, help='videos in the train split')
    parser.add_argument('--num-val-videos', type=int, help='videos in the val split')
    parser.add_argument('--num-identities', type=int, help='distinct faces, shared by both splits')
    parser.add_argument('--no-frames', action='store_true',
                        help='write only the annotation files (the frames take most of the time and space)')
    return parser.parse_args()


def main():
    args = parse_args()
    overrides = {
        field: value
        for field, value in dict(seed=args.seed, num_train_videos=args.num_train_videos,
                                 num_val_videos=args.num_val_videos,
                                 num_identities=args.num_identities).items() if value is not None
    }
    spec = spec_from_preset(args.preset, **overrides)
    bar = ProgressBar(spec.num_train_videos + spec.num_val_videos)
    paths = generate_toy_ava(args.out_dir, spec, render=not args.no_frames, progress=lambda *_: bar.update())
    print(f'\nwrote {args.out_dir}: frames in {paths["data_root"]}, annotations beside them')


if __name__ == '__main__':
    main()
