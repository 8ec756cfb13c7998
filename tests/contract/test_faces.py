"""The three faces cannot drift apart: same operations, parameter names and defaults.

Checked by introspection against each other, against the one options object
per queue kind, and against the real RocksQ 0.3.0 (its PyO3 classes carry
their signatures), so that a drop-in import keeps every call valid.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import pytest

import rocksq_aio
from rocksq_aio import blocking, nonblocking
from rocksq_aio._options import FifoOptions, MpmcOptions

rocksq = pytest.importorskip("rocksq")
rocksq_blocking = pytest.importorskip("rocksq.blocking")
rocksq_nonblocking = pytest.importorskip("rocksq.nonblocking")

FACES = {
    "async": {"fifo": rocksq_aio.PersistentQueue, "mpmc": rocksq_aio.MpmcQueue},
    "blocking": {"fifo": blocking.PersistentQueueWithCapacity, "mpmc": blocking.MpmcQueue},
    "nonblocking": {
        "fifo": nonblocking.PersistentQueueWithCapacity,
        "mpmc": nonblocking.MpmcQueue,
    },
}
OPTIONS = {"fifo": FifoOptions, "mpmc": MpmcOptions}

# Operations every face offers, per kind (the async face adds its waiting forms).
OPERATIONS = {
    "fifo": ["push", "pop"],
    "mpmc": ["add", "next", "remove_label"],
}
# Offered by the async and blocking faces (RocksQ's nonblocking face has none).
RESERVING = {"fifo": ["reserve", "reserve_batch"], "mpmc": ["reserve", "reserve_batch"]}
PROPERTIES = {
    "fifo": ["len", "is_empty", "payload_size", "disk_size"],
    "mpmc": ["len", "is_empty", "labels", "disk_size"],
}
# Arguments only the faces that are drop-ins for RocksQ take.
ROCKSQ_ONLY = {"no_gil"}


def parameters(function: Any) -> list[tuple[str, Any]]:
    """(name, default) of every parameter but self, in order."""
    signature = inspect.signature(function)
    return [
        (name, parameter.default)
        for name, parameter in signature.parameters.items()
        if name != "self"
    ]


def without(params: list[tuple[str, Any]], names: set[str]) -> list[tuple[str, Any]]:
    return [(name, default) for name, default in params if name not in names]


@pytest.mark.parametrize("kind", ["fifo", "mpmc"])
def test_every_face_takes_the_options_of_its_kind_with_their_defaults(kind: str) -> None:
    defaults = {field.name: field.default for field in dataclasses.fields(OPTIONS[kind])}
    for face, classes in FACES.items():
        params = dict(parameters(classes[kind].__init__))
        params.pop("path")
        if face == "blocking":
            # RocksQ's blocking classes have no in-flight limit.
            assert "max_inflight_ops" not in params
            defaults_here = {k: v for k, v in defaults.items() if k != "max_inflight_ops"}
        else:
            defaults_here = defaults
        if kind == "mpmc":
            # ttl has no default in any face, as in RocksQ.
            assert params.pop("ttl") is inspect.Parameter.empty, face
            defaults_here = {k: v for k, v in defaults_here.items() if k != "ttl"}
        assert params == defaults_here, face


@pytest.mark.parametrize("kind", ["fifo", "mpmc"])
def test_the_faces_offer_the_same_operations_with_the_same_parameters(kind: str) -> None:
    async_class = FACES["async"][kind]
    for name in OPERATIONS[kind]:
        expected = parameters(getattr(async_class, name))
        for face in ("blocking", "nonblocking"):
            got = parameters(getattr(FACES[face][kind], name))
            assert without(got, ROCKSQ_ONLY) == expected, (face, name)
    for name in RESERVING[kind]:
        expected = without(parameters(getattr(async_class, name)), {"timeout"})
        assert parameters(getattr(FACES["blocking"][kind], name)) == expected, name
    for face, classes in FACES.items():
        for name in PROPERTIES[kind]:
            attribute = inspect.getattr_static(classes[kind], name)
            assert isinstance(attribute, property), (face, name)


ROCKSQ_FACES = {
    "blocking": rocksq_blocking,
    "nonblocking": rocksq_nonblocking,
}


@pytest.mark.parametrize("face", ["blocking", "nonblocking"])
@pytest.mark.parametrize(
    ("kind", "class_name"),
    [("fifo", "PersistentQueueWithCapacity"), ("mpmc", "MpmcQueue")],
)
def test_every_rocksq_call_is_valid_on_ours(face: str, kind: str, class_name: str) -> None:
    """RocksQ's parameters are ours, in the same order with the same defaults."""
    theirs = getattr(ROCKSQ_FACES[face], class_name)
    ours = FACES[face][kind]
    their_init = parameters(theirs)
    our_init = parameters(ours.__init__)
    assert our_init[: len(their_init)] == their_init
    for name in dir(theirs):
        if name.startswith("_"):
            continue
        their_attribute = inspect.getattr_static(theirs, name)
        our_attribute = inspect.getattr_static(ours, name, None)
        assert our_attribute is not None, f"{class_name}.{name} is missing"
        if type(their_attribute).__name__ == "getset_descriptor":
            assert isinstance(our_attribute, property), f"{class_name}.{name} is not a property"
            continue
        their_params = parameters(getattr(theirs, name))
        our_params = parameters(getattr(ours, name))
        assert [p for p, _ in our_params[: len(their_params)]] == [p for p, _ in their_params]
        for (param, their_default), (_, our_default) in zip(
            their_params, our_params, strict=False
        ):
            if their_default is not inspect.Parameter.empty:
                assert our_default == their_default, f"{class_name}.{name}({param}=...)"
        # What we add beyond RocksQ's parameters has a default, so RocksQ's calls stay valid.
        for param, our_default in our_params[len(their_params) :]:
            assert our_default is not inspect.Parameter.empty, f"{class_name}.{name}({param})"


def test_the_module_functions_of_rocksq_exist_with_the_same_parameters() -> None:
    for name in ("remove_queue", "remove_mpmc_queue", "version"):
        ours = getattr(rocksq_aio, name)
        assert [p for p, _ in parameters(ours)] == [
            p for p, _ in parameters(getattr(rocksq, name))
        ]


def test_start_position_compares_with_ints_as_rocksqs_does() -> None:
    for ours, theirs in [
        (rocksq_aio.StartPosition.Oldest, rocksq.StartPosition.Oldest),
        (rocksq_aio.StartPosition.Newest, rocksq.StartPosition.Newest),
    ]:
        assert (ours == 0) == (theirs == 0)
        assert (ours == 1) == (theirs == 1)
        assert int(ours) == int(theirs)
