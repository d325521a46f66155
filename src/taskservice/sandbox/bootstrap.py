"""The program that runs first in every sandbox container, under docker-init, as the sandbox user.

The container's command is ``python3 -I -S -c <this file's source>`` (``protocol.BOOTSTRAP``), so
it uses the standard library only and runs on any Python 3 an image has (3.11 and later). The
worker imports it for its constants and ``name_problem``; ``main`` runs only in a container.

1. Before its task comes (a pooled container waits here): it makes itself undumpable, so that
   the program, though it runs as the same user, can neither trace it nor read its memory, and
   a child subreaper, so that whatever the program leaves running stays its descendant (where
   the kernel has subreapers: gVisor has none).
2. From fd 0, with raw reads (a buffered reader would swallow the start of the program's
   stdin): the header line, the code, the files. It writes them to /tmp with O_EXCL and
   O_NOFOLLOW, refusing any name outside the rules (the API's, ``task_files``: a file may not
   take the place of the code file or of ``out``), and makes the empty folder ``out``.
3. It runs the interpreter as its child, with fds 0, 1 and 2 inherited (the rest of fd 0 is the
   program's stdin), and passes on the signals docker-init sends it.
4. Once the program has ended, it kills every other process in the container and reaps them
   all: nothing can write to the output or to /tmp/out any more. Then it writes the trailer to
   fd 1: the marker, which holds the nonce the worker sent in the header (the program never
   sees it), a record per regular file in /tmp/out (one folder level; no symlink is followed, no
   FIFO opened for long), within the caps, and an end record. It exits with the program's
   status, 128 + N for a program killed by signal N, as docker-init reports one.
"""

import _signal  # signal without its enums: importing the enum module costs ~7 ms of CPU
import os
import stat
import struct
import sys
import time

WORKDIR = "/tmp"
OUT_FOLDER = "out"
MAX_NAME_BYTES = 255
HEADER_LIMIT = 256
MARKER_PREFIX = b"\x00\x00taskservice-artifacts "
FILE_RECORD, TRUNCATED_RECORD, END_RECORD = b"F", b"T", b"E"
NAME_SIZE = struct.Struct(">H")
CONTENT_SIZE = struct.Struct(">Q")
CHUNK = 65536
PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER = 4, 36
WAIT_ALL = 0x40000000  # Linux's __WALL: children made by clone() without SIGCHLD too
FORWARDED_SIGNALS = (
    "SIGHUP SIGINT SIGQUIT SIGTERM SIGUSR1 SIGUSR2 SIGALRM SIGWINCH SIGCONT SIGTSTP SIGTTIN SIGTTOU"
)


def marker(nonce: str) -> bytes:
    return MARKER_PREFIX + nonce.encode("ascii") + b"\n"


def name_problem(name):
    """Why ``name`` may not be a task file's or an artifact's name, or None: relative, one or
    two parts, none empty, "." or "..", no control character, at most 255 bytes of UTF-8."""
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return "is not UTF-8"
    if not name or size > MAX_NAME_BYTES:
        return f"is empty or longer than {MAX_NAME_BYTES} bytes"
    if any(ord(char) < 32 or ord(char) == 127 for char in name):
        return "holds a control character"
    parts = name.split("/")
    if name.startswith("/") or len(parts) > 2 or any(p in ("", ".", "..") for p in parts):
        return "is absolute, more than one folder deep, or has an empty, '.' or '..' part"
    return None


def file_problem(name, code_name):
    """Why ``name`` may not be a task file's name beside the code file ``code_name``, or None:
    ``name_problem``'s rules, and not in the place of the code file or of ``out``."""
    problem = name_problem(name)
    top = name.partition("/")[0]
    if problem is None and top in (code_name, OUT_FOLDER):
        return f"takes the place of {top!r}, which the sandbox uses itself"
    return problem


