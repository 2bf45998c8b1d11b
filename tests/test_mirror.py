"""Unit tests of the choice of Debian mirror from the host's apt sources."""

from __future__ import annotations

from pathlib import Path

import pytest

from vm.images.mirror import apt_sources

DEB822 = """\
Types: deb
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
"""

THIRD_PARTY = """\
Types: deb
URIs: https://vendor.example/apt
Suites: nodistro
Components: main
"""


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("MVEE_LAB_MIRROR", raising=False)
    (tmp_path / "apt/sources.list.d").mkdir(parents=True)
    (tmp_path / "os-release").write_text('NAME="Debian GNU/Linux"\nVERSION_CODENAME=bookworm\n')
    return tmp_path


def sources(host: Path, suite: str) -> list[str]:
    return apt_sources(suite, host / "apt", host / "os-release")


def test_deb822_release_entry_is_carried_to_the_image_suite(host: Path) -> None:
    (host / "apt/sources.list.d/debian.sources").write_text(DEB822)
    (host / "apt/sources.list.d/vendor.sources").write_text(THIRD_PARTY)
    assert sources(host, "trixie") == ["deb http://mirror.example/debian trixie main"]


def test_one_line_entry_with_options(host: Path) -> None:
    (host / "apt/sources.list").write_text(
        "# comment\n"
        "deb-src http://src.example/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main contrib\n"
        "deb http://mirror.example/debian bookworm-updates main\n"
    )
    assert sources(host, "bookworm") == ["deb http://mirror.example/debian bookworm main"]


def test_same_mirror_twice_is_listed_once(host: Path) -> None:
    (host / "apt/sources.list").write_text("deb http://mirror.example/debian bookworm main\n")
    (host / "apt/sources.list.d/debian.sources").write_text(DEB822)
    assert sources(host, "trixie") == ["deb http://mirror.example/debian trixie main"]


def test_disabled_deb822_entry_is_ignored(host: Path) -> None:
    (host / "apt/sources.list.d/debian.sources").write_text("Enabled: no\n" + DEB822)
    assert sources(host, "trixie") == []


def test_no_debian_source_leaves_the_choice_to_mmdebstrap(host: Path) -> None:
    (host / "apt/sources.list.d/vendor.sources").write_text(THIRD_PARTY)
    assert sources(host, "trixie") == []


def test_environment_overrides_the_host(host: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (host / "apt/sources.list.d/debian.sources").write_text(DEB822)
    monkeypatch.setenv("MVEE_LAB_MIRROR", "http://127.0.0.1:9/debian")
    assert sources(host, "trixie") == ["deb http://127.0.0.1:9/debian trixie main"]
