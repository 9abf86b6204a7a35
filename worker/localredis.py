"""A private redis-server on a free port, for the soak test and the queue benchmark."""
import shutil
import socket
import subprocess
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(work: str, timeout: float = 10.0):
    """Start redis-server (no persistence, data dir `work`); returns (process, url) once it answers."""
    from shared.queues import connect
    port = free_port()
    proc = subprocess.Popen([shutil.which("redis-server"), "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--dir", work],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.time() + timeout
    while True:
        try:
            connect(url).ping()
            return proc, url
        except Exception:
            if time.time() > deadline:
                proc.terminate()
                raise
            time.sleep(0.1)
