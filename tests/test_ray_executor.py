"""``--executor ray``: the tiny models' gate through a local 2-CPU Ray cluster gives every
figure and per-item output of the in-process run; an attack shard's journal keeps its
finished items; the executor's start-up checks. Skipped where Ray is not installed."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import miniature
from miniature.core import settings as opt
from miniature.core.settings import make_settings
from miniature.testing import figures_close as close
from miniature.testing import gate_figures

CHARACTERISTICS = (
    "prediction_errors",
    "data_representation",
    "data_distribution",
    "adversarial_vulnerability",
    "representation_similarity",
)


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster of 2 CPUs whose workers import this checkout of miniature."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'pytest-miniature[ray]')")
    root = str(Path(miniature.__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    niceness = os.environ.get("RAY_worker_niceness")
    os.environ.setdefault("RAY_worker_niceness", "0")  # as the executor starts its own: not nice 15
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="ERROR",
        runtime_env={"env_vars": {"PYTHONPATH": path}},
    )
    yield ray
    ray.shutdown()
    if niceness is None:  # leave the environment as found
        os.environ.pop("RAY_worker_niceness", None)


def tiny_settings(models: Any, cache_dir: Path, **more: Any) -> opt.Settings:
    values: dict[str, Any] = dict(
        reference=str(models["small"]),
        candidate=[str(models["distil"])],
        attack_model=str(models["attacker"]),
        cache_dir=cache_dir,
        data_limit=60,
        attack_size=32,
        bootstrap=100,
        seed=3,
    )
    return make_settings(**{**values, **more})


def outcomes_without_time(outcomes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in o.items() if k != "seconds"} for o in outcomes]


@pytest.mark.slow
def test_ray_gate_equals_the_in_process_gate(ray_cluster, tiny_models, tmp_path: Path) -> None:
    from miniature.core.gate import Gate

    local = Gate(tiny_settings(tiny_models, tmp_path / "local"))
    local_figures = gate_figures(local, CHARACTERISTICS)
    assert local.execution == {**local.execution, "executor": "inprocess", "workers": 1, "jobs": 0}

    remote = Gate(tiny_settings(tiny_models, tmp_path / "ray", executor="ray"))
    killed: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(
        target=kill_a_worker_mid_shard, args=(tmp_path / "ray" / "adversarial", killed, stop), daemon=True
    )
    killer.start()
    try:
        remote_figures = gate_figures(remote, CHARACTERISTICS)
    finally:
        stop.set()
        killer.join()
    assert killed, "no worker was killed mid-shard: the retry went untested"
    execution = remote.execution
    assert execution["executor"] == "ray" and execution["workers"] == 2, execution
    # 2 models x (test, train, holdout, challenge) encodings + 4 attack shards of 8 items
    assert execution["jobs"] == 8 + 4 and execution["worker_processes"] >= 1, execution
    assert not execution["errors"], execution
    assert remote.cache.misses == 0, "the comparisons recomputed what the workers wrote"

    assert remote_figures.keys() == local_figures.keys()
    moved = {
        k: (local_figures[k], remote_figures[k])
        for k in local_figures
        if not close(local_figures[k], remote_figures[k])
    }
    assert not moved, moved
    assert all("skipped" not in v for v in remote_figures.values()), remote_figures
    for name in local.names:  # the per-item outputs too, under the same cache keys
        for role in ("test", "train", "holdout", "challenge"):
            a, b = local.outputs(name, role), remote.outputs(name, role)
            assert a.keys() == b.keys()
            for array in a:
                np.testing.assert_allclose(a[array], b[array], rtol=1e-5, atol=1e-6)
        assert outcomes_without_time(local.attack_outcomes(name)) == outcomes_without_time(remote.attack_outcomes(name))
    local_keys = sorted(p.name for p in (tmp_path / "local" / "outputs").iterdir())
    assert local_keys == sorted(p.name for p in (tmp_path / "ray" / "outputs").iterdir())
    assert not list((tmp_path / "ray" / "adversarial").glob("*.items-*.jsonl")), "shards not gathered"


@pytest.mark.slow
def test_ray_qa_gate_equals_the_in_process_gate(ray_cluster, tiny_models, tmp_path: Path) -> None:
    """QA: the encodings of question + context and the predicted answers (a job per model)."""
    from miniature.core.gate import Gate
    from miniature.tools.testing import make_tiny_model

    paths = [
        make_tiny_model(
            tmp_path / f"qa{seed}", tiny_models.tokenizer_dir, layers=2, hidden=32, heads=2, seed=seed, head="qa"
        )
        for seed in (5, 6)
    ]

    def qa_gate(folder: str, **more: Any) -> Any:
        return Gate(
            make_settings(
                reference=str(paths[0]),
                candidate=[str(paths[1])],
                task="qa",
                cache_dir=tmp_path / folder,
                data_limit=30,
                bootstrap=50,
                max_length=64,
                **more,
            )
        )

    local = qa_gate("local")
    local_figures = gate_figures(local, CHARACTERISTICS)
    remote = qa_gate("ray", executor="ray")
    remote_figures = gate_figures(remote, CHARACTERISTICS)
    labels = [label for label, _, _ in remote.execution["timings"]]
    assert sum(label.startswith("answer the test questions") for label in labels) == 2, labels
    assert not any(label.startswith("attack") for label in labels), labels
    assert remote.cache.misses == 0
    moved = {
        k: (local_figures[k], remote_figures[k])
        for k in local_figures
        if not close(local_figures[k], remote_figures[k])
    }
    assert remote_figures.keys() == local_figures.keys() and not moved, moved
    # the tiny QA heads err on every item, so prediction errors is skipped as carrying no
    # information; the answers the Ray jobs computed are the in-process ones, item by item
    for name in ("qa5", "qa6"):
        assert (remote.correct(name) == local.correct(name)).all()


def our_ray_tasks() -> list[int]:
    """The pids of the Ray workers running ``run_job`` that descend from this process (the
    cluster this test module started), never anyone else's."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if not (entry / "cmdline").read_bytes().startswith(b"ray::run_job"):
                continue
            pid = int(entry.name)
            while pid > 1:
                pid = int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if pid == os.getpid():
                    found.append(int(entry.name))
                    break
        except (OSError, ValueError, IndexError):
            continue
    return found


