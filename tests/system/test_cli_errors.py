"""Commands given what they cannot use (a data directory they cannot write, an extra that is
not installed): a clear error naming it and exit 2, never a traceback. Each runs
`python -m scadawatch` in its own process, as a user would. Site-file faults are in
tests/cases/config/ (tests/gateway/site/test_config.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.harness import RUN_LIMIT

from scadawatch.cli import EXIT_USAGE

# A core install (`pip install scadawatch`, as on a field gateway) has no `sim` extra. Its
# packages are installed here (the test extra needs them), so the command runs behind an
# import hook that refuses them as a missing package would: the same ModuleNotFoundError.
WITHOUT_SIM = """\
import sys

class NoSimExtra:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {"wntr", "pandapower", "six", "tomli_w"}:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoSimExtra())
from scadawatch.cli import main
sys.exit(main(sys.argv[1:]))
"""
SIM_HINT = "pip install 'scadawatch[sim]'"


def scadawatch(*argv: str | Path, cwd: Path, without_sim: bool = False
               ) -> subprocess.CompletedProcess[str]:
    head = ["-c", WITHOUT_SIM] if without_sim else ["-m", "scadawatch"]
    return subprocess.run([sys.executable, *head, *map(str, argv)], cwd=cwd, text=True,
                          capture_output=True, timeout=RUN_LIMIT, check=False)


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Path]:
    """A folder this process cannot write in: a read-only tmpfs where tests run as root (root
    writes through any mode bits), else mode 0555."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"root, but cannot mount a read-only tmpfs: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def site_file(folder: Path, data_dir: Path) -> Path:
    path = folder / "site.toml"
    path.write_text(f'[site]\nname = "ro"\ndata_dir = "{data_dir}"\n\n[api]\nport = 0\n')
    return path


@pytest.mark.parametrize(("command", "inside"), [
    ("run", "data"), ("gateway", "data"), ("api", "."),
], ids=["run", "gateway", "api-in-the-folder-itself"])
def test_a_read_only_data_dir_is_named(read_only: Path, tmp_path: Path, command: str,
                                       inside: str) -> None:
    data_dir = (read_only / inside).resolve()
    config = site_file(tmp_path, data_dir)
    done = scadawatch(command, "--config", config, cwd=tmp_path)
    assert done.returncode == EXIT_USAGE, done.stderr
    assert "Traceback" not in done.stderr
    assert (f"{config}: site.data_dir: {data_dir}: cannot write there: Read-only file system"
            in done.stderr if os.geteuid() == 0 else "Permission denied" in done.stderr)


@pytest.mark.parametrize("argv", [
    ("demo", "--duration", "1"),
    ("simulate", "water", "--export", "out", "--days", "0.01"),
    ("simulate", "grid", "--duration", "1"),
], ids=["demo", "simulate-export", "simulate-serve"])
def test_the_simulators_on_a_core_install_say_which_extra(tmp_path: Path,
                                                          argv: tuple[str, ...]) -> None:
    done = scadawatch(*argv, cwd=tmp_path, without_sim=True)
    assert done.returncode == EXIT_USAGE, done.stderr
    assert "Traceback" not in done.stderr and SIM_HINT in done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert not (tmp_path / "out").exists()  # refused before anything started


def test_a_demo_data_dir_that_is_a_file_is_named(tmp_path: Path) -> None:
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    done = scadawatch("demo", "--data-dir", taken, "--duration", "1", cwd=tmp_path)
    assert done.returncode == EXIT_USAGE, done.stderr
    assert "Traceback" not in done.stderr
    assert f"--data-dir {taken}: cannot write there: File exists" in done.stderr
