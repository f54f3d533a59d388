"""The index's schema version and the statements that bring an older store up to it: plain data,
so opening a store of this version (every command) needs no SQLAlchemy (``store.py``)."""

SCHEMA_VERSION = 4  # bumped by every table or column added (tests/test_store_schema.py keeps the old files)
# what makes a store of an older version this one, in place (the run folders fill in the rest);
# `runner sync --rebuild` recreates runner's tables of a store of any version instead
UPGRADES = {
    1: ("ALTER TABLE mr_runs ADD COLUMN code_hash VARCHAR(64)",  # 2: the code fingerprint of done runs
        "UPDATE mr_runs SET folder_sig = NULL"),  # read every folder again, to fill it in
    2: ("ALTER TABLE mr_runs ADD COLUMN warnings JSON",  # 3: what a run lost on the way, said by status
        "UPDATE mr_runs SET folder_sig = NULL"),
    3: ("DROP TABLE mr_metrics",  # 4: mr_series (create_all made it), a row per run and metric for one per value
        "ALTER TABLE mr_runs ADD COLUMN last_step INTEGER",
        "UPDATE mr_runs SET folder_sig = NULL"),
}
GONE = ("mr_metrics",)  # tables of older schemas, dropped by a rebuild
