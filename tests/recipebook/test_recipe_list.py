"""`cnnlab recipe list` answers every question of both documents, theory included, in their order."""

from __future__ import annotations

from cnnlab.recipebook import REGISTRY
from cnnlab.recipebook.core import in_document_order, questions

SEED_QUESTIONS = {("000", n) for n in range(1, 11)} | {("002", n) for n in range(1, 11)}
"""000: Questions 1-10; 002: questions 1-5 (theory) and answers 6-10 (code)."""


def test_every_seed_question_has_a_recipe() -> None:
    answered = {q for r in REGISTRY.values() for q in questions(r)}
    assert sorted(SEED_QUESTIONS - answered) == []
    assert answered <= SEED_QUESTIONS, "a recipe names a question the documents do not have"


def test_the_list_follows_the_documents() -> None:
    order = [questions(r)[0] for r in in_document_order()]
    assert order == sorted(order)
    assert questions(REGISTRY["alexnet-vs-vgg"]) == [("000", 3), ("002", 5)]


def test_the_cli_lists_every_recipe_with_its_question(capsys, monkeypatch) -> None:
    from tests.test_cli import run_cli

    code, out, _ = run_cli(["recipe", "list"], capsys, monkeypatch)
    assert code == 0
    rows = [line for line in out.splitlines() if line.startswith("│ ") and not line.startswith("│  ")]
    names = [row.split("│")[1].strip() for row in rows]
    assert [n for n in names if n] == [r.name for r in in_document_order()]
