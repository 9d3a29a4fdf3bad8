"""What every log line looks like: one time format, text on a terminal (log_format
auto), and no azure-core HTTP chatter at info level."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import Iterator

import pytest

from azproxy.observe.access_log import AccessLog
from azproxy.observe.exchange import Exchange
from azproxy.observe.logging import AZURE_HTTP_LOGGER, chosen_format, configure_logging

# UTC, milliseconds, Z: the access log's format, and so every line's.
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def root_logging() -> Iterator[None]:
    """configure_logging changes the root logger: put it back afterwards."""
    root = logging.getLogger()
    azure_http = logging.getLogger(AZURE_HTTP_LOGGER)
    handlers, level, azure_level = root.handlers[:], root.level, azure_http.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    azure_http.setLevel(azure_level)


def test_auto_is_text_on_a_terminal_and_json_otherwise() -> None:
    assert chosen_format("auto", Terminal()) == "text"
    assert chosen_format("auto", io.StringIO()) == "json"
    assert chosen_format("json", Terminal()) == "json"
    assert chosen_format("text", io.StringIO()) == "text"
    closed = io.StringIO()
    closed.close()
    assert chosen_format("auto", closed) == "json"


def logged(
    monkeypatch: pytest.MonkeyPatch, stderr: io.StringIO, fmt: str, level: str = "info"
) -> str:
    monkeypatch.setattr("sys.stderr", stderr)
    configure_logging(level, (), fmt)
    logging.getLogger("azproxy").warning("port %d taken", 3000)
    return stderr.getvalue()


@pytest.mark.usefixtures("root_logging")
def test_the_application_log_is_text_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    line = logged(monkeypatch, Terminal(), "auto")
    assert re.fullmatch(
        rf"{TIMESTAMP.pattern} WARNING azproxy: port 3000 taken\n", line
    )
    document = json.loads(logged(monkeypatch, io.StringIO(), "auto"))
    assert document["message"] == "port 3000 taken"


@pytest.mark.usefixtures("root_logging")
async def test_every_log_line_has_the_same_time_format(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    text = logged(monkeypatch, io.StringIO(), "text")
    document = json.loads(logged(monkeypatch, io.StringIO(), "json"))
    access_log = AccessLog(asyncio.get_running_loop(), "json")
    access_log.write(Exchange("GET", "/v1/models", 0.0), 200, "id", 0.1)
    access_log.flush()
    access = json.loads(capfd.readouterr().out)
    times = [text.split(" ", 1)[0], document["time"], access["time"]]
    assert all(TIMESTAMP.fullmatch(t) for t in times), times


@pytest.mark.usefixtures("root_logging")
def test_azure_core_http_lines_are_quiet_unless_debugging(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    azure_http = logging.getLogger(AZURE_HTTP_LOGGER)
    stderr = io.StringIO()
    logged(monkeypatch, stderr, "text")
    azure_http.info("Request URL: 'http://169.254.169.254/metadata/identity'")
    azure_http.warning("a warning still shows")
    assert "Request URL" not in stderr.getvalue()
    assert "a warning still shows" in stderr.getvalue()

    stderr = io.StringIO()
    logged(monkeypatch, stderr, "text", level="debug")
    azure_http.info("Request URL: 'http://169.254.169.254/metadata/identity'")
    assert "Request URL" in stderr.getvalue()
