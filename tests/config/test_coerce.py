"""``config.coerce``: YAML values and command-line strings converted to a field's type, and
errors that name the field (``where``) and the bad value."""

from __future__ import annotations

import dataclasses
import enum
from pathlib import Path
from typing import Any, Literal, Optional, Union

import pytest

from derta.config import ConfigError, coerce, load_config

WHERE = "option --learning-rate"


def bad(value: Any, tp: Any, where: str = WHERE) -> str:
    """The ConfigError message for ``value`` as ``tp``; it must open with ``where``."""
    with pytest.raises(ConfigError) as e:
        coerce(value, tp, where)
    assert str(e.value).startswith(f"{where}: "), str(e.value)
    return str(e.value)


# ---- bool -----------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["true", "True", "TRUE", "1", "yes", "on", "On"])
def test_bool_true_words(text):
    assert coerce(text, bool, WHERE) is True


@pytest.mark.parametrize("text", ["false", "False", "0", "no", "off", "OFF"])
def test_bool_false_words(text):
    assert coerce(text, bool, WHERE) is False


def test_bool_values_pass_through():
    assert coerce(True, bool, WHERE) is True and coerce(False, bool, WHERE) is False


@pytest.mark.parametrize("value", ["maybe", "2", "", 1, 0, 1.0])
def test_bool_rejects_other_values(value):
    # YAML's `1` is an int, not a bool: only true/false words and real booleans are accepted
    msg = bad(value, bool)
    assert repr(value) in msg and "expected true/false" in msg


# ---- int ------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [("3", 3), ("-7", -7), (" 12 ", 12), (5, 5), (4.0, 4)])
def test_int(value, expected):
    out = coerce(value, int, WHERE)
    assert out == expected and type(out) is int


@pytest.mark.parametrize("value", [3.5, "3.5", "1e3", "three", True, False])
def test_int_rejects_fractions_words_and_booleans(value):
    msg = bad(value, int, "option --steps")
    assert repr(value) in msg


def test_int_error_says_what_was_expected():
    assert "expected an integer" in bad(2.5, int)


# ---- float ----------------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [("1e-4", 1e-4), ("0.5", 0.5), (2, 2.0), ("-3", -3.0), (0.25, 0.25)])
def test_float(value, expected):
    out = coerce(value, float, WHERE)
    assert out == expected and type(out) is float


@pytest.mark.parametrize("value", ["fast", "", True, [1.0]])
def test_float_rejects(value):
    assert repr(value) in bad(value, float)


def test_float_rejects_booleans_with_a_reason():
    assert "expected a number" in bad(True, float)


# ---- str ------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [("x", "x"), (5, "5"), (0.5, "0.5"), ("none", "none"), ("", "")])
def test_str(value, expected):
    # "none" is a string like any other unless the field is Optional
    assert coerce(value, str, WHERE) == expected


@pytest.mark.parametrize("value", [["a"], {"a": 1}])
def test_str_rejects_lists_and_mappings(value):
    assert "expected a string" in bad(value, str)


# ---- None / null / Optional -----------------------------------------------------------------

@pytest.mark.parametrize("tp", [Optional[int], int | None, Union[str, None], Optional[list[int]]])
@pytest.mark.parametrize("value", [None, "none", "None", "null", "NULL"])
def test_optional_accepts_null(tp, value):
    assert coerce(value, tp, WHERE) is None


@pytest.mark.parametrize("tp", [int, str, float, bool, list[int], dict[str, Any]])
def test_null_for_a_required_field_is_an_error(tp):
    msg = bad(None, tp, "config.yaml: key 'steps'")
    assert msg == "config.yaml: key 'steps': may not be null"


def test_null_word_for_a_required_int_is_an_error():
    assert "'null'" in bad("null", int)


def test_optional_converts_present_values():
    assert coerce("8", Optional[int], WHERE) == 8
    assert coerce("8", int | None, WHERE) == 8
    assert "'eight'" in bad("eight", Optional[int])


# ---- Union ----------------------------------------------------------------------------------

def test_union_tries_members_in_order():
    assert coerce("3", Union[int, str], WHERE) == 3
    assert coerce("abc", Union[int, str], WHERE) == "abc"
    assert coerce("2.5", Union[int, float], WHERE) == 2.5


def test_union_error_lists_each_members_complaint():
    msg = bad("x", Union[int, bool])
    assert "expected true/false" in msg and "invalid literal for int()" in msg


# ---- lists ----------------------------------------------------------------------------------

