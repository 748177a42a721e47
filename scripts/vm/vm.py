"""The QEMU VM with real BlueZ for tests/gateway_vm: build its initrd, boot it, run one job in it.

The VM runs Debian's kernel (Bluetooth as modules, fetched into ``.cache/vm/`` by
``scripts/vm/fetch-kernel``) under software emulation, with the host's root shared read-only over
9p beneath a tmpfs overlay (so the guest uses the host's BlueZ, D-Bus and ``.venv``) and one
writable shared folder. A busybox initrd loads the modules (virtio, 9p, overlay, Bluetooth,
``hci_vhci``) and hands over to ``scripts/vm/guest-run``, which starts D-Bus, runs the job and
powers off. Nothing is downloaded here.

    python scripts/vm/vm.py check                       # exit 1 (reason printed) if the VM cannot run
    python scripts/vm/vm.py initrd                      # build the initrd if stale, print its path
    python scripts/vm/vm.py run --shared DIR -- CMD...  # boot, run CMD (in the repo) in the guest, print JSON
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import os
import shlex
import shutil
import stat
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Final

REPO: Final = Path(__file__).resolve().parents[2]
CACHE: Final = REPO / ".cache" / "vm"
HERE: Final = Path(__file__).resolve().parent
BUSYBOX: Final = Path("/bin/busybox")
QEMU: Final = "qemu-system-x86_64"
HOST_TOOLS: Final = ("bluetoothd", "btmgmt", "dbus-daemon")
#: Modules the guest loads (their dependencies first, found from each module's .modinfo).
ROOT_MODULES: Final = (
    "virtio_pci",
    "virtio_rng",
    "9pnet_virtio",
    "9p",
    "overlay",
    "crc16",
    "ecdh_generic",
    "cmac",
    "ecb",
    "algif_hash",  # bluetoothd's own crypto goes through AF_ALG sockets
    "algif_skcipher",
    "bluetooth",
    "hci_vhci",
)


@dataclasses.dataclass(frozen=True)
class Kernel:
    """An unpacked Debian kernel package."""

    version: str  # e.g. 6.1.0-56-amd64
    vmlinuz: Path
    modules: Path  # lib/modules/<version>


def find_kernel(cache: Path = CACHE) -> Kernel | None:
    """The newest kernel unpacked in ``cache`` by ``scripts/vm/fetch-kernel``, if any."""
    found = []
    for root in sorted(cache.glob("kernel-*")):
        if not (root / ".unpacked").is_file():
            continue
        for vmlinuz in sorted((root / "boot").glob("vmlinuz-*")):
            version = vmlinuz.name.removeprefix("vmlinuz-")
            modules = root / "lib" / "modules" / version
            if modules.is_dir():
                found.append(Kernel(version, vmlinuz, modules))
    return found[-1] if found else None


def unavailable(cache: Path = CACHE) -> str | None:
    """Why the VM cannot run here (None if it can)."""
    if shutil.which(QEMU) is None:
        return f"{QEMU} not found (install qemu-system-x86: run scripts/setup)"
    if not BUSYBOX.is_file():
        return f"{BUSYBOX} not found (install busybox-static: run scripts/setup)"
    path = f"{os.environ.get('PATH', os.defpath)}:/usr/sbin:/sbin"
    missing = [tool for tool in HOST_TOOLS if shutil.which(tool, path=path) is None]
    if missing:
        return f"{', '.join(missing)} not found (install bluez and dbus: run scripts/setup)"
    if find_kernel(cache) is None:
        return f"no kernel package unpacked in {cache} (run scripts/setup, which runs scripts/vm/fetch-kernel)"
    return None


# -- the initrd ----------------------------------------------------------------------------------


def _modinfo(ko: bytes) -> dict[str, str]:
    """The ``.modinfo`` key/value strings of a kernel module (an ELF64 little-endian object)."""
    if ko[:4] != b"\x7fELF" or ko[4] != 2 or ko[5] != 1:
        raise ValueError("not an ELF64 little-endian module")
    shoff = struct.unpack_from("<Q", ko, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", ko, 0x3A)

    def section(index: int) -> tuple[int, int, int]:
        name, _type, _flags, _addr, offset, size = struct.unpack_from("<IIQQQQ", ko, shoff + index * shentsize)
        return name, offset, size

    _, strtab, _ = section(shstrndx)
    for index in range(shnum):
        name, offset, size = section(index)
        if ko[strtab + name : ko.index(b"\0", strtab + name)] == b".modinfo":
            pairs = (entry.split(b"=", 1) for entry in ko[offset : offset + size].split(b"\0") if b"=" in entry)
            return {key.decode(): value.decode(errors="replace") for key, value in pairs}
    return {}


def _norm(name: str) -> str:
    return name.replace("-", "_")


def module_order(modules: Path, roots: tuple[str, ...] = ROOT_MODULES) -> list[tuple[str, bytes]]:
    """``(name, contents)`` of ``roots`` and everything they depend on, dependencies first, builtins left out."""
    index = {_norm(path.name.removesuffix(".ko")): path for path in modules.rglob("*.ko")}
    builtin = {
        _norm(Path(line).name.removesuffix(".ko"))
        for line in (modules / "modules.builtin").read_text().split()
        if line.endswith(".ko")
    }
    order: list[tuple[str, bytes]] = []
    done: set[str] = set()

    def visit(name: str, chain: tuple[str, ...]) -> None:
        name = _norm(name)
        if name in done or name in builtin:
            return
        if name in chain:
            raise ValueError(f"module dependency cycle: {' -> '.join((*chain, name))}")
        path = index.get(name)
        if path is None:
            raise FileNotFoundError(f"module {name} not in {modules}")
        contents = path.read_bytes()
        for dep in filter(None, _modinfo(contents).get("depends", "").split(",")):
            visit(dep, (*chain, name))
        done.add(name)
        order.append((name, contents))

    for root in roots:
        visit(root, ())
    return order


class _Cpio:
    """A ``newc`` cpio archive (the initramfs format), built in memory."""

    def __init__(self) -> None:
        self.out = io.BytesIO()
        self.inode = 1

    def add(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        encoded = name.encode() + b"\0"
        fields = (self.inode, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0)
        self.inode += 1
        self.out.write(b"070701" + b"".join(f"{field:08X}".encode() for field in fields) + encoded)
        self.out.write(b"\0" * (-self.out.tell() % 4))
        self.out.write(data)
        self.out.write(b"\0" * (-self.out.tell() % 4))

    def finish(self) -> bytes:
        self.add("TRAILER!!!", 0)
        return self.out.getvalue()


def build_initrd(kernel: Kernel, cache: Path = CACHE) -> Path:
    """The initrd for ``kernel`` (rebuilt only when its inputs change); returns its path."""
    init = (HERE / "initrd-init").read_bytes()
    busybox = BUSYBOX.read_bytes()
    modules = module_order(kernel.modules)
    digest = hashlib.sha256(init + busybox + b"".join(name.encode() + data for name, data in modules)).hexdigest()
    path = cache / f"initrd-{kernel.version}-{digest[:12]}.cpio"
    if path.is_file():
        return path
    archive = _Cpio()
    for directory in ("bin", "dev", "proc", "sys", "lower", "rw", "newroot", "modules"):
        archive.add(directory, stat.S_IFDIR | 0o755)
    archive.add("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1))
    archive.add("init", stat.S_IFREG | 0o755, init)
    archive.add("bin/busybox", stat.S_IFREG | 0o755, busybox)
    for name, data in modules:
        archive.add(f"modules/{name}.ko", stat.S_IFREG | 0o644, data)
    archive.add("modules/order", stat.S_IFREG | 0o644, "".join(f"{name}\n" for name, _ in modules).encode())
    for stale in cache.glob(f"initrd-{kernel.version}-*.cpio"):
        stale.unlink()
    partial = path.with_suffix(".partial")
    partial.write_bytes(archive.finish())
    partial.replace(path)
    return path


# -- booting -------------------------------------------------------------------------------------


def qemu_command(kernel: Kernel, initrd: Path, shared: Path) -> list[str]:
    """The QEMU command line: TCG (a KVM guest hung here), the host root read-only, ``shared`` writable."""
    cmdline = f"console=ttyS0 panic=-1 quiet ww_run={HERE / 'guest-run'}"
    return [
        QEMU,
        *("-accel", "tcg", "-cpu", "max", "-m", "2048", "-smp", "2", "-nographic", "-no-reboot", "-nic", "none"),
        *("-kernel", str(kernel.vmlinuz), "-initrd", str(initrd), "-append", cmdline),
        *("-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap"),
        *("-virtfs", f"local,path={shared},mount_tag=results,security_model=none,multidevs=remap"),
        *("-device", "virtio-rng-pci"),
    ]


def run(command: list[str], shared: Path, *, timeout: float, cache: Path = CACHE) -> dict[str, object]:
    """Boot the VM, run ``command`` (from the repo root) in it, wait for power-off; a timing report.

    ``shared`` (created if needed) is the guest's ``/mnt/wardwatch``; afterwards it holds ``job.rc``
    (the command's exit code), ``guest.log`` (its output) and ``console.log`` (the VM's console).
    """
    reason = unavailable(cache)
    kernel = find_kernel(cache)
    if reason is not None or kernel is None:
        raise RuntimeError(reason or "no kernel")
    shared = shared.resolve()
    shared.mkdir(parents=True, exist_ok=True)
    for old in ("job.rc", "guest.log", "console.log"):
        (shared / old).unlink(missing_ok=True)
    (shared / "job").write_text(f"set -euo pipefail\ncd {shlex.quote(str(REPO))}\nexec {shlex.join(command)}\n")
    started = time.monotonic()
    initrd = build_initrd(kernel, cache)
    booted = time.monotonic()
    with (shared / "console.log").open("wb") as console:
        qemu = subprocess.Popen(
            qemu_command(kernel, initrd, shared), stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT
        )
        try:
            exit_code: int | None = qemu.wait(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            qemu.kill()
            qemu.wait()
            exit_code, timed_out = None, True
    rc_file = shared / "job.rc"
    return {
        "kernel": kernel.version,
        "initrd_build_s": round(booted - started, 3),
        "vm_s": round(time.monotonic() - booted, 3),
        "qemu_exit": exit_code,
        "timed_out": timed_out,
        "job_rc": int(rc_file.read_text()) if rc_file.is_file() else None,
    }


def main(argv: list[str]) -> int:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="scripts/vm/vm.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("check", help="say whether the VM can run here")
    sub.add_parser("initrd", help="build the initrd (if stale) and print its path")
    run_parser = sub.add_parser("run", help="boot the VM and run a command in it")
    run_parser.add_argument("--shared", type=Path, required=True, help="folder shared with the guest (writable)")
    run_parser.add_argument("--timeout", type=float, default=240.0, help="seconds before QEMU is killed")
    run_parser.add_argument("command", nargs="+", help="command to run in the guest, from the repo root")
    args = parser.parse_args(argv)
    reason = unavailable()
    if reason is not None:
        print(f"VM unavailable: {reason}")
        return 1
    if args.action == "check":
        print("VM available")
        return 0
    kernel = find_kernel()
    assert kernel is not None
    if args.action == "initrd":
        print(build_initrd(kernel))
        return 0
    report = run(args.command, args.shared, timeout=args.timeout)
    print(json.dumps(report))
    return 0 if report["job_rc"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
