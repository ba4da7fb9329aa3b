import os.path as osp
import runpy

import numpy as np
import onnxruntime
import torch

from mmanon.apis import load_learned_anonymizer

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
export_onnx = runpy.run_path(osp.join(REPO, 'tools', 'deployment', 'export_onnx.py'))


def test_export_matches_pytorch_with_a_dynamic_batch(tmp_path, learned_checkpoint, capsys):
    out = tmp_path / 'anonymizer.onnx'
    assert export_onnx['main']([learned_checkpoint, str(out), '--opset', '17']) == 0
    assert 'max abs difference' in capsys.readouterr().out
    anonymizer, _ = load_learned_anonymizer(learned_checkpoint)
    session = onnxruntime.InferenceSession(str(out), providers=['CPUExecutionProvider'])
    assert session.get_inputs()[0].shape[1:] == [3, 16, 16]
    for batch in (1, 5):
        crops = torch.rand(batch, 3, 16, 16, generator=torch.Generator().manual_seed(batch)) * 255
        with torch.no_grad():
            expected = anonymizer(crops).numpy()
        actual = session.run(None, dict(crops=crops.numpy()))[0]
        assert np.abs(actual - expected).max() / 255 <= 1e-4
        assert np.abs(expected - crops.numpy()).max() > 1  # the model does change the crops


def test_export_at_another_crop_size(tmp_path, learned_checkpoint):
    out = tmp_path / 'anonymizer.onnx'
    assert export_onnx['main']([learned_checkpoint, str(out), '--crop-size', '32', '24']) == 0
    session = onnxruntime.InferenceSession(str(out), providers=['CPUExecutionProvider'])
    assert session.get_inputs()[0].shape[1:] == [3, 32, 24]


def test_checkpoint_without_a_learned_anonymizer_writes_nothing(tmp_path, capsys):
    path = tmp_path / 'plain.pth'
    torch.save(dict(state_dict={'backbone.w': torch.zeros(1)}, meta=dict(cfg='model = dict(type="FastRCNN")')),
               path)
    assert export_onnx['main']([str(path), str(tmp_path / 'a.onnx')]) == 1
    assert 'plain.pth' in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ['plain.pth']
