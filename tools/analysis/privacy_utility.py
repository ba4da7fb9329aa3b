"""The privacy-utility report of a benchmark: action detection against face re-identification, per anonymizer.

For each method (a detector config: the raw reference, every handcrafted anonymizer, the learned one), in its
folder ``<work-dir>/<method>/``:

1. train the detector with ``tools/train.py``, unless the folder holds a checkpoint already (mmengine's
   ``last_checkpoint``);
2. train its adaptive attacker with ``tools/analysis/train_attacker.py`` into ``adaptive_attacker.pth``, unless
   that file is newer than the detector's checkpoint (delete it to retrain with other ``--attacker-args``);
3. write the config with the report's test evaluator into ``privacy_test_config.py`` (the config's
   ``AVAMetric`` and an ``mmanon.FacePrivacyMetric`` whose attackers are ``discriminator``, the model's own,
   where it has one; ``adaptive``, the attacker of step 2; and ``dlib``, where installed), test the detector
   with ``tools/test.py`` into ``test/`` and read the metrics from the json that mmengine writes there.

Each command is printed before it runs and its output goes to a log in the method's folder, so any step can be
rerun by hand. With ``--gpus N`` (N > 1) training and testing run under ``tools/dist_train.sh`` and
``tools/dist_test.sh``.

The report, in ``--work-dir``: ``privacy_utility.md`` (a table and the verdict), ``privacy_utility.csv`` (the same
numbers) and ``privacy_utility.png`` (frame-mAP against the adaptive attacker's re-identification top-1, with
chance marked). The verdict checks the target, from the numbers: the learned anonymizer keeps at least 90% of the
raw detector's frame-mAP while the adaptive attacker's re-identification top-1 stays within twice chance, and every
handcrafted baseline misses at least one of the two. Run it from the folder the configs' data paths are relative
to (the repository root for the toy benchmark)::

    python tools/analysis/privacy_utility.py --work-dir work_dirs/privacy_utility
"""
import argparse
import csv
import glob
import importlib.util
import json
import math
import os
import os.path as osp
import re
import shlex
import subprocess
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import matplotlib

matplotlib.use('Agg')  # files only: the report is made on machines without a display
import matplotlib.pyplot as plt  # noqa: E402
from mmengine.config import Config  # noqa: E402

import mmanon  # noqa: F401,E402  (applies the compatibility fixes and registers mmanon's components)
from mmanon.models.anonymizers import IdentityAnonymizer  # noqa: E402
from mmanon.registry import MODELS, build_in_scope  # noqa: E402
from mmanon.utils import add_checkpoint_arguments, apply_checkpoint_arguments  # noqa: E402

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOY_CONFIG_DIR = osp.join('configs', 'detection', 'slowonly')
TOY_METHODS = {
    'raw': 'slowonly_r18_1xb8-4x6x1-600i_toy-ava-rgb.py',
    'box-blur': 'slowonly-box-blur_r18_1xb8-4x6x1-600i_toy-ava-rgb.py',
    'gaussian-blur': 'slowonly-gaussian-blur_r18_1xb8-4x6x1-600i_toy-ava-rgb.py',
    'pixelate': 'slowonly-pixelate_r18_1xb8-4x6x1-600i_toy-ava-rgb.py',
    'solid-mask': 'slowonly-solid-mask_r18_1xb8-4x6x1-600i_toy-ava-rgb.py',
    'gaussian-noise': 'slowonly-gaussian-noise_r18_1xb8-4x6x1-600i_toy-ava-rgb.py',
    'learned': 'slowonly-adversarial_r18_1xb8-4x6x1-600i_toy-ava-rgb.py',
}
ROLES = ('raw', 'handcrafted', 'learned')
# The target: the learned anonymizer keeps this share of the raw frame-mAP ...
MAP_RATIO = 0.9
# ... while the adaptive attacker re-identifies at most this multiple of chance.
CHANCE_FACTOR = 2.0
FRAME_MAP_KEY = 'mAP/overall'  # AVAMetric's frame-level mAP at IoU 0.5
ADAPTIVE = 'adaptive'
ATTACKERS = (ADAPTIVE, 'discriminator', 'dlib')
FAR = 0.01
ATTACKER_FILE = 'adaptive_attacker.pth'
TEST_CONFIG_FILE = 'privacy_test_config.py'
REPORT_NAME = 'privacy_utility'


