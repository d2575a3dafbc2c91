"""Both chunk stores on real components, a SQLite file and a real PostgreSQL 18 server (pgvector): no mocks.

Retrieval behaviour is asserted on both stores (tests parametrized ``sqlite``/``postgres``), which holds the
Postgres store to the SQLite one's semantics; what only Postgres has (tsquery quoting, the HNSW index, COPY
upserts, threads, the schema) is asserted on ``PgChunkStore`` alone.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from agent import Settings
from agent.db import Database
from agent.embeddings import default_embeddings
from agent.pgstore import PgChunkStore, tsquery_text
from agent.store import ChunkStore, Filters, HybridSearchStore, SearchOptions
from loaders.ingest import file_units, ingest

STORES = ["sqlite", "postgres"]

CORPUS = [
    "A sourdough starter is a culture of wild yeast and lactic acid bacteria; feed it flour and water daily, keep it"
    " warm, and bake when it doubles. The recipe came from Pieter Haverkamp.",
    "Haverford College is a liberal arts college in Pennsylvania.",
    "The Hamburg harbour is one of the busiest ports in Europe.",
    "Camping near the river requires a permit from the park office.",
    "Van Kampen wrote a textbook on stochastic processes.",
    "The Haverhill line runs trains from Boston to New Hampshire.",
    "Dutch surnames often begin with van or de.",
    "The cat curled up on the warm windowsill and purred all afternoon.",
    "Glaciers carve U-shaped valleys as they slowly move downhill.",
    "Interest rates set by the central bank influence mortgage costs.",
    "The Treaty of Westphalia ended the Thirty Years' War in 1648.",
    "Photosynthesis turns sunlight, water and carbon dioxide into sugar.",
]
IDS = [f"chunk-{n}" for n in range(len(CORPUS))]
METADATAS = [{"source": f"notes/{n}.txt", "page": n % 3, "start_index": 0, "end_index": 10} for n in range(len(CORPUS))]

# Eight XQuAD articles (five Wikipedia paragraphs each), one file per article: its type and tags.
ARTICLES = {
    "Super_Bowl_50": ("txt", ["sport"]),
    "Warsaw": ("md", ["city", "europe"]),
    "Steam_engine": ("pdf", ["technology"]),
    "Oxygen": ("txt", ["science"]),
    "Amazon_rainforest": ("pdf", ["nature"]),
    "Black_Death": ("md", ["history", "europe"]),
    "Newcastle_upon_Tyne": ("txt", ["city", "europe"]),
    "Rhine": ("md", ["river", "europe"]),
}
# The Rhine Gorge paragraph, stored a second time as someone's notes.
COPIED = "xq-a41-p00"


# More plant-care sentences than a search takes from each side (20): their meaning is the query's, their words not.
POTTING = [
    "Move a succulent to a larger pot in spring, when its roots fill the old one.",
    "When transplanting a succulent, shake off the old soil and trim dead roots.",
    "Use a gritty, fast-draining mix when you move a succulent into a new pot.",
    "Wear thick gloves to handle spiny succulents while moving them to a bigger pot.",
    "Wait a week before watering a freshly transplanted succulent.",
    "A terracotta pot with a drainage hole keeps succulent roots from rotting.",
    "Transplant a root-bound houseplant into a pot one size larger.",
    "Loosen the root ball gently before setting a plant in fresh potting soil.",
    "Desert succulents need a sandy soil mix and very little water.",
    "Choose a pot only slightly wider than the plant's root ball.",
    "Wrap a prickly plant in folded newspaper to lift it out of its pot.",
    "Fresh potting mix gives a transplanted plant new nutrients.",
    "Spring is the best season to move houseplants into bigger containers.",
    "Check the roots for rot when you take a plant out of its container.",
    "Succulents store water in their thick stems and leaves.",
    "Put gravel at the bottom of a planter so water drains away from the roots.",
    "A plant outgrows its pot when roots poke out of the drainage hole.",
    "After transplanting, keep the plant out of direct sun for a few days.",
    "Agaves and aloes are succulents that like dry, well-drained soil.",
    "Use tongs to hold a spiky plant while you change its container.",
    "Houseplants in small pots dry out quickly and need more frequent watering.",
    "Trim damaged roots with clean scissors before replanting a succulent.",
    "Water a potted succulent only when its soil is completely dry.",
    "Cut a small offset from the mother succulent and plant it in its own pot.",
    "Moving a plant stresses it, so avoid fertilising it for a month afterwards.",
    "A succulent in a plastic pot keeps its soil moist for longer than one in clay.",
    "Most succulents want four to six hours of bright light a day.",
    "Let the cut end of a succulent cutting dry before planting it.",
    "Old potting soil compacts and stops air reaching a plant's roots.",
    "Jade plants and echeverias can be moved to new pots every two years.",
    "Place a coffee filter over the drainage hole to keep soil in the pot.",
    "Spiny plants can be lifted with a rolled towel wrapped around the stem.",
]


@contextmanager
def fresh_database(pg_server: Any) -> Iterator[str]:
    """A new, empty database on the session's server, dropped afterwards, so tests never see each other's rows."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server.get_uri(), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield pg_server.get_uri(database=name)
    finally:
        with psycopg.connect(pg_server.get_uri(), autocommit=True) as admin:
            admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


