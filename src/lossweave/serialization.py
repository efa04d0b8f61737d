"""Saving the functions inside terms and metrics.

A registered or importable named function is saved by name. A lambda is saved as Keras saves a
`Lambda` layer's function: as bytecode, loadable only with `safe_mode=False`, and run on load with
the globals of the module that defined it (so `ops.mean` inside it still resolves). A named
function that Keras could not find again by name (not registered) fails at save time.

>>> import keras
>>> config = serialize_function(keras.losses.mean_squared_error, owner="term 'mse'")
>>> deserialize_function(config, owner="term 'mse'") is keras.losses.mean_squared_error
True
"""

import sys
import types

import keras

_LAMBDA = "__lambda__"


def _how_to_register(name):
    return (
        f"Register it with @keras.saving.register_keras_serializable(package=...) on {name!r} "
        "at module level, and import that module before loading (or pass it in custom_objects)."
    )


def serialize_function(fn, owner):
    """Config of `fn` for a `.keras` file; fails now for a function Keras could not find on load."""
    config = keras.saving.serialize_keras_object(fn)
    if isinstance(config, dict) and config.get("class_name") == _LAMBDA:
        config["module"] = fn.__module__
        return config
    try:
        keras.saving.deserialize_keras_object(config)
    except Exception:
        name = getattr(fn, "__qualname__", repr(fn))
        raise ValueError(
            f"{owner}: function {name!r} is not registered with Keras, so a saved model could "
            f"not find it again. {_how_to_register(name)}"
        ) from None
    return config


def deserialize_function(config, owner):
    """Inverse of `serialize_function`; names the function and the fix when it cannot be found."""
    try:
        fn = keras.saving.deserialize_keras_object(config)
    except ValueError:
        raise
    except Exception as e:  # Keras raises TypeError/AttributeError for an unknown name
        name = config.get("config") if isinstance(config, dict) else config
        raise ValueError(f"{owner}: cannot load function {name!r} ({e}). {_how_to_register(name)}") from None
    if isinstance(config, dict) and config.get("class_name") == _LAMBDA:
        fn = _with_module_globals(fn, config.get("module"))
    return fn


def _with_module_globals(fn, module):
    globs = {"keras": keras, "ops": keras.ops}
    if module in sys.modules:
        globs.update(vars(sys.modules[module]))
    return types.FunctionType(fn.__code__, globs, fn.__name__, fn.__defaults__, fn.__closure__)
