def _arbor_charts():
    # Run silently by arbor-interpreter when a python kernel starts: a
    # matplotlib Figure that is displayed (plt.show(), the inline backend's
    # end-of-cell flush, display(fig)) also carries the data it plots under
    # application/vnd.e2b.chart+json, the SDK's `result.chart` (protocol notes
    # §5.4). Figures are recognised by class name, so matplotlib is only
    # imported by the user; not through the type registry, which the inline
    # backend clears of Figure entries (select_figure_formats) when it starts.
    # Read from the figure's artists after the png formatter drew it; anything
    # this does not understand gives an "unknown" chart, and a failure gives
    # no chart (never an error in the user's output).
    import math
    import re
    from IPython import get_ipython
    from IPython.core.formatters import JSONFormatter
    from traitlets import Unicode

    class ChartFormatter(JSONFormatter):
        format_type = Unicode("application/vnd.e2b.chart+json")
        print_method = "_repr_e2b_chart_"

        def __call__(self, obj):
            is_figure = any(c.__module__ == "matplotlib.figure" and c.__name__ == "Figure" for c in type(obj).__mro__)
            return figure_chart(obj) if self.enabled and is_figure else None

    def number(v):
        v = float(v)
        return v if math.isfinite(v) else None

    def unit(label):
        # "Time (s)" -> "s": the SDK's x_unit/y_unit.
        m = re.search(r"\(([^()]*)\)", label or "")
        return (m.group(1).strip() or None) if m else None

    def close(a, b):
        return abs(float(a) - float(b)) <= 1e-9 * max(1.0, abs(float(a)), abs(float(b)))

    def text_or_none(s):
        return s if s else None

    class Scale:
        """How one axis maps matplotlib's internal floats back to user values."""

        def __init__(self, axis, name):
            from matplotlib import category, dates

            self.axis = axis
            self.dates = dates
            conv = axis.get_converter() if hasattr(axis, "get_converter") else getattr(axis, "converter", None)
            self.categories = None
            if isinstance(axis.units, category.UnitData):
                self.kind = "categorical"
                self.categories = {v: k for k, v in axis.units._mapping.items()}
            elif conv is not None and type(conv).__module__ == "matplotlib.dates":
                self.kind = "datetime"
            else:
                self.kind = name

        def value(self, v):
            if self.kind == "datetime":
                return self.dates.num2date(float(v)).replace(tzinfo=None).isoformat()
            if self.categories is not None:
                cat = self.categories.get(int(round(float(v))))
                if cat is not None:
                    return str(cat)
            return number(v)

        def ticks(self):
            locs = list(self.axis.get_majorticklocs())
            labels = self.axis.get_major_formatter().format_ticks(locs)
            if self.kind == "datetime":
                return [self.value(v) for v in locs], [str(s) for s in labels]
            return [number(v) for v in locs], [str(s) for s in labels]

        def label_at(self, pos):
            """The tick label nearest to `pos` (bar and box categories)."""
            locs = list(self.axis.get_majorticklocs())
            if not locs:
                return ""
            labels = self.axis.get_major_formatter().format_ticks(locs)
            i = min(range(len(locs)), key=lambda j: abs(locs[j] - pos))
            return str(labels[i])

    def base(ax, kind, elements):
        return {
            "type": kind,
            "title": text_or_none(ax.get_title()),
            "x_label": text_or_none(ax.get_xlabel()),
            "y_label": text_or_none(ax.get_ylabel()),
            "x_unit": unit(ax.get_xlabel()),
            "y_unit": unit(ax.get_ylabel()),
            "elements": elements,
        }

    def series_label(artist):
        label = artist.get_label() or ""
        return "" if label.startswith("_") else label

    def points_chart(ax, kind, series):
        xs, ys = Scale(ax.xaxis, ax.get_xscale()), Scale(ax.yaxis, ax.get_yscale())
        elements = [
            {"label": series_label(artist), "points": [[xs.value(x), ys.value(y)] for x, y in pts]}
            for artist, pts in series
        ]
        chart = base(ax, kind, elements)
        chart["x_scale"], chart["y_scale"] = xs.kind, ys.kind
        chart["x_ticks"], chart["x_tick_labels"] = xs.ticks()
        chart["y_ticks"], chart["y_tick_labels"] = ys.ticks()
        return chart

    def pie(ax, wedges):
        elements = [
            {"label": w.get_label(), "angle": round(float(w.theta2 - w.theta1), 6), "radius": number(w.r)}
            for w in wedges
        ]
        return {"type": "pie", "title": text_or_none(ax.get_title()), "elements": elements}

    def bar(ax, containers):
        xs = Scale(ax.xaxis, ax.get_xscale())
        elements = []
        for container in containers:
            group = series_label(container)
            for rect in container.patches:
                center = rect.get_x() + rect.get_width() / 2
                elements.append({"label": xs.label_at(center), "group": group, "value": number(rect.get_height())})
        return base(ax, "bar", elements)

    def rectangle(xy):
        xs = sorted({round(float(x), 9) for x, _ in xy})
        ys = sorted({round(float(y), 9) for _, y in xy})
        return (xs[0], xs[-1], ys[0], ys[-1]) if len(xs) == 2 and len(ys) == 2 else None

    def boxes(ax):
        """(x0, x1, q1, q3) of each box a vertical boxplot drew, in x order:
        PathPatch boxes (patch_artist=True) or closed 5-point Line2D boxes."""
        from matplotlib.patches import PathPatch

        found = []
        for p in ax.patches:
            if isinstance(p, PathPatch):
                r = rectangle(p.get_path().vertices)
                if r:
                    found.append(r)
        if not found:
            for line in ax.get_lines():
                xy = line.get_xydata()
                if len(xy) == 5 and tuple(xy[0]) == tuple(xy[-1]):
                    r = rectangle(xy)
                    if r:
                        found.append(r)
        return sorted(found)

    def box_and_whisker(ax, found):
        xs = Scale(ax.xaxis, ax.get_xscale())
        # Fliers are marker-only lines; the rest are whiskers, caps, medians.
        markers = [line for line in ax.get_lines() if line.get_linestyle() in ("None", "none", "", " ")]
        lines = [line.get_xydata() for line in ax.get_lines() if line not in markers]
        elements = []
        for x0, x1, q1, q3 in found:
            center = (x0 + x1) / 2
            inside = [xy for xy in lines if len(xy) and all(x0 - 1e-9 <= x <= x1 + 1e-9 for x, _ in xy)]
            # Whiskers: vertical 2-point lines at the centre, from a quartile outwards.
            whisker = [y for xy in inside if len(xy) == 2 and close(xy[0][0], xy[1][0]) for _, y in xy]
            # The median: a horizontal line as wide as the box.
            median = next(
                (
                    xy[0][1]
                    for xy in inside
                    if len(xy) == 2
                    and close(xy[0][1], xy[1][1])
                    and close(min(xy[0][0], xy[1][0]), x0)
                    and close(max(xy[0][0], xy[1][0]), x1)
                    and q1 <= xy[0][1] <= q3
                ),
                None,
            )
            outliers = [
                number(y)
                for line in markers
                for x, y in line.get_xydata()
                if abs(x - center) <= (x1 - x0) / 2 + 1e-9
            ]
            elements.append(
                {
                    "label": xs.label_at(center),
                    "min": number(min(whisker + [q1])),
                    "first_quartile": number(q1),
                    "median": number(median) if median is not None else None,
                    "third_quartile": number(q3),
                    "max": number(max(whisker + [q3])),
                    "outliers": outliers,
                }
            )
        return base(ax, "box_and_whisker", elements)

    def axes_chart(ax):
        from matplotlib.collections import PathCollection
        from matplotlib.container import BarContainer
        from matplotlib.patches import Wedge

        wedges = [p for p in ax.patches if isinstance(p, Wedge)]
        if wedges:
            return pie(ax, wedges)
        found = boxes(ax)
        if found:
            return box_and_whisker(ax, found)
        bars = [c for c in ax.containers if isinstance(c, BarContainer)]
        if bars:
            return bar(ax, bars)
        lines = [line for line in ax.get_lines() if line.get_visible() and len(line.get_xydata())]
        if lines:
            return points_chart(ax, "line", [(line, line.get_xydata()) for line in lines])
        scatters = [c for c in ax.collections if isinstance(c, PathCollection) and len(c.get_offsets())]
        if scatters:
            return points_chart(ax, "scatter", [(c, c.get_offsets()) for c in scatters])
        return {"type": "unknown", "title": text_or_none(ax.get_title()), "elements": []}

    def figure_chart(fig):
        try:
            axes = [ax for ax in fig.get_axes() if ax.get_visible()]
            if not axes:
                return None
            if len(axes) == 1:
                return axes_chart(axes[0])
            title = fig.get_suptitle() if hasattr(fig, "get_suptitle") else getattr(fig._suptitle, "get_text", str)()
            return {"type": "superchart", "title": text_or_none(title), "elements": [axes_chart(ax) for ax in axes]}
        except Exception:  # noqa: BLE001 - a chart is a bonus, never an error
            return None

    fmt = get_ipython().display_formatter
    chart = ChartFormatter(parent=fmt)
    fmt.formatters[chart.format_type] = chart
    if chart.format_type not in fmt.active_types:
        fmt.active_types.append(chart.format_type)


_arbor_charts()
del _arbor_charts
