import logging
import os.path as osp
import pickle
import socket
import sys

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from mmengine.logging import MMLogger
from mmengine.structures import InstanceData

from mmanon.evaluation.attackers import CheckpointAttacker, InvertedAttacker, build_attacker
from mmanon.evaluation.metrics import FacePrivacyMetric
from mmanon.evaluation.metrics.face_privacy_metric import worst_case
from mmanon.models import UNetInverter
from mmanon.models.heads import FaceDiscriminatorHead
from mmanon.models.utils import to_uint8
from mmanon.registry import METRICS, build_in_scope

HEAD_CONFIG = dict(num_classes=4, input_size=(16, 16), base_channels=4, num_stages=1, embed_dims=8)
PROTOCOL_KEYS = tuple(f'{protocol}/{key}' for protocol in ('raw_gallery', 'anon_gallery', 'worst_case')
                      for key in ('top1', 'chance', 'majority'))
METRIC_KEYS = PROTOCOL_KEYS + ('worst_case/protocol', 'roc_auc', 'tar@far=0.01', 'raw_anon_similarity')


def make_samples(num_samples, num_identities=5, faces_per_sample=3, anonymized_noise=0.0, seed=0, crop_size=8,
                 swap=False):
    """Data samples whose attached embeddings are identity centres (plus noise for the anonymized ones);
    ``anonymized_noise=None`` makes both embeddings pure noise, and ``swap=True`` gives each anonymized face the
    raw embedding of the next identity (an anonymizer that consistently turns each person into another)."""
    rng = np.random.default_rng(seed)
    centres = 10 * rng.normal(size=(num_identities, 16))
    samples = []
    for _ in range(num_samples):
        ids = rng.integers(0, num_identities, faces_per_sample)
        if anonymized_noise is None:
            raw, anonymized = rng.normal(size=(2, faces_per_sample, 16))
        else:
            raw = centres[ids] + rng.normal(size=(faces_per_sample, 16))
            anonymized = centres[(ids + 1) % num_identities] if swap else raw
            anonymized = anonymized + anonymized_noise * rng.normal(size=raw.shape)
        crops = torch.from_numpy(rng.integers(0, 256, (2, faces_per_sample, 3, crop_size, crop_size), np.uint8))
        samples.append(dict(faces=dict(identities=torch.from_numpy(ids), raw_crops=crops[0],
                                       anonymized_crops=crops[1], raw_embeddings=torch.from_numpy(raw).float(),
                                       anonymized_embeddings=torch.from_numpy(anonymized).float())))
    return samples


def make_metric(**kwargs):
    metric = FacePrivacyMetric(**kwargs)
    metric.dataset_meta = {}
    return metric


def evaluate(metric, samples, batch_size=4):
    for i in range(0, len(samples), batch_size):
        metric.process({}, samples[i:i + batch_size])
    return metric.evaluate(len(samples))


@pytest.fixture
def mmengine_warnings(caplog):
    # mmengine's loggers are not children of the root logger, where caplog listens.
    logger = MMLogger.get_current_instance()
    logger.addHandler(caplog.handler)
    yield caplog
    logger.removeHandler(caplog.handler)


def test_perfect_discriminator():
    results = evaluate(make_metric(), make_samples(12))
    assert results['privacy/num_faces'] == 36
    for protocol in ('raw_gallery', 'anon_gallery', 'worst_case'):
        assert results[f'privacy/discriminator/{protocol}/top1'] == 1.0
        assert results[f'privacy/discriminator/{protocol}/chance'] == 0.2
    # The first protocol wins the tie; the discriminator has neither a training gallery nor a classifier.
    assert results['privacy/discriminator/worst_case/protocol'] == 'raw_gallery'
    assert results['privacy/worst_case/protocol'] == 'discriminator/raw_gallery'
    assert results['privacy/worst_case/top1'] == 1.0
    assert not any('train_gallery' in key or 'classifier' in key for key in results)
    assert results['privacy/discriminator/roc_auc'] == 1.0
    assert results['privacy/discriminator/tar@far=0.01'] == 1.0
    assert results['privacy/discriminator/raw_anon_similarity'] == pytest.approx(1.0)


