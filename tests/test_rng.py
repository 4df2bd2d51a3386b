"""Generator states restored across machine kinds (algorithms.rng)."""
import torch

from algorithms import rng


def test_a_state_of_the_same_kind_replays_the_stream():
    g = torch.Generator().manual_seed(3)
    torch.rand(5, generator=g)
    saved = g.get_state()
    expected = torch.rand(4, generator=g)
    h = torch.Generator().manual_seed(99)
    assert rng.restore(h, saved) is True
    assert torch.equal(torch.rand(4, generator=h), expected)


def test_a_cuda_state_seeds_a_cpu_generator_from_its_digest():
    cuda_state = torch.arange(16, dtype=torch.uint8)  # a CUDA generator's state: 8 bytes seed, 8 bytes offset
    a, b = torch.Generator(), torch.Generator()
    assert rng.restore(a, cuda_state) is False and rng.restore(b, cuda_state) is False
    first = torch.rand(4, generator=a)
    assert torch.equal(first, torch.rand(4, generator=b))  # deterministic: the same saved state, the same stream
    c = torch.Generator()
    rng.restore(c, cuda_state + 1)  # another saved state, another stream
    assert not torch.equal(torch.rand(4, generator=c), first)
