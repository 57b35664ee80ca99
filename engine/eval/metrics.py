"""The evaluation metrics that compare an answer with its reference, and the table of their names.

Each is computed by the library its field trusts where one exists, so a score here is the score a
paper would report: BLEU and chrF by sacrebleu (corpus-level, with its signature), ROUGE-L by
Google's rouge-score. Exact match and token F1 follow SQuAD's official script (its normalisation is
written out below). Held-out loss and perplexity need the model's logits and are computed beside
generation, not here; their names are in the table so that a user's list of metrics is checked once.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional, Sequence, Union

from engine.errors import StudioError


@dataclass(frozen=True)
class MetricInfo:
    """What a metric measures, in plain words; ``higher_is_better`` is None for a metric that only
    describes (answer length), with no better direction."""
    description: str
    higher_is_better: Optional[bool]
    needs_reference: bool


METRICS: dict[str, MetricInfo] = {
    "loss": MetricInfo("mean cross-entropy of the reference answers, teacher-forced with the training "
                       "masking", False, True),
    "perplexity": MetricInfo("exp(loss): how many tokens the model hesitates between, on average", False, True),
    "exact_match": MetricInfo("share of answers equal to the reference after SQuAD normalisation (0-1)",
                              True, True),
    "token_f1": MetricInfo("overlap of answer and reference words after SQuAD normalisation (0-1)", True, True),
    "rouge_l": MetricInfo("longest common word sequence with the reference, stemmed, F-measure (0-1)", True, True),
    "bleu": MetricInfo("n-gram precision against the references over the whole set, sacrebleu (0-100)",
                       True, True),
    "chrf": MetricInfo("character n-gram F-score against the references over the whole set, sacrebleu (0-100)",
                       True, True),
    "answer_length": MetricInfo("words in the answer (and tokens, with the model's tokenizer)", None, False),
    "accuracy": MetricInfo("share of answers whose choice or number equals the label column's, taken by a "
                           "regex where one is given (0-1)", True, True),
}

# What a table or a plot calls each metric (the names above are keys in files and on the command line).
METRIC_LABELS: dict[str, str] = {"loss": "loss", "perplexity": "perplexity", "exact_match": "exact match",
                                 "token_f1": "token F1", "rouge_l": "ROUGE-L", "bleu": "BLEU", "chrf": "chrF",
                                 "answer_length": "answer length", "accuracy": "accuracy"}


def metric_label(name: str) -> str:
    """The name a reader knows ``name`` by ("ROUGE-L" for rouge_l); an unknown one as it is."""
    return METRIC_LABELS.get(name, name)


def check_metrics(names: Sequence[str]) -> list[str]:
    """``names`` as given, once each; an unknown one is refused with a line listing the known ones."""
    unknown = [name for name in names if name not in METRICS]
    if unknown:
        raise StudioError(f"unknown metric {', '.join(repr(name) for name in unknown)}: the metrics are "
                          f"{', '.join(METRICS)}")
    return list(dict.fromkeys(names))


# SQuAD's normalisation (the official evaluation script's normalize_answer), in its order: lower-case,
# drop ASCII punctuation (without a space: "don't" -> "dont"), drop the articles a/an/the as whole
# words, collapse whitespace.
_PUNCTUATION = str.maketrans("", "", string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """``text`` as SQuAD compares answers: lower-case, no punctuation, no articles, single spaces."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION)).split())


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when the two are equal after :func:`normalize_answer`, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD's token F1: the harmonic mean of precision and recall of the normalised words, each word
    counted as often as it occurs in both. When either side has no words, 1.0 if both have none."""
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not predicted or not expected:
        return float(predicted == expected)
    same = sum((Counter(predicted) & Counter(expected)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted), same / len(expected)
    return 2 * precision * recall / (precision + recall)


@lru_cache(maxsize=1)
def _rouge_scorer():
    # Imported on first use: rouge-score pulls in nltk (half a second), which listing the metrics must not pay.
    from rouge_score import rouge_scorer
    # Porter stemming, as rouge-score's README recommends and the original ROUGE's -m option did,
    # so "sat" and "sitting" do not both count as misses.
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure by rouge-score, stemmed (0 when either side has no words: its tokenizer keeps
    only lower-cased letters and digits)."""
    return float(_rouge_scorer().score(reference, prediction)["rougeL"].fmeasure)


