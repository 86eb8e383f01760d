"""Headless Chromium over the DevTools protocol: opens URL, waits for the page's `window.__result`, and reports it
with every error the browser saw (console errors, uncaught exceptions, CORS refusals, failed loads).

Usage: python browser.py URL [--timeout SECONDS]

Prints one line of JSON, {"result": ..., "errors": [...], "timed_out": bool}, and exits 0: the caller judges.
Exits 3 when no Chromium is installed, 1 when the browser cannot be driven. Standard library only (a minimal
WebSocket client), so any Python 3.8+ runs it.
"""
import argparse, base64, json, os, shutil, signal, socket, struct, subprocess, sys, tempfile, time
import urllib.parse, urllib.request


class WebSocket:
    """Just enough RFC 6455 for the DevTools socket: masked text frames out, (fragmented) frames in, ping/pong."""

    def __init__(self, url, timeout=10.0):
        u = urllib.parse.urlsplit(url)
        self.sock = socket.create_connection((u.hostname, u.port or 80), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        path = (u.path or "/") + ("?" + u.query if u.query else "")
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self._more()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n", 1)[0] + b" ":
            raise RuntimeError(f"websocket handshake refused: {head.decode(errors='replace')}")
        self.parts = []

    def _more(self):
        data = self.sock.recv(1 << 16)
        if not data:
            raise ConnectionError("the DevTools socket closed")
        self.buf += data

    def send(self, data, opcode=0x1):
        """One masked frame (text by default)."""
        payload = data if isinstance(data, bytes) else data.encode()
        mask, n, op = os.urandom(4), len(payload), 0x80 | opcode
        head = struct.pack("!BB", op, 0x80 | n) if n < 126 else (
            struct.pack("!BBH", op, 0xFE, n) if n < 65536 else struct.pack("!BBQ", op, 0xFF, n))
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def _frame(self):
        """One complete frame from the buffer, (fin, opcode, payload), or None while incomplete."""
        if len(self.buf) < 2:
            return None
        fin, opcode, masked, n, pos = self.buf[0] & 0x80, self.buf[0] & 0x0F, self.buf[1] & 0x80, self.buf[1] & 0x7F, 2
        if n >= 126:
            size = 2 if n == 126 else 8
            if len(self.buf) < pos + size:
                return None
            n = int.from_bytes(self.buf[pos:pos + size], "big")
            pos += size
        mask, pos = self.buf[pos:pos + 4], pos + (4 if masked else 0)
        if len(self.buf) < pos + n:
            return None
        payload, self.buf = self.buf[pos:pos + n], self.buf[pos + n:]
        if masked:
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        return fin, opcode, payload

    def recv(self, timeout):
        """The next text message, or None when none completes within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            frame = self._frame()
            if frame is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.sock.settimeout(left)
                try:
                    self._more()
                except socket.timeout:
                    return None
                continue
            fin, opcode, payload = frame
            if opcode == 0x8:
                raise ConnectionError("the DevTools socket closed")
            if opcode == 0x9:  # ping
                self.send(payload, opcode=0xA)
            elif opcode in (0x0, 0x1, 0x2):
                self.parts.append(payload)
                if fin:
                    message, self.parts = b"".join(self.parts), []
                    return message.decode()


class Page:
    """A DevTools session on one page target; events go to `on_event` while commands wait for their answers."""

    def __init__(self, ws, on_event):
        self.ws, self.on_event, self.next_id = ws, on_event, 0

    def call(self, method, params=None, timeout=10.0):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params or {}}))
        deadline = time.monotonic() + timeout
        while True:
            raw = self.ws.recv(max(0.0, deadline - time.monotonic()))
            if raw is None:
                raise TimeoutError(f"{method}: no answer within {timeout} s")
            message = json.loads(raw)
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            if "method" in message:
                self.on_event(message["method"], message.get("params", {}))

    def pump(self, seconds):
        """Handles the events that arrive within `seconds`."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            raw = self.ws.recv(left)
            if raw is None:
                return
            message = json.loads(raw)
            if "method" in message:
                self.on_event(message["method"], message.get("params", {}))


class Errors(list):
    """Every error the page caused, as readable strings."""

    def __init__(self):
        super().__init__()
        self.urls = {}  # requestId -> URL, to name failed loads

    def __call__(self, method, p):
        if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            args = [a["value"] if isinstance(a.get("value"), str) else
                    a.get("description") or a.get("unserializableValue") or json.dumps(a.get("value"))
                    for a in p.get("args", [])]
            self.append(f"console.{p['type']}: " + " ".join(map(str, args)))
        elif method == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            self.append("uncaught: " + (d.get("exception", {}).get("description") or d.get("text", "?")))
        elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            e = p["entry"]
            self.append(f"log ({e.get('source')}): {e.get('text')}" + (f" [{e['url']}]" if e.get("url") else ""))
        elif method == "Network.requestWillBeSent":
            self.urls[p["requestId"]] = p.get("request", {}).get("url")
        elif method == "Network.loadingFailed" and not p.get("canceled"):  # media elements cancel ranges they drop
            why = [p.get("errorText", "")] + [f"{k}={p[k]}" for k in ("blockedReason", "corsErrorStatus") if p.get(k)]
            self.append(f"network: {self.urls.get(p.get('requestId'), '?')} failed: " + " ".join(why))


def read(path):
    with open(path) as f:
        return f.read()


def note(started, what):
    """Progress on stderr (the caller shows it when something fails)."""
    print(f"browser.py: {time.monotonic() - started:6.2f} s  {what}", file=sys.stderr, flush=True)


def run(url, timeout, chromium, profile, log):
    started = time.monotonic()
    cmd = [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
           "--no-default-browser-check", "--remote-debugging-port=0", f"--user-data-dir={profile}",
           "--autoplay-policy=no-user-gesture-required", "about:blank"]

    def die_with_parent():  # Linux: Chromium gets SIGKILL if this driver is killed before its `finally` runs
        try:
            import ctypes
            ctypes.CDLL(None).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
        except Exception:
            pass

    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                            preexec_fn=die_with_parent)
    try:
        port_file, deadline = os.path.join(profile, "DevToolsActivePort"), time.monotonic() + 60  # cold starts are slow
        while not (os.path.exists(port_file) and read(port_file).count("\n") >= 1):  # "PORT\n/devtools/browser/…"
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Chromium did not start (exit status {proc.poll()})")
            time.sleep(0.05)
        port = int(read(port_file).split()[0])
        note(started, f"Chromium {proc.pid} listens on DevTools port {port}")
        while True:  # the page target of about:blank
            targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=5))
            page = next((t for t in targets if t.get("type") == "page"), None)
            if page or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if page is None:
            raise RuntimeError(f"no page target among {targets}")
        errors = Errors()
        tab = Page(WebSocket(page["webSocketDebuggerUrl"]), errors)
        for domain in ("Runtime", "Log", "Page", "Network"):
            tab.call(f"{domain}.enable")
        navigated = tab.call("Page.navigate", {"url": url}, timeout=30)
        note(started, f"navigated to {url}")
        result, timed_out = None, False
        if navigated.get("errorText"):
            errors.append(f"navigation to {url} failed: {navigated['errorText']}")
        else:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    answer = tab.call("Runtime.evaluate", {"expression": "JSON.stringify(window.__result || null)",
                                                           "returnByValue": True})
                    result = json.loads(answer.get("result", {}).get("value") or "null")
                except RuntimeError:  # the context is being replaced while the page loads
                    result = None
                if result is not None:
                    break
                if time.monotonic() > deadline:
                    timed_out = True
                    break
                tab.pump(0.1)
            tab.pump(0.3)  # errors reported just after the result
        note(started, "timed out" if timed_out else "the page set window.__result")
        return {"result": result, "errors": list(errors), "timed_out": timed_out}
    finally:
        for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):  # the whole group: browser, zygotes, renderers
            try:
                os.killpg(proc.pid, sig)
                proc.wait(wait)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
        gone = time.monotonic() + 2
        try:  # stragglers of the group, if its leader went first; then until the group has gone (bounded)
            os.killpg(proc.pid, signal.SIGKILL)
            while time.monotonic() < gone:
                time.sleep(0.05)
                os.killpg(proc.pid, 0)
        except ProcessLookupError:
            pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("browser.py: neither chromium nor chromium-browser is on PATH (`make setup` installs it)", file=sys.stderr)
        sys.exit(3)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` kills Chromium
    profile = tempfile.mkdtemp(prefix="switchyard-chromium-")
    with tempfile.TemporaryFile() as log:
        try:
            report = run(args.url, args.timeout, chromium, profile, log)
        except Exception as e:
            log.seek(0)
            tail = log.read().decode(errors="replace")[-4000:]
            print(f"browser.py: {type(e).__name__}: {e}\n--- chromium output ---\n{tail}", file=sys.stderr)
            sys.exit(1)
        finally:
            shutil.rmtree(profile, ignore_errors=True)
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
