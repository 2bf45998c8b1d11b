"""Image recipes: the declarative TOML files in images/, parsed and validated.

A recipe names a Debian suite and architecture, the kernel package and command
line, the packages and PyPI wheels to install, the root disk size, and how QEMU
runs the image. A recipe may declare boot variants (for example trixie-amd64's
``noia32``): the same image booted with more kernel arguments, as a boot target
named ``<recipe>-<variant>``.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vm import REPO_DIR

IMAGES_DIR = REPO_DIR / "images"

# Debian architecture -> the manylinux platform tag of its PyPI wheels.
WHEEL_PLATFORMS = {"amd64": "manylinux1_x86_64", "i386": "manylinux1_i686"}


class RecipeError(ValueError):
    """A recipe that cannot be used; the message is one line for the user."""


@dataclass(frozen=True)
class QemuSettings:
    system: str
    machine: str
    cpu: str
    memory_mib: int


@dataclass(frozen=True)
class Recipe:
    name: str
    path: Path
    suite: str
    architecture: str
    kernel_package: str
    cmdline: str
    packages: tuple[str, ...]
    wheels: tuple[str, ...]
    disk_mib: int
    qemu: QemuSettings
    # variant name -> kernel arguments appended to cmdline
    variants: dict[str, str]

    @property
    def wheel_platform(self) -> str:
        return WHEEL_PLATFORMS[self.architecture]

    def boot_targets(self) -> dict[str, str]:
        """Boot target name -> kernel command line: the image itself and each variant."""
        targets = {self.name: self.cmdline}
        for variant, extra in self.variants.items():
            targets[f"{self.name}-{variant}"] = f"{self.cmdline} {extra}"
        return targets


def all_names(images_dir: Path = IMAGES_DIR) -> list[str]:
    """Names of every recipe in images_dir, sorted."""
    return sorted(p.stem for p in images_dir.glob("*.toml"))


def load(name: str, images_dir: Path = IMAGES_DIR) -> Recipe:
    """Parse and validate the recipe images_dir/<name>.toml."""
    path = images_dir / f"{name}.toml"
    if "/" in name or not path.is_file():
        known = ", ".join(all_names(images_dir)) or "none"
        raise RecipeError(f"unknown image {name!r} (known: {known})")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise RecipeError(f"{path}: not valid TOML: {e}") from None
    return _parse(name, path, data)


def all_boot_targets(images_dir: Path = IMAGES_DIR) -> dict[str, tuple[Recipe, str]]:
    """Every boot target of every recipe: target name -> (recipe, kernel command line)."""
    targets: dict[str, tuple[Recipe, str]] = {}
    for name in all_names(images_dir):
        recipe = load(name, images_dir)
        for target, cmdline in recipe.boot_targets().items():
            targets[target] = (recipe, cmdline)
    return targets


class _Table:
    """Typed access to one TOML table, raising RecipeError on any mismatch."""

    def __init__(self, path: Path, where: str, data: dict[str, Any], fields: set[str]) -> None:
        self.path = path
        self.where = where
        self.data = data
        unknown = sorted(set(data) - fields)
        if unknown:
            raise RecipeError(f"{path}: unknown field {self._name(unknown[0])!r}")

    def _name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def _get(self, key: str, kind: type, kind_name: str) -> Any:
        if key not in self.data:
            raise RecipeError(f"{self.path}: missing field {self._name(key)!r}")
        value = self.data[key]
        # bool is an int in Python; a recipe's true is never a number.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise RecipeError(
                f"{self.path}: field {self._name(key)!r} must be {kind_name}, "
                f"not {type(value).__name__}"
            )
        return value

    def string(self, key: str) -> str:
        value: str = self._get(key, str, "a string")
        if not value.strip():
            raise RecipeError(f"{self.path}: field {self._name(key)!r} is empty")
        return value

    def positive_int(self, key: str) -> int:
        value: int = self._get(key, int, "an integer")
        if value <= 0:
            raise RecipeError(f"{self.path}: field {self._name(key)!r} must be positive")
        return value

    def strings(self, key: str) -> tuple[str, ...]:
        values: list[Any] = self._get(key, list, "a list of strings")
        if not all(isinstance(v, str) and v.strip() for v in values):
            raise RecipeError(
                f"{self.path}: field {self._name(key)!r} must be a list of non-empty strings"
            )
        return tuple(values)

    def table(self, key: str, fields: set[str]) -> _Table:
        value: dict[str, Any] = self._get(key, dict, "a table")
        return _Table(self.path, self._name(key), value, fields)

    def optional_tables(self, key: str, fields: set[str]) -> dict[str, _Table]:
        """A table of tables (like [variants.NAME]), each with the given fields."""
        if key not in self.data:
            return {}
        outer = self.table(key, set(self.data[key]) if isinstance(self.data[key], dict) else set())
        return {inner: outer.table(inner, fields) for inner in outer.data}


_TOP_FIELDS = {
    "suite", "architecture", "kernel_package", "cmdline", "packages", "wheels",
    "disk_mib", "qemu", "variants",
}
_QEMU_FIELDS = {"system", "machine", "cpu", "memory_mib"}


def _parse(name: str, path: Path, data: dict[str, Any]) -> Recipe:
    top = _Table(path, "", data, _TOP_FIELDS)
    architecture = top.string("architecture")
    if architecture not in WHEEL_PLATFORMS:
        known = ", ".join(sorted(WHEEL_PLATFORMS))
        raise RecipeError(
            f"{path}: architecture {architecture!r} is not supported (supported: {known})"
        )
    qemu = top.table("qemu", _QEMU_FIELDS)
    variants = {
        variant: table.string("cmdline_append")
        for variant, table in top.optional_tables("variants", {"cmdline_append"}).items()
    }
    return Recipe(
        name=name,
        path=path,
        suite=top.string("suite"),
        architecture=architecture,
        kernel_package=top.string("kernel_package"),
        cmdline=top.string("cmdline"),
        packages=top.strings("packages"),
        wheels=top.strings("wheels"),
        disk_mib=top.positive_int("disk_mib"),
        qemu=QemuSettings(
            system=qemu.string("system"),
            machine=qemu.string("machine"),
            cpu=qemu.string("cpu"),
            memory_mib=qemu.positive_int("memory_mib"),
        ),
        variants=variants,
    )
