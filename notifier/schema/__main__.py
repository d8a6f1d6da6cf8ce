"""``python -m notifier.schema``: write each schema's file from its definitions (after a change
to ``notifier.events`` or ``notifier.eventtypes``; tests/core/test_schema.py says when)."""

from notifier.schema import SCHEMAS, path, text

for name in SCHEMAS:
    path(name).write_text(text(name), encoding="utf-8")
    print(f"wrote {path(name)}")
