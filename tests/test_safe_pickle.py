"""Hostile files for the allow-listed loader: nothing in them runs, nothing is written, the refusal names the global.

Every payload is written in both of torch's formats (the zip format and the legacy concatenated
pickles) and loaded from inside a sandbox: a working folder, a private temp folder and a marker
folder that the payload aims at, each of which must stay empty.
"""
from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from hdae_core.safe_pickle import ALLOWED_GLOBALS, STAND_INS, UnsafeCheckpointError, safe_load, scan_globals

# ---------------------------------------------------------------- pickle assembly, by hand

P2, P4, STOP, MARK, TUPLE, REDUCE, BINPERSID = b"\x80\x02", b"\x80\x04", b".", b"(", b"t", b"R", b"Q"
EMPTY_TUPLE, EMPTY_DICT, SETITEMS, TRUE = b")", b"}", b"u", b"\x88"


def g(module: str, name: str) -> bytes:
    """GLOBAL module.name (protocol 0-3 spelling)."""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def s(text: str) -> bytes:
    b = text.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def bb(data: bytes) -> bytes:
    """bytes as protocol 3 writes them."""
    return b"B" + struct.pack("<I", len(data)) + data


def call(fn: bytes, *args: bytes) -> bytes:
    return fn + MARK + b"".join(args) + TUPLE + REDUCE


def stack_global(module: str, name: str) -> bytes:
    return b"\x8c" + bytes([len(module)]) + module.encode() + b"\x8c" + bytes([len(name)]) + name.encode() + b"\x93"


def legacy_file(payload: bytes, where: str = "object") -> bytes:
    """torch's legacy format: magic, protocol, sys info, the object, storage keys (payload at ``where``)."""
    parts = {
        "magic": pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2),
        "protocol": pickle.dumps(1001, protocol=2),
        "sys_info": pickle.dumps({"protocol_version": 1001, "little_endian": True,
                                  "type_sizes": {"short": 2, "int": 4, "long": 4}}, protocol=2),
        "object": pickle.dumps({"ok": 1}, protocol=2),
        "keys": pickle.dumps([], protocol=2),
    }
    parts[where] = payload
    return b"".join(parts.values())


