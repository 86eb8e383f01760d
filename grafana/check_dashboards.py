#!/usr/bin/env python3
"""Checks Switchyard's Grafana dashboards (python3 standard library only).

For every dashboard in grafana/dashboards/*.json (panels nested in rows included):
  * every target's PromQL `expr` parses: Grafana's variables are substituted ($workspace, $model, $task and any other
    query variable -> its "All" value `.*`; $__rate_interval and $__interval -> 1m; $__range -> 1h) and the
    expressions are written as recording rules to a temporary file checked with `promtool check rules`;
    the series selectors of `label_values(selector, label)` variables are checked the same way;
  * with --metrics FILE (the text of GET /metrics of a running gateway), every metric name a query uses appears in it;
  * the dashboard is shaped as the project wants it: uid `switchyard-<file name>`, tag `switchyard`, links to the
    other dashboards by that tag, panels with a title, a description and a unit, unique ids, no overlapping panels,
    the provisioned Prometheus datasource, workspace/model/task variables with "All" = `.*` and multi-select, and
    every variable used somewhere;
  * grafana/provisioning/dashboards/*.yml loads a directory (so every dashboard file), not a single file.
Exits 1 on any failure, 2 on a usage error.

    python3 grafana/check_dashboards.py                      # everything, promtool required
    python3 grafana/check_dashboards.py --metrics metrics.txt
    python3 grafana/check_dashboards.py --list               # JSON [{dashboard, panel, expr}], substituted
    python3 grafana/check_dashboards.py --list --raw         # the same with Grafana's variables left in

`--list` only loads the dashboards and prints (no promtool, no lint); the real-Prometheus test evaluates the list.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
NO_UNIT_PANELS = {"row", "text", "news", "dashlist", "annolist", "alertlist"}
STANDARD_VARIABLES = ("workspace", "model", "task")
# Words of PromQL that look like metric names but are not.
KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset",
    "inf", "nan", "start", "end", "atan2",
}
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
IDENT = re.compile(r"(?<![A-Za-z0-9_:.$])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?")
VARIABLE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\$(\w+)|\[\[(\w+)(?::[^\]]*)?\]\]")
LABEL_VALUES = re.compile(r"^\s*label_values\s*\((.*),\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*$", re.S)
NAME_REGEX = re.compile(r'__name__\s*=~?\s*"([^"]*)"')


class Report:
    def __init__(self):
        self.failures = []

    def fail(self, where, message):
        self.failures.append(f"{where}: {message}")


def load_dashboards(directory):
    """[(file name, dashboard dict)], sorted by file name."""
    out = []
    for name in sorted(os.listdir(directory)):
        if name.endswith(".json"):
            with open(os.path.join(directory, name), encoding="utf-8") as f:
                out.append((name, json.load(f)))
    return out


def walk_panels(panels):
    """Every panel, a row's nested panels (collapsed rows) right after the row."""
    for panel in panels or []:
        yield panel
        yield from walk_panels(panel.get("panels"))


def variable_values(dashboard, rate_interval, interval, range_):
    """Name -> the value to substitute, for Grafana's built-ins and the dashboard's own variables."""
    seconds = duration_seconds(range_)
    values = {
        "__rate_interval": rate_interval,
        "__interval": interval,
        "__interval_ms": str(duration_seconds(interval) * 1000),
        "__range": range_,
        "__range_s": str(seconds),
        "__range_ms": str(seconds * 1000),
    }
    for var in dashboard.get("templating", {}).get("list", []):
        kind, name = var.get("type"), var.get("name")
        if kind in ("query", "custom"):
            values[name] = (var.get("allValue") or ".*") if var.get("includeAll") else (first_value(var) or ".*")
        elif kind in ("constant", "textbox"):
            values[name] = str(var.get("query", ""))
        elif kind == "interval":
            values[name] = first_value(var) or interval
    return values


def first_value(var):
    current = var.get("current", {}).get("value")
    if isinstance(current, list):
        current = current[0] if current else None
    if current and current != "$__all":
        return current
    options = var.get("options") or []
    if options:
        return options[0].get("value")
    query = var.get("query")
    if isinstance(query, str) and var.get("type") in ("custom", "interval"):
        return query.split(",")[0].strip() or None
    return None


