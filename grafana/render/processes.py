"""Processes the pictures need: the mock upstreams, the gateway, Prometheus; a tiny HTTP and WebSocket client."""

import base64
import json
import math
import os
import re
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(HERE)
ADMIN_KEY = "render-dashboards-admin-key-0123456789"
EMBEDDING_MODEL = "all-minilm-l6-v2"


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------------------------------
# Processes


class Processes:
    """Children started by this script, stopped (each by its own pid) at the end."""

    def __init__(self, directory):
        self.directory = directory
        self.children = []

    def start(self, name, argv, env=None, cwd=None):
        out = open(os.path.join(self.directory, f"{name}.out"), "wb")
        err = open(os.path.join(self.directory, f"{name}.log"), "wb")
        child = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env, cwd=cwd)
        self.children.append((name, child, out, err))
        return child

    def output(self, name, suffix="out"):
        try:
            with open(os.path.join(self.directory, f"{name}.{suffix}"), encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def wait_for_line(self, name, child, pattern, timeout=60):
        """The first match of `pattern` in the child's stdout, waiting for it."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            match = re.search(pattern, self.output(name))
            if match:
                return match
            if child.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"{name} did not print /{pattern}/ (exit {child.poll()}):\n"
                           f"{self.output(name)}\n{self.output(name, 'log')[-3000:]}")

    def stop_all(self):
        for name, child, out, err in reversed(self.children):
            if child.poll() is None:
                child.terminate()
                try:
                    child.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
            out.close()
            err.close()
        self.children = []


def http_json(method, url, body=None, headers=None, timeout=30):
    """(status, parsed JSON or None)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        request.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            status = response.status
    except urllib.error.HTTPError as e:
        raw, status = e.read(), e.code
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, None


def start_mock(procs, name, binary, extra):
    port = free_port()
    child = procs.start(name, [binary, "--listen", f"127.0.0.1:{port}", *extra])
    match = procs.wait_for_line(name, child, r"listening on (http://\S+)")
    return match.group(1)


def start_gateway(procs, binary, chat_mock, claude_mock, media_mock, data_dir, models):
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SWITCHYARD") and not k.endswith(("_API_KEY", "_BASE_URL")) and k != "QDRANT_URL"}
    env.update({
        "OPENAI_BASE_URL": f"{chat_mock}/v1", "OPENAI_API_KEY": "sk-render-openai",
        "MISTRAL_BASE_URL": f"{chat_mock}/v1", "MISTRAL_API_KEY": "render-mistral",
        "ANTHROPIC_BASE_URL": claude_mock, "ANTHROPIC_API_KEY": "render-anthropic",
        "BFL_BASE_URL": media_mock, "BFL_API_KEY": "render-bfl",
        "ELEVENLABS_BASE_URL": media_mock, "ELEVENLABS_API_KEY": "render-elevenlabs",
        "SWITCHYARD_ADMIN_KEY": ADMIN_KEY,
        "SWITCHYARD__LOG__LEVEL": "warn",
        "SWITCHYARD__SERVER__WORKERS": "2",
        "SWITCHYARD__EMBEDDINGS__CACHE_DIR": models or "",
        "SWITCHYARD__EMBEDDINGS__THREADS": "1",
        # Faster turns than production so that a few minutes show retries, open circuits and their probes.
        "SWITCHYARD__POOL__MAX_RETRIES": "1",
        "SWITCHYARD__POOL__RETRY_BASE_MS": "20",
        "SWITCHYARD__POOL__BREAKER_FAILURES": "5",
        "SWITCHYARD__POOL__BREAKER_OPEN_SECS": "6",
        "SWITCHYARD__UPSTREAM__POLL_INTERVAL_MS": "100",
        "SWITCHYARD__BOOTSTRAP__CREDITS": "5000",
        "SWITCHYARD__BOOTSTRAP__REQUESTS_PER_MINUTE": "100000",
        "SWITCHYARD__BOOTSTRAP__CONCURRENT_REQUESTS": "64",
        "SWITCHYARD__BOOTSTRAP__TOKENS_PER_MINUTE": "100000000",
    })
    child = procs.start("gateway", [binary, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data_dir],
                        env=env, cwd=ROOT)
    key = procs.wait_for_line("gateway", child, r"API key \(shown once, keep it\): (\S+)").group(1)
    url = procs.wait_for_line("gateway", child, r"Switchyard listening on (http://\S+)").group(1).rstrip("/")
    return url, key


def start_prometheus(procs, directory, target):
    config = os.path.join(directory, "prometheus.yml")
    with open(config, "w", encoding="utf-8") as f:
        f.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                f"rule_files:\n  - {os.path.join(ROOT, 'config', 'alerts.yml')}\n"
                "scrape_configs:\n  - job_name: switchyard\n    metrics_path: /metrics\n"
                f"    static_configs:\n      - targets: [\"{target}\"]\n")
    for _ in range(5):
        port = free_port()
        child = procs.start("prometheus", [
            "prometheus", f"--config.file={config}", f"--storage.tsdb.path={os.path.join(directory, 'tsdb')}",
            f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"])
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 30
        while time.time() < deadline and child.poll() is None:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return url
            except OSError:
                pass
            time.sleep(0.2)
        if child.poll() is None:
            child.terminate()
            child.wait()
    raise RuntimeError("prometheus did not start:\n" + procs.output("prometheus", "log")[-3000:])


def scrapes(prometheus):
    _, answer = http_json("GET", f"{prometheus}/api/v1/query?" + urllib.parse.urlencode(
        {"query": 'count_over_time(up{job="switchyard"}[10m])'}))
    try:
        return int(answer["data"]["result"][0]["value"][1])
    except (TypeError, KeyError, IndexError, ValueError):
        return 0


def wait_for_scrapes(prometheus, n, timeout=60):
    before = scrapes(prometheus)
    deadline = time.time() + timeout
    while scrapes(prometheus) < before + n:
        if time.time() > deadline:
            raise RuntimeError("prometheus is not scraping the gateway")
        time.sleep(0.25)


# --------------------------------------------------------------------------------------------------------------
# A minimal WebSocket client (RFC 6455, client side, no extensions) for the realtime sessions


class WebSocket:
    def __init__(self, url, headers, timeout=20):
        parts = urllib.parse.urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        head = [f"GET {path} HTTP/1.1", f"Host: {parts.hostname}:{parts.port}", "Upgrade: websocket",
                "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        self.sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed during the handshake")
            self.buffer += chunk
        response, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        self.status = int(response.split(b" ", 2)[1])
        if self.status != 101:
            self.sock.close()
            raise ConnectionError(f"handshake answered {self.status}")

    def _exact(self, n):
        while len(self.buffer) < n:
            chunk = self.sock.recv(max(65536, n - len(self.buffer)))
            if not chunk:
                raise ConnectionError("closed")
            self.buffer += chunk
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def _send(self, opcode, payload):
        n = len(payload)
        if n < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        mask = os.urandom(4)
        repeated = (mask * (n // 4 + 1))[:n]
        masked = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(n, "big") if n else b""
        self.sock.sendall(header + mask + masked)

    def send(self, event):
        self._send(0x1, json.dumps(event).encode())

    def recv(self):
        """The next event (a dict), or None when the server closed."""
        message = b""
        while True:
            b1, b2 = self._exact(2)
            opcode, n = b1 & 0x0F, b2 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._exact(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._exact(8))[0]
            mask = self._exact(4) if b2 & 0x80 else None
            payload = self._exact(n)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if opcode == 0x8:
                return None
            if opcode == 0x9:
                self._send(0xA, payload)
                continue
            if opcode == 0xA:
                continue
            message += payload
            if b1 & 0x80:
                return json.loads(message)

    def until(self, kind, limit=2000):
        events = []
        for _ in range(limit):
            event = self.recv()
            if event is None:
                raise ConnectionError(f"closed before {kind}")
            events.append(event)
            if event.get("type") in (kind, "error"):
                return events
        raise RuntimeError(f"no {kind}")

    def close(self):
        try:
            self._send(0x8, struct.pack("!H", 1000))
            self.sock.settimeout(2)
            while self.recv() is not None:
                pass
        except (OSError, ConnectionError, ValueError):
            pass
        finally:
            self.sock.close()


def tone(ms, quiet_ms=0):
    """`ms` of a 440 Hz tone then silence, PCM16 at 24 kHz, base64."""
    samples = [int(12000 * math.sin(i * 2 * math.pi * 440 / 24000)) for i in range(ms * 24)]
    pcm = struct.pack(f"<{len(samples)}h", *samples) + b"\0" * (quiet_ms * 48)
    return base64.b64encode(pcm).decode()


# --------------------------------------------------------------------------------------------------------------
# Traffic

WORDS = ("gateway latency budget invoice wallet circuit fallback stream token vector search index prompt model "
         "customer support refund order shipping meeting tuesday report quarterly revenue outage runbook alert "
         "dashboard grafana prometheus scrape rollout canary revision summary contact email").split()


def sentence(rng, n=12):
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."
