"""tools/analysis/privacy_utility.py: the report of two prepared methods agrees with the privacy metric, the
inversion attacker and the raw-trained detector are in it, and the target's verdict follows the worst-case
numbers."""
import csv
import glob
import json
import math
import os
import shutil

import cv2
import numpy as np
import pytest
import torch
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
    (The raw-trained detector behind the mask is then the masked method's own detector, which the test uses.)
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
                                     '--epochs 5 --num-workers 0', '--inverter-args',
                                     '--epochs 2 --val-fraction 0.5 --num-workers 0'])
    with open(ws / 'report' / 'privacy_utility.csv', newline='') as f:
        rows = list(csv.DictReader(f))
    return dict(ws=ws, configs=configs, code=code, rows={row['method']: row for row in rows}, order=rows)


def read_metrics(ws, name, test_dir='test'):
    (path, ) = glob.glob(str(ws / 'report' / name / test_dir / '*' / '*.json'))
    with open(path) as f:
        return json.load(f)


def test_report_rows_are_the_test_metrics(report):
    assert report['code'] == 0
    assert [(row['method'], row['role']) for row in report['order']] == [('raw', 'raw'), ('solid-mask', 'handcrafted')]
    for name, row in report['rows'].items():
        metrics = read_metrics(report['ws'], name)
        assert float(row['frame_mAP']) == metrics['mAP/overall']
        for key in ('top1', 'chance', 'majority'):
            column = 'worst_case/top1' if key == 'top1' else key
            assert float(row[column]) == metrics[f'privacy/worst_case/{key}']
        assert row['worst_case/protocol'] == metrics['privacy/worst_case/protocol']
        assert row['worst_case/protocol'].split('/')[1] in ('raw_gallery', 'anon_gallery', 'train_gallery',
                                                          'classifier')
        for protocol in ('raw_gallery', 'train_gallery', 'classifier'):
            assert float(row[f'reid_top1/adaptive/{protocol}']) == metrics[f'privacy/adaptive/{protocol}/top1']
        # The fixture's validation faces come from one video, so no anonymized gallery is left beside a query's.
        assert row['reid_top1/adaptive/anon_gallery'] == '' and math.isnan(
            metrics['privacy/adaptive/anon_gallery/top1'])
    raw, mask = (float(report['rows'][name]['frame_mAP']) for name in METHODS)
    assert raw > 0
    assert float(report['rows']['raw']['mAP_vs_raw']) == 1.0
    assert float(report['rows']['solid-mask']['mAP_vs_raw']) == pytest.approx(mask / raw, abs=1e-12)
    # Neither model has a discriminator; the raw reference has nothing to invert; dlib joins where installed.
    dlib = ['dlib'] if privacy_utility.dlib_installed() else []
    for name, expected in (('raw', ['checkpoint'] + dlib), ('solid-mask', ['checkpoint', 'inverted'] + dlib)):
        test_config = Config.fromfile(str(report['ws'] / 'report' / name / 'privacy_test_config.py'))
        assert [a['type'] for a in test_config.test_evaluator[-1]['attackers']] == expected
    assert ('worst_case/dlib' in report['rows']['raw']) == privacy_utility.dlib_installed()
    assert 'worst_case/discriminator' not in report['rows']['raw']
    assert report['rows']['raw']['reid_top1/inverted/raw_gallery'] == ''  # n/a, written empty


def test_inversion_attacker_and_raw_face_attacker(report):
    """The mask's inverter learned with the raw reference's adaptive attacker (a recogniser of the raw faces),
    which also embeds the restored faces; a solid mask cannot be undone, so its restored faces are all alike."""
    ws = report['ws'] / 'report'
    saved = torch.load(ws / 'solid-mask' / 'inverter.pth', weights_only=True)
    assert report['ws'] / saved['meta']['embedder'] == ws / 'raw' / 'adaptive_attacker.pth'
    assert not (ws / 'raw_face_attacker.pth').exists()  # the raw reference's attacker served
    test_config = Config.fromfile(str(ws / 'solid-mask' / 'privacy_test_config.py'))
    inverted = test_config.test_evaluator[-1]['attackers'][1]
    assert inverted['attacker']['checkpoint'] == str(ws / 'raw' / 'adaptive_attacker.pth')
    row = report['rows']['solid-mask']
    assert float(row['inverter/pixel_loss']) == pytest.approx(saved['meta']['held_out']['pixel'])
    assert float(row['inverter/identity_similarity_anonymized']) == pytest.approx(
        saved['meta']['held_out_anonymized']['identity'])
    metrics = read_metrics(report['ws'], 'solid-mask')
    assert float(row['worst_case/inverted']) == metrics['privacy/inverted/worst_case/top1']
    # Every masked face is restored to the same picture, whose embedding is nearest one identity's template:
    # the rate of always naming one identity, at most the majority guess.
    assert metrics['privacy/inverted/raw_gallery/top1'] <= metrics['privacy/inverted/raw_gallery/majority']


