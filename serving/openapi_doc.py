"""The service's OpenAPI document (/docs.json) states the error answers it really gives.

BentoML 1.4.40 documents every route's 400 as `{"error": string, "detail": string}` while it
sends pydantic's list of problems as `detail` (which names the fields, so it is kept), and it
leaves out the refusals of the service's guards (401, 408, 413, 415, 429) and its timeout (504).
`document_errors` makes BentoML's document generator add them: the 400 schema becomes
`serving.api.InvalidRequest`, the refusals `serving.api.RequestRefused`. Clients and fuzzers
that read the document then expect what arrives. Its title is the product's name and version.
"""

from __future__ import annotations

from collections.abc import Iterable

from serving.api import REFUSALS, InvalidRequest, RequestRefused

REF = "#/components/schemas/{model}"
BODY_REFUSALS = (408, 413, 415)  # about a request's body
PRODUCT = "shipdelay"
DESCRIPTION = ("Delay risk, delay interval, ETA and reasons for shipments in flight. Every route "
               "but the probes needs the X-API-Key header when the service has a key.")


def product_version() -> str:
    """The installed package's version (its metadata), "unknown" when it is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(PRODUCT)
    except PackageNotFoundError:
        return "unknown"


def _schemas() -> dict[str, dict]:
    """JSON schemas of the error answers, by component name (nested models as components)."""
    out: dict[str, dict] = {}
    for model in (InvalidRequest, RequestRefused):
        schema = model.model_json_schema(ref_template=REF)
        out.update(schema.pop("$defs", {}))
        out[model.__name__] = schema
    return out


def fix_document(doc: dict, routes: Iterable[str]) -> dict:
    """`doc` (an OpenAPI document as a dict) with the error answers of `routes` as they are,
    and the product's name and version as its title (BentoML writes "ShipDelay:dev" and no
    version)."""
    info = doc.setdefault("info", {})
    info["title"] = PRODUCT
    info["version"] = product_version()
    info["description"] = DESCRIPTION
    info.pop("contact", None)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(_schemas())
    # the component BentoML's other answers refer to says what its 400s hold as well
    schemas["InvalidArgument"] = {**schemas["InvalidRequest"], "title": "InvalidArgument"}
    for route in routes:
        methods = doc.get("paths", {}).get(route, {})
        operation = methods.get("post") or methods.get("get")
        if operation is None:
            continue
        bodiless = "post" not in methods  # no body: no body limits, no media type
        responses = operation.setdefault("responses", {})
        for key in [k for k in responses if str(k) in ("400", "422")]:  # bad input is a 400
            del responses[key]
        responses["400"] = _response("the request breaks the contract: each problem named "
                                     "in detail", "InvalidRequest")
        for status, description in REFUSALS.items():
            if not (bodiless and status in BODY_REFUSALS):
                responses[str(status)] = _response(description, "RequestRefused")
    return doc


def _response(description: str, model: str) -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": REF.format(model=model)}}}}


class _Documented:
    """BentoML's OpenAPI specification object, whose `asdict()` is the fixed document."""

    def __init__(self, spec, routes: frozenset[str]):
        self._spec = spec
        self._routes = routes

    def asdict(self) -> dict:
        return fix_document(self._spec.asdict(), self._routes)

    def __getattr__(self, name):
        return getattr(self._spec, name)


def document_errors(service, other_routes: Iterable[str] = ()) -> None:
    """Have BentoML's document generator state the error answers of `service`'s routes and of
    `other_routes` (paths of its mounted apps), once a process; BentoML builds the document
    anew for every /docs.json request."""
    from _bentoml_sdk.service import openapi

    original = getattr(openapi.generate_spec, "_original", openapi.generate_spec)
    routes = frozenset([*(api.route for api in service.apis.values()), *other_routes])

    def generate_spec(svc, *args, **kwargs):
        spec = original(svc, *args, **kwargs)
        return _Documented(spec, routes) if svc is service else spec

    generate_spec._original = original
    openapi.generate_spec = generate_spec
