"""Export the learned anonymizer of a trained checkpoint to ONNX, and check onnxruntime against PyTorch.

The model maps ``crops`` ``(N, 3, H, W)`` float RGB pixel values in [0, 255] to ``anonymized`` crops of the same
shape; the batch dimension is dynamic, ``H x W`` is fixed (the anonymizer's ``crop_size`` unless
``--crop-size`` says otherwise). Faces must be resized to it first, as ``mmanon.models.utils.anonymize_crops``
does.

Example::

    python tools/deployment/export_onnx.py work_dirs/x/iter_1000.pth anonymizer.onnx
"""
import argparse
import os
import os.path as osp
import pickle
import sys
import tempfile
import warnings

import numpy as np
import torch

from mmanon.apis import load_learned_anonymizer
from mmanon.apis.anonymize_video import move_into_place
from mmanon.utils import add_checkpoint_arguments, apply_checkpoint_arguments

# Largest accepted difference, as a fraction of the pixel range [0, 255] (1e-4 is 0.0255 grey levels). In raw
# pixel values float32 alone leaves ~1e-4: the output is 127.5 * tanh(h), and the two engines' sums in
# convolutions and instance norms differ by ~1e-6 in h.
TOLERANCE = 1e-4


def _atanh(g, x):
    return g.op('Atanh', x)


# The TorchScript exporter has no rule for aten::atanh (used by the residual ResNetAnonymizer) although ONNX
# has had Atanh since opset 9; this registers it through the exporter's public extension point.
torch.onnx.register_custom_op_symbolic('aten::atanh', _atanh, 9)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Export the learned anonymizer of a checkpoint of tools/train.py to ONNX (dynamic batch) '
        'and check that onnxruntime reproduces PyTorch on random crops; the file is written only if the '
        f'largest difference is at most {TOLERANCE:g} of the pixel range.',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('checkpoint', help='checkpoint of tools/train.py whose data preprocessor has a learned '
                        'anonymizer')
    parser.add_argument('output', help='the .onnx file to write')
    parser.add_argument('--crop-size', type=int, nargs=2, metavar=('H', 'W'),
                        help='crop height and width of the exported model (default: the anonymizer\'s '
                        'crop_size; required when it has none)')
    parser.add_argument('--opset', type=int, default=17, help='ONNX opset version')
    parser.add_argument('--check-batch', type=int, default=3,
                        help='crops in the onnxruntime check; differs from the export batch (2) to '
                        'exercise the dynamic batch dimension')
    # The anonymizer's weights are always loaded in full: an export with random parts could leave faces as
    # they are.
    add_checkpoint_arguments(parser, missing_keys=False)
    return parser.parse_args(argv)


def export_onnx(checkpoint: str, output: str, crop_size=None, opset: int = 17, check_batch: int = 3) -> float:
    """Export and verify; see the module docstring.

    Args:
        checkpoint (str): The trained checkpoint.
        output (str): The ``.onnx`` file; written only when the check passes.
        crop_size (Sequence[int], optional): ``(H, W)`` of the export. Defaults to None (the anonymizer's).
        opset (int): ONNX opset version. Defaults to 17.
        check_batch (int): Crops in the check. Defaults to 3.

    Returns:
        float: The largest absolute difference between onnxruntime and PyTorch, as a fraction of the pixel
        range [0, 255].
    """
    try:
        import onnxruntime
    except ImportError:
        raise ImportError('the check after the export needs onnxruntime: pip install onnx onnxruntime') from None
    anonymizer, _ = load_learned_anonymizer(checkpoint)
    size = tuple(crop_size) if crop_size is not None else anonymizer.crop_size
    if size is None:
        raise ValueError(f'the anonymizer of {checkpoint} works at any crop size; give --crop-size H W')
    if anonymizer.crop_size is not None and size != anonymizer.crop_size:
        # The anonymizer validates the crop size it was built for; the exported graph is fixed to ``size``.
        anonymizer.crop_size = size
    parent = osp.dirname(osp.abspath(output))
    if not osp.isdir(parent):
        raise FileNotFoundError(f'the folder of the output {output}, {parent}, does not exist')
    fd, temp = tempfile.mkstemp(prefix=f'.{osp.basename(output)}.', suffix='.partial', dir=parent)
    os.close(fd)
    try:
        with warnings.catch_warnings():
            # torch >= 2.9 deprecates the TorchScript exporter in favour of the dynamo one, which needs the
            # onnxscript package; the TorchScript one exports these plain convolutional models faithfully.
            warnings.simplefilter('ignore', DeprecationWarning)
            # The anonymizer's input checks read the (fixed) crop shape; tracing them is intended.
            warnings.simplefilter('ignore', torch.jit.TracerWarning)
            # Instance norm always normalises by the input's statistics, so "train=True" is what we want.
            warnings.filterwarnings('ignore', message='ONNX export mode is set to TrainingMode.EVAL')
            # Reflection padding exports as Slice ops with negative steps, which are simply not folded.
            warnings.filterwarnings('ignore', message='Constant folding - Only steps=1')
            torch.onnx.export(
                anonymizer, (torch.rand(2, 3, *size) * 255, ),
                temp,
                dynamo=False,
                input_names=['crops'],
                output_names=['anonymized'],
                dynamic_axes=dict(crops={0: 'batch'}, anonymized={0: 'batch'}),
                opset_version=opset)
        crops = torch.rand(check_batch, 3, *size, generator=torch.Generator().manual_seed(0)) * 255
        with torch.no_grad():
            expected = anonymizer(crops).numpy()
        session = onnxruntime.InferenceSession(temp, providers=['CPUExecutionProvider'])
        actual = session.run(None, dict(crops=crops.numpy()))[0]
        if actual.shape != expected.shape:
            raise ValueError(f'onnxruntime returned shape {actual.shape}, PyTorch {expected.shape}')
        diff = float(np.abs(actual - expected).max()) / 255
        if not diff <= TOLERANCE:
            raise ValueError(f'onnxruntime differs from PyTorch by up to {diff:.3g} of the pixel range '
                             f'(> {TOLERANCE:g}) on {check_batch} random {size[0]}x{size[1]} crops; {output} was '
                             'not written')
        move_into_place(temp, output)
    except BaseException:
        os.remove(temp)
        raise
    return diff


def main(argv=None):
    args = parse_args(argv)
    apply_checkpoint_arguments(args)
    try:
        diff = export_onnx(args.checkpoint, args.output, args.crop_size, args.opset, args.check_batch)
    except (OSError, ValueError, ImportError, pickle.UnpicklingError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    print(f'wrote {args.output}; onnxruntime vs PyTorch on {args.check_batch} random crops: max abs difference '
          f'{diff:.3g} of the pixel range, {diff * 255:.3g} grey levels (tolerance {TOLERANCE:g})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
