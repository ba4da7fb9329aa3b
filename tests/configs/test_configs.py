"""Every config builds through the registry; the adversarial SlowOnly overlay trains on the fixture."""
import glob
import os.path as osp

import pytest
from mmengine.config import Config
from mmengine.registry import DefaultScope

from mmanon.compat import load_local_checkpoint
from mmanon.registry import HOOKS

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = sorted(glob.glob(osp.join(REPO, 'configs/detection/*/*.py')))
SLOWONLY_ADVERSARIAL = osp.join(
    REPO, 'configs/detection/slowonly/slowonly-adversarial_kinetics400-pretrained-r50_8xb16-4x16x1-20e_ava21-rgb.py')
SMOKE = osp.join(REPO, 'configs/detection/slowonly/slowonly_r18-smoke_1xb2-4x2x1-4i_ava-fixture-rgb.py')


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: osp.basename(p)[:-3])
def test_config_builds(path):
    from mmaction.registry import MODELS
    cfg = Config.fromfile(path)
    cfg.model.init_cfg = None
    anonymizer = cfg.model.data_preprocessor.get('anonymizer')
    if anonymizer is not None:
        anonymizer.pop('init_cfg', None)  # the learned overlay loads a trained anonymizer
    with DefaultScope.overwrite_default_scope('mmaction'):
        model = MODELS.build(cfg.model)
        for hook in cfg.get('custom_hooks', []):
            HOOKS.build(dict(hook))
    assert type(model).__name__ == 'FastRCNN'
    expected = 'ActionDataPreprocessor' if 'mmanon' not in cfg.model.data_preprocessor.type else \
        'AnonymizerDataPreprocessor'
    assert type(model.data_preprocessor).__name__ == expected


def test_adversarial_slowonly_overlay_trains_on_the_fixture(workspace, run_tool):
    cfg = Config.fromfile(SLOWONLY_ADVERSARIAL)
    smoke = Config.fromfile(SMOKE)
    # The stock R50 detector and the overlay's players, on the fixture's data at the smoke test's sizes.
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader', 'train_cfg', 'param_scheduler',
                'default_hooks', 'log_processor', 'env_cfg', 'randomness'):
        cfg[key] = smoke[key]
    cfg.train_dataloader.dataset.type = 'mmanon.AVAFaceDataset'
    cfg.train_cfg.max_iters = 2
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.model.init_cfg = None
    cfg.model.roi_head.bbox_head.update(num_classes=6, topk=(1, 3))
    cfg.model.data_preprocessor.discriminator.num_classes = 4
    cfg.custom_hooks[1].update(warmup_iters=0, ramp_iters=0)
    cfg.dump(str(workspace / 'overlay_on_fixture.py'))
    out = run_tool(['tools/train.py', str(workspace / 'overlay_on_fixture.py'), '--work-dir', 'w'], workspace)
    assert 'loss_adv: ' in out.stdout + out.stderr
    checkpoint = load_local_checkpoint(str(workspace / 'w' / 'iter_2.pth'))
    assert checkpoint['meta']['iter'] == 2
    assert 'data_preprocessor.discriminator.fc_cls.weight' in checkpoint['state_dict']
    assert 'adversarial_training' in checkpoint
