"""The front page and the documentation site: the README stays one screen-ish, every Python
block of the README and the guides runs as written, what the README says ``print(report)``
prints is what it prints, the site builds with warnings as errors (internal links
included), and no page a user reads tells the project's history."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def blocks(page: Path) -> list[str]:
    return BLOCK.findall(page.read_text())


def _run(code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu",
           "PYTHONWARNINGS": "error::DeprecationWarning:winit_jax"}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=900)


def test_the_readme_is_short_and_keeps_the_quick_start():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    for command in ("bash run.sh ", "bash run.sh test "):
        assert re.search(rf"^{command}", text, re.M), command
    assert "bash run.sh test" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("page", [p for p in PAGES if blocks(p)],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_every_python_block_runs(page, tmp_path):
    """A page's blocks run in order in one fresh process, as a reader pastes them."""
    proc = _run("\n\n".join(blocks(page)), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    if page.name == "README.md":  # the table it shows is the one print(report) prints
        shown = re.search(r"^```text\n(.*?)^```", page.read_text(), re.S | re.M).group(1)
        printed = proc.stdout[proc.stdout.index("parity "):]

        def counts(text):  # the verdict line, then each part and its number of checks (how
            # a step check splits between passed and "barely moved" varies with rounding)
            lines = text.strip().splitlines()
            return [lines[0]] + [re.split(r"\s{2,}", line)[:2] for line in lines[1:]]
        assert counts(printed) == counts(shown), printed


def test_the_site_builds_with_warnings_as_errors(tmp_path):
    pytest.importorskip("mkdocs")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d",
                           str(tmp_path / "site")], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "site" / "api" / "parity" / "index.html").read_text().count(
        "load_checkpoint") > 1  # the API reference is generated, not empty


HISTORY = re.compile(r"\bissues? #\d+|\bsessions?\b|\bcommits? [0-9a-f]{7}|\b(?=[0-9a-f]*\d)"
                     r"(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}\b", re.I)


def test_no_user_facing_page_tells_the_projects_history():
    found = [(str(p.relative_to(ROOT)), m.group(0)) for p in PAGES
             for m in HISTORY.finditer(p.read_text())]
    assert not found, found


def test_the_history_pattern_catches_what_it_is_for():  # a negative control of the above
    for text in ("issue #29 asks", "session 9's code", "commit 1e9a797", "at 6d73405"):
        assert HISTORY.search(text), text
    for text in ("Var[w] = 2/n_l", "float32 ulps", "sha256", "1e-10"):
        assert not HISTORY.search(text), text
