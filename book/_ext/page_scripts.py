"""Each script of a page once: sphinx-thebe registers its configuration script (``const THEBE_JS_URL``)
again on every ``env-before-read-docs``, and a second ``const`` declaration is a JavaScript error on
every page.  This handler drops repeated script entries before the page is written."""

from __future__ import annotations


def unique_scripts(app, pagename: str, templatename: str, context: dict, doctree) -> None:
    seen, kept = set(), []
    for script in context.get("script_files", []):
        key = (str(getattr(script, "filename", script)), getattr(script, "attributes", {}).get("body"))
        if key not in seen:
            seen.add(key)
            kept.append(script)
    context["script_files"] = kept


def setup(app):
    app.connect("html-page-context", unique_scripts)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
