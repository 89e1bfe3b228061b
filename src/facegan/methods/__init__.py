"""Method registry: one module per method, found by name."""
from __future__ import annotations

from facegan.methods.base import Method
from facegan.methods.beholder import BeholderGAN
from facegan.methods.cgan import CGAN
from facegan.methods.dtn import DomainTransferNetwork
from facegan.methods.fader import FaderNetwork
from facegan.methods.geogan import GeoGAN
from facegan.methods.tpgan import TPGAN

REGISTRY: dict[str, type[Method]] = {cls.name: cls for cls in (CGAN, BeholderGAN, FaderNetwork, DomainTransferNetwork, TPGAN, GeoGAN)}


def method_class(name: str) -> type[Method]:
    if name not in REGISTRY:
        raise KeyError(f"unknown method {name!r}; valid methods: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def build_method(name: str, params, size: int = 64) -> Method:
    """The method built from its `train.<name>` section and `train.common`."""
    cls = method_class(name)
    return cls(getattr(params.train, name), params.train.common, size)
