"""Train an adaptive attacker: a face recogniser trained from scratch on anonymized faces of known identity.

A recogniser that never saw the anonymizer is a weak attacker: a blurred or pixelated face merely looks unlike
its training data. The adaptive attacker knows the anonymizer and learns from faces anonymized by it, labelled
with their identities; under this threat model blur and pixelation fail (McPherson et al., "Defeating Image
Obfuscation with Deep Learning", 2016), and it is the one the learned anonymizer of Ren et al. (ECCV 2018) must
withstand. The attacker is a :class:`mmanon.models.heads.FaceDiscriminatorHead` trained with Adam on the
anonymized training faces, with light augmentation (horizontal flip, brightness jitter); a held-out part of
those faces picks the epoch that is kept and stops training early.

Faces come from one of two sources:

- the detector config's *train* dataset (an ``mmanon.AVAFaceDataset``), read in order with the config's *val*
  pipeline (no random augmentation) in ``test_mode`` (nothing dropped). The model's data preprocessor, in
  evaluation mode, anonymizes each clip and cuts the identity-labelled faces from its key frame: the crops the
  privacy metric sees on the val set.
- ``--face-dataset FILE``: a face-identity config (``configs/face_identity/``) whose ``train_dataloader.dataset``
  is a face-identity dataset (``mmanon.FaceIdentityDataset``, built from the registry only when used; items are
  dicts with ``inputs``, a uint8 (3, H, W) aligned face crop, and ``data_samples`` carrying ``gt_label``, the
  identity), likewise read with its val pipeline in ``test_mode``. The anonymizer is applied to each whole
  crop.

Either way the anonymizer is the config's data preprocessor's, with the weights of CHECKPOINT (a checkpoint of
``tools/train.py``); handcrafted anonymizers have no weights, so CHECKPOINT may be left out for them.

With ``--faces raw`` the attacker learns from the raw crops of the same faces instead: a recogniser of the
benchmark's people as they look, against which the inversion attacker (``tools/analysis/train_inverter.py``)
is trained and measured.

The output is the attacker checkpoint that :class:`mmanon.evaluation.FacePrivacyMetric` loads with
``dict(type='checkpoint', checkpoint=OUT)``: ``dict(config=<head arguments>, state_dict=<weights>)``, plus
``templates``, the per-identity templates of all the training faces (both parts) as the trained head embeds
them, for the metric's training-gallery protocol, and ``meta`` (the identities in class order, which are also
the templates' order, and the held-out result). Example::

    python tools/analysis/train_attacker.py \\
        configs/detection/slowonly/slowonly-pixelate_r18_1xb8-4x6x1-600i_toy-ava-rgb.py \\
        work_dirs/privacy_utility/pixelate/iter_600.pth --out work_dirs/privacy_utility/pixelate/adaptive_attacker.pth

The same ``--seed`` and inputs give the same attacker.
"""
import os

if __name__ == '__main__':
    # PyTorch's OpenMP threads spin for a while after each operation; the attacker's many small steps then run up
    # to ten times slower on a few busy cores (as in tools/anonymize_video.py). Sleeping threads avoid that. It
    # must be set before torch loads, and only for this process (not for the tools that import this one); an
    # explicit value wins.
    os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

import argparse  # noqa: E402
import os.path as osp  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from typing import Tuple  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.structures import InstanceData  # noqa: E402

import mmanon  # noqa: F401,E402  (applies the compatibility fixes and registers mmanon's components)
from mmanon.apis.anonymize_video import move_into_place  # noqa: E402
from mmanon.apis.faces import clip_faces, collect_faces, crop_faces, face_loader, load_detector  # noqa: E402
from mmanon.evaluation.functional import identity_templates  # noqa: E402
from mmanon.models.data_preprocessors import AnonymizerDataPreprocessor  # noqa: E402
from mmanon.models.heads import FaceDiscriminatorHead  # noqa: E402
from mmanon.utils import add_checkpoint_arguments, apply_checkpoint_arguments  # noqa: E402

OUT_FILE = 'adaptive_attacker.pth'


