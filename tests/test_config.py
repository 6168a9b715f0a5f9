import pytest

from rlmix.config import Config, load_config, parse_override, save_config
from rlmix.errors import ConfigError


def test_default_config_loads_embedded_defaults():
    cfg = load_config()
    assert cfg.data.name == "shapes" and cfg.model.name == "resnet_tiny"
    assert (cfg.trainer.lr_start, cfg.trainer.lr_max, cfg.trainer.lr_end) == (3e-3, 0.3, 3e-5)
    assert cfg.mix.grids == [2, 4] and cfg.mix.k == 10


def test_dotted_and_leaf_overrides():
    cfg = load_config({}, ["trainer.lr_max=0.2", "reward=loss_drop", "mix.grids=[4, 8]"])
    assert cfg.trainer.lr_max == 0.2
    assert cfg.env.reward == "loss_drop"
    assert cfg.mix.grids == [4, 8]
    cfg = load_config({}, {"mix": {"k": 5}, "epochs": 3})
    assert cfg.mix.k == 5 and cfg.trainer.epochs == 3 and cfg.mix.alpha == 1.0


def test_dotted_options_merge_and_a_mapping_replaces():
    """``--set data.options.KEY=V`` sets one option and keeps the others; a whole mapping
    (``--set data.options={...}``) replaces them."""
    cfg = load_config(None, ["data.options.train_size=200"])
    assert cfg.data.options == {"train_size": 200, "test_size": 2000, "object_size": [18, 30]}
    cfg = load_config(None, ["data.name=hf", "data.options.path=X", "data.options.test_split=t"])
    assert cfg.data.options == {"path": "X", "test_split": "t"}
    cfg = load_config(None, ["data.options.path=X", "data.name=hf"])  # order does not matter
    assert cfg.data.options == {"path": "X"}
    cfg = load_config(None, ["data.options={train_size: 7}"])
    assert cfg.data.options == {"train_size": 7}
    cfg = load_config({}, ["model.options.width=32", "model.options.depth=[1, 1]"])
    assert cfg.model.options == {"width": 32, "depth": [1, 1]}
    cfg = load_config({"model": {"options": {"a": {"b": 1, "c": 2}}}}, ["model.options.a.b=5"])
    assert cfg.model.options == {"a": {"b": 5, "c": 2}}


def test_int_accepted_for_float_and_scientific_strings():
    cfg = load_config({"trainer": {"lr_max": 1, "lr_start": "1e-3"}})
    assert cfg.trainer.lr_max == 1.0 and isinstance(cfg.trainer.lr_max, float)
    assert cfg.trainer.lr_start == 1e-3


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"trainer": {"lr_mx": 1}}, r"unknown config key 'trainer.lr_mx'; did you mean 'lr_max'"),
        ({"trainr": {}}, r"unknown config key 'trainr'; did you mean 'trainer'"),
        ({"trainer": {"epochs": "a"}}, r"'trainer.epochs' must be of type int"),
        ({"trainer": {"epochs": True}}, r"'trainer.epochs' must be of type int"),
        ({"trainer": {"epochs": -1}}, r"'trainer.epochs' must be >= 1"),
        ({"mix": {"k": 1}}, r"'mix.k' must be >= 2"),
        ({"mix": {"alpha": 0}}, r"'mix.alpha' must be > 0"),
        ({"mix": {"grids": 4}}, r"'mix.grids' must be a list"),
        (
            {"mix": {"mixer": "puzzle"}},
            r"'mix.mixer' must be one of rmix, cutmix, mixup, none, saliencymix, puzzlemix",
        ),
        ({"env": {"eval_every": 0}}, r"'env.eval_every' must be >= 1"),
        ({"trainer": 3}, r"config section 'trainer' must be a mapping"),
        ({"agent": {"batch_size": 1}}, r"'agent.batch_size' must be >= 2"),
        ({"data": {"val_size": -1}}, r"'data.val_size' must be >= 0"),
        ({"trainer": {"checkpoint_every": 0}}, r"'trainer.checkpoint_every' must be >= 1"),
        ({"env": {"log_rewards": "grad_cosine"}}, r"'env.log_rewards' must be a list"),
        ({"env": {"ema_decay_end": 1.0}}, r"'env.ema_decay_end' must be in \[0, 1\) or null"),
        ({"env": {"ema_decay_end": "slow"}}, r"'env.ema_decay_end' must be of type"),
    ],
)
def test_validation_messages_name_the_key(data, match):
    with pytest.raises(ConfigError, match=match):
        load_config(data)


def test_yaml_syntax_error_reports_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("seed: 0\ntrainer:\n  epochs: [1,\n  lr: 2\n")
    with pytest.raises(ConfigError, match=r"YAML syntax error in .*bad.yaml' at line \d+"):
        load_config(path)


def test_missing_config_file():
    with pytest.raises(ConfigError, match=r"config file 'nope.yaml' not found"):
        load_config("nope.yaml")


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match=r"must look like section.key=value"):
        parse_override("trainer.lr_max")


def test_saved_config_round_trips(tmp_path):
    cfg = load_config({}, ["seed=7", "mix.k=6"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == cfg
    assert isinstance(again, Config)


def test_every_shipped_config_loads():
    from rlmix.config import packaged_configs

    names = packaged_configs()
    assert "default" in names and len([n for n in names if n.startswith("cifar100_")]) == 12
    for name in names:
        load_config(name)


def test_unknown_config_name_lists_the_shipped_ones():
    with pytest.raises(ConfigError, match=r"config file 'cifar200' not found .*: cifar100_"):
        load_config("cifar200")
