"""mmanon's overlays compose with every spatio-temporal detection config that the installed mmaction2 ships.

The configs are found at test time under mmaction2's packaged ``configs/detection``; each is composed, as a user
would, with the README's overlay lines (the Gaussian-blur one and the adversarial one) and builds its model, its
optimizer wrapper and its hooks as the Runner does (the adversarial hook takes its players out of the detector's
optimizer). One training config per family (each folder) takes a training step with each overlay on a tiny
generated batch; the long-term feature bank of LFB is inferred first, by the family's infer config under the same
overlay, on the same batch.
"""
import copy
import functools
import gc
import glob
import os.path as osp

import mmaction
import pytest
import torch
from mmaction.structures import ActionDataSample
from mmengine.config import Config
from mmengine.optim import OptimWrapper, build_optim_wrapper
from mmengine.registry import DefaultScope
from mmengine.structures import InstanceData

from mmanon.engine.hooks import AdversarialTrainingHook
from mmanon.models import AnonymizerDataPreprocessor
from mmanon.registry import HOOKS, MODELS

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DETECTION = osp.join(osp.dirname(mmaction.__file__), '.mim', 'configs', 'detection')
STOCK_CONFIGS = sorted(osp.relpath(p, DETECTION) for p in glob.glob(osp.join(DETECTION, '*', '*.py')))
FAMILIES = sorted({osp.dirname(config) for config in STOCK_CONFIGS})
OVERLAYS = ('gaussian-blur', 'adversarial')
# The README's overlays; a config without training (LFB's infer configs) takes the model line only.
MODEL_LINES = {
    'gaussian-blur': """
_base_ = ['mmaction::detection/{config}', '{repo}/configs/_base_/anonymizers/gaussian_blur.py']
custom_imports = dict(imports=['mmanon'], allow_failed_imports=False)
model = dict(
    data_preprocessor=dict(type='mmanon.AnonymizerDataPreprocessor', anonymizer={{{{_base_.anonymizer}}}}))
""",
    'adversarial': """
_base_ = ['mmaction::detection/{config}', '{repo}/configs/_base_/adversarial/ava_adversarial.py']
custom_imports = dict(imports=['mmanon'], allow_failed_imports=False)
model = dict(data_preprocessor={{{{_base_.adversarial_preprocessor}}}})
"""
}
TRAINING_LINES = {
    'gaussian-blur': '',
    'adversarial': """
custom_hooks = [dict(type='mmanon.RandomStateHook'), {{_base_.adversarial_hook}}]
val_evaluator = [{{_base_.val_evaluator}}, {{_base_.privacy_metric}}]
test_evaluator = val_evaluator
"""
}
# For the training steps: players sized for a CPU test (as --cfg-options would set them), not the paper's.
SMALL_PLAYERS = {
    'model.data_preprocessor.anonymizer': dict(base_channels=8, num_blocks=1, crop_size=(32, 32)),
    'model.data_preprocessor.discriminator': dict(num_classes=8, input_size=(32, 32), base_channels=8, num_stages=2,
                                                  embed_dims=16),
    'model.data_preprocessor.face_crop_size': (32, 32)
}
# The AVA configs' datasets become AVAFaceDataset (AVA-Kinetics' AVAKineticsDataset has no face counterpart yet).
AVA_DATASET_LINES = {
    'gaussian-blur': '',
    'adversarial': """
train_dataloader = dict(dataset=dict(type='mmanon.AVAFaceDataset'))
val_dataloader = dict(dataset=dict(type='mmanon.AVAFaceDataset'))
test_dataloader = val_dataloader
"""
}


@functools.lru_cache(maxsize=None)
def _parsed(config: str) -> Config:
    return Config.fromfile(osp.join(DETECTION, config))


def stock_config(config: str) -> Config:
    """The stock config, parsed once per session."""
    return copy.deepcopy(_parsed(config))


def is_training_config(cfg: Config) -> bool:
    return cfg.get('train_cfg') is not None and cfg.get('optim_wrapper') is not None


def compose(config: str, overlay: str, tmp_path, **options) -> Config:
    """The stock ``config`` with the README's ``overlay`` lines, as the user's file would hold them;
    ``options`` are set afterwards as ``--cfg-options`` would."""
    stock = stock_config(config)
    text = MODEL_LINES[overlay].format(config=config, repo=REPO)
    if is_training_config(stock):
        text += TRAINING_LINES[overlay]
        if stock.train_dataloader.dataset.type == 'AVADataset':
            text += AVA_DATASET_LINES[overlay]
    path = tmp_path / f'{overlay}_{osp.basename(config)}'
    path.write_text(text)
    cfg = Config.fromfile(str(path))
    cfg.merge_from_dict(options)
    return cfg


def bank_options(cfg: Config, bank_dir: str) -> dict:
    """LFB's long-term feature bank in ``bank_dir``, on the CPU: where its infer configs write it and its
    training configs read it."""
    head = cfg.model.roi_head.get('shared_head') or {}
    if head.get('type') == 'LFBInferHead':
        return {'model.roi_head.shared_head.lfb_prefix_path': bank_dir}
    if head.get('type') == 'FBOHead':
        return {
            'model.roi_head.shared_head.lfb_cfg.lfb_prefix_path': bank_dir,
            'model.roi_head.shared_head.lfb_cfg.device': 'cpu',
            'model.roi_head.shared_head.lfb_cfg.dataset_modes': ('train', )
        }
    return {}


