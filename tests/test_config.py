"""Config layering (defaults < YAML < flags < --set) and its errors."""

import pytest
import yaml

from prunekit.config import Config, ConfigError, all_keys, from_dict, load_config, parse_set


def write(tmp_path, data, name="c.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data))
    return str(p)


def test_defaults():
    cfg = load_config()
    assert cfg.data.name == "digits" and cfg.prune.strategy == "chex"
    assert cfg.budget_kwargs() == {"sparsity": 0.5, "round_to": 1}


def test_layering_order(tmp_path):
    path = write(tmp_path, {"train": {"lr": 0.2, "epochs": 7}, "data": {"name": "synthetic"}})
    cfg = load_config(path, flags={"train.lr": 0.3, "train.epochs": None}, sets=["train.lr=0.4"])
    assert cfg.train.lr == 0.4  # --set beats flag beats YAML
    assert cfg.train.epochs == 7  # a None flag does not override the YAML
    assert cfg.data.name == "synthetic"
    cfg = load_config(path, flags={"train.lr": 0.3})
    assert cfg.train.lr == 0.3


def test_set_parses_yaml_values_and_free_dicts():
    cfg = load_config(
        sets=[
            "train.nesterov=false",
            "prune.params.delta_0=0.25",
            "prune.params.mode=css",
            "train.step_milestones=[0.3, 0.6]",
            "data.root=null",
            "model.kwargs.width=8",
        ]
    )
    assert cfg.train.nesterov is False
    assert cfg.prune.params == {"delta_0": 0.25, "mode": "css"}
    assert cfg.train.step_milestones == [0.3, 0.6]
    assert cfg.data.root is None
    assert cfg.model.kwargs == {"width": 8}


def test_strategy_params_by_name(tmp_path):
    """prune.params belong to prune.strategy; prune.strategy_params give any strategy its own (compare)."""
    path = write(tmp_path, {"prune": {"strategy": "chex", "strategy_params": {"chex": {"delta_T": 1, "delta_0": 0.1}}}})
    cfg = load_config(path, sets=["prune.params.delta_0=0.2", "prune.strategy_params.magnitude.norm=l2"])
    assert cfg.prune.strategy_params == {"chex": {"delta_T": 1, "delta_0": 0.1}, "magnitude": {"norm": "l2"}}
    assert cfg.strategy_kwargs() == {"delta_T": 1, "delta_0": 0.2}  # prune.params win for prune.strategy
    assert cfg.strategy_kwargs("magnitude") == {"norm": "l2"}
    assert cfg.strategy_kwargs("random") == {}
    cfg = load_config(sets=["prune.strategy_params.magnitude=l2"])
    with pytest.raises(ConfigError, match=r"prune.strategy_params.magnitude must be a mapping.*--set prune"):
        cfg.strategy_kwargs("random")


def test_int_accepted_for_float_but_not_reverse():
    cfg = load_config(sets=["train.lr=1"])
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    with pytest.raises(ConfigError, match="train.epochs must be an integer"):
        load_config(sets=["train.epochs=2.5"])


def test_unknown_key_suggests(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'train.learning_rat'|did you mean"):
        load_config(sets=["train.learning_rat=0.1"])
    with pytest.raises(ConfigError, match="did you mean 'train.epochs'"):
        load_config(sets=["train.epoch=3"])
    path = write(tmp_path, {"trian": {"lr": 0.1}})
    with pytest.raises(ConfigError, match="did you mean 'train'|trian"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"did you mean 'train.batch_size'"):
        load_config(write(tmp_path, {"train": {"batchsize": 3}}, "b.yaml"))


def test_bad_types_and_choices():
    with pytest.raises(ConfigError, match="train.nesterov must be true or false"):
        load_config(sets=["train.nesterov=maybe"])
    with pytest.raises(ConfigError, match="did you mean 'adamw'"):
        load_config(sets=["train.optimizer=adamx"])
    with pytest.raises(ConfigError, match="strictly between 0 and 1"):
        load_config(sets=["prune.sparsity=1.5"])
    with pytest.raises(ConfigError, match="key=value"):
        parse_set("train.lr")
    # YAML reads a bare off as false: a choice field that has "off" takes it as meant
    assert load_config(sets=["run.progress=off", "train.amp=off"]).run.progress == "off"
    with pytest.raises(ConfigError, match="train.optimizer must be a string"):
        load_config(sets=["train.optimizer=off"])


def test_budget_switch_between_layers(tmp_path):
    path = write(tmp_path, {"prune": {"sparsity": 0.6}})
    cfg = load_config(path, sets=["prune.macs=0.4"])
    assert cfg.budget_kwargs() == {"macs": 0.4, "round_to": 1}  # a later layer switches the kind of budget
    with pytest.raises(ConfigError, match="both set"):
        load_config(sets=["prune.macs=0.4", "prune.sparsity=0.3"])


def test_roundtrip_yaml(tmp_path):
    cfg = load_config(sets=["prune.params.delta_0=0.2", "train.epochs=3", "prune.macs=0.5"])
    again = from_dict(yaml.safe_load(cfg.to_yaml()))
    assert again == cfg
    assert isinstance(again, Config)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n- not a mapping\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(str(bad))


def test_all_keys_cover_sections():
    keys = all_keys()
    assert "train.lr" in keys and "prune.strategy" in keys and "run.checkpoint_steps" in keys


def test_lr_schedules_follow_the_config():
    from prunekit.harness import lr_factor

    cfg = load_config(sets=["train.epochs=10", "train.warmup_epochs=1", "train.schedule=cosine"])
    f = [lr_factor(s, cfg, 10) for s in range(100)]
    assert f[0] == 0.1 and f[9] == 1.0  # linear warm-up over the first epoch (10 steps)
    assert all(a >= b for a, b in zip(f[10:], f[11:], strict=False))  # then cosine, non-increasing
    assert f[-1] < 0.01
    cfg = load_config(
        sets=["train.epochs=4", "train.schedule=step", "train.step_milestones=[0.5, 0.75]", "train.step_gamma=0.1"]
    )
    assert [round(lr_factor(s, cfg, 10), 6) for s in (0, 19, 20, 29, 30, 39)] == [1, 1, 0.1, 0.1, 0.01, 0.01]
