"""A private certificate authority and a broker certificate for local runs and tests.

``python -m stack.tls DIR`` (run by scripts/provision.sh for ``.data/tls``) writes ``ca.crt``,
``ca.key``, ``server.crt`` and ``server.key`` unless they are there. Devices and tests trust
``ca.crt`` (``ALATAU_MQTT_CA_FILE``); the broker's certificate names ``localhost`` and
``127.0.0.1``. A real deployment brings certificates from its own authority instead.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Final

VALID_DAYS: Final = 825
SERVER_NAMES: Final = "subjectAltName=DNS:localhost,IP:127.0.0.1"


def _openssl(*args: str) -> None:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {result.stderr.strip()}")


def make_certificates(directory: Path) -> Path:
    """Create the CA and the broker's certificate in ``directory`` if missing; returns it."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_crt = directory / "ca.key", directory / "ca.crt"
    key, crt = directory / "server.key", directory / "server.crt"
    if all(path.exists() for path in (ca_key, ca_crt, key, crt)):
        return directory
    _openssl("genrsa", "-out", str(ca_key), "2048")
    _openssl(
        "req", "-x509", "-new", "-key", str(ca_key), "-sha256", "-days", str(VALID_DAYS),
        "-subj", "/O=Alatau City/CN=Alatau local CA", "-out", str(ca_crt),
    )  # fmt: skip
    _openssl("genrsa", "-out", str(key), "2048")
    with tempfile.TemporaryDirectory() as scratch:
        csr = Path(scratch) / "server.csr"
        extensions = Path(scratch) / "server.ext"
        extensions.write_text(SERVER_NAMES + "\n")
        _openssl(
            "req", "-new", "-key", str(key), "-subj", "/O=Alatau City/CN=localhost",
            "-out", str(csr),
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key),
            "-CAcreateserial", "-days", str(VALID_DAYS), "-sha256",
            "-extfile", str(extensions), "-out", str(crt),
        )  # fmt: skip
    for private in (ca_key, key):
        private.chmod(0o600)
    return directory


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m stack.tls DIR")
    make_certificates(Path(sys.argv[1]))