def add_face_source_args(parser: argparse.ArgumentParser, out_file: str, what: str) -> None:
    """The arguments that name where the training faces come from, shared with train_inverter.py."""
    parser.add_argument('config', help='detector config whose model.data_preprocessor is an '
                        'mmanon.AnonymizerDataPreprocessor; its train dataset is the face source unless '
                        '--face-dataset is given')
    parser.add_argument('checkpoint', nargs='?',
                        help='checkpoint of tools/train.py holding the anonymizer\'s weights; may be left out for '
                        'handcrafted anonymizers, which have none')
    parser.add_argument('--out', help=f'{what} to write (default: {out_file} beside CHECKPOINT, or in '
                        'work_dirs/<config name>/ without one)')
    parser.add_argument('--face-dataset', metavar='FILE',
                        help='face-identity config whose train_dataloader.dataset (e.g. an '
                        'mmanon.FaceIdentityDataset), read with its val pipeline, gives the faces instead of the '
                        'detector\'s train set; the anonymizer is applied to each whole crop')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu',
                        help='device of the anonymizer and the network (default: cuda where available, else cpu)')
    parser.add_argument('--num-workers', type=int,
                        help='data loading processes (default: the config\'s train_dataloader.num_workers)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of the detector config, key=value pairs such as '
                        'model.data_preprocessor.face_crop_size="(64,64)"')
    add_checkpoint_arguments(parser)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Train an adaptive attacker (a FaceDiscriminatorHead) from scratch to recognise the '
        'identities of anonymized training faces, and save it in the format of the "checkpoint" attacker of '
        'mmanon.FacePrivacyMetric.')
    add_face_source_args(parser, OUT_FILE, 'attacker checkpoint')
    parser.add_argument('--faces', choices=['anonymized', 'raw'], default='anonymized',
                        help='learn from the anonymized faces (the adaptive attacker) or from the raw ones (a '
                        'recogniser of the raw faces, e.g. for the inversion attacker) (default: %(default)s)')
    parser.add_argument('--epochs', type=int, default=30, help='most training epochs (default: %(default)s)')
    parser.add_argument('--batch-size', type=int, default=32, help='faces per training step (default: %(default)s)')
    parser.add_argument('--lr', type=float, default=1e-3, help='Adam learning rate (default: %(default)s)')
    parser.add_argument('--weight-decay', type=float, default=1e-4, help='Adam weight decay (default: %(default)s)')
    parser.add_argument('--val-fraction', type=float, default=0.2,
                        help='fraction of each identity\'s faces held out to pick the best epoch and report '
                        'the accuracy (an identity keeps at least one training face); 0 keeps the last epoch '
                        '(default: %(default)s)')
    parser.add_argument('--patience', type=int, default=10,
                        help='stop after this many epochs without a better held-out result; 0 never stops early '
                        '(default: %(default)s)')
    parser.add_argument('--brightness', type=float, default=0.1,
                        help='brightness jitter: each training face is scaled by a factor drawn from '
                        '[1 - b, 1 + b]; 0 turns it off (default: %(default)s)')
    parser.add_argument('--no-flip', action='store_true', help='do not flip training faces horizontally')
    parser.add_argument('--embed-dims', type=int, default=64,
                        help='size of the attacker\'s identity embedding (default: %(default)s)')
    parser.add_argument('--base-channels', type=int, default=16,
                        help='channels of the head\'s first stage (default: %(default)s)')
    parser.add_argument('--num-stages', type=int, default=3,
                        help='stages of the head, each halving the size (default: %(default)s)')
    parser.add_argument('--num-blocks', type=int, default=1, help='residual units per stage (default: %(default)s)')
    parser.add_argument('--classifier', choices=['softmax', 'arcface'], default='softmax',
                        help='identity classifier of the head (default: %(default)s)')
    parser.add_argument('--input-size', type=int, nargs=2, metavar=('H', 'W'),
                        help='size the head resizes faces to (default: the crops\' size, rounded to a multiple '
                        'of 2 ** num_stages)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the split, the initialisation, the order '
                        'and the augmentation (default: %(default)s)')
    return parser.parse_args(argv)


