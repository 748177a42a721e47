"""A TCP relay that fault tests cut like a dead network link (``wardwatch up`` with ``gateway_proxy``)."""

from __future__ import annotations

import asyncio


class TcpProxy:
    """A TCP relay ``127.0.0.1:port`` -> ``target`` that a test can cut like a dead network link.

    :meth:`cut` drops every byte in both directions from then on, without closing anything (no RST,
    no FIN: the peers only notice through their keepalives), and new connections are accepted and
    blackholed too. :meth:`restore` aborts the connections that saw the cut (their byte streams lost
    data) and relays new ones again. Use as ``async with TcpProxy(host, port) as proxy``.
    """

    def __init__(self, target_host: str, target_port: int, host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.host = host
        self.port = 0
        self.is_cut = False
        self.connections = 0
        self.dropped_bytes = 0
        self._server: asyncio.Server | None = None
        self._live: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter | None]] = set()
        self._poisoned: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._handle, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
        for down, up in list(self._live):
            down.transport.abort()
            if up is not None:
                up.transport.abort()
        self._live.clear()
        if self._server is not None:
            await self._server.wait_closed()

    def cut(self) -> None:
        """Drop everything from now on (open connections stay open, silently)."""
        self.is_cut = True
        for down, up in self._live:
            self._poisoned.add(down)
            if up is not None:
                self._poisoned.add(up)

    def restore(self) -> None:
        """Relay again; connections that lived through the cut are aborted (their streams lost bytes)."""
        for down, up in list(self._live):
            if down in self._poisoned:
                down.transport.abort()
                if up is not None:
                    up.transport.abort()
        self._poisoned.clear()
        self.is_cut = False

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter | None]
        if self.is_cut:  # blackholed: accepted, never relayed, until restore() aborts it
            pair = (writer, None)
            self._live.add(pair)
            self._poisoned.add(writer)
            try:
                while data := await reader.read(65536):
                    self.dropped_bytes += len(data)
            except OSError:
                pass
            finally:
                self._live.discard(pair)
                writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        pair = (writer, up_writer)
        self._live.add(pair)
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._pipe(reader, up_writer, writer))
                tasks.create_task(self._pipe(up_reader, writer, up_writer))
        except* OSError:
            pass
        finally:
            self._live.discard(pair)
            writer.transport.abort()
            up_writer.transport.abort()

    async def _pipe(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, src_writer: asyncio.StreamWriter
    ) -> None:
        try:
            while data := await src.read(65536):
                if src_writer in self._poisoned or dst in self._poisoned:
                    self.dropped_bytes += len(data)
                    continue
                dst.write(data)
                await dst.drain()
        finally:
            # one side closed (or the link was aborted): close the other, like a real socket pair
            dst.transport.abort()
