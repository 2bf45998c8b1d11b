"""The Vagrant path of the lab: the Vagrantfile parses (the machines themselves run the
lab tests: tests/lab/test_lab.py, through the plugin's Vagrant backend).

Skipped unless ``MVEE_VAGRANT=1``: `vagrant validate` on the Vagrantfile, in both network
set-ups (needs vagrant; with libvirtd running, the libvirt provider's checks too).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ENABLED = os.environ.get("MVEE_VAGRANT") == "1"

pytestmark = [
    pytest.mark.vagrant,
    pytest.mark.skipif(not ENABLED, reason="Vagrantfile check not enabled: MVEE_VAGRANT=1"),
]


@pytest.mark.parametrize("isolated", ["1", "0"])
def test_vagrantfile_validates(isolated: str) -> None:
    if shutil.which("vagrant") is None:
        pytest.skip("vagrant is not installed (scripts/vagrant-lab installs it)")
    env = {**os.environ, "MVEE_VAGRANT_ISOLATED": isolated}
    argv = ["vagrant", "validate"]
    # Without a libvirt daemon to ask, check everything but the provider's section.
    if not Path("/run/libvirt/libvirt-sock").exists() or isolated == "0":
        argv.append("--ignore-provider")
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "validated successfully" in proc.stdout
