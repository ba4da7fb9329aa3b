"""The discriminator's buffer of past anonymized faces: which faces it keeps, and reproducible draws."""
import pytest
import torch

from mmanon.engine.hooks.face_replay_buffer import FaceReplayBuffer


def faces(first, count):
    """``count`` 2x2 faces whose every pixel is its index (first, first + 1, ...) plus 0.4, identity = index."""
    values = torch.arange(first, first + count, dtype=torch.float32) + 0.4
    return values.view(-1, 1, 1, 1).expand(-1, 3, 2, 2).clone(), torch.arange(first, first + count)


def test_keeps_the_last_faces_with_a_known_identity_as_images():
    buffer = FaceReplayBuffer(5)
    crops, identities = faces(0, 3)
    identities[1] = -1  # unknown: not kept
    buffer.push(crops, identities)
    assert len(buffer) == 2
    assert buffer.crops.dtype == torch.uint8
    assert buffer.identities[:2].tolist() == [0, 2]
    assert buffer.crops[:2, 0, 0, 0].tolist() == [0, 2]  # rounded pixel values
    buffer.push(*faces(10, 4))  # one slot left: the ring wraps and overwrites face 0
    assert len(buffer) == 5
    assert sorted(buffer.identities.tolist()) == [2, 10, 11, 12, 13]
    assert sorted(buffer.crops[:, 0, 0, 0].tolist()) == [2, 10, 11, 12, 13]
    buffer.push(*faces(20, 7))  # more than it holds: the last five
    assert sorted(buffer.identities.tolist()) == [22, 23, 24, 25, 26]
    crops, identities = buffer.sample(50)
    assert crops.dtype == torch.float32 and crops.shape == (50, 3, 2, 2)
    # Each draw is a kept face with its own identity.
    assert torch.equal(crops[:, 0, 0, 0].long(), identities)
    assert set(identities.tolist()) == {22, 23, 24, 25, 26}


def test_draws_are_reproducible_from_the_state_and_split_over_ranks():
    buffer = FaceReplayBuffer(8, seed=3)
    buffer.push(*faces(0, 6))
    buffer.sample(4)
    resumed = FaceReplayBuffer(8, seed=99)
    resumed.load_state_dict(buffer.state_dict())
    _, expected = buffer.sample(6)
    _, again = resumed.sample(6)
    assert torch.equal(again, expected)
    # Two ranks drawing with the same state take alternate draws of the same sequence.
    states = [FaceReplayBuffer(8, seed=3) for _ in range(2)]
    for rank_buffer in states:
        rank_buffer.push(*faces(0, 6))
    reference = FaceReplayBuffer(8, seed=3)
    reference.push(*faces(0, 6))
    _, whole = reference.sample(5)
    shares = [rank_buffer.sample(5, rank, 2)[1] for rank, rank_buffer in enumerate(states)]
    assert torch.equal(shares[0], whole[0::2]) and torch.equal(shares[1], whole[1::2])


def test_refuses_what_it_cannot_hold():
    with pytest.raises(ValueError, match='capacity must be an integer >= 1, got 0'):
        FaceReplayBuffer(0)
    buffer = FaceReplayBuffer(4)
    with pytest.raises(ValueError, match='the replay buffer is empty'):
        buffer.sample(1)
    buffer.push(*faces(0, 2))
    with pytest.raises(ValueError, match=r'holds crops of shape \(3, 2, 2\), got \(3, 4, 4\)'):
        buffer.push(torch.zeros(1, 3, 4, 4), torch.zeros(1, dtype=torch.long))
    with pytest.raises(ValueError, match='resume with the same replay_size'):
        FaceReplayBuffer(5).load_state_dict(buffer.state_dict())
