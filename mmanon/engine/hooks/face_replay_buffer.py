from typing import Optional, Tuple

import torch
from mmengine.dist import all_gather_object, get_world_size
from torch import Tensor

from mmanon.models.utils import to_uint8


class FaceReplayBuffer:
    """The identity-labelled anonymized faces of past iterations, from which the face discriminator keeps
    learning (the history of refined images of Shrivastava et al., CVPR 2017).

    A D that learns only from the current anonymizer's faces forgets the ways M fooled it before, and M can fool
    it again by going back to them; a D that also learns from the faces of past iterations has to recognise
    people under all of them. The buffer is a ring of the last ``capacity`` faces with a known identity, kept
    as uint8 crops (the images the anonymizer's output stands for, as the privacy metrics store them) on the
    CPU. Under distributed training every rank pushes the faces of every rank (gathered) and draws with a
    generator of the same seed, so that the buffers and the draws are the same on all ranks and rank 0's
    checkpoint holds all of it.

    Args:
        capacity (int): Faces kept.
        seed (int): Seed of the draws' generator. Defaults to 0.
    """

    def __init__(self, capacity: int, seed: int = 0) -> None:
        if not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f'capacity must be an integer >= 1, got {capacity!r}')
        self.capacity = capacity
        self.crops: Optional[Tensor] = None
        self.identities = torch.full((capacity, ), -1, dtype=torch.long)
        self.count = 0
        self.position = 0
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return self.count

    def push(self, crops: Tensor, identities: Tensor) -> None:
        """Add faces, overwriting the oldest ones once the buffer is full; unknown identities (negative) are
        not kept. Every rank must call it (it gathers the faces of all ranks).

        Args:
            crops (Tensor): (F, C, h, w) float pixel values in [0, 255], on any device.
            identities (Tensor): (F,) identity labels.
        """
        known = identities >= 0
        crops = to_uint8(crops.detach()[known]).cpu()
        identities = identities[known].to('cpu', torch.long)
        if get_world_size() > 1:
            gathered = all_gather_object((crops, identities))
            crops = torch.cat([c for c, _ in gathered])
            identities = torch.cat([i for _, i in gathered])
        if not len(crops):
            return
        if self.crops is None:
            self.crops = torch.zeros((self.capacity, ) + tuple(crops.shape[1:]), dtype=torch.uint8)
        elif crops.shape[1:] != self.crops.shape[1:]:
            raise ValueError(f'the replay buffer holds crops of shape {tuple(self.crops.shape[1:])}, got '
                             f'{tuple(crops.shape[1:])}')
        crops, identities = crops[-self.capacity:], identities[-self.capacity:]
        slots = (self.position + torch.arange(len(crops))) % self.capacity
        self.crops[slots] = crops
        self.identities[slots] = identities
        self.position = (self.position + len(crops)) % self.capacity
        self.count = min(self.capacity, self.count + len(crops))

    def sample(self, num: int, rank: int = 0, world_size: int = 1) -> Tuple[Tensor, Tensor]:
        """Draw ``num`` faces uniformly, with replacement, and return this rank's share of them.

        Args:
            num (int): Faces drawn over all ranks.
            rank (int): This rank; it takes the draws ``rank``, ``rank + world_size``, ... Defaults to 0.
            world_size (int): Ranks. Defaults to 1.

        Returns:
            tuple[Tensor, Tensor]: (n, C, h, w) float crops and (n,) identities of this rank's draws.
        """
        if not self.count:
            raise ValueError('the replay buffer is empty')
        slots = torch.randint(self.count, (num, ), generator=self.generator)[rank::world_size]
        return self.crops[slots].float(), self.identities[slots].clone()

    def state_dict(self) -> dict:
        return dict(
            capacity=self.capacity,
            crops=self.crops,
            identities=self.identities.clone(),
            count=self.count,
            position=self.position,
            generator=self.generator.get_state())

    def load_state_dict(self, state: dict) -> None:
        if state['capacity'] != self.capacity:
            raise ValueError(f'the checkpoint\'s replay buffer holds {state["capacity"]} faces, this one '
                             f'{self.capacity}: resume with the same replay_size')
        self.crops = None if state['crops'] is None else state['crops'].clone()
        self.identities = state['identities'].clone()
        self.count = state['count']
        self.position = state['position']
        self.generator.set_state(state['generator'])
