"""Print the README's zoo table (markdown): every registered variant with its measured parameter counts."""

from __future__ import annotations

import timm

from hf_acts.cards import count_parameters
from hf_acts.models.zoo import ZOO


def main() -> None:
    print("| model | base | activation | placement | params (base -> variant) | paper |")
    print("|---|---|---|---|---|---|")
    for name, v in ZOO.items():
        model = timm.create_model(name)
        base = count_parameters(timm.create_model(v.base.split(".")[0]))
        total = count_parameters(model)
        print(f"| `{name}` | `{v.base}` | {v.act} | {v.placement} | {base / 1e6:.3f}M -> {total / 1e6:.3f}M "
              f"(+{(total - base) / base:.1%}) | {model.pretrained_cfg['paper_name']} |")


if __name__ == "__main__":
    main()
