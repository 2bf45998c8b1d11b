"""The Vagrant path of the lab: the Vagrantfile parses, and each Vagrant machine answers SSH.

Deselected unless enabled, with the reason shown (``-ra``):

- ``MVEE_VAGRANT=1``: `vagrant validate` on the Vagrantfile, in both network set-ups
  (needs vagrant; with libvirtd running, the libvirt provider's checks too).
- ``MVEE_VAGRANT_HOSTS=FILE``: the inventory scripts/vagrant-lab wrote, with the
  machines up: each answers SSH with the lab's key, runs the expected kernel
  architecture and command line, and its Python has ptrace and keystone.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HOSTS_FILE = os.environ.get("MVEE_VAGRANT_HOSTS")
ENABLED = os.environ.get("MVEE_VAGRANT") == "1" or bool(HOSTS_FILE)

pytestmark = [
    pytest.mark.vagrant,
    pytest.mark.skipif(not ENABLED, reason="Vagrant lab not enabled: MVEE_VAGRANT=1 or "
                       "MVEE_VAGRANT_HOSTS=<inventory> (scripts/vagrant-lab sets it)"),
]


def _hosts() -> list[dict]:
    if not HOSTS_FILE:
        return []
    return json.loads(Path(HOSTS_FILE).read_text())


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


@pytest.mark.skipif(not HOSTS_FILE, reason="no MVEE_VAGRANT_HOSTS inventory: machines not up")
@pytest.mark.parametrize("host", _hosts(), ids=lambda h: h["name"])
def test_machine_answers_ssh(host: dict) -> None:
    import paramiko

    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect(host["host"], port=host["port"], username=host["user"], key_filename=host["key"],
                   timeout=30, allow_agent=False, look_for_keys=False)
    try:
        def run(command: str) -> str:
            _, out, err = client.exec_command(command, timeout=120)
            status = out.channel.recv_exit_status()
            text = out.read().decode()
            assert status == 0, f"{command}: exit {status}: {text}{err.read().decode()}"
            return text.strip()

        machine = run("uname -m")
        assert machine == ("i686" if "i386" in host["target"] else "x86_64")
        cmdline = run("cat /proc/cmdline")
        assert ("ia32_emulation=0" in cmdline) == host["target"].endswith("-noia32")
        assert run("python3 -c 'import ptrace, keystone; print(\"ok\")'") == "ok"
    finally:
        client.close()