def fail(message):
    sys.stderr.write(f"sandbox bootstrap: {message}\n")
    sys.stderr.flush()
    os._exit(1)


def read_exactly(size):
    data = bytearray()
    while len(data) < size:
        chunk = os.read(0, min(size - len(data), CHUNK))
        if not chunk:
            fail("input ended early")
        data += chunk
    return bytes(data)


def read_header():
    """The sizes of the code and of the files block, the artifacts' caps, the nonce."""
    header = b""
    while not header.endswith(b"\n"):
        byte = os.read(0, 1)
        if not byte or len(header) > HEADER_LIMIT:
            fail("no header line")
        header += byte
    try:
        code_size, files_size, max_artifacts, max_artifact_bytes, nonce = header.split()
        return int(code_size), int(files_size), int(max_artifacts), int(max_artifact_bytes), nonce
    except ValueError:
        fail("a malformed header line")


def write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def write_new(name, size, folder_fd):
    """Creates ``name`` in ``folder_fd`` and fills it with the next ``size`` bytes of input."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(name, flags, 0o600, dir_fd=folder_fd)
    except OSError as error:
        fail(f"cannot create {name!r}: {error.strerror}")
    while size:
        chunk = read_exactly(min(size, CHUNK))
        try:
            write_all(fd, chunk)
        except OSError as error:
            fail(f"cannot write {name!r}: {error.strerror}")
        size -= len(chunk)
    os.close(fd)


def open_folder(name, folder_fd, create=False):
    if create:
        try:  # noqa: SIM105 - contextlib would cost the bootstrap one more import
            os.mkdir(name, 0o700, dir_fd=folder_fd)
        except FileExistsError:
            pass
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    return os.open(name, flags, dir_fd=folder_fd)


def write_files(files_size, workdir_fd, code_name):
    while files_size > 0:
        name_size = NAME_SIZE.unpack(read_exactly(NAME_SIZE.size))[0]
        raw_name = read_exactly(name_size)
        size = CONTENT_SIZE.unpack(read_exactly(CONTENT_SIZE.size))[0]
        files_size -= NAME_SIZE.size + name_size + CONTENT_SIZE.size + size
        name = raw_name.decode("utf-8", "surrogateescape")
        problem = file_problem(name, code_name)
        if problem or files_size < 0:
            fail(f"refused the file {name!r}: {problem or 'its size overruns the block'}")
        folder, _, base = name.rpartition("/")
        try:
            folder_fd = open_folder(folder, workdir_fd, create=True) if folder else workdir_fd
        except OSError as error:
            fail(f"cannot make the folder of {name!r}: {error.strerror}")
        write_new(base, size, folder_fd)
        if folder:
            os.close(folder_fd)


def entries(folder_fd):
    """(name, lstat) of each entry of a folder."""
    for name in os.listdir(folder_fd):
        try:
            yield name, os.stat(name, dir_fd=folder_fd, follow_symlinks=False)
        except OSError:
            continue


def list_artifacts(out_fd):
    """(name, size) of each regular file in out/ and its folders, by name; skips the rest."""
    found = []
    for entry, info in entries(out_fd):
        if stat.S_ISREG(info.st_mode):
            found.append((entry, info.st_size))
        elif stat.S_ISDIR(info.st_mode):
            try:
                folder_fd = open_folder(entry, out_fd)
            except OSError:
                continue
            for inner, inner_info in entries(folder_fd):
                if stat.S_ISREG(inner_info.st_mode):
                    found.append((entry + "/" + inner, inner_info.st_size))
            os.close(folder_fd)
    return sorted((name, size) for name, size in found if name_problem(name) is None)


def emit_file(name, size, out_fd):
    """One file record; False (and nothing written) when the file is not a regular one."""
    folder, _, base = name.rpartition("/")
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        folder_fd = open_folder(folder, out_fd) if folder else out_fd
        fd = os.open(base, flags, dir_fd=folder_fd)
    except OSError:
        return False
    if folder:
        os.close(folder_fd)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_size != size:
        os.close(fd)
        return False
    raw_name = name.encode("utf-8")
    write_all(1, FILE_RECORD + NAME_SIZE.pack(len(raw_name)) + raw_name + CONTENT_SIZE.pack(size))
    while size:
        chunk = os.read(fd, min(size, CHUNK)) or bytes(min(size, CHUNK))  # never short
        write_all(1, chunk)
        size -= len(chunk)
    os.close(fd)
    return True


def emit_trailer(nonce, max_artifacts, max_artifact_bytes, out_fd):
    # The program may have left fd 1's shared file description non-blocking.
    os.set_blocking(1, True)
    write_all(1, marker(nonce))
    truncated = False
    count = total = 0
    for name, size in list_artifacts(out_fd) if out_fd is not None else ():
        if count >= max_artifacts or total + size > max_artifact_bytes:
            truncated = True
        elif emit_file(name, size, out_fd):
            count += 1
            total += size
    write_all(1, (TRUNCATED_RECORD if truncated else b"") + END_RECORD)


def end_everything_else(subreaper):
    """Kills every process but this one and docker-init, and waits until they are gone.

    As a subreaper, each is a child by then: reaps them, killing again after each reaping, for
    those forked meanwhile. Where there are no subreapers (gVisor), docker-init reaps them, and
    /proc shows when only zombies are left."""
    while True:
        try:  # noqa: SIM105
            os.kill(-1, _signal.SIGKILL)
        except ProcessLookupError:
            pass
        if not subreaper:
            if not others_alive():
                return
            time.sleep(0.001)
            continue
        try:
            os.waitpid(-1, WAIT_ALL)
        except ChildProcessError:
            return


def others_alive():
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) not in (1, os.getpid()):
            try:
                with open(f"/proc/{entry}/stat", "rb") as stat_file:
                    if stat_file.read().rpartition(b")")[2].split()[0] != b"Z":
                        return True
            except (OSError, IndexError):
                continue  # gone meanwhile
    return False


def main():
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0):
        fail(f"prctl failed: {os.strerror(ctypes.get_errno())}")
    subreaper = libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0  # not under gVisor
    if os.getppid() != 1:  # kill(-1) below must only ever see a container's processes
        fail("not started by the container's init")
    child = None

    def forward(number, _frame):
        if child is None:
            os._exit(128 + number)  # before the program: as if the signal had killed us
        if child > 0:
            os.kill(child, number)

    for name in FORWARDED_SIGNALS.split():
        _signal.signal(getattr(_signal, name), forward)

    code_size, files_size, max_artifacts, max_artifact_bytes, nonce = read_header()
    workdir_fd = os.open(WORKDIR, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    code_name = sys.argv[1].rpartition("/")[2]
    write_new(code_name, code_size, workdir_fd)
    write_files(files_size, workdir_fd, code_name)
    # Empty, so that only what the program writes there comes back: no file may be in it.
    os.close(open_folder(OUT_FOLDER, workdir_fd, create=True))
    count = int(sys.argv[2])
    command = [*sys.argv[3 : 3 + count], sys.argv[1], *sys.argv[3 + count :]]
    try:
        child = os.posix_spawnp(command[0], command, os.environ)
    except OSError as error:
        fail(f"cannot run {command[0]}: {error.strerror}")
    while True:
        pid, status = os.waitpid(-1, WAIT_ALL)  # orphans of the program come here too
        if pid == child:
            break
    child = -1  # ended: signals from now on are ignored
    end_everything_else(subreaper)
    try:
        out_fd = open_folder(OUT_FOLDER, workdir_fd)
    except OSError:
        out_fd = None  # removed, or replaced by a symlink or a file: no artifacts
    emit_trailer(nonce.decode("ascii"), max_artifacts, max_artifact_bytes, out_fd)
    os._exit(128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))


if __name__ == "__main__":
    main()
