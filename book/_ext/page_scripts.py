"""Each script of a page once: sphinx-thebe (and sphinx-togglebutton) add their inline scripts both to the
registry (file name ``""``) and to the builder (file name ``None``), which Sphinx then counts as two
scripts; a second ``const THEBE_JS_URL`` is a JavaScript error on every page.  This handler drops
repeated script entries before the page is written."""

from __future__ import annotations


def unique_scripts(app, pagename: str, templatename: str, context: dict, doctree) -> None:
    seen, kept = set(), []
    for script in context.get("script_files", []):
        key = (str(getattr(script, "filename", script) or ""), getattr(script, "attributes", {}).get("body"))
        if key not in seen:
            seen.add(key)
            kept.append(script)
    context["script_files"] = kept


def setup(app):
    app.connect("html-page-context", unique_scripts)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
