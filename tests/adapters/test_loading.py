"""Loading: names to objects, every failure a ValueError naming its argument (the command line
turns those into one-line usage errors naming the option: tests/cli/test_cli.py)."""

import pytest
import torch

from captum_gscorecam.loading import check_model, find_layer, load_clip, resolve_device


def test_load_clip_shapes_is_eval_and_on_cpu():
    model, _, tokenizer = load_clip("shapes-rn")
    assert not model.training
    assert next(model.parameters()).device == torch.device("cpu")
    assert tokenizer(["a red circle"]).dtype == torch.long


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: check_model("shapes-rn", "openai"), r"^pretrained: shapes-rn brings its own"),
        (lambda: check_model("hf:a/b", "openai"), r"^pretrained: the hf: repo id"),
        (lambda: check_model("RN5O", None), r"^model: unknown model 'RN5O'.*RN50"),
        (lambda: check_model("RN50", "nosuchtag"), r"^pretrained: RN50 has no pretrained tag"),
        (lambda: check_model("RN50", "missing/file.pt"), r"^pretrained: no such checkpoint"),
        (lambda: resolve_device("xpu:99" if torch.xpu.is_available() else "xpu"), r"^device: "),
        (lambda: load_clip("no-such-model"), r"^model: unknown model"),
    ],
)
def test_loading_errors_are_value_errors_naming_the_argument(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_find_layer_finds_a_module_or_names_close_ones():
    model, _, _ = load_clip("shapes-rn")
    assert find_layer(model, "visual.layer3") is model.visual.layer3
    with pytest.raises(
        ValueError,
        match=r"^layer: the model has no module 'visual.layr3'.*"
        r"visual\.layer3",
    ):
        find_layer(model, "visual.layr3")
    with pytest.raises(ValueError, match=r"close names: visual\.layer4\.0"):
        find_layer(model, "visual.layer4.zzz.qqq")