def test_random_discriminator_is_near_chance():
    results = evaluate(make_metric(), make_samples(200, num_identities=10, anonymized_noise=None))
    assert results['privacy/discriminator/raw_gallery/top1'] == pytest.approx(0.1, abs=0.05)
    assert results['privacy/discriminator/anon_gallery/top1'] == pytest.approx(0.1, abs=0.05)
    assert results['privacy/discriminator/roc_auc'] == pytest.approx(0.5, abs=0.03)
    assert results['privacy/discriminator/raw_anon_similarity'] == pytest.approx(0.0, abs=0.05)


def test_a_consistent_identity_swap_passes_the_raw_gallery_but_not_the_worst_case():
    # Each anonymized face looks like the next identity: matched with raw faces, nobody is named right; matched
    # with other anonymized faces, everybody is.
    results = evaluate(make_metric(), make_samples(12, anonymized_noise=1.0, swap=True))
    assert results['privacy/discriminator/raw_gallery/top1'] == 0.0
    assert results['privacy/discriminator/anon_gallery/top1'] == 1.0
    assert results['privacy/discriminator/worst_case/protocol'] == 'anon_gallery'
    assert results['privacy/worst_case/top1'] == 1.0
    assert results['privacy/worst_case/chance'] == 0.2


def test_anonymized_gallery_leaves_out_the_query_video():
    # Two identities, each in two videos of two keyframes; a face's anonymized embedding is its video's code,
    # the four codes orthogonal: only keyframes of the same video give a face away.
    samples = []
    for video in range(4):
        for _ in range(2):
            embeddings = torch.eye(16)[[video]]
            crops = torch.zeros(1, 3, 8, 8, dtype=torch.uint8)
            samples.append(dict(video_id=f'video{video}', faces=dict(
                identities=torch.tensor([video // 2]), raw_crops=crops, anonymized_crops=crops,
                raw_embeddings=embeddings, anonymized_embeddings=embeddings)))
    without_videos = evaluate(make_metric(), [dict(faces=sample['faces']) for sample in samples])
    assert without_videos['privacy/discriminator/anon_gallery/top1'] == 1.0
    # Its video left out, a face is as unlike its own identity's other video as the other identity's videos:
    # a tie between the two, half a hit each, chance.
    by_video = evaluate(make_metric(), samples)
    assert by_video['privacy/discriminator/anon_gallery/top1'] == 0.5
    assert by_video['privacy/discriminator/anon_gallery/chance'] == 0.5


@pytest.mark.parametrize('rates, expected', [
    # The highest multiple of chance wins, not the highest rate: 0.3 of chance 1/10 beats 0.4 of chance 1/4.
    (dict(a=(0.4, 0.25, 0.3), b=(0.3, 0.1, 0.2)), 'b'),
    (dict(a=(0.5, 0.25, 0.3), b=(float('nan'), 0.1, 0.2), c=(0.5, 0.25, 0.3)), 'a'),
    (dict(a=(float('nan'), 0.25, 0.3), b=(0.2, float('nan'), 0.2)), None),
])
def test_worst_case(rates, expected):
    worst = worst_case(rates)
    assert (worst if worst is None else worst[0]) == expected
    if expected is not None:
        assert worst[1] == rates[expected]


def test_unknown_identities_and_empty_samples_contribute_nothing():
    samples = make_samples(6, anonymized_noise=1.0)
    reference = evaluate(make_metric(), samples)
    # The same faces, plus faces of unknown identity with misleading embeddings and samples without faces.
    padded = []
    for sample in samples:
        faces = sample['faces']
        extra = dict(identities=torch.tensor([-1, -1]), raw_crops=faces['raw_crops'][:2],
                     anonymized_crops=faces['anonymized_crops'][:2], raw_embeddings=torch.ones(2, 16),
                     anonymized_embeddings=torch.ones(2, 16))
        padded.append(dict(faces={key: torch.cat([faces[key], extra[key]]) for key in faces}))
        padded.append(dict())
        padded.append(dict(faces={key: value[:0] for key, value in faces.items()}))
    assert evaluate(make_metric(), padded) == reference


def test_faces_as_instance_data_with_other_fields():
    samples = make_samples(4)
    as_instance_data = [
        dict(faces=InstanceData(metainfo=dict(img_shape=(240, 320)), bboxes=torch.zeros(3, 4), **sample['faces']))
        for sample in samples
    ]
    assert 'img_shape' in as_instance_data[0]['faces'].to_dict()
    assert evaluate(make_metric(), as_instance_data) == evaluate(make_metric(), samples)


def test_results_hold_embeddings_identities_and_the_video_only():
    metric = make_metric()
    metric.process({}, make_samples(2) + [dict(video_id='v')])
    assert len(metric.results) == 3
    assert [result['video'] for result in metric.results] == [None, None, 'v']
    for result in metric.results:
        assert set(result) == {'identities', 'embeddings', 'video'}
        assert all(array.dtype == np.float32 for array in result['embeddings'].get('discriminator', ()))


def test_missing_discriminator_embeddings_warn_once(mmengine_warnings):
    samples = make_samples(4)
    for sample in samples:
        del sample['faces']['raw_embeddings'], sample['faces']['anonymized_embeddings']
    metric = make_metric()
    results = evaluate(metric, samples, batch_size=1)
    assert results == {'privacy/num_faces': 12, 'privacy/reid_majority': pytest.approx(1 / 3)}
    messages = [r.getMessage() for r in mmengine_warnings.records if r.levelno == logging.WARNING]
    assert len([m for m in messages if 'no raw_embeddings/anonymized_embeddings' in m]) == 1


def test_missing_dlib_is_skipped_with_a_warning(mmengine_warnings, monkeypatch):
    monkeypatch.setitem(sys.modules, 'dlib', None)  # makes `import dlib` fail even where it is installed
    metric = make_metric(attackers=[dict(type='discriminator'), dict(type='dlib')])
    assert [attacker.name for attacker in metric.attackers] == ['discriminator']
    messages = [r.getMessage() for r in mmengine_warnings.records if r.levelno == logging.WARNING]
    assert len(messages) == 1 and 'pip install -e .[attack]' in messages[0]
    assert 'privacy/discriminator/roc_auc' in evaluate(metric, make_samples(3))


def test_dlib_attacker():
    pytest.importorskip('dlib')
    pytest.importorskip('face_recognition_models')
    crops = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, 3, 40, 32), np.uint8))
    rgb = build_attacker(dict(type='dlib'))
    bgr = build_attacker(dict(type='dlib', channel_order='bgr'))
    embeddings = rgb.embed(crops)
    assert embeddings.shape == (3, 128) and embeddings.dtype == np.float32
    np.testing.assert_array_equal(bgr.embed(crops.flip(1)), embeddings)


