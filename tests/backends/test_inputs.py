"""Chat inputs (`plphp.backends.inputs`)."""

from __future__ import annotations

from plphp.backends.inputs import conversation


def test_conversation_puts_the_images_first_unless_told_to_place_them_at_markers():
    question = "compare <image> and <image>"
    first = [{"type": "image"}, {"type": "image"}, {"type": "text", "text": question}]
    assert conversation(question, 2) == [{"role": "user", "content": first}]
    placed = [
        {"type": "text", "text": "compare "},
        {"type": "image"},
        {"type": "text", "text": " and "},
        {"type": "image"},
    ]
    assert conversation(question, 2, "<image>") == [{"role": "user", "content": placed}]
    assert conversation("what is this", 1, "<image>") == conversation("what is this", 1)
    assert conversation("no picture", 0) == [{"role": "user", "content": [{"type": "text", "text": "no picture"}]}]
