"""The lab's SSH key pair: generated once per lab cache, authorised for root in
every image built from that cache, never committed."""

from __future__ import annotations

import subprocess
from pathlib import Path

from vm.cache import locked


def key_path(cache: Path) -> Path:
    """The private key; the public key is the same path with .pub appended."""
    return cache / "ssh" / "id_ed25519"


def ensure_key(cache: Path) -> Path:
    """The lab's private key in cache, generated if it is not there yet."""
    private = key_path(cache)
    public = private.with_name(private.name + ".pub")
    with locked(private.with_name(".lock")):
        if not (private.is_file() and public.is_file()):
            private.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            private.unlink(missing_ok=True)
            public.unlink(missing_ok=True)
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "mvee-lab",
                 "-f", str(private)],
                check=True, stdin=subprocess.DEVNULL,
            )
    return private


def public_key(private: Path) -> str:
    return private.with_name(private.name + ".pub").read_text().strip()
