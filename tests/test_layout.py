"""The layout is the architecture: library <- twin <- lab, one way, and a light library import.

library (``winit_jax`` less ``winit_jax.lab``): imports neither the lab nor the twin.
twin (``reference_torch``): may import the library, never the lab.
lab (``winit_jax.lab``): may import both.
"""

import ast
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside functions (lazy imports count)."""
    tree = ast.parse(path.read_text(), str(path))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def _package_files(package: str, *, exclude: str | None = None) -> list[Path]:
    files = sorted((ROOT / package).rglob("*.py"))
    return [f for f in files if exclude is None or exclude not in f.relative_to(ROOT).parts]


def _violations(files, forbidden) -> list[str]:
    return [f"{f.relative_to(ROOT)} imports {m}" for f in files for m in sorted(_imports(f))
            if any(m == p or m.startswith(p + ".") for p in forbidden)]


def test_library_imports_neither_the_lab_nor_the_twin():
    files = _package_files("winit_jax", exclude="lab")
    files = [f for f in files if f.name != "__main__.py"]  # the entry point runs the lab's CLI
    assert files and _violations(files, ("winit_jax.lab", "reference_torch")) == []


def _top_level_imports(path: Path) -> set[str]:
    """The modules a file imports when it is imported (its module body, not functions)."""
    out = set()
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def test_library_imports_torch_and_scipy_only_inside_functions():
    """``torch_like.init`` and the recording forward need no torch: ``parity`` reaches
    torch and scipy only from inside the functions that use them."""
    files = [f for f in _package_files("winit_jax", exclude="lab") if f.name != "__main__.py"]
    bad = [f"{f.relative_to(ROOT)} imports {m} at import time" for f in files
           for m in sorted(_top_level_imports(f))
           if any(m == p or m.startswith(p + ".") for p in ("torch", "scipy"))]
    assert files and bad == []
    mods = _modules_after("import winit_jax.torch_like, winit_jax.parity, winit_jax.forward")
    assert not [m for m in mods if m == "torch" or m.startswith("torch.")]


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: str = "winit_jax", exclude: str = "lab") -> dict[str, set[str]]:
    """module -> the library modules it imports (lazy imports count). Importing ``a.b.c``
    runs the ``__init__`` of each package on the way (``a.b``) unless the importer is
    inside that package already, so those count as imported too."""
    files = [f for f in _package_files(package, exclude=exclude) if f.name != "__main__.py"]
    modules = {_module_name(f): f for f in files}
    graph = {}
    for name, f in modules.items():
        edges = set()
        for imported in _imports(f):
            parts = imported.split(".")
            for i in range(1, len(parts) + 1):
                target = ".".join(parts[:i])
                if target in modules and target != name and not name.startswith(target + "."):
                    edges.add(target)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles of ``graph``, each as a path that comes back to its start."""
    found, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    return found


def test_the_library_has_no_import_cycle():
    """Arrows one way inside the library too: core (initializers <- torch_draws, sampling,
    activations, schemes) <- kinds, cells <- forward, lsuv, torch_like <- parity (pairing <-
    the stages of check)."""
    graph = import_graph()
    assert "winit_jax.kinds" in graph and "winit_jax.parity.harness" in graph
    assert cycles(graph) == []


def test_the_cycle_finder_sees_a_cycle():
    """Negative control: the old layout's cycle (torch_like -> parity's kinds, whose package
    runs the harness, which imports torch_like) is found."""
    graph = {"winit_jax.torch_like": {"winit_jax.parity"},
             "winit_jax.parity": {"winit_jax.parity.harness"},
             "winit_jax.parity.harness": {"winit_jax.torch_like"}, "winit_jax.sampling": set()}
    assert cycles(graph) == [["winit_jax.parity", "winit_jax.parity.harness",
                              "winit_jax.torch_like", "winit_jax.parity"]]


def test_lsuv_and_torch_like_load_no_part_of_parity():
    for module in ("winit_jax.lsuv", "winit_jax.torch_like", "winit_jax.forward"):
        mods = _modules_after(f"import {module}")
        assert module in mods and not [m for m in mods if m.startswith("winit_jax.parity")], module


def test_the_porting_tests_import_of_the_lab_only_its_examples():
    """The ported examples (torchvision and torch.nn models and their ports) are the lab's,
    out of the library's import path; they need nothing of the lab's extras, so the porting
    tests may use them and nothing else of the lab."""
    files = _package_files("tests/porting")
    bad = [v for v in _violations(files, ("winit_jax.lab",))
           if not v.split(" imports ")[1].startswith(("winit_jax.lab.examples",))
           and v.split(" imports ")[1] != "winit_jax.lab"]
    assert files and bad == []
    examples = _imports(ROOT / "winit_jax/lab/examples.py")
    assert not [m for m in examples if m.startswith("winit_jax.lab")
                or m.split(".")[0] in ("optax", "orbax", "matplotlib", "mlxtend", "rich")]


