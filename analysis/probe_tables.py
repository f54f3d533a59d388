"""The probe tables and figures of ``runner report``: one table ``probe_NAME`` per ``[[probe]]``
block, one row per cell the block matches, its runs' results (at the block's current settings)
averaged over seeds; and the block's figures for the page (analysis/probe_figures.py). Each kind
of runner/probes/kinds/ has its table in ``TABLES``, by kind name:

* shape_bias: shape bias, shape match and texture match (%), mean ± std over seeds;
* inference_time: images/s and latency (ms) at each batch size, the median over seeds, with
  the device they were timed on;
* attention_maps: the mean attention distance (image pixels) of each layer, mean over heads,
  images and seeds.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Callable

import architectures
from runner.study.probes import Probe
from runner.study.selectors import axes_of, matches

from .data import ReportData
from .formats import MISSING
from .probe_figures import FIGURES, ProbeFigure
from .text_table import TextTable


def probe_tables(data: ReportData, wanted: list[str], *, with_figures: bool = True
                 ) -> tuple[list[TextTable], list[ProbeFigure]]:
    tables, figures = [], []
    probes = [p for p in data.study.probes if f"probe_{p.name}" in wanted]
    if not probes or data.store is None:
        return [TextTable(f"probe_{p.name}", _title(p), ["cell"], [], [_not_yet(p)]) for p in probes], []
    data.store.ingest_probes(data.study.runs_dir, [v.run.id for v in data.runs if v.finished])
    rows = {(r["run_id"], r["probe"], r["key"]): r for r in data.store.probes([v.run.id for v in data.runs])
            if r["state"] == "done"}  # earlier settings' results stay in the store, under their own key
    for p in probes:
        cells: dict[str, list[dict]] = {}
        for v in data.runs:
            if p.match and not matches(axes_of(v.run), v.run.config, p.match):
                continue
            family = architectures.get_family(v.run.config["architecture"]["model"])
            if p.attention_only and family is not None and family.attention is False:
                continue  # as runner probe: nothing to read
            r = rows.get((v.run.id, p.name, p.key))
            cells.setdefault(v.cell_label, [])
            if r is not None:
                cells[v.cell_label].append({**r, "label": v.run.label})
        tables.append(TABLES[p.kind].build(p, cells))
        if with_figures and FIGURES[p.kind] is not None:
            figures += FIGURES[p.kind](p, cells)
    return tables, figures


def _title(p: Probe) -> str:
    return TABLES[p.kind].title.format(name=p.name)


def _not_yet(p) -> str:
    return f"{MISSING}: not probed yet, `runner probe {p.name}` (finished runs only)."


def _mean_std(values: list[float], scale: float = 100.0, decimals: int = 1) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return MISSING
    text = f"{statistics.fmean(values) * scale:.{decimals}f}"
    return text + (f" ± {statistics.stdev(values) * scale:.{decimals}f}" if len(values) > 1 else "")


def _shape_bias(p, cells: dict[str, list[dict]]) -> TextTable:
    header = ["cell", "shape bias (%)", "shape match (%)", "texture match (%)", "runs"]
    rows = []
    for cell, results in cells.items():
        s = [r["summary"] for r in results]
        rows.append([cell, _mean_std([x["shape_bias"] for x in s]), _mean_std([x["shape_match"] for x in s]),
                     _mean_std([x["texture_match"] for x in s]), str(len(results))])
    images = next((r["summary"]["conflicting"] for rs in cells.values() for r in rs), None)
    notes = [f"shape bias = shape decisions / (shape + texture decisions) on the cue-conflict images of "
             f"`{p.settings['root']}` whose two cues differ (Geirhos et al. 2019)"
             + (f", {images} of them" if images is not None else "") + "; mean ± std over seeds."]
    return TextTable(f"probe_{p.name}", _title(p), header, rows, notes + _missing_note(p, cells))


def _inference_time(p, cells: dict[str, list[dict]]) -> TextTable:
    sizes = p.settings["batch_sizes"]
    header = ["cell", "device", *(h for bs in sizes for h in (f"img/s @{bs}", f"ms @{bs}")), "runs"]
    rows = []
    for cell, results in cells.items():
        by_bs: dict[int, list[dict]] = {}
        for r in results:
            for b in r["summary"]["batches"]:
                by_bs.setdefault(b["batch_size"], []).append(b)
        devices = sorted({_device(r) for r in results})
        row = [cell, " | ".join(devices) or MISSING]
        for bs in sizes:
            got = [b for b in by_bs.get(bs, []) if "error" not in b]
            oom = any("error" in b for b in by_bs.get(bs, []))
            row += ([f"{statistics.median(b['images_per_s'] for b in got):.0f}",
                     f"{statistics.median(b['latency_ms'] for b in got):.2f}"] if got
                    else ["OOM", "OOM"] if oom else [MISSING, MISSING])
        rows.append(row + [str(len(results))])
    precisions = sorted({r["summary"]["precision"] for rs in cells.values() for r in rs})
    notes = ["latency: median wall time of one forward pass of a batch, after warm-up, with a device sync; "
             "images/s = batch size / latency; the median over seeds"
             + (f"; precision {', '.join(precisions)}" if precisions else "") + "."]
    return TextTable(f"probe_{p.name}", _title(p), header, rows, notes + _missing_note(p, cells))


def _device(r: dict) -> str:
    return r["summary"].get("hardware") or r.get("device") or "?"


def _attention(p, cells: dict[str, list[dict]]) -> TextTable:
    depth = max((len(r["summary"]["mean_distance_px"]) for rs in cells.values() for r in rs), default=0)
    header = ["cell", "heads", *(f"layer {i + 1}" for i in range(depth)), "runs"]
    rows = []
    for cell, results in cells.items():
        heads = sorted({lay["heads"] for r in results for lay in r["summary"]["layers"]})
        per_layer = [[r["summary"]["mean_distance_px"][i] for r in results if i < len(r["summary"]["mean_distance_px"])]
                     for i in range(depth)]
        rows.append([cell, ",".join(map(str, heads)) or MISSING,
                     *(_mean_std(v, 1.0, 2) if v else "" for v in per_layer), str(len(results))])
    notes = ["mean attention distance: for each query of the image grid, the attention-weighted distance in image "
             "pixels to the keys it attends to, averaged over queries, heads and the probe's images "
             "(Dosovitskiy et al. 2021, Fig. 7); mean ± std over seeds. The attention maps are figures of the HTML report."]
    return TextTable(f"probe_{p.name}", _title(p), header, rows, notes + _missing_note(p, cells))


def _missing_note(p, cells) -> list[str]:
    return [_not_yet(p)] if any(not rs for rs in cells.values()) else []


@dataclass(frozen=True)
class ProbeTable:
    title: str  # formatted with the block's name
    build: Callable[[Probe, dict[str, list[dict]]], TextTable]  # (probe, results by cell label) -> the table


# The table of each kind of runner/probes/kinds/, by kind name (tests/test_probe.py checks every kind has one).
TABLES: dict[str, ProbeTable] = {
    "shape_bias": ProbeTable("Shape bias on cue-conflict images ({name})", _shape_bias),
    "inference_time": ProbeTable("Inference speed ({name}): images/s and latency per batch size", _inference_time),
    "attention_maps": ProbeTable("Mean attention distance in pixels, per layer ({name})", _attention),
}
