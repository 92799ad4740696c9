"""The one line worth printing of jsonargparse's nested error messages.

A value refused inside a class given by ``class_path`` (a DataModule, a callback) reaches the
parser as a "Does not validate against any of the Union subtypes" dump: every subtype jsonargparse
tried, with the reason each failed, nested by key and class. The reason that matters is one of
them (our own classes' ``ValueError``, which names the setting, or jsonargparse's verdict on
one key); :func:`one_line_error` finds it and says where it was set, e.g.
``data.scenario='Task' is not one of 'class', 'task', 'domain'.`` Any other message is left as
it is. ``JSONARGPARSE_DEBUG=true`` still shows the whole dump.
"""

from __future__ import annotations

import re
import textwrap
from typing import NamedTuple

UNION = "Does not validate against any of the Union subtypes"
PARSER_KEY = re.compile(r'Parser key "(?P<key>[^"]+)"(?: element \d+)?:\s*(?P<rest>.*)$')
CLASS_PATH = re.compile(r"Problem with given class_path '(?P<cls>[^']+)':\s*(?P<rest>.*)$")
NOT_ACCEPTED = re.compile(r"Option '(?P<option>[^']+)' is not accepted")
EXPECTED = re.compile(r"Expected a (?P<type>.+?)(?:\. Got value: (?P<value>.*))?$", re.DOTALL)
LITERAL = re.compile(r"typing\.Literal\[(?P<choices>.*)\]$")
IMPORT_FAILED = re.compile(r"No module named|has no attribute|Import path|Unable to import|not a subclass")
# The class jsonargparse tries when a callback's argument is given with no callback before it.
CALLBACK_BASES = ("lightning.Callback", "lightning.pytorch.Callback", "lightning.pytorch.callbacks.Callback")

# How telling a reason is: the highest-scored reason of a union's subtypes is the one printed.
SPECIFIC, OTHER_CLASS, NO_CALLBACK, GENERIC, NONE_TYPE = 4, 3, 2, 1, 0


class Reason(NamedTuple):
    score: int
    text: str


def one_line_error(message: str) -> str:
    """The reason in a jsonargparse union or ``Parser key`` message, with the setting it is about;
    any other ``message`` unchanged (so is one in which no reason is found)."""
    stripped = message.strip()
    if UNION not in stripped and not PARSER_KEY.match(stripped.splitlines()[0] if stripped else ""):
        return message
    reason = _reason(stripped, ())
    return reason.text if reason is not None and reason.score > NONE_TYPE else message


def _split(text: str) -> tuple[str, str]:
    """The first line of ``text`` and the rest, dedented."""
    first, _, rest = text.strip("\n").partition("\n")
    return first.strip(), textwrap.dedent(rest)


def _items(block: str) -> list[str]:
    """The ``- `` items of a dedented block; lines that do not open an item continue the last one."""
    items: list[list[str]] = []
    for line in block.splitlines():
        if line.startswith("- "):
            items.append([line[2:]])
        elif items:
            items[-1].append(line)
    return [first + "\n" + textwrap.dedent("\n".join(rest)) for first, *rest in items]


def _best(texts: list[str], where: tuple[tuple[str, str], ...]) -> Reason | None:
    reasons = [r for r in (_reason(t, where) for t in texts) if r is not None]
    return max(reasons, key=lambda r: r.score, default=None)  # the first of the best-scored


