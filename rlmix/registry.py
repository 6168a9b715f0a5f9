"""One small name -> object registry (timm's ``register_model`` / ``create_model`` style).

Models, datasets, losses, mixers, rewards and fixed policies each keep a :class:`Registry`, so
they behave alike: registering a taken name raises unless ``override=True``, and an unknown
name raises ``ValueError("unknown <kind> '<name>'; choose one of: a, b, c")``.

Example::

    from rlmix.registry import Registry

    LOSSES = Registry("loss")

    @LOSSES.register("soft_ce")
    def soft_ce(logits, target): ...

    LOSSES.get("soft_ce")  # -> soft_ce
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Objects of one kind under unique names.

    Args:
        kind: what the entries are, used in messages (``"model"``, ``"reward"``...).
        hint: appended to the list of valid names in the unknown-name message
            (e.g. ``" or module:function"``).
    """

    def __init__(self, kind: str, *, hint: str = "") -> None:
        self.kind = kind
        self.hint = hint
        self._entries: dict[str, T] = {}

    def add(self, name: str, obj: T, *, override: bool = False) -> T:
        """Register ``obj`` under ``name``; a taken name raises unless ``override``."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} name must be a non-empty string, got {name!r}")
        if name in self._entries and not override:
            raise ValueError(
                f"{self.kind} '{name}' is already registered; pass override=True to replace it"
            )
        self._entries[name] = obj
        return obj

    def register(self, name: str | None = None, *, override: bool = False) -> Callable[[T], T]:
        """Decorator form of :meth:`add`; the name defaults to the object's ``__name__``."""

        def wrap(obj: T) -> T:
            self.add(name or obj.__name__, obj, override=override)  # type: ignore[attr-defined]
            return obj

        return wrap

    def get(self, name: str) -> T:
        """The entry registered under ``name``."""
        if name not in self._entries:
            raise ValueError(self.unknown(name))
        return self._entries[name]

    def unknown(self, name: object) -> str:
        """The message for an unknown name, listing the valid ones."""
        return f"unknown {self.kind} '{name}'; choose one of: {', '.join(self.names())}{self.hint}"

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)


__all__ = ["Registry"]
