"""The checkout is a Python project: `pip install -e .` gives `import software`, `settings`
and a `mefstream` command anywhere in that environment (issue 20).

The first tests read the metadata as setuptools does, without installing; the last one
installs a copy of the checkout (editable, no dependencies, no build isolation) into a
throwaway virtual environment that sees this interpreter's packages, and uses it from
another directory.
"""
from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig
import warnings

import pytest
from packaging.requirements import Requirement

from software.cli import main as cli_main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def requirement_lines(name: str) -> list[str]:
    """The requirements of a requirements file, as pip reads them (no comments)."""
    with open(os.path.join(ROOT, name), encoding="utf-8") as fh:
        lines = [line.split("#", 1)[0].strip() for line in fh]
    return [line for line in lines if line]


@pytest.fixture(scope="module")
def metadata() -> dict:
    """pyproject.toml as setuptools expands it (dynamic fields read from their files)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from setuptools.config.pyprojecttoml import read_configuration
        return read_configuration(os.path.join(ROOT, "pyproject.toml"), expand=True)


def test_the_metadata_names_the_project_and_its_python(metadata):
    project = metadata["project"]
    assert project["name"] == "mefstream"
    assert project["version"]
    assert project["requires-python"] == ">=3.11"
    assert sys.version_info >= (3, 11)


def test_dependencies_are_read_from_the_requirements_files(metadata):
    """requirements.txt stays the one list; the extras are their own files."""
    project = metadata["project"]
    assert [str(Requirement(r)) for r in project["dependencies"]] == [
        str(Requirement(r)) for r in requirement_lines("requirements.txt")]
    extras = project["optional_dependencies"]
    assert sorted(extras) == ["bench", "torch"]
    assert [str(Requirement(r)) for r in extras["torch"]] == ["torch==2.13.0"]
    assert [str(Requirement(r)) for r in extras["bench"]] == [
        str(Requirement(r)) for r in requirement_lines("requirements-bench.txt")]
    assert "torch" not in " ".join(project["dependencies"])


def test_the_pytest_settings_are_kept(metadata):
    pytest_options = metadata["tool"]["pytest"]["ini_options"]
    assert pytest_options["pythonpath"] == ["."] and pytest_options["timeout"] == 120


def test_the_console_command_is_python_m_software(metadata, capsys):
    """`mefstream` runs the function `python -m software` runs."""
    module, _, function = metadata["project"]["scripts"]["mefstream"].partition(":")
    assert (module, function) == ("software.cli.main", "main")
    import software.__main__ as dunder_main
    assert dunder_main.main is cli_main.main
    with pytest.raises(SystemExit) as done:
        cli_main.main(["--help"])
    assert done.value.code == 0 and "usage:" in capsys.readouterr().out


def test_the_installed_modules_are_the_checkouts(metadata):
    """What the wheel installs: the software package tree, settings and start."""
    assert metadata["tool"]["setuptools"]["py-modules"] == ["settings", "start"]
    packages = set(metadata["tool"]["setuptools"]["packages"])
    on_disk = {os.path.relpath(d, ROOT).replace(os.sep, ".")
               for d, _, files in os.walk(os.path.join(ROOT, "software"))
               if "__init__.py" in files}
    assert packages == on_disk and "software.cli" in packages


def _copy_checkout(dest: str) -> None:
    """What pip needs to build the project, without the tests, the data and the .git."""
    os.makedirs(dest)
    for name in ("pyproject.toml", "README.md", "settings.py", "start.py", "requirements.txt",
                 "requirements-torch.txt", "requirements-bench.txt"):
        shutil.copy(os.path.join(ROOT, name), dest)
    shutil.copytree(os.path.join(ROOT, "software"), os.path.join(dest, "software"),
                    ignore=shutil.ignore_patterns("__pycache__"))


def test_pip_install_editable_gives_imports_and_the_command_anywhere(tmp_path):
    """A real `pip install -e .` (of a copy, so the checkout gets no .egg-info) into a new
    venv; then, from another directory, `import software, settings` and `mefstream --help`.
    The venv sees this interpreter's packages through a .pth file (the dependencies are
    not installed again: --no-deps)."""
    checkout, venv, elsewhere = tmp_path / "checkout", tmp_path / "venv", tmp_path / "else"
    _copy_checkout(str(checkout))
    elsewhere.mkdir()
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=60)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig."
                              "get_paths()['purelib'])"], capture_output=True, text=True,
                             check=True, timeout=30).stdout.strip()
    ours = [p for p in (*site.getsitepackages(), sysconfig.get_paths()["purelib"])
            if os.path.isdir(p)]
    with open(os.path.join(purelib, "this_interpreter.pth"), "w", encoding="utf-8") as fh:
        fh.write("\n".join(dict.fromkeys(ours)) + "\n")
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
         "--no-deps", "--no-build-isolation", "--no-index", "-e", str(checkout)],
        capture_output=True, text=True, timeout=120, cwd=str(elsewhere))
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert not (checkout / "build").exists()

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    probe = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m, software, settings, start; "
         "print(software.__file__); print(settings.RPCPORTS['MEF']); "
         "print(m.version('mefstream'))"],
        capture_output=True, text=True, timeout=60, cwd=str(elsewhere), env=env)
    assert probe.returncode == 0, probe.stderr
    where, port, version = probe.stdout.split()
    assert where == str(checkout / "software" / "__init__.py")
    assert port == "18861" and version

    command = subprocess.run([str(venv / "bin" / "mefstream"), "--help"], capture_output=True,
                             text=True, timeout=60, cwd=str(elsewhere), env=env)
    assert command.returncode == 0, command.stderr
    module = subprocess.run([str(python), "-m", "software", "--help"], capture_output=True,
                            text=True, timeout=60, cwd=str(elsewhere), env=env)
    assert command.stdout == module.stdout and "COMMAND" in command.stdout
