"""Contain a plugin's failure to that plugin while pluggy calls every hook its own way.

Core code calls hooks through ``pm.hook``, so pluggy orders the implementations
(``tryfirst``, ``trylast``, registration order) and runs ``wrapper=True``
implementations around the others exactly as it documents. What pluggy does not
do is isolation: one raising implementation would stop the rest. So when a
plugin registers, each of its implementations is wrapped once, in place:

- an event hook's implementation logs its exception and returns None, so the
  next plugin still runs and recording and shipping never stop; a wrapper that
  fails lets the call pass through unchanged;
- a registration hook's implementation runs with its plugin's name as the owner
  of what it registers, and any exception becomes one ``PluginError`` line that
  names the plugin.

The wrapping replaces ``HookImpl.function`` (public, but typed ``Final`` by
pluggy): the one place livecam relies on pluggy beyond its call API. The
ordering test in tests/core/test_plugins.py fails loudly if that ever changes.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import pluggy

from livecam.pluginhost.registry import PluginError

log = logging.getLogger("livecam.plugins")

#: The plugin whose registration hook is running (who a ``register`` call is from).
current_owner: ContextVar[str] = ContextVar("current_owner", default="?")

Scope = Callable[[], Any]


def isolate_event(impl: pluggy.HookImpl, hook: str) -> None:
    """Make ``impl`` of event hook ``hook`` log its failure instead of raising it."""

    @contextmanager
    def scope() -> Iterator[None]:
        yield

    def failed(exc: Exception) -> None:
        log.exception("plugin %s failed in %s", impl.plugin_name, hook, exc_info=exc)

    _replace(impl, scope, failed)


def isolate_registration(impl: pluggy.HookImpl, hook: str) -> None:
    """Run ``impl`` of registration hook ``hook`` as its plugin; failures name the plugin."""

    @contextmanager
    def scope() -> Iterator[None]:
        token = current_owner.set(impl.plugin_name)
        try:
            yield
        finally:
            current_owner.reset(token)

    def failed(exc: Exception) -> None:
        if isinstance(exc, PluginError):
            raise exc
        raise PluginError(
            f"plugin {impl.plugin_name}: {hook} failed: {type(exc).__name__}: {exc}"
        ) from None

    _replace(impl, scope, failed)


def _replace(
    impl: pluggy.HookImpl,
    scope: Callable[[], Any],
    failed: Callable[[Exception], None],
) -> None:
    fn = impl.function
    if impl.hookwrapper:
        return  # old-style wrappers run as pluggy runs them, unguarded
    guarded = _guard_wrapper(fn, scope, failed) if impl.wrapper else _guard_call(fn, scope, failed)
    impl.function = guarded  # type: ignore[misc]  # see the module doc


def _guard_call(
    fn: Callable[..., object], scope: Scope, failed: Callable[[Exception], None]
) -> Callable[..., object]:
    @functools.wraps(fn)
    def call(*args: object, **kwargs: object) -> object:
        with scope():
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                failed(exc)
                return None

    return call


def _guard_wrapper(
    fn: Callable[..., Any], scope: Scope, failed: Callable[[Exception], None]
) -> Callable[..., Generator[None, object, object]]:
    """A ``wrapper=True`` implementation guarded step by step. Once it failed, the
    call passes through it: the result (or the exception) from inside goes on."""

    @functools.wraps(fn)
    def wrapper(*args: object, **kwargs: object) -> Generator[None, object, object]:
        with scope():
            try:
                gen = fn(*args, **kwargs)
                next(gen)
            except Exception as exc:  # StopIteration too: it did not yield
                failed(exc)
                return (yield)
        try:
            result = yield
        except BaseException as inner:
            with scope():
                try:
                    gen.throw(inner)
                except StopIteration as stop:
                    return stop.value
                except Exception as exc:
                    if exc is not inner:
                        failed(exc)
                    raise inner from None
            raise inner from None
        with scope():
            try:
                gen.send(result)
            except StopIteration as stop:
                return stop.value
            except Exception as exc:
                failed(exc)
                return result
            gen.close()
            failed(RuntimeError("wrapper yielded a second time"))
        return result

    return wrapper
