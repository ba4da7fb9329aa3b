import os
import os.path as osp

import pytest
import torch
from mmengine import Config

from mmanon.models.anonymizers import (BoxBlur, GaussianBlur, GaussianNoise, IdentityAnonymizer, Pixelate,
                                       ResNetAnonymizer, SolidMask)
from mmanon.registry import MODELS, build_in_scope

CONFIG_DIR = osp.join(osp.dirname(__file__), '..', '..', '..', 'configs', '_base_', 'anonymizers')
CONFIGS = dict(
    identity=IdentityAnonymizer,
    box_blur=BoxBlur,
    gaussian_blur=GaussianBlur,
    pixelate=Pixelate,
    solid_mask=SolidMask,
    gaussian_noise=GaussianNoise,
    learned=ResNetAnonymizer)


@pytest.mark.parametrize('name, cls', CONFIGS.items())
def test_config_builds(name, cls):
    cfg = Config.fromfile(osp.join(CONFIG_DIR, f'{name}.py'))
    # Only the anonymizer: an overlay combines this base with others, and bases may not share keys.
    assert set(cfg.keys()) == {'anonymizer'}
    anonymizer = build_in_scope(MODELS, cfg.anonymizer)
    assert type(anonymizer) is cls
    size = anonymizer.crop_size or (24, 20)
    crops = torch.rand(2, 3, *size) * 255
    assert anonymizer(crops).shape == crops.shape


def test_every_config_is_tested():
    assert sorted(f'{name}.py' for name in CONFIGS) == sorted(
        f for f in os.listdir(CONFIG_DIR) if f.endswith('.py'))
