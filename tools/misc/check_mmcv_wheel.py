"""Check that mmcv wheels carry mmcv's compiled ops (``mmcv._ext``) and fit the interpreter that runs this script.

``tools/install.sh`` runs it on every mmcv wheel it is about to cache or install: a wheel built where torch was
not importable is a pure-Python ``py2.py3-none-any`` wheel without ``mmcv._ext``, which installs and imports
but fails at the first detector. Only the standard library is used, because it runs before anything else is
installed.

    python tools/misc/check_mmcv_wheel.py [--delete] WHEEL [WHEEL ...]
    python tools/misc/check_mmcv_wheel.py --interpreter-tag

Prints ``ok: WHEEL`` or ``rejected: WHEEL: <reason>`` for each wheel and exits with status 0 when every wheel
is fine, 1 otherwise. ``--interpreter-tag`` prints the tag that this interpreter's wheels carry (``cp311``).
"""
import argparse
import os
import re
import sys
import zipfile
import zlib

# The compiled extension as setuptools names it: mmcv/_ext.cpython-311-x86_64-linux-gnu.so, mmcv/_ext.pyd, ...
EXT_MODULE = re.compile(r'^mmcv/_ext(\.[^/]*)?\.(so|pyd)$')


def interpreter_tag():
    """The wheel interpreter tag of the running Python, e.g. ``cp311``.

    Returns:
        str: ``cp`` for CPython (else the implementation's name), then the major and minor version.
    """
    name = sys.implementation.name
    prefix = 'cp' if name == 'cpython' else name
    return f'{prefix}{sys.version_info.major}{sys.version_info.minor}'


def check_wheel(path):
    """Tell why an mmcv wheel cannot serve the running interpreter, if it cannot.

    Args:
        path (str): Path of a ``.whl`` file.

    Returns:
        str | None: The reason to reject the wheel, or None when it is an mmcv wheel for this interpreter whose
        files include the compiled ``mmcv._ext`` module and whose archive reads back without CRC errors.
    """
    parts = os.path.basename(path)[:-len('.whl')].split('-') if path.endswith('.whl') else []
    # name-version[-build]-python-abi-platform (PEP 427)
    if len(parts) not in (5, 6):
        return 'not a wheel file name (name-version-python-abi-platform.whl)'
    name, python_tags, platform_tag = parts[0], parts[-3], parts[-1]
    if name != 'mmcv':
        return f'a wheel of {name!r}, not of mmcv'
    if platform_tag == 'any':
        return (f'a pure-Python wheel ({"-".join(parts[-3:])}): mmcv was built without its compiled ops, '
                'which happens when the build could not import torch')
    if interpreter_tag() not in python_tags.split('.'):
        return f'built for {python_tags}, not for this interpreter ({interpreter_tag()})'
    try:
        with zipfile.ZipFile(path) as wheel:
            if not any(EXT_MODULE.match(member) for member in wheel.namelist()):
                return 'no compiled ops: the wheel has no mmcv/_ext module'
            damaged = wheel.testzip()
    except (OSError, zipfile.BadZipFile, zlib.error) as e:
        return f'unreadable ({e})'
    if damaged is not None:
        return f'damaged archive: {damaged} fails its CRC check'
    return None


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Check that mmcv wheels have the compiled ops (mmcv/_ext) and fit this interpreter.')
    parser.add_argument('wheels', nargs='*', metavar='WHEEL', help='mmcv wheel files to check')
    parser.add_argument('--delete', action='store_true',
                        help='delete each rejected wheel, so that a wheel cache never serves it again')
    parser.add_argument('--interpreter-tag', action='store_true',
                        help="print this interpreter's wheel tag (e.g. cp311) instead of checking wheels")
    args = parser.parse_args(argv)
    if args.interpreter_tag == bool(args.wheels):
        parser.error('give either WHEEL files to check or --interpreter-tag')
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.interpreter_tag:
        print(interpreter_tag())
        return 0
    all_ok = True
    for path in args.wheels:
        reason = check_wheel(path)
        if reason is None:
            print(f'ok: {path}')
            continue
        all_ok = False
        if args.delete and os.path.isfile(path):
            os.remove(path)
            reason += '; deleted'
        print(f'rejected: {path}: {reason}')
    return 0 if all_ok else 1


if __name__ == '__main__':
    sys.exit(main())