def save_head(path, seed=0):
    torch.manual_seed(seed)
    head = FaceDiscriminatorHead(**HEAD_CONFIG)
    torch.save(dict(config=HEAD_CONFIG, state_dict=head.state_dict()), path)
    return head


def test_checkpoint_attacker_round_trip(tmp_path):
    head = save_head(tmp_path / 'sphereface-attacker.pth')
    attacker = build_attacker(dict(type='checkpoint', checkpoint=str(tmp_path / 'sphereface-attacker.pth')))
    assert isinstance(attacker, CheckpointAttacker) and attacker.name == 'sphereface-attacker'
    crops = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (5, 3, 20, 12), np.uint8))
    with torch.no_grad():
        expected = head(crops.float()).numpy()
    np.testing.assert_allclose(attacker.embed(crops), expected, rtol=1e-5, atol=1e-6)
    assert attacker.embed(crops[:0]).shape == (0, 8)
    # Crops of different sizes across samples are embedded in groups, with the same result.
    faces = [dict(raw_crops=crops[:2], anonymized_crops=crops[2:4]),
             dict(raw_crops=crops[:1, :, :16, :], anonymized_crops=crops[4:])]
    (raw0, anon0), (raw1, anon1) = attacker.embed_faces(faces)
    np.testing.assert_allclose(raw0, expected[:2], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(anon1, expected[4:], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(raw1, attacker.embed(crops[:1, :, :16, :]), rtol=1e-5, atol=1e-6)


def save_attacker_with_gallery(path, prototypes, classes):
    """An attacker checkpoint as tools/analysis/train_attacker.py writes it, whose templates are the embeddings
    of ``prototypes`` (class k: prototype k) and whose classifier scores each class by the similarity to its
    template, so that a prototype is both matched to and classified as its own class."""
    head = save_head(path)
    with torch.no_grad():
        templates = torch.nn.functional.normalize(head(prototypes.float()), dim=1)
        head.fc_cls.weight.copy_(templates)
        head.fc_cls.bias.zero_()
    torch.save(dict(config=HEAD_CONFIG, state_dict=head.state_dict(), templates=templates,
                    meta=dict(identities=classes)), path)


def test_training_gallery_and_classifier_protocols(tmp_path):
    prototypes = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (4, 3, 16, 16), np.uint8))
    save_attacker_with_gallery(tmp_path / 'adaptive.pth', prototypes, [10, 20, 30, 40])
    attacker = build_attacker(dict(type='checkpoint', checkpoint=str(tmp_path / 'adaptive.pth')))
    assert attacker.classes.tolist() == [10, 20, 30, 40] and attacker.train_gallery[0].tolist() == [10, 20, 30, 40]
    # The first two faces swap their prototypes; identity 50 is unknown to the attacker, which counts it in
    # neither protocol.
    anonymized = prototypes[[1, 0, 2, 3, 0]]
    faces = dict(identities=torch.tensor([10, 20, 30, 40, 50]), anonymized_crops=anonymized,
                 raw_crops=torch.from_numpy(np.random.default_rng(1).integers(0, 256, (5, 3, 16, 16), np.uint8)))
    metric = make_metric(attackers=[dict(type='checkpoint', checkpoint=str(tmp_path / 'adaptive.pth'))])
    results = evaluate(metric, [dict(faces=faces)])
    for protocol in ('train_gallery', 'classifier'):
        assert results[f'privacy/adaptive/{protocol}/top1'] == 0.5
        assert results[f'privacy/adaptive/{protocol}/chance'] == 0.25
        assert results[f'privacy/adaptive/{protocol}/majority'] == 0.25
    assert attacker.classify(attacker.embed(anonymized)).tolist() == [20, 10, 30, 40, 10]
    # A checkpoint whose identities do not fit its head is refused.
    saved = torch.load(tmp_path / 'adaptive.pth', weights_only=True)
    saved['meta']['identities'] = [1, 2, 3]
    torch.save(saved, tmp_path / 'wrong.pth')
    with pytest.raises(ValueError, match=r"meta\['identities'\] names 3 identities for a head of 4 classes"):
        build_attacker(dict(type='checkpoint', checkpoint=str(tmp_path / 'wrong.pth')))