@contextmanager
def open_store(kind: str, request: pytest.FixtureRequest, folder: Path) -> Iterator[HybridSearchStore]:
    """An empty store: a SQLite file in ``folder``, or a fresh database on the session's Postgres."""
    if kind == "sqlite":
        database = Database(folder / "chunks.db")
        try:
            yield ChunkStore(database, default_embeddings())
        finally:
            database.close()
        return
    with fresh_database(request.getfixturevalue("pg_server")) as url:
        store = PgChunkStore(url, default_embeddings())
        try:
            yield store
        finally:
            store.close()


@pytest.fixture
def pg_url(pg_server: Any) -> Iterator[str]:
    with fresh_database(pg_server) as url:
        yield url


@pytest.fixture
def store(pg_url: str) -> Iterator[PgChunkStore]:
    store = PgChunkStore(pg_url, default_embeddings())
    yield store
    store.close()


@pytest.fixture
def filled(store: PgChunkStore) -> PgChunkStore:
    store.add_texts(CORPUS, METADATAS, ids=IDS)
    return store


@pytest.fixture(params=STORES)
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[HybridSearchStore]:
    with open_store(request.param, request, tmp_path) as store:
        yield store


@pytest.fixture
def any_filled(any_store: HybridSearchStore) -> HybridSearchStore:
    any_store.add_texts(CORPUS, METADATAS, ids=IDS)
    return any_store


@pytest.fixture(scope="module", params=STORES)
def wiki(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, shared_data: Path
) -> Iterator[HybridSearchStore]:
    """The eight articles' 40 paragraphs plus one copied paragraph, in a store of each kind."""
    passages = [json.loads(line) for line in (shared_data / "rag" / "xquad" / "corpus.jsonl").read_text().splitlines()]
    passages = [passage for passage in passages if passage["title"] in ARTICLES]
    metadatas = [
        {
            "source": f"xquad/{passage['title']}.{ARTICLES[passage['title']][0]}",
            "doc_id": passage["title"],
            "title": passage["title"].replace("_", " "),
            "type": ARTICLES[passage["title"]][0],
            "tags": ARTICLES[passage["title"]][1],
        }
        for passage in passages
    ]
    copied = next(passage for passage in passages if passage["id"] == COPIED)
    with open_store(request.param, request, tmp_path_factory.mktemp(request.param)) as store:
        store.add_texts(
            [passage["text"] for passage in passages] + [copied["text"]],
            [*metadatas, {"source": "notes/rhine.txt", "doc_id": "rhine-notes", "type": "txt", "tags": ["river"]}],
            ids=[passage["id"] for passage in passages] + ["rhine-notes"],
        )
        yield store


