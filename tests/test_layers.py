"""The layers point one way (adapters <- migration <- server), the domain knows no HTTP
framework, and the vLLM plugin never imports the gateway: import-linter checks the contracts in
pyproject.toml on the code's real imports."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
        "sys.exit(lint_imports_command())"]


def lint(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*LINT, "--no-cache", *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin"})


def test_the_projects_import_contracts_are_kept():
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout


def test_an_upward_import_breaks_the_build(tmp_path):
    """The same kind of contract on a two-layer toy whose lower layer imports the upper one."""
    for package, source in (("upper", "from lower import thing\n"), ("lower", "import upper\nthing = 1\n")):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text(source)
    (tmp_path / ".importlinter").write_text("[importlinter]\nroot_packages =\n    upper\n    lower\n\n"
                                            "[importlinter:contract:layers]\nname = toy\ntype = layers\n"
                                            "layers =\n    upper\n    lower\n")
    result = lint(tmp_path)
    assert result.returncode != 0 and "BROKEN" in result.stdout, result.stdout + result.stderr
