"""The figures of the probes, by kind (``FIGURES``, at the end), drawn from their results (no torch).

Of an ``attention_maps`` result, from its ``arrays.npz``, into its folder:

* ``query-<i>.png`` and ``mean-<i>.png`` per image: a grid of tiles, one row per attention
  layer, the input image first, then one tile per head: the query's attention over the keys
  (the query marked by a red square), or the mean over all queries. Each tile is scaled to its
  own maximum, so a head's pattern shows whatever its sharpness.
* ``gaussian-centres.png`` for conv-equivalent attention with quadratic encoding: per layer, every
  head's learned centre Delta_h around the query pixel (the cross) and its 1-sigma ellipse of
  Sigma_h (Cordonnier et al.'s figure of attention centres).

Tiles are composed with numpy and PIL (fast: the demo ViT's 4 layers x 5 tiles, 18 ms with the PNG);
only the Gaussian figure goes through matplotlib. Figures already drawn after the result are
kept.

Of a ``shape_bias`` block: Geirhos et al.'s figure, each cell's fraction of shape decisions per
category, into the report's figures folder.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from runner.study.probes import Probe

TILE = 56  # pixels per tile side
GAP = 4
LABEL = 18  # the label strip, top and left


@dataclass
class ProbeFigure:
    title: str
    png: Path | None  # None until ``make`` drew it (``report.write`` calls it with the figures folder)
    make: Callable[[Path], Path] | None = None


def draw(folder: Path) -> list[Path]:
    """Every figure of one attention_maps result folder, drawn unless already newer than the result."""
    result = folder / "result.json"
    arrays_file = folder / "arrays.npz"
    if not result.exists() or not arrays_file.exists():
        return []
    stamp = result.stat().st_mtime
    summary = json.loads(result.read_text())["summary"]
    wanted = [folder / f"{kind}-{i}.png" for i in range(summary["images"]) for kind in ("query", "mean")]
    if summary.get("gaussian_layers"):
        wanted.append(folder / "gaussian-centres.png")
    if all(p.exists() and p.stat().st_mtime >= stamp for p in wanted):
        return wanted
    with np.load(arrays_file) as a:
        arrays = {k: a[k] for k in a.files}
    layers = summary["layers"]
    for i in range(summary["images"]):
        for kind in ("query", "mean"):
            _save_png(folder / f"{kind}-{i}.png", attention_grid(arrays, layers, i, kind))
    if summary.get("gaussian_layers"):
        gaussian_centres(arrays["gauss_centres"], arrays["gauss_inv_cov"], layers[0]["grid"],
                         folder / "gaussian-centres.png")
    return wanted


def attention_grid(arrays: dict, layers: list[dict], image: int, kind: str) -> np.ndarray:
    """An RGB uint8 picture: rows = layers, columns = the input, then the heads."""
    heads = max(lay["heads"] for lay in layers)
    h = LABEL + len(layers) * (TILE + GAP)
    w = LABEL + (heads + 1) * (TILE + GAP)
    canvas = np.full((h, w, 3), 255, np.uint8)
    img = arrays["images"][image]  # [C, H, W] in [0, 1]
    img_rgb = np.repeat(img, 3, 0) if img.shape[0] == 1 else img[:3]
    for li, lay in enumerate(layers):
        top = LABEL + li * (TILE + GAP)
        gr, gc = lay["grid"]
        q = lay["query_token"] - lay["prefix"]
        mark = (q // gc, q % gc) if kind == "query" and q >= 0 else None
        _paste(canvas, top, LABEL, _upscale((img_rgb.transpose(1, 2, 0) * 255).astype(np.uint8)),
               _mark_box(mark, (gr, gc)))
        rows = arrays[f"{kind}_{li}"][image]  # [heads, prefix + gr*gc]
        for hi in range(lay["heads"]):
            tile = np.abs(rows[hi, lay["prefix"]:]).reshape(gr, gc)
            _paste(canvas, top, LABEL + (hi + 1) * (TILE + GAP), _upscale(_colour(tile)), _mark_box(mark, (gr, gc)))
    _labels(canvas, [f"L{i + 1}" for i in range(len(layers))], ["image"] + [f"h{j + 1}" for j in range(heads)])
    return canvas


def _colour(tile: np.ndarray) -> np.ndarray:
    from matplotlib import colormaps

    peak = tile.max()
    scaled = tile / peak if peak > 0 else tile
    return (colormaps["viridis"](scaled)[..., :3] * 255).astype(np.uint8)


def _upscale(rgb: np.ndarray) -> np.ndarray:
    """Nearest-neighbour to TILE x TILE, so each token stays a crisp square."""
    r = (np.arange(TILE) * rgb.shape[0]) // TILE
    c = (np.arange(TILE) * rgb.shape[1]) // TILE
    return rgb[r][:, c]


def _mark_box(mark, grid) -> tuple[int, int, int, int] | None:
    if mark is None:
        return None
    (r, c), (gr, gc) = mark, grid
    return (r * TILE // gr, c * TILE // gc, (r + 1) * TILE // gr - 1, (c + 1) * TILE // gc - 1)


def _paste(canvas: np.ndarray, top: int, left: int, tile: np.ndarray, box) -> None:
    canvas[top:top + TILE, left:left + TILE] = tile
    if box is not None:
        r0, c0, r1, c1 = box
        red = np.array([230, 30, 30], np.uint8)
        canvas[top + r0, left + c0:left + c1 + 1] = red
        canvas[top + r1, left + c0:left + c1 + 1] = red
        canvas[top + r0:top + r1 + 1, left + c0] = red
        canvas[top + r0:top + r1 + 1, left + c1] = red


def _labels(canvas: np.ndarray, rows: list[str], cols: list[str]) -> None:
    from PIL import Image, ImageDraw

    im = Image.fromarray(canvas)
    d = ImageDraw.Draw(im)
    for i, text in enumerate(rows):
        d.text((2, LABEL + i * (TILE + GAP) + TILE // 2 - 5), text, fill=(40, 40, 40))
    for j, text in enumerate(cols):
        d.text((LABEL + j * (TILE + GAP) + 4, 3), text, fill=(40, 40, 40))
    canvas[:] = np.asarray(im)


def _save_png(path: Path, rgb: np.ndarray) -> None:
    from PIL import Image

    from runner.records.runfolder import write_atomic

    write_atomic(path, lambda f: Image.fromarray(rgb).save(f, format="PNG"))


def gaussian_centres(centres: np.ndarray, inv_cov: np.ndarray, grid: list[int], path: Path) -> None:
    """centres [L, H, 2] (row, col offsets), inv_cov [L, H, 2, 2]: one panel per layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Ellipse

    from runner.records.runfolder import write_atomic

    n_layers, n_heads = centres.shape[:2]
    reach = max(3.0, float(np.abs(centres).max()) + 1.5)
    reach = min(reach, max(grid))
    fig, axes = plt.subplots(1, n_layers, figsize=(2.2 * n_layers, 2.4), squeeze=False)
    colours = plt.get_cmap("tab10")
    for li, ax in enumerate(axes[0]):
        for h in range(n_heads):
            dy, dx = centres[li, h]
            cov = np.linalg.pinv(inv_cov[li, h].astype(np.float64))
            vals, vecs = np.linalg.eigh(cov)
            vals = np.sqrt(np.clip(vals, 0, None))
            angle = np.degrees(np.arctan2(vecs[0, 1], vecs[1, 1]))  # (row, col) axes -> (y, x) drawing
            ax.add_patch(Ellipse((dx, dy), 2 * vals[1], 2 * vals[0], angle=angle, fill=False,
                                 color=colours(h % 10), lw=1.2))
            ax.plot(dx, dy, "o", ms=3, color=colours(h % 10))
        ax.plot(0, 0, "k+", ms=8)
        ax.set_xlim(-reach, reach)
        ax.set_ylim(reach, -reach)  # rows grow downwards, as in the image
        ax.set_aspect("equal")
        ax.set_xticks(range(-int(reach), int(reach) + 1))
        ax.set_yticks(range(-int(reach), int(reach) + 1))
        ax.tick_params(labelsize=6)
        ax.grid(True, lw=0.3)
        ax.set_title(f"layer {li + 1}", fontsize=8)
    fig.suptitle("learned attention centres Δ_h (dots) and 1σ of Σ_h, around the query pixel (+)", fontsize=8)
    write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)


