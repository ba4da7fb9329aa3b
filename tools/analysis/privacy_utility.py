"""The privacy-utility report of a benchmark: action detection against face re-identification, per anonymizer.

For each method (a detector config: the raw reference, every handcrafted anonymizer, the learned one), in its
folder ``<work-dir>/<method>/``:

1. train the detector with ``tools/train.py``, unless the folder holds a checkpoint already (mmengine's
   ``last_checkpoint``);
2. train its adaptive attacker with ``tools/analysis/train_attacker.py`` into ``adaptive_attacker.pth``, unless
   that file is newer than the detector's checkpoint (delete it to retrain with other ``--attacker-args``);
3. for an anonymizer (not the raw reference), train its inversion attacker with
   ``tools/analysis/train_inverter.py`` into ``inverter.pth`` (same rule), with the identity loss of the
   *raw-face attacker*: an attacker trained on the raw training faces, which is the raw reference's adaptive
   attacker when the raw reference is among the methods (it runs first) and otherwise
   ``<work-dir>/raw_face_attacker.pth`` (``train_attacker.py --faces raw``, kept once trained: delete it to
   retrain);
4. write the config with the report's test evaluator into ``privacy_test_config.py`` (the config's
   ``AVAMetric`` and an ``mmanon.FacePrivacyMetric`` whose attackers are ``discriminator``, the model's own,
   where it has one; ``adaptive``, the attacker of step 2; ``inverted``, the faces restored by the inverter of
   step 3 and embedded by the raw-face attacker; and ``dlib``, where installed), test the detector with
   ``tools/test.py`` into ``test/`` and read the metrics from the json that mmengine writes there.

Then, for each anonymizer, *utility without retraining*, the case of a user who deploys the anonymizer in front
of a detector trained on raw faces: the raw reference's detector is tested on the anonymized clips (its weights
with the method's anonymizer, in ``raw_detector.pth``; config ``raw_detector_test_config.py``, results in
``test_raw_detector/``).

Each command is printed before it runs and its output goes to a log in the method's folder, so any step can be
rerun by hand. With ``--gpus N`` (N > 1) training and testing run under ``tools/dist_train.sh`` and
``tools/dist_test.sh``.

Privacy is the *worst case*: the highest re-identification top-1 relative to chance over every attacker and
every protocol of the metric (raw gallery, anonymized gallery, the attacker's training gallery, its
classifier), with the protocol named. The report, in ``--work-dir``: ``privacy_utility.md`` (the tables and the
verdict), ``privacy_utility.csv`` (every number, one row per method) and ``privacy_utility.png`` (frame-mAP
against the worst-case re-identification over its bound, with the target marked). The verdict checks the
target, from the numbers: the learned anonymizer keeps at least 90% of the raw detector's frame-mAP while under
every attacker and protocol the re-identification top-1 stays within twice its chance (or within the majority
guess where that is higher: see :func:`peak_reidentification`), and every handcrafted baseline misses at least
one of the two. Run it from the folder the configs' data paths are relative to (the repository root for the toy
benchmark)::

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
import time
from typing import Dict, List, Optional, Sequence, Tuple

import matplotlib

matplotlib.use('Agg')  # files only: the report is made on machines without a display
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from mmengine.config import Config  # noqa: E402

import mmanon  # noqa: F401,E402  (applies the compatibility fixes and registers mmanon's components)
from mmanon.compat import load_local_checkpoint  # noqa: E402
from mmanon.evaluation.metrics.face_privacy_metric import PROTOCOLS  # noqa: E402
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
# ... while the worst-case re-identification is at most this multiple of its chance.
CHANCE_FACTOR = 2.0
FRAME_MAP_KEY = 'mAP/overall'  # AVAMetric's frame-level mAP at IoU 0.5
ADAPTIVE = 'adaptive'
INVERTED = 'inverted'
ATTACKERS = (ADAPTIVE, INVERTED, 'discriminator', 'dlib')
ATTACKER_NAMES = dict(adaptive='adaptive', inverted='inversion', discriminator='co-trained D', dlib='dlib')
FAR = 0.01
ATTACKER_FILE = 'adaptive_attacker.pth'
INVERTER_FILE = 'inverter.pth'
RAW_FACE_ATTACKER_FILE = 'raw_face_attacker.pth'
RAW_DETECTOR_FILE = 'raw_detector.pth'
TEST_CONFIG_FILE = 'privacy_test_config.py'
RAW_DETECTOR_TEST_CONFIG_FILE = 'raw_detector_test_config.py'
REPORT_NAME = 'privacy_utility'


# The lines of a step's output worth showing while it runs: mmengine's iteration logs, the attacker's epochs.
PROGRESS = re.compile(r'(Iter|Epoch)\((train|val|test)\)|^epoch \d+')


class StepFailed(RuntimeError):
    """A step of one method failed; the report goes on with the other methods."""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Train (where needed) and test the raw, handcrafted and learned anonymizers of a benchmark, '
        'each against an adaptive and an inversion attacker (and the co-trained discriminator and dlib), test the '
        'raw detector behind each anonymizer, and write the privacy-utility report (Markdown tables, CSV, plot) '
        'with the verdict on the target: the learned anonymizer keeps >= 90% of the raw frame-mAP with every '
        'attacker\'s re-identification top-1 under every protocol within 2x chance (or the majority guess where '
        'higher), and every handcrafted baseline misses one of the two.')
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
    parser.add_argument('--inverter-args', default='',
                        help='extra flags of tools/analysis/train_inverter.py, as one string, e.g. '
                        '--inverter-args="--epochs 10"')
    parser.add_argument('--no-inversion', action='store_true',
                        help='leave out the inversion attacker (no inverter or raw-face attacker is trained)')
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


def ava_evaluator(config: Config) -> list:
    """The AVAMetric entries of a config's test evaluator, which give the frame-mAP."""
    evaluators = config.test_evaluator
    evaluators = list(evaluators) if isinstance(evaluators, (list, tuple)) else [evaluators]
    ava = [e for e in evaluators if str(e.get('type', '')).split('.')[-1] == 'AVAMetric']
    if not ava:
        raise ValueError(f'{config.filename}: test_evaluator has no AVAMetric, which gives the frame-mAP')
    return ava


