"""The detector's gradient with respect to its input clips, computed only inside the anonymized regions.

M's output reaches the detector by being pasted into the clips, and the paste's backward pass reads the clips'
gradient inside the pasted regions only. The stock backward pass of the detector's first convolution computes
that gradient over whole clips (on the toy benchmark's CPU iteration, 0.27 s of CPU time). Here the
convolutions that take the clips compute their weight gradient as before and their input gradient only over
windows covering the regions: every output whose receptive field reaches a window is included, so the values
inside the windows are those of the full gradient (to float rounding: the sums are the same, cut into other
blocks), and the gradient elsewhere is zero, which nothing reads.
"""
import functools
import logging
import weakref
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from torch import Tensor, nn

# Windows of one convolution are batched into calls of one size each; a window joins a batch while the batch's
# padded volume stays within this factor of its windows' own volume (one call of a 2-thread CPU convolution over
# 1 window costs about as much as 3 windows in a batch of 16).
_BATCH_SLACK = 1.5


def windowed_conv_input_grad(grad_output: Tensor, weight: Tensor, input_shape: Sequence[int], stride: Sequence[int],
                             padding: Sequence[int], dilation: Sequence[int], groups: int,
                             windows: Tensor) -> Optional[Tensor]:
    """The gradient of a 3-D convolution's input, exact inside windows and zero elsewhere.

    Each window ``(n, t1, t2, y1, y2, x1, x2)`` of the input is grown to the outputs whose receptive fields
    reach it; the input gradient of those outputs is computed over the window (transposed convolutions, the
    windows batched by size) and written into a zero gradient. Where windows overlap, both hold the same values.

    Args:
        grad_output (Tensor): (N, C_out, T', H', W') gradient of the convolution's output.
        weight (Tensor): (C_out, C_in / groups, kt, kh, kw), of the dtype of ``grad_output``.
        input_shape (Sequence[int]): (N, C_in, T, H, W).
        stride (Sequence[int]): The convolution's stride, 3 ints.
        padding (Sequence[int]): Its zero padding, 3 ints.
        dilation (Sequence[int]): Its dilation, 3 ints.
        groups (int): Its groups.
        windows (Tensor): (M, 7) long windows of the input, end-exclusive, inside it.

    Returns:
        Tensor | None: The (N, C_in, T, H, W) gradient, or None where the windows' batches would cover at least
        the whole input (then the full gradient is cheaper).
    """
    kernel = [(k - 1) * d for k, d in zip(weight.shape[2:], dilation)]
    stride, padding = torch.tensor(stride), torch.tensor(padding)
    span = torch.tensor(kernel)
    # Each window starts where the first output reaching it starts plus a margin that is the same for every
    # window (the least one any window can have), so that windows of one size share one geometry.
    margin = span - stride + 1
    first_output = torch.div(windows[:, 1::2] + padding - span + stride - 1, stride, rounding_mode='floor')
    sizes = windows[:, 2::2] - (first_output * stride - padding + margin)
    batches = _batches(sizes)
    volume = sum(len(b) * int(sizes[b].amax(0).prod()) for b in batches)
    if volume >= input_shape[0] * int(torch.tensor(input_shape[2:]).prod()):
        return None
    grad_input = grad_output.new_zeros(input_shape)
    out_size = grad_output.shape[2:]
    for batch in batches:
        size = sizes[batch].amax(0)
        # The outputs reaching a window of this size, and the input positions they reach: ``margin`` before the
        # window and ``rest`` after it; the transposed convolution's symmetric padding trims the smaller.
        outputs = torch.div(margin + size - 1, stride, rounding_mode='floor') + 1
        rest = (outputs - 1) * stride + span + 1 - margin - size
        trim = torch.minimum(margin, rest).clamp(min=0)
        computed = (outputs - 1) * stride + span + 1 - 2 * trim
        gathered = grad_output.new_zeros((len(batch), grad_output.shape[1], *outputs.tolist()))
        for i, k in enumerate(batch):
            n = int(windows[k, 0])
            src, dst = _overlap(first_output[k], outputs, out_size)
            if src is not None:
                gathered[(i, slice(None), *dst)] = grad_output[(n, slice(None), *src)]
        computed_grad = torch.nn.grad.conv3d_input((len(batch), input_shape[1], *computed.tolist()), weight,
                                                   gathered, stride.tolist(), trim.tolist(), dilation, groups)
        for i, k in enumerate(batch):
            n = int(windows[k, 0])
            # The computed block starts at input position first_output * stride - padding + trim.
            origin = first_output[k] * stride - padding + trim
            lo = torch.maximum(windows[k, 1::2], origin)
            hi = torch.minimum(windows[k, 2::2], origin + computed)
            if (hi <= lo).any():
                continue
            dst = tuple(slice(a, b) for a, b in zip(lo.tolist(), hi.tolist()))
            src = tuple(slice(a, b) for a, b in zip((lo - origin).tolist(), (hi - origin).tolist()))
            grad_input[(n, slice(None), *dst)] = computed_grad[(i, slice(None), *src)]
    return grad_input


