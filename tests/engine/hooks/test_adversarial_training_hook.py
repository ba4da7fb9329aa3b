"""The adversarial game, iteration by iteration, on the smoke detector: each player gets exactly the gradient
of its own objective whatever the detector's optimizer wrapper does (loss scaling, accumulation, clipping)."""
import copy
import os.path as osp
from types import SimpleNamespace

import mmaction
import pytest
import torch
from mmaction.structures import ActionDataSample
from mmengine.config import Config
from mmengine.logging import MessageHub
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmengine.optim.optimizer import amp_optimizer_wrapper
from mmengine.registry import DefaultScope
from mmengine.runner import Runner
from mmengine.structures import InstanceData
from torch.nn.modules.batchnorm import _BatchNorm

from mmanon.datasets.toy_faces import ToyFacesSpec, generate_toy_faces
from mmanon.engine.hooks import AdversarialTrainingHook
from mmanon.models import AnonymizerDataPreprocessor
from mmanon.models.data_preprocessors import FaceBatch
from mmanon.models.utils import RegionInputGrad
from mmanon.registry import MODELS

REPO = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
SMOKE = osp.join(REPO, 'configs/detection/slowonly/slowonly_r18-smoke_1xb2-4x2x1-4i_ava-fixture-rgb.py')
NORM = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375])
COLOURS = ((230, 40, 40), (40, 230, 40), (40, 40, 230), (230, 230, 40))
PLAYERS = dict(
    anonymizer=dict(type='ResNetAnonymizer', base_channels=8, num_blocks=1, crop_size=(32, 32), residual=False),
    discriminator=dict(type='FaceDiscriminatorHead', num_classes=4, input_size=(32, 32), base_channels=8,
                       num_stages=2, embed_dims=16),
    face_crop_size=(32, 32),
    l1_weight=1.0,
    temporal_weight=10.0)


def fixed_faces_batch(frames=2, size=48):
    """One clip per identity, each showing that identity's face (a coloured, striped square)."""
    inputs, samples = [], []
    for identity, colour in enumerate(COLOURS):
        clip = torch.full((3, frames, size, size), 110, dtype=torch.uint8)
        face = torch.tensor(colour, dtype=torch.uint8)[:, None, None, None]
        clip[:, :, 12:36, 12:36] = face
        clip[:, :, 12:36:4, 12:36] //= 2 + identity  # a texture per identity
        inputs.append(clip)
        sample = ActionDataSample()
        sample.gt_faces = InstanceData(bboxes=torch.tensor([[12., 12., 36., 36.]]),
                                       identities=torch.tensor([identity]))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def make_players(adversarial_loss='negative_ce'):
    torch.manual_seed(0)
    return AnonymizerDataPreprocessor(**dict(PLAYERS, l1_weight=0., temporal_weight=0.), adversarial_loss=adversarial_loss,
                                      adversarial_weight=1.0, **NORM)


def players_only(preprocessor):
    """A model of the players alone, without a detector, for the hook to attach to."""
    model = torch.nn.Module()
    model.data_preprocessor = preprocessor
    return model


def discriminator_loss(preprocessor, which):
    faces = preprocessor.train_faces
    with torch.no_grad():
        return preprocessor.discriminator.loss(getattr(faces, which), faces.identities)['loss_identity'].item()


def build_detector(config=SMOKE, cfg_options=None, **preprocessor):
    """The smoke config's detector (or ``config``'s, with ``cfg_options``; dropout off, so that two runs can be
    compared) with the players."""
    cfg = Config.fromfile(config)
    cfg.merge_from_dict(cfg_options or {})
    cfg.model.init_cfg = None
    cfg.model.roi_head.bbox_head.dropout_ratio = 0
    cfg.model.data_preprocessor = dict(cfg.model.data_preprocessor, type='mmanon.AnonymizerDataPreprocessor',
                                       **dict(PLAYERS, **preprocessor))
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmaction'):
        return MODELS.build(cfg.model)