def ids(results: list[tuple[Any, float]]) -> list[str]:
    return [document.id for document, _ in results]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("Who sang the national anthem at Super Bowl 50?", "xq-a00-p03"),
        ("When was Warsaw's first stock exchange established?", "xq-a01-p04"),
        ("What instrument is used to examine steam engine performance?", "xq-a11-p01"),
        ("When did Carl Wilhelm Scheele discover oxygen?", "xq-a12-p00"),
        ("How many people died of the plague?", "xq-a20-p03"),
    ],
)
@pytest.mark.parametrize("mode", ["hybrid", "vector", "keyword"])
def test_clear_questions_find_their_paragraph_on_both_stores(
    wiki: HybridSearchStore, mode: str, query: str, expected: str
) -> None:
    (best, score), *_ = wiki.search(query, 3, mode=mode)
    assert best.id == expected and score > 0
    # Where each side ranked it, and its score there; None for a side that was not searched.
    metadata = best.metadata
    if mode == "keyword":
        assert metadata["vector_rank"] is metadata["vector_distance"] is None
    else:
        assert metadata["vector_rank"] >= 1 and 0.0 < metadata["vector_distance"] < 0.8
    if mode == "vector":
        assert metadata["keyword_rank"] is metadata["keyword_score"] is None
    else:
        assert metadata["keyword_rank"] >= 1 and metadata["keyword_score"] != 0


# Each keeps paragraphs that the question is about (a filter to unrelated ones finds nothing, by the relevance
# floor) but that the unfiltered search ranks below the Rhine's.
FILTERS: list[Filters] = [
    {"source": "xquad/Newcastle_upon_Tyne.txt"},
    {"doc_id": "Black_Death"},
    {"type": "txt"},
    {"tags": "city"},
    {"doc_id": ["Warsaw", "Black_Death"]},
    {"type": "md", "tags": ["history", "sport"]},
]


def passes(metadata: dict[str, Any], filters: Filters) -> bool:
    """Whether a chunk's metadata passes ``filters`` as the stores define them."""
    for name, value in filters.items():
        values = {value} if isinstance(value, str) else set(value)
        have = set(metadata.get("tags") or []) if name == "tags" else {metadata.get(name)}
        if not values & have:
            return False
    return True


@pytest.mark.parametrize("filters", FILTERS, ids=lambda filters: json.dumps(filters))
@pytest.mark.parametrize("mode", ["hybrid", "vector", "keyword"])
def test_a_filter_returns_only_its_chunks_and_finds_them_beyond_the_top_k(
    wiki: HybridSearchStore, mode: str, filters: Filters
) -> None:
    query = "history of trade, ships and rivers in Europe"
    unfiltered = ids(wiki.search(query, 3, mode=mode))
    filtered = wiki.search(query, 3, mode=mode, filters=filters)
    assert filtered and all(passes(document.metadata, filters) for document, _ in filtered)
    assert set(ids(filtered)) - set(unfiltered), "the filter found nothing the unfiltered search had not"


