import numpy as np
import pytest

from nml_core.data.batches import eval_windows
from nml_core.data.sources import prepare_data
from nml_core.data.tokenizer import load_tokenizer
from nml_core.errors import NMLError


def test_bundled_tokenizer_is_gpt2():
    tok = load_tokenizer()
    assert tok("Hello world")["input_ids"] == [15496, 995]
    text = "To be, or not to be: that is the question.\n"
    assert tok.decode(tok(text)["input_ids"]) == text


def test_folder_is_split_by_whole_files(corpus, tmp_path):
    data = prepare_data(str(corpus), load_tokenizer(), tmp_path, min_tokens=33)
    assert data.info["val_files"] == ["doc3.txt"] and data.info["split"].startswith("by file")
    assert len(data.train) > 2 * len(data.val) > 0
    assert (tmp_path / "train.bin").stat().st_size == 2 * len(data.train)
    again = prepare_data(str(tmp_path), load_tokenizer(), tmp_path / "copy", min_tokens=33)
    assert np.array_equal(again.val, data.val)


def test_bin_file_is_split_by_position(tmp_path):
    ids = np.arange(1000, dtype=np.uint16)
    ids.tofile(tmp_path / "t.bin")
    data = prepare_data(str(tmp_path / "t.bin"), load_tokenizer(), tmp_path / "o", min_tokens=10)
    assert len(data.val) == 100 and data.val[0] == 900


@pytest.mark.parametrize("text, match", [("", "empty"), ("hi", "fewer than the 33 needed")])
def test_empty_or_short_text_is_a_clear_error(tmp_path, text, match):
    (tmp_path / "t.txt").write_text(text)
    with pytest.raises(NMLError, match=match):
        prepare_data(str(tmp_path / "t.txt"), load_tokenizer(), tmp_path / "o", min_tokens=33)


def test_eval_windows_predict_each_token_once():
    ids = np.arange(100, dtype=np.uint16)
    w = eval_windows(ids, 16)
    assert w.shape == (6, 17)
    labels = w[:, 1:].flatten().tolist()
    assert labels == list(range(1, 97))