def privacy_evaluator(config: Config, attacker: str, inverter: Optional[str] = None,
                      raw_face_attacker: Optional[str] = None) -> list:
    """The report's test evaluator: the config's AVAMetric and a FacePrivacyMetric with the report's attackers.

    Args:
        config (Config): The method's config.
        attacker (str): The adaptive attacker's checkpoint.
        inverter (str, optional): The inverter's checkpoint; None leaves out the inversion attacker.
            Defaults to None.
        raw_face_attacker (str, optional): The attacker that embeds the restored faces, needed with
            ``inverter``. Defaults to None.

    Returns:
        list[dict]: The evaluator configs.
    """
    attackers = []
    if config.model.data_preprocessor.get('discriminator'):
        attackers.append(dict(type='discriminator'))
    attackers.append(dict(type='checkpoint', checkpoint=osp.abspath(attacker), name=ADAPTIVE))
    if inverter is not None:
        attackers.append(dict(type='inverted', inverter=osp.abspath(inverter), name=INVERTED,
                              attacker=dict(type='checkpoint', checkpoint=osp.abspath(raw_face_attacker),
                                            name='raw-face')))
    if dlib_installed():
        attackers.append(dict(type='dlib'))
    return ava_evaluator(config) + [dict(type='mmanon.FacePrivacyMetric', attackers=attackers, far=FAR)]


def is_fresh(path: str, *sources: str) -> bool:
    """Whether ``path`` exists and is at least as new as every source it was made from."""
    return osp.isfile(path) and all(osp.getmtime(path) >= osp.getmtime(source) for source in sources)


