"""Train an inversion attacker: a network that maps anonymized face crops back to the raw ones.

An attacker who knows the anonymizer can run it on faces of their own and train a network to undo it; blur and
pixelation leave the coarse face in place and are partly reversible this way, a solid mask is not. The network
is a small U-Net (:class:`mmanon.models.UNetInverter`) trained from scratch with Adam on pairs of anonymized and
raw training faces (the same faces as ``tools/analysis/train_attacker.py`` collects, from the detector config's
train split or ``--face-dataset``), under two losses:

- the pixel loss: the mean absolute difference between the restored and the raw face, in [0, 1] units;
- the identity loss, ``--identity-weight`` times one minus the cosine similarity of the restored and the raw
  face's embeddings by a frozen face embedder (``--embedder``): an attacker checkpoint, best one trained on the
  raw faces (``train_attacker.py --faces raw``), or ``discriminator``, the detector's co-trained face
  discriminator. It pushes the restored face towards what identifies the person rather than towards an average
  face.

A held-out part of each identity's faces picks the epoch that is kept (lowest held-out loss) and stops training
early; for it the tool prints the pixel loss and the identity similarity of the restored faces beside those of
the anonymized faces themselves, the starting point the inverter has to improve on.

The output is the inverter checkpoint that the metric's inverted attacker loads with
``dict(type='inverted', inverter=OUT, attacker=<the attacker that embeds the restored faces>)``:
``dict(config=<the inverter's config>, state_dict=<weights>, meta=<the held-out result, the embedder, the
sources>)``. Example::

    python tools/analysis/train_attacker.py $CONFIG --faces raw --out work_dirs/raw_face_attacker.pth
    python tools/analysis/train_inverter.py $CONFIG $CHECKPOINT --embedder work_dirs/raw_face_attacker.pth \\
        --out work_dirs/inverter.pth

The same ``--seed`` and inputs give the same inverter.
"""
import os

if __name__ == '__main__':
    # Sleeping OpenMP threads between the many small steps, as in train_attacker.py; before torch loads.
    os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

import argparse  # noqa: E402
import sys  # noqa: E402
from typing import Dict, Tuple  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import mmanon  # noqa: F401,E402  (applies the compatibility fixes and registers mmanon's components)
from mmanon.evaluation.attackers import CheckpointAttacker  # noqa: E402
from mmanon.models import UNetInverter  # noqa: E402
from mmanon.models.utils import resize_crops  # noqa: E402
from mmanon.utils import apply_checkpoint_arguments  # noqa: E402
from train_attacker import (BestEpoch, add_face_source_args, default_input_size, save_model,  # noqa: E402
                            split_held_out, training_faces)

OUT_FILE = 'inverter.pth'
DISCRIMINATOR = 'discriminator'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Train an inversion attacker (a small U-Net) to restore the raw faces from anonymized ones, '
        'with a pixel loss and an identity loss from a face embedder, and save it for the "inverted" attacker of '
        'mmanon.FacePrivacyMetric.')
    add_face_source_args(parser, OUT_FILE, 'inverter checkpoint')
    parser.add_argument('--embedder', metavar='ATTACKER',
                        help='the face embedder of the identity loss: an attacker checkpoint (best one trained on '
                        'raw faces: train_attacker.py --faces raw) or "discriminator", the detector\'s co-trained '
                        'face discriminator; needed unless --identity-weight is 0')
    parser.add_argument('--identity-weight', type=float, default=1.0,
                        help='weight of the identity loss beside the pixel loss (default: %(default)s)')
    parser.add_argument('--epochs', type=int, default=30, help='most training epochs (default: %(default)s)')
    parser.add_argument('--batch-size', type=int, default=32, help='faces per training step (default: %(default)s)')
    parser.add_argument('--lr', type=float, default=2e-3, help='Adam learning rate (default: %(default)s)')
    parser.add_argument('--val-fraction', type=float, default=0.2,
                        help='fraction of each identity\'s faces held out to pick the best epoch (an identity '
                        'keeps at least one training face); 0 keeps the last epoch (default: %(default)s)')
    parser.add_argument('--patience', type=int, default=5,
                        help='stop after this many epochs without a lower held-out loss; 0 never stops early '
                        '(default: %(default)s)')
    parser.add_argument('--no-flip', action='store_true',
                        help='do not flip training pairs horizontally (both faces of a pair are flipped alike)')
    parser.add_argument('--base-channels', type=int, default=8,
                        help='channels of the inverter\'s first level; 16 restored the toy benchmark\'s Gaussian '
                        'blur no better at 1.6 times the time (default: %(default)s)')
    parser.add_argument('--num-stages', type=int, default=2,
                        help='levels of the inverter below the first, each halving the size (default: %(default)s)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the split, the initialisation, the order '
                        'and the flips (default: %(default)s)')
    return parser.parse_args(argv)


