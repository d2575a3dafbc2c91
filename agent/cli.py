"""The ``railgraph`` command: ingest documents, chat, ask, and work through the review queue.

Results go to stdout (``--json`` for scripts); progress, model choice and errors go to stderr.
"""

from __future__ import annotations

import getpass
import itertools
import json
import re
import sys
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

out = Console()
err = Console(stderr=True)

DbOption = Annotated[
    str | None, typer.Option("--db", help="Database URL (default: RAILGRAPH_DB or sqlite:///railgraph.db).")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object for scripts.")]
ThreadOption = Annotated[
    str | None, typer.Option("--thread", help="Conversation thread id; reuse it to continue a conversation.")
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
        settings.sqlite_path  # noqa: B018 - rejects a database URL this version cannot open
    except ValidationError as error:
        problems = "; ".join(f"RAILGRAPH_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in error.errors())
        raise _fail(f"invalid settings ({problems}); see the configuration table in README.md") from error
    except ValueError as error:
        raise _fail(str(error)) from error
    return settings


def _agent(settings: Settings):
    from agent.graph import build_agent

    return build_agent(settings)


def _services(settings: Settings):
    from agent.services import services_for

    return services_for(settings)


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")


def _fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}")
    return typer.Exit(2)


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

        def show(token: str) -> None:
            streamed.append(token)
            live.update(Markdown("".join(streamed)))

        result = ask_turn(graph, question, thread_id=thread_id, on_token=show)
    # The streamed draft is replaced by what the rails and the reviewer let through.
    out.print(Markdown(result["answer"]))
    if result["status"] == "answered":
        _print_sources(result)
    elif result["status"] == "pending_review":
        err.print(f"[yellow]review id:[/yellow] {result['review_id']}")
    return result


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
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Ask one question (non-interactive); --json prints status, answer, sources, rails and thread_id."""
    settings = _settings(db)
    thread_id = thread or uuid.uuid4().hex
    _prepare(settings, announce=not as_json)
    if as_json:
        _print_json(_run_turn(settings, question, thread_id, stream=False))
        return
    _run_turn(settings, question, thread_id, stream=True)
    err.print(f"[dim]thread: {thread_id}[/dim]")


@app.command()
def chat(thread: ThreadOption = None, db: DbOption = None) -> None:
    """Talk with your documents; the conversation is kept and resumes with --thread."""
    settings = _settings(db)
    thread_id = thread or uuid.uuid4().hex
    _prepare(settings, announce=True)
    graph = _agent(settings)
    history = graph.get_state({"configurable": {"thread_id": thread_id}}).values.get("messages", [])
    err.print(
        f"[dim]thread {thread_id} ({len(history)} earlier messages). Type your question; "
        "Ctrl-D or 'exit' to leave.[/dim]"
    )
    while True:
        try:
            question = out.input("[bold green]you>[/bold green] ").strip()
        except (EOFError, KeyboardInterrupt):
            break
        if question in {"exit", "quit", "/exit"}:
            break
        if question:
            _run_turn(settings, question, thread_id, stream=True)
    err.print(f"[dim]bye; continue with: railgraph chat --thread {thread_id}[/dim]")


@review_app.command("list")
def review_list(db: DbOption = None, as_json: JsonOption = False) -> None:
    """Pending drafts, oldest first."""
    pending = _services(_settings(db)).reviews.pending()
    if as_json:
        _print_json([review.summary() for review in pending])
        return
    table = Table("id", "created", "question", "draft")
    for review in pending:
        table.add_row(review.id, review.created_at, review.question[:60], review.draft[:80])
    out.print(table if pending else "No drafts are waiting for review.")


@review_app.command("show")
def review_show(review_id: Annotated[str, typer.Argument(help="Id from `review list`.")], db: DbOption = None) -> None:
    """The question, the draft, its sources and the rail verdicts."""
    from agent.review import ReviewNotFound

    try:
        review = _services(_settings(db)).reviews.get(review_id)
    except ReviewNotFound as error:
        raise _fail(str(error)) from error
    out.print(f"[bold]{review.id}[/bold] ({review.status}) thread {review.thread_id}")
    out.print(Markdown(review.payload["description"]))
    for verdict in review.payload.get("rails", []):
        out.print(f"  {verdict['rail']}: {verdict['verdict']} ({verdict['detail']})")


def _decide(review_id: str, decision: dict[str, Any], db: str | None, reviewer: str | None, as_json: bool) -> None:
    from agent.review import AlreadyDecided, ReviewNotFound
    from agent.turns import decide

    settings = _settings(db)
    try:
        result = decide(
            _agent(settings),
            _services(settings).reviews,
            review_id,
            decision,
            reviewer=reviewer or getpass.getuser(),
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
    text: Annotated[str, typer.Option("--text", help="The corrected answer.")],
    reviewer: ReviewerOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Send a corrected answer instead of the draft."""
    _decide(
        review_id,
        {"type": "edit", "args": {"action": "answer", "args": {"draft": text}}},
        db,
        reviewer,
        as_json,
    )


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
        typer.Option("--db", help="sqlite:/// URL to ingest into and reuse (default: a fresh temporary file)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Ingest a corpus and score retrieval on its questions: recall@1/@k, MRR, answers in context, EM/F1, latency."""
    import tempfile

    from agent.db import Database
    from agent.embeddings import default_embeddings
    from agent.evaluation import corpus_documents, evaluate_retrieval, ingest_corpus, read_questions
    from agent.store import ChunkStore, SearchOptions

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
        database = Database(settings.sqlite_path)
        store = ChunkStore(database, default_embeddings(), SearchOptions.from_settings(settings))
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
    for name in ("grouped_cv", "unseen_source", "dev"):
        if name in result:
            out.print(f"{name:14} TPR {result[name]['tpr']}, FPR {result[name]['fpr']}")
    out.print(f"threshold {result['threshold']}; wrote {out_dir or MODELS_DIR}")


@app.command()
def doctor(db: DbOption = None) -> None:
    """Show the settings in force, the chat model and why, and what the database holds."""
    settings = _settings(db)
    for name, value in settings.model_dump().items():
        out.print(f"{name:20} {value}")
    services = _services(settings)
    out.print(f"{'chunks':20} {services.store.count()}")
    out.print(f"{'pending reviews':20} {len(services.reviews.pending())}")
    _prepare(settings, announce=True)


if __name__ == "__main__":
    app()