def duration_seconds(text):
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    total = 0.0
    for number, unit in re.findall(r"(\d+)(ms|[smhdwy])", text):
        total += int(number) * units[unit]
    return int(total)


def substitute(expr, values):
    """(expression with variables replaced, names of unknown variables)."""
    unknown = []

    def one(match):
        name = match.group(1) or match.group(2) or match.group(3)
        if name in values:
            return values[name]
        unknown.append(name)
        return match.group(0)

    return VARIABLE.sub(one, expr), unknown


def metric_names(expr):
    """Metric names a PromQL expression selects (strings, label matchers, ranges and grouping lists skipped)."""
    names = set()
    for pattern in NAME_REGEX.findall(expr):
        names.update(n for n in pattern.split("|") if re.fullmatch(r"[A-Za-z_:][A-Za-z0-9_:]*", n))
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    text = re.sub(r"\{[^{}]*\}", " ", text)
    text = re.sub(r"\[[^\[\]]*\]", " ", text)
    text = GROUPING.sub(" ", text)
    for match in IDENT.finditer(text):
        word, call = match.group(1), match.group(2)
        if call or word.lower() in KEYWORDS:
            continue
        names.add(word)
    return names


def exported_names(path):
    """Metric names in a Prometheus text exposition (samples, and families declared by # TYPE)."""
    names = set()
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            if line.startswith("#"):
                parts = line.split()
                if len(parts) >= 4 and parts[1] == "TYPE":
                    names.add(parts[2])
                    if parts[3] in ("histogram", "summary"):
                        names.update(parts[2] + s for s in ("_bucket", "_sum", "_count"))
                continue
            match = re.match(r"[A-Za-z_:][A-Za-z0-9_:]*", line)
            if match:
                names.add(match.group(0))
    return names


def collect(dashboards, args, raw=False):
    """Every expression to check: dicts with file, dashboard, panel, ref, expr, raw, unknown."""
    items = []
    for file_name, dash in dashboards:
        uid = dash.get("uid") or file_name
        values = variable_values(dash, args.rate_interval, args.interval, args.range)
        for panel in walk_panels(dash.get("panels")):
            for target in panel.get("targets") or []:
                expr = target.get("expr")
                if not expr:
                    continue
                substituted, unknown = substitute(expr, values)
                items.append({
                    "file": file_name, "dashboard": uid, "panel": panel.get("title", f"id {panel.get('id')}"),
                    "ref": target.get("refId", "?"), "raw": expr, "expr": expr if raw else substituted,
                    "unknown": unknown, "variable": False,
                })
        for var in dash.get("templating", {}).get("list", []):
            if var.get("type") != "query":
                continue
            query = var.get("query")
            if isinstance(query, dict):
                query = query.get("query", "")
            match = LABEL_VALUES.match(query or "")
            if not match:
                continue
            substituted, unknown = substitute(match.group(1), values)
            items.append({
                "file": file_name, "dashboard": uid, "panel": f"variable ${var.get('name')}", "ref": "query",
                "raw": match.group(1), "expr": substituted, "unknown": unknown, "variable": True,
            })
    return items


def promtool_check(items, promtool, report):
    """Writes every expression as a recording rule and runs `promtool check rules`; pinpoints failures one by one."""

    def run(batch):
        groups = {}
        for i, item in enumerate(batch):
            groups.setdefault(item["dashboard"], []).append({"record": f"dashboard:expr_{i}", "expr": item["expr"]})
        rules = {"groups": [{"name": name, "rules": rules} for name, rules in groups.items()]}
        with tempfile.NamedTemporaryFile("w", suffix=".yml", prefix="dashboards-", delete=False) as f:
            json.dump(rules, f, indent=2)  # JSON is YAML
            path = f.name
        try:
            done = subprocess.run([promtool, "check", "rules", path], capture_output=True, text=True, timeout=120)
        finally:
            os.unlink(path)
        return done.returncode == 0, (done.stdout + done.stderr).strip()

    try:
        ok, output = run(items)
    except FileNotFoundError:
        report.fail("promtool", f"`{promtool}` not found (Debian: apt-get install prometheus); --skip-promtool skips")
        return
    if ok:
        return
    for item in items:
        ok, output = run([item])
        if not ok:
            lines = [l for l in output.splitlines() if l.strip() and not l.startswith("Checking ")]
            report.fail(where(item), "promtool: " + " | ".join(lines) + f"\n    expr: {item['expr']}")


