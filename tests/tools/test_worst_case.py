"""Acceptance of the worst-case privacy measure: an anonymizer that leaves nothing of a face's look but gives each
person a colour of their own passes the raw-gallery protocol (the only one the metric had) and fails the worst
case, and the report's verdict follows the worst case."""
import pytest
from mmengine.config import Config

from mmanon.apis.faces import collect_faces, crop_faces, face_loader, load_detector
from mmanon.evaluation.metrics import FacePrivacyMetric
from mmanon.models.anonymizers.base_anonymizer import BaseAnonymizer
from mmanon.registry import MODELS
from face_configs import write_face_config, write_stand_in_faces_config  # noqa: I100  (tests/tools is on sys.path)

import privacy_utility  # noqa: E402,I100  (tools/analysis is on sys.path, see conftest.py)
import train_attacker  # noqa: E402


@MODELS.register_module(name='ComplementColourFill', force=True)
class ComplementColourFill(BaseAnonymizer):
    """Paints each face with the complement of its mean colour: a solid square that looks like nobody, yet the
    same person always gets the same colour."""

    def anonymize(self, crops):
        return (255 - crops.mean(dim=(2, 3), keepdim=True)).expand_as(crops).clone()


@pytest.fixture(scope='module')
def leaky_results(tmp_path_factory):
    """The privacy metric of the leaky anonymizer's validation faces, attacked by an adaptive attacker trained on
    its anonymized training faces (the stand-in face dataset: four identities of distinct colours)."""
    tmp_path = tmp_path_factory.mktemp('leaky')
    faces_config = write_stand_in_faces_config(tmp_path / 'faces.py')
    detector_config = write_face_config(tmp_path / 'leaky.py', anonymizer='ComplementColourFill')
    attacker = tmp_path / 'adaptive.pth'
    assert train_attacker.main([detector_config, '--face-dataset', faces_config, '--out', str(attacker), '--epochs',
                                '20', '--batch-size', '8', '--num-workers', '0', '--device', 'cpu']) == 0
    model = load_detector(Config.fromfile(detector_config))
    faces = collect_faces(face_loader(Config.fromfile(faces_config), 'val', 0),
                          crop_faces(model.data_preprocessor.anonymizer, 'cpu'), progress=False)
    metric = FacePrivacyMetric(attackers=[dict(type='checkpoint', checkpoint=str(attacker), name='adaptive')])
    metric.dataset_meta = {}
    metric.process({}, [dict(faces=faces.to_dict())])
    return metric.evaluate(1)


def test_passes_the_raw_gallery_but_not_the_worst_case(leaky_results):
    results = {key[len('privacy/'):]: value for key, value in leaky_results.items()}
    assert results['num_faces'] == 40 and results['adaptive/raw_gallery/chance'] == 0.25
    # Against templates of the raw faces, the solid colours match nobody: within 2x chance.
    assert results['adaptive/raw_gallery/top1'] <= 2 * 0.25
    # Against other anonymized faces, the attacker's training gallery or its classifier, everybody is named.
    for protocol in ('anon_gallery', 'train_gallery', 'classifier'):
        assert results[f'adaptive/{protocol}/top1'] == 1.0, protocol
    assert results['worst_case/top1'] == 1.0 and results['worst_case/chance'] == 0.25
    assert results['worst_case/protocol'] == 'adaptive/anon_gallery'  # the first of the protocols at 1.0


def test_the_verdict_follows_the_worst_case(leaky_results):
    """The report's target with the leaky anonymizer in the learned one's place (at full frame-mAP), beside a
    mask that loses mAP: on the raw-gallery protocol alone it would hold; on all of them it does not."""

    def verdict(leaky_metrics):
        mask = {'mAP/overall': 0.5, 'privacy/adaptive/raw_gallery/top1': 0.25,
                'privacy/adaptive/raw_gallery/chance': 0.25, 'privacy/adaptive/worst_case/top1': 0.25}
        results = dict(raw=dict(role='raw', metrics={'mAP/overall': 1.0}),
                       leaky=dict(role='learned', metrics={'mAP/overall': 1.0, **leaky_metrics}),
                       mask=dict(role='handcrafted', metrics=mask))
        return privacy_utility.check_target(privacy_utility.report_rows(results))

    raw_gallery_only = {key: value for key, value in leaky_results.items()
                        if '/raw_gallery/' in key or key.endswith('adaptive/worst_case/top1')}
    assert verdict(raw_gallery_only)[0] is True
    held, evidence = verdict(leaky_results)
    assert held is False
    assert evidence[0].endswith('above its bound (the larger of 2x chance and the majority guess) under some '
                                'attacker and protocol, highest at 1.000 against 0.500 (adaptive/train_gallery)')
