"""Faces of a benchmark as the anonymizer data preprocessor sees them: the building blocks of the analysis
tools (the adaptive attacker's training faces, the figures of raw against anonymized faces)."""
import copy
import os.path as osp
from typing import Callable, Optional

import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import DATASETS, MODELS, init_default_scope
from mmengine.structures import InstanceData
from mmengine.utils import ProgressBar
from torch.utils.data import DataLoader

from mmanon.models.data_preprocessors import AnonymizerDataPreprocessor
from mmanon.models.utils import anonymize_crops, to_uint8
from mmanon.utils.checkpoint import load_trained_checkpoint

# What the preprocessor attaches to each data sample in evaluation mode and what the tools keep of it.
FACE_FIELDS = ('identities', 'raw_crops', 'anonymized_crops')


def load_detector(config: Config,
                  checkpoint: Optional[str] = None,
                  device: str = 'cpu',
                  allow_missing_keys: bool = False) -> torch.nn.Module:
    """Build the detector of a config, in evaluation mode, with the weights of a checkpoint.

    Args:
        config (Config): A detector config whose ``model.data_preprocessor`` is an
            :class:`AnonymizerDataPreprocessor`.
        checkpoint (str, optional): A checkpoint of ``tools/train.py``; one that lacks trained parts of the
            model fails here, not with wrong faces later (see :func:`mmanon.utils.load_trained_checkpoint`).
            Defaults to None, allowed only when the anonymizer has no weights: the tools that use this read the
            faces, which then do not depend on the weights.
        device (str): Where to put the model. Defaults to 'cpu'.
        allow_missing_keys (bool): Load a checkpoint that lacks trained parts anyway. Defaults to False.

    Returns:
        nn.Module: The detector; its ``data_preprocessor`` anonymizes.
    """
    init_default_scope(config.get('default_scope', 'mmaction'))
    model = MODELS.build(copy.deepcopy(config.model))
    preprocessor = model.data_preprocessor
    name = osp.basename(config.filename or '<config>')
    if not isinstance(preprocessor, AnonymizerDataPreprocessor):
        raise ValueError(f'{name}: model.data_preprocessor is a {type(preprocessor).__name__}, not an '
                         'mmanon.AnonymizerDataPreprocessor, so it neither anonymizes nor cuts out faces')
    if checkpoint is not None:
        load_trained_checkpoint(model, checkpoint, allow_missing_keys)
    elif any(True for _ in preprocessor.anonymizer.parameters()):
        raise ValueError(f'{name}: the anonymizer {type(preprocessor.anonymizer).__name__} has learned weights; '
                         'give the CHECKPOINT that trained it')
    return model.to(device).eval()


def face_loader(config: Config, split: str, num_workers: Optional[int] = None) -> DataLoader:
    """A loader over the ``<split>_dataloader`` dataset of a config, read once, in order, with the val pipeline.

    The val pipeline has no random augmentation and ``test_mode`` keeps every sample, so every pass yields the
    same items; for ``split='train'`` they are the training items, seen as in evaluation. Detector configs
    (AVA clips) and face-identity configs (face crops) follow the same layout.

    Args:
        config (Config): The config.
        split (str): 'train', 'val' or 'test'.
        num_workers (int, optional): Loading processes. Defaults to None, the config's.

    Returns:
        DataLoader: Batches as mmengine's ``pseudo_collate`` makes them, of the config's batch size.
    """
    name = osp.basename(config.filename or '<config>')
    loader_cfg = config.get(f'{split}_dataloader') or {}
    dataset_cfg = copy.deepcopy(loader_cfg.get('dataset'))
    val_dataset = (config.get('val_dataloader') or {}).get('dataset') or {}
    if dataset_cfg is None or 'pipeline' not in dataset_cfg or 'pipeline' not in val_dataset:
        raise ValueError(f'{name}: {split}_dataloader.dataset and val_dataloader.dataset must be datasets with a '
                         '"pipeline" (dataset wrappers are not supported)')
    dataset_cfg['pipeline'] = copy.deepcopy(val_dataset['pipeline'])
    dataset_cfg['test_mode'] = True
    init_default_scope(config.get('default_scope', 'mmaction'))
    try:
        dataset = DATASETS.build(dataset_cfg)
    except KeyError as e:
        raise ValueError(f'{name}: cannot build {split}_dataloader.dataset of type {dataset_cfg.get("type")!r}: '
                         f'{e}') from e
    return DataLoader(
        dataset,
        batch_size=loader_cfg.get('batch_size', 1),
        shuffle=False,
        num_workers=loader_cfg.get('num_workers', 0) if num_workers is None else num_workers,
        collate_fn=pseudo_collate)


