"""Apache httpd's configuration as the server reads it, for its MPM's directives:
pure functions on text, the files handed in by the caller.

The rules followed (server/config.c, server/core.c, the httpd manual's
"Configuration Files" and core directives): one directive per line, a trailing
backslash continues it, `#` starts a comment only at the start of a line; ${VAR}
is the environment's (Debian's apache2ctl exports APACHE_RUN_DIR and the rest from
/etc/apache2/envvars); `Include` and `IncludeOptional` take a file, a directory or
a glob, relative to ServerRoot; `<IfModule [!]NAME>` holds when the module
(mpm_event_module, or its file event.c / mod_mpm_event.c) is loaded,
`<IfDefine [!]NAME>` when -D NAME was given; directives inside `<VirtualHost>`,
`<Directory>` and the like are not the server's own, and the MPM reads only
server-wide ones. The last value of a directive wins."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

#: read a file's text ('' if unreadable); list the files a path or glob names, sorted
Reader = Callable[[str], str]
Globber = Callable[[str], list[str]]

MPM_DIRECTIVES = (
    "ServerLimit",
    "ThreadLimit",
    "ThreadsPerChild",
    "MaxRequestWorkers",
    "MaxClients",  # the 2.2 name of MaxRequestWorkers, still accepted
    "AsyncRequestWorkerFactor",
    "StartServers",
    "ListenBacklog",
    "ErrorLog",
    "ServerRoot",
)
#: the sections whose directives are not server-wide (the MPM ignores them there)
CONTAINERS = {
    "virtualhost",
    "directory",
    "directorymatch",
    "files",
    "filesmatch",
    "location",
    "locationmatch",
    "proxy",
    "proxymatch",
    "limit",
    "limitexcept",
    "macro",
}
MAX_INCLUDE_DEPTH = 128  # AP_MAX_INCLUDE_DEPTH, include/http_config.h
_VAR = re.compile(r"\$\{([A-Za-z0-9_]+)\}")


@dataclass(frozen=True)
class Line:
    """One logical line: a directive with its arguments, or a section's opening
    (`<IfModule`, with its argument) or closing (`</IfModule`)."""

    name: str
    args: tuple[str, ...]
    where: str  # FILE:LINE


@dataclass
class Context:
    """What the evaluation knows as it goes: the loaded modules, -D defines, the
    environment, ServerRoot, and the directives read so far (last one wins)."""

    modules: set[str]
    defines: set[str]
    env: dict[str, str]
    server_root: str
    mpm: str | None = None  # the running MPM, when the process says which
    values: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (value, where)


def logical_lines(text: str, path: str) -> list[Line]:
    """The file's directives and section marks, continuations joined."""
    out: list[Line] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = (pending + line).strip(), ""
        if not line or line.startswith("#"):
            continue
        words = _split(line)
        if words:
            out.append(Line(words[0], tuple(words[1:]), f"{path}:{start}"))
    return out


def _split(line: str) -> list[str]:
    """Words, with double or single quotes kept together; a section mark's `>`
    removed (`<IfModule mpm_event_module>` -> ['<IfModule', 'mpm_event_module'])."""
    if line.startswith("<"):
        line = line.rstrip(">").rstrip()
    words = re.findall(r'"((?:[^"\\]|\\.)*)"|\'([^\']*)\'|(\S+)', line)
    return [a or b or c for a, b, c in words]


def expand(value: str, env: dict[str, str]) -> str:
    """${VAR} from the environment (left as is when undefined, as httpd warns)."""
    return _VAR.sub(lambda m: env.get(m[1], m[0]), value)


def _holds(mark: str, arg: str, ctx: Context) -> bool:
    """Does `<IfModule ARG>` / `<IfDefine ARG>` hold? Any other section: yes."""
    negate, name = arg.startswith("!"), arg.lstrip("!")
    if mark == "<ifmodule":
        found = module_loaded(name, ctx)
    elif mark == "<ifdefine":
        found = name in ctx.defines
    else:
        return True
    return found != negate


