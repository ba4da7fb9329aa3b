"""Face-recognition attackers that try to identify anonymized faces.

An attacker turns faces into identity embeddings. :class:`FacePrivacyMetric` compares the embeddings of the
raw and the anonymized version of each face; analysis tools can use the same classes on their own crops.
Build one from a config with :func:`build_attacker`.

Every attacker is an :class:`Attacker`: it has a ``name`` and ``embed_faces(faces)``, which returns the raw and
anonymized embeddings of the faces of each sample of a batch; an attacker trained on anonymized faces may also
hold a ``train_gallery`` (templates of the anonymized training faces per identity) and ``classify`` anonymized
faces with its identity classifier. Attackers that look at pixels derive from :class:`CropAttacker` and also
have ``embed(crops)``.
"""
import os.path as osp
from abc import ABC, abstractmethod
from collections import defaultdict
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Type

import numpy as np
import torch
from mmanon.compat import checkpoint_config, load_local_checkpoint
from mmanon.models.utils import resize_crops, to_uint8
from mmanon.registry import MODELS, build_in_scope
from mmanon.utils.checkpoint import check_trained_keys

Embeddings = Optional[Tuple[np.ndarray, np.ndarray]]
# Where the model attaches its own discriminator's embeddings of the raw and the anonymized crops.
EMBEDDING_KEYS = ('raw_embeddings', 'anonymized_embeddings')


class AttackerUnavailable(RuntimeError):
    """An attacker cannot run in this installation (e.g. an optional package is missing)."""


class Attacker(ABC):
    """Base of the attackers.

    Args:
        name (str): Name of the attacker in metric keys.

    Attributes:
        train_gallery (tuple[np.ndarray, np.ndarray] | None): The (K,) identities and (K, E) templates of the
            faces the attacker was trained on (anonymized ones, for an adaptive attacker), against which the
            metric matches the evaluated anonymized faces; None when the attacker holds none.
    """

    train_gallery: Optional[Tuple[np.ndarray, np.ndarray]] = None

    def __init__(self, name: str) -> None:
        self.name = name

    @abstractmethod
    def embed_faces(self, faces: Sequence[dict]) -> List[Embeddings]:
        """Embeddings of the raw and anonymized crops of the faces of several samples.

        Args:
            faces (Sequence[dict]): Per sample, the faces, as in :class:`FacePrivacyMetric`.

        Returns:
            list[tuple[np.ndarray, np.ndarray] | None]: Per sample, (F, E) float32 raw and anonymized
            embeddings, or None where the attacker cannot embed that sample's faces.
        """

    def classify(self, embeddings: np.ndarray) -> Optional[np.ndarray]:
        """The identities the attacker's classifier names for embeddings of anonymized faces.

        Args:
            embeddings (np.ndarray): (N, E) embeddings from :meth:`embed_faces`.

        Returns:
            np.ndarray | None: (N,) identities, or None when the attacker has no classifier of the evaluated
            identities.
        """
        return None

    @property
    def classes(self) -> Optional[np.ndarray]:
        """The identities :meth:`classify` can name, or None without a classifier."""
        return None


class CropAttacker(Attacker):
    """Base of the attackers that embed face crops.

    Args:
        name (str): Name of the attacker in metric keys.
        batch_size (int): Crops embedded per call of the underlying model. Defaults to 64.
    """

    def __init__(self, name: str, batch_size: int = 64) -> None:
        if batch_size < 1:
            raise ValueError(f'batch_size must be positive, got {batch_size}')
        super().__init__(name)
        self.batch_size = batch_size

    def embed(self, crops: torch.Tensor) -> np.ndarray:
        """Identity embeddings of face crops.

        Args:
            crops (Tensor): (N, C, h, w) uint8 crops, on any device.

        Returns:
            np.ndarray: (N, E) float32 embeddings.
        """
        if crops.dim() != 4 or crops.dtype != torch.uint8:
            raise ValueError(f'{self.name}: crops must be (N, C, h, w) uint8, got {tuple(crops.shape)} '
                             f'{crops.dtype}')
        with torch.no_grad():
            parts = [self._embed_batch(crops[i:i + self.batch_size]) for i in range(0, len(crops), self.batch_size)]
        if not parts:
            return np.zeros((0, self.embed_dims), dtype=np.float32)
        return np.concatenate(parts).astype(np.float32)

    def embed_anonymized(self, crops: torch.Tensor) -> np.ndarray:
        """Identity embeddings of anonymized face crops; the same as :meth:`embed` unless the attacker first
        transforms them (see :class:`InvertedAttacker`).

        Args:
            crops (Tensor): (N, C, h, w) uint8 crops, on any device.

        Returns:
            np.ndarray: (N, E) float32 embeddings.
        """
        return self.embed(crops)

    def embed_faces(self, faces: Sequence[dict]) -> List[Embeddings]:
        """Embeddings of the raw and anonymized crops of the faces of several samples.

        Crops of the same shape are embedded together, whatever sample they come from, so that a batch of
        samples with a few faces each costs a few forward passes, not one per sample.

        Args:
            faces (Sequence[dict]): Per sample, ``raw_crops`` and ``anonymized_crops``, (F, C, h, w) uint8
                tensors, as in :class:`FacePrivacyMetric`.

        Returns:
            list[tuple[np.ndarray, np.ndarray]]: Per sample, (F, E) raw and anonymized embeddings.
        """
        raw = _embed_in_groups(self.embed, [sample['raw_crops'] for sample in faces])
        anonymized = _embed_in_groups(self.embed_anonymized, [sample['anonymized_crops'] for sample in faces])
        return list(zip(raw, anonymized))

    @property
    @abstractmethod
    def embed_dims(self) -> int:
        """Size of the embeddings."""

    @abstractmethod
    def _embed_batch(self, crops: torch.Tensor) -> np.ndarray:
        """Embed at most ``batch_size`` uint8 crops (called without grad)."""


