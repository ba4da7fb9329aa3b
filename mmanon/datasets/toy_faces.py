"""A deterministic generator of small face-identity datasets in the layouts of CASIA-WebFace and LFW.

Each identity is a synthetic face of the toy AVA benchmark (:func:`mmanon.datasets.toy_ava.identity_appearance`:
shape, skin colour and texture, so identity ``i`` here is identity ``i`` of the toy videos), with five
markers exactly at its landmarks: white eyes, a dark nose tip and a red mouth whose ends are the mouth
corners. Every image shows the face under a random rotation, scale and shift, over a random background, with
random brightness and noise; its landmarks are written beside it.

Layout under ``out_dir``::

    images/<name>/<name>_<nnnn>.jpg   one folder per identity, LFW's file names (n from 1)
    identities.txt                    the identity names, in label order
    train_list.txt, val_list.txt      ``path identity`` lines: the first images of each identity, the rest
    landmarks.txt                     ``path x1 y1 ... x5 y5`` lines, every image
    pairs.txt                         verification pairs in LFW's format

In ``pairs.txt`` the different-identity pairs of each fold start from the same first faces as its
same-identity pairs, so an attacker that ignores the second face (e.g. because it is masked) scores exactly
chance.
"""
import os
import os.path as osp
from dataclasses import dataclass
from typing import Dict, List, Tuple

import cv2
import numpy as np

from .toy_ava import MAX_IDENTITIES, _draw_face
from .transforms import SPHEREFACE_SIZE, SPHEREFACE_TEMPLATE

# Sizes of the markers, as fractions of the distance between the eyes.
EYE_RADIUS = 0.12
NOSE_RADIUS = 0.08
MOUTH_THICKNESS = 0.1
# The face's box (x1, y1, x2, y2) in template pixels: toy_ava draws its eyes at 30% and 70% of the width and
# 38% of the height, which puts them on SphereFace's eye points; the height is 1.1 times the width.
FACE_BOX = (3.9, 14.8, 92.0, 111.7)
WHITE, NOSE_COLOUR, MOUTH_COLOUR = (255, 255, 255), (40, 50, 70), (40, 40, 220)  # BGR


@dataclass(frozen=True)
class ToyFacesSpec:
    """What to generate.

    Args:
        num_identities (int): Distinct faces, in [2, ``MAX_IDENTITIES``]. Defaults to 24.
        images_per_identity (int): Images of each identity. Defaults to 12.
        val_images_per_identity (int): Of those, the last ones listed in ``val_list.txt``. Defaults to 2.
        image_size (tuple[int, int]): (height, width) of the images. Defaults to (128, 128).
        face_scale (float): Width of the face relative to the image width before the random scaling.
            Defaults to 0.6.
        max_rotation (float): Largest rotation of a face, in degrees. Defaults to 20.
        num_folds (int): Folds of ``pairs.txt``. Defaults to 10.
        pairs_per_fold (int): Same-identity pairs per fold, and as many different-identity pairs.
            Defaults to 20.
        seed (int): Seed of everything random. Defaults to 0.
        jpeg_quality (int): Quality of the JPEGs. Defaults to 95.
    """
    num_identities: int = 24
    images_per_identity: int = 12
    val_images_per_identity: int = 2
    image_size: Tuple[int, int] = (128, 128)
    face_scale: float = 0.6
    max_rotation: float = 20.0
    num_folds: int = 10
    pairs_per_fold: int = 20
    seed: int = 0
    jpeg_quality: int = 95

    def __post_init__(self):
        if not 2 <= self.num_identities <= MAX_IDENTITIES:
            raise ValueError(f'num_identities must be in [2, {MAX_IDENTITIES}], got {self.num_identities}')
        if self.images_per_identity < 2 or not 0 <= self.val_images_per_identity < self.images_per_identity:
            raise ValueError('images_per_identity must be at least 2 and val_images_per_identity in '
                             f'[0, images_per_identity), got {self.images_per_identity} and '
                             f'{self.val_images_per_identity}')
        if min(self.image_size) < 32 or not 0.2 <= self.face_scale <= 0.8:
            raise ValueError(f'image_size must be at least 32 pixels each way and face_scale in [0.2, 0.8], got '
                             f'{self.image_size} and {self.face_scale}')
        if self.num_folds < 1 or self.pairs_per_fold < 1:
            raise ValueError('num_folds and pairs_per_fold must be positive')


def identity_name(identity: int) -> str:
    """The folder name of an identity; names sort in label order."""
    return f'face_{identity:02d}'


def lfw_image_path(name: str, number: int) -> str:
    """LFW's relative path of the ``number``-th image (from 1) of identity ``name``."""
    return f'{name}/{name}_{number:04d}.jpg'


