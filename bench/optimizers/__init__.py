"""One module per optimizer; importing this package registers them all (see registry.py).

Every module in this folder is imported; shared pieces (common, hybrid, newton_schulz, ...) simply
register nothing.
"""
import importlib
import pkgutil

for _mod in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_mod.name}")
