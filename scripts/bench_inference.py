"""Inference latency: the zoo models against their bases (eval mode, batch 1 and 32) and LM generate throughput.

    python scripts/bench_inference.py [--quick] [--output-dir benchmarks]   (ratios measured in one run)
"""

from hf_acts.bench import script_main

if __name__ == "__main__":
    script_main("inference")
