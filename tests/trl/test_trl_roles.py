"""Per-role and per-message weights in PLWSFTTrainer on conversational data, in every batch shape.

With no role key set, the roles change nothing (bit for bit) and only add the role metrics; with
keys set, one SGD step equals a step on ``sum(w * nll) / W`` with ``w`` computed here from the
batch's token roles by the rule of issue 10, and the NLL from a plain forward of the model.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer
from trl_harness import (
    LEARNING_RATE,
    assert_same_parameters,
    chat_rows,
    initial_parameters,
    last_train_logs,
    parameters,
    train_one_step,
    training_args,
)

from plw_plugins.cli.tiny_model import CHAT_TEMPLATE
from plw_plugins.integrations.transformers import BATCH_ONLY_KEYS
from plw_plugins.integrations.trl import PLWSFTConfig, PLWSFTTrainer
from plw_plugins.roles import MESSAGE_WEIGHTS_KEY, ROLES_KEY, Role

LAYOUTS = {
    "padded": {"max_length": 256},
    "padding_free": {"padding_free": True, "max_length": None},
    "packing_bfd": {"packing": True, "packing_strategy": "bfd", "max_length": 384},
    "packing_wrapped": {"packing": True, "packing_strategy": "wrapped", "max_length": 384},
}
CHAT = {"assistant_only_loss": True, "per_device_train_batch_size": 8}  # one batch holds every (packed) row


class TrainerWithoutRoles(PLWSFTTrainer):
    """PLWSFTTrainer as it was before roles: TRL prepares the data alone, no role columns."""

    def _plw_roles_possible(self, dataset, formatting_func) -> bool:
        return False


def rule_weights(batch, *, prompt, completion=1.0, system=None, tool=None, template=None, history=None):
    """Per-target weights by the rule of issue 10, from the batch's labels, roles and message weights."""
    labels, roles = batch["labels"][:, 1:], batch[ROLES_KEY][:, 1:]
    message = batch.get(MESSAGE_WEIGHTS_KEY)
    message = torch.full(labels.shape, -1.0) if message is None else message[:, 1:]
    trained = labels != -100
    if "attention_mask" in batch:
        predictable = batch["attention_mask"][:, 1:].bool()
    else:
        predictable = batch["position_ids"][:, 1:] != 0
    w = torch.full(labels.shape, float(prompt))
    for role, value in ((Role.SYSTEM, system), (Role.TOOL, tool), (Role.TEMPLATE, template)):
        if value is not None:
            w[roles == role] = value
    w[trained] = completion
    if history is not None:
        w[roles == Role.HISTORY] = history
    w = torch.where(message >= 0, message, w)
    return torch.where(trained | predictable, w, torch.zeros_like(w)), trained | predictable