def clip_faces(preprocessor: AnonymizerDataPreprocessor) -> Callable[[dict], InstanceData]:
    """The faces of a batch of clips, as the preprocessor attaches them in evaluation mode.

    Args:
        preprocessor (AnonymizerDataPreprocessor): The detector's data preprocessor.

    Returns:
        callable: ``batch -> InstanceData`` with at least ``identities``, ``raw_crops`` and
        ``anonymized_crops`` (uint8), every face of the batch in order.
    """

    def faces_of_batch(batch: dict) -> InstanceData:
        samples = preprocessor(batch, training=False)['data_samples']
        return InstanceData.cat([sample.faces for sample in samples])

    return faces_of_batch


def _identity_label(sample) -> int:
    """The identity in a face-identity dataset's data sample (``gt_label``, one value)."""
    label = sample.get('gt_label') if hasattr(sample, 'get') else None
    if label is None:
        raise ValueError(f'a face-identity data sample has no gt_label: {sample!r}')
    label = torch.as_tensor(label).reshape(-1)
    if label.numel() != 1:
        raise ValueError(f'a face-identity data sample must have one gt_label, got {label.tolist()}')
    return int(label[0])


def crop_faces(anonymizer: torch.nn.Module, device: str) -> Callable[[dict], InstanceData]:
    """The faces of a batch of a face-identity dataset, each whole crop anonymized.

    Args:
        anonymizer (nn.Module): The anonymizer of the detector's data preprocessor.
        device (str): Where it runs.

    Returns:
        callable: ``batch -> InstanceData`` with ``identities``, ``raw_crops`` and ``anonymized_crops`` (uint8).
    """

    def faces_of_batch(batch: dict) -> InstanceData:
        shapes = sorted({tuple(crop.shape) for crop in batch['inputs']})
        if len(shapes) != 1 or len(shapes[0]) != 3:
            raise ValueError(f'face-identity crops must be (C, H, W) tensors of one size, got shapes {shapes}')
        raw = torch.stack(batch['inputs']).to(device)
        if raw.dtype != torch.uint8:
            raise ValueError(f'face-identity crops must be uint8 pixel values, got {raw.dtype}')
        # The crop is one "track" of len(raw) faces: anonymize_crops resizes them in one batch where needed.
        anonymized = anonymize_crops(anonymizer, [raw.float()])[0]
        identities = torch.tensor([_identity_label(sample) for sample in batch['data_samples']])
        return InstanceData(identities=identities, raw_crops=raw, anonymized_crops=to_uint8(anonymized))

    return faces_of_batch


@torch.no_grad()
def collect_faces(loader: DataLoader,
                  faces_of_batch: Callable[[dict], InstanceData],
                  max_faces: Optional[int] = None,
                  progress: bool = True) -> InstanceData:
    """The faces of known identity of a loader's batches, in order, on the CPU.

    Args:
        loader (DataLoader): See :func:`face_loader`.
        faces_of_batch (callable): See :func:`clip_faces` and :func:`crop_faces`.
        max_faces (int, optional): Stop once this many are found. Defaults to None (all).
        progress (bool): Show a progress bar over the batches. Defaults to True.

    Returns:
        InstanceData: ``identities`` (N,) long, ``raw_crops`` and ``anonymized_crops`` (N, C, h, w) uint8.
    """
    parts, found = [], 0
    bar = ProgressBar(len(loader)) if progress else None
    for batch in loader:
        faces = faces_of_batch(batch)
        faces = faces[faces.identities >= 0]
        parts.append(InstanceData(**{key: faces.get(key).cpu() for key in FACE_FIELDS}))
        found += len(faces)
        if bar is not None:
            bar.update()
        if max_faces is not None and found >= max_faces:
            break
    if bar is not None:
        print()
    if not parts:
        raise ValueError('the dataset is empty')
    faces = InstanceData.cat(parts)
    return faces if max_faces is None else faces[:max_faces]
