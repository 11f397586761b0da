"""Load a model folder's network without importing segmentation-models-pytorch or re-tracing it.

Loading through SMP costs about 3 CPU-s per process: importing SMP pulls in timm,
torchvision and torch._dynamo, and folding BatchNorm traces the network with torch.fx
(BENCHMARKS.md). Every CLI call is a fresh process, so the first load of a model traces it
once and stores the folded network's *structure* (not its weights) as a small JSON file:

- the fx graph of the BatchNorm-folded network, node by node;
- each layer the graph calls, as a standard ``torch.nn`` class and its constructor arguments;
- which convolution each BatchNorm was folded into.

Later loads rebuild the layers from that description, load the model's own safetensors
weights into them, fold each BatchNorm with torch's own ``fuse_conv_bn_weights`` (the arithmetic of
``torch.fx.experimental.optimization.fuse``) and assemble an ``fx.GraphModule``: the
same network, computing the same values, with torch alone.

The description is keyed by the SHA-256 of ``config.json`` (which fixes the architecture),
the SMP and torch versions and this format's version, so a changed model configuration or
library never reuses a stale one; weights are checked key by key and shape by shape when they
are loaded. A network that cannot be described (a layer outside ``torch.nn``, a function
outside torch, an argument JSON cannot hold) is simply not cached. The cache lives in
``$BRATSEG_CACHE_DIR`` (default ``$XDG_CACHE_HOME/bratseg``, else ``~/.cache/bratseg``);
an unwritable cache only costs the fast path.

Example:
    >>> from bratseg.inference.network_cache import load_folded_network
    >>> from bratseg.inference.predictor import SHIPPED_MODEL
    >>> network = load_folded_network(SHIPPED_MODEL)   # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import os
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import fx, nn

FORMAT_VERSION = 1
# Functions a graph may call: torch's, operator's and getattr (shape access). Anything else
# keeps the network off the cache.
_FUNCTION_MODULES = ("torch", "torch.nn.functional", "_operator", "operator", "builtins")
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


class NotDescribable(Exception):
    """The network holds something the JSON description cannot carry."""


def cache_dir() -> Path:
    """Where network descriptions are stored (see the module docstring)."""
    explicit = os.environ.get("BRATSEG_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "bratseg"


def description_key(model_dir: Path) -> str:
    """The cache key of a model folder's network description."""
    digest = hashlib.sha256((model_dir / "config.json").read_bytes())
    for part in (str(FORMAT_VERSION), _version("segmentation-models-pytorch"), torch.__version__):
        digest.update(b"\0" + part.encode())
    return digest.hexdigest()[:32]


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "absent"


def load_folded_network(model_dir: str | Path) -> nn.Module | None:
    """The BatchNorm-folded network of ``model_dir`` rebuilt from its cached description, in
    eval mode and float32; None when there is no usable description (the caller then loads
    through SMP and calls :func:`store_description`)."""
    model_dir = Path(model_dir)
    try:
        path = cache_dir() / "networks" / f"{description_key(model_dir)}.json"
        description = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    try:
        return build_network(description, model_dir / "model.safetensors")
    except Exception:  # a stale or damaged description: fall back to SMP, which reports real errors
        return None


def store_description(model_dir: str | Path, model: nn.Module) -> fx.GraphModule | None:
    """Trace ``model`` (eval mode), fold its BatchNorms as torch.fx's ``fuse`` does, store the
    folded network's description in the cache (atomically) and return the folded network.
    None when fx cannot trace the network; a network that cannot be described is returned
    folded but not stored."""
    from torch.fx.experimental.optimization import fuse

    try:
        traced = fx.symbolic_trace(model)
        folded = fuse(traced, no_trace=True)
    except Exception:  # tracing failures have no common type
        return None
    try:
        description = describe(model, traced, folded)
        _write_atomically(cache_dir() / "networks" / f"{description_key(Path(model_dir))}.json", description)
    except (NotDescribable, OSError):
        pass
    return folded


def describe(model: nn.Module, traced: fx.GraphModule, folded: fx.GraphModule) -> dict:
    """The JSON-ready description of ``folded`` (the fx-fused ``traced`` trace of ``model``)."""
    modules = dict(model.named_modules())
    kept = {n.name for n in folded.graph.nodes}
    folds = {
        n.args[0].target: n.target
        for n in traced.graph.nodes
        if n.op == "call_module" and isinstance(modules[n.target], _BATCHNORMS) and n.name not in kept
    }
    called = [n.target for n in folded.graph.nodes if n.op == "call_module"]
    layers = {name: _layer_spec(modules[name]) for name in [*called, *folds.values()]}
    nodes = []
    for n in folded.graph.nodes:
        if n.op == "get_attr":
            raise NotDescribable("get_attr nodes hold tensors outside the layers")
        target = _function_name(n.target) if n.op == "call_function" else n.target
        nodes.append(
            {"name": n.name, "op": n.op, "target": target, "args": _encode(n.args), "kwargs": _encode(n.kwargs)}
        )
    return {
        "format": FORMAT_VERSION,
        "layers": layers,
        "folds": folds,
        "nodes": nodes,
        "state_dict_keys": sorted(model.state_dict()),
    }


