"""The optional W&B mirror, offline (no account, no network): a launched run leaves a W&B
offline run in its folder holding the resolved config, the provenance and every epoch's
metrics, grouped by cell. The .wandb file is read back record by record."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from conftest import run_cli, write_study
from studies import study_toml


def wandb_records(path: Path) -> list:
    """The protobuf records of a .wandb file: a 7-byte header, then LevelDB-log framing (32 KiB
    blocks; each chunk a 7-byte header of crc32c, length and type FULL/FIRST/MIDDLE/LAST)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, records, pending = path.read_bytes(), 7, [], b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:  # block trailer padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 1:
            records.append(chunk)
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            records.append(pending + chunk)
    out = []
    for raw in records:
        record = pb.Record()
        record.ParseFromString(raw)
        out.append(record)
    return out


def test_offline_wandb_run_holds_config_provenance_and_metrics(tmp_path):
    study = study_toml(epochs=2).replace(
        "[defaults]", '[study.wandb]\nproject = "matrix-test"\nmode = "offline"\ntags = ["ci"]\n\n[defaults]', 1)
    write_study(tmp_path, study)
    env = {"WANDB_SILENT": "true", "WANDB_CONFIG_DIR": str(tmp_path / "wb-config"),
           "WANDB_CACHE_DIR": str(tmp_path / "wb-cache"), "WANDB_DATA_DIR": str(tmp_path / "wb-data"),
           "WANDB_MODE": "offline"}
    out = run_cli("launch", "--workers", "1", "--where", "architecture=vit", "--where", "seed=0", cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr

    [folder] = [p.parent for p in (tmp_path / "results" / "runs").glob("*/summary.json")]
    run = json.loads((folder / "run.json").read_text())
    summary = json.loads((folder / "summary.json").read_text())
    [wandb_file] = list(folder.glob("wandb/offline-run-*/run-*.wandb"))
    assert wandb_file.name == f"run-{run['id']}.wandb"  # the W&B run id is the run id

    records = wandb_records(wandb_file)
    [header] = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert header.run_group == run["cell"] and header.display_name == run["label"]
    assert header.project == "matrix-test" and list(header.tags) == ["ci"]
    config = {}
    for r in records:
        if r.WhichOneof("record_type") in ("run", "config"):
            items = r.run.config.update if r.WhichOneof("record_type") == "run" else r.config.update
            config.update({u.key: json.loads(u.value_json) for u in items})
    assert config["config"] == run["config"]
    assert config["provenance"]["git"] is not None and "torch" in config["provenance"]
    assert config["engine"]["precision"] == "fp32"

    history = []
    for r in records:
        if r.WhichOneof("record_type") == "history":
            history.append({"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in r.history.item})
    assert [h["epoch"] for h in history] == [1, 2]
    metrics = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [h["val_acc"] for h in history] == [m["val_acc"] for m in metrics]
    assert [h["_step"] for h in history] == [m["step"] for m in metrics]

    final = {}
    for r in records:
        if r.WhichOneof("record_type") == "summary":
            final.update({"/".join(u.nested_key) or u.key: json.loads(u.value_json) for u in r.summary.update})
    assert final["test_acc"] == summary["test_acc"]
