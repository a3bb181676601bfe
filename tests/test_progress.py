"""Progress bars follow the caller's progress=True, and TQDM_DISABLE hides them all (stored chapters and CI)."""

import io

import pytest

from dclip.ddpm import ddpm_sample
from dclip.progress import progress_bar


@pytest.mark.parametrize(("env", "shown"), [(None, True), ("", True), ("0", True), ("1", False), ("true", False)])
def test_tqdm_disable_hides_a_bar_that_the_caller_asked_for(monkeypatch, env, shown):
    if env is None:
        monkeypatch.delenv("TQDM_DISABLE", raising=False)
    else:
        monkeypatch.setenv("TQDM_DISABLE", env)
    assert progress_bar(range(3), show=True, file=io.StringIO()).disable is (not shown)
    assert progress_bar(range(3), show=False, file=io.StringIO()).disable is True


def test_sampling_with_progress_prints_nothing_under_tqdm_disable(monkeypatch, capsys, schedule):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    ddpm_sample(lambda x, t: x * 0, (1, 1, 2, 2), schedule, progress=True)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""
