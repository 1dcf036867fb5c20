"""The sentence-transformers folder layout of a chain of modules: modules.json names each module's type and folder;
a Router's router_config.json does the same for the modules of its routes.

Written with the classic type names (`sentence_transformers.models.<Type>`), which every release from 2.x to 6.x
resolves; read by the type's class name, whichever module path a release wrote.
"""

import ast
from pathlib import Path

from torch import nn

from embedlab.errors import ConfigError
from embedlab.modeling.model_files import MODULES_FILE, read_json
from embedlab.modeling.modules import (
    Backbone,
    Dense,
    Normalize,
    Pooling,
    Router,
    StaticEmbedding,
)
from embedlab.run_folder import write_json

ROUTER_CONFIG = "router_config.json"
TYPE_NAMES = {Backbone: "Transformer", Pooling: "Pooling", Dense: "Dense", Normalize: "Normalize",
              StaticEmbedding: "StaticEmbedding", Router: "Router"}
# Input modules sit in the folder they are given, as sentence-transformers keeps them; the others in subfolders.
IN_PLACE = (Backbone, StaticEmbedding, Router)


def has_layout(folder: Path) -> bool:
    return (folder / MODULES_FILE).is_file()


def read_modules(folder: Path, trust_remote_code: bool = False) -> list[nn.Module]:
    """The chain of a sentence-transformers folder; a module type not known here, or a modules.json that is not a
    module list, stops with one line naming it."""
    modules_file = folder / MODULES_FILE
    entries = read_json(modules_file, list)
    if not all(isinstance(module, dict) and isinstance(module.get("type"), str) for module in entries):
        raise ConfigError(f"{modules_file}: not a sentence-transformers module list (a list of objects with a type)")
    for module in entries:
        _check_inside(module.get("path", ""), modules_file)
    return [_read_module(module["type"], folder / module.get("path", ""), modules_file, trust_remote_code)
            for module in entries]


def write_modules(folder: Path, modules: list[nn.Module], merge_adapters: bool = False) -> None:
    entries = []
    for index, module in enumerate(modules):
        name = TYPE_NAMES[type(module)]
        path = "" if isinstance(module, IN_PLACE) else f"{index}_{name}"
        _write_module(module, folder / path, merge_adapters)
        entries.append({"idx": index, "name": str(index), "path": path, "type": f"sentence_transformers.models.{name}"})
    write_json(folder / MODULES_FILE, entries)


def _read_module(type_name: str, folder: Path, named_in: Path, trust_remote_code: bool) -> nn.Module:
    kind = type_name.rsplit(".", 1)[-1]
    if kind == "Transformer":
        return Backbone.load(str(folder), trust_remote_code)
    if kind in ("Router", "Asym"):
        return _read_router(folder, trust_remote_code)
    readers = {"Pooling": Pooling.load, "Dense": Dense.load, "Normalize": Normalize.load,
               "StaticEmbedding": StaticEmbedding.load}
    if kind not in readers:
        raise ConfigError(f"{named_in}: module type '{type_name}' is not supported (supported: "
                          f"{', '.join(TYPE_NAMES.values())})")
    return readers[kind](folder)


def _write_module(module: nn.Module, folder: Path, merge_adapters: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(module, Backbone):
        module.save(folder, merge_adapter=merge_adapters)
    elif isinstance(module, Router):
        _write_router(module, folder, merge_adapters)
    else:
        module.save(folder)


def _read_router(folder: Path, trust_remote_code: bool) -> Router:
    config = read_json(folder / ROUTER_CONFIG)
    for module_id in config["types"]:
        _check_inside(module_id, folder / ROUTER_CONFIG)
    # One module may serve several routes; it is read once and shared, as it was saved.
    modules = {module_id: _read_module(type_name, folder / module_id, folder / ROUTER_CONFIG, trust_remote_code)
               for module_id, type_name in config["types"].items()}
    parameters = config.get("parameters", {})
    mappings = {ast.literal_eval(key): route for key, route in (parameters.get("route_mappings") or {}).items()}
    return Router({route: [modules[module_id] for module_id in ids] for route, ids in config["structure"].items()},
                  default_route=parameters.get("default_route"), route_mappings=mappings,
                  allow_empty_key=parameters.get("allow_empty_key", True))


def _check_inside(module_folder: str, named_in: Path) -> None:
    if Path(module_folder).is_absolute() or ".." in Path(module_folder).parts:
        raise ConfigError(f"{named_in}: module folder '{module_folder}' lies outside the model")


def _write_router(router: Router, folder: Path, merge_adapters: bool) -> None:
    ids: dict[int, str] = {}
    types, structure = {}, {}
    for route, modules in router.routes.items():
        structure[route] = []
        for index, module in enumerate(modules):
            if id(module) not in ids:
                name = TYPE_NAMES[type(module)]
                ids[id(module)] = f"{route}_{index}_{name}"
                types[ids[id(module)]] = f"sentence_transformers.models.{name}"
                _write_module(module, folder / ids[id(module)], merge_adapters)
            structure[route].append(ids[id(module)])
    write_json(folder / ROUTER_CONFIG, {"types": types, "structure": structure, "parameters": {
        "default_route": router.default_route, "allow_empty_key": router.allow_empty_key,
        "route_mappings": {str(key): route for key, route in router.route_mappings.items()}}})