def module_loaded(name: str, ctx: Context) -> bool:
    """By its identifier (mpm_event_module) or its source file (event.c,
    mod_mpm_event.c): the running MPM answers for the MPMs."""
    ident = module_ident(name)
    mpm = re.fullmatch(r"mpm_(prefork|worker|event)_module", ident)
    if mpm and ctx.mpm is not None:
        return mpm[1] == ctx.mpm
    return ident in ctx.modules


def module_ident(name: str) -> str:
    """'event.c', 'mod_mpm_event.c' and 'mpm_event_module' name one module."""
    if name.endswith("_module"):
        return name
    stem = name.removesuffix(".c").removeprefix("mod_")
    if stem in ("prefork", "worker", "event"):
        stem = f"mpm_{stem}"
    return f"{stem}_module"


def evaluate(main: str, read: Reader, glob: Globber, ctx: Context, depth: int = 0) -> Context:
    """Walk the main file and its includes in order, as httpd does, keeping the
    server-wide values of MPM_DIRECTIVES and LoadModule's modules."""
    if depth > MAX_INCLUDE_DEPTH:
        return ctx
    skip = 0  # how deep inside a section that does not hold, or a container
    for line in logical_lines(read(main), main):
        low = line.name.lower()
        if low.startswith("</"):
            skip = max(0, skip - 1) if skip else 0
            continue
        if low.startswith("<"):
            arg = expand(line.args[0], ctx.env) if line.args else ""
            if skip or low[1:] in CONTAINERS or not _holds(low, arg, ctx):
                skip += 1
            continue
        if not skip:
            _apply(line, read, glob, ctx, depth)
    return ctx


def _apply(line: Line, read: Reader, glob: Globber, ctx: Context, depth: int) -> None:
    args = [expand(a, ctx.env) for a in line.args]
    low = line.name.lower()
    if low == "loadmodule" and args:
        ctx.modules.add(args[0])
        file = args[1] if len(args) > 1 else ""
        if ctx.mpm is None and (m := re.search(r"mod_mpm_(prefork|worker|event)\.so$", file)):
            ctx.mpm = m[1]
    elif low in ("include", "includeoptional") and args:
        for path in glob(absolute(args[0], ctx.server_root)):
            evaluate(path, read, glob, ctx, depth + 1)
    elif low == "serverroot" and args:
        ctx.server_root = args[0]
    elif low == "define" and args:
        ctx.defines.add(args[0])
        if len(args) > 1:
            ctx.env[args[0]] = args[1]
    else:
        name = next((d for d in MPM_DIRECTIVES if d.lower() == low), None)
        if name is not None and args:
            ctx.values["MaxRequestWorkers" if name == "MaxClients" else name] = (
                args[0],
                line.where,
            )


def absolute(path: str, server_root: str) -> str:
    """A path as httpd resolves it: relative ones under ServerRoot."""
    return path if path.startswith("/") else f"{server_root.rstrip('/')}/{path}"


def start_options(cmdline: Iterable[str]) -> tuple[str | None, str | None, set[str]]:
    """(-f FILE, -d SERVERROOT, the -D defines) of an httpd command line."""
    words = list(cmdline)[1:]
    conf = root = None
    defines: set[str] = set()
    i = 0
    while i < len(words):
        w = words[i]
        value = words[i + 1] if len(w) == 2 and i + 1 < len(words) else w[2:]
        step = 2 if len(w) == 2 else 1
        if w.startswith("-f"):
            conf = value
        elif w.startswith("-d"):
            root = value
        elif w.startswith("-D"):
            defines.add(value)
        else:
            step = 1
        i += step
    return conf, root, defines


def running_mpm(maps: str) -> str | None:
    """The MPM a running httpd loaded, from its /proc/PID/maps (mod_mpm_event.so)."""
    found = re.search(r"mod_mpm_(prefork|worker|event)\.so", maps)
    return found[1] if found else None
