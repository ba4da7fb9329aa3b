"""tools/train.py, tools/test.py and tools/dist_train.sh with the stock detector (the smoke config)."""
import os.path as osp

import pytest
import torch

from mmanon.compat import load_local_checkpoint

SMOKE = 'configs/detection/slowonly/slowonly_r18-smoke_1xb2-4x2x1-4i_ava-fixture-rgb.py'


@pytest.fixture(scope='module')
def trained(module_workspace, run_tool):
    """4 iterations in one go, and 2 + stop + resume + 2 (the fixture's epoch ends every 2 iterations, so the
    resume also crosses an epoch boundary)."""
    ws = module_workspace
    run_tool(['tools/train.py', SMOKE, '--work-dir', 'full', '--no-validate'], ws)
    run_tool(['tools/train.py', SMOKE, '--work-dir', 'split', '--no-validate', '--cfg-options',
              'train_cfg.max_iters=2'], ws)
    resumed = run_tool(['tools/train.py', SMOKE, '--work-dir', 'split', '--no-validate', '--resume'], ws)
    return ws, resumed.stdout + resumed.stderr


def test_resume_equals_uninterrupted_run(trained):
    ws, log = trained
    assert 'resumed epoch: 0, iter: 2' in log
    full = load_local_checkpoint(str(ws / 'full' / 'iter_4.pth'))
    split = load_local_checkpoint(str(ws / 'split' / 'iter_4.pth'))
    assert full['meta']['iter'] == split['meta']['iter'] == 4
    assert full['state_dict'].keys() == split['state_dict'].keys()
    for name, value in full['state_dict'].items():
        torch.testing.assert_close(split['state_dict'][name], value, atol=1e-6, rtol=0, msg=name)
    full_state, split_state = full['optimizer']['state'], split['optimizer']['state']
    assert full_state.keys() == split_state.keys() and len(full_state) > 0
    for key in full_state:
        torch.testing.assert_close(split_state[key]['momentum_buffer'], full_state[key]['momentum_buffer'],
                                   atol=1e-6, rtol=0)
    assert split['param_schedulers'] == full['param_schedulers']
    # The stock head uses dropout: without the restored random state the runs would differ.
    assert 'random_state' in split


def test_test_tool_reports_ava_map(trained, run_tool):
    ws, _ = trained
    out = run_tool(['tools/test.py', SMOKE, 'full/iter_4.pth', '--work-dir', 'full', '--dump', 'full/preds.pkl'],
                   ws)
    assert 'mAP/overall' in out.stdout + out.stderr
    assert osp.getsize(ws / 'full' / 'preds.pkl') > 0


def test_dist_train_two_processes_on_cpu(workspace, run_tool):
    out = run_tool(['tools/dist_train.sh', SMOKE, '2', '--work-dir', 'dist', '--no-validate', '--cfg-options',
                    'train_cfg.max_iters=2'], workspace, env=dict(PORT='29611'))
    log = out.stdout + out.stderr
    assert 'Distributed training is not used' not in log
    assert 'Distributed training: True' in log
    checkpoint = load_local_checkpoint(str(workspace / 'dist' / 'iter_2.pth'))
    assert checkpoint['meta']['iter'] == 2