def load_embedder(spec: str, preprocessor) -> Tuple[torch.nn.Module, str]:
    """The frozen face embedder named by ``--embedder`` and a description of it."""
    if spec == DISCRIMINATOR:
        if preprocessor.discriminator is None:
            raise ValueError('--embedder discriminator: the detector has no co-trained face discriminator; give an '
                             'attacker checkpoint (train_attacker.py --faces raw) instead')
        embedder, description = preprocessor.discriminator, 'the co-trained face discriminator'
    else:
        embedder, description = CheckpointAttacker(spec).head, f'the attacker {spec}'
    embedder.eval().requires_grad_(False)
    return embedder, description


class InversionLoss:
    """The pixel loss plus ``identity_weight`` times the identity loss (see the module docstring).

    Args:
        embedder (nn.Module, optional): The frozen face embedder; None without an identity loss.
        identity_weight (float): Weight of the identity loss.
    """

    def __init__(self, embedder, identity_weight: float) -> None:
        self.embedder = embedder
        self.identity_weight = identity_weight

    def __call__(self, restored: torch.Tensor, raw: torch.Tensor) -> Dict[str, torch.Tensor]:
        """``loss``, ``pixel`` and ``identity`` (the mean cosine similarity, without grad) of float crops."""
        terms = dict(pixel=(restored - raw).abs().mean() / 255)
        loss = terms['pixel']
        if self.embedder is not None:
            similarity = F.cosine_similarity(self.embedder(restored), self.embedder(raw).detach(), dim=1).mean()
            terms['identity'] = similarity.detach()
            loss = loss + self.identity_weight * (1 - similarity)
        return dict(terms, loss=loss)

    @torch.no_grad()
    def evaluate(self, restore, anonymized: torch.Tensor, raw: torch.Tensor, batch_size: int) -> Dict[str, float]:
        """Mean terms over uint8 crops, of ``restore(anonymized)`` against the raw faces."""
        sums, count = {}, 0
        for start in range(0, len(raw), batch_size):
            batch_raw = raw[start:start + batch_size].float()
            terms = self(restore(anonymized[start:start + batch_size].float()), batch_raw)
            for key, value in terms.items():
                sums[key] = sums.get(key, 0.) + value.item() * len(batch_raw)
            count += len(batch_raw)
        return {key: value / count for key, value in sums.items()}


def describe(terms: Dict[str, float]) -> str:
    identity = f', identity similarity {terms["identity"]:.3f}' if 'identity' in terms else ''
    return f'pixel loss {terms["pixel"]:.4f}{identity}'


