"""Top-k accuracy: the fraction of references among their k highest-scored classes (a local evaluate module)."""

import datasets
import evaluate


class TopKAccuracy(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="Top-k accuracy: mean(reference in top_k_predictions).",
            citation="",
            inputs_description="predictions: the k best class indices per sample; references: class indices.",
            features=datasets.Features({"predictions": datasets.Sequence(datasets.Value("int64")),
                                        "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references):
        hits = sum(r in p for p, r in zip(predictions, references, strict=True))
        return {"top_k_accuracy": float(hits / len(references)), "count": len(references)}