def where(item):
    return f"{item['file']}: panel \"{item['panel']}\" ({item['ref']})"


def provisioned_datasource_uids():
    uids = set()
    directory = os.path.join(HERE, "provisioning", "datasources")
    if os.path.isdir(directory):
        for name in os.listdir(directory):
            with open(os.path.join(directory, name), encoding="utf-8") as f:
                uids.update(re.findall(r"^\s*uid:\s*['\"]?([^'\"\s#]+)", f.read(), re.M))
    return uids


def lint(dashboards, items, report):
    uids = provisioned_datasource_uids()
    used_vars = {}
    for item in items:
        if not item["variable"]:
            names = {m[0] or m[1] or m[2] for m in VARIABLE.findall(item["raw"])}
            used_vars.setdefault(item["file"], set()).update(names)
    for file_name, dash in dashboards:
        stem = file_name[: -len(".json")]
        if dash.get("uid") != stem or not stem.startswith("switchyard-"):
            report.fail(file_name, f"uid {dash.get('uid')!r} must be the file name, switchyard-<name>")
        if "switchyard" not in dash.get("tags", []):
            report.fail(file_name, "missing tag `switchyard`")
        if not dash.get("title"):
            report.fail(file_name, "no title")
        if not any(l.get("type") == "dashboards" and "switchyard" in l.get("tags", []) for l in dash.get("links", [])):
            report.fail(file_name, "no dashboard links by tag `switchyard`")
        for var in dash.get("templating", {}).get("list", []):
            name = var.get("name")
            if name in STANDARD_VARIABLES and not (
                var.get("type") == "query" and var.get("includeAll") and var.get("multi") and var.get("allValue") == ".*"
            ):
                report.fail(file_name, f"variable ${name} must be a query variable, multi-select, All = `.*`")
            if var.get("type") in ("query", "custom") and name not in used_vars.get(file_name, set()):
                report.fail(file_name, f"variable ${name} is used by no query")
        ids = set()
        for panel in walk_panels(dash.get("panels")):
            kind, title = panel.get("type"), panel.get("title", "")
            here = f"{file_name}: panel {panel.get('id')} \"{title}\""
            if panel.get("id") in ids:
                report.fail(here, "duplicate panel id")
            ids.add(panel.get("id"))
            if not title.strip():
                report.fail(here, "no title")
            if kind == "row":
                continue
            if not (panel.get("description") or "").strip():
                report.fail(here, "no description")
            if kind in NO_UNIT_PANELS:
                continue
            if not panel.get("fieldConfig", {}).get("defaults", {}).get("unit"):
                report.fail(here, "no unit (fieldConfig.defaults.unit)")
            targets = panel.get("targets") or []
            if not targets:
                report.fail(here, "no targets")
            refs = [t.get("refId") for t in targets]
            if None in refs or len(set(refs)) != len(refs):
                report.fail(here, "targets need distinct refIds")
            for target in targets:
                if not (target.get("expr") or "").strip():
                    report.fail(here, f"target {target.get('refId')} has no expr")
            for ds in [panel.get("datasource")] + [t.get("datasource") for t in targets]:
                uid = (ds or {}).get("uid") if isinstance(ds, dict) else ds
                if uid and uids and uid not in uids and not str(uid).startswith("$"):
                    report.fail(here, f"datasource uid {uid!r} is not provisioned ({', '.join(sorted(uids))})")
        overlaps(file_name, dash.get("panels") or [], report)


