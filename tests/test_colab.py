"""The Colab set-up cell's logic, outside Colab: google.colab is a stand-in; what pip did is a freeze file."""

import os
import sys
import types

import pytest

import dclip.colab as colab


@pytest.fixture
def fake_colab(monkeypatch):
    """google.colab with a drive that records mounts and a secrets store (userdata) the test fills."""
    mounts, secrets = [], {}

    class SecretNotFoundError(Exception):
        pass

    def get(name):
        if name not in secrets:
            raise SecretNotFoundError(name)
        return secrets[name]

    google = types.ModuleType("google")
    pkg = types.ModuleType("google.colab")
    pkg.drive = types.SimpleNamespace(mount=mounts.append)
    pkg.userdata = types.SimpleNamespace(get=get)
    google.colab = pkg
    for name, module in {"google": google, "google.colab": pkg, "google.colab.drive": pkg.drive}.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setitem(sys.modules, "google.colab.userdata", pkg.userdata)
    monkeypatch.delenv(colab.SETTING, raising=False)
    for var in colab.LOCATIONS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DCLIP_WORLD", "tiny")
    return types.SimpleNamespace(mounts=mounts, secrets=secrets)


def _freeze(tmp_path, text: str):
    path = tmp_path / "before.txt"
    path.write_text(text)
    return path


def test_the_course_setting_comes_from_the_cell_then_the_environment_then_the_colab_secret(fake_colab, monkeypatch):
    assert colab.keep_on_drive_setting() == (False, "the default")
    fake_colab.secrets[colab.SETTING] = "1"
    assert colab.keep_on_drive_setting() == (True, f"the Colab secret {colab.SETTING}")
    monkeypatch.setenv(colab.SETTING, "off")
    assert colab.keep_on_drive_setting() == (False, f"${colab.SETTING}")
    assert colab.keep_on_drive_setting(True) == (True, "this cell")
    monkeypatch.setenv(colab.SETTING, "maybe")
    with pytest.raises(ValueError, match="DCLIP_KEEP_ON_DRIVE='maybe': use 1 .* or 0"):
        colab.keep_on_drive_setting()
    with pytest.raises(ValueError, match="keep_on_drive='yes' must be True, False or None"):
        colab.keep_on_drive_setting("yes")


def test_keep_on_drive_mounts_drive_and_moves_every_cache_before_dclip_reads_them(fake_colab, tmp_path, capsys):
    fake_colab.secrets[colab.SETTING] = "1"
    report = colab.setup(before=tmp_path / "none.txt", drive_folder=tmp_path / "drive")
    assert fake_colab.mounts == [colab.DRIVE_MOUNT]
    assert {v: os.environ[v] for v in colab.LOCATIONS} == {
        "DCLIP_CACHE": str(tmp_path / "drive" / "cache"),
        "HF_HOME": str(tmp_path / "drive" / "huggingface"),
        "TORCH_HOME": str(tmp_path / "drive" / "torch"),
    }
    from dclip.cache import cache_root

    assert cache_root() == tmp_path / "drive" / "cache"  # read at the call: no restart for dclip's own cache
    out = capsys.readouterr().out
    assert f"caches: on Google Drive (DCLIP_CACHE={tmp_path / 'drive' / 'cache'}" in out
    assert "this chapter will run in the tiny world" in out
    if "huggingface_hub" in sys.modules:  # imported by this test session: its cache folder was fixed then
        assert report.restart == ["huggingface_hub was imported before HF_HOME moved to Drive"]
        assert "RESTART NEEDED: Runtime > Restart session" in out


def test_without_the_setting_nothing_is_mounted_and_the_caches_stay_in_the_runtime(fake_colab, tmp_path, capsys):
    report = colab.setup(before=tmp_path / "none.txt")
    assert fake_colab.mounts == [] and report.locations == {} and report.restart == []
    assert not any(v in os.environ for v in colab.LOCATIONS)
    assert (
        "caches: in this runtime only (lost when it ends); DCLIP_KEEP_ON_DRIVE is off (the default)"
        in capsys.readouterr().out
    )


def test_the_report_says_what_pip_installed_and_asks_for_a_restart_only_when_an_imported_package_changed(
    fake_colab, tmp_path, capsys
):
    now = colab.installed()
    kept = {n: v for n, v in now.items() if n not in ("lpips", "dclip")}
    before = _freeze(tmp_path, "\n".join(f"{n}=={v}" for n, v in kept.items()))
    report = colab.setup(before=before)
    assert set(report.added) == {"lpips", "dclip"} and report.changed == {} and report.restart == []
    out = capsys.readouterr().out
    assert f"installed: dclip {now['dclip']}, lpips {now['lpips']}" in out
    assert "every package Colab had is kept at its version" in out and "RESTART" not in out

    import pytest as imported  # noqa: F401  (pytest is imported: a change to it needs a restart)

    older = {**kept, "pytest": "1.0.0", "ruff": "0.0.1"}
    report = colab.setup(before=_freeze(tmp_path, "\n".join(f"{n}=={v}" for n, v in older.items())))
    assert report.changed == {"pytest": ("1.0.0", now["pytest"]), "ruff": ("0.0.1", now["ruff"])}
    assert report.restart == ["pip changed pytest, already imported in this runtime"]
    assert "RESTART NEEDED" in capsys.readouterr().out


def test_the_cell_keeps_every_package_colab_has_and_installs_with_them_as_constraints():
    lines = colab.CELL.splitlines()
    assert lines[0] == "# NBVAL_SKIP"
    freeze = next(x for x in lines if "pip list" in x)
    install = next(x for x in lines if "pip install" in x)
    assert "--format=freeze" in freeze and f"> {colab.BEFORE}" in freeze and "grep -iv '^dclip=='" in freeze
    assert f"-c {colab.BEFORE}" in install and "torch" not in install.replace("dclip", "")
    assert lines[-1].strip().startswith("dclip.colab.setup()")


def test_importing_the_colab_helper_imports_no_torch_and_no_hub():
    import subprocess

    code = "import sys, dclip.colab; print(sorted(m for m in ('torch', 'huggingface_hub') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"
