"""The in-process teachers (`hf`, `vllm`) spread over a Ray cluster: one Ray actor per model copy.

Run as: nift distill --run-dir runs/x --teacher.backend vllm --teacher.model MODEL --ray.address auto

The driver (the `nift distill` process) keeps everything that decides *what* is asked and *what is kept*: it
tokenizes and keys every request, skips those already in the store, cuts the rest into chunks (length-sorted, as in
one process) and hands them to the workers, at most two per worker so none waits for the next. Each chunk's results
come back to the driver, which commits them to the one SQLite store before anything else; the workers hold no
state worth keeping. So a worker that dies loses only the chunk it was generating:

- Ray restarts it (`max_restarts`, the actor's constructor runs again on the same or another node) and re-runs its
  unfinished tasks on the new one (`max_task_retries=-1`): Ray's own actor fault tolerance, no home-made scheduler;
- a worker that dies more than `max_restarts` times is dropped, and its chunks go back to the queue for the others;
  a chunk lost with two dropped workers is reported as failed (it probably kills any worker: lower the batch size);
- a stored result is never sent again: chunks are cut from the requests missing from the store, and a chunk's
  results are delivered once (Ray returns a task's value once, however often it was retried);
- the driver dying is the single-process case: everything returned so far is stored, the same command resumes.

Requests are keyed exactly as in one process (the workers report their dtype), so a run may switch between one
process and a cluster and keep its store. Every node needs nift installed and the model reachable at the same path
(a hub id, or a shared filesystem).
"""

from __future__ import annotations

import os
from collections import Counter, deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nift.errors import ConfigError, NiftError, missing_package
from nift.llm.backends import make_backend
from nift.llm.backends.hf import TokenizerBackend
from nift.llm.config import BackendConfig, RayConfig
from nift.llm.types import RequestFailed, Result

LOCAL_BACKENDS = ("hf", "vllm")
IN_FLIGHT_PER_WORKER = 2  # one generating, one waiting, so a worker never idles on the driver's round trip
LOCAL_OBJECT_STORE_BYTES = 256 * 1024 * 1024  # chunks are text: a small store spares the machine's shared memory


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise missing_package("ray", "ray", "--ray.address (distillation on a Ray cluster)") from None
    return ray


class TeacherWorker:
    """One model copy in a Ray actor. Holds nothing the run needs to keep: killing it loses one chunk's work."""

    def __init__(self, cfg: dict[str, Any], threads: int):
        cfg_ = BackendConfig.model_validate(cfg)
        if cfg_.device is None or cfg_.device == "cpu":
            import torch

            torch.set_num_threads(threads)
        self.backend = make_backend(cfg_, log=lambda *_: None)

    def describe(self) -> dict[str, Any]:
        import ray

        return {"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id()[:8],
                "extra_params": self.backend.extra_params(), "device": getattr(self.backend, "device", "cuda")}

    def load(self) -> int:
        self.backend.load()
        return os.getpid()

    def generate(self, payloads: list[dict[str, Any]]) -> tuple[int, list[Result]]:
        return os.getpid(), self.backend.generate(payloads)


