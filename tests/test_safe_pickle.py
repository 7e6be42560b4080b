"""The restricted unpickler: real numpy pickles (Python 3 protocols 2/4/5, a Python 2-era protocol-2 file)
round-trip; pickles naming any other global are refused before that global is called."""

from __future__ import annotations

import io
import os
import pickle
import struct

import numpy as np
import pytest

from pc3d.errors import InputError
from pc3d.io.safe_pickle import safe_load, safe_load_npy, safe_loads


def fold_like() -> dict:
    rng = np.random.default_rng(0)
    return {"train": [(rng.normal(size=(64, 6)).astype(np.float32), 3, np.int64(17)) for _ in range(3)],
            "test": [(rng.normal(size=(64, 3)).astype(np.float32), np.int32(1), 9)],
            "extra": {"labels": np.arange(5, dtype=np.int64).reshape(5, 1), "flag": np.bool_(True),
                      "names": ["a", "b"], "set": {1, 2}, "half": np.float16(0.5)}}


def assert_same(a, b) -> None:
    if isinstance(a, np.ndarray) or isinstance(a, np.generic):
        assert type(a) is type(b) and a.dtype == b.dtype and np.array_equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    else:
        assert a == b and type(a) is type(b)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_numpy_pickles_round_trip(protocol):
    data = fold_like()
    assert_same(safe_loads(pickle.dumps(data, protocol=protocol)), data)


class Python2Pickler(pickle._Pickler):
    """Writes bytes and str as Python 2's `str` opcodes (SHORT_BINSTRING / BINSTRING), as numpy pickles
    from Python 2 hold their array buffers."""

    def _binstring(self, raw: bytes) -> None:
        n = len(raw)
        self.write(pickle.SHORT_BINSTRING + bytes([n]) + raw if n < 256
                   else pickle.BINSTRING + struct.pack("<i", n) + raw)

    def save_bytes(self, obj: bytes) -> None:
        self._binstring(obj)
        self.memoize(obj)

    def save_str(self, obj: str) -> None:
        self._binstring(obj.encode("ascii"))
        self.memoize(obj)

    dispatch = dict(pickle._Pickler.dispatch)
    dispatch[bytes] = save_bytes
    dispatch[str] = save_str


def test_python2_era_protocol2_file_with_numpy1_module_names(tmp_path):
    # Point-MAE's .dat: [list of (8192, 6) float32, list of (1,) int32 labels], written by Python 2 / numpy 1
    points = [np.random.default_rng(k).normal(size=(32, 6)).astype(np.float32) for k in range(4)]
    labels = [np.array([k], np.int32) for k in range(4)]
    buffer = io.BytesIO()
    Python2Pickler(buffer, protocol=2).dump([points, labels])
    raw = buffer.getvalue().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    assert b"numpy.core.multiarray\n_reconstruct" in raw and b"_codecs" not in raw
    path = tmp_path / "modelnet40_train_8192pts_fps.dat"
    path.write_bytes(raw)
    got_points, got_labels = safe_load(path)
    for a, b in zip(got_points + got_labels, points + labels, strict=True):
        assert_same(a, b)


class Exploit:
    def __init__(self, func, *args) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize("func, args, named", [
    ("os.system", ("touch {marker}",), f"{os.system.__module__}.system"),  # posix.system on Linux
    ("builtins.eval", ("open({marker!r}, 'w').write('x')",), "builtins.eval"),
    ("builtins.exec", ("open({marker!r}, 'w').write('x')",), "builtins.exec"),
])
def test_code_running_globals_are_refused_before_running(tmp_path, func, args, named):
    import builtins

    marker = str(tmp_path / "ran")
    target = {"os.system": os.system, "builtins.eval": builtins.eval, "builtins.exec": builtins.exec}[func]
    payload = pickle.dumps({"train": [Exploit(target, *(a.format(marker=marker) for a in args))]}, protocol=2)
    with pytest.raises(InputError) as info:
        safe_loads(payload, "0.pkl")
    message = str(info.value)
    assert named in message and "\n" not in message and message.startswith("0.pkl:")
    assert not (tmp_path / "ran").exists()


def test_torch_class_and_object_arrays_with_bad_members_are_refused():
    import torch

    with pytest.raises(InputError, match="refused global torch"):
        safe_loads(pickle.dumps({"t": torch.zeros(2)}, protocol=4))
    # an object array passes through find_class for each member, so a smuggled global is still refused
    smuggled = np.array([Exploit(print, "x")], dtype=object)
    with pytest.raises(InputError, match="builtins.print"):
        safe_loads(pickle.dumps(smuggled, protocol=2))


def test_codecs_encode_only_latin1_and_damaged_files_are_one_line(tmp_path):
    import _codecs

    with pytest.raises(InputError, match="codec 'rot13'"):
        safe_loads(pickle.dumps(Exploit(_codecs.encode, "abc", "rot13"), protocol=2))
    good = pickle.dumps([np.arange(1000.0)], protocol=4)
    with pytest.raises(InputError, match="truncated or damaged") as info:
        safe_loads(good[: len(good) // 2], "x.dat")
    assert "\n" not in str(info.value)
    with pytest.raises(InputError, match="missing file"):
        safe_load(tmp_path / "absent.pkl")


def test_npy_holding_a_pickled_dict_is_read_through_the_restricted_unpickler(tmp_path):
    """PartNet-E's label.npy: a 0-d object array holding a dict, read without np.load(allow_pickle=True)."""
    semantic, instance = np.arange(7) % 3 - 1, np.arange(7) // 2
    good = tmp_path / "label.npy"
    np.save(good, np.array({"semantic_seg": semantic, "instance_seg": instance}, dtype=object), allow_pickle=True)
    data = safe_load_npy(good)
    assert_same(data["semantic_seg"], semantic)
    assert_same(data["instance_seg"], instance)
    plain = tmp_path / "plain.npy"
    np.save(plain, semantic)
    assert_same(safe_load_npy(plain), semantic)

    marker = tmp_path / "ran"
    bad = tmp_path / "bad.npy"
    np.save(bad, np.array([Exploit(os.system, f"touch {marker}")], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="refused global") as info:
        safe_load_npy(bad)
    assert "\n" not in str(info.value) and not marker.exists()
    (tmp_path / "cut.npy").write_bytes(good.read_bytes()[:-9])
    with pytest.raises(InputError, match="cut.npy"):
        safe_load_npy(tmp_path / "cut.npy")