def test_raw_trained_detector_behind_the_anonymizer(report):
    ws = report['ws'] / 'report'
    metrics = read_metrics(report['ws'], 'solid-mask', 'test_raw_detector')
    assert float(report['rows']['solid-mask']['frame_mAP/raw_detector']) == metrics['mAP/overall']
    # The checkpoint used here is the masked method's own detector (see the fixture), so both tests agree.
    assert metrics['mAP/overall'] == pytest.approx(float(report['rows']['solid-mask']['frame_mAP']), abs=1e-12)
    combined = torch.load(ws / 'solid-mask' / 'raw_detector.pth', weights_only=True)
    raw = torch.load(ws / 'raw' / 'iter_2.pth', weights_only=True)['state_dict']
    assert combined['state_dict'].keys() == raw.keys()
    assert all(torch.equal(combined['state_dict'][key], value) for key, value in raw.items())
    assert [type(e['type']) for e in Config.fromfile(str(ws / 'solid-mask' /
                                                         'raw_detector_test_config.py')).test_evaluator] == [str]
    # The raw reference's own column is its frame-mAP.
    assert report['rows']['raw']['frame_mAP/raw_detector'] == report['rows']['raw']['frame_mAP']


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
    for column, key in (('reid_top1/adaptive/raw_gallery', 'raw_gallery/top1'),
                        ('reid_top1/adaptive/classifier', 'classifier/top1'), ('worst_case/adaptive',
                                                                               'worst_case/top1'),
                        ('roc_auc', 'roc_auc'), ('tar@far=0.01', 'tar@far=0.01')):
        assert float(row[column]) == pytest.approx(expected[f'privacy/adaptive/{key}'], abs=1e-9), column
    # Chance of the raw gallery is one over the identities of the fixture's val faces.
    identities = {face.identity for face in load_face_file(ava_fixture['face_file_val']) if face.identity >= 0}
    assert expected['privacy/adaptive/raw_gallery/chance'] == 1 / len(identities)


def test_markdown_and_plot(report):
    text = (report['ws'] / 'report' / 'privacy_utility.md').read_text()
    header = next(line for line in text.splitlines() if line.startswith('| method | role'))
    assert header.split(' | ')[:7] == ['| method', 'role', 'frame-mAP', 'mAP vs raw', 'raw-trained detector: frame-mAP',
                                       'mAP vs raw', 'worst-case re-id top-1']
    assert 'attacker, protocol | chance | majority guess | worst case: adaptive | worst case: inversion' in header
    for name, row in report['rows'].items():
        cells = next(line for line in text.splitlines() if line.startswith(f'| {name} | ')).split(' | ')
        assert cells[2] == f'{float(row["frame_mAP"]):.3f}'
        assert cells[3] == f'{float(row["mAP_vs_raw"]):.1%}'
        assert cells[6] == f'{float(row["worst_case/top1"]):.3f}'
        attacker, protocol = row['worst_case/protocol'].split('/')
        assert cells[7] == f'adaptive, {protocol.replace("_", " ")}' if attacker == 'adaptive' else cells[7]
    assert '| solid-mask | inversion | ' in text and '## Inversion attacker' in text
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


def made_row(method, role, ratio, top1, chance=0.1, majority=0.0, **others):
    """A report row with one protocol of the given rates (and any others, as (top1, chance, majority))."""
    row = {'method': method, 'role': role, 'mAP_vs_raw': ratio}
    for name, rates in dict(others, **{'adaptive/classifier': (top1, chance, majority)}).items():
        row.update(zip((f'reid_{key}/{name}' for key in ('top1', 'chance', 'majority')), rates))
    return row