def shape_bias_plot(series: list[tuple[str, dict, float]], categories: list[str], path: Path) -> Path:
    """One row per category, the fraction of shape decisions on x (texture on the left, as the
    paper's figure); a marker per cell, its overall shape bias as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from runner.records.runfolder import write_atomic

    fig, ax = plt.subplots(figsize=(5.5, 0.32 * len(categories) + 1.4))
    colours = plt.get_cmap("tab10")
    markers = "os^Dv<>ph*"
    for i, (cell, per, overall) in enumerate(series):
        ys = [j for j, c in enumerate(categories) if per.get(c) is not None]
        ax.plot([per[categories[j]] for j in ys], ys, markers[i % len(markers)], color=colours(i % 10), label=cell,
                ms=5, alpha=0.85)
        ax.axvline(overall, color=colours(i % 10), ls="--", lw=1)
    ax.set_yticks(range(len(categories)), categories, fontsize=7)
    ax.set_ylim(len(categories) - 0.5, -0.5)
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel("fraction of shape decisions (1 - fraction of texture decisions)", fontsize=8)
    ax.grid(True, axis="x", lw=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)
    return path


def attention_figures(p: Probe, cells: dict[str, list[dict]]) -> list[ProbeFigure]:
    """The first image's query and mean maps (and the Gaussian centres) of each probed run."""
    out = []
    for results in cells.values():
        for r in results:
            folder = Path(r["folder"])
            for png in draw(folder):
                if png.name in ("query-0.png", "mean-0.png", "gaussian-centres.png"):
                    what = {"query-0.png": f"attention of the query ({r['summary']['query']})",
                            "mean-0.png": "mean attention over all queries",
                            "gaussian-centres.png": "learned Gaussian attention centres"}[png.name]
                    out.append(ProbeFigure(f"{r['label']}: {what}, first {r['summary']['split']} image "
                                           "(rows: layers; columns: the image, then each head)"
                                           if png.name != "gaussian-centres.png" else f"{r['label']}: {what}", png))
    return out


