"""The POST's fast path: plain contact requests accepted from the event loop, in groups.

A plain request (a valid phone or WhatsApp body, no Idempotency-Key, a key the process has
seen) is prepared on the loop, where it costs no thread. Requests of one account then queue
here, and the first free slot takes the whole queue to a worker thread as one batch: the rate
limit for every request of the batch (one Redis round trip per key while all fit), the
acceptance (one statement on PostgreSQL) and the publish of the accepted contacts (one
pipeline). So a burst pays one thread hop, one transaction and one publish per batch rather
than per request. No timer: an idle account's request goes at once, alone; batches form only
under load, while a slot is busy. Two slots per account, as in `GroupAcceptor`, let a batch be
sent while the other waits for its commit.

Every other request takes the ordinary path (`ContactService.submit` on a thread), and a
refusal is answered there too (`ContactService.settle`), so both paths give the same answers.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field

from starlette.concurrency import run_in_threadpool

from api_stub.ratelimit import RateLimited, RateLimiter
from worker.app.contacts import Acceptance, ContactService, Prepared, Reply

Outcome = Acceptance | BaseException


@dataclass(eq=False)
class _Request:
    rate_key: str
    prepared: Prepared
    answer: asyncio.Future[Outcome]


@dataclass(eq=False)
class _Account:
    running: int = 0
    queue: list[_Request] = field(default_factory=list)


class FastAccept:
    def __init__(
        self,
        service: ContactService,
        limiter: RateLimiter,
        *,
        in_flight: int = 2,
        max_batch: int = 100,
    ) -> None:
        self.service = service
        self.limiter = limiter
        self.in_flight = in_flight
        self.max_batch = max_batch
        self._accounts: dict[int, _Account] = {}
        self._drains: set[asyncio.Task[None]] = set()

    async def submit(self, rate_key: str, prepared: Prepared) -> Reply:
        """Count the request against its key's rate limit and accept it; the reply, or the
        error a refusal raises (RateLimited, or the service's DomainError)."""
        account_id = prepared.contact.account_id
        state = self._accounts.get(account_id)
        if state is None:
            state = self._accounts[account_id] = _Account()
        request = _Request(rate_key, prepared, asyncio.get_running_loop().create_future())
        state.queue.append(request)
        if state.running < self.in_flight:
            state.running += 1
            drain = asyncio.create_task(self._drain(account_id, state))
            self._drains.add(drain)  # a reference, so the task is not collected mid-run
            drain.add_done_callback(self._drains.discard)
        outcome = await request.answer
        if outcome is Acceptance.ACCEPTED:
            return prepared.reply
        if isinstance(outcome, RateLimited):
            raise outcome
        # A refusal: which one takes a read of the database, off the loop.
        return await run_in_threadpool(self.service.settle, prepared, outcome)

    async def _drain(self, account_id: int, state: _Account) -> None:
        try:
            while state.queue:
                batch = state.queue[: self.max_batch]
                del state.queue[: self.max_batch]
                try:
                    outcomes = await run_in_threadpool(self._run, batch)
                except BaseException as exc:  # every member's answer
                    for request in batch:
                        if request.answer.done():
                            continue
                        if isinstance(exc, asyncio.CancelledError):
                            request.answer.cancel()
                        else:
                            request.answer.set_exception(exc)
                    raise
                for request, outcome in zip(batch, outcomes, strict=True):
                    if not request.answer.done():  # its client may have gone
                        request.answer.set_result(outcome)
        finally:
            state.running -= 1
            if not state.running and not state.queue:
                self._accounts.pop(account_id, None)

    def _run(self, batch: list[_Request]) -> list[Outcome]:
        """On a worker thread: the rate limit, then the acceptance of what it lets through."""
        by_key: dict[str, list[int]] = defaultdict(list)
        for index, request in enumerate(batch):
            by_key[request.rate_key].append(index)
        limited: dict[int, RateLimited] = {}
        for key, indexes in by_key.items():
            for index, retry_after in zip(
                indexes, self.limiter.check_many(key, len(indexes)), strict=True
            ):
                if retry_after is not None:
                    limited[index] = RateLimited(retry_after)
        going = [i for i in range(len(batch)) if i not in limited]
        outcomes = self.service.accept_prepared([batch[i].prepared for i in going])
        accepted = dict(zip(going, outcomes, strict=True))
        return [limited[i] if i in limited else accepted[i] for i in range(len(batch))]