# The lines of a step's output worth showing while it runs: mmengine's iteration logs, the attacker's epochs.
PROGRESS = re.compile(r'(Iter|Epoch)\((train|val|test)\)|^epoch \d+')


class StepFailed(RuntimeError):
    """A step of one method failed; the report goes on with the other methods."""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Train (where needed) and test the raw, handcrafted and learned anonymizers of a benchmark, '
        'each against an adaptive attacker, and write the privacy-utility report (Markdown table, CSV, plot) '
        'with the verdict on the target: the learned anonymizer keeps >= 90% of the raw frame-mAP with the '
        'adaptive re-identification top-1 within 2x chance, and every handcrafted baseline misses one of the two.')
    parser.add_argument('--configs', nargs='+', metavar='NAME=CONFIG',
                        help='the methods of another benchmark, each a name and a detector config (a bare config '
                        'is named after its file); the role of each (raw, handcrafted or learned) comes from its '
                        'anonymizer (default: the toy benchmark, ' + ', '.join(TOY_METHODS) + ')')
    parser.add_argument('--methods', nargs='+', metavar='NAME', help='only these methods (default: all)')
    parser.add_argument('--work-dir', default=osp.join('work_dirs', REPORT_NAME),
                        help='folder of one subfolder per method and of the report (default: %(default)s)')
    parser.add_argument('--skip-train', action='store_true',
                        help='train no detector: every method\'s folder must hold a checkpoint (attackers are '
                        'still trained where missing)')
    parser.add_argument('--train-args', default='',
                        help='extra flags of tools/train.py, as one string, e.g. '
                        '--train-args="--cfg-options train_cfg.max_iters=60"')
    parser.add_argument('--attacker-args', default='',
                        help='extra flags of tools/analysis/train_attacker.py, as one string, e.g. '
                        '--attacker-args="--epochs 10"')
    parser.add_argument('--test-args', default='', help='extra flags of tools/test.py, as one string')
    parser.add_argument('--gpus', type=int, default=1,
                        help='processes of training and testing; above 1 they run under tools/dist_train.sh and '
                        'tools/dist_test.sh (default: %(default)s)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the detectors\' and the attackers\' training '
                        '(default: %(default)s)')
    # Both hold for every step: the steps inherit the opt-in through the environment and get the flag.
    add_checkpoint_arguments(parser)
    return parser.parse_args(argv)


def parse_methods(specs: Optional[Sequence[str]]) -> Dict[str, str]:
    """``{name: config path}`` of ``--configs`` (the toy benchmark's when None)."""
    if specs is None:
        return {name: osp.join(REPO, TOY_CONFIG_DIR, config) for name, config in TOY_METHODS.items()}
    methods = {}
    for spec in specs:
        name, config = spec.split('=', 1) if '=' in spec else (osp.splitext(osp.basename(spec))[0], spec)
        if not name or name in methods:
            raise ValueError(f'--configs needs a unique non-empty name per config, got {spec!r}')
        if not osp.isfile(config):
            raise FileNotFoundError(f'--configs: the config of {name!r}, {config}, does not exist')
        methods[name] = config
    return methods


def anonymizer_role(config: Config) -> str:
    """'raw' (identity anonymizer), 'learned' (an anonymizer with weights) or 'handcrafted' (the others)."""
    preprocessor = config.model.get('data_preprocessor') or {}
    if not str(preprocessor.get('type', '')).endswith('AnonymizerDataPreprocessor'):
        raise ValueError(f'{config.filename}: model.data_preprocessor must be an mmanon.AnonymizerDataPreprocessor, '
                         f'got {preprocessor.get("type")!r}')
    anonymizer = build_in_scope(MODELS, preprocessor.get('anonymizer', dict(type='IdentityAnonymizer')))
    if isinstance(anonymizer, IdentityAnonymizer):
        return 'raw'
    return 'learned' if any(True for _ in anonymizer.parameters()) else 'handcrafted'


def dlib_installed() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ('dlib', 'face_recognition_models'))


