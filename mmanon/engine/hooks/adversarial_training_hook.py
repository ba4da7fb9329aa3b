import copy
import logging
from typing import List, Optional

import torch
from mmengine.dist import get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapper, build_optim_wrapper
from mmengine.registry import DefaultScope
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from mmanon.models.data_preprocessors import AnonymizerDataPreprocessor, FaceBatch
from mmanon.models.utils import RegionInputGrad, anonymize_crops, average_gradients, global_mean_scales
from mmanon.registry import HOOKS
from .face_replay_buffer import FaceReplayBuffer


@HOOKS.register_module()
class AdversarialTrainingHook(Hook):
    """Train the anonymizer M and the face discriminator D of :class:`AnonymizerDataPreprocessor` beside a
    stock detector, each player with its own optimizer, and own the game's schedule.

    The players of one training iteration:

    - the detector's ``train_step`` is the stock one. This hook adds M's losses (``loss_adv``, its
      adversarial loss against the frozen D scaled by the weight this hook sets, ``loss_l1`` and
      ``loss_temporal``) to the loss dict of the detector's ``loss()``, so the runner's optimizer wrapper scales
      (AMP), accumulates and logs them with the detection losses, and M receives the gradient of detection
      loss + its own terms.
    - M and D are not in the runner's optimizer (this hook takes them out of its parameter groups before
      the run), so the detector's update, its gradient clipping and its logged ``grad_norm`` never depend on
      them. M has its own optimizer wrapper (``anonymizer_optim_wrapper``), which this hook steps whenever
      the runner's wrapper steps (after every ``accumulative_counts`` iterations), after dividing M's
      gradient by the loss scale the runner's AMP wrapper applied to that backward pass; like
      ``GradScaler``, it skips a step whose gradient is not finite. Its own ``clip_grad`` clips M alone.
    - D learns identities with its own wrapper (``discriminator_optim_wrapper``) from the identity-labelled
      raw and anonymized faces of the batch, L_D = CE(D(f), y) + CE(D(M(f)), y), accumulated over the same
      iterations and stepped at the same boundaries; it takes no step when no rank had a face. With
      ``replay_size`` > 0, each of D's steps also learns from anonymized faces of past iterations
      (:class:`FaceReplayBuffer`): L_D gains CE(D(m), y) over ``replay_batch_size`` faces m drawn from the last
      ``replay_size`` anonymized faces it was given, so that M cannot fool D again with what fooled it
      before.

    M's adversarial term is switched on every ``discriminator_steps`` optimizer steps, so D takes that many
    steps per adversarial step of M (mmagic's convention). The schedule: for ``warmup_iters`` iterations only
    D learns identities (M's adversarial weight is 0); then the weight ramps linearly to ``adversarial_weight``
    over ``ramp_iters``; the detector can be frozen for the first ``freeze_detector_iters`` iterations
    (learning rate 0 and BatchNorm statistics fixed), so that a pretrained detector guides M before it adapts.
    All of it is a function of the iteration, so a resumed run continues where it stopped; both players'
    optimizer states are saved with every checkpoint and restored on resume.

    Under distributed training, every loss of the game is a mean over all ranks' faces, so a rank without
    faces takes part with zeros and every rank applies the same updates. M and D stay children of the model,
    so the stock DDP wrapper reduces M's gradient with the detector's; the preprocessor ties every parameter
    of M and D into that backward pass, so DDP sees the same parameters used on every rank.

    As in the paper, where D learns identities from a large face dataset while M learns on video, a
    face-identity dataset (:class:`mmanon.datasets.FaceIdentityDataset`) can feed the game too: every
    ``face_interval`` iterations (a multiple of the runner's ``accumulative_counts``) one batch of it gives M a
    step and D a step, each with its own wrapper. Each rank draws its own shard. Its identities are D's classes
    from ``face_identity_offset`` on, after the video identities by default.

    D's identity accuracy on raw and on anonymized faces, its loss, M's current adversarial weight, the
    players' gradient norms (when they clip) and the faces of each source (``adv_video_faces``,
    ``adv_dataset_faces``) are logged through MMEngine's message hub (``train/adv_*``); ``loss_adv``,
    ``loss_l1`` and ``loss_temporal`` are logged by the runner as losses.

    Args:
        anonymizer_optim_wrapper (dict): Optimizer wrapper config of M (a plain ``OptimWrapper``: the loss
            scale and the accumulation are the runner's), built by :func:`mmengine.optim.build_optim_wrapper`.
            Defaults to Adam with lr 1e-4, torch's fused implementation (the same update in one kernel per
            parameter).
        discriminator_optim_wrapper (dict): Optimizer wrapper config of D, likewise. Defaults to fused Adam
            with lr 1e-3.
        discriminator_steps (int): D steps per adversarial step of M. Defaults to 1.
        warmup_iters (int): Iterations during which only D learns identities. Defaults to 0.
        adversarial_weight (float): Weight of M's adversarial loss after the ramp. Defaults to 1.0.
        ramp_iters (int): Iterations of the linear ramp of the adversarial weight after the warm-up.
            Defaults to 0 (full weight at once).
        freeze_detector_iters (int): Iterations during which the detector does not learn (M still learns
            through it). Defaults to 0.
        face_dataloader (dict, optional): Dataloader config of a face-identity dataset, built in the
            ``mmanon`` scope. Defaults to None (video faces only).
        face_interval (int): Iterations per batch of the face-identity dataset. Defaults to 1.
        face_identity_offset (int, optional): D's class of the face dataset's identity 0. Defaults to None:
            the number of identities of the training video dataset, so that the two sets of people never share
            a class; give 0 when the face dataset shows the video's own people under the video's labels.
        replay_size (int): Anonymized faces of past iterations kept for D (0: none). Defaults to 0.
        replay_batch_size (int): Faces drawn from them (over all ranks) for each of D's steps. Defaults to 32.
        region_input_grad (bool): Whether the detector's convolutions that take the clips compute the clips'
            gradient only inside the anonymized regions (:class:`mmanon.models.utils.RegionInputGrad`), the
            only pixels from which M's gradient is read: the same values there, no other gradient changes.
            False computes it over whole clips, as the stock backward pass does (for debugging).
            Defaults to True.
    """

    priority = 'NORMAL'  # after the step, before LoggerHook (BELOW_NORMAL) reads the scalars

    def __init__(self,
                 anonymizer_optim_wrapper: dict = dict(optimizer=dict(type='Adam', lr=1e-4, fused=True)),
                 discriminator_optim_wrapper: dict = dict(optimizer=dict(type='Adam', lr=1e-3, fused=True)),
                 discriminator_steps: int = 1,
                 warmup_iters: int = 0,
                 adversarial_weight: float = 1.0,
                 ramp_iters: int = 0,
                 freeze_detector_iters: int = 0,
                 face_dataloader: Optional[dict] = None,
                 face_interval: int = 1,
                 face_identity_offset: Optional[int] = None,
                 replay_size: int = 0,
                 replay_batch_size: int = 32,
                 region_input_grad: bool = True) -> None:
        if not isinstance(discriminator_steps, int) or discriminator_steps < 1:
            raise ValueError(f'discriminator_steps must be an integer >= 1, got {discriminator_steps!r}')
        if not isinstance(face_interval, int) or face_interval < 1:
            raise ValueError(f'face_interval must be an integer >= 1, got {face_interval!r}')
        for name, value in (('warmup_iters', warmup_iters), ('ramp_iters', ramp_iters),
                            ('freeze_detector_iters', freeze_detector_iters), ('replay_size', replay_size)):
            if not isinstance(value, int) or value < 0:
                raise ValueError(f'{name} must be an integer >= 0, got {value!r}')
        if not isinstance(replay_batch_size, int) or replay_batch_size < 1:
            raise ValueError(f'replay_batch_size must be an integer >= 1, got {replay_batch_size!r}')
        if face_identity_offset is not None and (not isinstance(face_identity_offset, int)
                                                 or face_identity_offset < 0):
            raise ValueError(f'face_identity_offset must be None or an integer >= 0, got {face_identity_offset!r}')
        if adversarial_weight < 0:
            raise ValueError(f'adversarial_weight must be >= 0, got {adversarial_weight}')
        for name, cfg in (('anonymizer_optim_wrapper', anonymizer_optim_wrapper),
                          ('discriminator_optim_wrapper', discriminator_optim_wrapper)):
            if cfg.get('type', 'OptimWrapper') not in ('OptimWrapper', OptimWrapper) or \
                    cfg.get('accumulative_counts', 1) != 1:
                raise ValueError(f'{name} must be a plain OptimWrapper without accumulative_counts (the loss scale '
                                 f'and the accumulation are the runner\'s wrapper\'s), got {cfg}')
        self.anonymizer_optim_wrapper_cfg = anonymizer_optim_wrapper
        self.discriminator_optim_wrapper_cfg = discriminator_optim_wrapper
        self.discriminator_steps = discriminator_steps
        self.warmup_iters = warmup_iters
        self.adversarial_weight = adversarial_weight
        self.ramp_iters = ramp_iters
        self.freeze_detector_iters = freeze_detector_iters
        self.face_dataloader_cfg = face_dataloader
        self.face_interval = face_interval
        self.face_identity_offset = face_identity_offset
        self.replay_size = replay_size
        self.replay_batch_size = replay_batch_size
        self.region_input_grad = region_input_grad
        self.replay: Optional[FaceReplayBuffer] = None
        self.anonymizer_wrapper: Optional[OptimWrapper] = None
        self.discriminator_wrapper: Optional[OptimWrapper] = None
        self.accumulative_counts = 1
        self._face_batches = None
        self._forward_hook = None
        self._region_input_grad: Optional[RegionInputGrad] = None
        self._resume_state: Optional[dict] = None
        self._loss_scale = 1.
        self._loss_factor = 1.
        self._discriminator_grads: Optional[List[torch.Tensor]] = None
        self._faces_in_window = False
        self._face_identity_offset = 0
        self._frozen_lrs = []
        self._frozen_norms = []

    @staticmethod
    def _model(runner):
        return runner.model.module if is_model_wrapper(runner.model) else runner.model

    def weight_at(self, iteration: int) -> float:
        """M's adversarial weight at ``iteration`` (0-based), given the runner's accumulation."""
        step = iteration // self.accumulative_counts
        if iteration < self.warmup_iters or (step + 1) % self.discriminator_steps:
            return 0.
        if self.ramp_iters == 0:
            return self.adversarial_weight
        return self.adversarial_weight * min(1., (iteration - self.warmup_iters + 1) / self.ramp_iters)

    def before_run(self, runner) -> None:
        if runner.optim_wrapper is None or isinstance(runner.optim_wrapper, dict):
            # A test or validation run of the training config (tools/test.py): the runner builds no optimizer
            # wrapper and trains nobody, so there are no players to set up.
            return
        if not isinstance(runner.optim_wrapper, OptimWrapper):
            raise TypeError('AdversarialTrainingHook needs the runner\'s optim_wrapper to be one OptimWrapper (the '
                            f'detector\'s), got {type(runner.optim_wrapper).__name__}')
        # Here, after the runner built its optimizer and parameter schedulers and before a resumed checkpoint is
        # loaded into them and into the players' wrappers.
        self.attach(self._model(runner), runner.optim_wrapper)

    def attach(self, model: nn.Module, optim_wrapper: OptimWrapper) -> None:
        """Make M and D players of their own beside the detector's optimizer wrapper.

        Takes M's and D's parameters out of the parameter groups of ``optim_wrapper`` (keeping the groups, whose
        number parameter schedulers rely on), builds the players' optimizer wrappers, and registers a forward
        hook on ``model`` that adds the preprocessor's losses to the loss dict of ``model(..., mode='loss')``
        (and, with ``region_input_grad``, the hooks of :class:`mmanon.models.utils.RegionInputGrad`).

        Args:
            model (nn.Module): The detector (unwrapped), with an :class:`AnonymizerDataPreprocessor` that has a
                discriminator.
            optim_wrapper (OptimWrapper): The detector's optimizer wrapper, which steps at the end of each
                accumulation window.
        """
        preprocessor = model.data_preprocessor
        if not isinstance(preprocessor, AnonymizerDataPreprocessor) or preprocessor.discriminator is None:
            raise TypeError('AdversarialTrainingHook needs model.data_preprocessor to be an '
                            'mmanon.AnonymizerDataPreprocessor with a discriminator, got '
                            f'{type(preprocessor).__name__}')
        accumulative_counts = optim_wrapper._accumulative_counts
        if self.face_dataloader_cfg is not None and self.face_interval % accumulative_counts:
            raise ValueError(f'face_interval ({self.face_interval}) must be a multiple of the optimizer wrapper\'s '
                             f'accumulative_counts ({accumulative_counts}): the face-dataset steps of M and D '
                             'happen at the end of an accumulation window')
        self.accumulative_counts = accumulative_counts
        players = {id(p) for p in preprocessor.parameters()}
        for group in optim_wrapper.optimizer.param_groups:
            keep = [id(p) not in players for p in group['params']]
            group['params'] = [p for p, kept in zip(group['params'], keep) if kept]
            if 'param_names' in group:  # torch's named parameter groups, as some constructors make
                group['param_names'] = [n for n, kept in zip(group['param_names'], keep) if kept]
        if any(p.requires_grad for p in preprocessor.anonymizer.parameters()):
            self.anonymizer_wrapper = build_optim_wrapper(preprocessor.anonymizer,
                                                          copy.deepcopy(self.anonymizer_optim_wrapper_cfg))
        self.discriminator_wrapper = build_optim_wrapper(preprocessor.discriminator,
                                                         copy.deepcopy(self.discriminator_optim_wrapper_cfg))
        self.replay = FaceReplayBuffer(self.replay_size) if self.replay_size else None
        self._remove_hooks()
        self._forward_hook = model.register_forward_hook(_add_preprocessor_losses, with_kwargs=True)
        if self.region_input_grad:
            self._region_input_grad = RegionInputGrad(model)

    def after_run(self, runner) -> None:
        self._remove_hooks()

    def _remove_hooks(self) -> None:
        if self._forward_hook is not None:
            self._forward_hook.remove()
            self._forward_hook = None
        if self._region_input_grad is not None:
            self._region_input_grad.remove()
            self._region_input_grad = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        state = dict(discriminator_optim_wrapper=self.discriminator_wrapper.state_dict())
        if self.anonymizer_wrapper is not None:
            state['anonymizer_optim_wrapper'] = self.anonymizer_wrapper.state_dict()
        if self.replay is not None:
            state['replay'] = self.replay.state_dict()
        checkpoint['adversarial_training'] = state

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        state = checkpoint.get('adversarial_training')
        # Applied in before_train only if training continues from this checkpoint's iteration (a resume),
        # not when its weights are merely loaded to start a new run.
        self._resume_state = None if state is None else dict(state, iter=checkpoint['meta'].get('iter'))

    def before_train(self, runner) -> None:
        discriminator = self._model(runner).data_preprocessor.discriminator
        video_identities = runner.train_loop.dataloader.dataset.metainfo.get('num_identities')
        if not video_identities and self.face_dataloader_cfg is None:
            # Without labelled faces D would learn nothing and M would get no adversarial gradient: the run
            # would train a detector on unprotected faces.
            raise ValueError('the training dataset gives no face an identity (its metainfo num_identities is '
                             f'{video_identities}), and AdversarialTrainingHook has no face_dataloader: use '
                             'train_dataloader.dataset.type=\'mmanon.AVAFaceDataset\', or give the hook a '
                             'face-identity dataset')
        self._check_identities('the training video dataset', 0, video_identities, discriminator.num_classes)
        if self.face_dataloader_cfg is not None:
            self._build_face_batches(runner, video_identities, discriminator.num_classes)
        state, self._resume_state = self._resume_state, None
        if state is not None and state['iter'] == runner.iter:
            self.discriminator_wrapper.load_state_dict(state['discriminator_optim_wrapper'])
            if self.anonymizer_wrapper is not None:
                self.anonymizer_wrapper.load_state_dict(state['anonymizer_optim_wrapper'])
            if self.replay is not None and 'replay' in state:
                self.replay.load_state_dict(state['replay'])
            elif self.replay is not None:
                print_log('the checkpoint has no replay buffer of the discriminator (it was trained with '
                          'replay_size=0): the buffer starts empty', logger='current', level=logging.WARNING)
        elif runner.iter > 0:
            print_log('resuming without the optimizer states of the anonymizer and the discriminator',
                      logger='current', level=logging.WARNING)

    def _build_face_batches(self, runner, video_identities: Optional[int], num_classes: int) -> None:
        offset = self.face_identity_offset
        if offset is None:
            if video_identities is None:
                raise ValueError('the training video dataset does not count its identities (metainfo '
                                 'num_identities), so the face dataset\'s cannot be placed after them: give '
                                 'AdversarialTrainingHook a face_identity_offset')
            offset = video_identities
        self._face_identity_offset = offset
        # Built in mmanon's scope, so that its dataset and transforms need no 'mmanon.' prefix.
        with DefaultScope.overwrite_default_scope('mmanon'):
            dataloader = runner.build_dataloader(copy.deepcopy(self.face_dataloader_cfg), seed=runner.seed)
        self._check_identities('the face dataset', offset, dataloader.dataset.metainfo.get('num_identities'),
                               num_classes)
        if dataloader.generator is None:
            # Each epoch's iterator then draws its seed from its own generator, not from torch's global one,
            # so that a resumed run replays the same epochs.
            dataloader.generator = torch.Generator().manual_seed(runner.seed)
        # Each rank's sampler draws its own shard; a resumed run skips the batches already drawn.
        self._face_batches = _endless(dataloader)
        for _ in range(runner.iter // self.face_interval):
            next(self._face_batches)

    @staticmethod
    def _check_identities(source: str, offset: int, count: Optional[int], num_classes: int) -> None:
        if count is not None and offset + count > num_classes:
            raise ValueError(f'{source} has {count} identities, which become the discriminator\'s classes {offset} '
                             f'to {offset + count - 1}, but it classifies {num_classes}; set '
                             f'model.data_preprocessor.discriminator.num_classes={offset + count}')

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        self.before_step(self._model(runner), runner.optim_wrapper, runner.iter)

    def before_step(self, model: nn.Module, optim_wrapper: OptimWrapper, iteration: int) -> None:
        """Set the game up for the detector's ``train_step`` of ``iteration``.

        Args:
            model (nn.Module): The detector (unwrapped).
            optim_wrapper (OptimWrapper): The detector's optimizer wrapper, before its step.
            iteration (int): The runner's iteration (0-based).
        """
        model.data_preprocessor.adversarial_weight = self.weight_at(iteration)
        # The loss scale that this iteration's backward pass applies (a scaler only changes it in its step),
        # and the accumulation's loss factor.
        scaler = getattr(optim_wrapper, 'loss_scaler', None)
        self._loss_scale = scaler.get_scale() if scaler is not None and scaler.is_enabled() else 1.
        self._loss_factor = float(optim_wrapper.scale_loss(torch.ones(())))
        if iteration < self.freeze_detector_iters:
            self._freeze_detector(model, optim_wrapper)

    def _freeze_detector(self, model: nn.Module, optim_wrapper: OptimWrapper) -> None:
        """Give the detector's parameter groups learning rate 0 and put its BatchNorm layers in eval mode, for
        this iteration.

        Not ``requires_grad``: DistributedDataParallel forbids changing it once it has wrapped the model. The
        parameters do not move (with SGD, Adam and AdamW alike); their momentum statistics still accumulate.
        """
        self._frozen_lrs = [(group, group['lr']) for group in optim_wrapper.param_groups]
        for group in optim_wrapper.param_groups:
            group['lr'] = 0.
        self._frozen_norms = [
            m for name, child in model.named_children() if name != 'data_preprocessor' for m in child.modules()
            if isinstance(m, _BatchNorm) and m.training
        ]
        for module in self._frozen_norms:
            module.eval()

    def _unfreeze_detector(self) -> None:
        for group, lr in self._frozen_lrs:
            group['lr'] = lr
        for module in self._frozen_norms:
            module.train()
        self._frozen_lrs, self._frozen_norms = [], []

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        scalars = self.after_step(self._model(runner), runner.optim_wrapper, runner.iter)
        for name, value in scalars.items():
            runner.message_hub.update_scalar(f'train/{name}', float(value))

    def after_step(self, model: nn.Module, optim_wrapper: OptimWrapper, iteration: int) -> dict:
        """The players' part of ``iteration``, after the detector's ``train_step``: D's gradient on this
        batch's faces and, where the detector's wrapper just stepped, the steps of M and D (and those of the
        face dataset).

        Args:
            model (nn.Module): The detector (unwrapped).
            optim_wrapper (OptimWrapper): The detector's optimizer wrapper, after its update.
            iteration (int): The runner's iteration (0-based).

        Returns:
            dict: Scalars to log.
        """
        # Before ParamSchedulerHook (priority LOW) steps the schedule from the restored values.
        self._unfreeze_detector()
        preprocessor = model.data_preprocessor
        scalars = self._accumulate_discriminator(preprocessor.discriminator, preprocessor.train_faces,
                                                 self._loss_factor)
        scalars.update(adv_weight=preprocessor.adversarial_weight, adv_video_faces=len(preprocessor.train_faces))
        if not optim_wrapper.should_update():
            return scalars
        if self.anonymizer_wrapper is not None:
            scalars.update(self._step_player('anonymizer', self.anonymizer_wrapper, 1 / self._loss_scale))
        scalars.update(self._step_discriminator(preprocessor.discriminator))
        if self._face_batches is not None and (iteration + 1) % self.face_interval == 0:
            faces = self.face_dataset_step(preprocessor, next(self._face_batches))
            scalars['adv_dataset_faces'] = len(faces)
        return scalars

    def face_dataset_step(self, preprocessor: AnonymizerDataPreprocessor, batch: dict) -> FaceBatch:
        """One step of M and one of D on a batch of the face-identity dataset, as in the paper, where D learns
        identities from a large face dataset while M learns on video.

        This backward pass runs outside DDP's, so M's gradients are averaged over the ranks here.

        Args:
            preprocessor (AnonymizerDataPreprocessor): Holds M and D.
            batch (dict): A collated batch of :class:`mmanon.datasets.FaceIdentityDataset`.

        Returns:
            FaceBatch: The batch's raw and anonymized faces.
        """
        device = next(preprocessor.discriminator.parameters()).device
        raw = torch.stack(batch['inputs']).to(device).float()
        identities = torch.cat([sample.gt_label.view(-1) for sample in batch['data_samples']]).to(device)
        identities = identities + self._face_identity_offset
        (anonymized, ) = anonymize_crops(preprocessor.anonymizer, [raw])
        faces = FaceBatch(raw, anonymized, identities, torch.zeros_like(identities))
        losses = preprocessor.anonymizer_losses(faces, [raw], [anonymized])
        loss = sum(losses.values(), torch.zeros((), device=device))
        if self.anonymizer_wrapper is not None and loss.requires_grad:
            params = list(preprocessor.anonymizer.parameters())
            loss.backward(inputs=params)
            average_gradients(params)
            self._step_player('anonymizer', self.anonymizer_wrapper)
        self.discriminator_step(preprocessor.discriminator, faces.detach())
        return faces

    def discriminator_step(self, discriminator, faces: FaceBatch) -> dict:
        """One step of D on one batch of identity-labelled raw and anonymized faces, outside any accumulation.

        Args:
            discriminator (FaceDiscriminatorHead): D.
            faces (FaceBatch): The faces, without gradient.

        Returns:
            dict: As :meth:`_accumulate_discriminator`, with D's gradient norm when its wrapper clips.
        """
        scalars = self._accumulate_discriminator(discriminator, faces, 1.)
        scalars.update(self._step_discriminator(discriminator))
        return scalars

    def _accumulate_discriminator(self, discriminator, faces: FaceBatch, loss_factor: float) -> dict:
        """Add D's gradient on one batch's identity-labelled raw and anonymized faces to the accumulated one.

        The gradient is kept apart from the parameters' ``.grad``, which DDP averages over the ranks in the
        detector's backward pass.

        Args:
            discriminator (FaceDiscriminatorHead): D.
            faces (FaceBatch): The faces, without gradient.
            loss_factor (float): The accumulation's factor of this batch (1 / accumulative_counts).

        Returns:
            dict: D's loss and, when the batch had faces, its accuracy on the raw and on the anonymized ones
            (measured before the step).
        """
        (face_scale, ) = global_mean_scales(len(faces), device=faces.raw.device)
        # Raw and anonymized faces in one forward pass of D (its outputs are per face).
        losses = discriminator.loss([faces.raw, faces.anonymized], faces.identities)
        loss = losses['loss_identity']
        grads = torch.autograd.grad(loss * (len(faces) * face_scale * loss_factor), list(discriminator.parameters()))
        if self._discriminator_grads is None:
            self._discriminator_grads = list(grads)
        else:
            for total, grad in zip(self._discriminator_grads, grads):
                total += grad
        # Decided from the global count, the same on every rank: all of them take or skip D's step together.
        self._faces_in_window = self._faces_in_window or face_scale > 0
        if self.replay is not None:
            self.replay.push(faces.anonymized, faces.identities)
        scalars = dict(adv_loss_discriminator=loss.detach())
        if len(faces):
            accuracy_raw, accuracy_anonymized = losses['acc_identity']
            scalars.update(adv_acc_raw=accuracy_raw, adv_acc_anonymized=accuracy_anonymized)
        return scalars

    def _step_discriminator(self, discriminator) -> dict:
        """D's step from the accumulated gradient (plus that of the replayed faces), averaged over the ranks;
        none when no rank had a face."""
        grads, self._discriminator_grads = self._discriminator_grads, None
        faces, self._faces_in_window = self._faces_in_window, False
        if grads is None or not faces:
            return {}
        params = list(discriminator.parameters())
        scalars = {}
        if self.replay is not None and len(self.replay):
            scalars = self._add_replay_gradient(discriminator, grads)
        for param, grad in zip(params, grads):
            param.grad = grad
        average_gradients(params)
        scalars.update(self._step_player('discriminator', self.discriminator_wrapper))
        return scalars

    def _add_replay_gradient(self, discriminator, grads: List[torch.Tensor]) -> dict:
        """Add to ``grads`` the gradient of D's identity loss on faces drawn from the replay buffer (the mean
        over the draws of all ranks, once the ranks' gradients are averaged)."""
        device = next(discriminator.parameters()).device
        crops, identities = self.replay.sample(self.replay_batch_size, get_rank(), get_world_size())
        (scale, ) = global_mean_scales(len(identities), device=device)
        losses = discriminator.loss(crops.to(device), identities.to(device))
        replay_grads = torch.autograd.grad(losses['loss_identity'] * (len(identities) * scale),
                                           list(discriminator.parameters()))
        for total, grad in zip(grads, replay_grads):
            total += grad
        return dict(adv_loss_replay=losses['loss_identity'].detach(), adv_acc_replay=losses['acc_identity'])

    def _step_player(self, name: str, optim_wrapper: OptimWrapper, grad_scale: float = 1.) -> dict:
        """Step one player's wrapper from the gradients its parameters hold, then zero them.

        Args:
            name (str): The player, for the logged scalars.
            optim_wrapper (OptimWrapper): Its wrapper.
            grad_scale (float): Factor that undoes the runner's loss scaling; where it is not 1, a gradient that
                is not finite skips the step, as ``GradScaler`` does. Defaults to 1.

        Returns:
            dict: The player's gradient norm, when its wrapper clips by norm.
        """
        params = [p for group in optim_wrapper.optimizer.param_groups for p in group['params'] if p.grad is not None]
        if not params:
            return {}
        scalars = {}
        if grad_scale != 1:
            for param in params:
                param.grad.mul_(grad_scale)
            if not torch.stack([p.grad.isfinite().all() for p in params]).all():
                optim_wrapper.zero_grad()
                return {f'adv_{name}_skipped_steps': 1}
        if optim_wrapper.clip_grad_kwargs:
            norm = optim_wrapper.clip_func(params, **optim_wrapper.clip_grad_kwargs)
            if norm is not None:
                scalars[f'adv_{name}_grad_norm'] = norm
        optim_wrapper.optimizer.step()
        optim_wrapper.zero_grad()
        return scalars


def _add_preprocessor_losses(model: nn.Module, args, kwargs: dict, output):
    """Forward hook of the detector: in ``mode='loss'``, add the losses that its data preprocessor produced for
    this step to the returned loss dict, so that the optimizer wrapper treats them as the detector's own."""
    if kwargs.get('mode') != 'loss':
        return None
    losses = model.data_preprocessor.pop_losses()
    clash = output.keys() & losses.keys()
    if clash:
        raise KeyError(f'the detector\'s loss dict already has {sorted(clash)}, which the anonymizer\'s losses '
                       'would overwrite')
    output.update(losses)
    return output


def _endless(dataloader):
    """The batches of ``dataloader``, epoch after epoch (each epoch reshuffled by its sampler)."""
    epoch = 0
    while True:
        if hasattr(dataloader.sampler, 'set_epoch'):
            dataloader.sampler.set_epoch(epoch)
        yield from dataloader
        epoch += 1