def split_held_out(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """Split face indices into training and held-out ones, identity by identity.

    ``fraction`` of each identity's faces, rounded down, are held out, so every identity keeps at least one
    training face (one with a single face is not held out at all): the held-out faces measure recognition of
    known identities.

    Args:
        labels (np.ndarray): (N,) class of each face.
        fraction (float): In [0, 1).
        rng (np.random.Generator): Picks the held-out faces.

    Returns:
        tuple[np.ndarray, np.ndarray]: Sorted training and held-out indices.
    """
    held_out = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        held_out.append(members[:int(fraction * len(members))])
    held_out = np.sort(np.concatenate(held_out))
    return np.setdiff1d(np.arange(len(labels)), held_out), held_out


class BestEpoch:
    """The weights of the epoch with the best held-out result, and when to stop for lack of a better one.

    Args:
        patience (int): Epochs without a better result after which to stop; 0 never stops.
    """

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.epoch = None
        self.result = None
        self.state = None
        self._key = None
        self._stale = 0

    def update(self, epoch: int, key: tuple, model: torch.nn.Module, line: str, **result) -> bool:
        """Record an epoch (keeping its weights if ``key`` is the highest so far), print its line, and say
        whether to stop.

        Args:
            epoch (int): The epoch, from 1.
            key (tuple): What ranks epochs, higher is better.
            model (nn.Module): The model, whose weights are copied when the epoch is the best.
            line (str): The epoch's report, printed with the best epoch so far.
            **result: What to remember of the epoch, as :attr:`result` when it is the best.

        Returns:
            bool: True when ``patience`` epochs in a row brought no better key.
        """
        if self._key is None or key > self._key:
            self.epoch, self.result, self._key, self._stale = epoch, result, key, 0
            self.state = {name: value.detach().clone() for name, value in model.state_dict().items()}
        else:
            self._stale += 1
        print(f'{line} (best epoch {self.epoch})', flush=True)
        if self.patience and self._stale >= self.patience:
            print(f'no better held-out result for {self.patience} epochs; stopping', flush=True)
            return True
        return False


def augment(crops: torch.Tensor, flip: bool, brightness: float, generator: torch.Generator) -> torch.Tensor:
    """Randomly flipped and brightened float copies of uint8 crops (what an attacker can afford to vary: the
    identity survives both)."""
    crops = crops.float()
    num = len(crops)
    if flip:
        flipped = (torch.rand(num, generator=generator) < 0.5).to(crops.device).view(-1, 1, 1, 1)
        crops = torch.where(flipped, crops.flip(-1), crops)
    if brightness > 0:
        factor = 1 + (2 * torch.rand(num, generator=generator) - 1) * brightness
        crops = (crops * factor.to(crops.device).view(-1, 1, 1, 1)).clamp(0, 255)
    return crops


@torch.no_grad()
def evaluate(head: FaceDiscriminatorHead, crops: torch.Tensor, labels: torch.Tensor,
             batch_size: int) -> Tuple[float, float]:
    """Mean identity loss and top-1 accuracy of the head over crops (uint8) and their classes."""
    loss = correct = 0.
    for start in range(0, len(crops), batch_size):
        batch_labels = labels[start:start + batch_size]
        result = head.loss(crops[start:start + batch_size].float(), batch_labels)
        loss += result['loss_identity'].item() * len(batch_labels)
        correct += result['acc_identity'].item() * len(batch_labels)
    return loss / len(crops), correct / len(crops)


def train_head(crops: torch.Tensor, labels: torch.Tensor, head_cfg: dict, args) -> Tuple[FaceDiscriminatorHead,
                                                                                           dict]:
    """Train the attacker head on anonymized crops; see the module docstring.

    Args:
        crops (Tensor): (N, C, h, w) uint8 anonymized faces, on the training device.
        labels (Tensor): (N,) classes in [0, ``head_cfg['num_classes']``).
        head_cfg (dict): Arguments of :class:`FaceDiscriminatorHead`.
        args (argparse.Namespace): The training flags of :func:`parse_args`.

    Returns:
        tuple[FaceDiscriminatorHead, dict]: The head with the weights of the kept epoch, and a summary:
        ``train_faces``, ``held_out_faces``, ``best_epoch``, ``held_out_accuracy`` and ``majority_rate`` (the
        accuracy of always naming the most frequent held-out identity; both None without held-out faces).
    """
    train_inds, held_inds = split_held_out(labels.cpu().numpy(), args.val_fraction, np.random.default_rng(args.seed))
    train_inds, held_inds = torch.from_numpy(train_inds), torch.from_numpy(held_inds)
    held_crops, held_labels = crops[held_inds], labels[held_inds]
    torch.manual_seed(args.seed)
    head = FaceDiscriminatorHead(**head_cfg).to(crops.device)
    optimizer = torch.optim.Adam(head.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    generator = torch.Generator().manual_seed(args.seed)

    best = BestEpoch(args.patience)
    for epoch in range(1, args.epochs + 1):
        head.train()
        order = train_inds[torch.randperm(len(train_inds), generator=generator)]
        loss_sum = correct = 0.
        for start in range(0, len(order), args.batch_size):
            inds = order[start:start + args.batch_size]
            result = head.loss(augment(crops[inds], not args.no_flip, args.brightness, generator), labels[inds])
            optimizer.zero_grad()
            result['loss_identity'].backward()
            optimizer.step()
            loss_sum += result['loss_identity'].item() * len(inds)
            correct += result['acc_identity'].item() * len(inds)
        line = f'epoch {epoch}/{args.epochs}: train loss {loss_sum / len(order):.4f}, acc {correct / len(order):.3f}'
        head.eval()
        if len(held_inds):
            held_loss, held_acc = evaluate(head, held_crops, held_labels, args.batch_size)
            line += f'; held-out loss {held_loss:.4f}, acc {held_acc:.3f}'
            key = (held_acc, -held_loss)
        else:
            held_acc, key = None, (epoch, )
        if best.update(epoch, key, head, line, accuracy=held_acc):
            break
    head.load_state_dict(best.state)
    majority = None
    if len(held_inds):
        majority = float(torch.bincount(held_labels).max()) / len(held_inds)
    return head.eval(), dict(train_faces=len(train_inds), held_out_faces=len(held_inds), best_epoch=best.epoch,
                             held_out_accuracy=best.result['accuracy'], majority_rate=majority)


def save_model(path: str, model: torch.nn.Module, config: dict, meta: dict, **extra) -> None:
    """Write ``dict(config, state_dict, meta, **extra)`` atomically: a crash never leaves a file that looks
    complete. Tensors go to the CPU; everything must load with ``weights_only=True``."""
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=folder, suffix='.pth')
    os.close(fd)
    try:
        state = {name: value.cpu() for name, value in model.state_dict().items()}
        torch.save(dict(config=config, state_dict=state, meta=meta, **extra), temp)
        move_into_place(temp, path)
    except BaseException:
        os.remove(temp)
        raise


def default_input_size(crop_size, num_stages: int) -> Tuple[int, int]:
    """The crops' (h, w), each rounded to the nearest positive multiple of ``2 ** num_stages``."""
    stride = 2**num_stages
    return tuple(max(stride, int(round(size / stride)) * stride) for size in crop_size)


def training_faces(args, out_file: str) -> Tuple[InstanceData, str, AnonymizerDataPreprocessor, str]:
    """The identity-labelled training faces named by the face-source arguments (see
    :func:`add_face_source_args`), raw and anonymized, on the CPU.

    Args:
        args (argparse.Namespace): The parsed flags.
        out_file (str): File name of the default output.

    Returns:
        tuple: The faces (``identities``, ``raw_crops``, ``anonymized_crops``), a description of their source,
        the detector's data preprocessor (with the checkpoint's weights, on ``args.device``) and the output
        path (``args.out`` or the default).
    """
    config = Config.fromfile(args.config)
    if args.cfg_options:
        config.merge_from_dict(args.cfg_options)
    out = args.out
    if out is None:
        folder = osp.dirname(args.checkpoint) if args.checkpoint else osp.join(
            'work_dirs', osp.splitext(osp.basename(args.config))[0])
        out = osp.join(folder, out_file)
    preprocessor = load_detector(config, args.checkpoint, args.device, args.allow_missing_keys).data_preprocessor

    if args.face_dataset:
        source = args.face_dataset
        loader = face_loader(Config.fromfile(args.face_dataset), 'train', args.num_workers)
        faces_of_batch = crop_faces(preprocessor.anonymizer, args.device)
    else:
        source = f'train_dataloader.dataset of {args.config}'
        loader = face_loader(config, 'train', args.num_workers)
        faces_of_batch = clip_faces(preprocessor)
    print(f'collecting the faces of {source}', flush=True)
    return collect_faces(loader, faces_of_batch), source, preprocessor, out


@torch.no_grad()
def embed_all(head: torch.nn.Module, crops: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Embeddings of uint8 crops by a head in evaluation mode, in batches."""
    return torch.cat([head(crops[i:i + batch_size].float()) for i in range(0, len(crops), batch_size)])


def train_attacker(args) -> dict:
    """Collect the anonymized faces, train the attacker and save it; see the module docstring.

    Args:
        args (argparse.Namespace): The flags of :func:`parse_args`.

    Returns:
        dict: The ``meta`` saved with the attacker, and ``out``, the path written.
    """
    if not 0 <= args.val_fraction < 1:
        raise ValueError(f'--val-fraction must be in [0, 1), got {args.val_fraction}')
    if min(args.epochs, args.batch_size) < 1 or args.patience < 0 or args.brightness < 0:
        raise ValueError('--epochs and --batch-size must be positive, --patience and --brightness non-negative')
    faces, source, preprocessor, out = training_faces(args, OUT_FILE)
    identities, labels = np.unique(faces.identities.numpy(), return_inverse=True)
    if len(identities) < 2:
        raise ValueError(f'{source} has {len(faces)} faces of known identity from {len(identities)} identities; '
                         'an attacker needs at least two (is it an mmanon.AVAFaceDataset with a face_file, or '
                         'identity_source="entity"?)')
    print(f'{len(faces)} faces of {len(identities)} identities', flush=True)

    crops = faces.get(f'{args.faces}_crops')
    crop_size = crops.shape[-2:]
    head_cfg = dict(
        num_classes=len(identities),
        embed_dims=args.embed_dims,
        input_size=list(args.input_size or default_input_size(crop_size, args.num_stages)),
        in_channels=int(crops.shape[1]),
        base_channels=args.base_channels,
        num_stages=args.num_stages,
        num_blocks=args.num_blocks,
        classifier=args.classifier)
    crops = crops.to(args.device)
    head, summary = train_head(crops, torch.from_numpy(labels).to(args.device), head_cfg, args)
    # The templates of every training face, so that the gallery has as many faces per identity as possible;
    # their identities come sorted, as the classes do.
    _, templates = identity_templates(embed_all(head, crops, args.batch_size).cpu().numpy(), faces.identities.numpy())
    meta = dict(
        summary,
        identities=identities.tolist(),
        chance=1 / len(identities),
        faces=args.faces,
        anonymizer=type(preprocessor.anonymizer).__name__,
        config=args.config,
        checkpoint=args.checkpoint,
        face_dataset=args.face_dataset,
        seed=args.seed)
    save_model(out, head, head_cfg, meta, templates=torch.from_numpy(templates).float())
    return dict(meta, out=out)


def main(argv=None):
    args = parse_args(argv)
    apply_checkpoint_arguments(args)
    try:
        result = train_attacker(args)
    except (OSError, ValueError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    accuracy = result['held_out_accuracy']
    held_out = 'no held-out faces' if accuracy is None else (
        f'held-out top-1 {accuracy:.3f} on {result["held_out_faces"]} faces (chance {result["chance"]:.3f}, '
        f'always naming the most frequent identity {result["majority_rate"]:.3f})')
    print(f'wrote {result["out"]}: epoch {result["best_epoch"]}, {held_out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