def last_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint that mmengine's ``last_checkpoint`` file in ``work_dir`` names, if both exist."""
    pointer = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(pointer):
        return None
    with open(pointer, encoding='utf-8') as f:
        path = f.read().strip()
    return path if osp.isfile(path) else None


def run_step(command: List[str], log: str, what: str) -> None:
    """Run one step's command with its output in ``log``, its progress lines (training and test iterations,
    attacker and inverter epochs) echoed and its wall-clock time printed; raise :class:`StepFailed` naming the
    log on failure."""
    print(f'  {what}: {shlex.join(command)}\n    log: {log}', flush=True)
    start = time.perf_counter()
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
    print(f'    done in {time.perf_counter() - start:.0f} s', flush=True)


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


def train_detector(name: str, config_path: str, args) -> str:
    """Step 1 of a method: its detector checkpoint, trained unless its folder holds one."""
    work_dir = osp.join(args.work_dir, name)
    checkpoint = last_checkpoint(work_dir)
    if checkpoint is not None:
        print(f'  detector: {checkpoint}', flush=True)
        return checkpoint
    if args.skip_train:
        raise StepFailed(f'--skip-train, but {work_dir} holds no checkpoint (no last_checkpoint file naming an '
                         'existing file); train it or leave out --skip-train')
    run_step(_tool('train.py', args.gpus, config_path) +
             ['--work-dir', work_dir, '--seed', str(args.seed), *shlex.split(args.train_args)],
             osp.join(work_dir, 'train_stdout.log'), 'train the detector')
    checkpoint = last_checkpoint(work_dir)
    if checkpoint is None:
        raise StepFailed(f'training finished without a checkpoint in {work_dir}')
    return checkpoint


def train_analysis_model(script: str, what: str, out: str, sources: Sequence[str], command: List[str],
                         log: str) -> None:
    """Run ``tools/analysis/<script>`` with ``command`` (its arguments) unless ``out`` is fresh (see
    :func:`is_fresh`) with respect to ``sources``."""
    if is_fresh(out, *sources):
        print(f'  {what}: {out}', flush=True)
        return
    run_step([sys.executable, osp.join(REPO, 'tools', 'analysis', script), *command], log, f'train the {what}')


def raw_face_attacker(config_path: str, checkpoint: str, args) -> str:
    """``<work-dir>/raw_face_attacker.pth``, an attacker trained on the raw training faces, trained with the
    given method's config (the raw faces are the same for every method) unless it exists."""
    out = osp.join(args.work_dir, RAW_FACE_ATTACKER_FILE)
    train_analysis_model('train_attacker.py', 'raw-face attacker', out, (), [
        config_path, checkpoint, '--faces', 'raw', '--out', out, '--seed', str(args.seed), *_missing_keys_flag(args),
        *shlex.split(args.attacker_args)
    ], osp.join(args.work_dir, 'raw_face_attacker_stdout.log'))
    return out


def _missing_keys_flag(args) -> List[str]:
    """``--allow-missing-keys`` for the steps that load the detector's checkpoint, if it was given."""
    return ['--allow-missing-keys'] if args.allow_missing_keys else []