def test_a_filter_is_complete_where_the_vector_index_alone_would_find_nothing(store: PgChunkStore) -> None:
    """1,500 chunks nearer the question than every chunk passing the filter: HNSW's own candidates all fail it.

    The vectors are built around the real question's vector, so the right answer is known. ``enable_sort = off``
    makes the planner take the vector index for every filter, as it does for broad filters at 100k chunks but not
    on a table this small. With iterative scans off (as when one gives up after ``hnsw.max_scan_tuples``) the
    index yields none of the three chunks a narrow filter keeps, and the exact scan must find them.
    """
    rng = np.random.default_rng(7)
    query = "Which treaty ended the Thirty Years' War?"
    question = np.asarray(store.embeddings.embed_query(query))

    def around(similarity: float, n: int) -> list[list[float]]:
        noise = rng.normal(size=(n, question.size))
        noise -= np.outer(noise @ question, question)
        noise /= np.linalg.norm(noise, axis=1, keepdims=True)
        return (similarity * question + np.sqrt(1 - similarity**2) * noise).tolist()

    near, far, wanted = around(0.6, 1500), around(0.1, 1497), [around(s, 1)[0] for s in (0.35, 0.45, 0.3)]
    store.add_embeddings(
        ["near"] * len(near) + ["far"] * len(far) + ["wanted"] * len(wanted),
        near + far + wanted,
        [{"source": "near.txt"}] * len(near)
        + [{"source": "far.txt", "type": "pdf", "tags": ["x"]}] * len(far)
        + [{"source": "wanted.txt", "type": "pdf", "tags": ["x"]}] * len(wanted),
        ids=[f"near-{n}" for n in range(len(near))] + [f"far-{n}" for n in range(len(far))] + ["w0", "w1", "w2"],
    )
    assert not {"w0", "w1", "w2"} & set(ids(store.search(query, 20, mode="vector")))
    with store.connection() as conn:
        conn.execute("SET enable_sort = off")
    for filters in ({"source": "wanted.txt"}, {"type": "pdf"}, {"tags": "x"}):
        found = store.search(query, 3, mode="vector", filters=filters)
        assert ids(found) == ["w1", "w0", "w2"], filters
        distances = [document.metadata["vector_distance"] for document, _ in found]
        assert distances == pytest.approx([0.55, 0.65, 0.7], abs=1e-4)
    with store.connection() as conn:
        conn.execute("SET hnsw.iterative_scan = off")
    assert ids(store.search(query, 3, mode="vector", filters={"source": "wanted.txt"})) == ["w1", "w0", "w2"]


def test_copies_of_one_paragraph_fill_one_place(wiki: HybridSearchStore) -> None:
    query = "castles and vineyards of the Rhine Gorge"
    (copy,) = wiki.get_by_ids(["rhine-notes"])
    kept = [document.page_content for document, _ in wiki.search(query, 3)]
    assert kept.count(copy.page_content) == 1 and len(set(kept)) == 3
    every = wiki.search(query, 3, options=SearchOptions(duplicate_similarity=1.0))
    assert [document.page_content for document, _ in every].count(copy.page_content) == 2


def test_an_unrelated_question_finds_nothing(wiki: HybridSearchStore) -> None:
    query = "What is the rest mass of a charm quark in quantum chromodynamics?"
    assert wiki.search(query, 5) == wiki.search(query, 5, mode="vector") == []
    # It is the floor that empties the answer: without it the nearest paragraphs come back.
    assert len(wiki.search(query, 5, options=SearchOptions(relevance_floor=0.0))) == 5


@pytest.mark.parametrize("fusion", ["convex", "rrf"])
def test_fusion_weights_decide_which_side_wins(any_filled: HybridSearchStore, fusion: str) -> None:
    # Only the sourdough chunk names Pieter Haverkamp, in passing: its vector is about bread, so vector search
    # ranks look-alike names (Haverford, Van Kampen, Dutch surnames) first.
    query = "Pieter Haverkamp"
    # (Scored by its best sentence, the one naming him, the chunk is near by meaning too: whole-text vectors here.
    # It is also the longest of these one-line chunks, which the short-chunk discount would favour.)
    vector_only = any_filled.search(
        query,
        3,
        options=SearchOptions(fusion=fusion, keyword_weight=0.0, sentence_scores=False, short_chunk_penalty=0.0),
    )
    assert "chunk-0" not in ids(vector_only)
    (best, _), *_ = any_filled.search(query, 3, options=SearchOptions(fusion=fusion))
    assert best.id == "chunk-0" and best.metadata["keyword_rank"] == 1 and best.metadata["vector_rank"] > 3


