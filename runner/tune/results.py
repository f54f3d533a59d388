"""What the tuning studies hold, for ``runner status`` and ``runner report``: read-only.

The Optuna tables are read only when the database holds a study of one of the blocks
(one query first), so a study that was never tuned does not import Optuna.
"""

from __future__ import annotations

from runner.plan.runs import Plan
from runner.study.spec import Study
from runner.records.store import Store
from runner.tune.tuner import _finite, cell_label, tuned_cells
from runner.tune.study import engine_kwargs, optuna_name


def read_trials(study: Study) -> dict[str, list]:
    """Each ``[tune.NAME]`` block's Optuna trials (FrozenTrial), read-only: no table is created,
    and a store without Optuna tables (never tuned) gives no trials."""
    from runner.study.spec import sqlite_path

    path = sqlite_path(study.store)
    if not study.tunes or (path is not None and not path.exists()) or not _has_optuna_studies(study):
        return {}
    import optuna
    import sqlalchemy

    out: dict[str, list] = {}
    try:
        st = optuna.storages.RDBStorage(study.store, engine_kwargs=engine_kwargs(study.store), skip_compatibility_check=True,
                                        skip_table_creation=True)
        for tune in study.tunes.values():
            try:
                out[tune.name] = st.get_all_trials(st.get_study_id_from_name(optuna_name(study, tune)), deepcopy=False)
            except KeyError:
                out[tune.name] = []
    except sqlalchemy.exc.SQLAlchemyError:  # no Optuna table in this database yet
        return {}
    return out


def _has_optuna_studies(study: Study) -> bool:
    """Whether the database holds an Optuna study of one of the blocks: one query, so that
    ``runner status`` of a study never tuned does not import Optuna (0.4 s)."""
    import sqlalchemy as sa

    names = [optuna_name(study, t) for t in study.tunes.values()]
    engine = sa.create_engine(study.store)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table("studies"):
                return False
            q = sa.text("SELECT COUNT(*) FROM studies WHERE study_name IN :names").bindparams(
                sa.bindparam("names", expanding=True))
            return bool(conn.execute(q, {"names": names}).scalar())
    except sa.exc.SQLAlchemyError:
        return False
    finally:
        engine.dispose()


def summaries(study: Study, found: dict[str, list] | None = None) -> list[dict]:
    """Each block's study as ``runner status`` shows it: trials by state and the best so far."""
    found = read_trials(study) if found is None else found
    out = []
    for tune in study.tunes.values():
        trials = found.get(tune.name, [])
        entry = {"name": tune.name, "study": optuna_name(study, tune), "metric": tune.metric,
                 "direction": tune.direction, "trials": tune.trials, "complete": 0, "pruned": 0, "failed": 0,
                 "running": 0, "best": None}
        out.append(entry)
        if not trials:
            continue
        import optuna  # only once there are trials to read

        S = optuna.trial.TrialState
        names = {S.COMPLETE: "complete", S.PRUNED: "pruned", S.FAIL: "failed", S.RUNNING: "running"}
        for t in trials:
            if t.state in names:
                entry[names[t.state]] += 1
        done = [t for t in trials if t.state == S.COMPLETE and t.value is not None]
        if done:
            b = (max if tune.direction == "maximize" else min)(done, key=lambda t: t.value)
            entry["best"] = {"trial": b.number, "value": b.value, "params": dict(b.params)}
    return out


def best_by_cell(study: Study, plan: Plan, store: Store | None) -> list[dict]:
    """For ``runner report``: per block with trials, per tuned cell, the complete trial whose run of
    that cell scored best (with one cell, the study's best trial), from the runs' summaries."""
    import optuna

    S = optuna.trial.TrialState
    found = read_trials(study)
    status = {e["name"]: e for e in summaries(study, found)}
    out = []
    for tune in study.tunes.values():
        trials = found.get(tune.name) or []
        if not trials:
            continue
        cells = tuned_cells(study, plan, tune)
        complete = [t for t in trials if t.state == S.COMPLETE and len(t.user_attrs.get("runs") or []) == len(cells)]
        records = store.runs([i for t in complete for i in t.user_attrs["runs"]]) if store and complete else {}
        pick = max if tune.direction == "maximize" else min
        rows = []
        for i, cell in enumerate(cells):
            scored = [(v, t) for t in complete
                      if (r := records.get(t.user_attrs["runs"][i])) and _finite(v := (r.summary or {}).get(tune.metric))]
            value, best = pick(scored, key=lambda p: p[0]) if scored else (None, None)
            rows.append({"cell": cell_label(cell), "trial": best.number if best else None, "value": value,
                         "params": dict(best.params) if best else {},
                         "run": best.user_attrs["runs"][i] if best else None})
        out.append({"tune": tune, "status": status[tune.name], "rows": rows})
    return out