def _embed_in_groups(embed: Callable[[torch.Tensor], np.ndarray],
                     crops: Sequence[torch.Tensor]) -> List[np.ndarray]:
    """``embed`` applied to each of several crop tensors, those of one shape and device in one call."""
    embeddings = [None] * len(crops)
    groups = defaultdict(list)
    for i, c in enumerate(crops):
        groups[(tuple(c.shape[1:]), c.device)].append(i)
    for members in groups.values():
        embedded = embed(torch.cat([crops[i] for i in members]))
        splits = np.cumsum([len(crops[i]) for i in members])[:-1]
        for i, part in zip(members, np.split(embedded, splits)):
            embeddings[i] = part
    return embeddings


class DiscriminatorAttacker(Attacker):
    """The model's own co-trained face discriminator, whose embeddings the model attaches to the faces as
    ``raw_embeddings`` and ``anonymized_embeddings``; it cannot embed other crops, and samples whose faces
    carry no embeddings get None.

    Args:
        name (str): Name of the attacker in metric keys. Defaults to 'discriminator'.
    """

    def __init__(self, name: str = 'discriminator') -> None:
        super().__init__(name)

    def embed_faces(self, faces: Sequence[dict]) -> List[Embeddings]:
        return [
            tuple(sample[key].detach().float().cpu().numpy() for key in EMBEDDING_KEYS)
            if all(key in sample for key in EMBEDDING_KEYS) else None for sample in faces
        ]


class CheckpointAttacker(CropAttacker):
    """A :class:`FaceDiscriminatorHead` trained separately as an attacker.

    The checkpoint is either what ``tools/analysis/train_attacker.py`` writes, a dict with ``'config'`` (the
    head's constructor arguments as plain Python values) and ``'state_dict'`` (its weights), or a
    ``tools/train.py`` checkpoint of a :class:`FaceIdentityClassifier` (a discriminator pre-trained on a
    face-identity dataset), whose head is read from its config and weights. Checkpoints are loaded with
    ``weights_only=True`` and their stored config is read as plain values (see :mod:`mmanon.compat`). The head
    runs on the device of the crops it is given.

    An attacker checkpoint also names the identity of each of the head's classes (``meta['identities']``), so
    that the head's classifier can name the evaluated faces' identities (:meth:`classify`), and may hold
    ``templates``, (K, E) per-identity templates of the faces the head was trained on in the same order, which
    become its :attr:`train_gallery`.

    Args:
        checkpoint (str): Path of the checkpoint.
        name (str, optional): Name of the attacker in metric keys. Defaults to None, the file name without
            its extension.
        batch_size (int): Crops per forward pass. Defaults to 64.
    """

    def __init__(self, checkpoint: str, name: Optional[str] = None, batch_size: int = 64) -> None:
        super().__init__(name or osp.splitext(osp.basename(checkpoint))[0], batch_size)
        config, state_dict = _head_of_checkpoint(checkpoint)
        self.head = build_in_scope(MODELS, dict(type='FaceDiscriminatorHead', **config))
        check_trained_keys(self.head, state_dict, checkpoint)
        self.head.load_state_dict(state_dict)
        self.head.eval()
        self._classes, self.train_gallery = _classes_of_checkpoint(checkpoint, self.head)

    @property
    def embed_dims(self) -> int:
        return self.head.embed_dims

    @property
    def classes(self) -> Optional[np.ndarray]:
        return self._classes

    def _embed_batch(self, crops: torch.Tensor) -> np.ndarray:
        self.head.to(crops.device)
        return self.head(crops.float()).cpu().numpy()

    def classify(self, embeddings: np.ndarray) -> Optional[np.ndarray]:
        if self._classes is None:
            return None
        with torch.no_grad():
            head = self.head.cpu()
            logits = head.logits(torch.as_tensor(np.asarray(embeddings), dtype=torch.float32))
        return self._classes[logits.argmax(dim=1).numpy()]