@dataclass(frozen=True)
class CorpusScore:
    """A corpus-level score (0-100, sacrebleu's scale) and sacrebleu's signature string, which names the
    settings that produced it (tokenizer, smoothing, version) so two scores can be told comparable."""
    score: float
    signature: str


def _checked_corpus(predictions: Sequence[str], references: Sequence[str]) -> None:
    if len(predictions) != len(references):
        raise StudioError(f"{len(predictions)} answers for {len(references)} references: each answer needs one")
    if not predictions:
        raise StudioError("the evaluation set is empty: there is nothing to score")


def corpus_bleu(predictions: Sequence[str], references: Sequence[str]) -> CorpusScore:
    """sacrebleu's BLEU over the whole set (one reference per answer), its defaults: 13a tokenizer,
    exponential smoothing. BLEU is defined on a corpus; the mean of sentence scores is not BLEU."""
    from sacrebleu.metrics import BLEU
    _checked_corpus(predictions, references)
    bleu = BLEU()
    return CorpusScore(bleu.corpus_score(list(predictions), [list(references)]).score, str(bleu.get_signature()))


def corpus_chrf(predictions: Sequence[str], references: Sequence[str]) -> CorpusScore:
    """sacrebleu's chrF over the whole set (character 6-grams, beta 2, no word n-grams: chrF, not chrF++)."""
    from sacrebleu.metrics import CHRF
    _checked_corpus(predictions, references)
    chrf = CHRF()
    return CorpusScore(chrf.corpus_score(list(predictions), [list(references)]).score, str(chrf.get_signature()))


@dataclass(frozen=True)
class AnswerLength:
    """An answer's length in whitespace-separated words and, when a tokenizer was given, in its tokens."""
    words: int
    tokens: Optional[int] = None


def answer_length(prediction: str, tokenizer=None) -> AnswerLength:
    """The answer's words and, with ``tokenizer`` (a transformers tokenizer), its tokens without the
    special tokens the tokenizer would add around a whole text."""
    tokens = None if tokenizer is None else len(tokenizer(prediction, add_special_tokens=False)["input_ids"])
    return AnswerLength(len(prediction.split()), tokens)


def answer_pattern(regex: str) -> re.Pattern:
    """``regex`` compiled, or one line naming it and why it does not compile."""
    try:
        return re.compile(regex)
    except re.error as exc:
        raise StudioError(f"the answer regex {regex!r} does not compile: {exc}") from None


def extract_answer(prediction: str, pattern: re.Pattern) -> Optional[str]:
    """The answer ``pattern`` finds first in ``prediction``: its first group, or the whole match for a
    pattern without groups; None when it finds nothing (or its group took no part in the match)."""
    found = pattern.search(prediction)
    if found is None:
        return None
    return found.group(1) if pattern.groups else found.group(0)


def answer_correct(prediction: str, label: str, pattern: Optional[re.Pattern] = None) -> bool:
    """Whether the answer (extracted by ``pattern`` where given) equals ``label`` after normalisation."""
    answer = prediction if pattern is None else extract_answer(prediction, pattern)
    return answer is not None and normalize_answer(answer) == normalize_answer(label)


def accuracy(predictions: Sequence[str], labels: Sequence[str],
             regex: Union[str, re.Pattern, None] = None) -> float:
    """The share of answers that are correct by :func:`answer_correct`; ``regex`` is compiled once."""
    if len(predictions) != len(labels):
        raise StudioError(f"{len(predictions)} answers for {len(labels)} labels: each answer needs one")
    if not predictions:
        raise StudioError("the evaluation set is empty: there is nothing to score")
    pattern = answer_pattern(regex) if isinstance(regex, str) else regex
    return sum(answer_correct(p, label, pattern) for p, label in zip(predictions, labels)) / len(predictions)