def evaluate_method(name: str, config_path: str, role: str, args, shared: dict) -> dict:
    """Train, attack and test one method; see the module docstring.

    Args:
        name (str): The method's name, also its folder under ``args.work_dir``.
        config_path (str): Its detector config.
        role (str): See :func:`anonymizer_role`.
        args (argparse.Namespace): The flags of :func:`parse_args`.
        shared (dict): What the methods share, filled as they run: ``raw_face_attacker`` (its path) and
            ``raw_checkpoint`` (the raw reference's detector).

    Returns:
        dict: ``role``, ``config``, ``checkpoint``, ``metrics`` (the test metrics) and, with an inversion
        attacker, ``inverter`` (the meta of its checkpoint).
    """
    work_dir = osp.join(args.work_dir, name)
    os.makedirs(work_dir, exist_ok=True)
    checkpoint = train_detector(name, config_path, args)
    attacker = osp.join(work_dir, ATTACKER_FILE)
    train_analysis_model('train_attacker.py', 'adaptive attacker', attacker, [checkpoint], [
        config_path, checkpoint, '--out', attacker, '--seed', str(args.seed), *_missing_keys_flag(args),
        *shlex.split(args.attacker_args)
    ], osp.join(work_dir, 'attacker_stdout.log'))
    result = dict(role=role, config=config_path, checkpoint=checkpoint)
    if role == 'raw':
        # The raw reference's adaptive attacker learned from faces its identity anonymizer left raw.
        shared.update(raw_face_attacker=attacker, raw_checkpoint=checkpoint)

    inverter = raw_faces = None
    if role != 'raw' and not args.no_inversion:
        raw_faces = shared.get('raw_face_attacker') or raw_face_attacker(config_path, checkpoint, args)
        shared['raw_face_attacker'] = raw_faces
        inverter = osp.join(work_dir, INVERTER_FILE)
        train_analysis_model('train_inverter.py', 'inverter', inverter, [checkpoint, raw_faces], [
            config_path, checkpoint, '--embedder', raw_faces, '--out', inverter, '--seed', str(args.seed),
            *_missing_keys_flag(args), *shlex.split(args.inverter_args)
        ], osp.join(work_dir, 'inverter_stdout.log'))
        result['inverter'] = load_local_checkpoint(inverter, map_location='cpu')['meta']

    config = Config.fromfile(config_path)
    config.test_evaluator = privacy_evaluator(config, attacker, inverter, raw_faces)
    result['metrics'] = test_detector(config, checkpoint, osp.join(work_dir, TEST_CONFIG_FILE),
                                      osp.join(work_dir, 'test'), 'test with the privacy metrics', args)
    return result


def test_detector(config: Config, checkpoint: str, config_file: str, test_dir: str, what: str, args) -> dict:
    """Dump ``config`` into ``config_file``, test ``checkpoint`` with it into ``test_dir`` and read the
    metrics."""
    config.dump(config_file)
    before = set(glob.glob(osp.join(test_dir, '*', '*.json')))
    log = osp.join(osp.dirname(config_file), f'{osp.basename(test_dir)}_stdout.log')
    run_step(_tool('test.py', args.gpus, config_file, checkpoint) +
             ['--work-dir', test_dir, *_missing_keys_flag(args), *shlex.split(args.test_args)], log, what)
    return read_test_metrics(test_dir, before)


def combine_checkpoints(detector: str, anonymizer: str, out: str) -> None:
    """Write a checkpoint with the detector of one checkpoint and the data preprocessor (anonymizer,
    discriminator) of another."""
    prefix = 'data_preprocessor.'
    detector_state = load_local_checkpoint(detector, map_location='cpu')['state_dict']
    anonymizer_state = load_local_checkpoint(anonymizer, map_location='cpu')['state_dict']
    state = {key: value for key, value in detector_state.items() if not key.startswith(prefix)}
    state.update({key: value for key, value in anonymizer_state.items() if key.startswith(prefix)})
    torch.save(dict(state_dict=state, meta=dict(detector=detector, anonymizer=anonymizer)), out)


def raw_detector_metrics(name: str, result: dict, raw_checkpoint: str, args) -> dict:
    """Utility without retraining: the AVA metrics of the raw reference's detector behind the method's
    anonymizer."""
    work_dir = osp.join(args.work_dir, name)
    checkpoint = osp.join(work_dir, RAW_DETECTOR_FILE)
    combine_checkpoints(raw_checkpoint, result['checkpoint'], checkpoint)
    config = Config.fromfile(result['config'])
    config.test_evaluator = ava_evaluator(config)
    return test_detector(config, checkpoint, osp.join(work_dir, RAW_DETECTOR_TEST_CONFIG_FILE),
                         osp.join(work_dir, 'test_raw_detector'), 'test the raw detector behind this anonymizer',
                         args)


