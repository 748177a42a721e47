"""Child-process plumbing shared by the servers (and by servers other parts define, such as the FHIR test server):
free ports, helper tools, start/stop/kill/pause, a minimal HTTP request for readiness probes."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
import weakref
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypedDict

from wardwatch.core.errors import ServerStartError, WaitTimeoutError
from wardwatch.core.lifecycle import opening
from wardwatch.core.waiting import wait_for

LOOPBACK = "127.0.0.1"
_SETUP_HINT = "run scripts/setup"


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port that is free on ``host`` now (another process may still take it later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _which(binary: str, package: str) -> str:
    """Return the path of ``binary`` or raise with the package that provides it."""
    found = shutil.which(binary)
    if found is None:
        raise ServerStartError(binary, f"{binary} not found: {_SETUP_HINT} (apt package {package})")
    return found


def _run_tool(argv: list[str], package: str, hint: str = "") -> None:
    """Run a short helper command (openssl, mosquitto_passwd); raise with its stderr if it fails."""
    exe = _which(argv[0], package)
    what = f"`{argv[0]} {argv[1]}`"
    try:
        done = subprocess.run([exe, *argv[1:]], capture_output=True, text=True, timeout=60, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ServerStartError(argv[0], f"{what} did not finish within 60 s") from exc
    if done.returncode != 0:
        raise ServerStartError(
            argv[0], f"{what} failed with exit status {done.returncode}: {done.stderr.strip()}{hint}"
        )


# --- child process plumbing ---------------------------------------------------------------------


def _reap(proc: subprocess.Popen[bytes]) -> None:
    """Kill and reap ``proc`` if it still runs (also the at-exit safety net)."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()


class ChildOptions(TypedDict, total=False):
    """The keyword arguments every :class:`ChildServer` takes (a subclass passes them on unchanged).

    ``host`` to listen on (loopback); ``binary`` to run (the server's own name, looked up on PATH);
    ``directory`` for config, data and log (a fresh temporary one, removed on close unless
    ``keep_directory``); ``startup_timeout`` and ``stop_timeout`` in seconds (the server's defaults).
    """

    host: str
    binary: str
    directory: Path | str | None
    keep_directory: bool
    startup_timeout: float
    stop_timeout: float


