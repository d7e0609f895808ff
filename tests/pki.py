"""Test certificates made with the ``openssl`` CLI: two CAs, a server and two clients.

:func:`make_pki` writes, into one directory, PEM files named after their role:

- ``ca``: the CA the server trusts; it signed ``server`` (serverAuth, SAN localhost and
  127.0.0.1) and ``client`` (clientAuth);
- ``otherca``: an unrelated CA; it signed ``rogue`` (clientAuth), a client the server must
  refuse.

Each name has ``NAME.key`` and ``NAME.pem``. Keys are P-256 (fast), valid for two days.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _make_ca(d: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
             "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)


def _make_leaf(d: Path, name: str, ca: str, usage: str) -> None:
    ext = d / f"{name}.ext"
    ext.write_text("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                   f"extendedKeyUsage={usage}\n"
                   "subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", ext.name,
             cwd=d)


def have_openssl() -> bool:
    """Whether the ``openssl`` command is available."""
    return shutil.which("openssl") is not None


def make_pki(d: Path) -> Path:
    """Write the CAs, server and client certificates into ``d`` and return ``d``."""
    _make_ca(d, "ca")
    _make_ca(d, "otherca")
    _make_leaf(d, "server", "ca", "serverAuth")
    _make_leaf(d, "client", "ca", "clientAuth")
    _make_leaf(d, "rogue", "otherca", "clientAuth")
    return d