def build_network(description: dict, weights: Path) -> fx.GraphModule:
    """Rebuild the folded network from ``description`` and the safetensors ``weights``."""
    from safetensors.torch import load_file
    from torch.nn.utils.fusion import fuse_conv_bn_weights

    if description.get("format") != FORMAT_VERSION:
        raise NotDescribable(f"description format {description.get('format')}")
    state = load_file(str(weights))
    if sorted(state) != description["state_dict_keys"]:
        raise NotDescribable("the weights' keys differ from the described network's")
    layers: dict[str, nn.Module] = {}
    for name, spec in description["layers"].items():
        layer = _build_layer(spec)
        prefix = f"{name}."
        own = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        layer.load_state_dict(own, strict=True, assign=True)
        layers[name] = layer.float().eval()
    for conv_name, bn_name in description["folds"].items():
        # fuse_conv_bn_eval's arithmetic, in place: its deepcopy of each layer is not needed here.
        conv, bn = layers[conv_name], layers.pop(bn_name)
        conv.weight, conv.bias = fuse_conv_bn_weights(
            conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias
        )
    graph = fx.Graph()
    env: dict[str, fx.Node] = {}
    for node in description["nodes"]:
        target = _resolve_function(node["target"]) if node["op"] == "call_function" else node["target"]
        args, kwargs = _decode(node["args"], env), _decode(node["kwargs"], env)
        env[node["name"]] = graph.create_node(node["op"], target, args, kwargs, name=node["name"])
    graph.lint()
    return fx.GraphModule(layers, graph).eval()


# --------------------------------------------------------------------------------------------
# Layers: a torch.nn class and the constructor arguments read back from its attributes.
# --------------------------------------------------------------------------------------------


def _layer_spec(layer: nn.Module) -> dict:
    cls = type(layer)
    if not cls.__module__.startswith("torch.nn.modules.") or getattr(nn, cls.__name__, None) is not cls:
        raise NotDescribable(f"{cls.__module__}.{cls.__name__} is not a torch.nn layer")
    kwargs = {}
    for p in inspect.signature(cls.__init__).parameters.values():
        if p.name in ("self", "device", "dtype") or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if not hasattr(layer, p.name):
            raise NotDescribable(f"{cls.__name__} keeps no attribute {p.name}")
        value = getattr(layer, p.name)
        if p.name == "bias" and (value is None or isinstance(value, torch.Tensor)):
            value = value is not None
        kwargs[p.name] = _encode(value)
    spec = {"class": cls.__name__, "kwargs": kwargs}
    # Read back what was read off: a layer whose attributes do not give back its constructor
    # arguments (repr or parameter shapes differ) is not described.
    rebuilt = _build_layer(spec)
    if repr(rebuilt) != repr(layer) or _shapes(rebuilt) != _shapes(layer):
        raise NotDescribable(f"{cls.__name__} does not round-trip through its attributes")
    return spec


def _shapes(layer: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in layer.state_dict().items()}


def _build_layer(spec: dict) -> nn.Module:
    cls = getattr(nn, spec["class"])
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise NotDescribable(f"{spec['class']} is not a torch.nn layer")
    kwargs = {k: _decode(v, {}) for k, v in spec["kwargs"].items()}
    if "device" in inspect.signature(cls.__init__).parameters:
        # On the meta device: no memory and no random initialisation (the weights are
        # loaded next, with assign=True, replacing the meta tensors).
        kwargs["device"] = "meta"
    return cls(**kwargs)


# --------------------------------------------------------------------------------------------
# Values: JSON with tagged tuples, slices, graph nodes and dtypes.
# --------------------------------------------------------------------------------------------


def _encode(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, fx.Node):
        return {"node": value.name}
    if isinstance(value, tuple):
        return {"tuple": [_encode(v) for v in value]}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"dict": {k: _encode(v) for k, v in value.items()}}
    if isinstance(value, slice):
        return {"slice": [_encode(value.start), _encode(value.stop), _encode(value.step)]}
    if isinstance(value, torch.dtype):
        return {"dtype": str(value).removeprefix("torch.")}
    raise NotDescribable(f"cannot describe a {type(value).__name__} argument")


def _decode(value: Any, env: dict[str, fx.Node]) -> Any:
    if isinstance(value, list):
        return [_decode(v, env) for v in value]
    if not isinstance(value, dict):
        return value
    (tag, inner), *rest = value.items()
    if rest:
        raise NotDescribable(f"malformed value {value!r}")
    if tag == "node":
        return env[inner]
    if tag == "tuple":
        return tuple(_decode(v, env) for v in inner)
    if tag == "dict":
        return {k: _decode(v, env) for k, v in inner.items()}
    if tag == "slice":
        return slice(*(_decode(v, env) for v in inner))
    if tag == "dtype":
        dtype = getattr(torch, inner)
        if not isinstance(dtype, torch.dtype):
            raise NotDescribable(f"{inner} is not a torch dtype")
        return dtype
    raise NotDescribable(f"unknown tag {tag!r}")


def _function_name(fn: Any) -> str:
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    name = f"{module}:{qualname}"
    if module not in _FUNCTION_MODULES or qualname is None:
        raise NotDescribable(f"function {name} is outside torch and operator")
    try:
        found = _resolve_function(name)
    except (NotDescribable, ImportError, AttributeError):
        found = None
    if found is not fn:
        # e.g. torch.cat reports the qualified name of its C binding: try the public name.
        public = f"{module}:{getattr(fn, '__name__', '')}"
        if _safe_resolve(public) is fn:
            return public
        raise NotDescribable(f"function {name} cannot be found again by name")
    return name


def _safe_resolve(name: str) -> Any:
    try:
        return _resolve_function(name)
    except (NotDescribable, ImportError, AttributeError):
        return None


def _resolve_function(name: str) -> Any:
    module, _, qualname = name.partition(":")
    if module not in _FUNCTION_MODULES:
        raise NotDescribable(f"function {name} is outside torch and operator")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise NotDescribable(f"{name} is not callable")
    return obj


def _write_atomically(path: Path, description: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(description, fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
