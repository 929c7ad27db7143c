"""Training files and eval sets (JSON Lines): what the upload accepts is exactly what training and
migrations can use later (issue: hostile clients, items 3 and 8)."""

import json

import pytest

from adapters.format.eval_set import parse_eval_set
from adapters.training.dataset import parse_records
from adapters.errors import PeftServeError

GOOD = json.dumps({"prompt": "a", "completion": "b"})
GOOD_EVAL = json.dumps({"prompt": "a", "expected": "b"})


@pytest.mark.parametrize("text,count", [
    (GOOD, 1), (GOOD + "\n", 1), (GOOD + "\r\n" + GOOD + "\r\n", 2),
    (json.dumps({"prompt": "line\u2028separator \x1c \x0c inside", "completion": "b"}, ensure_ascii=False), 1),
    (GOOD + "\n\n" + GOOD + "\n  \n", 2),
], ids=["one line", "final newline", "CRLF", "U+2028 and control characters inside a string",
        "blank lines skipped (as files stored earlier have them)"])
def test_valid_json_lines_are_accepted(text, count):
    assert len(parse_records(text.encode())) == count


BAD = {
    "empty file": "",
    "only blank lines": "\n  \n",
    "lone surrogate": '{"prompt": "\\ud800", "completion": "b"}',
    "NaN": '{"prompt": "a", "completion": "b", "weight": NaN}',
    "nested 5000 deep": '{"prompt": "a", "completion": ' + "[" * 5000 + "]" * 5000 + "}",
    "not JSON": "{",
}


@pytest.mark.parametrize("text", BAD.values(), ids=BAD.keys())
def test_unusable_training_files_are_refused_naming_the_line(text):
    with pytest.raises(PeftServeError) as e:
        parse_records(text.encode())
    assert e.value.code == "invalid_training_file"


@pytest.mark.parametrize("text", [t.replace('"completion"', '"expected"') for t in BAD.values()], ids=BAD.keys())
def test_unusable_eval_sets_are_refused(text):
    with pytest.raises(PeftServeError) as e:
        parse_eval_set(text.encode())
    assert e.value.code == "invalid_eval_set"


def test_eval_set_with_separator_inside_a_string_is_one_item():
    text = json.dumps({"prompt": "a\u2028b", "expected": "c\x0cd"}, ensure_ascii=False) + "\n" + GOOD_EVAL
    assert [i.prompt for i in parse_eval_set(text.encode())] == ["a\u2028b", "a"]
