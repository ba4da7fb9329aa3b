"""Face verification on LFW's pairs protocol, with the second face of every pair anonymized.

For each pair of a ``pairs.txt`` in LFW's format, an attacker compares the *raw* first face with the
*anonymized* second face by the cosine similarity of its identity embeddings: an anonymizer protects
identities when the attacker can no longer tell same-identity pairs from different-identity pairs. Every
anonymizer is measured against the raw/raw baseline (both faces raw) with the same attacker.

``pairs.txt`` (LFW, view 2): a header line ``<folds> <n>``, then per fold ``n`` same-identity lines
``name n1 n2`` followed by ``n`` different-identity lines ``name1 n1 name2 n2``; the images are
``<root>/<name>/<name>_<nnnn>.jpg``. Faces are aligned to the crop size with their five landmarks
(``--landmarks``, a file of ``path x1 y1 ... x5 y5`` lines, paths relative to the root; see
``mmanon.datasets.FaceIdentityDataset``) or, without landmarks, centre-cropped.

Measures, as LFW's protocol defines them: *accuracy*, by 10-fold cross-validation over the given folds; for
each fold the threshold that maximises accuracy on the other folds (a pair is called same-identity when its
score exceeds it; of equally good thresholds the middle one) is applied to that fold, and the table reports
the mean and the standard deviation (numpy's, ddof=0) of the fold accuracies and the mean threshold (below -1
means every pair is accepted). *ROC-AUC*: over all pairs at once, threshold-free. Chance is 0.5 for both.

Examples::

    python tools/analysis/eval_face_verification.py data/lfw/pairs.txt data/lfw/images \\
        --landmarks data/lfw/landmarks.txt --attackers work_dirs/attackers/casia.pth dlib \\
        --anonymizers configs/_base_/anonymizers/gaussian_blur.py configs/_base_/anonymizers/pixelate.py \\
            work_dirs/slowonly-adversarial/iter_600.pth --out-dir work_dirs/lfw_verification
"""
import argparse
import csv
import os
import os.path as osp
import pickle
import sys
from typing import Dict, List, NamedTuple, Sequence, Tuple

import numpy as np
import torch
from mmengine.config import Config
from mmengine.dataset import Compose

import mmanon  # noqa: F401  (applies the compatibility fixes and registers mmanon's components)
from mmanon.apis import load_learned_anonymizer
from mmanon.datasets import FaceAlign, LoadFaceImage, PackFaceInputs, load_landmark_file
from mmanon.datasets.toy_faces import lfw_image_path
from mmanon.evaluation.attackers import AttackerUnavailable, build_attacker
from mmanon.utils import add_checkpoint_arguments, apply_checkpoint_arguments
from mmanon.evaluation.functional import l2_normalize, roc_auc
from mmanon.models.utils import anonymize_crops, to_uint8
from mmanon.registry import MODELS, build_in_scope

COLUMNS = ('attacker', 'anonymizer', 'pairs', 'accuracy', 'accuracy_std', 'threshold', 'roc_auc', 'num_pairs',
           'num_folds')
RAW = 'raw'