def privacy_evaluator(config: Config, attacker: str) -> list:
    """The report's test evaluator: the config's AVAMetric and a FacePrivacyMetric with the report's attackers."""
    evaluators = config.test_evaluator
    evaluators = list(evaluators) if isinstance(evaluators, (list, tuple)) else [evaluators]
    ava = [e for e in evaluators if str(e.get('type', '')).split('.')[-1] == 'AVAMetric']
    if not ava:
        raise ValueError(f'{config.filename}: test_evaluator has no AVAMetric, which gives the frame-mAP')
    attackers = []
    if config.model.data_preprocessor.get('discriminator'):
        attackers.append(dict(type='discriminator'))
    attackers.append(dict(type='checkpoint', checkpoint=osp.abspath(attacker), name=ADAPTIVE))
    if dlib_installed():
        attackers.append(dict(type='dlib'))
    return ava + [dict(type='mmanon.FacePrivacyMetric', attackers=attackers, far=FAR)]


def last_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint that mmengine's ``last_checkpoint`` file in ``work_dir`` names, if both exist."""
    pointer = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(pointer):
        return None
    with open(pointer, encoding='utf-8') as f:
        path = f.read().strip()
    return path if osp.isfile(path) else None


def run_step(command: List[str], log: str, what: str) -> None:
    """Run one step's command with its output in ``log`` and its progress lines (training and test
    iterations, attacker epochs) echoed; raise :class:`StepFailed` naming the log on failure."""
    print(f'  {what}: {shlex.join(command)}\n    log: {log}', flush=True)
    with open(log, 'w', encoding='utf-8') as f:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   errors='replace')
        for line in process.stdout:
            f.write(line)
            if PROGRESS.search(line):
                print(f'    {line.rstrip()[:160]}', flush=True)
        returncode = process.wait()
    if returncode != 0:
        with open(log, encoding='utf-8', errors='replace') as f:
            tail = ''.join(f.readlines()[-20:])
        raise StepFailed(f'{what} exited with {returncode}; the end of {log}:\n{tail}')


def _tool(script: str, gpus: int, *positional: str) -> List[str]:
    """The command of ``tools/<script>`` with its positional arguments; for several processes, of its torchrun
    launcher ``tools/dist_<script>.sh``, which takes the process count after them."""
    if gpus > 1:
        return ['bash', osp.join(REPO, 'tools', f'dist_{osp.splitext(script)[0]}.sh'), *positional, str(gpus)]
    return [sys.executable, osp.join(REPO, 'tools', script), *positional]


def read_test_metrics(test_dir: str, before: set) -> dict:
    """The metrics in the json that a test run wrote into a new ``<timestamp>/<timestamp>.json`` of test_dir."""
    new = [path for path in glob.glob(osp.join(test_dir, '*', '*.json'))
           if osp.basename(osp.dirname(path)) + '.json' == osp.basename(path) and path not in before]
    if not new:
        raise StepFailed(f'the test wrote no <timestamp>/<timestamp>.json into {test_dir}')
    with open(max(new, key=osp.getmtime), encoding='utf-8') as f:
        return json.load(f)


def _missing_keys_flag(args) -> List[str]:
    """``--allow-missing-keys`` for the steps that load the detector's checkpoint, if it was given."""
    return ['--allow-missing-keys'] if args.allow_missing_keys else []


