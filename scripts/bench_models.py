"""Training-step cost of hf-acts models vs their base models, and ADReLU vs input size.

    python scripts/bench_models.py [--quick] [--output-dir benchmarks]   (ratios measured in one run)
"""

from hf_acts.bench import script_main

if __name__ == "__main__":
    script_main("models")
