"""Every tool that loads a checkpoint: the opt-in flags exist, a checkpoint whose stored config holds code is
refused on every loading path without running it, and a checkpoint that lacks trained parts is refused naming
them."""
import os.path as osp
import runpy
import sys

import cv2
import numpy as np
import pytest
import torch
from mmaction.registry import MODELS as MMACTION_MODELS
from mmengine.config import Config
from mmengine.registry import init_default_scope

from mmanon.apis import load_learned_anonymizer
from mmanon.compat import TRUST_ENV, CheckpointError, UntrustedCheckpointError
from mmanon.evaluation.attackers import CheckpointAttacker
from mmanon.registry import MODELS, build_in_scope

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SMOKE = 'configs/detection/slowonly/slowonly_r18-smoke_1xb2-4x2x1-4i_ava-fixture-rgb.py'
ADVERSARIAL_SMOKE = 'configs/detection/slowonly/slowonly-adversarial_r18-smoke_1xb2-4x2x1-4i_ava-fixture-rgb.py'
HEAD = dict(type='FaceDiscriminatorHead', num_classes=3, input_size=(16, 16), base_channels=4, num_stages=1,
            embed_dims=8)
# Each tool that loads a checkpoint, and whether it checks that the checkpoint covers a trained model whose
# parts may be left out on request (tools that deploy or evaluate an anonymizer never allow that).
TOOLS = {
    'tools/train.py': False,
    'tools/test.py': True,
    'tools/anonymize_video.py': False,
    'tools/deployment/export_onnx.py': False,
    'tools/analysis/eval_face_verification.py': False,
    'tools/analysis/train_attacker.py': True,
    'tools/analysis/visualize_anonymization.py': True,
    'tools/analysis/privacy_utility.py': True,
    'benchmarks/anonymize_video.py': False,
}


def tool(script):
    return runpy.run_path(osp.join(REPO, script))


@pytest.mark.parametrize('script', list(TOOLS))
def test_every_checkpoint_loading_tool_has_the_opt_in_flags(script, monkeypatch, capsys):
    monkeypatch.setattr(sys, 'argv', [script, '--help'])
    with pytest.raises(SystemExit):
        tool(script)['parse_args']()
    text = ' '.join(capsys.readouterr().out.split())
    assert '--trust-checkpoint' in text and TRUST_ENV in text
    assert ('--allow-missing-keys' in text) == TOOLS[script]


@pytest.fixture
def marker(tmp_path):
    return str(tmp_path / 'PWNED')


def with_code(cfg: Config, marker: str) -> str:
    """The config text with a statement that creates ``marker`` when the text is executed."""
    return f'_x = open({marker!r}, "w").close()\n' + cfg.pretty_text


@pytest.fixture
def crafted_anonymizer(learned_checkpoint, marker, tmp_path):
    """The learned-anonymizer checkpoint of the tool tests with code in its stored config: only tensors,
    dicts and strings, so it passes the weights-only loading."""
    checkpoint = torch.load(learned_checkpoint, weights_only=True)
    checkpoint['meta']['cfg'] = with_code(Config.fromstring(checkpoint['meta']['cfg'], '.py'), marker)
    path = str(tmp_path / 'crafted.pth')
    torch.save(checkpoint, path)
    return path


REFUSED = r'crafted.pth: the config stored in meta\["cfg"\] is not made of plain values'


def test_learned_anonymizer_with_code_in_its_config_is_refused(crafted_anonymizer, marker, monkeypatch):
    with pytest.raises(UntrustedCheckpointError, match=REFUSED):
        load_learned_anonymizer(crafted_anonymizer)
    assert not osp.exists(marker)
    monkeypatch.setenv(TRUST_ENV, '1')
    anonymizer, preprocessor = load_learned_anonymizer(crafted_anonymizer)
    assert osp.exists(marker) and preprocessor['margin'] == 1.5


@pytest.mark.parametrize('script,args', [
    ('tools/anonymize_video.py', ['{frames}', '{out}/video_out', '--method', 'learned', '--checkpoint', '{ckpt}']),
    ('tools/deployment/export_onnx.py', ['{ckpt}', '{out}/model.onnx']),
])
def test_tools_refuse_code_in_a_stored_config(script, args, crafted_anonymizer, marker, tmp_path, capsys):
    frames = tmp_path / 'frames'
    frames.mkdir()
    cv2.imwrite(str(frames / '0001.png'), np.zeros((32, 32, 3), np.uint8))
    argv = [a.format(frames=frames, out=tmp_path, ckpt=crafted_anonymizer) for a in args]
    assert tool(script)['main'](argv) == 1
    error = ' '.join(capsys.readouterr().err.split())
    assert 'crafted.pth: the config stored in meta["cfg"] is not made of plain values' in error
    assert '--trust-checkpoint' in error
    assert not osp.exists(marker)