def render_face(identity: int, rng: np.random.Generator, spec: ToyFacesSpec) -> Tuple[np.ndarray, np.ndarray]:
    """One image of an identity under a random pose.

    Args:
        identity (int): The identity.
        rng (np.random.Generator): Source of the pose, background, brightness and noise.
        spec (ToyFacesSpec): Image size, face scale and rotation range.

    Returns:
        tuple[np.ndarray, np.ndarray]: The (H, W, 3) uint8 BGR image and its (5, 2) float64 landmarks.
    """
    height, width = spec.image_size
    # The face is drawn upright and centred, then moved by a random similarity transform as a whole.
    box = _upright(np.reshape(FACE_BOX, (2, 2)), spec).ravel()
    points = _upright(SPHEREFACE_TEMPLATE, spec)
    canvas = np.zeros((height, width, 3), np.uint8)
    _draw_face(canvas, box, identity)
    eye_distance = np.linalg.norm(points[1] - points[0])
    shift = 4  # cv2's fixed-point bits, for markers centred between pixels
    for point, radius, colour in ((points[0], EYE_RADIUS, WHITE), (points[1], EYE_RADIUS, WHITE),
                                  (points[2], NOSE_RADIUS, NOSE_COLOUR)):
        cv2.circle(canvas, _fixed(point, shift), int(radius * eye_distance * 2**shift), colour, -1, cv2.LINE_AA,
                   shift)
    cv2.line(canvas, _fixed(points[3], shift), _fixed(points[4], shift), MOUTH_COLOUR,
             max(1, int(round(MOUTH_THICKNESS * eye_distance))), cv2.LINE_AA, shift)

    angle = rng.uniform(-spec.max_rotation, spec.max_rotation)
    pose = cv2.getRotationMatrix2D(((width - 1) / 2, (height - 1) / 2), angle, rng.uniform(0.85, 1.1))
    pose[:, 2] += rng.uniform(-0.06, 0.06, size=2) * (width, height)
    face = cv2.warpAffine(canvas, pose, (width, height), flags=cv2.INTER_LINEAR)
    mask = cv2.warpAffine(canvas.any(axis=2).astype(np.float32), pose, (width, height), flags=cv2.INTER_LINEAR)
    landmarks = points @ pose[:, :2].T + pose[:, 2]

    # The warped face is already weighted by its coverage (the canvas is black around it).
    image = _background(rng, height, width) * (1 - mask[..., None]) + face
    image = image * rng.uniform(0.85, 1.15) + rng.normal(0, 3, size=image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), landmarks


def _upright(points, spec: ToyFacesSpec) -> np.ndarray:
    """(x, y) points of a 112 x 96 template crop, placed upright in the image centre with the template's
    width ``face_scale`` of the image's."""
    height, width = spec.image_size
    template_centre = (np.array(SPHEREFACE_SIZE[::-1]) - 1) / 2
    scale = spec.face_scale * width / SPHEREFACE_SIZE[1]
    return (np.asarray(points, dtype=np.float64) - template_centre) * scale + (np.array([width, height]) - 1) / 2


def _fixed(point: np.ndarray, shift: int) -> Tuple[int, int]:
    return int(round(point[0] * 2**shift)), int(round(point[1] * 2**shift))


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    top, bottom = rng.integers(30, 226, size=(2, 3))
    ramp = np.linspace(0, 1, height)[:, None, None]
    return (top * (1 - ramp) + bottom * ramp).repeat(width, axis=1)


def _pairs(spec: ToyFacesSpec, rng: np.random.Generator) -> List[str]:
    """The lines of ``pairs.txt``: per fold, the same-identity pairs, then as many different-identity pairs,
    the k-th of which starts from the first face of the k-th same-identity pair."""
    lines = [f'{spec.num_folds}\t{spec.pairs_per_fold}']
    for _ in range(spec.num_folds):
        firsts, same = [], []
        for _ in range(spec.pairs_per_fold):
            identity = int(rng.integers(spec.num_identities))
            first, second = rng.choice(spec.images_per_identity, size=2, replace=False) + 1
            firsts.append((identity, int(first)))
            same.append(f'{identity_name(identity)}\t{first}\t{second}')
        different = []
        for identity, first in firsts:
            other = (identity + int(rng.integers(1, spec.num_identities))) % spec.num_identities
            number = int(rng.integers(spec.images_per_identity)) + 1
            different.append(f'{identity_name(identity)}\t{first}\t{identity_name(other)}\t{number}')
        lines += same + different
    return lines


def generate_toy_faces(out_dir: str, spec: ToyFacesSpec = ToyFacesSpec()) -> Dict[str, str]:
    """Write a toy face-identity dataset into ``out_dir``.

    Args:
        out_dir (str): Target folder; existing files are overwritten.
        spec (ToyFacesSpec): What to generate. Defaults to ``ToyFacesSpec()``.

    Returns:
        dict[str, str]: Paths of ``images`` (the folder), ``identities``, ``train_list``, ``val_list``,
        ``landmarks`` and ``pairs``.
    """
    paths = dict(images=osp.join(out_dir, 'images'), identities=osp.join(out_dir, 'identities.txt'),
                 train_list=osp.join(out_dir, 'train_list.txt'), val_list=osp.join(out_dir, 'val_list.txt'),
                 landmarks=osp.join(out_dir, 'landmarks.txt'), pairs=osp.join(out_dir, 'pairs.txt'))
    rows = dict(train_list=[], val_list=[], landmarks=[])
    num_train = spec.images_per_identity - spec.val_images_per_identity
    for identity in range(spec.num_identities):
        name = identity_name(identity)
        os.makedirs(osp.join(paths['images'], name), exist_ok=True)
        for number in range(1, spec.images_per_identity + 1):
            image, landmarks = render_face(identity, np.random.default_rng([spec.seed, identity, number]), spec)
            path = lfw_image_path(name, number)
            cv2.imwrite(osp.join(paths['images'], path), image, [cv2.IMWRITE_JPEG_QUALITY, spec.jpeg_quality])
            rows['train_list' if number <= num_train else 'val_list'].append(f'{path} {name}')
            rows['landmarks'].append(f'{path} ' + ' '.join(f'{v:.2f}' for v in landmarks.ravel()))
    rows['identities'] = [identity_name(i) for i in range(spec.num_identities)]
    rows['pairs'] = _pairs(spec, np.random.default_rng([spec.seed, spec.num_identities]))
    for key, lines in rows.items():
        with open(paths[key], 'w', encoding='utf-8', newline='\n') as f:
            f.write(''.join(line + '\n' for line in lines))
    return paths
