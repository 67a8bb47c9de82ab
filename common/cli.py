"""The thin wrapper every command-line entry point goes through.

Problems the user can fix are raised as `UserError` anywhere in a stage and printed here as one
sentence on stderr (exit status 2), never as a traceback, and scrubbed of any secret setting.

Every argument is checked against the command function's signature and annotations before the
function is called, so a slip never starts work (docs/cli.md has the conventions):
- flags are spelt with dashes (`--dataset-name`); underscores (`--dataset_name`) are accepted too;
- a flag the command does not have is refused, naming the closest one; no abbreviations;
- `-h`/`--help` print help wherever they appear; no other one-letter flags exist;
- booleans: `--flag`, `--no-flag`/`--noflag`, or `--flag=VALUE` with true/false, yes/no, 1/0 only;
- values are converted from the annotation (`int`, `float`, `str`, `X | None`, `Sequence[X]`), text stays text.

fire used to do this and turned slips into actions (`-h` became `--head`, `--delete=false` was true, a
misspelt flag was reported after the work); the command functions keep fire's shape (a plain function
whose parameters are the flags, documented in its docstring's Args) and are called directly once checked.
"""

from __future__ import annotations

import ast
import difflib
import errno
import importlib.util
import inspect
import math
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from common.errors import UserError

REPO_ROOT = Path(__file__).resolve().parents[1]
HELP_FLAGS = ("-h", "--help")
TRUE_WORDS = ("true", "yes", "1")
FALSE_WORDS = ("false", "no", "0")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
CONVENTIONS = (
    "Flags take dashes or underscores (--batch-size or --batch_size), and --flag VALUE or --flag=VALUE.\n"
    "Booleans: --flag, --no-flag, or --flag=true/false (also yes/no, 1/0). Only -h has a one-letter form."
)

__all__ = ["UserError", "run", "scrub"]


def scrub(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret replaced by `***`, so no password or token reaches output or logs."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


@dataclass(frozen=True)
class Param:
    """One flag of a command: its parameter name, annotation text and default."""

    name: str
    annotation: str = "Any"
    required: bool = False
    default: str | None = None  # as help shows it; None: not shown
    help: str = ""
    positional: bool = True  # may also be given as a bare argument, in signature order

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def is_bool(self) -> bool:
        return "bool" in _alternatives(self.annotation)


@dataclass(frozen=True)
class CommandSpec:
    """What a command accepts, read from its function (or its source, to answer --help without importing it)."""

    params: tuple[Param, ...]
    summary: str = ""

    def find(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)


# --- reading a command's flags ------------------------------------------------------------------------------


def _docstring_parts(doc: str) -> tuple[str, dict[str, str]]:
    """The docstring's text before `Args:` and each argument's help (continuation lines joined)."""
    doc = inspect.cleandoc(doc or "")
    summary, _, args = doc.partition("\nArgs:\n")
    helps: dict[str, str] = {}
    current, indent = "", -1
    for line in args.splitlines():
        depth = len(line) - len(line.lstrip())
        match = re.match(r"\s*\*{0,2}(\w+)( \(.*?\))?:\s*(.*)", line)
        if match and (indent < 0 or depth == indent):
            current, indent = match.group(1), depth
            helps[current] = match.group(3).strip()
        elif current and line.strip():
            helps[current] += " " + line.strip()
    return summary.strip(), helps


def _show_default(value: Any) -> str | None:
    if value is None or value is inspect.Parameter.empty:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def _annotation_text(annotation: Any) -> str:
    if annotation is inspect.Parameter.empty:
        return "Any"
    return annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))


def spec_from_function(function: Callable[..., Any], extra: Mapping[str, str] | None = None) -> CommandSpec:
    """The flags of `function`; `extra` names the flags (and their annotations) its `**kwargs` accept."""
    summary, helps = _docstring_parts(function.__doc__ or "")
    params = []
    for p in inspect.signature(function).parameters.values():
        if p.kind is p.VAR_KEYWORD:
            params += [
                Param(name, annotation, help=helps.get(name, ""), positional=False)
                for name, annotation in (extra or {}).items()
            ]
        elif p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            params.append(
                Param(
                    p.name,
                    _annotation_text(p.annotation),
                    p.default is p.empty,
                    _show_default(p.default),
                    helps.get(p.name, ""),
                    p.kind is p.POSITIONAL_OR_KEYWORD,
                )
            )
    return CommandSpec(tuple(params), summary)


