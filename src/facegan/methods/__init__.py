"""Method registry: one module per method, found by name and imported when first asked for (so a
stage imports only the method it runs: train@cgan never loads geogan.py)."""
from __future__ import annotations

import importlib
from collections.abc import Mapping

from facegan.methods.base import GeneratorMethod, Method, Metric, TransformMethod

# name -> "module:class"; a new method is one line here, its module, its params and its dvc.yaml items
METHODS = {
    "cgan": "facegan.methods.cgan:CGAN",
    "beholder": "facegan.methods.beholder:BeholderGAN",
    "fader": "facegan.methods.fader:FaderNetwork",
    "dtn": "facegan.methods.dtn:DomainTransferNetwork",
    "tpgan": "facegan.methods.tpgan:TPGAN",
    "geogan": "facegan.methods.geogan:GeoGAN",
}


class Registry(Mapping):
    """{name: Method subclass}, each module imported on first access."""

    def __init__(self, paths: dict[str, str]):
        self.paths = paths

    def __getitem__(self, name: str) -> type[Method]:
        module, _, cls = self.paths[name].partition(":")
        return getattr(importlib.import_module(module), cls)

    def __iter__(self):
        return iter(self.paths)

    def __len__(self) -> int:
        return len(self.paths)


REGISTRY = Registry(METHODS)

__all__ = ["METHODS", "REGISTRY", "GeneratorMethod", "Method", "Metric", "TransformMethod", "build_method",
           "method_class"]


def method_class(name: str) -> type[Method]:
    if name not in METHODS:
        raise KeyError(f"unknown method {name!r}; valid methods: {', '.join(sorted(METHODS))}")
    return REGISTRY[name]


def build_method(name: str, params, size: int = 64) -> Method:
    """The method built from its `train.<name>` section and `train.common`."""
    return method_class(name).build(params, size)
