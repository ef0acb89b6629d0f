"""No path of the server in what a client reads: messages, failure reasons and log tails name files by
their base name only.

A path of the server (the model store, a snapshot folder, the results or work folder, the Python
installation) tells an author nothing they can act on, and tells an attacker how the server is laid out.
The file's name is kept: "config.json is truncated" is something an author can fix.
"""

from __future__ import annotations

import re

# An absolute path of at least two parts ("/a/b", "~/a/b"), not inside a URL or a relative path: the
# character before it is none of a word character, ':', '/', '.', '~' or '-'. A part stops at white
# space, quotes, brackets and the punctuation that follows a path in a message.
_PATH = re.compile(r"(?<![\w:/.~-])~?(?:/[^\s/'\"`()\[\]{}<>,;:|]+){2,}/?")


def strip_server_paths(text: str) -> str:
    """``text`` with every absolute path replaced by its last part."""
    return _PATH.sub(_base_name, text)


def _base_name(match: re.Match[str]) -> str:
    return match.group(0).rstrip("/").rsplit("/", 1)[-1]
