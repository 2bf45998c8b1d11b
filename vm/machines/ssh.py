"""SSH to a lab machine with paramiko: commands with status, output and a deadline; sftp upload."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paramiko


class SshError(Exception):
    """The machine could not be reached, or a command did not finish in time."""


@dataclass(frozen=True)
class CommandResult:
    command: str
    status: int
    stdout: bytes
    stderr: bytes
    seconds: float

    @property
    def text(self) -> str:
        return self.stdout.decode(errors="replace")

    def check(self) -> CommandResult:
        if self.status != 0:
            raise SshError(f"`{self.command}` exited {self.status}: "
                           f"{self.stderr.decode(errors='replace').strip()[-500:]}")
        return self


class SshClient:
    """One authenticated SSH connection (root by default, key only, host key not pinned:
    every lab VM is fresh and reached through 127.0.0.1)."""

    def __init__(self, host: str, port: int, user: str, key_file: Path, connect_timeout: float = 10.0
                 ) -> None:
        self.host, self.port, self.user, self.key_file = host, port, user, key_file
        self.client = paramiko.SSHClient()
        self.client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        try:
            self.client.connect(
                host, port=port, username=user, key_filename=str(key_file), timeout=connect_timeout,
                banner_timeout=connect_timeout, auth_timeout=connect_timeout,
                allow_agent=False, look_for_keys=False,
            )
        except (OSError, paramiko.SSHException, EOFError) as e:
            self.client.close()
            raise SshError(f"{user}@{host}:{port}: {type(e).__name__}: {e}") from e
        transport = self.client.get_transport()
        if transport is not None:
            transport.set_keepalive(15)

    def run(self, command: str, timeout: float = 60.0, stdin: bytes = b"") -> CommandResult:
        """Run command (a shell line); SshError if it has not finished within timeout seconds."""
        start = time.monotonic()
        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            raise SshError(f"{self.host}:{self.port}: the connection is closed")
        channel = transport.open_session(timeout=timeout)
        out, err = bytearray(), bytearray()
        try:
            channel.exec_command(command)
            if stdin:
                channel.sendall(stdin)
            channel.shutdown_write()
            # Read until the server's EOF (sent after all of stdout) and the exit status.
            while True:
                if channel.recv_ready():
                    out += channel.recv(65536)
                elif channel.recv_stderr_ready():
                    err += channel.recv_stderr(65536)
                elif channel.eof_received and channel.exit_status_ready() or channel.closed:
                    break
                elif time.monotonic() - start > timeout:
                    raise SshError(f"`{command}` did not finish within {timeout:g} s "
                                   f"(stdout so far: {bytes(out[-300:])!r})")
                else:
                    channel.status_event.wait(0.01)
            while channel.recv_ready():
                out += channel.recv(65536)
            while channel.recv_stderr_ready():
                err += channel.recv_stderr(65536)
            status = channel.recv_exit_status()
        finally:
            channel.close()
        return CommandResult(command, status, bytes(out), bytes(err), time.monotonic() - start)

    @contextlib.contextmanager
    def hold(self, command: str, ready: bytes, timeout: float) -> Iterator[None]:
        """command kept running for the block, entered once it has printed ready; at the end
        its stdin is closed and its exit waited for (up to 30 s). SshError, with its output,
        if it exits first or has not printed ready within timeout seconds."""
        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            raise SshError(f"{self.host}:{self.port}: the connection is closed")
        channel = transport.open_session(timeout=30)
        try:
            channel.exec_command(command)
            out, deadline = bytearray(), time.monotonic() + timeout
            while ready not in out:
                if channel.recv_ready():
                    out += channel.recv(4096)
                elif channel.exit_status_ready():
                    while channel.recv_ready():
                        out += channel.recv(4096)
                    status, text = channel.recv_exit_status(), out.decode(errors="replace").strip()
                    raise SshError(f"exited {status}: {text}")
                elif time.monotonic() > deadline:
                    raise SshError(f"`{command}` did not print {ready!r} within {timeout:g} s")
                else:
                    time.sleep(0.05)
            yield
            channel.shutdown_write()
            end = time.monotonic() + 30
            while not channel.exit_status_ready() and time.monotonic() < end:
                time.sleep(0.05)
        finally:
            channel.close()

    def put(self, local: Path, remote: str, mode: int | None = None) -> None:
        with self.client.open_sftp() as sftp:
            sftp.put(str(local), remote)
            if mode is not None:
                sftp.chmod(remote, mode)

    def put_bytes(self, data: bytes, remote: str, mode: int | None = None) -> None:
        with self.client.open_sftp() as sftp:
            with sftp.open(remote, "wb") as f:
                f.write(data)
            if mode is not None:
                sftp.chmod(remote, mode)

    def close(self) -> None:
        self.client.close()