def train_inverter(args) -> dict:
    """Collect the training faces, train the inverter and save it; see the module docstring.

    Args:
        args (argparse.Namespace): The flags of :func:`parse_args`.

    Returns:
        dict: The ``meta`` saved with the inverter, and ``out``, the path written.
    """
    if not 0 <= args.val_fraction < 1:
        raise ValueError(f'--val-fraction must be in [0, 1), got {args.val_fraction}')
    if min(args.epochs, args.batch_size) < 1 or args.patience < 0 or args.identity_weight < 0:
        raise ValueError('--epochs and --batch-size must be positive, --patience and --identity-weight '
                         'non-negative')
    if args.identity_weight > 0 and args.embedder is None:
        raise ValueError('the identity loss needs --embedder (an attacker checkpoint, e.g. from train_attacker.py '
                         '--faces raw, or "discriminator"); or turn it off with --identity-weight 0')
    faces, source, preprocessor, out = training_faces(args, OUT_FILE)
    embedder, embedder_text = (None, None) if args.identity_weight == 0 else load_embedder(args.embedder, preprocessor)
    criterion = InversionLoss(embedder, args.identity_weight)
    _, labels = np.unique(faces.identities.numpy(), return_inverse=True)
    train_inds, held_inds = split_held_out(labels, args.val_fraction, np.random.default_rng(args.seed))
    train_inds, held_inds = torch.from_numpy(train_inds), torch.from_numpy(held_inds)
    print(f'{len(faces)} faces: {len(train_inds)} to train on, {len(held_inds)} held out; identity loss from '
          f'{embedder_text or "nothing (--identity-weight 0)"}', flush=True)

    crop_size = tuple(faces.raw_crops.shape[-2:])
    inverter_cfg = dict(type='UNetInverter', in_channels=int(faces.raw_crops.shape[1]),
                        base_channels=args.base_channels, num_stages=args.num_stages,
                        crop_size=list(default_input_size(crop_size, args.num_stages)))
    torch.manual_seed(args.seed)
    inverter = UNetInverter(**{key: value for key, value in inverter_cfg.items() if key != 'type'}).to(args.device)

    def restore(crops: torch.Tensor) -> torch.Tensor:
        """Crops of the faces' size restored at the inverter's size."""
        return resize_crops(inverter(resize_crops(crops, inverter.crop_size)), crop_size)

    raw, anonymized = faces.raw_crops.to(args.device), faces.anonymized_crops.to(args.device)
    if embedder is not None:
        embedder.to(args.device)
    baseline = None
    if len(held_inds):
        baseline = criterion.evaluate(lambda crops: crops, anonymized[held_inds], raw[held_inds], args.batch_size)
        print(f'held-out anonymized faces as they are: {describe(baseline)}', flush=True)
    optimizer = torch.optim.Adam(inverter.parameters(), lr=args.lr)
    generator = torch.Generator().manual_seed(args.seed)
    best = BestEpoch(args.patience)
    for epoch in range(1, args.epochs + 1):
        inverter.train()
        order = train_inds[torch.randperm(len(train_inds), generator=generator)]
        loss_sum = 0.
        for start in range(0, len(order), args.batch_size):
            inds = order[start:start + args.batch_size]
            pair = torch.cat([anonymized[inds], raw[inds]], dim=1).float()
            if not args.no_flip:
                flipped = (torch.rand(len(inds), generator=generator) < 0.5).to(pair.device).view(-1, 1, 1, 1)
                pair = torch.where(flipped, pair.flip(-1), pair)
            source_crops, target = pair.chunk(2, dim=1)
            loss = criterion(restore(source_crops), target)['loss']
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(inds)
        line = f'epoch {epoch}/{args.epochs}: train loss {loss_sum / len(order):.4f}'
        inverter.eval()
        if len(held_inds):
            held = criterion.evaluate(restore, anonymized[held_inds], raw[held_inds], args.batch_size)
            line += f'; held-out loss {held["loss"]:.4f}: {describe(held)}'
            key = (-held['loss'], )
        else:
            held, key = None, (epoch, )
        if best.update(epoch, key, inverter, line, held_out=held):
            break
    inverter.load_state_dict(best.state)
    meta = dict(
        train_faces=len(train_inds),
        held_out_faces=len(held_inds),
        best_epoch=best.epoch,
        held_out=best.result['held_out'],
        held_out_anonymized=baseline,
        embedder=args.embedder if embedder is not None else None,
        identity_weight=args.identity_weight,
        anonymizer=type(preprocessor.anonymizer).__name__,
        config=args.config,
        checkpoint=args.checkpoint,
        face_dataset=args.face_dataset,
        source=source,
        seed=args.seed)
    save_model(out, inverter, inverter_cfg, meta)
    return dict(meta, out=out)


def main(argv=None):
    args = parse_args(argv)
    apply_checkpoint_arguments(args)
    try:
        result = train_inverter(args)
    except (OSError, ValueError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    held_out = 'no held-out faces' if result['held_out'] is None else (
        f'held-out {describe(result["held_out"])} (anonymized faces as they are: '
        f'{describe(result["held_out_anonymized"])})')
    print(f'wrote {result["out"]}: epoch {result["best_epoch"]}, {held_out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
