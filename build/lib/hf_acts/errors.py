"""One-line errors for the command-line entry points (``hf-acts`` and the ``finetune/`` scripts).

A user's first failures (the Hub unreachable, an unknown model or activation, an output folder in the way, bad JSON
in ``--act-kwargs``) end in one line on stderr saying what is wrong and what to do, and exit status 1. ``--debug``
(or ``HF_ACTS_DEBUG=1``) shows the full traceback instead.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _chain(error: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    while error is not None and error not in chain:
        chain.append(error)
        error = error.__cause__ or error.__context__
    return chain


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _hub_message(chain: list[BaseException]) -> str | None:
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled, RepositoryNotFoundError

    for e in chain:
        if isinstance(e, RepositoryNotFoundError):
            return f"no Hub repository {e.response.url if e.response is not None else ''} ({_first_line(e)})"
    if not any(isinstance(e, LocalEntryNotFoundError | OfflineModeIsEnabled)
               or (isinstance(e, ConnectionError) and "Hub" in str(e)) for e in chain):
        return None
    text = " ".join(str(e) for e in chain)
    found = (re.search(r"huggingface\.co/(?:datasets/)?(?!docs/)([\w.-]+/[\w.-]+)", text)
             or re.search(r"reach '([^']+)'", text))
    what = f"'{found.group(1)}'" if found else "the model or dataset"
    why = "HF_HUB_OFFLINE=1 is set" if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes") \
        else "the Hugging Face Hub cannot be reached"
    return (f"cannot load {what}: it is not in the local cache and {why}. Run once with network access to cache it, "
            "pass a local folder or file instead (timm weights: or leave out --pretrained)")


def user_message(error: BaseException) -> str:
    """The one line a command prints for ``error``."""
    chain = _chain(error)
    hub = _hub_message(chain)
    if hub:
        return hub
    match = re.match(r"Unknown model \((.+)\)", str(error))
    if isinstance(error, RuntimeError) and match:
        return (f"unknown timm model {match.group(1)!r} (see `hf-acts list` for the hf-acts ones and "
                "timm.list_models() for timm's)")
    if isinstance(error, KeyError) and error.args:
        return str(error.args[0])
    if isinstance(error, ValueError | FileNotFoundError | FileExistsError):
        return _first_line(error)
    return f"{type(error).__name__}: {_first_line(error)}"


def json_object(text: str, flag: str) -> dict[str, Any]:
    """``text`` parsed as a JSON object; ``ValueError`` naming ``flag`` otherwise."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{flag} is not valid JSON ({e.msg} at character {e.pos}): {text!r}; "
                         "example: '{\"groups\": 2}'") from e
    if not isinstance(value, dict):
        raise ValueError(f"{flag} must be a JSON object such as '{{\"groups\": 2}}', got {text!r}")
    return value


def empty_output_dir(path: str | Path, flag: str = "--output-dir") -> Path:
    """``path``, refusing (``FileExistsError``) a folder that already holds files."""
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise FileExistsError(f"{flag} {path} already exists and is not empty: choose another folder or remove it")
    return path


def run(main: Callable[[list[str]], Any], prog: str, argv: list[str] | None = None) -> None:
    """Call ``main(argv)``; turn an exception into one line on stderr and exit status 1 (unless ``--debug``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("HF_ACTS_DEBUG") == "1"
    try:
        main([a for a in argv if a != "--debug"])
    except Exception as e:  # noqa: BLE001 - every error of a command ends as one line
        if debug:
            raise
        print(f"{prog}: error: {user_message(e)} (--debug shows the traceback)", file=sys.stderr)
        raise SystemExit(1) from None
