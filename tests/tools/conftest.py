"""Fixtures of the tool tests: a tiny learned-anonymizer checkpoint in the format of tools/train.py.

The analysis tools import each other as scripts in one folder do, so that folder goes on ``sys.path`` here,
before any test module of this folder is collected."""
import os.path as osp
import sys

import pytest
import torch
from mmengine.config import Config

from mmanon.registry import MODELS, build_in_scope

sys.path.insert(0, osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'tools', 'analysis'))

TINY_ANONYMIZER = dict(type='ResNetAnonymizer', base_channels=4, num_blocks=1, num_downsamples=1, crop_size=(16, 16))


@pytest.fixture
def learned_checkpoint(tmp_path):
    """A checkpoint holding a tiny ResNetAnonymizer, its last convolution randomised so that it changes faces,
    under ``data_preprocessor.anonymizer.``, with the config text in ``meta['cfg']``."""
    anonymizer = build_in_scope(MODELS, TINY_ANONYMIZER)
    torch.nn.init.normal_(anonymizer.output_conv.conv.weight, std=0.05, generator=torch.Generator().manual_seed(0))
    cfg = Config(dict(model=dict(data_preprocessor=dict(
        type='mmanon.AnonymizerDataPreprocessor', anonymizer=TINY_ANONYMIZER, margin=1.5, feather=0.1))))
    state = {f'data_preprocessor.anonymizer.{k}': v for k, v in anonymizer.state_dict().items()}
    state['backbone.conv1.weight'] = torch.zeros(1)  # the rest of the detector, which the tools ignore
    path = tmp_path / 'learned.pth'
    torch.save(dict(state_dict=state, meta=dict(cfg=cfg.pretty_text)), path)
    return str(path)


@pytest.fixture(autouse=True)
def one_thread():
    """The tools' models are tiny here: synchronising threads costs more than they save, ten times more on a
    busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
