"""The OpenAPI 3.1 document, generated from the route table and the types of
:mod:`veil.protocol` (with this server's limits bound in), and a self-contained HTML
page that renders it (no CDN: servers may run offline).

Every route states every status it can answer with and the body of each: its own
(``Route.responses``), and the errors its declaration implies (authentication, path
parameters, a body), all in the one error shape.
"""

from __future__ import annotations

import re
from typing import Any

from veil import __version__
from veil.protocol import Codec
from veil.protocol.frames import ServerFrame
from veil.protocol.responses import ErrorResponse
from veil.server.config import ServerConfig
from veil.server.http.endpoint import ANY_QUERY, Auth, PathParam, Route

REF = "#/components/schemas/{name}"

_SECURITY: dict[str, list[dict[str, list[str]]]] = {
    "device": [{"device": []}],
    "access_key": [{"device": []}, {"accessKey": []}, {}],
    "none": [],
    "group_read": [{"groupRead": []}],
    "group_write": [{"groupWrite": []}],
    "blob_token": [{"blobToken": []}],
}

# Answers that are not protocol types.
_OTHER_CONTENT: dict[str, dict[str, Any]] = {
    "openapi_json": {"application/json": {"schema": {"type": "object"}}},
    "docs": {"text/html": {"schema": {"type": "string"}}},
    "download_blob": {"application/octet-stream": {
        "schema": {"type": "string", "format": "binary"}}},
}


def _content(ref: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": ref}}


def _error_statuses(route: Route, has_body: bool) -> dict[int, str]:
    """The error statuses ``route`` can answer with, from its declaration (the handler's
    own, such as 409, are in ``route.responses``); each has the one error body."""
    out: dict[int, str] = {400: "Bad request: unknown query parameter, bad query value, "
                                "path or JSON (bad_request, invalid_json)"}
    if route.auth is not Auth.NONE:
        out[401] = "Missing or wrong credentials (unauthorized, invalid_access_key)"
    if route.path_params:
        out[404] = "Not found (not_found and the resource's own code)"
        out[422] = "A path parameter out of range (validation_failed)"
    if has_body:
        out[413] = "The body is larger than max_body_bytes (payload_too_large)"
        out[408] = "The body did not arrive within network.body_timeout_s " \
                   "(request_timeout)"
        out[422] = "The body does not match the schema, or a field that matches it does " \
                   "not parse or verify (validation_failed, limit_exceeded)"
    # The protection layers (issue 13 §2): every route is rate-limited, and a blocked
    # address is refused; both answers carry Retry-After.
    out[403] = "This address is blocked for a while (blocked; Retry-After)"
    out[429] = "Too many requests (rate_limited; Retry-After, details.retry_after)"
    out[503] = "Storage unavailable or too many connections (storage_error, " \
               "too_many_connections)"
    return out


def _parameters(route: Route, config: ServerConfig) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = []
    for name in re.findall(r"{(\w+)}", route.path):
        declared = route.path_params.get(name)
        params.append({
            "name": name, "in": "path", "required": True,
            "schema": declared.json_schema() if isinstance(declared, PathParam)
            else {"type": "string"},
        })
    if route.query != ANY_QUERY:
        params += [
            {"name": q.name, "in": "query", "required": False, "schema": q.json_schema(config)}
            for q in route.query
        ]
    params += [{"name": h.name, "in": "header", "required": h.required,
                "schema": dict(h.schema), **({"description": h.description}
                                             if h.description else {})}
               for h in route.headers]
    return params


def _exact_base64(schema: Any) -> Any:
    """Base64 fields keep only their pattern, which admits exactly the encodings of the
    allowed byte counts: the character bounds msgspec adds beside it allow lengths no
    base64 text has (maxLength - 1), which test generators then search for in vain."""
    if isinstance(schema, dict):
        out = {k: _exact_base64(v) for k, v in schema.items()}
        if out.get("contentEncoding") == "base64" and "pattern" in out:
            out.pop("minLength", None)
            out.pop("maxLength", None)
        return out
    if isinstance(schema, list):
        return [_exact_base64(v) for v in schema]
    return schema


def _inline(schema: Any, components: dict[str, Any]) -> Any:
    """``schema`` with its component references replaced by the components (request
    bodies are shallow; test generators such as schemathesis's coverage phase work
    on an inline schema far faster than through references)."""
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str):
            return _inline(components[ref.rsplit("/", 1)[1]], components)
        return {k: _inline(v, components) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_inline(v, components) for v in schema]
    return schema


def _types(routes: Any) -> list[type[Any]]:
    """Every protocol type the routes read or answer with, in a stable order."""
    found: dict[type[Any], None] = {ErrorResponse: None}
    for route in routes:
        if route.body is not None:
            found[route.body] = None
        for _, answer in route.responses.values():
            if answer is not None:
                found[answer] = None
    return list(found)