def spec_from_source(module: str, function: str) -> CommandSpec:
    """The flags of `module.function`, read from its source without importing it (so --help needs no FiftyOne)."""
    found = importlib.util.find_spec(module)
    if found is None or not found.origin:
        raise UserError(f"cannot find the module {module}; run the command from a complete checkout")
    tree = ast.parse(Path(found.origin).read_text(encoding="utf-8"))
    constants: dict[str, Any] = {}
    for statement in tree.body:
        if (
            isinstance(statement, ast.Assign)
            and len(statement.targets) == 1
            and isinstance(statement.targets[0], ast.Name)
        ):
            try:
                constants[statement.targets[0].id] = ast.literal_eval(statement.value)
            except ValueError:
                pass
    node = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == function), None)
    if node is None:
        raise UserError(f"{module} has no command {function}; run the command from a complete checkout")
    summary, helps = _docstring_parts(ast.get_docstring(node) or "")
    args = node.args
    defaults: list[ast.expr | None] = [None] * (len(args.args) - len(args.defaults)) + list(args.defaults)
    pairs = [(a, d, True) for a, d in zip(args.args, defaults)] + [
        (a, d, False) for a, d in zip(args.kwonlyargs, args.kw_defaults)
    ]
    params = []
    for arg, default, positional in pairs:
        annotation = ast.unparse(arg.annotation) if arg.annotation else "Any"
        params.append(
            Param(
                arg.arg,
                annotation,
                default is None,
                _literal_default(default, constants),
                helps.get(arg.arg, ""),
                positional,
            )
        )
    return CommandSpec(tuple(params), summary)


def _literal_default(node: ast.expr | None, constants: Mapping[str, Any]) -> str | None:
    """A default as help shows it: a literal, or a module constant (`DEFAULTS["size"]`); None if neither."""
    if node is None:
        return None
    try:
        return _show_default(ast.literal_eval(node))
    except ValueError:
        pass
    if isinstance(node, ast.Name) and node.id in constants:
        return _show_default(constants[node.id])
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and isinstance(node.slice, ast.Constant):
        try:
            return _show_default(constants[node.value.id][node.slice.value])
        except (KeyError, IndexError, TypeError):
            return None
    return None


# --- converting values ----------------------------------------------------------------------------------------


def _alternatives(annotation: str) -> list[str]:
    """`int | None` -> ["int", "None"]; `Optional[X]` -> ["X", "None"]; brackets respected."""
    text = annotation.strip().replace("typing.", "")
    if text.startswith("Optional[") and text.endswith("]"):
        return [*_alternatives(text[len("Optional[") : -1]), "None"]
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += char == "["
        depth -= char == "]"
        if char == "|" and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    parts.append(text[start:].strip())
    return parts


def parse_bool(text: str, flag: str) -> bool:
    """true/yes/1 or false/no/0 (any case); anything else is refused rather than guessed."""
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise UserError(f"{flag} is a yes/no flag: give true or false (or yes/no, 1/0), not {text!r}")


def _parse_int(text: str) -> int:
    if not re.fullmatch(r"[+-]?\d+", text.strip()):
        raise ValueError(text)
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


_ITEM_TYPES: dict[str, tuple[Callable[[str], Any], str]] = {
    "int": (_parse_int, "whole number"),
    "float": (_parse_float, "finite number"),
}


def convert(text: str, param: Param) -> Any:
    """The text typed for `param` as the type its annotation names, or a UserError saying what it expects."""
    alternatives = _alternatives(param.annotation)
    if "bool" in alternatives:
        return parse_bool(text, param.flag)
    if any(
        a in ("str", "Path", "Any", "object") or a not in _ITEM_TYPES and not _sequence_item(a) and a != "None"
        for a in alternatives
    ):
        return text  # text is kept as typed: a project called 2021 stays "2021"
    wanted = []
    for alternative in alternatives:
        if alternative in _ITEM_TYPES:
            parse, what = _ITEM_TYPES[alternative]
            wanted.append(f"a {what}")
            try:
                return parse(text)
            except ValueError:
                continue
        item = _sequence_item(alternative)
        if item:
            parse, what = _ITEM_TYPES[item]
            wanted.append(f"{what}s separated by commas")
            try:
                return [parse(part) for part in text.strip().strip("[]()").split(",") if part.strip()]
            except ValueError:
                continue
    raise UserError(f"{param.flag} expects {' or '.join(wanted)}, not {text!r}")