def _number(value) -> float:
    return float('nan') if value is None else float(value)


def report_rows(results: Dict[str, dict]) -> List[dict]:
    """One report row per method from ``{name: result}`` (see :func:`evaluate_method`; a result may also hold
    ``raw_detector_metrics``), in the given order.

    Each row has ``method``, ``role``, ``frame_mAP``, ``mAP_vs_raw`` (NaN without exactly one raw method), the
    same two of the raw reference's detector behind the method's anonymizer (``.../raw_detector``; for the raw
    reference, its own), the worst case over every attacker and protocol (``worst_case/top1``,
    ``worst_case/protocol`` as ``<attacker>/<protocol>``, its ``chance`` and ``majority``), each report
    attacker's worst case (``worst_case/<attacker>``, ``worst_case/<attacker>/protocol``) and every protocol's
    rates (``reid_top1/<attacker>/<protocol>``, ``reid_chance/...``, ``reid_majority/...``) for the attackers
    and protocols that some method has, the adaptive attacker's ``roc_auc`` and ``tar@far=0.01``, and the
    inverter's held-out pixel loss and identity similarity, of the restored and of the anonymized faces
    (``inverter/...``).
    """
    raw = [r for r in results.values() if r['role'] == 'raw']
    raw_map = _number(raw[0]['metrics'].get(FRAME_MAP_KEY)) if len(raw) == 1 else float('nan')
    present = set().union(*(r['metrics'] for r in results.values())) if results else set()
    attackers = [a for a in ATTACKERS if f'privacy/{a}/worst_case/top1' in present]
    protocols = [(a, p) for a in attackers for p in PROTOCOLS if f'privacy/{a}/{p}/top1' in present]
    rows = []
    for name, result in results.items():
        metrics = result['metrics']
        frame_map = _number(metrics.get(FRAME_MAP_KEY))
        raw_detector = frame_map if result['role'] == 'raw' else _number(
            result.get('raw_detector_metrics', {}).get(FRAME_MAP_KEY))
        row = {
            'method': name,
            'role': result['role'],
            'frame_mAP': frame_map,
            'mAP_vs_raw': frame_map / raw_map if raw_map > 0 else float('nan'),
            'frame_mAP/raw_detector': raw_detector,
            'mAP_vs_raw/raw_detector': raw_detector / raw_map if raw_map > 0 else float('nan'),
            'worst_case/top1': _number(metrics.get('privacy/worst_case/top1')),
            'worst_case/protocol': metrics.get('privacy/worst_case/protocol', ''),
            'chance': _number(metrics.get('privacy/worst_case/chance')),
            'majority': _number(metrics.get('privacy/worst_case/majority')),
        }
        for attacker in attackers:
            row[f'worst_case/{attacker}'] = _number(metrics.get(f'privacy/{attacker}/worst_case/top1'))
            row[f'worst_case/{attacker}/protocol'] = metrics.get(f'privacy/{attacker}/worst_case/protocol', '')
        for attacker, protocol in protocols:
            for key in ('top1', 'chance', 'majority'):
                row[f'reid_{key}/{attacker}/{protocol}'] = _number(metrics.get(f'privacy/{attacker}/{protocol}/{key}'))
        row.update({
            'roc_auc': _number(metrics.get(f'privacy/{ADAPTIVE}/roc_auc')),
            f'tar@far={FAR:g}': _number(metrics.get(f'privacy/{ADAPTIVE}/tar@far={FAR:g}')),
        })
        inverter = result.get('inverter') or {}
        for key, part in (('', 'held_out'), ('_anonymized', 'held_out_anonymized')):
            held_out = inverter.get(part) or {}
            row[f'inverter/pixel_loss{key}'] = _number(held_out.get('pixel'))
            row[f'inverter/identity_similarity{key}'] = _number(held_out.get('identity'))
        rows.append(row)
    return rows


