"""Workarounds for bugs in the packaged upstream stack, applied once when ``mmanon`` is imported.

Every patch of another package lives here and nowhere else. Each one is guarded so that it does nothing once
upstream is fixed, and names the upstream report.

Checkpoints are loaded without running code from them unless the user opts in (``--trust-checkpoint``,
``MMANON_TRUST_CHECKPOINTS=1``): every local and downloaded checkpoint is unpickled with ``weights_only=True``
(:func:`load_local_checkpoint`, :func:`load_url_checkpoint`), and the config that mmengine stores in a checkpoint
as Python text is read as plain values (:func:`checkpoint_config`), where ``Config.fromstring`` would execute it.
A file that is merely damaged is told apart from one that could run code.
"""
import ast
import importlib.util
import io
import os
import os.path as osp
import pickletools
import sys
import types
import zipfile
import zlib
from typing import List, Optional
from urllib.parse import urlparse

import numpy as np
import torch

TRUST_ENV = 'MMANON_TRUST_CHECKPOINTS'


def _provide_missing_drn() -> None:
    """mmaction2 1.2.0's wheel and sdist lack ``mmaction/models/localizers/drn/``, yet
    ``mmaction.models.localizers`` imports it, so ``import mmaction.models`` fails
    (open-mmlab/mmaction2#2714). Register empty stand-in modules whose ``DRN`` explains the gap when built.
    """
    spec = importlib.util.find_spec('mmaction')
    drn_dir = osp.join(osp.dirname(spec.origin), 'models', 'localizers', 'drn')
    if osp.isdir(drn_dir) or 'mmaction.models.localizers.drn' in sys.modules:
        return

    class DRN:
        """Stand-in for mmaction2's DRN localizer, which its 1.2.0 package does not ship."""

        def __init__(self, *args, **kwargs):
            raise ImportError('DRN is missing from the installed mmaction2 1.2.0 package '
                              '(open-mmlab/mmaction2#2714); install mmaction2 from source to use it.')

    package = types.ModuleType('mmaction.models.localizers.drn')
    package.__path__ = []
    module = types.ModuleType('mmaction.models.localizers.drn.drn')
    module.DRN = DRN
    package.drn = module
    sys.modules[package.__name__] = package
    sys.modules[module.__name__] = module


def _fix_ava_nan() -> None:
    """mmaction2's AVA evaluation returns ``np.NAN`` for a class with detections but no ground truth; numpy 2
    removed that alias (numpy NEP 52), so small datasets crash in ``ava_eval``. No upstream report exists yet.
    """
    if hasattr(np, 'NAN'):
        return
    from mmaction.evaluation.functional.ava_evaluation import metrics

    original = metrics.compute_average_precision
    if getattr(original, '_mmanon_compat', False):
        return

    def compute_average_precision(precision, recall):
        if precision is None and recall is None:
            return np.nan
        return original(precision, recall)

    compute_average_precision._mmanon_compat = True
    compute_average_precision.__doc__ = original.__doc__
    metrics.compute_average_precision = compute_average_precision


def _read_ava_csvs_like_the_dataset() -> None:
    """mmaction2's AVA evaluation reads the annotation and exclusion CSVs with ``csv.reader`` on ``open(path)``:
    a UTF-8 byte-order mark becomes part of the first video id (that keyframe's ground truth then matches no
    detection, silently lowering the mAP), and a blank line fails with a ``TypeError`` in its assertion message.
    ``mmanon.AVAFaceDataset`` accepts both, so the evaluation gets the same text without them. No upstream report
    exists yet.
    """
    from mmaction.evaluation.functional import ava_utils

    def plain_text(file):
        lines = file.read().lstrip('\ufeff').splitlines()
        return io.StringIO(''.join(line + '\n' for line in lines if line.strip()))

    for name in ('read_csv', 'read_exclusions'):
        original = getattr(ava_utils, name)
        if getattr(original, '_mmanon_compat', False):
            continue

        def read(file, *args, _original=original, **kwargs):
            return _original(plain_text(file) if file else file, *args, **kwargs)

        read._mmanon_compat = True
        read.__doc__ = original.__doc__
        setattr(ava_utils, name, read)


def _history_buffer_reduce(self):
    return type(self), (self._log_history.tolist(), self._count_history.tolist(), self.max_length)


