"""Checkpoint loading runs no code from the file: crafted checkpoints (pickled code, code in the stored config)
are refused with a message that names the file and the opt-in, damaged files are told apart from unsafe ones,
and the configs that tools/train.py stores are read as plain values."""
import functools
import http.server
import os.path as osp
import pickle
import threading

import pytest
import torch
from mmengine.config import Config
from mmengine.runner.checkpoint import CheckpointLoader

from mmanon.compat import (TRUST_ENV, CheckpointError, UntrustedCheckpointError, checkpoint_config, literal_config,
                           load_local_checkpoint)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


class Payload:
    """Unpickling it creates the file ``path``: stands for any code a crafted pickle runs."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return open, (self.path, 'w')


def evil_config_text(marker: str) -> str:
    """A config text that creates ``marker`` when executed, in front of a valid config."""
    cfg = Config(dict(model=dict(data_preprocessor=dict(anonymizer=dict(type='GaussianBlur')))))
    return f'_x = open({marker!r}, "w").close()\n' + cfg.pretty_text


@pytest.fixture
def marker(tmp_path):
    """The file a payload would create; each test checks that it does not exist."""
    return str(tmp_path / 'PWNED')


def write_damaged_files(folder):
    good = osp.join(folder, 'good.pth')
    torch.save(dict(state_dict=dict(w=torch.ones(3))), good)
    data = open(good, 'rb').read()
    files = dict(truncated=data[:len(data) // 2], empty=b'', text=b'model = dict(type="x")\n',
                 garbage=bytes(range(7, 256)) * 8)
    paths = {}
    for name, content in files.items():
        paths[name] = osp.join(folder, f'{name}.pth')
        with open(paths[name], 'wb') as f:
            f.write(content)
    return paths


@pytest.mark.parametrize('kind', ['truncated', 'empty', 'text', 'garbage'])
def test_damaged_file_is_not_called_unsafe(tmp_path, kind):
    path = write_damaged_files(str(tmp_path))[kind]
    with pytest.raises(CheckpointError, match=rf'{kind}.pth is not a readable PyTorch checkpoint') as error:
        load_local_checkpoint(path)
    assert 'could run code' not in str(error.value) and '--trust-checkpoint' not in str(error.value)


@pytest.mark.parametrize('protocol', [2, 4])
@pytest.mark.parametrize('zipped', [True, False])
def test_pickled_code_is_refused_and_not_run(tmp_path, marker, protocol, zipped):
    path = str(tmp_path / 'crafted.pth')
    content = dict(state_dict=dict(w=torch.ones(3)), extra=Payload(marker))
    if zipped:
        torch.save(content, path, pickle_protocol=protocol)
    else:  # a bare pickle, which torch.load also accepts when trusted
        with open(path, 'wb') as f:
            pickle.dump(content, f, protocol=protocol)
    with pytest.raises(UntrustedCheckpointError, match=r'crafted.pth holds objects outside the weights-only '
                       r'allow-list \(.*open.*\), so loading it could run code.*--trust-checkpoint'):
        load_local_checkpoint(path)
    assert not osp.exists(marker)


def test_trusted_checkpoint_is_unpickled_in_full(tmp_path, marker, monkeypatch):
    path = str(tmp_path / 'crafted.pth')
    torch.save(dict(extra=Payload(marker)), path)
    monkeypatch.setenv(TRUST_ENV, '1')
    load_local_checkpoint(path)
    assert osp.exists(marker)


# An adversarial overlay of a stock AVA config (dicts with non-identifier keys, tuples, negative numbers,
# custom_imports) and a face-identity config; mmengine's formatting (yapf) makes each take seconds.
STORED_CONFIGS = [
    'detection/slowfast/slowfast-adversarial_kinetics400-pretrained-r50_8xb6-8x8x1-cosine-10e_ava22-rgb.py',
    'face_identity/face-discriminator_1xb16-10e_toy-faces-32x32.py'
]


@pytest.mark.parametrize('config', STORED_CONFIGS)
def test_stored_configs_read_as_mmengine_reads_them(config):
    """What tools/train.py stores in meta['cfg'] (mmengine's pretty_text) reads like Config.fromstring."""
    text = Config.fromfile(osp.join(REPO, 'configs', config)).pretty_text
    assert literal_config(text) == Config.fromstring(text, '.py').to_dict()


@pytest.mark.parametrize('statement', [
    '_x = open({marker!r}, "w")',
    'import os',
    'model = dict(type=open({marker!r}, "w"))',
    'model = dict(**{{"type": open({marker!r}, "w")}})',
    'model = dict({{"type": 1}}, {{"b": 2}})',
    'model = dict([("type", open({marker!r}, "w"))])',
    'model = [x for x in open({marker!r}, "w")]',
    'model = (lambda: 1)',
    'model = dict(a=1).update(b=open({marker!r}, "w"))',
    'model = {{}}.__class__',
    'model = -"x"',
])
def test_code_in_the_stored_config_is_refused(tmp_path, marker, statement):
    text = statement.format(marker=marker) + '\nmodel2 = dict(a=1)\n'
    with pytest.raises(ValueError, match='line 1: `'):
        literal_config(text)
    path = str(tmp_path / 'crafted.pth')
    torch.save(dict(state_dict={}, meta=dict(cfg=text)), path)
    with pytest.raises(UntrustedCheckpointError, match=r'crafted.pth: the config stored in meta\["cfg"\] is not '
                       r'made of plain values \(line 1: .*--trust-checkpoint'):
        checkpoint_config(load_local_checkpoint(path), path)
    assert not osp.exists(marker)


def test_stored_config_with_code_is_run_only_when_trusted(tmp_path, marker, monkeypatch):
    checkpoint = dict(meta=dict(cfg=evil_config_text(marker)))
    monkeypatch.setenv(TRUST_ENV, '1')
    assert checkpoint_config(checkpoint, 'x.pth')['model']['data_preprocessor']['anonymizer']['type'] == 'GaussianBlur'
    assert osp.exists(marker)


def test_plain_values_of_a_config():
    text = ("a = dict(b=[1, -2.5, (3, )], c={'d-e': None, 5: True}, f={1, 2}, g=dict({'h.i': 1}, j=2))\n"
            "g = 'text'\n"
            "h = -1e-05\n")
    assert literal_config(text) == dict(a=dict(b=[1, -2.5, (3, )], c={'d-e': None, 5: True}, f={1, 2},
                                               g={'h.i': 1, 'j': 2}), g='text', h=-1e-05)
    assert checkpoint_config(dict(state_dict={}), 'x.pth') is None
    with pytest.raises(CheckpointError, match=r'x.pth: meta\["cfg"\] must be the config text'):
        checkpoint_config(dict(meta=dict(cfg=3)), 'x.pth')
    with pytest.raises(ValueError, match='not valid Python'):
        literal_config('a = dict(')
    # Python's parser bounds the nesting, so the reader's recursion stays shallow.
    with pytest.raises(ValueError, match='not valid Python'):
        literal_config('a = ' + '[' * 5000 + ']' * 5000)


@pytest.fixture
def http_folder(tmp_path, monkeypatch):
    """A local HTTP server of a folder, and torch's hub cache in a temporary folder."""
    served = tmp_path / 'served'
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    hub = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / 'hub'))
    yield served, f'http://127.0.0.1:{server.server_address[1]}'
    torch.hub.set_dir(hub)
    server.shutdown()


