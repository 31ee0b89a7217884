"""The OpenAPI document of this service as it is configured, so that what the document
allows, the service accepts, and what the service answers, the document lists.

FastAPI writes the operations, parameters and bodies from the routes. This module adds
what depends on the settings or is common to many operations:

- **security** only where a token is asked: mutations when ``SYNCSGD_TOKEN`` is set,
  reads too when reads need it, and the event stream by token or by a signed ticket;
- operations that are off are left out: fault injection, registration with no
  ``SYNCSGD_DATASETS_ROOT``;
- the error answers every operation can give (401, 404, 400, 413, 422), each with its
  body's schema.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from service.api.deps import READ_SCHEME, TICKET_SCHEME, WRITE_SCHEME
from service.config import Settings

BEARER = "bearerToken"
TICKET = "eventTicket"
SCHEMES = {
    BEARER: {"type": "http", "scheme": "bearer",
             "description": "SYNCSGD_TOKEN, as 'Authorization: Bearer <token>'"},
    TICKET: {"type": "apiKey", "in": "query", "name": "ticket",
             "description": "for GET /jobs/{job_id}/events, where a browser's EventSource "
                            "cannot send headers: POST /jobs/{job_id}/events/ticket"},
}
ERROR = {"type": "object", "required": ["detail"],
         "properties": {"detail": {"type": "string"}}}
ERROR_REF = {"$ref": "#/components/schemas/Error"}
VALIDATION_REF = {"$ref": "#/components/schemas/HTTPValidationError"}
COMMON_ERRORS = {
    401: "missing or wrong token",
    404: "nothing with this id",
    400: "the body is not well-formed JSON",
    413: "the request body is over its limit (named)",
    422: "an invalid field, parameter or header, or over a limit (named)",
}


def install(app: FastAPI, settings: Settings) -> None:
    """Serve :func:`document` at ``/openapi.json``."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document(app, settings)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def document(app: FastAPI, settings: Settings) -> dict[str, Any]:
    doc = get_openapi(title=app.title, version=app.version, description=app.description,
                      routes=app.routes)
    components = doc.setdefault("components", {})
    components.setdefault("schemas", {})["Error"] = ERROR
    components["schemas"].setdefault("HTTPValidationError", _validation_error_schema())
    used: set[str] = set()
    for path, operations in doc["paths"].items():
        for method in list(operations):
            if _is_off(path, method, settings):
                del operations[method]
                continue
            operation = operations[method]
            security = _security(operation.pop("security", []), settings)
            if security:
                operation["security"] = security
                used.update(name for requirement in security for name in requirement)
            _add_errors(operation, path, method, secured=bool(security) and {} not in security)
    doc["paths"] = {path: ops for path, ops in doc["paths"].items() if ops}
    _add_links(doc["paths"])
    _add_settings_limits(components["schemas"], settings)
    _add_examples(doc["paths"])
    components["securitySchemes"] = {name: SCHEMES[name] for name in sorted(used)}
    if not used:
        del components["securitySchemes"]
    return doc


def _is_off(path: str, method: str, settings: Settings) -> bool:
    if (path, method) == ("/jobs/{job_id}/faults", "post"):
        return not settings.fault_injection
    if (path, method) == ("/datasets/register", "post"):
        return settings.datasets_root is None
    return False


def _security(declared: list[dict[str, list[str]]],
              settings: Settings) -> list[dict[str, list[str]]]:
    """What the operation takes, from the schemes its dependencies declared (named in
    :mod:`service.api.deps`): any one requirement of the list will do, ``{}`` none."""
    names = {name for requirement in declared for name in requirement}
    if settings.token is None or not names:
        return []
    if WRITE_SCHEME in names:
        return [{BEARER: []}]
    if not settings.reads_need_token:
        return []
    if TICKET_SCHEME in names:
        return [{BEARER: []}, {TICKET: []}]
    if READ_SCHEME in names:
        return [{BEARER: []}]
    return [{}, {BEARER: []}]  # optional: it answers more with the token


def _add_errors(operation: dict[str, Any], path: str, method: str, secured: bool) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    has_body = "requestBody" in operation
    json_body = has_body and "application/json" in operation["requestBody"]["content"]
    wanted = {401: secured, 404: "{" in path, 400: json_body, 413: method == "post",
              422: has_body or bool(operation.get("parameters"))}
    for code, needed in wanted.items():
        if needed:
            responses.setdefault(str(code), {"description": COMMON_ERRORS[code]})
    for status_code, response in responses.items():
        if status_code.startswith(("4", "5")) and "content" not in response:
            schema = VALIDATION_REF if status_code == "422" else ERROR_REF
            response["content"] = {"application/json": {"schema": schema}}


def _add_settings_limits(schemas: dict[str, Any], settings: Settings) -> None:
    """The limits of this service's settings that bound one field each."""
    limit = settings.max_workers_per_job
    counts = [schemas["VerifyRequest"]["properties"]["workers"],
              *(form for form in schemas["JobSpec"]["properties"]["workers"]["oneOf"]
                if form.get("type") == "integer"),
              *schemas["WorkerRange"]["properties"].values()]
    for count in counts:  # a job's workers (a number, or an elastic range's ends)
        count["maximum"] = min(count["maximum"], limit)
    steps = schemas["VerifyRequest"]["properties"]["steps"]
    steps["maximum"] = min(steps["maximum"], settings.max_verify_steps)


#: A small job that trains in a second: the example of the bodies that take a spec.
EXAMPLE_SPEC = {"name": "digits-small", "epochs": 1, "workers": 1, "allreduce": "local",
                "model": {"input_dim": 64, "layers": [{"units": 16, "activation": "relu"},
                                                      {"units": 10, "activation": "softmax"}]}}
EXAMPLES = {("/jobs", "post", "application/json"): EXAMPLE_SPEC,
            ("/verify", "post", "application/json"): {
                "spec": {**EXAMPLE_SPEC, "allreduce": "mpi"}, "workers": 2, "steps": 5}}


def _add_examples(paths: dict[str, Any]) -> None:
    for (path, verb, media_type), example in EXAMPLES.items():
        if verb in paths.get(path, {}):
            paths[path][verb]["requestBody"]["content"][media_type]["example"] = example


#: What creates the resources the other operations name: (operation, responses, parameter).
CREATORS = {("/jobs", "post"): (("201",), "job_id"),
            ("/datasets", "post"): (("201", "202"), "dataset_id")}


def _add_links(paths: dict[str, Any]) -> None:
    """OpenAPI links from each creating operation to every operation on what it created,
    so clients and stateful fuzzers can follow them."""
    for (creator, verb), (codes, parameter) in CREATORS.items():
        if verb not in paths.get(creator, {}):
            continue
        links = {operation["operationId"]: {
            "operationId": operation["operationId"],
            "parameters": {parameter: "$response.body#/id"}}
            for path, operations in paths.items() if "{" + parameter + "}" in path
            for operation in operations.values()}
        for code in codes:
            paths[creator][verb]["responses"].setdefault(code, {
                "description": "created"})["links"] = links


def _validation_error_schema() -> dict[str, Any]:
    return {"type": "object", "properties": {"detail": {"type": "array", "items": {
        "type": "object", "required": ["loc", "msg", "type"],
        "properties": {"loc": {"type": "array", "items": {"anyOf": [{"type": "string"},
                                                                      {"type": "integer"}]}},
                       "msg": {"type": "string"}, "type": {"type": "string"}}}}}}
