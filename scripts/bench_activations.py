"""Activation cost: every hf-acts activation vs its native base and a memory-bound floor.

    python scripts/bench_activations.py [--quick] [--output-dir benchmarks]   (ratios measured in one run)
"""

from hf_acts.bench import script_main

if __name__ == "__main__":
    script_main("activations")