@pytest.mark.parametrize('rows, verdict', [
    # The learned one keeps exactly 90% of the mAP at exactly 2x chance; blur keeps mAP but is re-identified,
    # the mask hides faces but loses mAP.
    ([made_row('raw', 'raw', 1.0, 0.9), made_row('learned', 'learned', 0.9, 0.2),
      made_row('blur', 'handcrafted', 0.99, 0.7), made_row('mask', 'handcrafted', 0.5, 0.1)], True),
    ([made_row('raw', 'raw', 1.0, 0.9), made_row('learned', 'learned', 0.89, 0.1),
      made_row('mask', 'handcrafted', 0.5, 0.1)], False),
    ([made_row('raw', 'raw', 1.0, 0.9), made_row('learned', 'learned', 0.95, 0.21),
      made_row('mask', 'handcrafted', 0.5, 0.1)], False),
    # Each protocol is judged against its own chance: 0.21 is within 2x a chance of 0.125 ...
    ([made_row('raw', 'raw', 1.0, 0.9), made_row('learned', 'learned', 0.95, 0.21, chance=0.125),
      made_row('mask', 'handcrafted', 0.5, 0.1)], True),
    # ... or its majority guess, where that is higher ...
    ([made_row('raw', 'raw', 1.0, 0.9), made_row('learned', 'learned', 0.95, 0.21, majority=0.21),
      made_row('mask', 'handcrafted', 0.5, 0.1)], True),
    # ... and every protocol counts: one above its bound is enough to fail, a NaN one is left out.
    ([made_row('raw', 'raw', 1.0, 0.9), made_row('learned', 'learned', 0.95, 0.1, **{'dlib/raw_gallery': (
        0.3, 0.1, 0.12), 'dlib/classifier': (NAN, 0.1, 0.1)}), made_row('mask', 'handcrafted', 0.5, 0.1)], False),
    # The learned anonymizer meets the target, but no baseline was compared with it.
    ([made_row('raw', 'raw', 1.0, 0.9), made_row('learned', 'learned', 0.95, 0.1)], None),
    # A handcrafted baseline as good as the learned anonymizer on both counts.
    ([made_row('raw', 'raw', 1.0, 0.9), made_row('learned', 'learned', 0.95, 0.1),
      made_row('noise', 'handcrafted', 0.92, 0.15)], False),
    ([made_row('learned', 'learned', 0.95, 0.1)], None),
    ([made_row('raw', 'raw', 1.0, 0.9), made_row('blur', 'handcrafted', 0.9, 0.7)], None),
    ([made_row('raw', 'raw', 1.0, 0.9), made_row('learned', 'learned', 0.95, NAN)], None),
    ([made_row('raw', 'raw', 1.0, 0.9), made_row('learned', 'learned', NAN, 0.1)], None),
])
def test_check_target(rows, verdict):
    result, evidence = privacy_utility.check_target(rows)
    assert result is verdict
    if verdict is not None:
        assert len(evidence) == len(rows) - 1


