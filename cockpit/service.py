"""The prediction service as the cockpit asks it: POST /predict for the shipments on screen."""

from __future__ import annotations

import httpx

from serving.api import MAX_IDS


def ask(url: str | None, ids: list[str], api_key: str | None = None,
        timeout_s: float = 5.0) -> tuple[list[dict], str | None]:
    """The service's answers for `ids` (at most the service's limit per request) and, when it
    could not answer, one sentence why (the cockpit then shows the nightly scores)."""
    if not url or not ids:
        return [], None
    headers = {"X-API-Key": api_key} if api_key else {}
    answers: list[dict] = []
    try:
        for start in range(0, len(ids), MAX_IDS):
            reply = httpx.post(f"{url.rstrip('/')}/predict",
                               json={"shipment_ids": ids[start:start + MAX_IDS]},
                               headers=headers, timeout=timeout_s)
            reply.raise_for_status()
            answers += reply.json()
    except (httpx.HTTPError, ValueError) as err:
        return answers, (f"the prediction service at {url} did not answer ({err}); "
                         "showing the nightly scores")
    return answers, None