def evaluate_method(name: str, config_path: str, args) -> dict:
    """Train, attack and test one method; see the module docstring.

    Args:
        name (str): The method's name, also its folder under ``args.work_dir``.
        config_path (str): Its detector config.
        args (argparse.Namespace): The flags of :func:`parse_args`.

    Returns:
        dict: The test metrics.
    """
    work_dir = osp.join(args.work_dir, name)
    os.makedirs(work_dir, exist_ok=True)
    checkpoint = last_checkpoint(work_dir)
    if checkpoint is None:
        if args.skip_train:
            raise StepFailed(f'--skip-train, but {work_dir} holds no checkpoint (no last_checkpoint file naming an '
                             'existing file); train it or leave out --skip-train')
        run_step(_tool('train.py', args.gpus, config_path) +
                 ['--work-dir', work_dir, '--seed', str(args.seed), *shlex.split(args.train_args)],
                 osp.join(work_dir, 'train_stdout.log'), 'train the detector')
        checkpoint = last_checkpoint(work_dir)
        if checkpoint is None:
            raise StepFailed(f'training finished without a checkpoint in {work_dir}')
    else:
        print(f'  detector: {checkpoint}', flush=True)

    attacker = osp.join(work_dir, ATTACKER_FILE)
    if osp.isfile(attacker) and osp.getmtime(attacker) >= osp.getmtime(checkpoint):
        print(f'  adaptive attacker: {attacker}', flush=True)
    else:
        run_step([sys.executable, osp.join(REPO, 'tools', 'analysis', 'train_attacker.py'), config_path, checkpoint,
                  '--out', attacker, '--seed', str(args.seed), *_missing_keys_flag(args),
                  *shlex.split(args.attacker_args)],
                 osp.join(work_dir, 'attacker_stdout.log'), 'train the adaptive attacker')

    config = Config.fromfile(config_path)
    config.test_evaluator = privacy_evaluator(config, attacker)
    test_config = osp.join(work_dir, TEST_CONFIG_FILE)
    config.dump(test_config)
    test_dir = osp.join(work_dir, 'test')
    before = set(glob.glob(osp.join(test_dir, '*', '*.json')))
    run_step(_tool('test.py', args.gpus, test_config, checkpoint) +
             ['--work-dir', test_dir, *_missing_keys_flag(args), *shlex.split(args.test_args)],
             osp.join(work_dir, 'test_stdout.log'),
             'test with the privacy metrics')
    return read_test_metrics(test_dir, before)


def _number(value) -> float:
    return float('nan') if value is None else float(value)


def report_rows(results: Dict[str, dict]) -> List[dict]:
    """One report row per method from ``{name: dict(role, metrics)}``, in the given order.

    Each row has ``method``, ``role``, ``frame_mAP``, ``mAP_vs_raw`` (NaN without exactly one raw method),
    ``reid_top1/<attacker>`` for every attacker that some method has, ``chance``, ``majority`` (the top-1 of
    always naming the most frequent identity) and the adaptive attacker's ``roc_auc`` and ``tar@far=0.01``.
    """
    raw = [r['metrics'].get(FRAME_MAP_KEY) for r in results.values() if r['role'] == 'raw']
    raw_map = _number(raw[0]) if len(raw) == 1 else float('nan')
    attackers = [a for a in ATTACKERS if any(f'privacy/{a}/reid_top1' in r['metrics'] for r in results.values())]
    rows = []
    for name, result in results.items():
        metrics = result['metrics']
        frame_map = _number(metrics.get(FRAME_MAP_KEY))
        row = dict(method=name, role=result['role'], frame_mAP=frame_map,
                   mAP_vs_raw=frame_map / raw_map if raw_map > 0 else float('nan'))
        for attacker in attackers:
            row[f'reid_top1/{attacker}'] = _number(metrics.get(f'privacy/{attacker}/reid_top1'))
        row.update(chance=_number(metrics.get(f'privacy/{ADAPTIVE}/reid_chance')),
                   majority=_number(metrics.get('privacy/reid_majority')),
                   roc_auc=_number(metrics.get(f'privacy/{ADAPTIVE}/roc_auc')),
                   **{f'tar@far={FAR:g}': _number(metrics.get(f'privacy/{ADAPTIVE}/tar@far={FAR:g}'))})
        rows.append(row)
    return rows


