"""The import layering of docs/ARCHITECTURE.md, read from the source (every import, at the top of a
module or inside a function): a layer imports only the layers below it."""
import ast
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# What each part of the project may import from the project (besides itself), as docs/ARCHITECTURE.md
# states it. A sub-package listed here is held to its own line instead of its package's.
MAY_IMPORT = {
    "common": set(),
    "dassl_compat": {"common"},
    "configs": {"common", "dassl_compat"},
    "clip_models": {"common", "dassl_compat"},
    "datasets": {"common", "dassl_compat"},
    "trainers": {"common", "dassl_compat", "configs", "clip_models", "datasets"},
    "trainers.attacks": {"common", "dassl_compat"},
    "train": {"common", "dassl_compat", "configs", "datasets", "trainers"},
    "scripts": {"common", "dassl_compat", "configs", "clip_models", "datasets", "trainers", "train"},
    "benchmarks": {"common", "dassl_compat", "configs", "clip_models", "datasets", "trainers", "train", "scripts"},
}
TOP_LEVEL = {name.split(".")[0] for name in MAY_IMPORT}


def module_name(path):
    relative = os.path.relpath(path, REPO)[:-len(".py")].split(os.sep)
    return ".".join(relative[:-1] if relative[-1] == "__init__" else relative)


def imported_modules(path):
    """Absolute names of the modules ``path`` imports (relative imports resolved)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    package = module_name(path).split(".")
    if not path.endswith("__init__.py"):
        package = package[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            prefix = ".".join(base + ([node.module] if node.module else []))
            yield prefix
            if not node.module:  # from . import x: x is a module of the package
                yield from (f"{prefix}.{alias.name}" for alias in node.names)


def layer_of(module):
    """The most specific entry of MAY_IMPORT that ``module`` falls under."""
    parts = module.split(".")
    for depth in range(len(parts), 0, -1):
        if ".".join(parts[:depth]) in MAY_IMPORT:
            return ".".join(parts[:depth])
    return None


def project_sources():
    for top in TOP_LEVEL:
        single = os.path.join(REPO, f"{top}.py")
        if os.path.isfile(single):
            yield single
        for folder, _, files in os.walk(os.path.join(REPO, top)):
            yield from (os.path.join(folder, name) for name in files if name.endswith(".py"))


def violations():
    found = []
    for path in project_sources():
        layer = layer_of(module_name(path))
        for module in imported_modules(path):
            target = layer_of(module)
            if target is None or module.split(".")[0] not in TOP_LEVEL:
                continue  # not the project's
            if target == layer or target.startswith(layer + "."):
                continue  # itself, or a part of itself
            if target not in MAY_IMPORT[layer] and target.split(".")[0] not in MAY_IMPORT[layer]:
                found.append(f"{os.path.relpath(path, REPO)} ({layer}) imports {module}")
    return found


def test_every_layer_imports_only_the_layers_below_it():
    assert violations() == []


@pytest.mark.parametrize("source, module, layer", [
    ("datasets/folder.py", "clip_models.demo", "datasets"),  # the recipe that used to live in clip_models
    ("trainers/attacks/patch.py", "trainers.base", "trainers.attacks"),
    ("clip_models/base.py", "trainers", "clip_models"),
])
def test_the_scan_catches_an_import_across_the_layering(source, module, layer, monkeypatch):
    path = os.path.join(REPO, source)
    original = imported_modules

    def with_one_more(scanned):
        yield from original(scanned)
        if scanned == path:
            yield module

    monkeypatch.setitem(globals(), "imported_modules", with_one_more)
    assert violations() == [f"{source} ({layer}) imports {module}"]


def test_relative_imports_are_resolved_to_their_package():
    names = set(imported_modules(os.path.join(REPO, "trainers", "baple.py")))
    assert {"trainers.attacks", "trainers.coop", "trainers.metrics", "common.errors"} <= names
    assert "datasets.prepare.common" in set(imported_modules(os.path.join(REPO, "datasets", "prepare", "covid.py")))
