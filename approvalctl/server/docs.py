"""The /docs page: a self-contained HTML page that renders /openapi.json in the browser.

The server usually has no internet, so there is no CDN-hosted Swagger UI here: a few dozen
lines of inline script list every operation, its parameters, body schema and responses.
"""

from __future__ import annotations

DOCS_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>approvalctl API</title>
<style>
body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;
color:#222}
h1{margin-bottom:.2rem} code,pre{font:13px ui-monospace,monospace}
pre{background:#f5f5f5;padding:.6rem;overflow:auto;border-radius:4px}
details{border:1px solid #ddd;border-radius:4px;margin:.4rem 0;padding:.3rem .6rem}
summary{cursor:pointer} .m{display:inline-block;width:4.5rem;font-weight:bold}
.GET{color:#0a6}.POST{color:#06c}.PUT{color:#a60}.DELETE{color:#c22}
table{border-collapse:collapse} td,th{border-bottom:1px solid #eee;padding:.2rem .6rem;
text-align:left;vertical-align:top}
</style></head>
<body>
<h1>approvalctl API</h1>
<p>The machine-readable document is <a href="/openapi.json">/openapi.json</a>.</p>
<div id="intro"></div><div id="ops">Loading&hellip;</div>
<script>
"use strict";
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const k of kids) e.append(k);
  return e;
}
function resolve(spec, node) {
  if (node && node.$ref) {
    return node.$ref.slice(2).split("/").reduce((o, p) => o[p], spec);
  }
  return node;
}
function schemaText(spec, node) {
  return JSON.stringify(node, (k, v) => (v && v.$ref) ? resolve(spec, v) : v, 2);
}
fetch("/openapi.json").then(r => r.json()).then(spec => {
  document.getElementById("intro").append(el("pre", {}, spec.info.description || ""));
  const ops = document.getElementById("ops");
  ops.textContent = "";
  for (const [path, item] of Object.entries(spec.paths)) {
    for (const method of ["get", "post", "put", "delete"]) {
      const op = item[method];
      if (!op) continue;
      const M = method.toUpperCase();
      const d = el("details", {id: op.operationId},
        el("summary", {}, el("span", {class: "m " + M}, M), el("code", {}, path),
           " \\u2014 " + (op.summary || "")));
      if (op.description) d.append(el("p", {}, op.description));
      const params = [...(item.parameters || []), ...(op.parameters || [])]
        .map(p => resolve(spec, p));
      if (params.length) {
        const t = el("table", {}, el("tr", {}, el("th", {}, "parameter"), el("th", {}, "in"),
                                         el("th", {}, "schema")));
        for (const p of params) {
          t.append(el("tr", {}, el("td", {}, el("code", {}, p.name)), el("td", {}, p.in),
                      el("td", {}, el("code", {}, JSON.stringify(p.schema)))));
        }
        d.append(t);
      }
      if (op.requestBody) {
        const s = op.requestBody.content["application/json"].schema;
        d.append(el("p", {}, "Body (application/json):"), el("pre", {}, schemaText(spec, s)));
      }
      const rs = el("ul", {});
      for (const [code, resp] of Object.entries(op.responses)) {
        rs.append(el("li", {}, el("code", {}, code), " " + resolve(spec, resp).description));
      }
      d.append(el("p", {}, "Responses:"), rs);
      ops.append(d);
    }
  }
}).catch(e => { document.getElementById("ops").textContent = "could not load: " + e; });
</script>
</body></html>
"""