def save_inverter(path, seed=0):
    torch.manual_seed(seed)
    config = dict(base_channels=4, num_stages=1, crop_size=(16, 16))
    inverter = UNetInverter(**config).eval()
    config['type'] = 'UNetInverter'
    torch.save(dict(config=config, state_dict=inverter.state_dict(), meta=dict()), path)
    return inverter


def test_inverted_attacker_embeds_restored_anonymized_faces(tmp_path):
    inverter = save_inverter(tmp_path / 'inverter.pth')
    prototypes = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (4, 3, 16, 16), np.uint8))
    save_attacker_with_gallery(tmp_path / 'raw-face.pth', prototypes, [0, 1, 2, 3])
    inner_cfg = dict(type='checkpoint', checkpoint=str(tmp_path / 'raw-face.pth'))
    attacker = build_attacker(dict(type='inverted', inverter=str(tmp_path / 'inverter.pth'), attacker=inner_cfg))
    assert isinstance(attacker, InvertedAttacker) and attacker.name == 'inverted-raw-face'
    inner = build_attacker(inner_cfg)
    rng = np.random.default_rng(2)
    raw, anonymized = (torch.from_numpy(rng.integers(0, 256, (3, 3, 16, 16), np.uint8)) for _ in range(2))
    ((raw_emb, anon_emb), ) = attacker.embed_faces([dict(raw_crops=raw, anonymized_crops=anonymized)])
    with torch.no_grad():
        restored = to_uint8(inverter(anonymized.float()))
    np.testing.assert_array_equal(raw_emb, inner.embed(raw))
    np.testing.assert_array_equal(anon_emb, inner.embed(restored))
    assert not np.array_equal(anon_emb, inner.embed(anonymized))
    # The inner attacker's gallery and classifier serve the restored faces.
    assert attacker.train_gallery[0].tolist() == [0, 1, 2, 3]
    assert attacker.classify(anon_emb).tolist() == inner.classify(anon_emb).tolist()
    # Crops of another size are restored at the inverter's size and resized back.
    assert attacker.invert(anonymized[:, :, :12, :]).shape == (3, 3, 12, 16)
    metric = make_metric(attackers=[dict(type='inverted', inverter=str(tmp_path / 'inverter.pth'), attacker=inner_cfg,
                                         name='inverted')])
    results = evaluate(metric, [dict(faces=dict(identities=torch.tensor([0, 1, 1]), raw_crops=raw,
                                                anonymized_crops=anonymized))])
    assert {'privacy/inverted/train_gallery/top1', 'privacy/inverted/classifier/top1'} <= set(results)
    with pytest.raises(ValueError, match='needs an attacker that embeds crops'):
        build_attacker(dict(type='inverted', inverter=str(tmp_path / 'inverter.pth'),
                            attacker=dict(type='discriminator')))
    with pytest.raises(ValueError, match='is not an inverter checkpoint'):
        build_attacker(dict(type='inverted', inverter=str(tmp_path / 'raw-face.pth'), attacker=inner_cfg))


