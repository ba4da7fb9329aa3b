"""Generate the toy face-identity dataset (the layouts of CASIA-WebFace and LFW, synthetic faces with landmarks).

Deterministic: the same arguments write the same files. See ``mmanon.datasets.toy_faces``.
"""
import argparse
from dataclasses import fields

from mmanon.datasets.toy_faces import ToyFacesSpec, generate_toy_faces


def parse_args(argv=None):
    defaults = ToyFacesSpec()
    parser = argparse.ArgumentParser(
        description='Generate a toy face-identity dataset: images/<name>/<name>_<nnnn>.jpg, identities.txt, '
        'train_list.txt, val_list.txt, landmarks.txt and an LFW-style pairs.txt.')
    parser.add_argument('out_dir', help='output folder, e.g. data/toy_faces (files there are overwritten)')
    parser.add_argument('--num-identities', type=int, default=defaults.num_identities,
                        help='distinct faces; the first ones are the identities of the toy AVA benchmark')
    parser.add_argument('--images-per-identity', type=int, default=defaults.images_per_identity,
                        help='images of each identity')
    parser.add_argument('--val-images-per-identity', type=int, default=defaults.val_images_per_identity,
                        help='of those, the last ones, listed in val_list.txt instead of train_list.txt')
    parser.add_argument('--image-size', type=int, nargs=2, metavar=('H', 'W'), default=defaults.image_size,
                        help='image height and width')
    parser.add_argument('--num-folds', type=int, default=defaults.num_folds, help='folds of pairs.txt')
    parser.add_argument('--pairs-per-fold', type=int, default=defaults.pairs_per_fold,
                        help='same-identity pairs per fold of pairs.txt, and as many different-identity ones')
    parser.add_argument('--seed', type=int, default=defaults.seed, help='random seed')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    values = {f.name: getattr(args, f.name) for f in fields(ToyFacesSpec) if hasattr(args, f.name)}
    spec = ToyFacesSpec(**dict(values, image_size=tuple(args.image_size)))
    paths = generate_toy_faces(args.out_dir, spec)
    print(f'wrote {spec.num_identities} identities x {spec.images_per_identity} images to {paths["images"]}, '
          f'the lists, landmarks and pairs beside it')


if __name__ == '__main__':
    main()