def test_pairing_is_a_subpackage_below_the_stages_of_check():
    """``parity/pairing`` imports of the rest of ``parity`` only ``io`` (inputs) and ``lazy``
    (traced tensors); the stages import it, never the reverse."""
    files = _package_files("winit_jax/parity/pairing")
    others = [m for f in files for m in _imports(f) if m.startswith("winit_jax.parity.")
              and not m.startswith("winit_jax.parity.pairing")]
    assert files and {m.rsplit(".", 1)[0] if m.count(".") > 2 else m for m in others} <= {
        "winit_jax.parity.io", "winit_jax.parity.lazy"}, sorted(others)


def test_names_that_moved_keep_working_or_say_where_they_went():
    """Old import paths of moved names: the pairing modules (now ``parity.pairing.*``) still
    import; torch's draws (now ``torch_draws``, whose core ``initializers`` is: importing
    back would be a cycle) and the examples' old module say where they went."""
    code = ("try:\n    from winit_jax.initializers import constant\n"
            "except ImportError as e:\n    print(e)\n"
            "import winit_jax.parity.transfer as t, winit_jax.parity.call_order as c\n"
            "from winit_jax.parity.ties import torch_ties\n"
            "from winit_jax.parity.layers import fits\n"
            "from winit_jax.parity.registration import layer_kind\n"
            "assert t.__name__ == 'winit_jax.parity.pairing.transfer'\n"
            "assert c.__name__ == 'winit_jax.parity.pairing.call_order'\n"
            "try:\n    import winit_jax.parity.examples\n"
            "except ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert "winit_jax.lab.examples" in out and "winit_jax.parity.nhwc" in out
    assert "constant moved to winit_jax.torch_draws" in out


def test_twin_never_imports_the_lab():
    files = _package_files("reference_torch")
    assert files and _violations(files, ("winit_jax.lab",)) == []


def test_the_checker_sees_a_lazy_import(tmp_path):
    """Negative control: an import hidden inside a function is found."""
    f = tmp_path / "m.py"
    f.write_text("def g():\n    from winit_jax.lab import train\n")
    assert _imports(f) >= {"winit_jax.lab", "winit_jax.lab.train"}


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True, text=True, check=True, cwd=ROOT)
    return set(json.loads(out.stdout.splitlines()[-1]))


HEAVY = ("flax", "optax", "orbax", "rich", "matplotlib", "torch", "mlxtend", "winit_jax.lab",
         "reference_torch")


def test_import_winit_jax_is_light():
    mods = _modules_after("import winit_jax as wj; wj.he_normal(); wj.SCHEMES")
    loaded = sorted(m for m in mods if any(m == h or m.startswith(h + ".") for h in HEAVY))
    assert loaded == []
    assert "jax" in mods  # the initialisers do need jax


def test_lazy_names_resolve_and_all_is_complete():
    import winit_jax as wj
    import winit_jax.lab as lab

    for name in wj.__all__:
        assert getattr(wj, name) is not None, name
    for name in lab.__all__:
        assert getattr(lab, name) is not None, name
    assert callable(wj.lsuv.lsuv) and issubclass(wj.LSUVError, RuntimeError)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        wj.nope  # noqa: B018


def test_version_comes_from_the_package_metadata():
    from importlib.metadata import version

    import winit_jax as wj
    assert wj.__version__ == version("winit-jax")


def test_a_non_editable_install_works_and_finds_data_from_the_working_directory(tmp_path):
    """A wheel installed into a plain directory: the package data (py.typed) is there, the
    command runs, and the default data folder is ``../shared/data`` of the *working*
    directory, not of site-packages."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path / "dist"), str(ROOT)], check=True,
                   capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("winit_jax-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "winit_jax/py.typed" in names and "winit_jax/lab/cli.py" in names
    assert not any(n.startswith("tests/") for n in names)
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(site), str(wheel)], check=True, capture_output=True)
    work = tmp_path / "project" / "work"
    (tmp_path / "project" / "shared" / "data").mkdir(parents=True)
    work.mkdir()
    code = ("import winit_jax, winit_jax.lab.experiment as e; "
            "print(winit_jax.__file__); print(e.default_data_dir().resolve())")
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], cwd=work, env=env,
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0].startswith(str(site))  # the installed copy, not the checkout
    assert out[1] == str((tmp_path / "project" / "shared" / "data").resolve())


if __name__ == "__main__":  # python -m tests.test_layout: the library's import graph
    for module, imported in sorted(import_graph().items()):
        print(f"{module} -> {', '.join(sorted(imported)) or '-'}")