def without_numpy(obj):
    """``obj`` with every numpy scalar and array inside dicts, lists and tuples made plain Python."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, dict):
        return type(obj)((k, without_numpy(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)) and not hasattr(obj, '_fields'):
        return type(obj)(without_numpy(v) for v in obj)
    return obj


def _make_checkpoints_weights_only_safe() -> None:
    """torch >= 2.6 loads checkpoints with ``weights_only=True`` and mmengine 0.10.7 cannot resume under it
    (open-mmlab/mmengine#1655; the proposed fix, open-mmlab/mmengine#1650, turns the safety off instead).

    We keep the safety on and save checkpoints without numpy objects, whose numpy-2 pickles go through
    ``getattr`` and can never be allow-listed safely: the runner's checkpoint is stripped of numpy scalars and
    arrays (the timer's ``eta``, metric values) before it is written, and the message hub's ``HistoryBuffer``,
    the one non-torch class mmengine puts in a checkpoint, pickles as plain lists and is allow-listed. Files
    that hold anything else, such as checkpoints written without this patch, fail with a message naming the
    file; loading them needs an explicit opt-in (``--trust-checkpoint`` in the tools, or
    ``MMANON_TRUST_CHECKPOINTS=1``).
    """
    from mmengine.logging import HistoryBuffer
    from mmengine.runner import runner as runner_module
    from mmengine.runner.checkpoint import CheckpointLoader

    HistoryBuffer.__reduce__ = _history_buffer_reduce
    if hasattr(torch.serialization, 'add_safe_globals'):
        torch.serialization.add_safe_globals([HistoryBuffer])
    CheckpointLoader.register_scheme(prefixes='', loader=load_local_checkpoint, force=True)

    save = runner_module.save_checkpoint
    if not getattr(save, '_mmanon_compat', False):

        def save_checkpoint(checkpoint, filename, *args, **kwargs):
            return save(without_numpy(checkpoint), filename, *args, **kwargs)

        save_checkpoint._mmanon_compat = True
        runner_module.save_checkpoint = save_checkpoint


def checkpoints_trusted() -> bool:
    """Whether the user opted in to full (code-executing) unpickling of checkpoints."""
    return os.environ.get(TRUST_ENV, '0').lower() in ('1', 'true', 'yes')


class CheckpointError(ValueError):
    """A checkpoint file cannot be used; the message names the file."""


class UntrustedCheckpointError(CheckpointError):
    """A checkpoint holds something that only code could rebuild; loading it needs the user's opt-in."""


TRUST_HINT = (f'If you trust where the file came from, pass --trust-checkpoint to the tool (or set {TRUST_ENV}=1); '
              'that runs whatever code the file holds.')


def _pickle_streams(filename: str) -> List[bytes]:
    """The pickles of a checkpoint file: ``data.pkl`` of a zip checkpoint, else the file itself (the legacy
    format is several pickles followed by raw tensor bytes)."""
    if zipfile.is_zipfile(filename):
        with zipfile.ZipFile(filename) as archive:
            names = [name for name in archive.namelist() if name == 'data.pkl' or name.endswith('/data.pkl')]
            return [archive.read(names[0])] if names else []
    with open(filename, 'rb') as f:
        return [f.read()]


def _pickled_globals(data: bytes) -> List[str]:
    """The ``module.name`` of every global that the complete pickles at the start of ``data`` import.

    The pickles are disassembled, never run. ``STACK_GLOBAL`` takes its names from the two strings pushed
    last (directly or from the memo), which is how picklers write them. Parsing stops at the first byte that
    does not continue a pickle, so a truncated pickle contributes nothing.
    """
    found, stream = [], io.BytesIO(data)
    while stream.tell() < len(data):
        names, strings, memo = [], [], {}
        try:
            for opcode, arg, _ in pickletools.genops(stream):
                if opcode.name in ('GLOBAL', 'INST'):
                    names.append(arg.replace(' ', '.'))
                elif opcode.name == 'STACK_GLOBAL':
                    names.append('.'.join(str(s) for s in strings[-2:]))
                elif 'STRING' in opcode.name or 'UNICODE' in opcode.name:
                    strings.append(arg)
                elif opcode.name in ('PUT', 'BINPUT', 'LONG_BINPUT') and strings:
                    memo[arg] = strings[-1]
                elif opcode.name == 'MEMOIZE' and strings:
                    memo[len(memo)] = strings[-1]
                elif opcode.name in ('GET', 'BINGET', 'LONG_BINGET') and arg in memo:
                    strings.append(memo[arg])
        except Exception:  # not (or no longer) a pickle: raw tensor bytes, truncation or garbage
            break
        found += names
    return found


def _weights_only_globals() -> set:
    """``module.name`` of the globals that ``torch.load(weights_only=True)`` accepts."""
    # torch exposes the default allow-list only privately; without it every global counts as refused, which
    # can only make the message say "could run code" for a file that merely fails to load.
    allowed = getattr(torch._weights_only_unpickler, '_get_allowed_globals', dict)()
    safe = set(allowed)
    for entry in torch.serialization.get_safe_globals():
        safe.add(entry[1] if isinstance(entry, tuple) else f'{entry.__module__}.{entry.__qualname__}')
    return safe


def _refused_globals(filename: str) -> List[str]:
    """The globals of a checkpoint's pickles that the weights-only loader refuses, sorted; empty when the file
    holds none or is not a readable pickle at all."""
    try:
        streams = _pickle_streams(filename)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, zlib.error):
        return []
    safe = _weights_only_globals()
    return sorted({name for data in streams for name in _pickled_globals(data) if name not in safe})


def _load_failure(filename: str, error: Exception) -> CheckpointError:
    """What to raise when the weights-only loading of ``filename`` failed with ``error``: a file whose pickles
    import refused globals could run code; any other failure means the file is not a readable checkpoint."""
    refused = _refused_globals(filename)
    if refused:
        more = f' and {len(refused) - 3} more' if len(refused) > 3 else ''
        return UntrustedCheckpointError(
            f'{filename} holds objects outside the weights-only allow-list ({", ".join(refused[:3])}{more}), so '
            f'loading it could run code. {TRUST_HINT}')
    if osp.getsize(filename) == 0:
        reason = 'the file is empty'
    else:
        # torch's messages run to several paragraphs of advice; the first sentence, or the unpickler's own
        # complaint, says what is wrong.
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        marker = next((i for i, line in enumerate(lines) if 'WeightsUnpickler error' in line), None)
        detail = lines[marker + 1] if marker is not None and marker + 1 < len(lines) else (lines or [''])[0]
        reason = f'{type(error).__name__}: {detail.split(". ")[0]}'.rstrip(': ')[:200]
    return CheckpointError(f'{filename} is not a readable PyTorch checkpoint (empty, truncated, damaged, or another '
                           f'kind of file): {reason}')


def load_local_checkpoint(filename, map_location=None):
    """Load a local checkpoint with ``weights_only=True`` unless checkpoints are explicitly trusted.

    Args:
        filename (str): Path of the checkpoint file.
        map_location (str | torch.device, optional): As in :func:`torch.load`. Defaults to None.

    Returns:
        dict: The checkpoint.

    Raises:
        UntrustedCheckpointError: If the file holds objects that only code could rebuild.
        CheckpointError: If the file is not a readable checkpoint (empty, truncated, not a checkpoint).
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    if checkpoints_trusted():
        return torch.load(filename, map_location=map_location, weights_only=False)
    try:
        return torch.load(filename, map_location=map_location, weights_only=True)
    except OSError:
        raise
    except Exception as e:  # torch reports damaged files with many types (EOFError, RuntimeError, KeyError, ...)
        raise _load_failure(filename, e) from e


def _download_checkpoint(url: str, model_dir: Optional[str] = None, progress: bool = False) -> str:
    """The local copy of a checkpoint URL in torch's hub cache, downloaded unless already there."""
    model_dir = model_dir or osp.join(torch.hub.get_dir(), 'checkpoints')
    os.makedirs(model_dir, exist_ok=True)
    cached = osp.join(model_dir, osp.basename(urlparse(url).path))
    if not osp.exists(cached):
        torch.hub.download_url_to_file(url, cached, progress=progress)
    return cached


def load_url_checkpoint(filename: str, map_location=None, model_dir: Optional[str] = None,
                        progress: bool = False) -> dict:
    """Download a checkpoint (rank 0 first, as mmengine does) and load it like :func:`load_local_checkpoint`.

    mmengine loads ``http(s)://`` checkpoints, and the ``torchvision://`` and ``open-mmlab://`` ones that
    resolve to URLs, through ``torch.hub.load_state_dict_from_url`` with its default ``weights_only=False``,
    which unpickles downloaded files in full (open-mmlab/mmengine#1655 concerns the same switch).

    Args:
        filename (str): The URL.
        map_location (str | torch.device, optional): As in :func:`torch.load`. Defaults to None.
        model_dir (str, optional): Cache folder. Defaults to None, torch's hub ``checkpoints`` folder.
        progress (bool): Show a download progress bar. Defaults to False.

    Returns:
        dict: The checkpoint.
    """
    from mmengine.dist import get_dist_info
    rank, world_size = get_dist_info()
    if rank == 0:
        path = _download_checkpoint(filename, model_dir, progress)
    if world_size > 1:
        torch.distributed.barrier()
        if rank > 0:
            path = _download_checkpoint(filename, model_dir, progress)
    return load_local_checkpoint(path, map_location)


def _load_url_checkpoints_weights_only() -> None:
    """Route mmengine's URL loader, and the schemes that call it by name, through :func:`load_url_checkpoint`."""
    from mmengine.runner import checkpoint as checkpoint_module
    from mmengine.runner.checkpoint import CheckpointLoader

    CheckpointLoader.register_scheme(prefixes=('http://', 'https://'), loader=load_url_checkpoint, force=True)
    checkpoint_module.load_from_http = load_url_checkpoint


def _literal(node: ast.AST):
    """The value of a config expression made of constants, lists, tuples, sets, dicts and ``dict(...)`` calls
    of them only; anything else raises ``ValueError`` naming its line."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)) and \
            isinstance(node.operand, ast.Constant) and isinstance(node.operand.value, (int, float, complex)) and \
            not isinstance(node.operand.value, bool):
        return -node.operand.value if isinstance(node.op, ast.USub) else node.operand.value
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        values = [_literal(element) for element in node.elts]
        return {ast.List: list, ast.Tuple: tuple, ast.Set: set}[type(node)](values)
    if isinstance(node, ast.Dict) and None not in node.keys:
        return {_literal(key): _literal(value) for key, value in zip(node.keys, node.values)}
    # mmengine writes ``dict(key=value)``, and ``dict({'key': value})`` for keys that are not identifiers.
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == 'dict' and \
            (not node.args or len(node.args) == 1 and isinstance(node.args[0], ast.Dict)) and \
            all(keyword.arg is not None for keyword in node.keywords):
        value = _literal(node.args[0]) if node.args else {}
        value.update((keyword.arg, _literal(keyword.value)) for keyword in node.keywords)
        return value
    raise ValueError(f'line {getattr(node, "lineno", "?")}: `{ast.unparse(node)[:80]}` is not a plain value')


def literal_config(text: str) -> dict:
    """Read a config text of plain assignments, as mmengine's ``Config.pretty_text`` writes it, without running it.

    Each statement must assign to one name a value made of constants, lists, tuples, sets, dicts and
    ``dict(...)`` calls with keyword arguments. ``Config.fromstring`` would execute the text instead.

    Args:
        text (str): The config text.

    Returns:
        dict: Name to value, like ``Config.fromstring(text, '.py').to_dict()`` for such a text.

    Raises:
        ValueError: Naming the line of the first statement or value that is not plain.
    """
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        raise ValueError(f'it is not valid Python ({type(e).__name__}: {e})') from None
    cfg = {}
    for statement in tree.body:
        if not (isinstance(statement, ast.Assign) and len(statement.targets) == 1
                and isinstance(statement.targets[0], ast.Name)):
            raise ValueError(f'line {statement.lineno}: `{ast.unparse(statement)[:80]}` is not an assignment of a '
                             'plain value to a name')
        cfg[statement.targets[0].id] = _literal(statement.value)
    return cfg


def checkpoint_config(checkpoint: dict, filename: str) -> Optional[dict]:
    """The config a checkpoint of ``tools/train.py`` was trained with (``meta['cfg']``), read without running it.

    mmengine stores the config as Python text, which ``Config.fromstring`` would execute. It is read with
    :func:`literal_config` instead; a text that is not plain values is refused (only a crafted file holds
    one) unless checkpoints are trusted (``--trust-checkpoint``, ``MMANON_TRUST_CHECKPOINTS=1``).

    Args:
        checkpoint (dict): The loaded checkpoint.
        filename (str): Its file, named in errors.

    Returns:
        dict | None: The config as plain values, or None if the checkpoint holds no config text.

    Raises:
        UntrustedCheckpointError: If the text is not plain values and checkpoints are not trusted.
    """
    meta = checkpoint.get('meta') if isinstance(checkpoint, dict) else None
    text = meta.get('cfg') if isinstance(meta, dict) else None
    if text is None:
        return None
    if not isinstance(text, str):
        raise CheckpointError(f'{filename}: meta["cfg"] must be the config text, got a {type(text).__name__}')
    try:
        return literal_config(text)
    except ValueError as e:
        if checkpoints_trusted():
            from mmengine.config import Config
            return Config.fromstring(text, '.py').to_dict()
        raise UntrustedCheckpointError(
            f'{filename}: the config stored in meta["cfg"] is not made of plain values ({e}); reading it would '
            f'run it as code. {TRUST_HINT}') from None


def apply() -> None:
    """Apply every workaround; idempotent."""
    _provide_missing_drn()
    _fix_ava_nan()
    _read_ava_csvs_like_the_dataset()
    _make_checkpoints_weights_only_safe()
    _load_url_checkpoints_weights_only()
