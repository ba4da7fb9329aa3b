"""Packaging for mmanon.

mmcv is deliberately not an install requirement: pip would build it in an isolated environment and silently
produce a wheel without compiled ops. ``tools/install.sh`` installs (or builds) mmcv with ops first; the pins
for the OpenMMLab stack live in ``requirements/mminstall.txt``.
"""
import os.path as osp
import re

from setuptools import find_packages, setup

HERE = osp.dirname(osp.abspath(__file__))


def get_version():
    with open(osp.join(HERE, 'mmanon', 'version.py'), encoding='utf-8') as f:
        return re.search(r"__version__ = '([^']+)'", f.read()).group(1)


def parse_requirements(fname, skip=()):
    """Read requirement lines from ``fname``, following ``-r`` includes.

    Args:
        fname (str): Path of the requirements file, relative to this file.
        skip (tuple[str]): Package names to leave out. Defaults to ().

    Returns:
        list[str]: Requirement specifiers.
    """
    requirements = []
    with open(osp.join(HERE, fname), encoding='utf-8') as f:
        for line in f:
            line = line.split('#', 1)[0].strip()
            if not line:
                continue
            if line.startswith('-r '):
                requirements += parse_requirements(
                    osp.join(osp.dirname(fname), line[3:].strip()), skip)
            elif re.split(r'[<>=!~\[ ]', line, 1)[0] not in skip:
                requirements.append(line)
    return requirements


setup(
    name='mmanon',
    version=get_version(),
    description='Privacy-preserving spatio-temporal action detection for '
    'MMAction2: learned and handcrafted face anonymizers, adversarial '
    'training against a face discriminator, and privacy metrics.',
    long_description=open(osp.join(HERE, 'README.md'), encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    license='Apache License 2.0',
    packages=find_packages(exclude=('configs', 'tools', 'tests', 'benchmarks')),
    include_package_data=True,
    python_requires='>=3.8',
    install_requires=parse_requirements('requirements/runtime.txt') +
    parse_requirements('requirements/mminstall.txt', skip=('mmcv', )),
    extras_require={
        'tests': parse_requirements('requirements/tests.txt'),
        'attack': parse_requirements('requirements/attack.txt'),
    },
    zip_safe=False)
