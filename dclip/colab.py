"""The course on Colab: one setting for every chapter, the caches on Google Drive, and what the install changed.

Each chapter's first cell is :data:`CELL` (one home: ``tools/colab_cell.py`` writes it into the chapters and a test
compares). On Colab it lists the packages Colab has, installs dclip with those versions as pip constraints (so
nothing Colab ships is up- or downgraded), then calls :func:`setup`, which

- reads the course's one setting, ``DCLIP_KEEP_ON_DRIVE`` (the cell's argument, else the environment variable, else
  the Colab secret of that name, set once in Colab's Secrets panel for every chapter; default off);
- with it on, mounts Google Drive and points ``DCLIP_CACHE``, ``HF_HOME`` and ``TORCH_HOME`` there, before dclip or
  huggingface_hub read them;
- prints what pip installed or changed, where the caches are, the world the chapter will run in, and whether the
  runtime must be restarted (a package that pip changed was already imported, or huggingface_hub was imported
  before its cache moved).

This module uses the standard library only, so importing it imports no torch and reads no cache location.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPOSITORY = "dclip-course/dclip"
#: The package list the cell writes before installing: what Colab had.
BEFORE = "/tmp/colab_before.txt"
SETTING = "DCLIP_KEEP_ON_DRIVE"
DRIVE_MOUNT = "/content/drive"
DRIVE_FOLDER = "/content/drive/MyDrive/dclip"
#: The locations kept on Drive, each a sub-folder of :data:`DRIVE_FOLDER`.
LOCATIONS = {"DCLIP_CACHE": "cache", "HF_HOME": "huggingface", "TORCH_HOME": "torch"}
#: Variables read once, when their module is imported: moved after that import, they need a restart.
READ_AT_IMPORT = {"HF_HOME": "huggingface_hub"}
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}

CELL = f"""# NBVAL_SKIP
# On Colab: install dclip, keeping every package Colab already has, then set up the course (colab/README.md):
# the caches go to Google Drive when the Colab secret {SETTING} is 1 (one setting for every chapter).
# Elsewhere: nothing to do.
import sys
if "google.colab" in sys.modules:
    !pip list --format=freeze | grep -iv '^dclip==' > {BEFORE}
    !pip install -q -c {BEFORE} "dclip[faces] @ git+https://github.com/{REPOSITORY}"
    import dclip.colab
    dclip.colab.setup()  # setup(keep_on_drive=True) or False overrides the course setting for this chapter"""