def detector_batch(identities=(0, 1), height=64, width=80):
    """Two clips with two persons each, heads inside the frame, the persons' identities as given (-1:
    unknown)."""
    generator = torch.Generator().manual_seed(0)
    inputs, samples = [], []
    boxes = torch.tensor([[4., 6., 30., 60.], [40., 2., 76., 62.]])
    for _ in range(2):
        inputs.append(torch.randint(0, 256, (3, 4, height, width), generator=generator, dtype=torch.uint8))
        labels = torch.zeros(2, 6)
        labels[:, 1] = 1
        sample = ActionDataSample(metainfo=dict(img_shape=(height, width)))
        sample.gt_instances = InstanceData(bboxes=boxes, labels=labels, identities=torch.tensor(identities))
        sample.proposals = InstanceData(bboxes=boxes.clone())
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def train_iteration(model, hook, optim_wrapper, iteration, data=None, seed=1):
    """One iteration as the runner runs it: the hook's preparation, the stock train_step, the players' part.
    The seed fixes the RoI sampler's draws."""
    hook.before_step(model, optim_wrapper, iteration)
    torch.manual_seed(seed)
    log_vars = model.train_step(detector_batch() if data is None else data, optim_wrapper)
    return log_vars, hook.after_step(model, optim_wrapper, iteration)


def detector_params(model):
    return {n: p for n, p in model.named_parameters() if not n.startswith('data_preprocessor.')}


def test_schedule():
    hook = AdversarialTrainingHook(warmup_iters=2, ramp_iters=4, adversarial_weight=2.0)
    assert [hook.weight_at(i) for i in range(8)] == [0, 0, 0.5, 1.0, 1.5, 2.0, 2.0, 2.0]
    every_other = AdversarialTrainingHook(discriminator_steps=2)
    assert [every_other.weight_at(i) for i in range(4)] == [0, 1.0, 0, 1.0]
    # With an accumulation of 2, the steps of the optimizers, not the iterations, alternate.
    every_other.accumulative_counts = 2
    assert [every_other.weight_at(i) for i in range(8)] == [0, 0, 1.0, 1.0, 0, 0, 1.0, 1.0]
    with pytest.raises(ValueError, match='discriminator_steps must be an integer >= 1, got 0'):
        AdversarialTrainingHook(discriminator_steps=0)
    with pytest.raises(ValueError, match='warmup_iters must be an integer >= 0, got -1'):
        AdversarialTrainingHook(warmup_iters=-1)
    with pytest.raises(ValueError, match='anonymizer_optim_wrapper must be a plain OptimWrapper'):
        AdversarialTrainingHook(anonymizer_optim_wrapper=dict(type='AmpOptimWrapper', optimizer=dict(type='SGD')))


def test_discriminator_steps_lower_its_loss():
    preprocessor = make_players()
    hook = AdversarialTrainingHook(discriminator_optim_wrapper=dict(optimizer=dict(type='Adam', lr=3e-3)))
    hook.attach(players_only(preprocessor), OptimWrapper(torch.optim.SGD(preprocessor.parameters(), lr=0.)))
    preprocessor(fixed_faces_batch(), True)
    preprocessor.pop_losses()
    before = discriminator_loss(preprocessor, 'raw') + discriminator_loss(preprocessor, 'anonymized')
    for _ in range(15):
        preprocessor(fixed_faces_batch(), True)
        preprocessor.pop_losses()
        scalars = hook.discriminator_step(preprocessor.discriminator, preprocessor.train_faces)
    after = discriminator_loss(preprocessor, 'raw') + discriminator_loss(preprocessor, 'anonymized')
    assert after < 0.5 * before
    assert scalars['adv_acc_raw'] == 1.0


