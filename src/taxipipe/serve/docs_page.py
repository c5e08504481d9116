"""/docs: the service's API as one self-contained page that works without the internet.

FastAPI's Swagger UI loads its scripts and styles from a CDN and renders blank offline.
This page is rendered on the server from the same OpenAPI schema: every endpoint with its
description and example body, and a small inline script that sends a request and shows the
answer. It loads nothing from anywhere else.
"""

from __future__ import annotations

import html
import json
from typing import Any

STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:60rem;padding:0 1rem;color:#222}
section{border:1px solid #ccc;border-radius:6px;margin:1rem 0;padding:.5rem 1rem}
.method{font-weight:bold;padding:.1rem .4rem;border-radius:4px;color:#fff}
.get{background:#2b7bb9}.post{background:#3c9a5f}
textarea{width:100%;font-family:monospace;min-height:4rem}
pre{background:#f5f5f5;padding:.5rem;overflow:auto;max-height:20rem}
"""

SCRIPT = """
for (const form of document.querySelectorAll("form.try")) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const out = form.querySelector("pre");
    const body = form.querySelector("textarea");
    const options = {method: form.dataset.method, headers: {}};
    if (body) { options.body = body.value; options.headers["Content-Type"] = form.dataset.type; }
    const token = document.getElementById("token").value;
    if (token) options.headers["Authorization"] = "Bearer " + token;
    try {
      const answer = await fetch(form.dataset.path, options);
      out.textContent = answer.status + " " + answer.statusText + "\\n" + await answer.text();
    } catch (error) { out.textContent = String(error); }
  });
}
document.body.dataset.ready = "yes";
"""


def render(schema: dict[str, Any]) -> str:
    """The page for an OpenAPI schema (FastAPI's `app.openapi()`)."""
    info = schema.get("info", {})
    sections = [_endpoint(path, method, operation) for path, operations in schema.get("paths", {}).items()
                for method, operation in operations.items()]
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{_text(info.get('title', 'API'))} API</title>"
            f"<style>{STYLE}</style></head><body><h1>{_text(info.get('title', 'API'))} "
            f"<small>{_text(info.get('version', ''))}</small></h1><p>{_text(info.get('summary', ''))}</p>"
            "<p>Every endpoint below can be tried from this page; it needs nothing but this server. "
            "The schema is at <a href='openapi.json'>openapi.json</a>.</p>"
            "<p><label>Admin token (for /admin endpoints): <input id='token' type='password'></label></p>"
            f"{''.join(sections)}<script>{SCRIPT}</script></body></html>")


def _endpoint(path: str, method: str, operation: dict[str, Any]) -> str:
    content = operation.get("requestBody", {}).get("content", {})
    media_type, body = next(iter(content.items()), (None, {}))
    field = ""
    if media_type is not None:
        example = body.get("schema", {}).get("example", body.get("example", ""))
        text = example if isinstance(example, str) else json.dumps(example)
        field = f"<textarea name='body'>{_text(text)}</textarea>"
    description = operation.get("description") or operation.get("summary", "")
    return (f"<section id='{_text(method + path)}'><h2><span class='method {method}'>{method.upper()}</span> "
            f"<code>{_text(path)}</code></h2><p>{_text(description)}</p>"
            f"<form class='try' data-method='{method.upper()}' data-path='{_text(path)}' "
            f"data-type='{_text(media_type or '')}'>{field}<button type='submit'>Send</button><pre></pre></form>"
            "</section>")


def _text(value: Any) -> str:
    return html.escape(str(value), quote=True)