def _sequence_item(annotation: str) -> str | None:
    """`Sequence[float]`, `list[int]`, `tuple[int, ...]` -> the item type, if it is one `convert` knows."""
    match = re.fullmatch(r"(?:Sequence|list|tuple|List|Tuple)\[(\w+)(?:, \.\.\.)?\]", annotation)
    return match.group(1) if match and match.group(1) in _ITEM_TYPES else None


# --- parsing the command line -----------------------------------------------------------------------------------


def wants_help(argv: Sequence[str]) -> bool:
    """`-h` or `--help` anywhere before a `--`."""
    for arg in argv:
        if arg == "--":
            return False
        if arg in HELP_FLAGS:
            return True
    return False


def _is_flag(token: str) -> bool:
    return token.startswith("-") and len(token) > 1 and not _NUMBER.fullmatch(token)


def _unknown(token: str, spec: CommandSpec) -> UserError:
    known = [p.flag for p in spec.params] + [f"--no-{p.flag[2:]}" for p in spec.params if p.is_bool]
    typed = "--" + token.lstrip("-").split("=", 1)[0].replace("_", "-")
    close = difflib.get_close_matches(typed, known, n=1, cutoff=0.6)
    if close:
        return UserError(f"unknown flag {token.split('=', 1)[0]}; did you mean {close[0]}? (--help lists every flag)")
    flags = ", ".join(p.flag for p in spec.params)
    return UserError(
        f"unknown flag {token.split('=', 1)[0]}; this command takes {flags or 'no flags'} (--help explains them)"
    )


def _resolve(name: str, spec: CommandSpec) -> tuple[Param | None, bool]:
    """The parameter a flag names and whether it is negated (`no_cache`, `nocache` -> cache, True)."""
    param = spec.find(name)
    if param:
        return param, False
    for prefix in ("no_", "no"):
        base = spec.find(name.removeprefix(prefix)) if name.startswith(prefix) else None
        if base and base.is_bool:
            return base, True
    return None, False


def parse_args(spec: CommandSpec, argv: Sequence[str]) -> dict[str, Any]:
    """The keyword arguments `argv` gives, checked and converted; a UserError for the first slip."""
    values: dict[str, Any] = {}
    given: dict[str, str] = {}
    bare: list[str] = []
    i, only_bare = 0, False
    while i < len(argv):
        token = argv[i]
        i += 1
        if only_bare or not _is_flag(token):
            bare.append(token)
            continue
        if token == "--":
            only_bare = True
            continue
        if not token.startswith("--"):
            raise UserError(
                f"{token} is not a flag here: flags are spelt out (only -h has a one-letter form); --help lists them"
            )
        name, has_value, value = token[2:].partition("=")
        param, negated = _resolve(name.replace("-", "_"), spec)
        if param is None:
            raise _unknown(token, spec)
        if param.name in given:
            raise UserError(f"{param.flag} is given twice ({given[param.name]} and {token}); give it once")
        given[param.name] = token
        if param.is_bool:
            if has_value:
                flag_value = parse_bool(value, token.split("=", 1)[0])
            elif i < len(argv) and argv[i].strip().lower() in TRUE_WORDS + FALSE_WORDS:
                flag_value = parse_bool(argv[i], token)
                i += 1
            else:
                flag_value = True
            values[param.name] = not flag_value if negated else flag_value
            continue
        if not has_value:
            if i >= len(argv) or _is_flag(argv[i]):
                raise UserError(f"{param.flag} needs a value, e.g. {param.flag} {_metavar(param)}")
            value = argv[i]
            i += 1
        values[param.name] = convert(value, param)
    free = [p for p in spec.params if p.positional and p.name not in values]
    if len(bare) > len(free):
        extra = bare[len(free)]
        raise UserError(f"unexpected argument {extra!r}; flags start with -- (--help lists them)")
    for param, text in zip(free, bare):
        values[param.name] = convert(text, param)
    missing = [p for p in spec.params if p.required and p.name not in values]
    if missing:
        raise UserError(f"{missing[0].flag} is required: {missing[0].help or 'see --help'}")
    return values


# --- help ----------------------------------------------------------------------------------------------------------


def _metavar(param: Param) -> str:
    alternatives = _alternatives(param.annotation)
    if any(_sequence_item(a) for a in alternatives) and "str" not in alternatives:
        return "X,Y,..."
    if "int" in alternatives and "str" not in alternatives:
        return "N"
    if "float" in alternatives and "str" not in alternatives:
        return "X"
    return param.name.upper()


