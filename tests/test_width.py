import pytest

from nml_core.errors import NMLError
from nml_core.nesting.width import WidthSpec, check_distinct, parse_axes, parse_widths
from conftest import tiny_config


def test_parse_widths_accepts_fractions():
    assert parse_widths("1,1/2,0.25,1/8") == [1.0, 0.5, 0.25, 0.125]


@pytest.mark.parametrize("text, words", [("1,1.5", "outside (0, 1]"), ("1,0", "outside"), ("0.5,1", "not sorted"),
                                         ("1,0.5,0.5", "duplicate"), ("1,a", "comma-separated"), ("", "empty")])
def test_parse_widths_rejects_bad_input(text, words):
    with pytest.raises(NMLError, match=words.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        parse_widths(text)


def test_width_giving_zero_heads_is_an_error():
    with pytest.raises(NMLError, match="keeps 0 of the teacher's 8 heads"):
        WidthSpec(0.05).dims(tiny_config())


def test_heads_without_hidden_is_rejected_with_reason():
    with pytest.raises(NMLError, match="heads and hidden shrink together"):
        parse_axes("ffn,heads")
    with pytest.raises(NMLError, match="unknown nest axis"):
        parse_axes("ffn,layers")


@pytest.mark.parametrize("axes, expect", [("ffn", (8, 64, 64)), ("heads,hidden", (2, 16, 256)),
                                          ("ffn,heads,hidden", (2, 16, 64))])
def test_student_config_is_stock_gpt2(axes, expect):
    cfg = WidthSpec(0.25, parse_axes(axes)).student_config(tiny_config())
    assert (cfg.n_head, cfg.n_embd, cfg.n_inner) == expect
    assert cfg.model_type == "gpt2" and cfg.n_layer == 2 and cfg.n_embd % cfg.n_head == 0


def test_widths_rounding_to_same_student_are_rejected():
    with pytest.raises(NMLError, match="give the same student"):
        axes = parse_axes("ffn")  # FFN-only: 0.5 and 0.501 of 256 neurons both round to 128
        check_distinct([WidthSpec(0.5, axes), WidthSpec(0.501, axes)], tiny_config())


def test_a_width_between_head_counts_is_refused_with_the_nearest_ones():
    """Never a hybrid (k heads with another share of the FFN): 0.52 of 8 heads names 0.5 and 0.625."""
    with pytest.raises(NMLError, match=r"use 0.5 \(4 heads\) or 0.625 \(5 heads\)"):
        WidthSpec(0.52, parse_axes("heads,hidden")).dims(tiny_config())
    assert WidthSpec(0.375).dims(tiny_config()).n_inner == 96  # 3 of 8 heads: 3/8 of the 256 FFN neurons
