import pytest
import torch

from dclip.schedule import Schedule


@pytest.fixture(scope="session")
def schedule() -> Schedule:
    return Schedule.linear()


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)
