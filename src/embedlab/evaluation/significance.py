"""Paired significance tests between two models scored on the same queries: a difference of means that noise could
explain is not a win. The per-query figures come from the retrieval evaluators (`RetrievalEvaluator.per_query`),
kept in a run's per_query.json (evaluator -> metric -> query id -> value)."""

from collections.abc import Iterable

from scipy.stats import ttest_rel, wilcoxon

# The metric the report's paired tests compare, the retrieval evaluators' main one.
TESTED_METRIC = "ndcg@10"


def paired_test(first: dict[str, float], second: dict[str, float]) -> dict[str, float]:
    """The mean difference of two systems' per-query figures (first - second), with the p-values of a paired
    t-test and of a Wilcoxon signed-rank test (two-sided)."""
    queries = sorted(set(first) & set(second))
    a, b = [first[q] for q in queries], [second[q] for q in queries]
    differences = [x - y for x, y in zip(a, b)]
    nonzero = any(differences)
    return {"mean_difference": sum(differences) / len(differences),
            "p_ttest": float(ttest_rel(a, b).pvalue) if nonzero else 1.0,
            "p_wilcoxon": float(wilcoxon(a, b).pvalue) if nonzero else 1.0, "queries": len(queries)}


def paired_tests_against(reference: dict, others: list[dict], metric: str = TESTED_METRIC) -> list[tuple]:
    """(other's position, evaluator, test) for each of `others`' per-query figures and each evaluator that it and
    `reference` both scored."""
    return [(position, evaluator, paired_test(figures[evaluator][metric], reference[evaluator][metric]))
            for position, figures in enumerate(others)
            for evaluator in sorted(set(figures) & set(reference))
            if metric in figures[evaluator] and metric in reference[evaluator]]


def per_query_of(evaluators: Iterable) -> dict:
    """The per-query figures (evaluator name -> metric -> query id -> value) of the evaluators that keep them, from
    their last run."""
    return {evaluator.name: evaluator.per_query for evaluator in evaluators if getattr(evaluator, "per_query", None)}
