"""`/api/v1/docs`: the OpenAPI document as a plain HTML page, rendered on the server.

Swagger UI and ReDoc need scripts (inline and from a CDN) that the admin app's
Content-Security-Policy forbids; this page needs none, so the CSP stays as it is.
"""

from __future__ import annotations

from html import escape
from typing import Any

_METHODS = ("get", "post", "put", "patch", "delete")


def _schema_name(schema: dict[str, Any]) -> str:
    ref = schema.get("$ref") or next((s.get("$ref") for s in schema.get("anyOf", [])
                                      if "$ref" in s), None)
    return ref.rsplit("/", 1)[-1] if ref else schema.get("type", "object")


def _fields(doc: dict[str, Any], name: str) -> str:
    schema = doc.get("components", {}).get("schemas", {}).get(name, {})
    rows = "".join(
        f"<tr><td><code>{escape(field)}</code></td><td>{escape(_schema_name(spec))}</td>"
        f"<td>{escape(spec.get('description', ''))}</td></tr>"
        for field, spec in schema.get("properties", {}).items())
    return f"<table><tr><th>field</th><th>type</th><th></th></tr>{rows}</table>" if rows else ""


def render(doc: dict[str, Any]) -> str:
    parts = [f"<h1>{escape(doc['info']['title'])} API</h1>",
             "<p>Send <code>Authorization: Bearer &lt;token&gt;</code> "
             "(<code>starter.py token create</code>). Errors are RFC 9457 problem details "
             "(<code>application/problem+json</code>). Machine-readable: "
             "<a href=\"/api/v1/openapi.json\">openapi.json</a>.</p>"]
    for path, item in doc.get("paths", {}).items():
        for method in _METHODS:
            op = item.get(method)
            if op is None:
                continue
            parts.append(f"<h2><code>{method.upper()} {escape(path)}</code></h2>")
            parts.append(f"<p>{escape(op.get('summary', ''))}. "
                         f"{escape(op.get('description', ''))}</p>")
            params = op.get("parameters", [])
            if params:
                parts.append("<table><tr><th>parameter</th><th>in</th><th></th></tr>" + "".join(
                    f"<tr><td><code>{escape(p['name'])}</code></td><td>{escape(p['in'])}</td>"
                    f"<td>{escape(p.get('description', ''))}</td></tr>" for p in params)
                    + "</table>")
            body = op.get("requestBody", {}).get("content", {}).get("application/json")
            if body:
                name = _schema_name(body["schema"])
                parts.append(f"<p>Body: <code>{escape(name)}</code></p>{_fields(doc, name)}")
            answers = ", ".join(f"{escape(code)} {escape(r.get('description', ''))}"
                                for code, r in op.get("responses", {}).items())
            parts.append(f"<p>Answers: {answers}</p>")
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<title>API reference</title><link rel=\"stylesheet\" href=\"/static/style.css\">"
            f"</head><body><main>{''.join(parts)}</main></body></html>")