class Pair(NamedTuple):
    """One line of ``pairs.txt``: the images (relative paths) and whether they show the same identity."""
    first: str
    second: str
    same: bool
    fold: int


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='LFW-style face verification of anonymized faces: for each pair of pairs.txt an attacker '
        'compares the raw first face with the anonymized second face; reports 10-fold verification accuracy '
        '(threshold chosen on the other folds) and ROC-AUC for raw/raw and for every anonymizer.',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('pairs', help="pairs file in LFW's format (header '<folds> <n>', then per fold n "
                        "'name n1 n2' and n 'name1 n1 name2 n2' lines)")
    parser.add_argument('root', help='image folder holding <name>/<name>_<nnnn>.jpg')
    parser.add_argument('--attackers', nargs='+', required=True,
                        help='attackers, each an attacker checkpoint (dict(config=<FaceDiscriminatorHead '
                        'arguments>, state_dict=...), as for the "checkpoint" attacker of '
                        "mmanon.FacePrivacyMetric) or 'dlib' (needs pip install -e .[attack])")
    parser.add_argument('--anonymizers', nargs='*', default=[],
                        help='anonymizers applied to the second faces, each a config file defining '
                        '`anonymizer = dict(...)` (configs/_base_/anonymizers/*.py) or a checkpoint of '
                        'tools/train.py with a learned anonymizer; none gives the raw/raw rows only')
    parser.add_argument('--landmarks', help='landmark file (path x1 y1 ... x5 y5 per line, paths relative to '
                        'ROOT) to align the faces by; without it faces are centre-cropped')
    parser.add_argument('--crop-size', type=int, nargs=2, default=[112, 96], metavar=('H', 'W'),
                        help='size of the aligned crops that the anonymizers and attackers see')
    parser.add_argument('--center-crop-ratio', type=float, default=1.0,
                        help='without --landmarks, the fraction of the largest centred region of the crop\'s '
                        'aspect ratio that is cropped (e.g. 0.5 for LFW\'s 250x250 images)')
    parser.add_argument('--batch-size', type=int, default=64, help='crops per anonymizer and attacker call')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu',
                        help='where the anonymizers and attackers run')
    parser.add_argument('--out-dir', default='work_dirs/face_verification',
                        help='folder of face_verification.csv and face_verification.md')
    # Anonymizer and attacker weights are always loaded in full: a part left random is not the evaluated model.
    add_checkpoint_arguments(parser, missing_keys=False)
    return parser.parse_args(argv)


def load_pairs(path: str) -> Tuple[List[Pair], int]:
    """Read and validate a ``pairs.txt`` in LFW's format.

    Args:
        path (str): The pairs file.

    Returns:
        tuple[list[Pair], int]: The pairs, in file order, and the number of folds.
    """
    with open(path, encoding='utf-8') as f:
        rows = [(number, line.split()) for number, line in enumerate(f, start=1) if line.strip()]
    if not rows:
        raise ValueError(f'{path} is empty')
    number, header = rows[0]
    if len(header) != 2 or not all(field.isdigit() and int(field) > 0 for field in header):
        raise ValueError(f"{path}, row {number}: the header must be '<folds> <pairs per fold and kind>', two "
                         f'positive integers, got {" ".join(header)!r}')
    num_folds, per_fold = map(int, header)
    if num_folds < 2:
        raise ValueError(f'{path} has a single fold; the cross-validated accuracy needs at least 2 (use LFW\'s '
                         'pairs.txt, not pairsDevTrain.txt or pairsDevTest.txt)')
    if len(rows) - 1 != 2 * num_folds * per_fold:
        raise ValueError(f'{path}: the header announces {num_folds} folds of {per_fold} same-identity and '
                         f'{per_fold} different-identity pairs, {2 * num_folds * per_fold} lines, but '
                         f'{len(rows) - 1} follow')
    pairs = []
    for index, (number, fields) in enumerate(rows[1:]):
        fold, same = index // (2 * per_fold), index % (2 * per_fold) < per_fold
        expected = ('name n1 n2' if same else 'name1 n1 name2 n2')
        numbers = fields[1:] if same else fields[1::2]
        if len(fields) != (3 if same else 4) or not all(field.isdigit() and int(field) > 0 for field in numbers):
            raise ValueError(f'{path}, row {number}: fold {fold + 1} expects a {"same" if same else "different"}'
                             f'-identity pair here, {expected!r} with image numbers from 1, got '
                             f'{" ".join(fields)!r}')
        if same:
            first, second = lfw_image_path(fields[0], int(fields[1])), lfw_image_path(fields[0], int(fields[2]))
        else:
            first, second = lfw_image_path(fields[0], int(fields[1])), lfw_image_path(fields[2], int(fields[3]))
        pairs.append(Pair(first, second, same, fold))
    return pairs, num_folds


