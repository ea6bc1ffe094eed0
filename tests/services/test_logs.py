"""JSON logs: one object per line, carrying the decision id of the request being handled."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest

from services.logs import DECISION_ID, DecisionIdFilter, JsonFormatter, setup


@pytest.fixture()
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger writing JSON lines into a buffer, as `setup(log_format="json")` wires the root."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(DecisionIdFilter())
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("ltrr.test-logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, out
    logger.removeHandler(handler)


def lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_each_request_task_logs_its_own_decision_id(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = captured

    async def request(decision_id: str) -> None:
        DECISION_ID.set(decision_id)
        await asyncio.sleep(0)  # let the other requests run in between
        logger.info("searching %s", decision_id)
        await asyncio.gather(asyncio.sleep(0))  # a child task inherits the id
        await asyncio.create_task(asyncio.to_thread(logger.warning, "child of %s", decision_id))

    async def main() -> None:
        await asyncio.gather(*(request(f"d{i}") for i in range(5)))

    asyncio.run(main())
    logger.info("outside any request")
    got = lines(out)
    assert len(got) == 11
    for line in got[:-1]:
        assert str(line["msg"]).endswith(str(line["decision_id"]))
    assert {line["decision_id"] for line in got[:-1]} == {f"d{i}" for i in range(5)}
    assert "decision_id" not in got[-1]
    assert got[-1]["level"] == "INFO" and got[-1]["logger"] == "ltrr.test-logs"
    assert {"ts", "level", "logger", "msg", "pid"} <= set(got[-1])
    assert str(got[-1]["ts"]).endswith("+00:00")


def test_an_exception_is_one_line_with_its_traceback(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = captured
    try:
        raise ValueError("bad \"quota\"\nsecond line ✓")
    except ValueError:
        logger.exception("failed")
    (line,) = lines(out)
    assert line["msg"] == "failed" and line["level"] == "ERROR"
    assert 'ValueError: bad "quota"\nsecond line ✓' in str(line["exc"])


@pytest.mark.parametrize(("level", "log_format", "match"), [
    ("INFO", "xml", "`log_format` must be one of text, json, but got 'xml'"),
    ("LOUD", "json", "`level` must be a logging level"),
])
def test_setup_rejects(level: str, log_format: str, match: str) -> None:
    root = logging.getLogger()
    handlers = root.handlers[:]
    try:
        with pytest.raises(ValueError, match=match):
            setup(level, log_format)
    finally:
        root.handlers[:] = handlers


def test_setup_json_writes_json_to_the_stream() -> None:
    root, ours = logging.getLogger(), logging.getLogger("ltrr")
    handlers, level, our_level = root.handlers[:], root.level, ours.level
    out = io.StringIO()
    try:
        setup("DEBUG", "json", out)
        token = DECISION_ID.set("abc")
        logging.getLogger("ltrr.broker").debug("stored")
        DECISION_ID.reset(token)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        ours.setLevel(our_level)
    (line,) = lines(out)
    assert (line["level"], line["logger"], line["msg"], line["decision_id"]) == ("DEBUG", "ltrr.broker", "stored",
                                                                                 "abc")
