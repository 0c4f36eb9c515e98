"""The OpenAPI 3.1 document, generated from the route table and the validation schemas,
and a self-contained HTML page that renders it (no CDN: servers may run offline)."""

from __future__ import annotations

import re
from typing import Any

from veil import __version__
from veil.server.config import ServerConfig
from veil.server.http.endpoint import ANY_QUERY, Auth, PathParam, Route

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {
        "type": "object",
        "required": ["code", "message"],
        "properties": {
            "code": {"type": "string", "description": "stable machine-readable code"},
            "message": {"type": "string"},
            "details": {"type": "object"},
        },
    }},
}

_SECURITY: dict[str, list[dict[str, list[str]]]] = {
    "device": [{"device": []}],
    "access_key": [{"device": []}, {"accessKey": []}, {}],
    "none": [],
}


_ERROR_CONTENT: dict[str, Any] = {
    "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
}


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
        out[422] = "The body does not match the schema, or a field that matches it does " \
                   "not parse or verify (validation_failed, limit_exceeded)"
    out[503] = "Storage unavailable or too many connections (storage_error, " \
               "too_many_connections)"
    return out


def document(routes: Any, schemas: Any, config: ServerConfig) -> dict[str, Any]:
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
        schema = route.schema(schemas)
        statuses = {**_error_statuses(route, schema is not None), **route.responses}
        for code in sorted(statuses):
            response: dict[str, Any] = {"description": statuses[code]}
            if code >= 400:
                response["content"] = _ERROR_CONTENT
            op["responses"][str(code)] = response
        op["responses"]["4XX"] = {"description": "Client error", "content": _ERROR_CONTENT}
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
                {"name": q.name, "in": "query", "required": False,
                 "schema": q.json_schema(config)}
                for q in route.query
            ]
        if params:
            op["parameters"] = params
        if schema is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": schema.json_schema()}},
            }
        paths.setdefault(route.path, {})[route.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Veil server API",
            "version": __version__,
            "description": "Accounts, key directory and sealed message queue. Envelope "
                           "bodies are opaque to the server. WebSocket frames: docs/server.md.",
        },
        "paths": paths,
        "components": {
            "schemas": {
                "Error": ERROR_SCHEMA,
                "WebSocketSend": schemas.ws_send.json_schema(),
                "WebSocketAck": schemas.ws_ack.json_schema(),
            },
            "securitySchemes": {
                "device": {
                    "type": "http", "scheme": "basic",
                    "description": "username 'account_hex.device_id', password the base64 "
                                   "device token",
                },
                "accessKey": {"type": "apiKey", "in": "header", "name": "Veil-Access-Key"},
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