def test_face_verification_refuses_code_in_a_stored_config(crafted_anonymizer, marker):
    build_anonymizer = tool('tools/analysis/eval_face_verification.py')['build_anonymizer']
    with pytest.raises(UntrustedCheckpointError, match=REFUSED):
        build_anonymizer(crafted_anonymizer, 'cpu')
    assert not osp.exists(marker)


def face_classifier_checkpoint(path, cfg_text, drop=()):
    """A tools/train.py checkpoint of a FaceIdentityClassifier: its head's weights under ``head.``."""
    head = build_in_scope(MODELS, HEAD)
    state = {f'head.{k}': v for k, v in head.state_dict().items() if not k.startswith(drop)}
    torch.save(dict(state_dict=state, meta=dict(cfg=cfg_text)), path)
    return head


def test_checkpoint_attacker_refuses_code_in_a_stored_config(tmp_path, marker):
    cfg = Config(dict(model=dict(type='mmanon.FaceIdentityClassifier', head=HEAD)))
    path = str(tmp_path / 'crafted.pth')
    face_classifier_checkpoint(path, with_code(cfg, marker))
    with pytest.raises(UntrustedCheckpointError, match=REFUSED):
        CheckpointAttacker(path)
    assert not osp.exists(marker)
    # The same checkpoint without the code loads, its head read from the config's plain values.
    head = face_classifier_checkpoint(path, cfg.pretty_text)
    attacker = CheckpointAttacker(path)
    for name, value in head.state_dict().items():
        assert torch.equal(attacker.head.state_dict()[name], value)


def test_checkpoint_attacker_refuses_a_head_without_all_its_weights(tmp_path):
    cfg = Config(dict(model=dict(type='mmanon.FaceIdentityClassifier', head=HEAD)))
    path = str(tmp_path / 'partial.pth')
    face_classifier_checkpoint(path, cfg.pretty_text, drop=('fc_cls', ))
    with pytest.raises(CheckpointError, match=r'partial.pth has no weights for fc_cls.\*: it does not fit'):
        CheckpointAttacker(path)


def test_learned_anonymizer_without_all_its_weights_is_refused(learned_checkpoint, tmp_path):
    checkpoint = torch.load(learned_checkpoint, weights_only=True)
    prefix = 'data_preprocessor.anonymizer.output_conv.'
    checkpoint['state_dict'] = {k: v for k, v in checkpoint['state_dict'].items() if not k.startswith(prefix)}
    path = str(tmp_path / 'partial.pth')
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match=rf'partial.pth has no weights for {prefix}\*'):
        load_learned_anonymizer(path)


def test_test_tool_refuses_a_checkpoint_without_the_head(workspace, run_tool):
    """The smoke detector with random weights, less its RoI head: tools/test.py stops before testing."""
    init_default_scope('mmaction')
    model = MMACTION_MODELS.build(Config.fromfile(osp.join(REPO, SMOKE)).model)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith('roi_head.')}
    torch.save(dict(state_dict=state), workspace / 'no_head.pth')
    with pytest.raises(pytest.fail.Exception, match=r'no_head.pth has no weights for roi_head.\*: it '
                       r'does not fit the model. Pass --allow-missing-keys') as failure:
        run_tool(['tools/test.py', SMOKE, 'no_head.pth', '--work-dir', 'out'], workspace)
    assert 'mAP/overall' not in str(failure.value)


def test_test_tool_leaves_out_a_discriminator_the_checkpoint_lacks(workspace, run_tool):
    """A detector trained without a discriminator, tested under a config with one: the test runs, without it."""
    init_default_scope('mmaction')
    model = MMACTION_MODELS.build(Config.fromfile(osp.join(REPO, ADVERSARIAL_SMOKE)).model)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith('data_preprocessor.discriminator.')}
    torch.save(dict(state_dict=state), workspace / 'no_discriminator.pth')
    out = run_tool(['tools/test.py', ADVERSARIAL_SMOKE, 'no_discriminator.pth', '--work-dir', 'out'], workspace)
    log = ' '.join((out.stdout + out.stderr).split())
    assert 'no_discriminator.pth has no weights for data_preprocessor.discriminator.*: it is left out' in log
    assert 'mAP/overall' in log
