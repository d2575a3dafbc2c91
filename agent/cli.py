"""The ``railgraph`` command: ingest documents, chat, ask, and work through the review queue.

Results go to stdout (``--json`` for scripts); progress, model choice and errors go to stderr.
"""

from __future__ import annotations

import getpass
import itertools
import json
import re
import signal
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.live import Live
from rich.markdown import Markdown
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from agent.configuration import Settings

app = typer.Typer(
    help="railgraph: answers from your own documents, through guardrails, with human review when policy says so.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
review_app = typer.Typer(help="Work through drafts waiting for a human reviewer.", no_args_is_help=True)
app.add_typer(review_app, name="review")
eval_app = typer.Typer(help="Measure retrieval and the rails on labelled data sets.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")
rails_app = typer.Typer(help="Train the rails' prompt-attack classifier.", no_args_is_help=True)
app.add_typer(rails_app, name="rails")
threads_app = typer.Typer(help="The conversation threads kept in the database.", no_args_is_help=True)
app.add_typer(threads_app, name="threads")
memory_app = typer.Typer(help="What railgraph remembers about each user, across threads.", no_args_is_help=True)
app.add_typer(memory_app, name="memory")

out = Console()
# Errors name paths and URLs whole: wrapped at 80 columns (stderr to a pipe or log) they could not be copied.
err = Console(stderr=True, soft_wrap=True)

DbOption = Annotated[
    str | None, typer.Option("--db", help="Database URL (default: RAILGRAPH_DB or sqlite:///railgraph.db).")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object for scripts.")]
ThreadOption = Annotated[
    str | None, typer.Option("--thread", help="Conversation thread id; reuse it to continue a conversation.")
]
UserOption = Annotated[
    str | None,
    typer.Option("--user", help="Whose long-term memories to use (default: RAILGRAPH_USER or your login)."),
]
ReviewerOption = Annotated[
    str | None, typer.Option("--as", help="Reviewer name recorded with the decision (default: your login).")
]


def progress_bar(*extra: ProgressColumn, transient: bool = True, console: Console | None = None) -> Progress:
    """The progress bar of every long command (on stderr): description, bar, done/total, ``extra``, elapsed."""
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        *extra,
        TimeElapsedColumn(),
        console=console or err,
        transient=transient,
    )


def _settings(db: str | None) -> Settings:
    from pydantic import ValidationError

    try:
        settings = Settings(db=db) if db else Settings()
    except ValidationError as error:
        problems = "; ".join(f"RAILGRAPH_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in error.errors())
        raise _fail(f"invalid settings ({problems}); see the configuration table in README.md") from error
    except ValueError as error:
        raise _fail(str(error)) from error
    return settings


def _agent(settings: Settings):
    from agent.graph import build_agent
    from agent.pgdb import DatabaseUnavailable

    try:
        return build_agent(settings)
    except DatabaseUnavailable as error:
        raise _fail(str(error)) from error


def _services(settings: Settings):
    from agent.pgdb import DatabaseUnavailable
    from agent.services import services_for

    try:
        return services_for(settings)
    except DatabaseUnavailable as error:
        raise _fail(str(error)) from error


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}")
    return typer.Exit(code)


def _as_user(settings: Settings, user: str | None) -> Settings:
    """The settings with ``--user`` as RAILGRAPH_USER, when given."""
    return settings.model_copy(update={"user": user}) if user else settings


def _prepare(settings: Settings, *, announce: bool) -> None:
    """Load the rails and the chat model before the first turn, so a bad setting fails clearly up front."""
    from agent.models import ModelUnavailable
    from rails import GuardConfigError

    services = _services(settings)
    try:
        choice = services.chat
        services.guard  # noqa: B018
    except (ModelUnavailable, GuardConfigError) as error:
        raise _fail(str(error)) from error
    if announce:
        err.print(f"[dim]chat model:[/dim] [bold]{choice.name}[/bold] [dim]({choice.reason})[/dim]")


def _print_sources(result: dict[str, Any]) -> None:
    """The sources the answer cites (all retrieved ones if it cites none), one line each."""
    cited = {int(n) for n in re.findall(r"\[(\d+)\]", result["answer"])}
    for source in result["sources"]:
        if cited and source["n"] not in cited:
            continue
        page = f", page {source['page']}" if source["page"] else ""
        quote = " ".join(source["quote"].split())[:160]
        out.print(f"  [cyan][{source['n']}][/cyan] {source['source']}{page}: [dim]{quote}[/dim]")


def _run_turn(settings: Settings, question: str, thread_id: str, *, stream: bool) -> dict[str, Any]:
    from agent.turns import ask as ask_turn

    graph = _agent(settings)
    if not stream:
        return ask_turn(graph, question, thread_id=thread_id)
    streamed: list[str] = []
    with Live(Markdown(""), console=out, refresh_per_second=12, transient=True) as live:

        def show(chunk: str) -> None:
            streamed.append(chunk)
            live.update(Markdown("".join(streamed)))

        result = ask_turn(graph, question, thread_id=thread_id, on_chunk=show)
    # The streamed chunks are replaced by the answer the output rails passed as a whole (and the reviewer).
    _show_result(result)
    return result


def _show_result(result: dict[str, Any]) -> None:
    """A turn's answer, with its sources when answered, or the id of the review it waits for."""
    out.print(Markdown(result["answer"]))
    if result["status"] == "answered":
        _print_sources(result)
    elif result["status"] == "pending_review":
        err.print(f"[yellow]review id:[/yellow] {result['review_id']}")


def _await_review(settings: Settings, graph: Any, thread_id: str, review_id: str) -> None:
    """Wait (spinner, a poll a second) until the thread's review is decided, then show the outcome; Ctrl-C stops
    waiting and leaves the review queued."""
    from agent.turns import poll_review

    reviews = _services(settings).reviews
    stop = threading.Event()
    # Ctrl-C sets a flag, checked between polls, rather than raising wherever the poll happens to be; and the
    # handler is railgraph's own, so Ctrl-C stops the wait even in a process started with SIGINT ignored (a
    # background job, where Python would otherwise never raise KeyboardInterrupt).
    previous = signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
    try:
        err.print(f"[yellow]waiting for review (id {review_id})[/yellow]; Ctrl-C stops waiting, it stays queued")
        with err.status(f"waiting for a reviewer to decide {review_id}"):
            while (result := poll_review(graph, reviews, thread_id)) is None and not stop.wait(1):
                pass
    finally:
        signal.signal(signal.SIGINT, previous)
    if result is None:
        err.print(f"[dim]stopped waiting; `railgraph chat --thread {thread_id}` shows the decision once it lands[/dim]")
        return
    err.print(f"[dim]review {review_id} decided:[/dim]")
    _show_result(result)


@app.command()
def ingest(
    paths: Annotated[list[Path] | None, typer.Argument(help="Files or folders (walked recursively).")] = None,
    include: Annotated[list[str] | None, typer.Option(help="Only files matching this glob (repeatable).")] = None,
    exclude: Annotated[list[str] | None, typer.Option(help="Skip files matching this glob (repeatable).")] = None,
    pdf_password: Annotated[str | None, typer.Option(help="Password for encrypted PDFs.")] = None,
    json_selector: Annotated[
        str | None,
        typer.Option("--json-selector", help="jq program picking the values of .json/.jsonl files to index."),
    ] = None,
    urls: Annotated[
        list[str] | None,
        typer.Option("--url", help="Crawl this site from this page, or the pages of this sitemap (repeatable)."),
    ] = None,
    depth: Annotated[int, typer.Option("--depth", min=0, help="Links to follow away from a --url page.")] = 2,
    max_pages: Annotated[int, typer.Option("--max-pages", min=1, help="Most pages crawled per --url.")] = 50,
    sql: Annotated[
        str | None, typer.Option("--sql", help="SQLAlchemy URL of a database whose --query rows to index.")
    ] = None,
    query: Annotated[str | None, typer.Option("--query", help="The SELECT whose rows --sql indexes.")] = None,
    content_columns: Annotated[
        list[str] | None,
        typer.Option("--content-column", help="Column holding a row's text (repeatable; default: all others)."),
    ] = None,
    metadata_columns: Annotated[
        list[str] | None, typer.Option("--metadata-column", help="Column kept as metadata (repeatable).")
    ] = None,
    id_column: Annotated[
        str | None,
        typer.Option("--id-column", help="Unique column naming each row, so an edited row is replaced, not added."),
    ] = None,
    sync: Annotated[
        bool,
        typer.Option(
            "--sync",
            help="Also delete the chunks of what this run did not see inside its folders, sites and query: deleted"
            " or excluded files, pages gone, rows gone. What fails to load keeps its chunks.",
        ),
    ] = False,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Index files, web pages and database rows: unchanged ones are skipped, changed ones replaced, failures named.

    Each file, page or row is replaced as a unit, in one transaction: an interrupted ingest leaves every unit
    wholly old or wholly new, and running it again finishes the job.
    """
    from loaders import LoadError, iter_files, sql_scope, sql_units
    from loaders.ingest import file_units, guarded
    from loaders.ingest import ingest as run_ingest
    from loaders.web import crawl, site_scope

    settings = _settings(db)
    paths = paths or []
    if not (paths or urls or sql):
        raise _fail("nothing to ingest: give files or folders, --url or --sql")
    missing = [str(path) for path in paths if not path.exists()]
    if missing:
        raise _fail(f"no such file or folder: {', '.join(missing)}")
    if (sql is None) != (query is None):
        raise _fail("--sql and --query go together: the database's URL and the SELECT whose rows to index")
    # A folder covers every file under it. A file argument is always part of the run (loaded, or failed and so
    # kept), so its scope could delete nothing of its own; as a prefix it would reach "a.txt.bak".
    scopes = [f"{path.resolve()}/" for path in paths if path.is_dir()]
    files = list(iter_files(paths, include=include or (), exclude=exclude or ()))
    sources = [file_units(files, pdf_password=pdf_password, json_selector=json_selector)]
    for url in urls or []:
        try:
            scopes.append(site_scope(url))
        except ValueError as error:
            raise _fail(f"--url {url}: {error}; give a full URL, such as https://example.com/docs/") from error
        sources.append(crawl(url, max_depth=depth, max_pages=max_pages))
    if sql is not None and query is not None:
        try:
            scope = sql_scope(sql, query)
        except LoadError as error:
            raise _fail(str(error)) from error
        scopes.append(scope)
        rows = sql_units(
            sql, query, content_columns=content_columns, metadata_columns=metadata_columns or (), id_column=id_column
        )
        sources.append(guarded(rows, scope))
    services = _services(settings)
    rate = TextColumn("{task.fields[chunks]} chunks, {task.fields[rate]:.1f} chunks/s")
    with progress_bar(rate, transient=as_json) as progress:
        # Pages and rows are only known as they come: a total only for files alone.
        total = len(files) if len(sources) == 1 else None
        task = progress.add_task("ingesting", total=total, chunks=0, rate=0.0)
        started = time.monotonic()

        def on_unit(source: str, report: Any) -> None:
            rate = report.chunks / max(time.monotonic() - started, 1e-9)
            name = source.rstrip("/").rsplit("/", 1)[-1] or source
            progress.update(task, advance=1, chunks=report.chunks, rate=rate, description=name[:40])
            if report.failed and report.failed[-1]["source"] == source and not as_json:
                # One line per failure, above the bar, as it happens; soft_wrap keeps a long path on one line.
                progress.console.print(f"[yellow]skipped[/yellow] {escape(report.failed[-1]['error'])}", soft_wrap=True)

        report = run_ingest(
            itertools.chain.from_iterable(sources),
            services.store,
            scopes=scopes,
            sync=sync,
            chunk_size=settings.chunk_size,
            chunk_overlap=settings.chunk_overlap,
            on_unit=on_unit,
        )
    if as_json:
        _print_json(report.to_json())
    else:
        out.print(
            f"{report.units} sources: {report.added} chunks added, {report.updated} updated, "
            f"{report.skipped} unchanged, {report.deleted} deleted, {len(report.failed)} failed"
        )
    if report.failed:
        raise typer.Exit(1)


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="The question.")],
    thread: ThreadOption = None,
    user: UserOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Ask one question (non-interactive); --json prints status, answer, sources, rails and thread_id.

    A thread whose last question still waits for a reviewer takes no new one: ask in a new thread meanwhile.
    """
    from agent.turns import ReviewPending

    settings = _as_user(_settings(db), user)
    thread_id = thread or uuid.uuid4().hex
    if thread is not None:
        _refuse_while_in_review(settings, thread_id)
    _prepare(settings, announce=not as_json)
    _recover(settings, thread_id)
    try:
        result = _run_turn(settings, question, thread_id, stream=not as_json)
    except ReviewPending as error:
        raise _fail(str(error)) from error
    if as_json:
        _print_json(result)
        return
    err.print(f"[dim]thread: {thread_id}[/dim]")


@app.command()
def chat(thread: ThreadOption = None, user: UserOption = None, db: DbOption = None) -> None:
    """Talk with your documents; the conversation is kept and resumes with --thread.

    A question sent to review shows "waiting for review" until a reviewer decides, then the answer; Ctrl-C stops
    waiting (the review stays queued) and the thread takes no new question until the decision lands.
    """
    from agent.turns import ReviewPending, thread_config, turn_result, waiting_review

    settings = _as_user(_settings(db), user)
    thread_id = thread or uuid.uuid4().hex
    _prepare(settings, announce=True)
    _recover(settings, thread_id)
    graph = _agent(settings)
    values = graph.get_state(thread_config(thread_id)).values
    err.print(
        f"[dim]thread {thread_id} ({len(values.get('messages', []))} earlier messages). Type your question; "
        "Ctrl-D or 'exit' to leave.[/dim]"
    )
    # A thread left waiting for a reviewer: wait for the decision again, or show the one that landed meanwhile.
    waiting = waiting_review(graph, thread_id)
    if waiting is not None:
        _await_review(settings, graph, thread_id, waiting)
    elif values.get("review_id"):
        err.print(f"[dim]your last question went to review {values['review_id']}; the answer:[/dim]")
        _show_result(turn_result(graph, thread_id))
    while True:
        try:
            question = out.input("[bold green]you>[/bold green] ").strip()
        except (EOFError, KeyboardInterrupt):
            break
        if question in {"exit", "quit", "/exit"}:
            break
        if not question:
            continue
        try:
            result = _run_turn(settings, question, thread_id, stream=True)
        except ReviewPending as error:
            err.print(f"[red]error:[/red] {escape(str(error))}")
            continue
        if result["status"] == "pending_review":
            _await_review(settings, graph, thread_id, result["review_id"])
    err.print(f"[dim]bye; continue with: railgraph chat --thread {thread_id}[/dim]")


def _reviewer(name: str | None, settings: Settings) -> str:
    """Who decides: ``--as``, else RAILGRAPH_REVIEWER, else the login name."""
    return name or settings.reviewer or getpass.getuser()


def _duration(text: str | None, option: str) -> Any:
    from agent.review import parse_duration

    try:
        return parse_duration(text) if text else None
    except ValueError as error:
        raise _fail(f"{option}: {error}") from error


def _refuse_while_in_review(settings: Settings, thread_id: str) -> None:
    """Refuse a question for a thread whose last one waits for a reviewer, before the rails and the chat model load
    (about 10 s here, for nothing). A review already decided is left to ``_recover``, and the question then runs."""
    from agent.turns import ReviewPending, waiting_review

    review_id = waiting_review(_agent(settings), thread_id)
    pending = _services(settings).reviews.pending_for_thread(thread_id) if review_id is not None else None
    if pending is not None and pending.id == review_id:
        raise _fail(str(ReviewPending.on(thread_id, review_id)))


def _recover(settings: Settings, thread_id: str | None = None) -> None:
    """Resume threads whose review was decided by a process that died before resuming them."""
    from agent.turns import resume_decided

    reviews = _services(settings).reviews
    # The graph is built only when there is something to resume, so `review list` stays quick.
    if reviews.unresumed(thread_id=thread_id):
        for review_id in resume_decided(_agent(settings), reviews, thread_id=thread_id):
            err.print(f"[dim]resumed the thread of review {review_id}, decided earlier[/dim]")


@review_app.command("list")
def review_list(
    older_than: Annotated[
        str | None, typer.Option("--older-than", help="Only drafts waiting at least this long: 30m, 2h, 1d.")
    ] = None,
    flag: Annotated[
        str | None, typer.Option("--flag", help="Only drafts with this flag, e.g. low_confidence, rail:citations.")
    ] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Pending drafts, oldest first, with the flags that sent them to review."""
    settings = _settings(db)
    age = _duration(older_than, "--older-than")
    _recover(settings)
    pending = _services(settings).reviews.pending(older_than=age, flag=flag)
    if as_json:
        _print_json([review.summary() for review in pending])
        return
    table = Table("id", "created", "flags", "question", "draft")
    for review in pending:
        table.add_row(review.id, review.created_at, ", ".join(review.flags), review.question[:60], review.draft[:80])
    out.print(table if pending else "No drafts are waiting for review.")


def _earlier_messages(settings: Settings, thread_id: str, question: str) -> list[dict[str, str]]:
    """The thread's messages before the reviewed question, as ``{role, content}`` (roles user and assistant)."""
    from agent.turns import thread_config

    messages = _agent(settings).get_state(thread_config(thread_id)).values.get("messages", [])
    asked = [i for i, message in enumerate(messages) if message.type == "human" and message.text == question]
    roles = {"human": "user", "ai": "assistant"}
    return [
        {"role": roles.get(message.type, message.type), "content": message.text}
        for message in messages[: asked[-1] if asked else None]
    ]


@review_app.command("show")
def review_show(
    review_id: Annotated[str, typer.Argument(help="Id from `review list`.")],
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """The question, the draft, its sources with quotes, the rail verdicts, the flags and the thread so far."""
    from agent.review import ReviewNotFound

    settings = _settings(db)
    _recover(settings)
    try:
        review = _services(settings).reviews.get(review_id)
    except ReviewNotFound as error:
        raise _fail(str(error)) from error
    earlier = _earlier_messages(settings, review.thread_id, review.question)
    args = review.args
    if as_json:
        _print_json(
            review.summary()
            | {
                "status": review.status,
                "reviewer": review.reviewer,
                "final_text": review.final_text,
                "reason": review.reason,
                "decided_at": review.decided_at,
                "sources": [
                    {key: source[key] for key in ("n", "doc_id", "source", "page", "quote")}
                    for source in args["sources"]
                ],
                "rails": args["rails"],
                "thread": earlier,
            }
        )
        return
    decided = f", {review.status} by {review.reviewer} at {review.decided_at}" if review.decided_at else ""
    out.print(f"[bold]{review.id}[/bold] ({review.status}{decided}) thread {review.thread_id}")
    out.print(f"[bold]flags:[/bold] {', '.join(review.flags) or 'none'}")
    if earlier:
        out.print("[bold]thread so far:[/bold]")
        for message in earlier:
            out.print(f"  [dim]{message['role']}:[/dim] {escape(' '.join(message['content'].split())[:200])}")
    out.print(Markdown(review.payload["description"]))
    if review.final_text and review.final_text != review.draft:
        out.print("[bold]final answer:[/bold]")
        out.print(Markdown(review.final_text))


def _decide(review_id: str, decision: dict[str, Any], db: str | None, reviewer: str | None, as_json: bool) -> None:
    from agent.review import AlreadyDecided, ReviewNotFound
    from agent.turns import decide

    settings = _settings(db)
    _recover(settings)
    try:
        result = decide(
            _agent(settings), _services(settings).reviews, review_id, decision, reviewer=_reviewer(reviewer, settings)
        )
    except (ReviewNotFound, AlreadyDecided) as error:
        raise _fail(str(error)) from error
    if as_json:
        _print_json(result)
    else:
        out.print(f"{review_id}: {result['status']}; thread {result['thread_id']} now answers:")
        out.print(Markdown(result["answer"]))


@review_app.command("approve")
def review_approve(
    review_id: Annotated[str, typer.Argument(help="Id from `review list`.")],
    reviewer: ReviewerOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Send the draft to the user as it is."""
    _decide(review_id, {"type": "accept", "args": None}, db, reviewer, as_json)


@review_app.command("edit")
def review_edit(
    review_id: Annotated[str, typer.Argument(help="Id from `review list`.")],
    text: Annotated[
        str | None, typer.Option("--text", help="The corrected answer (default: edit the draft in $EDITOR).")
    ] = None,
    reviewer: ReviewerOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Send a corrected answer instead of the draft."""
    import click

    from agent.review import ReviewNotFound

    if text is None:
        try:
            draft = _services(_settings(db)).reviews.get(review_id).draft
        except ReviewNotFound as error:
            raise _fail(str(error)) from error
        text = click.edit(draft, extension=".md")
        if text is not None and text.strip() == draft.strip():
            text = None
    if not text or not text.strip():
        raise _fail("the edited answer is empty or unchanged; nothing was decided (approve the draft as it is instead)")
    edit = {"type": "edit", "args": {"action": "answer", "args": {"draft": text.strip()}}}
    _decide(review_id, edit, db, reviewer, as_json)


@review_app.command("reject")
def review_reject(
    review_id: Annotated[str, typer.Argument(help="Id from `review list`.")],
    reason: Annotated[str, typer.Option("--reason", help="Why; the user sees it.")] = "",
    reviewer: ReviewerOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Refuse the draft; the user is told a reviewer declined, with the reason."""
    _decide(review_id, {"type": "ignore", "args": reason or None}, db, reviewer, as_json)


@review_app.command("respond")
def review_respond(
    review_id: Annotated[str, typer.Argument(help="Id from `review list`.")],
    text: Annotated[str, typer.Option("--text", help="Your answer, sent to the user instead of the draft.")],
    reviewer: ReviewerOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Answer the question yourself instead of sending the draft."""
    if not text.strip():
        raise _fail("--text is empty; write the answer the user should get")
    _decide(review_id, {"type": "response", "args": text.strip()}, db, reviewer, as_json)


@review_app.command("log")
def review_log(
    review: Annotated[str | None, typer.Option("--review", help="Only this review's entries.")] = None,
    by: Annotated[str | None, typer.Option("--by", help="Only entries by this reviewer (`agent` for drafts).")] = None,
    since: Annotated[str | None, typer.Option("--since", help="Only entries this recent: 30m, 2h, 1d.")] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """The append-only audit log: who submitted or decided what, when, and the text before and after."""
    settings = _settings(db)
    age = _duration(since, "--since")
    _recover(settings)
    entries = _services(settings).reviews.log(review_id=review, actor=by, since=age)
    if as_json:
        _print_json([entry.to_json() for entry in entries])
        return
    table = Table("at", "review", "actor", "action", "before", "after", "reason")
    for entry in entries:
        table.add_row(
            entry.at,
            entry.review_id,
            entry.actor,
            entry.action,
            (entry.before_text or "")[:50],
            (entry.after_text or "")[:50],
            entry.reason or "",
        )
    out.print(table if entries else "The audit log has no matching entries.")


@review_app.command("export")
def review_export(
    export_format: Annotated[
        str, typer.Option("--format", help="chat-jsonl: OpenAI chat fine-tuning lines {messages: [...]}.")
    ] = "chat-jsonl",
    output: Annotated[Path | None, typer.Option("--output", help="File to write (default: stdout).")] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Only reviews decided this recently: 30m, 2h, 1d.")
    ] = None,
    db: DbOption = None,
) -> None:
    """Approved, edited and answered reviews as a fine-tuning dataset (rejected ones never); see README."""
    from agent.nodes import SYSTEM_PROMPT
    from agent.review import chat_sample

    if export_format != "chat-jsonl":
        raise _fail(f"--format {export_format!r} is not supported; use --format chat-jsonl")
    settings = _settings(db)
    age = _duration(since, "--since")
    _recover(settings)
    reviews = _services(settings).reviews.answered(since=age)
    lines = "".join(json.dumps(chat_sample(review, SYSTEM_PROMPT), ensure_ascii=False) + "\n" for review in reviews)
    if output is None:
        sys.stdout.write(lines)
    else:
        output.write_text(lines, encoding="utf-8")
        err.print(f"wrote {len(reviews)} samples to {output}")


def _threads(settings: Settings) -> Any:
    from agent.memory import open_checkpointer

    return open_checkpointer(settings)


@threads_app.command("list")
def threads_list(db: DbOption = None, as_json: JsonOption = False) -> None:
    """Every thread, most recently active first: turns, last activity, first question, whether a review waits."""
    from agent.threads import list_threads

    settings = _settings(db)
    threads = list_threads(_threads(settings), _services(settings).reviews)
    if as_json:
        _print_json([thread.to_json() for thread in threads])
        return
    table = Table("thread", "turns", "last activity", "review", "first question")
    for thread in threads:
        review = "pending" if thread.pending_review else ""
        question = escape(thread.first_question[:70])
        table.add_row(escape(thread.thread_id), str(thread.turns), thread.last_activity, review, question)
    out.print(table if threads else "No threads yet: `railgraph chat` or `railgraph ask` starts one.")


@threads_app.command("show")
def threads_show(
    thread_id: Annotated[str, typer.Argument(help="Id from `threads list`.")],
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Every message the thread keeps (the model may have been shown fewer: RAILGRAPH_HISTORY_TOKENS)."""
    from agent.threads import ThreadNotFound, thread_messages

    try:
        messages = thread_messages(_threads(_settings(db)), thread_id)
    except ThreadNotFound as error:
        raise _fail(str(error), code=1) from error
    rows = [{"role": message.type, "content": message.text} for message in messages]
    if as_json:
        _print_json({"thread_id": thread_id, "messages": rows})
        return
    for row in rows:
        name = "[bold green]you[/bold green]" if row["role"] == "human" else "[bold]railgraph[/bold]"
        out.print(f"{name}: {escape(row['content'])}")


@threads_app.command("delete")
def threads_delete(
    thread_id: Annotated[str, typer.Argument(help="Id from `threads list`.")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    db: DbOption = None,
) -> None:
    """Delete the thread's checkpoints; a review it still waits for is rejected with the reason "thread deleted"."""
    from agent.threads import ThreadNotFound, delete_thread, thread_messages

    settings = _settings(db)
    saver = _threads(settings)
    try:
        turns = sum(message.type == "human" for message in thread_messages(saver, thread_id))
    except ThreadNotFound as error:
        raise _fail(str(error), code=1) from error
    if not yes and not typer.confirm(f"Delete thread {thread_id} ({turns} turns)?", err=True):
        raise typer.Exit(1)
    rejected = delete_thread(saver, _services(settings).reviews, thread_id, reviewer=_reviewer(None, settings))
    if rejected:
        err.print(f"rejected its pending review {rejected} (thread deleted)")
    out.print(f"deleted thread {thread_id}")


def _memory_user(settings: Settings, user: str | None) -> str:
    from agent.longterm import user_id

    return user_id(None, _as_user(settings, user))


@memory_app.command("list")
def memory_list(user: UserOption = None, db: DbOption = None, as_json: JsonOption = False) -> None:
    """The facts a user stated about themselves ("I work in the Oslo office"), newest first."""
    from agent.longterm import recall
    from agent.memory import open_memory_store

    settings = _settings(db)
    who = _memory_user(settings, user)
    memories = recall(open_memory_store(settings), who, limit=10_000)
    if as_json:
        _print_json([memory.to_json() for memory in memories])
        return
    table = Table("id", "stated", "fact")
    for memory in memories:
        table.add_row(memory.id, memory.created_at, escape(memory.text))
    out.print(table if memories else f"Nothing remembered about {who}.")


@memory_app.command("forget")
def memory_forget(
    memory_id: Annotated[str | None, typer.Argument(help="Id from `memory list`.")] = None,
    forget_all: Annotated[bool, typer.Option("--all", help="Forget every fact about the user.")] = False,
    user: UserOption = None,
    db: DbOption = None,
) -> None:
    """Forget one fact (by id) or, with --all, everything about the user; later turns no longer use it."""
    from agent.longterm import forget
    from agent.memory import open_memory_store

    if (memory_id is None) != forget_all:
        raise _fail("give one memory id from `railgraph memory list`, or --all to forget everything about the user")
    settings = _settings(db)
    who = _memory_user(settings, user)
    gone = forget(open_memory_store(settings), who, memory_id)
    if memory_id and not gone:
        raise _fail(f"{who} has no memory {memory_id!r}; `railgraph memory list --user {who}` shows them", code=1)
    out.print(f"forgot {gone} fact{'s' if gone != 1 else ''} about {who}")


ModeOption = Annotated[
    str | None, typer.Option("--mode", help="hybrid, vector or keyword (default: RAILGRAPH_SEARCH_MODE).")
]


def _search_mode(mode: str | None, settings: Settings) -> Any:
    from agent.store import SEARCH_MODES

    chosen = mode or settings.search_mode
    if chosen not in SEARCH_MODES:
        raise _fail(f"--mode {chosen!r} is not one of {', '.join(SEARCH_MODES)}")
    return chosen


@app.command()
def retrieve(
    query: Annotated[str, typer.Argument(help="What to search for.")],
    k: Annotated[int | None, typer.Option("--k", min=1, help="Chunks to show (default: RAILGRAPH_TOP_K).")] = None,
    mode: ModeOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Ranked chunks for a query, with the fused score and each side's rank (vector distance, keyword bm25)."""
    from agent.store import SearchOptions

    settings = _settings(db)
    chosen = _search_mode(mode, settings)
    store = _services(settings).store
    hits = store.search(query, k or settings.top_k, mode=chosen, options=SearchOptions.from_settings(settings))
    rows = [
        {
            "rank": rank,
            "score": score,
            "chunk_id": document.id,
            "doc_id": document.metadata.get("doc_id"),
            "source": document.metadata.get("source"),
            "title": document.metadata.get("title"),
            "vector_rank": document.metadata.get("vector_rank"),
            "vector_distance": document.metadata.get("vector_distance"),
            "keyword_rank": document.metadata.get("keyword_rank"),
            "keyword_bm25": document.metadata.get("keyword_score"),
            "text": document.page_content,
        }
        for rank, (document, score) in enumerate(hits, start=1)
    ]
    if as_json:
        _print_json({"query": query, "mode": chosen, "results": rows})
        return
    if not rows:
        out.print("No chunk is relevant enough (RAILGRAPH_RELEVANCE_FLOOR).")
        return

    def side(rank: int | None, value: float | None) -> str:
        return "-" if rank is None else f"#{rank} ({value:.3f})"

    table = Table("#", "score", "vector #(dist)", "keyword #(bm25)", "source", "text")
    for row in rows:
        table.add_row(
            str(row["rank"]),
            f"{row['score']:.4f}",
            side(row["vector_rank"], row["vector_distance"]),
            side(row["keyword_rank"], row["keyword_bm25"]),
            str(row["title"] or row["source"]),
            " ".join(row["text"].split())[:100],
        )
    out.print(table)


@eval_app.command("retrieval")
def eval_retrieval(
    corpus: Annotated[Path, typer.Option("--corpus", help="JSONL rows {id, title, text}.")],
    questions: Annotated[
        Path, typer.Option("--questions", help="JSONL rows {qid, question, answers[], gold_passage_ids[]}.")
    ],
    k: Annotated[int, typer.Option("--k", min=1, help="Chunks retrieved per question.")] = 5,
    mode: ModeOption = None,
    db: Annotated[
        str | None,
        typer.Option("--db", help="Database URL to ingest into and reuse (default: a fresh temporary SQLite file)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Ingest a corpus and score retrieval on its questions: recall@1/@k, MRR, answers in context, EM/F1, latency."""
    import tempfile

    from agent.embeddings import default_embeddings
    from agent.evaluation import corpus_documents, evaluate_retrieval, ingest_corpus, read_questions
    from agent.pgdb import DatabaseUnavailable
    from agent.services import open_store

    for path in (corpus, questions):
        if not path.is_file():
            raise _fail(f"no such file: {path}")
    with tempfile.TemporaryDirectory(prefix="railgraph-eval-") as scratch:
        settings = _settings(db or f"sqlite:///{scratch}/eval.db")
        chosen = _search_mode(mode, settings)
        try:
            documents = corpus_documents(corpus)
            asked = read_questions(questions)
        except ValueError as error:
            raise _fail(str(error)) from error
        try:
            database, store = open_store(settings, default_embeddings())
        except DatabaseUnavailable as error:
            raise _fail(str(error)) from error
        with progress_bar() as progress:
            tasks: dict[str, Any] = {}

            def report(stage: str, done: int, total: int) -> None:
                if stage not in tasks:
                    tasks[stage] = progress.add_task(stage, total=total)
                progress.update(tasks[stage], completed=done)

            ingest_corpus(
                store,
                documents,
                chunk_size=settings.chunk_size,
                chunk_overlap=settings.chunk_overlap,
                progress=report,
            )
            result = evaluate_retrieval(store, asked, k=k, mode=chosen, progress=report)
        database.close()
    if as_json:
        _print_json(result)
        return
    for key, value in result.items():
        out.print(f"{key:18} {value}")


@eval_app.command("pii")
def eval_pii(
    dataset: Annotated[
        Path, typer.Option("--dataset", help="presidio-research JSON: [{full_text, spans: [{entity_type, ...}]}].")
    ],
    as_json: JsonOption = False,
) -> None:
    """Score the personal-data finder per entity type (precision, recall, F1; spans match when they overlap) and
    its latency per sentence."""
    from rails import pii

    if not dataset.is_file():
        raise _fail(f"no such file: {dataset}")
    try:
        samples, problems = pii.read_dataset(dataset)
    except ValueError as error:
        raise _fail(str(error)) from error
    for problem in problems:
        err.print(escape(problem))
    with progress_bar() as progress:
        task = progress.add_task("pii", total=len(samples))
        result = pii.evaluate(samples, progress=lambda done, _: progress.update(task, completed=done))
    result["skipped_rows"] = len(problems)
    if as_json:
        _print_json(result)
        return
    table = Table("entity", "precision", "recall", "F1", "found", "labelled")
    for entity, scores in result["entities"].items():
        table.add_row(
            entity,
            f"{scores['precision']:.3f}",
            f"{scores['recall']:.3f}",
            f"{scores['f1']:.3f}",
            str(scores["predicted"]),
            str(scores["labelled"]),
        )
    out.print(table)
    latency = result["latency_ms"]
    out.print(f"{result['sentences']} sentences, {result['match']}")
    out.print(f"latency per sentence: p50 {latency['p50']:.2f} ms, p95 {latency['p95']:.2f} ms")


@eval_app.command("guard")
def eval_guard(
    dataset: Annotated[
        Path,
        typer.Option("--dataset", help="CSV rows {text, label, ...}; labels jailbreak, injection, harmful or benign*."),
    ],
    as_json: JsonOption = False,
) -> None:
    """Run every prompt through the whole input-rail pass: TPR, FPR, block rate per label, latency per prompt."""
    from rails import Guard, GuardConfigError
    from rails.train import evaluate_guard, read_rows

    try:
        rows = read_rows(dataset, on_error=lambda line: err.print(escape(line), soft_wrap=True))
        guard = Guard()
        guard.warm_up()
    except (ValueError, GuardConfigError) as error:
        raise _fail(str(error)) from error
    try:
        with progress_bar() as progress:
            task = progress.add_task("input rails", total=len(rows))
            result = evaluate_guard(
                lambda text: guard.check_input(text).blocked,
                rows,
                on_prompt=lambda _: progress.advance(task),
            )
    finally:
        guard.close()
    if as_json:
        _print_json(result)
        return
    table = Table("label", "blocked")
    for label, rate in result["per_label"].items():
        table.add_row(label, f"{rate:.3f}")
    out.print(table)
    latency = result["latency_ms"]
    out.print(f"{result['prompts']} prompts: TPR {result['tpr']}, FPR {result['fpr']}")
    out.print(f"latency per prompt: p50 {latency['p50']:.2f} ms, p95 {latency['p95']:.2f} ms")


@rails_app.command("train")
def rails_train(
    data: Annotated[
        Path | None,
        typer.Option("--data", help="train.csv (default: ../shared/data/guard); dev.csv beside it is scored."),
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Where to write the weights (default: rails/models).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Retrain the prompt-attack classifier; a rerun on the same data writes the same files."""
    import logging

    from rails.prompt_attack import MODELS_DIR
    from rails.train import DEFAULT_DATA, resolve_data, summary, train

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    train_path, dev_path = resolve_data(data or DEFAULT_DATA)
    try:
        metadata = train(train_path, out_dir or MODELS_DIR, dev_path=dev_path)
    except ValueError as error:
        raise _fail(str(error)) from error
    result = summary(metadata)
    if as_json:
        _print_json(result)
        return
    for name in ("kfold_cv", "unseen_source", "dev"):
        if name in result:
            out.print(f"{name:14} TPR {result[name]['tpr']}, FPR {result[name]['fpr']}")
    out.print(f"threshold {result['threshold']}; wrote {out_dir or MODELS_DIR}")


@app.command()
def doctor(db: DbOption = None) -> None:
    """Show the settings in force, the chat model and why, and what the database holds."""
    from agent.pgdb import redact

    settings = _settings(db)
    for name, value in settings.model_dump().items():
        out.print(f"{name:20} {redact(value) if name == 'db' else value}")
    services = _services(settings)
    out.print(f"{'chunks':20} {services.store.count()}")
    out.print(f"{'pending reviews':20} {len(services.reviews.pending())}")
    _prepare(settings, announce=True)


if __name__ == "__main__":
    app()
