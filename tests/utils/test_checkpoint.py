"""check_trained_keys: which parts a checkpoint may lack (counters, an untrained discriminator) and which it may
not (parameters, normalisation statistics), and how the refusal names them."""
import pytest
import torch
from torch import nn

from mmanon.compat import CheckpointError
from mmanon.utils import check_trained_keys, load_trained_checkpoint


class Preprocessor(nn.Module):

    def __init__(self):
        super().__init__()
        self.anonymizer = nn.Conv2d(3, 3, 1)
        self.discriminator = nn.Linear(4, 2)


class Detector(nn.Module):
    """Names like a stock detector's: a backbone with BatchNorm, a RoI head of several layers."""

    def __init__(self):
        super().__init__()
        self.data_preprocessor = Preprocessor()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.roi_head = nn.Module()
        self.roi_head.bbox_head = nn.Module()
        for name in ('fc_cls', 'fc_reg', 'fc_a', 'fc_b'):
            setattr(self.roi_head.bbox_head, name, nn.Linear(4, 2))


def without(state, *prefixes):
    return {k: v for k, v in state.items() if not k.startswith(prefixes)}


def test_a_covering_state_dict_passes_without_counters():
    model = Detector()
    state = without(Detector().state_dict(), 'backbone.1.num_batches_tracked')
    assert check_trained_keys(model, state, 'ok.pth') == []
    assert model.data_preprocessor.discriminator is not None


def test_missing_parts_are_named_as_whole_modules():
    state = without(Detector().state_dict(), 'roi_head.bbox_head.', 'backbone.1.running_var')
    with pytest.raises(CheckpointError, match=r'^x.pth has no weights for backbone.1.running_var, roi_head.\*: it '
                       r'does not fit the model. Pass --allow-missing-keys'):
        check_trained_keys(Detector(), state, 'x.pth')
    # Four missing layers next to a present one are named one by one, three at most.
    state = without(Detector().state_dict(), 'roi_head.bbox_head.fc_', 'backbone.0.bias')
    state['roi_head.bbox_head.fc_b.weight'] = torch.zeros(2, 4)
    with pytest.raises(CheckpointError, match=r'has no weights for backbone.0.bias, roi_head.bbox_head.fc_cls.\*, '
                       r'roi_head.bbox_head.fc_reg.\* \(and 2 more\):'):
        check_trained_keys(Detector(), state, 'x.pth')


def test_a_weight_of_another_shape_is_not_covered():
    state = Detector().state_dict()
    state['roi_head.bbox_head.fc_cls.weight'] = torch.zeros(81, 4)
    with pytest.raises(CheckpointError, match=r'holds roi_head.bbox_head.fc_cls.weight with shape \(81, 4\), the '
                       r'model has \(2, 4\): it does not fit'):
        check_trained_keys(Detector(), state, 'x.pth')


def test_missing_parts_are_allowed_on_request(logged_warnings):
    model = Detector()
    before = model.roi_head.bbox_head.fc_cls.weight.clone()
    check_trained_keys(model, without(Detector().state_dict(), 'roi_head.'), 'x.pth', allow_missing_keys=True)
    assert any('x.pth has no weights for roi_head.*' in w and '--allow-missing-keys' in w for w in logged_warnings)
    assert torch.equal(model.roi_head.bbox_head.fc_cls.weight, before)


def test_a_discriminator_missing_entirely_is_left_out(logged_warnings):
    model = Detector()
    dropped = check_trained_keys(model, without(Detector().state_dict(), 'data_preprocessor.discriminator.'),
                                 'stock.pth')
    assert dropped == ['data_preprocessor.discriminator'] and model.data_preprocessor.discriminator is None
    assert any('stock.pth has no weights for data_preprocessor.discriminator.*: it is left out' in w
               for w in logged_warnings)
    # Half a discriminator is a checkpoint of another model.
    state = without(Detector().state_dict(), 'data_preprocessor.discriminator.bias')
    with pytest.raises(CheckpointError, match=r'has no weights for data_preprocessor.discriminator.bias:'):
        check_trained_keys(Detector(), state, 'x.pth')
    # The anonymizer is never optional.
    with pytest.raises(CheckpointError, match=r'has no weights for data_preprocessor.anonymizer.\*:'):
        check_trained_keys(Detector(), without(Detector().state_dict(), 'data_preprocessor.anonymizer.'), 'x.pth')


def test_load_trained_checkpoint_checks_then_loads(tmp_path):
    source = Detector()
    path = str(tmp_path / 'full.pth')
    # Saved from a distributed wrapper: mmengine strips the "module." prefix, and so does the check.
    torch.save(dict(state_dict={f'module.{k}': v for k, v in source.state_dict().items()}), path)
    model = Detector()
    load_trained_checkpoint(model, path)
    for name, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[name], value)
    torch.save(dict(state_dict=without(source.state_dict(), 'backbone.')), path)
    with pytest.raises(CheckpointError, match='full.pth has no weights for backbone.*'):
        load_trained_checkpoint(Detector(), path)
