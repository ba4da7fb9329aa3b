"""Adversarial training end to end with tools/train.py and tools/dist_train.sh on the fixture."""
import os.path as osp
import re

import pytest
import torch
from mmengine.registry import DefaultScope

from mmanon.compat import load_local_checkpoint
from mmanon.datasets import AVAFaceDataset
from mmanon.datasets.face_annotations import dump_face_file, load_face_file
from mmanon.datasets.toy_faces import ToyFacesSpec, generate_toy_faces

REPO = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
ADVERSARIAL_SMOKE = 'configs/detection/slowonly/slowonly-adversarial_r18-smoke_1xb2-4x2x1-4i_ava-fixture-rgb.py'


def assert_same_states(a, b, atol=1e-6):
    assert a.keys() == b.keys()
    for name, value in a.items():
        torch.testing.assert_close(b[name], value, atol=atol, rtol=0, msg=name)


def test_two_processes_stay_identical_when_one_rank_has_no_faces(workspace, ava_fixture, run_tool):
    with DefaultScope.overwrite_default_scope('mmaction'):
        dataset = AVAFaceDataset(
            ann_file=ava_fixture['ann_file_train'], exclude_file=ava_fixture['exclude_file_train'],
            label_file=ava_fixture['label_file'], pipeline=[dict(type='PackActionInputs')],
            data_prefix=dict(img=ava_fixture['data_root']), num_classes=6, check_frames=False)
    # With an unshuffled sampler and batches of one, rank r gets the samples at positions r, r + 2, ...:
    # keep faces only at odd positions, so rank 0 never sees one.
    odd_keys = {dataset.get_data_info(i)['img_key'] for i in range(1, len(dataset), 2)}
    faces = [f for f in load_face_file(ava_fixture['face_file_train']) if f.img_key in odd_keys]
    dump_face_file(str(workspace / 'faces_odd.csv'), faces)
    (workspace / 'dist.py').write_text(f"""
_base_ = {osp.join(REPO, ADVERSARIAL_SMOKE)!r}
custom_imports = dict(imports=['mmanon', 'tests.utils.rank_state_dump'], allow_failed_imports=False)
train_dataloader = dict(batch_size=1, sampler=dict(shuffle=False), dataset=dict(face_file='faces_odd.csv'))
custom_hooks = [
    dict(type='mmanon.RandomStateHook'),
    dict(type='mmanon.AdversarialTrainingHook', warmup_iters=1, ramp_iters=2, freeze_detector_iters=1),
    dict(type='DumpRankStateHook'),
]
train_cfg = dict(max_iters=3)
default_hooks = dict(checkpoint=dict(interval=1))
""")
    train(run_tool, [str(workspace / 'dist.py'), '--work-dir', 'dist', '--no-validate'], workspace, 2, 29623)
    ranks = [torch.load(workspace / 'dist' / f'rank{r}_state.pth', weights_only=True) for r in (0, 1)]
    assert ranks[0]['faces_seen'] == 0 and ranks[1]['faces_seen'] > 0
    assert_same_states(ranks[0]['state_dict'], ranks[1]['state_dict'], atol=0)
    # Between the second and the third iteration every player moved, identically on both ranks.
    before = load_local_checkpoint(str(workspace / 'dist' / 'iter_2.pth'))['state_dict']
    for player in ('data_preprocessor.discriminator.', 'data_preprocessor.anonymizer.', 'backbone.'):
        assert any(not torch.equal(before[k], ranks[0]['state_dict'][k]) for k in before if k.startswith(player)), \
            f'{player} did not change'


MIXED = """
_base_ = {base!r}
custom_imports = dict(imports=['mmanon', 'tests.utils.rank_state_dump'], allow_failed_imports=False)
face_pipeline = [
    dict(type='LoadFaceImage'),
    dict(type='FaceAlign', crop_size=(32, 32)),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackFaceInputs')
]
custom_hooks = [
    dict(type='mmanon.RandomStateHook'),
    dict(
        type='mmanon.AdversarialTrainingHook',
        warmup_iters=1,
        ramp_iters=2,
        face_interval=1,
        # The toy faces are the toy videos' people, under the same labels.
        face_identity_offset=0,
        replay_size={replay_size},
        replay_batch_size=6,
        face_dataloader=dict(
            batch_size=4,
            num_workers=0,
            sampler=dict(type='DefaultSampler', shuffle=True),
            dataset=dict(
                type='FaceIdentityDataset',
                data_root='faces',
                ann_file='train_list.txt',
                data_prefix=dict(img_path='images'),
                landmark_file='landmarks.txt',
                metainfo=dict(classes='faces/identities.txt'),
                pipeline=face_pipeline))),
    dict(type='DumpRankStateHook'),
]
train_cfg = dict(max_iters={max_iters})
default_hooks = dict(logger=dict(interval=1))
"""