def test_list_from_comma_separated_text():
    assert coerce("1,2,3", list[int], WHERE) == [1, 2, 3]
    assert coerce(" vanilla , derta ", list[str], WHERE) == ["vanilla", "derta"]
    assert coerce("5", list[int], WHERE) == [5]


def test_list_from_yaml_list_converts_each_item():
    assert coerce([1, "2", 3.0], list[int], WHERE) == [1, 2, 3]
    assert coerce(["0.5", 1], list[float], WHERE) == [0.5, 1.0]
    assert coerce(["yes", "off"], list[bool], WHERE) == [True, False]


def test_bare_list_keeps_items():
    assert coerce([1, "a", 2.5], list, WHERE) == [1, "a", 2.5]
    assert coerce("a,b", list, WHERE) == ["a", "b"]


def test_list_bad_item_names_the_field_and_the_item():
    msg = bad("1,two,3", list[int], "option --prefill-tokens")
    assert "'two'" in msg and msg.count("option --prefill-tokens") >= 1


@pytest.mark.parametrize("value", [5, {"a": 1}, 2.5])
def test_list_rejects_scalars_and_mappings(value):
    assert "expected a list" in bad(value, list[int])


def test_list_of_literals():
    assert coerce("direct,completion", list[Literal["direct", "completion", "prefill"]], WHERE) == ["direct", "completion"]
    assert "'codeattack'" in bad("direct,codeattack", list[Literal["direct", "completion"]])


# ---- dicts ----------------------------------------------------------------------------------

def test_dict_passes_a_mapping_through():
    value = {"r": 8, "alpha": 16}
    assert coerce(value, dict[str, Any], WHERE) == value
    assert coerce(value, dict, WHERE) == value


def test_dict_from_yaml_text():
    assert coerce("{r: 8, target: [q_proj, v_proj]}", dict[str, Any], WHERE) == {"r": 8, "target": ["q_proj", "v_proj"]}
    assert coerce("r: 8", dict, WHERE) == {"r": 8}


@pytest.mark.parametrize("value", [[1, 2], "just words", "3", 7])
def test_dict_rejects_non_mappings(value):
    assert "expected a mapping" in bad(value, dict[str, Any])


def test_dict_from_unparsable_yaml_text_names_the_field():
    with pytest.raises(ConfigError, match=r"^option --lora: "):
        coerce("{r: [8", dict[str, Any], "option --lora")


# ---- Literal --------------------------------------------------------------------------------

def test_literal():
    assert coerce("token", Literal["token", "sequence", "auto"], WHERE) == "token"


def test_literal_error_lists_the_choices():
    msg = bad("tokens", Literal["token", "sequence"], "option --rto-norm")
    assert "'tokens'" in msg and "expected one of ('token', 'sequence')" in msg


def test_optional_literal():
    tp = Optional[Literal["a", "b"]]
    assert coerce("none", tp, WHERE) is None and coerce("b", tp, WHERE) == "b"
    bad("c", tp)


# ---- Any and unsupported types --------------------------------------------------------------

@pytest.mark.parametrize("value", ["x", 3, [1], {"a": 1}])
def test_any_passes_through(value):
    assert coerce(value, Any, WHERE) == value


class Colour(enum.Enum):
    RED = "red"


@pytest.mark.parametrize("tp", [Colour, Path, tuple[int, int]])
def test_unsupported_types_are_a_config_error_naming_the_type(tp):
    # no silent pass-through: a type coerce does not know is an error that says what was expected
    msg = bad("red", tp)
    assert f"expected {tp}" in msg


# ---- through load_config: the file and the key, or the option, are named ---------------------

@dataclasses.dataclass
class Small:
    steps: int = 1
    lr: float = 1e-3
    flag: bool = False
    name: Optional[str] = None
    layers: list[int] = dataclasses.field(default_factory=lambda: [1])
    mode: Literal["a", "b"] = "a"


def test_load_config_coerces_file_values_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("steps: '4'\nlr: 1e-4\nflag: yes\nlayers: [2, '3']\nmode: b\n")
    cfg = load_config(Small, path, {"name": "null", "flag": "off", "layers": "5,6"})
    assert cfg == Small(steps=4, lr=1e-4, flag=False, name=None, layers=[5, 6], mode="b")


def test_load_config_bad_file_value_names_file_and_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("steps: 2.5\n")
    with pytest.raises(ConfigError, match=rf"^{path}: key 'steps': 2.5 is not valid \(expected an integer\)$"):
        load_config(Small, path)


def test_load_config_bad_override_names_the_option():
    with pytest.raises(ConfigError, match=r"^option --mode: 'c' is not valid"):
        load_config(Small, None, {"mode": "c"})
