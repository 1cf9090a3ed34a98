"""``resonate-sync``: read and change promises and schedules from a shell.

::

    resonate-sync promises get ID
    resonate-sync promises search PATTERN [--state S] [--tag k=v ...] [--limit N]
    resonate-sync promises create ID [--timeout SECONDS] [--param JSON] [--tag k=v]
    resonate-sync promises resolve|reject ID [--value JSON]
    resonate-sync promises cancel ID
    resonate-sync schedules list [PATTERN]
    resonate-sync schedules create ID --cron EXPR --function NAME [--args JSON]
    resonate-sync schedules delete ID
    resonate-sync tree ID

The store is ``--db PATH`` or ``--url URL``; without either, ``RESONATE_URL``,
then ``RESONATE_DB``, then ``resonate.db``. Output is for people; ``--json``
prints JSON for scripts. Exit codes: 0 done; 1 not found, conflict or refused;
2 usage error; 3 the store cannot be reached.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

from . import _cli_format as show
from . import encoding
from .exceptions import EncodingError, InvalidRequestError, ResonateError, StoreError
from .options import DEFAULT_TIMEOUT
from .promise import EMPTY, DurablePromise, State
from .schedules import Schedules

__all__ = ["main"]

EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 1, 2, 3
_PROG = "resonate-sync"
_PARENT_TAG = "resonate:parent"

#: A command: the store, the parsed arguments and now (epoch ms) in; its
#: output out, as ``{"json": ..., "lines": [...]}``.
Command = Callable[[Any, argparse.Namespace, int], Dict[str, Any]]


class _Refused(ResonateError):
    """An operation the store answered without doing it (an existing id)."""


def main(
    argv: Optional[Sequence[str]] = None, *, clock: Callable[[], float] = time.time
) -> int:
    """Run one command and return its exit code; errors go to stderr, one line.

    :param argv: the arguments after the program name (default: ``sys.argv``).
    :param clock: now in seconds since the epoch: for deadlines, durations and
        a SQLite store's clock (tests inject it).
    """
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exit:  # argparse: --help (0) or a usage error (2)
        return int(exit.code or 0)
    try:
        return _run(args, lambda: round(clock() * 1000))
    except BrokenPipeError:  # `| head`: the reader left; nothing to report
        sys.stdout = open(os.devnull, "w")
        return 0
    except ResonateError as err:
        message = " ".join(str(err).split())
        print(f"{_PROG}: error: {message}", file=sys.stderr)
        return _exit_code(err)


def _exit_code(err: ResonateError) -> int:
    if isinstance(err, StoreError):
        return EXIT_UNREACHABLE
    if isinstance(err, (InvalidRequestError, EncodingError)):
        return EXIT_USAGE
    return EXIT_REFUSED


def _run(args: argparse.Namespace, clock: Callable[[], int]) -> int:
    store = _open_store(args, clock)
    try:
        output = args.command(store, args, clock())
    finally:
        store.close()
    if args.json:
        print(json.dumps(output["json"], indent=2, ensure_ascii=False))
    else:
        for line in output["lines"]:
            print(line)
    return 0


def _open_store(args: argparse.Namespace, clock: Callable[[], int]) -> Any:
    url = args.url or (None if args.db else os.environ.get("RESONATE_URL"))
    if url:
        from .stores.remote import RemoteStore  # requests only when used

        return RemoteStore(url, retries=2, backoff=0.2, timeout=(3, 30))
    from .stores.sqlite import SQLiteStore

    path = args.db or os.environ.get("RESONATE_DB") or "resonate.db"
    if not args.writes and not os.path.exists(path):
        raise StoreError(f"no database at {path!r}")
    return SQLiteStore(path, clock=clock, busy_timeout=10)


# -- promises -------------------------------------------------------------


def _promise_output(promise: DurablePromise, now: int) -> Dict[str, Any]:
    return {"json": promise.to_json(), "lines": show.promise_lines(promise, now)}


def _get(store: Any, args: argparse.Namespace, now: int) -> Dict[str, Any]:
    return _promise_output(store.get(args.id), now)


def _search(store: Any, args: argparse.Namespace, now: int) -> Dict[str, Any]:
    matches = _all_promises(store, args.pattern, args.state, args.tag)
    found = list(_limited(matches, args.limit))
    rows = [
        [p.id, p.state.value, show.timestamp(p.created_on), show.function_of(p)]
        for p in found
    ]
    lines = show.table(["ID", "STATE", "CREATED", "FUNCTION"], rows) if rows else []
    return {"json": [p.to_json() for p in found], "lines": lines}


def _create(store: Any, args: argparse.Namespace, now: int) -> Dict[str, Any]:
    param = EMPTY if args.param is None else encoding.encode_value(args.param, "param")
    written = store.create(
        args.id, now + int(args.timeout * 1000), param=param, tags=args.tag, strict=True
    )
    if not written.created:
        raise _Refused(f"promise {args.id!r} already exists")
    return _promise_output(written.promise, now)


def _completer(state: State) -> Command:
    def complete(store: Any, args: argparse.Namespace, now: int) -> Dict[str, Any]:
        value = getattr(args, "value", None)
        data = EMPTY if value is None else encoding.encode_value(value)
        written = store.complete(args.id, state, value=data, strict=True)
        if not written.created:
            shown = written.promise.state.value
            raise _Refused(f"promise {args.id!r} is already {shown}")
        return _promise_output(written.promise, now)

    return complete


def _all_promises(
    store: Any, pattern: str, state: Optional[str], tags: Dict[str, str]
) -> Iterator[DurablePromise]:
    page = store.search(pattern, state=state, tags=tags)
    yield from page.promises
    while page.cursor is not None:
        page = store.search(cursor=page.cursor)
        yield from page.promises


def _limited(items: Iterator[Any], limit: Optional[int]) -> Iterator[Any]:
    for number, item in enumerate(items):
        if limit is not None and number >= limit:
            return
        yield item


# -- schedules ------------------------------------------------------------


def _schedules_list(store: Any, args: argparse.Namespace, now: int) -> Dict[str, Any]:
    found = list(Schedules(store).search(args.pattern))
    rows = [
        [s.id, s.cron, show.timestamp(s.next_run_time), show.timestamp(s.last_run_time)]
        for s in found
    ]
    header = ["ID", "CRON (UTC)", "NEXT RUN", "LAST RUN"]
    lines = show.table(header, rows) if rows else []
    return {"json": [s.to_json() for s in found], "lines": lines}


def _schedules_create(
    store: Any, args: argparse.Namespace, now: int
) -> Dict[str, Any]:
    schedules = Schedules(store)
    if any(s.id == args.id for s in schedules.search(args.id)):
        raise _Refused(f"schedule {args.id!r} already exists")
    schedule = schedules.create(
        args.id, args.cron, args.function, args.args, args.kwargs, timeout=args.timeout
    )
    return {"json": schedule.to_json(), "lines": show.schedule_lines(schedule)}


def _schedules_delete(
    store: Any, args: argparse.Namespace, now: int
) -> Dict[str, Any]:
    Schedules(store).delete(args.id)
    return {"json": {"deleted": args.id}, "lines": [f"deleted schedule {args.id!r}"]}


# -- tree -----------------------------------------------------------------


def _tree(store: Any, args: argparse.Namespace, now: int) -> Dict[str, Any]:
    root = store.get(args.id)
    children: Dict[str, List[DurablePromise]] = {}
    for promise in _all_promises(store, _literal(args.id) + ".*", None, {}):
        children.setdefault(promise.tags.get(_PARENT_TAG, ""), []).append(promise)
    tree = _node(root, children)
    return {"json": show.tree_json(tree, now), "lines": show.tree_lines(tree, now)}


def _node(
    promise: DurablePromise, children: Dict[str, List[DurablePromise]]
) -> show.Node:
    mine = sorted(children.get(promise.id, []), key=_position)
    return promise, [_node(child, children) for child in mine]


def _position(promise: DurablePromise) -> Any:
    # Children are "<parent>.<n>", n counting from 1; order by n, not by text.
    last = promise.id.rsplit(".", 1)[-1]
    return (0, int(last), "") if last.isdigit() else (1, promise.created_on, promise.id)


def _literal(promise_id: str) -> str:
    # '*' is the only wildcard; an id holding one cannot be matched literally,
    # so search wider and let the parent tags pick the children.
    return promise_id.split("*", 1)[0] + ("*" if "*" in promise_id else "")


# -- arguments ------------------------------------------------------------


def _json_argument(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"not JSON: {text!r} ({err})") from None


def _json_list(text: str) -> List[Any]:
    value = _json_argument(text)
    if not isinstance(value, list):
        raise argparse.ArgumentTypeError(f"not a JSON array: {text!r}")
    return value


def _json_object(text: str) -> Dict[str, Any]:
    value = _json_argument(text)
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"not a JSON object: {text!r}")
    return value


def _tag(text: str) -> Dict[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"a tag is key=value, not {text!r}")
    return {key: value}


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"not a number of seconds > 0: {text!r}")
    return value


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a whole number >= 1: {text!r}")
    return int(text)


class _Tags(argparse.Action):
    # Each --tag adds to the tags given before it, on a fresh dict.
    def __call__(
        self, parser: Any, namespace: Any, values: Any, option: Any = None
    ) -> None:
        tags = {**(getattr(namespace, self.dest, None) or {}), **values}
        setattr(namespace, self.dest, tags)


# -- the parser -----------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_PROG, description="Read and change durable promises and schedules.",
        epilog="exit codes: 0 done, 1 not found/conflict/refused, 2 usage, "
        "3 store unreachable",
    )
    _add_store_options(parser, suppress=False)
    commands = parser.add_subparsers(dest="group", required=True, metavar="COMMAND")
    _add_promise_commands(commands)
    _add_schedule_commands(commands)
    tree = _command(commands, "tree", _tree, "an invocation and its children")
    tree.add_argument("id", help="the invocation's promise id")
    return parser


def _add_store_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    # On the main parser with real defaults, and again on every command with
    # SUPPRESS (which leaves the main parser's value alone), so that the
    # options work before or after the command.
    unset = argparse.SUPPRESS if suppress else None
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--db", metavar="PATH", default=unset,
                       help="SQLite file (default: $RESONATE_DB or resonate.db)")
    where.add_argument("--url", metavar="URL", default=unset,
                       help="Resonate server (default: $RESONATE_URL)")
    parser.add_argument("--json", action="store_true",
                        default=argparse.SUPPRESS if suppress else False,
                        help="print JSON for scripts")


def _command(
    group: Any, name: str, run: Command, help: str, writes: bool = False
) -> argparse.ArgumentParser:
    command: argparse.ArgumentParser = group.add_parser(
        name, help=help, description=help
    )
    _add_store_options(command, suppress=True)
    command.set_defaults(command=run, writes=writes)
    return command


def _add_promise_commands(commands: Any) -> None:
    group = commands.add_parser("promises", help="durable promises").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    _command(group, "get", _get, "show one promise").add_argument("id")
    search = _command(group, "search", _search, "promises whose id matches a pattern")
    search.add_argument("pattern", help="'*' matches anything, e.g. 'order-*'")
    search.add_argument("--state", choices=["pending", "resolved", "rejected"])
    _add_tag_option(search)
    search.add_argument("--limit", type=_positive, help="show at most N promises")
    create = _command(group, "create", _create, "create a pending promise", True)
    create.add_argument("id")
    create.add_argument("--timeout", type=_seconds, default=DEFAULT_TIMEOUT,
                        help="seconds until it times out (default: 86400)")
    create.add_argument("--param", type=_json_argument, help="a JSON value")
    _add_tag_option(create)
    for name, state in (("resolve", State.RESOLVED), ("reject", State.REJECTED)):
        command = _command(group, name, _completer(state), f"{name} a promise")
        command.add_argument("id")
        command.add_argument("--value", type=_json_argument, help="a JSON value")
    cancel = _completer(State.REJECTED_CANCELED)
    _command(group, "cancel", cancel, "cancel a promise").add_argument("id")


def _add_tag_option(command: argparse.ArgumentParser) -> None:
    command.add_argument("--tag", type=_tag, action=_Tags, default={},
                         metavar="KEY=VALUE", help="a tag; repeat for more")


def _add_schedule_commands(commands: Any) -> None:
    group = commands.add_parser("schedules", help="cron schedules").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    listing = _command(group, "list", _schedules_list, "schedules whose id matches")
    listing.add_argument("pattern", nargs="?", default="*")
    create = _command(
        group, "create", _schedules_create, "invoke a function on a cron schedule", True
    )
    create.add_argument("id")
    create.add_argument("--cron", required=True, help="5 fields, or 6 with seconds")
    create.add_argument("--function", required=True, help="a registered function")
    create.add_argument("--args", type=_json_list, default=[], help="a JSON array")
    create.add_argument("--kwargs", type=_json_object, default={}, help="a JSON object")
    create.add_argument("--timeout", type=_seconds, default=DEFAULT_TIMEOUT,
                        help="seconds each run may take (default: 86400)")
    _command(group, "delete", _schedules_delete, "delete a schedule").add_argument("id")