def plan_workers(ray_cfg: RayConfig, teacher: BackendConfig, resources: dict[str, float]) -> tuple[int, float, float]:
    """(workers, GPUs each, CPUs each) for a cluster with these total resources; a clear error when it cannot fit."""
    gpus, cpus = resources.get("GPU", 0.0), resources.get("CPU", 0.0)
    per_gpu = ray_cfg.gpus_per_worker
    if per_gpu is None:
        per_gpu = (teacher.tensor_parallel if teacher.backend == "vllm" else 1) if gpus else 0.0
    if teacher.backend == "vllm" and not per_gpu:
        raise ConfigError("the vllm teacher needs GPUs and " + ("the Ray cluster has none" if not gpus else
                          "--ray.gpus-per-worker is 0") + "; use --teacher.backend hf for CPU workers")
    if teacher.backend == "vllm" and per_gpu != teacher.tensor_parallel:
        raise ConfigError(f"--ray.gpus-per-worker {per_gpu:g} must equal --teacher.tensor-parallel "
                          f"{teacher.tensor_parallel}: each vllm worker spreads one model copy over its GPUs")
    per_cpu = ray_cfg.cpus_per_worker
    fit = int(gpus // per_gpu) if per_gpu else int(cpus // per_cpu)
    n = ray_cfg.workers or fit
    if n < 1 or n > fit:
        have = f"{gpus:g} GPUs" if per_gpu else f"{cpus:g} CPUs"
        each = f"{per_gpu:g} GPU(s)" if per_gpu else f"{per_cpu:g} CPU(s)"
        raise ConfigError(f"the Ray cluster has {have}: {max(n, 1)} worker(s) of {each} each do not fit; lower "
                          "--ray.workers or --ray.gpus-per-worker / --ray.cpus-per-worker, or add nodes")
    return n, float(per_gpu), float(per_cpu)


class RayPoolBackend(TokenizerBackend):
    """The driver's side: tokenizer, keys and chunks here, generation on the workers (`generate_chunks`)."""

    def __init__(self, cfg: BackendConfig, ray_cfg: RayConfig, log=print):
        if cfg.backend not in LOCAL_BACKENDS:
            raise ConfigError(
                f"--ray.address spreads the in-process teachers (hf, vllm) over a cluster; the {cfg.backend} teacher "
                "is an API: one driver already keeps it busy (--teacher.concurrency), and several machines can share "
                "the work with --shard I/N and `nift cache merge` (docs/scaling.md)")
        if not ray_cfg.address:
            raise ConfigError("RayPoolBackend needs --ray.address (local, auto, HOST:PORT or ray://HOST:PORT)")
        _ray()
        super().__init__(cfg, log)
        self.family = cfg.backend  # keys shared with the same teacher run in one process
        self.ray_cfg = ray_cfg
        self._workers: list[Any] = []
        self._alive: list[bool] = []
        self._pids: list[int] = []
        self._extra: dict[str, Any] | None = None
        self._started_ray = False
        self.stats: dict[str, Any] = {"address": ray_cfg.address, "workers": 0, "chunks": 0, "restarts": 0,
                                      "requeued_chunks": 0, "dropped_workers": 0, "nodes": 0}

    # -------------------------------------------------------------------------------------- the driver side

    @property
    def chunk_size(self) -> int:
        """The unit of work a dying worker can lose; as in one process (vllm wants large chunks)."""
        if self.cfg.backend == "vllm":
            from nift.llm.backends.vllm_backend import MIN_CHUNK

            return max(self.cfg.batch_size, MIN_CHUNK)
        return self.cfg.batch_size

    def sort_key(self, payload: dict[str, Any]) -> int:
        return len(self.encode(payload))  # not cached: the driver never generates, the workers encode again

    def extra_params(self) -> dict[str, Any]:
        if self._extra is None:
            if self.cfg.dtype != "auto":  # the workers' dtype is known without asking them
                self._extra = {"dtype": self.cfg.dtype}
            else:
                self._start()
        return dict(self._extra or {})

    def _start(self) -> None:
        if self._workers:
            return
        self._connect()
        try:
            self._spawn()
        except BaseException:
            self.close()  # a library caller keeps no half-started cluster
            raise

    def _connect(self) -> None:
        ray = _ray()
        address = self.ray_cfg.address
        if ray.is_initialized():  # a caller's own session (a notebook): used as it is, and left running
            return
        # "local" is Ray's own word for a new private cluster on this machine, even where one already runs. Workers'
        # own output (loading bars, warnings) stays in their logs (/tmp/ray/session_latest/logs on each node); what
        # the run needs to say comes back through the driver. The workers run the driver's own copy of nift (Ray
        # ships it to every node); its dependencies (torch, transformers, ...) must be installed there.
        import nift

        kwargs: dict[str, Any] = {"address": address, "include_dashboard": False, "configure_logging": False,
                                  "log_to_driver": False,
                                  "runtime_env": {"py_modules": [str(Path(nift.__file__).parent)]}}
        if address == "local":
            kwargs.update(num_cpus=self.ray_cfg.local_cpus, object_store_memory=LOCAL_OBJECT_STORE_BYTES)
        try:
            ray.init(**kwargs)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise NiftError(f"could not reach the Ray cluster at --ray.address {address}: {str(e).rstrip('.')}. "
                            "Start it with `ray start --head` (and `ray start --address HEAD:6379` on the other "
                            "nodes), or use --ray.address local") from None
        self._started_ray = True

    def _spawn(self) -> None:
        ray = _ray()
        resources = ray.cluster_resources()
        n, per_gpu, per_cpu = plan_workers(self.ray_cfg, self.cfg, resources)
        worker_cfg = self.cfg.model_copy(update={"device": "cuda" if per_gpu else "cpu"}).model_dump()
        actor = ray.remote(TeacherWorker).options(
            num_gpus=per_gpu, num_cpus=per_cpu, max_restarts=self.ray_cfg.max_restarts, max_task_retries=-1)
        self.log(f"[ray] cluster {self.ray_cfg.address}: {resources.get('CPU', 0):g} CPUs, "
                 f"{resources.get('GPU', 0):g} GPUs on {len(ray.nodes())} node(s); starting {n} {self.cfg.backend} "
                 f"worker(s) of {self.cfg.model} ({per_gpu:g} GPU, {per_cpu:g} CPU each)")
        self._workers = [actor.remote(worker_cfg, max(1, int(per_cpu))) for _ in range(n)]
        self._alive = [True] * n
        try:
            infos = ray.get([w.describe.remote() for w in self._workers])
        except ray.exceptions.RayError as e:
            raise NiftError(f"a Ray worker could not start the {self.cfg.backend} teacher {self.cfg.model!r}: "
                            f"{_cause(e)}") from None
        extras = {repr(sorted(i["extra_params"].items())) for i in infos}
        if len(extras) > 1:
            raise NiftError(f"the Ray workers disagree on generation settings ({', '.join(sorted(extras))}): mixed "
                            "GPU types give different results; set --teacher.dtype explicitly")
        self._pids = [i["pid"] for i in infos]
        self._extra = infos[0]["extra_params"]
        self.stats.update(workers=n, nodes=len({i["node"] for i in infos}), gpus_per_worker=per_gpu,
                          cpus_per_worker=per_cpu)
        for k, i in enumerate(infos):
            self.log(f"[ray] worker {k} ready on node {i['node']} (pid {i['pid']}, {i['device']})")

    def load(self) -> None:
        """Start the workers and load a model copy on each (the engine calls this before its progress bar, and only
        when something is left to generate)."""
        self._start()
        ray = _ray()
        try:
            ray.get([w.load.remote() for w in self._workers])
        except ray.exceptions.RayError as e:
            self.close()
            raise NiftError(f"a Ray worker could not load the {self.cfg.backend} teacher {self.cfg.model!r}: "
                            f"{_cause(e)}") from None
        self.log(f"[ray] {len(self._workers)} model copies loaded")

    # ----------------------------------------------------------------------------------------- the pool

    def generate_chunks(
        self, chunks: list[list[dict[str, Any]]],
    ) -> Iterator[tuple[int, list[Result] | Exception]]:
        """Every chunk to the workers, each yielded (to be stored) the moment it returns."""
        if not chunks:
            return
        self._start()
        ray = _ray()
        queue = deque(range(len(chunks)))
        in_flight: dict[Any, tuple[int, int]] = {}  # task -> (chunk, worker)
        load = Counter()
        lost: Counter = Counter()  # chunk -> dropped workers it was on
        error: BaseException | None = None

        def dispatch() -> None:
            while queue and error is None:  # always to the least loaded worker: chunks spread evenly
                free = [w for w in range(len(self._workers)) if self._alive[w] and load[w] < IN_FLIGHT_PER_WORKER]
                if not free:
                    return
                w = min(free, key=lambda w: load[w])
                i = queue.popleft()
                in_flight[self._workers[w].generate.remote(chunks[i])] = (i, w)
                load[w] += 1

        dispatch()
        while in_flight:
            done, _ = ray.wait(list(in_flight), num_returns=1)
            i, w = in_flight.pop(done[0])
            load[w] -= 1
            try:
                pid, results = ray.get(done[0])
            except ray.exceptions.RayActorError as e:
                # Ray gave up on this worker (more than max_restarts deaths): its chunks go to the others.
                if self._alive[w]:
                    self._alive[w] = False
                    self.stats["dropped_workers"] += 1
                    self.log(f"[ray] worker {w} dropped after {self.ray_cfg.max_restarts} restart(s): "
                             f"{str(e).splitlines()[0]}")
                lost[i] += 1
                if lost[i] >= 2:
                    yield i, RequestFailed(f"generation killed {lost[i]} Ray workers; it may exhaust memory (lower "
                                           "--teacher.batch-size)")
                elif error is None:
                    queue.appendleft(i)
                    self.stats["requeued_chunks"] += 1
                if not any(self._alive):
                    raise NiftError(
                        f"every Ray worker died ({self.stats['restarts']} restarts); the results that came back "
                        "are stored: run the same command to continue") from None
            except ray.exceptions.RayTaskError as e:
                # An error inside generate (a bug, out of memory): stop handing out work, store what is in flight.
                error = error or e
            else:
                if pid != self._pids[w]:
                    self.stats["restarts"] += 1
                    self.log(f"[ray] worker {w} was restarted (pid {self._pids[w]} -> {pid}); its unfinished chunk "
                             "was generated again")
                    self._pids[w] = pid
                self.stats["chunks"] += 1
                yield i, results
            dispatch()
        if error is not None:
            cause = getattr(error, "cause", None)
            if isinstance(cause, NiftError):
                raise type(cause)(str(cause)) from None
            raise error.as_instanceof_cause() if hasattr(error, "as_instanceof_cause") else error

    def close(self) -> None:
        if not self._workers and not self._started_ray:
            return
        ray = _ray()
        for w in self._workers:
            ray.kill(w)
        self._workers = []
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False
        s = self.stats
        if s["workers"]:
            self.log(f"[ray] {s['chunks']} chunks on {s['workers']} worker(s) over {s['nodes']} node(s); "
                     f"{s['restarts']} restart(s), {s['requeued_chunks']} chunk(s) re-queued, "
                     f"{s['dropped_workers']} worker(s) dropped")


def _cause(e: BaseException) -> str:
    """The user-facing line of a Ray error (the worker's own exception where there is one)."""
    cause = getattr(e, "cause", None)
    inner = getattr(cause, "cause", None) if cause is not None else None
    for c in (inner, cause):
        if isinstance(c, BaseException) and not hasattr(c, "traceback_str"):
            return f"{type(c).__name__}: {c}"
    lines = [x for x in str(e).splitlines() if x.strip()]
    return lines[-1] if lines else type(e).__name__

