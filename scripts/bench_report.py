"""The rendering half of `make bench`: docs/BENCHMARKS.md and docs/bench/*.svg from a results.json.

`scripts/bench.py` measures (runs the Rust and PIL benchmarks, writes results.json) and calls `render` and
`write_charts` here; `python3 scripts/bench.py --report-only docs/bench/results.json` re-renders without measuring.
The prose of the report lives in the template `scripts/bench_report.md` (one `<!-- name -->` section each, with
`$placeholders` for figures of the run); this module computes the figures, tables, charts and verdicts.
"""

from __future__ import annotations

import itertools
import math
import string
from pathlib import Path

COMMAND = "make bench"
TEMPLATE = Path(__file__).resolve().parent / "bench_report.md"


def template(name: str) -> string.Template:
    """The `<!-- name -->` section of the report template."""
    text = TEMPLATE.read_text()
    start = text.index(f"<!-- {name} -->\n") + len(f"<!-- {name} -->\n")
    end = text.find("\n<!-- ", start)
    return string.Template(text[start : end if end >= 0 else len(text)].strip("\n"))


# ---------------------------------------------------------------------------------------------------------------
# Derived figures and verdicts


def by(rows: list[dict], *keys: str) -> dict:
    return {tuple(r[k] for k in keys): r for r in rows}


def png_rows(results: dict) -> list[dict]:
    rust = by(results["rust"].get("png", []), "size", "level")
    pil = by(results["pil"].get("png", []), "size", "level")
    rows = []
    for key in sorted(rust):
        if key not in pil:
            continue
        r, p = rust[key], pil[key]
        rows.append(
            {
                "size": key[0],
                "level": key[1],
                "rust_save_ms": r["save_ms"],
                "rust_cpu_ms": r["save_cpu_ms"],
                "rust_encode_ms": r["encode_ms"],
                "pil_save_ms": p["save_ms"],
                "pil_cpu_ms": p["save_cpu_ms"],
                "pil_encode_ms": p["encode_ms"],
                "speed": cpu_ratio(p, r),
                "speed_wall": p["save_ms"] / r["save_ms"],
                "speed_encode": p["encode_ms"] / r["encode_ms"],
                "rust_bytes": r["bytes"],
                "pil_bytes": p["bytes"],
                "size_ratio": r["bytes"] / p["bytes"],
            }
        )
    return rows


def cpu_ratio(pil: dict, rust: dict) -> float:
    """Per-core speed: PIL's CPU time / Luna's CPU time for one save (the wall-clock ratio where no CPU time)."""
    if pil.get("save_cpu_ms", 0) > 0 and rust.get("save_cpu_ms", 0) > 0:
        return pil["save_cpu_ms"] / rust["save_cpu_ms"]
    return pil["save_ms"] / rust["save_ms"]


def codec_rows(results: dict) -> list[dict]:
    rust = by(results["rust"].get("codecs", []), "size", "codec")
    pil = by(results["pil"].get("codecs", []), "size", "codec")
    rows = []
    for key in sorted(rust, key=lambda k: (k[0], CODECS.index(k[1]))):
        if key not in pil:
            continue
        r, p = rust[key], pil[key]
        rows.append(
            {
                "size": key[0],
                "codec": key[1],
                "rust_save_ms": r["save_ms"],
                "pil_save_ms": p["save_ms"],
                "speed": cpu_ratio(p, r),
                "speed_wall": p["save_ms"] / r["save_ms"],
                "speed_encode": p["encode_ms"] / r["encode_ms"],
                "rust_bytes": r["bytes"],
                "pil_bytes": p["bytes"],
                "size_ratio": r["bytes"] / p["bytes"],
            }
        )
    return rows


CODECS = ["jpeg_q90", "jpeg_q95", "webp_q90", "webp_lossless"]
CODEC_LABELS = {
    "jpeg_q90": "JPEG q90",
    "jpeg_q95": "JPEG q95",
    "webp_q90": "WebP lossy q90",
    "webp_lossless": "WebP lossless",
}
# Same codec library and settings on both sides: sizes within this are "equal" (container bytes).
EQUAL_SIZE = 1.001


def monotonic(sizes: list[int]) -> bool:
    return all(b <= a for a, b in itertools.pairwise(sizes))


def scaling_configs(results: dict) -> list[dict]:
    """Per configuration (format), rows with scaling relative to one worker and efficiency against the control."""
    configs = results["rust"].get("scaling", [])
    if isinstance(configs, dict):  # an older results.json with a single configuration
        configs = [{"key": "png_l4", **configs}]
    out = []
    for config in configs:
        rows = config.get("rows", [])
        if not rows:
            continue
        d1, c1 = rows[0]["images_per_s"], rows[0]["control_per_s"]
        scaled = []
        for r in rows:
            ds, cs = r["images_per_s"] / d1, r["control_per_s"] / c1
            scaled.append(
                {
                    **r,
                    "daemon_scaling": ds,
                    "control_scaling": cs,
                    "efficiency": ds / cs,
                }
            )
        out.append({**config, "rows": scaled})
    return out


E2E_KEYS = [("e2e", 1), ("e2e_batch4", 4)]


def e2e_figures(results: dict, key: str = "e2e") -> dict | None:
    r, p = results["rust"].get(key), results["pil"].get(key)
    if not r or not p:
        return None
    daemon_factor = r["daemon_ms"] / r["generate_alone_ms"]
    rust_blocking_factor = r["blocking_rust_ms"] / r["generate_alone_ms"]
    pil_factor = p["blocking_pil_ms"] / p["generate_alone_ms"]
    return {
        "daemon_factor": daemon_factor,
        "rust_blocking_factor": rust_blocking_factor,
        "pil_factor": pil_factor,
        "speedup_vs_pil": pil_factor / daemon_factor,
        "speedup_vs_rust_blocking": rust_blocking_factor / daemon_factor,
        "drain_ms": r["daemon_drain_ms"],
    }


def key_figures(results: dict) -> dict:
    """The headline ratios of one run, kept in docs/bench/history.json to show run-to-run variation."""
    m = results["machine"]
    png, codecs = png_rows(results), codec_rows(results)
    fig: dict = {
        "date": m.get("date"),
        "commit": m.get("commit"),
        "load": (m.get("loadavg_start") or [None])[0],
        "busy_pct": m.get("busy_pct"),
    }
    l4 = [r for r in png if r["level"] == 4 and r["size"] == 1024]
    if l4:
        fig["png_l4_speed"] = l4[0]["speed"]
        fig["png_l4_size"] = l4[0]["size_ratio"]
    if png:
        fig["png_min_speed"] = min(r["speed"] for r in png)
        fig["png_max_size"] = max(r["size_ratio"] for r in png)
    if codecs:
        fig["codec_min_speed"] = min(r["speed"] for r in codecs)
    submit = results["rust"].get("submit")
    if submit:
        for key in ("with_crc32", "without_crc32"):
            fig[f"submit_{key}"] = submit[key]["submit_ms"] / submit[key]["memcpy_ms"]
    for c in scaling_configs(results):
        at_n = [r for r in c["rows"] if r["workers"] == m.get("nproc")]
        if at_n and len(c["rows"]) > 1:
            fig[f"scaling_{c['key']}"] = at_n[0]["efficiency"]
    memory = results["rust"].get("memory", [])
    if memory:
        fig["peak_rss_mib"] = max(r["hwm_mib"] for r in memory)
    e2e = e2e_figures(results)
    if e2e:
        fig["e2e_overhead_pct"] = 100 * (e2e["daemon_factor"] - 1)
        fig["e2e_speedup_pil"] = e2e["speedup_vs_pil"]
    e2e4 = e2e_figures(results, "e2e_batch4")
    if e2e4:
        fig["e2e4_overhead_pct"] = 100 * (e2e4["daemon_factor"] - 1)
        fig["e2e4_speedup_pil"] = e2e4["speedup_vs_pil"]
    return fig


