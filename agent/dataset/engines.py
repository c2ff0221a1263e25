"""Who runs a build's tasks: this machine's processes, or Ray (docs/dataset.md, "Engines").

Both engines run the same two functions of :mod:`agent.dataset.passes` on the same arguments
and hand back one result per item; only the scheduling differs, so both give the same parts.
:meth:`Engine.run` yields ``(index, result)`` as tasks finish, for the driver's progress bar.

* :class:`LocalEngine` (``--engine local``): a process pool of ``workers`` processes started
  with ``spawn`` (no copy of the driver's threads or open connections), each given the build's
  :class:`~agent.dataset.passes.Settings` once.
* :class:`RayEngine` (``--engine ray``): Ray Data maps the items as tasks
  (``ray.data.from_items(...).map(...)``) on the cluster at ``address`` or on a local Ray of
  ``workers`` CPUs it starts and stops itself. Ray's own writers are not used: they would choose
  file names and boundaries themselves.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import pickle
import secrets
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from types import TracebackType
from typing import Any, TypeVar

from agent.errors import UsageError

T = TypeVar("T")
R = TypeVar("R")
Task = Callable[[Any, T], R]

ENGINES = ("local", "ray")
#: Environment variables of boto3's standard configuration, given to Ray tasks.
_FORWARDED = ("AWS_",)

_settings: Any = None


def _init(settings: Any) -> None:
    global _settings  # noqa: PLW0603 - one per worker process, set once by the pool
    _settings = settings


def _call(fn: Task[T, R], item: T) -> R:
    return fn(_settings, item)


@functools.lru_cache(maxsize=1)
def _unpickled(token: str, shared: Any) -> Any:
    """The build's settings in a Ray worker, unpickled once per worker and build (``token``), not
    once per task: the ledger's known digests alone are megabytes for a large dataset."""
    import ray

    return pickle.loads(ray.get(shared))  # noqa: S301 - our own object


class Engine(ABC):
    """Runs ``fn(settings, item)`` for every item; :meth:`run` yields ``(index, result)``."""

    workers: int

    @abstractmethod
    def run(self, fn: Task[T, R], settings: Any, items: Sequence[T]) -> Iterator[tuple[int, R]]: ...

    def close(self) -> None:  # noqa: B027 - an engine with nothing to stop
        pass

    def __enter__(self) -> Engine:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class LocalEngine(Engine):
    def __init__(self, workers: int) -> None:
        self.workers = workers

    def run(self, fn: Task[T, R], settings: Any, items: Sequence[T]) -> Iterator[tuple[int, R]]:
        if not items:
            return
        context = multiprocessing.get_context("spawn")
        workers = min(self.workers, len(items))
        with ProcessPoolExecutor(
            workers, mp_context=context, initializer=_init, initargs=(settings,)
        ) as pool:
            pending: dict[Future[R], int] = {}
            queue = iter(enumerate(items))
            # Keep a bounded number of tasks in flight: results stream back as they finish.
            for index, item in queue:
                pending[pool.submit(_call, fn, item)] = index
                if len(pending) >= 4 * workers:
                    break
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    index = pending.pop(future)
                    yield index, future.result()
                    nxt = next(queue, None)
                    if nxt is not None:
                        pending[pool.submit(_call, fn, nxt[1])] = nxt[0]


class RayEngine(Engine):
    def __init__(self, workers: int, address: str | None = None) -> None:
        import ray

        self.workers = workers
        self._started = False
        self._temp: str | None = None
        if ray.is_initialized():
            return
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        kwargs: dict[str, Any] = {
            "include_dashboard": False,
            "log_to_driver": False,
            "configure_logging": False,
        }
        if address:
            kwargs["address"] = address
        else:
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
            self._temp = tempfile.mkdtemp(prefix="optin-ray-", dir="/tmp")  # AF_UNIX paths <= 107 bytes
            kwargs.update(address="local", num_cpus=workers, _temp_dir=self._temp)
        try:
            ray.init(**kwargs)
        except Exception as exc:
            where = address or "a local Ray"
            msg = (
                f"cannot start or reach {where} ({exc.__class__.__name__}). Fix: check --ray-address, or use "
                "--engine local"
            )
            raise UsageError(msg) from None
        self._started = True

    def run(self, fn: Task[T, R], settings: Any, items: Sequence[T]) -> Iterator[tuple[int, R]]:
        if not items:
            return
        import ray

        shared = ray.put(pickle.dumps(settings))
        token = secrets.token_hex(8)
        rows = [{"i": i, "job": pickle.dumps(item)} for i, item in enumerate(items)]

        def task(row: dict[str, Any]) -> dict[str, Any]:
            answer = fn(_unpickled(token, shared), pickle.loads(row["job"]))  # noqa: S301 - our own objects
            return {"i": row["i"], "out": pickle.dumps(answer)}

        blocks = max(1, min(len(rows), 8 * self.workers))
        # The tasks reach SRC and DEST with boto3's standard configuration, as the driver does: a Ray
        # started before (or elsewhere) has not got this process's environment.
        env = {k: v for k, v in os.environ.items() if k.startswith(_FORWARDED)}
        remote: dict[str, Any] = {"runtime_env": {"env_vars": env}} if env else {}
        pool = ray.data.TaskPoolStrategy(size=min(self.workers, blocks))
        data = ray.data.from_items(rows, override_num_blocks=blocks).map(task, compute=pool, **remote)
        for row in data.iter_rows():
            yield int(row["i"]), pickle.loads(row["out"])  # noqa: S301 - our own objects

    def close(self) -> None:
        if self._started:
            import shutil

            import ray

            ray.shutdown()
            self._started = False
            if self._temp:
                shutil.rmtree(self._temp, ignore_errors=True)


def engine(name: str, workers: int | None, address: str | None = None) -> Engine:
    """The engine ``--engine`` names, with ``--workers`` (default: this machine's CPUs)."""
    count = workers or os.cpu_count() or 1
    if count < 1:
        msg = f"--workers {count} is not a number of workers. Fix: give 1 or more"
        raise UsageError(msg)
    if name == "local":
        if address:
            msg = "--ray-address needs --engine ray"
            raise UsageError(msg)
        return LocalEngine(count)
    if name == "ray":
        return RayEngine(count, address)
    msg = f"--engine {name!r} is not one of {', '.join(ENGINES)}"
    raise UsageError(msg)


__all__ = ["ENGINES", "Engine", "LocalEngine", "RayEngine", "engine"]
