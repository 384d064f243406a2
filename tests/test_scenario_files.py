"""The files scenario: tiny folder and JSONL round trips, and one clear error per bad input."""

import json
from pathlib import Path

import pytest
import torch

from harness.errors import UserError
from scenarios.files import FilesConfig, build
from scenarios.tokenize import EOS, PAD, decode

DATA = Path(__file__).parent / "data"


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RETAIN_CACHE", str(tmp_path / "cache"))


def lm(path, **kw):
    return build(FilesConfig(path=str(path), **{"min_train_examples": 1, "seq_len": 32, **kw}), 0)


def _docs(flat):
    """Documents of a token stream (EOS-terminated)."""
    out, cur = [], []
    for t in flat.tolist():
        if t == EOS:
            out.append(bytes(cur).decode("utf-8"))
            cur = []
        else:
            cur.append(t)
    return out


def test_folder_round_trip():
    s = lm(DATA / "files_folder")
    assert s.task_names == ["1_letters", "2_recipes", "3_weather"]
    assert s.setting == "domain-il" and s.spec.task == "lm" and s.n_experiences == 3
    letters = {p.read_text("utf-8") for p in (DATA / "files_folder" / "1_letters").glob("*.txt")}
    recipes = [json.loads(line)["text"]
               for line in (DATA / "files_folder" / "2_recipes.jsonl").read_text().splitlines()]
    weather = (DATA / "files_folder" / "3_weather.txt").read_text().strip().split("\n\n")
    for i, expected in enumerate([letters, set(recipes), set(weather)]):
        got = [_docs(split_stream(s, split, i)) for split in ("train", "test")]
        assert set(got[0]) | set(got[1]) == expected  # every document comes back whole
        assert not set(got[0]) & set(got[1])  # and in exactly one split


def split_stream(s, split, i):
    data = s.train_data(i) if split == "train" else s.test_data(i)
    return torch.cat([data.x[:1, 0], data.y[data.y != -100]])


def test_jsonl_classification_round_trip():
    s = build(FilesConfig(path=str(DATA / "files_tasks.jsonl"), task="classification",
                          n_classes=2, min_train_examples=1, seq_len=24, test_fraction=0.34), 0)
    assert s.task_names == ["greetings", "travel"]
    assert s.spec.n_classes == 2 and s.spec.pad_id == PAD and s.setting == "domain-il"
    rows = [json.loads(line) for line in (DATA / "files_tasks.jsonl").read_text().splitlines()]
    for i, task in enumerate(s.task_names):
        want = {(r["text"], ["en", "fr"].index(r["label"])) for r in rows if r["task"] == task}
        got = set()
        for data in (s.train_data(i), s.test_data(i)):
            got |= {(decode(x.numpy()), int(y)) for x, y in zip(data.x, data.y)}
            assert (data.t == i).all()
        assert got == want


def test_task_order_and_count():
    s = lm(DATA / "files_folder", tasks=["3_weather", "1_letters"], n_experiences=1)
    assert s.task_names == ["3_weather"]