def test_discriminator_gradient_is_that_of_its_loss_on_raw_and_anonymized_faces():
    preprocessor = make_players()
    hook = AdversarialTrainingHook(discriminator_optim_wrapper=dict(optimizer=dict(type='Adam', lr=3e-3)))
    hook.attach(players_only(preprocessor), OptimWrapper(torch.optim.SGD(preprocessor.parameters(), lr=0.)))
    for _ in range(10):  # a discriminator that knows the identities
        preprocessor(fixed_faces_batch(), True)
        preprocessor.pop_losses()
        hook.discriminator_step(preprocessor.discriminator, preprocessor.train_faces)
    discriminator = preprocessor.discriminator
    # Anonymized faces that show another identity, so that the two accuracies differ.
    raw_faces = preprocessor.train_faces
    faces = FaceBatch(raw_faces.raw, raw_faces.raw.roll(1, dims=0), raw_faces.identities, raw_faces.sample_inds)
    # L_D = CE(D(f), y) + CE(D(M(f)), y), each D pass on its own, as the hook computed it before it ran
    # both in one pass.
    raw = discriminator.loss(faces.raw, faces.identities)
    anonymized = discriminator.loss(faces.anonymized, faces.identities)
    expected = torch.autograd.grad(raw['loss_identity'] + anonymized['loss_identity'],
                                   list(discriminator.parameters()))
    scalars = hook._accumulate_discriminator(discriminator, faces, loss_factor=0.5)
    # The mean over the batch's faces (on one process, the factor of the sum is 1 / faces), equal to float
    # rounding: D's weight gradients are summed over both groups at once.
    for grad, reference in zip(hook._discriminator_grads, expected):
        torch.testing.assert_close(grad, reference * 0.5, rtol=0, atol=1e-5 * reference.abs().max().item())
    torch.testing.assert_close(scalars['adv_loss_discriminator'],
                               (raw['loss_identity'] + anonymized['loss_identity']).detach(), rtol=1e-6, atol=0)
    assert scalars['adv_acc_raw'] == raw['acc_identity']
    assert scalars['adv_acc_anonymized'] == anonymized['acc_identity'] != raw['acc_identity']


def test_replay_adds_the_gradient_of_past_anonymized_faces_to_each_discriminator_step():
    preprocessor = make_players()
    discriminator = preprocessor.discriminator
    hook = AdversarialTrainingHook(discriminator_optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
                                   replay_size=6, replay_batch_size=5)
    hook.attach(players_only(preprocessor), OptimWrapper(torch.optim.SGD(preprocessor.parameters(), lr=0.)))
    preprocessor(fixed_faces_batch(), True)
    preprocessor.pop_losses()
    first = preprocessor.train_faces.detach()
    hook.discriminator_step(discriminator, first)
    # The buffer holds the step's anonymized faces, as images.
    assert len(hook.replay) == 4
    assert torch.equal(hook.replay.crops[:4], first.anonymized.round().clamp(0, 255).to(torch.uint8))
    assert torch.equal(hook.replay.identities[:4], first.identities)
    # Second step: L_D on the new faces plus CE on five faces drawn from the eight pushed so far.
    preprocessor(fixed_faces_batch(), True)
    preprocessor.pop_losses()
    faces = FaceBatch(first.raw, first.raw.flip(-1), first.identities, first.sample_inds)
    params = list(discriminator.parameters())
    before = [p.detach().clone() for p in params]
    draws = copy.deepcopy(hook.replay.state_dict())
    loss = sum(discriminator.loss(crops, faces.identities)['loss_identity'] for crops in (faces.raw, faces.anonymized))
    replay = type(hook.replay)(6)
    replay.load_state_dict(draws)
    replay.push(faces.anonymized, faces.identities)
    crops, identities = replay.sample(5)
    replay_loss = discriminator.loss(crops, identities)['loss_identity']
    expected = torch.autograd.grad(loss + replay_loss, params)
    scalars = hook.discriminator_step(discriminator, faces)
    for param, start, grad in zip(params, before, expected):
        torch.testing.assert_close(param.detach(), start - 0.1 * grad, rtol=0, atol=1e-6)
    torch.testing.assert_close(scalars['adv_loss_replay'], replay_loss.detach())
    assert len(hook.replay) == 6
    with pytest.raises(ValueError, match='replay_batch_size must be an integer >= 1, got 0'):
        AdversarialTrainingHook(replay_size=8, replay_batch_size=0)
    with pytest.raises(ValueError, match='replay_size must be an integer >= 0, got -1'):
        AdversarialTrainingHook(replay_size=-1)


