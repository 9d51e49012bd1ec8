"""What an installed plugin executable runs first: hand the call to the warm helper, else run it here.

On every plugin call, so it imports almost nothing: `posix` (built in) rather than `os`, `_socket`
rather than `socket`, no json. Under `python -IS` those imports would cost ~35 ms, more than the call.
The helper (`cniplug helper`, helper.py) is never required: without it, or if it cannot be reached,
the plugin runs standalone in this process, with the same result.

Wire format (one connection per call; each side shuts its writing end when done):
  request:  MAGIC, then plugin, argv and environment as length-prefixed fields (argv words and
            "KEY=value" pairs each NUL-terminated: neither can contain NUL), then stdin to the end.
  answer:   "A", exit status, then stdout and stats as length-prefixed fields, then stderr to the end;
            or "D" and a reason: the helper declines (the caller is in another network or mount
            namespace, ...) before running anything, and the client runs the call itself.
"""

import posix
import sys
from _socket import AF_UNIX, SHUT_WR, SOCK_CLOEXEC, SOCK_STREAM, socket

# The protocol version is in the path: after an upgrade, a helper still running the old code is not
# found (the plugins run standalone until it is restarted) rather than asked in a language it misreads.
SOCKET = "/run/cniplug/helper-3.sock"
MAGIC = b"cniplug-helper/3\n"
STATS_ENV = "CNIPLUG_HELPER_STATS"  # set (by `cniplug bench`): the client prints the helper's CPU/RSS on stderr


FLAGS = {"--dry-run": "dry_run", "--version": "version", "--help": "help", "-h": "help"}
LANGS = ("en", "zh")  # the languages of the scripts' explanations (i18n.py)
USAGE = ("usage: {prog} [--dry-run] [--lang en|zh] [--version] [--help]\n"
         "  A CNI plugin: the runtime passes CNI_* variables and the network config on stdin, no arguments.\n"
         "  --dry-run     print the bash script the call would run, change nothing\n"
         "  --lang en|zh  language of the script's explanations (default: $CNIPLUG_LANG, else en)\n"
         "  --version     print the supported CNI versions\n")


def parse_options(argv: list[str], env_lang: str = "") -> tuple[dict[str, str], str]:
    """A plugin's command line -> (options, problem).

    Options: "dry_run", "version", "help" ("1" or ""), "lang" (en or zh; `env_lang`, the value of
    CNIPLUG_LANG, when valid, else en). `problem` is "" or one line saying what is wrong: an unknown
    argument or a bad --lang value. The rule (issue #12 item 1): runtimes pass no arguments, people
    pass only these, and anything else is refused before stdin is read or anything runs.
    """
    opts = {"dry_run": "", "version": "", "help": "", "lang": env_lang if env_lang in LANGS else "en"}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in FLAGS:
            opts[FLAGS[arg]] = "1"
        elif arg == "--lang" or arg.startswith("--lang="):
            if arg == "--lang":
                i += 1
                value = argv[i] if i < len(argv) else ""
            else:
                value = arg[len("--lang="):]
            if value not in LANGS:
                return opts, f"--lang: expected one of {', '.join(LANGS)}, got {value!r}"
            opts["lang"] = value
        else:
            return opts, f"unknown argument {arg!r}"
        i += 1
    return opts, ""


def pack(*fields: bytes) -> bytes:
    return b"".join(len(f).to_bytes(4, "big") + f for f in fields)


def unpack(data: bytes, count: int) -> list[bytes]:
    """`count` length-prefixed fields, then the rest of `data` as one more. ValueError if cut short."""
    fields, pos = [], 0
    for _ in range(count):
        if pos + 4 > len(data):
            raise ValueError("message cut short")
        size = int.from_bytes(data[pos:pos + 4], "big")
        pos += 4
        if pos + size > len(data):
            raise ValueError("message cut short")
        fields.append(data[pos:pos + size])
        pos += size
    fields.append(data[pos:])
    return fields


def encode_request(plugin: str, argv: list[bytes], environ: dict[bytes, bytes], stdin: bytes) -> bytes:
    env = b"".join(k + b"=" + v + b"\0" for k, v in environ.items())
    return MAGIC + pack(plugin.encode(), b"".join(a + b"\0" for a in argv), env) + stdin


def decode_request(data: bytes) -> tuple[str, list[str], dict[str, str], bytes]:
    import os  # helper side: loaded there anyway

    if not data.startswith(MAGIC):
        raise ValueError("not a cniplug helper request (restart the helper after upgrading cniplug)")
    plugin, argv, env, stdin = unpack(data[len(MAGIC):], 3)
    environ = dict(os.fsdecode(pair).partition("=")[::2] for pair in env.split(b"\0")[:-1])
    return plugin.decode(), [os.fsdecode(a) for a in argv.split(b"\0")[:-1]], environ, stdin


class Declined(Exception):
    """The helper did not run the call (its reason is the message): run it here instead."""


def encode_answer(rc: int, stdout: bytes, stderr: bytes, stats: bytes = b"") -> bytes:
    return b"A" + (rc & 0xFFFFFFFF).to_bytes(4, "big") + pack(stdout, stats) + stderr


def encode_decline(reason: str) -> bytes:
    return b"D" + reason.encode()


