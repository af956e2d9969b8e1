"""Name -> class registries, used as decorators (Dassl's ``Registry`` interface)."""


class Registry:
    """Maps a class or function name to the object, e.g. ``@TRAINER_REGISTRY.register()``."""

    def __init__(self, name):
        self._name = name
        self._obj_map = {}

    def _do_register(self, name, obj, force=False):
        if name in self._obj_map and not force:
            raise KeyError(f'An object named "{name}" was already registered in the "{self._name}" registry')
        self._obj_map[name] = obj

    def register(self, obj=None, force=False):
        if obj is None:
            def wrapper(fn_or_class):
                self._do_register(fn_or_class.__name__, fn_or_class, force=force)
                return fn_or_class

            return wrapper
        self._do_register(obj.__name__, obj, force=force)
        return obj

    def get(self, name):
        if name not in self._obj_map:
            raise KeyError(
                f'Object name "{name}" does not exist in the "{self._name}" registry; '
                f"registered: {', '.join(sorted(self._obj_map)) or '(none)'}"
            )
        return self._obj_map[name]

    def registered_names(self):
        return list(self._obj_map.keys())
