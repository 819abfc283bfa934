"""The bridge between the asyncio web server and the engine, which is neither thread-safe nor
async: one background thread owns the engine and runs `engine.step()` while there is work.

    HTTP handlers (event loop)                      engine thread
    ---------------------------                     ------------------------------------------
    await loop.call(fn)      -- command queue -->   between steps: fn(engine)  (add, abort, stats)
    async for out in handle  <-- call_soon_threadsafe --  outputs = engine.step(); deliver(outputs)

Every engine call happens on the engine thread, between steps, so the engine never sees two
callers at once. Outputs cross back with `loop.call_soon_threadsafe` (one call per step), into
the asyncio queue of the HTTP request that owns them. A handle that is closed before its samples
finish (client disconnect, error) aborts them, which frees their KV blocks at once.

If `engine.step()` raises (a bug; a bad request is refused before it reaches the engine), no
request may take the server down with it: the requests in flight end with EngineDead (their
clients get an error, never the exception text, which goes to the log), and the loop builds a
fresh engine with `engine_factory` and goes on serving the requests queued meanwhile. Without a
factory, or after MAX_FAILURES failures within FAILURE_WINDOW_S seconds (a crash loop), the loop
stays dead: `alive` is False, /health answers 503 and `serve` exits non-zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from llm_internals.inference.params import SamplingParams

T = TypeVar("T")
logger = logging.getLogger(__name__)
IDLE_WAIT_S = 0.5  # the engine thread rechecks its stop flag this often when idle
MAX_FAILURES = 3  # this many engine failures ...
FAILURE_WINDOW_S = 60.0  # ... within this many seconds: give up instead of restarting
FAILED_MESSAGE = "the engine failed while serving this request (see the server log); retry"
DEAD_MESSAGE = "the engine failed and is not running (see the server log)"


class EngineDead(RuntimeError):
    """The engine raised an unexpected error: the requests it was running are lost (the message
    is for clients, so it never carries the internal exception text)."""


@dataclass(frozen=True)
class EngineRequest:
    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams


class RequestHandle:
    """The outputs of one HTTP request's engine requests (several prompts, n samples each),
    merged into one asyncio queue. Iterate it for RequestOutputs; close() aborts what is left."""

    def __init__(self, loop: EngineLoop, requests: list[EngineRequest]) -> None:
        self._loop = loop
        self.requests = requests
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.unfinished = {(r.request_id, i) for r in requests for i in range(r.params.n)}
        self.closed = False
        self.epoch: int | None = None  # the engine (0 = first, 1 = after a restart) running it

    @property
    def finished(self) -> bool:
        return not self.unfinished

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._outputs()

    async def _outputs(self) -> AsyncIterator[Any]:
        async for batch in self.batches():
            for output in batch:
                yield output

    async def batches(self) -> AsyncIterator[list[Any]]:
        """The outputs in arrival order, as lists of everything that has arrived (one or more):
        a consumer that falls behind catches up in one go (a streaming response then sends
        several events in one write)."""
        while self.unfinished:
            batch = [await self.queue.get()]
            while not self.queue.empty():
                batch.append(self.queue.get_nowait())
            outputs = []
            for item in batch:
                if isinstance(item, BaseException):
                    raise item
                if item.finished:
                    self.unfinished.discard((item.request_id, item.index))
                outputs.append(item)
            yield outputs

    def close(self) -> None:
        """Abort every unfinished engine request of this handle (idempotent)."""
        if self.closed:
            return
        self.closed = True
        self._loop.release(self)
        pending = sorted({request_id for request_id, _ in self.unfinished})
        if pending:
            self._loop.call_soon(lambda engine: self._loop.abort(engine, pending))


class EngineLoop:
    """Owns the engine on a background thread; see the module docstring."""

    def __init__(self, engine: Any, engine_factory: Callable[[], Any] | None = None) -> None:
        self.engine = engine
        self.engine_factory = engine_factory
        self.epoch = 0  # engines built so far, minus one (changed on the engine thread only)
        self.failures: list[float] = []  # time.monotonic() of each engine failure
        self.aborted_requests = 0  # engine requests aborted by handles closed early
        self.error: BaseException | None = None  # set when the loop gave up
        self._commands: deque[tuple[Callable[[Any], Any], asyncio.Future[Any] | None]] = deque()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._event_loop: asyncio.AbstractEventLoop | None = None
        self._handles: dict[str, RequestHandle] = {}  # engine request id -> handle (loop side)

    # --- life cycle (called on the event loop) --------------------------------------------
    def start(self) -> None:
        self._event_loop = asyncio.get_running_loop()
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="engine-loop", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self.error is None

    @property
    def num_open_handles(self) -> int:
        return len(set(map(id, self._handles.values())))

    # --- commands (called on the event loop) ----------------------------------------------
    async def call(self, fn: Callable[[Any], T]) -> T:
        """Run fn(engine) on the engine thread between steps; its result or its exception."""
        if not self.alive:
            raise EngineDead(DEAD_MESSAGE)
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._commands.append((fn, future))
        self._wake.set()
        return await future

    def call_soon(self, fn: Callable[[Any], Any]) -> None:
        """Queue fn(engine) without waiting for it (safe from a cancelled task)."""
        self._commands.append((fn, None))
        self._wake.set()

    async def submit(self, requests: list[EngineRequest]) -> RequestHandle:
        """Add the requests to the engine (all or none); a handle streaming their outputs.
        Errors from add_request (a request that can never fit) propagate."""
        handle = RequestHandle(self, requests)
        for r in requests:
            self._handles[r.request_id] = handle

        def add_all(engine: Any) -> None:
            handle.epoch = self.epoch
            added = []
            try:
                for r in requests:
                    engine.add_request(r.request_id, r.prompt_token_ids, r.params)
                    added.append(r.request_id)
            except BaseException:
                for request_id in added:
                    engine.abort(request_id)
                raise

        try:
            await self.call(add_all)
        except BaseException:
            handle.closed = True
            self.release(handle)
            raise
        return handle

    def abort(self, engine: Any, request_ids: list[str]) -> None:
        """On the engine thread: abort those of request_ids the engine still runs, counting
        them (a request that finished meanwhile has nothing to abort and is not counted)."""
        for request_id in request_ids:
            if request_id in engine.requests:
                engine.abort(request_id)
                self.aborted_requests += 1

    def release(self, handle: RequestHandle) -> None:
        for r in handle.requests:
            if self._handles.get(r.request_id) is handle:
                del self._handles[r.request_id]

    # --- the engine thread ----------------------------------------------------------------
    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._step_while_running()
            except Exception as err:  # a bug in the engine: fail its requests, loudly
                logger.exception("the engine failed; the requests it was running are lost")
                failed, self.epoch = self.epoch, self.epoch + 1
                self._to_event_loop(self._fail, failed, EngineDead(FAILED_MESSAGE))
                if not self._restart():
                    self.error = err
                    self._to_event_loop(self._fail, None, EngineDead(DEAD_MESSAGE))
                    return

    def _step_while_running(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            self._run_commands()
            if self.engine.has_unfinished():
                outputs = self.engine.step()
                if outputs:
                    self._to_event_loop(self._deliver, outputs)
            elif not self._commands:
                self._wake.wait(IDLE_WAIT_S)

    def _restart(self) -> bool:
        """A fresh engine from the factory, unless there is none or the engine keeps failing."""
        now = time.monotonic()
        self.failures = [t for t in self.failures if now - t < FAILURE_WINDOW_S] + [now]
        if self.engine_factory is None or len(self.failures) >= MAX_FAILURES:
            return False
        self.engine = None  # free the old KV pool before the new one is allocated
        self.aborted_requests = 0  # counted against the new engine's counters
        try:
            self.engine = self.engine_factory()
        except Exception:
            logger.exception("could not build a fresh engine")
            return False
        logger.warning("a fresh engine is serving (restart %d)", self.epoch)
        return True

    def _run_commands(self) -> None:
        while self._commands:
            fn, future = self._commands.popleft()
            try:
                result = fn(self.engine)
            except Exception as err:
                if future is not None:
                    self._to_event_loop(_set_exception, future, err)
                continue
            if future is not None:
                self._to_event_loop(_set_result, future, result)

    def _to_event_loop(self, fn: Callable[..., Any], *args: Any) -> None:
        # RuntimeError: the event loop has closed, the server is shutting down
        with contextlib.suppress(RuntimeError):
            self._event_loop.call_soon_threadsafe(fn, *args)

    # --- back on the event loop -----------------------------------------------------------
    def _deliver(self, outputs: list[Any]) -> None:
        for output in outputs:
            handle = self._handles.get(output.request_id)
            if handle is not None:
                handle.queue.put_nowait(output)

    def _fail(self, epoch: int | None, error: BaseException) -> None:
        """End the handles whose requests ran on engine `epoch` (None: every handle, and the
        commands that will never run, when the loop gave up)."""
        for handle in set(self._handles.values()):
            if epoch is None or handle.epoch == epoch:
                handle.queue.put_nowait(error)
        if epoch is not None:
            return
        while self._commands:  # the loop gave up: queued commands will never run
            _, future = self._commands.popleft()
            if future is not None:
                _set_exception(future, error)


def _set_result(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():
        future.set_result(result)


def _set_exception(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)
