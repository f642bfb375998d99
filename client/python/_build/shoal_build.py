"""shoal_build - the in-tree PEP 517 build backend of the shoal Python package.

It needs only the standard library, so that `pip install ./client/python`
works on a machine that can reach Debian's mirror but not PyPI: with
`requires = []` pip's isolated build environment has nothing to download.

It builds a pure-Python wheel of the `shoal` package (every .py file under
shoal/), an sdist, and an editable wheel (a .pth file pointing at this tree).
The metadata comes from pyproject.toml's [project] table.
"""

import base64
import hashlib
import io
import os
import re
import tarfile
import time
import zipfile

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_PACKAGE = "shoal"


def _read_project():
    """The [project] table of pyproject.toml, as a dict."""
    path = os.path.join(_ROOT, "pyproject.toml")
    with open(path, "rb") as f:
        data = f.read()
    try:
        import tomllib  # Python 3.11+

        return tomllib.loads(data.decode("utf-8"))["project"]
    except ImportError:
        pass
    # Python < 3.11: the few shapes this file uses (strings, lists of strings,
    # one level of sub-tables under [project.*]).
    project, table = {}, None
    for raw in data.decode("utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.match(r"^\[(.+)\]$", line)
        if m:
            table = m.group(1).strip()
            continue
        if table is None or not (table == "project" or table.startswith("project.")):
            continue
        key, _, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if value.startswith("["):
            parsed = re.findall(r'"([^"]*)"', value)
        else:
            parsed = value.strip('"')
        if table == "project":
            project[key] = parsed
        else:
            project.setdefault(table[len("project."):], {})[key] = parsed
    return project


def _metadata():
    p = _read_project()
    lines = [
        "Metadata-Version: 2.1",
        "Name: %s" % p["name"],
        "Version: %s" % p["version"],
    ]
    if p.get("description"):
        lines.append("Summary: %s" % p["description"])
    if p.get("requires-python"):
        lines.append("Requires-Python: %s" % p["requires-python"])
    for dep in p.get("dependencies", []):
        lines.append("Requires-Dist: %s" % dep)
    for extra, deps in sorted(p.get("optional-dependencies", {}).items()):
        lines.append("Provides-Extra: %s" % extra)
        for dep in deps:
            lines.append('Requires-Dist: %s; extra == "%s"' % (dep, extra))
    return p["name"], p["version"], "\n".join(lines) + "\n"


def _package_files():
    """(path in the archive, path on disk) of every .py file of the package."""
    out = []
    top = os.path.join(_ROOT, _PACKAGE)
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            if name.endswith(".py"):
                disk = os.path.join(dirpath, name)
                out.append((os.path.relpath(disk, _ROOT).replace(os.sep, "/"), disk))
    return out


def _record_line(arcname, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return "%s,sha256=%s,%d" % (arcname, digest.decode("ascii"), len(data))


def _write_wheel(wheel_directory, entries):
    """entries: (arcname, bytes) of the payload; adds the .dist-info files."""
    name, version, metadata = _metadata()
    dist = "%s-%s" % (name, version)
    info = dist + ".dist-info"
    wheel_meta = (
        "Wheel-Version: 1.0\nGenerator: shoal_build\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    entries = list(entries) + [
        (info + "/METADATA", metadata.encode("utf-8")),
        (info + "/WHEEL", wheel_meta.encode("utf-8")),
        (info + "/top_level.txt", (_PACKAGE + "\n").encode("utf-8")),
    ]
    record = [_record_line(a, d) for a, d in entries] + [info + "/RECORD,,"]
    entries.append((info + "/RECORD", ("\n".join(record) + "\n").encode("utf-8")))
    filename = dist + "-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, filename), "w", zipfile.ZIP_DEFLATED) as z:
        for arcname, data in entries:
            z.writestr(zipfile.ZipInfo(arcname, date_time=(2020, 1, 1, 0, 0, 0)), data)
    return filename


# ---------------------------------------------------------------------------
# PEP 517 / PEP 660 hooks
# ---------------------------------------------------------------------------


def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def get_requires_for_build_editable(config_settings=None):
    return []


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    entries = []
    for arcname, disk in _package_files():
        with open(disk, "rb") as f:
            entries.append((arcname, f.read()))
    return _write_wheel(wheel_directory, entries)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    pth = (_ROOT + "\n").encode("utf-8")
    return _write_wheel(wheel_directory, [("__editable__.shoal.pth", pth)])


def build_sdist(sdist_directory, config_settings=None):
    name, version, metadata = _metadata()
    base = "%s-%s" % (name, version)
    filename = base + ".tar.gz"
    files = [("pyproject.toml", os.path.join(_ROOT, "pyproject.toml")),
             ("_build/shoal_build.py", os.path.abspath(__file__))]
    files += _package_files()
    with tarfile.open(os.path.join(sdist_directory, filename), "w:gz") as tar:
        for arcname, disk in files:
            tar.add(disk, arcname=base + "/" + arcname)
        data = metadata.encode("utf-8")
        ti = tarfile.TarInfo(base + "/PKG-INFO")
        ti.size = len(data)
        ti.mtime = int(time.time())
        tar.addfile(ti, io.BytesIO(data))
    return filename