def kill_a_worker_mid_shard(folder: Path, killed: list[int], stop: threading.Event) -> None:
    """Once an attack shard has journalled an item, SIGKILL one worker running a task."""
    while not stop.wait(0.05):
        shards = list(folder.glob("*.items-*.jsonl")) if folder.is_dir() else []
        if any(p.read_text().count("\n") >= 1 for p in shards):
            for pid in our_ray_tasks()[:1]:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            if killed:
                return


@pytest.mark.slow
def test_workers_import_this_miniature(ray_cluster) -> None:
    def where() -> str:
        import miniature as package

        return str(Path(package.__file__).resolve().parent)

    assert ray_cluster.get(ray_cluster.remote(where).remote()) == str(Path(miniature.__file__).resolve().parent)


@pytest.mark.slow
def test_a_worker_that_cannot_see_the_cache_is_one_line(ray_cluster, tmp_path: Path, monkeypatch) -> None:
    from miniature.core import executors
    from miniature.errors import MiniatureError

    monkeypatch.setattr(
        executors, "probe_cache", lambda root, token: {"node": "node-b", "seen": False, "writable": False}
    )
    with pytest.raises(MiniatureError) as error:
        executors.check_shared_cache(ray_cluster, tmp_path)
    message = str(error.value)
    assert "\n" not in message and "node-b" in message and "cannot see the cache dir" in message
    assert "fix:" in message and "--cache-dir" in message
    assert not list(tmp_path.glob(".executor-probe-*")), "the probe file was left behind"


