"""The papers behind each activation: names, ids and BibTeX, for configs and model cards."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Paper:
    name: str
    paper_id: str
    bibtex: str


PAPERS: dict[str, Paper] = {
    "adrelu": Paper(
        "ADReLU: Enhancing Neural Network Expressivity with Attention-Based Dynamic ReLU",
        "anonymous-submission",
        "@misc{adrelu,\n  title  = {{ADReLU}: Enhancing Neural Network Expressivity with Attention-Based"
        " Dynamic {ReLU}},\n"
        "  author = {Anonymous},\n  note   = {Paper under double-blind review}\n}",
    ),
    "fles": Paper(
        "Toward Principled Flexible Scaling for Self-Gated Neural Activation",
        "fles",
        "@misc{cai2026fles,\n  title  = {Toward Principled Flexible Scaling for Self-Gated Neural Activation},\n"
        "  author = {Cai, Sudong and Zheng, Shuyuan and Chen, Bingzhi and Yuan, Shuai and Xiao, Chuan and Qin, Jianbin"
        " and Wang, Bing},\n  year   = {2026}\n}",
    ),
    "dynactivation": Paper(
        "dynActivation: A Trainable Activation Family for Adaptive Nonlinearity",
        "arXiv:2603.22154",
        "@article{bachmann2026dynactivation,\n  title  = {dynActivation: A Trainable Activation Family for Adaptive"
        " Nonlinearity},\n  author = {Bachmann, Alois},\n  year   = {2026},\n  eprint = {2603.22154},\n"
        "  archivePrefix = {arXiv},\n  primaryClass = {cs.LG}\n}",
    ),
    "swish_beta": Paper(
        "Searching for Activation Functions",
        "arXiv:1710.05941",
        "@article{ramachandran2017searching,\n  title  = {Searching for Activation Functions},\n"
        "  author = {Ramachandran, Prajit and Zoph, Barret and Le, Quoc V.},\n  year   = {2017},\n"
        "  eprint = {1710.05941},\n  archivePrefix = {arXiv}\n}",
    ),
    "dyrelu": Paper(
        "Dynamic ReLU",
        "arXiv:2003.10027",
        "@inproceedings{chen2020dynamic,\n  title  = {Dynamic {ReLU}},\n  author = {Chen, Yinpeng and Dai, Xiyang and"
        " Liu, Mengchen and Chen, Dongdong and Yuan, Lu and Liu, Zicheng},\n  booktitle = {ECCV},\n"
        "  year   = {2020}\n}",
    ),
    "aiec": Paper(
        "Activation with Intrinsic-Extrinsic Consensus",
        "anonymous-submission",
        "@misc{aiec,\n  title  = {Activation with Intrinsic-Extrinsic Consensus},\n  author = {Anonymous},\n"
        "  note   = {Paper under double-blind review}\n}",
    ),
}
PAPERS["dynactglu"] = PAPERS["dynactivation"]
