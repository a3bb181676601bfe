import pytest
import torch
from fakes import small_model

from dclip.models import DiffusionModel
from dclip.schedule import Schedule


@pytest.fixture(scope="session")
def schedule() -> Schedule:
    return Schedule.linear()


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


@pytest.fixture(scope="module")
def base() -> DiffusionModel:
    """The small random model (frozen) that stands in for a pretrained eps_theta."""
    return small_model()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """Four random 16 x 16 images in [-0.8, 0.8]."""
    return torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(3)) * 1.6 - 0.8
