"""N generations at once, a bounded queue (429 + Retry-After beyond it), and a client that disconnects
mid-stream freeing its slot. Bounded in requests and time; the event loop never waits on a generation."""

from __future__ import annotations

import concurrent.futures
import time

import httpx
import pytest

from .conftest import client_for, running
from .stubs import Delta, StubGenerator

BODY = {"messages": [{"role": "user", "content": "x"}], "max_tokens": 30}


def wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def slots(server) -> dict:
    return httpx.get(server.url + "/health", timeout=5).json()["slots"]


def test_parallel_slots_then_queue_then_429_with_retry_after():
    stub = StubGenerator(script=[Delta(content="t")] * 30)
    stub.gate.clear()  # every generation waits before its first step until the test opens the gate
    with running(stub, model_id="stub", parallel=2, queue=1) as server:
        url = server.url + "/v1/chat/completions"
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            held = [pool.submit(httpx.post, url, json=BODY, timeout=30) for _ in range(2)]
            assert wait_for(lambda: stub.running == 2)
            queued = pool.submit(httpx.post, url, json=BODY, timeout=30)
            assert wait_for(lambda: slots(server)["waiting"] == 1)
            assert slots(server)["running"] == 2 and stub.running == 2  # never more than --parallel at once
            refused = [httpx.post(url, json=BODY, timeout=5) for _ in range(3)]
            for response in refused:
                assert response.status_code == 429
                assert int(response.headers["retry-after"]) >= 1
                assert response.json()["error"]["code"] == "queue_full"
            assert httpx.get(server.url + "/health", timeout=5).status_code == 200  # the loop is not blocked
            stub.gate.set()
            results = [f.result() for f in held + [queued]]
        assert [r.status_code for r in results] == [200, 200, 200]
        assert all(r.json()["usage"]["completion_tokens"] == 30 for r in results)
        assert wait_for(lambda: slots(server) == {"parallel": 2, "running": 0, "queue": 1, "waiting": 0})


def test_the_openai_client_sees_a_rate_limit_error():
    import openai

    stub = StubGenerator(endless=True, step_s=0.01)
    with running(stub, model_id="stub", parallel=1, queue=0) as server:
        client = client_for(server)
        stream = client.chat.completions.create(model="stub", messages=BODY["messages"], max_tokens=50, stream=True)
        next(iter(stream))
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="stub", messages=BODY["messages"], max_tokens=2)
        stream.close()


@pytest.mark.parametrize("parallel", [1, 2])
def test_a_client_that_disconnects_mid_stream_frees_its_slot(parallel):
    stub = StubGenerator(endless=True, step_s=0.005)
    with running(stub, model_id="stub", parallel=parallel, queue=0) as server:
        client = client_for(server)
        streams = [client.chat.completions.create(model="stub", messages=BODY["messages"], max_tokens=100000 // 2000,
                                                  stream=True) for _ in range(parallel)]
        for stream in streams:
            chunks = iter(stream)
            next(chunks), next(chunks), next(chunks)
        assert slots(server)["running"] == parallel
        for stream in streams:
            stream.close()  # the client goes away mid-stream
        closed = time.monotonic()
        assert wait_for(lambda: len(stub.closed) == parallel and slots(server)["running"] == 0, timeout=5)
        assert all(g.closed_at - closed < 1.0 for g in stub.closed)
        assert all(len(g.token_ids) < g.max_new_tokens for g in stub.closed)  # stopped early, not run out
        reply = client.chat.completions.create(model="stub", messages=BODY["messages"], max_tokens=3)
        assert reply.usage.completion_tokens == 3


def test_a_real_model_stream_that_disconnects_frees_its_slot(generator):
    with running(generator, parallel=1, queue=0) as server:
        client = client_for(server)
        stream = client.chat.completions.create(model="tiny", messages=BODY["messages"], max_tokens=200,
                                                temperature=0, stream=True)
        chunks = iter(stream)
        next(chunks), next(chunks)
        stream.close()
        assert wait_for(lambda: slots(server)["running"] == 0, timeout=5)
        reply = client.chat.completions.create(model="tiny", messages=BODY["messages"], max_tokens=3, temperature=0)
        assert reply.choices[0].finish_reason in ("stop", "length")


def test_a_queued_client_that_gives_up_leaves_the_queue():
    stub = StubGenerator(script=[Delta(content="t")] * 5)
    stub.gate.clear()
    with running(stub, model_id="stub", parallel=1, queue=1) as server:
        url = server.url + "/v1/chat/completions"
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            held = pool.submit(httpx.post, url, json=BODY, timeout=30)
            assert wait_for(lambda: stub.running == 1)
            with pytest.raises(httpx.TimeoutException):
                httpx.post(url, json=BODY, timeout=0.5)  # waits in the queue, then hangs up
            assert wait_for(lambda: slots(server)["waiting"] == 0, timeout=5)
            stub.gate.set()
            assert held.result().status_code == 200
        assert len(stub.calls) == 1  # the one that gave up never started a generation