def _batches(sizes: Tensor) -> List[List[int]]:
    """Windows grouped for batched calls, largest first: a window joins the current batch while the batch padded
    to its largest size per dimension stays within ``_BATCH_SLACK`` of its windows' own volume."""
    volumes = sizes.prod(1)
    order = torch.argsort(volumes, descending=True, stable=True).tolist()
    batches, current, largest, own = [], [], None, 0
    for k in order:
        grown = sizes[k] if largest is None else torch.maximum(largest, sizes[k])
        if current and (len(current) + 1) * int(grown.prod()) > _BATCH_SLACK * (own + int(volumes[k])):
            batches.append(current)
            current, grown, own = [], sizes[k], 0
        current.append(k)
        largest, own = grown, own + int(volumes[k])
    if current:
        batches.append(current)
    return batches


def _overlap(first: Tensor, count: Tensor, limit: Sequence[int]) -> Tuple[Optional[tuple], Optional[tuple]]:
    """Slices of the outputs ``first`` to ``first + count`` that exist (``[0, limit)``), in the output and in the
    gathered block; None where there are none."""
    lo = first.clamp(min=0)
    hi = torch.minimum(first + count, torch.tensor(list(limit)))
    if (hi <= lo).any():
        return None, None
    src = tuple(slice(a, b) for a, b in zip(lo.tolist(), hi.tolist()))
    dst = tuple(slice(a, b) for a, b in zip((lo - first).tolist(), (hi - first).tolist()))
    return src, dst


def region_windows(sample_inds: Tensor, regions: Tensor, frames: Optional[Tensor], num_frames: int) -> Tensor:
    """Windows of a convolution's input covering the regions of its clips.

    Args:
        sample_inds (Tensor): (K,) the clip of each region.
        regions (Tensor): (K, 4) regions in every frame, or (K, T, 4) tubes with a region per frame (empty where
            none), as :func:`mmanon.models.utils.paste_regions` takes them.
        frames (Tensor, optional): (T',) the clip's frame that each frame of the convolution's input shows;
            None: the input is the clip itself.
        num_frames (int): T', the input's frames.

    Returns:
        Tensor: (M, 7) long windows ``(n, t1, t2, y1, y2, x1, x2)``, end-exclusive; consecutive frames with the
        same region share one window.
    """
    inds, regions = sample_inds.tolist(), regions.cpu()
    if regions.dim() == 2:
        return torch.tensor([[n, 0, num_frames, y1, y2, x1, x2] for n, (x1, y1, x2, y2) in zip(inds, regions.tolist())],
                            dtype=torch.long).reshape(-1, 7)
    if frames is not None:
        regions = regions[:, frames.cpu()]
    windows = []
    for n, tube in zip(inds, regions.tolist()):
        for t, (x1, y1, x2, y2) in enumerate(tube):
            if x2 <= x1 or y2 <= y1:
                continue
            last = windows[-1] if windows else None
            if last is not None and last[0] == n and last[2] == t and last[3:] == [y1, y2, x1, x2]:
                last[2] = t + 1
            else:
                windows.append([n, t, t + 1, y1, y2, x1, x2])
    return torch.tensor(windows, dtype=torch.long).reshape(-1, 7)


class _WindowedInputGradConv(torch.autograd.Function):
    """A convolution's output (computed by the stock module) whose backward pass computes the input gradient
    inside windows only (see :func:`windowed_conv_input_grad`) and the weight and bias gradients as usual."""

    @staticmethod
    def forward(ctx, inputs: Tensor, weight: Tensor, bias: Optional[Tensor], output: Tensor, conv: nn.Conv3d,
                windows: Tensor) -> Tensor:
        ctx.save_for_backward(inputs, weight)
        ctx.geometry = (conv.stride, conv.padding, conv.dilation, conv.groups)
        ctx.has_bias = bias is not None
        ctx.windows = windows
        # A copy: a custom function's output that is one of its inputs would be a view, which the layers after
        # the convolution may not modify in place.
        return output.clone()

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        inputs, weight = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.geometry
        # In the dtype of the forward pass (under autocast, the one it cast the input and the weight to), as the
        # stock backward pass computes, and cast back as autocast's casts are.
        dtype = grad_output.dtype
        with torch.autocast(grad_output.device.type, enabled=False):
            cast_inputs, cast_weight = inputs.to(dtype), weight.to(dtype)
            grad_input = None
            if ctx.needs_input_grad[0]:
                grad_input = windowed_conv_input_grad(grad_output, cast_weight, inputs.shape, stride, padding,
                                                      dilation, groups, ctx.windows)
            full = ctx.needs_input_grad[0] and grad_input is None
            grads = torch.ops.aten.convolution_backward(
                grad_output, cast_inputs, cast_weight, [weight.shape[0]] if ctx.has_bias else None, stride, padding,
                dilation, False, [0, 0, 0], groups, (full, ctx.needs_input_grad[1], ctx.has_bias
                                                     and ctx.needs_input_grad[2]))
        if full:
            grad_input = grads[0]
        return (None if grad_input is None else grad_input.to(inputs.dtype),
                None if grads[1] is None else grads[1].to(weight.dtype),
                None if grads[2] is None else grads[2].to(weight.dtype), None, None, None)