@pytest.mark.parametrize('adversarial_loss', ['negative_ce', 'embedding', 'uniform'])
def test_anonymizer_steps_with_frozen_discriminator_raise_its_loss(adversarial_loss):
    preprocessor = make_players(adversarial_loss)
    hook = AdversarialTrainingHook(discriminator_optim_wrapper=dict(optimizer=dict(type='Adam', lr=3e-3)))
    hook.attach(players_only(preprocessor), OptimWrapper(torch.optim.SGD(preprocessor.parameters(), lr=0.)))
    for _ in range(15):  # a discriminator that knows the identities first
        preprocessor(fixed_faces_batch(), True)
        preprocessor.pop_losses()
        hook.discriminator_step(preprocessor.discriminator, preprocessor.train_faces)
    frozen_state = copy.deepcopy(preprocessor.discriminator.state_dict())
    optimizer = torch.optim.Adam(preprocessor.anonymizer.parameters(), lr=3e-3)

    preprocessor(fixed_faces_batch(), True)
    preprocessor.pop_losses()
    before = discriminator_loss(preprocessor, 'anonymized')
    for _ in range(10):
        optimizer.zero_grad()
        preprocessor(fixed_faces_batch(), True)
        losses = preprocessor.pop_losses()
        assert set(losses) == {'loss_adv'}
        losses['loss_adv'].backward()
        # The discriminator is reached only by the zero that keeps DDP's parameter set fixed.
        assert all(not p.grad.any() for p in preprocessor.discriminator.parameters())
        optimizer.step()
    preprocessor(fixed_faces_batch(), True)
    after = discriminator_loss(preprocessor, 'anonymized')
    assert after > before + 0.5
    for name, value in preprocessor.discriminator.state_dict().items():
        assert torch.equal(value, frozen_state[name]), name


def test_losses_nobody_consumed_stop_the_next_step():
    preprocessor = AnonymizerDataPreprocessor(**PLAYERS, **NORM)
    preprocessor(fixed_faces_batch(), True)
    assert set(preprocessor.pop_losses()) == {'loss_adv', 'loss_l1', 'loss_temporal'}
    preprocessor(fixed_faces_batch(), True)
    with pytest.raises(RuntimeError, match=r"\['loss_adv', 'loss_l1', 'loss_temporal'\].*not consumed.*mmanon.AdversarialTrainingHook"):
        preprocessor(fixed_faces_batch(), True)
    # A frozen anonymizer without a discriminator has no losses of its own.
    frozen = AnonymizerDataPreprocessor(anonymizer=PLAYERS['anonymizer'], freeze_anonymizer=True, **NORM)
    for _ in range(2):
        frozen(fixed_faces_batch(), True)
    assert frozen.pop_losses() == {}


def reference_anonymizer_gradient():
    """The gradient of M's objective, detection loss + loss_adv + loss_l1 + loss_temporal, in one fp32 pass, with
    the clips' gradient computed inside the anonymized regions only, as the hook has it computed by default (which
    leaves every gradient as it was, to float rounding: see test_region_input_grad_leaves_every_gradient_as_it_was)."""
    model = build_detector()
    RegionInputGrad(model)
    model.data_preprocessor.adversarial_weight = 1.0
    torch.manual_seed(1)
    losses = model(**model.data_preprocessor(detector_batch(), True), mode='loss')
    losses.update(model.data_preprocessor.pop_losses())
    total, _ = model.parse_losses(losses)
    return torch.autograd.grad(total, list(model.data_preprocessor.anonymizer.parameters()))


def cpu_amp_optim_wrapper(monkeypatch, params, init_scale):
    """mmengine's AmpOptimWrapper, on CPU: its loss scaling (backward, unscale and step through a GradScaler),
    without autocast, which on CPU is bfloat16 only and would change the values compared."""
    monkeypatch.setattr(amp_optimizer_wrapper, 'is_cuda_available', lambda: True)
    monkeypatch.setattr(AmpOptimWrapper, 'optim_context', OptimWrapper.optim_context)
    wrapper = AmpOptimWrapper(optimizer=torch.optim.SGD(params, lr=0.), clip_grad=dict(max_norm=1e6))
    wrapper.loss_scaler = torch.amp.GradScaler('cpu', init_scale=init_scale)
    return wrapper


