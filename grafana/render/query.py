"""Prometheus queries for every panel; the colours, sizes and value formats the drawing uses."""

import argparse
import math
import re
import urllib.error
import urllib.parse
import urllib.request

import check_dashboards
from render.processes import http_json

# --------------------------------------------------------------------------------------------------------------
# Prometheus queries


def prom(prometheus, path, params):
    status, answer = http_json("GET", f"{prometheus}{path}?" + urllib.parse.urlencode(params), timeout=60)
    if status != 200 or not answer or answer.get("status") != "success":
        return {"error": (answer or {}).get("error", f"HTTP {status}")}
    return {"result": answer["data"]["result"]}


INSTANT_TYPES = {"table", "bargauge"}


def query_dashboards(prometheus, dashboards, start, end, step, rate_interval):
    """{file: {panel id: [{refId, legend, instant, result | error}]}}."""
    seconds = max(60, int(math.ceil(end - start)))
    args = argparse.Namespace(rate_interval=rate_interval, interval=f"{step}s", range=f"{seconds}s")
    data = {}
    for file_name, dash in dashboards:
        values = check_dashboards.variable_values(dash, args.rate_interval, args.interval, args.range)
        panels = {}
        for panel in check_dashboards.walk_panels(dash.get("panels")):
            if panel.get("type") == "row":
                continue
            answers = []
            for target in panel.get("targets") or []:
                if not target.get("expr") or target.get("hide"):
                    continue
                expr, _ = check_dashboards.substitute(target["expr"], values)
                instant = bool(target.get("instant")) or panel.get("type") in INSTANT_TYPES
                if instant:
                    answer = prom(prometheus, "/api/v1/query", {"query": expr, "time": f"{end:.3f}"})
                else:
                    answer = prom(prometheus, "/api/v1/query_range",
                                  {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step}s"})
                answers.append({"refId": target.get("refId"), "expr": expr, "legend": target.get("legendFormat", ""),
                                "instant": instant, **answer})
            panels[str(panel.get("id"))] = answers
        data[file_name] = panels
    return data


# --------------------------------------------------------------------------------------------------------------
# Colours, sizes and value formats (the drawing's)

BACKGROUND = "#111217"
PANEL = "#181b1f"
BORDER = "#2c3235"
TEXT = "#ccccdc"
MUTED = "#8e8e9a"
GRID = "#2a2d33"
PALETTE = ["#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9", "#705da0", "#37872d",
           "#fade2a", "#447ebc", "#c15c17", "#890f02", "#0a437c", "#6d1f62", "#e0b400"]
NAMED = {"green": "#73bf69", "red": "#f2495c", "yellow": "#fade2a", "orange": "#ff9830", "blue": "#5794f2",
         "purple": "#b877d9", "text": TEXT, "transparent": PANEL}
PX = 1600  # picture width
CHAR_PX = 5.4  # width of a character of the 6.5 pt legend and tick text
UNIT_H = 26  # pixels per Grafana grid row (Grafana's own is 30; a little tighter keeps the pictures small)


def grafana_color(name, default=TEXT):
    if not name:
        return default
    if name.startswith("#"):
        return name
    base = name.lower()
    for prefix in ("semi-dark-", "dark-", "light-", "super-light-"):
        if base.startswith(prefix):
            base = base[len(prefix):]
    return NAMED.get(base, default)


def si(v):
    """3 significant digits, K / M / G / T above a thousand."""
    if math.isnan(v) or math.isinf(v):
        return str(v)
    a, suffix = abs(v), ""
    for limit, name in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if a >= limit * 0.9995:
            v, a, suffix = v / limit, a / limit, name
            break
    if a == 0:
        return "0"
    if a < 0.01:
        return f"{v:.2g}"
    digits = 0 if a >= 99.95 else 1 if a >= 9.995 else 2
    text = f"{v:.{digits}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text + suffix


def fmt_seconds(v):
    a = abs(v)
    if a == 0:
        return "0 s"
    if a < 1e-3:
        return f"{v * 1e6:.3g} µs"
    if a < 1:
        return f"{v * 1e3:.3g} ms"
    if a < 120:
        return f"{v:.3g} s"
    if a < 7200:
        return f"{v / 60:.3g} min"
    if a < 172800:
        return f"{v / 3600:.3g} h"
    return f"{v / 86400:.3g} day"


def fmt_bytes(v):
    a = abs(v)
    for limit, suffix in ((1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if a >= limit:
            return f"{v / limit:.3g} {suffix}"
    return f"{v:.0f} B"


def formatter(unit):
    unit = unit or "short"
    if unit == "percentunit":
        return lambda v: f"{v * 100:.3g}%"
    if unit == "percent":
        return lambda v: f"{v:.3g}%"
    if unit == "s":
        return fmt_seconds
    if unit == "ms":
        return lambda v: fmt_seconds(v / 1000)
    if unit == "h":
        return lambda v: fmt_seconds(v * 3600)
    if unit in ("bytes", "decbytes"):
        return fmt_bytes
    if unit == "reqps":
        return lambda v: f"{si(v)} req/s"
    if unit.startswith("suffix:"):
        suffix = unit.split(":", 1)[1].strip()
        return lambda v: f"{si(v)} {suffix}"
    return si


def legend_label(fmt, metric):
    if fmt and fmt != "__auto":
        pattern = r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}"
        text = re.sub(pattern, lambda m: str(metric.get(m.group(1), "")), fmt)
        return " ".join(text.split()) or "(no " + ", ".join(re.findall(pattern, fmt) or ["name"]) + ")"
    labels = {k: v for k, v in metric.items() if k != "__name__"}
    if not labels:
        return metric.get("__name__", "value")
    return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def to_float(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return float("nan")


def series_of(answers):
    """[(refId, label, xs, ys)] for range answers; instant answers give one point each."""
    out = []
    for answer in answers:
        for item in answer.get("result") or []:
            label = legend_label(answer.get("legend"), item.get("metric", {}))
            if "values" in item:
                xs = [float(t) for t, _ in item["values"]]
                ys = [to_float(v) for _, v in item["values"]]
            else:
                xs, ys = [float(item["value"][0])], [to_float(item["value"][1])]
            out.append((answer.get("refId"), label, xs, ys, item.get("metric", {})))
    return out


def finite(ys):
    return [y for y in ys if not (math.isnan(y) or math.isinf(y))]


def has_data(answers):
    return any(finite(ys) for _, _, _, ys, _ in series_of(answers))


def reduce(ys, calcs):
    values = finite(ys)
    if not values:
        return float("nan")
    calc = (calcs or ["lastNotNull"])[0]
    return {"mean": sum(values) / len(values), "max": max(values), "min": min(values), "sum": sum(values),
            "first": values[0], "firstNotNull": values[0]}.get(calc, values[-1])


def threshold_color(steps, value, default):
    color = default
    for step in steps or []:
        if step.get("value") is None or (not math.isnan(value) and value >= step["value"]):
            color = grafana_color(step.get("color"), default)
    return color
