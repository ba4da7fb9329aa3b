"""tools/analysis/privacy_utility.py: the report of two prepared methods agrees with the privacy metric, and the
target's verdict follows the numbers."""
import csv
import glob
import json
import math
import os
import shutil

import cv2
import numpy as np
import pytest
from mmengine.config import Config

from mmanon.datasets.face_annotations import load_face_file
from mmanon.evaluation.metrics import FacePrivacyMetric
from face_configs import write_face_config  # noqa: I100  (tests/tools is on sys.path)

import privacy_utility  # noqa: E402,I100  (tools/analysis is on sys.path, see conftest.py)
import train_attacker  # noqa: E402

METHODS = ('raw', 'solid-mask')
NAN = float('nan')


@pytest.fixture(scope='module')
def report(module_workspace, run_tool):
    """Prepared work dirs of the smoke config with two anonymizers, then the report with --skip-train, short
    attacker trainings and one thread per process (the models are tiny).

    One detector is trained (2 iterations, on raw faces) and its checkpoint serves both methods: SolidMask has
    no weights, so the checkpoint is one of the masked config too, and a second training would only add time.
    """
    ws = module_workspace
    configs = dict(zip(METHODS, (write_face_config(ws / 'raw.py'), write_face_config(ws / 'mask.py',
                                                                                         anonymizer='SolidMask'))))
    run_tool(['tools/train.py', configs['raw'], '--work-dir', 'report/raw', '--no-validate', '--cfg-options',
              'train_cfg.max_iters=2'], ws, env=dict(OMP_NUM_THREADS='1'))
    os.makedirs(ws / 'report' / 'solid-mask')
    shutil.copy(ws / 'report' / 'raw' / 'iter_2.pth', ws / 'report' / 'solid-mask' / 'iter_2.pth')
    (ws / 'report' / 'solid-mask' / 'last_checkpoint').write_text(str(ws / 'report' / 'solid-mask' / 'iter_2.pth'))
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(ws)
        patch.setenv('OMP_NUM_THREADS', '1')
        code = privacy_utility.main(['--configs', *(f'{name}={config}' for name, config in configs.items()),
                                     '--work-dir', 'report', '--skip-train', '--attacker-args',
                                     '--epochs 5 --num-workers 0'])
    with open(ws / 'report' / 'privacy_utility.csv', newline='') as f:
        rows = list(csv.DictReader(f))
    return dict(ws=ws, configs=configs, code=code, rows={row['method']: row for row in rows}, order=rows)


def test_report_rows_are_the_test_metrics(report):
    assert report['code'] == 0
    assert [(row['method'], row['role']) for row in report['order']] == [('raw', 'raw'), ('solid-mask', 'handcrafted')]
    for name, row in report['rows'].items():
        (path, ) = glob.glob(str(report['ws'] / 'report' / name / 'test' / '*' / '*.json'))
        with open(path) as f:
            metrics = json.load(f)
        assert float(row['frame_mAP']) == metrics['mAP/overall']
        assert float(row['reid_top1/adaptive']) == metrics['privacy/adaptive/reid_top1']
        assert float(row['chance']) == metrics['privacy/adaptive/reid_chance']
    raw, mask = (float(report['rows'][name]['frame_mAP']) for name in METHODS)
    assert raw > 0
    assert float(report['rows']['raw']['mAP_vs_raw']) == 1.0
    assert float(report['rows']['solid-mask']['mAP_vs_raw']) == pytest.approx(mask / raw, abs=1e-12)
    # Neither model has a discriminator; dlib joins where installed.
    test_config = Config.fromfile(str(report['ws'] / 'report' / 'raw' / 'privacy_test_config.py'))
    attackers = [a['type'] for a in test_config.test_evaluator[-1]['attackers']]
    assert attackers == ['checkpoint'] + (['dlib'] if privacy_utility.dlib_installed() else [])
    assert ('reid_top1/dlib' in report['rows']['raw']) == privacy_utility.dlib_installed()
    assert 'reid_top1/discriminator' not in report['rows']['raw']


def test_adaptive_numbers_match_the_metric_on_the_val_faces(report, ava_fixture, monkeypatch):
    """Recomputed outside tools/test.py: the raw model's val faces through FacePrivacyMetric with its attacker."""
    monkeypatch.chdir(report['ws'])
    work_dir = report['ws'] / 'report' / 'raw'
    config = Config.fromfile(report['configs']['raw'])
    model = train_attacker.load_detector(config, privacy_utility.last_checkpoint(str(work_dir)))
    faces = train_attacker.collect_faces(train_attacker.face_loader(config, 'val'),
                                         train_attacker.clip_faces(model.data_preprocessor), progress=False)
    metric = FacePrivacyMetric(attackers=[dict(type='checkpoint', checkpoint=str(work_dir / 'adaptive_attacker.pth'),
                                               name='adaptive')])
    metric.dataset_meta = {}
    metric.process({}, [dict(faces=faces.to_dict())])
    expected = metric.evaluate(1)
    row = report['rows']['raw']
    for column, key in (('reid_top1/adaptive', 'reid_top1'), ('chance', 'reid_chance'), ('roc_auc', 'roc_auc'),
                        ('tar@far=0.01', 'tar@far=0.01')):
        assert float(row[column]) == pytest.approx(expected[f'privacy/adaptive/{key}'], abs=1e-9), column
    assert float(row['majority']) == pytest.approx(expected['privacy/reid_majority'], abs=1e-9)
    # Chance is one over the identities of the fixture's val faces.
    identities = {face.identity for face in load_face_file(ava_fixture['face_file_val']) if face.identity >= 0}
    assert float(row['chance']) == 1 / len(identities)