HISTORY_COLUMNS = [
    ("date", "run", None),
    ("load", "load avg", None),
    ("png_l4_speed", "PNG L4 per-core x", 1),
    ("png_l4_size", "PNG L4 size", 3),
    ("png_min_speed", "PNG slowest level x", 2),
    ("codec_min_speed", "JPEG/WebP slowest x", 2),
    ("submit_with_crc32", "submit/memcpy (CRC)", 2),
    ("submit_without_crc32", "submit/memcpy (no CRC)", 2),
    ("scaling_png_l4", "scaling eff. PNG L4", 2),
    ("scaling_png_l4_tmpfs", "eff. PNG L4 tmpfs", 2),
    ("scaling_webp_q90", "eff. WebP", 2),
    ("peak_rss_mib", "peak RSS MiB", 1),
    ("e2e_overhead_pct", "e2e daemon overhead %", 1),
    ("e2e_speedup_pil", "speedup vs PIL", 2),
    ("e2e4_overhead_pct", "e2e overhead %, 4 images", 1),
    ("e2e4_speedup_pil", "speedup vs PIL, 4 images", 2),
]


# Summary rows (by the start of their text) and how to judge them from a run's key figures.
HISTORY_RULES = [
    ("PNG level 4: >= 20x", "png_l4_speed", lambda v: v >= 20),
    ("PNG level 4: files", "png_l4_size", lambda v: v <= 1.03),
    ("PNG every level 0..9: at least", "png_min_speed", lambda v: v >= 1),
    ("PNG every level 0..9: files", "png_max_size", lambda v: v <= 1.03),
    ("JPEG / WebP: >= 0.9x", "codec_min_speed", lambda v: v >= 0.9),
    (
        "Scaling, PNG level 4, output on tmpfs",
        "scaling_png_l4_tmpfs",
        lambda v: v >= 0.9,
    ),
    ("Scaling, PNG level 4", "scaling_png_l4", lambda v: v >= 0.9),
    ("Scaling, WebP", "scaling_webp_q90", lambda v: v >= 0.9),
    ("Memory", "peak_rss_mib", lambda v: v <= 256 + 64),
    ("End to end, 4 images", "e2e4_overhead_pct", lambda v: v <= 5),
    ("End to end: daemon loop", "e2e_overhead_pct", lambda v: v <= 5),
]


def history_count(history: list[dict], target: str) -> str:
    for prefix, key, ok in HISTORY_RULES:
        if target.startswith(prefix):
            values = [h[key] for h in history if h.get(key) is not None]
            return f"{sum(1 for v in values if ok(v))} of {len(values)}" if values else "-"
    return "-"


def history_table(history: list[dict]) -> str:
    rows = []
    for h in history:
        row = []
        for key, _, digits in HISTORY_COLUMNS:
            v = h.get(key)
            row.append("-" if v is None else (str(v) if digits is None else f(v, digits)))
        rows.append(row)
    return table([label for _, label, _ in HISTORY_COLUMNS], rows)


# ---------------------------------------------------------------------------------------------------------------
# SVG charts (hand-written, no plotting library)

COLORS = ["#3465a4", "#f57900", "#4e9a06", "#75507b", "#cc0000", "#888a85"]


def esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def bar_chart(
    title: str,
    groups: list[str],
    series: list[tuple[str, list[float]]],
    y_label: str,
    log: bool = False,
    refs: tuple[tuple[float, str], ...] = (),
    fmt: str = "{:.2g}",
) -> str:
    """Grouped vertical bars; `refs` are horizontal reference lines (value, label)."""
    width, height = 760, 380
    left, right, top, bottom = 70, 20, 50, 60
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [v for _, vs in series for v in vs if v is not None and math.isfinite(v) and v > 0]
    values += [r[0] for r in refs]
    if log:
        lo = 10 ** math.floor(math.log10(min(values)))
        hi = 10 ** math.ceil(math.log10(max(values)))

        def y(v: float) -> float:
            return top + plot_h * (1 - (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)))

        ticks = []
        t = lo
        while t <= hi * 1.0001:
            ticks.append(t)
            t *= 10
    else:
        lo, hi = 0.0, max(values) * 1.15

        def y(v: float) -> float:
            return top + plot_h * (1 - (v - lo) / (hi - lo))

        step = nice_step(hi / 5)
        ticks = [i * step for i in range(int(hi / step) + 1)]
    out = [
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">'
        ),
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">{esc(title)}</text>',
        (
            f'<text x="16" y="{top + plot_h / 2}" text-anchor="middle" '
            f'transform="rotate(-90 16 {top + plot_h / 2})">{esc(y_label)}</text>'
        ),
    ]
    for t in ticks:
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(t):.1f}" y2="{y(t):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 6}" y="{y(t) + 4:.1f}" text-anchor="end">{t:g}</text>')
    group_w = plot_w / max(1, len(groups))
    bar_w = group_w * 0.8 / max(1, len(series))
    for gi, group in enumerate(groups):
        gx = left + gi * group_w
        out.append(f'<text x="{gx + group_w / 2:.1f}" y="{top + plot_h + 18}" text-anchor="middle">{esc(group)}</text>')
        for si, (_, vs) in enumerate(series):
            v = vs[gi] if gi < len(vs) else None
            if v is None or not math.isfinite(v) or v <= 0:
                continue
            x = gx + group_w * 0.1 + si * bar_w
            y0 = y(lo) if not log else top + plot_h
            yv = y(v)
            out.append(
                f'<rect x="{x:.1f}" y="{yv:.1f}" width="{bar_w - 2:.1f}" height="{max(0.5, y0 - yv):.1f}" '
                f'fill="{COLORS[si % len(COLORS)]}"><title>{esc(fmt.format(v))}</title></rect>'
            )
            if len(groups) * len(series) <= 24:
                out.append(
                    f'<text x="{x + bar_w / 2 - 1:.1f}" y="{yv - 3:.1f}" text-anchor="middle" '
                    f'font-size="10">{esc(fmt.format(v))}</text>'
                )
    for value, label in refs:
        out.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y(value):.1f}" y2="{y(value):.1f}" '
            f'stroke="#cc0000" stroke-dasharray="6 4"/>'
        )
        out.append(
            f'<text x="{left + plot_w - 4}" y="{y(value) - 4:.1f}" text-anchor="end" fill="#cc0000">{esc(label)}</text>'
        )
    out.append(f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + plot_h}" stroke="black"/>')
    out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="black"/>')
    lx = left
    for si, (name, _) in enumerate(series):
        out.append(f'<rect x="{lx}" y="{height - 22}" width="12" height="12" fill="{COLORS[si % len(COLORS)]}"/>')
        out.append(f'<text x="{lx + 16}" y="{height - 12}">{esc(name)}</text>')
        lx += 24 + 7 * len(name)
    out.append("</svg>")
    return "\n".join(out) + "\n"