def test_several_attackers_in_one_run(tmp_path):
    save_head(tmp_path / 'a.pth', seed=0)
    save_head(tmp_path / 'b.pth', seed=1)
    metric = build_in_scope(
        METRICS,
        dict(type='FacePrivacyMetric', attackers=[dict(type='discriminator'),
                                                  dict(type='checkpoint', checkpoint=str(tmp_path / 'a.pth')),
                                                  dict(type='checkpoint', checkpoint=str(tmp_path / 'b.pth'),
                                                       name='second')]))
    metric.dataset_meta = {}
    results = evaluate(metric, make_samples(5))
    for name in ('discriminator', 'a', 'second'):
        assert all(f'privacy/{name}/{key}' in results for key in METRIC_KEYS)
    assert results['privacy/a/roc_auc'] != results['privacy/second/roc_auc']


def test_invalid_arguments_are_explained(tmp_path):
    save_head(tmp_path / 'a.pth')
    with pytest.raises(ValueError, match='attacker names must be unique'):
        FacePrivacyMetric(attackers=[dict(type='checkpoint', checkpoint=str(tmp_path / 'a.pth'), name='x'),
                                     dict(type='discriminator', name='x')])
    with pytest.raises(ValueError, match="attacker type must be one of .* got 'insightface'"):
        FacePrivacyMetric(attackers=[dict(type='insightface')])
    with pytest.raises(ValueError, match='far must be in'):
        FacePrivacyMetric(far=1.0)
    torch.save(dict(weights=1), tmp_path / 'other.pth')
    with pytest.raises(ValueError, match='is neither an attacker checkpoint'):
        build_attacker(dict(type='checkpoint', checkpoint=str(tmp_path / 'other.pth')))


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _evaluate_on_rank(rank, world_size, port, samples, workdir):
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank, world_size=world_size)
    try:
        # As mmengine's DefaultSampler: rank r takes samples r, r + world_size, ..., and the shorter ranks
        # repeat samples from the start so every rank gets as many.
        per_rank = -(-len(samples) // world_size)
        indices = list(range(len(samples))) * 2
        mine = [samples[i] for i in indices[rank:per_rank * world_size:world_size]]
        metric = make_metric(collect_dir=osp.join(workdir, 'collect'))
        for i in range(0, len(mine), 2):
            metric.process({}, mine[i:i + 2])
        # The dataset size: collecting drops the padding by truncating the rank-interleaved results to it.
        results = metric.evaluate(len(samples))
        if rank == 0:
            with open(osp.join(workdir, 'results.pkl'), 'wb') as f:
                pickle.dump(results, f)
    finally:
        dist.destroy_process_group()


def test_two_processes_match_one(tmp_path):
    samples = make_samples(7, anonymized_noise=20.0)  # odd, so rank 1 gets a padding sample
    expected = evaluate(make_metric(), samples)
    mp.spawn(_evaluate_on_rank, args=(2, _free_port(), samples, str(tmp_path)), nprocs=2)
    with open(tmp_path / 'results.pkl', 'rb') as f:
        gathered = pickle.load(f)
    assert gathered == expected
    assert 0 < expected['privacy/discriminator/raw_gallery/top1'] < 1
    assert 0 < expected['privacy/discriminator/anon_gallery/top1'] < 1
