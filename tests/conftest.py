"""Fixtures shared by the test suite: the tiny AVA-layout benchmark, generated once per session, and helpers."""
import logging
import os
import os.path as osp
import subprocess
import sys

import pytest
from mmengine.logging import MMLogger

from mmanon.datasets.toy_ava import PRESETS, annotation_paths, generate_toy_ava

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


@pytest.fixture(scope='session')
def ava_fixture(tmp_path_factory):
    """Paths of the tests' tiny AVA benchmark (``PRESETS['fixture']``), laid out as ``<root>/data/ava_fixture``
    so that configs naming ``data/ava_fixture/...`` find it from ``<root>``."""
    root = tmp_path_factory.mktemp('fixture_root')
    out_dir = root / 'data' / 'ava_fixture'
    generate_toy_ava(str(out_dir), PRESETS['fixture'])
    return dict(annotation_paths(str(out_dir)), root=str(root), out_dir=str(out_dir))


@pytest.fixture
def workspace(tmp_path, ava_fixture, monkeypatch):
    """A fresh working directory that sees the fixture as ``data/ava_fixture`` (AVAMetric writes its CSV into
    the working directory, so every test gets its own)."""
    os.symlink(osp.join(ava_fixture['root'], 'data'), tmp_path / 'data')
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope='module')
def module_workspace(tmp_path_factory, ava_fixture):
    """Like ``workspace``, shared by the tests of one module (for expensive runs they all inspect)."""
    path = tmp_path_factory.mktemp('workspace')
    os.symlink(osp.join(ava_fixture['root'], 'data'), path / 'data')
    return path


def _run_tool(args, cwd, timeout=600, env=None):
    script = args[0]
    command = ['bash' if script.endswith('.sh') else sys.executable, osp.join(REPO, script), *map(str, args[1:])]
    # Paths into the repository (configs) may be given relative to it.
    command = [osp.join(REPO, a) if a.startswith('configs/') else a for a in command]
    # As tools/dist_train.sh does: the repository is importable (test helpers in tests/ are imported by name).
    env = dict(os.environ, **(env or {}))
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [REPO, env.get('PYTHONPATH')]))
    proc = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        pytest.fail(f'{" ".join(command)} exited with {proc.returncode}\n--- stdout\n{proc.stdout[-6000:]}\n'
                    f'--- stderr\n{proc.stderr[-6000:]}')
    return proc


@pytest.fixture(scope='session')
def run_tool():
    """``run_tool(args, cwd)`` runs a repository script (its path relative to the repository, then its
    arguments) and returns the completed process; the test fails with the script's output if it exits
    non-zero."""
    return _run_tool


@pytest.fixture
def logged_warnings():
    """The warnings mmengine's current logger emits during the test (it does not propagate to caplog)."""
    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: records.append(record.getMessage())
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)
