"""``axolotl train`` with the plugin refuses a model whose LM head computes something besides
``F.linear(hidden, weight, bias)``, before training, naming the model, the head and what differs.

The model is the tiny Llama saved with remote code (``refused_heads.py``) that gives it such a head,
loaded as Axolotl loads any ``trust_remote_code`` model. Dory needs transformers >= 5.24, newer than
the 5.16 Axolotl 0.19 pins; its head's case, a learned logit scale that is 1 at initialisation, is
``unit_logit_scale``."""

from __future__ import annotations

import pytest
from axolotl_harness import ALPACA, plugin, run_axolotl, write_config
from refused_heads import HEAD_CLASS_NAMES, HEAD_KINDS, save_with_refused_head


@pytest.mark.parametrize("kind", list(HEAD_KINDS))
def test_axolotl_train_refuses_the_head(kind, tiny_model_dir, alpaca_jsonl, tmp_path):
    model_dir = save_with_refused_head(tiny_model_dir, kind, tmp_path / "model")
    config = write_config(tmp_path, model_dir, {**ALPACA, "path": str(alpaca_jsonl)},
                          {**plugin(0.1), "trust_remote_code": True})
    run = run_axolotl(config)
    assert run.returncode != 0, run.output[-3000:]
    expected = (f"ValueError: RefusedHeadLlamaForCausalLM: its LM head ({HEAD_CLASS_NAMES[kind]}) ")
    assert expected in run.output and "this architecture is not supported" in run.output, run.output[-3000:]
    assert not run.log_history, "a step was trained"
