"""``runner data`` and what the rest of the CLI does about data that is missing or present,
through the real CLI in subprocesses, on fixtures in the real on-disk formats."""

from __future__ import annotations

import json

import pytest

from conftest import run_cli, write_study
from data_fixtures import write_cifar10, write_image_folder
from studies import VIT, study_toml

STUDY = study_toml(
    "data", seeds=[0], defaults={"epochs": 1, "batch_size": 32, "lr": 1e-3}, architectures={"vit": VIT},
    datasets={"cifar10": {"source": "cifar10", "root": "data/cifar10"}, "mnist": {"source": "mnist", "root": "data/mnist"},
              "folder": {"source": "imagefolder", "root": "data/folder", "img_size": 32}},
    matrices=[{"name": "cifar", "architectures": ["vit"], "datasets": ["cifar10"],
               "set": {"crop": "pad", "hflip": 0.5, "mixup": 0.2, "cutmix": 1.0, "label_smoothing": 0.1}},
              {"name": "mnist", "architectures": ["vit"], "datasets": ["mnist"]},
              {"name": "folder", "architectures": ["vit"], "datasets": ["folder"],
               "set": {"crop": "resized", "hflip": 0.5, "auto_augment": "rand-m9-mstd0.5-inc1"}}],
    tables=())

OFFLINE = {k: "http://127.0.0.1:9" for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")} | {
    "no_proxy": "", "NO_PROXY": ""}  # a closed port: downloads fail at once, with or without internet


@pytest.fixture
def study(tmp_path):
    write_study(tmp_path, STUDY)
    write_cifar10(tmp_path / "data" / "cifar10")
    write_image_folder(tmp_path / "data" / "folder", classes=3, train_per_class=8, val_per_class=2)
    return tmp_path


def test_data_list_shows_what_is_in_place_and_how_to_get_the_rest(study):
    out = run_cli("data", "list", "--json", cwd=study)
    assert out.returncode == 0, out.stderr
    rows = {r["dataset"]: r for r in json.loads(out.stdout)}
    assert rows["cifar10"]["problem"] is None and rows["folder"]["problem"] is None
    assert rows["mnist"]["root"] == str(study / "data" / "mnist")
    assert "train-images-idx3-ubyte" in rows["mnist"]["problem"] and "runner data download mnist" in rows["mnist"]["problem"]
    text = run_cli("data", "list", cwd=study)
    assert "in place" in text.stdout and "missing" in text.stdout and "runner data download mnist" in text.stdout


def test_plan_warns_and_launch_refuses_when_data_is_missing(study):
    plan = run_cli("plan", cwd=study)
    assert plan.returncode == 0
    warnings = [l for l in plan.stderr.splitlines() if l.startswith("warning")]
    assert len(warnings) == 1 and "dataset mnist is missing for 1 run(s)" in warnings[0], plan.stderr
    assert json.loads(run_cli("plan", "--json", cwd=study).stdout)["missing_data"][0]["dataset"] == "mnist"

    launch = run_cli("launch", "--workers", "1", cwd=study)
    assert launch.returncode == 2 and "Traceback" not in launch.stderr
    assert "dataset mnist (1 run(s) to do)" in launch.stderr and "--where dataset=cifar10,folder" in launch.stderr
    assert not (study / "results").exists()  # a refused launch writes nothing: no database, no lock, no folder


def test_download_offline_is_one_line_and_exit_2(study):
    out = run_cli("data", "download", "mnist", cwd=study, env=OFFLINE, timeout=120)
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.count("\n") == 1 and "could not download MNIST" in out.stderr and "Traceback" not in out.stderr
    folder = run_cli("data", "download", "imagefolder", "--root", "elsewhere", cwd=study)
    assert folder.returncode == 2 and "not downloadable" in folder.stderr and "no train/ folder" in folder.stderr
    present = run_cli("data", "download", "cifar10", cwd=study, env=OFFLINE)
    assert present.returncode == 0 and "already in place" in present.stdout
    unknown = run_cli("data", "download", "svhn", cwd=study)
    assert unknown.returncode == 2 and "defined: cifar10, folder, mnist" in unknown.stderr


def test_verify_reads_every_split_and_flags_unofficial_files(study):
    out = run_cli("data", "verify", "cifar10", "folder", cwd=study)
    assert out.returncode == 1  # the fixture's pickles are not the official release
    lines = out.stdout.splitlines()
    assert "cifar10: md5 data_batch_1: FAILED, differs from c99cafc152244af753f735de768cd75f" in lines
    assert "cifar10: read train: ok, 180 images, 10 classes" in lines
    assert "folder: read test: ok, 6 images, 3 classes" in lines


def test_launch_trains_on_cifar_and_folder_fixtures_through_both_paths(study):
    out = run_cli("launch", "--workers", "1", "-m", "cifar", "-m", "folder", cwd=study, env={"RUNNER_LOADER_WORKERS": "1"},
                  timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    runs = json.loads(run_cli("status", "--json", "-m", "cifar", "-m", "folder", cwd=study).stdout)["runs"]
    by = {r["label"]: r["summary"] for r in runs}
    cifar, folder = by["vit/cifar10/s0"], by["vit/folder/s0"]
    assert cifar["data_path"] == "device" and (cifar["n_train"], cifar["n_val"], cifar["n_test"]) == (180, 20, 30)
    assert folder["data_path"] == "loader" and (folder["n_train"], folder["n_val"], folder["n_test"]) == (12, 12, 6)
    assert 0.0 <= cifar["test_acc"] <= 1.0 and 0.0 <= folder["test_acc"] <= 1.0
