"""The package's imports run downward only, in the layer order below, and no module imports itself round a loop.

Each layer may import the layers before it; within a layer, a module may import its own package's modules.
"""

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src"
# Lowest first: what each folder may import is everything above it in this list.
LAYERS = [
    ["embedlab", "embedlab.errors"],
    ["embedlab.config", "embedlab.config_checks", "embedlab.distributed", "embedlab.redaction", "embedlab.run_folder"],
    ["embedlab.modeling"],
    ["embedlab.losses"],
    ["embedlab.data"],
    ["embedlab.evaluation"],
    ["embedlab.objectives"],
    ["embedlab.assembly"],
    ["embedlab.recipes"],
    ["embedlab.resume"],
    ["embedlab.cli", "embedlab.sweeps"],
    ["embedlab.train", "hydra_plugins"],
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SOURCE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def home(module: str) -> tuple[int, str]:
    """(layer, the layer entry the module belongs to): the longest entry that is the module or a package of it."""
    matches = [(len(entry), index, entry) for index, layer in enumerate(LAYERS) for entry in layer
               if module == entry or module.startswith(entry + ".")]
    assert matches, f"{module} is in no layer: add it to LAYERS"
    _, index, entry = max(matches)
    return index, entry


def project_imports(path: Path) -> set[str]:
    """The project modules `path` imports, anywhere in the file (an import inside a function counts too)."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(name for name in names if name.split(".")[0] in ("embedlab", "hydra_plugins"))
    return found


def modules() -> dict[str, set[str]]:
    """Each project module and the project modules it imports (names that are attributes map to their module)."""
    paths = {module_name(path): path for path in SOURCE.rglob("*.py")}
    graph = {}
    for name, path in paths.items():
        imported = set()
        for target in project_imports(path):
            while target not in paths and "." in target:
                target = target.rpartition(".")[0]
            if target in paths and target != name:
                imported.add(target)
        graph[name] = imported
    return graph


GRAPH = modules()


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_run_downward(module):
    layer, entry = home(module)
    for target in sorted(GRAPH[module]):
        target_layer, target_entry = home(target)
        assert target_layer < layer or target_entry == entry, (
            f"{module} (layer {layer}) imports {target} (layer {target_layer}): upward or sideways")


def test_no_import_loops():
    visiting, done = [], set()

    def visit(module):
        if module in done:
            return
        assert module not in visiting, "import loop: " + " -> ".join(visiting[visiting.index(module):] + [module])
        visiting.append(module)
        for target in sorted(GRAPH[module]):
            visit(target)
        visiting.pop()
        done.add(module)

    for module in sorted(GRAPH):
        visit(module)


def test_the_walk_sees_every_import_form(tmp_path):
    # A check that sees no imports would pass anything: the walk must find absolute, relative and local imports.
    assert "embedlab.modeling.encoder" in GRAPH["embedlab.objectives.bi_encoder"]
    assert "embedlab.assembly" in GRAPH["embedlab.train"]
    assert "embedlab.errors" in GRAPH["embedlab.modeling.model_files"]
    assert "embedlab" in GRAPH["embedlab.modeling.model_files"]  # `from embedlab import __version__` in a function
    assert home("embedlab.recipes.stages") == (8, "embedlab.recipes")
