"""`shipdelay cockpit --check`: serve the cockpit once, render its Now page over HTTP, stop.

What `make demo` ends with: a command that must end by itself cannot leave a web server running,
so the cockpit is served on a free port of 127.0.0.1 in this process, asked for its Now page
over HTTP as a browser asks it (the page shell, then the Dash callback that renders the page,
with the API key when one is set), and stopped. What the page said (shipments in flight, how
many in the high band, or the one sentence it shows instead) is returned for printing beside
the command that serves the cockpit for real.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

import httpx

from cockpit.serve import make
from shipdelay.settings import Settings

# The request Dash's page sends for the page's content when the address is "/" (the Now page).
NOW_CALLBACK = {"output": "page.children",
                "outputs": {"id": "page", "property": "children"},
                "inputs": [{"id": "url", "property": "pathname", "value": "/"}],
                "changedPropIds": ["url.pathname"], "state": []}
IN_FLIGHT = re.compile(r"([\d,]+) shipments in flight")


class PageUnreadable(RuntimeError):
    """The Now page came back without its counts nor the sentence saying why."""


@dataclass
class NowCheck:
    """What the Now page showed when it was fetched once."""

    url: str
    in_flight: int | None = None
    high: int | None = None
    problem: str | None = None  # the page's own sentence when it has nothing to list

    def summary(self) -> str:
        if self.problem is not None:
            return f"Cockpit: {self.url} answered: {self.problem}"
        return f"Cockpit: {self.url} ({self.in_flight:,} shipments in flight, {self.high:,} high)"


def texts_by_id(node, out: dict[str, str] | None = None) -> dict[str, str]:
    """The text of every element with an id in a Dash component tree (JSON), by id."""
    out = {} if out is None else out
    if isinstance(node, list):
        for child in node:
            texts_by_id(child, out)
    elif isinstance(node, dict):
        props = node.get("props", {})
        children = props.get("children")
        if isinstance(props.get("id"), str):
            out[props["id"]] = _text(children)
        texts_by_id(children, out)
    return out


def _text(node) -> str:
    if isinstance(node, (str, int, float)):
        return str(node)
    if isinstance(node, list):
        return "".join(_text(c) for c in node)
    if isinstance(node, dict):
        return _text(node.get("props", {}).get("children"))
    return ""


def _number(text: str | None) -> int | None:
    found = re.search(r"[\d,]+", text or "")
    return int(found.group().replace(",", "")) if found else None


def read_now(texts: dict[str, str], url: str) -> NowCheck:
    """The Now page's figures from its elements' texts."""
    if "now-problem" in texts:
        return NowCheck(url, problem=texts["now-problem"])
    flying = IN_FLIGHT.search(texts.get("now-status", ""))
    high = texts.get("band-count-high", "").partition(":")[2]
    if flying is None or _number(high) is None:
        raise PageUnreadable("the Now page showed neither its counts nor why")
    return NowCheck(url, int(flying.group(1).replace(",", "")), _number(high))


def check(settings: Settings, service_url: str | None = None,
          timeout_s: float = 300.0) -> NowCheck:
    """Serve the cockpit on a free port, fetch the Now page once, stop it (whatever happens).
    Raises OSError when it cannot listen, ValueError on a bad penalties file,
    httpx.HTTPError when a fetch fails, PageUnreadable when the page is not what it should
    be (KeyError when the callback's answer is)."""
    server = make(settings, "127.0.0.1", 0, service_url, follow_alerts=False)
    url = f"http://127.0.0.1:{server.server_port}/"
    thread = threading.Thread(target=server.serve_forever, name="cockpit-check", daemon=True)
    thread.start()
    key = settings.api_key.get_secret_value() if settings.api_key is not None else None
    headers = {"X-API-Key": key} if key else {}
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=timeout_s) as http:
            http.get("/").raise_for_status()
            reply = http.post("/_dash-update-component", json=NOW_CALLBACK)
            reply.raise_for_status()
            tree = reply.json()["response"]["page"]["children"]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    return read_now(texts_by_id(tree), url)


def check_and_say(settings: Settings, service_url: str | None = None, port: int = 8050,
                  say=print) -> NowCheck:
    """`check`, then say what the page showed and how to run the cockpit for real. Raises
    `Failure` (one sentence) when the page could not be fetched or read."""
    from shipdelay.cli_guard import Failure

    say("checking the cockpit: serving it once on a free port for its Now page")
    try:
        got = check(settings, service_url)
    except (httpx.HTTPError, KeyError, PageUnreadable) as err:
        raise Failure(f"The cockpit did not render its Now page ({err}); run "
                      "'shipdelay cockpit' and open it to see why.") from None
    say(got.summary() + "; stopped.")
    key = " (sign in with SHIPDELAY_API_KEY)" if settings.api_key is not None else ""
    say(f"To open the cockpit: run 'shipdelay cockpit --port {port}', then open "
        f"http://127.0.0.1:{port}/ in a browser{key}; Ctrl+C stops it.")
    return got
