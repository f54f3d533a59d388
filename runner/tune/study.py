"""The Optuna study of a ``[tune.NAME]`` block: its name and storage in the study's database,
its seeded sampler and its pruner, and the refusal to mix trials of a block that changed."""

from __future__ import annotations

from runner.errors import SpecError
from runner.plan.runs import Run
from runner.study.spec import Study
from runner.study.tune import Tune

FINGERPRINT_ATTR = "runner_fingerprint"


def optuna_name(study: Study, tune: Tune) -> str:
    """The Optuna study's name in the storage: the study file's name, then the block's."""
    return f"{study.name}/{tune.name}"


def storage(url: str):
    """Optuna's RDB storage on the study's database (a busy timeout on SQLite, as our store has)."""
    import optuna

    from runner.study.spec import sqlite_path

    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs(url))


def engine_kwargs(url: str) -> dict:
    """A busy timeout on SQLite, as runner's own store has: the tuner and `runner status` share the file."""
    return {"connect_args": {"timeout": 30}} if url.startswith("sqlite") else {}


def _sampler(tune: Tune, n_trials_before: int):
    """Seeded by the block, and by how many trials the study holds: a resumed study does not ask
    the sequence of the first session again (a seeded random sampler would repeat its trials)."""
    import optuna

    s = tune.sampler
    seed = s["seed"] + n_trials_before
    if s["kind"] == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=s["startup_trials"], multivariate=s["multivariate"])


def _pruner(tune: Tune, max_epochs: int):
    import optuna

    p = tune.pruner
    if p["kind"] == "none":
        return optuna.pruners.NopPruner()
    if p["kind"] == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=p["min_epochs"], max_resource=max_epochs,
                                              reduction_factor=p["reduction_factor"])
    return optuna.pruners.MedianPruner(n_startup_trials=p["startup_trials"], n_warmup_steps=p["warmup_epochs"])


def open_study(study: Study, tune: Tune, cells: list[Run], *, create: bool):
    """The block's Optuna study (created on first use). One whose block changed what trials
    mean (space, metric, match, budget) is refused: its trials would not compare."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = optuna_name(study, tune)
    st = storage(study.store)
    try:
        study_id = st.get_study_id_from_name(name)
    except KeyError:
        study_id = None
    if study_id is None and not create:
        return None
    n_before = len(st.get_all_trials(study_id, deepcopy=False)) if study_id is not None else 0
    mark = st.get_study_user_attrs(study_id).get(FINGERPRINT_ATTR) if study_id is not None else None
    if mark is not None and mark != tune.fingerprint():
        raise SpecError(study.file, f"[tune.{tune.name}]",
                        f"changed since its {n_before} trial(s) ran (match, metric, direction, epochs, seed or space), "
                        "so they would not compare with new ones; rename the block to start a new study, or delete "
                        f'this one: optuna delete-study --study-name "{name}" --storage "{study.store}"')
    max_epochs = tune.epochs or max(c.config["train"]["epochs"] for c in cells)
    ostudy = optuna.create_study(storage=st, study_name=name, direction=tune.direction, load_if_exists=True,
                                 sampler=_sampler(tune, n_before), pruner=_pruner(tune, max_epochs))
    if mark is None:
        ostudy.set_user_attr(FINGERPRINT_ATTR, tune.fingerprint())
    return ostudy