@pytest.mark.parametrize('regime', ['fp32', 'amp', 'accumulation'])
def test_anonymizer_gradient_is_exact_under_loss_scaling_and_accumulation(regime, monkeypatch):
    expected = reference_anonymizer_gradient()
    model = build_detector()
    if regime == 'amp':
        optim_wrapper = cpu_amp_optim_wrapper(monkeypatch, model.parameters(), init_scale=2.**16)
    else:
        optim_wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.),
                                     accumulative_counts=2 if regime == 'accumulation' else 1)
    hook = AdversarialTrainingHook(anonymizer_optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.)))
    hook.attach(model, optim_wrapper)
    seen = []
    step = hook.anonymizer_wrapper.optimizer.step
    hook.anonymizer_wrapper.optimizer.step = lambda: (seen.append(
        [p.grad.clone() for p in model.data_preprocessor.anonymizer.parameters()]), step())
    # Accumulating the same batch twice gives that batch's gradient.
    for iteration in range(2 if regime == 'accumulation' else 1):
        assert not seen
        log_vars, _ = train_iteration(model, hook, optim_wrapper, iteration)
    assert log_vars['loss_adv'] != 0 and log_vars['loss_l1'] > 0 and log_vars['loss_temporal'] > 0
    if regime == 'amp':
        assert optim_wrapper.loss_scaler.get_scale() == 2.**16  # the detector's step was taken
    (grads, ) = seen
    assert any(g.abs().sum() > 0 for g in grads)
    for grad, reference in zip(grads, expected):
        torch.testing.assert_close(grad, reference, rtol=1e-5, atol=1e-7)


def test_anonymizer_skips_a_step_whose_unscaled_gradient_is_not_finite(monkeypatch):
    model = build_detector()
    optim_wrapper = cpu_amp_optim_wrapper(monkeypatch, model.parameters(), init_scale=2.**16)
    hook = AdversarialTrainingHook(anonymizer_optim_wrapper=dict(optimizer=dict(type='SGD', lr=1.)))
    hook.attach(model, optim_wrapper)
    before = copy.deepcopy(model.data_preprocessor.anonymizer.state_dict())
    first = next(model.data_preprocessor.anonymizer.parameters())
    first.register_hook(lambda grad: torch.full_like(grad, float('inf')))
    _, scalars = train_iteration(model, hook, optim_wrapper, 0)
    assert scalars['adv_anonymizer_skipped_steps'] == 1
    for name, value in model.data_preprocessor.anonymizer.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert all(p.grad is None for p in model.data_preprocessor.anonymizer.parameters())


def test_detector_update_does_not_depend_on_the_players_under_clip_grad():
    message_hub = MessageHub.get_current_instance()
    runs = {}
    for players in (True, False):
        model = build_detector()
        if not players:
            # The same clips reach the detector, from the same anonymizer, which is now fixed and alone.
            model.data_preprocessor.discriminator = None
            model.data_preprocessor.l1_weight = 0.
            model.data_preprocessor.temporal_weight = 0.
            model.data_preprocessor.anonymizer.requires_grad_(False)
        before = {n: p.detach().clone() for n, p in detector_params(model).items()}
        optim_wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1), clip_grad=dict(max_norm=0.05))
        hook = AdversarialTrainingHook(anonymizer_optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)))
        if players:
            hook.attach(model, optim_wrapper)
            hook.before_step(model, optim_wrapper, 0)
        torch.manual_seed(1)
        model.train_step(detector_batch(), optim_wrapper)
        runs[players] = dict(params=detector_params(model), moved=before,
                             grad_norm=message_hub.get_scalar('train/grad_norm').current())
    assert runs[True]['grad_norm'] == runs[False]['grad_norm'] > 0.05  # clipping was active
    for name, param in runs[False]['params'].items():
        assert torch.equal(runs[True]['params'][name], param), name
    assert any(not torch.equal(p, runs[False]['moved'][n]) for n, p in runs[False]['params'].items())


