"""The method contract and the code structure: every method declares what the loop, the CLI and the report
read; the package has no import circles; every stage's deps cover the code it imports."""
import ast
import dataclasses
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from facegan.config import Params, build
from facegan.methods import METHODS, REGISTRY, GeneratorMethod, TransformMethod, method_class

SRC = REPO / "src"
PACKAGE = SRC / "facegan"
# functions whose imports run only at inference or evaluation time: a train stage does not import them
NOT_IN_TRAINING = ("evaluate", "transform", "frame", "judge", "sample_sheet")


def module_file(module: str) -> Path | None:
    path = SRC.joinpath(*module.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def facegan_imports(path: Path, skip_functions: tuple[str, ...] = ()) -> set[str]:
    """The facegan modules a file imports, at module level and inside functions (except in functions whose
    name starts with one of `skip_functions`). `from facegan.a import b` names facegan.a.b where b is a module."""
    found = set()

    def visit(node, skipping: bool):
        for child in ast.iter_child_nodes(node):
            inner = skipping
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                inner = skipping or child.name.startswith(skip_functions) if skip_functions else skipping
            if isinstance(child, ast.If) and isinstance(child.test, ast.Name) and child.test.id == "TYPE_CHECKING":
                continue   # annotations only, never run
            if not inner and isinstance(child, ast.Import):
                found.update(a.name for a in child.names if a.name.split(".")[0] == "facegan")
            if not inner and isinstance(child, ast.ImportFrom) and child.module and child.level == 0 \
                    and child.module.split(".")[0] == "facegan":
                for alias in child.names:
                    sub = f"{child.module}.{alias.name}"
                    found.add(sub if module_file(sub) is not None else child.module)
            visit(child, inner)

    visit(ast.parse(path.read_text()), False)
    return found


def with_packages(module: str) -> set[str]:
    """Importing a.b.c runs a/__init__, a/b/__init__ and a/b/c."""
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)}


def reachable(entry: Path, extra: set[str] = frozenset(), skip_functions: tuple[str, ...] = ()) -> set[Path]:
    """Every facegan file a stage's entry point runs, transitively (plus `extra` modules it loads by name)."""
    files, seen = {entry}, set()
    todo = set(facegan_imports(entry, skip_functions)) | set(extra)
    while todo:
        module = todo.pop()
        for name in with_packages(module):
            if name in seen:
                continue
            seen.add(name)
            path = module_file(name)
            if path is None:
                raise AssertionError(f"{entry.name} imports {name}, which is not a module of the package")
            files.add(path)
            todo |= facegan_imports(path, skip_functions)
    return files


def stages() -> dict[str, dict]:
    """dvc.yaml's stages with foreach entries expanded (${key} and ${item.x} filled in)."""
    raw = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    out = {}
    for name, entry in raw.items():
        if "foreach" not in entry:
            out[name] = entry
            continue
        for key, item in entry["foreach"].items():
            text = yaml.safe_dump(entry["do"]).replace("${key}", key)
            for field, value in item.items():
                text = text.replace("${item." + field + "}", str(value))
            out[f"{name}@{key}"] = yaml.safe_load(text)
    return out


def test_no_import_circles():
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
        graph[module] = {m for m in facegan_imports(path) if m != module}
    state, stack = {}, []

    def visit(module):
        state[module] = "open"
        stack.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                cycle = stack[stack.index(target):] + [target]
                pytest.fail("import circle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        stack.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module)


def test_the_walker_sees_imports_inside_functions(tmp_path):
    source = tmp_path / "probe.py"
    source.write_text("import os\n\ndef f():\n    from facegan.metrics import fid\n\n"
                      "def evaluate():\n    from facegan.report import cell\n")
    assert facegan_imports(source) == {"facegan.metrics.fid", "facegan.report"}
    assert facegan_imports(source, ("evaluate",)) == {"facegan.metrics.fid"}


@pytest.mark.parametrize("stage", sorted(stages()))
def test_stage_deps_cover_the_code_it_imports(stage):
    entry = stages()[stage]
    script = REPO / entry["cmd"].split()[1]
    deps = [REPO / str(d) for d in entry.get("deps", [])]
    kind, _, method = stage.partition("@")
    extra = {METHODS[method].partition(":")[0]} if method else set()
    skip = NOT_IN_TRAINING if kind == "train" else ()
    uncovered = sorted(str(p.relative_to(REPO)) for p in reachable(script, extra, skip)
                       if not any(p == d or d in p.parents for d in deps))
    assert not uncovered, f"{stage} imports code outside its deps: {uncovered}"


def test_each_method_declares_the_contract():
    params = build(Params, {})
    plots = {name: spec for plot in yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"]
             for name, spec in plot.items()}
    for name in METHODS:
        cls = method_class(name)
        assert cls.name == name and issubclass(cls, (GeneratorMethod, TransformMethod)), name
        assert cls.headline and all(m.better in ("higher", "lower", "context") for m in cls.headline), name
        method = cls.build(params, 64 if name != "tpgan" else 128)
        (declared,) = plots[f"{name}_losses"]["y"].values()
        assert declared == list(method.losses), f"dvc.yaml plots {name}_losses must list {list(method.losses)}"


def test_evaluation_keys_live_apart_from_training():
    """Nothing that only judges a method is in train.<method> (it would enter the checkpoint's fingerprint)."""
    params = build(Params, {})
    for name in METHODS:
        train_keys = {f.name for f in dataclasses.fields(getattr(params.train, name))}
        assert not {k for k in train_keys if k.startswith(("eval_", "invert_")) or k == "gallery_flash"}, name
        assert dataclasses.is_dataclass(getattr(params.evaluate, name)), name
    evaluate = stages()["evaluate@fader"]["params"]
    assert "evaluate.fader" in evaluate and "eval" in evaluate


def test_stages_see_only_the_params_they_declare(tmp_path, monkeypatch):
    from facegan.config import ConfigError
    from facegan.stage import GuardedParams, declared_params

    assert declared_params("evaluate@cgan", REPO / "dvc.yaml") == ["eval", "evaluate.cgan", "align.eye_distance",
                                                                   "align.eye_y", "train.common.device"]
    guarded = GuardedParams(build(Params, {}), declared_params("evaluate@cgan", REPO / "dvc.yaml"), "evaluate@cgan")
    assert guarded.align.eye_y == 0.38 and guarded.evaluate.cgan.grid_z == 8 and guarded.train.common.device == "auto"
    with pytest.raises(ConfigError, match="reads params key 'align.size', which dvc.yaml does not declare"):
        guarded.align.size
    with pytest.raises(ConfigError, match="'train.cgan'"):
        guarded.train.cgan


def test_registry_imports_a_method_only_when_asked(tmp_path):
    import subprocess
    import sys

    code = ("import sys; from facegan.methods import method_class; method_class('cgan'); "
            "print(sorted(m for m in sys.modules if m.startswith('facegan.methods.')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert eval(done.stdout) == ["facegan.methods.base", "facegan.methods.cgan", "facegan.methods.nets"]
    assert list(REGISTRY) == list(METHODS)


def test_pyproject_declares_the_runtime_requirements():
    """`pip install .` alone must give a working facegan: pyproject's dependencies are requirements.txt's pins."""
    import tomllib

    pins = [line.split("#")[0].strip() for line in (REPO / "requirements.txt").read_text().splitlines()]
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert declared == [pin for pin in pins if pin]
