"""The workload of a dashboards run: threads that each loop over one kind of request."""

import http.client
import json
import math
import random
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from render.processes import ADMIN_KEY, EMBEDDING_MODEL, WebSocket, http_json, log, sentence, tone

class Traffic:
    """The workload: threads that each loop over one kind of request, paced by a rate that changes over the run."""

    def __init__(self, gateway, key, mocks, minutes, embeddings, seed=7):
        self.minutes = minutes
        self.url = gateway
        self.key = key
        self.chat_mock, self.claude_mock, self.media_mock = mocks
        self.duration = minutes * 60.0
        self.embeddings = embeddings
        self.seed = seed
        self.stop = threading.Event()
        self.started = time.time()
        self.counts = {}
        self.lock = threading.Lock()
        self.workspaces = {}  # name -> (id, key)
        self.errors = []

    # ---- helpers

    def fraction(self):
        return min(1.0, (time.time() - self.started) / self.duration)

    def rate(self):
        """Relative load 0.25 .. ~1.6: a slow start, two humps and a burst near the end."""
        f = self.fraction()
        shape = 0.35 + 0.9 * math.sin(math.pi * f) ** 2 + 0.3 * math.sin(5 * math.pi * f) ** 2
        if 0.80 <= f < 0.86:
            shape += 0.6
        return shape

    def count(self, what, status):
        with self.lock:
            key = f"{what} {status}"
            self.counts[key] = self.counts.get(key, 0) + 1

    def pause(self, base):
        """Sleeps `base` seconds at load 1, less when the load is higher."""
        self.stop.wait(base / max(0.1, self.rate()) * random.uniform(0.6, 1.4))

    def request(self, method, path, body=None, key=None, headers=None, timeout=60, stream=False, leave=False):
        """Status code (0 on a network error); a streamed body is read to its end unless `leave`."""
        parts = urllib.parse.urlsplit(self.url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        hdrs = dict(headers or {})
        if key:
            hdrs["authorization"] = f"Bearer {key}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            hdrs["content-type"] = "application/json"
        try:
            conn.request(method, path, body=data, headers=hdrs)
            response = conn.getresponse()
            status = response.status
            if leave and status == 200:
                response.read(64)  # the first bytes, then the client goes away
            else:
                response.read()
            return status
        except (OSError, http.client.HTTPException):
            return 0
        finally:
            conn.close()

    def fault(self, mock, **fault):
        status, _ = http_json("POST", f"{mock}/__mock/fault", fault)
        if status != 200:
            self.errors.append(f"fault {fault}: {status}")

    def chat_body(self, rng, model, stream, group=None):
        body = {"model": model, "stream": stream, "max_tokens": rng.choice((16, 24, 32)),
                "messages": [{"role": "user", "content": sentence(rng, rng.randint(6, 30))}]}
        if group:
            body["reporting_group"] = group
        return body

    # ---- setup

    def workspace(self, name, credits, rpm, concurrent, tpm=10_000_000, models=None):
        status, created = http_json("POST", f"{self.url}/admin/workspaces", {
            "name": name, "credits": credits,
            "plan": {"requests_per_minute": rpm, "concurrent_requests": concurrent, "tokens_per_minute": tpm}},
            headers={"authorization": f"Bearer {ADMIN_KEY}"})
        if status not in (200, 201):
            raise RuntimeError(f"creating workspace {name}: {status} {created}")
        body = {"name": f"{name}-key"}
        if models:
            body["models"] = models
        status, key = http_json("POST", f"{self.url}/admin/workspaces/{created['id']}/keys", body,
                                headers={"authorization": f"Bearer {ADMIN_KEY}"})
        if status not in (200, 201):
            raise RuntimeError(f"creating a key for {name}: {status} {key}")
        self.workspaces[name] = (created["id"], key["key"])
        return key["key"]

    def setup(self):
        _, wallet = http_json("GET", f"{self.url}/api/billing/wallet", headers={"authorization": f"Bearer {self.key}"})
        self.workspaces["default"] = ((wallet or {}).get("workspace_id"), self.key)
        self.workspace("acme", "20000", 100000, 64)
        self.workspace("globex", "8000", 100000, 64)
        self.workspace("initech", "3000", 100000, 64)
        self.workspace("small-plan", "1000", 20, 8)        # rpm 20: 429s
        # Enough for about two thirds of the run's calls, then 402s.
        self.workspace("almost-broke", f"{3.5 * self.minutes:.2f}", 100000, 8)
        self.workspace("one-at-a-time", "1000", 100000, 1)  # concurrency 1: refusals when two overlap
        self.workspaces["chat-only"] = (self.workspaces["acme"][0],
                                        self.key_for("acme", models=["gpt-3.5-turbo", "claude-3-haiku"]))

    def key_for(self, name, models):
        status, key = http_json("POST", f"{self.url}/admin/workspaces/{self.workspaces[name][0]}/keys",
                                {"name": "limited", "models": models},
                                headers={"authorization": f"Bearer {ADMIN_KEY}"})
        if status not in (200, 201):
            raise RuntimeError(f"creating a limited key: {status} {key}")
        return key["key"]

    # ---- the threads

    def chat_loop(self, index):
        rng = random.Random(self.seed + index)
        models = [("gpt-4", 5), ("gpt-3.5-turbo", 5), ("claude-3-sonnet", 3), ("claude-3-haiku", 4),
                  ("mixtral-8x7b", 2), ("sim-chat", 2)]
        tenants = [("acme", 5), ("globex", 3), ("initech", 2), ("default", 2)]
        groups = ["web", "mobile", "batch", None]
        while not self.stop.is_set():
            roll = rng.random()
            if roll < 0.015:
                self.count("chat", self.request("POST", "/api/v1/task", self.chat_body(rng, "gpt-4", False),
                                                key="sk-not-a-key"))
            elif roll < 0.025:
                self.count("chat", self.request("POST", "/api/v1/task", self.chat_body(rng, "gpt-4", False)))
            elif roll < 0.035:
                self.count("chat", self.request("POST", "/api/v1/task", self.chat_body(rng, "gpt-5-turbo", False),
                                                key=self.key))
            elif roll < 0.045:
                self.count("models", self.request("GET", "/v1/models", key=self.key))
            else:
                model = rng.choices([m for m, _ in models], [w for _, w in models])[0]
                tenant = rng.choices([t for t, _ in tenants], [w for _, w in tenants])[0]
                stream = rng.random() < 0.45
                leave = stream and rng.random() < 0.06
                openai = rng.random() < 0.3  # the OpenAI-compatible route; reporting groups are the native API's
                path = "/v1/chat/completions" if openai else "/api/v1/task"
                body = self.chat_body(rng, model, stream, None if openai else rng.choice(groups))
                self.count("chat", self.request("POST", path, body, key=self.workspaces[tenant][1],
                                                stream=stream, leave=leave))
            self.pause(0.7)

    def refusals_loop(self):
        """The workspaces that get refused: a small plan, an empty wallet, one-at-a-time, a key limited to models."""
        rng = random.Random(self.seed + 100)
        while not self.stop.is_set():
            f = self.fraction()
            # The small plan is busy in two stretches of the run (429s while it is).
            if 0.15 <= f < 0.45 or 0.7 <= f < 0.9:
                self.count("small-plan", self.request("POST", "/api/v1/task",
                                                      self.chat_body(rng, "gpt-3.5-turbo", False, "batch"),
                                                      key=self.workspaces["small-plan"][1]))
            if rng.random() < 0.5:
                self.count("almost-broke", self.request("POST", "/api/v1/task",
                                                        self.chat_body(rng, "claude-3-sonnet", False, "web"),
                                                        key=self.workspaces["almost-broke"][1]))
            if rng.random() < 0.15:
                model = rng.choice(["gpt-4", "claude-3-sonnet", "gpt-3.5-turbo"])
                self.count("chat-only", self.request("POST", "/api/v1/task", self.chat_body(rng, model, False),
                                                     key=self.workspaces["chat-only"][1]))
            if rng.random() < 0.12:
                key = self.workspaces["one-at-a-time"][1]
                threads = [threading.Thread(target=lambda: self.count("one-at-a-time", self.request(
                    "POST", "/api/v1/task", self.chat_body(rng, "claude-3-haiku", True), key=key, stream=True)))
                    for _ in range(3)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
            self.pause(1.2)

    def tasks_loop(self):
        rng = random.Random(self.seed + 200)
        while not self.stop.is_set():
            tag = rng.choices(["demo", "stable", None], [3, 2, 3])[0]
            path = "/api/v1/tasks/summarize/run" + (f"?revision_tag={tag}" if tag else "")
            body = {"task_input": {"text": " ".join(sentence(rng) for _ in range(4)), "sentences": rng.randint(1, 3)}}
            tenant = rng.choice(["acme", "globex", "default"])
            self.count("task", self.request("POST", path, body, key=self.workspaces[tenant][1]))
            self.pause(2.0)

    def media_loop(self):
        rng = random.Random(self.seed + 300)
        while not self.stop.is_set():
            if rng.random() < 0.5:
                body = {"model": rng.choice(["flux-1-schnell", "flux-1-dev"]), "prompt": sentence(rng, 8),
                        "width": 512, "height": 384}
            else:
                body = {"model": "eleven-labs-tts", "text": sentence(rng, 16), "voice": "Rachel"}
            self.count("media", self.request("POST", "/api/v1/task", body, key=self.workspaces["globex"][1]))
            self.pause(6.0)

    def vectors_loop(self):
        rng = random.Random(self.seed + 400)
        key = self.workspaces["acme"][1]
        n = 0
        while not self.stop.is_set():
            roll = rng.random()
            if roll < 0.3:
                scope = rng.choice(["handbook", "support", "scratch"])
                documents = [{"id": f"doc-{n}-{i}", "text": " ".join(sentence(rng, 20) for _ in range(3))}
                             for i in range(rng.randint(2, 6))]
                n += 1
                body = {"model": EMBEDDING_MODEL, "mode": "index", "scope": scope, "input": {"documents": documents}}
                self.count("index", self.request("POST", "/api/runs", body, key=key, timeout=120))
            elif roll < 0.85:
                body = {"model": EMBEDDING_MODEL, "mode": "search", "scope": rng.choice(["handbook", "support"]),
                        "input": {"query": sentence(rng, 5), "top_k": rng.choice((3, 5, 10))}}
                self.count("search", self.request("POST", "/api/runs", body, key=key, timeout=120))
            elif roll < 0.93:
                body = {"model": EMBEDDING_MODEL, "input": [sentence(rng, 8) for _ in range(rng.randint(1, 4))]}
                self.count("embeddings", self.request("POST", "/v1/embeddings", body, key=key, timeout=120))
            else:
                self.count("delete", self.request("DELETE", f"/api/knowledge-bases/{EMBEDDING_MODEL}/scratch",
                                                  key=key))
            self.pause(1.5)

    def realtime_loop(self, index):
        rng = random.Random(self.seed + 500 + index)
        ws_url = self.url.replace("http://", "ws://", 1) + "/v1/realtime?model=claude-3-haiku"
        key = self.workspaces["initech"][1]
        self.stop.wait(index * 7.0)
        while not self.stop.is_set():
            try:
                socket_ = WebSocket(ws_url, {"Authorization": f"Bearer {key}"})
            except (OSError, ConnectionError) as e:
                self.count("realtime", f"refused {e}")
                self.pause(5)
                continue
            try:
                socket_.until("session.created")
                socket_.send({"type": "session.update",
                              "session": {"type": "realtime", "audio": {"input": {"turn_detection": None}}}})
                socket_.until("session.updated")
                for _ in range(rng.randint(1, 3)):
                    if self.stop.is_set():
                        break
                    socket_.send({"type": "input_audio_buffer.append", "audio": tone(rng.randint(400, 1500))})
                    socket_.send({"type": "input_audio_buffer.commit"})
                    socket_.until("conversation.item.done")
                    socket_.send({"type": "response.create"})
                    cancel = rng.random() < 0.2  # the user talks over the answer
                    while True:
                        event = socket_.recv()
                        if event is None:
                            raise ConnectionError("closed during a response")
                        if cancel and event.get("type") == "response.output_audio.delta":
                            socket_.send({"type": "response.cancel"})
                            cancel = False
                        if event.get("type") in ("response.done", "error"):
                            break
                    self.count("realtime", event.get("response", {}).get("status", event.get("type")))
                    self.stop.wait(rng.uniform(2, 6))
            except (OSError, ConnectionError, RuntimeError, ValueError) as e:
                self.count("realtime", f"error {type(e).__name__}")
            finally:
                socket_.close()
            self.pause(8)

    def faults_loop(self):
        """Upstream phases by fraction of the run, and a cut stream now and then."""
        phases = [
            (0.00, "healthy"),
            (0.33, "openai down"),      # OpenAI and Mistral answer 500: retries, fallbacks to Anthropic, open circuits
            (0.55, "healthy"),
            (0.68, "anthropic flapping"),  # every other Anthropic call fails: retries
            (0.76, "healthy"),
        ]
        current = None
        last_cut = time.time()
        rng = random.Random(self.seed + 600)
        while not self.stop.is_set():
            f = self.fraction()
            phase = [name for start, name in phases if f >= start][-1]
            if phase != current:
                log(f"phase: {phase}")
                current = phase
                self.fault(self.chat_mock, fault="none")
                self.fault(self.claude_mock, fault="none")
                if phase == "openai down":
                    self.fault(self.chat_mock, fault="status", status=500)
                elif phase == "anthropic flapping":
                    self.fault(self.claude_mock, fault="flap")
            if phase == "healthy" and time.time() - last_cut > rng.uniform(8, 16):
                last_cut = time.time()
                self.fault(rng.choice([self.chat_mock, self.claude_mock]), fault="cut_stream",
                           after_tokens=rng.randint(2, 6), times=1)
            self.stop.wait(0.5)
        self.fault(self.chat_mock, fault="none")
        self.fault(self.claude_mock, fault="none")

    def run(self):
        self.started = time.time()
        threads = [threading.Thread(target=self.chat_loop, args=(i,), daemon=True) for i in range(4)]
        threads += [threading.Thread(target=t, daemon=True)
                    for t in (self.refusals_loop, self.tasks_loop, self.media_loop, self.faults_loop)]
        threads += [threading.Thread(target=self.realtime_loop, args=(i,), daemon=True) for i in range(2)]
        if self.embeddings:
            threads.append(threading.Thread(target=self.vectors_loop, daemon=True))
        for t in threads:
            t.start()
        next_report = time.time() + 30
        while time.time() - self.started < self.duration:
            time.sleep(0.5)
            if time.time() >= next_report:
                next_report += 30
                with self.lock:
                    total = sum(self.counts.values())
                log(f"{time.time() - self.started:.0f} s: {total} requests so far, load {self.rate():.2f}")
        self.stop.set()
        for t in threads:
            t.join(timeout=90)