@pytest.mark.slow
def test_a_killed_shard_keeps_its_finished_items(tiny_models, tmp_path: Path) -> None:
    """A shard killed mid-way (its journal cut short) resumes at its first unfinished item,
    and the whole attack gathers the shards into the outcomes of an unsharded run."""
    from miniature.core.gate import Gate

    settings = tiny_settings(tiny_models, tmp_path / "cache", attack_size=12)
    gate = Gate(settings)
    name = gate.reference
    first = gate.attack_shard(name, 0, 6)
    [journal] = (tmp_path / "cache" / "adversarial").glob("*.items-000000000-000000006.jsonl")
    lines = journal.read_text().splitlines()
    assert len(lines) == 6
    journal.write_text("\n".join(lines[:4]) + "\n" + lines[4][:10])  # killed while writing item 5
    with pytest.warns(Warning, match="unreadable line"):
        again = gate.attack_shard(name, 0, 6)
    resumed = journal.read_text().splitlines()
    # the cut line is dropped from the journal once; only the two unfinished items are added
    assert resumed[:4] == lines[:4] and len(resumed) == 4 + 2, "finished items were recomputed"
    assert outcomes_without_time(again) == outcomes_without_time(first)
    gate.attack_shard(name, 6, 12)
    whole = Gate(settings).attack_outcomes(name)
    assert [o["index"] for o in whole] == list(range(12))
    assert not list((tmp_path / "cache" / "adversarial").glob("*.items-*.jsonl"))
    unsharded = Gate(tiny_settings(tiny_models, tmp_path / "plain", attack_size=12)).attack_outcomes(name)
    assert outcomes_without_time(whole) == outcomes_without_time(unsharded)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"executor": "ray", "no_cache": True}, "--executor ray with --no-cache"),
        ({"ray_address": "ray://x:10001"}, "--ray-address without --executor ray"),
        ({"ray_workers": 2}, "--ray-workers without --executor ray"),
        ({"executor": "ray", "ray_workers": 2, "ray_address": "ray://x:10001"}, "--ray-workers with --ray-address"),
    ],
)
def test_executor_options_that_make_no_sense_together(changes: dict[str, Any], expected: str) -> None:
    with pytest.raises(ValueError, match=expected) as error:
        opt.check_combinations(make_settings(**changes).values)
    assert "\n" not in str(error.value) and "fix:" in str(error.value)


@pytest.mark.slow
def test_in_process_imports_no_ray(tiny_models, tmp_path: Path) -> None:
    import subprocess
    import sys

    code = (
        "import sys; from miniature.core.gate import Gate; from miniature.core.settings import make_settings; "
        f"g = Gate(make_settings(reference={str(tiny_models['reference'])!r}, cache_dir={str(tmp_path)!r})); "
        "print(g.prepare()['executor'], 'ray' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(miniature.__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["inprocess", "False"], out.stdout + out.stderr


def test_executor_ray_without_ray_is_a_usage_error(pytester: pytest.Pytester, tiny_models, monkeypatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    result = pytester.runpytest(f"--reference={tiny_models['reference']}", "--executor=ray", "--co")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    lines = [line for line in result.stderr.lines if "needs Ray" in line]
    assert len(lines) == 1 and "pip install 'pytest-miniature[ray]'" in lines[0], result.stderr.lines


def test_the_plan_comes_from_the_registrations(tiny_models, tmp_path: Path) -> None:
    # What each characteristic reads is declared in its registration, a team's one included.
    from miniature import Characteristic
    from miniature.core.executors import plan
    from miniature.core.gate import Gate
    from miniature.core.registry import BUILTIN, Registry

    own = Characteristic("norm_agreement", "norm agreement", lambda gate, pair, stage: None, encodes=("holdout",))
    gate = Gate(tiny_settings(tiny_models, tmp_path), registry=Registry((*BUILTIN, own)))
    models = set(gate.names)
    encodings = lambda jobs: {(job.models[0], job.role) for job in jobs if job.kind == "encode"}  # noqa: E731
    assert encodings(plan(gate, ["norm_agreement"])) == {(m, "holdout") for m in models}
    assert encodings(plan(gate, ["data_distribution"])) == {
        (m, role) for m in models for role in ("train", "holdout", "challenge")
    }
    attack = plan(gate, ["adversarial_vulnerability"], workers=2)
    assert attack and all(job.kind == "attack" for job in attack)
    assert [(job.start, job.stop) for job in attack] == sorted((job.start, job.stop) for job in attack)
    assert attack[0].start == 0 and attack[-1].stop == gate.attack_items(gate.names[0])
    assert plan(gate, []) == []
