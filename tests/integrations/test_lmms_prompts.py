"""How lmms-eval's requests become chat turns: `doc_to_messages` chats (a system turn, several pictures,
a video) and context strings with `doc_to_visual` output (pictures at `<image>` markers)."""

from __future__ import annotations

import pytest

pytest.importorskip("lmms_eval", reason="lmms-eval is installed by `make test` (see the Makefile)")

from plphp.errors import PlphpError  # noqa: E402
from plphp.integrations.lmms_eval import messages_prompt, visual_prompt  # noqa: E402
from plphp.models import make_image  # noqa: E402


def test_a_chat_keeps_its_turns_and_its_media_in_order():
    first, second = make_image(64, 64, seed=1), make_image(96, 64, seed=2)
    frames = [make_image(32, 32, seed=3)] * 4
    messages = [
        {"role": "system", "content": [{"type": "text", "text": "be brief"}]},
        {
            "role": "user",
            "content": [
                {"type": "image", "url": first},
                {"type": "text", "text": "and"},
                {"type": "image", "url": second},
                {"type": "video", "url": frames},
                {"type": "text", "text": "compare"},
            ],
        },
    ]
    prompt = messages_prompt(messages, "task")
    assert [turn["role"] for turn in prompt.turns] == ["system", "user"]
    assert [item["type"] for item in prompt.turns[1]["content"]] == ["image", "text", "image", "video", "text"]
    assert prompt.images == [first, second] and prompt.videos == [frames]
    with pytest.raises(PlphpError, match="audio inputs are not supported"):
        messages_prompt([{"role": "user", "content": [{"type": "audio", "url": "a.wav"}]}], "task")


def test_a_context_string_puts_the_pictures_at_its_markers_and_videos_first():
    pictures = [make_image(64, 64, seed=1), make_image(64, 64, seed=2)]
    prompt = visual_prompt("left <image> right <image> which?", [*pictures, "clip.mp4"])
    content = prompt.turns[0]["content"]
    assert [item["type"] for item in content] == ["video", "text", "image", "text", "image", "text"]
    assert prompt.videos == ["clip.mp4"] and len(prompt.images) == 2
    plain = visual_prompt("what is it?", pictures[:1]).turns[0]["content"]
    assert [item["type"] for item in plain] == ["image", "text"]
