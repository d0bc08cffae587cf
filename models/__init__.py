"""Deprecated: the old home of what now lives in records/, messages/, rules/ and demo/
(README, "Changes"). Scripts written against it keep working: `import models.payloads`
or `from models.payloads import AcceptRequest` loads the module from its new place (the
same module object), with a DeprecationWarning. New code imports the new places."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType

MOVED = {
    "tables": "records.tables", "types": "records.types", "db": "records.db",
    "schema": "records.schema", "records": "records.changes", "claims": "records.claims",
    "console_auth": "records.console_auth", "api_tables": "records.api_tables",
    "ids": "records.ids", "payloads": "messages.payloads",
    "activity_io": "messages.activity_io", "domain_sweep": "messages.domain_sweep",
    "search_attributes": "messages.search_attributes", "platform": "rules.platform",
    "money": "rules.money", "links": "rules.links", "seed": "demo.seed",
}


class _Moved(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname: str, path: object = None,
                  target: object = None) -> importlib.machinery.ModuleSpec | None:
        name = fullname.removeprefix(f"{__name__}.")
        if name == fullname or name not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        new = MOVED[spec.name.removeprefix(f"{__name__}.")]
        warnings.warn(f"{spec.name} moved to {new}", DeprecationWarning, stacklevel=2)
        return importlib.import_module(new)

    def exec_module(self, module: ModuleType) -> None:
        return None


sys.meta_path.insert(0, _Moved())
