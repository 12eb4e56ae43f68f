"""``derta train [--config x.yaml] [--<option> V ...]``: a TrainConfig from YAML + overrides -> train.

Every field of :class:`derta.train.config.TrainConfig` is an option (``--learning-rate 1e-4``)
and a YAML key (``learning_rate: 1.0e-4``); the command line wins. ``--method dpo`` (``method:
dpo``) trains preference pairs with DPO; the default, ``sft``, trains training examples with MLE +
λ·RTO. ``--print-config`` prints the resolved config as YAML (a valid ``--config`` file) and
exits. A rerun of the same config resumes from the newest complete checkpoint (a finished run is
left as it is); an ``output_dir`` that holds another run (other data, model or settings) is an
error naming what differs, unless ``--fresh`` deletes that run first. Several GPUs or nodes::

    accelerate launch --config_file examples/accelerate_fsdp.yaml -m derta.cli train --config examples/train_full.yaml
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from ._main import run_command

HELP = "train a model on data from `derta data build` (MLE + λ·RTO, or DPO pairs with --method dpo)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..config import add_override_args
    from ..train.config import TrainConfig  # no torch: `derta --help` stays fast

    parser.add_argument("--config", metavar="x.yaml", help="YAML file of TrainConfig options (see examples/train_*.yaml)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    parser.add_argument("--fresh", action="store_true",
                        help="delete the run already in output_dir (checkpoints, final model, record) and train from the start")
    add_override_args(parser, TrainConfig)


def resolve(args: argparse.Namespace) -> Any:
    """The TrainConfig of ``--config`` plus the command-line overrides."""
    from ..config import config_from_args
    from ..train.config import TrainConfig

    return config_from_args(TrainConfig, args.config, args)


def config_yaml(cfg: Any) -> str:
    import yaml

    from ..config import to_dict

    return yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True)


def run(args: argparse.Namespace) -> int:
    cfg = resolve(args)
    if args.print_config:
        print(config_yaml(cfg), end="")
        return 0
    from ..train.run import train

    final = train(cfg, fresh=args.fresh)
    if os.environ.get("RANK", "0") == "0":  # once, not once per process under accelerate/torchrun
        print(f"final model: {final}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``derta train ...`` as a function."""
    return run_command("train", argv)
