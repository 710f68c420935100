import pytest

from deepclust.config import RunConfig, build_config, from_dict, parse_overrides
from deepclust.errors import ConfigError


def test_packaged_config_then_overrides():
    cfg = build_config(
        "kmeans", "digits", overrides=[("train.optimizer.lr", "5e-4"), ("clusters", 12)]
    )
    assert cfg.encoder.name == "pixels"  # from configs/kmeans/digits.yaml
    assert cfg.data.protocol == "all"
    assert cfg.train.optimizer.lr == pytest.approx(5e-4)  # a YAML string like 5e-4 becomes a float
    assert cfg.clusters == 12


def test_unknown_key_names_the_key_and_the_valid_ones():
    with pytest.raises(ConfigError) as e:
        build_config("kmeans", "digits", overrides=[("train.epohcs", 3)])
    msg = str(e.value)
    assert "train.epohcs" in msg and "train.epochs" in msg and "Did you mean" in msg


def test_unknown_method_param_is_rejected():
    from deepclust.config import params_from_dict
    from deepclust.methods.kmeans import KMeansParams

    with pytest.raises(ConfigError, match=r"params\.ninit"):
        params_from_dict(KMeansParams, {"ninit": 3})


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("data.protocol", "trainval", "must be one of"),
        ("train.epochs", 1.5, "integer"),
        ("train.progress", "yes", "true or false"),
        ("train.optimizer.betas", [0.9], "needs 2 values"),
    ],
)
def test_bad_values(key, value, fragment):
    with pytest.raises(ConfigError, match=fragment):
        build_config("kmeans", "digits", overrides=[(key, value)])


def test_config_file_and_round_trip(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "method: kmeans\ndataset: cifar10\ntrain:\n  batch_size: 64\n  schedule:\n    milestones: [1, 2]\n"
    )
    cfg = build_config(config_file=path)
    assert cfg.dataset == "cifar10" and cfg.train.batch_size == 64
    assert cfg.train.schedule.milestones == (1, 2)
    assert from_dict(RunConfig, cfg.to_dict()) == cfg


def test_parse_overrides():
    assert parse_overrides(["a.b=1", "c=x", "d=[1, 2]", "e=null"]) == [
        ("a.b", 1),
        ("c", "x"),
        ("d", [1, 2]),
        ("e", None),
    ]
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["novalue"])