def _head_of_checkpoint(path: str) -> Tuple[dict, dict]:
    """The constructor arguments and weights of the face head a checkpoint holds (see CheckpointAttacker)."""
    saved = load_local_checkpoint(path, map_location='cpu')
    if isinstance(saved, dict) and {'config', 'state_dict'} <= saved.keys():
        return saved['config'], saved['state_dict']
    cfg = checkpoint_config(saved, path)
    head = (cfg.get('model') or {}).get('head') if cfg else None
    if not isinstance(head, dict) or 'state_dict' not in saved or \
            not str(head.get('type')).endswith('FaceDiscriminatorHead'):
        raise ValueError(f'{path} is neither an attacker checkpoint (a dict with the keys \'config\' and '
                         '\'state_dict\') nor a tools/train.py checkpoint of a FaceIdentityClassifier')
    config = {key: value for key, value in head.items() if key != 'type'}
    state_dict = {key[len('head.'):]: value for key, value in saved['state_dict'].items() if key.startswith('head.')}
    return config, state_dict


def _classes_of_checkpoint(path: str, head: torch.nn.Module) -> Tuple[Optional[np.ndarray], Optional[Tuple]]:
    """The identities of an attacker checkpoint's classes and its training gallery (see CheckpointAttacker);
    None for what it does not hold."""
    saved = load_local_checkpoint(path, map_location='cpu')
    meta = saved.get('meta') if isinstance(saved, dict) and 'config' in saved else None
    identities = meta.get('identities') if isinstance(meta, dict) else None
    if identities is None:
        return None, None
    classes = np.asarray(identities, dtype=np.int64)
    if classes.shape != (head.num_classes, ):
        raise ValueError(f"{path}: meta['identities'] names {classes.size} identities for a head of "
                         f'{head.num_classes} classes')
    templates = saved.get('templates')
    if templates is None:
        return classes, None
    templates = torch.as_tensor(templates).float().numpy()
    if templates.shape != (head.num_classes, head.embed_dims):
        raise ValueError(f'{path}: templates must be ({head.num_classes}, {head.embed_dims}), one per class, got '
                         f'{templates.shape}')
    return classes, (classes, templates)


class InvertedAttacker(CropAttacker):
    """The inversion attacker: anonymized faces are first restored by a network trained to undo the
    anonymizer (a :class:`~mmanon.models.UNetInverter` from ``tools/analysis/train_inverter.py``), then
    embedded by another attacker; raw faces are embedded as they are.

    Every protocol of :class:`FacePrivacyMetric` then measures the restored faces: against the raw faces'
    templates, against each other, and, where the inner attacker has them, against its training gallery and
    with its classifier (which is what an inner attacker trained on raw faces makes of faces made to look raw).

    Args:
        inverter (str): Checkpoint of ``tools/analysis/train_inverter.py``, a dict with ``'config'`` (the
            inverter's config, ``type`` included) and ``'state_dict'``, loaded with ``weights_only=True``.
        attacker (dict): Config of the attacker that embeds the restored faces, one that embeds crops
            ('checkpoint' or 'dlib'; see :func:`build_attacker`).
        name (str, optional): Name in metric keys. Defaults to None, ``'inverted-<the inner name>'``.
        batch_size (int): Crops per forward pass of the inverter. Defaults to 64.
    """

    def __init__(self, inverter: str, attacker: dict, name: Optional[str] = None, batch_size: int = 64) -> None:
        inner = build_attacker(attacker)
        if not isinstance(inner, CropAttacker):
            raise ValueError(f'the inverted attacker needs an attacker that embeds crops (checkpoint or dlib), got '
                             f'{attacker.get("type")!r}')
        super().__init__(name or f'inverted-{inner.name}', batch_size)
        self.attacker = inner
        self.train_gallery = inner.train_gallery
        saved = load_local_checkpoint(inverter, map_location='cpu')
        config = saved.get('config') if isinstance(saved, dict) and 'state_dict' in saved else None
        if not (isinstance(config, dict) and str(config.get('type')).endswith('UNetInverter')):
            raise ValueError(f'{inverter} is not an inverter checkpoint (a dict with \'state_dict\' and a '
                             '\'config\' of type UNetInverter, as tools/analysis/train_inverter.py writes)')
        self.inverter = build_in_scope(MODELS, config)
        check_trained_keys(self.inverter, saved['state_dict'], inverter)
        self.inverter.load_state_dict(saved['state_dict'])
        self.inverter.eval()

    @property
    def embed_dims(self) -> int:
        return self.attacker.embed_dims

    @property
    def classes(self) -> Optional[np.ndarray]:
        return self.attacker.classes

    def _embed_batch(self, crops: torch.Tensor) -> np.ndarray:
        return self.attacker._embed_batch(crops)

    def classify(self, embeddings: np.ndarray) -> Optional[np.ndarray]:
        return self.attacker.classify(embeddings)

    def invert(self, crops: torch.Tensor) -> torch.Tensor:
        """Restored versions of anonymized crops.

        Args:
            crops (Tensor): (N, C, h, w) uint8 crops, on any device; resized to the inverter's crop size and
                back where they differ.

        Returns:
            Tensor: (N, C, h, w) uint8 restored crops, on the same device.
        """
        self.inverter.to(crops.device)
        parts = []
        with torch.no_grad():
            for i in range(0, len(crops), self.batch_size):
                batch = crops[i:i + self.batch_size].float()
                restored = self.inverter(resize_crops(batch, self.inverter.crop_size))
                parts.append(to_uint8(resize_crops(restored, batch.shape[-2:])))
        return torch.cat(parts) if parts else crops.clone()

    def embed_anonymized(self, crops: torch.Tensor) -> np.ndarray:
        return self.embed(self.invert(crops))