def test_downloaded_checkpoints_are_loaded_weights_only(http_folder, marker):
    served, url = http_folder
    torch.save(dict(state_dict=dict(w=torch.arange(3.))), served / 'good.pth')
    torch.save(dict(state_dict={}, extra=Payload(marker)), served / 'crafted.pth')
    loaded = CheckpointLoader.load_checkpoint(f'{url}/good.pth', map_location='cpu')
    assert torch.equal(loaded['state_dict']['w'], torch.arange(3.))
    with pytest.raises(UntrustedCheckpointError, match='crafted.pth holds objects outside the weights-only'):
        CheckpointLoader.load_checkpoint(f'{url}/crafted.pth', map_location='cpu')
    # mmengine's other schemes reach URLs through the same loader.
    from mmengine.runner import checkpoint as checkpoint_module
    with pytest.raises(UntrustedCheckpointError):
        checkpoint_module.load_from_http(f'{url}/crafted.pth')
    assert not osp.exists(marker)


def test_ava_evaluation_reads_csvs_as_the_dataset_does(ava_fixture, tmp_path):
    """A byte-order mark and blank lines, which AVAFaceDataset accepts, leave the AVA mAP unchanged."""
    from mmaction.evaluation.functional import ava_eval
    ann, labels = ava_fixture['ann_file_val'], ava_fixture['label_file']
    with open(ann, encoding='utf-8') as f:
        rows = f.read().splitlines()
    # Detections: the ground truth with falling scores, one box moved away, so the mAP is neither 0 nor 1.
    detections = [row.split(',')[:7] + [f'{1 - i / 100}'] for i, row in enumerate(rows)]
    detections[0][2:6] = ['0.9', '0.9', '0.95', '0.95']
    results = tmp_path / 'results.csv'
    results.write_text(''.join(','.join(row) + '\n' for row in detections))
    excluded = tmp_path / 'excluded.csv'
    excluded.write_text(f'{rows[-1].split(",")[0]},{rows[-1].split(",")[1]}\n')
    reference = ava_eval(str(results), 'mAP', labels, ann, str(excluded), verbose=False)
    with_bom = tmp_path / 'ann.csv'
    with_bom.write_bytes(b'\xef\xbb\xbf' + '\r\n'.join(rows + ['', '']).encode())
    excluded.write_bytes(b'\xef\xbb\xbf' + excluded.read_bytes() + b'\n')
    assert ava_eval(str(results), 'mAP', labels, str(with_bom), str(excluded), verbose=False) == \
        pytest.approx(reference, nan_ok=True)
    assert 0 < reference['overall'] < 1