def test_report_rows_and_evidence_from_metrics():
    results = {
        'raw': dict(role='raw', metrics={'mAP/overall': 0.8, 'privacy/adaptive/worst_case/top1': 0.9,
                                         'privacy/adaptive/raw_gallery/top1': 0.9,
                                         'privacy/worst_case/top1': 0.9, 'privacy/worst_case/chance': 0.25,
                                         'privacy/worst_case/protocol': 'adaptive/raw_gallery'}),
        'learned': dict(role='learned', raw_detector_metrics={'mAP/overall': 0.4}, inverter=dict(
            held_out=dict(pixel=0.1, identity=0.5), held_out_anonymized=dict(pixel=0.2, identity=0.3)), metrics={
                'mAP/overall': 0.76, 'privacy/adaptive/worst_case/top1': 0.3,
                'privacy/adaptive/worst_case/protocol': 'classifier', 'privacy/adaptive/raw_gallery/top1': 0.1,
                'privacy/adaptive/classifier/top1': 0.3, 'privacy/adaptive/classifier/chance': 0.25,
                'privacy/adaptive/raw_gallery/chance': 0.25, 'privacy/discriminator/worst_case/top1': 0.2,
                'privacy/worst_case/top1': 0.3, 'privacy/worst_case/chance': 0.25,
                'privacy/worst_case/majority': 0.4, 'privacy/worst_case/protocol': 'adaptive/classifier',
                'privacy/adaptive/roc_auc': 0.6}),
    }
    rows = privacy_utility.report_rows(results)
    assert [r['method'] for r in rows] == ['raw', 'learned']
    assert rows[1]['mAP_vs_raw'] == pytest.approx(0.95)
    assert rows[0]['frame_mAP/raw_detector'] == 0.8 and rows[1]['mAP_vs_raw/raw_detector'] == pytest.approx(0.5)
    assert math.isnan(rows[0]['worst_case/discriminator']) and rows[1]['worst_case/discriminator'] == 0.2
    assert rows[1]['reid_top1/adaptive/classifier'] == 0.3 and math.isnan(rows[0]['reid_top1/adaptive/classifier'])
    assert 'reid_top1/adaptive/anon_gallery' not in rows[0]  # no method has it
    assert math.isnan(rows[0]['roc_auc']) and math.isnan(rows[1]['tar@far=0.01'])
    assert (rows[1]['inverter/pixel_loss'], rows[1]['inverter/identity_similarity_anonymized']) == (0.1, 0.3)
    assert math.isnan(rows[0]['inverter/pixel_loss'])
    verdict, evidence = privacy_utility.check_target(rows)
    assert verdict is None  # no handcrafted baseline to compare with
    assert evidence[0] == ('learned (learned): keeps 95.0% of the raw frame-mAP (at least 90%); re-id top-1 is within '
                           'its bound (the larger of 2x chance and the majority guess) under every attacker and '
                           'protocol, highest at 0.300 against 0.500 (adaptive/classifier)')
    assert evidence[1].startswith('no handcrafted baseline among the methods') and len(evidence) == 2
    assert np.isnan(privacy_utility.report_rows({'x': dict(role='learned', metrics={})})[0]['mAP_vs_raw'])
    lines = privacy_utility.markdown_tables(rows)
    # Columns of the adaptive attacker and the co-trained D, which some method has; no inversion attacker.
    assert '| learned | learned | 0.760 | 95.0% | 0.400 | 50.0% | 0.300 | adaptive, classifier | 0.250 | 0.400 | ' \
        '0.300 | 0.200 |' in lines
    assert '| learned | adaptive | 0.100 | 0.300 | 0.300 (classifier) |' in lines


def test_plot_places_each_method_by_its_bound(tmp_path, monkeypatch):
    """The plot judges as the verdict does: a learned anonymizer above 2x chance but within the majority guess is
    drawn inside the target, left of the bound; each point is its worst protocol's top-1 over that bound."""
    figures = []
    monkeypatch.setattr(privacy_utility.plt, 'close', figures.append)
    rows = [made_row('raw', 'raw', 1.0, 0.9, chance=0.05, majority=0.118),
            made_row('learned', 'learned', 0.99, 0.094, chance=0.042, majority=0.118,
                     **{'dlib/raw_gallery': (0.06, 0.05, 0.118)}),
            made_row('blur', 'handcrafted', 0.8, 0.3, chance=0.05, majority=0.118)]
    for row, frame_map in zip(rows, (0.72, 0.71, 0.58)):
        row['frame_mAP'] = frame_map
    privacy_utility.plot_report(rows, str(tmp_path / 'plot.png'))
    assert (tmp_path / 'plot.png').is_file()
    ax = figures[0].axes[0]
    points = {text.get_text(): text.xy for text in ax.texts}
    assert points['raw'] == pytest.approx((0.9 / 0.118, 0.72))
    assert points['learned'] == pytest.approx((0.094 / 0.118, 0.71))  # 2.2x chance, yet inside the target
    assert points['blur'] == pytest.approx((0.3 / 0.118, 0.58))
    bound = next(line for line in ax.lines if line.get_label() == 'privacy bound')
    assert list(bound.get_xdata()) == [1, 1]