def _reason(text: str, where: tuple[tuple[str, str], ...]) -> Reason | None:
    """The most telling reason in ``text``; ``where`` holds the keys and classes it is nested in."""
    if not text.strip():
        return None
    first, rest = _split(text)
    if match := PARSER_KEY.match(first):
        body = match["rest"] + ("\n" + rest if rest.strip() else "") if match["rest"] else rest
        return _reason(body, (*where, ("key", match["key"])))
    if match := CLASS_PATH.match(first):
        body = match["rest"] + ("\n" + rest if rest.strip() else "") if match["rest"] else rest
        return _reason(body, (*where, ("class", match["cls"])))
    if first.startswith(UNION):
        errors = re.search(r"^Errors:\n(?P<errors>.*?)(?:^Given value type:|\Z)", rest, re.MULTILINE | re.DOTALL)
        return _best(_items(textwrap.dedent(errors["errors"])), where) if errors else None
    if first.startswith("- "):  # reasons listed one after another (a value tried as a path, then as a class)
        return _best(_items(textwrap.dedent(text.strip("\n"))), where)
    return _leaf(" ".join(line.strip() for line in text.strip().splitlines()), where)


def _location(where: tuple[tuple[str, str], ...]) -> str:
    """``(("key", "data"), ("class", "...SplitMNIST"), ("key", "scenario"))`` -> ``data.scenario``;
    a callback's argument as our own messages name it: ``trainer.callbacks: EWC init_args.fisher``."""
    location, cls = "", None
    for kind, name in where:
        if kind == "class":
            cls = name
            continue
        if cls is not None and location.endswith("callbacks"):
            location = f"{location}: {cls.rpartition('.')[2]} init_args.{name}"
        else:
            location = f"{location}.{name}" if location else name
        cls = None
    return location


def _leaf(reason: str, where: tuple[tuple[str, str], ...]) -> Reason:
    location = _location(where)
    cls = where[-1][1] if where and where[-1][0] == "class" else None
    if reason.startswith("Expected a <class 'NoneType'>"):
        return Reason(NONE_TYPE, reason)
    if reason.startswith(("Not a valid subclass of", "Expected a path but")) and cls is None:
        reason = reason.partition(" Subclass types expect")[0]
        return Reason(GENERIC, f"{location}: {reason}" if location else reason)
    if (match := NOT_ACCEPTED.fullmatch(reason)) and cls is not None:
        option = match["option"]
        if cls in CALLBACK_BASES:
            return Reason(NO_CALLBACK, _no_callback_takes(location, option))
        hint = (f" (--{location}.{option} sets the last callback given before it)"
                if location.endswith("callbacks") else "")
        return Reason(OTHER_CLASS, f"{location}: {cls.rpartition('.')[2]} has no option {option!r}{hint}.")
    if cls is not None and IMPORT_FAILED.search(reason):
        return Reason(SPECIFIC, f"{location}: class_path {cls!r} cannot be used: {reason}")
    if (match := EXPECTED.fullmatch(reason)) and location:
        kind = match["type"]
        if literal := LITERAL.fullmatch(kind):
            kind = f"one of {literal['choices']}"
        else:
            kind = "a valid " + re.sub(r"<class '([\w.]+)'>", r"\1", kind)
        value = "" if match["value"] is None else f"={match['value']!r}"
        return Reason(SPECIFIC, f"{location}{value} is not {kind}.")
    if location and not reason.startswith(location.partition(":")[0]):
        return Reason(SPECIFIC, f"{location}: {reason}")
    return Reason(SPECIFIC, reason)  # our own classes' messages name their setting


def _no_callback_takes(location: str, option: str) -> str:
    """``--trainer.callbacks.lam 5`` with no callback before it: say so, and which methods take ``lam``."""
    import inspect

    import lightning_cl.methods as methods

    takers = sorted(name for name in methods.__all__
                    if option in inspect.signature(getattr(methods, name).__init__).parameters)
    example = ""
    if takers:
        names = takers[0] if len(takers) == 1 else f"{', '.join(takers[:-1])} and {takers[-1]}"
        example = (f", e.g. --trainer.callbacks+=lightning_cl.methods.{takers[0]} "
                   f"({names} {'takes' if len(takers) == 1 else 'take'} {option})")
    return (f"--{location}.{option} sets an argument of the last callback given before it, and there is none: "
            f"add the callback first{example}.")