def test_players_leave_the_detector_optimizer_and_step_their_own():
    model = build_detector()
    optimizer = torch.optim.SGD([{'params': [p]} for p in model.parameters()], lr=0.1)
    num_groups = len(optimizer.param_groups)
    optim_wrapper = OptimWrapper(optimizer)
    hook = AdversarialTrainingHook(anonymizer_optim_wrapper=dict(optimizer=dict(type='Adam', lr=1e-3)))
    hook.attach(model, optim_wrapper)
    in_detector = {id(p) for group in optimizer.param_groups for p in group['params']}
    assert len(optimizer.param_groups) == num_groups
    assert in_detector == {id(p) for p in detector_params(model).values()}
    before = copy.deepcopy(model.data_preprocessor.state_dict())
    log_vars, scalars = train_iteration(model, hook, optim_wrapper, 0)
    assert {'loss_action_cls', 'loss_adv', 'loss_l1', 'loss_temporal'} <= set(log_vars)
    assert scalars['adv_video_faces'] == 4 and 'adv_acc_raw' in scalars
    after = model.data_preprocessor.state_dict()
    for player in ('anonymizer.', 'discriminator.'):
        assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith(player)), player
    assert hook.anonymizer_wrapper.optimizer.state and hook.discriminator_wrapper.optimizer.state


@pytest.mark.parametrize('optim_wrapper', [None, dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.1))])
def test_a_test_run_of_the_training_config_sets_up_no_players(optim_wrapper):
    """tools/test.py runs the training config, hooks included, without building its optimizer wrapper (the
    runner keeps the config, or None): the hook leaves the model and its optimizer alone instead of failing."""
    model = build_detector()
    hook = AdversarialTrainingHook()
    hook.before_run(SimpleNamespace(model=model, optim_wrapper=optim_wrapper))
    assert hook._forward_hook is None and not model._forward_hooks
    assert all(p.requires_grad for p in model.data_preprocessor.parameters())
    # A built wrapper of another kind is still refused.
    with pytest.raises(TypeError, match='one OptimWrapper'):
        hook.before_run(SimpleNamespace(model=model, optim_wrapper=torch.optim.SGD(model.parameters(), lr=0.1)))


def test_discriminator_takes_no_step_without_faces():
    model = build_detector()
    optim_wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    hook = AdversarialTrainingHook()
    hook.attach(model, optim_wrapper)
    before = copy.deepcopy(model.data_preprocessor.discriminator.state_dict())
    _, scalars = train_iteration(model, hook, optim_wrapper, 0, data=detector_batch(identities=(-1, -1)))
    assert scalars['adv_video_faces'] == 0
    for name, value in model.data_preprocessor.discriminator.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert not hook.discriminator_wrapper.optimizer.state  # no Adam moment moved either


def test_accumulation_steps_every_player_at_the_window_end():
    model = build_detector()
    optim_wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1), accumulative_counts=2)
    hook = AdversarialTrainingHook(face_dataloader=dict(), face_interval=3)
    with pytest.raises(ValueError, match=r'face_interval \(3\) must be a multiple .* accumulative_counts \(2\)'):
        hook.attach(model, optim_wrapper)
    hook = AdversarialTrainingHook()
    hook.attach(model, optim_wrapper)
    states = [copy.deepcopy(model.state_dict())]
    for iteration in range(2):
        train_iteration(model, hook, optim_wrapper, iteration)
        states.append(copy.deepcopy(model.state_dict()))
    for prefix in ('backbone.', 'data_preprocessor.anonymizer.', 'data_preprocessor.discriminator.'):
        keys = [k for k in states[0] if k.startswith(prefix) and states[0][k].is_floating_point()]
        assert all(torch.equal(states[0][k], states[1][k]) for k in keys if 'running' not in k), prefix
        assert any(not torch.equal(states[1][k], states[2][k]) for k in keys), prefix