def check_target(rows: List[dict], map_ratio: float = MAP_RATIO,
                 chance_factor: float = CHANCE_FACTOR) -> Tuple[Optional[bool], List[str]]:
    """Whether the report's numbers meet the target (see the module docstring).

    A method *meets* the target when it keeps at least ``map_ratio`` of the raw frame-mAP and the adaptive
    attacker's re-identification top-1 is at most ``chance_factor`` times chance. The target holds when every
    learned method meets it and no handcrafted one does; without a handcrafted method it cannot be decided
    (the evidence still says whether the learned ones meet it).

    Args:
        rows (list[dict]): Rows of :func:`report_rows`.
        map_ratio (float): Share of the raw frame-mAP to keep. Defaults to 0.9.
        chance_factor (float): Multiple of chance the re-identification may reach. Defaults to 2.0.

    Returns:
        tuple[bool | None, list[str]]: The verdict, None when the numbers cannot decide it (no raw or no
        learned method, no handcrafted one, or a missing number), and one line of evidence per method (and
        one more when no handcrafted method was compared).
    """
    roles = {role: [row for row in rows if row['role'] == role] for role in ROLES}
    if len(roles['raw']) != 1:
        return None, [f'needs exactly one raw reference to compare with, got {len(roles["raw"])}']
    if not roles['learned']:
        return None, ['no learned anonymizer among the methods']
    lines, meets = [], {}
    for row in roles['learned'] + roles['handcrafted']:
        ratio, top1, chance = row['mAP_vs_raw'], row[f'reid_top1/{ADAPTIVE}'], row['chance']
        if any(math.isnan(v) for v in (ratio, top1, chance)):
            lines.append(f'{row["method"]} ({row["role"]}): a number is missing (mAP vs raw {ratio:.3f}, adaptive '
                         f're-id top-1 {top1:.3f}, chance {chance:.3f})')
            meets[row['method']] = None
            continue
        keeps, private = ratio >= map_ratio, top1 <= chance_factor * chance
        meets[row['method']] = keeps and private
        lines.append(f'{row["method"]} ({row["role"]}): keeps {ratio:.1%} of the raw frame-mAP '
                     f'({"at least" if keeps else "below"} {map_ratio:.0%}); adaptive re-id top-1 {top1:.3f} is '
                     f'{"within" if private else "above"} {chance_factor:g}x chance ({chance_factor * chance:.3f})')
    if None in meets.values():
        return None, lines
    if not roles['handcrafted']:
        return None, lines + ['no handcrafted baseline among the methods, so the comparison with them is open (the '
                              'toy benchmark\'s: METHODS="' + ' '.join(TOY_METHODS) + '" bash tools/run_toy.sh)']
    learned_ok = all(meets[row['method']] for row in roles['learned'])
    baselines_worse = not any(meets[row['method']] for row in roles['handcrafted'])
    return learned_ok and baselines_worse, lines


def csv_columns(rows: List[dict]) -> List[str]:
    return list(rows[0]) if rows else ['method', 'role']


def write_csv(rows: List[dict], path: str) -> None:
    with open(path, 'w', newline='', encoding='utf-8') as f:
        writer = csv.DictWriter(f, fieldnames=csv_columns(rows))
        writer.writeheader()
        for row in rows:
            writer.writerow({key: '' if isinstance(value, float) and math.isnan(value) else value
                             for key, value in row.items()})


def _header(column: str) -> str:
    if column.startswith('reid_top1/'):
        return f're-id top-1 ({column.split("/", 1)[1]})'
    return dict(frame_mAP='frame-mAP', mAP_vs_raw='mAP vs raw', majority='majority guess',
                roc_auc=f'ROC-AUC ({ADAPTIVE})',
                **{f'tar@far={FAR:g}': f'TAR@FAR={FAR:.0%} ({ADAPTIVE})'}).get(column, column)


def _cell(column: str, value) -> str:
    if not isinstance(value, float):
        return str(value)
    if math.isnan(value):
        return 'n/a'
    return f'{value:.1%}' if column == 'mAP_vs_raw' else f'{value:.3f}'


def verdict_text(verdict: Optional[bool]) -> str:
    return {True: 'the target holds', False: 'the target does not hold', None: 'the target cannot be decided'}[verdict]


def _shown_path(path: str) -> str:
    """A path inside the repository relative to its root, so that the report reads the same on any machine."""
    relative = osp.relpath(osp.abspath(path), REPO)
    return path if relative.startswith(os.pardir) else relative


def write_markdown(rows: List[dict], methods: Dict[str, str], verdict: Optional[bool], evidence: List[str],
                   failures: Dict[str, str], path: str) -> None:
    columns = csv_columns(rows)
    lines = [
        '# Privacy-utility report', '',
        '| ' + ' | '.join(_header(c) for c in columns) + ' |',
        '|' + '|'.join('---' if c in ('method', 'role') else '---:' for c in columns) + '|',
        *('| ' + ' | '.join(_cell(c, row[c]) for c in columns) + ' |' for row in rows), '',
        f'Target: the learned anonymizer keeps at least {MAP_RATIO:.0%} of the raw frame-mAP while the adaptive '
        f'attacker\'s re-identification top-1 stays within {CHANCE_FACTOR:g}x chance, and every handcrafted '
        f'baseline misses at least one of the two. From the numbers above, **{verdict_text(verdict)}**:', '',
        *(f'- {line}' for line in evidence), '',
        f'![frame-mAP against the adaptive attacker\'s re-identification top-1]({REPORT_NAME}.png)', '',
        'Configs:', '', *(f'- {name}: `{_shown_path(config)}`' for name, config in methods.items()),
    ]
    if failures:
        lines += ['', 'Failed methods (not in the table):', '', *(f'- {name}: {error.splitlines()[0]}'
                                                                   for name, error in failures.items())]
    with open(path, 'w', encoding='utf-8') as f:
        f.write('\n'.join(lines) + '\n')


