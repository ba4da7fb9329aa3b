"""Wall-clock time of the main job, ``tools/run_toy.sh``, from a fresh work directory.

The issue's target is under 20 minutes on 2 CPU cores for the README's command (raw and learned). The job's
own output streams through; the time, whether the toy data had to be generated first, the time of each step
(detector trainings, attackers, inverters, tests, as tools/analysis/privacy_utility.py reports them) and the
machine are printed at the end.

    python benchmarks/main_job.py
    python benchmarks/main_job.py --methods raw box-blur gaussian-blur pixelate solid-mask gaussian-noise learned
"""
import argparse
import os
import os.path as osp
import re
import subprocess
import sys
import tempfile
import time

from timing import machine  # noqa: E402  (benchmarks/ is on sys.path as the script's folder)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
# privacy_utility.py's lines that open a method ('[1/2] raw (raw): ...'), a step ('  train the detector: ...')
# and end a step ('    done in 312 s').
METHOD = re.compile(r'^\[(?:\d+/\d+|(?P<label>[^\]]+))\] (?P<name>\S+)')
STEP = re.compile(r'^  (?P<what>[a-z][^:]*): ')
DONE = re.compile(r'^    done in (?P<seconds>\d+) s')


def parse_args():
    parser = argparse.ArgumentParser(description='Time tools/run_toy.sh from a fresh work directory.')
    parser.add_argument('--methods', nargs='+', default=['raw', 'learned'],
                        help='methods of the run (default: raw learned, as tools/run_toy.sh)')
    parser.add_argument('--work-dir', help='where the run writes (default: a temporary folder, removed after)')
    return parser.parse_args()


def run_and_time_steps(command, env):
    """Run the job with its output streamed through, and collect ``(method: step, seconds)`` of its steps."""
    steps, method, step = [], '', ''
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               errors='replace')
    for line in process.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        for pattern in (METHOD, STEP, DONE):
            match = pattern.match(line)
            if match is None:
                continue
            if pattern is METHOD:
                method = ' '.join(filter(None, (match['label'], match['name'])))
            elif pattern is STEP:
                step = match['what']
            else:
                steps.append((f'{method}: {step}', int(match['seconds'])))
            break
    return process.wait(), steps


def main():
    args = parse_args()
    generated = not osp.isfile(osp.join(REPO, 'data', 'toy_ava', 'toy_ava.json'))
    with tempfile.TemporaryDirectory() as tmp:
        work_dir = args.work_dir or osp.join(tmp, 'toy')
        if osp.exists(work_dir) and os.listdir(work_dir):
            sys.exit(f'{work_dir} is not empty: the run would reuse what is there; give a fresh --work-dir')
        env = dict(os.environ, WORK_DIR=osp.abspath(work_dir), METHODS=' '.join(args.methods))
        start = time.perf_counter()
        code, steps = run_and_time_steps(['bash', osp.join(REPO, 'tools', 'run_toy.sh')], env)
        seconds = time.perf_counter() - start
    minutes, rest = divmod(round(seconds), 60)
    print(f'\npython {" ".join(sys.argv)}')
    print(f'main job ({" ".join(args.methods)}): {minutes} min {rest} s, exit status {code}; toy data '
          f'{"generated in this run" if generated else "already present"}')
    for step, step_seconds in steps:
        print(f'  {step}: {step_seconds} s')
    print(f'machine: {machine()} (at the end of the run)')
    return code


if __name__ == '__main__':
    sys.exit(main())