def test_freezing_the_detector_fixes_its_weights_and_batchnorm_statistics():
    model = build_detector()
    optim_wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    hook = AdversarialTrainingHook(freeze_detector_iters=1)
    hook.attach(model, optim_wrapper)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith('data_preprocessor.')}
    train_iteration(model, hook, optim_wrapper, 0)
    after = model.state_dict()
    for name, value in before.items():
        assert torch.equal(after[name], value), name
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    assert norms and all(m.training for m in norms)
    assert all(group['lr'] == 0.1 for group in optim_wrapper.param_groups)
    train_iteration(model, hook, optim_wrapper, 1)
    key = 'backbone.conv1.bn.running_mean'
    assert not torch.equal(model.state_dict()[key], before[key])


def test_face_dataset_identities_follow_the_video_identities(tmp_path):
    generate_toy_faces(str(tmp_path / 'faces'), ToyFacesSpec(num_identities=4, images_per_identity=3,
                                                             val_images_per_identity=1, image_size=(40, 40)))
    face_dataloader = dict(
        batch_size=8, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=False),
        dataset=dict(type='FaceIdentityDataset', data_root=str(tmp_path / 'faces'), ann_file='train_list.txt',
                     data_prefix=dict(img_path='images'), metainfo=dict(classes=str(tmp_path / 'faces/identities.txt')),
                     pipeline=[dict(type='LoadFaceImage'), dict(type='FaceAlign', crop_size=(32, 32)),
                               dict(type='PackFaceInputs')]))

    def runner(model):
        video_set = SimpleNamespace(metainfo=dict(num_identities=3))
        return SimpleNamespace(model=model, train_loop=SimpleNamespace(dataloader=SimpleNamespace(dataset=video_set)),
                               build_dataloader=Runner.build_dataloader, seed=0, iter=0)

    model = build_detector()
    hook = AdversarialTrainingHook(face_dataloader=face_dataloader)
    hook.attach(model, OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1)))
    with pytest.raises(ValueError, match='the face dataset has 4 identities, which become the discriminator\'s '
                       r'classes 3 to 6, but it classifies 4; set model.data_preprocessor.discriminator.num_classes=7'):
        hook.before_train(runner(model))
    model = build_detector(discriminator=dict(PLAYERS['discriminator'], num_classes=7))
    hook.attach(model, OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1)))
    hook.before_train(runner(model))
    faces = hook.face_dataset_step(model.data_preprocessor, next(hook._face_batches))
    assert sorted(set(faces.identities.tolist())) == [3, 4, 5, 6]


# The stock SlowFast AVA detector, shrunk: both pathways see frames of the clip every 4 (slow) and 2 (fast).
SLOWFAST = osp.join(osp.dirname(mmaction.__file__), '.mim', 'configs', 'detection', 'slowfast',
                    'slowfast_kinetics400-pretrained-r50_8xb16-4x16x1-20e_ava21-rgb.py')
SLOWFAST_OPTIONS = {
    'model.backbone.resample_rate': 4,
    'model.backbone.speed_ratio': 2,
    'model.backbone.slow_pathway.depth': 18,
    'model.backbone.fast_pathway.depth': 18,
    'model.roi_head.bbox_head.in_channels': 576,
    'model.roi_head.bbox_head.num_classes': 6,
    'model.roi_head.bbox_head.topk': (1, 3),
}


def face_tubes_batch(tubes, frames=4, height=64, width=80):
    """``detector_batch`` with the faces given as tubes (K, T, 4) in each clip: every frame is anonymized where
    its face is, the key frame's boxes are the identity-labelled faces."""
    batch = detector_batch(height=height, width=width)
    generator = torch.Generator().manual_seed(1)
    batch['inputs'] = [torch.randint(0, 256, (3, frames, height, width), generator=generator, dtype=torch.uint8)
                       for _ in batch['inputs']]
    for sample in batch['data_samples']:
        sample.face_tubes = InstanceData(bboxes=tubes)
        sample.gt_faces = InstanceData(bboxes=tubes[:, frames // 2], identities=torch.arange(len(tubes)) % 4)
    return batch


def moving_tubes(starts, motion, frames):
    """Tubes (K, frames, 4) of boxes ``starts`` (K, 4) moving ``motion`` (dx, dy) pixels a frame."""
    steps = torch.arange(frames, dtype=torch.float32)[:, None] * torch.tensor(motion * 2, dtype=torch.float32)
    return torch.tensor(starts, dtype=torch.float32)[:, None] + steps


def gradients(build, batch, region_input_grad):
    """The gradients of one training step of the game: of every parameter (M's and the detector's), and of the
    clips that the preprocessor made, with the hook's ``region_input_grad`` as given."""
    model = build()
    optim_wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.))
    hook = AdversarialTrainingHook(region_input_grad=region_input_grad)
    hook.attach(model, optim_wrapper)
    hook.before_step(model, optim_wrapper, 0)
    torch.manual_seed(1)
    data = model.data_preprocessor(copy.deepcopy(batch), True)
    data['inputs'].retain_grad()
    total, _ = model.parse_losses(model(**data, mode='loss'))
    total.backward()
    params = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    return params, data['inputs'].grad, model.data_preprocessor.pasted_regions