def canonical(name: str) -> str:
    """A distribution's name as pip compares them (PEP 503): ``Open_Clip.torch`` -> ``open-clip-torch``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_flag(text: str, where: str) -> bool:
    """``1/true/yes/on`` or ``0/false/no/off`` (any case); anything else is a ``ValueError`` naming ``where``."""
    value = text.strip().lower()
    if value in _TRUE or value in _FALSE:
        return value in _TRUE
    raise ValueError(f"{where}={text!r}: use 1 (keep the caches on Google Drive) or 0")


def _colab_secret(name: str) -> str | None:
    """The Colab secret ``name``, or None where there is none (or no access to it was granted)."""
    try:
        from google.colab import userdata
    except ImportError:
        return None
    try:
        return userdata.get(name)
    except Exception:  # SecretNotFoundError, NotebookAccessError: the secret is simply not there for us
        return None


def keep_on_drive_setting(choice: bool | None = None) -> tuple[bool, str]:
    """The course's setting and where it came from: ``choice`` (the cell), else ``$DCLIP_KEEP_ON_DRIVE``, else the
    Colab secret ``DCLIP_KEEP_ON_DRIVE``, else off."""
    if choice is not None:
        if not isinstance(choice, bool):
            raise ValueError(f"keep_on_drive={choice!r} must be True, False or None (the course setting)")
        return choice, "this cell"
    if os.environ.get(SETTING) is not None:
        return parse_flag(os.environ[SETTING], SETTING), f"${SETTING}"
    secret = _colab_secret(SETTING)
    if secret is not None:
        return parse_flag(secret, f"the Colab secret {SETTING}"), f"the Colab secret {SETTING}"
    return False, "the default"


def read_freeze(path: str | Path) -> dict[str, str]:
    """``name==version`` lines (``pip list --format=freeze``) as {canonical name: version}; other lines are
    skipped."""
    out = {}
    for line in Path(path).read_text().splitlines():
        name, sep, version = line.strip().partition("==")
        if sep and name and not name.startswith("#"):
            out[canonical(name)] = version.strip()
    return out


def installed() -> dict[str, str]:
    """The distributions installed now: {canonical name: version}."""
    return {canonical(d.metadata["Name"]): d.version for d in importlib.metadata.distributions() if d.metadata["Name"]}


def imported_distributions() -> set[str]:
    """The distributions (canonical names) that a module imported in this process belongs to."""
    owners = importlib.metadata.packages_distributions()
    top = {name.partition(".")[0] for name in list(sys.modules)}
    return {canonical(d) for module in top for d in owners.get(module, [])}


@dataclass
class Report:
    """What :func:`setup` found and did; :meth:`lines` is what it prints."""

    keep_on_drive: bool
    setting_from: str
    added: dict[str, str] = field(default_factory=dict)
    changed: dict[str, tuple[str, str]] = field(default_factory=dict)
    locations: dict[str, str] = field(default_factory=dict)
    restart: list[str] = field(default_factory=list)
    world: str = ""

    def lines(self) -> list[str]:
        out = []
        if self.added:
            out.append("installed: " + ", ".join(f"{n} {v}" for n, v in sorted(self.added.items())))
        if self.changed:
            out.append("changed: " + ", ".join(f"{n} {a} -> {b}" for n, (a, b) in sorted(self.changed.items())))
        elif self.added:
            out.append("every package Colab had is kept at its version")
        where = ", ".join(f"{k}={v}" for k, v in self.locations.items())
        drive = f"on Google Drive ({where})" if self.keep_on_drive else "in this runtime only (lost when it ends)"
        out.append(f"caches: {drive}; {SETTING} is {'on' if self.keep_on_drive else 'off'} ({self.setting_from})")
        out.append(self.world)
        if self.restart:
            out.append(
                "RESTART NEEDED: Runtime > Restart session, then run this cell again, because "
                + "; ".join(self.restart)
            )
        return out


def _world_line() -> str:
    try:
        from dclip.worlds import world_name

        return f"this chapter will run in the {world_name()} world"
    except Exception as e:  # a bad DCLIP_WORLD: say so here, the chapter's next cell raises it again
        return f"no world can be chosen yet: {e}"


def setup(
    keep_on_drive: bool | None = None,
    *,
    before: str | Path = BEFORE,
    drive_folder: str | Path = DRIVE_FOLDER,
    show: bool = True,
) -> Report:
    """Set up a Colab runtime for the course (see the module's docstring); returns the :class:`Report` it prints."""
    keep, source = keep_on_drive_setting(keep_on_drive)
    report = Report(keep, source)
    imported = imported_distributions()
    if Path(before).is_file():
        had, now = read_freeze(before), installed()
        report.added = {n: v for n, v in now.items() if n not in had and n != "dclip"}
        if "dclip" in now:
            report.added["dclip"] = now["dclip"]
        report.changed = {n: (had[n], now[n]) for n in had if n in now and had[n] != now[n]}
        stale = sorted(n for n in report.changed if n in imported)
        if stale:
            report.restart.append(f"pip changed {', '.join(stale)}, already imported in this runtime")
    if keep:
        if not Path(DRIVE_MOUNT, "MyDrive").is_dir():
            from google.colab import drive

            drive.mount(DRIVE_MOUNT)
        for var, sub in LOCATIONS.items():
            target = str(Path(drive_folder) / sub)
            module = READ_AT_IMPORT.get(var)
            if os.environ.get(var) != target and module in sys.modules:
                report.restart.append(f"{module} was imported before {var} moved to Drive")
            os.environ[var] = target
            Path(target).mkdir(parents=True, exist_ok=True)
            report.locations[var] = target
    report.world = _world_line()
    if show:
        print("\n".join(report.lines()))
    return report