def program_name(argv0: str | None = None) -> str:
    """`python evaluate/evaluate.py` for the script being run, relative to the repository when inside it."""
    path = Path(argv0 if argv0 is not None else sys.argv[0])
    try:
        path = path.resolve().relative_to(REPO_ROOT)
    except (ValueError, OSError):
        pass
    return f"python {path.as_posix()}"


def format_help(spec: CommandSpec, prog: str) -> str:
    """Usage, the command's description and every flag with its default and help, flags spelt with dashes."""
    required = [p for p in spec.params if p.required]
    usage = " ".join(
        [prog, *(p.name.upper() if p.positional else f"{p.flag} {_metavar(p)}" for p in required), "[flags]"]
    )
    lines = [f"usage: {usage}", ""]
    if spec.summary:
        lines += [spec.summary, ""]
    lines.append("flags:")
    for p in spec.params:
        form = f"{p.flag}, --no-{p.flag[2:]}" if p.is_bool else f"{p.flag} {_metavar(p)}"
        if p.required and p.positional:
            form = f"{p.name.upper()}, {form}"
        note = "required" if p.required else (f"default: {p.default}" if p.default not in (None, "") else "")
        lines.append(f"  {form}" + (f"  ({note})" if note else ""))
        if p.help:
            lines.append(f"      {p.help}")
    lines += ["  -h, --help", "      print this help and exit", "", CONVENTIONS]
    return "\n".join(lines)


# --- running a command ----------------------------------------------------------------------------------------------


def _print_help(text: str) -> None:
    try:
        print(text, flush=True)
    except BrokenPipeError:  # `--help | head`: the reader left, which is fine
        sys.stdout = None  # nothing more to flush at exit


def _fail(error: BaseException, secrets: Iterable[str]) -> NoReturn:
    print(f"error: {scrub(str(error), secrets)}", file=sys.stderr)
    sys.exit(2)


def precheck(module: str, function: str) -> None:
    """Answer --help, or refuse a bad command line, from `module.function`'s source, before importing the module.

    Called by entry scripts whose stage imports FiftyOne or the CVAT SDK at the top, so that help answers at
    once and a misspelt flag fails in a fraction of a second; the command's own `run` checks again.
    """
    argv = sys.argv[1:]
    try:
        spec = spec_from_source(module, function)
        if wants_help(argv):
            _print_help(format_help(spec, program_name()))
            sys.exit(0)
        parse_args(spec, argv)
    except UserError as error:
        _fail(error, ())


def run(
    component: Callable[..., Any] | Mapping[str, Callable[..., Any]],
    secrets: Iterable[str] = (),
    *,
    extra: Mapping[str, str] | None = None,
    help_text: Callable[[], str] | None = None,
    argv: Sequence[str] | None = None,
) -> None:
    """Check the command line against `component`'s signature, then call it; a `UserError` becomes one line
    on stderr and exit status 2.

    `component` is a command function, or a mapping of subcommand names to functions (the first argument
    picks one); `extra` names the flags its `**kwargs` take (name -> annotation); `help_text` replaces the
    help generated from the signature and docstring.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    prog = program_name()
    try:
        if isinstance(component, Mapping):
            if not args or args[0] not in component:
                if wants_help(args):
                    _print_help(f"usage: {prog} {{{','.join(component)}}} [flags]  (`{prog} NAME --help` for each)")
                    return
                raise UserError(
                    f"choose a subcommand: {', '.join(component)} (e.g. {prog} {next(iter(component))} --help)"
                )
            prog, component, args = f"{prog} {args[0]}", component[args[0]], args[1:]
        spec = spec_from_function(component, extra)
        if wants_help(args):
            _print_help(help_text() if help_text else format_help(spec, prog))
            return
        kwargs = parse_args(spec, args)
        from common.progress import quiet_foreign_bars

        quiet_foreign_bars()
        component(**kwargs)
    except UserError as error:
        _fail(error, secrets)
    except OSError as error:  # a full or read-only disk met outside common.fileio's writes (logs, journals, torch.save)
        if error.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            raise
        where = f" {error.filename}" if error.filename else ""
        print(
            f"error: cannot write{where}: {os.strerror(error.errno)}; free some space or choose another output folder",
            file=sys.stderr,
        )
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume where it stopped", file=sys.stderr)
        sys.exit(130)
