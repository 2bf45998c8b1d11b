"""Unit tests of the lab cache's chores: locations, unfinished builds, keys, hashes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vm import cache
from vm.images import build, recipe, ssh_key
from vm.images.build import recipe_hash


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_cache_root_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MVEE_LAB_CACHE", "/srv/lab-cache")
    assert cache.cache_root() == Path("/srv/lab-cache")
    monkeypatch.delenv("MVEE_LAB_CACHE")
    assert cache.cache_root() == Path.home() / ".cache" / "mvee-lab"


def test_stale_temp_dirs_of_dead_builds_are_removed(tmp_path: Path) -> None:
    stale = tmp_path / f".tmp-bookworm-i386-0123456789abcdef-{dead_pid()}"
    (stale / "root/etc").mkdir(parents=True)
    running = tmp_path / f".tmp-trixie-amd64-0123456789abcdef-{os.getpid()}"
    running.mkdir()
    finished = tmp_path / "bookworm-i386-0123456789abcdef"
    finished.mkdir()
    assert cache.remove_stale_temp_dirs(tmp_path) == [stale]
    assert not stale.exists()
    assert running.is_dir()
    assert finished.is_dir()


def test_temp_dir_names_its_owner(tmp_path: Path) -> None:
    work = cache.temp_dir_for(tmp_path, "bookworm-i386-0123456789abcdef")
    assert work.name == f".tmp-bookworm-i386-0123456789abcdef-{os.getpid()}"
    assert work.is_dir()
    assert cache.remove_stale_temp_dirs(tmp_path) == []


def test_ssh_key_is_generated_once(tmp_path: Path) -> None:
    private = ssh_key.ensure_key(tmp_path)
    assert private == tmp_path / "ssh/id_ed25519"
    public = ssh_key.public_key(private)
    assert public.startswith("ssh-ed25519 ")
    assert ssh_key.ensure_key(tmp_path) == private
    assert ssh_key.public_key(private) == public


def test_ssh_key_without_its_public_half_is_replaced(tmp_path: Path) -> None:
    private = ssh_key.ensure_key(tmp_path)
    old = private.read_text()
    private.with_name("id_ed25519.pub").unlink()
    ssh_key.ensure_key(tmp_path)
    assert private.read_text() != old
    assert ssh_key.public_key(private).startswith("ssh-ed25519 ")


def test_recipe_hash_follows_the_recipe_file(tmp_path: Path) -> None:
    shutil.copy(recipe.IMAGES_DIR / "bookworm-i386.toml", tmp_path)
    original = recipe_hash(recipe.load("bookworm-i386", tmp_path))
    assert original == recipe_hash(recipe.load("bookworm-i386"))
    with open(tmp_path / "bookworm-i386.toml", "a") as f:
        f.write("# changed\n")
    assert recipe_hash(recipe.load("bookworm-i386", tmp_path)) != original


def test_the_image_hash_covers_every_module_the_builder_loads() -> None:
    # The builder and its mmdebstrap hooks (python -m vm.images.customize), in a fresh interpreter.
    code = ("import sys, vm.images.build, vm.images.customize; "
            "print('\\n'.join(m.__file__ for n, m in sys.modules.items() if n.split('.')[0] == 'vm'))")
    loaded = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                            cwd=build.REPO_DIR).stdout.split()
    hashed = {build.VM_DIR / source for source in build.BUILDER_SOURCES}
    assert {Path(path) for path in loaded} == hashed
