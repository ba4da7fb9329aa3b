import copy
import logging
from typing import Optional

import torch
from mmengine.dist import all_reduce, get_world_size
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope

from mmanon.models.data_preprocessors import AnonymizerDataPreprocessor, FaceBatch
from mmanon.models.utils import anonymize_crops
from mmanon.registry import HOOKS


@HOOKS.register_module()
class AdversarialTrainingHook(Hook):
    """Train the face discriminator against the anonymizer, and own the game's schedule.

    The players of one training iteration:

    - the detector and the anonymizer M take the stock detector's ``train_step``: the detection loss on the
      anonymized clips, plus M's own terms that :class:`AnonymizerDataPreprocessor` attaches to the same
      backward pass (its adversarial loss against the frozen discriminator, scaled by the weight this hook
      sets, and its L1 term);
    - then, here, the discriminator D takes one step with its own optimizer on the identity-labelled raw and
      anonymized faces of that batch. M's adversarial term is switched on every ``discriminator_steps``
      iterations, so D takes that many steps per adversarial step of M (mmagic's convention).

    The schedule: for ``warmup_iters`` iterations only D learns identities (M's adversarial weight is 0);
    then the weight ramps linearly to ``adversarial_weight`` over ``ramp_iters``; the detector's parameters
    can be frozen (learning rate 0) for the first ``freeze_detector_iters`` iterations, so that a pretrained
    detector guides M before it adapts. All of it is a function of the iteration, so a resumed run continues where it stopped;
    D's optimizer state is saved with every checkpoint and restored on resume.

    Under distributed training, D's gradients are summed over the ranks and divided by the total number of
    faces, so every rank applies the same update whether or not its own batch had faces (a rank without
    faces takes part in the reduction with zero gradients and cannot hang the others). The stock DDP wrapper
    serves the detector's step as it is: the preprocessor ties M and D into that step's backward pass.

    As in the paper, where D learns identities from a large face dataset while M learns on video, a face-identity
    dataset (:class:`mmanon.datasets.FaceIdentityDataset`) can feed the game too: every ``face_interval``
    iterations one batch of it gives M a step (in the detector's optimizer, only M having gradients then) and
    D a step. Each rank draws its own shard.

    D's identity accuracy on raw and on anonymized faces, its loss, M's current adversarial weight and own
    losses, and the faces of each source (``adv_video_faces``, ``adv_dataset_faces``) are logged through
    MMEngine's message hub (``train/adv_*``).

    Args:
        discriminator_optim_wrapper (dict): Optimizer wrapper config of D, built by
            :func:`mmengine.optim.build_optim_wrapper`. Defaults to Adam with lr 1e-3.
        discriminator_steps (int): D steps per adversarial step of M. Defaults to 1.
        warmup_iters (int): Iterations during which only D learns identities. Defaults to 0.
        adversarial_weight (float): Weight of M's adversarial loss after the ramp. Defaults to 1.0.
        ramp_iters (int): Iterations of the linear ramp of the adversarial weight after the warm-up.
            Defaults to 0 (full weight at once).
        freeze_detector_iters (int): Iterations during which the detector's parameters get no gradient
            (M still learns through it). Defaults to 0.
        face_dataloader (dict, optional): Dataloader config of a face-identity dataset, built in the
            ``mmanon`` scope; its identities must be D's. Defaults to None (video faces only).
        face_interval (int): Iterations per batch of the face-identity dataset. Defaults to 1.
    """

    priority = 'NORMAL'  # after the step, before LoggerHook (BELOW_NORMAL) reads the scalars

    def __init__(self,
                 discriminator_optim_wrapper: dict = dict(optimizer=dict(type='Adam', lr=1e-3)),
                 discriminator_steps: int = 1,
                 warmup_iters: int = 0,
                 adversarial_weight: float = 1.0,
                 ramp_iters: int = 0,
                 freeze_detector_iters: int = 0,
                 face_dataloader: Optional[dict] = None,
                 face_interval: int = 1) -> None:
        if not isinstance(discriminator_steps, int) or discriminator_steps < 1:
            raise ValueError(f'discriminator_steps must be an integer >= 1, got {discriminator_steps!r}')
        if not isinstance(face_interval, int) or face_interval < 1:
            raise ValueError(f'face_interval must be an integer >= 1, got {face_interval!r}')
        for name, value in (('warmup_iters', warmup_iters), ('ramp_iters', ramp_iters),
                            ('freeze_detector_iters', freeze_detector_iters)):
            if not isinstance(value, int) or value < 0:
                raise ValueError(f'{name} must be an integer >= 0, got {value!r}')
        if adversarial_weight < 0:
            raise ValueError(f'adversarial_weight must be >= 0, got {adversarial_weight}')
        self.discriminator_optim_wrapper_cfg = discriminator_optim_wrapper
        self.discriminator_steps = discriminator_steps
        self.warmup_iters = warmup_iters
        self.adversarial_weight = adversarial_weight
        self.ramp_iters = ramp_iters
        self.freeze_detector_iters = freeze_detector_iters
        self.face_dataloader_cfg = face_dataloader
        self.face_interval = face_interval
        self._face_batches = None
        self.optim_wrapper = None
        self._resume_state: Optional[dict] = None
        self._frozen_lrs = []

    @staticmethod
    def _model(runner):
        return runner.model.module if is_model_wrapper(runner.model) else runner.model

    def weight_at(self, iteration: int) -> float:
        """M's adversarial weight at ``iteration`` (0-based)."""
        if iteration < self.warmup_iters or (iteration + 1) % self.discriminator_steps:
            return 0.
        if self.ramp_iters == 0:
            return self.adversarial_weight
        return self.adversarial_weight * min(1., (iteration - self.warmup_iters + 1) / self.ramp_iters)

    def before_run(self, runner) -> None:
        preprocessor = self._model(runner).data_preprocessor
        if not isinstance(preprocessor, AnonymizerDataPreprocessor) or preprocessor.discriminator is None:
            raise TypeError('AdversarialTrainingHook needs model.data_preprocessor to be an '
                            'mmanon.AnonymizerDataPreprocessor with a discriminator, got '
                            f'{type(preprocessor).__name__}')
        # Built here, before a resumed checkpoint is loaded into it.
        self.build_optim_wrapper(preprocessor.discriminator)

    def build_optim_wrapper(self, discriminator) -> None:
        """Build D's optimizer wrapper from the config given to the hook."""
        self.optim_wrapper = build_optim_wrapper(discriminator, copy.deepcopy(self.discriminator_optim_wrapper_cfg))

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint['adversarial_training'] = dict(discriminator_optim_wrapper=self.optim_wrapper.state_dict())

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        state = checkpoint.get('adversarial_training')
        # Applied in before_train only if training continues from this checkpoint's iteration (a resume),
        # not when its weights are merely loaded to start a new run.
        self._resume_state = None if state is None else dict(state, iter=checkpoint['meta'].get('iter'))

    def before_train(self, runner) -> None:
        discriminator = self._model(runner).data_preprocessor.discriminator
        num_identities = runner.train_loop.dataloader.dataset.metainfo.get('num_identities')
        if num_identities is not None and num_identities > discriminator.num_classes:
            raise ValueError(f'the training set has {num_identities} identities but the discriminator classifies '
                             f'{discriminator.num_classes}; set model.data_preprocessor.discriminator.num_classes='
                             f'{num_identities}')
        if self.face_dataloader_cfg is not None:
            # Built in mmanon's scope, so that its dataset and transforms need no 'mmanon.' prefix.
            with DefaultScope.overwrite_default_scope('mmanon'):
                dataloader = runner.build_dataloader(copy.deepcopy(self.face_dataloader_cfg), seed=runner.seed)
            # Each rank's sampler draws its own shard; a resumed run skips the batches already drawn.
            self._face_batches = _endless(dataloader)
            for _ in range(runner.iter // self.face_interval):
                next(self._face_batches)
        state, self._resume_state = self._resume_state, None
        if state is not None and state['iter'] == runner.iter:
            self.optim_wrapper.load_state_dict(state['discriminator_optim_wrapper'])
        elif runner.iter > 0:
            print_log('resuming without the discriminator\'s optimizer state', logger='current',
                      level=logging.WARNING)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        model = self._model(runner)
        model.data_preprocessor.adversarial_weight = self.weight_at(runner.iter)
        if runner.iter < self.freeze_detector_iters:
            self._freeze_detector(runner, model)

    def _freeze_detector(self, runner, model) -> None:
        """Set the learning rate of the detector's parameter groups to 0 for this iteration.

        Not ``requires_grad``: DistributedDataParallel forbids changing it once it has wrapped the model. The
        parameters do not move (with SGD, Adam and AdamW alike); their momentum statistics still accumulate.
        """
        detector = {id(p) for name, child in model.named_children() if name != 'data_preprocessor'
                    for p in child.parameters()}
        self._frozen_lrs = []
        for group in runner.optim_wrapper.param_groups:
            in_detector = [id(p) in detector for p in group['params']]
            if all(in_detector):
                self._frozen_lrs.append((group, group['lr']))
                group['lr'] = 0.
            elif any(in_detector):
                raise ValueError('freeze_detector_iters needs the detector\'s parameters in parameter groups '
                                 'of their own; give the optimizer a paramwise_cfg (the adversarial configs do)')

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        # Restored before ParamSchedulerHook (priority LOW) steps the schedule from these values.
        for group, lr in self._frozen_lrs:
            group['lr'] = lr
        self._frozen_lrs = []
        preprocessor = self._model(runner).data_preprocessor
        scalars = self.discriminator_step(preprocessor.discriminator, preprocessor.train_faces)
        scalars.update({f'adv_{name}': value for name, value in preprocessor.train_losses.items()})
        scalars.update(adv_weight=preprocessor.adversarial_weight, adv_video_faces=len(preprocessor.train_faces))
        if self._face_batches is not None and (runner.iter + 1) % self.face_interval == 0:
            faces = self.face_dataset_step(runner, preprocessor, next(self._face_batches))
            scalars['adv_dataset_faces'] = len(faces)
        for name, value in scalars.items():
            runner.message_hub.update_scalar(f'train/{name}', float(value))

    def face_dataset_step(self, runner, preprocessor: AnonymizerDataPreprocessor, batch: dict) -> FaceBatch:
        """One step of M and one of D on a batch of the face-identity dataset, as in the paper, where D learns
        identities from a large face dataset while M learns on video.

        M's step uses the detector's optimizer, in which only M has gradients at this point; its gradients are
        averaged over the ranks here, since this backward pass runs outside DDP's.

        Args:
            runner (Runner): The runner.
            preprocessor (AnonymizerDataPreprocessor): Holds M and D.
            batch (dict): A collated batch of :class:`mmanon.datasets.FaceIdentityDataset`.

        Returns:
            FaceBatch: The batch's raw and anonymized faces.
        """
        device = preprocessor.mean.device
        raw = torch.stack(batch['inputs']).to(device).float()
        identities = torch.cat([sample.gt_label.view(-1) for sample in batch['data_samples']]).to(device)
        (anonymized, ) = anonymize_crops(preprocessor.anonymizer, [raw])
        faces = FaceBatch(raw, anonymized, identities, torch.zeros_like(identities))
        loss = preprocessor.anonymizer_loss(faces, [raw], [anonymized])
        if loss is not None:
            optim_wrapper = runner.optim_wrapper
            optim_wrapper.backward(loss)
            _average_gradients(preprocessor.anonymizer.parameters(), get_world_size())
            optim_wrapper.step()
            optim_wrapper.zero_grad()
        self.discriminator_step(preprocessor.discriminator, faces.detach())
        return faces

    def discriminator_step(self, discriminator, faces: FaceBatch) -> dict:
        """One optimizer step of D on the identity-labelled raw and anonymized faces of a batch.

        Args:
            discriminator (FaceDiscriminatorHead): D.
            faces (FaceBatch): The faces, without gradient.

        Returns:
            dict: D's loss and, when the batch had faces, its accuracy on the raw and on the anonymized ones
            (measured before the step).
        """
        known = faces.identities >= 0
        crops = torch.cat([faces.raw[known], faces.anonymized[known]])
        labels = torch.cat([faces.identities[known]] * 2)
        num_faces = torch.tensor(float(labels.numel()), device=crops.device)
        all_reduce(num_faces)
        with torch.no_grad():
            correct = (discriminator.predict(crops)[1].argmax(dim=1) == labels).float()

        losses = discriminator.loss(crops, labels)
        # Sum over this rank's faces divided by all ranks' faces: after summing the gradients over the
        # ranks, each applies the gradient of the mean loss over every face of the global batch.
        self.optim_wrapper.backward(losses['loss_identity'] * labels.numel() / num_faces.clamp(min=1))
        _average_gradients(discriminator.parameters(), 1)
        self.optim_wrapper.step()
        self.optim_wrapper.zero_grad()

        scalars = dict(adv_loss_discriminator=losses['loss_identity'].detach())
        half = int(known.sum())
        if half:
            scalars.update(adv_acc_raw=correct[:half].mean(), adv_acc_anonymized=correct[half:].mean())
        return scalars


def _endless(dataloader):
    """The batches of ``dataloader``, epoch after epoch (each epoch reshuffled by its sampler)."""
    epoch = 0
    while True:
        if hasattr(dataloader.sampler, 'set_epoch'):
            dataloader.sampler.set_epoch(epoch)
        yield from dataloader
        epoch += 1


def _average_gradients(params, divisor: int) -> None:
    """Sum each parameter's gradient over the ranks and divide it by ``divisor``; a parameter without a
    gradient takes part with zeros, so that every rank makes the same collective calls."""
    for param in params:
        if param.grad is None:
            param.grad = torch.zeros_like(param)
        all_reduce(param.grad)
        if divisor != 1:
            param.grad /= divisor
