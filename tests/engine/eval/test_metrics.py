"""Each metric against a value worked out by hand (in the comment beside it), with its edge cases,
and the refusals a user can meet: an unknown metric name, an answer regex that does not compile."""

from __future__ import annotations

import re

import pytest

from engine.errors import StudioError
from engine.eval.metrics import (METRICS, AnswerLength, accuracy, answer_length, check_metrics, corpus_bleu, corpus_chrf,
                                 exact_match, normalize_answer, rouge_l, token_f1)


def test_normalisation_is_squads():
    # lower-case -> "the  cat, sat! an apple's"; punctuation dropped -> "the  cat sat an apples";
    # articles dropped and spaces collapsed -> "cat sat apples"
    assert normalize_answer("The  Cat, sat! An apple's") == "cat sat apples"


def test_exact_match_after_normalisation():
    assert exact_match("The cat sat.", "cat  sat") == 1.0   # both "cat sat"
    assert exact_match("cat sat", "cat sits") == 0.0
    assert exact_match("", "cat") == 0.0
    assert exact_match("", "The") == 1.0   # an article alone normalises to nothing, as SQuAD's script has it


def test_token_f1():
    # [cat, sat] vs [cat, sat, down]: 2 shared, precision 2/2, recall 2/3, F1 = 2*1*(2/3)/(5/3) = 0.8
    assert token_f1("the cat sat", "a cat sat down") == pytest.approx(0.8)
    # [cat, cat] vs [cat]: a word counts as often as it is in both (once), precision 1/2, recall 1,
    # F1 = 2*(1/2)*1/(3/2) = 2/3
    assert token_f1("cat cat", "cat") == pytest.approx(2 / 3)
    assert token_f1("dog", "cat") == 0.0
    assert token_f1("", "cat") == 0.0     # no words on one side: 0 ...
    assert token_f1("cat", "") == 0.0
    assert token_f1("", "an") == 1.0      # ... unless neither has any


def test_rouge_l_is_stemmed_longest_common_subsequence():
    # prediction [cat, the, sat, mat], reference [the, cat, sat, on, the, mat]: the longest common
    # subsequence is [cat, sat, mat] (3), precision 3/4, recall 3/6, F = 2*(3/4)*(1/2)/(5/4) = 0.6
    assert rouge_l("cat the sat mat", "the cat sat on the mat") == pytest.approx(0.6)
    # stemmed: "cats" -> cat, "sitting" -> sit; [the, cat, sat] vs [the, cat, sit]: LCS 2, P = R = F = 2/3
    assert rouge_l("The cat sat", "the cats sitting") == pytest.approx(2 / 3)
    assert rouge_l("", "the cat") == 0.0
    assert rouge_l("the cat", "") == 0.0


def test_corpus_bleu_with_its_signature():
    # hypothesis "the cat sat on the mat" vs reference "the cat sat on a mat", 6 words each (brevity 1):
    # 1-grams 5/6 ("the" twice, once in the reference), 2-grams 3/5 (the cat, cat sat, sat on),
    # 3-grams 2/4, 4-grams 1/3; BLEU = (5/6 * 3/5 * 1/2 * 1/3)^(1/4) = (1/12)^(1/4) = 0.53728
    result = corpus_bleu(["the cat sat on the mat"], ["the cat sat on a mat"])
    assert result.score == pytest.approx(100 * (1 / 12) ** 0.25)
    assert result.signature.startswith("nrefs:1|") and "tok:13a" in result.signature
    # an empty answer: no n-grams and a brevity penalty of exp(1 - 2/0) -> 0
    assert corpus_bleu([""], ["the cat"]).score == 0.0


def test_corpus_chrf():
    # "abc" vs "abd": characters 2/3 match both ways, character pairs 1/2 (ab), triples 0/1; 4-6-grams
    # exist on neither side and do not count; mean precision = mean recall = (2/3 + 1/2 + 0)/3 = 7/18,
    # and F-beta of equal precision and recall is that value
    result = corpus_chrf(["abc"], ["abd"])
    assert result.score == pytest.approx(100 * 7 / 18)
    assert result.signature.startswith("nrefs:1|")
    assert corpus_chrf([""], ["abd"]).score == 0.0


def test_corpus_metrics_refuse_an_empty_or_uneven_set():
    with pytest.raises(StudioError, match="^the evaluation set is empty: there is nothing to score$"):
        corpus_bleu([], [])
    with pytest.raises(StudioError, match="^2 answers for 1 references: each answer needs one$"):
        corpus_chrf(["a", "b"], ["a"])


def test_answer_length_in_words_and_tokens():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast
    word_level = Tokenizer(models.WordLevel({"<unk>": 0, "<s>": 1, "the": 2, "cat": 3}, unk_token="<unk>"))
    word_level.pre_tokenizer = pre_tokenizers.Whitespace()
    word_level.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=word_level, unk_token="<unk>", bos_token="<s>")
    # words split on spaces: [the, cat, sat.] = 3; tokens [the, cat, sat, .] = 4, not the 5 with the <s>
    # the tokenizer puts before a whole text, which is no part of the answer
    assert len(tokenizer("the cat sat.")["input_ids"]) == 5
    assert answer_length("the cat sat.", tokenizer) == AnswerLength(words=3, tokens=4)
    assert answer_length("the cat sat.") == AnswerLength(words=3, tokens=None)
    assert answer_length("", tokenizer) == AnswerLength(words=0, tokens=0)


def test_accuracy_on_a_label_column():
    # "B" = "b"; "answer is b" != "b"; "c" = "c" (the full stop is dropped): 2 of 3
    assert accuracy(["B", "The answer is B", "c."], ["b", "B", "C"]) == pytest.approx(2 / 3)


def test_accuracy_with_an_answer_regex():
    answers = ["Adding 2 and 3, the answer is 5.", "the answer is 7", "I think 4"]
    # the group: "5" = "5", "7" != "8", no match in the third (wrong): 1 of 3
    assert accuracy(answers, ["5", "8", "4"], r"answer is (\d+)") == pytest.approx(1 / 3)
    # no group, the whole first match: "2" != "5", "7" != "8", "4" = "4": 1 of 3
    assert accuracy(answers, ["5", "8", "4"], r"\d+") == pytest.approx(1 / 3)
    # a compiled pattern is used as it is: "5", "7", "4" against 5, 7, 0: 2 of 3
    assert accuracy(answers, ["5", "7", "0"], re.compile(r"(\d+)\D*$")) == pytest.approx(2 / 3)
    with pytest.raises(StudioError, match="^the evaluation set is empty: there is nothing to score$"):
        accuracy([], [], r"\d+")


def test_a_regex_that_does_not_compile_is_named():
    with pytest.raises(StudioError) as refused:
        accuracy(["the answer is 5"], ["5"], "answer is (")
    assert str(refused.value) == ("the answer regex 'answer is (' does not compile: missing ), unterminated "
                                  "subpattern at position 10")


def test_metric_names_are_checked_against_the_table():
    assert check_metrics(["rouge_l", "bleu", "rouge_l"]) == ["rouge_l", "bleu"]
    with pytest.raises(StudioError) as refused:
        check_metrics(["bleu", "blue"])
    assert str(refused.value) == ("unknown metric 'blue': the metrics are loss, perplexity, exact_match, "
                                  "token_f1, rouge_l, bleu, chrf, answer_length, accuracy")
    assert METRICS["answer_length"].higher_is_better is None and not METRICS["answer_length"].needs_reference
    assert METRICS["perplexity"].higher_is_better is False and METRICS["rouge_l"].higher_is_better
