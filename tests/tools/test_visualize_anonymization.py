"""tools/analysis/visualize_anonymization.py: raw | anonymized frames and the face grid, checked pixel by pixel."""
import argparse
import os.path as osp

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config

from face_configs import write_face_config  # noqa: I100  (tests/tools is on sys.path)

import train_attacker  # noqa: E402,I100  (tools/analysis is on sys.path, see conftest.py)
import visualize_anonymization as tool  # noqa: E402

SCALE, CELL, NUM_FACES = 2, 64, 3
CAPTION = 20  # rows at the top of a frame that the 'raw' / 'anonymized' captions may cover


@pytest.fixture(scope='module')
def drawn(module_workspace):
    """Frames of the masked detector (actions above a score of 1.1, i.e. none, so that only the captions are
    drawn) and a grid with the mask and pixelation; the detector is untrained, drawing needs no good weights."""
    ws = module_workspace
    configs = dict(mask=write_face_config(ws / 'mask.py', anonymizer='SolidMask'),
                   pixelate=write_face_config(ws / 'pixelate.py', anonymizer='Pixelate', block_size=4))
    model = train_attacker.load_detector(Config.fromfile(configs['mask']))
    torch.save(dict(state_dict=model.state_dict()), ws / 'mask.pth')
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(ws)
        code = tool.main([configs['mask'], str(ws / 'mask.pth'), '--out-dir', 'figures', '--methods',
                          configs['pixelate'], '--num-clips', '2', '--num-faces', str(NUM_FACES), '--scale',
                          str(SCALE), '--cell-size', str(CELL), '--score-thr', '1.1', '--num-workers', '0'])
        dataset = train_attacker.face_loader(Config.fromfile(configs['mask']), 'val').dataset
        samples = [dataset[i] for i in range(len(dataset))]
    return dict(ws=ws, code=code, configs=configs, samples=samples)


def read_rgb(path):
    image = cv2.imread(str(path))
    assert image is not None, path
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def test_frames_show_raw_and_masked_key_frames(drawn):
    assert drawn['code'] == 0
    assert len(drawn['samples']) == 2  # the fixture's val video has two keyframes: both are drawn
    for sample in drawn['samples']:
        meta = sample['data_samples'].metainfo
        image = read_rgb(drawn['ws'] / 'figures' / 'frames' / f'{meta["video_id"]}_{meta["timestamp"]}.png')
        clip = sample['inputs']  # (C, T, H, W) uint8 RGB
        height, width = clip.shape[-2:]
        assert image.shape == (height * SCALE, 2 * width * SCALE, 3)
        key = clip[:, clip.shape[1] // 2].permute(1, 2, 0).numpy()
        raw, anonymized = image[:, :width * SCALE], image[:, width * SCALE:]
        expected = cv2.resize(key, (width * SCALE, height * SCALE), interpolation=cv2.INTER_NEAREST)
        assert np.array_equal(raw[CAPTION:], expected[CAPTION:])
        # Inside each face box the mask is solid black; the raw face is not.
        faces = sample['data_samples'].gt_faces.bboxes
        assert len(faces) > 0
        for x1, y1, x2, y2 in (faces * SCALE).round().long().tolist():
            assert (anonymized[y1 + 1:y2 - 1, x1 + 1:x2 - 1] == 0).all()
            assert raw[y1 + 1:y2 - 1, x1 + 1:x2 - 1].mean() > 40
        # Elsewhere, beyond the anonymized regions (twice the face, feathered), the halves agree.
        outside = np.ones((height * SCALE, width * SCALE), bool)
        outside[:CAPTION] = False
        for x1, y1, x2, y2 in faces.tolist():
            cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
            outside[max(0, int((cy - h) * SCALE) - 2):int((cy + h) * SCALE) + 3,
                    max(0, int((cx - w) * SCALE) - 2):int((cx + w) * SCALE) + 3] = False
        assert np.array_equal(raw[outside], anonymized[outside])


def test_actions_above_the_threshold_are_drawn(drawn, monkeypatch):
    monkeypatch.chdir(drawn['ws'])
    config = Config.fromfile(drawn['configs']['mask'])
    model = train_attacker.load_detector(config, str(drawn['ws'] / 'mask.pth'))
    pixels = tool.pixel_preprocessor(config, model)
    visualizer = tool.Visualizer.get_instance('test_visualize_anonymization')

    def boxes_drawn(score_thr):
        args = argparse.Namespace(score_thr=score_thr, max_labels=2, scale=SCALE)
        image = tool.draw_clip(model, pixels, drawn['samples'][0], config, visualizer, args)
        # Box pixels: the box colour (pure green) blended over the frame; the toy's frames have none that green.
        image = image.astype(int)
        return (image[..., 1] - image[..., 0] - image[..., 2] > 150).sum()

    assert boxes_drawn(1.1) == 0
    assert boxes_drawn(0.) > 100


def test_face_grid(drawn):
    grid = read_rgb(drawn['ws'] / 'figures' / 'face_grid.png')
    columns = 3  # raw, the config's SolidMask, the --methods Pixelate
    step = CELL + tool.GRID_PAD
    assert grid.shape == (tool.GRID_HEADER + NUM_FACES * step, tool.GRID_PAD + columns * step, 3)

    def cell(row, col):
        y, x = tool.GRID_HEADER + row * step, tool.GRID_PAD + col * step
        return grid[y:y + CELL, x:x + CELL]

    for row in range(NUM_FACES):
        raw, masked, pixelated = (cell(row, col) for col in range(columns))
        assert (masked == 0).all()
        # The lower half of the raw cell is clear of the identity label.
        assert raw[CELL // 2:].mean() > 40 and not np.array_equal(raw[CELL // 2:], pixelated[CELL // 2:])
        assert pixelated.mean() > 40


def test_bad_method_config(tmp_path, capsys):
    assert tool.main(['a.py', 'b.pth', '--out-dir', str(tmp_path), '--methods', 'missing.py']) == 1
    assert 'missing.py does not exist' in capsys.readouterr().err
    assert not osp.exists(tmp_path / 'face_grid.png')
