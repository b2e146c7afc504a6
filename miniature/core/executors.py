"""Where a gate's per-item work runs: in this process (the default) or as Ray tasks.

The per-item work of a gate is a set of independent jobs, each writing its outputs into the
:class:`~miniature.core.cache.OutputCache` under the same fingerprint keys, whoever computes
it: the encodings of each (model, data role, stage) and the attacks of each (item range) of
the attack sample, against every attacked model. :func:`plan` lists the jobs the selected
characteristics need; an executor runs them; the comparisons then read the cache exactly
as an in-process run does, so the figures are the same.

* ``inprocess`` (default): nothing runs ahead; each output is computed when a comparison
  first asks for it, as always. Ray is not imported.
* ``ray``: every job (QA's predicted answers too) is a Ray task asking for one CPU (and one GPU where the device is
  CUDA); inside the worker it rebuilds the gate from the same settings and data, runs torch
  on one thread, and computes through the gate's own methods (:meth:`Gate.outputs`,
  :meth:`Gate.attack_shard`) into the same cache folder, which must therefore be visible to
  every worker (checked at start-up by :func:`check_shared_cache`). A task whose worker dies
  is retried (``max_retries``); an attack shard resumes from its per-item journal.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import uuid
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from miniature.core import settings as opt
from miniature.core.cache import fingerprint
from miniature.core.loading import ENCODER
from miniature.errors import MiniatureError, NotApplicable

if TYPE_CHECKING:  # pragma: no cover
    from miniature.core.cache import OutputCache
    from miniature.core.data import TaskData
    from miniature.core.registry import Registry


class JobHost(Protocol):
    """What plans and runs the jobs: the gate (this module does not import it; the gate
    hands itself in, and a factory that builds one in a worker)."""

    settings: opt.Settings
    registry: Registry
    cache: OutputCache

    @property
    def task(self) -> str: ...
    @property
    def names(self) -> list[str]: ...
    @property
    def data(self) -> TaskData: ...

    def stages(self) -> list[str | None]: ...
    def spec(self, name: str, stage: str | None = None) -> Any: ...
    def attack_items(self, name: str) -> int: ...
    def outputs(self, name: str, role: str, *, stage: str | None = None) -> Any: ...
    def correct(self, name: str) -> Any: ...
    def attack_shard(self, name: str, start: int, stop: int) -> Any: ...


#: builds the host a worker computes through, from the driver's settings and data
HostFactory = Callable[..., JobHost]

__all__ = ["Execution", "Job", "plan", "run_job", "run_jobs", "check_shared_cache", "RAY_MISSING"]

#: attack shards per worker: more, smaller shards even out items of unequal cost
SHARDS_PER_WORKER = 2
#: retries of a task whose worker died (a finished attack item is kept in its journal)
MAX_RETRIES = 3

#: the environment variable Ray's raylet reads for its workers' niceness (default 15)
WORKER_NICENESS = "RAY_worker_niceness"

RAY_MISSING = (
    "--executor ray needs Ray, which is not installed; fix: pip install "
    "'pytest-miniature[ray]' (or use --executor inprocess)"
)


@dataclass(frozen=True)
class Job:
    """One independent piece of per-item work: an encoding or an attack shard."""

    kind: str  # "encode", "answers" (QA's predicted answers) or "attack"
    models: tuple[str, ...]
    role: str | None = None
    stage: str | None = None
    start: int = 0
    stop: int = 0

    @property
    def label(self) -> str:
        if self.kind == "encode":
            return f"encode {self.models[0]} on the {self.role} data ({self.stage or 'task'})"
        if self.kind == "answers":
            return f"answer the {self.role} questions with {self.models[0]}"
        return f"attack items {self.start}-{self.stop} of {', '.join(self.models)}"


@dataclass
class Execution:
    """What ran where: recorded in the JSON report (``execution``)."""

    executor: str = "inprocess"
    workers: int = 1
    address: str | None = None
    jobs: int = 0
    seconds: float = 0.0
    worker_processes: int = 0
    errors: list[str] = field(default_factory=list)
    #: each job's label, seconds in its worker and that worker's process id, in finishing order
    timings: list[tuple[str, float, int]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def plan(gate: "JobHost", characteristics: Iterable[str] | None = None, *, workers: int = 1) -> list[Job]:
    """The jobs the ``characteristics`` (default: the gate's registry) need: attack shards
    first (the longest), then one encoding per model, data role and stage. A model the
    attack does not apply to gets no shard (its comparison says why, as in-process)."""
    names = list(characteristics) if characteristics is not None else gate.registry.names
    chosen = [gate.registry[name] for name in names if name in gate.registry]
    jobs: list[Job] = []
    if any(c.attacks for c in chosen) and gate.task == "classification":
        attacked: list[str] = []
        sizes: set[int] = set()
        for model in gate.names:
            try:
                sizes.add(gate.attack_items(model))
                attacked.append(model)
            except NotApplicable:
                continue
        if attacked and sizes:
            n = sizes.pop()
            size = max(1, math.ceil(n / max(1, workers * SHARDS_PER_WORKER)))
            jobs += [
                Job("attack", tuple(attacked), start=start, stop=min(start + size, n)) for start in range(0, n, size)
            ]
    wanted: list[tuple[str, str | None]] = []
    for characteristic in chosen:
        if characteristic.answers and gate.task == "qa":
            continue  # QA's prediction errors come from its answers, not the encodings
        for role in characteristic.encodes:
            for stage in gate.stages() if characteristic.staged else [None]:
                stage = None if stage == ENCODER else stage
                if (role, stage) not in wanted:
                    wanted.append((role, stage))
    jobs += [Job("encode", (model,), role=role, stage=stage) for model in gate.names for role, stage in wanted]
    if any(c.answers for c in chosen) and gate.task == "qa":  # QA's answers, one job per model
        jobs += [Job("answers", (model,), role="test") for model in gate.names]
    return jobs


# -- the worker side -------------------------------------------------------------------------

#: the gate a worker process built, by settings fingerprint: its models load once per worker
#: (for every job of the run it gets), the last run's only
WORKER_GATES: dict[str, Any] = {}


def run_job(
    make_host: HostFactory, values: dict[str, Any], data: "TaskData | None", job: Job, threads: int = 1
) -> dict[str, Any]:
    """Run one job in this process (a Ray worker), through the gate's own methods.

    ``make_host(settings, data=...)`` builds the gate in the worker (the driver passes its
    gate's class). Warnings are returned for the driver to show; a job the gate finds
    inapplicable returns its reason (the comparison reports it).
    """
    import torch

    torch.set_num_threads(threads)
    started = time.perf_counter()
    key = fingerprint(sorted((flag, str(value)) for flag, value in values.items()))
    if key not in WORKER_GATES:
        WORKER_GATES.clear()  # another run's gate: free its models first
        WORKER_GATES[key] = make_host(opt.Settings.from_flags(values), data=data)
    gate = WORKER_GATES[key]
    problem = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if job.kind == "encode":
                gate.outputs(job.models[0], job.role, stage=job.stage)
            elif job.kind == "answers":
                gate.correct(job.models[0])  # QA: the answers are cached, then compared
            else:
                for model in job.models:
                    gate.attack_shard(model, job.start, job.stop)
        except (NotApplicable, MiniatureError) as error:
            problem = str(error)
    return {
        "job": job,
        "problem": problem,
        "pid": os.getpid(),
        "node": _node(),
        "seconds": time.perf_counter() - started,
        "package": str(Path(__file__).parent.parent),  # the miniature package folder
        "warnings": [(w.category, str(w.message)) for w in caught],
    }


def probe_cache(root: str, token: str) -> dict[str, Any]:
    """In a worker: can it read the driver's token file and write beside it?"""
    path = Path(root) / f".executor-probe-{token}"
    seen = path.is_file() and path.read_text("utf-8") == token
    writable = False
    if seen:
        try:
            mark = Path(root) / f".executor-probe-{token}-{os.getpid()}"
            mark.write_text(token, "utf-8")
            mark.unlink()
            writable = True
        except OSError:
            pass
    return {"node": _node(), "seen": seen, "writable": writable}


def _node() -> str:
    import socket

    return socket.gethostname()


# -- the driver side -------------------------------------------------------------------------


def run_jobs(
    gate: "JobHost", characteristics: Iterable[str] | None = None, *, make_host: HostFactory | None = None
) -> Execution:
    """Run the jobs of ``characteristics`` (see :func:`plan`) as the gate's ``--executor``
    says; ``inprocess`` runs nothing ahead (and imports no Ray). ``make_host`` builds the
    gate in each worker (default: the driver gate's own class)."""
    settings = gate.settings
    if settings.executor != "ray":
        return Execution()
    return RayExecutor(settings.ray_address, settings.ray_workers).run(
        gate, characteristics, make_host=make_host or type(gate)
    )


def check_shared_cache(ray: Any, root: Path) -> None:
    """Every node's workers must see the driver's cache folder (one probe task per node);
    a :class:`MiniatureError` in one line naming the node and the fix otherwise."""
    token = uuid.uuid4().hex
    marker = root / f".executor-probe-{token}"
    marker.write_text(token, "utf-8")
    try:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        probe = ray.remote(num_cpus=0)(probe_cache)
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        answers = ray.get(
            [
                probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(
                    str(root), token
                )
                for n in nodes
            ]
        )
    finally:
        marker.unlink(missing_ok=True)
    for answer in answers:
        if not answer["seen"] or not answer["writable"]:
            what = "cannot see" if not answer["seen"] else "cannot write to"
            raise MiniatureError(
                f"a Ray worker on node {answer['node']!r} {what} the cache dir {str(root)!r}; fix: put "
                f"{opt.CACHE_DIR} on storage every node mounts at the same path (NFS, a mounted "
                "bucket; see the README's 'Running on Ray')"
            )


class RayExecutor:
    """Runs jobs as Ray tasks on a local cluster it starts, or on ``address``."""

    def __init__(self, address: str | None, workers: int | None) -> None:
        self.address = address
        self.workers = workers

    def start(self) -> tuple[Any, bool]:
        """Ray, connected (``True`` when this call started it, so it shuts it down after)."""
        try:
            import ray
        except ImportError:
            raise MiniatureError(RAY_MISSING) from None
        if ray.is_initialized():
            return ray, False
        package_root = str(Path(__file__).resolve().parents[2])  # this miniature for local workers
        path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
        options: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        if self.address:
            options["address"] = self.address
        else:
            options["num_cpus"] = self.workers or os.cpu_count() or 1
            options["runtime_env"] = {"env_vars": {"PYTHONPATH": path}}
        # Ray runs workers at niceness 15 by default: on a machine shared with other work they
        # would yield to every other process, while the in-process run does not; start the
        # local cluster's workers at the driver's priority (RAY_worker_niceness set wins)
        niceness = os.environ.get(WORKER_NICENESS)
        if not self.address:
            os.environ.setdefault(WORKER_NICENESS, "0")
        try:
            ray.init(**options)
        except (ConnectionError, RuntimeError, ValueError, ray.exceptions.RayError) as error:
            where = self.address or "a local cluster"
            raise MiniatureError(
                f"could not start Ray on {where} ({str(error).splitlines()[0]}); fix: "
                f"check {opt.RAY_ADDRESS} (ray status shows the cluster), or run with "
                f"{opt.EXECUTOR} inprocess"
            ) from None
        finally:
            if niceness is None:
                os.environ.pop(WORKER_NICENESS, None)
        return ray, True

    def run(
        self, gate: "JobHost", characteristics: Iterable[str] | None = None, *, make_host: HostFactory | None = None
    ) -> Execution:
        """Plan the jobs for the cluster's size, run them, and say what ran where."""
        ray, started_here = self.start()
        began = time.perf_counter()
        try:
            return self._run(ray, gate, characteristics, began, make_host or type(gate))
        except (ray.exceptions.RayError, ConnectionError, TimeoutError) as error:
            # a Ray system process (GCS, raylet) died under the driver: one line, not a traceback
            first = (str(error).strip().splitlines() or [""])[0]
            raise MiniatureError(
                f"Ray on {self.address or 'the local cluster'} stopped answering ({type(error).__name__}: "
                f"{first}; has a Ray system process, the GCS or a raylet, died?); fix: restart Ray "
                f"(ray status shows the cluster), or run with {opt.EXECUTOR} inprocess"
            ) from None
        finally:
            if started_here:
                with contextlib.suppress(Exception):  # a dead cluster may not shut down cleanly
                    ray.shutdown()

    def _run(
        self, ray: Any, gate: "JobHost", characteristics: Iterable[str] | None, began: float, make_host: HostFactory
    ) -> Execution:
        """:meth:`run` on a connected Ray."""
        resources = ray.cluster_resources()
        use_gpu = gate.settings.device == "cuda" or (gate.settings.device == "auto" and resources.get("GPU", 0) >= 1)
        workers = int(resources.get("GPU", 0)) if use_gpu else int(resources.get("CPU", 1))
        workers = max(1, workers)
        jobs = plan(gate, characteristics, workers=workers)
        execution = Execution(executor="ray", workers=workers, jobs=len(jobs), address=self.address or "local")
        root = gate.cache.root
        if root is None:  # refused by check_combinations; a Gate built by hand may still get here
            raise MiniatureError(
                f"{opt.EXECUTOR} ray needs the cache: the workers hand their "
                f"outputs over through it; fix: drop {opt.NO_CACHE}"
            )
        check_shared_cache(ray, root.resolve())
        if gate.settings.finetune:  # fine-tune once, here, before the workers load the models
            for name in gate.names:
                gate.spec(name)
        values = dict(gate.settings.values)
        values[opt.CACHE_DIR] = root.resolve()  # the workers' folder is not the driver's
        data = ray.put(gate.data)
        task = ray.remote(run_job).options(num_cpus=1, num_gpus=1 if use_gpu else 0, max_retries=MAX_RETRIES)
        pending = {task.remote(make_host, values, data, job): job for job in jobs}
        pids: set[tuple[str, int]] = set()
        from tqdm.auto import tqdm

        bar = tqdm(
            total=len(pending), desc=f"ray jobs [{workers} workers]", unit="job", leave=False, disable=None
        )  # shown on a terminal only
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            job = pending.pop(done[0])
            bar.update(1)
            bar.set_postfix_str(job.label[:60], refresh=False)
            try:
                answer = ray.get(done[0])
            except Exception as error:  # noqa: BLE001 - a task's failure, after its retries
                last = (str(error).strip().splitlines() or [type(error).__name__])[-1]
                raise MiniatureError(
                    f"Ray task '{job.label}' failed ({last}); fix: see the worker's "
                    f"log (ray logs), or run with {opt.EXECUTOR} inprocess"
                ) from None
            pids.add((answer["node"], answer["pid"]))
            execution.timings.append((job.label, round(answer["seconds"], 3), answer["pid"]))
            if answer["problem"]:
                execution.errors.append(f"{job.label}: {answer['problem']}")
            for category, message in answer["warnings"]:  # miniature's own: the data's, the cache's
                if isinstance(category, type) and category.__module__.startswith("miniature"):
                    warnings.warn(category(message), stacklevel=2)
        bar.close()
        execution.worker_processes = len(pids)
        execution.seconds = round(time.perf_counter() - began, 3)
        return execution
