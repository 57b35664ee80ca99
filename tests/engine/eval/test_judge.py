"""The judge (``engine.eval.judge``): verdicts read from a real judge's next-token distribution in
both orders, a position-biased judge's preference counted as a tie, the win rate's interval, and
where the judge runs (the evaluated model's own session, beside it, or in turn)."""

from __future__ import annotations

import pytest
import torch
from tiny_model import build_tiny_model

from engine.chat.session import ChatSession
from engine.errors import StudioError
from engine.eval.evalset import EvalExample
from engine.eval.judge import (BESIDE, IN_TURN, LOSS, REUSE, TIE, WIN, JudgeScore, VerdictReader, combine_orders,
                               judge_answers, judge_score, judge_session, verdict_from_logprobs)
from lora_adapters import write_peft_adapter


def _examples(questions: list[str]) -> list[EvalExample]:
    return [EvalExample(index, [{"role": "user", "content": question}], None, None, f"line {index + 1}")
            for index, question in enumerate(questions)]


def test_both_orders_combine_into_one_verdict_and_a_preference_for_a_place_is_a_tie():
    table = {  # (base's answer first, candidate's answer first) -> the candidate's verdict
        (WIN, WIN): WIN, (WIN, TIE): WIN, (TIE, WIN): WIN,
        (LOSS, LOSS): LOSS, (LOSS, TIE): LOSS, (TIE, LOSS): LOSS,
        (TIE, TIE): TIE, (WIN, LOSS): TIE, (LOSS, WIN): TIE,  # the last two: whichever stood first (or second) won
    }
    assert {orders: combine_orders(*orders) for orders in table} == table
    # One order's verdict: the likelier letter, unless the tie is likeliest or the letters are within 0.1 nats.
    assert verdict_from_logprobs(-0.5, -2.0, -5.0) == "A"
    assert verdict_from_logprobs(-2.0, -0.5, -5.0) == "B"
    assert verdict_from_logprobs(-1.0, -1.05, -5.0) == "tie"
    assert verdict_from_logprobs(-2.0, -3.0, -1.0) == "tie"


def test_the_win_rate_counts_a_tie_as_half_with_a_wilson_interval():
    # 12 wins, 3 ties, 5 losses: p = 13.5/20 = 0.675, z = 1.96, z²/n = 0.19207;
    # centre = (0.675 + 0.09604) / 1.19207 = 0.64680;
    # half width = 1.96·√(0.675·0.325/20 + 3.8415/1600) / 1.19207 = 0.19011.
    assert JudgeScore(12, 3, 5).describe("starter") == {
        "wins": 12, "ties": 3, "losses": 5, "comparisons": 20, "win_rate": 0.675,
        "low": pytest.approx(0.45669, abs=1e-5), "high": pytest.approx(0.83691, abs=1e-5), "judge": "starter"}
    # 12 wins of 12: centre = (1 + 0.16006) / 1.32012, half width = 1.96·√(3.8415/576) / 1.32012: the
    # interval reaches down to 0.7575, where a bootstrap would claim [1, 1].
    assert JudgeScore(12, 0, 0).interval() == (pytest.approx(0.75751, abs=1e-5), 1.0)
    assert JudgeScore(0, 0, 0).describe("starter")["win_rate"] is None


def test_the_verdict_is_read_where_the_tokenizer_puts_it(tiny_model_dir):
    from transformers import AutoTokenizer

    # The tiny tokenizer writes " A" as a space and a letter, " tie" as " t" and more: the prompt
    # ends with the space, the letters are read after it, the tie from the position before.
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    reader = VerdictReader.for_tokenizer(tokenizer)
    space, letter_a, letter_b = tokenizer.convert_tokens_to_ids(["Ġ", "A", "B"])
    assert reader.lead_in == (space,) and reader.paths["A"] == (space, letter_a)
    logprobs = torch.full((reader.positions, len(tokenizer)), -9.0)
    logprobs[0, space], logprobs[1, letter_a], logprobs[1, letter_b] = -0.5, -1.0, -3.0
    logprobs[0, reader.paths["tie"][0]] = -4.0
    assert reader.read(logprobs) == {"A": -1.5, "B": -3.5, "tie": -4.0}


def test_the_judge_answers_as_the_base_and_identical_answers_tie(session, tmp_path):
    # Identical answers: both orders show the judge the same prompt, so whatever it says follows
    # the place, never the answer.
    adapter = write_peft_adapter(session.model_path, tmp_path / "pirate", seed=3)
    session.set_adapter(str(adapter))
    answers = ["Paris is the capital of France.", "def add(a, b): return a + b"]
    judgements = judge_answers(session, _examples(["What is the capital of France?", "Add two numbers"]),
                               answers, answers, batch_size=3)
    assert [judgement.verdict for judgement in judgements] == [TIE, TIE]
    assert session.adapter == str(adapter)  # the judge answered as the base, then the adapter came back


@pytest.mark.starter
def test_the_starter_as_judge_prefers_the_first_answer_and_the_candidate_gets_ties(starter_model_dir):
    """The 135M starter, the default judge, puts "A" ahead by about 1.6 nats whatever the answers
    say (measured): in both orders the first answer wins, so neither answer does."""
    judge = ChatSession(str(starter_model_dir), device="cpu", threads=1)  # the worker's one (conftest)
    try:
        [judgement] = judge_answers(judge, _examples(["How many legs does a spider have?"]),
                                    ["A spider has six legs."],  # the base: wrong
                                    ["A spider has eight legs."])  # the candidate: right
    finally:
        judge.close()
    assert (judgement.base_first, judgement.candidate_first) == (LOSS, WIN)
    assert judge_score([judgement]) == JudgeScore(wins=0, ties=1, losses=0)


def test_the_judge_runs_on_the_evaluated_model_beside_it_or_in_turn(session, tiny_model_dir, tmp_path):
    other = build_tiny_model(tmp_path / "other-judge", seed=1)
    seat = judge_session(str(tiny_model_dir), session)
    assert (seat.placement, seat.session) == (REUSE, session)
    seat.release()
    assert session.loaded  # a reused session is its owner's to close

    seat = judge_session(str(other), session, free_bytes=64 * 2**30)
    assert seat.placement == BESIDE and "beside" in seat.reason
    assert seat.session.loaded and session.loaded
    seat.release()
    assert not seat.session.loaded

    # Too little free memory for the judge beside the evaluated model: the evaluated model makes way.
    seat = judge_session(str(other), session, free_bytes=1024)
    assert seat.placement == IN_TURN and "once" in seat.reason
    assert seat.session.loaded and not session.loaded
    seat.release()
    session.load()


def test_a_judge_not_in_the_store_is_refused_before_anything_loads(tiny_model_dir):
    evaluated = ChatSession(str(tiny_model_dir), device="cpu")
    with pytest.raises(StudioError, match="unknown model 'no-such-judge'"):
        judge_session("no-such-judge", evaluated)
    assert not evaluated.loaded
