"""A ``prn`` for the tests that starts in milliseconds: a server imports prn's CLI, torch and torchvision once,
and each ``prn ...`` command forks it.

Importing torch costs about three seconds, and the tests run some 160 ``prn`` commands as subprocesses (the
README's and ``--help`` examples alone some 60 in sequence); the import was half of their time. A forked child is the process a fresh ``python -m
prn_cli`` would be after its imports: it gets the caller's arguments, working folder, environment and its
stdin/stdout/stderr (passed over the socket), runs the CLI, and its exit status becomes the client's. A signal
sent to the client (Ctrl-C, as the test's interrupted ``prn segment`` gets) is forwarded to the child.

    python prn_forkserver.py serve SOCKET      # the server
    python -S prn_forkserver.py SOCKET ARGS... # a prn command (what the ``prn`` wrapper on PATH runs)

In a test, ``[*prn_forkserver.command(), ARGS...]`` is that command line, with this process's server (started
on first use, stopped when the process exits).

The server imports only modules; it runs no torch operation before forking, so no thread pool is copied. What
a fresh process reads from its environment at import is set again in the child: torch's thread count
(OMP_NUM_THREADS). A test of import-time behaviour (``PYTHONPROFILEIMPORTTIME``) needs a real process.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys

# the test helpers below import more; the client (python -S) must start fast

_HEADER = struct.Struct("!I")


def _send(conn: socket.socket, data: bytes, fds: list[int] | None = None) -> None:
    message = _HEADER.pack(len(data)) + data
    if fds:
        socket.send_fds(conn, [message], fds)
    else:
        conn.sendall(message)


def _exactly(conn: socket.socket, size: int, data: bytes = b"") -> bytes:
    while len(data) < size:
        more = conn.recv(size - len(data))
        if not more:
            raise ConnectionError("closed")
        data += more
    return data


def _receive(conn: socket.socket, with_fds: int = 0) -> tuple[bytes, list[int]]:
    """One message, read to its end and no further: the pid and the exit status may arrive together."""
    if with_fds:
        data, fds, _, _ = socket.recv_fds(conn, _HEADER.size, with_fds)
    else:
        data, fds = conn.recv(_HEADER.size), []
    if not data:
        raise ConnectionError("closed")
    (size,) = _HEADER.unpack(_exactly(conn, _HEADER.size, data))
    return _exactly(conn, size), list(fds)


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
        import torch

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "0")) or _DEFAULT_THREADS)
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


_DEFAULT_THREADS = 1


def _handle(conn: socket.socket) -> None:
    """In a forked handler: start the command's process, tell the client its pid, then its exit status."""
    try:
        data, fds = _receive(conn, with_fds=3)
    except ConnectionError:
        return
    pid = os.fork()
    if pid == 0:
        conn.close()
        _run_child(json.loads(data), fds)
    for fd in fds:
        os.close(fd)
    _send(conn, str(pid).encode())
    _, status = os.waitpid(pid, 0)
    _send(conn, str(os.waitstatus_to_exitcode(status)).encode())


def serve(path: str) -> None:
    global _DEFAULT_THREADS
    import prn_cli.cli  # noqa: F401  (the point of the server: imported once)
    import torch
    import torchvision  # noqa: F401

    _DEFAULT_THREADS = torch.get_num_threads()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)       # handlers are reaped by the kernel
    print("ready", flush=True)
    while True:
        conn, _ = listener.accept()
        # one handler process per command, so that commands may run side by side
        if os.fork() == 0:
            listener.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)   # the handler waits for its command
            try:
                _handle(conn)
            finally:
                os._exit(0)
        conn.close()


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


_server: dict = {}


def command() -> list[str]:
    """The command line prefix of a ``prn`` run forked from this process's server (started on first use)."""
    if "socket" not in _server:
        import atexit
        import shutil
        import subprocess
        import tempfile
        from pathlib import Path

        folder = Path(tempfile.mkdtemp(prefix="prn-forkserver-"))
        sock = folder / "prn.sock"
        proc = subprocess.Popen([sys.executable, __file__, "serve", str(sock)], stdout=subprocess.PIPE, text=True)
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the prn fork server did not start")

        def stop():
            proc.kill()
            proc.wait()
            shutil.rmtree(folder, ignore_errors=True)

        atexit.register(stop)
        _server["socket"] = str(sock)
    return [sys.executable, "-S", os.path.abspath(__file__), _server["socket"]]


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2])
    else:
        sys.exit(client(sys.argv[1], sys.argv[2:]))
