"""A fake ``nvidia-smi`` for tests: :func:`install_fake_nvidia_smi` writes it into a driver
root as an executable script, so the plugin runs it as it runs the real one.

It understands what the plugin runs, ``compute-policy -i <UUID> --set-timeslice <0-3>``,
records each in ``<driver root>/nvidia-smi.journal`` as ``<UUID> <value>`` and says what
the real tool says; and ``--gpu-reset -i <UUID>``, recorded in ``nvidia-smi.resets``
(:func:`logged_resets`), failing as the real tool does for a GPU in use while
``<driver root>/nvidia-smi.reset-fails`` exists. Anything else, or a value out of range,
exits 2. Simplified: it knows no GPUs, so any UUID is accepted.
"""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["install_fake_nvidia_smi", "logged_resets", "logged_timeslices"]

_SCRIPT = r"""
import os
import sys

args = sys.argv[1:]
if (
    len(args) == 5
    and args[0] == "compute-policy"
    and args[1] == "-i"
    and args[3] == "--set-timeslice"
    and args[4] in ("0", "1", "2", "3")
):
    with open(JOURNAL, "a") as out:
        out.write("%s %s\n" % (args[2], args[4]))
    print("Set timeslice to %s for GPU %s." % (args[4], args[2]))
    sys.exit(0)
if len(args) == 3 and args[0] == "--gpu-reset" and args[1] == "-i":
    if os.path.exists(JOURNAL[: -len("journal")] + "reset-fails"):
        print("Unable to reset GPU %s because it's being used by some other process." % args[2])
        sys.exit(255)
    with open(JOURNAL[: -len("journal")] + "resets", "a") as out:
        out.write("%s\n" % args[2])
    print("GPU %s was successfully reset." % args[2])
    print("All done.")
    sys.exit(0)
sys.stderr.write("fake nvidia-smi: unsupported arguments %r\n" % args)
sys.exit(2)
"""


def install_fake_nvidia_smi(driver_root: Path) -> Path:
    """Write the fake as ``<driver_root>/usr/bin/nvidia-smi``; returns its path."""
    path = driver_root / "usr" / "bin" / "nvidia-smi"
    path.parent.mkdir(parents=True, exist_ok=True)
    journal = driver_root / "nvidia-smi.journal"
    path.write_text(f"#!{sys.executable}\nJOURNAL = {str(journal)!r}\n{_SCRIPT}")
    path.chmod(0o755)
    return path


def logged_timeslices(driver_root: Path) -> list[tuple[str, int]]:
    """Each time slice set, in order: (GPU UUID, value)."""
    path = driver_root / "nvidia-smi.journal"
    if not path.exists():
        return []
    pairs = (line.split() for line in path.read_text().splitlines())
    return [(uuid, int(value)) for uuid, value in pairs]


def logged_resets(driver_root: Path) -> list[str]:
    """The UUID of each GPU reset, in order."""
    path = driver_root / "nvidia-smi.resets"
    return path.read_text().split() if path.exists() else []