def zip_file(payload: bytes, extra: dict[str, bytes] | None = None) -> bytes:
    """torch's zip format with ``payload`` as archive/data.pkl."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", payload)
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/version", "3\n")
        for k, v in (extra or {}).items():
            z.writestr(k, v)
    return buf.getvalue()


def torch_save_bytes(obj, legacy: bool) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=not legacy)
    return buf.getvalue()


# ---------------------------------------------------------------- the sandbox


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """A working folder, temp folder and marker folder that must all stay empty; files to load live apart."""
    dirs = {k: tmp_path / k for k in ("work", "tmp", "marker", "files")}
    for d in dirs.values():
        d.mkdir()
    monkeypatch.chdir(dirs["work"])
    monkeypatch.setenv("TMPDIR", str(dirs["tmp"]))
    monkeypatch.setattr(tempfile, "tempdir", str(dirs["tmp"]))
    yield dirs
    for k in ("work", "tmp", "marker"):
        left = sorted(p.name for p in dirs[k].rglob("*"))
        assert not left, f"the {k} folder gained {left}"


def _write(sandbox, name: str, data: bytes) -> Path:
    path = sandbox["files"] / name
    path.write_bytes(data)
    return path


def _payloads(m: Path) -> dict[str, tuple[bytes, str]]:
    """name -> (pickle bytes, the global the refusal must name); each aims at the marker folder ``m``."""
    touch = f"touch {m}/pwned"
    py_write = f"open({str(m / 'pwned')!r}, 'w').write('x')"
    inner = P2 + call(g("os", "system"), s(touch)) + STOP  # what torch.storage._load_from_bytes would run
    meta_cls = call(g("torch.storage", "_LegacyStorageMeta"),
                    s(f"{m}/evil"), EMPTY_TUPLE,
                    EMPTY_DICT + MARK + s("dump_patches") + TRUE + s("__module__") + s("torch.storage")
                    + s("__qualname__") + s("TypedStorage") + SETITEMS)
    return {
        "os_system": (P2 + call(g("os", "system"), s(touch)) + STOP, "os.system"),
        "posix_system": (P2 + call(g("posix", "system"), s(touch)) + STOP, "posix.system"),
        "eval": (P2 + call(g("__builtin__", "eval"), s(py_write)) + STOP, "builtins.eval"),
        "exec": (P2 + call(g("builtins", "exec"), s(py_write)) + STOP, "builtins.exec"),
        "__import__": (P2 + call(g("builtins", "__import__"), s("os")) + STOP, "builtins.__import__"),
        "getattr_chain": (P2 + call(g("builtins", "getattr"), call(g("builtins", "__import__"), s("os")),
                                    s("system")) + STOP, "builtins.getattr"),
        "subprocess_popen": (P2 + call(g("subprocess", "Popen"), MARK + s("touch") + s(f"{m}/pwned") + b"l")
                             + STOP, "subprocess.Popen"),
        "open_write": (P2 + call(g("builtins", "open"), s(f"{m}/pwned"), s("w")) + STOP, "builtins.open"),
        "torch_load": (P2 + call(g("torch", "load"), s(str(m / "inner.pt"))) + STOP, "torch.load"),
        "torch_load_from_bytes": (P2 + call(g("torch.storage", "_load_from_bytes"), bb(inner)) + STOP,
                                  "torch.storage._load_from_bytes"),
        "copyreg_reconstructor": (P2 + call(g("copy_reg", "_reconstructor"), g("subprocess", "Popen"),
                                            g("builtins", "object"), s("x")) + STOP, "copyreg._reconstructor"),
        "numpy_runstring": (P2 + call(g("numpy.testing._private.utils", "runstring"), s(py_write), EMPTY_DICT)
                            + STOP, "numpy.testing._private.utils.runstring"),
        "dotted_global": (P4 + g("torch", "UntypedStorage.from_file") + s(f"{m}/pwned") + TRUE
                          + b"K\x10" + b"\x87" + REDUCE + STOP, "torch.UntypedStorage.from_file"),
        "stack_global_dotted": (P4 + stack_global("torch", "UntypedStorage.from_file") + s(f"{m}/pwned") + TRUE
                                + b"K\x10" + b"\x87" + REDUCE + STOP, "torch.UntypedStorage.from_file"),
        "storage_named_method": (P2 + call(g("torch.storage", "UntypedStorage._new_shared_filename_cpu"),
                                           s(f"{m}/pwned"), b"K\x10") + STOP,
                                 "torch.storage.UntypedStorage._new_shared_filename_cpu"),
        "storage_named_class": (P2 + call(g("torch.storage", "_LegacyStorage"), b"K\x10") + STOP,
                                "torch.storage._LegacyStorage"),
        "metaclass_patch_writer": (P2 + MARK + s("module") + meta_cls + s("src.py") + s("changed source")
                                   + TUPLE + BINPERSID + STOP, "torch.storage._LegacyStorageMeta"),
        "inst_opcode": (b"(" + b"S'" + touch.encode() + b"'\n" + b"ios\nsystem\n" + STOP, "os.system"),
        "shutil_rmtree": (P2 + call(g("shutil", "rmtree"), s(str(m))) + STOP, "shutil.rmtree"),
        "suffix_lookalike": (P2 + call(g("os", "AttributeDict"), s("x")) + STOP, "os.AttributeDict"),
        "prefix_lookalike": (P2 + call(g("pytorch_lightning.utilities.cloud_io", "atomic_save"),
                                       EMPTY_DICT, s(f"{m}/pwned")) + STOP,
                             "pytorch_lightning.utilities.cloud_io.atomic_save"),
    }


PAYLOAD_NAMES = list(_payloads(Path("/m")))


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
@pytest.mark.parametrize("name", PAYLOAD_NAMES)
def test_hostile_file_runs_nothing_and_names_the_global(sandbox, name, fmt):
    payload, refused = _payloads(sandbox["marker"])[name]
    (sandbox["marker"] / "inner.pt").unlink(missing_ok=True)
    data = zip_file(payload) if fmt == "zip" else legacy_file(payload)
    path = _write(sandbox, f"{name}.{fmt}.ckpt", data)
    with pytest.raises(UnsafeCheckpointError) as e:
        safe_load(path)
    assert f"refused global '{refused}'" in str(e.value) and path.name in str(e.value)


@pytest.mark.parametrize("where", ["magic", "sys_info", "keys"])
def test_hostile_pickle_in_any_legacy_section_is_refused(sandbox, where):
    payload = P2 + call(g("os", "system"), s(f"touch {sandbox['marker']}/pwned")) + STOP
    path = _write(sandbox, f"{where}.ckpt", legacy_file(payload, where))
    with pytest.raises(UnsafeCheckpointError, match="refused global 'os.system'"):
        safe_load(path)


def test_hostile_pickle_in_a_second_zip_member_is_refused(sandbox):
    payload = P2 + call(g("os", "system"), s(f"touch {sandbox['marker']}/pwned")) + STOP
    path = _write(sandbox, "two.ckpt", zip_file(pickle.dumps({"ok": 1}, protocol=2),
                                                 {"other/data.pkl": payload}))
    with pytest.raises(UnsafeCheckpointError, match="refused global 'os.system'"):
        safe_load(path)


def test_the_metaclass_route_is_real_and_the_patch_writer_is_unreachable(sandbox):
    """The ('module', class, ...) record with an allowed class still never reaches torch's patch writer."""
    record = P2 + MARK + s("module") + g("collections", "OrderedDict") + s("src.py") + s("changed") + TUPLE \
        + BINPERSID + STOP
    for fmt, data in (("zip", zip_file(record)), ("legacy", legacy_file(record))):
        path = _write(sandbox, f"module_record.{fmt}", data)
        with pytest.raises(UnsafeCheckpointError, match="persistent_load of storage"):
            safe_load(path)


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_a_storage_record_of_a_non_storage_type_is_refused(sandbox, fmt):
    record = P2 + MARK + s("storage") + g("torch", "Size") + s("0") + s("cpu") + b"K\x04" + TUPLE \
        + BINPERSID + STOP
    data = zip_file(record) if fmt == "zip" else legacy_file(record)
    with pytest.raises(ValueError, match="not a readable torch checkpoint"):
        safe_load(_write(sandbox, f"storage.{fmt}", data))