def mixed_config(workspace, max_iters=3, replay_size=0):
    if not (workspace / 'faces').exists():
        generate_toy_faces(str(workspace / 'faces'), ToyFacesSpec(num_identities=4, images_per_identity=4,
                                                                  val_images_per_identity=1, image_size=(48, 48)))
    (workspace / 'mixed.py').write_text(MIXED.format(base=osp.join(REPO, ADVERSARIAL_SMOKE), max_iters=max_iters,
                                                            replay_size=replay_size))
    return 'mixed.py'


def train(run_tool, args, workspace, processes, port):
    if processes == 1:
        return run_tool(['tools/train.py', *args], workspace)
    return run_tool(['tools/dist_train.sh', args[0], '2', *args[1:]], workspace, env=dict(PORT=str(port)))


@pytest.mark.parametrize('processes', [1, 2])
def test_resume_is_exact(module_workspace, run_tool, processes):
    """4 iterations equal 2 + resume + 2, with a face dataloader and random transforms on both datasets, D's
    replay of past anonymized faces, and with two ranks under --diff-rank-seed (each rank its own random
    streams)."""
    ws = module_workspace
    config = mixed_config(ws, max_iters=4, replay_size=16)
    flags = ['--no-validate'] + (['--diff-rank-seed'] if processes == 2 else [])
    port = 29660 + 3 * processes
    train(run_tool, [config, '--work-dir', f'full{processes}', *flags], ws, processes, port)
    train(run_tool, [config, '--work-dir', f'split{processes}', *flags, '--cfg-options', 'train_cfg.max_iters=2'], ws,
          processes, port + 1)
    train(run_tool, [config, '--work-dir', f'split{processes}', *flags, '--resume'], ws, processes, port + 2)
    full = load_local_checkpoint(str(ws / f'full{processes}' / 'iter_4.pth'))
    split = load_local_checkpoint(str(ws / f'split{processes}' / 'iter_4.pth'))
    assert split['meta']['iter'] == 4
    # Detector, anonymizer and discriminator.
    assert any(k.startswith('data_preprocessor.anonymizer.') for k in full['state_dict'])
    assert any(k.startswith('data_preprocessor.discriminator.') for k in full['state_dict'])
    assert_same_states(full['state_dict'], split['state_dict'])
    for player in ('anonymizer_optim_wrapper', 'discriminator_optim_wrapper'):
        full_state = full['adversarial_training'][player]['state']
        split_state = split['adversarial_training'][player]['state']
        assert full_state.keys() == split_state.keys() and len(full_state) > 0
        for key in full_state:
            assert_same_states(full_state[key], split_state[key])
    # The replay buffer was saved, restored and went on filling and drawing alike.
    full_replay, split_replay = full['adversarial_training']['replay'], split['adversarial_training']['replay']
    assert full_replay['count'] == 16
    for key in ('crops', 'identities', 'generator'):
        assert torch.equal(full_replay[key], split_replay[key]), key
    # Every rank's generators ended in the same state, and the ranks' streams differ.
    assert len(full['random_state']) == len(split['random_state']) == processes
    for full_rank, split_rank in zip(full['random_state'], split['random_state']):
        assert torch.equal(full_rank['torch'], split_rank['torch'])
        assert torch.equal(full_rank['numpy']['keys'], split_rank['numpy']['keys'])
        assert full_rank['python'] == split_rank['python']
    if processes == 2:
        assert not torch.equal(full['random_state'][0]['torch'], full['random_state'][1]['torch'])
    # The schedule continued: the adversarial weight of the last iteration is the ramp's end in both runs.
    for checkpoint in (full, split):
        assert checkpoint['message_hub']['log_scalars']['train/adv_weight'].current() == 1.0


@pytest.mark.parametrize('processes', [1, 2])
def test_mixed_video_and_face_dataset_training(workspace, run_tool, processes):
    out = train(run_tool, [mixed_config(workspace), '--work-dir', 'mixed', '--no-validate'], workspace, processes,
                29631)
    log = out.stdout + out.stderr
    # Both sources fed the game in every iteration (rank 0's counts: its shard of the 12 dataset faces comes in
    # batches of at most 4).
    seen = re.findall(r'adv_video_faces: (\d+\.\d+)\s+adv_dataset_faces: (\d+\.\d+)', log)
    assert len(seen) == 3
    assert all(float(video) > 0 and 0 < float(dataset) <= 4 for video, dataset in seen), seen
    ranks = [torch.load(workspace / 'mixed' / f'rank{r}_state.pth', weights_only=True) for r in range(processes)]
    if processes == 2:
        assert_same_states(ranks[0]['state_dict'], ranks[1]['state_dict'], atol=0)
