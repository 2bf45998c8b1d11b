"""The builder's command line on bad input: one line, non-zero, nothing in the cache."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def build_images(cache: Path, *names: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vm.images.build", *names],
        env={**os.environ, "MVEE_LAB_CACHE": str(cache)}, capture_output=True, text=True,
    )


def test_unknown_image_is_one_line_and_builds_nothing(tmp_path: Path) -> None:
    result = build_images(tmp_path, "bookworm-i386", "sid-sparc")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "build-images: unknown image 'sid-sparc' "
        "(known: bookworm-amd64, bookworm-i386, trixie-amd64)"
    ]
    assert list(tmp_path.iterdir()) == []