def plot_report(rows: List[dict], path: str) -> None:
    """Frame-mAP against the adaptive attacker's re-identification top-1, with chance and the target marked."""
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=100)
    markers = dict(raw='s', handcrafted='o', learned='*')
    for role in ROLES:
        points = [row for row in rows if row['role'] == role]
        if points:
            ax.scatter([row[f'reid_top1/{ADAPTIVE}'] for row in points], [row['frame_mAP'] for row in points],
                       marker=markers[role], s=120 if role == 'learned' else 50, label=role, zorder=3)
        for row in points:
            ax.annotate(row['method'], (row[f'reid_top1/{ADAPTIVE}'], row['frame_mAP']), textcoords='offset points',
                        xytext=(5, 5), fontsize=8)
    ax.set_xlim(0, 1.05)
    chances = [row['chance'] for row in rows if not math.isnan(row['chance'])]
    if chances:
        ax.axvline(chances[0], color='grey', linestyle=':', label=f'chance ({chances[0]:.3f})')
        ax.axvline(CHANCE_FACTOR * chances[0], color='grey', linestyle='--', label=f'{CHANCE_FACTOR:g}x chance')
    raw_maps = [row['frame_mAP'] for row in rows if row['role'] == 'raw']
    if len(raw_maps) == 1 and not math.isnan(raw_maps[0]):
        ax.axhline(MAP_RATIO * raw_maps[0], color='tab:green', linestyle='-.', label=f'{MAP_RATIO:.0%} of raw mAP')
        if chances:
            top = max(ax.get_ylim()[1], MAP_RATIO * raw_maps[0])
            ax.fill_between([0, CHANCE_FACTOR * chances[0]], MAP_RATIO * raw_maps[0], top, color='tab:green',
                            alpha=0.1, label='target')
    ax.set_xlabel(f're-identification top-1 of the {ADAPTIVE} attacker (lower is more private)')
    ax.set_ylabel('frame-mAP (higher is more useful)')
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc='best')
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    apply_checkpoint_arguments(args)
    try:
        methods = parse_methods(args.configs)
        if args.methods:
            unknown = sorted(set(args.methods) - set(methods))
            if unknown:
                raise ValueError(f'--methods: unknown {unknown}; the methods are {list(methods)}')
            methods = {name: config for name, config in methods.items() if name in args.methods}
        if args.gpus < 1:
            raise ValueError(f'--gpus must be positive, got {args.gpus}')
        roles = {name: anonymizer_role(Config.fromfile(config)) for name, config in methods.items()}
    except (OSError, ValueError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1

    results, failures = {}, {}
    for i, (name, config) in enumerate(methods.items(), start=1):
        print(f'[{i}/{len(methods)}] {name} ({roles[name]}): {config}', flush=True)
        try:
            results[name] = dict(role=roles[name], metrics=evaluate_method(name, config, args))
        except (StepFailed, OSError, ValueError) as e:
            print(f'  failed: {e}', file=sys.stderr, flush=True)
            failures[name] = str(e)

    rows = report_rows(results)
    verdict, evidence = check_target(rows)
    report = osp.join(args.work_dir, REPORT_NAME)
    os.makedirs(args.work_dir, exist_ok=True)
    write_csv(rows, report + '.csv')
    write_markdown(rows, methods, verdict, evidence, failures, report + '.md')
    plot_report(rows, report + '.png')
    print(f'wrote {report}.md, .csv and .png: {verdict_text(verdict)}')
    for line in evidence:
        print(f'  {line}')
    if failures:
        print(f'failed: {", ".join(failures)} (see above)', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