def load_crops(paths: Sequence[str], root: str, landmark_file: str, crop_size: Sequence[int],
               center_crop_ratio: float) -> torch.Tensor:
    """Aligned RGB crops of the images, as the face-identity datasets make them.

    Args:
        paths (Sequence[str]): Image paths relative to ``root``.
        root (str): The image folder.
        landmark_file (str): The landmark file, or None to centre-crop.
        crop_size (Sequence[int]): (height, width) of the crops.
        center_crop_ratio (float): See :class:`mmanon.datasets.transforms.FaceAlign`.

    Returns:
        Tensor: (N, 3, height, width) uint8 crops.
    """
    landmarks = load_landmark_file(landmark_file) if landmark_file else None
    pipeline = Compose([LoadFaceImage(), FaceAlign(tuple(crop_size), center_crop_ratio=center_crop_ratio),
                        PackFaceInputs()])
    crops = []
    for path in paths:
        results = dict(img_path=osp.join(root, path))
        if landmarks is not None:
            if osp.normpath(path) not in landmarks:
                raise ValueError(f'{landmark_file} has no landmarks for {path}')
            results['landmarks'] = landmarks[osp.normpath(path)]
        crops.append(pipeline(results)['inputs'])
    return torch.stack(crops)


def build_anonymizer(spec: str, device: str) -> torch.nn.Module:
    """The anonymizer of a base config (``anonymizer = dict(...)``) or of a trained checkpoint."""
    if spec.endswith('.py'):
        cfg = Config.fromfile(spec)
        if 'anonymizer' not in cfg:
            raise ValueError(f'{spec} defines no `anonymizer = dict(...)`, as configs/_base_/anonymizers/*.py do')
        return build_in_scope(MODELS, cfg.anonymizer).to(device).eval()
    return load_learned_anonymizer(spec, device)[0]


@torch.no_grad()
def anonymize(anonymizer: torch.nn.Module, crops: torch.Tensor, batch_size: int, device: str) -> torch.Tensor:
    """Anonymized uint8 crops, rounded as the privacy metrics see them."""
    parts = []
    for start in range(0, len(crops), batch_size):
        batch = crops[start:start + batch_size].to(device).float()
        parts.append(to_uint8(anonymize_crops(anonymizer, [batch])[0]).cpu())
    return torch.cat(parts)