def plain_nll(model_dir, batch):
    """A fresh model's NLL of every next-token target of the batch, as the trainer's model sees it."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    inputs = {key: value for key, value in batch.items() if key not in BATCH_ONLY_KEYS}
    logits = model(**inputs, use_cache=False).logits[:, :-1]  # a cache would let packed sequences see each other
    targets = batch["input_ids"][:, 1:]
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
    return model, nll.reshape(targets.shape)


def record_batches(trainer):
    """Keep every batch the trainer computes a loss on (``trainer.recorded``), exactly as collated."""
    trainer.recorded, compute_loss = [], trainer.compute_loss

    def recording(model, inputs, *args, **kwargs):
        if model.training:
            trainer.recorded.append(dict(inputs))
        return compute_loss(model, inputs, *args, **kwargs)

    trainer.compute_loss = recording


def train(model_dir, rows, output_dir, **options):
    return train_one_step(model_dir, rows, output_dir, configure=record_batches, **options)


def the_batch(trainer):
    """The one batch of the step (the order of rows in it matters to packed attention)."""
    assert len(trainer.recorded) == 1, "the step must hold every row in one batch"
    return trainer.recorded[0]


def expected_step(model_dir, batch, normalization="weight_sum", **weights):
    """Parameters after one SGD step on sum(w * nll) / W, and that loss."""
    w, _ = rule_weights(batch, **weights)
    assert w.sum() > 0
    model, nll = plain_nll(model_dir, batch)
    total = (w > 0).sum() if normalization == "token_count" else w.sum()
    loss = (w * nll).sum() / total
    loss.backward()
    return {name: (p - LEARNING_RATE * p.grad).detach() for name, p in model.named_parameters()}, loss.item()


def assert_every_role_present(batch):
    roles = batch[ROLES_KEY]
    for role in Role:
        assert (roles == role).any(), f"no {role.name} token in the batch"


PREPARATION_LAYOUTS = {**LAYOUTS, "truncated": {"max_length": 100}, "packing_bfd_short": {**LAYOUTS["packing_bfd"], "max_length": 128}}


@pytest.mark.parametrize("layout", PREPARATION_LAYOUTS)
def test_prepared_rows_equal_stock_trl(layout, tiny_model_dir, tmp_path):
    """input_ids, labels and seq_lengths as TRL prepares them, in TRL's order (shuffled), with
    truncation and with packing that cuts conversations."""
    options = {**CHAT, **PREPARATION_LAYOUTS[layout], "shuffle_dataset": True}
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = chat_rows(6)
    del rows[1]  # its message weights keep rows that TRL drops after truncation
    rows.append({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]})
    datasets = []
    for cls, config in ((SFTTrainer, SFTConfig), (PLWSFTTrainer, PLWSFTConfig)):
        extra = {"prompt_loss_weight": 0.0} if cls is PLWSFTTrainer else {}
        trainer = cls(
            model=AutoModelForCausalLM.from_pretrained(tiny_model_dir), processing_class=tokenizer,
            args=training_args(config, tmp_path / cls.__name__, **options, **extra),
            train_dataset=Dataset.from_list(rows),
        )
        datasets.append(trainer.train_dataset)
    stock, plw = datasets
    assert ROLES_KEY in plw.column_names and ROLES_KEY not in stock.column_names
    assert len(stock) > 0
    for column in ("input_ids", "labels", "seq_lengths"):
        assert (column in stock.column_names) == (column in plw.column_names)
        if column in stock.column_names:
            assert stock[column] == plw[column], column
    for row in plw:
        assert len(row[ROLES_KEY]) == len(row[MESSAGE_WEIGHTS_KEY]) == len(row["input_ids"])


@pytest.mark.parametrize("layout", LAYOUTS)
def test_no_role_key_changes_nothing(layout, tiny_model_dir, tmp_path):
    """Without role keys or message weights, the step with roles is bit for bit the step without."""
    options = {**CHAT, **LAYOUTS[layout]}
    rows = chat_rows(4)
    del rows[1]  # the row with per-message weights
    with_roles = train(tiny_model_dir, rows, tmp_path / "a", plw=0.1, **options)
    without = train(tiny_model_dir, rows, tmp_path / "b", plw=0.1, trainer_cls=TrainerWithoutRoles, **options)
    assert ROLES_KEY in the_batch(with_roles) and ROLES_KEY not in the_batch(without)
    a, b = parameters(with_roles), parameters(without)
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert last_train_logs(with_roles)["loss"] == last_train_logs(without)["loss"]
    assert_same_parameters(a, b, initial_parameters(tiny_model_dir))  # and the step moved them


def test_plw_0_and_1_with_roles_equal_stock(tiny_model_dir, tmp_path):
    rows = chat_rows(4)
    del rows[1]
    chat = {**CHAT, "max_length": 256}
    initial = initial_parameters(tiny_model_dir)
    stock = train_one_step(tiny_model_dir, rows, tmp_path / "a", plw=None, **chat)
    plw_0 = train(tiny_model_dir, rows, tmp_path / "b", plw=0.0, **chat)
    assert ROLES_KEY in the_batch(plw_0)
    assert_same_parameters(parameters(stock), parameters(plw_0), initial)
    everything = train_one_step(tiny_model_dir, rows, tmp_path / "c", plw=None, **{**chat, "assistant_only_loss": False})
    plw_1 = train_one_step(tiny_model_dir, rows, tmp_path / "d", plw=1.0, **chat)
    assert_same_parameters(parameters(everything), parameters(plw_1), initial)


CASES = {
    "system_0": ({"prompt_loss_weight": 0.1, "system_loss_weight": 0.0}, {"prompt": 0.1, "system": 0.0}),
    "template_0": ({"prompt_loss_weight": 0.3, "template_loss_weight": 0.0}, {"prompt": 0.3, "template": 0.0}),
    "history_0": ({"prompt_loss_weight": 0.2, "history_loss_weight": 0.0}, {"prompt": 0.2, "history": 0.0}),
    "tool_and_system": (
        {"prompt_loss_weight": 0.2, "tool_loss_weight": 0.7, "system_loss_weight": 0.05},
        {"prompt": 0.2, "tool": 0.7, "system": 0.05},
    ),
    "message_weights": ({"prompt_loss_weight": 0.1}, {"prompt": 0.1}),
    "wit_token_count": (
        {"prompt_loss_weight": 0.1, "completion_loss_weight": 0.5, "loss_normalization": "token_count"},
        {"prompt": 0.1, "completion": 0.5, "normalization": "token_count"},
    ),
}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", CASES)
def test_step_equals_the_rule_by_hand(case, layout, tiny_model_dir, tmp_path):
    keys, weights = dict(CASES[case][0]), CASES[case][1]
    plw = keys.pop("prompt_loss_weight")
    rows = chat_rows(4)
    if case != "message_weights":
        del rows[1]
    trainer = train(tiny_model_dir, rows, tmp_path / "plw", plw=plw, **{**CHAT, **LAYOUTS[layout]}, **keys)
    batch = the_batch(trainer)
    assert_every_role_present(batch)
    if case == "message_weights":
        assert (batch[MESSAGE_WEIGHTS_KEY] >= 0).any()
    else:
        assert MESSAGE_WEIGHTS_KEY not in batch
    # The weights differ from those of the prompt loss weight alone, so the comparison can tell them apart.
    w, scored = rule_weights(batch, **{k: v for k, v in weights.items() if k != "normalization"})
    assert not torch.equal(w, torch.where(batch["labels"][:, 1:] != -100, 1.0, weights["prompt"]) * scored)
    expected, loss = expected_step(tiny_model_dir, batch, **weights)
    assert last_train_logs(trainer)["loss"] == pytest.approx(loss, rel=1e-5)
    assert_same_parameters(parameters(trainer), expected, initial_parameters(tiny_model_dir))


def test_history_weight_without_assistant_only_loss(tiny_model_dir, tmp_path):
    """With every token trained, earlier assistant turns still take history_loss_weight."""
    rows = chat_rows(4)
    del rows[1]
    trainer = train(tiny_model_dir, rows, tmp_path / "plw", plw=0.5, history_loss_weight=0.0,
                             **{**CHAT, "assistant_only_loss": False, "max_length": 256})
    batch = the_batch(trainer)
    assert (batch["labels"][batch[ROLES_KEY] == Role.HISTORY] != -100).all()
    expected, loss = expected_step(tiny_model_dir, batch, prompt=0.5, history=0.0)
    assert last_train_logs(trainer)["loss"] == pytest.approx(loss, rel=1e-5)
    assert_same_parameters(parameters(trainer), expected, initial_parameters(tiny_model_dir))


@pytest.mark.parametrize("layout", ["padded", "packing_bfd"])
def test_conversational_prompt_completion(layout, tiny_model_dir, tmp_path):
    """Conversational prompt-completion rows (TRL's completion-only loss): the prompt's messages get
    their roles too (an assistant message in the prompt is history)."""
    rows = [{"prompt": row["messages"][:5], "completion": row["messages"][5:]} for row in chat_rows(4)]
    del rows[1]
    trainer = train(tiny_model_dir, rows, tmp_path / "plw", plw=0.1, system_loss_weight=0.0, history_loss_weight=0.3,
                    **{**LAYOUTS[layout], "per_device_train_batch_size": 8})
    batch = the_batch(trainer)
    assert_every_role_present(batch)
    expected, loss = expected_step(tiny_model_dir, batch, prompt=0.1, system=0.0, history=0.3)
    assert last_train_logs(trainer)["loss"] == pytest.approx(loss, rel=1e-5)
    assert_same_parameters(parameters(trainer), expected, initial_parameters(tiny_model_dir))


@pytest.mark.parametrize("layout", ["padded", "padding_free"])
def test_accumulation_split_with_role_weights(layout, tiny_model_dir, tmp_path):
    """2 x 1 == 1 x 2 (per-device batch x accumulation) with role and message weights."""
    rows = chat_rows(2)  # row 1 carries message weights
    keys = {"system_loss_weight": 0.0, "template_loss_weight": 0.2, "history_loss_weight": 0.5}
    if layout == "padding_free":
        keys.update(LAYOUTS[layout])
    runs = [
        parameters(train_one_step(
            tiny_model_dir, rows, tmp_path / f"{b}x{a}", plw=0.1, assistant_only_loss=True,
            per_device_train_batch_size=b, gradient_accumulation_steps=a, **{"max_length": 256, **keys},
        ))
        for b, a in ((2, 1), (1, 2))
    ]
    assert_same_parameters(runs[0], runs[1], initial_parameters(tiny_model_dir))


@pytest.mark.parametrize("layout", ["padded", "packing_bfd"])
def test_role_metrics_in_training_and_evaluation(layout, tiny_model_dir, tmp_path):
    """system_loss, tool_loss, template_loss and history_loss: mean NLL of the role's scored targets,
    in the training log and from evaluate()."""
    rows = chat_rows(4)
    trainer = train(tiny_model_dir, rows, tmp_path / "plw", plw=0.1, eval_rows=rows,
                             system_loss_weight=0.0, **{**CHAT, **LAYOUTS[layout]})
    batch = the_batch(trainer)
    _, scored = rule_weights(batch, prompt=0.1)
    roles = batch[ROLES_KEY][:, 1:]
    with torch.no_grad():
        nll = plain_nll(tiny_model_dir, batch)[1]
    expected = {
        name: nll[scored & (roles == role)].mean().item()
        for name, role in (("system_loss", Role.SYSTEM), ("tool_loss", Role.TOOL),
                           ("template_loss", Role.TEMPLATE), ("history_loss", Role.HISTORY))
    }
    logs = last_train_logs(trainer)
    for name, value in expected.items():
        assert logs[name] == pytest.approx(value, rel=1e-5), name
    evaluation = trainer.evaluate()
    trained = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    trained.load_state_dict(parameters(trainer))
    eval_batch = next(iter(trainer.get_eval_dataloader()))
    _, scored = rule_weights(eval_batch, prompt=0.1)
    with torch.no_grad():
        inputs = {key: value for key, value in eval_batch.items() if key not in BATCH_ONLY_KEYS}
        logits = trained(**inputs, use_cache=False).logits[:, :-1]
    eval_nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), eval_batch["input_ids"][:, 1:].reshape(-1),
                               reduction="none").reshape(scored.shape)
    eval_roles = eval_batch[ROLES_KEY][:, 1:]
    assert len(list(trainer.get_eval_dataloader())) == 1
    for name, role in (("system_loss", Role.SYSTEM), ("tool_loss", Role.TOOL),
                       ("template_loss", Role.TEMPLATE), ("history_loss", Role.HISTORY)):
        value = eval_nll[scored & (eval_roles == role)].mean().item()
        assert evaluation[f"eval_{name}"] == pytest.approx(value, rel=1e-4), name


@pytest.mark.parametrize(
    ("key", "value"),
    [("system_loss_weight", 1.5), ("tool_loss_weight", float("nan")), ("template_loss_weight", "0.1"),
     ("history_loss_weight", True), ("completion_loss_weight", 0.0), ("loss_normalization", "mean")],
)
def test_bad_key_values_name_the_key(key, value, tmp_path):
    with pytest.raises(ValueError, match=key):
        training_args(PLWSFTConfig, tmp_path, **{key: value})


@pytest.mark.parametrize("value", [1.5, -0.1, float("nan"), "0.5", True])
@pytest.mark.parametrize("num_proc", [None, 2])
def test_bad_message_weight_raises_at_construction(value, num_proc, tiny_model_dir, tmp_path):
    rows = chat_rows(3)
    rows[2]["messages"][4]["weight"] = value
    if isinstance(value, str | bool):  # one type per column in a dataset: every row's weights of that type
        for row in rows:
            for message in row["messages"]:
                message["weight"] = value if message is rows[2]["messages"][4] else None
    args = training_args(PLWSFTConfig, tmp_path, dataset_num_proc=num_proc, assistant_only_loss=True, max_length=256)
    with pytest.raises(ValueError) as caught:
        PLWSFTTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model_dir), args=args,
                      train_dataset=Dataset.from_list(rows), processing_class=AutoTokenizer.from_pretrained(tiny_model_dir))
    message = str(caught.value)
    assert message.startswith("train dataset: row 2, message 4: weight must"), message
    assert repr(value) in message or (isinstance(value, float) and math.isnan(value) and "nan" in message)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


UPPERCASE_TEMPLATE = CHAT_TEMPLATE.replace("{{ message['content'] }}", "{{ message['content'] | upper }}")


def construct_with_template(model_dir, rows, tmp_path, template, **keys):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.chat_template = template
    return PLWSFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(model_dir), processing_class=tokenizer,
        args=training_args(PLWSFTConfig, tmp_path, prompt_loss_weight=0.1, assistant_only_loss=True, max_length=256,
                           **keys),
        train_dataset=Dataset.from_list(rows),
    )


def test_template_that_rewrites_content_warns_and_trains_without_roles(tiny_model_dir, tmp_path):
    rows = chat_rows(3)
    del rows[1]
    with pytest.warns(UserWarning, match="token roles cannot be computed for 2 of 2 rows"):
        trainer = construct_with_template(tiny_model_dir, rows, tmp_path, UPPERCASE_TEMPLATE)
    assert ROLES_KEY not in trainer.train_dataset.column_names


@pytest.mark.parametrize("with_weights", [False, True])
def test_template_that_rewrites_content_raises_when_roles_are_needed(with_weights, tiny_model_dir, tmp_path):
    rows = chat_rows(3)
    keys = {} if with_weights else {"system_loss_weight": 0.0}
    if not with_weights:
        del rows[1]
    with pytest.raises(ValueError, match="its content is not in the chat template's rendering"):
        construct_with_template(tiny_model_dir, rows, tmp_path, UPPERCASE_TEMPLATE, **keys)


def test_chat_example_runs(tiny_model_dir, tmp_path, monkeypatch):
    """examples/trl/chat_roles.py as written: it trains and evaluates with the role metrics."""
    import runpy
    from pathlib import Path

    monkeypatch.chdir(tmp_path)
    example = runpy.run_path(str(Path(__file__).resolve().parents[2] / "examples" / "trl" / "chat_roles.py"))
    metrics = example["main"](str(tiny_model_dir))
    for name in ("eval_loss", "eval_prompt_loss", "eval_completion_loss", "eval_system_loss", "eval_template_loss",
                 "eval_history_loss"):
        assert math.isfinite(metrics[name]), name


@pytest.mark.parametrize("what", ["key", "message_weights"])
def test_own_collator_with_roles_needed_raises(what, tiny_model_dir, tmp_path):
    from transformers import DataCollatorForSeq2Seq

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = chat_rows(3)
    keys = {"system_loss_weight": 0.0} if what == "key" else {}
    if what == "key":
        del rows[1]
    args = training_args(PLWSFTConfig, tmp_path, assistant_only_loss=True, max_length=256, **keys)
    with pytest.raises(ValueError, match="need token roles in every batch"):
        PLWSFTTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model_dir), args=args, processing_class=tokenizer,
                      train_dataset=Dataset.from_list(rows), data_collator=DataCollatorForSeq2Seq(tokenizer))


def test_iterable_dataset_carries_roles(tiny_model_dir, tmp_path):
    """A streamed dataset gets its roles row by row: the step still equals the rule by hand."""
    from datasets import IterableDataset

    rows = chat_rows(4)
    stream = IterableDataset.from_generator(lambda: iter(rows))
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    trainer = PLWSFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32), processing_class=tokenizer,
        args=training_args(PLWSFTConfig, tmp_path, prompt_loss_weight=0.1, system_loss_weight=0.0, **CHAT,
                           max_length=256),
        train_dataset=stream,
    )
    record_batches(trainer)
    trainer.train()
    batch = the_batch(trainer)
    assert_every_role_present(batch)
    assert (batch[MESSAGE_WEIGHTS_KEY] >= 0).any()
    expected, loss = expected_step(tiny_model_dir, batch, prompt=0.1, system=0.0)
    assert last_train_logs(trainer)["loss"] == pytest.approx(loss, rel=1e-5)
    assert_same_parameters(parameters(trainer), expected, initial_parameters(tiny_model_dir))


@pytest.mark.parametrize("layout", ["padded", "packing_bfd"])
def test_rows_tokenised_with_their_roles(layout, tiny_model_dir, tmp_path):
    """Rows from the core's ``tokenize_conversation`` keep their role columns through truncation and packing."""
    from plw_plugins.conversations import tokenize_conversation

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = [tokenize_conversation(row["messages"], tokenizer, row=i) for i, row in enumerate(chat_rows(4))]
    trainer = train(tiny_model_dir, rows, tmp_path / "plw", plw=0.1, template_loss_weight=0.0, history_loss_weight=0.4,
                    **{**LAYOUTS[layout], "per_device_train_batch_size": 8})
    batch = the_batch(trainer)
    assert_every_role_present(batch)
    expected, loss = expected_step(tiny_model_dir, batch, prompt=0.1, template=0.0, history=0.4)
    assert last_train_logs(trainer)["loss"] == pytest.approx(loss, rel=1e-5)
    assert_same_parameters(parameters(trainer), expected, initial_parameters(tiny_model_dir))


@pytest.mark.parametrize("layout", ["padded", "padding_free"])
def test_the_packages_alpaca_template_is_the_template_role(layout, tiny_model_dir, tmp_path):
    """Rows whose prompt the package's Alpaca template wrote (``plw-plugins sft``, ``demo``) carry where
    the data's text lies; the template's text is TEMPLATE, and template_loss_weight weighs it."""
    from plw_plugins.cli.builtin_data import alpaca_rows
    from plw_plugins.cli.datasets import alpaca_to_prompt_completion

    rows = [alpaca_to_prompt_completion(record).as_record() for record in alpaca_rows(4)]
    trainer = train(tiny_model_dir, rows, tmp_path / "plw", plw=0.5, template_loss_weight=0.0,
                    per_device_train_batch_size=4, **LAYOUTS[layout])
    batch = the_batch(trainer)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    roles, ids = batch[ROLES_KEY], batch["input_ids"]
    real = batch["attention_mask"].bool() if "attention_mask" in batch else torch.ones_like(ids, dtype=torch.bool)
    template_text = tokenizer.decode(ids[(roles == Role.TEMPLATE) & real])
    prompt_text = tokenizer.decode(ids[(roles == Role.PROMPT) & real])
    assert "Below is an instruction" in template_text and "### Response:" in template_text
    assert all(row["instruction"].split()[0] in prompt_text for row in alpaca_rows(4))
    assert "Below" not in prompt_text
    expected, loss = expected_step(tiny_model_dir, batch, prompt=0.5, template=0.0)
    assert last_train_logs(trainer)["loss"] == pytest.approx(loss, rel=1e-5)
    assert_same_parameters(parameters(trainer), expected, initial_parameters(tiny_model_dir))