def build(cfg: Config):
    """The model, its optimizer wrapper (training configs) and its hooks, as the Runner builds them, and the
    adversarial hook attached as in its ``before_run``."""
    with DefaultScope.overwrite_default_scope('mmaction'):
        model = MODELS.build(cfg.model)
        optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper) if is_training_config(cfg) else None
        hooks = [HOOKS.build(dict(hook)) for hook in cfg.get('custom_hooks', [])]
    adversarial = next((h for h in hooks if isinstance(h, AdversarialTrainingHook)), None)
    if adversarial is not None:
        adversarial.attach(model, optim_wrapper)
    return model, optim_wrapper, adversarial


@pytest.mark.parametrize('overlay', OVERLAYS)
@pytest.mark.parametrize('config', STOCK_CONFIGS)
def test_overlay_builds(config, overlay, tmp_path):
    cfg = compose(config, overlay, tmp_path)
    torch.save({}, str(tmp_path / 'lfb_train.pkl'))  # an empty bank, for LFB's training configs
    cfg.merge_from_dict(bank_options(cfg, str(tmp_path)))
    model, optim_wrapper, hook = build(cfg)
    assert isinstance(model.data_preprocessor, AnonymizerDataPreprocessor)
    assert type(model).__name__ == stock_config(config).model.type
    if optim_wrapper is None:
        return
    in_optimizer = {id(p) for group in optim_wrapper.optimizer.param_groups for p in group['params']}
    detector = {id(p) for n, p in model.named_parameters() if not n.startswith('data_preprocessor.')}
    if overlay == 'adversarial':
        # The players learn with their own optimizers only, whatever the detector's constructor.
        assert in_optimizer == detector
        assert isinstance(hook.anonymizer_wrapper, OptimWrapper) and isinstance(hook.discriminator_wrapper,
                                                                                OptimWrapper)
    else:
        assert detector <= in_optimizer


def family_config(family: str) -> str:
    """The family's config that trains: the first (by name) training config of its folder."""
    return next(c for c in STOCK_CONFIGS if osp.dirname(c) == family and is_training_config(stock_config(c)))


def tiny_batch(cfg: Config, size: int = 32):
    """Two clips of the config's clip length at ``size`` pixels, two persons each with an identity and an
    action, as the AVA pipeline packs them."""
    pipeline = {t['type']: t for t in cfg.train_dataloader.dataset.pipeline}
    frames = pipeline['SampleAVAFrames']['clip_len']
    generator = torch.Generator().manual_seed(0)
    inputs, samples = [], []
    boxes = torch.tensor([[1., 2., 15., 31.], [17., 1., 31., 30.]])
    num_classes = cfg.model.roi_head.bbox_head.num_classes
    for n in range(2):
        inputs.append(torch.randint(0, 256, (3, frames, size, size), generator=generator, dtype=torch.uint8))
        labels = torch.zeros(2, num_classes)
        labels[:, 1 + n] = 1
        sample = ActionDataSample(metainfo=dict(img_shape=(size, size), img_key=f'video{n},902'))
        sample.gt_instances = InstanceData(bboxes=boxes, labels=labels, identities=torch.tensor([2 * n, 2 * n + 1]))
        sample.proposals = InstanceData(bboxes=boxes.clone(), scores=torch.ones(2))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def infer_bank(config: str, overlay: str, tmp_path, batch: dict) -> str:
    """The long-term feature bank of ``batch``, inferred by the infer config of ``config``'s family composed with
    the same overlay (so that the bank holds features of anonymized clips only)."""
    bank_dir = str(tmp_path / 'bank')
    infer = next(c for c in STOCK_CONFIGS if osp.dirname(c) == osp.dirname(config)
                 and bank_options(stock_config(c), '') and not is_training_config(stock_config(c)))
    cfg = compose(infer, overlay, tmp_path, **(SMALL_PLAYERS if overlay == 'adversarial' else {}))
    cfg.merge_from_dict(bank_options(cfg, bank_dir))
    model, _, _ = build(cfg)
    model.eval()
    with torch.no_grad():
        for clip, sample in zip(batch['inputs'], batch['data_samples']):  # one clip per test step, as in AVA
            model.test_step(dict(inputs=[clip], data_samples=[sample]))
    # LFBInferHead writes the bank when it is destroyed.
    del model
    gc.collect()
    assert set(torch.load(osp.join(bank_dir, 'lfb_train.pkl'), weights_only=True)) == {'video0', 'video1'}
    return bank_dir


@pytest.mark.parametrize('overlay', OVERLAYS)
@pytest.mark.parametrize('family', FAMILIES)
def test_one_config_per_family_trains_a_step(family, overlay, tmp_path):
    config = family_config(family)
    cfg = compose(config, overlay, tmp_path, **(SMALL_PLAYERS if overlay == 'adversarial' else {}))
    batch = tiny_batch(cfg)
    if bank_options(cfg, ''):
        cfg.merge_from_dict(bank_options(cfg, infer_bank(config, overlay, tmp_path, tiny_batch(cfg))))
    model, optim_wrapper, hook = build(cfg)
    model.train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    if hook is not None:
        hook.before_step(model, optim_wrapper, 0)
    log_vars = model.train_step(batch, optim_wrapper)
    if hook is not None:
        scalars = hook.after_step(model, optim_wrapper, 0)
        assert scalars['adv_video_faces'] == 4 and {'loss_adv', 'loss_l1', 'loss_temporal'} <= set(log_vars)
    assert torch.isfinite(log_vars['loss'])
    moved = {n.split('.')[1] if n.startswith('data_preprocessor.') else n.split('.')[0]
             for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert {'backbone', 'roi_head'} <= moved
    if overlay == 'adversarial':
        assert {'anonymizer', 'discriminator'} <= moved
