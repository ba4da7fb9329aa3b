"""M's losses are means over every face of the global batch, however the faces are spread over the ranks."""
import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from mmaction.structures import ActionDataSample
from mmengine.structures import InstanceData

from mmanon.models import AnonymizerDataPreprocessor
from mmanon.models.utils import average_gradients

PLAYERS = dict(
    anonymizer=dict(type='ResNetAnonymizer', base_channels=8, num_blocks=1, crop_size=(32, 32), residual=False),
    discriminator=dict(type='FaceDiscriminatorHead', num_classes=4, input_size=(32, 32), base_channels=8,
                       num_stages=2, embed_dims=16),
    face_crop_size=(32, 32), adversarial_weight=1.0, l1_weight=1.0, mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375])
# Faces per clip: rank 0 gets the first clip (one face), rank 1 the other two (three faces).
FACES_PER_CLIP = (1, 2, 1)
SPLIT = ((0, ), (1, 2))


def clips(indices):
    generator = torch.Generator().manual_seed(0)
    inputs = [torch.randint(0, 256, (3, 2, 48, 64), generator=generator, dtype=torch.uint8) for _ in FACES_PER_CLIP]
    samples = []
    for count in FACES_PER_CLIP:
        sample = ActionDataSample()
        boxes = torch.tensor([[4., 4., 24., 24.], [36., 20., 60., 44.]])[:count]
        sample.gt_faces = InstanceData(bboxes=boxes, identities=torch.arange(count))
        samples.append(sample)
    return dict(inputs=[inputs[i] for i in indices], data_samples=[samples[i] for i in indices])


def anonymizer_gradients(indices):
    torch.manual_seed(0)
    preprocessor = AnonymizerDataPreprocessor(**PLAYERS)
    preprocessor(clips(indices), True)
    sum(preprocessor.pop_losses().values()).backward()
    params = list(preprocessor.anonymizer.parameters())
    average_gradients(params)  # what DDP does to the gradients of the detector's backward pass
    return [p.grad for p in params]


def _rank(rank, port, out):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=2)
    torch.save(anonymizer_gradients(SPLIT[rank]), f'{out}/rank{rank}.pth')
    dist.destroy_process_group()


def test_losses_are_means_over_all_ranks_faces(tmp_path):
    mp.spawn(_rank, args=(29641, str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f'rank{r}.pth', weights_only=True) for r in (0, 1)]
    expected = anonymizer_gradients(range(len(FACES_PER_CLIP)))
    for rank in ranks:
        for grad, reference in zip(rank, expected):
            torch.testing.assert_close(grad, reference, rtol=1e-5, atol=1e-7)
