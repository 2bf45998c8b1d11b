"""Which Debian mirror a build uses: the host's own, for the image's suite.

The host's apt sources that serve the host's release itself (``bookworm``, not
``bookworm-updates``, ``bookworm-security`` or a third-party suite) name the
Debian mirror; the image gets that mirror with its own suite. Only the release
itself: its package set changes at point releases only, which keeps builds
reproducible, and a throwaway lab VM on a private network needs no security
updates. The environment variable MVEE_LAB_MIRROR, a mirror URI, overrides it.
"""

from __future__ import annotations

import os
from pathlib import Path

APT_DIR = Path("/etc/apt")
OS_RELEASE = Path("/etc/os-release")


def apt_sources(suite: str, apt_dir: Path = APT_DIR, os_release: Path = OS_RELEASE) -> list[str]:
    """One-line apt source entries for suite, to pass to mmdebstrap as mirrors.

    Empty when the host has none for its release: mmdebstrap then uses its default."""
    override = os.environ.get("MVEE_LAB_MIRROR")
    if override:
        return [f"deb {override} {suite} main"]
    host_suite = _host_codename(os_release)
    if not host_suite:
        return []
    entries = []
    for uri, host_entry_suite in _host_entries(apt_dir):
        entry = f"deb {uri} {suite} main"
        if host_entry_suite == host_suite and entry not in entries:
            entries.append(entry)
    return entries


def _host_codename(os_release: Path) -> str:
    if not os_release.is_file():
        return ""
    for line in os_release.read_text().splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.split("=", 1)[1].strip().strip('"')
    return ""


def _host_entries(apt_dir: Path) -> list[tuple[str, str]]:
    """(URI, suite) of every binary-package entry of the host's apt sources."""
    entries: list[tuple[str, str]] = []
    one_line_files = [apt_dir / "sources.list", *sorted(apt_dir.glob("sources.list.d/*.list"))]
    for path in one_line_files:
        if path.is_file():
            entries += _one_line_entries(path.read_text())
    for path in sorted(apt_dir.glob("sources.list.d/*.sources")):
        entries += _deb822_entries(path.read_text())
    return entries


def _one_line_entries(text: str) -> list[tuple[str, str]]:
    entries = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if not words or words[0] != "deb":
            continue
        if len(words) > 1 and words[1].startswith("["):
            options_end = next(i for i, w in enumerate(words) if w.endswith("]"))
            words = words[:1] + words[options_end + 1:]
        if len(words) >= 3:
            entries.append((words[1], words[2]))
    return entries


def _deb822_entries(text: str) -> list[tuple[str, str]]:
    entries = []
    for paragraph in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in paragraph.splitlines():
            if ":" in line and not line.startswith(("#", " ", "\t")):
                key, value = line.split(":", 1)
                fields[key.strip().lower()] = value.strip()
        if "deb" in fields.get("types", "").split() and fields.get("enabled", "yes") != "no":
            for uri in fields.get("uris", "").split():
                for suite in fields.get("suites", "").split():
                    entries.append((uri, suite))
    return entries