class ChildServer:
    """A server run as a child process in its own directory; subclasses say how to configure and probe it."""

    _name = "server"
    _package = "server"

    _default_startup_timeout = 10.0
    _default_stop_timeout = 10.0

    def __init__(
        self,
        *,
        host: str = LOOPBACK,
        binary: str | None = None,
        directory: Path | str | None = None,
        keep_directory: bool = False,
        startup_timeout: float | None = None,
        stop_timeout: float | None = None,
    ) -> None:
        self._binary = binary or self._name
        self.host = host
        if directory is None:
            self._directory = Path(tempfile.mkdtemp(prefix=f"wardwatch-{self._name}-"))
            self._owns_directory = not keep_directory
        else:
            self._directory = Path(directory)
            self._owns_directory = False
        self._startup_timeout = self._default_startup_timeout if startup_timeout is None else startup_timeout
        self._stop_timeout = self._default_stop_timeout if stop_timeout is None else stop_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._stack = contextlib.AsyncExitStack()
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._paused = False
        self._started_once = False
        self._ports_given = False

    def _port(self, given: int | None) -> int:
        """``given`` (and then no retry on other ports if the first start fails), else a free port on the host."""
        if given is not None:
            self._ports_given = True
            return given
        return free_port(self.host)

    # Subclass hooks.
    def _prepare_first_start(self) -> None:
        """Make the files that stay the same across restarts (certificates, password file)."""

    def _write_config(self) -> None:
        raise NotImplementedError

    def _argv(self, exe: str) -> list[str]:
        raise NotImplementedError

    def _pick_new_ports(self) -> None:
        raise NotImplementedError

    async def _probe(self) -> bool:
        raise NotImplementedError

    async def _after_first_ready(self) -> None:
        """Run once, after the very first successful start."""

    @property
    def directory(self) -> Path:
        """The server's own directory: config, data and log."""
        return self._directory

    @property
    def config_path(self) -> Path:
        """The generated config file (rewritten on every start)."""
        raise NotImplementedError

    @property
    def log_path(self) -> Path:
        """The server's stdout and stderr, appended to across restarts."""
        return self._directory / f"{self._name}.log"

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs, else None."""
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def running(self) -> bool:
        """True while the child process exists (it may be paused)."""
        return self._proc is not None and self._proc.poll() is None

    def log_text(self) -> str:
        """The whole log so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _log_tail(self, offset: int, lines: int = 40) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(offset)
                text = log.read().decode(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.rstrip().splitlines()[-lines:])

    async def start(self) -> None:
        """Start the server and wait until it is ready; a no-op if it runs already.

        The first start picks new free ports if the chosen ones turn out to be taken; later
        starts reuse the same ports and data, like a restarted production server.
        """
        if self.running:
            return
        self._forget()  # a child that died by itself
        exe = _which(self._binary, self._package)
        first = not self._started_once
        if first:
            self._directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            await asyncio.to_thread(self._prepare_first_start)
        attempts = 5 if first and not self._ports_given else 1
        for attempt in range(1, attempts + 1):
            self._write_config()
            offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            proc = self._spawn(exe)
            problem = await self._wait_ready(proc)
            if problem is None:
                break
            self._forget()
            tail = self._log_tail(offset)
            if attempt < attempts and "address already in use" in tail.lower():
                self._pick_new_ports()
                continue
            raise ServerStartError(
                self._name,
                f"{problem}; the log below says why (config {self.config_path}, log {self.log_path})",
                log_tail=tail,
            )
        self._started_once = True
        if first:
            try:
                await self._after_first_ready()
            except BaseException:
                await self.kill()
                raise

    def _spawn(self, exe: str) -> subprocess.Popen[bytes]:
        """Start the child (Popen, not asyncio's subprocesses: the server is not tied to one loop)."""
        with self.log_path.open("ab") as log:
            proc = subprocess.Popen(
                self._argv(exe),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self._directory,
                # Own session: Ctrl-C in a terminal reaches only us, and we stop the server in order.
                start_new_session=True,
            )
        self._proc = proc
        self._paused = False
        self._finalizer = weakref.finalize(self, _reap, proc)
        return proc

    async def _wait_ready(self, proc: subprocess.Popen[bytes]) -> str | None:
        """Wait for the probe; return None when ready, else what went wrong (the child is reaped)."""

        class _ExitedError(Exception):
            pass

        async def ready() -> bool:
            if proc.poll() is not None:
                raise _ExitedError
            return await self._probe()

        try:
            await wait_for(ready, self._startup_timeout, what=f"{self._name} to accept connections")
        except _ExitedError:
            return f"exited with status {proc.returncode} while starting"
        except WaitTimeoutError:
            _reap(proc)
            return f"not ready within {self._startup_timeout:g} s"
        except BaseException:
            _reap(proc)
            raise
        return None

    def _forget(self) -> None:
        if self._finalizer is not None:
            self._finalizer()  # reaps the child if it still runs
        self._finalizer = None
        self._proc = None
        self._paused = False

    async def stop(self) -> None:
        """Stop gracefully (SIGTERM; SIGKILL after ``stop_timeout`` s); keeps directory, data and ports."""
        proc = self._proc
        if proc is None:
            return
        try:
            if proc.poll() is None:
                proc.terminate()
                if self._paused:
                    proc.send_signal(signal.SIGCONT)
                try:
                    await wait_for(lambda: proc.poll() is not None, self._stop_timeout, what="exit")
                except WaitTimeoutError:
                    proc.kill()
                    await wait_for(lambda: proc.poll() is not None, 10, what=f"{self._name} to die")
        finally:
            self._forget()

    async def kill(self) -> None:
        """Kill at once (SIGKILL), like a crash or power loss; keeps directory, data and ports."""
        proc = self._proc
        if proc is None:
            return
        try:
            if proc.poll() is None:
                proc.kill()
                await wait_for(lambda: proc.poll() is not None, 10, what=f"{self._name} to die")
        finally:
            self._forget()

    async def restart(self) -> None:
        """Stop gracefully, then start again on the same ports with the same data."""
        await self.stop()
        await self.start()

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open but nothing is answered."""
        if self._proc is not None and self.running:
            self._proc.send_signal(signal.SIGSTOP)
            self._paused = True

    def resume(self) -> None:
        """Continue a paused server (SIGCONT)."""
        if self._proc is not None and self.running:
            self._proc.send_signal(signal.SIGCONT)
            self._paused = False

    def _remove_directory(self) -> None:
        if self._owns_directory:
            shutil.rmtree(self._directory, ignore_errors=True)

    async def __aenter__(self) -> Self:
        async with opening(self._stack) as stack:
            stack.callback(self._remove_directory)  # also if starting fails
            await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        async with self._stack:  # the directory goes once the server has stopped, or failed to
            await self.stop()


async def http_request(
    host: str,
    port: int,
    method: str,
    target: str,
    *,
    body: bytes = b"",
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, bytes]:
    """A minimal HTTP/1.0 request (no keep-alive, no chunking): returns status and body."""
    head = [f"{method} {target} HTTP/1.0", f"Host: {host}:{port}", f"Content-Length: {len(body)}"]
    head += [f"{name}: {value}" for name, value in (headers or {}).items()]
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
            await writer.drain()
            response = await reader.read()
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    status_line, _, rest = response.partition(b"\r\n")
    _, _, payload = rest.partition(b"\r\n\r\n")
    parts = status_line.split()
    if len(parts) < 2 or not parts[1].isdigit():
        raise ConnectionError(f"not an HTTP response: {status_line[:80]!r}")
    return int(parts[1]), payload