def decode_answer(data: bytes) -> tuple[int, bytes, bytes, bytes]:
    """(exit status, stdout, stats, stderr). Raises Declined, or ValueError for a cut or unknown answer."""
    if data[:1] == b"D":
        raise Declined(data[1:].decode(errors="replace"))
    if data[:1] != b"A" or len(data) < 5:
        raise ValueError("answer cut short")
    rc = int.from_bytes(data[1:5], "big", signed=True)
    stdout, stats, stderr = unpack(data[5:], 2)
    return rc, stdout, stats, stderr


def read_all(sock: socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def helper_socket(path: str = SOCKET) -> socket | None:
    """A connection to the helper if one is listening on a root-owned, root-only socket, else None."""
    try:
        st = posix.lstat(path)
    except OSError:
        return None
    if st.st_mode & 0o170000 != 0o140000 or st.st_uid != 0 or st.st_mode & 0o077 or posix.geteuid() != 0:
        return None
    sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        return None
    return sock


def through_helper(sock: socket, plugin: str, stdin: bytes) -> tuple[int, bytes, bytes, bytes] | None:
    """Send the call, wait for the answer; None if the helper went away before answering.
    Raises Declined when the helper refused to run it (nothing was run)."""
    try:
        argv = [a.encode(sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()) for a in sys.argv[1:]]
        sock.sendall(encode_request(plugin, argv, dict(posix.environ), stdin))
        sock.shutdown(SHUT_WR)
        return decode_answer(read_all(sock))
    except (OSError, ValueError):
        return None
    finally:
        sock.close()


def write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[posix.write(fd, data):]


def main(plugin: str, module: str, auto: dict[str, object] | None = None) -> None:
    """Run one plugin call: through the helper when one listens, else here.

    `auto` (from the executable `cniplug install` wrote): {"socket": path, "idle": seconds, "paths": import
    path}; the helper socket this install uses, and when a call finds no helper there, one is started
    (autostart.py) after this call is answered. None (or `cniplug install --no-auto-helper`): the shared
    SOCKET, never started. CNIPLUG_HELPER_SOCKET overrides the socket and disables the start;
    CNIPLUG_NO_HELPER=1 runs every call here.
    """
    environ = posix.environ  # bytes keys and values
    # fd 0 or 1 closed (sys.stdin/stdout None): read nothing, and the answer is lost, so the status is 1.
    closed = sys.stdout is None
    if closed:
        sys.stdout = open("/dev/null", "w")
    if sys.stdin is None:
        sys.stdin = open("/dev/null")
    override = environ.get(b"CNIPLUG_HELPER_SOCKET")
    default = str(auto["socket"]) if auto else SOCKET
    path = override.decode(errors="surrogateescape") if override else default
    opts, problem = parse_options(sys.argv[1:])
    # What is answered without stdin (usage, --help, --version) is answered here: stdin is not read.
    local = problem or opts["help"] or opts["version"] or environ.get(b"CNIPLUG_NO_HELPER")
    sock = None if local else helper_socket(path)
    start = bool(auto and auto.get("idle") and sock is None and not local and not override)
    if sock is not None:
        stdin = sys.stdin.buffer.read(1 << 20 | 1)
        declined = False
        try:
            answer = through_helper(sock, plugin, stdin)
        except Declined:  # e.g. called from another network namespace: the helper would run it in its own
            answer, declined = None, True
        if answer is not None:
            rc, out, stats, err = answer
            if stats:  # sent only when the call's environment has STATS_ENV
                err += b"cniplug-helper-stats " + stats + b"\n"
            for fd, data in ((2, err), (1, out)):
                try:
                    write_all(fd, data)
                except OSError:  # a closed stdout or stderr: what could not be written is lost, as in quick_exit
                    rc = rc or 1
            if closed:
                rc = rc or 1
            posix._exit(rc & 0xFF)  # all written straight to the fds; skipping interpreter teardown saves ~3 ms
        # Declined: nothing ran, so run it here. Went away mid-call: running again here is safe for every
        # verb but ADD, whose half-done work the runtime cleans up with DEL after an error.
        if environ.get(b"CNI_COMMAND") == b"ADD" and not declined:
            from cniplug.skel import request_version
            from cniplug.spec import ERR_TRY_AGAIN_LATER, CNIError

            died = CNIError(ERR_TRY_AGAIN_LATER, "cniplug helper died during ADD",
                            "retry; the runtime's DEL cleans up what was done")
            write_all(1, (died.to_json(request_version(stdin)) + "\n").encode())
            sys.exit(1)
        import io

        sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))
    from importlib import import_module

    code: object = 0
    try:
        import_module(module).main()
    except SystemExit as exc:
        code = exc.code
    finally:
        if start and auto:  # answered (stdout written); now leave a helper for the next calls
            sys.stdout.flush()
            from cniplug import autostart

            paths = auto.get("paths")
            autostart.start(path, int(str(auto["idle"])), paths if isinstance(paths, list) else [], sys.argv[0],
                            str(auto.get("metrics") or ""))
    quick_exit((code or 1) if closed else code)


def quick_exit(code: object) -> None:
    """Exit as sys.exit(code) would, without tearing down the interpreter: a standalone call has loaded
    ~150 modules, and freeing them one by one costs ~9 ms (measured: `import cniplug.plugins.bridge` then
    exit, 53.5 ms against 44.7 ms with os._exit). What the teardown is for still happens: the atexit
    handlers run (logging flushes and closes the log file there) and stdout and stderr are flushed."""
    import atexit

    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # sys.exit("message"): printed on stderr, status 1
        sys.stderr.write(f"{code}\n")
        status = 1
    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed pipe: what could not be written is lost either way
        status = status or 1
    posix._exit(status & 0xFF)
