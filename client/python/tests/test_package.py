"""The in-tree build backend makes a wheel pip can install with no index."""

import base64
import hashlib
import importlib.util
import os
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _backend():
    spec = importlib.util.spec_from_file_location(
        "shoal_build", os.path.join(ROOT, "_build", "shoal_build.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_wheel_contents(tmp_path):
    name = _backend().build_wheel(str(tmp_path))
    assert name == "shoal-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(str(tmp_path / name)) as z:
        names = z.namelist()
        for f in ("shoal/__init__.py", "shoal/client.py", "shoal/errors.py", "shoal/vecs.py"):
            assert f in names
        assert not any("tests/" in n or "examples/" in n for n in names)
        meta = z.read("shoal-0.1.0.dist-info/METADATA").decode()
        for dep in ("pyzmq", "msgpack", "numpy"):
            assert "Requires-Dist: %s" % dep in meta
        for line in z.read("shoal-0.1.0.dist-info/RECORD").decode().splitlines():
            path, digest, size = line.split(",")
            if digest:
                data = z.read(path)
                want = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
                assert digest == "sha256=" + want.decode() and int(size) == len(data)


def test_sdist(tmp_path):
    import tarfile
    name = _backend().build_sdist(str(tmp_path))
    with tarfile.open(str(tmp_path / name)) as t:
        names = t.getnames()
    assert "shoal-0.1.0/pyproject.toml" in names and "shoal-0.1.0/shoal/client.py" in names


def test_pip_install_into_a_venv(tmp_path):
    """pip install ./client/python with no package index, into a venv that
    sees Debian's numpy / zmq / msgpack."""
    venv = tmp_path / "venv"
    r = subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        pytest.skip("no venv with pip here (Debian: python3-venv): %s"
                    % r.stdout.decode(errors="replace").strip().splitlines()[-1:])
    py = str(venv / "bin" / "python")
    r = subprocess.run([py, "-m", "pip", "install", "-q", "--no-index", ROOT],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
    assert r.returncode == 0, r.stdout.decode(errors="replace")
    r = subprocess.run([py, "-c", "import shoal, sys; print(shoal.__file__); "
                        "print(shoal.Client.__name__)"], cwd=str(tmp_path),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = r.stdout.decode()
    assert r.returncode == 0, out
    assert str(venv) in out and "Client" in out
