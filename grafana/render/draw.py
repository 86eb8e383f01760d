"""Drawing a dashboard in its own grid layout with matplotlib."""

import io
import math
import textwrap

import check_dashboards
from render.query import (BACKGROUND, BORDER, CHAR_PX, GRID, MUTED, PALETTE, PANEL, PX, TEXT, UNIT_H, finite, formatter,
                          grafana_color, has_data, reduce, series_of, threshold_color)


class Renderer:
    def __init__(self, plt, dates):
        self.plt = plt
        self.dates = dates

    def draw(self, dash, panels_data, start, end, subtitle, path):
        plt = self.plt
        panels = [p for p in check_dashboards.walk_panels(dash.get("panels"))]
        bottom = max((p.get("gridPos", {}).get("y", 0) + p.get("gridPos", {}).get("h", 0) for p in panels), default=1)
        lines = [part for paragraph in subtitle.split("\n") for part in textwrap.wrap(paragraph, 230)]
        header = 40 + 12 * len(lines)
        height = header + bottom * UNIT_H + 8
        dpi = 100
        fig = plt.figure(figsize=(PX / dpi, height / dpi), dpi=dpi, facecolor=BACKGROUND)
        fig.text(10 / PX, 1 - 12 / height, dash.get("title", ""), color=TEXT, fontsize=15, fontweight="bold",
                 va="top", ha="left")
        fig.text(10 / PX, 1 - 34 / height, "\n".join(lines), color=MUTED, fontsize=8, va="top", ha="left",
                 linespacing=1.25)
        drawn = with_data = 0
        empty = []
        for panel in panels:
            g = panel.get("gridPos", {})
            box = (g.get("x", 0) * PX / 24, header + g.get("y", 0) * UNIT_H, g.get("w", 24) * PX / 24,
                   g.get("h", 8) * UNIT_H)
            if panel.get("type") == "row":
                fig.text((box[0] + 8) / PX, 1 - (box[1] + box[3] / 2) / height, panel.get("title", ""), color=TEXT,
                         fontsize=10.5, fontweight="bold", va="center", ha="left")
                continue
            answers = panels_data.get(str(panel.get("id")), [])
            drawn += 1
            if has_data(answers):
                with_data += 1
            else:
                empty.append(panel.get("title", "?"))
            self.panel(fig, height, box, panel, answers, start, end)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=dpi, facecolor=BACKGROUND)
        plt.close(fig)
        save_small_png(buffer.getvalue(), path)
        return drawn, with_data, empty

    def axes(self, fig, height, left, top, width, h):
        """Axes at a box given in pixels from the top left."""
        return fig.add_axes([left / PX, 1 - (top + h) / height, width / PX, h / height])

    def panel(self, fig, height, box, panel, answers, start, end):
        x, y, w, h = box
        pad = 4
        frame = self.axes(fig, height, x + pad, y + pad, w - 2 * pad, h - 2 * pad)
        frame.set_facecolor(PANEL)
        frame.set_xticks([])
        frame.set_yticks([])
        for spine in frame.spines.values():
            spine.set_color(BORDER)
        title = panel.get("title", "")
        max_chars = int((w - 20) / 6.2)
        if len(title) > max_chars:
            title = title[: max_chars - 1] + "…"
        frame.text(8 / (w - 2 * pad), 1 - 12 / (h - 2 * pad), title, transform=frame.transAxes, color=TEXT,
                   fontsize=8.5, fontweight="bold", va="center", ha="left")
        inner = (x + pad + 6, y + pad + 24, w - 2 * pad - 12, h - 2 * pad - 28)
        kind = panel.get("type")
        errors = [a["error"] for a in answers if a.get("error")]
        if errors:
            self.note(fig, height, inner, "query error: " + errors[0][:120], "#f2495c")
            return
        if not has_data(answers):
            self.note(fig, height, inner, "No data", MUTED)
            return
        if kind == "stat":
            self.stat(fig, height, inner, panel, answers, start, end)
        elif kind == "bargauge":
            self.bargauge(fig, height, inner, panel, answers)
        elif kind == "table":
            self.table(fig, height, inner, panel, answers)
        elif kind == "heatmap":
            self.heatmap(fig, height, inner, panel, answers, start, end)
        elif kind == "state-timeline":
            self.timeline(fig, height, inner, panel, answers, start, end)
        else:
            self.timeseries(fig, height, inner, panel, answers, start, end)

    def note(self, fig, height, inner, text, color):
        ax = self.axes(fig, height, *inner)
        ax.set_axis_off()
        ax.text(0.5, 0.5, text, color=color, fontsize=10, ha="center", va="center", transform=ax.transAxes)

    def time_axis(self, ax, start, end):
        """x is in days since the epoch (matplotlib's date numbers), labelled HH:MM (UTC)."""
        dates = self.dates
        ax.set_xlim(start / 86400, end / 86400)
        ax.xaxis.set_major_locator(dates.MinuteLocator(interval=max(1, round((end - start) / 60 / 6))))
        ax.xaxis.set_major_formatter(dates.DateFormatter("%H:%M"))

    def style(self, ax):
        ax.set_facecolor(PANEL)
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.tick_params(colors=MUTED, labelsize=6.5, length=0, pad=2)
        ax.grid(True, color=GRID, linewidth=0.6)
        ax.set_axisbelow(True)

    def timeseries(self, fig, height, inner, panel, answers, start, end):
        defaults = panel.get("fieldConfig", {}).get("defaults", {})
        unit = defaults.get("unit")
        right = {}  # refId -> unit, for targets Grafana draws against a right-hand axis
        for override in panel.get("fieldConfig", {}).get("overrides", []):
            matcher = override.get("matcher", {})
            if matcher.get("id") != "byFrameRefID":
                continue
            props = {p.get("id"): p.get("value") for p in override.get("properties", [])}
            if props.get("custom.axisPlacement") == "right":
                right[matcher.get("options")] = props.get("unit", unit)
        series = [s for s in series_of(answers) if finite(s[3])]
        series.sort(key=lambda s: -max(finite(s[3])))
        x, y, w, h = inner
        labels = [s[1] for s in series]
        longest = max((len(l) for l in labels), default=8)
        ncol = max(1, min(len(labels), int(w // (longest * CHAR_PX + 26))))
        max_rows = 3 if h > 150 else 2
        rows = min(max_rows, math.ceil(len(labels) / ncol))
        shown = rows * ncol
        legend_h = rows * 11 + 4
        fmt = formatter(unit)

        def margin(units, refs):
            values = [abs(v) for s in series if (s[0] in refs) == (units is not None) for v in finite(s[3])]
            widest = max((len(fmt_(v)) for fmt_ in [formatter(units or unit)] for v in (max(values, default=0),
                                                                                       max(values, default=0) / 3)))
            return min(110, max(40, widest * CHAR_PX + 14))

        left = margin(None, right)
        right_margin = margin(next(iter(right.values())), right) if right else 6
        ax = self.axes(fig, height, x + left, y, w - left - right_margin, h - 16 - legend_h)
        self.style(ax)
        ax2 = None
        if right:
            ax2 = ax.twinx()
            ax2.tick_params(colors=MUTED, labelsize=6.5, length=0, pad=2)
            for spine in ax2.spines.values():
                spine.set_visible(False)
        handles = []
        for i, (ref, label, xs, ys, _) in enumerate(series):
            target = ax2 if ref in right else ax
            color = PALETTE[i % len(PALETTE)]
            days = [t / 86400 for t in xs]
            line, = target.plot(days, ys, color=color, linewidth=1.1, label=label)
            # Points with no neighbour would vanish as lines: mark them.
            lone = [(d, v) for j, (d, v) in enumerate(zip(days, ys))
                    if not math.isnan(v) and (j == 0 or math.isnan(ys[j - 1])) and
                    (j == len(ys) - 1 or math.isnan(ys[j + 1]))]
            if lone:
                target.plot([d for d, _ in lone], [v for _, v in lone], "o", color=color, markersize=2)
            fill = panel.get("fieldConfig", {}).get("defaults", {}).get("custom", {}).get("fillOpacity")
            if fill:
                target.fill_between(days, ys, 0, color=color, alpha=min(0.35, fill / 100), linewidth=0)
            handles.append(line)
        self.time_axis(ax, start, end)
        lo, hi = defaults.get("min"), defaults.get("max")
        values = [v for s in series if s[0] not in right for v in finite(s[3])]
        if lo is None and values and min(values) >= 0:
            lo = 0
        if lo is not None or hi is not None:
            ax.set_ylim(bottom=lo, top=hi)
        style = defaults.get("custom", {}).get("thresholdsStyle", {}) or {}
        if style.get("mode", "off") != "off":
            for step in defaults.get("thresholds", {}).get("steps", []):
                if step.get("value") is not None:
                    ax.axhline(step["value"], color=grafana_color(step.get("color")), linewidth=0.9,
                               linestyle="--" if "dashed" in style.get("mode", "") else "-", alpha=0.9)
        ax.yaxis.set_major_formatter(self.plt.FuncFormatter(lambda v, _: fmt(v)))
        ax.yaxis.set_major_locator(self.plt.MaxNLocator(nbins=4))
        if ax2 is not None:
            rfmt = formatter(next(iter(right.values())))
            ax2.yaxis.set_major_formatter(self.plt.FuncFormatter(lambda v, _: rfmt(v)))
            ax2.yaxis.set_major_locator(self.plt.MaxNLocator(nbins=4))
            rvalues = [v for s in series if s[0] in right for v in finite(s[3])]
            if rvalues and min(rvalues) >= 0:
                ax2.set_ylim(bottom=0)
        if handles:
            extra = len(handles) - shown
            shown_handles = handles[:shown] if extra <= 0 else handles[: shown - 1]
            shown_labels = [self.short(hh.get_label(), w / ncol) for hh in shown_handles]
            if extra > 0:
                shown_handles.append(self.plt.Line2D([], [], color=PANEL))
                shown_labels.append(f"… {extra + 1} more")
            legend = fig.legend(shown_handles, shown_labels, loc="upper left", ncol=ncol, frameon=False,
                                fontsize=6.5, labelcolor=TEXT, handlelength=1.2, handletextpad=0.4,
                                columnspacing=1.2, borderaxespad=0, borderpad=0,
                                bbox_to_anchor=((x + 4) / PX, 1 - (y + h - legend_h + 2) / height))
            legend.set_in_layout(False)

    @staticmethod
    def short(label, width):
        limit = max(10, int((width - 28) / CHAR_PX))
        return label if len(label) <= limit else label[: limit - 1] + "…"

    def stat(self, fig, height, inner, panel, answers, start, end):
        defaults = panel.get("fieldConfig", {}).get("defaults", {})
        options = panel.get("options", {})
        fmt = formatter(defaults.get("unit"))
        calcs = options.get("reduceOptions", {}).get("calcs")
        steps = defaults.get("thresholds", {}).get("steps")
        series = [s for s in series_of(answers) if finite(s[3])]
        x, y, w, h = inner
        n = len(series)
        cell_w = w / n
        name_mode = options.get("textMode", "auto")
        for i, (_, label, xs, ys, _) in enumerate(series):
            value = reduce(ys, calcs)
            color = threshold_color(steps, value, PALETTE[0])
            ax = self.axes(fig, height, x + i * cell_w, y, cell_w, h)
            ax.set_axis_off()
            ax.set_facecolor(PANEL)
            if options.get("graphMode", "area") == "area" and len(xs) > 1:
                spark = self.axes(fig, height, x + i * cell_w, y + h * 0.55, cell_w, h * 0.45)
                spark.set_axis_off()
                days = [t / 86400 for t in xs]
                spark.fill_between(days, ys, 0, color=color, alpha=0.25, linewidth=0)
                spark.plot(days, ys, color=color, linewidth=0.8, alpha=0.8)
                spark.set_xlim(start / 86400, end / 86400)
                if finite(ys) and min(finite(ys)) >= 0:
                    spark.set_ylim(bottom=0)
            text = fmt(value) if not math.isnan(value) else "–"
            size = max(11, min(30, cell_w / max(4, len(text)) * 1.1, h / 3.2))
            show_name = name_mode in ("value_and_name", "name") or (name_mode == "auto" and n > 1)
            ax.text(0.5, 0.5 if not show_name else 0.42, text, color=color, fontsize=size, fontweight="bold",
                    ha="center", va="center", transform=ax.transAxes)
            if show_name:
                ax.text(0.5, 0.82, self.short(label, cell_w), color=TEXT, fontsize=7, ha="center", va="center",
                        transform=ax.transAxes)

    def bargauge(self, fig, height, inner, panel, answers):
        defaults = panel.get("fieldConfig", {}).get("defaults", {})
        fmt = formatter(defaults.get("unit"))
        steps = defaults.get("thresholds", {}).get("steps")
        items = [(label, finite(ys)[-1]) for _, label, _, ys, _ in series_of(answers) if finite(ys)]
        x, y, w, h = inner
        rows = max(1, int(h // 16))
        items = items[:rows]
        ax = self.axes(fig, height, x + 4, y, w - 8, h)
        ax.set_axis_off()
        top = max((v for _, v in items), default=1) or 1
        for i, (label, value) in enumerate(items):
            row_y = 1 - (i + 0.5) / max(len(items), 4)
            color = threshold_color(steps, value, PALETTE[0])
            ax.text(0, row_y, self.short(label, w * 0.38), color=TEXT, fontsize=7, va="center", ha="left",
                    transform=ax.transAxes)
            ax.add_patch(self.plt.Rectangle((0.4, row_y - 0.35 / max(len(items), 4)), 0.45, 0.7 / max(len(items), 4),
                                            color=GRID, transform=ax.transAxes))
            ax.add_patch(self.plt.Rectangle((0.4, row_y - 0.35 / max(len(items), 4)), 0.45 * max(0, value) / top,
                                            0.7 / max(len(items), 4), color=color, transform=ax.transAxes))
            ax.text(1, row_y, fmt(value), color=color, fontsize=7, va="center", ha="right", transform=ax.transAxes)

    def table(self, fig, height, inner, panel, answers):
        organize = {}
        for transformation in panel.get("transformations", []):
            if transformation.get("id") == "organize":
                organize = transformation.get("options", {})
        rename = organize.get("renameByName", {})
        exclude = {k for k, v in organize.get("excludeByName", {}).items() if v}
        fmt = formatter(panel.get("fieldConfig", {}).get("defaults", {}).get("unit"))
        rows = [(metric, finite(ys)[-1]) for _, _, _, ys, metric in series_of(answers) if finite(ys)]
        rows.sort(key=lambda r: -r[1])
        columns = sorted({k for metric, _ in rows for k in metric if k != "__name__"} - exclude)
        header = [rename.get(c, c) for c in columns] + ([] if "Value" in exclude else [rename.get("Value", "Value")])
        table = [[metric.get(c, "") for c in columns] + ([] if "Value" in exclude else [fmt(v)]) for metric, v in rows]
        x, y, w, h = inner
        ax = self.axes(fig, height, x + 2, y, w - 4, h)
        ax.set_axis_off()
        line_h = 12
        max_rows = int(h // line_h) - 1
        widths = [max([len(header[i])] + [len(str(r[i])) for r in table]) for i in range(len(header))]
        chars = int((w - 8) / 5.0)
        while sum(widths) + 2 * len(widths) > chars and max(widths) > 8:
            widths[widths.index(max(widths))] -= 1

        def line(cells):
            out = []
            for cell, width in zip(cells, widths):
                cell = str(cell)
                out.append((cell if len(cell) <= width else cell[: width - 1] + "…").ljust(width))
            return "  ".join(out)

        shown = table[:max_rows] if len(table) <= max_rows else table[: max_rows - 1]
        lines = [line(header)] + [line(r) for r in shown]
        if len(table) > len(shown):
            lines.append(f"… {len(table) - len(shown)} more rows")
        for i, text in enumerate(lines):
            ax.text(0, 1 - (i + 0.5) * line_h / h, text, color=TEXT if i else MUTED, fontsize=6.6,
                    family="monospace", fontweight="bold" if i == 0 else "normal", va="center", ha="left",
                    transform=ax.transAxes)

    def heatmap(self, fig, height, inner, panel, answers, start, end):
        buckets = {}
        for _, _, xs, ys, metric in series_of(answers):
            le = metric.get("le")
            if le is not None:
                buckets[le] = (xs, ys)
        order = sorted(buckets, key=lambda le: float("inf") if le in ("+Inf", "Inf") else float(le))
        times = sorted({t for xs, _ in buckets.values() for t in xs})
        index = {t: i for i, t in enumerate(times)}
        grid = [[0.0] * len(times) for _ in order]
        for row, le in enumerate(order):
            xs, ys = buckets[le]
            for t, v in zip(xs, ys):
                grid[row][index[t]] = 0.0 if math.isnan(v) else v
        # Cumulative buckets -> per-bucket rates.
        for row in range(len(order) - 1, 0, -1):
            grid[row] = [max(0.0, a - b) for a, b in zip(grid[row], grid[row - 1])]
        # Drop empty bucket rows at both ends.
        used = [i for i, r in enumerate(grid) if any(v > 0 for v in r)]
        if used:
            grid, order = grid[used[0]: used[-1] + 1], order[used[0]: used[-1] + 1]
        x, y, w, h = inner
        ax = self.axes(fig, height, x + 54, y, w - 60, h - 16)
        self.style(ax)
        ax.grid(False)
        days = [t / 86400 for t in times]
        colors = self.plt.matplotlib.colors
        ax.pcolormesh(days + [days[-1] + (days[-1] - days[-2] if len(days) > 1 else 1 / 43200)] if days else [],
                      list(range(len(order) + 1)), grid, cmap="Oranges", shading="flat",
                      norm=colors.PowerNorm(gamma=0.5, vmin=0))
        fmt = formatter("s")
        step = max(1, len(order) // 6)
        ax.set_yticks([i + 0.5 for i in range(0, len(order), step)])
        ax.set_yticklabels([("+Inf" if le in ("+Inf", "Inf") else fmt(float(le))) for le in order[::step]])
        self.time_axis(ax, start, end)

    def timeline(self, fig, height, inner, panel, answers, start, end):
        defaults = panel.get("fieldConfig", {}).get("defaults", {})
        mapping = {}
        for m in defaults.get("mappings") or []:
            if m.get("type") == "value":
                for value, option in m.get("options", {}).items():
                    mapping[float(value)] = (option.get("text", value), grafana_color(option.get("color")))
        steps = defaults.get("thresholds", {}).get("steps")
        series = [s for s in series_of(answers) if finite(s[3])]
        series.sort(key=lambda s: s[1])
        x, y, w, h = inner
        legend_h = 14
        longest = max((len(s[1]) for s in series), default=10)
        left = min(w * 0.4, longest * CHAR_PX + 12)
        ax = self.axes(fig, height, x + left, y, w - left - 4, h - 16 - legend_h)
        self.style(ax)
        ax.grid(False)
        step_s = None
        for row, (_, label, xs, ys, _) in enumerate(series):
            if len(xs) > 1:
                step_s = xs[1] - xs[0]
            width = (step_s or 2) / 86400
            run_start, run_value = None, None
            for t, v in list(zip(xs, ys)) + [(None, None)]:
                same = v is not None and run_value is not None and (
                    v == run_value or (math.isnan(v) and math.isnan(run_value)))
                if same:
                    continue
                if run_start is not None and run_value is not None and not math.isnan(run_value):
                    end_t = (t / 86400) if t is not None else xs[-1] / 86400 + width
                    color = mapping.get(run_value, (None, threshold_color(steps, run_value, PALETTE[0])))[1]
                    ax.broken_barh([(run_start, end_t - run_start)], (row + 0.08, 0.84), facecolors=color,
                                   edgecolor=PANEL, linewidth=0.3)
                run_start, run_value = (t / 86400 if t is not None else None), v
        ax.set_ylim(0, len(series))
        ax.set_yticks([i + 0.5 for i in range(len(series))])
        ax.set_yticklabels([self.short(s[1], left + 16) for s in series])
        ax.invert_yaxis()
        self.time_axis(ax, start, end)
        if mapping:
            handles = [self.plt.Rectangle((0, 0), 1, 1, color=c) for _, (_, c) in sorted(mapping.items())]
            fig.legend(handles, [t for _, (t, _) in sorted(mapping.items())], loc="upper left", ncol=len(handles),
                       frameon=False, fontsize=6.5, labelcolor=TEXT, handlelength=1.0, borderaxespad=0,
                       bbox_to_anchor=((x + 4) / PX, 1 - (y + h - legend_h + 2) / height))


def save_small_png(raw, path):
    """A palette PNG (the pictures have few colours), optimised: a fraction of matplotlib's RGBA file."""
    from PIL import Image
    image = Image.open(io.BytesIO(raw)).convert("RGB")
    image = image.quantize(colors=192, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    image.save(path, format="PNG", optimize=True)


# --------------------------------------------------------------------------------------------------------------
