#!/usr/bin/env python3
"""Pictures of Switchyard's Grafana dashboards, made from a real run: docs/dashboards/<name>.png.

Starts the release mock upstream (twice: one for OpenAI and Mistral, one for Anthropic, so that one provider can
fail while the other takes its fallbacks; a third in `--media` mode for Black Forest Labs and ElevenLabs), the
release gateway on a fresh data directory, and Prometheus (Debian's `prometheus`) scraping it every second with the
alert rules of config/alerts.yml; all on 127.0.0.1, on free ports, all stopped at the end. Then drives `--minutes`
of varied traffic from a few threads (standard library only): whole and streamed chat on several models and
workspaces, a small-rpm workspace (429s), a nearly empty wallet (402s), a key limited to one model (403s), a
one-at-a-time workspace (concurrency refusals), bad keys, unknown models, clients that leave streams, task runs,
images and speech (stored media), realtime voice sessions over WebSocket, vector index / search / delete when the
embedding model is in .cache/models; with phases of upstream faults (OpenAI down for a while: retries, fallbacks,
open circuits; Anthropic flapping; cut streams now and then) and a rate that rises and falls.

Then every panel of every dashboard in grafana/dashboards/ is asked of Prometheus (`/api/v1/query_range` over the
run, step 2 s; instant queries for table and bar-gauge panels), variables substituted as
grafana/check_dashboards.py does (every variable "All"), and drawn as one PNG per dashboard in the dashboard's own
grid layout: time series as lines (legend from legendFormat), stat panels as a big number of the last value,
bar gauges as bars, tables as text, the heatmap and the state timeline as such.

Needs matplotlib (`make dashboards-png` installs it into .cache/plot-venv) for the drawing only.

    .cache/plot-venv/bin/python grafana/render_dashboards.py                 # a 4-minute run, then the pictures
    .cache/plot-venv/bin/python grafana/render_dashboards.py --minutes 1 --save-data /tmp/run.json
    .cache/plot-venv/bin/python grafana/render_dashboards.py --from-data /tmp/run.json   # redraw, no run
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import check_dashboards  # noqa: E402  (the same dashboards loading and variable substitution as the checks)

from render.draw import Renderer  # noqa: E402
from render.processes import Processes, log, start_gateway, start_mock, start_prometheus, wait_for_scrapes  # noqa: E402
from render.query import query_dashboards  # noqa: E402
from render.traffic import Traffic  # noqa: E402




def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=4.0, help="length of the traffic run (default 4)")
    parser.add_argument("--out", default=os.path.join(ROOT, "docs", "dashboards"), help="directory for the PNGs")
    parser.add_argument("--dashboards", default=os.path.join(HERE, "dashboards"))
    parser.add_argument("--gateway", default=os.path.join(ROOT, "target", "release", "switchyard"))
    parser.add_argument("--mock", default=os.path.join(ROOT, "target", "release", "switchyard-mock"))
    parser.add_argument("--models", default=os.path.join(ROOT, ".cache", "models"),
                        help="embedding model files; vectors traffic only when this directory exists")
    parser.add_argument("--step", type=int, default=2, help="query_range step, seconds (default 2)")
    parser.add_argument("--rate-interval", default="30s",
                        help="$__rate_interval for the run's pictures (default 30s: a few minutes need a short window)")
    parser.add_argument("--save-data", help="also write what Prometheus answered to this JSON file")
    parser.add_argument("--from-data", help="draw from a file --save-data wrote; no run")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, Prometheus TSDB)")
    args = parser.parse_args()

    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.dates as dates
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is missing: run `make dashboards-png`, or python3 -m venv .cache/plot-venv && "
              ".cache/plot-venv/bin/pip install matplotlib, and use .cache/plot-venv/bin/python", file=sys.stderr)
        return 2
    plt.matplotlib = matplotlib
    plt.FuncFormatter = matplotlib.ticker.FuncFormatter
    plt.MaxNLocator = matplotlib.ticker.MaxNLocator
    plt.Line2D = matplotlib.lines.Line2D
    plt.Rectangle = matplotlib.patches.Rectangle

    dashboards = check_dashboards.load_dashboards(args.dashboards)
    began = time.time()
    if args.from_data:
        with open(args.from_data, encoding="utf-8") as f:
            run = json.load(f)
    else:
        run = run_and_query(args, dashboards)
        if args.save_data:
            with open(args.save_data, "w", encoding="utf-8") as f:
                json.dump(run, f)

    os.makedirs(args.out, exist_ok=True)
    renderer = Renderer(plt, dates)
    start, end = run["start"], run["end"]
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(start))
    names = ", ".join(f"{ws} = {name}" for name, ws in sorted(run.get("workspaces", {}).items(), key=lambda i: i[0])
                      if ws)
    for file_name, dash in dashboards:
        name = file_name[: -len(".json")].removeprefix("switchyard-")
        subtitle = (f"A real run, {when}: {(end - start) / 60:.1f} min of mixed traffic through the release gateway "
                    f"against the mock upstream; Prometheus scraping every 1 s; every variable All; "
                    f"$__rate_interval = {run['rate_interval']}, step {run['step']} s.")
        if names:
            subtitle += f"\nWorkspaces: {names}."
        path = os.path.join(args.out, f"{name}.png")
        drawn, with_data, empty = renderer.draw(dash, run["data"].get(file_name, {}), start, end, subtitle, path)
        size = os.path.getsize(path) // 1024
        line = f"{name}: {drawn} panels drawn, {with_data} with data ({path}, {size} KiB)"
        if empty:
            line += "; no data: " + "; ".join(empty)
        print(line, flush=True)
    log(f"done in {time.time() - began:.0f} s")
    return 0


def run_and_query(args, dashboards):
    for binary in (args.gateway, args.mock):
        if not os.access(binary, os.X_OK):
            raise SystemExit(f"{binary} is missing: cargo build --release --bin switchyard --bin switchyard-mock")
    if not shutil.which("prometheus"):
        raise SystemExit("prometheus is missing (Debian: apt-get install prometheus)")
    models = os.path.abspath(args.models) if os.path.isdir(args.models) else None
    directory = tempfile.mkdtemp(prefix="switchyard-dashboards-")
    procs = Processes(directory)
    try:
        # OpenAI and Mistral on one mock, Anthropic on another: one provider fails while the other serves.
        mock_args = ["--ttft-ms", "40", "--token-interval-us", "12000"]
        chat_mock = start_mock(procs, "mock-openai", args.mock, mock_args)
        claude_mock = start_mock(procs, "mock-anthropic", args.mock, mock_args)
        media_mock = start_mock(procs, "mock-media", args.mock, ["--media"])
        gateway, key = start_gateway(procs, args.gateway, chat_mock, claude_mock, media_mock,
                                     os.path.join(directory, "data"), models)
        log(f"gateway {gateway} (embeddings {'on' if models else 'off'}), mocks {chat_mock} {claude_mock} "
            f"{media_mock}")
        prometheus = start_prometheus(procs, directory, gateway.removeprefix("http://"))
        log(f"prometheus {prometheus}; tmp {directory}")
        wait_for_scrapes(prometheus, 3)
        traffic = Traffic(gateway, key, (chat_mock, claude_mock, media_mock), args.minutes, bool(models))
        traffic.setup()
        start = time.time() - 5
        log(f"traffic for {args.minutes:g} min")
        traffic.run()
        wait_for_scrapes(prometheus, 3)
        end = time.time()
        summary = ", ".join(f"{k}: {v}" for k, v in sorted(traffic.counts.items()))
        log(f"requests by kind and status: {summary}")
        for error in traffic.errors[:5]:
            log(f"traffic error: {error}")
        data = query_dashboards(prometheus, dashboards, start, end, args.step, args.rate_interval)
        return {"start": start, "end": end, "step": args.step, "rate_interval": args.rate_interval, "data": data,
                "workspaces": {name: ws for name, (ws, _) in traffic.workspaces.items()
                               if name not in ("chat-only",)},
                "counts": traffic.counts}
    finally:
        procs.stop_all()
        if args.keep:
            log(f"kept {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
