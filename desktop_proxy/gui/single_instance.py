"""One tray app per user (and per DESKTOP_PROXY_HOME): a second launch wakes the first."""

from __future__ import annotations

import getpass
import hashlib

from PySide6.QtCore import QObject, Signal
from PySide6.QtNetwork import QLocalServer, QLocalSocket

from desktop_proxy.paths import AppPaths

CONNECT_TIMEOUT_MS = 500


def server_name(paths: AppPaths) -> str:
    """Stable per user and per data folder, short enough for a Unix socket path."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "user"
    digest = hashlib.sha256(f"{user}\0{paths.config_dir}".encode()).hexdigest()[:16]
    return f"desktop-proxy-{digest}"


class SingleInstance(QObject):
    message_received = Signal(str)

    def __init__(self, name: str, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.name = name
        self.server: QLocalServer | None = None
        self._sockets: list[QLocalSocket] = []

    def notify_running(self, message: str = "show") -> bool:
        """Tell a running instance `message`; False when there is none."""
        socket = QLocalSocket()
        socket.connectToServer(self.name)
        if not socket.waitForConnected(CONNECT_TIMEOUT_MS):
            return False
        socket.write((message + "\n").encode())
        socket.flush()
        socket.waitForBytesWritten(CONNECT_TIMEOUT_MS)
        socket.disconnectFromServer()
        return True

    def claim(self) -> bool:
        """Become the running instance, or wake the one that is and return False."""
        if self.notify_running():
            return False
        server = QLocalServer(self)
        server.setSocketOptions(QLocalServer.SocketOption.UserAccessOption)
        if not server.listen(self.name):
            # A crashed instance leaves its socket file behind on Unix.
            QLocalServer.removeServer(self.name)
            if not server.listen(self.name):
                return True  # cannot guard; better one extra instance than none
        server.newConnection.connect(self._accept)
        self.server = server
        return True

    def _accept(self) -> None:
        assert self.server is not None
        while self.server.hasPendingConnections():
            socket = self.server.nextPendingConnection()
            # Kept here rather than deleteLater(): the Python wrapper may own the socket,
            # and deleting it from both sides crashes.
            self._sockets.append(socket)

            def read(s: QLocalSocket = socket) -> None:
                data = bytes(s.readAll().data()).decode("utf-8", "replace").strip()
                if data:
                    self.message_received.emit(data)

            socket.readyRead.connect(read)
            if socket.bytesAvailable():
                read()

    def close(self) -> None:
        for socket in self._sockets:
            socket.abort()
        self._sockets.clear()
        if self.server is not None:
            self.server.close()
            self.server = None
