"""The plain functions behind each CLI command: they take options, return data, print nothing.

``cli.py`` parses and renders; tests and notebooks call these directly. Nothing
here imports torch: only ``launch`` starts workers, which import it themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from .errors import SelectionError
from .plan import Plan, Run, count_states, expand, parse_where, select, state_of, value_of
from .provenance import git_commit
from .spec import Study, load_study

if TYPE_CHECKING:  # sqlalchemy costs 0.25 s to import: only commands that touch a store pay it
    from .store import RunRecord, Store


@dataclass(frozen=True)
class Selection:
    study: Study
    plan: Plan
    runs: list[Run]


def load(file: str | Path, matrix: Iterable[str] = (), where: Iterable[str] = ()) -> Selection:
    """Parse, validate and expand the study, then select runs by ``--matrix``/``--where``."""
    study = load_study(file)
    plan = expand(study)
    return Selection(study, plan, select(plan, matrix=list(matrix), where=parse_where(where)))


def open_store(study: Study, *, create: bool) -> "Store | None":
    from .store import Store, sqlite_path

    path = sqlite_path(study.store)
    if path is not None and not path.exists() and not create:
        return None
    return Store.open(study.store, study.runs_dir, create=create)


def _has_folders(study: Study) -> bool:
    return study.runs_dir.is_dir() and any(p.is_dir() and not p.name.startswith(".") for p in study.runs_dir.iterdir())


def records_for(sel: Selection, *, ingest: bool, details: bool = True) -> "dict[str, RunRecord]":
    """Store records of the selected runs; with ``ingest`` the run folders are read into the store first."""
    create = ingest and _has_folders(sel.study)
    store = open_store(sel.study, create=create)
    if store is None:
        return {}
    if ingest:
        store.ingest(sel.study.runs_dir)
    return store.runs([r.id for r in sel.runs], details=details)


def run_entries(sel: Selection, records: dict[str, RunRecord], *, queued: bool = False,
                with_config: bool = False) -> list[dict[str, Any]]:
    """One dict per selected run in the shape of ``status --json``."""
    commit = git_commit(sel.study.dir)
    out = []
    for run in sel.runs:
        rec = records.get(run.id)
        state = state_of(rec, commit)
        if state == "missing" and queued and rec is not None:
            state = "queued"
        entry = {"id": run.id, "label": run.label, "state": state, "matrix": list(run.matrices),
                 "cell": run.cell, "summary": rec.summary if rec else None, "reason": rec.reason if rec else None,
                 "progress": rec.progress if rec and state == "running" else None,
                 "attempts": rec.attempts if rec else 0}
        if with_config:
            entry["config"] = run.config
        out.append(entry)
    return out


def overview(entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {"counts": count_states(e["state"] for e in entries), "runs": entries}


def eta_seconds(progress: dict | None) -> float | None:
    """Remaining time of a running run from its per-epoch times so far."""
    if not progress or not progress.get("epoch"):
        return None
    per_epoch = (progress.get("metrics") or {}).get("epoch_time_s")
    if not per_epoch:
        return None
    return per_epoch * (progress["epochs"] - progress["epoch"])


# ---------------------------------------------------------------- report


def table_runs(sel: Selection, table, records: "dict[str, RunRecord]", commit: str | None) -> list[dict]:
    """Rows for one ``[[table]]``: every planned run its ``where`` selects, with the metric if done."""
    rows_key, cols_key = table.rows, table.columns
    rule = {k: (v if isinstance(v, list) else [v]) for k, v in table.where.items()}
    selected = {r.id for r in sel.runs}
    runs = [r for r in select(sel.plan, where=rule) if r.id in selected]
    out = []
    for r in runs:
        rec = records.get(r.id)
        state = state_of(rec, commit)
        value = (rec.summary or {}).get(table.metric) if rec and rec.state == "done" else None
        out.append({"row": value_of(r, rows_key), "column": value_of(r, cols_key), "seed": r.seed,
                    "state": "done" if rec and rec.state == "done" else state,
                    "value": float(value) if isinstance(value, (int, float)) else None})
    return out


def report(sel: Selection, *, table_names: Iterable[str] = (), out_dir: Path | None = None) -> list[tuple[Any, str]]:
    """Build each selected ``[[table]]`` as Markdown and write it to ``out_dir`` (default the study's report_dir)."""
    from analysis.tables import build_table, to_markdown

    wanted = list(table_names)
    known = {t.name for t in sel.study.tables}
    for n in wanted:
        if n not in known:
            raise SelectionError(f"--table {n}: no such [[table]] in {sel.study.file}; defined: {', '.join(sorted(known)) or '(none)'}")
    records = records_for(sel, ingest=True)
    out_dir = Path(out_dir) if out_dir is not None else sel.study.report_dir
    commit = git_commit(sel.study.dir)
    results = []
    for t in sel.study.tables:
        if wanted and t.name not in wanted:
            continue
        result = build_table(name=t.name, title=t.title, metric=t.metric, rows_key=t.rows, columns_key=t.columns,
                             runs=table_runs(sel, t, records, commit), scale=t.scale, decimals=t.decimals)
        text = to_markdown(result)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / f"{t.name}.md").write_text(text, encoding="utf-8")
        results.append((result, text))
    return results


def show(study: Study, run_id: str) -> dict[str, Any]:
    """Everything the store knows of one run (a unique prefix of its id is enough)."""
    store = open_store(study, create=_has_folders(study))
    if store is None:
        raise SelectionError(f"{run_id}: no results database yet ({study.store}); run `runner launch` first")
    store.ingest(study.runs_dir)
    ids = store.find(run_id)
    if len(ids) != 1:
        raise SelectionError(f"{run_id}: " + ("no run with this id" if not ids else
                                              f"ambiguous, matches {', '.join(sorted(ids)[:5])}"))
    rec = store.runs(ids)[ids[0]]
    series = store.metrics(ids)
    last_epoch = max((m["epoch"] for m in series), default=None)
    return {"id": rec.id, "cell": rec.cell, "label": rec.label, "state": rec.state, "reason": rec.reason,
            "matrix": list(rec.matrices), "config": store.config(rec.id), "summary": rec.summary, "folder": rec.folder,
            "attempts": store.attempts(rec.id),
            "last_metrics": {m["name"]: m["value"] for m in series if m["epoch"] == last_epoch},
            "epochs_logged": last_epoch}
