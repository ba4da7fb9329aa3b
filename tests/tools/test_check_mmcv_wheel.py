"""tools/misc/check_mmcv_wheel.py on fabricated tiny wheels: what tools/install.sh lets into its cache."""
import importlib.util
import os.path as osp
import sys
import zipfile

import pytest

SCRIPT = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'tools', 'misc',
                  'check_mmcv_wheel.py')
spec = importlib.util.spec_from_file_location('check_mmcv_wheel', SCRIPT)
check_mmcv_wheel = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_mmcv_wheel)

TAG = f'cp{sys.version_info.major}{sys.version_info.minor}'
EXT = f'mmcv/_ext.cpython-{sys.version_info.major}{sys.version_info.minor}-x86_64-linux-gnu.so'


def make_wheel(folder, name, members):
    """Write a wheel ``name`` whose files are ``members`` (name to bytes), stored uncompressed."""
    path = folder / name
    with zipfile.ZipFile(path, 'w', compression=zipfile.ZIP_STORED) as wheel:
        for member, data in members.items():
            wheel.writestr(member, data)
    return str(path)


PURE_FILES = {'mmcv/__init__.py': b'', 'mmcv/ops/__init__.py': b'from ..utils import ext_loader\n'}
OPS_FILES = dict(PURE_FILES, **{EXT: b'\x7fELF' + bytes(range(256)) * 4})
GOOD = f'mmcv-2.1.0-{TAG}-{TAG}-linux_x86_64.whl'


def test_interpreter_tag():
    assert check_mmcv_wheel.interpreter_tag() == TAG


def test_wheel_with_compiled_ops_is_accepted(tmp_path):
    assert check_mmcv_wheel.check_wheel(make_wheel(tmp_path, GOOD, OPS_FILES)) is None


@pytest.mark.parametrize('name, members, reason', [
    # what a build that could not import torch produces
    ('mmcv-2.1.0-py2.py3-none-any.whl', PURE_FILES, 'pure-Python wheel (py2.py3-none-any)'),
    ('mmcv-2.1.0-py2.py3-none-any.whl', OPS_FILES, 'pure-Python wheel'),
    (GOOD, PURE_FILES, 'no compiled ops: the wheel has no mmcv/_ext module'),
    ('mmcv-2.1.0-cp27-cp27mu-linux_x86_64.whl', OPS_FILES, f'built for cp27, not for this interpreter ({TAG})'),
    (f'mmengine-0.10.7-{TAG}-{TAG}-linux_x86_64.whl', OPS_FILES, "a wheel of 'mmengine', not of mmcv"),
    ('mmcv-2.1.0.tar.gz', OPS_FILES, 'not a wheel file name'),
])
def test_wheel_is_rejected(tmp_path, name, members, reason):
    assert reason in check_mmcv_wheel.check_wheel(make_wheel(tmp_path, name, members))


def test_damaged_and_truncated_wheels_are_rejected(tmp_path):
    path = make_wheel(tmp_path, GOOD, OPS_FILES)
    data = bytearray(open(path, 'rb').read())
    data[data.index(b'\x7fELF') + 100] ^= 0xFF  # one flipped byte inside the stored extension module
    with open(path, 'wb') as f:
        f.write(data)
    assert check_mmcv_wheel.check_wheel(path) == f'damaged archive: {EXT} fails its CRC check'

    with open(path, 'wb') as f:
        f.write(data[:len(data) // 2])  # an interrupted copy
    assert check_mmcv_wheel.check_wheel(path).startswith('unreadable (')


def test_main_deletes_rejected_wheels_only(tmp_path, capsys):
    poisoned = make_wheel(tmp_path, 'mmcv-2.1.0-py2.py3-none-any.whl', PURE_FILES)
    good = make_wheel(tmp_path, GOOD, OPS_FILES)
    assert check_mmcv_wheel.main(['--delete', poisoned, good]) == 1
    assert not osp.exists(poisoned) and osp.exists(good)
    assert capsys.readouterr().out.splitlines() == [
        f'rejected: {poisoned}: a pure-Python wheel (py2.py3-none-any): mmcv was built without its compiled ops, '
        'which happens when the build could not import torch; deleted', f'ok: {good}']
    assert check_mmcv_wheel.main([good]) == 0


def test_main_without_delete_keeps_rejected_wheels(tmp_path):
    poisoned = make_wheel(tmp_path, GOOD, PURE_FILES)
    assert check_mmcv_wheel.main([poisoned]) == 1
    assert osp.exists(poisoned)
