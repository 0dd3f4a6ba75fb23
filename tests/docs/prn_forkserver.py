"""A ``prn`` for the documentation test that starts in milliseconds: a server imports prn's CLI, torch and
torchvision once, and each ``prn ...`` line forks it.

Importing torch costs about three seconds, and the README and ``--help`` examples run some 60 ``prn`` commands
in sequence; the import was half of that test's time. A forked child is the process a fresh ``python -m
prn_cli`` would be after its imports: it gets the caller's arguments, working folder, environment and its
stdin/stdout/stderr (passed over the socket), runs the CLI, and its exit status becomes the client's. A signal
sent to the client (Ctrl-C, as the test's interrupted ``prn segment`` gets) is forwarded to the child.

    python prn_forkserver.py serve SOCKET      # the server (one command at a time, as the test runs them)
    python -S prn_forkserver.py SOCKET ARGS... # a prn command (what the ``prn`` wrapper on PATH runs)

The server imports only modules; it runs no torch operation before forking, so no thread pool is copied.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys

_HEADER = struct.Struct("!I")


def _send(conn: socket.socket, data: bytes, fds: list[int] | None = None) -> None:
    message = _HEADER.pack(len(data)) + data
    if fds:
        socket.send_fds(conn, [message], fds)
    else:
        conn.sendall(message)


def _receive(conn: socket.socket, with_fds: int = 0) -> tuple[bytes, list[int]]:
    if with_fds:
        data, fds, _, _ = socket.recv_fds(conn, 1 << 20, with_fds)
    else:
        data, fds = conn.recv(1 << 20), []
    if not data:
        raise ConnectionError("closed")
    (size,) = _HEADER.unpack_from(data)
    while len(data) < _HEADER.size + size:
        more = conn.recv(1 << 20)
        if not more:
            raise ConnectionError("closed")
        data += more
    return data[_HEADER.size:_HEADER.size + size], list(fds)


def _run_child(request: dict, fds: list[int]) -> None:
    """In the forked child: become the requested ``prn`` process and never return."""
    code = 1
    try:
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        sys.argv = ["prn", *request["argv"]]
        from prn_cli.cli import main

        try:
            main()
            code = 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
            if isinstance(stop.code, str):
                print(stop.code, file=sys.stderr)
        except KeyboardInterrupt:
            code = 130
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)


def serve(path: str) -> None:
    import prn_cli.cli  # noqa: F401  (the point of the server: imported once)
    import torch  # noqa: F401
    import torchvision  # noqa: F401

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(4)
    print("ready", flush=True)
    while True:
        conn, _ = listener.accept()
        with conn:
            try:
                data, fds = _receive(conn, with_fds=3)
            except ConnectionError:
                continue
            request = json.loads(data)
            pid = os.fork()
            if pid == 0:
                listener.close()
                conn.close()
                _run_child(request, fds)
            for fd in fds:
                os.close(fd)
            _send(conn, str(pid).encode())
            _, status = os.waitpid(pid, 0)
            _send(conn, str(os.waitstatus_to_exitcode(status)).encode())


def client(path: str, argv: list[str]) -> int:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(path)
    request = {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}
    _send(conn, json.dumps(request).encode(), [0, 1, 2])
    pid = int(_receive(conn)[0])

    def forward(signum, _frame):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, forward)
    code = int(_receive(conn)[0])
    return 128 - code if code < 0 else code     # killed by a signal: the shell's 128 + N


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2])
    else:
        sys.exit(client(sys.argv[1], sys.argv[2:]))