def peak_reidentification(row: dict, chance_factor: float = CHANCE_FACTOR) -> Optional[Tuple[str, float, float]]:
    """The attacker and protocol that come closest to (or furthest past) the privacy bound, in a report row.

    The bound of a protocol is the larger of ``chance_factor`` times its chance and its majority-guess rate: an
    attacker that learned nothing from the faces can still name the most frequent identity every time (an
    identity classifier fed featureless faces names its most frequent training identity), which on a benchmark
    with unevenly frequent identities can exceed a multiple of chance.

    Args:
        row (dict): A row of :func:`report_rows`.
        chance_factor (float): Multiple of chance the re-identification may reach. Defaults to 2.0.

    Returns:
        tuple[str, float, float] | None: ``<attacker>/<protocol>``, its top-1 and its bound, for the highest
        ratio of the two; None when the row has no protocol with a top-1 and a chance.
    """
    peaks = []
    for key, top1 in row.items():
        if not key.startswith('reid_top1/'):
            continue
        name = key[len('reid_top1/'):]
        chance, majority = row[f'reid_chance/{name}'], row[f'reid_majority/{name}']
        if math.isnan(top1) or math.isnan(chance):
            continue
        bound = max(chance_factor * chance, 0. if math.isnan(majority) else majority)
        peaks.append((top1 / bound, name, top1, bound))
    return max(peaks)[1:] if peaks else None


def check_target(rows: List[dict], map_ratio: float = MAP_RATIO,
                 chance_factor: float = CHANCE_FACTOR) -> Tuple[Optional[bool], List[str]]:
    """Whether the report's numbers meet the target (see the module docstring).

    A method *meets* the target when it keeps at least ``map_ratio`` of the raw frame-mAP and under every
    attacker and protocol the re-identification top-1 stays within its bound (see
    :func:`peak_reidentification`). The target holds when every learned method meets it and no handcrafted one
    does; without a handcrafted method it cannot be decided (the evidence still says whether the learned ones
    meet it).

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
        ratio, peak = row['mAP_vs_raw'], peak_reidentification(row, chance_factor)
        if math.isnan(ratio) or peak is None:
            lines.append(f'{row["method"]} ({row["role"]}): a number is missing (mAP vs raw {ratio:.3f}, '
                         f're-identification {"n/a" if peak is None else "measured"})')
            meets[row['method']] = None
            continue
        protocol, top1, bound = peak
        keeps, private = ratio >= map_ratio, top1 <= bound
        meets[row['method']] = keeps and private
        lines.append(f'{row["method"]} ({row["role"]}): keeps {ratio:.1%} of the raw frame-mAP '
                     f'({"at least" if keeps else "below"} {map_ratio:.0%}); re-id top-1 is '
                     f'{"within" if private else "above"} its bound (the larger of {chance_factor:g}x chance and '
                     f'the majority guess) under {"every" if private else "some"} attacker and protocol, highest '
                     f'at {top1:.3f} against {bound:.3f} ({protocol})')
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


def _cell(value, percent: bool = False) -> str:
    if not isinstance(value, float):
        return str(value) if value != '' else 'n/a'
    if math.isnan(value):
        return 'n/a'
    return f'{value:.1%}' if percent else f'{value:.3f}'


def _table(header: Sequence[str], lines: Sequence[Sequence[str]]) -> List[str]:
    """A Markdown table, its first column left-aligned and the others right-aligned."""
    return ['| ' + ' | '.join(header) + ' |', '|---|' + '---:|' * (len(header) - 1),
            *('| ' + ' | '.join(line) + ' |' for line in lines)]


def _protocol_name(protocol: str) -> str:
    """``<attacker>/<protocol>`` as the report's tables name it."""
    attacker, _, name = protocol.partition('/')
    if not name:
        return protocol.replace('_', ' ') if protocol else 'n/a'
    return f'{ATTACKER_NAMES.get(attacker, attacker)}, {name.replace("_", " ")}'