class RegionInputGrad:
    """Make a stock detector's convolutions that take its input clips compute the clips' gradient only inside
    the regions that its :class:`mmanon.models.AnonymizerDataPreprocessor` pasted (``pasted_regions``).

    The detector is not changed: forward hooks give the output of each such convolution a backward pass of its
    own (:func:`windowed_conv_input_grad`), in training steps whose clips require grad. A convolution takes the
    clips when its input is the preprocessor's output itself (SlowOnly's, X3D's, ViT's first convolution), or a
    frame-subsampled copy of it made by a backbone whose code is known: ``ResNet3dSlowFast``'s pathways
    (``nn.functional.interpolate`` of the clips by ``1 / resample_rate`` and ``speed_ratio / resample_rate`` in
    time; the frames each pathway sees are found by the same call). Where no convolution takes the clips in a
    training step, their gradient is the stock one, over whole clips, and a warning says so once.

    Args:
        detector (nn.Module): The detector (unwrapped), with an ``AnonymizerDataPreprocessor``.
    """

    def __init__(self, detector: nn.Module) -> None:
        self._clips = None
        self._regions = None
        self._backbone_took_clips = False
        self._windowed = False
        self._reported = False
        self._backbone_name = type(getattr(detector, 'backbone', detector)).__name__
        preprocessor = detector.data_preprocessor
        self._handles = [
            preprocessor.register_forward_hook(self._take_clips),
            detector.register_forward_hook(self._end_step)
        ]
        pathways = _slowfast_pathways(getattr(detector, 'backbone', None))
        if pathways:
            self._handles.append(detector.backbone.register_forward_pre_hook(self._backbone_input))
        preprocessor_modules = set(preprocessor.modules())
        for module in detector.modules():
            if isinstance(module, nn.Conv3d) and module not in preprocessor_modules and \
                    module.padding_mode == 'zeros' and not isinstance(module.padding, str):
                self._handles.append(
                    module.register_forward_hook(functools.partial(self._convolve, scale=pathways.get(module))))

    def remove(self) -> None:
        """Take the hooks off the detector."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _take_clips(self, preprocessor, args, output) -> None:
        regions = getattr(preprocessor, 'pasted_regions', None)
        clips = output.get('inputs') if isinstance(output, dict) else None
        if regions is None or not isinstance(clips, Tensor) or not clips.requires_grad:
            self._clips = None
            return
        # Not kept beyond the step: the detector holds the clips while it needs them.
        self._clips, self._regions = weakref.ref(clips), regions

    def _backbone_input(self, backbone, args) -> None:
        self._backbone_took_clips = self._clips is not None and bool(args) and args[0] is self._clips()

    def _convolve(self, conv: nn.Conv3d, args, output: Tensor, scale: Optional[float]) -> Optional[Tensor]:
        clips = self._clips() if self._clips is not None else None
        if clips is None or not output.requires_grad:
            return None
        inputs = args[0]
        if scale is None:
            if inputs is not clips:
                return None
            frames = None
        else:
            frames = _interpolated_frames(clips.shape[2], scale, clips.device)
            if not self._backbone_took_clips or inputs.shape != (*clips.shape[:2], len(frames), *clips.shape[3:]):
                return None
        self._windowed = True
        windows = region_windows(*self._regions, frames, inputs.shape[2])
        return _WindowedInputGradConv.apply(inputs, conv.weight, conv.bias, output.detach(), conv, windows)

    def _end_step(self, detector, args, output) -> None:
        if self._clips is not None and self._clips() is not None and not self._windowed and not self._reported:
            print_log(f'no convolution of {self._backbone_name} takes the anonymized clips in a form '
                      'RegionInputGrad knows, so the detector computes their gradient over whole clips',
                      logger='current', level=logging.WARNING)
            self._reported = True
        self._clips, self._windowed, self._backbone_took_clips = None, False, False


def _slowfast_pathways(backbone: Optional[nn.Module]) -> Dict[nn.Module, float]:
    """The first convolutions of ``ResNet3dSlowFast``'s pathways and the temporal scale factor by which its
    ``forward`` resamples the clips for each; empty for any other backbone."""
    from mmaction.models.backbones import ResNet3dSlowFast
    if backbone is None or type(backbone).forward is not ResNet3dSlowFast.forward:
        return {}
    return {
        backbone.slow_path.conv1.conv: 1.0 / backbone.resample_rate,
        backbone.fast_path.conv1.conv: 1.0 / (backbone.resample_rate // backbone.speed_ratio)
    }


def _interpolated_frames(num_frames: int, scale: float, device) -> Tensor:
    """The clip frame behind each frame of ``nn.functional.interpolate(clips, mode='nearest',
    scale_factor=(scale, 1.0, 1.0))``, found by the same call on the frame numbers."""
    index = torch.arange(num_frames, dtype=torch.float32, device=device).view(1, 1, -1, 1, 1)
    return F.interpolate(index, mode='nearest', scale_factor=(scale, 1.0, 1.0)).flatten().long()