def best_threshold(scores: np.ndarray, same: np.ndarray) -> float:
    """The threshold with the highest accuracy of "same identity when the score exceeds it" on these pairs.

    Candidates lie between consecutive distinct scores and 1 beyond either end; of equally accurate ones the
    middle one is taken, which keeps a tie from always favouring accepting or rejecting.
    """
    values = np.unique(scores)
    candidates = np.concatenate([[values[0] - 1], (values[:-1] + values[1:]) / 2, [values[-1] + 1]])
    positives, negatives = np.sort(scores[same]), np.sort(scores[~same])
    correct = (len(positives) - np.searchsorted(positives, candidates, side='right') +
               np.searchsorted(negatives, candidates, side='right'))
    best = np.flatnonzero(correct == correct.max())
    return float(candidates[best[len(best) // 2]])


def cross_validated_accuracy(scores: np.ndarray, same: np.ndarray, folds: np.ndarray) -> Tuple[np.ndarray,
                                                                                                  np.ndarray]:
    """LFW's protocol: per fold, the accuracy at the best threshold of the other folds.

    Args:
        scores (np.ndarray): (P,) similarity of each pair.
        same (np.ndarray): (P,) whether each pair shows one identity.
        folds (np.ndarray): (P,) the fold of each pair.

    Returns:
        tuple[np.ndarray, np.ndarray]: Per fold, the accuracy and the threshold.
    """
    accuracies, thresholds = [], []
    for fold in np.unique(folds):
        held_out = folds == fold
        threshold = best_threshold(scores[~held_out], same[~held_out])
        accuracies.append(np.mean((scores[held_out] > threshold) == same[held_out]))
        thresholds.append(threshold)
    return np.array(accuracies), np.array(thresholds)


def verification_row(attacker: str, anonymizer: str, scores: np.ndarray, pairs: Sequence[Pair]) -> dict:
    """The table row of one attacker and one anonymizer (or the raw/raw baseline)."""
    same = np.array([pair.same for pair in pairs])
    folds = np.array([pair.fold for pair in pairs])
    accuracies, thresholds = cross_validated_accuracy(scores, same, folds)
    return dict(attacker=attacker, anonymizer=anonymizer, pairs='raw/raw' if anonymizer == RAW else
                'raw/anonymized', accuracy=float(accuracies.mean()), accuracy_std=float(accuracies.std()),
                threshold=float(thresholds.mean()), roc_auc=roc_auc(scores[same], scores[~same]),
                num_pairs=len(pairs), num_folds=len(accuracies))


def evaluate(args) -> List[dict]:
    """Build everything from the arguments, embed, score and tabulate."""
    pairs, _ = load_pairs(args.pairs)
    images = sorted({path for pair in pairs for path in (pair.first, pair.second)})
    missing = [path for path in images if not osp.isfile(osp.join(args.root, path))]
    if missing:
        raise FileNotFoundError(f'{len(missing)} images of {args.pairs} are not under {args.root}, e.g. '
                                f'{osp.join(args.root, missing[0])}')
    index = {path: i for i, path in enumerate(images)}
    first = np.array([index[pair.first] for pair in pairs])
    second = np.array([index[pair.second] for pair in pairs])
    # The second faces are anonymized once each, however many pairs share them.
    seconds = np.unique(second)
    position = np.searchsorted(seconds, second)

    attackers = [build_attacker(dict(type='dlib') if spec == 'dlib' else dict(type='checkpoint', checkpoint=spec))
                 for spec in args.attackers]
    anonymizers = {RAW: None}
    for spec in args.anonymizers:
        name = osp.splitext(osp.basename(spec))[0]
        if name in anonymizers:
            raise ValueError(f'two anonymizers are named {name!r}; give them files of different names')
        anonymizers[name] = spec

    crops = load_crops(images, args.root, args.landmarks, args.crop_size, args.center_crop_ratio)
    raw = [l2_normalize(attacker.embed(crops)) for attacker in attackers]
    rows = []
    for name, spec in anonymizers.items():
        if spec is None:
            second_embeddings = [embeddings[seconds] for embeddings in raw]
        else:
            anonymized = anonymize(build_anonymizer(spec, args.device), crops[seconds], args.batch_size,
                                   args.device)
            second_embeddings = [l2_normalize(attacker.embed(anonymized)) for attacker in attackers]
        for attacker, raw_embeddings, anonymized_embeddings in zip(attackers, raw, second_embeddings):
            scores = np.sum(raw_embeddings[first] * anonymized_embeddings[position], axis=1)
            rows.append(verification_row(attacker.name, name, scores, pairs))
    return rows


def markdown_table(rows: Sequence[dict]) -> str:
    """The rows as a Markdown table, grouped by attacker."""
    lines = ['| attacker | anonymizer | pairs | accuracy | ROC-AUC | threshold |', '|---|---|---|---|---|---|']
    for row in sorted(rows, key=lambda row: row['attacker']):
        lines.append(f'| {row["attacker"]} | {row["anonymizer"]} | {row["pairs"]} | {row["accuracy"]:.4f} ± '
                     f'{row["accuracy_std"]:.4f} | {row["roc_auc"]:.4f} | {row["threshold"]:.4f} |')
    return '\n'.join(lines) + '\n'


def write_results(rows: Sequence[dict], out_dir: str) -> Dict[str, str]:
    """Write the rows as ``face_verification.csv`` and ``.md`` into ``out_dir``; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = dict(csv=osp.join(out_dir, 'face_verification.csv'), md=osp.join(out_dir, 'face_verification.md'))
    with open(paths['csv'], 'w', newline='', encoding='utf-8') as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    with open(paths['md'], 'w', encoding='utf-8') as f:
        f.write(markdown_table(rows))
    return paths


def main(argv=None):
    args = parse_args(argv)
    apply_checkpoint_arguments(args)
    try:
        rows = evaluate(args)
    except (OSError, ValueError, KeyError, AttackerUnavailable, pickle.UnpicklingError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    paths = write_results(rows, args.out_dir)
    print(markdown_table(rows), end='')
    print(f'wrote {paths["csv"]} and {paths["md"]}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
