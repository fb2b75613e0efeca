"""The package's rooms and their order: no module imports from a room above its own.

Every product module (``utils/``, ``convnets/``, ``mlp/``, ``loaders/``, ``run_experiment.py``)
belongs to exactly one room; a module imports only from its own room or from rooms on a lower
level. The walk reads every import statement, those inside functions included, so a lazy
import cannot hide an upward dependency.
"""
import ast
import importlib.util
from pathlib import Path

import pytest

from launcher_support import PROJECT

# Bottom to top; each level's rooms, a room being one package (or module) or a few that form
# one: utils.rna, the thesis's primitives, is the layer's room, kept where a thesis reader
# looks for it. Rooms on one level may not import each other.
LEVELS = [
    [("utils.support",)],            # names, safe files, the device mesh, process settings
    [("utils.nn", "utils.rna")],     # the hand-written layer
    [("mlp",)],                      # hidden layers, logistic regression, the MLP
    [("convnets",)],                 # conv layers, residual blocks, networks (mlp's head on top)
    [("utils.models",)],             # networks by name, model and checkpoint files
    [("utils.training",)],           # the compiled steps and what they compute
    [("loaders",)],                  # the data's way (its preview draws training's augmentation)
    [("utils.evaluation",)],         # a saved model on test images, test figures
    [("utils.experiments",)],        # a run's life
    [("utils",), ("utils.evaluate",), ("utils.predict",), ("utils.export",),
     ("utils.benchmark",), ("utils.sweep",), ("utils.runs",),
     ("run_experiment",)],           # the apps, and the package's face
    [("utils.gpu_check",)],          # a backend's check: runs the launcher and the predict app
]
ROOM = {prefix: room for rooms in LEVELS for room in rooms for prefix in room}
LEVEL = {room: level for level, rooms in enumerate(LEVELS) for room in rooms}

# What the rooms replaced: these import paths must be gone, not kept as shims.
OLD_MODULES = ["names", "safe_files", "parallel", "host_tuning", "layer", "network", "losses",
               "precision", "cpu_kernels", "cpu_batch_norm", "networks", "model_io",
               "objective", "optim", "online_augmentation", "mixing", "views", "inference",
               "experiment", "methodology", "run_setup", "run_end", "run_folder", "keywords",
               "recipes", "setting_ranges", "signals", "console", "records", "registry"]


def product_modules() -> dict[str, Path]:
    found = {"run_experiment": PROJECT / "run_experiment.py"}
    for top in ("utils", "convnets", "mlp", "loaders"):
        for path in (PROJECT / top).rglob("*.py"):
            name = ".".join(path.relative_to(PROJECT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def room_of(module: str) -> tuple:
    prefixes = [prefix for prefix in ROOM if module == prefix or module.startswith(prefix + ".")]
    if not prefixes:
        raise AssertionError(f"{module} is in no room: add it to a room of LEVELS")
    return ROOM[max(prefixes, key=len)]


def imports_of(name: str, path: Path, modules: dict) -> set[str]:
    """The product modules ``name`` imports (``from utils import rna`` counts as utils.rna)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            submodules = {f"{base}.{alias.name}" for alias in node.names} & set(modules)
            found |= submodules or {base}
    return {module for module in found if module in modules and module != name}


def test_every_module_imports_only_its_own_room_or_rooms_beneath_it():
    modules = product_modules()
    upward = []
    for name, path in sorted(modules.items()):
        room = room_of(name)
        for imported in sorted(imports_of(name, path, modules)):
            other = room_of(imported)
            if other != room and LEVEL[other] >= LEVEL[room]:
                upward.append(f"{name} ({room[0]}, level {LEVEL[room]}) imports {imported} "
                              f"({other[0]}, level {LEVEL[other]})")
    assert not upward, "\n".join(upward)


def test_the_walk_sees_imports_inside_functions_and_rooms_are_checked():
    # The walk itself: a lazy import of a module above is seen, and a module outside every
    # room is refused by name.
    modules = product_modules()
    lazy = [name for name, path in modules.items()
            if any(isinstance(node, (ast.Import, ast.ImportFrom)) and node.col_offset > 0
                   for node in ast.walk(ast.parse(path.read_text())))]
    assert "run_experiment" in lazy  # imports utils.experiments.signals inside a function
    assert "utils.experiments.signals" in imports_of("run_experiment",
                                                     modules["run_experiment"], modules)
    with pytest.raises(AssertionError, match="tests.tiny_net is in no room"):
        room_of("tests.tiny_net")
    assert room_of("utils.rna") == room_of("utils.nn.layer") == ("utils.nn", "utils.rna")
    assert room_of("utils.predict.faces") == ("utils.predict",)


def test_no_import_cycle_between_modules():
    modules = product_modules()
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    state = {}

    def visit(name, trail):
        state[name] = "open"
        for imported in graph[name]:
            if state.get(imported) == "open":
                raise AssertionError("import cycle: " + " -> ".join(trail + [imported]))
            if imported not in state:
                visit(imported, trail + [imported])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


@pytest.mark.parametrize("old", OLD_MODULES)
def test_the_old_flat_import_paths_are_gone(old):
    assert importlib.util.find_spec(f"utils.{old}") is None, f"utils.{old} still importable"
