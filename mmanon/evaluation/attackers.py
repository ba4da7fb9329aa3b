"""Face-recognition attackers that try to identify anonymized faces.

An attacker turns faces into identity embeddings. :class:`FacePrivacyMetric` compares the embeddings of the
raw and the anonymized version of each face; analysis tools can use the same classes on their own crops.
Build one from a config with :func:`build_attacker`.

Every attacker has a ``name`` and ``embed_faces(faces)``, which returns the raw and anonymized embeddings of
the faces of each sample of a batch. Attackers that look at pixels derive from :class:`CropAttacker` and also
have ``embed(crops)``.
"""
import os.path as osp
from abc import ABC, abstractmethod
from collections import defaultdict
from typing import Dict, List, Optional, Sequence, Tuple, Type

import numpy as np
import torch
from mmanon.compat import checkpoint_config, load_local_checkpoint
from mmanon.registry import MODELS, build_in_scope
from mmanon.utils.checkpoint import check_trained_keys

Embeddings = Optional[Tuple[np.ndarray, np.ndarray]]
# Where the model attaches its own discriminator's embeddings of the raw and the anonymized crops.
EMBEDDING_KEYS = ('raw_embeddings', 'anonymized_embeddings')


class AttackerUnavailable(RuntimeError):
    """An attacker cannot run in this installation (e.g. an optional package is missing)."""


class CropAttacker(ABC):
    """Base of the attackers that embed face crops.

    Args:
        name (str): Name of the attacker in metric keys.
        batch_size (int): Crops embedded per call of the underlying model. Defaults to 64.
    """

    def __init__(self, name: str, batch_size: int = 64) -> None:
        if batch_size < 1:
            raise ValueError(f'batch_size must be positive, got {batch_size}')
        self.name = name
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
        crops = [sample[key] for sample in faces for key in ('raw_crops', 'anonymized_crops')]
        embeddings = [None] * len(crops)
        groups = defaultdict(list)
        for i, c in enumerate(crops):
            groups[(tuple(c.shape[1:]), c.device)].append(i)
        for members in groups.values():
            embedded = self.embed(torch.cat([crops[i] for i in members]))
            splits = np.cumsum([len(crops[i]) for i in members])[:-1]
            for i, part in zip(members, np.split(embedded, splits)):
                embeddings[i] = part
        return list(zip(embeddings[0::2], embeddings[1::2]))

    @property
    @abstractmethod
    def embed_dims(self) -> int:
        """Size of the embeddings."""

    @abstractmethod
    def _embed_batch(self, crops: torch.Tensor) -> np.ndarray:
        """Embed at most ``batch_size`` uint8 crops (called without grad)."""


class DiscriminatorAttacker:
    """The model's own co-trained face discriminator, whose embeddings the model attaches to the faces as
    ``raw_embeddings`` and ``anonymized_embeddings``; it cannot embed other crops.

    Args:
        name (str): Name of the attacker in metric keys. Defaults to 'discriminator'.
    """

    def __init__(self, name: str = 'discriminator') -> None:
        self.name = name

    def embed_faces(self, faces: Sequence[dict]) -> List[Embeddings]:
        """The embeddings attached to the faces of several samples.

        Args:
            faces (Sequence[dict]): Per sample, the faces, as in :class:`FacePrivacyMetric`.

        Returns:
            list[tuple[np.ndarray, np.ndarray] | None]: Per sample, (F, E) float32 raw and anonymized
            embeddings, or None where the model attached none.
        """
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

    @property
    def embed_dims(self) -> int:
        return self.head.embed_dims

    def _embed_batch(self, crops: torch.Tensor) -> np.ndarray:
        self.head.to(crops.device)
        return self.head(crops.float()).cpu().numpy()


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
                                  dlib=DlibAttacker)


def build_attacker(cfg: dict):
    """Build an attacker from a config.

    Args:
        cfg (dict): ``type``, one of 'discriminator', 'checkpoint' and 'dlib', and the arguments of
            :class:`DiscriminatorAttacker`, :class:`CheckpointAttacker` or :class:`DlibAttacker` respectively.

    Returns:
        DiscriminatorAttacker | CropAttacker: The attacker.

    Raises:
        AttackerUnavailable: If the attacker cannot run in this installation.
    """
    cfg = dict(cfg)
    kind = cfg.pop('type', None)
    if kind not in ATTACKERS:
        raise ValueError(f'attacker type must be one of {sorted(ATTACKERS)}, got {kind!r}')
    return ATTACKERS[kind](**cfg)