def assert_same_gradients_and_none_outside_the_regions(build, batch):
    reference, full_clips, _ = gradients(build, batch, region_input_grad=False)
    params, clips, (inds, regions) = gradients(build, batch, region_input_grad=True)
    assert params.keys() == reference.keys() and any(n.startswith('data_preprocessor.anonymizer.') for n in params)
    # Equal to float rounding: the clips' gradient inside the regions is summed in other blocks.
    for name, grad in params.items():
        torch.testing.assert_close(grad, reference[name], rtol=0, atol=1e-5 * reference[name].abs().max().item(),
                                   msg=name)
    # The clips' gradient is computed inside the pasted regions only (M's gradient reads nothing else); the
    # stock backward pass computes it everywhere.
    outside = torch.ones_like(clips, dtype=torch.bool)
    for n, tube in zip(inds.tolist(), regions.reshape(len(inds), -1, 4).tolist()):
        for t, (x1, y1, x2, y2) in enumerate(tube):
            frames = slice(None) if regions.dim() == 2 else slice(t, t + 1)
            outside[n, :, frames, y1:y2, x1:x2] = False
    assert not clips[outside].any() and full_clips[outside].any()


@pytest.mark.parametrize('faces', ['keyframe-boxes', 'moving', 'edge-clipped', 'overlapping'])
def test_region_input_grad_leaves_every_gradient_as_it_was(faces):
    if faces == 'keyframe-boxes':
        batch = detector_batch()  # heads of the persons, the same region in every frame
    else:
        starts = dict(moving=[[10, 8, 26, 24], [44, 20, 60, 36]], overlapping=[[20, 10, 40, 30], [30, 14, 50, 34]],
                      # cut by the left and the bottom edge, the top-right corner
                      **{'edge-clipped': [[-6, 40, 14, 62], [66, -4, 84, 12]]})[faces]
        batch = face_tubes_batch(moving_tubes(starts, (3, 2) if faces != 'overlapping' else (2, -1), 4))
    assert_same_gradients_and_none_outside_the_regions(build_detector, batch)


def test_region_input_grad_maps_the_frames_of_slowfast_pathways():
    batch = face_tubes_batch(moving_tubes([[10, 8, 26, 24], [40, 30, 58, 48]], (3, 2), 8), frames=8)
    assert_same_gradients_and_none_outside_the_regions(
        lambda: build_detector(SLOWFAST, SLOWFAST_OPTIONS), batch)


def test_region_input_grad_computes_the_full_gradient_of_a_backbone_it_does_not_know(logged_warnings):

    def build():
        model = build_detector()
        # The clips reach the first convolution as a copy: no convolution takes the clips themselves.
        model.backbone.register_forward_pre_hook(lambda backbone, args: (args[0] * 1, ))
        return model

    batch = detector_batch()
    reference, _, _ = gradients(build, batch, region_input_grad=False)
    params, clips, _ = gradients(build, batch, region_input_grad=True)
    for name, grad in params.items():
        assert torch.equal(grad, reference[name]), name
    assert [w for w in logged_warnings if 'RegionInputGrad' in w] == [
        'no convolution of ResNet3dSlowOnly takes the anonymized clips in a form RegionInputGrad knows, so the '
        'detector computes their gradient over whole clips'
    ]
