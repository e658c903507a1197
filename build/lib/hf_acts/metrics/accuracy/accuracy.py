"""Top-1 accuracy: the fraction of predictions equal to their reference (a local evaluate module)."""

import datasets
import evaluate


class Accuracy(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="Top-1 accuracy: mean(prediction == reference).",
            citation="",
            inputs_description="predictions: class indices; references: class indices.",
            features=datasets.Features({"predictions": datasets.Value("int64"),
                                        "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references):
        return {"accuracy": float(sum(p == r for p, r in zip(predictions, references, strict=True)) / len(references)),
                "count": len(references)}
