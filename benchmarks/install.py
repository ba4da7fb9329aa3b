"""Wall-clock time of the README's two set-up commands in a brand-new virtual environment, from a clean clone.

    python benchmarks/install.py                                   # empty caches: builds mmcv once
    python benchmarks/install.py --wheel-cache ~/.cache/mmanon/wheels   # a filled mmcv wheel cache: no build

Timed, each in a new virtual environment of a clean clone of the committed HEAD: ``bash tools/install.sh`` with
an empty pip cache (``PIP_CACHE_DIR``) and the given mmcv wheel cache (``MMANON_WHEEL_CACHE``; default: an empty
folder, so mmcv is built from source); ``python -m pytest tests`` in that environment; then ``bash
tools/install.sh`` in a second new environment that reuses both caches, as a user's next environment does. The
commands' output streams through; the figures and the machine are printed at the end.
"""
import argparse
import os
import os.path as osp
import subprocess
import sys
import tempfile
import time

from timing import machine  # noqa: E402  (benchmarks/ is on sys.path as the script's folder)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def parse_args():
    parser = argparse.ArgumentParser(
        description="Time the README's set-up commands in new virtual environments of a clean clone.")
    parser.add_argument('--wheel-cache',
                        help='mmcv wheel cache to start from (default: an empty temporary folder, so mmcv is built; '
                        'a given folder gains the wheel built here)')
    parser.add_argument('--skip-tests', action='store_true', help='time the installs only')
    return parser.parse_args()


def timed(command, cwd, env):
    """Run ``command`` (a bash line) in ``cwd``, its output streaming through.

    Args:
        command (str): The bash command line.
        cwd (str): Its working folder.
        env (dict): Its environment.

    Returns:
        tuple[float, int, list[str]]: Seconds, exit status and the lines it printed.
    """
    print(f'$ {command}', flush=True)
    start = time.perf_counter()
    process = subprocess.Popen(['bash', '-c', command], cwd=cwd, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in process.stdout:
        print(line, end='', flush=True)
        lines.append(line.rstrip('\n'))
    return time.perf_counter() - start, process.wait(), lines


def minutes(seconds):
    m, s = divmod(round(seconds), 60)
    return f'{m} min {s} s'


def mmcv_source(lines):
    """How install.sh obtained mmcv, from its ``[install] mmcv:`` line."""
    return next((line.split('mmcv: ', 1)[1] for line in lines if line.startswith('[install] mmcv: ')), 'unknown')


def main():
    args = parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        clone = osp.join(tmp, 'clone')
        subprocess.run(['git', 'clone', '-q', REPO, clone], check=True)
        wheel_cache = osp.abspath(args.wheel_cache) if args.wheel_cache else osp.join(tmp, 'wheel-cache')
        env = dict(os.environ, MMANON_WHEEL_CACHE=wheel_cache, PIP_CACHE_DIR=osp.join(tmp, 'pip-cache'))
        env.pop('VIRTUAL_ENV', None)
        for venv, label in (('venv1', 'first'), ('venv2', 'second')):
            seconds, code, lines = timed(f'python -m venv {venv} && . {venv}/bin/activate && bash tools/install.sh',
                                         clone, env)
            results.append(f'{label} environment: bash tools/install.sh {minutes(seconds)}, exit status {code}; '
                           f'mmcv: {mmcv_source(lines)}')
            if code:
                break
            if label == 'first' and not args.skip_tests:
                seconds, code, lines = timed(f'. {venv}/bin/activate && python -m pytest tests', clone, env)
                summary = next((line.strip('= ') for line in reversed(lines) if ' in ' in line), '')
                results.append(f'first environment: python -m pytest tests {minutes(seconds)}, exit status {code}; '
                               f'{summary}')
    print(f'\npython {" ".join(sys.argv)}')
    print(f'mmcv wheel cache at the start: {args.wheel_cache or "empty"}; pip cache: empty at the start')
    print('\n'.join(results))
    print(f'machine: {machine()} (at the end of the run)')
    return 0 if all('exit status 0' in r for r in results) else 1


if __name__ == '__main__':
    sys.exit(main())