class DlibAttacker(CropAttacker):
    """dlib's ResNet face recogniser (the model behind the ``face_recognition`` package), an attacker trained
    on millions of faces that never saw our anonymizers.

    Each crop is used whole as the face rectangle: dlib's five-point shape predictor finds the landmarks in it,
    and the recogniser computes its 128-d descriptor of the aligned face. Needs the optional packages
    ``dlib-bin`` and ``face_recognition_models`` (``pip install -e .[attack]``).

    Args:
        name (str): Name of the attacker in metric keys. Defaults to 'dlib'.
        channel_order (str): Channel order of the crops, 'rgb' or 'bgr'. Defaults to 'rgb'.
        batch_size (int): Crops converted to numpy at a time. Defaults to 64.
    """

    def __init__(self, name: str = 'dlib', channel_order: str = 'rgb', batch_size: int = 64) -> None:
        super().__init__(name, batch_size)
        if channel_order not in ('rgb', 'bgr'):
            raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
        try:
            import dlib
            import face_recognition_models
        except ImportError as e:
            raise AttackerUnavailable(f'the {name!r} attacker needs dlib and face_recognition_models ({e}); '
                                      'install them with `pip install -e .[attack]`') from e
        self.channel_order = channel_order
        self._rectangle = dlib.rectangle
        self._shape_predictor = dlib.shape_predictor(
            face_recognition_models.pose_predictor_five_point_model_location())
        self._recogniser = dlib.face_recognition_model_v1(face_recognition_models.face_recognition_model_location())

    @property
    def embed_dims(self) -> int:
        return 128

    def _embed_batch(self, crops: torch.Tensor) -> np.ndarray:
        if crops.shape[1] != 3:
            raise ValueError(f'{self.name}: dlib needs 3-channel crops, got {crops.shape[1]} channels')
        images = crops.permute(0, 2, 3, 1).cpu().numpy()
        if self.channel_order == 'bgr':
            images = images[..., ::-1]
        descriptors = []
        for image in np.ascontiguousarray(images):
            height, width = image.shape[:2]
            shape = self._shape_predictor(image, self._rectangle(0, 0, width - 1, height - 1))
            descriptors.append(np.asarray(self._recogniser.compute_face_descriptor(image, shape)))
        return np.stack(descriptors)


ATTACKERS: Dict[str, Type] = dict(discriminator=DiscriminatorAttacker, checkpoint=CheckpointAttacker,
                                  dlib=DlibAttacker, inverted=InvertedAttacker)


def build_attacker(cfg: dict):
    """Build an attacker from a config.

    Args:
        cfg (dict): ``type``, one of 'discriminator', 'checkpoint', 'dlib' and 'inverted', and the arguments
            of :class:`DiscriminatorAttacker`, :class:`CheckpointAttacker`, :class:`DlibAttacker` or
            :class:`InvertedAttacker` respectively.

    Returns:
        Attacker: The attacker.

    Raises:
        AttackerUnavailable: If the attacker cannot run in this installation.
    """
    cfg = dict(cfg)
    kind = cfg.pop('type', None)
    if kind not in ATTACKERS:
        raise ValueError(f'attacker type must be one of {sorted(ATTACKERS)}, got {kind!r}')
    return ATTACKERS[kind](**cfg)
