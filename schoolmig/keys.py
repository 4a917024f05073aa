"""``schoolmig init``: the secrets a single-machine deployment runs with, made on request.

Like ``ssh-keygen``, it is the operator's explicit step: it writes each secret of
``shared.platform.settings.STATE_SECRETS`` to ``<state_dir>/secrets/<name>`` (directory 0700,
files 0600, created with those modes, never overwritten), and nothing else of the tool ever
writes a secret. ``schoolmig up`` and every command on this machine read them from there
unless the environment (or a ``*_FILE`` variable) gives one.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from shared.platform.settings import STATE_SECRETS, secrets_dir


@dataclass(frozen=True)
class Made:
    name: str
    path: Path
    created: bool
    """False: the file was there already and is kept as it is."""


def init_secrets(state_dir: Path) -> list[Made]:
    """Each missing secret made (32 random bytes, URL-safe), each present one kept."""
    folder = secrets_dir(state_dir)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder.chmod(0o700)
    made = []
    for name in STATE_SECRETS:
        path = folder / name
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            made.append(Made(name, path, created=False))
            continue
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
        made.append(Made(name, path, created=True))
    return made
