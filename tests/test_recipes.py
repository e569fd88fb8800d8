"""Recipe loading, validation and CLI overrides."""

from __future__ import annotations

import pytest

from apprentice_hw.config import RECIPES_ENV, load_recipe, recipe_files
from apprentice_hw.errors import UserError


def test_default_recipe_is_the_offline_digits_one():
    recipe = load_recipe()
    assert recipe.name == "digits" and recipe.dataset == "digits"
    assert recipe.distill.scheme == "B"
    assert (recipe.distill.alpha, recipe.distill.beta, recipe.distill.gamma) == (1.0, 0.5, 0.5)
    assert recipe.distill.tau == 1.0
    assert recipe.weight_bits == 2 and recipe.act_bits == 8 and recipe.first_last_bits == 8


def test_overrides_replace_only_what_is_given():
    recipe = load_recipe().with_overrides(weight_bits=4, epochs=3)
    assert recipe.weight_bits == 4 and recipe.act_bits == 8
    assert recipe.teacher_train.epochs == recipe.student_train.epochs == 3
    with pytest.raises(UserError, match="--epochs must be at least 1"):
        load_recipe().with_overrides(epochs=0)


def test_recipe_by_path_and_from_env_folder(tiny_recipe, monkeypatch):
    assert load_recipe(str(tiny_recipe)).name == "tiny"
    monkeypatch.setenv(RECIPES_ENV, str(tiny_recipe.parent))
    assert "tiny" in recipe_files()
    assert load_recipe("tiny").student.options == {"width": 4, "blocks": [1, 1]}


def test_first_last_same_keeps_body_precision(tiny_recipe):
    text = tiny_recipe.read_text().replace("first_last_bits = 8", 'first_last_bits = "same"')
    tiny_recipe.write_text(text)
    assert load_recipe(str(tiny_recipe)).first_last_bits is None


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('dataset = "digits"', "", "needs 'dataset'"),
        ("epochs = 1\nbatch_size = 128\nlr = 0.05\nweight_bits", "epochs = 0\nbatch_size = 128\n"
         "lr = 0.05\nweight_bits", "'epochs' must be an integer from 1 to 100000"),
        ("lr = 0.05\nweight_bits", "lr = \"fast\"\nweight_bits", "'lr' must be a float"),
        ('scheme = "B"', 'scheme = "B"\nbogus = 1', "unknown field 'bogus'"),
        ("weight_bits = 2", 'weight_bits = "two"', "'weight_bits' must be an integer"),
        ('model = "resnet-small"\noptions = { width = 4, blocks = [1, 1] }\nepochs = 1\n'
         "batch_size = 128\nlr = 0.05\nweight_bits", "options = 3\nweight_bits",
         "'model' must name a zoo model"),
        ("[distill]", "[distill", "is not valid TOML"),
    ],
)  # fmt: skip
def test_bad_recipes_are_user_errors(tiny_recipe, old, new, message):
    text = tiny_recipe.read_text()
    assert old in text
    tiny_recipe.write_text(text.replace(old, new))
    with pytest.raises(UserError, match=message):
        load_recipe(str(tiny_recipe))


def test_unknown_recipe_lists_the_choices():
    with pytest.raises(UserError, match=r"unknown recipe 'nope'; choose one of: .*digits"):
        load_recipe("nope")


def test_recipes_command(run_cli):
    result = run_cli("recipes")
    assert result.code == 0 and "digits" in result.out and "W2A8" in result.out