def markdown_tables(rows: List[dict]) -> List[str]:
    """The report's tables: privacy and utility per method; re-identification per attacker and protocol; the
    inversion attacker's restoration."""
    attackers = [a for a in ATTACKERS if rows and f'worst_case/{a}' in rows[0]]
    main = _table(
        ['method', 'role', 'frame-mAP', 'mAP vs raw', 'raw-trained detector: frame-mAP', 'mAP vs raw',
         'worst-case re-id top-1', 'attacker, protocol', 'chance', 'majority guess'] +
        [f'worst case: {ATTACKER_NAMES[a]}' for a in attackers],
        [[row['method'], row['role'], _cell(row['frame_mAP']), _cell(row['mAP_vs_raw'], True),
          _cell(row['frame_mAP/raw_detector']), _cell(row['mAP_vs_raw/raw_detector'], True),
          _cell(row['worst_case/top1']), _protocol_name(row['worst_case/protocol']), _cell(row['chance']),
          _cell(row['majority'])] + [_cell(row[f'worst_case/{a}']) for a in attackers] for row in rows])
    protocols = [p for p in PROTOCOLS if any(key.endswith(f'/{p}') for key in (rows[0] if rows else {}))]
    per_protocol = _table(
        ['method', 'attacker'] + [p.replace('_', ' ') for p in protocols] + ['worst case'],
        [[row['method'], ATTACKER_NAMES[a]] + [_cell(row.get(f'reid_top1/{a}/{p}', float('nan'))) for p in protocols] +
         [f'{_cell(row[f"worst_case/{a}"])} ({_protocol_name(row[f"worst_case/{a}/protocol"])})']
         for row in rows for a in attackers if not math.isnan(row[f'worst_case/{a}'])])
    lines = ['## Privacy and utility', '', *main, '', '## Re-identification top-1 per attacker and protocol', '',
             *per_protocol]
    inverted = [row for row in rows if not math.isnan(row['inverter/pixel_loss'])]
    if inverted:
        lines += ['', '## Inversion attacker', '', *_table(
            ['method', 're-id top-1 of restored faces (worst case)', 'protocol', 'pixel loss: restored',
             'anonymized', 'identity similarity: restored', 'anonymized'],
            [[row['method'], _cell(row.get(f'worst_case/{INVERTED}', float('nan'))),
              _protocol_name(row.get(f'worst_case/{INVERTED}/protocol', '')), _cell(row['inverter/pixel_loss']),
              _cell(row['inverter/pixel_loss_anonymized']), _cell(row['inverter/identity_similarity']),
              _cell(row['inverter/identity_similarity_anonymized'])] for row in inverted])]
    return lines


def verdict_text(verdict: Optional[bool]) -> str:
    return {True: 'the target holds', False: 'the target does not hold', None: 'the target cannot be decided'}[verdict]


def _shown_path(path: str) -> str:
    """A path inside the repository relative to its root, so that the report reads the same on any machine."""
    relative = osp.relpath(osp.abspath(path), REPO)
    return path if relative.startswith(os.pardir) else relative


def write_markdown(rows: List[dict], methods: Dict[str, str], verdict: Optional[bool], evidence: List[str],
                   failures: Dict[str, str], path: str) -> None:
    lines = [
        '# Privacy-utility report', '',
        'Re-identification is the worst case: the highest top-1 relative to its chance over every attacker '
        '(adaptive: trained on the anonymized training faces; inversion: faces restored by a network trained to '
        'undo the anonymizer, then matched by a recogniser of the raw faces; the co-trained D; dlib) and every '
        'protocol (raw gallery: against templates of the raw faces; anon gallery: against the other anonymized '
        'faces; train gallery: against the attacker\'s templates of its training faces; classifier: the '
        'attacker\'s own identity classifier). The raw-trained detector columns test the raw reference\'s '
        'detector behind each anonymizer, without retraining.', '',
        *markdown_tables(rows), '',
        f'Target: the learned anonymizer keeps at least {MAP_RATIO:.0%} of the raw frame-mAP while under every '
        f'attacker and protocol the re-identification top-1 stays within {CHANCE_FACTOR:g}x its chance (or within '
        'the majority guess, which an attacker reaches without looking at the faces, where that is higher), and '
        'every handcrafted baseline misses at least one of the two. From the numbers above, '
        f'**{verdict_text(verdict)}**:', '',
        *(f'- {line}' for line in evidence), '',
        f'![frame-mAP against the worst-case re-identification]({REPORT_NAME}.png)', '',
        'Configs:', '', *(f'- {name}: `{_shown_path(config)}`' for name, config in methods.items()),
    ]
    if failures:
        lines += ['', 'Failed methods (not in the tables):', '', *(f'- {name}: {error.splitlines()[0]}'
                                                                    for name, error in failures.items())]
    with open(path, 'w', encoding='utf-8') as f:
        f.write('\n'.join(lines) + '\n')


