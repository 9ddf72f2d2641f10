"""Capture files are private: created as a root process must create a file a person asked
for (never through a symbolic link, never over a file unless asked, mode 0600, owned by the
user behind ``sudo``). Every path the writers open goes through ``create_private_file``."""

from __future__ import annotations

import os
import stat

from ..privileges import give_to_invoking_user
from .errors import ExportError, ExportExists

_SYMLINK = "it is a symbolic link (conntui never writes through one)"


def create_private_file(path: str | os.PathLike[str], *, overwrite: bool = False) -> int:
    """Open a new capture file for writing, as a root process must; returns the fd.

    * never through a symbolic link at ``path`` (``O_EXCL``/``O_NOFOLLOW``: a link planted
      where the file will be, pointing at ``/etc/shadow``, is an error, its target untouched);
    * never over an existing file unless ``overwrite``: then only a regular file is
      replaced, by unlinking it and creating a new one (never truncating through a hard link
      or into a device or FIFO);
    * mode 0600 (packets and process names are private), owned by the person behind
      ``sudo`` (``SUDO_UID``/``SUDO_GID``) rather than root.

    Symbolic links in the *directories* of ``path`` are followed, as the person typed them.
    Raises ``ExportExists`` or ``ExportError`` (one line).
    """
    name = os.fsdecode(path)
    if overwrite:
        try:
            st: os.stat_result | None = os.lstat(path)
        except FileNotFoundError:
            st = None
        except OSError as e:
            raise ExportError(f"cannot write {name}: {e.strerror or e}") from None
        if st is not None:
            if stat.S_ISLNK(st.st_mode):
                raise ExportError(f"cannot write {name}: {_SYMLINK}")
            if not stat.S_ISREG(st.st_mode):
                raise ExportError(f"cannot write {name}: it exists and is not a regular file")
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as e:
                raise ExportError(f"cannot replace {name}: {e.strerror or e}") from None
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        if os.path.islink(path):
            raise ExportError(f"cannot write {name}: {_SYMLINK}") from None
        raise ExportExists(f"{name} already exists: not overwriting it (--overwrite replaces it)") from None
    except OSError as e:
        raise ExportError(f"cannot write {name}: {e.strerror or e}") from None
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        give_to_invoking_user(fd)
    except OSError as e:
        os.close(fd)
        raise ExportError(f"cannot write {name}: {e.strerror or e}") from None
    return fd