def test_convex_fusion_scores_each_candidate_on_both_sides(any_store: HybridSearchStore) -> None:
    # Two chunks name the zorblat: the plant (nearest of all by meaning) and a band (named twice, so the better
    # full-text match, but further by meaning than every plant sentence, past the vector side's 20 candidates).
    plant = "The zorblat is a small spiny plant from the dry hills of Peru."
    band = "Zorblat were a punk band from Leeds; Zorblat split up in 1979."
    any_store.add_texts(
        [*POTTING, plant, band],
        [{"source": f"{n}.txt"} for n in range(len(POTTING) + 2)],
        ids=[f"pot-{n}" for n in range(len(POTTING))] + ["plant", "band"],
    )
    query = "How do I repot a zorblat cactus?"
    # Full text weighs more than meaning here, so that without filled scores the better full-text match wins.
    filled = any_store.search(query, 2, options=SearchOptions(keyword_weight=1.5))
    assert ids(filled) == ["plant", "band"]
    plant_hit, band_hit = (document.metadata for document, _ in filled)
    assert (plant_hit["vector_rank"], plant_hit["keyword_rank"], band_hit["keyword_rank"]) == (1, 2, 1)
    # The band was not among the nearest, yet its distance is known (and counts); the plant's good full-text
    # match counts too, instead of being the worst of the two matches.
    assert band_hit["vector_rank"] is None and band_hit["vector_distance"] > plant_hit["vector_distance"]
    # Unfilled, the plant is the full-text side's worst candidate (0 there) and the band the vector side's.
    unfilled = any_store.search(query, 2, options=SearchOptions(keyword_weight=1.5, fill_scores=False))
    assert ids(unfilled) == ["band", "plant"] and unfilled[0][0].metadata["vector_distance"] is None
    assert SearchOptions.from_settings(Settings(fusion_fill_scores=False)).fill_scores is False


def test_a_chunk_is_scored_by_its_best_sentence(any_store: HybridSearchStore) -> None:
    # The answer is one sentence at the end of a chunk about pots; the other chunk names the striker three times
    # (the better full-text match) but never says where he was born.
    answer = " ".join(POTTING[:4]) + " Iwan Roberts, the Welsh striker, was born in Bangor in 1968."
    club = (
        "Iwan Roberts played for Norwich City and Wales. Roberts scored many goals for Norwich City, and Norwich fans"
        " still sing about Roberts."
    )
    any_store.add_texts(
        [answer, club, *POTTING[4:8]],
        [{"source": f"{n}.txt"} for n in range(6)],
        ids=["answer", "club", *(f"pot-{n}" for n in range(4))],
    )
    query = "Where was Iwan Roberts born?"
    by_sentence = any_store.search(query, 2)
    assert ids(by_sentence) == ["answer", "club"]
    # The answer's distance is its born-in-Bangor sentence's, which the rest of the chunk no longer dilutes.
    _, sentences = default_embeddings().encode_with_sentences([answer])
    nearest = float((sentences[0] @ np.asarray(default_embeddings().embed_query(query))).max())
    assert by_sentence[0][0].metadata["vector_distance"] == pytest.approx(1 - nearest, abs=1e-4)
    whole_text = any_store.search(query, 2, options=SearchOptions(sentence_scores=False))
    assert ids(whole_text) == ["club", "answer"]
    assert whole_text[1][0].metadata["vector_distance"] > by_sentence[0][0].metadata["vector_distance"] + 0.2
    assert SearchOptions.from_settings(Settings(sentence_scores=False)).sentence_scores is False


def test_chunks_stored_without_sentence_vectors_keep_their_whole_text_vector(any_store: HybridSearchStore) -> None:
    # Written before sentence vectors existed, or by other embeddings: searched by the chunk's own vector.
    texts = [POTTING[0], POTTING[2]]
    vectors = default_embeddings().embed_documents(texts)
    any_store.add_texts(texts, [{"source": "a.txt"}, {"source": "b.txt"}], ids=["a", "b"], vectors=vectors)
    (best, _), *_ = any_store.search("When should I water a succulent after repotting?", 1)
    assert best.id == "b"
    query = np.asarray(default_embeddings().embed_query("When should I water a succulent after repotting?"))
    assert best.metadata["vector_distance"] == pytest.approx(1 - float(query @ np.asarray(vectors[1])), abs=1e-4)


