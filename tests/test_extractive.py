"""Extractive answers: verbatim sentences of the sources, cited, or a plain "not found"."""

from __future__ import annotations

from agent.embeddings import default_embeddings
from agent.extractive import NOT_FOUND, best_sentences, compose_answer, split_sentences

SOURCES = [
    (1, "Roberts, Iwan (26 October 2017). Roberts, Iwan (12 May 2020). The Pink'un. Retrieved 24 April 2019."),
    (
        2,
        "His book prompted controversy when it was published in 2004.\nIwan Wyn Roberts was born in Bangor, "
        "Gwynedd, on 26 June 1968,[1] and grew up in Barmouth.[2]\nRoberts says most fans would know him.",
    ),
]


def test_the_answering_sentence_is_quoted_verbatim_and_cited() -> None:
    extracts = best_sentences("Where was Iwan Roberts born?", SOURCES, default_embeddings())
    assert extracts[0].n == 2 and extracts[0].sentence.startswith("Iwan Wyn Roberts was born in Bangor")
    answer = compose_answer(extracts)
    assert answer.startswith("\u201cIwan Wyn Roberts was born in Bangor") and "[2]" in answer
    assert all(extract.sentence in " ".join(SOURCES[extract.n - 1][1].split()) for extract in extracts)


def test_nothing_relevant_is_said_plainly() -> None:
    assert best_sentences("What is the boiling point of mercury?", SOURCES, default_embeddings()) == []
    assert compose_answer([]) == NOT_FOUND


def test_sentences_end_after_footnote_markers() -> None:
    sentences = split_sentences(SOURCES[1][1])
    assert sentences[1] == "Iwan Wyn Roberts was born in Bangor, Gwynedd, on 26 June 1968,[1] and grew up in Barmouth."
