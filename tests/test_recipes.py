"""Unit tests of the image recipes: the shipped ones, and validation of bad ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from vm.images import recipe
from vm.images.recipe import RecipeError

VALID: dict[str, Any] = {
    "suite": "bookworm",
    "architecture": "amd64",
    "kernel_package": "linux-image-amd64",
    "cmdline": "root=/dev/vda console=ttyS0",
    "packages": ["python3"],
    "wheels": ["keystone-engine==0.9.2"],
    "disk_mib": 2048,
    "qemu": {"system": "qemu-system-x86_64", "machine": "q35", "cpu": "max", "memory_mib": 1024},
}


def to_toml(data: dict[str, Any], prefix: str = "") -> str:
    """Enough of a TOML writer for recipes: scalars and lists first, then tables."""
    lines = []
    for key, value in data.items():
        if not isinstance(value, dict):
            lines.append(f"{key} = {_toml_value(value)}")
    for key, value in data.items():
        if isinstance(value, dict):
            name = f"{prefix}{key}"
            lines.append(f"\n[{name}]\n{to_toml(value, name + '.')}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return str(value)


def write_recipe(directory: Path, name: str, data: dict[str, Any]) -> Path:
    path = directory / f"{name}.toml"
    path.write_text(to_toml(data))
    return path


def load_error(tmp_path: Path, data: dict[str, Any]) -> str:
    write_recipe(tmp_path, "bad", data)
    with pytest.raises(RecipeError) as error:
        recipe.load("bad", tmp_path)
    message = str(error.value)
    assert "\n" not in message
    return message


# --- the shipped recipes ------------------------------------------------------


def test_shipped_recipes_are_the_three_lab_images() -> None:
    assert recipe.all_names() == ["bookworm-amd64", "bookworm-i386", "trixie-amd64"]


@pytest.mark.parametrize("name", recipe.all_names())
def test_shipped_recipe_loads_with_a_serial_console_and_ptrace(name: str) -> None:
    rec = recipe.load(name)
    assert rec.name == name
    assert "console=ttyS0" in rec.cmdline
    assert "python3-ptrace" in rec.packages
    assert any(w.startswith("keystone-engine==") for w in rec.wheels)


def test_i386_recipe_is_32_bit_with_a_686_kernel() -> None:
    rec = recipe.load("bookworm-i386")
    assert rec.architecture == "i386"
    assert rec.kernel_package == "linux-image-686"
    assert rec.wheel_platform == "manylinux1_i686"


def test_trixie_has_a_noia32_boot_target() -> None:
    rec = recipe.load("trixie-amd64")
    targets = rec.boot_targets()
    assert list(targets) == ["trixie-amd64", "trixie-amd64-noia32"]
    assert targets["trixie-amd64"] == rec.cmdline
    assert targets["trixie-amd64-noia32"] == rec.cmdline + " ia32_emulation=0"


def test_all_boot_targets_lists_four_targets() -> None:
    targets = recipe.all_boot_targets()
    assert sorted(targets) == [
        "bookworm-amd64", "bookworm-i386", "trixie-amd64", "trixie-amd64-noia32",
    ]
    rec, cmdline = targets["trixie-amd64-noia32"]
    assert rec.name == "trixie-amd64"
    assert cmdline.endswith("ia32_emulation=0")


# --- validation ---------------------------------------------------------------


def test_valid_recipe_parses_every_field(tmp_path: Path) -> None:
    data = {**VALID, "variants": {"noia32": {"cmdline_append": "ia32_emulation=0"}}}
    write_recipe(tmp_path, "good", data)
    rec = recipe.load("good", tmp_path)
    assert rec.suite == "bookworm"
    assert rec.packages == ("python3",)
    assert rec.disk_mib == 2048
    assert rec.qemu == recipe.QemuSettings("qemu-system-x86_64", "q35", "max", 1024)
    assert rec.variants == {"noia32": "ia32_emulation=0"}
    assert rec.path == tmp_path / "good.toml"


def test_unknown_image_names_the_known_ones(tmp_path: Path) -> None:
    write_recipe(tmp_path, "good", VALID)
    with pytest.raises(RecipeError, match=r"unknown image 'nope' \(known: good\)"):
        recipe.load("nope", tmp_path)


def test_name_cannot_reach_outside_the_images_directory(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    write_recipe(tmp_path, "outside", VALID)
    with pytest.raises(RecipeError, match="unknown image"):
        recipe.load("../outside", images)


@pytest.mark.parametrize("field", sorted(VALID))
def test_missing_field_is_named(tmp_path: Path, field: str) -> None:
    data = {k: v for k, v in VALID.items() if k != field}
    assert f"missing field '{field}'" in load_error(tmp_path, data)


def test_missing_qemu_field_is_named_with_its_table(tmp_path: Path) -> None:
    qemu = {k: v for k, v in VALID["qemu"].items() if k != "cpu"}
    assert "missing field 'qemu.cpu'" in load_error(tmp_path, {**VALID, "qemu": qemu})


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("suite", 12, "'suite' must be a string, not int"),
        ("disk_mib", "2048", "'disk_mib' must be an integer, not str"),
        ("disk_mib", True, "'disk_mib' must be an integer, not bool"),
        ("disk_mib", 0, "'disk_mib' must be positive"),
        ("packages", "python3", "'packages' must be a list of strings, not str"),
        ("packages", ["python3", 3], "'packages' must be a list of non-empty strings"),
        ("wheels", [""], "'wheels' must be a list of non-empty strings"),
        ("cmdline", "  ", "'cmdline' is empty"),
        ("qemu", "q35", "'qemu' must be a table, not str"),
        ("variants", {"noia32": "ia32_emulation=0"}, "'variants.noia32' must be a table"),
        ("variants", {"noia32": {}}, "missing field 'variants.noia32.cmdline_append'"),
    ],
)
def test_wrong_type_is_named(tmp_path: Path, field: str, value: Any, expected: str) -> None:
    assert expected in load_error(tmp_path, {**VALID, field: value})


def test_wrong_type_inside_qemu_table(tmp_path: Path) -> None:
    qemu = {**VALID["qemu"], "memory_mib": "1G"}
    message = load_error(tmp_path, {**VALID, "qemu": qemu})
    assert "'qemu.memory_mib' must be an integer, not str" in message


def test_unknown_field_is_rejected(tmp_path: Path) -> None:
    assert "unknown field 'memory'" in load_error(tmp_path, {**VALID, "memory": 1024})


def test_unknown_field_in_variant_is_rejected(tmp_path: Path) -> None:
    data = {**VALID, "variants": {"x": {"cmdline_append": "a", "cmdline": "b"}}}
    assert "unknown field 'variants.x.cmdline'" in load_error(tmp_path, data)


def test_unsupported_architecture(tmp_path: Path) -> None:
    message = load_error(tmp_path, {**VALID, "architecture": "arm64"})
    assert "architecture 'arm64' is not supported (supported: amd64, i386)" in message


def test_invalid_toml_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "broken.toml").write_text('suite = "bookworm\n')
    with pytest.raises(RecipeError, match="not valid TOML") as error:
        recipe.load("broken", tmp_path)
    assert "\n" not in str(error.value)
