"""Inventories of SSH hosts that stand for boot targets: parsed, validated, written.

The format, TOML (or the same as JSON, ``{"hosts": [...]}``), one entry per host::

    [[hosts]]
    name = "old-laptop"          # free text, unique
    target = "bookworm-i386"     # which boot target's expectations apply
    host = "192.0.2.10"
    port = 22                    # optional, default 22
    user = "root"                # optional, default root; must be able to ptrace
    key = "~/.ssh/id_ed25519"    # optional, default the lab's key

``load`` reads a file (``--lab-hosts``), ``from_ssh_config`` reads the output of
``vagrant ssh-config`` (the Vagrant machines), ``dump`` writes entries as JSON that
``load`` reads back. Every error is one line (InventoryError).
"""

from __future__ import annotations

import json
import shlex
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from vm import cache
from vm.images import ssh_key
from vm.machines.lease import all_targets

_FIELDS = {"name", "target", "host", "port", "user", "key"}
# `ssh -G`/`vagrant ssh-config` keywords -> inventory fields.
_SSH_CONFIG_FIELDS = {"hostname": "host", "port": "port", "user": "user", "identityfile": "key"}


class InventoryError(Exception):
    """An inventory that cannot be used; the message is one line."""


@dataclass(frozen=True)
class HostEntry:
    name: str
    target: str
    host: str
    port: int
    user: str
    key: Path


def load(path: Path) -> list[HostEntry]:
    """Parse and validate an inventory file (TOML, or JSON when it ends in .json)."""
    try:
        text = path.read_text()
    except OSError as e:
        raise InventoryError(f"{path}: cannot read: {e.strerror}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as e:
        kind = "JSON" if path.suffix == ".json" else "TOML"
        raise InventoryError(f"{path}: not valid {kind}: {e}") from None
    return parse(data, str(path))


def parse(data: Any, where: str) -> list[HostEntry]:
    """Validate an inventory's data ({"hosts": [...]}); where names it in errors."""
    hosts = data.get("hosts") if isinstance(data, dict) else None
    if not isinstance(hosts, list) or not hosts:
        raise InventoryError(f"{where}: expected a non-empty list 'hosts'")
    known = all_targets()
    entries: list[HostEntry] = []
    for index, entry in enumerate(hosts):
        here = f"{where}: hosts[{index}]"
        if not isinstance(entry, dict):
            raise InventoryError(f"{here}: must be a table")
        unknown = sorted(set(entry) - _FIELDS)
        if unknown:
            raise InventoryError(f"{here}: unknown field {unknown[0]!r}")
        for required in ("name", "target", "host"):
            if not isinstance(entry.get(required), str) or not entry[required].strip():
                raise InventoryError(f"{here}: field {required!r} must be a non-empty string")
        if entry["target"] not in known:
            raise InventoryError(f"{here}: unknown target {entry['target']!r} (known: {', '.join(known)})")
        port = entry.get("port", 22)
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            raise InventoryError(f"{here}: field 'port' must be an integer from 1 to 65535")
        for optional in ("user", "key"):
            if optional in entry and (not isinstance(entry[optional], str) or not entry[optional].strip()):
                raise InventoryError(f"{here}: field {optional!r} must be a non-empty string")
        key = Path(entry.get("key", str(ssh_key.key_path(cache.cache_root())))).expanduser()
        if any(e.name == entry["name"] for e in entries):
            raise InventoryError(f"{here}: duplicate name {entry['name']!r}")
        same = next((e for e in entries if (e.host, e.port) == (entry["host"], port)), None)
        if same is not None:  # one machine cannot stand for two entries (nor two targets)
            raise InventoryError(f"{here}: {entry['host']}:{port} is {same.name!r} already")
        entries.append(HostEntry(entry["name"], entry["target"], entry["host"], port,
                                 entry.get("user", "root"), key))
    return entries


def from_ssh_config(text: str, where: str = "ssh-config") -> list[HostEntry]:
    """Entries from OpenSSH client configuration (`vagrant ssh-config`): one per Host
    block, named after it and standing for the boot target of the same name."""
    hosts: list[dict[str, Any]] = []
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        if len(words) < 2:
            continue
        keyword, value = words[0].lower(), words[1]
        if keyword == "host":
            hosts.append({"name": value, "target": value})
        elif hosts and keyword in _SSH_CONFIG_FIELDS and _SSH_CONFIG_FIELDS[keyword] not in hosts[-1]:
            field = _SSH_CONFIG_FIELDS[keyword]
            if field == "port":
                if not value.isdigit():
                    raise InventoryError(f"{where}: Host {hosts[-1]['name']}: port {value!r} is not a number")
                hosts[-1][field] = int(value)
            else:
                hosts[-1][field] = value
    return parse({"hosts": hosts}, where)


def dump(entries: list[HostEntry]) -> str:
    """entries as JSON ({"hosts": [...]}) that load() reads back."""
    return json.dumps({"hosts": [{**asdict(e), "key": str(e.key)} for e in entries]}, indent=2) + "\n"