def document(routes: Any, codec: Codec, config: ServerConfig) -> dict[str, Any]:
    types = _types(routes)
    refs, found = codec.schemas([*types, codec.client_frames, ServerFrame], REF)
    components: dict[str, Any] = _exact_base64(found)
    ref_of = dict(zip(types, refs, strict=False))
    error = _content(ref_of[ErrorResponse])
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        op: dict[str, Any] = {
            "summary": route.summary,
            "tags": [route.tag],
            "operationId": route.handler.__name__,
            "security": _SECURITY[route.auth.value],
            "responses": {},
            # Slots the protection-layer and audit issues enforce; declared per route now.
            "x-veil-rate-limit": route.rate_limit,
            "x-veil-audit": route.audit,
        }
        statuses: dict[int, tuple[str, Any]] = {
            code: (text, None) for code, text in _error_statuses(
                route, route.body is not None).items()}
        statuses.update(route.responses)
        for code in sorted(statuses):
            description, answer = statuses[code]
            response: dict[str, Any] = {"description": description}
            if code >= 400:
                response["content"] = error
            elif answer is not None:
                response["content"] = _content(ref_of[answer])
            elif route.handler.__name__ in _OTHER_CONTENT:
                response["content"] = _OTHER_CONTENT[route.handler.__name__]
            op["responses"][str(code)] = response
        op["responses"]["4XX"] = {"description": "Client error", "content": error}
        params = _parameters(route, config)
        if params:
            op["parameters"] = params
        if route.body is not None:
            op["requestBody"] = {"required": True, "content": _content(
                _inline(ref_of[route.body], components))}
        elif route.raw_body:
            op["requestBody"] = {"required": False, "content": {
                route.raw_body: {"schema": {"type": "string", "format": "binary"}}}}
        paths.setdefault(route.path, {})[route.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Veil server API",
            "version": __version__,
            "description": "Accounts, key directory, sealed message queue and MLS group "
                           "mailboxes. Envelope and group message bodies are opaque to "
                           "the server. WebSocket frames: the "
                           "ClientFrame and ServerFrame schemas, and docs/server.md.",
        },
        "paths": paths,
        "components": {
            "schemas": {
                **components,
                "ClientFrame": refs[-2],
                "ServerFrame": refs[-1],
            },
            "securitySchemes": {
                "device": {
                    "type": "http", "scheme": "basic",
                    "description": "username 'account_hex.device_id', password the base64 "
                                   "device token",
                },
                "accessKey": {"type": "apiKey", "in": "header", "name": "Veil-Access-Key"},
                "groupRead": {
                    "type": "apiKey", "in": "header", "name": "Veil-Group-Read",
                    "description": "base64 of the epoch's read capability, "
                                   "export_secret('veil ds read', '', 32)",
                },
                "blobToken": {
                    "type": "apiKey", "in": "header", "name": "Veil-Blob-Token",
                    "description": "base64 of the blob's 32-byte download token "
                                   "(docs/attachments.md)",
                },
                "groupWrite": {
                    "type": "apiKey", "in": "header", "name": "Veil-Group-Write",
                    "description": "base64 of the current epoch's write capability, "
                                   "export_secret('veil ds write', '', 32)",
                },
            },
        },
    }


DOCS_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Veil server API</title>
<style>
body{font:15px/1.45 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}
h1{font-size:1.5rem} details{border:1px solid #ccc;border-radius:6px;margin:.4rem 0}
summary{padding:.5rem;cursor:pointer} pre{background:#f5f5f5;padding:.6rem;overflow:auto}
.m{display:inline-block;width:4.5rem;font-weight:bold} .a{color:#777;font-size:.85em}
</style></head><body>
<h1>Veil server API</h1>
<p>Machine-readable: <a href="/openapi.json">/openapi.json</a>.
Errors always look like <code>{"error": {"code": ..., "message": ...}}</code>.</p>
<div id="ops">Loading…</div>
<script>
fetch('/openapi.json').then(r => r.json()).then(doc => {
  const out = document.getElementById('ops'); out.textContent = '';
  for (const [path, ops] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(ops)) {
      const d = document.createElement('details');
      const s = document.createElement('summary');
      const auth = (op.security || []).map(x => Object.keys(x)[0] || 'anonymous').join(' | ');
      s.innerHTML = '<span class="m"></span><code></code> — <span></span> <span class="a"></span>';
      s.children[0].textContent = method.toUpperCase(); s.children[1].textContent = path;
      s.children[2].textContent = op.summary;
      s.children[3].textContent = auth ? '[' + auth + ']' : '';
      d.appendChild(s);
      const pre = document.createElement('pre');
      const shown = {requestBody: op.requestBody, responses: op.responses};
      pre.textContent = JSON.stringify(shown, null, 2);
      d.appendChild(pre); out.appendChild(d);
    }
  }
});
</script></body></html>
"""

__all__ = [
    "DOCS_HTML",
    "document",
]