def shape_figures(p: Probe, cells: dict[str, list[dict]]) -> list[ProbeFigure]:
    """Geirhos et al.'s figure: per category, each cell's fraction of shape decisions (mean over
    seeds); none before a run is probed."""
    if not any(cells.values()):
        return []
    categories = next(r["summary"]["categories"] for rs in cells.values() for r in rs)
    series = []
    for cell, results in cells.items():
        if results:
            per = {c: [r["summary"]["per_category"].get(c) for r in results] for c in categories}
            series.append((cell, {c: statistics.fmean(v) if (v := [x for x in per[c] if x is not None]) else None
                                  for c in categories},
                           statistics.fmean(r["summary"]["shape_bias"] for r in results
                                            if r["summary"]["shape_bias"] is not None)))
    return [ProbeFigure(f"Shape bias per category ({p.name}): fraction of shape decisions, dashed: over all images",
                        None, lambda folder: shape_bias_plot(series, categories, folder / f"probe_{p.name}.png"))]


# The report figures of each kind of runner/probes/kinds/, by kind name, or None for a kind drawn as a
# table only (tests/test_probe.py checks every kind is here): (probe, results by cell label) -> figures
FIGURES: dict[str, Callable[[Probe, dict[str, list[dict]]], list[ProbeFigure]] | None] = {
    "attention_maps": attention_figures,
    "shape_bias": shape_figures,
    "inference_time": None,
}