def test_torchscript_and_tar_archives_are_refused(sandbox):
    ts = zip_file(pickle.dumps(1, protocol=2), {"archive/constants.pkl": pickle.dumps((), protocol=2),
                                                "archive/code/__torch__.py": b"import os\n"})
    with pytest.raises(UnsafeCheckpointError, match="TorchScript"):
        safe_load(_write(sandbox, "script.pt", ts))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("storages")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"\x80\x02K."))
    with pytest.raises(ValueError, match="tar"):
        safe_load(_write(sandbox, "old.tar.pt", buf.getvalue()))


def test_junk_and_truncated_files_are_unreadable_not_unsafe(sandbox):
    good = torch_save_bytes({"w": torch.ones(3)}, legacy=False)
    for name, data in (("junk", b"not a checkpoint"), ("trunc_zip", good[: len(good) // 2]),
                       ("trunc_legacy", torch_save_bytes({"w": torch.ones(3)}, legacy=True)[:40])):
        with pytest.raises(ValueError, match="not a readable torch checkpoint") as e:
            safe_load(_write(sandbox, name, data))
        assert not isinstance(e.value, UnsafeCheckpointError)


# ---------------------------------------------------------------- honest files still load


@pytest.mark.parametrize("legacy", [False, True])
def test_honest_checkpoints_load_unchanged(sandbox, legacy):
    obj = {
        "state_dict": collections.OrderedDict(w=torch.randn(3, 4), b=torch.arange(5)),
        "param": torch.nn.Parameter(torch.ones(2)),
        "half": torch.ones(2, dtype=torch.float16), "view": torch.arange(10.0)[2:7:2],
        "meta": {"size": torch.Size([1, 2]), "dtype": torch.bfloat16, "device": torch.device("cpu"),
                 "set": {1, 2}, "bytes": b"\x00\xff", "complex": 1 + 2j, "tuple": (1, "a", None, 2.5)},
        "array": np.arange(6, dtype=np.float32).reshape(2, 3),
    }
    got = safe_load(_write(sandbox, "honest.pt", torch_save_bytes(obj, legacy)))
    assert torch.equal(got["state_dict"]["w"], obj["state_dict"]["w"]) and type(got["state_dict"]) is collections.OrderedDict
    assert isinstance(got["param"], torch.nn.Parameter) and torch.equal(got["view"], obj["view"])
    assert got["half"].dtype == torch.float16 and got["meta"] == obj["meta"]
    assert np.array_equal(got["array"], obj["array"])


def test_every_allowed_name_is_exact_and_resolves_to_a_data_constructor():
    assert all("*" not in n and not n.endswith(".") for n in ALLOWED_GLOBALS)
    for name in ALLOWED_GLOBALS:
        module, _, attr = name.rpartition(".")
        obj = sys.modules[module] if module in sys.modules else __import__(module, fromlist=["_"])
        assert hasattr(obj, attr) or attr.endswith("Storage") or name.startswith("torch.") and attr in dir(torch), name
    # the stand-ins are inert: none of them is the framework's real class
    assert all(cls.__module__ == "hdae_core.safe_pickle" for cls in STAND_INS.values())


def test_scan_lists_the_globals_without_importing_them(sandbox):
    path = _write(sandbox, "x.pt", zip_file(P2 + call(g("not_a_module_xyz", "boom"), s("a")) + STOP))
    assert scan_globals(path) == ["not_a_module_xyz.boom"]
    assert "not_a_module_xyz" not in sys.modules
    with pytest.raises(UnsafeCheckpointError, match="refused global 'not_a_module_xyz.boom'"):
        safe_load(path)


def test_the_old_substring_rule_would_have_written_the_patch_file(sandbox):
    """Known answer for the route above: torch's legacy loader, given the metaclass, writes <name>.patch."""
    import torch.serialization as ser

    if not hasattr(torch.storage, "_LegacyStorageMeta"):
        pytest.skip("this torch has no _LegacyStorageMeta")
    payload, _ = _payloads(sandbox["marker"])["metaclass_patch_writer"]

    class Permissive(pickle.Unpickler):  # what the substring rule amounted to for this name
        def find_class(self, module, name):
            return getattr(sys.modules[module], name)

    class Module:
        Unpickler = Permissive

        @staticmethod
        def load(f, **kw):
            return Permissive(f, **kw).load()

    path = _write(sandbox, "meta.legacy", legacy_file(payload))
    with pytest.warns(Warning):
        try:
            ser.load(path, weights_only=False, pickle_module=Module)
        except Exception:
            pass
    written = sorted(p.name for p in sandbox["marker"].iterdir())
    assert written == ["evil.patch"]
    (sandbox["marker"] / "evil.patch").unlink()  # the sandbox must end empty
    with pytest.raises(UnsafeCheckpointError, match="refused global 'torch.storage._LegacyStorageMeta'"):
        safe_load(path)
    assert not any(sandbox["marker"].iterdir())


def test_environment_cannot_switch_the_loader_off(sandbox, monkeypatch):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    payload = P2 + call(g("os", "system"), s(f"touch {sandbox['marker']}/pwned")) + STOP
    with pytest.raises(UnsafeCheckpointError, match="refused global 'os.system'"):
        safe_load(_write(sandbox, "env.pt", zip_file(payload)))
    got = safe_load(_write(sandbox, "ok.pt", torch_save_bytes({"w": torch.ones(2)}, legacy=False)))
    assert torch.equal(got["w"], torch.ones(2))
    assert os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] == "1"


def test_hdae_import_diffae_refuses_in_one_line(sandbox, capsys):
    from hdae_core.cli import main

    payload, refused = _payloads(sandbox["marker"])["metaclass_patch_writer"]
    path = _write(sandbox, "last.ckpt", legacy_file(payload))
    rc = main(["import-diffae", str(path), "--out", str(sandbox["files"] / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("hdae: error: ") and f"refused global '{refused}'" in err, err
    assert not (sandbox["files"] / "out").exists()