def line_chart(
    title: str,
    xs: list[float],
    series: list[tuple[str, list[float]]],
    x_label: str,
    y_label: str,
) -> str:
    width, height = 760, 340
    left, right, top, bottom = 60, 240, 50, 50
    plot_w, plot_h = width - left - right, height - top - bottom
    hi = max(max(vs) for _, vs in series) * 1.15
    x_lo, x_hi = min(xs), max(xs)
    span = (x_hi - x_lo) or 1

    def px(v: float) -> float:
        return left + plot_w * (v - x_lo) / span

    def py(v: float) -> float:
        return top + plot_h * (1 - v / hi)

    out = [
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">'
        ),
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">{esc(title)}</text>',
        f'<text x="{left + plot_w / 2}" y="{top + plot_h + 34}" text-anchor="middle">{esc(x_label)}</text>',
        (
            f'<text x="16" y="{top + plot_h / 2}" text-anchor="middle" '
            f'transform="rotate(-90 16 {top + plot_h / 2})">{esc(y_label)}</text>'
        ),
    ]
    step = nice_step(hi / 5)
    for i in range(int(hi / step) + 1):
        t = i * step
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{py(t):.1f}" y2="{py(t):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 6}" y="{py(t) + 4:.1f}" text-anchor="end">{t:g}</text>')
    for x in xs:
        out.append(f'<text x="{px(x):.1f}" y="{top + plot_h + 16}" text-anchor="middle">{x:g}</text>')
    for si, (_name, vs) in enumerate(series):
        color = COLORS[si % len(COLORS)]
        points = " ".join(f"{px(x):.1f},{py(v):.1f}" for x, v in zip(xs, vs, strict=False))
        out.append(f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="2"/>')
        for x, v in zip(xs, vs, strict=False):
            out.append(
                f'<circle cx="{px(x):.1f}" cy="{py(v):.1f}" r="3.5" fill="{color}"><title>{v:.3g}</title></circle>'
            )
    out.append(f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + plot_h}" stroke="black"/>')
    out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="black"/>')
    # One legend entry per line, to the right of the plot.
    for si, (name, _) in enumerate(series):
        ly = top + 10 + 20 * si
        out.append(
            f'<rect x="{left + plot_w + 16}" y="{ly - 10}" width="12" height="12" fill="{COLORS[si % len(COLORS)]}"/>'
        )
        out.append(f'<text x="{left + plot_w + 32}" y="{ly}">{esc(name)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def nice_step(raw: float) -> float:
    if raw <= 0:
        return 1.0
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if m * mag >= raw:
            return m * mag
    return 10 * mag


def write_charts(results: dict, chart_dir: Path) -> list[str]:
    chart_dir.mkdir(parents=True, exist_ok=True)
    written = []

    def save(name: str, svg: str) -> None:
        (chart_dir / name).write_text(svg)
        written.append(name)

    png = png_rows(results)
    sizes = sorted({r["size"] for r in png})
    if png:
        levels = sorted({r["level"] for r in png})
        series = level_series(png, sizes, levels, "speed")
        save(
            "png_speed.svg",
            bar_chart(
                "PNG encode + save per core: PIL CPU time / Luna CPU time",
                [f"L{lv}" for lv in levels],
                series,
                "speed ratio (log scale)",
                log=True,
                refs=((1.0, "1x (every level)"), (20.0, "20x (level 4)")),
                fmt="{:.1f}",
            ),
        )
        series = level_series(png, sizes, levels, "size_ratio")
        save(
            "png_size.svg",
            bar_chart(
                "PNG file size: Luna bytes / PIL bytes at the same level",
                [f"L{lv}" for lv in levels],
                series,
                "size ratio",
                refs=((1.03, "1.03 (target)"),),
                fmt="{:.3f}",
            ),
        )
        s0 = sizes[0]
        save(
            "png_bytes.svg",
            bar_chart(
                f"PNG file size per level, {s0}x{s0} (MB)",
                [f"L{lv}" for lv in levels],
                [
                    ("Luna", [r["rust_bytes"] / 1e6 for r in png if r["size"] == s0]),
                    ("PIL", [r["pil_bytes"] / 1e6 for r in png if r["size"] == s0]),
                ],
                "MB",
                fmt="{:.2f}",
            ),
        )
    codecs = codec_rows(results)
    if codecs:
        s0 = min({r["size"] for r in codecs})
        rows = [r for r in codecs if r["size"] == s0]
        save(
            "codecs.svg",
            bar_chart(
                f"JPEG / WebP vs PIL, {s0}x{s0} (speed: PIL CPU time / Luna CPU time; size: Luna / PIL)",
                [CODEC_LABELS[r["codec"]] for r in rows],
                [
                    ("speed ratio", [r["speed"] for r in rows]),
                    ("size ratio", [r["size_ratio"] for r in rows]),
                ],
                "ratio",
                refs=((0.9, "0.9x speed target"),),
                fmt="{:.2f}",
            ),
        )
    configs = scaling_configs(results)
    if configs:
        nproc = results["machine"].get("nproc") or max(r["workers"] for c in configs for r in c["rows"])
        xs = [r["workers"] for r in configs[0]["rows"] if r["workers"] <= nproc]
        series = [
            ("ideal", xs),
            (
                "pure-CPU control",
                [r["control_scaling"] for r in configs[0]["rows"]][: len(xs)],
            ),
        ]
        for c in configs:
            series.append(
                (
                    c["format"],
                    [r["daemon_scaling"] for r in c["rows"]][: len(xs)],
                )
            )
        save(
            "scaling.svg",
            line_chart(
                "Throughput with N workers on N cores (relative to 1)",
                xs,
                series,
                "workers (= control threads)",
                "throughput relative to 1",
            ),
        )
    groups, py_values, rust_values = [], [], []
    for key, batch in E2E_KEYS:
        r, p = results["rust"].get(key), results["pil"].get(key)
        if not (r and p):
            continue
        label = "1 image" if batch == 1 else f"{batch} images"
        if not groups:
            groups.append("generation alone")
            py_values.append(p["generate_alone_ms"])
            rust_values.append(r["generate_alone_ms"])
        groups += [f"+ blocking, {label}", f"+ daemon, {label}"]
        py_values += [p["blocking_pil_ms"], None]
        rust_values += [r["blocking_rust_ms"], r["daemon_ms"]]
    if groups:
        save(
            "e2e.svg",
            bar_chart(
                "Generate (~200 ms of CPU work) then save N images (PNG L4): ms per iteration",
                groups,
                [
                    ("Python / PIL (ComfyUI today)", py_values),
                    ("Rust / luna-daemon", rust_values),
                ],
                "ms per iteration",
                fmt="{:.0f}",
            ),
        )
    return written


# ---------------------------------------------------------------------------------------------------------------
# The report


def yes(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**met**" if ok else "**not met**")


def f(v: float, digits: int = 2) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{digits}f}"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def level_series(png: list[dict], sizes: list[int], levels: list[int], key: str) -> list:
    """One chart series per image size: ``key`` of the PNG row at each level (None where missing)."""
    return [
        (
            f"{s}x{s}",
            [next((r[key] for r in png if r["size"] == s and r["level"] == lv), None) for lv in levels],
        )
        for s in sizes
    ]


def render(results: dict, charts: list[str], history: list[dict] | None = None) -> str:
    """The whole report: one function per section, in report order; a section with nothing measured is left out."""
    sections = [
        intro_section(results),
        machine_section(results),
        summary_section(results, history or []),
        png_section(results, charts),
        corpus_lines(results),
        codec_section(results, charts),
        formats_section(results),
        submit_section(results),
        node_section(results),
        scaling_section(results, charts),
        memory_section(results),
        e2e_section(results, charts),
        batch_section(results),
        history_section(history or []),
    ]
    return "\n".join(line for lines in sections for line in lines).rstrip() + "\n"


def intro_section(results: dict) -> list[str]:
    return [
        "# Benchmarks",
        "",
        "Generated by `scripts/bench.py` (do not edit by hand: re-run the command). Every figure is a **ratio "
        "against a baseline measured in the same run** (PIL on the same image, a memcpy of the same bytes, a "
        "pure-CPU control), medians of repeated runs, because the development machine is shared and noisy. "
        "Nothing here is a test: `make test` and CI never run it.",
        "",
        "## How to reproduce",
        "",
        "```sh",
        COMMAND
        + "            # ~25 min on 2 shared cores; `python3 scripts/bench.py --quick`: a few minutes' smoke run into "
        "target/bench-quick/",
        "```",
        "",
        "`make bench` builds the daemon in release mode, runs `cargo bench --bench save` (benches/save.rs: the "
        "encoders, a daemon it starts itself in a temp dir, the Rust client) and `scripts/bench_pil.py` (Pillow, "
        "as ComfyUI's SaveImage uses it) on the **same generated image** (`luna_daemon::synthetic::rgb_f32`, seed "
        "7: smooth gradients, texture and mild noise, converted to 8 bits exactly as the daemon does; written once "
        "by the Rust side as `.npy`), at 1024x1024 and 2048x2048 (fewer repetitions at 2048); the corpus and "
        "formats sections add real photos (`scripts/bench_corpus.py`), and `cargo bench --bench batch` and "
        "`scripts/bench_s3.py` measure the batch features. Raw numbers: "
        "[docs/bench/results.json](bench/results.json).",
        "",
    ]


def machine_section(results: dict) -> list[str]:
    m, pil = results["machine"], results["pil"]
    rows = [
        ["date", m.get("date", "?")],
        ["nproc", str(m.get("nproc"))],
        ["CPU", m.get("cpu_model", "?")],
        ["memory", f"{m['memory_gib']:.1f} GiB" if m.get("memory_gib") else "?"],
        ["kernel", m.get("kernel", "?")],
        ["rustc", m.get("rustc", "?")],
        ["Python", pil.get("python", "?")],
        [
            "Pillow",
            (
                f"{pil.get('pillow')} (zlib-ng {pil.get('zlib_ng')}, libjpeg-turbo {pil.get('libjpeg_turbo')}, "
                f"libwebp {pil.get('webp')})"
            ),
        ],
        ["numpy", pil.get("numpy", "?")],
        ["commit", m.get("commit", "?")],
        [
            "load average start / end",
            f"{' '.join(m.get('loadavg_start', []))} / {' '.join(m.get('loadavg_end', []))}",
        ],
        [
            "CPU busy during the run (all processes) / steal",
            f"{f(m.get('busy_pct'), 0)} % / {f(m.get('steal_pct'), 1)} %",
        ],
        [
            "run time",
            f"{f(m.get('minutes'), 1)} min" + (" (quick mode)" if results.get("quick") else ""),
        ],
    ]
    return ["## Machine", "", table(["", ""], rows), ""]


# ---- the summary table: one function per group of targets, each returning [target, measured, verdict] rows


def png_targets(results: dict) -> list[list[str]]:
    png = png_rows(results)
    rows = []
    lvl4 = [r for r in png if r["level"] == 4]
    if lvl4:
        rows.append(
            [
                "PNG level 4: >= 20x PIL per core",
                "; ".join(f"{r['size']}: {f(r['speed'], 1)}x (wall clock {f(r['speed_wall'], 1)}x)" for r in lvl4),
                yes(all(r["speed"] >= 20 for r in lvl4)),
            ]
        )
        rows.append(
            [
                "PNG level 4: files <= 3% larger than PIL's",
                "; ".join(f"{r['size']}: {f(100 * (r['size_ratio'] - 1), 1)} %" for r in lvl4)
                + " (the generated image; the corpus rows below cover the rest)",
                yes(all(r["size_ratio"] <= 1.03 for r in lvl4)),
            ]
        )
    if png:
        slow = [r for r in png if r["speed"] < 1]
        big = [r for r in png if r["size_ratio"] > 1.03]
        rows.append(
            [
                "PNG every level 0..9: at least as fast as PIL",
                "slowest ratio "
                + f(min(r["speed"] for r in png), 2)
                + "x"
                + (" (" + ", ".join(f"L{r['level']}@{r['size']}" for r in slow) + " below 1x)" if slow else ""),
                yes(not slow),
            ]
        )
        rows.append(
            [
                "PNG every level 0..9: files <= 3% larger",
                "larger than 3% at "
                + (", ".join(f"L{r['level']}@{r['size']}" for r in big) if big else "none")
                + f"; worst {f(100 * (max(r['size_ratio'] for r in png) - 1), 1)} %",
                yes(not big),
            ]
        )
        mono = all(monotonic([r["rust_bytes"] for r in png if r["size"] == s]) for s in {r["size"] for r in png})
        rows.append(
            [
                "PNG sizes monotonic in the level (never larger at a higher level)",
                "see the table",
                yes(mono),
            ]
        )
    return rows


def codec_targets(results: dict) -> list[list[str]]:
    codecs = codec_rows(results)
    if not codecs:
        return []
    slow = [r for r in codecs if r["speed"] < 0.9]
    big = [r for r in codecs if r["size_ratio"] > EQUAL_SIZE]
    return [
        [
            "JPEG / WebP: >= 0.9x PIL per core",
            "; ".join(f"{CODEC_LABELS[r['codec']]}@{r['size']} {f(r['speed'])}x" for r in codecs)
            + " (encoding alone, without the daemon's durable write: at least "
            + f(min(r["speed_encode"] for r in codecs))
            + "x)",
            yes(not slow),
        ],
        [
            "JPEG / WebP: equal or smaller files",
            "worst size ratio " + f(max(r["size_ratio"] for r in codecs), 4),
            yes(not big),
        ],
    ]


def submit_targets(results: dict) -> list[list[str]]:
    submit = results["rust"].get("submit")
    if not submit:
        return []
    s, s2 = submit["with_crc32"], submit["without_crc32"]
    return [
        [
            "Submit blocking time (Rust client, 1024x1024x3 f32, warm segment) vs memcpy",
            (
                f"{f(s['submit_ms'])} ms = {f(s['submit_ms'] / s['memcpy_ms'], 1)}x memcpy with CRC-32; "
                f"{f(s2['submit_ms'] / s2['memcpy_ms'], 1)}x without"
            ),
            "informational: SPEC's 2x target is for the node (below)",
        ]
    ]


def node_targets(results: dict) -> list[list[str]]:
    node = results.get("node")
    if not node:
        measured, verdict = "not run", "not measured"
    else:
        measured = (
            f"{f(node['daemon_on_ms'])} ms vs copy {f(node['copy_ms'])} ms = {f(node['on_over_copy'])}x "
            f"(blocking PIL save: {f(node['daemon_off_ms'])} ms); with a "
            f"{node.get('workflow_kb', '?')} KB workflow attached "
            f"{f(node.get('on_with_workflow_over_copy', float('nan')))}x (packing the workflow)"
        )
        verdict = ("**met** without metadata" if node["met"] else "**not met**") + (
            "; **not met** with a workflow attached" if node.get("on_with_workflow_over_copy", 0) > 2 else ""
        )
    return [["Node blocking time <= 2x a numpy copy (daemon_save ON, 1024x1024 f32, steady state)", measured, verdict]]


def scaling_targets(results: dict) -> list[list[str]]:
    nproc = results["machine"].get("nproc")
    rows = []
    for c in scaling_configs(results):
        rows_n = [r for r in c["rows"] if r["workers"] == nproc]
        if len(c["rows"]) > 1 and rows_n:
            last = rows_n[0]
            rows.append(
                [
                    f"Scaling, {c['format']}: {last['workers']} workers >= 0.9x the control's scaling",
                    (
                        f"daemon {f(last['daemon_scaling'])}x, control {f(last['control_scaling'])}x: efficiency "
                        f"{f(last['efficiency'])}"
                    ),
                    yes(last["efficiency"] >= 0.9),
                ]
            )
    return rows


def memory_targets(results: dict) -> list[list[str]]:
    memory = results["rust"].get("memory", [])
    if not memory:
        return []
    return [
        [
            "Memory: daemon RSS < queue budget + 64 MiB",
            "; ".join(f"budget {r['budget_mib']:.0f} MiB: peak {f(r['hwm_mib'], 1)} MiB" for r in memory),
            yes(all(r["hwm_mib"] <= r["budget_mib"] + 64 for r in memory)),
        ]
    ]


def e2e_targets(results: dict) -> list[list[str]]:
    rows = []
    for key, batch in E2E_KEYS:
        fig = e2e_figures(results, key)
        if not fig:
            continue
        label = "1 image" if batch == 1 else f"{batch} images"
        name = "End to end: daemon loop" if batch == 1 else f"End to end, {label} per generation: daemon loop"
        rows.append(
            [
                f"{name} within 5% of generation alone",
                (
                    f"{f(100 * (fig['daemon_factor'] - 1), 1)} % over generation alone "
                    f"(last save done {f(fig['drain_ms'], 0)} ms after the loop)"
                ),
                yes(fig["daemon_factor"] <= 1.05),
            ]
        )
        rows.append(
            [
                f"End to end ({label} per generation): speedup over blocking saves",
                (
                    f"{f(fig['speedup_vs_pil'])}x vs PIL blocking (ComfyUI today); "
                    f"{f(fig['speedup_vs_rust_blocking'])}x vs blocking Rust saves"
                ),
                "reported",
            ]
        )
    return rows


def corpus_targets(results: dict) -> list[list[str]]:
    return corpus_verdicts(corpus_levels(results)) if results["rust"].get("corpus") else []


def summary_section(results: dict, history: list[dict]) -> list[str]:
    # The groups of targets, in the table's order.
    groups = [
        png_targets,
        codec_targets,
        formats_targets,
        submit_targets,
        node_targets,
        scaling_targets,
        memory_targets,
        e2e_targets,
        corpus_targets,
    ]
    summary = [row for targets in groups for row in targets(results)]
    for row in summary:
        row.append(history_count(history, row[0]))
    return [
        "## SPEC §7 targets on this machine",
        "",
        table(["target", "measured (ratios from this run)", "verdict", "met in recent runs"], summary),
        "",
        "Per-core speed ratios are PIL's CPU time / Luna's CPU time for the same save on one thread (thread CPU "
        "time: `/proc/thread-self/schedstat` in Rust, `time.thread_time()` in Python), because other tenants of "
        "this machine steal wall-clock time unevenly; wall-clock ratios (the daemon's including its two fsyncs, "
        "PIL's without any) are in the tables. Size ratios are Luna bytes / PIL bytes.",
        "",
    ]


# ---- the measurement sections


def chart_lines(charts: list[str], names: list[tuple[str, str]]) -> list[str]:
    """`![alt](bench/name)` and a blank line for each chart of ``names`` (name, alt text) that was written."""
    return [line for name, alt in names if name in charts for line in (f"![{alt}](bench/{name})", "")]


def png_section(results: dict, charts: list[str]) -> list[str]:
    png = png_rows(results)
    if not png:
        return []
    out = [
        "## PNG: every level against PIL",
        "",
        "Luna = `luna_daemon::encode` + `output::write_new_file` (what a daemon worker does with the 8-bit "
        "image: hidden temp file, fsync, no-clobber rename, directory fsync). PIL = "
        '`Image.save(path, format="PNG", compress_level=N)` (no fsync). Both single-threaded, medians of at '
        "least 7 saves at 1024x1024 and 3 at 2048x2048 (fast saves are repeated until ~0.5 s was measured). "
        "*ms* columns are wall clock; *per-core speed ratio* is the CPU-time ratio; *encode-only* is the "
        "wall-clock ratio of encoding into memory (no file).",
        "",
    ]
    for s in sorted({r["size"] for r in png}):
        rows_s = [r for r in png if r["size"] == s]
        body = [
            [
                str(r["level"]),
                f(r["rust_save_ms"]),
                f(r["pil_save_ms"], 1),
                f(r["speed"], 1) + "x",
                f(r["speed_wall"], 1) + "x",
                f(r["speed_encode"], 1) + "x",
                f"{r['rust_bytes']:,}",
                f"{r['pil_bytes']:,}",
                f(r["size_ratio"], 3),
                "speed "
                + ("yes" if r["speed"] >= (20 if r["level"] == 4 else 1) else "NO")
                + ", size "
                + ("yes" if r["size_ratio"] <= 1.03 else "NO"),
            ]
            for r in rows_s
        ]
        head = [
            "level",
            "Luna save ms",
            "PIL save ms",
            "per-core speed ratio",
            "wall ratio",
            "encode-only ratio",
            "Luna bytes",
            "PIL bytes",
            "size ratio",
            "met",
        ]
        out += [
            f"### {s}x{s}",
            "",
            table(head, body),
            "",
            f"Sizes monotonic in the level: Luna {'yes' if monotonic([r['rust_bytes'] for r in rows_s]) else 'NO'}"
            f", PIL {'yes' if monotonic([r['pil_bytes'] for r in rows_s]) else 'no'}.",
            "",
        ]
    out += chart_lines(charts, [(n, n) for n in ("png_speed.svg", "png_size.svg", "png_bytes.svg")])
    return [*out, template("png_mapping").safe_substitute(), ""]


def corpus_lines(results: dict) -> list[str]:
    return [corpus_section(results), ""] if results["rust"].get("corpus") else []


def codec_section(results: dict, charts: list[str]) -> list[str]:
    codecs = codec_rows(results)
    if not codecs:
        return []
    head = [
        "size",
        "codec",
        "Luna save ms",
        "PIL save ms",
        "per-core speed ratio",
        "wall ratio",
        "encode-only ratio",
        "Luna bytes",
        "PIL bytes",
        "size ratio",
    ]
    body = [
        [
            str(r["size"]),
            CODEC_LABELS[r["codec"]],
            f(r["rust_save_ms"]),
            f(r["pil_save_ms"]),
            f(r["speed"]) + "x",
            f(r["speed_wall"]) + "x",
            f(r["speed_encode"]) + "x",
            f"{r['rust_bytes']:,}",
            f"{r['pil_bytes']:,}",
            f(r["size_ratio"], 4),
        ]
        for r in codecs
    ]
    return [
        "## JPEG and WebP",
        "",
        "Same libraries on both sides (libjpeg-turbo-class mozjpeg in its `fastest` profile vs Pillow's "
        "libjpeg-turbo; libwebp). PIL: `quality=` for JPEG (4:2:0) and lossy WebP, `lossless=True` for "
        "lossless WebP, `method` left at its default (4).",
        "",
        table(head, body),
        "",
        *chart_lines(charts, [("codecs.svg", "codecs")]),
        template("codec").safe_substitute(),
        "",
    ]


def submit_section(results: dict) -> list[str]:
    submit = results["rust"].get("submit")
    if not submit:
        return []
    rows = []
    for key, label in (
        ("with_crc32", "with CRC-32 (JobOptions default)"),
        ("without_crc32", "without CRC-32"),
    ):
        s = submit[key]
        rows.append(
            [
                label,
                f(s["submit_ms"]),
                f(s["submit_ms_p90"]),
                f(s["memcpy_ms"]),
                f(s["submit_ms"] / s["memcpy_ms"], 1) + "x",
            ]
        )
    fixed = submit["tiny_submit_ms"]
    plain = submit["without_crc32"]["submit_ms"]
    crc = submit["with_crc32"]["submit_ms"] - plain
    return [
        "## Submit blocking time (Rust client)",
        "",
        "`Client::submit` of one 1024x1024x3 float32 image (12 MiB) into a warm segment, against a daemon the "
        "benchmark started itself, timed from the call to the `accepted` reply; the baseline is a plain "
        "`copy_from_slice` of the same 12 MiB into a preallocated buffer, measured right before each submit. "
        "Each submit waits for the previous save to finish first (steady state: with ~200 ms generations the "
        "daemon is done long before the next image).",
        "",
        table(["submit", "median ms", "p90 ms", "memcpy ms", "ratio"], rows),
        "",
        f"Fixed cost (an 8x8 image: frame, round trip, the daemon's validation): {f(submit['tiny_submit_ms'])} ms. "
        f"First submit of a client (creates and maps the segment): {f(submit['cold_first_submit_ms'])} ms.",
        "",
        f"Breakdown (medians): fixed part {f(fixed)} ms, copy {f(plain - fixed)} ms (memcpy "
        f"{f(submit['without_crc32']['memcpy_ms'])} ms), CRC-32 {f(crc)} ms.",
        "",
        template("submit").safe_substitute(),
        "",
    ]


def node_section(results: dict) -> list[str]:
    node = results.get("node")
    out = ["## Node blocking time", ""]
    if not node:
        return [*out, "Not run.", ""]
    out += [
        "`scripts/bench_node.py` runs the Luna Multi Saver node (ComfyUI stand-ins, no torch) against a release "
        "daemon: per call, one 1024x1024 RGB float32 image, PNG; *ON* is the node's blocking time with "
        "daemon_save on (copy into the warm segment, the job's round trip, preview names; previews render on a "
        "background thread), *copy* a plain `np.copyto` of the same array into a preallocated buffer, *OFF* the "
        "node's own blocking PIL save. Steady state: between two ON calls the daemon finishes the previous job "
        "(untimed), as it does while the next image is generated. Medians.",
        "",
        "| copy ms | ON ms | OFF ms | ON / copy | OFF / ON | target ON / copy | met |",
        "|---|---|---|---|---|---|---|",
        f"| {f(node['copy_ms'])} | {f(node['daemon_on_ms'])} | {f(node['daemon_off_ms'])} | "
        f"{f(node['on_over_copy'])}x | {f(node['off_over_on'])}x | <= 2x | {'yes' if node['met'] else 'NO'} |",
        "",
        "The ON time is the copy plus about half a millisecond of round trip and Python: at this copy speed the "
        "target sits right at the boundary, and it is sensitive to other load on the machine (a busy core delays "
        "the wake-up of the daemon's connection thread and of the node).",
    ]
    if "daemon_on_with_workflow_ms" in node:
        out += [
            "",
            f"**With a realistic prompt and a {node['workflow_kb']} KB workflow attached** (what ComfyUI passes), "
            f"ON takes {f(node['daemon_on_with_workflow_ms'])} ms = {f(node['on_with_workflow_over_copy'])}x the "
            "copy. The node sends the prompt and workflow as MessagePack values (~0.5 ms for 200 KB, against ~2.4 "
            "ms for the `json.dumps` it used to do), through the segment; the daemon checks their structure "
            "before replying and formats them as `json.dumps` text in the worker. What is left is packing the "
            "values and copying them into the segment, so the 2x target holds only for images without metadata.",
        ]
    return [*out, ""]


def scaling_section(results: dict, charts: list[str]) -> list[str]:
    configs = scaling_configs(results)
    if not configs:
        return []
    out = [
        "## Scaling with workers",
        "",
        "One job of many 1024x1024 RGB float32 images (the same image repeated) submitted at once to a daemon with exactly N workers; "
        "images/s from the `accepted` reply until every file is written (the copy into the segment is done "
        "before). The control is a fixed amount of integer work on N threads (at most nproc), measured right "
        "before and after each daemon run; efficiency = daemon scaling / control scaling, so a second core busy "
        "with other tenants lowers both. Output files go to the regular disk, fsynced as always.",
        "",
    ]
    head = ["workers", "images/s", "daemon scaling", "control threads", "control scaling", "efficiency"]
    for c in configs:
        body = [
            [
                str(r["workers"]),
                f(r["images_per_s"], 1),
                f(r["daemon_scaling"]) + "x",
                f"{r.get('control_threads', r['workers']):.0f}",
                f(r["control_scaling"]) + "x",
                f(r["efficiency"]),
            ]
            for r in c["rows"]
        ]
        out += [f"### {c['format']} ({c['images_per_job']:.0f} images per job)", "", table(head, body), ""]
    out += chart_lines(charts, [("scaling.svg", "scaling")])
    return [*out, template("scaling").safe_substitute(), ""]


def memory_section(results: dict) -> list[str]:
    memory = results["rust"].get("memory", [])
    if not memory:
        return []
    head = [
        "budget MiB",
        "accepted",
        "busy replies",
        "max held MiB",
        "max queue depth",
        "idle RSS MiB",
        "peak RSS MiB",
        "VmHWM MiB",
        "limit (budget + 64) MiB",
    ]
    body = [
        [
            f"{r['budget_mib']:.0f}",
            f"{r['accepted']:.0f}",
            f"{r['busy']:.0f}",
            f"{r['max_held_mib']:.0f}",
            f"{r['max_queue_depth']:.0f}",
            f(r["idle_rss_mib"], 1),
            f(r["peak_rss_mib"], 1),
            f(r["hwm_mib"], 1),
            f"{r['budget_mib'] + 64:.0f}",
        ]
        for r in memory
    ]
    return [
        "## Memory under a full queue",
        "",
        "A daemon with `--queue-budget-mib B --busy-wait-ms=0` gets 500 submissions of a 1024x1024x3 float32 "
        "image (12 MiB each) at PNG level 9 (the slowest, so the queue fills); it accepts what fits the budget "
        "and answers `busy` to the rest. RSS from `/proc/<pid>/status` (VmRSS sampled after every submission "
        "and while the queue drains; VmHWM at the end).",
        "",
        table(head, body),
        "",
        template("memory").safe_substitute(),
        "",
    ]


def e2e_table(r: dict, p: dict, fig: dict) -> str:
    """The loops of one batch size, each against its own side's generation-alone loop."""
    rows = [
        ["Python: generation alone", f(p["generate_alone_ms"], 1), "1.00x"],
        ["Python: generate + blocking PIL save", f(p["blocking_pil_ms"], 1), f(fig["pil_factor"], 3) + "x"],
        ["Rust: generation alone", f(r["generate_alone_ms"], 1), "1.00x"],
        [
            "Rust: generate + blocking save (inline)",
            f(r["blocking_rust_ms"], 1),
            f(fig["rust_blocking_factor"], 3) + "x",
        ],
        ["Rust: generate + submit to the daemon", f(r["daemon_ms"], 1), f(fig["daemon_factor"], 3) + "x"],
    ]
    if r.get("daemon_limited_ms"):
        rows.append(
            [
                (
                    f"Rust: generate + submit to a daemon with at most "
                    f"{r['daemon_limited_workers']:.0f} worker(s) (nproc - 1)"
                ),
                f(r["daemon_limited_ms"], 1),
                f(r["daemon_limited_ms"] / r["generate_alone_ms"], 3) + "x",
            ]
        )
    if r.get("daemon_nice0_ms"):
        rows.append(
            [
                "Rust: generate + submit to a daemon whose workers run at nice 0 (`--worker-nice 0`)",
                f(r["daemon_nice0_ms"], 1),
                f(r["daemon_nice0_ms"] / r["generate_alone_ms"], 3) + "x",
            ]
        )
    return table(["loop", "ms per iteration", "vs generation alone"], rows)


def e2e_section(results: dict, charts: list[str]) -> list[str]:
    if not e2e_figures(results):
        return []
    rust, pil = results["rust"], results["pil"]
    out = [
        "## End to end: generate, then save",
        "",
        f"{rust['e2e']['iterations']:.0f} iterations per loop, several rounds (loop order rotated every round), "
        "median per iteration. *Generation* is a fixed amount of CPU work calibrated to ~200 ms on an idle core (integer "
        "work in Rust, a pure-Python loop holding the GIL on the PIL side). Each generation then saves 1 or 4 "
        "1024x1024 RGB float32 images at PNG level 4 (ComfyUI's default). *Blocking PIL* is ComfyUI's SaveImage "
        "path (numpy clip/astype, `Image.fromarray`, `save(compress_level=4)`, one image after the other); "
        "*blocking Rust* is the daemon's own convert + encode + durable write done inline; *daemon* is one "
        "`Client::submit` of the images into a warm segment, saves running in the daemon (default pool, 2..4 "
        "workers at nice 10). Speedups compare each loop with its own side's generation-alone loop.",
        "",
    ]
    for key, batch in E2E_KEYS:
        fig = e2e_figures(results, key)
        if not fig:
            continue
        label = "1 image" if batch == 1 else f"{batch} images"
        out += [
            f"### {label} per generation",
            "",
            e2e_table(rust[key], pil[key], fig),
            "",
            f"Speedup of the daemon loop over blocking PIL saves: **{f(fig['speedup_vs_pil'])}x**; over blocking "
            f"Rust saves: {f(fig['speedup_vs_rust_blocking'])}x. The daemon kept up: the last file was written "
            f"{f(fig['drain_ms'], 0)} ms after the last submit returned.",
            "",
        ]
    out += chart_lines(charts, [("e2e.svg", "e2e")])
    return [*out, template("e2e").safe_substitute(), ""]


def history_section(history: list[dict]) -> list[str]:
    if len(history) <= 1:
        return []
    return [
        "## Run-to-run variation",
        "",
        "The headline ratios of the latest full runs of the same command on this machine (from "
        "[docs/bench/history.json](bench/history.json); the last row is the run above). Other tenants of the "
        "machine change from run to run, and so do ratios built from short operations; verdicts are taken from "
        "the run above.",
        "",
        history_table(history),
        "",
    ]


# ---------------------------------------------------------------------------------------------------------------
# The PNG corpus: per image class, every level against Pillow (benches/save/corpus.rs)

CORPUS_LEVELS_SHOWN = (1, 4, 6, 9)
SIZE_SLACK = 1.03


def corpus_levels(results: dict) -> dict:
    """Per class (and "all") and level: total bytes, CPU time, worst image, slowest image, and the verdicts."""
    images = results["rust"].get("corpus") or []
    classes: dict[str, list[dict]] = {}
    for image in images:
        classes.setdefault(image["class"], []).append(image)
    classes["all"] = images
    out: dict = {}
    for cls, members in classes.items():
        per_level = {}
        for level in range(10):
            rows = [(m["name"], next(r for r in m["levels"] if r["level"] == level)) for m in members]
            luna = sum(r["luna_bytes"] for _, r in rows)
            pil = sum(r["pil_bytes"] for _, r in rows)
            luna_ms = sum(r["luna_cpu_ms"] for _, r in rows)
            pil_ms = sum(r["pil_cpu_ms"] for _, r in rows)
            worst = max(rows, key=lambda nr: nr[1]["luna_bytes"] / nr[1]["pil_bytes"])
            slowest = min(rows, key=lambda nr: speed(nr[1]))
            per_level[level] = {
                "size_ratio": luna / pil,
                "speed": pil_ms / luna_ms if luna_ms > 0 else math.inf,
                "worst_name": worst[0],
                "worst_ratio": worst[1]["luna_bytes"] / worst[1]["pil_bytes"],
                "slowest_name": slowest[0],
                "slowest_speed": speed(slowest[1]),
            }
        mono = [
            m["name"]
            for m in members
            if not monotonic([r["luna_bytes"] for r in sorted(m["levels"], key=lambda r: r["level"])])
        ]
        out[cls] = {"count": len(members), "levels": per_level, "not_monotonic": mono}
    return out


def speed(row: dict) -> float:
    return row["pil_cpu_ms"] / row["luna_cpu_ms"] if row["luna_cpu_ms"] > 0 else math.inf


def times(v: float) -> str:
    return "inf" if math.isinf(v) else f"{v:.1f}x"


def corpus_verdicts(levels: dict) -> list[list[str]]:
    """The issue's goal on the whole corpus, one row per target."""
    every = levels["all"]["levels"]
    size_miss = [
        f"L{lv}: total {f(r['size_ratio'], 3)}, worst {r['worst_name']} {f(r['worst_ratio'], 3)}"
        for lv, r in every.items()
        if r["size_ratio"] > 1.0 or r["worst_ratio"] > SIZE_SLACK
    ]
    slow = [
        f"L{lv} {r['slowest_name']} {times(r['slowest_speed'])}" for lv, r in every.items() if r["slowest_speed"] < 1
    ]
    l4 = every[4]
    l4_classes = ", ".join(f"{c} {times(v['levels'][4]['speed'])}" for c, v in levels.items() if c != "all")
    mono = levels["all"]["not_monotonic"]
    return [
        [
            "Corpus, every level: total bytes <= Pillow's and no image > 3 % larger",
            "; ".join(size_miss) if size_miss else "met at every level",
            yes(not size_miss),
        ],
        [
            "Corpus, level 4: >= 20x Pillow per core (total CPU time)",
            f"{times(l4['speed'])} in total; per class: {l4_classes}",
            yes(l4["speed"] >= 20),
        ],
        [
            "Corpus, every level: every image at least as fast as Pillow",
            "; ".join(slow) if slow else "slowest " + times(min(r["slowest_speed"] for r in every.values())),
            yes(not slow),
        ],
        [
            "Corpus: sizes monotonic in the level, every image",
            ", ".join(mono) if mono else "every image",
            yes(not mono),
        ],
    ]


def corpus_section(results: dict) -> str:
    levels = corpus_levels(results)
    images = results["rust"]["corpus"]
    head = ["class", "images"]
    for lv in CORPUS_LEVELS_SHOWN:
        head += [f"L{lv} size (worst)", f"L{lv} speed (slowest)"]
    rows = []
    for cls, v in levels.items():
        row = [f"**{cls}**" if cls == "all" else cls, str(v["count"])]
        for lv in CORPUS_LEVELS_SHOWN:
            r = v["levels"][lv]
            row += [
                f"{f(r['size_ratio'], 3)} ({f(r['worst_ratio'], 3)})",
                f"{times(r['speed'])} ({times(r['slowest_speed'])})",
            ]
        rows.append(row)
    summary = table(head, rows)
    full_rows = []
    for cls, v in levels.items():
        for lv, r in v["levels"].items():
            met_size = r["size_ratio"] <= 1.0 and r["worst_ratio"] <= SIZE_SLACK
            met_speed = r["slowest_speed"] >= 1 and (lv != 4 or r["speed"] >= 20)
            full_rows.append(
                [
                    cls,
                    str(lv),
                    f(r["size_ratio"], 3),
                    f"{r['worst_name']} {f(r['worst_ratio'], 3)}",
                    times(r["speed"]),
                    f"{r['slowest_name']} {times(r['slowest_speed'])}",
                    ("size yes" if met_size else "size NO") + ", " + ("speed yes" if met_speed else "speed NO"),
                ]
            )
    full = table(
        [
            "class",
            "level",
            "size ratio (total)",
            "worst image",
            "speed (total CPU)",
            "slowest image",
            "met",
        ],
        full_rows,
    )
    image_rows = []
    for m in images:
        by_level = {r["level"]: r for r in m["levels"]}
        image_rows.append(
            [
                m["name"],
                m["class"],
                f"{m['width']:.0f}x{m['height']:.0f}x{m['channels']:.0f}",
            ]
            + [
                f"{f(by_level[lv]['luna_bytes'] / by_level[lv]['pil_bytes'], 3)} / {times(speed(by_level[lv]))}"
                for lv in CORPUS_LEVELS_SHOWN
            ]
        )
    per_image = table(
        ["image", "class", "size"] + [f"L{lv} size / speed" for lv in CORPUS_LEVELS_SHOWN],
        image_rows,
    )
    pixels = sum(m["width"] * m["height"] for m in images)
    # A corpus re-measured on its own (not by a full `make bench`) says so: by which command, at which commit.
    note = results["rust"].get("corpus_note", "")
    return template("corpus").substitute(
        note=f"\n{note}\n" if note else "",
        count=len(images),
        mpixel=f"{pixels / 1e6:.1f}",
        summary=summary,
        full=full,
        per_image=per_image,
    )


# ---------------------------------------------------------------------------------------------------------------
# Every format against Pillow and its plugins (benches/save/formats.rs, scripts/bench_formats.py)


def times2(v: float) -> str:
    return "inf" if math.isinf(v) else f"{v:.2f}x"


def format_cases(results: dict) -> list[dict]:
    """Per format case, over the images where both sides ran: total CPU time and bytes, their ratios, the worst
    image by size; or why a side is not available here."""
    formats = results["rust"].get("formats") or {}
    out = []
    for case in formats.get("cases", []):
        rows = [r for r in formats.get("rows", []) if r["case"] == case["name"]]
        both = [r for r in rows if "luna_bytes" in r and "pil_bytes" in r]
        missing = sorted(
            {f"ours: {r['luna_unavailable']}" for r in rows if "luna_unavailable" in r}
            | {f"Pillow side: {r['pil_unavailable']}" for r in rows if "pil_unavailable" in r}
        )
        entry = {**case, "rows": rows, "both": both, "missing": missing}
        impl = next((r["pil_impl"] for r in rows if "pil_impl" in r), None)
        entry["pil_impl"] = impl
        if both:
            luna_ms, pil_ms = sum(r["luna_cpu_ms"] for r in both), sum(r["pil_cpu_ms"] for r in both)
            entry["speed"] = pil_ms / luna_ms if luna_ms > 0 else math.inf
            entry["size_ratio"] = sum(r["luna_bytes"] for r in both) / sum(r["pil_bytes"] for r in both)
            worst = max(both, key=lambda r: r["luna_bytes"] / r["pil_bytes"])
            entry["worst"] = (worst["image"], worst["luna_bytes"] / worst["pil_bytes"])
            slowest = min(both, key=lambda r: r["pil_cpu_ms"] / r["luna_cpu_ms"] if r["luna_cpu_ms"] > 0 else math.inf)
            entry["slowest"] = (slowest["image"], slowest["pil_cpu_ms"] / slowest["luna_cpu_ms"])
            entry["luna_ms"], entry["pil_ms"] = luna_ms, pil_ms
        out.append(entry)
    return out


def formats_targets(results: dict) -> list[list[str]]:
    cases = format_cases(results)
    if not cases:
        return []
    measured = [
        f"{c['label']} {times2(c['speed'])} / {f(c['size_ratio'], 3)}" if c["both"] else f"{c['label']} n/a"
        for c in cases
    ]
    return [
        [
            "Formats against Pillow and its plugins (issue 15): per-core speed / size, equal settings",
            "; ".join(measured) + " (total CPU time and bytes over the section's images)",
            "reported",
        ]
    ]


def formats_section(results: dict) -> list[str]:
    cases = format_cases(results)
    if not cases:
        return []
    formats = results["rust"]["formats"]
    head = [
        "format",
        "Pillow side",
        "images",
        "Luna CPU ms",
        "Pillow-side CPU ms",
        "per-core speed ratio (slowest image)",
        "Luna bytes",
        "Pillow-side bytes",
        "size ratio (worst image)",
    ]
    body = []
    for c in cases:
        if not c["both"]:
            body.append([c["label"], "**not available**: " + "; ".join(c["missing"])] + ["-"] * 7)
            continue
        impl = c["pil_impl"] + (" (" + "; ".join(c["missing"]) + ")" if c["missing"] else "")
        body.append(
            [
                c["label"],
                impl,
                str(len(c["both"])),
                f(c["luna_ms"], 1),
                f(c["pil_ms"], 1),
                f"{times2(c['speed'])} ({c['slowest'][0]} {times2(c['slowest'][1])})",
                f"{sum(r['luna_bytes'] for r in c['both']):,.0f}",
                f"{sum(r['pil_bytes'] for r in c['both']):,.0f}",
                f"{f(c['size_ratio'], 3)} ({c['worst'][0]} {f(c['worst'][1], 3)})",
            ]
        )
    images = {i["name"]: i for i in formats["images"]}
    detail = []
    for c in cases:
        for r in c["rows"]:
            i = images[r["image"]]
            both = "luna_bytes" in r and "pil_bytes" in r
            detail.append(
                [
                    c["label"],
                    f"{r['image']} ({i['class']}, {i['width']:.0f}x{i['height']:.0f})",
                    f(r["luna_cpu_ms"], 1) if "luna_cpu_ms" in r else "n/a",
                    f(r["pil_cpu_ms"], 1) if "pil_cpu_ms" in r else "n/a",
                    times2(r["pil_cpu_ms"] / r["luna_cpu_ms"]) if both and r["luna_cpu_ms"] > 0 else "-",
                    f"{r['luna_bytes']:,.0f}" if "luna_bytes" in r else "n/a",
                    f"{r['pil_bytes']:,.0f}" if "pil_bytes" in r else "n/a",
                    f(r["luna_bytes"] / r["pil_bytes"], 3) if both else "-",
                ]
            )
    image_list = ", ".join(f"{i['name']} ({i['class']}, {i['width']:.0f}x{i['height']:.0f})" for i in formats["images"])
    return [
        template("formats").substitute(
            images=image_list,
            summary=table(head, body),
            detail=table(
                [
                    "format",
                    "image",
                    "Luna CPU ms",
                    "Pillow-side CPU ms",
                    "speed",
                    "Luna bytes",
                    "Pillow-side bytes",
                    "size",
                ],
                detail,
            ),
        ),
        "",
    ]


# ---------------------------------------------------------------------------------------------------------------
# Batch features: thumbnails, ZIP archives (benches/batch.rs) and S3 uploads (scripts/bench_s3.py)

BATCH_COMMAND = "cargo bench --bench batch -- --bench [--quick] [--json FILE]"
S3_COMMAND = "python3 scripts/bench_s3.py --daemon-bin target/release/luna-daemon [--rounds N] [--json FILE]"


def batch_section(results: dict) -> list[str]:
    batch, s3 = results.get("batch"), results.get("s3")
    if not batch and not s3:
        return []
    out = [
        "## Batch features: thumbnails, ZIP archives, S3 uploads (issue 16)",
        "",
        f"Measured by `{BATCH_COMMAND}` (benches/batch.rs, the crate's public API) and `{S3_COMMAND}`; both run "
        "in `make bench`. Each cost is a ratio against a baseline of the same run.",
        "",
    ]
    if batch:
        thumbs = batch.get("thumbnails", [])
        out += [
            "### Thumbnails",
            "",
            "A WebP thumbnail of a 1024x1024 RGB image (`encode::encode_thumbnail`: scale down, then encode), against "
            "the PNG level-4 encode of the same image (what the daemon writes anyway), wall-clock medians.",
            "",
            table(
                ["thumbnail size", "thumbnail ms", "thumbnail bytes", "PNG level 4 ms", "thumbnail / PNG"],
                [
                    [str(t["size"]), f(t["ms"]), f"{t['bytes']:,}", f(t["png_l4_ms"]), f(t["ratio"]) + "x"]
                    for t in thumbs
                ],
            ),
            "",
        ]
        archives = batch.get("archives", [])
        out += [
            "### ZIP archive updates",
            "",
            "`output::update_archive` appending stored entries of 1 MiB each to a batch archive of N entries: the "
            "archive is copied raw into a new file, the entries appended, fsynced and renamed over it, so that the "
            "archive on disk is always a valid ZIP; its cost grows with the archive. The baseline is the durable "
            "write of one 1 MiB image file (`output::write_new_file_in`: temp file, fsync, no-clobber rename, "
            "directory fsync) measured in the same run.",
            "",
            table(
                [
                    "entries already in the archive",
                    "images added per update",
                    "update ms",
                    "ms per added image",
                    "1 MiB file write ms",
                    "per added image / file write",
                ],
                [
                    [
                        str(a["existing"]),
                        str(a["added"]),
                        f(a["ms"]),
                        f(a["ms_per_image"]),
                        f(a["write_1mib_ms"]),
                        f(a["ratio"]) + "x",
                    ]
                    for a in archives
                ],
            ),
            "",
        ]
    out += ["### Object storage: uploads per second (S3)", ""]
    if s3 and "skipped" not in s3:
        out += [s3_section(s3), ""]
    else:
        why = s3["skipped"] if s3 else "not run"
        out += [f"Skipped in this run: {why}.", ""]
    return out


# ---------------------------------------------------------------------------------------------------------------
# S3-compatible object storage (scripts/bench_s3.py)


def s3_section(s3: dict) -> str:
    """Uploads per second to a local s3s-fs against files per second to a local directory, same daemon and run."""
    w, h = s3["size"]
    return "\n".join(
        [
            f"One job of {s3['images']} PNG images of {w}x{h} (level 4, mean object {s3['mean_object_bytes'] / 1024:.1f} "
            f"KiB) per round, {s3['rounds']} rounds, timed from the submit to `finished`, to a local directory and "
            "to `s3://` on a local `s3s-fs` (scripts/bench_s3.py; the server shares the machine's cores). Each "
            "upload is a staged write (fsync) plus a signed conditional `PUT`.",
            "",
            table(
                ["target", "images/s (median)"],
                [["files (local directory)", f(s3["files_per_s"], 1)], ["objects (s3s-fs)", f(s3["uploads_per_s"], 1)]],
            ),
            "",
            f"Uploads/s over files/s: **{f(s3['ratio'])}x**.",
        ]
    )