def overlaps(file_name, panels, report):
    boxes = []
    for panel in panels:
        g = panel.get("gridPos") or {}
        box = (g.get("x", 0), g.get("y", 0), g.get("w", 0), g.get("h", 0))
        if box[0] + box[2] > 24:
            report.fail(file_name, f"panel {panel.get('id')} is wider than the grid")
        for other_id, (x, y, w, h) in boxes:
            if box[0] < x + w and x < box[0] + box[2] and box[1] < y + h and y < box[1] + box[3]:
                report.fail(file_name, f"panels {other_id} and {panel.get('id')} overlap")
        boxes.append((panel.get("id"), box))


def check_provisioning(report):
    directory = os.path.join(HERE, "provisioning", "dashboards")
    if not os.path.isdir(directory):
        report.fail("provisioning", f"{directory} is missing")
        return
    for name in sorted(os.listdir(directory)):
        if not name.endswith((".yml", ".yaml")):
            continue
        with open(os.path.join(directory, name), encoding="utf-8") as f:
            text = f.read()
        paths = re.findall(r"^\s*path:\s*['\"]?([^'\"\s#]+)", text, re.M)
        if not paths:
            report.fail(f"provisioning/dashboards/{name}", "no `path:`")
        for path in paths:
            if path.endswith(".json"):
                report.fail(f"provisioning/dashboards/{name}", f"path {path} is one file; give the directory")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dashboards", default=os.path.join(HERE, "dashboards"), help="directory of *.json")
    parser.add_argument("--metrics", help="text of GET /metrics; every metric a query uses must be in it")
    parser.add_argument("--list", action="store_true", help="print [{dashboard, panel, expr}] as JSON and stop")
    parser.add_argument("--raw", action="store_true", help="with --list: leave Grafana's variables in")
    parser.add_argument("--promtool", default="promtool")
    parser.add_argument("--skip-promtool", action="store_true", help="lint and metric names only")
    parser.add_argument("--rate-interval", default="1m", help="value of $__rate_interval (default 1m)")
    parser.add_argument("--interval", default="1m", help="value of $__interval (default 1m)")
    parser.add_argument("--range", default="1h", help="value of $__range (default 1h)")
    args = parser.parse_args()

    dashboards = load_dashboards(args.dashboards)
    if not dashboards:
        print(f"no dashboards in {args.dashboards}", file=sys.stderr)
        return 1
    if args.list:
        items = [i for i in collect(dashboards, args, raw=args.raw) if not i["variable"]]
        listing = [{"dashboard": i["dashboard"], "panel": i["panel"], "expr": i["expr"]} for i in items]
        try:
            print(json.dumps(listing, indent=2, ensure_ascii=False))
        except BrokenPipeError:
            pass
        return 0

    report = Report()
    items = collect(dashboards, args)
    for item in items:
        if item["unknown"]:
            report.fail(where(item), "unknown variable(s) " + ", ".join("$" + n for n in item["unknown"]))
    lint(dashboards, items, report)
    check_provisioning(report)
    used = set()
    for item in items:
        if not item["unknown"]:
            used |= metric_names(item["expr"])
    if args.metrics:
        exported = exported_names(args.metrics)
        for item in items:
            if item["unknown"]:
                continue
            for name in sorted(metric_names(item["expr"]) - exported):
                report.fail(where(item), f"metric {name} is not in {args.metrics}")
    if not args.skip_promtool:
        promtool_check([i for i in items if not i["unknown"]], args.promtool, report)

    panels = sum(1 for _, d in dashboards for p in walk_panels(d.get("panels")) if p.get("type") != "row")
    for failure in report.failures:
        print("FAIL " + failure, file=sys.stderr)
    status = "FAILED" if report.failures else "OK"
    checked = "promtool skipped" if args.skip_promtool else "promtool check rules"
    print(f"{status}: {len(dashboards)} dashboards, {panels} panels, {len(items)} expressions ({checked}), "
          f"{len(used)} metric names{' checked against ' + args.metrics if args.metrics else ''}, "
          f"{len(report.failures)} failure(s)")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