def write(path: Path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def jsonl(rows):
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


def expect(match, path, **kw):
    with pytest.raises(UserError, match=match):
        lm(path, **kw)


def test_missing_path(tmp_path):
    expect("does not exist", tmp_path / "nope")
    with pytest.raises(UserError, match="needs scenario.path"):
        build(FilesConfig(), 0)


def test_empty_folder_and_empty_task(tmp_path):
    expect("no task sub-folders", tmp_path)
    (tmp_path / "a").mkdir()
    write(tmp_path / "b.txt", "some text\n\nmore text\n\nand more")
    expect(r"task 'a' .* is empty", tmp_path)


def test_blank_task_file_is_empty(tmp_path):
    write(tmp_path / "a.txt", "one\n\ntwo\n\nthree")
    write(tmp_path / "b.jsonl", "\n\n")
    expect(r"task 'b' .* is empty", tmp_path)


def test_not_utf8_names_file_and_line(tmp_path):
    write(tmp_path / "a" / "ok.txt", "fine\n")
    bad = write(tmp_path / "a" / "bad.txt", b"line one\nline two \xff\xfe\n")
    expect(rf"{bad}:2: not valid UTF-8", tmp_path)


def test_bad_json_line(tmp_path):
    f = write(tmp_path / "a.jsonl", jsonl([{"text": "ok"}, '{"text": "no end', {"text": "x"}]))
    expect(rf"{f}:2: not valid JSON", tmp_path)


def test_json_line_not_an_object(tmp_path):
    f = write(tmp_path / "a.jsonl", jsonl([{"text": "ok"}, "[1, 2]"]))
    expect(rf"{f}:2: expected a JSON object", tmp_path)


def test_missing_text_task_and_label_fields(tmp_path):
    f = write(tmp_path / "a.jsonl", jsonl([{"text": "ok"}, {"body": "no text"}]))
    expect(rf"{f}:2: missing 'text' field", tmp_path)
    g = write(tmp_path / "all.jsonl", jsonl([{"task": "a", "text": "x"}, {"text": "y"}]))
    expect(rf"{g}:2: missing 'task' field", g)
    h = write(tmp_path / "cls.jsonl", jsonl([{"task": "a", "text": "x", "label": 0},
                                             {"task": "a", "text": "y"}]))
    with pytest.raises(UserError, match=rf"{h}:2: missing 'label' field"):
        build(FilesConfig(path=str(h), task="classification", min_train_examples=1), 0)


def test_text_must_be_a_string(tmp_path):
    f = write(tmp_path / "a.jsonl", jsonl([{"text": 3}]))
    expect(rf"{f}:1: 'text' must be a string", tmp_path)


def test_task_smaller_than_one_batch(tmp_path):
    write(tmp_path / "a.txt", "\n\n".join(f"paragraph number {i} " * 20 for i in range(10)))
    with pytest.raises(UserError, match=r"task 'a' .* fewer than one batch"):
        lm(tmp_path, min_train_examples=32, seq_len=512)


def test_too_few_documents_to_split(tmp_path):
    write(tmp_path / "a" / "only.txt", "a single document " * 50)
    expect(r"task 'a' .* 1 document", tmp_path)


def cls_file(tmp_path, labels):
    rows = [{"task": "t", "text": f"example {i}", "label": lab} for i, lab in enumerate(labels)]
    return write(tmp_path / "cls.jsonl", jsonl(rows))


def classify(path, **kw):
    return build(FilesConfig(path=str(path), task="classification", min_train_examples=1,
                             **kw), 0)


def test_label_set_mismatch(tmp_path):
    f = cls_file(tmp_path, ["a", "b", "c"] * 4)
    with pytest.raises(UserError, match=r"found 3 distinct labels .*n_classes=2"):
        classify(f, n_classes=2)
    g = cls_file(tmp_path, [0, 1, 5] * 4)
    with pytest.raises(UserError, match=rf"{g}:3: label 5 is out of range"):
        classify(g, n_classes=3)
    h = cls_file(tmp_path, [0, "b"] * 4)
    with pytest.raises(UserError, match=rf"{h}:2: label 'b' mixes strings and integers"):
        classify(h)
    assert classify(cls_file(tmp_path, ["a", "b", "c"] * 4), n_classes=3).spec.n_classes == 3


def test_txt_cannot_carry_labels(tmp_path):
    f = write(tmp_path / "a.txt", "one\n\ntwo\n\nthree")
    with pytest.raises(UserError, match=rf"{f}: classification needs .jsonl"):
        classify(tmp_path)


def test_unknown_task_name(tmp_path):
    with pytest.raises(UserError, match="no task named"):
        lm(DATA / "files_folder", tasks=["nope"])


def test_repeated_documents_are_kept_once(tmp_path):
    write(tmp_path / "a.jsonl", jsonl([{"text": f"document {i % 4} " * 8} for i in range(12)]))
    s = lm(tmp_path, test_fraction=0.25)
    docs = [_docs(split_stream(s, split, 0)) for split in ("train", "test")]
    assert sorted(docs[0] + docs[1]) == [f"document {i} " * 8 for i in range(4)]
