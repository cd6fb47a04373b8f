"""A stand-in for Kaggle's API on 127.0.0.1, for running the real ``kaggle`` client in tests.

The client talks to ``http://localhost/api/v1/<Service>/<Method>`` when KAGGLE_API_ENVIRONMENT is
LOCALHOST; with HTTP_PROXY pointing here, every request (API calls, file downloads, uploads) arrives
at this server with its absolute URL. Nothing is forwarded anywhere: HTTPS (CONNECT) is refused.
The server records each request, answers from ``responses``, and shuts itself down after
``lifetime`` seconds or ``max_requests`` requests, whichever comes first.
"""

from __future__ import annotations

import json
import stat
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit


@dataclass
class Recorded:
    method: str
    url: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"{}")


Answer = Any  # a JSON-able dict, (status, dict), or a callable(Recorded) -> either


@dataclass
class KaggleStub:
    """Answers by API method name (``SaveKernel``, ``GetKernelSessionStatus``, ...)."""

    responses: dict[str, Answer | list[Answer]] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)  # served at http://localhost/files/<name>
    lifetime: float = 60.0
    max_requests: int = 100
    requests: list[Recorded] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                rec = Recorded(self.command, self.path, urlsplit(self.path).path, dict(self.headers), body)
                with stub._lock:
                    stub.requests.append(rec)
                    over = len(stub.requests) > stub.max_requests
                status, payload, ctype = (503, b"too many requests", "text/plain") if over else stub._answer(rec)
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = _handle

            def do_CONNECT(self) -> None:  # no tunnels: nothing leaves this machine
                with stub._lock:
                    stub.requests.append(Recorded("CONNECT", self.path, self.path, dict(self.headers), b""))
                self.send_error(405, "stub: HTTPS is not served")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._timer = threading.Timer(self.lifetime, self.stop)
        self._timer.daemon = True

    def _answer(self, rec: Recorded) -> tuple[int, bytes, str]:
        if rec.path.startswith("/files/"):
            name = rec.path[len("/files/"):]
            if name in self.files:
                return 200, self.files[name], "application/octet-stream"
            return 404, b"not found", "text/plain"
        if rec.method == "PUT" and rec.path.startswith("/upload/"):
            return 200, b"", "text/plain"
        method = rec.path.rstrip("/").split("/")[-1]
        answer = self.responses.get(method)
        if isinstance(answer, list):  # a sequence: one per call, the last one repeats
            with self._lock:
                answer = answer.pop(0) if len(answer) > 1 else answer[0]
        if callable(answer):
            answer = answer(rec)
        if answer is None:
            return 404, json.dumps({"code": 404, "message": f"stub: no answer for {method}"}).encode(), "application/json"
        status, payload = answer if isinstance(answer, tuple) else (200, answer)
        return status, json.dumps(payload).encode(), "application/json"

    def calls(self, method: str) -> list[Recorded]:
        """The recorded requests to an API method, in order."""
        return [r for r in self.requests if r.path.endswith("/" + method)]

    def start(self) -> "KaggleStub":
        self._thread.start()
        self._timer.start()
        return self

    def stop(self) -> None:
        self._timer.cancel()
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> "KaggleStub":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def fake_credentials(home: Path, username: str, key: str) -> Path:
    """A kaggle.json in ``home/.kaggle`` readable by its owner only (the client warns otherwise)."""
    conf = home / ".kaggle"
    conf.mkdir(parents=True, exist_ok=True)
    path = conf / "kaggle.json"
    path.write_text(json.dumps({"username": username, "key": key}))
    path.chmod(stat.S_IRUSR | stat.S_IWUSR)
    return path


def client_env(monkeypatch: Any, home: Path, stub: KaggleStub) -> None:
    """Point the real client (run by kit as a subprocess) at ``stub``, with ``home`` as HOME."""
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "LOCALHOST")
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, stub.url)
    for name in ("NO_PROXY", "no_proxy", "KAGGLE_CONFIG_DIR", "XDG_CONFIG_HOME", "KAGGLE_USERNAME", "KAGGLE_KEY",
                 "KAGGLE_API_TOKEN", "KAGGLE_KERNEL_RUN_TYPE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)


# --- kernels that run: `running` for a while, then `complete` or `error`, serving their output files ---------


@dataclass
class SimKernel:
    """A kernel the stub runs: ``running`` for ``polls`` status calls after its push, then ``final``."""

    polls: int = 2
    final: str = "complete"
    files: dict[str, bytes] = field(default_factory=dict)  # output file name -> bytes
    log: str = ""
    failure: str = ""
    pushed: bool = False
    seen: int = 0


@dataclass
class KernelFarm:
    """Kernels by slug, wired into a stub: SaveKernel starts one, GetKernelSessionStatus reports it, and
    ListKernelSessionOutput serves its files ``page_size`` at a time. ``max_running`` is the most that were
    running at once."""

    stub: KaggleStub
    kernels: dict[str, SimKernel] = field(default_factory=dict)
    page_size: int = 2
    max_running: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self.stub.responses.update({"SaveKernel": self._save, "GetKernelSessionStatus": self._status,
                                    "ListKernelSessionOutput": self._output})

    def running(self) -> int:
        """Kernels pushed and not yet reported final."""
        return sum(k.pushed and k.seen < k.polls for k in self.kernels.values())

    def _save(self, rec: Recorded) -> Any:
        slug = rec.json()["slug"].split("/")[-1]
        with self._lock:
            kernel = self.kernels.setdefault(slug, SimKernel())
            kernel.pushed, kernel.seen = True, 0
            self.max_running = max(self.max_running, self.running())
        return {"ref": f"/code/{rec.json()['slug']}", "url": f"https://www.kaggle.com/code/{rec.json()['slug']}",
                "versionNumber": 1}

    def _status(self, rec: Recorded) -> Any:
        kernel = self.kernels.get(rec.json()["kernelSlug"])
        if kernel is None:
            return 404, {"code": 404, "message": "Not found"}
        with self._lock:
            if not kernel.pushed:
                return {"status": "QUEUED"}
            kernel.seen += 1
            if kernel.seen <= kernel.polls:
                return {"status": "RUNNING"}
        answer = {"status": kernel.final.upper()}
        return {**answer, "failureMessage": kernel.failure} if kernel.failure else answer

    def _output(self, rec: Recorded) -> Any:
        body = rec.json()
        slug = body["kernelSlug"]
        kernel = self.kernels[slug]
        names = sorted(kernel.files)
        start = int(body.get("pageToken") or 0)
        page = names[start:start + self.page_size]
        for name in page:
            self.stub.files[f"{slug}/{name}"] = kernel.files[name]
        answer: dict[str, Any] = {"files": [{"url": f"http://localhost/files/{slug}/{name}", "fileName": name}
                                            for name in page]}
        if start + self.page_size < len(names):
            answer["nextPageToken"] = str(start + self.page_size)
        if kernel.log and start == 0:
            answer["log"] = kernel.log
        return answer


def stop_and_check_loopback(server: KaggleStub) -> None:
    """Stop the stand-in and check that every request reached it as plain HTTP for localhost (nothing else left)."""
    server.stop()
    for rec in server.requests:
        assert rec.method != "CONNECT" and rec.url.startswith("http://localhost/"), rec.url
