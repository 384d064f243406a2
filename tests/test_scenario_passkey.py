"""passkey: the answer is the stated key, loss only on its digits, depths swept, facts per task."""

import pytest
import torch

from harness.errors import UserError
from scenarios.passkey import PasskeyConfig, build, experience_facts, passkey_sequences
from scenarios.tokenize import decode

FACTS = [("the red door", "48213"), ("the blue box", "90311")]


def answer(x, y) -> str:
    return bytes(y[y != -100].tolist()).decode()


def test_answer_digits_are_the_only_targets():
    g = torch.Generator().manual_seed(0)
    x, y = passkey_sequences(20, 200, FACTS, g)
    assert x.shape == y.shape == (20, 200)
    for row_x, row_y in zip(x, y):
        text, key = decode(row_x), answer(row_x, row_y)
        assert (row_y != -100).sum() == 5 and key in dict(FACTS).values()
        subject = next(s for s, v in FACTS if v == key)
        assert f"The pass key of {subject} is {key}." in text
        assert text.endswith(f"What is the pass key of {subject}? It is {key}")
        assert (row_y[:-1][row_y[:-1] != -100] == row_x[1:][row_y[:-1] != -100]).all()


def test_depth_places_the_fact():
    g = torch.Generator().manual_seed(0)
    x, _ = passkey_sequences(3, 400, FACTS[:1], g, depths=torch.tensor([0.0, 0.5, 1.0]))
    where = [decode(row).index("The pass key of") for row in x]
    assert where[0] == 0 and where[0] < where[1] < where[2]
    assert 100 < where[1] < 250 and where[2] > 250


def test_closed_book_sequences_omit_the_fact():
    g = torch.Generator().manual_seed(0)
    x, y = passkey_sequences(10, 200, FACTS, g, p_stated=0.0)
    assert all("The pass key of" not in decode(r) for r in x)
    assert all(len(answer(a, b)) == 5 for a, b in zip(x, y))


def test_too_short_is_a_user_error():
    with pytest.raises(UserError, match="too short"):
        passkey_sequences(1, 60, FACTS, torch.Generator())


def test_each_experience_has_its_own_facts():
    facts = experience_facts(3, 8, 0)
    subjects = [{s for s, _ in f} for f in facts]
    assert all(len(s) == 8 for s in subjects)
    assert not (subjects[0] & subjects[1] or subjects[0] & subjects[2] or subjects[1] & subjects[2])


def test_stream():
    s = build(PasskeyConfig(n_experiences=2, n_facts=4, seq_len=160, n_train=32, n_val=4,
                            n_test=11), 0)
    assert s.n_experiences == 2 and s.spec.vocab_size == 258 and s.spec.seq_len == 160
    facts = experience_facts(2, 4, 0)
    for i in range(2):
        te = s.test_data(i)
        assert (len(s.train_data(i)), len(s.val_data(i)), len(te)) == (32, 4, 11)
        keys = {answer(a, b) for a, b in zip(te.x, te.y)}
        assert keys <= {v for _, v in facts[i]}
        first, last = decode(te.x[0]), decode(te.x[-1])  # test depths sweep from 0 to 1
        assert first.startswith("The pass key of")
        assert last.index(". Remember it. What is the pass key") > last.index("The pass key")
