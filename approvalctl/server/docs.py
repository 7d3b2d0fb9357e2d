"""The /docs page: Swagger UI from assets shipped in the package (no CDN).

The assets are swagger-ui-dist's, unmodified, under approvalctl/static/swagger-ui/ with their
Apache-2.0 LICENSE and NOTICE (VERSION says which release and how to update). The page loads
them from /docs/assets/, then `docs-init.js` fetches /openapi.json and points "try it out" at
the server the page came from (the spec's own `servers` entry is the default address). The
Authorize button takes the API key as X-API-Key or as a bearer token (the spec's security
schemes); Swagger UI keeps it in the page only, not in storage.
"""

from __future__ import annotations

from importlib import resources

DOCS_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>approvalctl API</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css">
<link rel="icon" type="image/png" href="/docs/assets/favicon-32x32.png">
</head>
<body>
<noscript>Swagger UI needs JavaScript; the machine-readable document is
<a href="/openapi.json">/openapi.json</a>.</noscript>
<div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script src="/docs/assets/docs-init.js"></script>
</body></html>
"""

INIT_JS = """"use strict";
fetch("/openapi.json").then(function (r) { return r.json(); }).then(function (spec) {
  spec.servers = [{url: window.location.origin}];
  window.ui = SwaggerUIBundle({
    spec: spec,
    dom_id: "#swagger-ui",
    deepLinking: true,
    displayOperationId: true,
    persistAuthorization: false,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout"
  });
});
"""

#: name -> media type of every file /docs/assets/ serves; nothing else is reachable
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
    "LICENSE": "text/plain; charset=utf-8",
    "NOTICE": "text/plain; charset=utf-8",
    "swagger-ui-bundle.js.LICENSE.txt": "text/plain; charset=utf-8",
    "docs-init.js": "text/javascript; charset=utf-8",
}


def asset(name: str) -> tuple[bytes, str] | None:
    """(content, media type) of a /docs asset, or None for any other name."""
    if name not in ASSETS:
        return None
    if name == "docs-init.js":
        return INIT_JS.encode(), ASSETS[name]
    # one name a step: Traversable.joinpath takes a single name on Python 3.10
    data = (resources.files("approvalctl").joinpath("static").joinpath("swagger-ui")
            .joinpath(name).read_bytes())
    return data, ASSETS[name]
