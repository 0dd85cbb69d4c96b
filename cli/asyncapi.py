"""The AsyncAPI documents, generated from the services' FastStream apps (what they consume and emit)."""

import importlib
import json
from pathlib import Path

SERVICE_NAMES = ("intake", "gates", "deployer", "rollback", "ledger", "notifier")


def documents() -> dict[str, str]:
    """{service: AsyncAPI 3.0 JSON}, built from each app without connecting to anything."""
    result = {}
    for name in SERVICE_NAMES:
        app = importlib.import_module(f"services.{name}.app").create_app()
        spec = json.loads(app.schema.to_specification().to_json())
        result[name] = json.dumps(spec, indent=2, sort_keys=True) + "\n"
    return result


def write(folder: Path) -> list[Path]:
    """Write one <service>.json per service into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in documents().items():
        path = folder / f"{name}.json"
        path.write_text(text)
        written.append(path)
    return written