def test_short_captions_do_not_crowd_out_the_paragraph_that_answers(
    any_store: HybridSearchStore, shared_data: Path
) -> None:
    # mini-Wikipedia's Roosevelt pages hold captions and reference lines ("Theodore Roosevelt at age 11"): nothing in
    # them but the subject, so they match "Where was ... from?" closely on both sides and never answer it.
    corpus = (shared_data / "rag" / "mini_wikipedia" / "corpus.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in corpus]
    rows = [row for row in rows if "Roosevelt" in row["text"]]
    any_store.add_texts(
        [row["text"] for row in rows], [{"source": f"{row['id']}.txt"} for row in rows], ids=[row["id"] for row in rows]
    )
    query, answer, caption = "Where was Theodore Roosevelt from?", "mw-2884", "mw-2883"
    assert "Gramercy section of New York City" in any_store.get_by_ids([answer])[0].page_content
    discounted = any_store.search(query, 5)
    assert answer in ids(discounted) and caption not in ids(discounted)
    undiscounted = any_store.search(query, 5, options=SearchOptions(short_chunk_penalty=0.0))
    assert caption in ids(undiscounted) and answer not in ids(undiscounted)
    assert SearchOptions.from_settings(Settings(short_chunk_penalty=0.1, short_chunk_chars=80)) == SearchOptions(
        short_chunk_penalty=0.1, short_chunk_chars=80
    )


def test_hybrid_finds_by_meaning_what_keywords_miss(any_filled: HybridSearchStore) -> None:
    query = "a feline dozing in the sun"  # shares no word (after stemming) with the cat chunk
    assert any_filled.search(query, 3, mode="keyword") == []
    best, *_ = any_filled.search(query, 3)
    assert best[0].id == "chunk-7"
    assert (best[0].metadata["vector_rank"], best[0].metadata["keyword_rank"]) == (1, None)


def test_the_title_is_embedded_with_the_chunk(any_store: HybridSearchStore) -> None:
    # The same words under two titles: only the title can tell the vector side which river is meant.
    text = "It floods every summer, and the farms along its banks depend on the silt it leaves behind."
    any_store.add_texts([text, text], [{"source": "a.md", "title": "Nile"}, {"source": "b.md", "title": "Mekong"}])
    (best, _), *_ = any_store.search("the river Nile in Egypt", 1, mode="vector")
    assert best.metadata["title"] == "Nile"
    (best, _), *_ = any_store.search("the Mekong in Vietnam and Cambodia", 1, mode="vector")
    assert best.metadata["title"] == "Mekong"


def test_unknown_filters_and_modes_are_refused_alike(any_filled: HybridSearchStore) -> None:
    message = "unknown search filter 'colour': use one of source, doc_id, type, tags"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        any_filled.search("cat", 3, filters={"colour": "red"})
    with pytest.raises(ValueError, match=r"^unknown search mode 'fuzzy': use one of hybrid, vector, keyword$"):
        any_filled.search("cat", 3, mode="fuzzy")  # type: ignore[arg-type]


def test_add_search_replace_delete_round_trip(store: PgChunkStore) -> None:
    metadatas = [{**metadata, "title": "Notes", "tags": ["a"]} for metadata in METADATAS]
    assert store.add_texts(CORPUS, metadatas, ids=IDS) == IDS
    assert store.count() == len(CORPUS)

    (document, score), *_ = store.search("Which treaty ended the Thirty Years' War?", 3)
    assert document.id == "chunk-10" and score > 0
    assert document.metadata["doc_id"] == document.metadata["source"] == "notes/10.txt"
    assert (document.metadata["page"], document.metadata["title"], document.metadata["tags"]) == (1, "Notes", ["a"])
    assert document.metadata["vector_rank"] == document.metadata["keyword_rank"] == 1

    # Adding an existing id replaces that chunk, text and vector both.
    store.add_texts(["Penguins huddle together to survive the Antarctic winter."], [METADATAS[10]], ids=["chunk-10"])
    assert store.count() == len(CORPUS)
    assert store.get_by_ids(["chunk-10"])[0].page_content.startswith("Penguins")
    assert store.search("emperor penguins in the cold", 1, mode="vector")[0][0].id == "chunk-10"
    assert not store.search("Westphalia", 5, mode="keyword")

    assert [document.id for document in store.get_by_ids(["chunk-3", "missing", "chunk-1"])] == ["chunk-3", "chunk-1"]
    store.delete(["chunk-3", "chunk-1"])
    assert store.count() == len(CORPUS) - 2 and store.get_by_ids(["chunk-3"]) == []
    store.delete()
    assert store.count() == 0 and store.search("cat", 3) == []


def test_user_text_is_never_query_syntax(filled: PgChunkStore) -> None:
    assert tsquery_text(["o'brien", "a\\b"]) == "'o''brien' | 'a\\\\b'"
    for query in ['"war" -treaty', "war & !treaty | :*", "war <-> (treaty", "o'brien\\", "'", "the of", "x"]:
        filled.search(query, 3, mode="keyword")  # must not raise a tsquery syntax error
    assert filled.search("the of and", 3, mode="keyword") == []  # stop words only: nothing to match
    assert [document.id for document, _ in filled.search('-"Westphalia"', 3, mode="keyword")] == ["chunk-10"]


def test_keyword_ranking_prefers_chunks_sharing_more_words(filled: PgChunkStore) -> None:
    # Three words, so chunks sharing two of them are ranked first; the one sharing all three comes out on top,
    # and with fewer than `depth` such chunks the single-word matches still follow.
    ranked = [document.id for document, _ in filled.search("war treaty photosynthesis", 5, mode="keyword")]
    assert ranked[0] == "chunk-10" and "chunk-11" in ranked


def test_a_long_chunks_full_text_index_stays_in_its_row(store: PgChunkStore, shared_data: Path) -> None:
    """Keyword search ranks every match by its ``tsv``: kept out of line, each match cost a TOAST lookup as well."""
    passages = [json.loads(line) for line in (shared_data / "rag" / "xquad" / "corpus.jsonl").read_text().splitlines()]
    longest = max(passages, key=lambda passage: len(passage["text"]))
    store.add_texts([longest["text"]], [{"source": "long.txt", "title": longest["title"]}], ids=["long"])
    with store.connection() as conn:
        tsv_toast, embedding_toast = conn.execute(
            "SELECT pg_column_toast_chunk_id(tsv), pg_column_toast_chunk_id(embedding) FROM chunks"
        ).fetchone()
    # The row was over the toast threshold (its vector went out of line); its tsv stayed.
    assert embedding_toast is not None and tsv_toast is None
    assert ids(store.search(longest["title"].replace("_", " "), 1, mode="keyword")) == ["long"]


def test_reingest_adds_nothing_and_a_changed_file_replaces_its_chunks(store: PgChunkStore, tmp_path: Path) -> None:
    """``loaders.ingest`` on the store, its records in the store's own database (``ingest_records``)."""
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "office.txt").write_text("The office moved to Oslo in 2021.\n\nThe canteen opens at eight.\n")
    (folder / "bread.md").write_text("# Bread\n\nA sourdough starter needs flour and water every day.\n")
    first = ingest(file_units([folder]), store)
    assert first.added == first.chunks == store.count() > 0 and not first.failed
    second = ingest(file_units([folder]), store)
    assert (second.added, second.updated, second.deleted, second.skipped) == (0, 0, 0, first.added)

    (folder / "office.txt").write_text("The office moved to Bergen in 2023.\n")
    third = ingest(file_units([folder]), store)
    assert (third.added, third.deleted) == (1, 1) and store.count() == first.added
    texts = [document.page_content for document, _ in store.search("Where did the office move?", 2)]
    assert "Bergen" in texts[0] and not any("Oslo" in text for text in texts)


def test_one_store_serves_many_threads(filled: PgChunkStore) -> None:
    queries = ["Pieter Haverkamp", "a feline dozing in the sun", "Which treaty ended the war?"] * 8
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda query: filled.search(query, 1)[0][0].id, queries))
    assert results == ["chunk-0", "chunk-7", "chunk-10"] * 8


def test_an_existing_table_of_another_dimension_is_refused(store: PgChunkStore) -> None:
    with pytest.raises(ValueError, match="384-d vectors"):
        PgChunkStore(store.url, default_embeddings(), dimensions=768)