def plot_report(rows: List[dict], path: str) -> None:
    """Frame-mAP against the worst-case re-identification as a multiple of its privacy bound (the larger of 2x
    chance and the majority guess, see :func:`peak_reidentification`: the protocols' bounds differ, their
    multiples compare), with the bound and the target marked, as the verdict judges them."""
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=100)
    markers = dict(raw='s', handcrafted='o', learned='*')
    for role in ROLES:
        points = []
        for row in rows:
            peak = peak_reidentification(row) if row['role'] == role else None
            if peak is not None:
                points.append((peak[1] / peak[2], row['frame_mAP'], row['method']))
        if points:
            ax.scatter([p[0] for p in points], [p[1] for p in points], marker=markers[role],
                       s=120 if role == 'learned' else 50, label=role, zorder=3)
        for x, y, method in points:
            ax.annotate(method, (x, y), textcoords='offset points', xytext=(5, 5), fontsize=8)
    ax.set_xlim(left=0)
    ax.axvline(1, color='grey', linestyle='--', label='privacy bound')
    raw_maps = [row['frame_mAP'] for row in rows if row['role'] == 'raw']
    if len(raw_maps) == 1 and not math.isnan(raw_maps[0]):
        ax.axhline(MAP_RATIO * raw_maps[0], color='tab:green', linestyle='-.', label=f'{MAP_RATIO:.0%} of raw mAP')
        top = max(ax.get_ylim()[1], MAP_RATIO * raw_maps[0])
        ax.fill_between([0, 1], MAP_RATIO * raw_maps[0], top, color='tab:green', alpha=0.1, label='target')
    ax.set_xlabel(f'worst-case re-identification top-1 / max({CHANCE_FACTOR:g}x chance, majority guess)\n'
                  '(lower is more private)')
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

    results, failures, shared = {}, {}, {}
    # The raw reference runs first: its adaptive attacker is the inversion attacker's recogniser of raw faces
    # and its detector is tested behind the anonymizers; the report keeps the given order.
    order = sorted(methods, key=lambda name: roles[name] != 'raw')
    for i, name in enumerate(order, start=1):
        print(f'[{i}/{len(methods)}] {name} ({roles[name]}): {methods[name]}', flush=True)
        try:
            results[name] = evaluate_method(name, methods[name], roles[name], args, shared)
        except (StepFailed, OSError, ValueError) as e:
            print(f'  failed: {e}', file=sys.stderr, flush=True)
            failures[name] = str(e)
    if 'raw_checkpoint' in shared:
        for name in order:
            if name in results and results[name]['role'] != 'raw':
                print(f'[raw-trained detector] {name}', flush=True)
                try:
                    results[name]['raw_detector_metrics'] = raw_detector_metrics(name, results[name],
                                                                                 shared['raw_checkpoint'], args)
                except (StepFailed, OSError, ValueError) as e:
                    print(f'  failed: {e}', file=sys.stderr, flush=True)
                    failures[f'{name} (raw-trained detector)'] = str(e)
    results = {name: results[name] for name in methods if name in results}

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