def test_markdown_and_plot(report):
    text = (report['ws'] / 'report' / 'privacy_utility.md').read_text()
    header = next(line for line in text.splitlines() if line.startswith('| method'))
    assert header.split(' | ')[:4] == ['| method', 'role', 'frame-mAP', 'mAP vs raw']
    assert 're-id top-1 (adaptive)' in header and 'chance' in header and 'TAR@FAR=1% (adaptive)' in header
    for name, row in report['rows'].items():
        cells = next(line for line in text.splitlines() if line.startswith(f'| {name} |')).split(' | ')
        assert cells[2] == f'{float(row["frame_mAP"]):.3f}'
        assert cells[3] == f'{float(row["mAP_vs_raw"]):.1%}'
    assert '**the target cannot be decided**' in text and 'no learned anonymizer among the methods' in text
    image = cv2.imread(str(report['ws'] / 'report' / 'privacy_utility.png'))
    assert image.shape == (480, 640, 3)
    assert (image < 128).any()  # drawn, not blank


def test_missing_checkpoint_with_skip_train(tmp_path, capsys):
    config = write_face_config(tmp_path / 'raw.py')
    assert privacy_utility.main(['--configs', f'raw={config}', '--work-dir', str(tmp_path / 'out'),
                                 '--skip-train']) == 1
    assert 'holds no checkpoint' in capsys.readouterr().err
    text = (tmp_path / 'out' / 'privacy_utility.md').read_text()
    assert 'Failed methods' in text and '- raw: --skip-train' in text
    assert privacy_utility.main(['--configs', f'raw={config}', '--methods', 'learned']) == 1
    assert "unknown ['learned']" in capsys.readouterr().err


def made_row(method, role, ratio, top1, chance=0.1):
    return {'method': method, 'role': role, 'mAP_vs_raw': ratio, 'reid_top1/adaptive': top1, 'chance': chance}


@pytest.mark.parametrize('rows, verdict', [
    # The learned one keeps exactly 90% of the mAP at exactly 2x chance; blur keeps mAP but is re-identified,
    # the mask hides faces but loses mAP.
    ([made_row('raw', 'raw', 1.0, 0.9), made_row('learned', 'learned', 0.9, 0.2),
      made_row('blur', 'handcrafted', 0.99, 0.7), made_row('mask', 'handcrafted', 0.5, 0.1)], True),
    ([made_row('raw', 'raw', 1.0, 0.9), made_row('learned', 'learned', 0.89, 0.1),
      made_row('mask', 'handcrafted', 0.5, 0.1)], False),
    ([made_row('raw', 'raw', 1.0, 0.9), made_row('learned', 'learned', 0.95, 0.21),
      made_row('mask', 'handcrafted', 0.5, 0.1)], False),
    # The learned anonymizer meets the target, but no baseline was compared with it.
    ([made_row('raw', 'raw', 1.0, 0.9), made_row('learned', 'learned', 0.95, 0.1)], None),
    # A handcrafted baseline as good as the learned anonymizer on both counts.
    ([made_row('raw', 'raw', 1.0, 0.9), made_row('learned', 'learned', 0.95, 0.1),
      made_row('noise', 'handcrafted', 0.92, 0.15)], False),
    ([made_row('learned', 'learned', 0.95, 0.1)], None),
    ([made_row('raw', 'raw', 1.0, 0.9), made_row('blur', 'handcrafted', 0.9, 0.7)], None),
    ([made_row('raw', 'raw', 1.0, 0.9), made_row('learned', 'learned', 0.95, NAN)], None),
])
def test_check_target(rows, verdict):
    result, evidence = privacy_utility.check_target(rows)
    assert result is verdict
    if verdict is not None:
        assert len(evidence) == len(rows) - 1


def test_report_rows_and_evidence_from_metrics():
    results = {
        'raw': dict(role='raw', metrics={'mAP/overall': 0.8, 'privacy/adaptive/reid_top1': 0.9,
                                         'privacy/adaptive/reid_chance': 0.25}),
        'learned': dict(role='learned', metrics={'mAP/overall': 0.76, 'privacy/adaptive/reid_top1': 0.3,
                                                 'privacy/adaptive/reid_chance': 0.25,
                                                 'privacy/discriminator/reid_top1': 0.2,
                                                 'privacy/adaptive/roc_auc': 0.6}),
    }
    rows = privacy_utility.report_rows(results)
    assert [r['method'] for r in rows] == ['raw', 'learned']
    assert rows[1]['mAP_vs_raw'] == pytest.approx(0.95)
    assert math.isnan(rows[0]['reid_top1/discriminator']) and rows[1]['reid_top1/discriminator'] == 0.2
    assert math.isnan(rows[0]['roc_auc']) and math.isnan(rows[1]['tar@far=0.01'])
    verdict, evidence = privacy_utility.check_target(rows)
    assert verdict is None  # no handcrafted baseline to compare with
    assert evidence[0] == ('learned (learned): keeps 95.0% of the raw frame-mAP (at least 90%); adaptive re-id '
                           'top-1 0.300 is within 2x chance (0.500)')
    assert evidence[1].startswith('no handcrafted baseline among the methods') and len(evidence) == 2
    assert np.isnan(privacy_utility.report_rows({'x': dict(role='learned', metrics={})})[0]['mAP_vs_raw'])
