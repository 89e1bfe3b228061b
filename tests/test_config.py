import re

import pytest
import yaml

from facegan.config import ConfigError, Params, build, load_params
from conftest import REPO


def params_with(**overrides) -> dict:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    for dotted, value in overrides.items():
        node = raw
        *parents, last = dotted.split(".")
        for key in parents:
            node = node[key]
        node[last] = value
    return raw


def test_repository_params_load():
    params = load_params(REPO / "params.yaml")
    assert params.align.size == 64 and params.ingest.celeba.folder == "celeba"


@pytest.mark.parametrize("overrides, message", [
    ({"align.sizee": 64}, r"unknown key 'align\.sizee'.*allowed keys in align: size"),
    ({"align.size": "64"}, r"align\.size: expected int, got '64'"),
    ({"align.size": 8}, r"align\.size: 8 is out of range; allowed 16 \.\. 1024"),
    ({"align.workers": True}, r"align\.workers: expected int"),
    ({"align.backend": "mtcnn"}, r"align\.backend: expected one of 'dlib', 'face_alignment'"),
    ({"ingest.sets": ["celeba", "lfw"]}, r"ingest\.sets\[1\]: 'lfw' is not allowed; choose from celeba"),
    ({"ingest.celeba.split": {"train": 0.9, "val": 0.1, "test": 0.1}}, r"ingest\.celeba\.split: .*sum to 1"),
    ({"align.device": "tpu"}, r"align\.device: expected 'auto', 'cpu' or 'cuda"),
    ({"render_avatars": [1, 2]}, r"render_avatars: expected a mapping"),
    ({"evaluate.fader.recommended_alpha": {"Mal": 2.0}}, r"evaluate\.fader\.recommended_alpha: 'Mal' is not allowed"),
    ({"evaluate.fader.recommended_alpha": {"Male": 0.5}}, r"recommended_alpha\.Male: 0\.5 is out of range"),
    ({"evaluate.fader.recommended_alpha": [2.0]}, r"recommended_alpha: expected a mapping of str to float"),
])
def test_bad_values_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        build(Params, params_with(**overrides))


def test_unknown_section():
    with pytest.raises(ConfigError, match="unknown key 'trian'"):
        build(Params, {**params_with(), "trian": {}})


def expanded_stages() -> dict:
    """dvc.yaml's stages with every foreach expanded (name@key; ${key}, ${item}, ${item.x} substituted)."""
    stages = {}
    for name, stage in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"].items():
        if "foreach" in stage:
            items = stage["foreach"]
            for key in items:
                item = items[key] if isinstance(items, dict) else key
                text = yaml.safe_dump(stage["do"]).replace("${key}", str(key))
                if isinstance(item, dict):
                    for field, value in item.items():
                        text = text.replace("${item.%s}" % field, str(value))
                else:
                    text = text.replace("${item}", str(item))
                stages[f"{name}@{key}"] = yaml.safe_load(text)
        else:
            stages[name] = stage
    return stages


def test_every_dvc_params_key_exists_in_params_yaml():
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    stages = expanded_stages()
    assert "train@cgan" in stages and "evaluate@cgan" in stages
    for name, stage in stages.items():
        for key in stage.get("params", []):
            node = raw
            for part in str(key).split("."):
                assert isinstance(node, dict) and part in node, f"stage {name}: params key {key} not in params.yaml"
                node = node[part]
        templated = re.findall(r"\$\{([^}]+)\}", yaml.safe_dump(stage))
        for key in templated:
            node = raw
            for part in key.split("."):
                assert part in node, f"stage {name} uses ${{{key}}} which params.yaml lacks"
                node = node[part]


def test_every_registered_method_has_train_and_evaluate_stages_and_params():
    from facegan.methods import REGISTRY

    stages = expanded_stages()
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    for name in REGISTRY:
        assert f"train@{name}" in stages and f"evaluate@{name}" in stages, name
        assert name in raw["train"], f"params.yaml lacks train.{name}"
